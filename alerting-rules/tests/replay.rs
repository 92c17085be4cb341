//! The offline replay tool: input parsers, replay, printable output.

use alerting_rules::input::{parse_csv, parse_json_lines};
use alerting_rules::{replay, replay_with, AlertEvent, ReplayOptions, RuleSet, TransitionKind};
use chrono::{TimeZone, Utc};

const CSV: &str = "\
# patient, plans, metric, value, unit, times
patient,care_plan,metric,value,unit,measured_at,received_at
p1,hypertension,systolic,185,mmHg,2025-03-01T08:00:00Z,
p1,hypertension,diastolic,95,mmHg,2025-03-01T08:00:00Z,
p1,hypertension,systolic,120,mmHg,2025-03-01T09:00:00Z,
p1,hypertension,diastolic,80,mmHg,2025-03-01T09:00:00Z,
p1,hypertension,systolic,118,mmHg,2025-03-01T10:00:00Z,
p1,hypertension,diastolic,78,mmHg,2025-03-01T10:00:00Z,
p2,heart-failure;copd,body_weight,176,lb,2025-03-01T07:00:00Z,
p2,heart-failure;copd,body_weight,80.9,kg,2025-03-02T07:00:00Z,2025-03-02T07:01:00Z
";

#[test]
fn csv_replay_fires_and_resolves() {
    let rs = parse_csv(CSV).unwrap();
    assert_eq!(rs.len(), 8);
    assert_eq!(rs[6].care_plans, vec!["heart-failure", "copd"]);
    assert!(
        (rs[6].value - 79.832_257).abs() < 1e-5,
        "lb converted to kg"
    );
    let set = RuleSet::bundled().unwrap();
    let events = replay(&set, rs, None);
    let summary: Vec<(TransitionKind, &str, &str)> = events
        .iter()
        .map(|e| (e.kind, e.rule_id.as_str(), e.patient_id.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (TransitionKind::Fire, "htn.crisis", "p1"),
            (TransitionKind::Resolve, "htn.crisis", "p1"),
            (TransitionKind::Fire, "hf.weight-gain-24h", "p2"),
        ],
        "{events:#?}"
    );
    let line = events[0].to_string();
    assert!(line.starts_with("2025-03-01T08:00:00Z FIRE    critical htn.crisis patient=p1 v1: Hypertensive crisis range: systolic 185 mmHg > 180 mmHg"), "{line}");
    let json = events[2].to_json_line();
    let back: AlertEvent = serde_json::from_str(&json).unwrap();
    assert_eq!(back, events[2]);
    assert!(json.contains("\"kind\":\"fire\"") && !json.contains('\n'));
}

#[test]
fn replay_ticks_missing_data_until_the_end() {
    let rs = parse_json_lines(
        r#"{"patient":"p1","care_plan":"hypertension","metric":"systolic","value":120,"unit":"mmHg","measured_at":"2025-03-01T08:00:00Z"}

{"patient":"p1","care_plan":"hypertension","metric":"diastolic","value":80,"unit":"mm[Hg]","measured_at":"2025-03-01T08:00:00Z","reading_id":"d1"}"#,
    )
    .unwrap();
    assert_eq!(rs[1].reading_id, "d1");
    assert_eq!(rs[0].reading_id, "line-1");
    let set = RuleSet::bundled().unwrap();
    let until = Utc.with_ymd_and_hms(2025, 3, 5, 0, 0, 0).unwrap();
    let events = replay(&set, rs.clone(), Some(until));
    let fired: Vec<(TransitionKind, &str, String)> = events
        .iter()
        .map(|e| {
            (
                e.kind,
                e.rule_id.as_str(),
                e.at.format("%d %H:%M").to_string(),
            )
        })
        .collect();
    // The 2-day rule reminds again after its 24 h re-notify interval.
    assert_eq!(
        fired,
        vec![
            (
                TransitionKind::Fire,
                "adherence.no-vitals-2d",
                "03 08:00".to_string()
            ),
            (
                TransitionKind::Update,
                "adherence.no-vitals-2d",
                "04 08:00".to_string()
            ),
            (
                TransitionKind::Fire,
                "adherence.no-data-3d",
                "04 08:00".to_string()
            ),
        ]
    );

    // Simulated gateway downtime shifts the missing-data alert, never hides it.
    let opts = ReplayOptions {
        gateway_downtime: vec![(
            Utc.with_ymd_and_hms(2025, 3, 2, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2025, 3, 2, 6, 0, 0).unwrap(),
        )],
        ..Default::default()
    };
    let events = replay_with(&set, rs, Some(until), &opts);
    assert_eq!(events[0].at.format("%d %H:%M").to_string(), "03 14:00");
}

#[test]
fn late_rows_in_replay_are_flagged() {
    let csv = "patient,care_plan,metric,value,unit,measured_at,received_at\n\
p1,hypertension,systolic,120,mmHg,2025-03-01T10:00:00Z,2025-03-01T10:00:00Z\n\
p1,hypertension,systolic,190,mmHg,2025-03-01T08:00:00Z,2025-03-01T10:05:00Z\n";
    let events = replay(&RuleSet::bundled().unwrap(), parse_csv(csv).unwrap(), None);
    assert_eq!(events.len(), 1);
    assert!(
        events[0].late && events[0].to_string().ends_with("[late]"),
        "{}",
        events[0]
    );
}

#[test]
fn input_errors_name_every_bad_line() {
    let csv = "patient,care_plan,metric,value,unit,measured_at\n\
p1,hypertension,weight,80,kg,2025-03-01T08:00:00Z\n\
p1,hypertension,body_weight,80,,2025-03-01T08:00:00Z\n\
p1,hypertension,body_weight,80,kg,yesterday\n\
p1,hypertension,body_weight,80,kg\n\
p1,hypertension,body_weight,80,kg,2025-03-01T08:00:00Z\n";
    let errs = parse_csv(csv).unwrap_err().0;
    let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![2, 3, 4, 5], "{errs:#?}");
    assert!(errs[0].message.contains("unknown metric"));
    assert!(
        errs[1].message.contains("needs one") || errs[1].message.contains("no unit"),
        "{}",
        errs[1]
    );
    assert!(parse_csv("patient,value\n").is_err(), "missing columns");
    let errs = parse_json_lines("{\"patient\":\"p\",\"metric\":\"spo2\",\"value\":\"x\",\"measured_at\":\"2025-03-01T08:00:00Z\"}").unwrap_err();
    assert_eq!(errs.0[0].line, 1);
    assert!(errs.0[0].message.starts_with("value"), "{}", errs.0[0]);
}

/// A week of stored readings that arrive in one upload (several readings
/// share one `received_at`) raises no missing-data event; a patient truly
/// silent for 3 days gets each missing-data alert exactly once.
#[test]
fn an_upload_sharing_one_arrival_time_is_not_silence() {
    let mut csv = String::from("patient,care_plan,metric,value,unit,measured_at,received_at\n");
    let upload = Utc.with_ymd_and_hms(2025, 3, 8, 9, 0, 0).unwrap();
    for d in 0..7 {
        for h in [7, 19] {
            let m = Utc.with_ymd_and_hms(2025, 3, 1 + d, h, 0, 0).unwrap();
            for (metric, v) in [("systolic", 124), ("diastolic", 79)] {
                csv.push_str(&format!(
                    "back,hypertension,{metric},{v},mmHg,{},{}\n",
                    m.to_rfc3339(),
                    upload.to_rfc3339()
                ));
            }
        }
    }
    // Truly silent: one reading on day 0, received then.
    let first = Utc.with_ymd_and_hms(2025, 3, 1, 7, 0, 0).unwrap();
    for (metric, v) in [("systolic", 124), ("diastolic", 79)] {
        csv.push_str(&format!(
            "quiet,hypertension,{metric},{v},mmHg,{},{}\n",
            first.to_rfc3339(),
            first.to_rfc3339()
        ));
    }
    let rs = parse_csv(&csv).unwrap();
    let set = RuleSet::bundled().unwrap();
    let until = upload + chrono::TimeDelta::hours(6);
    let events = replay(&set, rs.clone(), Some(until));
    let missing = |p: &str| -> Vec<(TransitionKind, String)> {
        events
            .iter()
            .filter(|e| e.patient_id == p && e.rule_id.starts_with("adherence."))
            // Re-notifications of a lasting silence are updates, not new alerts.
            .filter(|e| e.kind != TransitionKind::Update)
            .map(|e| (e.kind, e.rule_id.clone()))
            .collect()
    };
    assert_eq!(missing("back"), vec![], "{events:#?}");
    let mut quiet = missing("quiet");
    quiet.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        quiet,
        vec![
            (TransitionKind::Fire, "adherence.no-data-3d".to_string()),
            (TransitionKind::Fire, "adherence.no-vitals-2d".to_string()),
        ]
    );
    // Without an end time the replay still judges the upload once settled.
    let events = replay(&set, rs, None);
    assert!(
        events
            .iter()
            .all(|e| e.patient_id != "back" || !e.rule_id.starts_with("adherence.")),
        "{events:#?}"
    );
}
