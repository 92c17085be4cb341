//! Engine semantics: late data, hysteresis, re-notify, snooze, flapping,
//! overrides, missing data with gateway downtime.

mod common;

use alerting_rules::engine::Note;
use alerting_rules::{
    acknowledge, AckError, AlertStatus, Overrides, Quantity, RuleOverride, TransitionKind::*,
};
use chrono::TimeDelta;
use common::*;
use device_profiles::Metric;

fn sbp_rule(extra: &str) -> alerting_rules::RuleSet {
    rule(&format!(
        "threshold = {{ metric = \"systolic\", op = \">\", limit = \"180 mmHg\" }}\n{extra}"
    ))
}

#[test]
fn late_reading_is_flagged_and_never_resolves() {
    let mut s = Sim::new(sbp_rule("clear = { consecutive = 1 }"));
    assert_eq!(
        kind_of(&s.one(Metric::Systolic, 190.0, at(60)), "t"),
        Some(Fire)
    );
    // Back-filled normal reading measured before the breach.
    let ts = s.measure_received(&[(Metric::Systolic, 120.0)], at(30), at(70));
    let t = get(&ts, "t");
    assert!(t.late);
    assert_eq!((t.kind, t.note), (NoChange, Some(Note::Late)));
    assert!(is_open(&s, "t"));
    // An on-time normal reading resolves.
    let ts = s.one(Metric::Systolic, 120.0, at(120));
    assert_eq!(kind_of(&ts, "t"), Some(Resolve));
    assert!(!get(&ts, "t").late);
}

#[test]
fn late_breach_fires_flagged_late_against_the_window_at_its_time() {
    let mut s = Sim::new(sbp_rule(""));
    s.one(Metric::Systolic, 120.0, at(600));
    let ts = s.measure_received(&[(Metric::Systolic, 200.0)], at(300), at(610));
    let t = get(&ts, "t");
    assert_eq!(t.kind, Fire);
    assert!(t.late);
    assert_eq!(t.measured_at, Some(at(300)));
    assert_eq!(s.watermark, Some(at(600)), "the watermark never moves back");
}

#[test]
fn reading_received_long_after_measurement_is_late() {
    let mut s = Sim::new(sbp_rule(""));
    let ts = s.measure_received(&[(Metric::Systolic, 200.0)], at(0), at(hours(3)));
    assert!(get(&ts, "t").late);
    let ts = s.measure_received(&[(Metric::Systolic, 201.0)], at(hours(4)), at(hours(4) + 5));
    assert!(!get(&ts, "t").late);
}

/// Default clear: two consecutive normal evaluations.
#[test]
fn hysteresis_default_needs_two_normal_readings() {
    let mut s = Sim::new(sbp_rule(""));
    let seq: &[(f64, alerting_rules::TransitionKind)] = &[
        (190.0, Fire),
        (170.0, NoChange),
        (185.0, NoChange),
        (170.0, NoChange),
        (170.0, Resolve),
        (170.0, NoChange),
    ];
    for (i, &(v, k)) in seq.iter().enumerate() {
        let ts = s.one(Metric::Systolic, v, at(i as i64 * 10));
        assert_eq!(kind_of(&ts, "t"), Some(k), "step {i} ({v})");
    }
}

/// Separate clear limit: fires above 180, clears only at or below 160.
#[test]
fn hysteresis_with_clear_limit() {
    let mut s = Sim::new(sbp_rule(
        "clear = { limit = \"160 mmHg\", consecutive = 1 }",
    ));
    let seq: &[(f64, alerting_rules::TransitionKind)] = &[
        (181.0, Fire),
        (175.0, NoChange),
        (161.0, NoChange),
        (160.0, Resolve),
        (175.0, NoChange),
        (181.0, Fire),
    ];
    for (i, &(v, k)) in seq.iter().enumerate() {
        let ts = s.one(Metric::Systolic, v, at(i as i64 * 10));
        assert_eq!(kind_of(&ts, "t"), Some(k), "step {i} ({v})");
    }
    assert!(get(&s.one(Metric::Systolic, 100.0, at(100)), "t")
        .limits
        .contains_key("clear_limit"));
}

#[test]
fn no_data_never_resolves() {
    let mut s = Sim::new(rule(
        "average = { metric = \"systolic\", window = \"1d\", op = \">=\", limit = \"135 mmHg\", min_readings = 2 }\nclear = { consecutive = 1 }",
    ));
    s.one(Metric::Systolic, 150.0, at(0));
    assert_eq!(
        kind_of(&s.one(Metric::Systolic, 150.0, at(60)), "t"),
        Some(Fire)
    );
    // Two days later a single reading: fewer than min_readings in the window.
    let ts = s.one(Metric::Systolic, 120.0, at(days(2)));
    assert_eq!(
        (get(&ts, "t").kind, get(&ts, "t").note),
        (NoChange, Some(Note::NoData))
    );
    let ts = s.one(Metric::Systolic, 120.0, at(days(2) + 60));
    assert_eq!(kind_of(&ts, "t"), Some(Resolve));
}

/// Updates only when worse than at the last notification and not within
/// the re-notify interval.
#[test]
fn renotify_interval_and_material_change() {
    let mut s = Sim::new(sbp_rule("renotify = \"1h\""));
    let seq: &[(i64, f64, alerting_rules::TransitionKind, Option<Note>)] = &[
        (0, 190.0, Fire, None),
        (10, 185.0, NoChange, Some(Note::NotMaterial)),
        (20, 200.0, NoChange, Some(Note::RenotifyInterval)),
        (70, 195.0, Update, Some(Note::NewPeak)), // worse than 190 notified
        (80, 210.0, NoChange, Some(Note::RenotifyInterval)),
        (140, 195.0, NoChange, Some(Note::NotMaterial)),
        (140 + 1, 196.0, Update, Some(Note::NewPeak)),
    ];
    for &(m, v, k, note) in seq {
        let ts = s.one(Metric::Systolic, v, at(m));
        let t = get(&ts, "t");
        assert_eq!((t.kind, t.note), (k, note), "minute {m} ({v})");
        assert_eq!(t.notify, matches!(k, Fire | Update));
    }
    let open = s.states["t"].open.as_ref().unwrap();
    assert_eq!(open.last_notified, Some(at(141)));
    assert!(open.message.contains("196"), "{}", open.message);
}

#[test]
fn acknowledge_with_snooze_suppresses_renotification() {
    let mut s = Sim::new(sbp_rule("renotify = \"1h\"\nclear = { consecutive = 1 }"));
    s.one(Metric::Systolic, 190.0, at(0));
    let acked = acknowledge(&s.states["t"], "nurse-7", at(5), Some(TimeDelta::hours(4))).unwrap();
    assert_eq!(
        acked.open.as_ref().unwrap().status,
        AlertStatus::Acknowledged
    );
    assert_eq!(acked.snooze_until, Some(at(5 + 240)));
    s.states.insert("t".into(), acked);

    let ts = s.one(Metric::Systolic, 220.0, at(120));
    assert_eq!(
        (get(&ts, "t").kind, get(&ts, "t").note, get(&ts, "t").notify),
        (NoChange, Some(Note::Snoozed), false)
    );
    // Resolve and re-fire inside the snooze: recorded, not notified.
    assert_eq!(
        kind_of(&s.one(Metric::Systolic, 120.0, at(130)), "t"),
        Some(Resolve)
    );
    let ts = s.one(Metric::Systolic, 190.0, at(140));
    assert_eq!(
        (get(&ts, "t").kind, get(&ts, "t").notify, get(&ts, "t").note),
        (Fire, false, Some(Note::Snoozed))
    );
    // After the snooze a worse reading notifies.
    let ts = s.one(Metric::Systolic, 200.0, at(300));
    assert_eq!((get(&ts, "t").kind, get(&ts, "t").notify), (Update, true));
    // A resolve of an alert that was only ever silent says nothing.
    let mut s2 = Sim::new(sbp_rule("clear = { consecutive = 1 }"));
    s2.states.insert(
        "t".into(),
        alerting_rules::AlertState {
            snooze_until: Some(at(100)),
            ..Default::default()
        },
    );
    assert!(!get(&s2.one(Metric::Systolic, 190.0, at(0)), "t").notify);
    let ts = s2.one(Metric::Systolic, 120.0, at(10));
    assert_eq!(
        (get(&ts, "t").kind, get(&ts, "t").notify, get(&ts, "t").note),
        (Resolve, false, Some(Note::NeverNotified))
    );
}

#[test]
fn acknowledge_errors() {
    let st = alerting_rules::AlertState::new("t", 1);
    assert!(matches!(
        acknowledge(&st, "x", at(0), None),
        Err(AckError::NotOpen(_))
    ));
    let mut s = Sim::new(sbp_rule(""));
    s.one(Metric::Systolic, 190.0, at(0));
    assert!(matches!(
        acknowledge(&s.states["t"], "x", at(1), Some(TimeDelta::hours(-1))),
        Err(AckError::NegativeSnooze)
    ));
    let a = acknowledge(&s.states["t"], "a", at(1), Some(TimeDelta::hours(2))).unwrap();
    let b = acknowledge(&a, "b", at(2), Some(TimeDelta::hours(1))).unwrap();
    assert_eq!(
        b.open.as_ref().unwrap().acknowledged_by.as_deref(),
        Some("a")
    );
    assert_eq!(
        b.snooze_until,
        Some(at(121)),
        "a second ack never shortens the snooze"
    );
}

/// More than `max_changes` fire/resolve transitions in the window: the
/// alert holds its firing state until the window has room again.
#[test]
fn flapping_holds_state() {
    let mut s = Sim::new(sbp_rule(
        "clear = { consecutive = 1 }\nflap = { max_changes = 4, window = \"6h\" }",
    ));
    let mut kinds = Vec::new();
    for i in 0..8 {
        let v = if i % 2 == 0 { 190.0 } else { 120.0 };
        kinds.push(get(&s.one(Metric::Systolic, v, at(i * 10)), "t").kind);
    }
    assert_eq!(
        kinds,
        vec![Fire, Resolve, Fire, Resolve, Fire, NoChange, NoChange, NoChange]
    );
    let st = &s.states["t"];
    assert!(st.flapping && st.open.is_some());
    let ts = s.one(Metric::Systolic, 120.0, at(70));
    assert_eq!(
        (get(&ts, "t").note, get(&ts, "t").flapping),
        (Some(Note::Flapping), true)
    );
    // Six hours after the first changes the window has room: it resolves.
    let ts = s.one(Metric::Systolic, 120.0, at(hours(6) + 25));
    assert_eq!(kind_of(&ts, "t"), Some(Resolve));
    assert!(!s.states["t"].flapping);
}

fn with_override(s: &mut Sim, id: &str, o: RuleOverride) {
    let mut ov = Overrides::default();
    ov.0.insert(id.into(), o);
    s.patient.overrides = ov;
}

#[test]
fn overrides_disable_and_change_limits() {
    // Disabled.
    let mut s = Sim::new(sbp_rule(""));
    with_override(
        &mut s,
        "t",
        RuleOverride {
            disabled: true,
            ..Default::default()
        },
    );
    assert_eq!(kind_of(&s.one(Metric::Systolic, 250.0, at(0)), "t"), None);

    // Clinician target: alert above 150 for this patient.
    let mut s = Sim::new(sbp_rule(""));
    let mut limits = std::collections::BTreeMap::new();
    limits.insert("limit".to_string(), "150 mmHg".parse::<Quantity>().unwrap());
    with_override(
        &mut s,
        "t",
        RuleOverride {
            disabled: false,
            limits,
        },
    );
    assert_eq!(
        kind_of(&s.one(Metric::Systolic, 150.0, at(0)), "t"),
        Some(NoChange)
    );
    let ts = s.one(Metric::Systolic, 155.0, at(10));
    let t = get(&ts, "t");
    assert_eq!(t.kind, Fire);
    assert_eq!(
        (
            t.limits["limit"].value,
            t.limits["limit"].overridden,
            t.rule_version
        ),
        (150.0, true, 3)
    );
    assert_eq!(
        s.states["t"].open.as_ref().unwrap().limits["limit"].value,
        150.0
    );
}

#[test]
fn override_in_other_unit_and_dry_weight_baseline() {
    let set = alerting_rules::RuleSet::bundled().unwrap();
    let mut s = Sim::bundled(&["heart-failure"]);
    let mut limits = std::collections::BTreeMap::new();
    limits.insert(
        "baseline".to_string(),
        "176 lb".parse::<Quantity>().unwrap(),
    ); // 79.83 kg dry weight
    let mut ov = Overrides::default();
    ov.0.insert(
        "hf.weight-gain-7d".into(),
        RuleOverride {
            disabled: false,
            limits,
        },
    );
    assert!(ov.validate(&set).is_ok());
    s.patient.overrides = ov;
    // A single reading suffices with a fixed baseline: 82.2 - 79.83 = 2.37 kg.
    let ts = s.one(Metric::BodyWeight, 82.2, at(0));
    let t = get(&ts, "hf.weight-gain-7d");
    assert_eq!(t.kind, Fire, "{t:#?}");
    assert!(t.limits["baseline"].overridden);
    assert_eq!(t.limits["baseline"].display.to_string(), "176 lb");
    assert_eq!(kind_of(&ts, "hf.weight-gain-24h"), Some(NoChange));
}

#[test]
fn invalid_overrides_are_reported_and_skipped() {
    let set = alerting_rules::RuleSet::bundled().unwrap();
    let mut limits = std::collections::BTreeMap::new();
    limits.insert("limt".to_string(), "150 mmHg".parse::<Quantity>().unwrap());
    limits.insert("limit".to_string(), "150 kg".parse::<Quantity>().unwrap());
    let mut ov = Overrides::default();
    ov.0.insert(
        "htn.hypotension".into(),
        RuleOverride {
            disabled: false,
            limits,
        },
    );
    ov.0.insert("nope".into(), RuleOverride::default());
    assert_eq!(ov.validate(&set).unwrap_err().len(), 3);
    let mut s = Sim::bundled(&["hypertension"]);
    s.patient.overrides = ov;
    let ts = s.one(Metric::Systolic, 89.0, at(0));
    let t = get(&ts, "htn.hypotension");
    assert_eq!(t.kind, Fire);
    assert_eq!(
        (t.limits["limit"].value, t.limits["limit"].overridden),
        (90.0, false)
    );
    // Serde round trip as the gateway would store it.
    let json = serde_json::to_string(&s.patient.overrides).unwrap();
    assert!(json.contains("\"150 kg\""), "{json}");
    let back: Overrides = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s.patient.overrides);
}

#[test]
fn missing_data_with_gateway_downtime() {
    let mut s = Sim::bundled(&["hypertension"]);
    s.one(Metric::Systolic, 120.0, at(0));
    let id = "adherence.no-vitals-2d";
    assert_eq!(
        kind_of(&s.missing(at(hours(47)), &[], false), id),
        Some(NoChange)
    );
    // The gateway was down for 5 h: no false alert at 48 h ...
    let down = [(at(hours(10)), at(hours(15)))];
    assert_eq!(
        kind_of(&s.missing(at(hours(48)), &down, false), id),
        Some(NoChange)
    );
    // ... but the real silence still fires, 5 h later.
    let ts = s.missing(at(hours(53)), &down, false);
    let t = get(&ts, id);
    assert_eq!((t.kind, t.notify), (Fire, true));
    assert_eq!(t.message, "No systolic reading for 2d (limit 2d)");
    // A reading resolves it at the next evaluation.
    s.one(Metric::Systolic, 120.0, at(hours(54)));
    assert_eq!(
        kind_of(&s.missing(at(hours(54)), &down, false), id),
        Some(Resolve)
    );
}

#[test]
fn downtime_arithmetic() {
    use alerting_rules::missing::silence;
    let d = |a: i64, b: i64| (at(a), at(b));
    type Interval = (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>);
    let rows: &[(&[Interval], i64)] = &[
        (&[], 100),
        (&[d(10, 20)], 90),
        (&[d(10, 20), d(15, 30)], 80), // overlapping
        (&[d(-50, 10)], 90),           // starts before the last reading
        (&[d(90, 200)], 90),           // ends after now
        (&[d(40, 30)], 100),           // reversed: ignored
        (&[d(50, 60), d(10, 20)], 80), // unordered
    ];
    for &(down, want) in rows {
        assert_eq!(
            silence(at(100), at(0), down),
            TimeDelta::minutes(want),
            "{down:?}"
        );
    }
}

#[test]
fn device_offline_inhibits_then_notifies_when_it_clears() {
    let mut s = Sim::bundled(&["hypertension"]);
    s.one(Metric::Systolic, 120.0, at(0));
    let id = "adherence.no-vitals-2d";
    let ts = s.missing(at(hours(49)), &[], true);
    assert_eq!(
        (get(&ts, id).kind, get(&ts, id).notify, get(&ts, id).note),
        (Fire, false, Some(Note::Inhibited))
    );
    let ts = s.missing(at(hours(50)), &[], false);
    assert_eq!(
        (get(&ts, id).kind, get(&ts, id).notify),
        (Update, true),
        "not hidden once the device flag clears"
    );
}

#[test]
fn never_seen_metrics_are_not_missing_but_silence_since_enrolment_is() {
    let mut s = Sim::bundled(&["diabetes"]);
    // Nothing ever arrived: the any-metric rule counts from enrolment.
    let ts = s.missing(at(days(3)), &[], false);
    assert_eq!(kind_of(&ts, "adherence.no-vitals-2d"), Some(NoChange));
    assert_eq!(kind_of(&ts, "adherence.no-data-3d"), Some(Fire));
    assert_eq!(
        get(&ts, "adherence.no-data-3d").message,
        "No reading of any kind for 3d (limit 3d)"
    );
}

/// An upload in progress is not silence: a missing-data breach is not acted
/// on until the patient's input has settled, while a normal verdict (a
/// reading that ends the silence) resolves at once.
#[test]
fn missing_data_is_judged_only_once_the_input_has_settled() {
    let mut s = Sim::bundled(&["hypertension"]);
    let bp = [(Metric::Systolic, 120.0), (Metric::Diastolic, 80.0)];
    s.measure(&bp, at(0));
    // Four days later the cuff uploads its memory, oldest first: after the
    // first old reading the patient looks silent for days.
    let upload = at(days(4));
    s.measure_received(&bp, at(hours(12)), upload);
    s.last_input = Some(upload);
    for now in [upload, upload + TimeDelta::seconds(90)] {
        let ts = s.missing(now, &[], false);
        for rule in ["adherence.no-vitals-2d", "adherence.no-data-3d"] {
            let t = get(&ts, rule);
            assert_eq!((t.kind, t.note), (NoChange, Some(Note::Settling)), "{rule}");
        }
    }
    // Settled (2 minutes without input) and still silent: it fires.
    let ts = s.missing(upload + TimeDelta::minutes(2), &[], false);
    assert_eq!(kind_of(&ts, "adherence.no-data-3d"), Some(Fire));
    assert_eq!(kind_of(&ts, "adherence.no-vitals-2d"), Some(Fire));
    // The next reading resolves at once, whatever the settling.
    let now = upload + TimeDelta::minutes(3);
    s.measure_received(&bp, now, now);
    s.last_input = Some(now);
    let ts = s.missing(now, &[], false);
    assert_eq!(kind_of(&ts, "adherence.no-data-3d"), Some(Resolve));
    assert_eq!(kind_of(&ts, "adherence.no-vitals-2d"), Some(Resolve));
}

/// A history that only lends its readings: asking it for a copy fails.
struct LendOnly(alerting_rules::MemoryHistory);

impl alerting_rules::History for LendOnly {
    fn window(
        &self,
        _: &str,
        _: Metric,
        _: chrono::DateTime<chrono::Utc>,
        _: chrono::DateTime<chrono::Utc>,
    ) -> Vec<alerting_rules::Point> {
        panic!("the engine asked for a copy of a window")
    }
    fn last_n(
        &self,
        _: &str,
        _: Metric,
        _: chrono::DateTime<chrono::Utc>,
        _: usize,
    ) -> Vec<alerting_rules::Point> {
        panic!("the engine asked for a copy of the last readings")
    }
    fn last_seen(
        &self,
        patient: &str,
        metric: Option<Metric>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.0.last_seen(patient, metric)
    }
    fn with_window(
        &self,
        patient: &str,
        metric: Metric,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
        f: &mut dyn FnMut(&[alerting_rules::Point]),
    ) {
        self.0.with_window(patient, metric, from, to, f)
    }
    fn with_last_n(
        &self,
        patient: &str,
        metric: Metric,
        at: chrono::DateTime<chrono::Utc>,
        n: usize,
        f: &mut dyn FnMut(&[alerting_rules::Point]),
    ) {
        self.0.with_last_n(patient, metric, at, n, f)
    }
}

/// The engine reads windows lent by the history (no copies), and judges a
/// measurement the same whether the history holds it yet or not.
#[test]
fn a_measurement_is_judged_alike_whether_stored_yet_or_not() {
    use alerting_rules::engine::Input;
    use alerting_rules::History;
    let mut s = Sim::bundled(&["hypertension"]);
    // Twice a day for five days, above the home goal, the last one a crisis.
    for d in 0..5 {
        for h in [7, 19] {
            s.one(Metric::Systolic, 150.0, at(days(d) + hours(h)));
        }
    }
    let fresh = alerting_rules::NewReading {
        id: "fresh".into(),
        metric: Metric::Systolic,
        value: 190.0,
        measured_at: at(days(5) + hours(7)),
        received_at: at(days(5) + hours(7)),
    };
    let without = LendOnly(s.history.clone());
    let mut with = s.history.clone();
    with.insert(
        "p1",
        Metric::Systolic,
        alerting_rules::Point {
            reading_id: "fresh".into(),
            measured_at: fresh.measured_at,
            value: fresh.value,
        },
    );
    let with = LendOnly(with);
    let judge = |history: &dyn History| {
        s.engine
            .evaluate(&Input {
                patient: &s.patient,
                readings: std::slice::from_ref(&fresh),
                history,
                states: &s.states,
                watermark: s.watermark,
                now: fresh.received_at,
            })
            .transitions
    };
    let stored = judge(&with);
    assert_eq!(stored, judge(&without));
    assert_eq!(kind_of(&stored, "htn.crisis"), Some(Fire));
    let mean = get(&stored, "htn.home-mean-high");
    // Nine readings after the first day, the fresh one among them.
    assert_eq!(mean.leaves[0].count, 9, "{:#?}", mean.leaves);
    assert!(mean.evidence.iter().any(|e| e.reading_id == *"fresh"));
}
