//! The care loop end to end: a notified alert opens a follow-up task, a
//! care manager claims and completes it, a task nobody takes goes overdue
//! and escalates tier by tier through the signed webhooks — exactly once
//! across `kill -9` — and every route keeps care teams apart.

use crate::common;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use common::api_client::{self as http, Api};
use common::webhooks::{webhook, Receiver, SECRET};
use common::{wait_until, Gateway, Mosquitto};
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// Deadlines in seconds, so that escalation happens while the test waits.
const POLICY: &str = r#"
version = 1
[problems]
blood-pressure = ["htn.*"]
[pathway.default]
[[pathway.default.follow_up]]
severity = ["critical"]
claim_within = "3s"
deadline = "1h"
[[pathway.default.follow_up]]
severity = ["info", "warning", "urgent"]
open = false
[[pathway.default.escalation]]
after = "0s"
to = "charge-nurse"
[[pathway.default.escalation]]
after = "3s"
to = "physician"
"#;

fn bp(broker: &Mosquitto, device: &str, at: DateTime<Utc>, sys: u32, dia: u32) {
    broker.publish(
        &format!("acme/bp/{device}"),
        format!(
            r#"{{"measured_at":"{}","sys":{sys},"dia":{dia},"pulse":70,"unit":"mmHg"}}"#,
            at.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
        .as_bytes(),
    );
}

struct World {
    dir: tempfile::TempDir,
    broker: Mosquitto,
    gw: Gateway,
    rx: Receiver,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("follow-up.toml"), POLICY).unwrap();
    let broker = Mosquitto::start(dir.path());
    let mut rx = Receiver::new(dir.path(), "care", &["--secret", SECRET]);
    rx.start();
    let extra = format!(
        "[care]\npolicy = \"follow-up.toml\"\ncheck_interval = \"200ms\"\n\n[delivery]\npoll_interval = \"50ms\"\nallow_private_network = true\n\n[[patients]]\nid = \"p-north\"\ncare_plans = [\"hypertension\"]\ncare_team = \"north\"\n\n[[patients]]\nid = \"p-south\"\ncare_plans = [\"hypertension\"]\ncare_team = \"south\"\n{}{}",
        webhook("care", &rx.url(), SECRET, "[webhooks.filter]\nevent_types = [\"task.*\"]"),
        http::api_config("")
    );
    let gw = Gateway::new(
        dir.path(),
        broker.port,
        &[("cuff-n", "p-north"), ("cuff-s", "p-south")],
        &extra,
    );
    World {
        dir,
        broker,
        gw,
        rx,
    }
}

/// The task events the receiver accepted, as (type, task id, tier).
fn task_events(rx: &Receiver) -> Vec<(String, String, u64)> {
    rx.accepted()
        .iter()
        .filter(|l| l["duplicate"] == false)
        .map(|l| {
            let e = &l["event"];
            (
                e["type"].as_str().unwrap_or("").to_string(),
                e["data"]["task_id"].as_str().unwrap_or("").to_string(),
                e["data"]["escalation"]["tier"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn open_task(gw: &Gateway, patient: &str) -> Option<String> {
    gw.db()
        .query_row(
            "SELECT task_id FROM tasks WHERE patient_id = ?1",
            [patient],
            |r| r.get(0),
        )
        .ok()
}

const VALIDATE_TASK: &str = r#"
import json, sys
from fhir.resources.task import Task
t = Task.parse_raw(sys.stdin.read())
print(json.dumps({
    "status": t.status, "intent": t.intent, "priority": t.priority,
    "for": t.for_fhir.reference, "focus": t.focus.reference if t.focus else None,
    "owner": t.owner.display if t.owner else None,
    "business": t.businessStatus.coding[0].code if t.businessStatus else None,
}))
"#;

#[test]
fn follow_up_tasks_open_escalate_and_complete_with_care_teams_apart() {
    let mut w = world();
    let port = http::start_with_api(&mut w.gw);
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        cacert: None,
    };
    let north = http::token(&w.gw, "north-nurse", "care_team", &["north"]);
    let south = http::token(&w.gw, "south-nurse", "care_team", &["south"]);
    let admin = http::token(&w.gw, "admin", "admin", &[]);
    let now = Utc::now();
    // A hypertensive crisis for each patient: critical, notified.
    bp(&w.broker, "cuff-s", now - TimeDelta::minutes(2), 190, 100);
    bp(&w.broker, "cuff-n", now - TimeDelta::minutes(2), 192, 101);
    wait_until("both tasks to open", T, || {
        open_task(&w.gw, "p-north").is_some() && open_task(&w.gw, "p-south").is_some()
    });
    let tn = open_task(&w.gw, "p-north").unwrap();
    let ts = open_task(&w.gw, "p-south").unwrap();

    // South claims and completes its task at once: it never escalates.
    let claimed = api.send(
        "POST",
        &format!("/api/v1/tasks/{ts}/claim"),
        &south,
        &json!({}),
    );
    claimed.expect(200);
    assert_eq!(claimed.json()["status"], "claimed");
    // North cannot see, claim or complete south's task: 404 as if absent.
    api.get(&format!("/api/v1/tasks/{ts}"), &north).expect(404);
    api.send(
        "POST",
        &format!("/api/v1/tasks/{ts}/claim"),
        &north,
        &json!({}),
    )
    .expect(404);
    api.get(&format!("/fhir/Task/{ts}"), &north).expect(404);
    let listed = api.get("/api/v1/tasks", &north).json();
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [tn.as_str()], "north lists its own task only");
    let bad = api.send(
        "POST",
        &format!("/api/v1/tasks/{ts}/complete"),
        &south,
        &json!({"outcome": "fixed it"}),
    );
    assert!(
        bad.problem(400).contains("reached_patient"),
        "{}",
        bad.text()
    );
    api.send(
        "POST",
        &format!("/api/v1/tasks/{ts}/complete"),
        &south,
        &json!({"outcome": "reached_patient", "note": "took the reading again: 150/90"}),
    )
    .expect(200);

    // North's task: nobody claims it. Overdue at 3 s (claim deadline) with
    // the first tier at once, the physician 3 s later.
    wait_until("north's task to reach the physician", T, || {
        task_events(&w.rx).len() >= 3
    });
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        task_events(&w.rx),
        [
            ("task.overdue".to_string(), tn.clone(), 0),
            ("task.escalated".to_string(), tn.clone(), 1),
            ("task.escalated".to_string(), tn.clone(), 2),
        ],
        "each event once, in order, none for the task done in time"
    );
    let escalated = &w.rx.accepted()[2]["event"]["data"];
    assert_eq!(escalated["escalation"]["to"], "physician");
    assert_eq!(escalated["missed"], "claim");
    assert_eq!(escalated["care_team"], "north");

    // The FHIR Task, checked by an independent FHIR R4 implementation.
    let r = api.get(&format!("/fhir/Task/{tn}"), &north);
    r.expect(200);
    let checked: Value = serde_json::from_str(&http::python_fhir(VALIDATE_TASK, &r.body)).unwrap();
    assert_eq!(checked["status"], "ready");
    assert_eq!(checked["priority"], "stat");
    assert_eq!(checked["for"], "Patient/p-north");
    assert_eq!(checked["business"], "escalated-2");
    assert!(
        checked["focus"]
            .as_str()
            .unwrap()
            .starts_with("Observation/bp-"),
        "{checked}"
    );
    let obs = checked["focus"].as_str().unwrap().to_string();
    api.get(&format!("/fhir/{obs}"), &north).expect(200);

    // Claimed late, then done: the history names who and when.
    api.send(
        "POST",
        &format!("/api/v1/tasks/{tn}/claim"),
        &north,
        &json!({}),
    )
    .expect(200);
    api.send(
        "POST",
        &format!("/api/v1/tasks/{tn}/claim"),
        &admin,
        &json!({}),
    )
    .expect(409);
    let done = api.send(
        "POST",
        &format!("/api/v1/tasks/{tn}/complete"),
        &north,
        &json!({"outcome": "clinician_notified", "note": "GP informed"}),
    );
    done.expect(200);
    let d = done.json();
    let kinds: Vec<&str> = d["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "opened",
            "overdue",
            "escalated",
            "escalated",
            "claimed",
            "done"
        ]
    );
    assert_eq!(d["history"][4]["detail"]["late"], true);
    assert!(d["claimed_by"].as_str().unwrap().starts_with("north-nurse"));
    let r = api.get(&format!("/fhir/Task/{tn}"), &north);
    let checked: Value = serde_json::from_str(&http::python_fhir(VALIDATE_TASK, &r.body)).unwrap();
    assert_eq!(checked["status"], "completed");
    assert_eq!(checked["business"], "clinician_notified");
    let bundle = api.get("/fhir/Task?patient=p-south", &north).json();
    assert!(bundle["entry"].as_array().unwrap().is_empty(), "{bundle}");

    // Audited: every action, under its patient.
    let audited = w
        .gw
        .count("SELECT COUNT(*) FROM audit_log WHERE action IN ('task.claim', 'task.complete')");
    assert_eq!(audited, 4);
    // The CLI sees the same tasks.
    let out = w.gw.cli(&["tasks", "list", "--status", "done", "--json"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    assert_eq!(
        task_events(&w.rx).len(),
        3,
        "nothing after the task was done"
    );
    w.gw.stop();
    drop(w.dir);
}

/// `kill -9` on either side of the escalator's commit: after a restart,
/// every overdue mark and tier exists once, and each event goes out once.
#[test]
fn kill9_around_the_escalation_commit_loses_and_doubles_nothing() {
    for fault in [
        "abort-before-escalation-commit",
        "abort-after-escalation-commit",
    ] {
        let mut w = world();
        w.gw.start_with_env(&[("RPM_FAULT_INJECT", fault)]);
        bp(
            &w.broker,
            "cuff-n",
            Utc::now() - TimeDelta::minutes(2),
            192,
            101,
        );
        let status = w.gw.wait_exit(T);
        assert!(!status.success(), "{fault}: the gateway aborted");
        let tn = open_task(&w.gw, "p-north").expect("the task opened before the crash");
        w.gw.start();
        wait_until("both tiers after the restart", T, || {
            task_events(&w.rx).len() >= 3
        });
        std::thread::sleep(Duration::from_millis(800));
        assert_eq!(
            task_events(&w.rx),
            [
                ("task.overdue".to_string(), tn.clone(), 0),
                ("task.escalated".to_string(), tn.clone(), 1),
                ("task.escalated".to_string(), tn.clone(), 2),
            ],
            "{fault}"
        );
        let history = w.gw.count(&format!(
            "SELECT COUNT(*) FROM task_history WHERE task_id = '{tn}' AND kind IN ('overdue', 'escalated')"
        ));
        assert_eq!(history, 3, "{fault}");
        assert_eq!(w.gw.stop().code(), Some(0));
        drop(w.rx);
    }
}
