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
