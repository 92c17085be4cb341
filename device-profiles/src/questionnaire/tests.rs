//! Each bundled instrument scored against examples computed by hand from
//! its published scoring rules, every refusal class, and load errors with
//! their place in the file.

use chrono::{Duration, TimeZone, Utc};
use std::path::Path;

use super::load::bundled_dir;
use super::response::TimeLimits;
use super::*;
use crate::metric::Metric;
use crate::reject::Reject;

const BASE: &str = "https://rpm-gateway.dev/fhir/Questionnaire/";

fn limits() -> TimeLimits {
    TimeLimits {
        max_future: Duration::minutes(5),
        max_age: Duration::days(365),
    }
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 9, 0, 0).unwrap()
}

/// A plain response to questionnaire `id` with `answers` (linkId, code).
fn plain(id: &str, answers: &[(&str, &str)]) -> ResponseInput {
    let answers: serde_json::Map<String, serde_json::Value> = answers
        .iter()
        .map(|(l, c)| (l.to_string(), serde_json::json!(c)))
        .collect();
    let body = serde_json::json!({
        "questionnaire": format!("{BASE}{id}"),
        "patient_id": "p1",
        "authored": "2026-11-20T08:30:00+01:00",
        "answers": answers,
    });
    ResponseInput::from_plain(body.to_string().as_bytes()).unwrap()
}

fn value(a: &Accepted, m: Metric) -> Option<f64> {
    a.values.iter().find(|(x, _)| *x == m).map(|(_, v)| *v)
}

fn accept(id: &str, answers: &[(&str, &str)]) -> Result<Accepted, Reject> {
    bundled().accept(&plain(id, answers), now(), limits())
}

const F: [&str; 4] = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9"];

#[test]
fn bundled_questionnaires_load() {
    let mut set = QuestionnaireSet::default();
    set.add_dir(&bundled_dir()).unwrap();
    assert_eq!(set.len(), 6);
    assert_eq!(bundled().len(), 6, "every bundled file is compiled in");
}

#[test]
fn phq9_sums_and_prorates_up_to_two_missing() {
    // 0+1+2+3+0+1+2+3+0 = 12 (Kroenke 2001: moderate, 10-14).
    let all: Vec<(String, &str)> = (1..=9)
        .map(|i| (format!("phq9-{i}"), F[(i - 1) % 4]))
        .collect();
    fn refs<'a>(v: &'a [(String, &'static str)]) -> Vec<(&'a str, &'static str)> {
        v.iter().map(|(l, c)| (l.as_str(), *c)).collect()
    }
    let a = accept("phq-9", &refs(&all)).unwrap();
    assert_eq!(value(&a, Metric::Phq9Total), Some(12.0));
    assert_eq!(value(&a, Metric::Phq9SelfHarm), Some(0.0));
    // Items 1 and 2 missing: answered 2+3+0+1+2+3+0 = 11 over 7 items,
    // prorated 11/7*9 = 14.14 -> 14.
    let a = accept("phq-9", &refs(&all[2..])).unwrap();
    assert_eq!(value(&a, Metric::Phq9Total), Some(14.0));
    // Three missing: no score, but the self-harm answer is still a reading.
    let a = accept("phq-9", &refs(&all[3..])).unwrap();
    assert_eq!(value(&a, Metric::Phq9Total), None);
    assert_eq!(a.scores[0].missing, 3);
    assert_eq!(value(&a, Metric::Phq9SelfHarm), Some(0.0));
    // All "nearly every day": 27, the maximum; item 10 is not scored.
    let mut max: Vec<(String, &str)> = (1..=9).map(|i| (format!("phq9-{i}"), F[3])).collect();
    max.push(("phq9-10".into(), "extremely"));
    let a = accept("phq-9", &refs(&max)).unwrap();
    assert_eq!(value(&a, Metric::Phq9Total), Some(27.0));
    assert_eq!(value(&a, Metric::Phq9SelfHarm), Some(3.0));
    // Item 9 is required: never prorated away.
    assert_eq!(
        accept("phq-9", &refs(&all[..8])).unwrap_err().code(),
        "missing_answer"
    );
}

#[test]
fn phq2_needs_both_items() {
    let a = accept("phq-2", &[("phq2-1", F[2]), ("phq2-2", F[1])]).unwrap();
    assert_eq!(value(&a, Metric::Phq2Total), Some(3.0)); // positive screen (>= 3)
    assert_eq!(
        accept("phq-2", &[("phq2-1", F[2])]).unwrap_err(),
        Reject::MissingAnswer {
            link_id: "phq2-2".into()
        }
    );
}

#[test]
fn gad7_sums_and_prorates() {
    let answers = [
        ("gad7-1", F[3]),
        ("gad7-2", F[2]),
        ("gad7-3", F[2]),
        ("gad7-4", F[1]),
        ("gad7-5", F[0]),
        ("gad7-6", F[1]),
        ("gad7-7", F[2]),
    ];
    // 3+2+2+1+0+1+2 = 11 (Spitzer 2006: moderate, 10-14).
    assert_eq!(
        value(&accept("gad-7", &answers).unwrap(), Metric::Gad7Total),
        Some(11.0)
    );
    // One missing (gad7-1): 8 over 6 items -> 8/6*7 = 9.33 -> 9.
    assert_eq!(
        value(&accept("gad-7", &answers[1..]).unwrap(), Metric::Gad7Total),
        Some(9.0)
    );
    // Two missing: 6 over 5 -> 6/5*7 = 8.4 -> 8.
    assert_eq!(
        value(&accept("gad-7", &answers[2..]).unwrap(), Metric::Gad7Total),
        Some(8.0)
    );
    assert_eq!(
        value(&accept("gad-7", &answers[3..]).unwrap(), Metric::Gad7Total),
        None
    );
}

#[test]
fn mmrc_grade_is_the_answer() {
    for g in 0..=4 {
        let code = format!("grade-{g}");
        let a = accept("mmrc", &[("mmrc", &code)]).unwrap();
        assert_eq!(value(&a, Metric::MmrcGrade), Some(f64::from(g)));
    }
}

fn hf(overrides: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut a = vec![
        ("breathing", "usual"),
        ("swelling", "none"),
        ("sleep", "no"),
        ("tired", "no"),
        ("cough", "no"),
        ("dizzy", "no"),
        ("chest-pain", "no"),
        ("confusion", "no"),
    ];
    for (l, c) in overrides {
        a.iter_mut().find(|(x, _)| x == l).unwrap().1 = c;
    }
    a
}

#[test]
fn hf_checkin_zone_is_the_worst_answer() {
    let zone = |o: &[(&'static str, &'static str)]| {
        let a = accept("hf-daily-checkin", &hf(o)).unwrap();
        (
            value(&a, Metric::HfSymptomZone),
            value(&a, Metric::HfBreathlessness),
            value(&a, Metric::HfSwelling),
        )
    };
    assert_eq!(zone(&[]), (Some(0.0), Some(0.0), Some(0.0)));
    assert_eq!(
        zone(&[("swelling", "more")]),
        (Some(1.0), Some(0.0), Some(1.0))
    );
    assert_eq!(
        zone(&[("breathing", "worse"), ("tired", "yes")]),
        (Some(1.0), Some(1.0), Some(0.0))
    );
    assert_eq!(zone(&[("chest-pain", "yes")]).0, Some(2.0));
    assert_eq!(
        zone(&[("breathing", "at-rest")]),
        (Some(2.0), Some(2.0), Some(0.0))
    );
}

#[test]
fn copd_diary_counts_major_symptoms() {
    let day = |b: &str, amount: &str, colour: &str| {
        let a = accept(
            "copd-daily-diary",
            &[
                ("breathless", b),
                ("sputum-amount", amount),
                ("sputum-colour", colour),
                ("cough", "yes"),
                ("wheeze", "no"),
                ("cold", "no"),
                ("reliever", "no"),
            ],
        )
        .unwrap();
        (
            value(&a, Metric::CopdMajorSymptoms),
            value(&a, Metric::CopdBreathlessness),
        )
    };
    assert_eq!(day("usual", "no", "no"), (Some(0.0), Some(0.0)));
    // Anthonisen type 2: two of the three major symptoms.
    assert_eq!(day("much-worse", "yes", "no"), (Some(2.0), Some(2.0)));
    assert_eq!(day("worse", "yes", "yes"), (Some(3.0), Some(1.0)));
}

#[test]
fn mean_and_scaled_scores() {
    // A KCCQ-style scale: items 1-5, scaled 100 * (mean - 1) / 4.
    let text = r#"{
  "resourceType": "Questionnaire", "url": "https://example.org/Questionnaire/scale",
  "version": "2", "name": "Scale", "status": "active",
  "extension": [
    {"url": "https://rpm-gateway.dev/fhir/StructureDefinition/questionnaire-score",
     "extension": [{"url": "metric", "valueCode": "kccq12_summary"}, {"url": "method", "valueCode": "scaled"},
                   {"url": "item", "valueString": "a"}, {"url": "item", "valueString": "b"},
                   {"url": "item", "valueString": "c"}, {"url": "maxMissing", "valueInteger": 1}]}
  ],
  "item": [
    {"linkId": "a", "type": "integer", "extension": [
       {"url": "http://hl7.org/fhir/StructureDefinition/minValue", "valueInteger": 1},
       {"url": "http://hl7.org/fhir/StructureDefinition/maxValue", "valueInteger": 5}]},
    {"linkId": "b", "type": "integer", "extension": [
       {"url": "http://hl7.org/fhir/StructureDefinition/minValue", "valueInteger": 1},
       {"url": "http://hl7.org/fhir/StructureDefinition/maxValue", "valueInteger": 5}]},
    {"linkId": "c", "type": "integer", "extension": [
       {"url": "http://hl7.org/fhir/StructureDefinition/minValue", "valueInteger": 1},
       {"url": "http://hl7.org/fhir/StructureDefinition/maxValue", "valueInteger": 5}]}
  ]
}"#;
    let mut set = QuestionnaireSet::default();
    set.add(Questionnaire::from_json(text, Path::new("scale.json")).unwrap())
        .unwrap();
    let run = |answers: serde_json::Value| {
        let body = serde_json::json!({"questionnaire": "https://example.org/Questionnaire/scale",
            "version": "2", "device_id": "tab-1", "authored": "2026-11-20T08:00:00Z", "answers": answers});
        set.accept(
            &ResponseInput::from_plain(body.to_string().as_bytes()).unwrap(),
            now(),
            limits(),
        )
    };
    // mean (2+4+5)/3 = 11/3; 100 * (11/3 - 1) / 4 = 66.67
    let a = run(serde_json::json!({"a": 2, "b": 4, "c": 5})).unwrap();
    assert!((value(&a, Metric::Kccq12Summary).unwrap() - 200.0 / 3.0).abs() < 1e-9);
    // One missing: mean of (3, 5) = 4 -> 75.
    let a = run(serde_json::json!({"a": 3, "c": 5})).unwrap();
    assert_eq!(value(&a, Metric::Kccq12Summary), Some(75.0));
    assert_eq!(run(serde_json::json!({"a": 3})).unwrap().values, vec![]);
    assert_eq!(
        run(serde_json::json!({"a": 6})).unwrap_err().code(),
        "invalid_answer"
    );
}

#[test]
fn every_bad_response_is_a_typed_refusal() {
    let set = bundled();
    let code = |body: serde_json::Value| {
        let input = match ResponseInput::from_plain(body.to_string().as_bytes()) {
            Ok(i) => i,
            Err(e) => return e.code(),
        };
        set.accept(&input, now(), limits()).unwrap_err().code()
    };
    let ok = serde_json::json!({"questionnaire": format!("{BASE}mmrc"), "patient_id": "p1",
        "authored": "2026-11-20T08:00:00Z", "answers": {"mmrc": "grade-1"}});
    assert!(set
        .accept(
            &ResponseInput::from_plain(ok.to_string().as_bytes()).unwrap(),
            now(),
            limits()
        )
        .is_ok());
    let with = |k: &str, v: serde_json::Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    assert_eq!(
        code(with("questionnaire", "https://x.org/Q/kccq".into())),
        "unknown_questionnaire"
    );
    assert_eq!(code(with("version", "0.9".into())), "questionnaire_version");
    assert_eq!(
        code(with(
            "answers",
            serde_json::json!({"mmrc": "grade-1", "extra": "x"})
        )),
        "unknown_item"
    );
    assert_eq!(
        code(with("answers", serde_json::json!({"mmrc": "grade-7"}))),
        "invalid_answer"
    );
    assert_eq!(
        code(with("answers", serde_json::json!({"mmrc": true}))),
        "invalid_answer"
    );
    assert_eq!(
        code(with("answers", serde_json::json!({}))),
        "missing_answer"
    );
    assert_eq!(
        code(with("authored", "2026-11-20".into())),
        "invalid_timestamp"
    );
    assert_eq!(
        code(with("authored", "2026-11-21T08:00:00Z".into())),
        "future_timestamp"
    );
    assert_eq!(
        code(with("authored", "2020-01-01T08:00:00Z".into())),
        "ancient_timestamp"
    );
    assert_eq!(
        code(with("status", "in-progress".into())),
        "schema_mismatch"
    );
    assert_eq!(
        code(with("patient_id", serde_json::Value::Null)),
        "schema_mismatch"
    );
    assert_eq!(code(with("colour", "blue".into())), "schema_mismatch");
    assert_eq!(
        ResponseInput::from_plain(b"{not json").unwrap_err().code(),
        "malformed_payload"
    );
}

#[test]
fn fhir_form_reads_like_the_plain_one_and_identity_is_stable() {
    let fhir = serde_json::json!({
        "resourceType": "QuestionnaireResponse",
        "questionnaire": format!("{BASE}phq-2|1.0.0"),
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "authored": "2026-11-20T08:30:00+01:00",
        "item": [
            {"linkId": "phq2-1", "answer": [{"valueCoding": {"system": "http://loinc.org", "code": F[1]}}]},
            {"linkId": "phq2-2", "answer": [{"valueCoding": {"code": F[2]}}]}
        ]
    });
    let set = bundled();
    let a = set
        .accept(
            &ResponseInput::from_fhir(fhir.to_string().as_bytes()).unwrap(),
            now(),
            limits(),
        )
        .unwrap();
    let b = accept("phq-2", &[("phq2-1", F[1]), ("phq2-2", F[2])]).unwrap();
    assert_eq!(
        a.response_id, b.response_id,
        "same questionnaire, subject and time"
    );
    assert_eq!(value(&a, Metric::Phq2Total), Some(3.0));
    let g = a.readings("p1", now(), crate::Source::Http);
    assert_eq!(
        g.readings[0].measured_at,
        Utc.with_ymd_and_hms(2026, 11, 20, 7, 30, 0).unwrap()
    );
    assert!(g.readings[0].is_manual());
    assert_eq!(g.readings[0].loinc, "55758-7");
    assert_eq!(g.readings[0].unit, "{score}");
    // A wrong system for a coded answer is refused.
    let mut wrong = fhir.clone();
    wrong["item"][0]["answer"][0]["valueCoding"]["system"] = "http://snomed.info/sct".into();
    assert_eq!(
        set.accept(
            &ResponseInput::from_fhir(wrong.to_string().as_bytes()).unwrap(),
            now(),
            limits()
        )
        .unwrap_err()
        .code(),
        "invalid_answer"
    );
    // An identifier is the identity, whatever the time.
    let mut ided = fhir.clone();
    ided["identifier"] = serde_json::json!({"system": "urn:app", "value": "r-1"});
    let x = set
        .accept(
            &ResponseInput::from_fhir(ided.to_string().as_bytes()).unwrap(),
            now(),
            limits(),
        )
        .unwrap();
    ided["authored"] = "2026-11-20T08:31:00+01:00".into();
    let y = set
        .accept(
            &ResponseInput::from_fhir(ided.to_string().as_bytes()).unwrap(),
            now(),
            limits(),
        )
        .unwrap();
    assert_eq!(x.response_id, y.response_id);
    assert_ne!(x.response_id, a.response_id);
}

#[test]
fn broken_definitions_name_file_line_and_field() {
    let good = std::fs::read_to_string(bundled_dir().join("mmrc.json")).unwrap();
    let load = |text: &str| Questionnaire::from_json(text, Path::new("q.json")).unwrap_err();
    // An unknown metric, reported at the line that names it.
    let e = load(&good.replace("\"mmrc_grade\"", "\"mmrc_grde\""));
    assert!(e.message.contains("unknown metric"), "{e}");
    assert_eq!(e.line, 10, "{e}");
    // A device metric is not a score.
    assert!(load(&good.replace("\"mmrc_grade\"", "\"spo2\""))
        .message
        .contains("device measurement"));
    // A score over an item that does not exist.
    let e = load(&good.replace("\"valueString\": \"mmrc\"", "\"valueString\": \"mmrc-x\""));
    assert!(e.message.contains("no item `mmrc-x`"), "{e}");
    // An option without a score cannot be scored.
    let e = load(&good.replacen("\"valueDecimal\": 0", "\"valueString\": \"0\"", 1));
    assert!(e.message.contains("ordinalValue"), "{e}");
    // JSON syntax: the parser's own position.
    let e = load("{\n  \"resourceType\": \"Questionnaire\",\n  oops\n}");
    assert_eq!(e.line, 3, "{e}");
    // A duplicate linkId, at its place.
    let phq = std::fs::read_to_string(bundled_dir().join("phq-9.json")).unwrap();
    let e = load(&phq.replace("\"phq9-10\"", "\"phq9-8\""));
    assert!(e.message.contains("used twice"), "{e}");
    assert!(e.line > 1);
    assert!(e.to_string().starts_with("q.json:"), "{e}");
}
