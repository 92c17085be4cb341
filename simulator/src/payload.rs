//! Encoding emissions as MQTT payloads for the bundled device profiles.
//!
//! Each device kind speaks one bundled vendor-JSON profile (`acme-*`), or
//! SenML when asked; faults are applied here, on the wire form, exactly as a
//! broken device would produce them.

use device_profiles::Metric;
use serde_json::{json, Map, Value};

use crate::emission::{DeviceKind, Emission, Fault};

/// Which wire format a virtual device uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WireFormat {
    /// The kind's ACME vendor JSON profile.
    #[default]
    Vendor,
    /// Generic SenML (profile `senml-generic`).
    Senml,
}

/// A message ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// MQTT topic.
    pub topic: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Name of the bundled device profile the payload is written for (the
    /// HTTP ingest body names it; MQTT finds it by topic).
    pub profile: &'static str,
}

/// Device id used by [`Fault::UnknownDevice`].
pub const UNKNOWN_DEVICE_PREFIX: &str = "unregistered-";

/// Encodes one emission.
pub fn encode(e: &Emission, format: WireFormat) -> Message {
    let device_id = match e.fault {
        Some(Fault::UnknownDevice) => format!("{UNKNOWN_DEVICE_PREFIX}{}", e.device_id),
        _ => e.device_id.clone(),
    };
    let (topic, mut body) = match (e.device, format) {
        (DeviceKind::Tablet, _) => (format!("rpm/questionnaire-answers/{device_id}"), checkin(e)),
        (_, WireFormat::Senml) => (format!("rpm/senml/{device_id}"), senml(e)),
        (_, WireFormat::Vendor) => (vendor_topic(e.device, &device_id), vendor(e)),
    };
    let profile = profile_name(e.device, format);
    let payload = match e.fault {
        Some(Fault::Malformed) => serde_json::to_string(&body)
            .unwrap_or_default()
            .replace('"', "'")
            .into_bytes(),
        Some(Fault::Truncated) => {
            let mut b = serde_json::to_vec(&body).unwrap_or_default();
            b.truncate(b.len() / 2);
            b
        }
        Some(Fault::Oversized) => {
            let padding = Value::String("x".repeat(300_000));
            match &mut body {
                Value::Object(o) => {
                    o.insert("padding".into(), padding);
                }
                // SenML: one more record, with a string value.
                Value::Array(a) => a.push(json!({"n": "padding", "vs": padding})),
                _ => {}
            }
            serde_json::to_vec(&body).unwrap_or_default()
        }
        _ => serde_json::to_vec(&body).unwrap_or_default(),
    };
    Message {
        topic,
        payload,
        profile,
    }
}

/// The bundled profile a kind speaks in a wire format.
pub fn profile_name(kind: DeviceKind, format: WireFormat) -> &'static str {
    match (format, kind) {
        (_, DeviceKind::Tablet) => "questionnaire-answers",
        (WireFormat::Senml, _) | (_, DeviceKind::Thermometer) => "senml-generic",
        (WireFormat::Vendor, DeviceKind::Scale) => "acme-scale",
        (WireFormat::Vendor, DeviceKind::BpCuff) => "acme-bp-cuff",
        (WireFormat::Vendor, DeviceKind::Glucometer) => "acme-glucometer",
        (WireFormat::Vendor, DeviceKind::PulseOximeter) => "acme-oximeter",
    }
}

/// The topic of a kind's vendor profile.
pub fn vendor_topic(kind: DeviceKind, device_id: &str) -> String {
    let level = match kind {
        DeviceKind::Scale => "scale",
        DeviceKind::BpCuff => "bp",
        DeviceKind::Glucometer => "glucose",
        DeviceKind::PulseOximeter => "oximeter",
        // No vendor thermometer profile: thermometers speak SenML.
        DeviceKind::Thermometer => return format!("rpm/senml/{device_id}"),
        DeviceKind::Tablet => return format!("rpm/questionnaire-answers/{device_id}"),
    };
    format!("acme/{level}/{device_id}")
}

fn value_of(e: &Emission, metric: Metric) -> Option<(Value, &'static str)> {
    e.values
        .iter()
        .find(|(m, _, _)| *m == metric)
        .map(|(_, v, u)| {
            let v = match e.fault {
                Some(Fault::NanValue) => Value::String("NaN".into()),
                Some(Fault::Implausible) => json!(v * 100.0),
                _ => json!(round(*v)),
            };
            let unit = match e.fault {
                Some(Fault::UnknownUnit) => "stone",
                _ => u.ucum(),
            };
            (v, unit)
        })
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn vendor(e: &Emission) -> Value {
    if e.device == DeviceKind::Thermometer {
        return senml(e);
    }
    let mut o = Map::new();
    let ts = e.at;
    match e.device {
        DeviceKind::Scale => {
            let mut r = Map::new();
            r.insert("ts".into(), json!(ts.timestamp()));
            if let Some((v, u)) = value_of(e, Metric::BodyWeight) {
                r.insert("weight".into(), v);
                r.insert("unit".into(), json!(u));
            }
            if let Some((v, _)) = value_of(e, Metric::BodyFat) {
                r.insert("fat_pct".into(), v);
            }
            if let Some(s) = e.sequence {
                r.insert("seq".into(), json!(s));
            }
            o.insert("serial".into(), json!(e.device_id));
            o.insert("readings".into(), Value::Array(vec![Value::Object(r)]));
        }
        DeviceKind::BpCuff => {
            o.insert("measured_at".into(), json!(ts.to_rfc3339()));
            for (metric, key) in [
                (Metric::Systolic, "sys"),
                (Metric::Diastolic, "dia"),
                (Metric::MeanArterialPressure, "map"),
                (Metric::PulseRate, "pulse"),
            ] {
                if let Some((v, u)) = value_of(e, metric) {
                    o.insert(key.into(), v);
                    if metric == Metric::Systolic {
                        o.insert("unit".into(), json!(u));
                    }
                }
            }
            if let Some(ihb) = e.annotations.get("irregular_pulse") {
                o.insert("ihb".into(), json!(ihb == "true"));
            }
        }
        DeviceKind::Glucometer => {
            o.insert("time_ms".into(), json!(ts.timestamp_millis()));
            if let Some((v, u)) = value_of(e, Metric::BloodGlucose) {
                o.insert("glucose".into(), json!({"value": v, "unit": u}));
            }
            if let Some(s) = e.sequence {
                o.insert("seq".into(), json!(s));
            }
            if let Some(meal) = e.annotations.get("meal") {
                o.insert("meal".into(), json!(meal));
            }
        }
        DeviceKind::PulseOximeter => {
            o.insert("t".into(), json!(ts.to_rfc3339()));
            if let Some((v, _)) = value_of(e, Metric::Spo2) {
                o.insert("spo2".into(), v);
            }
            if let Some((v, _)) = value_of(e, Metric::OximetryPulseRate) {
                o.insert("pr".into(), v);
            }
        }
        DeviceKind::Thermometer | DeviceKind::Tablet => {}
    }
    Value::Object(o)
}

/// Canonical URL of the bundled heart-failure check-in.
pub const HF_CHECKIN: &str = "https://rpm-gateway.dev/fhir/Questionnaire/hf-daily-checkin";
/// Canonical URL of the bundled COPD diary.
pub const COPD_DIARY: &str = "https://rpm-gateway.dev/fhir/Questionnaire/copd-daily-diary";

/// A tablet's daily check-in in the plain JSON form of the bundled
/// questionnaires (`questionnaire-answers` profile): the answers whose
/// scores are the emission's values. The device clock gives `authored`.
fn checkin(e: &Emission) -> Value {
    let score = |m: Metric| {
        e.values
            .iter()
            .find(|(x, _, _)| *x == m)
            .map_or(0.0, |(_, v, _)| *v)
    };
    let yes = |b: bool| if b { "yes" } else { "no" };
    let (url, mut answers) = if e
        .values
        .iter()
        .any(|(m, _, _)| *m == Metric::CopdMajorSymptoms)
    {
        let major = score(Metric::CopdMajorSymptoms);
        let breathless = ["usual", "worse", "much-worse"]
            [score(Metric::CopdBreathlessness).clamp(0.0, 2.0) as usize];
        (
            COPD_DIARY,
            json!({"breathless": breathless, "sputum-amount": yes(major >= 2.0),
                   "sputum-colour": yes(major >= 3.0), "cough": yes(major >= 2.0), "wheeze": "no",
                   "cold": "no", "reliever": yes(major >= 2.0)}),
        )
    } else {
        let breathing =
            ["usual", "worse", "at-rest"][score(Metric::HfBreathlessness).clamp(0.0, 2.0) as usize];
        let swelling = if score(Metric::HfSwelling) >= 1.0 {
            "more"
        } else {
            "none"
        };
        (
            HF_CHECKIN,
            json!({"breathing": breathing, "swelling": swelling, "sleep": yes(score(Metric::HfBreathlessness) >= 2.0),
                   "tired": yes(score(Metric::HfSwelling) >= 1.0), "cough": "no", "dizzy": "no",
                   "chest-pain": "no", "confusion": "no"}),
        )
    };
    if e.fault == Some(Fault::InvalidAnswer) {
        let first = if url == HF_CHECKIN {
            "breathing"
        } else {
            "breathless"
        };
        answers[first] = json!("not-sure");
    }
    json!({"questionnaire": url, "authored": e.at.to_rfc3339(), "answers": answers})
}

/// Whole seconds as an integer (what most devices send), a fraction with
/// millisecond resolution otherwise (load mode stamps the wall clock, so that
/// publish-to-commit latency can be read from the store).
fn senml_time(at: chrono::DateTime<chrono::Utc>) -> Value {
    if at.timestamp_subsec_millis() == 0 {
        json!(at.timestamp())
    } else {
        json!(at.timestamp_millis() as f64 / 1000.0)
    }
}

fn senml(e: &Emission) -> Value {
    let mut records = Vec::new();
    for (i, (metric, _, _)) in e.values.iter().enumerate() {
        let Some((v, u)) = value_of(e, *metric) else {
            continue;
        };
        let mut r = Map::new();
        if i == 0 {
            r.insert("bt".into(), senml_time(e.at));
        }
        r.insert("n".into(), json!(metric.name()));
        r.insert("u".into(), json!(u));
        r.insert("v".into(), v);
        records.push(Value::Object(r));
    }
    if let Some(s) = e.sequence {
        records.push(json!({"n": "seq", "v": s}));
    }
    Value::Array(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use device_profiles::profile::{bundled_dir, ProfileSet};
    use device_profiles::Unit;

    fn emission(device: DeviceKind, values: Vec<(Metric, f64, Unit)>) -> Emission {
        Emission {
            at: Utc.with_ymd_and_hms(2026, 1, 31, 7, 42, 10).unwrap(),
            patient_id: "p".into(),
            device_id: "d1".into(),
            device,
            values,
            annotations: Default::default(),
            sequence: Some(4),
            fault: None,
        }
    }

    /// A tablet's check-in is a response the bundled questionnaires accept,
    /// scored as the emission's values say; an invalid answer is refused.
    #[test]
    fn checkins_are_scored_by_the_bundled_questionnaires() {
        use device_profiles::questionnaire::response::{ResponseInput, TimeLimits};
        let set = ProfileSet::load_dir(&bundled_dir()).unwrap();
        let questionnaires = device_profiles::questionnaire::bundled();
        let limits = TimeLimits {
            max_future: chrono::Duration::minutes(5),
            max_age: chrono::Duration::days(365),
        };
        let cases = [
            (
                Metric::HfBreathlessness,
                1.0,
                Metric::HfSwelling,
                1.0,
                Metric::HfSymptomZone,
                1.0,
            ),
            (
                Metric::HfBreathlessness,
                2.0,
                Metric::HfSwelling,
                0.0,
                Metric::HfSymptomZone,
                2.0,
            ),
            (
                Metric::CopdBreathlessness,
                1.0,
                Metric::CopdMajorSymptoms,
                3.0,
                Metric::CopdMajorSymptoms,
                3.0,
            ),
            (
                Metric::CopdBreathlessness,
                0.0,
                Metric::CopdMajorSymptoms,
                0.0,
                Metric::CopdMajorSymptoms,
                0.0,
            ),
        ];
        for (m1, v1, m2, v2, total, want) in cases {
            let mut e = emission(
                DeviceKind::Tablet,
                vec![(m1, v1, Unit::Score), (m2, v2, Unit::Score)],
            );
            let m = encode(&e, WireFormat::Vendor);
            assert_eq!(set.for_topic(&m.topic).unwrap().name, m.profile);
            // The gateway takes the device from the topic.
            let mut input = ResponseInput::from_plain(&m.payload).unwrap();
            input.subject.device_id = Some("d1".into());
            let a = questionnaires.accept(&input, e.at, limits).unwrap();
            let got = |metric: Metric| a.values.iter().find(|(x, _)| *x == metric).map(|(_, v)| *v);
            assert_eq!(got(m1), Some(v1));
            assert_eq!(got(m2), Some(v2));
            assert_eq!(got(total), Some(want));
            e.fault = Some(Fault::InvalidAnswer);
            let mut input =
                ResponseInput::from_plain(&encode(&e, WireFormat::Vendor).payload).unwrap();
            input.subject.device_id = Some("d1".into());
            assert_eq!(
                questionnaires
                    .accept(&input, e.at, limits)
                    .unwrap_err()
                    .code(),
                crate::faults::expected_reject(Fault::InvalidAnswer)
            );
        }
    }

    /// Every kind, in both formats, decodes with the bundled profiles.
    #[test]
    fn payloads_decode_with_bundled_profiles() {
        let set = ProfileSet::load_dir(&bundled_dir()).unwrap();
        let cases = [
            emission(
                DeviceKind::Scale,
                vec![(Metric::BodyWeight, 176.4, Unit::Lb)],
            ),
            emission(
                DeviceKind::BpCuff,
                vec![
                    (Metric::Systolic, 132.0, Unit::MmHg),
                    (Metric::Diastolic, 84.0, Unit::MmHg),
                    (Metric::PulseRate, 71.0, Unit::PerMin),
                ],
            ),
            emission(
                DeviceKind::Glucometer,
                vec![(Metric::BloodGlucose, 5.4, Unit::MmolPerL)],
            ),
            emission(
                DeviceKind::PulseOximeter,
                vec![
                    (Metric::Spo2, 96.0, Unit::Percent),
                    (Metric::OximetryPulseRate, 74.0, Unit::PerMin),
                ],
            ),
            emission(
                DeviceKind::Thermometer,
                vec![(Metric::BodyTemperature, 37.2, Unit::Celsius)],
            ),
        ];
        for e in &cases {
            for format in [WireFormat::Vendor, WireFormat::Senml] {
                let m = encode(e, format);
                let p = set
                    .for_topic(&m.topic)
                    .unwrap_or_else(|| panic!("no profile for {}", m.topic));
                assert_eq!(p.name, m.profile);
                let d = p.decode(&m.topic, &m.payload).unwrap();
                assert_eq!(d.device_id.as_deref(), Some("d1"));
                let meas = d.measurements[0].as_ref().unwrap();
                assert_eq!(
                    meas.components.len(),
                    e.values.len(),
                    "{:?} {format:?}",
                    e.device
                );
            }
        }
    }
}
