//! The care loop on a real store: tasks opened and joined by alerts,
//! lifecycle, and the escalator's visits at chosen instants.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use std::path::Path;

use super::escalation::visit;
use super::tasks::{change, Change, FollowUp, TaskOutcome};
use super::{CareConfig, Policy};
use crate::rules::{AlertChange, AlertHook};
use crate::store::alerts::{self, AlertContent, NewAlert};
use crate::store::tasks;
use crate::store::Store;

const POLICY: &str = r#"
version = 3
[problems]
blood-pressure = ["htn.*"]
[pathway.default]
[[pathway.default.follow_up]]
severity = ["critical"]
claim_within = "15m"
deadline = "1h"
[[pathway.default.follow_up]]
severity = ["warning"]
deadline = "4 working hours"
[[pathway.default.follow_up]]
rules = ["adherence.*"]
deadline = "end of next working day"
close_when_resolved = true
[[pathway.default.escalation]]
after = "0m"
to = "charge-nurse"
[[pathway.default.escalation]]
after = "2 working hours"
to = "physician"
"#;

fn follow_up() -> FollowUp {
    let care: CareConfig = toml::from_str("time_zone = \"America/Los_Angeles\"\n").unwrap();
    FollowUp {
        policy: Policy::parse(POLICY, Path::new("follow-up.toml")).unwrap(),
        care,
    }
}

/// Monday 2 November 2026, 09:00 in Los Angeles (PST).
fn monday_9() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 17, 0, 0).unwrap()
}

fn fire(store: &mut Store, fu: &FollowUp, id: &str, rule: &str, severity: &str, at: DateTime<Utc>) {
    let tx = store.transaction().unwrap();
    alerts::insert(
        &tx,
        &NewAlert {
            alert_id: id,
            patient_id: "p1",
            rule_id: rule,
            pack: rule.split('.').next().unwrap(),
            content: AlertContent {
                rule_version: 1,
                severity,
                message: "m",
                limits: "{}",
                evidence: "[]",
                late: false,
                flapping: false,
            },
            fired_at: at.timestamp_millis(),
            measured_at: None,
            snooze_until: None,
        },
    )
    .unwrap();
    let alert = alerts::get(&tx, id).unwrap().unwrap();
    fu.on_alert(
        &tx,
        &AlertChange {
            alert: &alert,
            care_plans: &[],
            care_team: None,
            notified: true,
            resolved: false,
            at,
        },
    )
    .unwrap();
    tx.commit().unwrap();
}

fn events(store: &Store) -> Vec<(String, String)> {
    let mut q = store
        .conn()
        .prepare("SELECT event_type, payload FROM outbox ORDER BY seq")
        .unwrap();
    q.query_map([], |r| {
        let payload: String = r.get(1)?;
        let v: serde_json::Value = serde_json::from_str(&payload).unwrap();
        Ok((
            r.get(0)?,
            v["data"]["escalation"]["to"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn escalate(store: &mut Store, fu: &FollowUp, at: DateTime<Utc>) {
    let tx = store.transaction().unwrap();
    for t in tasks::due_for_check(&tx, at.timestamp_millis(), 100).unwrap() {
        visit(&tx, fu, &t, at).unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn alerts_of_one_problem_join_one_task_whose_deadlines_only_come_forward() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let fu = follow_up();
    let t0 = monday_9();
    fire(&mut store, &fu, "a1", "htn.home-mean-high", "warning", t0);
    let open = tasks::list(
        store.conn(),
        &tasks::TaskQuery {
            limit: 10,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(open.len(), 1);
    let t = &open[0];
    assert_eq!(
        (t.problem.as_str(), t.priority.as_str()),
        ("blood-pressure", "warning")
    );
    // 4 working hours from 09:00.
    assert_eq!(t.due_at, (t0 + TimeDelta::hours(4)).timestamp_millis());
    assert_eq!(t.claim_due_at, None);

    // A critical alert of the same problem joins, raises the priority and
    // brings the deadline forward to one hour.
    let t1 = t0 + TimeDelta::minutes(30);
    fire(&mut store, &fu, "a2", "htn.crisis", "critical", t1);
    let open = tasks::list(
        store.conn(),
        &tasks::TaskQuery {
            limit: 10,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(open.len(), 1, "one task per patient and problem");
    let t = &open[0];
    assert_eq!(t.priority, "critical");
    assert_eq!(t.due_at, (t1 + TimeDelta::hours(1)).timestamp_millis());
    assert_eq!(
        t.claim_due_at,
        Some((t1 + TimeDelta::minutes(15)).timestamp_millis())
    );
    assert_eq!(
        tasks::alerts_of(store.conn(), &t.task_id).unwrap(),
        ["a1", "a2"]
    );
    let kinds: Vec<String> = tasks::history(store.conn(), &t.task_id)
        .unwrap()
        .into_iter()
        .map(|h| h.kind)
        .collect();
    assert_eq!(kinds, ["opened", "joined"]);

    // A later warning joins without moving anything back.
    fire(
        &mut store,
        &fu,
        "a3",
        "htn.hypotension",
        "warning",
        t1 + TimeDelta::minutes(5),
    );
    let again = tasks::get(store.conn(), &t.task_id).unwrap().unwrap();
    assert_eq!(
        (again.priority.as_str(), again.due_at),
        ("critical", t.due_at)
    );
}

#[test]
fn an_unclaimed_task_escalates_tier_by_tier_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let fu = follow_up();
    let t0 = monday_9();
    fire(&mut store, &fu, "a1", "htn.crisis", "critical", t0);
    let id = tasks::list(
        store.conn(),
        &tasks::TaskQuery {
            limit: 1,
            ..Default::default()
        },
    )
    .unwrap()[0]
        .task_id
        .clone();
    // Before the claim deadline: nothing.
    escalate(&mut store, &fu, t0 + TimeDelta::minutes(14));
    assert!(events(&store).is_empty());
    // At 15 min, unclaimed: overdue and the first tier (after 0m).
    escalate(&mut store, &fu, t0 + TimeDelta::minutes(16));
    assert_eq!(
        events(&store),
        [
            ("task.overdue".into(), "".into()),
            ("task.escalated".into(), "charge-nurse".into())
        ]
    );
    // Visiting again changes nothing; claiming does not stop the tiers.
    escalate(&mut store, &fu, t0 + TimeDelta::minutes(17));
    let tx = store.transaction().unwrap();
    change(
        &tx,
        &id,
        "nurse",
        Change::Claim { assignee: None },
        t0 + TimeDelta::minutes(20),
    )
    .unwrap();
    tx.commit().unwrap();
    assert_eq!(events(&store).len(), 2);
    // Two working hours after the missed claim deadline (09:15): 11:15.
    escalate(&mut store, &fu, t0 + TimeDelta::minutes(134));
    assert_eq!(events(&store).len(), 2);
    escalate(&mut store, &fu, t0 + TimeDelta::minutes(135));
    assert_eq!(
        events(&store)[2],
        ("task.escalated".into(), "physician".into())
    );
    let t = tasks::get(store.conn(), &id).unwrap().unwrap();
    assert_eq!((t.escalation_tier, t.next_check_at), (2, None));
    escalate(&mut store, &fu, t0 + TimeDelta::days(3));
    assert_eq!(events(&store).len(), 3, "every tier once");

    let tx = store.transaction().unwrap();
    let done = change(
        &tx,
        &id,
        "nurse",
        Change::Complete {
            outcome: TaskOutcome::ReachedPatient,
            note: Some("called".into()),
        },
        t0 + TimeDelta::hours(3),
    )
    .unwrap();
    tx.commit().unwrap();
    assert_eq!(
        (done.status.as_str(), done.outcome.as_deref()),
        ("done", Some("reached_patient"))
    );
    let tx = store.transaction().unwrap();
    let again = change(&tx, &id, "nurse", Change::Release, t0 + TimeDelta::hours(4));
    assert!(again.is_err(), "a done task does not change");
}

#[test]
fn a_task_claimed_and_done_in_time_never_escalates_and_claims_do_not_collide() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let fu = follow_up();
    let t0 = monday_9();
    fire(&mut store, &fu, "a1", "htn.crisis", "critical", t0);
    let id = tasks::list(
        store.conn(),
        &tasks::TaskQuery {
            limit: 1,
            ..Default::default()
        },
    )
    .unwrap()[0]
        .task_id
        .clone();
    let tx = store.transaction().unwrap();
    change(
        &tx,
        &id,
        "ann",
        Change::Claim { assignee: None },
        t0 + TimeDelta::minutes(5),
    )
    .unwrap();
    let clash = change(
        &tx,
        &id,
        "bob",
        Change::Claim { assignee: None },
        t0 + TimeDelta::minutes(6),
    );
    assert!(clash.unwrap_err().to_string().contains("claimed by `ann`"));
    // Claiming again as the holder changes nothing.
    change(
        &tx,
        &id,
        "ann",
        Change::Claim { assignee: None },
        t0 + TimeDelta::minutes(7),
    )
    .unwrap();
    tx.commit().unwrap();
    escalate(&mut store, &fu, t0 + TimeDelta::minutes(30));
    assert!(events(&store).is_empty(), "claimed in time, not due yet");
    let tx = store.transaction().unwrap();
    change(
        &tx,
        &id,
        "ann",
        Change::Complete {
            outcome: TaskOutcome::AdviceGiven,
            note: None,
        },
        t0 + TimeDelta::minutes(40),
    )
    .unwrap();
    tx.commit().unwrap();
    escalate(&mut store, &fu, t0 + TimeDelta::days(1));
    assert!(events(&store).is_empty());
    let kinds: Vec<String> = tasks::history(store.conn(), &id)
        .unwrap()
        .into_iter()
        .map(|h| h.kind)
        .collect();
    assert_eq!(kinds, ["opened", "claimed", "done"]);
}

#[test]
fn a_data_gap_task_closes_itself_when_the_data_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db")).unwrap();
    let fu = follow_up();
    let t0 = monday_9();
    fire(&mut store, &fu, "a1", "adherence.no-data-3d", "urgent", t0);
    let t = &tasks::list(
        store.conn(),
        &tasks::TaskQuery {
            limit: 1,
            ..Default::default()
        },
    )
    .unwrap()[0];
    // End of the next working day: Tuesday 17:00 PST.
    assert_eq!(
        t.due_at,
        Utc.with_ymd_and_hms(2026, 11, 4, 1, 0, 0)
            .unwrap()
            .timestamp_millis()
    );
    let tx = store.transaction().unwrap();
    let at = t0 + TimeDelta::hours(1);
    alerts::resolve_by_rule(&tx, "a1", at.timestamp_millis(), false).unwrap();
    let alert = alerts::get(&tx, "a1").unwrap().unwrap();
    fu.on_alert(
        &tx,
        &AlertChange {
            alert: &alert,
            care_plans: &[],
            care_team: None,
            notified: true,
            resolved: true,
            at,
        },
    )
    .unwrap();
    tx.commit().unwrap();
    let t = tasks::get(store.conn(), &t.task_id).unwrap().unwrap();
    assert_eq!(
        (t.status.as_str(), t.done_by.as_deref()),
        ("done", Some("gateway"))
    );
    assert_eq!(t.outcome.as_deref(), Some("no_action_needed"));
}
