//! The HTTP API end to end: the real gateway binary with its API on a free
//! port, a real Mosquitto, a real SQLite file, and `curl` as the client.

use crate::common;

use chrono::{Duration as Days, SecondsFormat, Utc};
use common::api_client::{self as http, Api};
use common::{wait_until, Gateway, Mosquitto};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// A bodiless `POST` with a token: how every action route
/// (`.../resolve`, `.../redrive`, `.../rotate-secret`, ...) is called.
trait PostAction {
    fn post(&self, path: &str, token: &str) -> http::Resp;
}

impl PostAction for Api {
    fn post(&self, path: &str, token: &str) -> http::Resp {
        self.request("POST", path, Some(token), None)
    }
}

struct World {
    _dir: tempfile::TempDir,
    broker: Mosquitto,
    gw: Gateway,
    api: Api,
}

fn world(extra: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let mut gw = Gateway::new(dir.path(), broker.port, &[], &http::api_config(extra));
    let port = http::start_with_api(&mut gw);
    World {
        _dir: dir,
        broker,
        gw,
        api: Api {
            base: format!("http://127.0.0.1:{port}"),
            cacert: None,
        },
    }
}

/// `minutes` before one fixed instant of the test process, so that the
/// same call always gives the same time (a resend is the same reading).
fn ago(minutes: i64) -> String {
    static START: std::sync::OnceLock<chrono::DateTime<Utc>> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Utc::now);
    (start - Days::minutes(minutes)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn bp(minutes_ago: i64, sys: u32) -> Value {
    json!({"measured_at": ago(minutes_ago), "sys": sys, "dia": 84, "map": 100, "pulse": 71, "unit": "mmHg"})
}

fn push_bp(w: &World, token: &str, device: &str, minutes_ago: i64, sys: u32) -> Value {
    let r = w.api.send(
        "POST",
        "/api/v1/readings",
        token,
        &json!({"device_id": device, "profile": "acme-bp-cuff", "payload": bp(minutes_ago, sys)}),
    );
    r.expect(200);
    r.json()
}

struct Tokens {
    admin: String,
    read_only: String,
    north: String,
    south: String,
    ingest: String,
}

/// Two care teams, each with a patient and a cuff.
fn setup(w: &World) -> Tokens {
    let t = Tokens {
        admin: http::token(&w.gw, "ops", "admin", &[]),
        read_only: http::token(&w.gw, "auditor", "read_only", &[]),
        north: http::token(&w.gw, "nurse-north", "care_team", &["north"]),
        south: http::token(&w.gw, "nurse-south", "care_team", &["south"]),
        ingest: http::token(&w.gw, "vendor-cloud", "ingest", &[]),
    };
    for (patient, team) in [("p-north", "north"), ("p-south", "south")] {
        let r = w.api.send(
            "PUT",
            &format!("/api/v1/patients/{patient}"),
            &t.admin,
            &json!({"care_plans": ["hypertension"], "care_team": team}),
        );
        r.expect(201);
        assert_eq!(r.json()["care_team"], team);
    }
    for (device, patient) in [("cuff-n", "p-north"), ("cuff-s", "p-south")] {
        let r = w.api.send(
            "POST",
            "/api/v1/devices",
            &t.admin,
            &json!({"device_id": device, "patient_id": patient}),
        );
        r.expect(201);
        assert_eq!(r.json()["device"]["patient_id"], patient);
    }
    t
}

/// Health, readiness and metrics need no token and carry no PHI.
#[test]
fn health_readiness_and_metrics_are_open_and_phi_free() {
    let w = world("");
    let t = setup(&w);
    push_bp(&w, &t.ingest, "cuff-n", 5, 150);
    let h = w.api.request("GET", "/healthz", None, None);
    h.expect(200);
    assert_eq!(h.json()["status"], "ok");
    let r = w.api.request("GET", "/readyz", None, None);
    r.expect(200);
    let v = r.json();
    assert_eq!(v["ready"], true, "{v}");
    assert_eq!(v["store"]["writable"], true);
    assert_eq!(v["mqtt"]["connected"], true);
    assert!(
        v["backlog"]["readings_last_seq"].as_i64().unwrap() >= 4,
        "{v}"
    );
    let m = w.api.request("GET", "/metrics", None, None);
    m.expect(200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = m.text();
    for needle in [
        "rpm_readings_stored_total{source=\"http\"} 4",
        "rpm_messages_received_total{source=\"http\"} 1",
        "rpm_mqtt_connected 1",
        "rpm_store_batch_seconds_count",
        "rpm_api_requests_total{method=\"POST\",route=\"/api/v1/readings\",status=\"200\"} 1",
        "# TYPE rpm_alerts gauge",
        "# TYPE rpm_deliveries gauge",
        "rpm_devices{connection=\"none\"} 2",
        "rpm_readings_last_seq 4",
    ] {
        assert!(text.contains(needle), "metrics lack `{needle}`:\n{text}");
    }
    for phi in ["p-north", "cuff-n"] {
        assert!(
            !text.contains(phi) && !r.text().contains(phi),
            "`{phi}` leaked"
        );
    }
    // Readiness reports the broker going away.
    let mut w = w;
    w.broker.stop();
    wait_until("readyz to report the broker down", T, || {
        w.api.request("GET", "/readyz", None, None).status == 503
    });
    w.broker.restart();
}

/// 401 for no, unknown and revoked tokens (same body); 403 for a role that
/// may not; care teams never see each other's patients (404).
#[test]
fn authentication_roles_and_care_team_boundaries() {
    let w = world("");
    let t = setup(&w);
    push_bp(&w, &t.ingest, "cuff-n", 30, 150);
    push_bp(&w, &t.ingest, "cuff-s", 20, 160);

    // 401: no token, a wrong one, a malformed header, a revoked one.
    let none = w.api.request("GET", "/api/v1/readings", None, None);
    let d1 = none.problem(401);
    assert!(none
        .header("www-authenticate")
        .unwrap()
        .starts_with("Bearer"));
    let wrong = w.api.get("/api/v1/readings", "rpmgw_not-a-token");
    assert_eq!(wrong.problem(401), d1);
    let out = w.gw.cli(&["tokens", "list", "--json"]);
    let listed: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 5);
    assert!(
        listed.iter().all(|l| l.get("token_hash").is_none()),
        "{listed:?}"
    );
    let tmp = http::token(&w.gw, "temp", "read_only", &[]);
    w.api.get("/api/v1/readings", &tmp).expect(200);
    let id =
        w.gw.cli(&["tokens", "list", "--json"])
            .stdout
            .split(|b| *b == b'\n')
            .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
            .find(|v| v["name"] == "temp")
            .unwrap()["token_id"]
            .as_str()
            .unwrap()
            .to_string();
    assert!(w.gw.cli(&["tokens", "revoke", &id]).status.success());
    assert_eq!(w.api.get("/api/v1/readings", &tmp).problem(401), d1);
    for fhir in ["/fhir/Observation", "/fhir/Observation/x"] {
        let r = w.api.request("GET", fhir, None, None);
        r.expect(401);
        assert_eq!(r.header("content-type"), Some("application/fhir+json"));
        assert_eq!(r.json()["resourceType"], "OperationOutcome");
    }

    // 403: roles.
    w.api
        .send("PUT", "/api/v1/patients/p-x", &t.read_only, &json!({}))
        .problem(403);
    w.api
        .send("PUT", "/api/v1/patients/p-x", &t.north, &json!({}))
        .problem(403);
    w.api.get("/api/v1/readings", &t.ingest).problem(403);
    w.api.get("/api/v1/quarantine", &t.north).problem(403);
    w.api.get("/api/v1/audit", &t.read_only).problem(403);
    w.api
        .send(
            "POST",
            "/api/v1/readings",
            &t.read_only,
            &json!({"device_id": "cuff-n", "profile": "acme-bp-cuff", "payload": bp(1, 120)}),
        )
        .problem(403);

    // Care teams: their own patients only; the other team's are 404.
    let north_all = w.api.get("/api/v1/readings", &t.north).json();
    let items = north_all["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert!(items.iter().all(|r| r["patient_id"] == "p-north"));
    assert_eq!(
        w.api.get("/api/v1/readings", &t.admin).json()["items"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
    for path in [
        "/api/v1/readings?patient=p-south",
        "/api/v1/patients/p-south",
        "/api/v1/patients/p-south/readings/latest",
        "/api/v1/devices/cuff-s",
        "/api/v1/devices?patient=p-south",
        "/api/v1/alerts?patient=p-south",
    ] {
        let not_visible = w.api.get(path, &t.north).problem(404);
        let missing = w
            .api
            .get(
                &path
                    .replace("p-south", "p-nobody")
                    .replace("cuff-s", "cuff-nobody"),
                &t.north,
            )
            .problem(404);
        assert_eq!(
            not_visible.replace("p-south", ""),
            missing.replace("p-nobody", ""),
            "{path}"
        );
    }
    w.api.get("/api/v1/patients/p-north", &t.north).expect(200);
    w.api.get("/api/v1/devices/cuff-n", &t.north).expect(200);
    let pats = w.api.get("/api/v1/patients", &t.north).json();
    assert_eq!(pats["items"].as_array().unwrap().len(), 1);
    let devs = w.api.get("/api/v1/devices", &t.south).json();
    assert_eq!(devs["items"].as_array().unwrap().len(), 1);
    assert_eq!(devs["items"][0]["device_id"], "cuff-s");
    // FHIR: the other team's patient matches nothing; its Observation is 404.
    let b = w
        .api
        .get("/fhir/Observation?patient=p-south", &t.north)
        .json();
    assert!(b["entry"].as_array().unwrap().is_empty(), "{b}");
    let south_obs = w
        .api
        .get("/fhir/Observation?patient=p-south", &t.south)
        .json();
    let id = south_obs["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = w.api.get(&format!("/fhir/Observation/{id}"), &t.north);
    r.expect(404);
    assert_eq!(r.json()["issue"][0]["code"], "not-found");
    w.api
        .get(&format!("/fhir/Observation/{id}"), &t.south)
        .expect(200);
    // Care teams can read, not change.
    w.api
        .send(
            "PUT",
            "/api/v1/devices/cuff-n/patient",
            &t.north,
            &json!({"patient_id": "p-north"}),
        )
        .problem(403);

    // The audit log has who read what, about which patient.
    let audit = w.api.get("/api/v1/audit?limit=50", &t.admin).json();
    let entries = audit["items"].as_array().unwrap();
    assert!(entries
        .iter()
        .any(|e| e["action"] == "GET /api/v1/patients/{patient_id}"
            && e["patient_id"] == "p-south"
            && e["outcome"] == 404));
    // Anonymous refusals are counted and audited in aggregate (one row per
    // client address and minute), not one row each.
    assert!(!entries.iter().any(|e| e["actor"] == "anonymous"));
    let m = w.api.request("GET", "/metrics", None, None).text();
    assert!(m.contains("rpm_api_auth_failures_total{reason="), "{m}");
    assert!(entries
        .iter()
        .all(|e| e["actor"] != "" && e["at"].is_string()));
}

/// Push over HTTP: same profiles and normalization as MQTT, answered after
/// the commit, idempotent on the reading id; both body forms.
#[test]
fn ingest_is_committed_idempotent_and_reports_each_measurement() {
    let w = world("");
    let t = setup(&w);
    let first = push_bp(&w, &t.ingest, "cuff-n", 10, 150);
    assert_eq!(first["committed"], true);
    assert_eq!(first["profile"], "acme-bp-cuff");
    assert_eq!(first["measurements"][0]["outcome"], "stored");
    assert_eq!(
        first["measurements"][0]["reading_ids"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    // Committed before the answer: the file has it now.
    assert_eq!(w.gw.readings(), 4);
    let again = push_bp(&w, &t.ingest, "cuff-n", 10, 150);
    assert_eq!(again["measurements"][0]["outcome"], "duplicate");
    assert_eq!(
        again["measurements"][0]["reading_ids"],
        first["measurements"][0]["reading_ids"]
    );
    assert_eq!(w.gw.readings(), 4);
    // kPa is converted as over MQTT.
    let kpa = w.api.send(
        "POST",
        "/api/v1/readings",
        &t.admin,
        &json!({"device_id": "cuff-n", "profile": "acme-bp-cuff",
                "payload": {"measured_at": ago(9), "sys": 16.0, "dia": 11.0, "unit": "kPa"}}),
    );
    kpa.expect(200);
    let sys: f64 = w
        .gw
        .db()
        .query_row(
            "SELECT value FROM readings WHERE metric='systolic' AND source='http' ORDER BY measured_at DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!((sys - 16.0 * 7.500_615_758).abs() < 1e-6, "{sys}");

    // SenML body, device in the query.
    let senml = format!(
        r#"[{{"bn":"urn:dev:mac:0024befffe804ff1:","bt":{},"n":"spo2","u":"%","v":96}},{{"n":"temp","u":"Cel","v":41.0}},{{"n":"weight","u":"furlong","v":3}}]"#,
        (Utc::now() - Days::minutes(3)).timestamp()
    );
    let r = w.api.request(
        "POST",
        "/api/v1/readings?device_id=cuff-n",
        Some(&t.ingest),
        Some(("application/senml+json", senml.as_bytes())),
    );
    r.expect(200);
    let v = r.json();
    assert_eq!(v["profile"], "senml-generic");
    let m = v["measurements"].as_array().unwrap();
    assert!(
        m.iter()
            .any(|x| x["outcome"] == "quarantined" && x["reason"] == "unknown_unit")
            || m.iter().any(|x| x["outcome"] == "quarantined"),
        "{v}"
    );

    // Unassigned device: quarantined, and recovered when assigned.
    let r = push_bp(&w, &t.ingest, "cuff-new", 4, 140);
    assert_eq!(r["measurements"][0]["outcome"], "quarantined");
    assert_eq!(r["measurements"][0]["reason"], "unknown_device");
    let a = w.api.send(
        "PUT",
        "/api/v1/devices/cuff-new/patient",
        &t.admin,
        &json!({"patient_id": "p-north"}),
    );
    a.expect(200);
    assert_eq!(a.json()["reprocessed"]["recovered"], 1);

    // Malformed device payload: quarantined (durably), still a 200.
    let r = w.api.request(
        "POST",
        "/api/v1/readings",
        Some(&t.ingest),
        Some((
            "application/json",
            br#"{"device_id":"cuff-n","profile":"acme-bp-cuff","payload":{"sys":"high"}}"#,
        )),
    );
    r.expect(200);
    assert_eq!(r.json()["measurements"][0]["outcome"], "quarantined");

    // Client mistakes: 4xx problems, nothing stored or quarantined.
    let before = (
        w.gw.readings(),
        w.gw.count("SELECT COUNT(*) FROM quarantine"),
    );
    let cases: Vec<(&str, &[u8], u16)> = vec![
        ("application/json", b"{not json", 400),
        (
            "application/json",
            br#"{"device_id":"cuff-n","payload":{},"extra":1}"#,
            400,
        ),
        ("application/json", br#"{"device_id":"cuff-n"}"#, 400),
        (
            "application/json",
            br#"{"device_id":"cuff-n","profile":"nope","payload":{}}"#,
            422,
        ),
        (
            "application/json",
            br#"{"profile":"acme-bp-cuff","payload":{}}"#,
            400,
        ),
        (
            "application/json",
            br#"{"device_id":"a/b","profile":"acme-bp-cuff","payload":{}}"#,
            400,
        ),
        ("text/plain", b"sys=120", 415),
    ];
    for (ct, body, status) in cases {
        let r = w.api.request(
            "POST",
            "/api/v1/readings",
            Some(&t.ingest),
            Some((ct, body)),
        );
        r.problem(status);
    }
    let big = vec![b' '; 9000];
    w.api
        .request(
            "POST",
            "/api/v1/readings",
            Some(&t.ingest),
            Some(("application/json", &big)),
        )
        .problem(413);
    assert_eq!(
        (
            w.gw.readings(),
            w.gw.count("SELECT COUNT(*) FROM quarantine")
        ),
        before
    );
    // The source is recorded as http.
    assert_eq!(
        w.gw.count("SELECT COUNT(*) FROM readings WHERE source != 'http'"),
        0
    );
}

/// Readings: filters, keyset pagination that visits every reading once,
/// latest per metric, and bad parameters of every kind.
#[test]
fn readings_pagination_filters_and_bad_input() {
    let w = world("");
    let t = setup(&w);
    for i in 0..5 {
        push_bp(&w, &t.ingest, "cuff-n", 60 - i * 10, 130 + i as u32);
    }
    // One over MQTT too: the API shows every source.
    w.broker.publish(
        "acme/bp/cuff-n",
        serde_json::to_string(&bp(1, 155)).unwrap().as_bytes(),
    );
    wait_until("24 readings", T, || w.gw.readings() == 24);

    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => {
                format!("/api/v1/readings?patient=p-north&metric=systolic&limit=2&cursor={c}")
            }
            None => "/api/v1/readings?patient=p-north&metric=systolic&limit=2".to_string(),
        };
        let page = w.api.get(&path, &t.read_only).json();
        pages += 1;
        for r in page["items"].as_array().unwrap() {
            assert_eq!(r["metric"], "systolic");
            assert!(seen.insert(r["reading_id"].as_str().unwrap().to_string()));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!((seen.len(), pages), (6, 3));
    let window = w
        .api
        .get(
            &format!(
                "/api/v1/readings?patient=p-north&since={}&until={}",
                ago(45),
                ago(15)
            ),
            &t.admin,
        )
        .json();
    assert_eq!(window["items"].as_array().unwrap().len(), 3 * 4, "{window}");
    let latest = w
        .api
        .get("/api/v1/patients/p-north/readings/latest", &t.north)
        .json();
    assert_eq!(latest["latest"]["systolic"]["value"], 155.0);
    assert_eq!(latest["latest"]["systolic"]["source"], "mqtt");
    assert_eq!(latest["latest"]["pulse_rate"]["unit"], "/min");

    for (path, status) in [
        ("/api/v1/readings?metric=blood_sugar", 400),
        ("/api/v1/readings?since=yesterday", 400),
        ("/api/v1/readings?limit=0", 400),
        ("/api/v1/readings?limit=51", 400),
        ("/api/v1/readings?limit=-1", 400),
        ("/api/v1/readings?limit=ten", 400),
        ("/api/v1/readings?cursor=zz", 400),
        ("/api/v1/readings?cursor=6869", 400),
        ("/api/v1/readings?colour=red", 400),
        ("/api/v1/alerts?status=sleeping", 400),
        ("/api/v1/alerts?severity=meh", 400),
        ("/api/v1/quarantine?status=lost", 400),
        ("/api/v1/quarantine/abc", 400),
        ("/api/v1/devices?assigned=maybe", 400),
        ("/api/v1/nothing-here", 404),
        ("/fhir/Observation?date=last-week", 400),
        ("/fhir/Observation?code=http://snomed.info/sct|1", 400),
        ("/fhir/Observation?_count=0", 400),
        ("/fhir/Observation?_sort=date", 400),
    ] {
        let r = w.api.get(path, &t.admin);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        if path.starts_with("/fhir") {
            assert_eq!(r.json()["resourceType"], "OperationOutcome", "{path}");
        } else {
            r.problem(status);
        }
    }
    w.api
        .request("DELETE", "/api/v1/readings", Some(&t.admin), None)
        .problem(405);
    w.api
        .request(
            "POST",
            "/api/v1/patients/p-north",
            Some(&t.admin),
            Some(("application/json", b"{}")),
        )
        .problem(405);
    for (body, status) in [
        (&b"{\"care_plans\": \"hypertension\"}"[..], 422),
        (b"{\"care_plans\": [\"astrology\"]}", 422),
        (
            b"{\"overrides\": {\"no.such.rule\": {\"disabled\": true}}}",
            422,
        ),
        (
            b"{\"overrides\": {\"htn.crisis\": {\"limits\": {\"nope\": \"1 kg\"}}}}",
            422,
        ),
        (b"{\"care_team\": \"\"}", 400),
        (b"{\"colour\": 1}", 422),
        (b"{\"care_plans\": [", 400),
    ] {
        let r = w.api.request(
            "PUT",
            "/api/v1/patients/p-north",
            Some(&t.admin),
            Some(("application/json", body)),
        );
        r.problem(status);
    }
    w.api
        .send("PUT", "/api/v1/patients/bad%2Fid", &t.admin, &json!({}))
        .problem(400);
    // A valid change: plans, overrides, team cleared.
    let r = w.api.send(
        "PUT",
        "/api/v1/patients/p-north",
        &t.admin,
        &json!({"care_plans": ["heart-failure"], "overrides": {"hf.weight-gain-24h": {"disabled": true}}, "care_team": null}),
    );
    r.expect(200);
    let p = r.json();
    assert_eq!(p["care_plans"], json!(["heart-failure"]));
    assert_eq!(p["care_team"], Value::Null);
    assert_eq!(p["overrides"]["hf.weight-gain-24h"]["disabled"], true);
    // No longer in team north: its token cannot see the patient any more.
    w.api.get("/api/v1/patients/p-north", &t.north).problem(404);
}

/// Quarantine: listing with reasons, and re-processing one entry.
#[test]
fn quarantine_listing_and_reprocess() {
    let w = world("");
    let t = setup(&w);
    let r = w.api.send(
        "POST",
        "/api/v1/devices",
        &t.admin,
        &json!({"device_id": "cuff-later"}),
    );
    r.expect(201);
    assert_eq!(r.json()["device"]["patient_id"], Value::Null);
    w.api
        .send(
            "POST",
            "/api/v1/devices",
            &t.admin,
            &json!({"device_id": "cuff-later"}),
        )
        .problem(409);
    push_bp(&w, &t.ingest, "cuff-later", 5, 140);
    w.broker
        .publish("acme/bp/cuff-n", b"{\"sys\": 120, \"dia\":");
    wait_until("2 quarantined", T, || {
        w.gw.count("SELECT COUNT(*) FROM quarantine") == 2
    });
    let q = w
        .api
        .get("/api/v1/quarantine?status=open", &t.read_only)
        .json();
    let items = q["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let unknown = items
        .iter()
        .find(|i| i["reason"] == "unknown_device")
        .unwrap();
    let malformed = items
        .iter()
        .find(|i| i["reason"] == "malformed_payload")
        .unwrap();
    assert_eq!(malformed["source"], "mqtt");
    let page = w.api.get("/api/v1/quarantine?limit=1", &t.admin).json();
    assert!(page["next_cursor"].is_string());
    let one = w
        .api
        .get(&format!("/api/v1/quarantine/{}", malformed["id"]), &t.admin)
        .json();
    assert_eq!(one["payload_text"], "{\"sys\": 120, \"dia\":");

    // Still refused: the reason stays, the entry stays open.
    let r = w.api.post(
        &format!("/api/v1/quarantine/{}/reprocess", malformed["id"]),
        &t.admin,
    );
    r.expect(200);
    assert_eq!(r.json()["outcome"], "still_refused");
    assert_eq!(r.json()["reason"], "malformed_payload");
    // A registry change that did not re-process (e.g. made by hand): the
    // re-process action recovers the entry.
    {
        let c = rusqlite::Connection::open(&w.gw.db).unwrap();
        c.execute(
            "UPDATE devices SET patient_id = 'p-north' WHERE device_id = 'cuff-later'",
            [],
        )
        .unwrap();
    }
    let path = format!("/api/v1/quarantine/{}/reprocess", unknown["id"]);
    w.api.post(&path, &t.read_only).problem(403);
    let r = w.api.post(&path, &t.admin);
    r.expect(200);
    assert_eq!(r.json()["outcome"], "recovered");
    assert_eq!(r.json()["reading_ids"].as_array().unwrap().len(), 4);
    w.api.post(&path, &t.admin).problem(409);
    w.api
        .post("/api/v1/quarantine/999999/reprocess", &t.admin)
        .problem(404);
    assert_eq!(
        w.gw.count("SELECT COUNT(*) FROM readings WHERE device_id = 'cuff-later'"),
        4
    );
    // Unassign: later readings are quarantined again.
    let r = w.api.request(
        "DELETE",
        "/api/v1/devices/cuff-later/patient",
        Some(&t.admin),
        None,
    );
    r.expect(200);
    assert_eq!(r.json()["patient_id"], Value::Null);
    let again = push_bp(&w, &t.ingest, "cuff-later", 2, 141);
    assert_eq!(again["measurements"][0]["reason"], "unknown_device");
    w.api
        .request(
            "DELETE",
            "/api/v1/devices/nope/patient",
            Some(&t.admin),
            None,
        )
        .problem(404);
}

/// Alerts (rows as the rule evaluator writes them) and the webhook
/// delivery log (as the dispatcher writes it): listing, filters, one alert
/// with its history, scoping, and secrets never shown.
#[test]
fn alerts_and_webhook_delivery_log() {
    let w = world("");
    let t = setup(&w);
    {
        let c = rusqlite::Connection::open(&w.gw.db).unwrap();
        let now = Utc::now().timestamp_millis();
        for (i, (patient, severity, status)) in [
            ("p-north", "urgent", "firing"),
            ("p-north", "warning", "resolved"),
            ("p-south", "critical", "acknowledged"),
        ]
        .iter()
        .enumerate()
        {
            c.execute(
                "INSERT INTO alerts (alert_id, patient_id, rule_id, rule_version, pack, severity, status, message, evidence, fired_at, updated_at)
                 VALUES (?1, ?2, ?3, 1, 'hypertension', ?4, ?5, 'BP high', '[{\"reading_id\":\"r1\"}]', ?6, ?6)",
                rusqlite::params![format!("al-{i}"), patient, format!("htn.rule{i}"), severity, status, now - i as i64 * 1000],
            )
            .unwrap();
            c.execute(
                "INSERT INTO alert_history (alert_id, at, kind, notified, detail) VALUES (?1, ?2, 'fired', 1, '{}')",
                rusqlite::params![format!("al-{i}"), now],
            )
            .unwrap();
        }
        c.execute(
            "INSERT INTO webhook_endpoints (endpoint_id, url, secrets, origin, created_at, updated_at)
             VALUES ('ep-1', 'https://example.org/hook', '[\"whsec_c2VjcmV0\"]', 'config', 0, 0)",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO outbox (event_id, event_type, alert_id, patient_id, severity, created_at, payload)
             VALUES ('evt_1', 'alert.fired', 'al-0', 'p-north', 'urgent', 0, '{}')",
            [],
        )
        .unwrap();
        c.execute(
            "INSERT INTO deliveries (event_seq, endpoint_id, status, attempts, next_attempt_at, created_at, updated_at, last_status)
             VALUES (1, 'ep-1', 'dead', 2, 0, 0, 0, 500)",
            [],
        )
        .unwrap();
        for a in 1..=2 {
            c.execute(
                "INSERT INTO delivery_attempts (delivery_id, attempt, at, http_status, latency_ms) VALUES (1, ?1, 0, 500, 12)",
                [a],
            )
            .unwrap();
        }
    }
    let all = w.api.get("/api/v1/alerts", &t.admin).json();
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    assert_eq!(all["items"][0]["alert_id"], "al-0", "newest first");
    let open = w.api.get("/api/v1/alerts?status=open", &t.admin).json();
    assert_eq!(open["items"].as_array().unwrap().len(), 2);
    let crit = w
        .api
        .get(
            "/api/v1/alerts?severity=critical&care_team=south",
            &t.read_only,
        )
        .json();
    assert_eq!(crit["items"][0]["alert_id"], "al-2");
    assert_eq!(crit["items"][0]["care_team"], "south");
    let north = w.api.get("/api/v1/alerts", &t.north).json();
    assert_eq!(north["items"].as_array().unwrap().len(), 2);
    let p1 = w.api.get("/api/v1/alerts?limit=2", &t.admin).json();
    let c = p1["next_cursor"].as_str().unwrap();
    let p2 = w
        .api
        .get(&format!("/api/v1/alerts?limit=2&cursor={c}"), &t.admin)
        .json();
    assert_eq!(p2["items"][0]["alert_id"], "al-2");
    assert!(p2["next_cursor"].is_null());
    let one = w.api.get("/api/v1/alerts/al-0", &t.north).json();
    assert_eq!(one["evidence"][0]["reading_id"], "r1");
    assert_eq!(one["history"][0]["kind"], "fired");
    w.api.get("/api/v1/alerts/al-2", &t.north).problem(404);
    w.api.get("/api/v1/alerts/al-404", &t.admin).problem(404);

    let eps = w.api.get("/api/v1/webhooks", &t.read_only);
    eps.expect(200);
    assert!(!eps.text().contains("whsec_"), "secret leaked");
    assert_eq!(eps.json()[0]["active_secrets"], 1);
    let log = w
        .api
        .get("/api/v1/webhooks/ep-1/deliveries?status=dead", &t.admin)
        .json();
    assert_eq!(log["items"][0]["event_id"], "evt_1");
    assert_eq!(log["items"][0]["attempt_log"].as_array().unwrap().len(), 2);
    w.api
        .get("/api/v1/webhooks/ep-9/deliveries", &t.admin)
        .problem(404);
    w.api.get("/api/v1/webhooks", &t.north).problem(403);
    let m = w.api.request("GET", "/metrics", None, None).text();
    assert!(
        m.contains("rpm_alerts{status=\"firing\",severity=\"urgent\"} 1"),
        "{m}"
    );
    assert!(m.contains("rpm_deliveries{status=\"dead\"} 1"), "{m}");
    assert!(
        m.contains("rpm_delivery_attempts_total{outcome=\"failure\"} 2"),
        "{m}"
    );

    // Acknowledge and resolve (rules::lifecycle): who, note, snooze; the
    // event is queued in the same transaction; care teams act on their own
    // patients only.
    let ack = |token: &str, id: &str, body: &Value| {
        w.api.send(
            "POST",
            &format!("/api/v1/alerts/{id}/acknowledge"),
            token,
            body,
        )
    };
    ack(&t.read_only, "al-0", &json!({})).problem(403);
    ack(&t.north, "al-2", &json!({})).problem(404);
    ack(&t.north, "al-0", &json!({"snooze": "soon"})).problem(400);
    ack(&t.north, "al-0", &json!({"who": "me"})).problem(400);
    let r = ack(
        &t.north,
        "al-0",
        &json!({"note": "called the patient", "snooze": "30m"}),
    );
    r.expect(200);
    let a = r.json();
    assert_eq!(a["status"], "acknowledged");
    assert!(
        a["acknowledged_by"]
            .as_str()
            .unwrap()
            .starts_with("nurse-north"),
        "{a}"
    );
    assert_eq!(a["ack_note"], "called the patient");
    assert!(a["snooze_until"].is_string());
    assert!(a["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["kind"] == "acknowledged"));
    assert_eq!(
        w.gw.count("SELECT COUNT(*) FROM outbox WHERE event_type = 'alert.acknowledged' AND alert_id = 'al-0'"),
        1
    );
    let empty_body = w.api.post("/api/v1/alerts/al-0/resolve", &t.admin);
    empty_body.expect(200);
    assert_eq!(empty_body.json()["status"], "resolved");
    w.api
        .post("/api/v1/alerts/al-0/resolve", &t.admin)
        .problem(409);
    w.api
        .request(
            "POST",
            "/api/v1/alerts/al-1/resolve",
            Some(&t.admin),
            Some(("text/plain", b"x")),
        )
        .problem(415);
    assert_eq!(
        w.gw.count(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'alert.resolve' AND resource = 'al-0'"
        ),
        1
    );

    // Webhook endpoints (delivery::endpoints): create, secrets shown once,
    // rotate and retire, disable and enable, update; re-drive.
    let r = w.api.send(
        "POST",
        "/api/v1/webhooks",
        &t.admin,
        &json!({"endpoint_id": "north", "url": "https://care.example.org/hook",
                "filter": {"care_teams": ["north"], "severities": ["urgent", "critical"]}}),
    );
    r.expect(201);
    let created = r.json();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(created["endpoint"]["active_secrets"], 1);
    for (body, status) in [
        (
            json!({"endpoint_id": "north", "url": "https://x.example.org"}),
            409,
        ),
        (
            json!({"endpoint_id": "plain", "url": "http://example.org/hook"}),
            422,
        ),
        (
            json!({"endpoint_id": "f", "url": "https://x.example.org", "filter": {"severities": ["meh"]}}),
            422,
        ),
        (
            json!({"endpoint_id": "g", "url": "https://x.example.org", "colour": 1}),
            422,
        ),
    ] {
        w.api
            .send("POST", "/api/v1/webhooks", &t.admin, &body)
            .problem(status);
    }
    w.api
        .send(
            "POST",
            "/api/v1/webhooks",
            &t.read_only,
            &json!({"endpoint_id": "n2", "url": "https://x.example.org"}),
        )
        .problem(403);
    let rot = w.api.post("/api/v1/webhooks/north/rotate-secret", &t.admin);
    rot.expect(200);
    let rot = rot.json();
    assert_ne!(rot["secret"], created["secret"]);
    assert_eq!(rot["endpoint"]["active_secrets"], 2);
    let ret = w
        .api
        .post("/api/v1/webhooks/north/retire-secrets", &t.admin);
    assert_eq!(ret.json()["active_secrets"], 1);
    let dis = w.api.post("/api/v1/webhooks/north/disable", &t.admin);
    assert_eq!(dis.json()["enabled"], false);
    let en = w.api.post("/api/v1/webhooks/north/enable", &t.admin);
    assert_eq!(en.json()["enabled"], true);
    let up = w.api.send(
        "PATCH",
        "/api/v1/webhooks/north",
        &t.admin,
        &json!({"description": "North clinic"}),
    );
    up.expect(200);
    assert_eq!(up.json()["description"], "North clinic");
    let one = w.api.get("/api/v1/webhooks/north", &t.read_only);
    one.expect(200);
    assert!(!one.text().contains("whsec_"), "secret listed");
    w.api.get("/api/v1/webhooks/nope", &t.admin).problem(404);
    let rd = w.api.post("/api/v1/deliveries/1/redrive", &t.admin);
    rd.expect(200);
    assert_eq!(rd.json()["redriven"], 1);
    w.api
        .post("/api/v1/deliveries/1/redrive", &t.admin)
        .problem(409);
    w.api
        .post("/api/v1/deliveries/99/redrive", &t.admin)
        .problem(404);
    let rd = w.api.post("/api/v1/webhooks/ep-1/redrive", &t.admin);
    assert_eq!(rd.json()["redriven"], 0);
}

const VALIDATE_BUNDLE: &str = r#"
import json, sys
from fhir.resources import __fhir_version__
from fhir.resources.bundle import Bundle
from fhir.resources.observation import Observation
assert __fhir_version__ == "4.0.1", __fhir_version__
doc = json.load(sys.stdin)
bundle = Bundle.parse_obj(doc)
assert bundle.type == "searchset"
out = []
for e in doc.get("entry", []):
    o = Observation.parse_obj(e["resource"])
    out.append({
        "id": o.id,
        "code": o.code.coding[0].code,
        "components": [c.code.coding[0].code for c in (o.component or [])],
        "units": [c.valueQuantity.code for c in (o.component or [])] + ([o.valueQuantity.code] if o.valueQuantity else []),
        "ucum": all(q.system == "http://unitsofmeasure.org" for q in [c.valueQuantity for c in (o.component or [])] + ([o.valueQuantity] if o.valueQuantity else [])),
        "device": o.device.reference,
        "subject": o.subject.reference,
        "status": o.status,
        "category": o.category[0].coding[0].code,
        "effective": o.effectiveDateTime.isoformat(),
    })
print(json.dumps({"entries": out, "links": [l.relation for l in (bundle.link or [])]}))
"#;

/// FHIR search returns a searchset Bundle that an independent FHIR R4
/// implementation (Python `fhir.resources` 6.2, FHIR 4.0.1) accepts: BP as
/// one panel with components, LOINC codes, UCUM units, device references.
#[test]
fn fhir_bundle_is_valid_r4_by_an_independent_library() {
    let w = world("");
    let t = setup(&w);
    push_bp(&w, &t.ingest, "cuff-n", 50, 150);
    push_bp(&w, &t.ingest, "cuff-n", 40, 151);
    let senml = format!(
        r#"[{{"bt":{},"n":"spo2","u":"%","v":96}},{{"n":"weight","u":"kg","v":81.5}},{{"n":"glucose","u":"mmol/L","v":5.4}},{{"n":"temp","u":"Cel","v":37.2}}]"#,
        (Utc::now() - Days::minutes(30)).timestamp()
    );
    w.api
        .request(
            "POST",
            "/api/v1/readings?device_id=cuff-n",
            Some(&t.ingest),
            Some(("application/senml+json", senml.as_bytes())),
        )
        .expect(200);
    let r = w.api.get("/fhir/Observation?patient=p-north", &t.north);
    r.expect(200);
    assert_eq!(r.header("content-type"), Some("application/fhir+json"));
    let checked: Value =
        serde_json::from_str(&http::python_fhir(VALIDATE_BUNDLE, &r.body)).unwrap();
    let entries = checked["entries"].as_array().unwrap();
    // 2 BP panels + 2 pulse + spo2, weight, glucose, temperature.
    assert_eq!(entries.len(), 8, "{checked}");
    let panels: Vec<&Value> = entries.iter().filter(|e| e["code"] == "85354-9").collect();
    assert_eq!(panels.len(), 2);
    assert_eq!(
        panels[0]["components"],
        json!(["8480-6", "8462-4", "8478-0"])
    );
    assert_eq!(panels[0]["units"], json!(["mm[Hg]", "mm[Hg]", "mm[Hg]"]));
    assert!(entries.iter().all(|e| e["ucum"] == true
        && e["status"] == "final"
        && e["device"] == "Device/cuff-n"
        && e["subject"] == "Patient/p-north"));
    let codes: BTreeSet<&str> = entries
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    for c in ["8867-4", "59408-5", "29463-7", "41653-7", "8310-5"] {
        assert!(codes.contains(c), "{c} missing: {codes:?}");
    }
    assert_eq!(
        entries.iter().find(|e| e["code"] == "41653-7").unwrap()["units"],
        json!(["mg/dL"])
    );
    assert_eq!(
        entries.iter().find(|e| e["code"] == "8310-5").unwrap()["category"],
        "vital-signs"
    );

    // Code and date filters; paging by `next` links visits each once.
    let bp = w.api.get(
        &format!(
            "/fhir/Observation?patient=Patient/p-north&code=http://loinc.org|85354-9&date=ge{}",
            ago(45)
        ),
        &t.admin,
    );
    let bp_checked: Value =
        serde_json::from_str(&http::python_fhir(VALIDATE_BUNDLE, &bp.body)).unwrap();
    assert_eq!(
        bp_checked["entries"].as_array().unwrap().len(),
        1,
        "{bp_checked}"
    );
    let today = &Utc::now().to_rfc3339()[..10];
    let mut url = format!("/fhir/Observation?patient=p-north&date={today}&_count=3");
    let mut ids = BTreeSet::new();
    let mut pages = 0;
    loop {
        let page = w.api.get(&url, &t.admin);
        let v: Value =
            serde_json::from_str(&http::python_fhir(VALIDATE_BUNDLE, &page.body)).unwrap();
        pages += 1;
        for e in v["entries"].as_array().unwrap() {
            assert!(ids.insert(e["id"].as_str().unwrap().to_string()));
        }
        let doc = page.json();
        let next = doc["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_string());
        match next {
            Some(n) => url = n.trim_start_matches(&w.api.base).to_string(),
            None => break,
        }
    }
    // Around midnight UTC part of the data may fall on yesterday.
    if Utc::now().format("%H").to_string() != "00" {
        assert_eq!((ids.len(), pages), (8, 3));
    }

    // Read one Observation and validate it too.
    let panel_id = panels[0]["id"].as_str().unwrap();
    let one = w
        .api
        .get(&format!("/fhir/Observation/{panel_id}"), &t.north);
    one.expect(200);
    let out = http::python_fhir(
        "import sys\nfrom fhir.resources.observation import Observation\no = Observation.parse_raw(sys.stdin.read())\nprint(o.code.coding[0].code, len(o.component))",
        &one.body,
    );
    assert_eq!(out.trim(), "85354-9 3");
    w.api.get("/fhir/Observation/bp-0000", &t.admin).expect(404);
}

/// Checks written from the HL7 Personal Health Device IG (STU 2) for what
/// `fhir.resources` does not know: every resource parses as R4, device
/// Observations carry an MDC coding (in the compound's components too) and
/// a PHD profile, the gateway extension and `device` resolve to included
/// Devices with the PhgDevice / PhdDevice profile, the PhgDevice has an
/// EUI-64 system id, the IG's identifier is present, of its form, and
/// unique, and `HTEST` marks exactly the test data.
const VALIDATE_PHD: &str = r#"
import json, re, sys
from fhir.resources.bundle import Bundle
from fhir.resources.device import Device
from fhir.resources.observation import Observation
MDC = "urn:iso:std:iso:11073:10101"
PHD = "http://hl7.org/fhir/uv/phd/StructureDefinition/"
doc = json.load(sys.stdin)
Bundle.parse_obj(doc)
devices = {}
for e in doc.get("entry", []):
    r = e["resource"]
    if r["resourceType"] == "Device":
        d = Device.parse_obj(r)
        assert e["search"]["mode"] == "include", e
        devices["Device/" + d.id] = d
obs, keys = [], set()
for e in doc.get("entry", []):
    r = e["resource"]
    if r["resourceType"] != "Observation":
        continue
    o = Observation.parse_obj(r)
    profiles = [str(p) for p in o.meta.profile]
    assert any(p in (PHD + "PhdNumericObservation", PHD + "PhdCompoundNumericObservation") for p in profiles), profiles
    assert any(c.system == MDC for c in o.code.coding), o.code
    for c in o.component or []:
        assert any(x.system == MDC for x in c.code.coding), c.code
    gw = [x for x in o.extension or [] if x.url == "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice"]
    assert len(gw) == 1, o.extension
    phg = devices[gw[0].valueReference.reference]
    assert PHD + "PhgDevice" in [str(p) for p in phg.meta.profile]
    sysid = [i for i in phg.identifier if i.system == "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"]
    assert len(sysid) == 1 and re.fullmatch(r"([0-9A-F]{2}-){7}[0-9A-F]{2}", sysid[0].value), phg.identifier
    assert sysid[0].type.coding[0].code == "SYSID"
    assert phg.type.coding[0].system == MDC and phg.type.coding[0].code == "531981"
    phd = devices[o.device.reference]
    assert PHD + "PhdDevice" in [str(p) for p in phd.meta.profile]
    assert phd.type.coding[0].code == "65573"
    assert phd.patient.reference == o.subject.reference
    key = o.identifier[0]
    assert key.system is None
    patient = o.subject.reference.split("/")[1]
    assert re.fullmatch(r".+-" + re.escape(patient) + r"-\d+-[-0-9.]+-\S+-\d{14}\.\d{2}", key.value), key.value
    assert key.value not in keys, key.value
    keys.add(key.value)
    test = any(s.code == "HTEST" for s in (o.meta.security or []))
    obs.append({"id": o.id, "key": key.value, "test": test, "device": o.device.reference,
                "specializations": sorted(s.systemType.coding[0].code for s in phd.specialization or [])})
print(json.dumps({"observations": obs, "devices": sorted(devices)}))
"#;

/// FHIR as the Personal Health Device IG has it: Observations with MDC
/// codes, the gateway and the IG's identifier; `_include` brings their
/// PhdDevices and the PhgDevice; `/fhir/Device` searches and reads are
/// care-team scoped and audited; a device configured as test data is
/// labelled `HTEST`. Checked by `fhir.resources` and by rules of the IG.
#[test]
fn fhir_follows_the_personal_health_device_ig() {
    let w = world("[fhir]\ntest_devices = [\"cuff-s\"]");
    let t = setup(&w);
    push_bp(&w, &t.ingest, "cuff-n", 50, 150);
    push_bp(&w, &t.ingest, "cuff-s", 40, 151);
    let senml = format!(
        r#"[{{"bt":{},"n":"spo2","u":"%","v":96}},{{"n":"weight","u":"kg","v":81.5}}]"#,
        (Utc::now() - Days::minutes(30)).timestamp()
    );
    w.api
        .request(
            "POST",
            "/api/v1/readings?device_id=cuff-n",
            Some(&t.ingest),
            Some(("application/senml+json", senml.as_bytes())),
        )
        .expect(200);

    let north = w.api.get(
        "/fhir/Observation?patient=p-north&_include=Observation:device",
        &t.north,
    );
    north.expect(200);
    let checked: Value =
        serde_json::from_str(&http::python_fhir(VALIDATE_PHD, &north.body)).unwrap();
    let obs = checked["observations"].as_array().unwrap();
    // BP panel, pulse, SpO2, weight.
    assert_eq!(obs.len(), 4, "{checked}");
    assert!(obs
        .iter()
        .all(|o| o["test"] == false && o["device"] == "Device/cuff-n"));
    // The cuff's specialisations: what it measured.
    assert_eq!(
        obs[0]["specializations"],
        json!(["528388", "528391", "528399"]),
        "{checked}"
    );
    assert_eq!(checked["devices"].as_array().unwrap().len(), 2, "{checked}");
    // The same read again: the same identifiers (the conditional-create key).
    let again = w.api.get(
        "/fhir/Observation?patient=p-north&_include=Observation:device",
        &t.north,
    );
    let again: Value = serde_json::from_str(&http::python_fhir(VALIDATE_PHD, &again.body)).unwrap();
    assert_eq!(again["observations"], checked["observations"]);

    // cuff-s is a test device: its Observations are HTEST.
    let south = w.api.get(
        "/fhir/Observation?patient=p-south&_include=Observation:device",
        &t.south,
    );
    let south: Value = serde_json::from_str(&http::python_fhir(VALIDATE_PHD, &south.body)).unwrap();
    let south_obs = south["observations"].as_array().unwrap();
    assert!(
        !south_obs.is_empty() && south_obs.iter().all(|o| o["test"] == true),
        "{south}"
    );
    w.api
        .get(
            "/fhir/Observation?patient=p-north&_include=Observation:subject",
            &t.admin,
        )
        .expect(400);

    // Device search: a care team sees the gateway and its own patients' devices.
    let devices_of = |path: &str, token: &str| -> Vec<String> {
        let r = w.api.get(path, token);
        r.expect(200);
        assert_eq!(r.header("content-type"), Some("application/fhir+json"));
        http::python_fhir(
            "import json, sys\nfrom fhir.resources.bundle import Bundle\nb = Bundle.parse_raw(sys.stdin.read())\nprint(json.dumps([e.resource.id for e in b.entry or []]))",
            &r.body,
        );
        r.json()["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    let seen = devices_of("/fhir/Device", &t.north);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].starts_with("phg-") && seen[1] == "cuff-n",
        "{seen:?}"
    );
    let phg = seen[0].clone();
    assert_eq!(devices_of("/fhir/Device", &t.admin).len(), 3);
    assert_eq!(
        devices_of("/fhir/Device?patient=p-south", &t.admin),
        ["cuff-s"]
    );
    assert_eq!(
        devices_of(
            "/fhir/Device?identifier=urn:rpm-gateway:device|cuff-s",
            &t.north
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        devices_of(
            "/fhir/Device?identifier=urn:rpm-gateway:device|cuff-s",
            &t.admin
        ),
        ["cuff-s"]
    );
    assert_eq!(
        devices_of(
            "/fhir/Device?type=urn:iso:std:iso:11073:10101|531981",
            &t.north
        ),
        std::slice::from_ref(&phg)
    );
    let sysid = phg.trim_start_matches("phg-").to_ascii_uppercase();
    let dashed: Vec<&str> = (0..8).map(|i| &sysid[i * 2..i * 2 + 2]).collect();
    assert_eq!(
        devices_of(
            &format!(
                "/fhir/Device?identifier=urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680|{}",
                dashed.join("-")
            ),
            &t.north
        ),
        std::slice::from_ref(&phg)
    );
    w.api.get("/fhir/Device?model=x", &t.admin).expect(400);
    w.api.get("/fhir/Device?type=123", &t.admin).expect(400);
    w.api
        .get("/fhir/Device?patient=p-south", &t.north)
        .expect(404);

    // Reads: scoped like the search, and audited under the device's patient.
    w.api.get("/fhir/Device/cuff-s", &t.north).expect(404);
    let one = w.api.get("/fhir/Device/cuff-s", &t.admin);
    one.expect(200);
    let out = http::python_fhir(
        "import sys\nfrom fhir.resources.device import Device\nd = Device.parse_raw(sys.stdin.read())\nprint(d.patient.reference, d.meta.profile[0])",
        &one.body,
    );
    assert_eq!(
        out.trim(),
        "Patient/p-south http://hl7.org/fhir/uv/phd/StructureDefinition/PhdDevice"
    );
    let gw_dev = w.api.get(&format!("/fhir/Device/{phg}"), &t.north);
    gw_dev.expect(200);
    assert_eq!(gw_dev.json()["identifier"][0]["value"], dashed.join("-"));
    w.api.get("/fhir/Device/nope", &t.admin).expect(404);
    w.api
        .get("/fhir/Device/phg-0000000000000000", &t.admin)
        .expect(404);

    // A measurement the cuff sent NaN for: quarantined, never a reading (no
    // rule sees it), and an Observation with dataAbsentReason.
    let r = w.api.send(
        "POST",
        "/api/v1/readings",
        &t.ingest,
        &json!({"device_id": "cuff-n", "profile": "acme-bp-cuff", "payload": {"measured_at": ago(20), "sys": "NaN", "dia": 84, "map": 100, "pulse": 71, "unit": "mmHg"}}),
    );
    r.expect(200);
    let q = w
        .api
        .get("/api/v1/quarantine?reason=special_value", &t.admin)
        .json();
    let qid = q["items"][0]["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("{q}"));
    let absent = w
        .api
        .get(&format!("/fhir/Observation/absent-{qid}"), &t.north);
    absent.expect(200);
    let out = http::python_fhir(
        "import sys\nfrom fhir.resources.observation import Observation\no = Observation.parse_raw(sys.stdin.read())\nprint(o.dataAbsentReason.coding[0].code, o.valueQuantity is None, o.device.reference)",
        &absent.body,
    );
    assert_eq!(out.trim(), "not-a-number True Device/cuff-n");
    w.api
        .get(&format!("/fhir/Observation/absent-{qid}"), &t.south)
        .expect(404);
    // ... and in the patient's search, in time order with the readings,
    // page after page (one entry a page) exactly as in one page.
    let ids_of = |b: &Value| -> Vec<(String, String)> {
        b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let o = &e["resource"];
                (
                    o["effectiveDateTime"].as_str().unwrap().to_string(),
                    o["id"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let whole = w
        .api
        .get("/fhir/Observation?patient=p-north&_count=50", &t.north);
    whole.expect(200);
    let whole = ids_of(&whole.json());
    let absent_id = format!("absent-{qid}");
    assert!(whole.iter().any(|(_, id)| *id == absent_id), "{whole:?}");
    let mut times: Vec<&String> = whole.iter().map(|(t, _)| t).collect();
    times.sort();
    assert_eq!(
        times,
        whole.iter().map(|(t, _)| t).collect::<Vec<_>>(),
        "time order"
    );
    let mut paged = Vec::new();
    let mut next = Some("/fhir/Observation?patient=p-north&_count=1".to_string());
    while let Some(path) = next.take() {
        let r = w.api.get(&path, &t.north);
        r.expect(200);
        let b = r.json();
        paged.extend(ids_of(&b));
        next = b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str())
            .map(|u| u[u.find("/fhir/").unwrap()..].to_string());
        assert!(paged.len() <= whole.len(), "{paged:?}");
    }
    assert_eq!(paged, whole);
    let panel = ids_of(
        &w.api
            .get("/fhir/Observation?patient=p-north&code=85354-9", &t.north)
            .json(),
    );
    assert!(panel.iter().any(|(_, id)| *id == absent_id), "{panel:?}");
    let pulse = ids_of(
        &w.api
            .get("/fhir/Observation?patient=p-north&code=8867-4", &t.north)
            .json(),
    );
    assert!(!pulse.iter().any(|(_, id)| *id == absent_id), "{pulse:?}");
    w.api
        .get("/fhir/Observation?patient=p-north", &t.south)
        .json()["entry"]
        .as_array()
        .map_or(0, |e| e.len())
        .eq(&0)
        .then_some(())
        .expect("another team's patient: nothing");
    assert_eq!(
        w.gw.count(
            "SELECT COUNT(*) FROM readings WHERE device_id = 'cuff-n' AND metric = 'systolic'"
        ),
        1
    );

    let audit = w
        .api
        .get("/api/v1/audit?patient=p-south&limit=50", &t.admin)
        .json();
    assert!(audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "GET /fhir/Device/{id}"
            && e["patient_id"] == "p-south"
            && e["outcome"] == 200));
}

/// HTTPS with a certificate made for the test: curl verifies it against
/// the test CA; plain HTTP to the TLS port gets nothing.
#[test]
fn https_with_a_generated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::TestCa::new(dir.path());
    let (cert, key) = (ca.cert.clone(), ca.key.clone());
    let broker = Mosquitto::start(dir.path());
    let mut gw = Gateway::new(
        dir.path(),
        broker.port,
        &[("cuff-n", "p-north")],
        &http::api_config(&format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            cert.display(),
            key.display()
        )),
    );
    let port = http::start_with_api(&mut gw);
    let admin = http::token(&gw, "ops", "admin", &[]);
    let api = Api {
        base: format!("https://localhost:{port}"),
        cacert: Some(ca.ca.clone()),
    };
    api.request("GET", "/healthz", None, None).expect(200);
    let r = api.send(
        "POST",
        "/api/v1/readings",
        &admin,
        &json!({"device_id": "cuff-n", "profile": "acme-bp-cuff", "payload": bp(3, 128)}),
    );
    r.expect(200);
    assert_eq!(r.json()["measurements"][0]["outcome"], "stored");
    let page = api.get("/fhir/Observation?patient=p-north", &admin).json();
    assert!(page["entry"][0]["fullUrl"]
        .as_str()
        .unwrap()
        .starts_with(&format!("https://localhost:{port}/fhir/Observation/")));
    // Without the CA, curl refuses the certificate; plain HTTP gets no answer.
    let out = std::process::Command::new("curl")
        .args(["-sS", &format!("https://localhost:{port}/healthz")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{port}/healthz"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success() || out.stdout.is_empty());
    assert_eq!(gw.stop().code(), Some(0));
}

/// A push is answered 2xx only once committed: a crash before the commit
/// answers nothing and stores nothing; a crash after it stores the reading,
/// and the client's retry is reported as a duplicate.
#[test]
fn ingest_answers_only_after_the_commit() {
    for (fault, stored_after_crash) in [("abort-before-commit", 0), ("abort-after-commit", 4)] {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start(dir.path());
        let mut gw = Gateway::new(
            dir.path(),
            broker.port,
            &[("cuff-n", "p-north")],
            &http::api_config(""),
        );
        http::start_with_api(&mut gw);
        let admin = http::token(&gw, "ops", "admin", &[]);
        gw.stop();
        gw.start_with_env(&[("RPM_FAULT_INJECT", fault)]);
        let port = gw.api_port();
        wait_until("the API", T, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let body = serde_json::to_vec(
            &json!({"device_id": "cuff-n", "profile": "acme-bp-cuff", "payload": bp(3, 128)}),
        )
        .unwrap();
        let out = std::process::Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .args([
                "-H",
                &format!("Authorization: Bearer {admin}"),
                "-H",
                "Content-Type: application/json",
            ])
            .args(["--data-binary", &String::from_utf8(body.clone()).unwrap()])
            .arg(format!("http://127.0.0.1:{port}/api/v1/readings"))
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            !code.starts_with('2'),
            "{fault}: answered {code} before the commit was safe"
        );
        gw.wait_exit(T);
        assert_eq!(gw.readings(), stored_after_crash, "{fault}");
        let port = http::start_with_api(&mut gw);
        let api = Api {
            base: format!("http://127.0.0.1:{port}"),
            cacert: None,
        };
        let r = api.request(
            "POST",
            "/api/v1/readings",
            Some(&admin),
            Some(("application/json", &body)),
        );
        r.expect(200);
        let expected = if stored_after_crash == 0 {
            "stored"
        } else {
            "duplicate"
        };
        assert_eq!(r.json()["measurements"][0]["outcome"], expected, "{fault}");
        assert_eq!(gw.readings(), 4);
        assert_eq!(gw.stop().code(), Some(0));
    }
}

/// `gateway/openapi.yaml` documents exactly the routes the router serves.
#[test]
fn openapi_document_matches_the_router() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../gateway/openapi.yaml");
    let doc: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut documented = BTreeSet::new();
    for (p, item) in doc["paths"].as_mapping().unwrap() {
        for (m, _) in item.as_mapping().unwrap() {
            let m = m.as_str().unwrap();
            if ["get", "post", "put", "patch", "delete"].contains(&m) {
                documented.insert((m.to_uppercase(), p.as_str().unwrap().to_string()));
            }
        }
    }
    let served: BTreeSet<(String, String)> = rpm_gateway::route_list().into_iter().collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not documented: {undocumented:?}\ndocumented but not served: {unserved:?}"
    );
}

/// The curl walkthrough of docs/api.md runs as written (on a port the
/// system picks instead of 8080), with the real binary as `rpm-gateway` on PATH.
#[test]
fn readme_walkthrough_runs() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).unwrap();
    let start = readme.find("<!-- walkthrough:start -->").unwrap();
    let end = readme.find("<!-- walkthrough:end -->").unwrap();
    let block = &readme[start..end];
    let script = block
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(s, _)| s)
        .expect("a sh block between the walkthrough markers");
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(common::BIN, bin.join("rpm-gateway")).unwrap();
    let on_port_zero = [
        (
            "listen = \"127.0.0.1:8080\"\n",
            format!("{}\n", common::API_LISTEN),
        ),
        (
            "API=http://127.0.0.1:8080\n",
            "until [ -s api.addr ]; do sleep 0.1; done\nAPI=http://$(cat api.addr)\n".to_string(),
        ),
    ];
    let mut script = script.to_string();
    for (from, to) in on_port_zero {
        assert_eq!(
            script.matches(from).count(),
            1,
            "`{from}` in the walkthrough"
        );
        script = script.replace(from, &to);
    }
    assert!(!script.contains(":8080"), "{script}");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .args(["-eu", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("RPM_GATEWAY_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "walkthrough failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "\"care_team\":\"north\"",
        "\"outcome\":\"stored\"",
        "\"metric\":\"systolic\"",
        "\"code\":\"85354-9\"",
        "urn:rpm-gateway:problem:bad-request",
        "\"ready\":true",
        "rpm_readings_stored_total{source=\"http\"} 3",
    ] {
        assert!(stdout.contains(needle), "`{needle}` not in:\n{stdout}");
    }
}

/// `GET /api/v1/reports/alert-burden`: per care team and rule, scoped like
/// every route (a care-team token sees its own team only).
#[test]
fn alert_burden_report_is_care_team_scoped() {
    let w = world("");
    let t = setup(&w);
    {
        let c = rusqlite::Connection::open(&w.gw.db).unwrap();
        let now = Utc::now().timestamp_millis();
        let min = 60_000;
        // (patient, rule, fired min ago, acked after min, resolved after min, flapping)
        for (i, (patient, rule, ago, acked, resolved, flapping)) in [
            ("p-north", "htn.crisis", 300, Some(10), Some(100), false),
            ("p-north", "htn.crisis", 200, None, Some(20), false), // noise
            ("p-north", "htn.hypotension", 100, None, None, true),
            ("p-south", "htn.crisis", 50, Some(30), None, false),
        ]
        .iter()
        .enumerate()
        {
            let fired = now - ago * min;
            let status = if resolved.is_some() {
                "resolved"
            } else if acked.is_some() {
                "acknowledged"
            } else {
                "firing"
            };
            c.execute(
                "INSERT INTO alerts (alert_id, patient_id, rule_id, rule_version, pack, severity, status, message, evidence,
                     fired_at, updated_at, acknowledged_at, resolved_at, flapping)
                 VALUES (?1, ?2, ?3, 1, 'hypertension', 'critical', ?4, 'BP', '[]', ?5, ?5, ?6, ?7, ?8)",
                rusqlite::params![
                    format!("al-{i}"),
                    patient,
                    rule,
                    status,
                    fired,
                    acked.map(|a| fired + a * min),
                    resolved.map(|r| fired + r * min),
                    flapping
                ],
            )
            .unwrap();
            c.execute(
                "INSERT INTO alert_history (alert_id, at, kind, notified, detail) VALUES (?1, ?2, 'fired', ?3, '{}')",
                rusqlite::params![format!("al-{i}"), fired, i != 2],
            )
            .unwrap();
        }
        c.execute(
            "INSERT INTO alert_history (alert_id, at, kind, notified, detail) VALUES ('al-0', ?1, 'updated', 1, '{}')",
            [now],
        )
        .unwrap();
    }
    let all = w.api.get("/api/v1/reports/alert-burden", &t.admin).json();
    let teams = all["teams"].as_array().unwrap();
    assert_eq!(teams.len(), 2, "{all}");
    let north = &teams[0];
    assert_eq!(north["care_team"], "north");
    assert_eq!(north["patients"], 1);
    assert_eq!(north["total"]["alerts"], 3);
    assert_eq!(north["total"]["notified"], 2);
    assert_eq!(north["total"]["silent"], 1);
    let crisis = &north["rules"][0];
    assert_eq!(crisis["rule_id"], "htn.crisis");
    assert_eq!(crisis["alerts"], 2);
    assert_eq!(crisis["resolved_unacknowledged_within_1h"], 0.5);
    assert_eq!(crisis["acknowledged"], 1);
    assert_eq!(crisis["ack_p50_seconds"], 600.0);
    assert_eq!(crisis["renotifications"], 1);
    assert_eq!(north["rules"][1]["flapping"], 1.0);
    assert!(north["total"]["per_100_patient_days"].as_f64().unwrap() > 0.0);
    // A care-team token: its own team only, whatever it asks for.
    let n = w.api.get("/api/v1/reports/alert-burden", &t.north).json();
    assert_eq!(n["teams"].as_array().unwrap().len(), 1);
    assert_eq!(n["teams"][0]["care_team"], "north");
    let other = w
        .api
        .get("/api/v1/reports/alert-burden?care_team=south", &t.north)
        .json();
    assert_eq!(other["teams"], json!([]));
    let south = w
        .api
        .get(
            "/api/v1/reports/alert-burden?care_team=south&since=2020-01-01",
            &t.read_only,
        )
        .json();
    assert_eq!(south["teams"][0]["total"]["alerts"], 1);
    w.api
        .request(
            "GET",
            "/api/v1/reports/alert-burden?since=yesterday",
            Some(&t.admin),
            None,
        )
        .problem(400);
    w.api
        .request("GET", "/api/v1/reports/alert-burden", Some(&t.ingest), None)
        .problem(403);
}

/// A raw HTTP/1.1 exchange (requests curl would not send): status and body.
fn raw(base: &str, request: &[u8]) -> (u16, String, Value) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let ct = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (
        status,
        ct,
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// Every refusal, including those the HTTP parser makes before any route
/// is matched, is an RFC 9457 problem document.
#[test]
fn every_http_error_is_a_problem_document() {
    let w = world("");
    let t = setup(&w);
    let long = format!(
        "GET /api/v1/readings?x={} HTTP/1.1\r\nHost: a\r\n\r\n",
        "a".repeat(100_000)
    );
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: a\r\n");
    for i in 0..300 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    for (what, req, statuses) in [
        (
            "NUL in the path",
            b"GET /api/v1/re\0adings HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            &[400][..],
        ),
        ("100 kB URI", long.into_bytes(), &[414, 431][..]),
        ("300 headers", many.into_bytes(), &[431][..]),
        (
            "garbage",
            b"\x16\x03\x01 not http\r\n\r\n".to_vec(),
            &[400][..],
        ),
    ] {
        let (status, ct, p) = raw(&w.api.base, &req);
        assert!(statuses.contains(&status), "{what}: {status} {p}");
        assert_eq!(ct, "application/problem+json", "{what}");
        assert_eq!(p["status"], status, "{what}: {p}");
        assert!(
            p["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:rpm-gateway:problem:"),
            "{what}"
        );
        assert!(!p["detail"].as_str().unwrap().is_empty(), "{what}");
    }
    w.api.get("/api/v1/nothing-here", &t.admin).problem(404);
    w.api.request("GET", "/nothing", None, None).problem(404);
    w.api.request("DELETE", "/healthz", None, None).problem(405);
    w.api
        .request("PUT", "/api/v1/readings", Some(&t.admin), None)
        .problem(405);
    let big = vec![b' '; 20_000];
    w.api
        .request(
            "POST",
            "/api/v1/readings",
            Some(&t.ingest),
            Some(("application/json", &big)),
        )
        .problem(413);
    // The connection-level answers do not disturb the API.
    w.api.request("GET", "/healthz", None, None).expect(200);
}

/// Rate limits: a token over its rate and a client address guessing tokens
/// get 429 with `Retry-After` and are served again once it has passed; a
/// flood of anonymous requests is counted, not audited row by row; idle
/// connections of one client cannot starve `/healthz`.
#[test]
fn rate_limits_answer_429_and_release_and_idle_clients_cannot_starve_healthz() {
    let w = world(
        "auth_failures_per_minute = 60\nauth_failure_burst = 3\ntoken_requests_per_second = 2\nmax_connections = 8\nmax_connections_per_client = 4\n",
    );
    let admin = http::token(&w.gw, "ops", "admin", &[]);
    let get = |token: &str| w.api.get("/api/v1/devices", token);

    // Per token: a burst of 4, then 2 a second.
    let statuses: Vec<u16> = (0..8).map(|_| get(&admin).status).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let limited = (0..8)
        .map(|_| get(&admin))
        .find(|r| r.status == 429)
        .unwrap();
    limited.problem(429);
    let secs: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&secs));
    std::thread::sleep(Duration::from_secs(secs));
    get(&admin).expect(200);

    // Per client address: 3 wrong guesses, then 429 for everything, the
    // right token included (the guess's outcome is hidden), until released.
    let audit_before = w.gw.count("SELECT COUNT(*) FROM audit_log");
    for _ in 0..3 {
        get("wrong").problem(401);
    }
    let r = get("wrong");
    r.problem(429);
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    get(&admin).problem(429);
    // A flood meanwhile: refused cheaply, and not one audit row each.
    for _ in 0..100 {
        let (status, _, _) = raw(
            &w.api.base,
            b"GET /api/v1/readings HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(status, 429);
    }
    std::thread::sleep(Duration::from_secs(secs));
    get(&admin).expect(200);
    for _ in 0..100 {
        raw(
            &w.api.base,
            b"GET /api/v1/readings HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
    }
    let grown = w.gw.count("SELECT COUNT(*) FROM audit_log") - audit_before;
    assert!(grown <= 3, "audit log grew by {grown} rows");
    let m = w.api.request("GET", "/metrics", None, None).text();
    assert!(
        m.contains("rpm_api_auth_failures_total{reason=\"invalid\"} 4"),
        "{m}"
    );
    assert!(
        m.contains("rpm_api_auth_failures_total{reason=\"missing\"}"),
        "{m}"
    );
    assert!(
        m.contains("rpm_api_rate_limited_total{limit=\"client\"}"),
        "{m}"
    );

    // Eight silent connections from one client (127.0.0.2) against
    // max_connections = 8: it keeps 4, /healthz still answers at once.
    let addr: std::net::SocketAddr = w.api.base.trim_start_matches("http://").parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let idle: Vec<std::net::TcpStream> = (0..8)
        .map(|_| {
            rt.block_on(async {
                let s = tokio::net::TcpSocket::new_v4().unwrap();
                s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                s.connect(addr).await.unwrap().into_std().unwrap()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "healthz starved: {out:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let closed = idle
        .iter()
        .filter(|c| {
            let mut c = *c;
            c.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            matches!(c.read(&mut [0u8; 1]), Ok(0) | Err(_)) && {
                c.set_nonblocking(true).unwrap();
                matches!(c.read(&mut [0u8; 1]), Ok(0))
            }
        })
        .count();
    assert_eq!(
        closed, 4,
        "the connections over the client's share are closed"
    );
}

/// An ingest token scoped to devices (or profiles) pushes only for those:
/// another device's reading is refused (403) and nothing of it is stored.
#[test]
fn ingest_tokens_are_scoped_to_their_devices_and_profiles() {
    let w = world("");
    let t = setup(&w);
    let out = w.gw.cli(&[
        "tokens",
        "create",
        "cuff-n-cloud",
        "--role",
        "ingest",
        "--device",
        "cuff-n",
    ]);
    assert!(out.status.success(), "{out:?}");
    let scoped = String::from_utf8(out.stdout).unwrap().trim().to_string();
    push_bp(&w, &scoped, "cuff-n", 7, 141);
    let before = w.gw.readings();
    let push = |token: &str, device: &str| {
        w.api.send(
            "POST",
            "/api/v1/readings",
            token,
            &json!({"device_id": device, "profile": "acme-bp-cuff", "payload": bp(8, 142)}),
        )
    };
    push(&scoped, "cuff-s").problem(403);
    push(&scoped, "unknown-cuff").problem(403);
    assert_eq!(w.gw.readings(), before, "nothing stored for another device");
    assert_eq!(
        w.gw.count("SELECT COUNT(*) FROM readings WHERE device_id = 'cuff-s'"),
        0
    );
    let out = w.gw.cli(&[
        "tokens",
        "create",
        "senml-only",
        "--role",
        "ingest",
        "--profile",
        "senml-generic",
    ]);
    let senml = String::from_utf8(out.stdout).unwrap().trim().to_string();
    push(&senml, "cuff-n").problem(403);
    // Scopes belong to ingest tokens only.
    let out = w.gw.cli(&[
        "tokens", "create", "x", "--role", "admin", "--device", "cuff-n",
    ]);
    assert!(!out.status.success());
    // Unscoped ingest tokens are as before.
    push(&t.ingest, "cuff-s").expect(200);
}
