//! The evaluator against a real SQLite file: exactly-once persistence,
//! late data, lifecycle, missing data with gateway downtime.

use std::sync::Arc;

use alerting_rules::{Engine, RuleSet};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use rusqlite::params;

use super::clock::Clock;
use super::evaluator::{Evaluator, EvaluatorConfig};
use super::lifecycle;
use crate::metrics::Metrics;
use crate::store::alerts;
use crate::store::patients::PatientChange;
use crate::store::Store;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0).unwrap()
}

struct World {
    _dir: tempfile::TempDir,
    ev: Evaluator,
    metrics: Arc<Metrics>,
    n: usize,
}

impl World {
    fn new() -> World {
        World::with_clock(Clock::Wall)
    }

    fn with_clock(clock: Clock) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let engine = Arc::new(Engine::new(RuleSet::bundled().unwrap()));
        let metrics = Arc::new(Metrics::default());
        let ev = Evaluator::new(store, engine, EvaluatorConfig::default(), metrics.clone())
            .with_clock(clock);
        World {
            _dir: dir,
            ev,
            metrics,
            n: 0,
        }
    }

    /// A hypertension patient `p1` whose crisis alert fired ten minutes
    /// ago: the world, the reading's time, the alert id.
    fn in_crisis() -> (World, DateTime<Utc>, String) {
        let mut w = World::new();
        w.enrol("p1", &["hypertension"]);
        let t = Utc::now() - TimeDelta::minutes(10);
        w.reading("p1", &[("systolic", 190.0), ("diastolic", 100.0)], t, t);
        w.ev.catch_up().unwrap();
        let id = w.open_alert("htn.crisis").alert_id;
        (w, t, id)
    }

    /// Batches evaluated again in their write transaction so far.
    fn reevaluations(&self) -> usize {
        self.metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("rpm_rules_reevaluations_total "))
            .map_or(0, |n| n.parse().unwrap())
    }

    /// Runs `f` on another connection to the store once, in the next step,
    /// between its snapshot and its write transaction.
    fn between(&mut self, f: impl FnOnce(&mut Store) + Send + 'static) {
        let path = self.ev.store().path().to_path_buf();
        let mut f = Some(f);
        self.ev.between = Some(Box::new(move || {
            if let Some(f) = f.take() {
                f(&mut Store::open(&path).unwrap());
            }
        }));
    }

    fn enrol(&mut self, patient: &str, plans: &[&str]) {
        self.ev
            .store()
            .upsert_patient(
                patient,
                "cli",
                &PatientChange {
                    care_plans: Some(plans.iter().map(|s| s.to_string()).collect()),
                    ..Default::default()
                },
            )
            .unwrap();
    }

    /// Stores one measurement (several metrics share a group id).
    fn reading(
        &mut self,
        patient: &str,
        values: &[(&str, f64)],
        measured: DateTime<Utc>,
        received: DateTime<Utc>,
    ) {
        self.n += 1;
        let group = format!("g{}", self.n);
        for (metric, v) in values {
            let m: device_profiles::Metric = metric.parse().unwrap();
            self.ev
                .store()
                .conn()
                .execute(
                    "INSERT INTO readings (reading_id, group_id, patient_id, device_id, metric, value, unit, loinc,
                         measured_at, received_at, committed_at, source)
                     VALUES (?1, ?2, ?3, 'dev', ?4, ?5, ?6, ?7, ?8, ?9, ?9, 'mqtt')",
                    params![
                        format!("{group}-{metric}"),
                        group,
                        patient,
                        metric,
                        v,
                        m.canonical_unit().to_string(),
                        m.loinc(),
                        measured.timestamp_millis(),
                        received.timestamp_millis()
                    ],
                )
                .unwrap();
        }
    }

    fn count(&mut self, sql: &str) -> i64 {
        self.ev
            .store()
            .conn()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    }

    fn events(&mut self) -> Vec<(String, String)> {
        let mut q = self
            .ev
            .store()
            .conn()
            .prepare("SELECT event_type, payload FROM outbox ORDER BY seq")
            .unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn open_alert(&mut self, rule: &str) -> alerts::AlertRecord {
        let all = alerts::list(
            self.ev.store().conn(),
            &alerts::AlertFilter {
                status: Some("open".into()),
                limit: 100,
                ..Default::default()
            },
        )
        .unwrap();
        all.into_iter()
            .find(|a| a.rule_id == rule)
            .unwrap_or_else(|| panic!("no open {rule}"))
    }
}

#[test]
fn crisis_fires_once_with_evidence_and_resolves_after_two_normal_readings() {
    let mut w = World::new();
    w.enrol("p1", &["hypertension"]);
    let t = t0();
    w.reading("p1", &[("systolic", 185.0), ("diastolic", 95.0)], t, t);
    let r = w.ev.step(t).unwrap();
    assert_eq!((r.readings, r.measurements, r.fired), (2, 1, 1));
    // Caught up: a second step does nothing, the cursor moved.
    assert_eq!(w.ev.step(t).unwrap().readings, 0);
    let a = w.open_alert("htn.crisis");
    assert_eq!(
        (a.status.as_str(), a.severity.as_str()),
        ("firing", "critical")
    );
    assert!(!a.late);
    assert_eq!(a.limits["systolic.limit"]["value"], 180.0, "{}", a.limits);
    let ev = w.events();
    assert_eq!(ev.len(), 1);
    let body: serde_json::Value = serde_json::from_str(&ev[0].1).unwrap();
    assert_eq!(body["type"], "alert.fired");
    assert_eq!(body["data"]["rule"]["id"], "htn.crisis");
    assert_eq!(body["data"]["rule"]["version"], 1);
    assert_eq!(body["data"]["care_plans"][0], "hypertension");
    let evidence = body["data"]["evidence"].as_array().unwrap();
    assert!(evidence
        .iter()
        .any(|e| e["metric"] == "systolic" && e["unit"] == "mm[Hg]" && e["loinc"] == "8480-6"));

    // Still high: no new alert, no new event (state changes only).
    w.reading(
        "p1",
        &[("systolic", 183.0), ("diastolic", 90.0)],
        t + TimeDelta::minutes(5),
        t + TimeDelta::minutes(5),
    );
    w.ev.step(t + TimeDelta::minutes(5)).unwrap();
    assert_eq!(w.count("SELECT COUNT(*) FROM alerts"), 1);
    assert_eq!(w.events().len(), 1);
    // Hysteresis: one normal reading is not enough, two are.
    for i in 1..=2 {
        let at = t + TimeDelta::minutes(10 * i);
        w.reading("p1", &[("systolic", 130.0), ("diastolic", 80.0)], at, at);
        w.ev.step(at).unwrap();
    }
    assert_eq!(
        w.count("SELECT COUNT(*) FROM alerts WHERE status = 'resolved'"),
        1
    );
    let kinds: Vec<String> = w.events().into_iter().map(|e| e.0).collect();
    assert_eq!(kinds, ["alert.fired", "alert.resolved"]);
    let history = w.count("SELECT COUNT(*) FROM alert_history");
    assert_eq!(history, 2);
}

#[test]
fn a_week_uploaded_at_once_is_evaluated_in_measured_order_and_marked_late() {
    let mut w = World::new();
    w.enrol("hf", &["heart-failure"]);
    let upload = t0();
    // Inserted newest first: the evaluator must still see them in time order.
    let weights = [80.0, 80.1, 80.0, 80.2, 80.1, 81.3, 81.4];
    for (i, kg) in weights.iter().enumerate().rev() {
        let measured = upload - TimeDelta::days(7 - i as i64);
        w.reading("hf", &[("body_weight", *kg)], measured, upload);
    }
    w.ev.step(upload).unwrap();
    let a = w.open_alert("hf.weight-gain-24h");
    assert!(a.late, "back-filled data is flagged late");
    assert_eq!(
        w.count("SELECT COUNT(*) FROM alerts"),
        1,
        "one alert for the breach"
    );
    let wm: i64 = w.count("SELECT watermark FROM patient_watermarks WHERE patient_id = 'hf'");
    assert_eq!(wm, (upload - TimeDelta::days(1)).timestamp_millis());
}

#[test]
fn acknowledge_snoozes_and_manual_resolve_closes_the_state() {
    let mut w = World::new();
    w.enrol("d1", &["diabetes"]);
    let t = t0();
    w.reading("d1", &[("blood_glucose", 60.0)], t, t);
    w.ev.step(t).unwrap();
    let a = w.open_alert("dm.hypo-level1");
    let acked = lifecycle::acknowledge(
        w.ev.store(),
        &a.alert_id,
        "nurse-7",
        Some("called the patient"),
        Some(TimeDelta::hours(24)),
    )
    .unwrap();
    assert_eq!(acked.status, "acknowledged");
    assert_eq!(acked.acknowledged_by.as_deref(), Some("nurse-7"));
    assert!(acked.snooze_until.is_some());
    // Worse while snoozed: recorded, not notified.
    let later = t + TimeDelta::hours(13);
    w.reading("d1", &[("blood_glucose", 55.0)], later, later);
    w.ev.step(later).unwrap();
    let kinds: Vec<String> = w.events().into_iter().map(|e| e.0).collect();
    assert_eq!(kinds, ["alert.fired", "alert.acknowledged"]);

    let err = lifecycle::acknowledge(w.ev.store(), "nope", "x", None, None).unwrap_err();
    assert!(matches!(err, lifecycle::LifecycleError::NotFound(_)));
    let r = lifecycle::resolve(w.ev.store(), &a.alert_id, "dr-2", Some("treated")).unwrap();
    assert_eq!(
        (r.status.as_str(), r.resolved_by.as_deref()),
        ("resolved", Some("dr-2"))
    );
    let err = lifecycle::resolve(w.ev.store(), &a.alert_id, "dr-2", None).unwrap_err();
    assert!(matches!(err, lifecycle::LifecycleError::AlreadyResolved(_)));
    let state: String = w
        .ev
        .store()
        .conn()
        .query_row(
            "SELECT state FROM alert_state WHERE patient_id = 'd1' AND rule_id = 'dm.hypo-level1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(state.contains("\"open\":null"), "{state}");
    let kinds: Vec<String> = w.events().into_iter().map(|e| e.0).collect();
    assert_eq!(
        kinds,
        ["alert.fired", "alert.acknowledged", "alert.resolved"]
    );
    // Event ids are unique and stable-format.
    let ids = w.count("SELECT COUNT(DISTINCT event_id) FROM outbox");
    assert_eq!(ids, 3);
}

#[test]
fn missing_data_fires_but_gateway_downtime_is_not_patient_silence() {
    let mut w = World::new();
    w.enrol("m1", &["hypertension"]);
    w.enrol("m2", &["hypertension"]);
    let now = t0();
    let last = now - TimeDelta::hours(60);
    w.reading(
        "m1",
        &[("systolic", 120.0), ("diastolic", 80.0)],
        last,
        last,
    );
    w.reading(
        "m2",
        &[("systolic", 120.0), ("diastolic", 80.0)],
        last,
        last,
    );
    w.ev.step(last).unwrap();
    w.ev.tick_missing(now).unwrap();
    // Both silent for 60 h > 2 d: adherence.no-vitals-2d fires for each.
    assert_eq!(
        w.count("SELECT COUNT(*) FROM alerts WHERE rule_id = 'adherence.no-vitals-2d'"),
        2
    );
    // A new reading resolves it for m1 (missing-data rules clear at once).
    w.reading("m1", &[("systolic", 121.0), ("diastolic", 79.0)], now, now);
    w.ev.step(now).unwrap();
    assert_eq!(
        w.count("SELECT COUNT(*) FROM alerts WHERE rule_id = 'adherence.no-vitals-2d' AND status = 'resolved'"),
        1
    );

    // Another world: the gateway was down for 20 of those 60 hours.
    let mut w = World::new();
    w.enrol("m1", &["hypertension"]);
    w.reading(
        "m1",
        &[("systolic", 120.0), ("diastolic", 80.0)],
        last,
        last,
    );
    w.ev.step(last).unwrap();
    for (s, hb, stop) in [
        (
            last - TimeDelta::hours(1),
            last + TimeDelta::hours(10),
            Some(last + TimeDelta::hours(10)),
        ),
        (last + TimeDelta::hours(30), now, None),
    ] {
        w.ev.store()
            .conn()
            .execute(
                "INSERT INTO runs(started_at, heartbeat_at, stopped_at) VALUES (?1, ?2, ?3)",
                params![
                    s.timestamp_millis(),
                    hb.timestamp_millis(),
                    stop.map(|x| x.timestamp_millis())
                ],
            )
            .unwrap();
    }
    w.ev.tick_missing(now).unwrap();
    assert_eq!(
        w.count("SELECT COUNT(*) FROM alerts"),
        0,
        "40 h of silence is not 2 days"
    );
    // The silence keeps counting outside the outage: 8 h later it fires.
    w.ev.tick_missing(now + TimeDelta::hours(9)).unwrap();
    assert_eq!(w.count("SELECT COUNT(*) FROM alerts"), 1);
}

/// `rules.clock = "data"`: "now" is the newest stored reading, so a patient
/// who stops measuring in a replay is silent for the replay's days, not
/// the wall clock's; gateway downtime does not count; a tick at an
/// unchanged data time does nothing.
#[test]
fn on_the_data_clock_silence_is_judged_in_the_replay_time() {
    let mut w = World::with_clock(Clock::from(crate::config::RulesClock::Data));
    assert!(
        w.ev.tick().unwrap().is_none(),
        "no data yet: nothing to judge"
    );
    w.enrol("quiet", &["hypertension"]);
    w.enrol("busy", &["hypertension"]);
    let t = t0();
    let bp = [("systolic", 120.0), ("diastolic", 80.0)];
    w.reading("quiet", &bp, t, t);
    w.reading("busy", &bp, t, t);
    // The gateway "was down" for ten days after the first reading: on the
    // wall clock that would excuse all of the silence; here it is ignored.
    w.ev.store()
        .conn()
        .execute(
            "INSERT INTO runs(started_at, heartbeat_at, stopped_at) VALUES (?1, ?2, ?2), (?3, ?3, NULL)",
            params![
                (t - TimeDelta::hours(1)).timestamp_millis(),
                t.timestamp_millis(),
                (t + TimeDelta::days(10)).timestamp_millis()
            ],
        )
        .unwrap();
    w.ev.catch_up().unwrap();
    w.ev.tick().unwrap().unwrap();
    assert_eq!(w.count("SELECT COUNT(*) FROM alerts"), 0);

    for d in 1..=3 {
        let at = t + TimeDelta::days(d);
        w.reading("busy", &bp, at, at);
    }
    w.ev.catch_up().unwrap();
    let r = w.ev.tick().unwrap().unwrap();
    assert_eq!(r.fired, 2, "{r:?}");
    let fired_at = (t + TimeDelta::days(3)).timestamp_millis();
    assert_eq!(
        w.count(&format!(
            "SELECT COUNT(*) FROM alerts WHERE patient_id = 'quiet' AND fired_at = {fired_at}
               AND rule_id IN ('adherence.no-vitals-2d', 'adherence.no-data-3d')"
        )),
        2,
        "both adherence rules, at the replay's time"
    );
    assert_eq!(
        w.count("SELECT COUNT(*) FROM alerts WHERE patient_id = 'busy'"),
        0
    );
    assert!(
        w.ev.tick().unwrap().is_none(),
        "the data's time did not move"
    );

    // A back-filled old reading does not turn the clock back: quiet's
    // silence still ends at her newest reading.
    w.reading("busy", &bp, t, t + TimeDelta::days(3));
    w.ev.catch_up().unwrap();
    assert!(w.ev.tick().unwrap().is_none());
    // quiet measures again: both alerts resolve at once.
    w.reading("quiet", &bp, t + TimeDelta::days(3), t + TimeDelta::days(3));
    w.ev.catch_up().unwrap();
    assert_eq!(
        w.count("SELECT COUNT(*) FROM alerts WHERE status = 'resolved'"),
        2
    );
}

#[test]
fn a_disconnected_device_inhibits_the_missed_readings_notification() {
    let mut w = World::new();
    w.enrol("o1", &["hypertension"]);
    let now = t0();
    let last = now - TimeDelta::hours(60);
    w.reading(
        "o1",
        &[("systolic", 120.0), ("diastolic", 80.0)],
        last,
        last,
    );
    w.ev.step(last).unwrap();
    w.ev
        .store()
        .conn()
        .execute(
            "INSERT INTO devices(device_id, patient_id, origin, registered_at, connection) VALUES ('dev', 'o1', 'cli', 0, 'disconnected')",
            [],
        )
        .unwrap();
    w.ev.tick_missing(now).unwrap();
    assert_eq!(w.count("SELECT COUNT(*) FROM alerts"), 1, "recorded");
    assert_eq!(
        w.events().len(),
        0,
        "not notified while the device is offline"
    );
}

#[test]
fn a_patient_override_changes_the_limit_and_is_recorded() {
    let mut w = World::new();
    w.enrol("p1", &["hypertension"]);
    w.ev.store()
        .upsert_patient(
            "p1",
            "cli",
            &PatientChange {
                overrides: Some(serde_json::json!({
                    "htn.crisis": {"limits": {"systolic.limit": "170 mmHg"}},
                    "htn.hypotension": {"disabled": true}
                })),
                ..Default::default()
            },
        )
        .unwrap();
    let t = t0();
    w.reading("p1", &[("systolic", 175.0), ("diastolic", 85.0)], t, t);
    w.ev.step(t).unwrap();
    let a = w.open_alert("htn.crisis");
    assert_eq!(a.limits["systolic.limit"]["value"], 170.0, "{}", a.limits);
    assert_eq!(a.limits["systolic.limit"]["overridden"], true);
    assert_eq!(a.limits["diastolic.limit"]["overridden"], false);
    // Disabled for this patient: a low reading raises nothing.
    let later = t + TimeDelta::hours(1);
    w.reading(
        "p1",
        &[("systolic", 80.0), ("diastolic", 50.0)],
        later,
        later,
    );
    w.ev.step(later).unwrap();
    assert_eq!(
        w.count("SELECT COUNT(*) FROM alerts WHERE rule_id = 'htn.hypotension'"),
        0
    );
}

#[test]
fn config_patients_do_not_undo_run_time_changes() {
    let text = "[[patients]]\nid = \"p1\"\ncare_plans = [\"hypertension\"]\n[[patients]]\nid = \"p2\"\ncare_plans = [\"diabetes\"]\n";
    let config = crate::config::Config::from_toml(text, std::path::Path::new("")).unwrap();
    let mut w = World::new();
    super::apply_config_patients(w.ev.store().conn(), &config.patients).unwrap();
    // A run-time change to p1 (the CLI marks it `cli`).
    w.enrol("p1", &["heart-failure"]);
    w.ev.store()
        .conn()
        .execute(
            "UPDATE patients SET origin = 'cli' WHERE patient_id = 'p1'",
            [],
        )
        .unwrap();
    super::apply_config_patients(w.ev.store().conn(), &config.patients).unwrap();
    let p1 = w.ev.store().patient("p1").unwrap().unwrap();
    assert_eq!(p1.care_plans, ["heart-failure"]);
    let p2 = w.ev.store().patient("p2").unwrap().unwrap();
    assert_eq!(
        (p2.care_plans.as_slice(), p2.origin.as_str()),
        (&["diabetes".to_string()][..], "config")
    );
}

/// An acknowledgement made while a batch is evaluated (after its snapshot,
/// before its write) is seen: the batch is evaluated again inside the write
/// transaction, and the resolve two normal readings cause is stamped after
/// both their receipt and the acknowledgement, so per alert history times
/// and event timestamps never go backwards.
#[test]
fn an_acknowledgement_during_an_evaluation_is_never_followed_by_an_earlier_time() {
    let (mut w, start, id) = World::in_crisis();
    let received = Utc::now();
    for (i, (sys, dia)) in [(130.0, 80.0), (128.0, 79.0)].into_iter().enumerate() {
        let measured = start + TimeDelta::minutes(1 + i as i64);
        w.reading(
            "p1",
            &[("systolic", sys), ("diastolic", dia)],
            measured,
            received,
        );
    }
    let acked = id.clone();
    w.between(move |store| {
        lifecycle::acknowledge(store, &acked, "nurse-7", None, None).unwrap();
    });
    let r = w.ev.catch_up().unwrap();
    assert_eq!(r.resolved, 1, "{r:?}");
    assert_eq!(w.reevaluations(), 1);
    let alert = alerts::get(w.ev.store().conn(), &id).unwrap().unwrap();
    assert_eq!(alert.status, "resolved");
    let resolved_at = alert.resolved_at.unwrap();
    assert!(
        resolved_at >= received,
        "resolved at {resolved_at}, before its evidence arrived at {received}"
    );
    let mut times = |sql: &str| -> Vec<i64> {
        let conn = w.ev.store().conn();
        let mut q = conn.prepare(sql).unwrap();
        q.query_map([&id], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let history = times("SELECT at FROM alert_history WHERE alert_id = ?1 ORDER BY id");
    assert_eq!(history.len(), 3, "fired, acknowledged, resolved");
    assert!(history.windows(2).all(|p| p[0] <= p[1]), "{history:?}");
    let stamps: Vec<String> = {
        let conn = w.ev.store().conn();
        let mut q = conn
            .prepare("SELECT payload FROM outbox WHERE alert_id = ?1 ORDER BY seq")
            .unwrap();
        q.query_map([&id], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|p| {
                let v: serde_json::Value = serde_json::from_str(&p.unwrap()).unwrap();
                v["timestamp"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let parsed: Vec<DateTime<Utc>> = stamps
        .iter()
        .map(|s| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
        .collect();
    assert_eq!(parsed.len(), 3, "{stamps:?}");
    assert!(parsed.windows(2).all(|p| p[0] <= p[1]), "{stamps:?}");
}

/// A manual resolve made while a batch is evaluated is seen: the crisis
/// reading that batch holds opens a new alert (judged against the resolved
/// state), instead of the batch writing back the state it read, which would
/// point at a closed alert and stay silent.
#[test]
fn a_manual_resolve_during_an_evaluation_is_seen() {
    let (mut w, t, id) = World::in_crisis();
    let later = t + TimeDelta::minutes(5);
    w.reading(
        "p1",
        &[("systolic", 188.0), ("diastolic", 99.0)],
        later,
        later,
    );
    w.between(move |store| {
        lifecycle::resolve(store, &id, "dr-2", Some("seen in clinic")).unwrap();
    });
    let r = w.ev.catch_up().unwrap();
    assert_eq!(r.fired, 1, "{r:?}");
    assert_eq!(
        w.count("SELECT COUNT(*) FROM alerts WHERE rule_id = 'htn.crisis' AND status = 'firing'"),
        1
    );
    assert_eq!(
        w.count("SELECT COUNT(*) FROM alerts WHERE rule_id = 'htn.crisis' AND status = 'resolved'"),
        1
    );
    // With nothing changed meanwhile, the snapshot's decision is written.
    w.reading(
        "p1",
        &[("systolic", 187.0), ("diastolic", 98.0)],
        later,
        later,
    );
    w.ev.catch_up().unwrap();
    assert_eq!(w.reevaluations(), 1);
}

/// A device back after days offline uploads its memory one message at a
/// time: after the first old reading the patient looks silent for days.
/// Nothing is judged until the input settles; then the whole upload shows
/// no silence. A patient really silent for 3 days gets the alert once.
#[test]
fn a_backfill_in_progress_is_not_silence() {
    let mut w = World::new();
    w.enrol("back", &["hypertension"]);
    w.enrol("quiet", &["hypertension"]);
    let now = Utc::now();
    let bp = [("systolic", 124.0), ("diastolic", 79.0)];
    w.reading(
        "quiet",
        &bp,
        now - TimeDelta::hours(73),
        now - TimeDelta::hours(73),
    );
    for i in 0..14 {
        let measured = now - TimeDelta::days(7) + TimeDelta::hours(12 * i);
        w.reading("back", &bp, measured, Utc::now());
        w.ev.catch_up().unwrap();
    }
    w.ev.tick_missing(Utc::now()).unwrap();
    assert_eq!(
        w.count("SELECT COUNT(*) FROM alerts WHERE patient_id = 'back'"),
        0,
        "no alert while the upload is in progress"
    );
    // Settled (the default: 2 minutes without input).
    let later = Utc::now() + TimeDelta::minutes(3);
    w.ev.tick_missing(later).unwrap();
    w.ev.tick_missing(later + TimeDelta::minutes(1)).unwrap();
    assert_eq!(
        w.count("SELECT COUNT(*) FROM alerts WHERE patient_id = 'back'"),
        0
    );
    assert_eq!(
        w.count(
            "SELECT COUNT(*) FROM outbox WHERE patient_id = 'quiet' AND event_type = 'alert.fired'"
        ),
        2,
        "no-vitals-2d and no-data-3d, once each"
    );
}

/// On the data clock the input settles in the data's time; a replay that
/// stops is judged once more with every patient's input settled, as `rules
/// test` judges a file that ends.
#[test]
fn on_the_data_clock_a_stopping_replay_judges_the_last_upload() {
    let mut w = World::with_clock(Clock::from(crate::config::RulesClock::Data));
    w.enrol("busy", &["hypertension"]);
    w.enrol("late", &["hypertension"]);
    let t = t0();
    let bp = [("systolic", 120.0), ("diastolic", 80.0)];
    for d in 0..=4 {
        let at = t + TimeDelta::days(d);
        w.reading("busy", &bp, at, at);
    }
    w.ev.catch_up().unwrap();
    w.ev.tick().unwrap();
    // The last thing the replay delivers: one old reading of `late`.
    w.reading("late", &bp, t, t + TimeDelta::days(4));
    w.ev.catch_up().unwrap();
    assert!(
        w.ev.tick().unwrap().is_none(),
        "the data's time did not move"
    );
    assert_eq!(
        w.count("SELECT COUNT(*) FROM alerts WHERE patient_id = 'late'"),
        0,
        "still settling"
    );
    let r = w.ev.final_tick().unwrap().unwrap();
    assert_eq!(r.fired, 2, "{r:?}");
}

/// One measurement of a random history: patient, blood pressure (else a
/// weight), a value seed, hours after the previous one (negative: a late
/// reading measured that long before the clock, received now).
type Measurement = (usize, bool, u8, i64);

fn measurements() -> impl proptest::strategy::Strategy<Value = Vec<Measurement>> {
    use proptest::prelude::*;
    prop::collection::vec((0..2usize, any::<bool>(), any::<u8>(), -200..30i64), 1..60)
}

/// Stores the measurements in `w`, evaluating each one as it arrives (one
/// measurement per step, "now" its receipt), forgetting the in-memory
/// windows before every step when `forget` (so that every question is a
/// store query). Returns the end of the history.
fn evaluate_history(w: &mut World, ms: &[Measurement], forget: bool) -> DateTime<Utc> {
    w.enrol("p0", &["hypertension", "heart-failure"]);
    w.enrol("p1", &["hypertension", "heart-failure"]);
    let mut clock = t0();
    for &(p, bp, seed, dt) in ms {
        let patient = format!("p{p}");
        let measured = if dt >= 0 {
            clock += TimeDelta::hours(dt) + TimeDelta::minutes(1);
            clock
        } else {
            clock += TimeDelta::minutes(1);
            clock + TimeDelta::hours(dt)
        };
        if bp {
            let sys = 110.0 + f64::from(seed) * 0.35;
            w.reading(
                &patient,
                &[("systolic", sys), ("diastolic", sys * 0.6)],
                measured,
                clock,
            );
        } else {
            let kg = 80.0 + f64::from(seed % 32) * 0.1;
            w.reading(&patient, &[("body_weight", kg)], measured, clock);
        }
        if forget {
            w.ev.forget_windows();
        }
        w.ev.step(clock).unwrap();
    }
    clock
}

fn alert_rows(w: &mut World) -> Vec<(String, String, String, i64, Option<i64>, String)> {
    let mut q =
        w.ev.store()
            .conn()
            .prepare(
                "SELECT patient_id, rule_id, status, fired_at, resolved_at, evidence FROM alerts
             ORDER BY patient_id, rule_id, fired_at",
            )
            .unwrap();
    q.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(10))]

    /// Over random histories with late readings, the evaluator with its
    /// in-memory windows decides exactly what it decides when every
    /// question is asked of the store (alerts, evidence, events), and the
    /// what-if replay of the same store through the same rules (the store's
    /// history as of each reading) raises what was raised.
    #[test]
    fn windows_decide_as_the_store_and_the_what_if_replay_do(ms in measurements()) {
        // One measurement per transaction, as the replay sees them.
        let cfg = EvaluatorConfig {
            batch_readings: 1,
            ..Default::default()
        };
        let mut incremental = World::new();
        incremental.ev = rebuilt(&mut incremental, cfg);
        let mut queried = World::new();
        queried.ev = rebuilt(&mut queried, cfg);
        let end = evaluate_history(&mut incremental, &ms, false);
        evaluate_history(&mut queried, &ms, true);
        proptest::prop_assert_eq!(alert_rows(&mut incremental), alert_rows(&mut queried));
        proptest::prop_assert_eq!(incremental.events(), queried.events());
        let stats = incremental.ev.window_stats();
        proptest::prop_assert!(stats.hits > 0, "{:?}", stats);

        let bundled = RuleSet::bundled().unwrap();
        let report = crate::rules::whatif::what_if(
            incremental.ev.store().conn(),
            &Engine::new(bundled.clone()),
            &crate::rules::whatif::WhatIfQuery {
                since: t0() - TimeDelta::days(30),
                until: end + TimeDelta::minutes(1),
                patient: None,
            },
        )
        .unwrap();
        for c in report.rules.iter().filter(|c| !bundled.is_missing_data_rule(&c.rule_id)) {
            proptest::prop_assert_eq!(c.raised, c.candidate, "{:?}", c);
        }
    }
}

/// The evaluator of `w` again, on its store, with `cfg`.
fn rebuilt(w: &mut World, cfg: EvaluatorConfig) -> Evaluator {
    let path = w.ev.store().path().to_path_buf();
    Evaluator::open(
        &path,
        Arc::new(Engine::new(RuleSet::bundled().unwrap())),
        cfg,
        Arc::new(Default::default()),
    )
    .unwrap()
}

/// A backlog evaluated in batches that grow while catching up (one reading,
/// then two, four, eight) decides exactly what one batch of all of it
/// decides: the same alerts, evidence and events.
#[test]
fn a_backlog_decides_the_same_in_growing_batches_as_in_one() {
    let data = || Clock::from(crate::config::RulesClock::Data);
    let mut worlds = Vec::new();
    for batch_readings in [1, 100_000] {
        let mut w = World::with_clock(data());
        let cfg = EvaluatorConfig {
            batch_readings,
            ..Default::default()
        };
        w.ev = rebuilt(&mut w, cfg).with_clock(data());
        w.enrol("p0", &["hypertension", "heart-failure"]);
        w.enrol("p1", &["hypertension", "heart-failure"]);
        let mut clock = t0();
        for i in 0..40u32 {
            clock += TimeDelta::hours(5);
            let p = format!("p{}", i % 2);
            // 120–189 mm[Hg]: crosses the crisis limit now and then.
            let sys = 120.0 + f64::from(i * 7 % 70);
            w.reading(
                &p,
                &[("systolic", sys), ("diastolic", sys * 0.6)],
                clock,
                clock,
            );
            w.reading(
                &p,
                &[("body_weight", 80.0 + f64::from(i % 5))],
                clock,
                clock,
            );
        }
        assert_eq!(w.ev.catch_up().unwrap().readings, 120);
        worlds.push(w);
    }
    let [growing, one] = &mut worlds[..] else {
        unreachable!()
    };
    let alerts = alert_rows(growing);
    assert!(!alerts.is_empty(), "the backlog raises alerts");
    assert_eq!(alerts, alert_rows(one));
    // The same states and alert histories: a batch saves each rule's state
    // once, however many of its evaluations changed nothing.
    let rows = |w: &mut World, sql: &str| -> Vec<Vec<String>> {
        let conn = w.ev.store().conn();
        let mut q = conn.prepare(sql).unwrap();
        let n = q.column_count();
        q.query_map([], |r| {
            (0..n)
                .map(|i| {
                    r.get::<_, rusqlite::types::Value>(i)
                        .map(|v| format!("{v:?}"))
                })
                .collect()
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    };
    for sql in [
        "SELECT patient_id, rule_id, state, alert_id FROM alert_state ORDER BY patient_id, rule_id",
        "SELECT a.patient_id, a.rule_id, h.at, h.kind, h.notified, h.detail FROM alert_history h
         JOIN alerts a USING (alert_id) ORDER BY a.patient_id, a.rule_id, h.id",
    ] {
        let states = rows(growing, sql);
        assert!(!states.is_empty(), "{sql}");
        assert_eq!(states, rows(one, sql), "{sql}");
    }
    // The same events; their order across patients follows the batches (a
    // batch is evaluated patient by patient).
    let sorted = |mut e: Vec<(String, String)>| {
        e.sort();
        e
    };
    assert_eq!(sorted(growing.events()), sorted(one.events()));
}
