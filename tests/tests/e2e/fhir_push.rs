//! The FHIR push end to end: the real gateway pushing readings, alerts and
//! follow-up tasks into an independent FHIR server — Medplum's FHIR router
//! on its in-memory repository (tests/fhir-server, installed by
//! scripts/test with `npm ci`), whose token endpoint verifies the gateway's
//! SMART Backend Services client assertion with jose against the JWKS the
//! gateway's CLI printed. One gateway, one server, scenarios in sequence:
//! a kill -9 right after the server accepted a Bundle, a deliberate re-send
//! of everything, a 503 outage, a refused Observation, alerts and tasks.

use crate::common;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use common::{wait_until, Gateway, Mosquitto};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const CLIENT_ID: &str = "rpm-gateway-test";

/// Follow-up policy: a critical alert opens a task.
const POLICY: &str = r#"
version = 1
[problems]
blood-pressure = ["htn.*"]
[pathway.default]
[[pathway.default.follow_up]]
severity = ["critical"]
claim_within = "1h"
deadline = "2h"
[[pathway.default.follow_up]]
severity = ["info", "warning", "urgent"]
open = false
"#;

/// The test FHIR server (a Node process).
struct FhirServer {
    child: Option<Child>,
    port: u16,
}

impl FhirServer {
    fn start(jwks: &Path) -> FhirServer {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let modules = root.join("target/node/fhir-server");
        assert!(
            modules.join("node_modules/@medplum/fhir-router").exists(),
            "the test FHIR server is not installed: run scripts/test (npm ci into {})",
            modules.display()
        );
        let mut child = Command::new("node")
            .arg(root.join("tests/fhir-server/server.mjs"))
            .args(["--modules", &modules.display().to_string()])
            .args(["--jwks", &jwks.display().to_string()])
            .args(["--client-id", CLIENT_ID])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the FHIR server printed {line:?}: {e}"));
        FhirServer {
            port: v["port"].as_u64().unwrap() as u16,
            child: Some(child),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let out = common::succeeded(
            Command::new("curl")
                .args(["-sS", "-X", method, "-H", "content-type: application/json"])
                .args(["--data-binary", &body.to_string()])
                .arg(self.url(path)),
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn get(&self, path: &str) -> Value {
        let out = Command::new("curl")
            .args(["-sS", &self.url(path)])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// Every stored resource of `kind`.
    fn resources(&self, kind: &str) -> Vec<Value> {
        self.get(&format!("/control/resources/{kind}?_count=1000"))
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn stats(&self) -> Value {
        self.get("/control/stats")
    }
}

impl Drop for FhirServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn bp(broker: &Mosquitto, at: DateTime<Utc>, sys: u32, dia: u32, pulse: u32) {
    broker.publish(
        "acme/bp/cuff-1",
        format!(
            r#"{{"measured_at":"{}","sys":{sys},"dia":{dia},"pulse":{pulse},"unit":"mmHg"}}"#,
            at.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
        .as_bytes(),
    );
}

/// Observations the store's readings make (a BP panel is one).
fn expected_observations(gw: &Gateway) -> i64 {
    gw.count(
        "SELECT COUNT(DISTINCT CASE WHEN metric IN ('systolic','diastolic','mean_arterial_pressure') THEN 'bp-' || group_id ELSE reading_id END) FROM readings",
    )
}

fn caught_up(gw: &Gateway) -> bool {
    let max = gw.count("SELECT COALESCE(MAX(seq), 0) FROM readings");
    max > 0 && gw.cursor("forward.fhir") == max
}

/// The first identifier value of each resource; asserts each is there once.
fn identifiers_once(resources: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = resources
        .iter()
        .map(|r| r["identifier"][0]["value"].as_str().unwrap().to_string())
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a resource arrived twice: {resources:#?}");
    ids
}

fn config(dir: &Path, broker: u16, fhir: u16) -> String {
    format!(
        "[care]\npolicy = \"follow-up.toml\"\ncheck_interval = \"200ms\"\n\n[[patients]]\nid = \"p-1\"\ncare_plans = [\"hypertension\"]\ncare_team = \"north\"\n\n\
         [forward.fhir]\nbase_url = \"http://127.0.0.1:{fhir}/fhir/R4\"\nbatch_size = 2\nflush_interval = \"100ms\"\nmax_backoff = \"1s\"\ntimeout = \"5s\"\n\
         [forward.fhir.auth]\nkind = \"smart\"\nclient_id = \"{CLIENT_ID}\"\ntoken_url = \"http://127.0.0.1:{fhir}/auth/token\"\nkey_file = \"{}\"\n\
         # broker {broker}\n{}",
        dir.join("fhir-client.pk8").display(),
        common::api_client::api_config("")
    )
}

#[test]
fn readings_alerts_and_tasks_reach_the_ehr_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("follow-up.toml"), POLICY).unwrap();
    let broker = Mosquitto::start(dir.path());
    // The key first (the EHR registers its JWKS), with a placeholder port.
    let mut gw = Gateway::new(
        dir.path(),
        broker.port,
        &[("cuff-1", "p-1")],
        &config(dir.path(), broker.port, 9),
    );
    let out = gw.cli(&["forward", "fhir-key"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key: PathBuf = dir.path().join("fhir-client.pk8");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let jwks: Value = serde_json::from_slice(&out.stdout).unwrap();
    let printed = gw.cli(&["forward", "fhir-jwks"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&printed.stdout).unwrap(),
        jwks
    );
    assert!(
        !gw.cli(&["forward", "fhir-key"]).status.success(),
        "a key is never overwritten"
    );
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    let ehr = FhirServer::start(&jwks_file);
    gw = Gateway::new(
        dir.path(),
        broker.port,
        &[("cuff-1", "p-1")],
        &config(dir.path(), broker.port, ehr.port),
    );

    // 1. kill -9 right after the server accepted the first Bundle: the
    // re-sent Bundle creates nothing twice.
    gw.start_with_env(&[("RPM_FAULT_INJECT", "abort-after-forward")]);
    let t0 = Utc::now() - TimeDelta::hours(3);
    for i in 0..3 {
        bp(&broker, t0 + TimeDelta::minutes(i), 121 + i as u32, 79, 64);
    }
    let status = gw.wait_exit(T);
    assert!(!status.success(), "aborted at the fault point");
    assert!(!ehr.resources("Observation").is_empty());
    assert_eq!(gw.cursor("forward.fhir"), 0, "the cursor did not move");
    gw.start();
    wait_until("the push to catch up", T, || caught_up(&gw));
    let want = expected_observations(&gw);
    assert_eq!(want, 6, "3 BP panels and 3 pulse rates");
    wait_until("every Observation", T, || {
        ehr.resources("Observation").len() as i64 >= want
    });
    let obs = ehr.resources("Observation");
    assert_eq!(identifiers_once(&obs).len() as i64, want);
    // The cuff (PhdDevice) and this gateway (PhgDevice), each once.
    let devices = ehr.resources("Device");
    assert_eq!(devices.len(), 2, "{devices:#?}");
    assert_eq!(ehr.resources("Patient").len(), 1);
    let patient = &ehr.resources("Patient")[0];
    let profile = |d: &Value| d["meta"]["profile"][0].as_str().unwrap_or("").to_string();
    let device = devices
        .iter()
        .find(|d| profile(d).ends_with("PhdDevice"))
        .unwrap();
    let phg = devices
        .iter()
        .find(|d| profile(d).ends_with("PhgDevice"))
        .unwrap();
    assert_eq!(
        device["patient"]["reference"],
        format!("Patient/{}", patient["id"].as_str().unwrap())
    );
    for o in &obs {
        assert_eq!(
            o["extension"][0]["valueReference"]["reference"],
            format!("Device/{}", phg["id"].as_str().unwrap())
        );
        assert_eq!(
            o["subject"]["reference"],
            format!("Patient/{}", patient["id"].as_str().unwrap())
        );
        assert_eq!(
            o["device"]["reference"],
            format!("Device/{}", device["id"].as_str().unwrap())
        );
    }

    // 2. The token endpoint verified our client assertion with jose.
    let stats = ehr.stats();
    assert!(
        stats["assertions_verified"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert_eq!(stats["assertion_failures"], json!([]), "{stats}");
    assert_eq!(stats["last_alg"], "ES384");
    assert_eq!(stats["last_kid"], jwks["keys"][0]["kid"]);

    // 3. A deliberate re-send of everything: conditional create holds.
    gw.stop();
    let db = rusqlite::Connection::open(&gw.db).unwrap();
    db.execute(
        "UPDATE cursors SET position = 0 WHERE name = 'forward.fhir'",
        [],
    )
    .unwrap();
    drop(db);
    let bundles = ehr.stats()["bundles"].as_u64().unwrap();
    gw.start();
    wait_until("the re-send", T, || {
        caught_up(&gw) && ehr.stats()["bundles"].as_u64().unwrap() >= bundles + 3
    });
    assert_eq!(
        ehr.resources("Observation").len() as i64,
        want,
        "no duplicate"
    );
    assert_eq!(ehr.resources("Patient").len(), 1);
    assert_eq!(ehr.resources("Device").len(), 2);

    // 4. An outage: the server answers 503; readings wait in the store.
    ehr.call("POST", "/control/fail", &json!({"status": 503}));
    bp(&broker, t0 + TimeDelta::minutes(30), 118, 76, 66);
    wait_until("retries during the outage", T, || {
        ehr.stats()["failed"].as_u64().unwrap() >= 2
    });
    assert!(!caught_up(&gw));
    ehr.call("POST", "/control/ok", &json!({}));
    wait_until("the push to catch up after the outage", T, || {
        caught_up(&gw)
    });
    let want = expected_observations(&gw);
    assert_eq!(
        identifiers_once(&ehr.resources("Observation")).len() as i64,
        want
    );

    // 5. A refused Observation (pulse 57: the EHR's business rule) is
    // quarantined with the OperationOutcome; the rest goes on.
    ehr.call("POST", "/control/refuse", &json!({"value": 57.0}));
    bp(&broker, t0 + TimeDelta::minutes(40), 119, 77, 57);
    bp(&broker, t0 + TimeDelta::minutes(41), 117, 75, 63);
    wait_until("the push past the refused record", T, || {
        gw.count("SELECT COUNT(DISTINCT group_id) FROM readings") >= 6 && caught_up(&gw)
    });
    let refused: Vec<(String, String)> = {
        let db = gw.db();
        let mut q = db
            .prepare("SELECT source, detail FROM quarantine WHERE reason = 'rejected_by_sink'")
            .unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, "fhir");
    assert!(refused[0].1.contains("business-rule"), "{}", refused[0].1);
    assert!(refused[0]
        .1
        .contains("\"resourceType\":\"OperationOutcome\""));
    let obs = ehr.resources("Observation");
    assert_eq!(
        identifiers_once(&obs).len() as i64,
        expected_observations(&gw) - 1
    );
    assert!(obs
        .iter()
        .all(|o| o["valueQuantity"]["value"] != json!(57.0)));
    ehr.call("POST", "/control/refuse", &json!({}));

    // 6. A hypertensive crisis: the alert arrives as a Flag, its follow-up
    // task as a Task; claiming the task updates that Task.
    bp(&broker, Utc::now() - TimeDelta::minutes(1), 192, 101, 88);
    wait_until("the Flag and the Task", T, || {
        !ehr.resources("Flag").is_empty() && !ehr.resources("Task").is_empty()
    });
    let alert_ids: Vec<String> = {
        let db = gw.db();
        let mut q = db
            .prepare("SELECT alert_id FROM alerts ORDER BY alert_id")
            .unwrap();
        q.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    wait_until("a Flag per alert", T, || {
        ehr.resources("Flag").len() >= alert_ids.len()
    });
    let flags = ehr.resources("Flag");
    assert_eq!(identifiers_once(&flags), alert_ids);
    assert!(flags.iter().all(|f| f["status"] == "active"), "{flags:#?}");
    let task_id: String = gw
        .db()
        .query_row("SELECT task_id FROM tasks", [], |r| r.get(0))
        .unwrap();
    let tasks = ehr.resources("Task");
    assert_eq!(identifiers_once(&tasks), std::slice::from_ref(&task_id));
    assert_eq!(tasks[0]["status"], "ready");
    assert_eq!(tasks[0]["priority"], "stat");
    assert_eq!(tasks[0]["focus"]["type"], "Observation");
    let out = gw.cli(&["tasks", "claim", &task_id, "--by", "nurse-a"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the Task to be in progress", T, || {
        ehr.resources("Task")
            .first()
            .is_some_and(|t| t["status"] == "in-progress")
    });
    assert_eq!(ehr.resources("Task").len(), 1, "updated, not created again");

    // 7. Where the push stands.
    wait_until("the task change pushed", T, || {
        let out = gw.cli(&["forward", "status", "--json"]);
        let s: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        s["fhir"]["backlog"] == 0 && s["fhir"]["tasks_backlog"] == 0 && s["fhir"]["rejected"] == 1
    });

    // 8. The EHR withdraws the gateway's registration: its token is
    // revoked and no new one granted. Records are held, the gateway is not
    // ready and says why; once registered again it catches up.
    let api = gw.api_port();
    let readyz = || -> Value {
        let out = Command::new("curl")
            .args(["-sS", &format!("http://127.0.0.1:{api}/readyz")])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    assert_eq!(readyz()["ready"], true, "{}", readyz());
    ehr.call("POST", "/control/tokens", &json!({"refuse": true}));
    bp(&broker, t0 + TimeDelta::minutes(50), 116, 74, 62);
    wait_until("readiness to report the refusal", T, || {
        let r = readyz();
        r["ready"] == false && r["fhir"]["refused"] == true
    });
    let r = readyz();
    assert!(
        r["reasons"]
            .to_string()
            .contains("the client registration is withdrawn"),
        "{r}"
    );
    assert!(!caught_up(&gw), "held, not skipped");
    ehr.call("POST", "/control/tokens", &json!({"refuse": false}));
    wait_until("the push to catch up once registered again", T, || {
        caught_up(&gw) && readyz()["ready"] == true
    });
    assert_eq!(
        identifiers_once(&ehr.resources("Observation")).len() as i64,
        expected_observations(&gw) - 1,
        "everything but the refused pulse, once"
    );

    // 9. A measurement the cuff sent NaN for is no reading: it reaches the
    // EHR as an Observation with dataAbsentReason, once.
    broker.publish(
        "acme/bp/cuff-1",
        format!(
            r#"{{"measured_at":"{}","sys":"NaN","dia":84,"pulse":71,"unit":"mmHg"}}"#,
            (t0 + TimeDelta::minutes(55)).to_rfc3339_opts(SecondsFormat::Secs, true)
        )
        .as_bytes(),
    );
    wait_until("the special value pushed", T, || {
        let qid =
            gw.count("SELECT COALESCE(MAX(id), 0) FROM quarantine WHERE reason = 'special_value'");
        qid > 0 && gw.cursor("forward.fhir.absent") == qid
    });
    let obs = ehr.resources("Observation");
    let absent: Vec<&Value> = obs
        .iter()
        .filter(|o| o.get("dataAbsentReason").is_some())
        .collect();
    assert_eq!(absent.len(), 1, "{absent:#?}");
    assert_eq!(
        absent[0]["dataAbsentReason"]["coding"][0]["code"],
        "not-a-number"
    );
    assert!(absent[0].get("valueQuantity").is_none());
    let patient_ref = format!("Patient/{}", patient["id"].as_str().unwrap());
    assert_eq!(absent[0]["subject"]["reference"], patient_ref);
    identifiers_once(&obs);

    // 10. A measurement whose device clock the gateway corrected (as the
    // Bluetooth pipeline stores one: the offset in its annotations) brings
    // its coincident time stamp along; derivedFrom resolves in the EHR.
    gw.stop();
    rusqlite::Connection::open(&gw.db)
        .unwrap()
        .execute(
            "INSERT INTO readings (reading_id, group_id, patient_id, device_id, metric, value, unit, loinc, device_measured_at, measured_at, received_at, committed_at, source, annotations)
             SELECT 'clock-1', 'clock-g1', patient_id, device_id, metric, 66, unit, loinc, measured_at + 10800000, measured_at + 60000, received_at, committed_at, source,
                    '{\"clock_corrected\":\"device_offset\",\"clock_offset_s\":\"10800\"}'
             FROM readings WHERE metric = 'pulse_rate' ORDER BY seq DESC LIMIT 1",
            [],
        )
        .unwrap();
    gw.start();
    wait_until("the corrected measurement pushed", T, || caught_up(&gw));
    let obs = ehr.resources("Observation");
    identifiers_once(&obs);
    let profile_of = |o: &Value| o["meta"]["profile"][0].as_str().unwrap_or("").to_string();
    let coin: Vec<&Value> = obs
        .iter()
        .filter(|o| profile_of(o).ends_with("PhdCoincidentTimeStampObservation"))
        .collect();
    assert_eq!(coin.len(), 1, "{coin:#?}");
    let corrected: Vec<&Value> = obs
        .iter()
        .filter(|o| o.get("derivedFrom").is_some())
        .collect();
    assert_eq!(corrected.len(), 1, "{corrected:#?}");
    assert_eq!(
        corrected[0]["derivedFrom"][0]["reference"],
        format!("Observation/{}", coin[0]["id"].as_str().unwrap())
    );
    assert_eq!(
        coin[0]["subject"]["reference"],
        format!("Device/{}", device["id"].as_str().unwrap())
    );

    // 11. Every Bundle the EHR accepted is audited under its patient, in
    // the transaction that moved the cursor.
    let audited = |resource: &str| {
        gw.count(&format!(
            "SELECT COUNT(*) FROM audit_log WHERE actor = 'forward:fhir' AND action = 'fhir.push' AND patient_id = 'p-1' AND outcome = 200 AND resource = '{resource}'"
        ))
    };
    assert!(audited("Observation") >= 10, "{}", audited("Observation"));
    assert!(audited("Flag") >= 1 && audited("Task") >= 1);
    assert_eq!(
        gw.count(
            "SELECT COUNT(*) FROM audit_log WHERE actor = 'forward:fhir' AND patient_id IS NULL"
        ),
        0
    );

    // 12. A static bearer token (`kind = "bearer"`, issued out of band):
    // sent on every request, never logged.
    gw.stop();
    let token = "static-3f9c1d7e5b2a4c6e8f0a1b2c3d4e5f60";
    let token_file = dir.path().join("fhir-token");
    std::fs::write(&token_file, token).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    ehr.call("POST", "/control/static-token", &json!({"token": token}));
    let smart = config(dir.path(), broker.port, ehr.port);
    let auth_at = smart.find("[forward.fhir.auth]").unwrap();
    let auth_end = auth_at + smart[auth_at..].find("# broker").unwrap();
    let bearer = format!(
        "{}[forward.fhir.auth]\nkind = \"bearer\"\ntoken_file = \"{}\"\n{}",
        &smart[..auth_at],
        token_file.display(),
        &smart[auth_end..]
    );
    gw = Gateway::new(dir.path(), broker.port, &[("cuff-1", "p-1")], &bearer);
    let before = ehr.stats()["static_token_requests"].as_u64().unwrap();
    gw.start();
    let groups = gw.count("SELECT COUNT(DISTINCT group_id) FROM readings");
    bp(&broker, t0 + TimeDelta::minutes(58), 115, 73, 61);
    wait_until("the push with the static token", T, || {
        gw.count("SELECT COUNT(DISTINCT group_id) FROM readings") > groups && caught_up(&gw)
    });
    assert!(ehr.stats()["static_token_requests"].as_u64().unwrap() > before);
    assert_eq!(
        identifiers_once(&ehr.resources("Observation")).len() as i64,
        expected_observations(&gw) + 1,
        "the refused pulse missing; the special value and the coincident time stamp"
    );

    let log = gw.log();
    assert!(!log.contains(&jwks["keys"][0]["x"].as_str().unwrap()[..20]));
    assert!(!log.contains("access_token"));
    assert!(!log.contains(token));
}
