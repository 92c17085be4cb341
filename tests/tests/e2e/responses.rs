//! Patient-reported outcomes end to end: questionnaire responses over HTTP
//! (plain JSON and FHIR), committed before the answer, scored into
//! readings, read back as FHIR and validated by an independent FHIR R4
//! library (`fhir.resources`), every bad-input class quarantined with its
//! reason, care-team isolation, and the alerts the scores raise.

use crate::common;

use chrono::{Duration as Days, SecondsFormat, Utc};
use common::api_client::{self as http, Api};
use common::{wait_until, Gateway, Mosquitto};
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);
const Q: &str = "https://rpm-gateway.dev/fhir/Questionnaire/";

struct World {
    _dir: tempfile::TempDir,
    _broker: Mosquitto,
    gw: Gateway,
    api: Api,
    admin: String,
    north: String,
    south: String,
    ingest: String,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let extra = r#"
[rules]
settle = "200ms"

[[patients]]
id = "p-north"
care_plans = ["heart-failure"]
care_team = "north"

[[patients]]
id = "p-south"
care_plans = ["copd"]
care_team = "south"
"#;
    let mut gw = Gateway::new(
        dir.path(),
        broker.port,
        &[("tab-n", "p-north"), ("scale-n", "p-north")],
        &http::api_config(extra),
    );
    let port = http::start_with_api(&mut gw);
    World {
        admin: http::token(&gw, "ops", "admin", &[]),
        north: http::token(&gw, "nurse-north", "care_team", &["north"]),
        south: http::token(&gw, "nurse-south", "care_team", &["south"]),
        ingest: http::token(&gw, "app", "ingest", &[]),
        _dir: dir,
        _broker: broker,
        gw,
        api: Api {
            base: format!("http://127.0.0.1:{port}"),
            cacert: None,
        },
    }
}

fn ago(hours: i64) -> String {
    (Utc::now() - Days::hours(hours)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn post(w: &World, path: &str, body: &Value) -> http::Resp {
    let media = if path.starts_with("/fhir") {
        "application/fhir+json"
    } else {
        "application/json"
    };
    w.api.request(
        "POST",
        path,
        Some(&w.ingest),
        Some((media, body.to_string().as_bytes())),
    )
}

fn hf_checkin(authored: &str, breathing: &str, chest_pain: &str) -> Value {
    let answer = |l: &str, c: &str| json!({"linkId": l, "answer": [{"valueCoding": {"code": c}}]});
    json!({
        "resourceType": "QuestionnaireResponse",
        "questionnaire": format!("{Q}hf-daily-checkin|1.0.0"),
        "status": "completed",
        "author": {"reference": "Device/tab-n"},
        "authored": authored,
        "item": [
            answer("breathing", breathing), answer("swelling", "none"), answer("sleep", "no"),
            answer("tired", "no"), answer("cough", "no"), answer("dizzy", "no"),
            answer("chest-pain", chest_pain), answer("confusion", "no"),
        ]
    })
}

const VALIDATE: &str = r#"
import json, sys
from fhir.resources.bundle import Bundle
from fhir.resources.questionnaire import Questionnaire
from fhir.resources.questionnaireresponse import QuestionnaireResponse
from fhir.resources.observation import Observation
doc = json.load(sys.stdin)
out = {}
qs = Bundle.parse_obj(doc["questionnaires"])
out["questionnaires"] = sorted(Questionnaire.parse_obj(e["resource"]).name for e in doc["questionnaires"]["entry"])
r = QuestionnaireResponse.parse_obj(doc["response"])
out["response"] = [r.subject.reference, r.questionnaire, len(r.item)]
Bundle.parse_obj(doc["responses"])
out["responses"] = len(doc["responses"]["entry"])
obs = Bundle.parse_obj(doc["observations"])
out["observations"] = sorted(
    (o.code.coding[0].system, o.code.coding[0].code, o.valueQuantity.code, o.category[0].coding[0].code,
     o.derivedFrom[0].reference.split("/")[0])
    for o in (Observation.parse_obj(e["resource"]) for e in doc["observations"]["entry"]))
print(json.dumps(out))
"#;

/// Both forms stored and scored, deduplicated, readable as FHIR that an
/// independent library accepts, isolated by care team; alerts raised.
#[test]
fn responses_over_http_are_scored_stored_and_served_as_fhir() {
    let w = world();
    // Plain form: a PHQ-9 for p-north (12 points, item 9 = 1).
    let codes = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9"];
    let mut answers = serde_json::Map::new();
    for i in 1..=8 {
        answers.insert(format!("phq9-{i}"), json!(codes[(i - 1) % 4]));
    }
    answers.insert("phq9-9".into(), json!(codes[1]));
    let phq9 = json!({"questionnaire": format!("{Q}phq-9"), "patient_id": "p-north",
                      "authored": ago(2), "answers": answers});
    let r = post(&w, "/api/v1/responses", &phq9);
    r.expect(201);
    let body = r.json();
    assert_eq!(body["outcome"], "stored");
    assert_eq!(body["scores"][0]["metric"], "phq9_total");
    assert_eq!(body["scores"][0]["value"], 13.0); // 0+1+2+3+0+1+2+3 + 1
    assert_eq!(body["scores"][0]["code"]["code"], "44261-6");
    let phq_id = body["response_id"].as_str().unwrap().to_string();
    // The same response again: a duplicate, nothing added.
    let r = post(&w, "/api/v1/responses", &phq9);
    r.expect(200);
    assert_eq!(r.json()["outcome"], "duplicate");
    assert_eq!(w.gw.count("SELECT COUNT(*) FROM responses"), 1);
    assert_eq!(
        w.gw.count(
            "SELECT COUNT(*) FROM readings WHERE metric IN ('phq9_total', 'phq9_self_harm')"
        ),
        2
    );

    // FHIR form through the patient's tablet: a yellow day, then a red one.
    post(
        &w,
        "/fhir/QuestionnaireResponse",
        &hf_checkin(&ago(26), "worse", "no"),
    )
    .expect(201);
    let r = post(
        &w,
        "/fhir/QuestionnaireResponse",
        &hf_checkin(&ago(1), "worse", "yes"),
    );
    r.expect(201);
    let qr = r.json();
    assert_eq!(qr["subject"]["reference"], "Patient/p-north");
    let hf_id = qr["id"].as_str().unwrap().to_string();
    assert!(r.header("location").is_some_and(|l| l.ends_with(&hf_id)));
    assert_eq!(
        w.gw.count(&format!(
            "SELECT COUNT(*) FROM readings WHERE group_id = '{hf_id}' AND unit = '{{score}}'"
        )),
        3, // zone, breathlessness, swelling
    );

    // Alerts: the red zone, the yellow zone twice in a row, PHQ-9 item 9.
    wait_until("alerts of the scores", T, || {
        let a = w.gw.alerts_of("p-north");
        [
            "hf.symptoms-red-zone",
            "hf.symptoms-yellow-zone",
            "mood.phq9-self-harm",
            "mood.phq9-moderate",
        ]
        .iter()
        .all(|id| a.iter().any(|(r, _, _)| r == id))
    });

    // Reads, with care-team isolation.
    w.api
        .get(&format!("/fhir/QuestionnaireResponse/{hf_id}"), &w.north)
        .expect(200);
    w.api
        .get(&format!("/fhir/QuestionnaireResponse/{hf_id}"), &w.south)
        .expect(404);
    let south = w
        .api
        .get("/fhir/QuestionnaireResponse?patient=p-north", &w.south);
    south.expect(200);
    assert_eq!(south.json()["entry"].as_array().map(Vec::len), Some(0));
    // Without a patient, a care team's search sees its own teams' patients only.
    let all_south = w.api.get("/fhir/QuestionnaireResponse", &w.south).json();
    assert_eq!(all_south["entry"].as_array().map(Vec::len), Some(0));
    let all_north = w.api.get("/fhir/QuestionnaireResponse", &w.north).json();
    assert_eq!(all_north["entry"].as_array().map(Vec::len), Some(3));
    // Scores are readings in the JSON API too.
    let scores = w
        .api
        .get(
            "/api/v1/readings?patient=p-north&metric=phq9_total",
            &w.north,
        )
        .json();
    assert_eq!(scores["items"][0]["value"], 13.0);
    assert_eq!(scores["items"][0]["unit"], "{score}");
    let response = w
        .api
        .get(&format!("/fhir/QuestionnaireResponse/{phq_id}"), &w.north)
        .json();
    let responses = w
        .api
        .get("/fhir/QuestionnaireResponse?patient=p-north", &w.north)
        .json();
    assert_eq!(responses["entry"].as_array().map(Vec::len), Some(3));
    let questionnaires = w.api.get("/fhir/Questionnaire", &w.north).json();
    let observations = w
        .api
        .get(
            "/fhir/Observation?patient=p-north&code=http://loinc.org|44261-6,https://rpm-gateway.dev/fhir/CodeSystem/metric|hf_symptom_zone",
            &w.north,
        )
        .json();
    let out = http::python_fhir(
        VALIDATE,
        json!({"questionnaires": questionnaires, "response": response, "responses": responses,
               "observations": observations})
        .to_string()
        .as_bytes(),
    );
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        out["questionnaires"],
        json!([
            "COPDDailyDiary",
            "GAD7",
            "HFDailyCheckin",
            "MMRC",
            "PHQ2",
            "PHQ9"
        ])
    );
    assert_eq!(
        out["response"],
        json!(["Patient/p-north", format!("{Q}phq-9|1.0.0"), 9])
    );
    assert_eq!(out["responses"], 3);
    assert_eq!(
        out["observations"],
        json!([
            [
                "http://loinc.org",
                "44261-6",
                "{score}",
                "survey",
                "QuestionnaireResponse"
            ],
            [
                "https://rpm-gateway.dev/fhir/CodeSystem/metric",
                "hf_symptom_zone",
                "{score}",
                "survey",
                "QuestionnaireResponse"
            ],
            [
                "https://rpm-gateway.dev/fhir/CodeSystem/metric",
                "hf_symptom_zone",
                "{score}",
                "survey",
                "QuestionnaireResponse"
            ],
        ])
    );
    // Every read of a patient's response is audited.
    assert!(w.gw.count("SELECT COUNT(*) FROM audit_log WHERE patient_id = 'p-north'") > 0);
    let _ = &w.admin;
}

/// Every bad-input class is answered 422 once the input is committed to
/// quarantine, with its reason code and the bytes as received.
#[test]
fn every_bad_response_is_quarantined_with_its_reason() {
    let w = world();
    let ok = json!({"questionnaire": format!("{Q}mmrc"), "patient_id": "p-south",
                    "authored": ago(1), "answers": {"mmrc": "grade-2"}});
    post(&w, "/api/v1/responses", &ok).expect(201);
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let cases: Vec<(&str, Value)> = vec![
        (
            "unknown_questionnaire",
            with(
                "questionnaire",
                json!("https://example.org/Questionnaire/kccq-12"),
            ),
        ),
        ("questionnaire_version", with("version", json!("0.1"))),
        (
            "unknown_item",
            with("answers", json!({"mmrc": "grade-1", "mood": "fine"})),
        ),
        (
            "invalid_answer",
            with("answers", json!({"mmrc": "grade-9"})),
        ),
        ("missing_answer", with("answers", json!({}))),
        ("invalid_timestamp", with("authored", json!("yesterday"))),
        ("future_timestamp", with("authored", json!(ago(-3)))),
        ("unknown_patient", with("patient_id", json!("p-nobody"))),
        // p-north's tablet answering for p-south.
        ("patient_mismatch", with("device_id", json!("tab-n"))),
        ("unknown_device", {
            let mut b = with("device_id", json!("tab-unassigned"));
            b.as_object_mut().unwrap().remove("patient_id");
            b
        }),
    ];
    for (reason, body) in &cases {
        let r = post(&w, "/api/v1/responses", body);
        r.expect(422);
        assert_eq!(r.json()["reason"], *reason, "{body}");
        assert_eq!(w.gw.quarantined(reason), 1, "{reason}");
    }
    // Not JSON at all: quarantined too, bytes kept as sent.
    let raw = b"{\"questionnaire\": ";
    let r = w.api.request(
        "POST",
        "/fhir/QuestionnaireResponse",
        Some(&w.ingest),
        Some(("application/fhir+json", raw)),
    );
    r.expect(422);
    assert_eq!(r.json()["resourceType"], "OperationOutcome");
    assert_eq!(w.gw.quarantined("malformed_payload"), 1);
    let kept: Vec<u8> = w
        .gw
        .db()
        .query_row(
            "SELECT p.payload FROM quarantine q JOIN quarantine_payloads p ON p.digest = q.payload_digest WHERE q.reason = 'malformed_payload'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, raw);
    // Nothing of the refused responses became a response or a reading.
    assert_eq!(w.gw.count("SELECT COUNT(*) FROM responses"), 1);
    assert_eq!(w.gw.count("SELECT COUNT(*) FROM readings"), 1);
    // A care-team token cannot submit.
    let r = w.api.request(
        "POST",
        "/api/v1/responses",
        Some(&w.north),
        Some(("application/json", ok.to_string().as_bytes())),
    );
    r.expect(403);
}

/// A tablet publishes check-ins over MQTT through the bundled profiles
/// (FHIR and plain): acknowledged once in the inbox, scored into readings,
/// the bad one quarantined, and the alert the answers call for raised.
#[test]
fn tablet_check_ins_over_mqtt_are_scored_and_alert() {
    let w = world();
    // Weight first, then a check-in "more short of breath" a day later
    // with +1.2 kg: breathlessness with weight gain.
    let senml = |kg: f64, hours: i64| {
        format!(
            r#"[{{"bt":{},"n":"weight","u":"kg","v":{kg}}}]"#,
            (Utc::now() - Days::hours(hours)).timestamp()
        )
    };
    w._broker
        .publish("rpm/senml/scale-n", senml(80.0, 30).as_bytes());
    w._broker
        .publish("rpm/senml/scale-n", senml(81.2, 2).as_bytes());
    let checkin = hf_checkin(&ago(1), "worse", "no");
    let mut from_tablet = checkin.clone();
    from_tablet.as_object_mut().unwrap().remove("author");
    w._broker.publish(
        "rpm/questionnaire-response/tab-n",
        from_tablet.to_string().as_bytes(),
    );
    // Plain form, an mMRC grade, and one with an answer not offered.
    let mmrc = |grade: &str| {
        json!({"questionnaire": format!("{Q}mmrc"), "authored": ago(1), "answers": {"mmrc": grade}})
            .to_string()
    };
    w._broker.publish(
        "rpm/questionnaire-answers/tab-n",
        mmrc("grade-3").as_bytes(),
    );
    w._broker.publish(
        "rpm/questionnaire-answers/tab-n",
        mmrc("grade-5").as_bytes(),
    );
    // A response naming another device than its topic's.
    w._broker.publish(
        "rpm/questionnaire-response/tab-n",
        hf_checkin(&ago(3), "usual", "no")
            .to_string()
            .replace("Device/tab-n", "Device/tab-x")
            .as_bytes(),
    );
    wait_until("responses stored and refused", T, || {
        w.gw.count("SELECT COUNT(*) FROM responses") == 2
            && w.gw.quarantined("invalid_answer") == 1
            && w.gw.quarantined("schema_mismatch") == 1
    });
    let (device, patient): (String, String) = w
        .gw
        .db()
        .query_row(
            "SELECT device_id, patient_id FROM responses WHERE questionnaire LIKE '%hf-daily-checkin'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((device.as_str(), patient.as_str()), ("tab-n", "p-north"));
    assert_eq!(
        w.gw.count("SELECT COUNT(*) FROM readings WHERE metric = 'mmrc_grade' AND source = 'mqtt' AND device_id = 'tab-n'"),
        1
    );
    wait_until("breathless with weight gain", T, || {
        w.gw.alerts_of("p-north")
            .iter()
            .any(|(r, _, _)| r == "hf.breathless-with-weight-gain")
    });
    // A tablet not yet assigned: its check-in waits in quarantine, and is
    // stored with its scores once the tablet is assigned.
    w._broker.publish(
        "rpm/questionnaire-answers/tab-new",
        mmrc("grade-1").as_bytes(),
    );
    wait_until("the new tablet's check-in quarantined", T, || {
        w.gw.quarantined("unknown_device") == 1
    });
    let r = w.api.send(
        "PUT",
        "/api/v1/devices/tab-new/patient",
        &w.admin,
        &json!({"patient_id": "p-north"}),
    );
    r.expect(200);
    assert_eq!(r.json()["reprocessed"]["recovered"], 1, "{}", r.json());
    assert_eq!(
        w.gw.count(
            "SELECT COUNT(*) FROM responses WHERE device_id = 'tab-new' AND patient_id = 'p-north'"
        ),
        1
    );
    assert_eq!(
        w.gw.count("SELECT COUNT(*) FROM readings WHERE device_id = 'tab-new' AND metric = 'mmrc_grade' AND value = 1"),
        1
    );
    assert_eq!(
        w.gw.count("SELECT COUNT(*) FROM quarantine WHERE reason = 'unknown_device' AND status = 'reprocessed'"),
        1
    );
    // Patient-reported readings are never device data in the RPM report.
    assert_eq!(
        w.gw.count("SELECT COUNT(*) FROM readings WHERE unit = '{score}' AND json_extract(annotations, '$.entry') = 'manual'"),
        w.gw.count("SELECT COUNT(*) FROM readings WHERE unit = '{score}'"),
    );
}

/// A response is answered 2xx only once committed with its scores: a crash
/// before the commit answers nothing and stores nothing; a crash after it
/// stores the response and its readings, and the app's retry is a duplicate.
#[test]
fn responses_are_answered_only_after_the_commit() {
    for (fault, stored_after_crash) in [("abort-before-commit", 0), ("abort-after-commit", 1)] {
        let mut w = world();
        let phq2 = json!({"questionnaire": format!("{Q}phq-2"), "patient_id": "p-north",
                          "authored": ago(1), "answers": {"phq2-1": "LA6570-1", "phq2-2": "LA6570-1"}});
        w.gw.stop();
        w.gw.start_with_env(&[("RPM_FAULT_INJECT", fault)]);
        let port = w.gw.api_port();
        wait_until("the API", T, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let out = std::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .args([
                "-H",
                &format!("Authorization: Bearer {}", w.ingest),
                "-H",
                "Content-Type: application/json",
            ])
            .args(["--data-binary", &phq2.to_string()])
            .arg(format!("http://127.0.0.1:{port}/api/v1/responses"))
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            !code.starts_with('2'),
            "{fault}: answered {code} before the commit was safe"
        );
        w.gw.wait_exit(T);
        assert_eq!(
            w.gw.count("SELECT COUNT(*) FROM responses"),
            stored_after_crash,
            "{fault}"
        );
        assert_eq!(
            w.gw.count("SELECT COUNT(*) FROM readings WHERE metric = 'phq2_total'"),
            stored_after_crash,
            "{fault}: the score is committed with its response"
        );
        let port = http::start_with_api(&mut w.gw);
        w.api = Api {
            base: format!("http://127.0.0.1:{port}"),
            cacert: None,
        };
        let r = post(&w, "/api/v1/responses", &phq2);
        let expected = if stored_after_crash == 0 {
            ("stored", 201)
        } else {
            ("duplicate", 200)
        };
        r.expect(expected.1);
        assert_eq!(r.json()["outcome"], expected.0, "{fault}");
        assert_eq!(w.gw.count("SELECT COUNT(*) FROM responses"), 1);
        assert_eq!(
            w.gw.count("SELECT COUNT(*) FROM readings WHERE metric = 'phq2_total'"),
            1
        );
    }
}

/// A program checks its own (licensed) definitions before deploying them:
/// `questionnaires check` names the file, line and field of a mistake, and
/// a gateway configured with the directory loads them beside the bundled ones.
#[test]
fn a_programs_own_questionnaire_is_checked_and_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("questionnaires.d");
    std::fs::create_dir(&own).unwrap();
    let mmrc =
        std::fs::read_to_string(device_profiles::questionnaire::bundled_dir().join("mmrc.json"))
            .unwrap();
    let cmd = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .arg("questionnaires")
            .args(args)
            .output()
            .unwrap()
    };
    let list = cmd(&["list"]);
    assert!(list.status.success());
    assert!(String::from_utf8_lossy(&list.stdout).contains("phq9_total (http://loinc.org|44261-6)"));
    // A scale of the program's own under its URL, with a typo in the method.
    let scale = mmrc
        .replace(
            &format!("{Q}mmrc\""),
            "https://program.example/Questionnaire/breath\"",
        )
        .replace("\"max\"", "\"maximum\"");
    std::fs::write(own.join("breath.json"), &scale).unwrap();
    let out = cmd(&["check", own.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("breath.json:14:") && err.contains("extension[score 0].method"),
        "{err}"
    );
    std::fs::write(
        own.join("breath.json"),
        scale.replace("\"maximum\"", "\"max\""),
    )
    .unwrap();
    let out = cmd(&["check", own.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Loaded by a gateway: served, and responses to it are scored.
    let broker = Mosquitto::start(dir.path());
    let mut gw = Gateway::new(
        dir.path(),
        broker.port,
        &[],
        &http::api_config(
            "[questionnaires]\ndirs = [\"questionnaires.d\"]\n\n[[patients]]\nid = \"p1\"\ncare_plans = [\"copd\"]\n",
        ),
    );
    let port = http::start_with_api(&mut gw);
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        cacert: None,
    };
    let admin = http::token(&gw, "ops", "admin", &[]);
    let all = api.get("/fhir/Questionnaire", &admin).json();
    assert_eq!(all["total"], 7);
    let r = api.send(
        "POST",
        "/api/v1/responses",
        &admin,
        &json!({"questionnaire": "https://program.example/Questionnaire/breath", "patient_id": "p1",
                "authored": ago(1), "answers": {"mmrc": "grade-3"}}),
    );
    r.expect(201);
    assert_eq!(r.json()["scores"][0]["value"], 3.0);
}
