//! Table-driven tests per rule kind, boundaries included.

mod common;

use alerting_rules::Status::*;
use alerting_rules::TransitionKind::{self, *};
use common::*;
use device_profiles::Metric;

/// Each row: operator, limit, reading, whether the rule fires.
#[test]
fn threshold_boundaries() {
    let rows: &[(&str, &str, f64, bool)] = &[
        (">", "180 mm[Hg]", 180.0, false),
        (">", "180 mm[Hg]", 180.5, true),
        (">=", "180 mm[Hg]", 180.0, true),
        (">=", "180 mm[Hg]", 179.9, false),
        ("<", "90 mm[Hg]", 90.0, false),
        ("<", "90 mm[Hg]", 89.9, true),
        ("<=", "90 mm[Hg]", 90.0, true),
        ("<=", "90 mm[Hg]", 90.1, false),
        (">", "24 kPa", 180.01, false), // 24 kPa = 180.0148 mm[Hg]
        (">", "24 kPa", 180.02, true),
    ];
    for &(op, limit, value, fires) in rows {
        let mut s = Sim::new(rule(&format!(
            "threshold = {{ metric = \"systolic\", op = \"{op}\", limit = \"{limit}\" }}"
        )));
        let ts = s.one(Metric::Systolic, value, at(0));
        let want = if fires { Fire } else { NoChange };
        assert_eq!(kind_of(&ts, "t"), Some(want), "{value} {op} {limit}");
    }
}

/// Each row: count clause, reading sequence, the kind after each reading.
#[test]
fn consecutive_and_m_of_n() {
    let rows: &[(&str, &[f64], &[TransitionKind])] = &[
        (
            "consecutive = 2",
            &[95.0, 85.0, 85.0],
            &[NoChange, NoChange, Fire],
        ),
        (
            "consecutive = 2",
            &[85.0, 95.0, 85.0],
            &[NoChange, NoChange, NoChange],
        ),
        (
            "consecutive = 3",
            &[85.0, 85.0, 85.0],
            &[NoChange, NoChange, Fire],
        ),
        (
            "m_of_n = [2, 3]",
            &[85.0, 95.0, 85.0],
            &[NoChange, NoChange, Fire],
        ),
        (
            "m_of_n = [2, 3]",
            &[85.0, 95.0, 95.0, 85.0],
            &[NoChange, NoChange, NoChange, NoChange],
        ),
        ("m_of_n = [1, 3]", &[85.0], &[Fire]),
    ];
    for &(clause, seq, want) in rows {
        let mut s = Sim::new(rule(&format!(
            "threshold = {{ metric = \"spo2\", op = \"<\", limit = 90, {clause} }}"
        )));
        for (i, (&v, &k)) in seq.iter().zip(want).enumerate() {
            let ts = s.one(Metric::Spo2, v, at(i as i64 * 60));
            assert_eq!(kind_of(&ts, "t"), Some(k), "{clause} {seq:?} step {i}");
        }
    }
}

#[test]
fn stale_readings_do_not_count_for_a_threshold_in_a_combination() {
    // Diastolic last seen 3 days ago: the `all` needs both, so no alert.
    let mut s = Sim::new(rule(
        "[[rule.all]]\nthreshold = { metric = \"systolic\", op = \">\", limit = \"160 mmHg\" }\n[[rule.all]]\nthreshold = { metric = \"diastolic\", op = \">\", limit = \"100 mmHg\" }",
    ));
    s.one(Metric::Diastolic, 110.0, at(0));
    let ts = s.one(Metric::Systolic, 170.0, at(days(3)));
    assert_eq!(kind_of(&ts, "t"), Some(NoChange));
    let ts = s.measure(
        &[(Metric::Systolic, 170.0), (Metric::Diastolic, 110.0)],
        at(days(3) + 5),
    );
    assert_eq!(kind_of(&ts, "t"), Some(Fire));
}

/// A rule written in pounds applied to readings stored in kilograms.
#[test]
fn delta_rule_in_pounds_on_kilogram_readings() {
    // 2 lb = 0.90718474 kg.
    let rows: &[(f64, bool)] = &[(0.90, false), (0.907, false), (0.9072, true), (1.5, true)];
    for &(gain, fires) in rows {
        let mut s = Sim::new(rule(
            "delta = { metric = \"body_weight\", op = \">=\", limit = \"2 lb\", window = \"24h\", baseline = \"min\" }",
        ));
        s.one(Metric::BodyWeight, 80.0, at(0));
        let ts = s.one(Metric::BodyWeight, 80.0 + gain, at(hours(20)));
        assert_eq!(
            kind_of(&ts, "t"),
            Some(if fires { Fire } else { NoChange }),
            "gain {gain}"
        );
        if fires {
            let t = get(&ts, "t");
            assert!(t.message.contains("lb"), "{}", t.message);
            assert!((t.limits["limit"].value - 0.907_184_74).abs() < 1e-9);
            assert_eq!(t.limits["limit"].display.to_string(), "2 lb");
            assert!(
                t.message.contains("+0.91 lb") || t.message.contains("lb"),
                "{}",
                t.message
            );
        }
    }
}

#[test]
fn threshold_in_fahrenheit_on_celsius_readings() {
    let mut s = Sim::new(rule(
        "threshold = { metric = \"body_temperature\", op = \">=\", limit = \"100.4 [degF]\" }",
    ));
    assert_eq!(
        kind_of(&s.one(Metric::BodyTemperature, 37.99, at(0)), "t"),
        Some(NoChange)
    );
    let ts = s.one(Metric::BodyTemperature, 38.0, at(60));
    assert_eq!(kind_of(&ts, "t"), Some(Fire));
    assert!(
        get(&ts, "t").message.contains("100.4 °F"),
        "{}",
        get(&ts, "t").message
    );
}

/// Each row: baseline, weights (hours, kg), verdict at the last reading.
#[test]
fn delta_baselines_and_window() {
    type Row<'a> = (&'a str, &'a [(i64, f64)], alerting_rules::Status);
    let rows: &[Row] = &[
        ("min", &[(0, 81.0), (10, 80.0), (20, 80.9)], Breach),
        ("earliest", &[(0, 81.0), (10, 80.0), (20, 80.9)], Normal),
        ("earliest", &[(0, 80.0), (10, 80.5), (20, 80.9)], Breach),
        ("min", &[(0, 80.0), (10, 80.5), (20, 80.9)], Breach), // exactly 0.9 kg
        ("min", &[(0, 80.0), (10, 80.5), (20, 80.89)], Normal),
        ("min", &[(0, 80.0), (30, 80.9)], Unknown), // baseline outside the 24 h window
        ("min", &[(20, 80.9)], Unknown),            // no baseline
    ];
    for &(baseline, pts, want) in rows {
        let mut s = Sim::new(rule(&format!(
            "delta = {{ metric = \"body_weight\", op = \">=\", limit = \"0.9 kg\", window = \"24h\", baseline = \"{baseline}\" }}"
        )));
        let mut last = None;
        for &(h, kg) in pts {
            last = Some(get(&s.one(Metric::BodyWeight, kg, at(hours(h))), "t").status);
        }
        assert_eq!(last, Some(want), "{baseline} {pts:?}");
    }
}

#[test]
fn falling_delta_against_max_baseline() {
    let mut s = Sim::new(rule("delta = { metric = \"spo2\", op = \"<=\", limit = \"-3 %\", window = \"48h\", baseline = \"max\" }"));
    s.one(Metric::Spo2, 95.0, at(0));
    s.one(Metric::Spo2, 97.0, at(hours(5)));
    assert_eq!(
        kind_of(&s.one(Metric::Spo2, 94.5, at(hours(10))), "t"),
        Some(NoChange)
    );
    let ts = s.one(Metric::Spo2, 94.0, at(hours(20)));
    assert_eq!(kind_of(&ts, "t"), Some(Fire));
    assert_eq!(
        get(&ts, "t").evidence.len(),
        2,
        "baseline and current are cited"
    );
}

/// Each row: statistic, scope, readings, min_readings, fires.
#[test]
fn averages() {
    let rows: &[(&str, &str, &[f64], usize, bool)] = &[
        ("mean", "window = \"7d\"", &[130.0, 140.0, 135.0], 3, true), // mean exactly 135
        ("mean", "window = \"7d\"", &[130.0, 140.0, 134.0], 3, false),
        ("mean", "window = \"7d\"", &[150.0, 150.0], 3, false), // too few readings
        ("median", "window = \"7d\"", &[120.0, 136.0, 200.0], 3, true),
        (
            "median",
            "window = \"7d\"",
            &[120.0, 130.0, 200.0, 210.0],
            3,
            true,
        ), // (130+200)/2
        ("mean", "last = 2", &[200.0, 130.0, 140.0], 2, true),
        ("mean", "last = 2", &[200.0, 130.0, 139.0], 2, false),
    ];
    for &(stat, scope, vals, min, fires) in rows {
        let mut s = Sim::new(rule(&format!(
            "average = {{ metric = \"systolic\", stat = \"{stat}\", {scope}, op = \">=\", limit = \"135 mmHg\", min_readings = {min} }}"
        )));
        let mut last = None;
        for (i, &v) in vals.iter().enumerate() {
            last = Some(get(&s.one(Metric::Systolic, v, at(hours(12 * i as i64))), "t").status);
        }
        let want = match (fires, min <= vals.len()) {
            (true, _) => Breach,
            (false, true) => Normal,
            (false, false) => Unknown,
        };
        assert_eq!(last, Some(want), "{stat} {scope} {vals:?}");
    }
}

#[test]
fn average_window_excludes_old_readings() {
    let mut s = Sim::new(rule(
        "average = { metric = \"systolic\", window = \"7d\", op = \">=\", limit = \"135 mmHg\", min_readings = 2 }",
    ));
    s.one(Metric::Systolic, 200.0, at(0));
    s.one(Metric::Systolic, 120.0, at(days(8)));
    let ts = s.one(Metric::Systolic, 125.0, at(days(8) + 60));
    assert_eq!(kind_of(&ts, "t"), Some(NoChange));
    assert_eq!(get(&ts, "t").leaves[0].count, 2);
}

/// The home-mean protocol: the first 24 h of the series are left out (a
/// high first day moves nothing), and the rest must span `min_days` days of
/// 24 h from the first reading (a reading just under 24 h after another is
/// on the same day).
#[test]
fn an_average_leaves_out_the_first_day_and_counts_days_from_the_first_reading() {
    let mut s = Sim::new(rule(
        "average = { metric = \"systolic\", window = \"7d\", op = \">=\", limit = \"135 mmHg\", min_readings = 2, min_days = 2, discard_first_day = true }",
    ));
    let h = hours(1);
    // Day 0: high, left out. Day 1: two readings (one day). Day 2: one more.
    for t in [0, 2 * h] {
        s.one(Metric::Systolic, 190.0, at(t));
    }
    let ts = s.one(Metric::Systolic, 120.0, at(24 * h));
    let ts2 = s.one(Metric::Systolic, 125.0, at(47 * h));
    for ts in [&ts, &ts2] {
        let leaf = &get(ts, "t").leaves[0];
        assert_eq!(leaf.status, Unknown, "one day is too few");
    }
    assert_eq!(get(&ts2, "t").leaves[0].count, 2);
    let ts = s.one(Metric::Systolic, 130.0, at(48 * h));
    let leaf = &get(&ts, "t").leaves[0];
    assert_eq!((leaf.status, leaf.count), (Normal, 3));
    assert_eq!(leaf.value, Some(125.0));
    // A high reading on a later day raises the mean over the limit
    // (120, 125, 130, 170: 136.25).
    let ts = s.one(Metric::Systolic, 170.0, at(49 * h));
    assert_eq!(kind_of(&ts, "t"), Some(Fire));
    assert_eq!(get(&ts, "t").leaves[0].value, Some(136.25));
}

/// Each row: daily weights, slope limit per day, fires.
#[test]
fn slopes() {
    let rows: &[(&[f64], &str, bool)] = &[
        (&[80.0, 80.3, 80.6, 80.9], "0.3 kg", true),
        (&[80.0, 80.3, 80.6, 80.8], "0.3 kg", false),
        (&[80.0, 80.3], "0.3 kg", false), // fewer than min_readings
        (&[80.0, 80.6614, 81.3228, 81.9842], "1.45 lb", true), // 0.6614 kg = 1.4582 lb
    ];
    for &(vals, limit, fires) in rows {
        let mut s = Sim::new(rule(&format!(
            "slope = {{ metric = \"body_weight\", window = \"7d\", op = \">=\", limit = \"{limit}\", min_readings = 3 }}"
        )));
        let mut last = None;
        for (i, &v) in vals.iter().enumerate() {
            last = Some(get(&s.one(Metric::BodyWeight, v, at(days(i as i64))), "t").status);
        }
        let want = if fires {
            Breach
        } else if vals.len() < 3 {
            Unknown
        } else {
            Normal
        };
        assert_eq!(last, Some(want), "{vals:?} {limit}");
    }
}

#[test]
fn any_and_all_combinations() {
    // Bundled crisis rule: SBP > 180 or DBP > 120.
    let rows: &[(f64, f64, bool)] = &[
        (180.0, 120.0, false),
        (181.0, 80.0, true),
        (150.0, 121.0, true),
        (185.0, 125.0, true),
    ];
    for &(sys, dia, fires) in rows {
        let mut s = Sim::bundled(&["hypertension"]);
        let ts = s.measure(&[(Metric::Systolic, sys), (Metric::Diastolic, dia)], at(0));
        assert_eq!(
            kind_of(&ts, "htn.crisis"),
            Some(if fires { Fire } else { NoChange }),
            "{sys}/{dia}"
        );
        if fires {
            let t = get(&ts, "htn.crisis");
            assert_eq!(t.severity, alerting_rules::Severity::Critical);
            assert!(
                t.message.starts_with("Hypertensive crisis range: "),
                "{}",
                t.message
            );
            assert!(
                t.message
                    .contains(&format!("{}", if sys > 180.0 { sys } else { dia })),
                "{}",
                t.message
            );
        }
    }

    // Bundled heart-failure combination: weight gain AND SpO2 falling.
    let mut s = Sim::bundled(&["heart-failure"]);
    s.measure(&[(Metric::BodyWeight, 80.0)], at(0));
    s.measure(&[(Metric::Spo2, 97.0)], at(5));
    let ts = s.measure(&[(Metric::BodyWeight, 81.0)], at(hours(24)));
    assert_eq!(
        kind_of(&ts, "hf.weight-gain-with-spo2-drop"),
        Some(NoChange),
        "SpO2 has not fallen"
    );
    assert_eq!(kind_of(&ts, "hf.weight-gain-24h"), Some(Fire));
    let ts = s.measure(&[(Metric::Spo2, 93.0)], at(hours(25)));
    let t = get(&ts, "hf.weight-gain-with-spo2-drop");
    assert_eq!(t.kind, Fire);
    assert!(
        t.message.contains("body_weight change +1 kg") && t.message.contains("spo2 change -4 %"),
        "{}",
        t.message
    );
    assert_eq!(t.evidence.len(), 4);
    assert!(t.limits.contains_key("weight.limit") && t.limits.contains_key("spo2.limit"));
}

#[test]
fn diabetes_levels_are_exclusive_ranges() {
    let rows: &[(f64, &[&str])] = &[
        (70.0, &[]),
        (69.0, &["dm.hypo-level1"]),
        (54.0, &["dm.hypo-level1"]),
        (53.9, &["dm.hypo-level2"]),
        (250.0, &[]),
        (251.0, &["dm.hyper-level2"]),
        (400.0, &["dm.hyper-level2"]),
        (401.0, &["dm.hyper-severe"]),
    ];
    for &(v, want) in rows {
        let mut s = Sim::bundled(&["diabetes"]);
        let ts = s.one(Metric::BloodGlucose, v, at(0));
        let fired: Vec<&str> = ts
            .iter()
            .filter(|t| t.kind == Fire)
            .map(|t| t.rule_id.as_str())
            .collect();
        assert_eq!(fired, want, "{v} mg/dL");
    }
}

#[test]
fn copd_patients_get_the_copd_limit_only() {
    let mut s = Sim::bundled(&["copd"]);
    let ts = s.one(Metric::Spo2, 89.0, at(0));
    assert!(ts.iter().all(|t| t.kind == NoChange), "{ts:#?}");
    let ts = s.one(Metric::Spo2, 87.0, at(60));
    assert_eq!(kind_of(&ts, "copd.spo2-low"), Some(Fire));
    assert_eq!(kind_of(&ts, "spo2.low"), None);

    let mut s = Sim::bundled(&["hypertension"]);
    assert_eq!(
        kind_of(&s.one(Metric::Spo2, 89.0, at(0)), "spo2.low"),
        Some(Fire)
    );
}

#[test]
fn fever_boundary_and_units() {
    let mut s = Sim::bundled(&["diabetes"]);
    assert_eq!(
        kind_of(&s.one(Metric::BodyTemperature, 37.99, at(0)), "fever"),
        Some(NoChange)
    );
    let ts = s.one(Metric::BodyTemperature, 38.0, at(60));
    assert_eq!(kind_of(&ts, "fever"), Some(Fire));
    assert_eq!(get(&ts, "fever").message, "Fever: 38 °C (limit 38 °C)");
}

/// `htn.home-mean-high` takes the home mean as the monitoring protocol does
/// (AHA/AMA 2020, ESH 2021): first day discarded, at least 12 readings on
/// at least 3 days. One crisis reading among a few ordinary ones raises
/// the crisis alert only, not the mean alert too.
#[test]
fn home_bp_mean_follows_the_monitoring_protocol() {
    const MEAN: &str = "htn.home-mean-high";
    // (sys, dia) per reading; duplicates morning (07:00, 07:01) and evening
    // (19:00, 19:01) for `days` days, then the rule's status after the last.
    let run = |first_day: (f64, f64), rest: (f64, f64), days: i64, extra: Option<(f64, f64)>| {
        let mut s = Sim::bundled(&["hypertension"]);
        let mut last = Vec::new();
        for d in 0..days {
            for m in [0, 1, 720, 721] {
                let (sys, dia) = if d == 0 { first_day } else { rest };
                last = s.measure(
                    &[(Metric::Systolic, sys), (Metric::Diastolic, dia)],
                    at(days_(d) + m - 60),
                );
            }
        }
        if let Some((sys, dia)) = extra {
            last = s.measure(
                &[(Metric::Systolic, sys), (Metric::Diastolic, dia)],
                at(days_(days)),
            );
        }
        last
    };
    fn days_(d: i64) -> i64 {
        d * 1440
    }
    // Six ordinary readings and one in the crisis range: the crisis alert,
    // and no verdict on the mean (7 readings < 12).
    let mut s = Sim::bundled(&["hypertension"]);
    let mut ts = Vec::new();
    for i in 0..6 {
        ts = s.measure(
            &[(Metric::Systolic, 126.0), (Metric::Diastolic, 78.0)],
            at(hours(12 * i)),
        );
    }
    assert_eq!(kind_of(&ts, MEAN), Some(NoChange));
    let ts = s.measure(
        &[(Metric::Systolic, 190.0), (Metric::Diastolic, 100.0)],
        at(hours(72)),
    );
    assert_eq!(kind_of(&ts, "htn.crisis"), Some(Fire));
    assert_eq!(get(&ts, MEAN).status, Unknown, "{:?}", get(&ts, MEAN));
    assert_eq!(kind_of(&ts, MEAN), Some(NoChange));

    // A high first day is discarded: days 2-4 are ordinary.
    let ts = run((170.0, 100.0), (125.0, 78.0), 4, None);
    assert_eq!(get(&ts, MEAN).status, Normal);
    assert_eq!(get(&ts, MEAN).leaves[0].count, 12);
    // 12 high readings on 3 days after the first: fires.
    let ts = run((140.0, 88.0), (140.0, 88.0), 4, None);
    assert_eq!(kind_of(&ts, MEAN), Some(Fire));
    // High, but only 2 days after the first (8 readings): no verdict.
    let ts = run((140.0, 88.0), (140.0, 88.0), 3, None);
    assert_eq!(get(&ts, MEAN).status, Unknown);
    // A rolling week of high readings: the first 24 h of the window's
    // series are discarded (27 in the window, 23 kept).
    let ts = run((140.0, 88.0), (140.0, 88.0), 7, Some((140.0, 88.0)));
    assert_eq!(get(&ts, MEAN).status, Breach);
    assert_eq!(get(&ts, MEAN).leaves[0].count, 23);
}

/// The patient-reported rules of the bundled packs: a red-zone check-in,
/// yellow on two check-ins in a row, breathlessness with weight gain, the
/// COPD diary's exacerbation definition, PHQ-9 item 9 and a 5-point rise.
#[test]
fn patient_reported_scores_drive_the_bundled_packs() {
    let fired = |ts: &[alerting_rules::Transition]| -> Vec<String> {
        ts.iter()
            .filter(|t| t.kind == Fire)
            .map(|t| t.rule_id.clone())
            .collect()
    };
    let mut s = Sim::bundled(&["heart-failure"]);
    assert!(fired(&s.one(Metric::HfSymptomZone, 1.0, at(0))).is_empty());
    let ts = s.one(Metric::HfSymptomZone, 1.0, at(days(1)));
    assert_eq!(fired(&ts), ["hf.symptoms-yellow-zone"]);
    let ts = s.one(Metric::HfSymptomZone, 2.0, at(days(2)));
    assert_eq!(kind_of(&ts, "hf.symptoms-red-zone"), Some(Fire));

    // Breathless (a single answer) with +1 kg in 72 h.
    let mut s = Sim::bundled(&["heart-failure"]);
    s.one(Metric::BodyWeight, 80.0, at(0));
    let ts = s.one(Metric::HfBreathlessness, 1.0, at(days(1)));
    assert_eq!(
        kind_of(&ts, "hf.breathless-with-weight-gain"),
        Some(NoChange)
    );
    let ts = s.one(Metric::BodyWeight, 81.0, at(days(1) + 30));
    assert!(
        fired(&ts).contains(&"hf.breathless-with-weight-gain".to_string()),
        "{ts:#?}"
    );

    let mut s = Sim::bundled(&["copd"]);
    assert!(fired(&s.one(Metric::CopdMajorSymptoms, 2.0, at(0))).is_empty());
    let ts = s.one(Metric::CopdMajorSymptoms, 3.0, at(days(1)));
    assert_eq!(fired(&ts), ["copd.exacerbation-symptoms"]);
    s.one(Metric::MmrcGrade, 1.0, at(days(2)));
    let ts = s.one(Metric::MmrcGrade, 2.0, at(days(30)));
    assert_eq!(kind_of(&ts, "copd.mmrc-worse"), Some(Fire));

    // Mood applies to every plan.
    let mut s = Sim::bundled(&["hypertension"]);
    let ts = s.one(Metric::Phq9SelfHarm, 1.0, at(0));
    assert_eq!(
        format!("{:?}", get(&ts, "mood.phq9-self-harm").severity),
        "Critical"
    );
    s.one(Metric::Phq9Total, 6.0, at(days(1)));
    let ts = s.one(Metric::Phq9Total, 11.0, at(days(15)));
    let f = fired(&ts);
    assert!(
        f.contains(&"mood.phq9-worse".to_string()) && f.contains(&"mood.phq9-moderate".to_string()),
        "{f:?}"
    );
}
