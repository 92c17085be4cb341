//! The HL7 Personal Health Device IG (STU 2, R4): what the gateway's
//! resources need beyond plain FHIR.
//!
//! The IG describes a personal health gateway (PHG) turning IEEE 11073 and
//! Bluetooth health devices (PHDs) into FHIR: every measurement names its
//! device (PhdDevice) and the gateway it came through (PhgDevice, in the
//! `observation-gatewayDevice` extension), carries the MDC code beside
//! LOINC, and an `identifier` built from the device, the patient, the
//! measurement type, value, unit and the *device's* time stamp, so that a
//! measurement a device re-sends (cuffs and meters replay their memory)
//! creates nothing new on a server (`ifNoneExist: identifier=...`) even
//! when it comes through another gateway. Device status bits become
//! `interpretation`, test and demonstration data the `HTEST` security
//! label, and a device clock the gateway corrected a coincident time stamp
//! Observation that records both clocks.
//!
//! [`PhdContext`] is what the mapping needs that a reading does not carry:
//! the gateway's system id, the registry's facts on the devices, and which
//! data is test data. Callers load it once per batch ([`PhdContext::load`]).

use chrono::{DateTime, Utc};
use device_profiles::{Metric, SpecialValue};
use rusqlite::OptionalExtension;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

use super::FhirConfig;
use crate::store::queries::{QuarantineRow, StoredReading};
use crate::store::registry::{self, Device, DEVICE_COLUMNS};
use crate::store::StoreError;

/// The IEEE 11073-10101 nomenclature (MDC) as a FHIR code system.
pub const MDC: &str = "urn:iso:std:iso:11073:10101";
/// Profiles of the IG.
pub const PROFILE_NUMERIC: &str =
    "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdNumericObservation";
pub const PROFILE_COMPOUND: &str =
    "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdCompoundNumericObservation";
pub const PROFILE_COINCIDENT: &str =
    "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdCoincidentTimeStampObservation";
pub const PROFILE_PHD_DEVICE: &str = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdDevice";
pub const PROFILE_PHG_DEVICE: &str = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhgDevice";
/// The core extension naming the gateway a measurement came through.
pub const GATEWAY_EXTENSION: &str =
    "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice";
/// The IG's category of PHD Observations.
pub const PHD_CATEGORY_SYSTEM: &str =
    "http://hl7.org/fhir/uv/phd/CodeSystem/PhdObservationCategories";
/// Identifier system of IEEE EUI-64 system ids.
pub const SYSTEM_ID_SYSTEM: &str = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680";
/// Identifier system of Bluetooth addresses.
pub const BT_MAC_SYSTEM: &str = "http://hl7.org/fhir/sid/eui-48/bluetooth";
/// Code system of the identifier types (SYSID, BTMAC, ...).
pub const DEVICE_ID_TYPE_SYSTEM: &str =
    "http://hl7.org/fhir/uv/phd/CodeSystem/ContinuaDeviceIdentifiers";
/// The device ids of this gateway's registry (what readings name).
pub const DEVICE_ID_SYSTEM: &str = "urn:rpm-gateway:device";
/// The quarantine records of this gateway (special-value Observations).
pub const QUARANTINE_ID_SYSTEM: &str = "urn:rpm-gateway:quarantine";
/// The patient ids of this gateway (what care programs enrol).
pub const PATIENT_ID_SYSTEM: &str = "urn:rpm-gateway:patient";
/// The IG's measurement-status interpretations (from the PoCD IG).
pub const MEASUREMENT_STATUS_SYSTEM: &str =
    "http://hl7.org/fhir/uv/pocd/CodeSystem/measurement-status";
/// `HTEST` lives here.
pub const ACT_REASON_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
/// The IG's code system for the bits of IEEE 11073 bit strings.
pub const ASN1_TO_HL7_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/ASN1ToHL7";
/// `dataAbsentReason` codes.
pub const DATA_ABSENT_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/data-absent-reason";

/// The MDC code (32-bit, partition × 2¹⁶ + term) and reference id of a
/// metric a device measures; `None` for patient-reported answers, which no
/// device measures. Glucose is capillary whole blood unless the device
/// said plasma (`sample_type` of the Glucose profile).
pub fn mdc(metric: Metric, annotations: &Value) -> Option<(&'static str, &'static str)> {
    use Metric::*;
    Some(match metric {
        Systolic => ("150021", "MDC_PRESS_BLD_NONINV_SYS"),
        Diastolic => ("150022", "MDC_PRESS_BLD_NONINV_DIA"),
        MeanArterialPressure => ("150023", "MDC_PRESS_BLD_NONINV_MEAN"),
        PulseRate => ("149546", "MDC_PULS_RATE_NON_INV"),
        HeartRate => ("147842", "MDC_ECG_HEART_RATE"),
        OximetryPulseRate => ("149530", "MDC_PULS_OXIM_PULS_RATE"),
        BodyWeight => ("188736", "MDC_MASS_BODY_ACTUAL"),
        BodyHeight => ("188740", "MDC_LEN_BODY_ACTUAL"),
        Bmi => ("188752", "MDC_RATIO_MASS_BODY_LEN_SQ"),
        BodyFat => ("188748", "MDC_BODY_FAT"),
        Spo2 => ("150456", "MDC_PULS_OXIM_SAT_O2"),
        BodyTemperature => ("150364", "MDC_TEMP_BODY"),
        RespiratoryRate => ("151562", "MDC_RESP_RATE"),
        BloodGlucose => {
            let plasma = annotations
                .get("glucose_type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.contains("plasma"));
            if plasma {
                ("160188", "MDC_CONC_GLU_CAPILLARY_PLASMA")
            } else {
                ("160184", "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD")
            }
        }
        _ => return None,
    })
}

/// MDC code of the non-invasive blood-pressure compound.
pub const MDC_BP: (&str, &str) = ("150020", "MDC_PRESS_BLD_NONINV");

/// An MDC coding.
pub fn mdc_coding(code: &str, display: &str) -> Value {
    json!({"system": MDC, "code": code, "display": display})
}

/// The gateway as the IG sees it: its EUI-64 system id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// 16 hex digits, lower case.
    pub system_id: String,
}

impl Gateway {
    /// The system id as the IG writes it: `EC-DE-3D-4E-58-53-2D-31`.
    pub fn eui64(&self) -> String {
        dashed(&self.system_id)
    }

    /// The PhgDevice's logical id.
    pub fn resource_id(&self) -> String {
        format!("phg-{}", self.system_id)
    }

    /// A reference to the PhgDevice, by id and by identifier (a server that
    /// keeps its own ids resolves the identifier).
    pub fn reference(&self) -> Value {
        json!({
            "reference": format!("Device/{}", self.resource_id()),
            "identifier": {"system": SYSTEM_ID_SYSTEM, "value": self.eui64()},
        })
    }
}

/// Hex digits as dash-separated upper-case octets.
fn dashed(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join("-")
}

/// What the PHD mapping needs beyond the readings.
#[derive(Debug, Clone, Default)]
pub struct PhdContext {
    /// This gateway; `None` leaves out the gateway extension.
    pub gateway: Option<Gateway>,
    /// The registry's record of each device, by device id (a device not
    /// here is known by its id only): the PhdDevices a push sends along
    /// ([`super::device::phd_devices`]).
    pub devices: HashMap<String, Device>,
    /// The metrics each device measured in the batch (its specialisations).
    pub metrics: HashMap<String, Vec<Metric>>,
    /// Devices seen giving their own absolute time stamps: they have a
    /// real-time clock (their PhdDevice's time capabilities say so).
    pub stamping: HashSet<String>,
    /// Which readings are test or demonstration data.
    pub config: FhirConfig,
}

impl PhdContext {
    /// The context for resources of `device_ids`, read from the store.
    pub fn load<'a>(
        conn: &rusqlite::Connection,
        config: &FhirConfig,
        device_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, StoreError> {
        let gateway = Some(Gateway {
            system_id: registry::gateway_system_id(conn)?,
        });
        let mut devices = HashMap::new();
        let mut q = conn.prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = ?1"
        ))?;
        for id in device_ids {
            if devices.contains_key(id) {
                continue;
            }
            if let Some(d) = q.query_row([id], registry::device_row).optional()? {
                devices.insert(id.to_string(), d);
            }
        }
        Ok(PhdContext {
            gateway,
            devices,
            config: config.clone(),
            metrics: HashMap::new(),
            stamping: HashSet::new(),
        })
    }

    /// [`PhdContext::load`] for the devices of `readings`.
    pub fn for_readings(
        conn: &rusqlite::Connection,
        config: &FhirConfig,
        readings: &[StoredReading],
    ) -> Result<Self, StoreError> {
        let mut ctx = Self::load(conn, config, readings.iter().map(|r| r.device_id.as_str()))?;
        for r in readings {
            if r.device_measured_at.is_some() {
                ctx.stamping.insert(r.device_id.clone());
            }
            if let Ok(m) = r.metric.parse::<Metric>() {
                let seen = ctx.metrics.entry(r.device_id.clone()).or_default();
                if !seen.contains(&m) {
                    seen.push(m);
                }
            }
        }
        Ok(ctx)
    }

    /// Whether `r` is test or demonstration data: the gateway or the
    /// device is configured so, or the device flagged the measurement.
    pub fn is_test(&self, r: &StoredReading) -> bool {
        self.config.is_test_device(&r.device_id)
            || status_names(r).any(|s| matches!(s, "data_for_testing" | "data_for_demonstration"))
    }
}

/// The FHIR logical id of a device's PhdDevice: the device id where it is a
/// valid FHIR id (`[A-Za-z0-9.-]{1,64}`), else `x-` and its bytes in hex
/// (Bluetooth addresses have colons). [`device_id_of`] reverses it.
pub fn device_resource_id(device_id: &str) -> String {
    let plain = !device_id.is_empty()
        && device_id.len() <= 64
        && !device_id.starts_with("x-")
        && !device_id.starts_with("phg-")
        && device_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if plain {
        device_id.to_string()
    } else {
        format!("x-{}", hex::encode(device_id))
    }
}

/// The device id a PhdDevice logical id stands for.
pub fn device_id_of(resource_id: &str) -> Option<String> {
    match resource_id.strip_prefix("x-") {
        Some(h) => String::from_utf8(hex::decode(h).ok()?).ok(),
        None if resource_id.starts_with("phg-") => None,
        None => Some(resource_id.to_string()),
    }
}

/// A reference to a device's PhdDevice, by id and by identifier.
pub fn device_reference(device_id: &str) -> Value {
    json!({
        "reference": format!("Device/{}", device_resource_id(device_id)),
        "identifier": {"system": DEVICE_ID_SYSTEM, "value": device_id},
    })
}

/// A reference to a patient, by id and by identifier.
pub fn patient_reference(patient_id: &str) -> Value {
    json!({
        "reference": format!("Patient/{patient_id}"),
        "identifier": {"system": PATIENT_ID_SYSTEM, "value": patient_id},
    })
}

/// A device's Bluetooth address (`AA:BB:CC:DD:EE:FF`) when its id is one.
pub fn bluetooth_address(device_id: &str) -> Option<String> {
    device_profiles::gatt::device::normalize_address(device_id)
}

/// The device part of the IG's Observation identifier: the device's
/// system id where known, else its transport address, else its id.
fn device_key(device_id: &str) -> String {
    match bluetooth_address(device_id) {
        Some(a) => a.replace(':', ""),
        None => device_id.to_string(),
    }
}

/// The time stamp part: the *device's* time as an HL7 DTM
/// (`YYYYMMDDHHMMSS.ss`), so a correction by the gateway does not make a
/// re-sent measurement look new; the gateway's time where the device gave
/// none.
fn time_key(r: &StoredReading) -> String {
    let t: DateTime<Utc> = r.device_measured_at.unwrap_or(r.measured_at);
    format!(
        "{}.{:02}",
        t.format("%Y%m%d%H%M%S"),
        t.timestamp_subsec_millis() / 10
    )
}

/// The IG's Observation identifier (`Observation.identifier`) of one
/// measurement: the conditional-create key of a FHIR push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservationIdentifier {
    /// `device-patient-type-value-units-timestamp`.
    pub value: String,
}

impl ObservationIdentifier {
    /// The IG gives the identifier no system: every gateway makes the same
    /// value for the same measurement, whichever product it is.
    pub fn to_fhir(&self) -> Value {
        json!({"value": self.value})
    }

    /// The search a conditional create names (`Bundle.entry.request.ifNoneExist`).
    #[allow(dead_code)] // the FHIR push's conditional create
    pub fn if_none_exist(&self) -> String {
        format!("identifier={}", super::urlencode(&self.value))
    }
}

/// The identifier of the Observation of `readings` (one measurement: a
/// BP panel's components, or one reading), per the IG's rule for numeric
/// and compound observations; `None` for no readings.
pub fn observation_identifier(readings: &[StoredReading]) -> Option<ObservationIdentifier> {
    let first = readings.first()?;
    let metric: Option<Metric> = first.metric.parse().ok();
    let (code, values) = if super::observation::is_bp(&first.metric) {
        let values: Vec<String> = super::observation::BP_METRICS
            .iter()
            .filter_map(|m| readings.iter().find(|r| r.metric == m.name()))
            .map(|r| r.value.to_string())
            .collect();
        (MDC_BP.0.to_string(), values.join("-"))
    } else {
        let code = metric
            .and_then(|m| mdc(m, &first.annotations))
            .map(|(c, _)| c.to_string())
            .unwrap_or_else(|| first.metric.clone());
        (code, first.value.to_string())
    };
    Some(ObservationIdentifier {
        value: format!(
            "{}-{}-{}-{}-{}-{}",
            device_key(&first.device_id),
            first.patient_id,
            code,
            values,
            first.unit,
            time_key(first)
        ),
    })
}

/// Names of the status bits the device set on a reading (the Bluetooth
/// profiles' `measurement_status` annotation, comma separated).
fn status_names(r: &StoredReading) -> impl Iterator<Item = &str> {
    r.annotations
        .get("measurement_status")
        .and_then(Value::as_str)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The IG's interpretation codes for the status bits of a reading that has
/// a value (the bits that mean "no value" are refused before storing).
pub fn interpretations(r: &StoredReading) -> Vec<Value> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for s in status_names(r) {
        let code = match s {
            "questionable_measurement_detected" => ("questionable", "Questionable"),
            "calibration_ongoing" => ("calibration-ongoing", "Calibration ongoing"),
            "validated_data" => ("validated-data", "Validated data"),
            "early_estimated_data" => ("early-indication", "Early indication"),
            _ => continue,
        };
        if !out.contains(&code) {
            out.push(code);
        }
    }
    if r.annotations.get("out_of_device_range").is_some() {
        out.push(("in-alarm", "Measurement value exceeds boundaries"));
    }
    out.into_iter()
        .map(|(code, display)| {
            json!({"coding": [{"system": MEASUREMENT_STATUS_SYSTEM, "code": code, "display": display}]})
        })
        .collect()
}

/// `meta.security` of test data.
pub fn htest() -> Value {
    json!({"system": ACT_REASON_SYSTEM, "code": "HTEST", "display": "test health data"})
}

/// The id of the coincident time stamp Observation of a measurement whose
/// device clock the gateway corrected, if it was corrected.
pub fn coincident_id(r: &StoredReading) -> Option<String> {
    clock_offset(r).map(|_| format!("coin-{}", r.group_id))
}

/// Device clock minus gateway clock the gateway applied to `r`, seconds.
fn clock_offset(r: &StoredReading) -> Option<i64> {
    let corrected = r.annotations.get("clock_corrected").and_then(Value::as_str);
    if corrected != Some("device_offset") {
        return None;
    }
    r.annotations
        .get("clock_offset_s")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

/// The identifier of a coincident time stamp Observation, in the manner of
/// the IG's measurement identifiers: the device, the MDC code of absolute
/// time, what the device's clock read and when the gateway read it. The
/// same correction gets the same identifier from every push, so the
/// push's conditional create makes it once however many measurements
/// refer to it.
pub fn coincident_identifier(
    r: &StoredReading,
    device_time: DateTime<Utc>,
) -> ObservationIdentifier {
    let dtm = |t: DateTime<Utc>| {
        format!(
            "{}.{:02}",
            t.format("%Y%m%d%H%M%S"),
            t.timestamp_subsec_millis() / 10
        )
    };
    ObservationIdentifier {
        value: format!(
            "{}-67975-{}-{}",
            device_key(&r.device_id),
            dtm(device_time),
            dtm(r.received_at)
        ),
    }
}

/// The PhdCoincidentTimeStampObservation for a measurement whose device
/// clock the gateway corrected: at the gateway's time of receipt
/// (`effectiveDateTime`) the device's clock read `valueDateTime`, so a
/// reader recovers the device's own time stamps from the corrected ones.
pub fn coincident_observation(r: &StoredReading, ctx: &PhdContext) -> Option<(String, Value)> {
    let offset = clock_offset(r)?;
    let id = coincident_id(r)?;
    let device_time = r.received_at + chrono::Duration::seconds(offset);
    let mut o = json!({
        "resourceType": "Observation",
        "id": id,
        "meta": {"profile": [PROFILE_COINCIDENT]},
        "identifier": [coincident_identifier(r, device_time).to_fhir()],
        "status": "final",
        "code": {"coding": [mdc_coding("67975", "MDC_ATTR_TIME_ABS")], "text": "Absolute time"},
        "subject": device_reference(&r.device_id),
        "effectiveDateTime": super::instant(r.received_at),
        "valueDateTime": super::instant(device_time),
    });
    if let Some(g) = &ctx.gateway {
        o["device"] = g.reference();
        o["extension"] = json!([{"url": GATEWAY_EXTENSION, "valueReference": g.reference()}]);
    }
    if ctx.is_test(r) {
        o["meta"]["security"] = json!([htest()]);
    }
    Some((id, o))
}

/// The IG's `dataAbsentReason` for an IEEE 11073 special value: NaN,
/// ±INFINITY have their own codes, NRes and the reserved value are errors.
pub fn data_absent_reason(v: SpecialValue) -> Value {
    let (code, display) = match v {
        SpecialValue::NaN => ("not-a-number", "Not a Number (NaN)"),
        SpecialValue::PositiveInfinity => ("positive-infinity", "Positive Infinity (PINF)"),
        SpecialValue::NegativeInfinity => ("negative-infinity", "Negative Infinity (NINF)"),
        SpecialValue::NRes | SpecialValue::Reserved => ("error", "Error"),
    };
    json!({"coding": [{"system": DATA_ABSENT_SYSTEM, "code": code, "display": display}], "text": v.to_string()})
}

/// The metric and special value a `special_value` quarantine record
/// stands for (its detail is the refusal's text, `<metric> is <value>, not
/// a number`); `None` for any other record.
pub fn special_value_of(q: &QuarantineRow) -> Option<(Metric, SpecialValue)> {
    if q.reason != "special_value" {
        return None;
    }
    let (metric, rest) = q.detail.split_once(" is ")?;
    let value = match rest.strip_suffix(", not a number")? {
        "NaN" => SpecialValue::NaN,
        "NRes" => SpecialValue::NRes,
        "+INFINITY" => SpecialValue::PositiveInfinity,
        "-INFINITY" => SpecialValue::NegativeInfinity,
        "reserved value" => SpecialValue::Reserved,
        _ => return None,
    };
    Some((metric.parse().ok()?, value))
}

/// The id of the Observation of a special-value record.
pub fn absent_id(quarantine_id: i64) -> String {
    format!("absent-{quarantine_id}")
}

/// A measurement a device sent a special value for (NaN, NRes, ±INFINITY),
/// as the IG has it: an Observation with `dataAbsentReason` and no value.
/// Such a measurement is never a reading (the rules, InfluxDB and the
/// console never see it); its quarantine record is what this is made
/// from. A blood-pressure component makes the whole panel absent (the
/// record does not keep the other components). Time: the receipt (the
/// record keeps no device time), as the IG says for a measurement without one.
pub fn absent_observation(
    q: &QuarantineRow,
    patient_id: &str,
    ctx: &PhdContext,
) -> Option<(String, Value)> {
    let (metric, value) = special_value_of(q)?;
    let device_id = q.device_id.as_deref()?;
    let id = absent_id(q.id);
    let bp = metric.panel().is_some();
    let (codings, text, profile) = if bp {
        (
            vec![
                super::observation::coding(
                    super::observation::BP_PANEL,
                    "Blood pressure panel with all children optional",
                ),
                mdc_coding(MDC_BP.0, MDC_BP.1),
            ],
            "Blood pressure",
            PROFILE_COMPOUND,
        )
    } else {
        let (system, code) = metric.coding();
        let mut c = vec![json!({"system": system, "code": code, "display": metric.display()})];
        if let Some((code, refid)) = mdc(metric, &Value::Null) {
            c.push(mdc_coding(code, refid));
        }
        (c, metric.display(), PROFILE_NUMERIC)
    };
    let (_, category, _) = super::observation::vital(metric);
    let mut o = json!({
        "resourceType": "Observation",
        "id": id,
        "meta": {"profile": [profile]},
        "identifier": [{"system": QUARANTINE_ID_SYSTEM, "value": q.id.to_string()}],
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": category,
        }]}, {"coding": [{"system": PHD_CATEGORY_SYSTEM, "code": "phd-observation"}]}],
        "code": {"coding": codings, "text": text},
        "subject": patient_reference(patient_id),
        "effectiveDateTime": super::instant(q.received_at),
        "issued": super::instant(q.received_at),
        "device": device_reference(device_id),
        "dataAbsentReason": data_absent_reason(value),
    });
    if let Some(g) = &ctx.gateway {
        o["extension"] = json!([{"url": GATEWAY_EXTENSION, "valueReference": g.reference()}]);
    }
    if ctx.config.is_test_device(device_id) {
        o["meta"]["security"] = json!([htest()]);
    }
    Some((id, o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_round_trip_through_fhir_ids() {
        for id in [
            "cuff-1",
            "AA:BB:CC:DD:EE:FF",
            "x-1",
            "phg-1",
            "a_b",
            "scale.7",
        ] {
            let rid = device_resource_id(id);
            assert!(rid.len() <= 64 + 2);
            assert!(rid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
            assert_eq!(device_id_of(&rid).as_deref(), Some(id), "{id}");
        }
        assert_eq!(device_resource_id("cuff-1"), "cuff-1");
        assert_eq!(device_id_of("phg-0011"), None);
        assert_eq!(device_id_of("x-zz"), None);
    }

    fn quarantined(detail: &str) -> QuarantineRow {
        QuarantineRow {
            id: 7,
            received_at: chrono::TimeZone::timestamp_millis_opt(&Utc, 1_769_845_400_000).unwrap(),
            source: "ble".into(),
            origin: "AA:BB:CC:DD:EE:01/2a35".into(),
            profile: Some("gatt-bpm".into()),
            device_id: Some("cuff-1".into()),
            reason: "special_value".into(),
            detail: detail.into(),
            status: "open".into(),
            payload_len: 7,
            count: 1,
            measurement_indexes: None,
            measurement_index: Some(0),
            payload_size: Some(7),
        }
    }

    #[test]
    fn special_values_become_absent_observations() {
        // The refusal's own text, as the pipeline writes it.
        let text = device_profiles::Reject::SpecialValue {
            metric: Metric::Systolic,
            value: SpecialValue::NaN,
        }
        .to_string();
        let q = quarantined(&text);
        assert_eq!(
            special_value_of(&q),
            Some((Metric::Systolic, SpecialValue::NaN))
        );
        let (id, o) = absent_observation(&q, "p1", &PhdContext::default()).unwrap();
        assert_eq!(id, "absent-7");
        assert_eq!(o["dataAbsentReason"]["coding"][0]["code"], "not-a-number");
        assert!(o.get("valueQuantity").is_none());
        assert_eq!(o["code"]["coding"][1]["code"], "150020");
        for (v, code) in [
            (SpecialValue::NRes, "error"),
            (SpecialValue::PositiveInfinity, "positive-infinity"),
            (SpecialValue::NegativeInfinity, "negative-infinity"),
            (SpecialValue::Reserved, "error"),
        ] {
            let text = device_profiles::Reject::SpecialValue {
                metric: Metric::BodyWeight,
                value: v,
            }
            .to_string();
            let (_, o) =
                absent_observation(&quarantined(&text), "p1", &PhdContext::default()).unwrap();
            assert_eq!(o["dataAbsentReason"]["coding"][0]["code"], code, "{v}");
            assert_eq!(o["code"]["coding"][1]["code"], "188736");
        }
        let mut other = quarantined("weight is 900 kg");
        other.reason = "implausible_value".into();
        assert!(absent_observation(&other, "p1", &PhdContext::default()).is_none());
    }

    #[test]
    fn gateway_system_id_is_written_as_the_ig_does() {
        let g = Gateway {
            system_id: "ecde3d4e58532d31".into(),
        };
        assert_eq!(g.eui64(), "EC-DE-3D-4E-58-53-2D-31");
        assert_eq!(g.resource_id(), "phg-ecde3d4e58532d31");
    }
}
