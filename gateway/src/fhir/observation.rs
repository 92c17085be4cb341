//! Readings as FHIR R4 Observations.
//!
//! A blood-pressure measurement is one panel Observation (LOINC 85354-9)
//! with systolic, diastolic and mean-pressure components; every other
//! reading is its own Observation. Units are UCUM, codes LOINC (plus the
//! codes the FHIR vital-signs profiles require, e.g. 2708-6 for SpO2) and
//! the device's MDC code, `effectiveDateTime` is the corrected measurement
//! time, `device` the measuring device and the gateway extension this
//! gateway (the PHD IG, [`super::phd`]). Ids: `bp-<group id>` for panels,
//! the reading id otherwise.

use device_profiles::Metric;
use serde_json::{json, Value};

use super::instant;
use super::phd::{self, PhdContext};
use crate::store::queries::{self, StoredReading};
use crate::store::StoreError;

/// The gateway's own reading ids (the Observation's second identifier).
pub const READING_ID_SYSTEM: &str = "urn:rpm-gateway:reading";
/// LOINC's system URI.
pub const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
/// LOINC code of the blood-pressure panel.
pub const BP_PANEL: &str = "85354-9";
/// The panel's components, in the order they are listed.
pub const BP_METRICS: [Metric; 3] = [
    Metric::Systolic,
    Metric::Diastolic,
    Metric::MeanArterialPressure,
];

/// Whether `metric` is a component of the blood-pressure panel.
pub fn is_bp(metric: &str) -> bool {
    BP_METRICS.iter().any(|m| m.name() == metric)
}

/// Extra codings and category of a metric for the FHIR vital-signs profiles.
pub fn vital(
    metric: Metric,
) -> (
    Vec<(&'static str, &'static str)>,
    &'static str,
    Option<&'static str>,
) {
    use Metric::*;
    // (extra codings, category, vital-signs profile)
    match metric {
        Spo2 => (
            vec![("2708-6", "Oxygen saturation in Arterial blood")],
            "vital-signs",
            Some("http://hl7.org/fhir/StructureDefinition/oxygensat"),
        ),
        OximetryPulseRate => (
            vec![("8867-4", "Heart rate")],
            "vital-signs",
            Some("http://hl7.org/fhir/StructureDefinition/heartrate"),
        ),
        PulseRate | HeartRate => (
            vec![],
            "vital-signs",
            Some("http://hl7.org/fhir/StructureDefinition/heartrate"),
        ),
        BodyWeight => (
            vec![],
            "vital-signs",
            Some("http://hl7.org/fhir/StructureDefinition/bodyweight"),
        ),
        BodyHeight => (
            vec![],
            "vital-signs",
            Some("http://hl7.org/fhir/StructureDefinition/bodyheight"),
        ),
        Bmi => (
            vec![],
            "vital-signs",
            Some("http://hl7.org/fhir/StructureDefinition/bmi"),
        ),
        BodyTemperature => (
            vec![],
            "vital-signs",
            Some("http://hl7.org/fhir/StructureDefinition/bodytemp"),
        ),
        RespiratoryRate => (
            vec![],
            "vital-signs",
            Some("http://hl7.org/fhir/StructureDefinition/resprate"),
        ),
        BloodGlucose => (vec![], "laboratory", None),
        m if m.is_reported() => (vec![], "survey", None),
        _ => (vec![], "exam", None),
    }
}

/// Human unit for a UCUM code.
fn unit_text(ucum: &str) -> &str {
    match ucum {
        "mm[Hg]" => "mmHg",
        "/min" => "/min",
        "Cel" => "°C",
        "kg/m2" => "kg/m2",
        other => other,
    }
}

fn quantity(r: &StoredReading) -> Value {
    json!({"value": r.value, "unit": unit_text(&r.unit), "system": UCUM, "code": r.unit})
}

pub fn coding(code: &str, display: &str) -> Value {
    json!({"system": LOINC, "code": code, "display": display})
}

fn category(code: &str) -> Value {
    let display = match code {
        "vital-signs" => "Vital Signs",
        "laboratory" => "Laboratory",
        "survey" => "Survey",
        _ => "Exam",
    };
    json!([{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
        "code": code, "display": display
    }]}])
}

/// One Observation from the readings of one measurement (a BP panel) or
/// from one reading, as the PHD IG has it (see [`super::phd`]): MDC beside
/// LOINC, the device and the gateway, the IG's identifier first (the
/// conditional-create key; the gateway's reading ids follow), status bits
/// as `interpretation`, test data labelled `HTEST`, and a corrected device
/// clock's coincident time stamp in `derivedFrom`.
pub fn observation(readings: &[StoredReading], ctx: &PhdContext) -> Option<(String, Value)> {
    let first = readings.first()?;
    let mut identifiers: Vec<Value> = Vec::new();
    if let Some(id) = phd::observation_identifier(readings) {
        identifiers.push(id.to_fhir());
    }
    identifiers.extend(
        readings
            .iter()
            .map(|r| json!({"system": READING_ID_SYSTEM, "value": r.reading_id})),
    );
    let base = |id: &str, code: Value, cat: &str, profiles: Vec<&str>| {
        let mut categories = category(cat);
        if let Some(list) = categories.as_array_mut() {
            list.push(json!({"coding": [{"system": phd::PHD_CATEGORY_SYSTEM, "code": "phd-observation"}]}));
        }
        let mut o = json!({
            "resourceType": "Observation",
            "id": id,
            "meta": {"profile": profiles},
            "identifier": identifiers,
            "status": "final",
            "category": categories,
            "code": code,
            "subject": phd::patient_reference(&first.patient_id),
            "effectiveDateTime": instant(first.measured_at),
            "issued": instant(first.received_at),
            "device": phd::device_reference(&first.device_id),
        });
        if let Some(g) = &ctx.gateway {
            o["extension"] =
                json!([{"url": phd::GATEWAY_EXTENSION, "valueReference": g.reference()}]);
        }
        if readings.iter().any(|r| ctx.is_test(r)) {
            o["meta"]["security"] = json!([phd::htest()]);
        }
        if let Some(coin) = phd::coincident_id(first) {
            o["derivedFrom"] = json!([{"reference": format!("Observation/{coin}")}]);
        }
        let interpretations: Vec<Value> = phd::interpretations(first);
        if !interpretations.is_empty() {
            o["interpretation"] = Value::Array(interpretations);
        }
        o
    };
    if is_bp(&first.metric) {
        let id = format!("bp-{}", first.group_id);
        let components: Vec<Value> = BP_METRICS
            .iter()
            .filter_map(|m| readings.iter().find(|r| r.metric == m.name()).map(|r| (m, r)))
            .map(|(m, r)| {
                let mut codings = vec![coding(m.loinc(), m.display())];
                if let Some((code, refid)) = phd::mdc(*m, &r.annotations) {
                    codings.push(phd::mdc_coding(code, refid));
                }
                json!({"code": {"coding": codings, "text": m.display()}, "valueQuantity": quantity(r)})
            })
            .collect();
        let mut o = base(
            &id,
            json!({"coding": [
                coding(BP_PANEL, "Blood pressure panel with all children optional"),
                phd::mdc_coding(phd::MDC_BP.0, phd::MDC_BP.1),
            ], "text": "Blood pressure"}),
            "vital-signs",
            vec![
                phd::PROFILE_COMPOUND,
                "http://hl7.org/fhir/StructureDefinition/bp",
            ],
        );
        o["component"] = Value::Array(components);
        Some((id, o))
    } else {
        let metric: Metric = first.metric.parse().ok()?;
        let (extra, cat, profile) = vital(metric);
        let (system, code) = metric.coding();
        // LOINC first (what readers of earlier versions took), MDC after.
        let mut codings =
            vec![json!({"system": system, "code": code, "display": metric.display()})];
        codings.extend(extra.iter().map(|(c, d)| coding(c, d)));
        let mdc = phd::mdc(metric, &first.annotations);
        if let Some((code, refid)) = mdc {
            codings.push(phd::mdc_coding(code, refid));
        }
        // A device measurement follows the IG's numeric profile; a
        // patient's questionnaire answer is no device's measurement.
        let mut profiles: Vec<&str> = Vec::new();
        if mdc.is_some() {
            profiles.push(phd::PROFILE_NUMERIC);
        }
        profiles.extend(profile);
        let mut o = base(
            &first.reading_id,
            json!({"coding": codings, "text": metric.display()}),
            cat,
            profiles,
        );
        o["valueQuantity"] = quantity(first);
        // A questionnaire's score or answer: derived from the response,
        // and reported by the patient, not measured by a device.
        if let Some(response) = first.annotations.get("response_id").and_then(Value::as_str) {
            o["derivedFrom"] = json!([{"reference": format!("QuestionnaireResponse/{response}")}]);
            o["performer"] = json!([{"reference": format!("Patient/{}", first.patient_id)}]);
            if first.device_id == device_profiles::questionnaire::response::SELF_REPORT_DEVICE {
                if let Some(map) = o.as_object_mut() {
                    map.remove("device");
                    map.remove("extension");
                }
            }
        }
        if o["meta"]["profile"].as_array().is_some_and(Vec::is_empty) {
            if let Some(meta) = o["meta"].as_object_mut() {
                meta.remove("profile");
            }
            if o["meta"].as_object().is_some_and(|m| m.is_empty()) {
                if let Some(map) = o.as_object_mut() {
                    map.remove("meta");
                }
            }
        }
        Some((first.reading_id.clone(), o))
    }
}

/// Splits readings (ordered by time, then commit order) into observations:
/// a BP panel's components are consecutive rows of one group.
pub fn group(rows: Vec<StoredReading>) -> Vec<Vec<StoredReading>> {
    let mut out: Vec<Vec<StoredReading>> = Vec::new();
    for r in rows {
        let joins = out.last().and_then(|g| g.last()).is_some_and(|last| {
            is_bp(&r.metric) && is_bp(&last.metric) && last.group_id == r.group_id
        });
        match out.last_mut() {
            Some(g) if joins => g.push(r),
            _ => out.push(vec![r]),
        }
    }
    out
}

/// The Observations (FHIR ids) carrying the readings the given alerts cite
/// as evidence, without repeats: alert by alert, each one's newest reading
/// first (the one that tipped its rule).
pub fn cited_observations(
    conn: &rusqlite::Connection,
    alert_ids: &[String],
) -> Result<Vec<String>, StoreError> {
    let mut ids: Vec<String> = Vec::new();
    for alert_id in alert_ids {
        let Some(alert) = crate::store::alerts::get(conn, alert_id)? else {
            continue;
        };
        let mut cited: Vec<crate::store::outbox::EvidenceReading> =
            serde_json::from_value(alert.evidence).unwrap_or_default();
        cited.sort_by_key(|e| std::cmp::Reverse(e.measured_at));
        for e in cited {
            if let Some(id) = observation_id(conn, &e.reading_id)? {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
    }
    Ok(ids)
}

/// The id of the Observation that carries stored reading `reading_id`
/// (a blood-pressure component lives in its panel), if the reading exists.
pub fn observation_id(
    conn: &rusqlite::Connection,
    reading_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(
        queries::reading_group(conn, reading_id)?.map(|(metric, group)| match is_bp(&metric) {
            true => format!("bp-{group}"),
            false => reading_id.to_string(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::phd::{Gateway, GATEWAY_EXTENSION, MDC};
    use crate::fhir::FhirConfig;
    use chrono::{TimeZone, Utc};

    fn reading(id: &str, metric: Metric, value: f64) -> StoredReading {
        StoredReading {
            seq: 1,
            reading_id: id.into(),
            group_id: "g1".into(),
            patient_id: "p1".into(),
            device_id: "AA:BB:CC:DD:EE:01".into(),
            metric: metric.name().into(),
            value,
            unit: metric.canonical_unit().ucum().into(),
            loinc: metric.loinc().into(),
            device_measured_at: Some(Utc.timestamp_millis_opt(1_769_845_330_120).unwrap()),
            measured_at: Utc.timestamp_millis_opt(1_769_845_390_120).unwrap(),
            received_at: Utc.timestamp_millis_opt(1_769_845_400_000).unwrap(),
            source: "ble".into(),
            sequence: None,
            annotations: json!({}),
            panel: None,
            content_digest: None,
        }
    }

    fn ctx() -> PhdContext {
        PhdContext {
            gateway: Some(Gateway {
                system_id: "ecde3d4e58532d31".into(),
            }),
            ..PhdContext::default()
        }
    }

    fn codes(v: &Value) -> Vec<(String, String)> {
        v["coding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["system"].as_str().unwrap().to_string(),
                    c["code"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn blood_pressure_is_a_phd_compound_with_mdc_and_loinc() {
        let bp = vec![
            reading("s", Metric::Systolic, 128.0),
            reading("d", Metric::Diastolic, 82.0),
            reading("m", Metric::MeanArterialPressure, 97.0),
        ];
        let (id, o) = observation(&bp, &ctx()).unwrap();
        assert_eq!(id, "bp-g1");
        let code = codes(&o["code"]);
        assert_eq!(
            code[0],
            (LOINC.into(), BP_PANEL.into()),
            "LOINC stays first"
        );
        assert!(code.contains(&(MDC.into(), "150020".into())));
        let components: Vec<Vec<(String, String)>> = o["component"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| codes(&c["code"]))
            .collect();
        assert!(components[0].contains(&(MDC.into(), "150021".into())));
        assert!(components[1].contains(&(MDC.into(), "150022".into())));
        assert!(components[2].contains(&(MDC.into(), "150023".into())));
        assert_eq!(o["meta"]["profile"][0], phd::PROFILE_COMPOUND);
        assert_eq!(o["extension"][0]["url"], GATEWAY_EXTENSION);
        assert_eq!(
            o["extension"][0]["valueReference"]["reference"],
            "Device/phg-ecde3d4e58532d31"
        );
        assert_eq!(
            o["device"]["reference"],
            format!("Device/{}", phd::device_resource_id("AA:BB:CC:DD:EE:01"))
        );
        assert_eq!(o["device"]["identifier"]["value"], "AA:BB:CC:DD:EE:01");
        assert_eq!(o["subject"]["identifier"]["system"], phd::PATIENT_ID_SYSTEM);
        // The IG's identifier: device (its Bluetooth address), patient, MDC
        // type, values, unit and the device's own time stamp.
        assert_eq!(
            o["identifier"][0]["value"],
            "AABBCCDDEE01-p1-150020-128-82-97-mm[Hg]-20260131074210.12"
        );
        assert!(o["identifier"][0].get("system").is_none());
        assert_eq!(o["identifier"][1]["system"], READING_ID_SYSTEM);
        assert!(o.get("derivedFrom").is_none() && o["meta"].get("security").is_none());
    }

    #[test]
    fn identifier_ignores_the_gateways_clock_correction() {
        let a = reading("w", Metric::BodyWeight, 81.5);
        let mut b = a.clone();
        b.measured_at += chrono::Duration::hours(3);
        b.received_at += chrono::Duration::days(1);
        b.reading_id = "w2".into();
        let ia = phd::observation_identifier(&[a]).unwrap();
        let ib = phd::observation_identifier(&[b]).unwrap();
        assert_eq!(ia, ib);
        assert_eq!(
            ia.if_none_exist(),
            "identifier=AABBCCDDEE01-p1-188736-81.5-kg-20260131074210.12"
        );
    }

    #[test]
    fn status_bits_test_data_and_corrected_clocks() {
        let mut r = reading("o", Metric::Spo2, 93.0);
        r.annotations = json!({
            "measurement_status": "questionable_measurement_detected,validated_data",
            "clock_corrected": "device_offset",
            "clock_offset_s": "-90",
        });
        let mut c = ctx();
        c.config = FhirConfig {
            test_devices: vec![r.device_id.clone()],
            ..FhirConfig::default()
        };
        let (_, o) = observation(std::slice::from_ref(&r), &c).unwrap();
        let interp: Vec<&str> = o["interpretation"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["coding"][0]["code"].as_str().unwrap())
            .collect();
        assert_eq!(interp, ["questionable", "validated-data"]);
        assert_eq!(o["meta"]["security"][0]["code"], "HTEST");
        assert_eq!(o["derivedFrom"][0]["reference"], "Observation/coin-g1");
        assert!(o["meta"]["profile"]
            .as_array()
            .unwrap()
            .contains(&json!(phd::PROFILE_NUMERIC)));
        let (id, coin) = phd::coincident_observation(&r, &c).unwrap();
        assert_eq!(id, "coin-g1");
        assert_eq!(coin["effectiveDateTime"], "2026-01-31T07:43:20.000Z");
        assert_eq!(coin["valueDateTime"], "2026-01-31T07:41:50.000Z");
        assert_eq!(
            coin["identifier"][0]["value"],
            "AABBCCDDEE01-67975-20260131074150.00-20260131074320.00",
            "the device, absolute time, its clock and the receipt"
        );
        assert_eq!(coin["meta"]["security"][0]["code"], "HTEST");
        // Not corrected: no coincident time stamp.
        let plain = reading("o2", Metric::Spo2, 95.0);
        assert!(phd::coincident_observation(&plain, &c).is_none());
    }

    #[test]
    fn questionnaire_answers_are_not_phd_measurements() {
        let mut r = reading("q", Metric::Phq9Total, 7.0);
        r.device_id = device_profiles::questionnaire::response::SELF_REPORT_DEVICE.into();
        r.annotations = json!({"response_id": "resp-1"});
        let (_, o) = observation(&[r], &ctx()).unwrap();
        assert!(o.get("device").is_none() && o.get("extension").is_none());
        assert!(o.get("meta").is_none(), "{o}");
        assert!(codes(&o["code"]).iter().all(|(s, _)| s != MDC));
    }
}
