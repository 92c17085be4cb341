//! Devices as FHIR R4 `Device`, after the PHD IG's PhdDevice and PhgDevice.
//!
//! Every measuring device of the registry is a PhdDevice: what it said of
//! itself over Bluetooth (Device Information: manufacturer, model, serial,
//! firmware), its Bluetooth address as the IG's BTMAC identifier where its
//! id is one, the gateway's own device id as a second identifier (what
//! readings and the push's conditional references name), the kinds of
//! device it is (the IEEE 11073 specialisations of the metrics it sent),
//! its time capabilities as far as the gateway has seen them (a device that
//! stamps its measurements has a real-time clock), and the patient it is
//! assigned to. The gateway is one PhgDevice,
//! identified by the EUI-64 system id its store made once: every
//! Observation names it in the `observation-gatewayDevice` extension.

use device_profiles::Metric;
use serde_json::{json, Value};

use super::phd::{self, Gateway, PhdContext, MDC};
use crate::store::registry::Device;

/// The IEEE 11073 specialisation (MDC code, reference id, text) a metric's
/// device follows; `None` for answers no device measures.
fn specialization(metric: Metric) -> Option<(&'static str, &'static str, &'static str)> {
    use Metric::*;
    Some(match metric {
        Systolic | Diastolic | MeanArterialPressure | PulseRate => (
            "528391",
            "MDC_DEV_SPEC_PROFILE_BP",
            "Blood pressure monitor",
        ),
        Spo2 | OximetryPulseRate => ("528388", "MDC_DEV_SPEC_PROFILE_PULS_OXIM", "Pulse oximeter"),
        BodyWeight | BodyHeight | Bmi => ("528399", "MDC_DEV_SPEC_PROFILE_SCALE", "Weight scale"),
        BodyFat => (
            "528404",
            "MDC_DEV_SPEC_PROFILE_BCA",
            "Body composition analyzer",
        ),
        BodyTemperature => ("528392", "MDC_DEV_SPEC_PROFILE_TEMP", "Thermometer"),
        BloodGlucose => ("528401", "MDC_DEV_SPEC_PROFILE_GLUCOSE", "Glucose meter"),
        HeartRate => (
            "528425",
            "MDC_DEV_SPEC_PROFILE_HF_CARDIO",
            "Cardiovascular fitness and activity monitor",
        ),
        RespiratoryRate => (
            "528397",
            "MDC_DEV_SPEC_PROFILE_RESP_RATE",
            "Respiration rate monitor",
        ),
        _ => return None,
    })
}

fn id_type(code: &str, display: &str) -> Value {
    json!({"coding": [{"system": phd::DEVICE_ID_TYPE_SYSTEM, "code": code, "display": display}]})
}

/// The identifiers of a measuring device: its Bluetooth address where its
/// id is one, then the gateway's device id.
pub fn phd_identifiers(device_id: &str) -> Vec<Value> {
    let mut ids = Vec::new();
    if let Some(address) = phd::bluetooth_address(device_id) {
        ids.push(json!({
            "type": id_type("BTMAC", "Bluetooth MAC address"),
            "system": phd::BT_MAC_SYSTEM,
            "value": address.replace(':', "-"),
        }));
    }
    ids.push(json!({"system": phd::DEVICE_ID_SYSTEM, "value": device_id}));
    ids
}

/// The PhdDevice of a registered device. `metrics`: what it has measured
/// (its specialisations); `ctx` names the gateway.
pub fn phd_device(device: &Device, metrics: &[Metric], ctx: &PhdContext) -> Value {
    let mut d = json!({
        "resourceType": "Device",
        "id": phd::device_resource_id(&device.device_id),
        "meta": {"profile": [phd::PROFILE_PHD_DEVICE]},
        "identifier": phd_identifiers(&device.device_id),
        "status": "active",
        "type": {
            "coding": [phd::mdc_coding("65573", "MDC_MOC_VMS_MDS_SIMP")],
            "text": "Personal health device",
        },
    });
    let info = &device.information;
    if let Some(m) = &info.manufacturer {
        d["manufacturer"] = json!(m);
    }
    if let Some(m) = &info.model {
        d["modelNumber"] = json!(m);
    }
    if let Some(s) = &info.serial_number {
        d["serialNumber"] = json!(s);
    }
    if let Some(f) = &info.firmware {
        d["version"] = json!([{
            "type": {"coding": [phd::mdc_coding("531976", "MDC_ID_PROD_SPEC_FW")], "text": "Firmware revision"},
            "value": f,
        }]);
    }
    let mut specs: Vec<(&str, &str, &str)> =
        metrics.iter().filter_map(|m| specialization(*m)).collect();
    specs.sort();
    specs.dedup();
    if !specs.is_empty() {
        d["specialization"] = specs
            .iter()
            .map(|(code, refid, text)| {
                json!({"systemType": {"coding": [phd::mdc_coding(code, refid)], "text": text}, "version": "1"})
            })
            .collect();
    }
    if ctx.stamping.contains(&device.device_id) {
        // MDC_TIME_CAP_STATE, the bits the gateway has seen to hold: the
        // device stamps its measurements with an absolute time, so it has
        // a real-time clock. Whether it lets a gateway set that clock is
        // not recorded, so no other bit is claimed.
        d["property"] = json!([{
            "type": {"coding": [phd::mdc_coding("68219", "MDC_TIME_CAP_STATE")], "text": "Time capabilities"},
            "valueCode": [{"coding": [{
                "system": phd::ASN1_TO_HL7_SYSTEM,
                "code": "68219.0",
                "display": "mds-time-capab-real-time-clock",
            }]}],
        }]);
    }
    if let Some(p) = &device.patient_id {
        d["patient"] = phd::patient_reference(p);
    }
    if let Some(g) = &ctx.gateway {
        // Where the device's data came through (the IG keeps that on the
        // Observation; here it tells a reader which gateway holds the device).
        d["parent"] = g.reference();
    }
    d
}

/// The PhdDevices of every registered device of `ctx` (those its
/// Observations reference), by device id: what a push sends beside them.
pub fn phd_devices(ctx: &PhdContext) -> Vec<Value> {
    let mut ids: Vec<&String> = ctx.devices.keys().collect();
    ids.sort();
    ids.into_iter()
        .map(|id| {
            let metrics = ctx.metrics.get(id).map(Vec::as_slice).unwrap_or_default();
            phd_device(&ctx.devices[id], metrics, ctx)
        })
        .collect()
}

/// The PhgDevice: this gateway.
pub fn phg_device(gateway: &Gateway) -> Value {
    let supported: Vec<Value> = Metric::ALL
        .iter()
        .filter_map(|m| specialization(*m))
        .fold(Vec::new(), |mut acc, s| {
            if !acc.contains(&s) {
                acc.push(s);
            }
            acc
        })
        .into_iter()
        .map(|(code, refid, text)| {
            json!({"systemType": {"coding": [phd::mdc_coding(code, refid)], "text": text}, "version": "1"})
        })
        .collect();
    json!({
        "resourceType": "Device",
        "id": gateway.resource_id(),
        "meta": {"profile": [phd::PROFILE_PHG_DEVICE]},
        "identifier": [{
            "type": id_type("SYSID", "IEEE 11073 System Identifier"),
            "system": phd::SYSTEM_ID_SYSTEM,
            "value": gateway.eui64(),
        }],
        "status": "active",
        "manufacturer": "rpm-gateway",
        "modelNumber": "rpm-gateway",
        "deviceName": [{"name": "rpm-gateway", "type": "model-name"}],
        "type": {
            "coding": [phd::mdc_coding("531981", "MDC_MOC_VMS_MDS_AHD")],
            "text": "Personal health gateway",
        },
        "specialization": supported,
        "version": [{
            "type": {"coding": [phd::mdc_coding("531975", "MDC_ID_PROD_SPEC_SW")], "text": "Software revision"},
            "value": env!("CARGO_PKG_VERSION"),
        }],
        // The gateway keeps the host's clock, which is to be set by NTP
        // (docs/fhir.md); device clocks are corrected against it.
        "property": [{
            "type": {"coding": [phd::mdc_coding("68220", "MDC_TIME_SYNC_PROTOCOL")], "text": "Time synchronization protocol"},
            "valueCode": [{"coding": [{"system": MDC, "code": "532226", "display": "MDC_TIME_SYNC_NTPV4"}]}],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::registry::DeviceInformation;

    fn cuff() -> Device {
        Device {
            device_id: "AA:BB:CC:DD:EE:01".into(),
            patient_id: Some("p1".into()),
            origin: "ble".into(),
            assigned_at: None,
            last_seen_at: None,
            registered_at: None,
            battery_pct: None,
            connection: None,
            source: None,
            bonded: true,
            information: DeviceInformation {
                manufacturer: Some("A&D".into()),
                ..DeviceInformation::default()
            },
        }
    }

    #[test]
    fn a_device_that_stamps_its_measurements_has_a_real_time_clock() {
        let mut ctx = PhdContext::default();
        let d = phd_device(&cuff(), &[Metric::Systolic], &ctx);
        assert!(d.get("property").is_none(), "nothing claimed unseen");
        assert_eq!(d["identifier"][0]["value"], "AA-BB-CC-DD-EE-01");
        assert_eq!(
            d["specialization"][0]["systemType"]["coding"][0]["code"],
            "528391"
        );
        ctx.stamping.insert("AA:BB:CC:DD:EE:01".into());
        let d = phd_device(&cuff(), &[Metric::Systolic], &ctx);
        assert_eq!(d["property"][0]["type"]["coding"][0]["code"], "68219");
        let bits = d["property"][0]["valueCode"].as_array().unwrap();
        assert_eq!(bits.len(), 1);
        assert_eq!(bits[0]["coding"][0]["code"], "68219.0");
    }
}
