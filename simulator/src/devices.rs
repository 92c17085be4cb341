//! What the simulator can emulate (`rpm-sim devices`): each device kind with
//! its metrics, units, wire formats (the bundled profile and topic of each),
//! a sample payload, and the Bluetooth characteristic a BLE device of that
//! kind speaks; plus what `rpm-sim check` can decode.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{TimeZone, Utc};
use device_profiles::gatt::uuid;
use serde::Serialize;

use crate::emission::{DeviceKind, Emission};
use crate::patient::{allowed_units, device_values};
use crate::payload::{encode, profile_name, WireFormat};
use crate::physiology::{Baseline, Condition, Vitals};

/// Every device kind, in kit order.
pub const KINDS: [DeviceKind; 5] = [
    DeviceKind::Scale,
    DeviceKind::BpCuff,
    DeviceKind::Glucometer,
    DeviceKind::PulseOximeter,
    DeviceKind::Thermometer,
];

/// One wire format of a kind.
#[derive(Debug, Clone, Serialize)]
pub struct WireInfo {
    /// `vendor` or `senml`.
    pub format: &'static str,
    /// Bundled profile that decodes it.
    pub profile: &'static str,
    /// MQTT topic of device `DEVICE`.
    pub topic: String,
    /// A sample payload.
    pub sample: serde_json::Value,
}

/// One emulated device kind.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    /// Kind name as in scenario files.
    pub kind: &'static str,
    /// Metrics it sends.
    pub metrics: Vec<&'static str>,
    /// Units it can be set to send (UCUM).
    pub units: Vec<&'static str>,
    /// MQTT / HTTP wire formats.
    pub wire: Vec<WireInfo>,
    /// The GATT service and measurement characteristic of a BLE device of
    /// this kind (BLE transport: the gateway's virtual BLE link / BlueZ
    /// emulator).
    pub gatt: (String, String),
}

/// Name of a kind as written in scenario files.
pub const fn kind_name(k: DeviceKind) -> &'static str {
    match k {
        DeviceKind::Scale => "scale",
        DeviceKind::BpCuff => "bp_cuff",
        DeviceKind::Glucometer => "glucometer",
        DeviceKind::PulseOximeter => "pulse_oximeter",
        DeviceKind::Thermometer => "thermometer",
        DeviceKind::Tablet => "tablet",
    }
}

fn gatt_of(k: DeviceKind) -> (u16, u16) {
    match k {
        DeviceKind::Scale => (uuid::SERVICE_WEIGHT_SCALE, uuid::WEIGHT_MEASUREMENT),
        DeviceKind::BpCuff => (
            uuid::SERVICE_BLOOD_PRESSURE,
            uuid::BLOOD_PRESSURE_MEASUREMENT,
        ),
        DeviceKind::Glucometer => (uuid::SERVICE_GLUCOSE, uuid::GLUCOSE_MEASUREMENT),
        DeviceKind::PulseOximeter => (
            uuid::SERVICE_PULSE_OXIMETER,
            uuid::PLX_SPOT_CHECK_MEASUREMENT,
        ),
        DeviceKind::Thermometer => (
            uuid::SERVICE_HEALTH_THERMOMETER,
            uuid::TEMPERATURE_MEASUREMENT,
        ),
        // Not a Bluetooth health device (MQTT or HTTPS only).
        DeviceKind::Tablet => (0, 0),
    }
}

/// A typical measurement of a kind (healthy baseline), from device `DEVICE`.
pub fn sample(kind: DeviceKind) -> Emission {
    let b = Baseline::typical(Condition::Healthy);
    let v = Vitals {
        systolic: b.systolic,
        diastolic: b.diastolic,
        pulse: b.pulse,
        weight_kg: b.weight_kg,
        glucose_mg_dl: b.glucose_mg_dl,
        spo2: b.spo2,
        temperature_c: b.temperature_c,
        irregular_pulse: false,
    };
    Emission {
        at: Utc
            .with_ymd_and_hms(2026, 3, 2, 7, 15, 0)
            .single()
            .unwrap_or_default(),
        patient_id: "p".into(),
        device_id: "DEVICE".into(),
        device: kind,
        values: device_values(kind, allowed_units(kind)[0], &v),
        annotations: BTreeMap::new(),
        sequence: Some(17),
        fault: None,
    }
}

/// The catalogue.
pub fn catalogue() -> Vec<DeviceInfo> {
    KINDS
        .iter()
        .map(|&k| {
            let e = sample(k);
            let mut wire = Vec::new();
            for (format, name) in [(WireFormat::Vendor, "vendor"), (WireFormat::Senml, "senml")] {
                if k == DeviceKind::Thermometer && format == WireFormat::Vendor {
                    continue; // no vendor thermometer profile: SenML only
                }
                let m = encode(&e, format);
                wire.push(WireInfo {
                    format: name,
                    profile: profile_name(k, format),
                    topic: m.topic,
                    sample: serde_json::from_slice(&m.payload).unwrap_or_default(),
                });
            }
            let (svc, chr) = gatt_of(k);
            DeviceInfo {
                kind: kind_name(k),
                metrics: e.values.iter().map(|(m, _, _)| m.name()).collect(),
                units: allowed_units(k).iter().map(|u| u.ucum()).collect(),
                wire,
                gatt: (format!("0x{svc:04X}"), format!("0x{chr:04X}")),
            }
        })
        .collect()
}

/// The GATT characteristics `rpm-sim check --gatt` decodes.
pub const CHECKABLE_GATT: [(u16, &str); 11] = [
    (
        uuid::BLOOD_PRESSURE_MEASUREMENT,
        "Blood Pressure Measurement",
    ),
    (
        uuid::INTERMEDIATE_CUFF_PRESSURE,
        "Intermediate Cuff Pressure (never stored)",
    ),
    (uuid::WEIGHT_MEASUREMENT, "Weight Measurement"),
    (
        uuid::BODY_COMPOSITION_MEASUREMENT,
        "Body Composition Measurement",
    ),
    (uuid::GLUCOSE_MEASUREMENT, "Glucose Measurement"),
    (
        uuid::GLUCOSE_MEASUREMENT_CONTEXT,
        "Glucose Measurement Context",
    ),
    (uuid::TEMPERATURE_MEASUREMENT, "Temperature Measurement"),
    (
        uuid::PLX_SPOT_CHECK_MEASUREMENT,
        "PLX Spot-Check Measurement",
    ),
    (
        uuid::PLX_CONTINUOUS_MEASUREMENT,
        "PLX Continuous Measurement",
    ),
    (uuid::HEART_RATE_MEASUREMENT, "Heart Rate Measurement"),
    (
        uuid::RECORD_ACCESS_CONTROL_POINT,
        "Record Access Control Point",
    ),
];

/// The readable listing.
pub fn render(list: &[DeviceInfo]) -> String {
    let mut s = String::from("Virtual devices (scenario `kind`, transports: mqtt, http; ble for cuffs, scales and glucometers: rpm-sim run --ble)\n");
    for d in list {
        let _ = writeln!(
            s,
            "\n{}\n  metrics  {}\n  units    {}\n  ble      service {} characteristic {}",
            d.kind,
            d.metrics.join(", "),
            d.units.join(", "),
            d.gatt.0,
            d.gatt.1
        );
        for w in &d.wire {
            let _ = writeln!(
                s,
                "  {:<6}   profile {:<16} topic {}\n           {}",
                w.format, w.profile, w.topic, w.sample
            );
        }
    }
    s.push_str("\nrpm-sim check --gatt HEX --characteristic UUID decodes:\n");
    for (u, name) in CHECKABLE_GATT {
        let _ = writeln!(s, "  0x{u:04X}  {name}");
    }
    s.push_str("and vendor byte layouts with --layout FILE (device-profiles/profiles/ble/).\n");
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_kind_has_a_decodable_sample() {
        let set = device_profiles::profile::bundled();
        for d in super::catalogue() {
            assert!(!d.wire.is_empty());
            for w in &d.wire {
                let p = set.by_name(w.profile).unwrap();
                let bytes = serde_json::to_vec(&w.sample).unwrap();
                let m = p.decode(&w.topic, &bytes).unwrap();
                assert!(m.measurements[0].is_ok(), "{} {}", d.kind, w.format);
            }
        }
    }
}
