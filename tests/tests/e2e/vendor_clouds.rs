//! Cellular vendor clouds end to end: `rpm-sim --as tenovi|telli` plays a
//! scenario as each vendor's cloud against the real gateway binary, pushing
//! to `/api/v1/integrations/NAME` with the vendor's own authentication.
//! Both vendors' readings are stored with the right metrics and times; a bad
//! credential gets 401, a device of another vendor 403 (nothing stored), a
//! malformed payload is quarantined; the link health says so, and a link
//! that falls silent raises `integration.stale` (and `.back`) once, signed
//! and delivered to an operations webhook route.

use rpm_simulator::run::RunReport;
use serde_json::Value;

use crate::common::api_client::{api_config, token, Api};
use crate::common::webhooks::{new_secret, webhook, Receiver};
use crate::common::{rpm_sim, wait_until, Gateway};

const TENOVI_SCENARIO: &str = r#"
name = "tenovi-kit"
start = 2026-03-02
days = 2
seed = 11
speed = 2000000.0

[[patients]]
id = "v-ann"
condition = "hypertension"

[[patients.devices]]
kind = "bp_cuff"
id = "hwi-cuff-1"

[[patients.devices]]
kind = "scale"
id = "hwi-scale-1"
unit = "lb"
"#;

const TELLI_SCENARIO: &str = r#"
name = "telli-kit"
start = 2026-03-02
days = 2
seed = 12
speed = 2000000.0

[[patients]]
id = "v-bob"
condition = "hypertension"

[[patients.devices]]
kind = "bp_cuff"
id = "tl-cuff-2"

[[patients.devices]]
kind = "glucometer"
id = "tl-gm-2"
"#;

fn config(hooks: &str) -> String {
    format!(
        r#"[store]
path = "{{db}}"

[delivery]
poll_interval = "50ms"
allow_private_network = true
{hooks}
{}
[[devices]]
id = "hwi-cuff-1"
patient = "v-ann"
[[devices]]
id = "hwi-scale-1"
patient = "v-ann"
[[devices]]
id = "tl-cuff-2"
patient = "v-bob"
[[devices]]
id = "tl-gm-2"
patient = "v-bob"
[[devices]]
id = "tl-cuff-3"
patient = "v-bob"

[integrations.tenovi]
profile = "tenovi"
devices = ["hwi-cuff-1", "hwi-scale-1"]
auth = "basic"
username = "tenovi"
secret_file = "tenovi.secret"

[integrations.telli]
profile = "telli"
devices = ["tl-cuff-2", "tl-gm-2"]
auth = "api_key"
secret_env = "TELLI_KEY"

# A second Telli account whose link the test lets fall silent.
[integrations.telli-clinic]
profile = "telli"
devices = ["tl-cuff-3"]
auth = "api_key"
secret_env = "TELLI_KEY"
stale_after = "2s"
"#,
        api_config("")
    )
}

fn report(path: &std::path::Path) -> RunReport {
    let v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    serde_json::from_value(v["runs"][0].clone()).unwrap()
}

/// Every valid reading the simulator sent is stored once, for the device's
/// patient, at the time the device said (seconds: Tenovi sends no fraction).
fn assert_stored(gw: &Gateway, r: &RunReport, metric_of: impl Fn(&str) -> &'static str) {
    let sent: Vec<_> = r.sent.expected().collect();
    assert!(sent.len() >= 4, "too few readings sent: {}", sent.len());
    for rec in &sent {
        let metric = metric_of(&rec.device_id);
        let n = gw.count(&format!(
            "SELECT COUNT(*) FROM readings WHERE device_id = '{}' AND metric = '{metric}' AND patient_id = '{}' AND device_measured_at / 1000 = {} AND source = 'http'",
            rec.device_id,
            rec.patient_id,
            rec.device_time.timestamp()
        ));
        assert_eq!(n, 1, "{} {metric} at {}", rec.device_id, rec.device_time);
    }
}

#[test]
fn both_vendors_push_with_their_own_auth_and_scope() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tenovi.secret"), "tenovi-pw\n").unwrap();
    let secret = new_secret();
    let mut rx = Receiver::new(dir.path(), "ops", &["--secret", &secret]);
    rx.start();
    let hooks = webhook(
        "ops",
        &rx.url(),
        &secret,
        "[webhooks.filter]\nevent_types = [\"integration.*\"]",
    );
    let mut gw = Gateway::with_config(dir.path(), &config(&hooks));
    gw.start_until("api listening", &[("TELLI_KEY", "telli-key-1")]);
    let port = gw.api_port();
    let base = format!("http://127.0.0.1:{port}");
    let api = Api {
        base: base.clone(),
        cacert: None,
    };

    // Tenovi: Basic auth; blood pressure and pulse arrive as one array.
    let tenovi_file = dir.path().join("tenovi-kit.toml");
    std::fs::write(&tenovi_file, TENOVI_SCENARIO).unwrap();
    let tenovi_report = dir.path().join("tenovi.json");
    rpm_sim(&[
        "run",
        tenovi_file.to_str().unwrap(),
        "--http",
        &format!("{base}/api/v1/integrations/tenovi"),
        "--as",
        "tenovi",
        "--vendor-secret",
        "tenovi-pw",
        "--report",
        tenovi_report.to_str().unwrap(),
    ]);
    let r = report(&tenovi_report);
    assert_eq!(r.sent.failures().len(), 0, "{:?}", r.sent.failures());
    assert_stored(&gw, &r, |d| {
        if d.contains("cuff") {
            "systolic"
        } else {
            "body_weight"
        }
    });
    // The pulse of each cuff reading came as its own Tenovi measurement.
    assert_eq!(
        gw.count("SELECT COUNT(*) FROM readings WHERE device_id = 'hwi-cuff-1' AND metric = 'pulse_rate'"),
        gw.count("SELECT COUNT(*) FROM readings WHERE device_id = 'hwi-cuff-1' AND metric = 'systolic'"),
    );
    // The hub id is kept as an annotation, never as the device.
    assert_eq!(
        gw.count("SELECT COUNT(*) FROM readings WHERE device_id LIKE 'sim-hub-%'"),
        0
    );

    // Telli: x-api-key; epoch milliseconds in a string.
    let telli_file = dir.path().join("telli-kit.toml");
    std::fs::write(&telli_file, TELLI_SCENARIO).unwrap();
    let telli_report = dir.path().join("telli.json");
    rpm_sim(&[
        "run",
        telli_file.to_str().unwrap(),
        "--http",
        &format!("{base}/api/v1/integrations/telli"),
        "--as",
        "telli",
        "--vendor-secret",
        "telli-key-1",
        "--report",
        telli_report.to_str().unwrap(),
    ]);
    let r = report(&telli_report);
    assert_eq!(r.sent.failures().len(), 0, "{:?}", r.sent.failures());
    assert_stored(&gw, &r, |d| {
        if d.contains("cuff") {
            "diastolic"
        } else {
            "blood_glucose"
        }
    });
    let stored = gw.readings();

    let push = |name: &str, headers: &[(&str, &str)], body: &str| {
        api.request_with(
            "POST",
            &format!("/api/v1/integrations/{name}"),
            None,
            headers,
            Some(("application/json", body.as_bytes())),
        )
    };
    let telli_bp = |device: &str| {
        format!(
            r#"{{"deviceId":"{device}","readingType":"blood_pressure","time":"1767225600000","data":{{"systolic":121,"diastolic":77,"pulse":64,"arrhythmia":0}}}}"#
        )
    };
    // Bad credentials: 401 (with a Basic challenge for Tenovi), nothing stored.
    push("telli", &[("x-api-key", "wrong")], &telli_bp("tl-cuff-2")).problem(401);
    push("telli", &[], &telli_bp("tl-cuff-2")).problem(401);
    let r = push(
        "tenovi",
        &[("Authorization", "Basic dGVub3ZpOndyb25n")],
        r#"{"metric":"pulse","hwi_device_id":"hwi-cuff-1","value_1":70,"timestamp":"2026-01-01T08:00:00","timezone_offset":-5}"#,
    );
    r.problem(401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    // A device of the other vendor (or of nobody): 403, nothing stored,
    // even when the rest of the batch is the vendor's own.
    push(
        "telli",
        &[("x-api-key", "telli-key-1")],
        &telli_bp("hwi-cuff-1"),
    )
    .problem(403);
    let tenovi_auth = ("Authorization", "Basic dGVub3ZpOnRlbm92aS1wdw==");
    push(
        "tenovi",
        &[tenovi_auth],
        r#"[{"metric":"pulse","hwi_device_id":"hwi-cuff-1","hardware_uuid":"hub-1","value_1":70,"timestamp":"2026-01-01T08:00:00","timezone_offset":-5},
            {"metric":"pulse","hwi_device_id":"hwi-cuff-9","hardware_uuid":"hub-1","value_1":70,"timestamp":"2026-01-01T08:00:00","timezone_offset":-5}]"#,
    )
    .problem(403);
    push(
        "nobody",
        &[("x-api-key", "telli-key-1")],
        &telli_bp("tl-cuff-2"),
    )
    .problem(404);
    assert_eq!(gw.readings(), stored, "refused pushes store nothing");

    // Malformed and unknown kinds: accepted, quarantined with a reason.
    let q = push(
        "telli",
        &[("x-api-key", "telli-key-1")],
        "{'deviceId': 'tl-cuff-2'",
    );
    q.expect(200);
    assert_eq!(q.json()["measurements"][0]["outcome"], "quarantined");
    assert_eq!(q.json()["measurements"][0]["reason"], "malformed_payload");
    let q = push(
        "tenovi",
        &[tenovi_auth],
        r#"{"metric":"peak_flow","hwi_device_id":"hwi-cuff-1","value_1":300,"timestamp":"2026-01-01T08:00:00","timezone_offset":-5}"#,
    );
    q.expect(200);
    assert_eq!(q.json()["measurements"][0]["reason"], "schema_mismatch");
    assert_eq!(gw.quarantined("malformed_payload"), 1);
    assert_eq!(gw.readings(), stored);

    // Link health and audit.
    let admin = token(&gw, "ops", "admin", &[]);
    let list = api.get("/api/v1/integrations", &admin);
    list.expect(200);
    let list = list.json();
    let telli = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "telli")
        .unwrap();
    assert_eq!(telli["state"], "ok");
    assert!(telli["days"][0]["deliveries"].as_i64().unwrap() >= 4);
    assert!(telli["days"][0]["refused"].as_i64().unwrap() >= 3);
    assert!(telli["last_refusal"].is_string());
    assert!(!list.to_string().contains("telli-key-1"), "no secret shown");
    assert!(
        gw.count(
            "SELECT COUNT(*) FROM audit_log WHERE actor = 'integration:tenovi' AND outcome = 401"
        ) >= 1
    );
    assert!(
        gw.count(
            "SELECT COUNT(*) FROM audit_log WHERE actor = 'integration:telli' AND outcome = 200"
        ) >= 4
    );
    let out = gw.cli(&["integrations"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("telli") && text.contains("tenovi"), "{text}");
    let log = gw.log();
    assert!(!log.contains("tenovi-pw") && !log.contains("telli-key-1"));

    // A link that delivered and then fell silent for its `stale_after`:
    // `integration.stale` once, signed and delivered to the operations
    // route; its next push: `integration.back` once.
    let clinic = |kind: &str| {
        rx.accepted()
            .iter()
            .filter(|l| {
                l["event"]["type"] == kind
                    && l["event"]["data"]["detail"]["integration"] == "telli-clinic"
            })
            .count()
    };
    push(
        "telli-clinic",
        &[("x-api-key", "telli-key-1")],
        &telli_bp("tl-cuff-3"),
    )
    .expect(200);
    wait_until(
        "integration.stale delivered",
        std::time::Duration::from_secs(15),
        || clinic("integration.stale") == 1,
    );
    assert_eq!(clinic("integration.back"), 0);
    push(
        "telli-clinic",
        &[("x-api-key", "telli-key-1")],
        &telli_bp("tl-cuff-3"),
    )
    .expect(200);
    wait_until(
        "integration.back delivered",
        std::time::Duration::from_secs(15),
        || clinic("integration.back") == 1,
    );
    assert_eq!(clinic("integration.stale"), 1, "raised once");
    gw.stop();
}
