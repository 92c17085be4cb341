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
    let metrics = api.get("/metrics", "").text();
    for line in ["rpm_tasks_overdue_total 1", "rpm_tasks_escalated_total 2"] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
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

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The escalation history of `patient`'s task: (kind, tier, due), with the
/// due time of each tier as recorded.
fn escalations(gw: &Gateway, patient: &str) -> Vec<(String, i64, String)> {
    let conn = gw.db();
    let mut q = conn
        .prepare(
            "SELECT h.kind, h.detail FROM task_history h JOIN tasks t ON t.task_id = h.task_id
             WHERE t.patient_id = ?1 AND h.kind IN ('overdue', 'escalated') ORDER BY h.id",
        )
        .unwrap();
    q.query_map([patient], |r| {
        let kind: String = r.get(0)?;
        let d: Value = serde_json::from_str(&r.get::<_, String>(1)?).unwrap();
        let due = d["due"].as_i64().or(d["deadline"].as_i64()).unwrap();
        let due = DateTime::from_timestamp_millis(due)
            .unwrap()
            .to_rfc3339_opts(SecondsFormat::Secs, true);
        Ok((kind, d["tier"].as_i64().unwrap_or(0), due))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// A care team's weeks in data time, against ground truth worked out by
/// hand on a calendar: the bundled follow-up policy, a team in Los Angeles
/// (08:00-17:00 Monday to Friday, Thanksgiving a holiday), the clocks going
/// back on 1 November, readings replayed on the data clock (`rules.clock =
/// "data"`) and care actions stamped on it.
///
/// - p-dst: low blood pressure (warning) on Friday 30 October 16:00 PDT, due
///   by the end of the next working day, Monday 2 November 17:00 PST;
///   nobody acts: overdue then, the charge nurse at once, the physician two
///   working hours later, Tuesday 10:00 PST.
/// - p-fri: a hypertensive crisis (critical) on Friday 20 November 16:30
///   PST, to be claimed within 15 minutes; nobody does: overdue at 16:45,
///   the charge nurse at once, the physician two working hours later —
///   15 minutes on Friday and 1 h 45 on Monday: 09:45 PST.
/// - p-holiday: low blood pressure on Wednesday 25 November 16:30 PST, the
///   eve of Thanksgiving: due by the end of Friday 27 November; a nurse
///   claims it on Friday at 09:00 and completes it at 10:00: no escalation.
#[test]
fn a_care_teams_weeks_in_data_time_match_their_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../alerting-rules/rules");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    for f in ["hypertension.toml", "follow-up.toml"] {
        std::fs::copy(repo.join(f), rules.join(f)).unwrap();
    }
    std::fs::write(
        rules.join("plans.toml"),
        "[plan.hypertension]\npacks = [\"hypertension\"]\n",
    )
    .unwrap();
    let broker = Mosquitto::start(dir.path());
    let mut rx = Receiver::new(dir.path(), "care", &["--secret", SECRET]);
    rx.start();
    let mut extra = format!(
        "[rules]\ndir = \"rules\"\nclock = \"data\"\n\n[care]\ncheck_interval = \"100ms\"\n\n[care.teams.north]\ntime_zone = \"America/Los_Angeles\"\nholidays = [\"2026-11-26\"]\n\n[delivery]\npoll_interval = \"50ms\"\nallow_private_network = true\n{}{}",
        webhook("care", &rx.url(), SECRET, "[webhooks.filter]\nevent_types = [\"task.*\"]"),
        http::api_config("")
    );
    for p in ["p-dst", "p-fri", "p-holiday"] {
        extra.push_str(&format!(
            "\n[[patients]]\nid = \"{p}\"\ncare_plans = [\"hypertension\"]\ncare_team = \"north\"\n"
        ));
    }
    let mut gw = Gateway::new(
        dir.path(),
        broker.port,
        &[
            ("cuff-dst", "p-dst"),
            ("cuff-fri", "p-fri"),
            ("cuff-hol", "p-holiday"),
            ("cuff-clock", "clock"),
        ],
        &extra,
    );
    let port = http::start_with_api(&mut gw);
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        cacert: None,
    };
    let nurse = http::token(&gw, "nurse-a", "care_team", &["north"]);
    // Moves the data clock: a normal reading of a patient nobody follows.
    let tick = |t: &str| {
        bp(&broker, "cuff-clock", at(t), 118, 76);
        wait_until("the tick to be evaluated", T, || {
            gw.rules_caught_up()
                && gw.count(&format!(
                    "SELECT COUNT(*) FROM readings WHERE measured_at = {}",
                    at(t).timestamp_millis()
                )) > 0
        });
        // Two escalator passes on the new data time.
        std::thread::sleep(Duration::from_millis(300));
    };
    let task_of = |p: &str| -> Value {
        let id = open_task(&gw, p).unwrap();
        api.get(&format!("/api/v1/tasks/{id}"), &nurse).json()
    };
    let opened = |p: &str| wait_until("the task to open", T, || open_task(&gw, p).is_some());

    // p-dst, across the change of clocks.
    bp(&broker, "cuff-dst", at("2026-10-30T23:00:00Z"), 85, 55);
    opened("p-dst");
    assert_eq!(task_of("p-dst")["due_at"], "2026-11-03T01:00:00Z");
    tick("2026-11-03T00:30:00Z");
    assert!(escalations(&gw, "p-dst").is_empty(), "not due yet");
    tick("2026-11-03T01:10:00Z");
    tick("2026-11-03T17:50:00Z");
    assert_eq!(
        escalations(&gw, "p-dst").len(),
        2,
        "overdue and the first tier only"
    );
    tick("2026-11-03T18:05:00Z");
    assert_eq!(
        escalations(&gw, "p-dst"),
        [
            ("overdue".into(), 0, "2026-11-03T01:00:00Z".into()),
            ("escalated".into(), 1, "2026-11-03T01:00:00Z".into()),
            ("escalated".into(), 2, "2026-11-03T18:00:00Z".into()),
        ]
    );

    // p-fri, over a weekend.
    bp(&broker, "cuff-fri", at("2026-11-21T00:30:00Z"), 190, 100);
    opened("p-fri");
    let t = task_of("p-fri");
    assert_eq!(
        (t["claim_due_at"].as_str(), t["due_at"].as_str()),
        (Some("2026-11-21T00:45:00Z"), Some("2026-11-21T01:30:00Z"))
    );
    assert_eq!(t["priority"], "critical");
    tick("2026-11-21T00:40:00Z");
    assert!(escalations(&gw, "p-fri").is_empty());
    tick("2026-11-21T00:50:00Z");
    tick("2026-11-23T17:40:00Z");
    assert_eq!(escalations(&gw, "p-fri").len(), 2);
    tick("2026-11-23T17:50:00Z");
    assert_eq!(
        escalations(&gw, "p-fri"),
        [
            ("overdue".into(), 0, "2026-11-21T00:45:00Z".into()),
            ("escalated".into(), 1, "2026-11-21T00:45:00Z".into()),
            ("escalated".into(), 2, "2026-11-23T17:45:00Z".into()),
        ]
    );

    // p-holiday: Thanksgiving is not a working day; done in time.
    bp(&broker, "cuff-hol", at("2026-11-26T00:30:00Z"), 85, 55);
    opened("p-holiday");
    let id = open_task(&gw, "p-holiday").unwrap();
    assert_eq!(task_of("p-holiday")["due_at"], "2026-11-28T01:00:00Z");
    tick("2026-11-27T17:00:00Z");
    let claimed = api.send(
        "POST",
        &format!("/api/v1/tasks/{id}/claim"),
        &nurse,
        &json!({}),
    );
    assert_eq!(
        claimed.json()["claimed_at"],
        "2026-11-27T17:00:00Z",
        "stamped on the data clock"
    );
    tick("2026-11-27T18:00:00Z");
    api.send(
        "POST",
        &format!("/api/v1/tasks/{id}/complete"),
        &nurse,
        &json!({"outcome": "advice_given"}),
    )
    .expect(200);
    tick("2026-11-28T02:00:00Z");
    assert!(escalations(&gw, "p-holiday").is_empty());

    // Every event went out once, in order.
    wait_until("the events to be delivered", T, || {
        task_events(&rx).len() >= 6
    });
    let kinds: Vec<(String, u64)> = task_events(&rx)
        .into_iter()
        .map(|(k, _, n)| (k, n))
        .collect();
    let want = [
        ("task.overdue", 0),
        ("task.escalated", 1),
        ("task.escalated", 2),
    ];
    let want: Vec<(String, u64)> = want
        .iter()
        .chain(want.iter())
        .map(|(k, n)| (k.to_string(), *n))
        .collect();
    assert_eq!(kinds, want);
    gw.stop();
}

/// `kill -9` on either side of the rule evaluator's commit, which carries
/// the alert and the task it opens: after a restart there is one task with
/// one `opened` entry, following the one alert.
#[test]
fn kill9_around_the_task_opening_commit_loses_and_doubles_nothing() {
    for fault in ["abort-before-rules-commit", "abort-after-rules-commit"] {
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
        let before = w.gw.count("SELECT COUNT(*) FROM tasks");
        assert_eq!(
            before,
            w.gw.count("SELECT COUNT(*) FROM alerts"),
            "{fault}: a task exists exactly when its alert does"
        );
        w.gw.start();
        wait_until("the task to open", T, || {
            open_task(&w.gw, "p-north").is_some()
        });
        wait_until("evaluation caught up", T, || w.gw.rules_caught_up());
        assert_eq!(w.gw.count("SELECT COUNT(*) FROM tasks"), 1, "{fault}");
        assert_eq!(w.gw.count("SELECT COUNT(*) FROM task_alerts"), 1, "{fault}");
        assert_eq!(
            w.gw.count("SELECT COUNT(*) FROM task_history WHERE kind = 'opened'"),
            1,
            "{fault}"
        );
        assert_eq!(w.gw.stop().code(), Some(0));
    }
}
