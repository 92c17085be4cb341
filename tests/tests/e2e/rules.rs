//! End to end: readings over real Mosquitto → the real gateway binary →
//! alerts, alert history and outbox events in the real SQLite file.

use crate::common;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use common::{wait_until, Gateway, Mosquitto, BIN};
use std::process::{Command, Output};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// `rpm-gateway rules {args}`: the offline rule-author commands.
fn rules_cmd(args: &[&str]) -> Output {
    Command::new(BIN).arg("rules").args(args).output().unwrap()
}

/// Fails the test with the command's stderr unless it succeeded.
fn assert_ok(out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn bp(broker: &Mosquitto, device: &str, at: DateTime<Utc>, sys: u32, dia: u32) {
    broker.publish(
        &format!("acme/bp/{device}"),
        format!(
            r#"{{"measured_at":"{}","sys":{sys},"dia":{dia},"pulse":70,"unit":"mmHg"}}"#,
            rfc(at)
        )
        .as_bytes(),
    );
}

fn alerts(gw: &Gateway, patient: &str) -> Vec<(String, String, bool)> {
    gw.alerts_of(patient)
}

fn a(rule: &str, status: &str, late: bool) -> (String, String, bool) {
    (rule.to_string(), status.to_string(), late)
}

fn alert_id(gw: &Gateway, patient: &str, rule: &str) -> String {
    gw.db()
        .query_row(
            "SELECT alert_id FROM alerts WHERE patient_id = ?1 AND rule_id = ?2",
            [patient, rule],
            |r| r.get(0),
        )
        .unwrap()
}

/// A heart-failure patient's weight gain (a week uploaded at once), a
/// hypertensive crisis that clears, a hypoglycaemia and a missed-readings
/// streak each produce exactly the expected alerts and events.
#[test]
fn clinical_scenarios_produce_exactly_the_expected_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let extra = r#"
[rules]
missing_interval = "300ms"
settle = "500ms"

[[patients]]
id = "p-hf"
care_plans = ["heart-failure"]
care_team = "north"

[[patients]]
id = "p-htn"
care_plans = ["hypertension"]

[[patients]]
id = "p-miss"
care_plans = ["hypertension"]
"#;
    let mut gw = Gateway::new(
        dir.path(),
        broker.port,
        &[
            ("scale-hf", "p-hf"),
            ("cuff-htn", "p-htn"),
            ("gluco-dm", "p-dm"),
            ("cuff-miss", "p-miss"),
        ],
        extra,
    );
    // Enrolment at run time, through the CLI.
    let out = gw.cli(&[
        "patients", "enrol", "p-dm", "--plan", "diabetes", "--team", "south",
    ]);
    assert_ok(&out);
    let out = gw.cli(&["patients", "enrol", "p-dm", "--plan", "diabetics"]);
    assert!(!out.status.success(), "an unknown plan is refused");
    gw.start();
    let now = Utc::now();

    // Heart failure: a week of weights uploaded at once; +1.2 kg in 24 h.
    let weights = [80.0, 80.1, 80.0, 80.2, 80.1, 81.3, 81.4];
    let records: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(i, kg)| {
            let ts = (now - TimeDelta::days(7 - i as i64)).timestamp();
            format!(
                r#"{{"ts":{ts},"weight":{kg},"unit":"kg","seq":{}}}"#,
                100 + i
            )
        })
        .collect();
    broker.publish(
        "acme/scale/scale-hf",
        format!(r#"{{"serial":"WS200","readings":[{}]}}"#, records.join(",")).as_bytes(),
    );
    // Hypertensive crisis, then two normal readings (hysteresis: two to clear).
    bp(&broker, "cuff-htn", now - TimeDelta::minutes(3), 185, 95);
    // Hypoglycaemia level 2.
    broker.publish(
        "acme/glucose/gluco-dm",
        format!(
            r#"{{"time_ms":{},"glucose":{{"value":50,"unit":"mg/dL"}},"seq":7}}"#,
            now.timestamp_millis()
        )
        .as_bytes(),
    );
    // Missed readings: the last blood pressure is 50 hours old.
    bp(&broker, "cuff-miss", now - TimeDelta::hours(50), 120, 80);

    wait_until("crisis alert", T, || {
        alerts(&gw, "p-htn") == vec![a("htn.crisis", "firing", false)]
    });
    bp(&broker, "cuff-htn", now - TimeDelta::minutes(2), 128, 80);
    bp(&broker, "cuff-htn", now - TimeDelta::minutes(1), 126, 78);
    wait_until("crisis resolved", T, || {
        alerts(&gw, "p-htn") == vec![a("htn.crisis", "resolved", false)]
    });
    wait_until("all alerts", T, || {
        gw.rules_caught_up()
            && alerts(&gw, "p-hf").len() == 1
            && alerts(&gw, "p-dm").len() == 1
            && alerts(&gw, "p-miss").len() == 1
    });
    // Let the missing-data timer run a few more times: nothing changes.
    std::thread::sleep(Duration::from_millis(1200));

    assert_eq!(
        alerts(&gw, "p-hf"),
        vec![a("hf.weight-gain-24h", "firing", true)]
    );
    assert_eq!(
        alerts(&gw, "p-dm"),
        vec![a("dm.hypo-level2", "firing", false)]
    );
    assert_eq!(
        alerts(&gw, "p-miss"),
        vec![a("adherence.no-vitals-2d", "firing", false)]
    );
    assert_eq!(gw.events_of("p-hf"), ["alert.fired"]);
    assert_eq!(gw.events_of("p-htn"), ["alert.fired", "alert.resolved"]);
    assert_eq!(gw.events_of("p-dm"), ["alert.fired"]);
    assert_eq!(gw.events_of("p-miss"), ["alert.fired"]);

    // The event body: rule version, limits, evidence with unit and LOINC, routing.
    let body: String = gw
        .db()
        .query_row(
            "SELECT payload FROM outbox WHERE patient_id = 'p-hf' AND event_type LIKE 'alert.%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["schema"], "rpm-gateway.event.v1");
    assert_eq!(v["data"]["rule"]["id"], "hf.weight-gain-24h");
    assert_eq!(v["data"]["rule"]["version"], 2);
    assert_eq!(v["data"]["care_team"], "north");
    assert_eq!(v["data"]["late"], true);
    assert_eq!(v["data"]["limits"]["limit"]["value"], 0.9);
    assert!(v["data"]["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["unit"] == "kg" && e["loinc"] == "29463-7"));

    // Acknowledge with a snooze through the CLI.
    let id = alert_id(&gw, "p-dm", "dm.hypo-level2");
    let out = gw.cli(&[
        "alerts", "ack", &id, "--by", "nurse-7", "--note", "called", "--snooze", "4h",
    ]);
    assert_ok(&out);
    assert_eq!(
        alerts(&gw, "p-dm"),
        vec![a("dm.hypo-level2", "acknowledged", false)]
    );
    assert_eq!(gw.events_of("p-dm"), ["alert.fired", "alert.acknowledged"]);
    let out = gw.cli(&["alerts", "show", &id]);
    let show = String::from_utf8_lossy(&out.stdout);
    assert!(
        show.contains("acknowledged by nurse-7") && show.contains("41653-7"),
        "{show}"
    );

    // The missed-readings streak ends with a reading: resolved.
    bp(&broker, "cuff-miss", Utc::now(), 121, 79);
    wait_until("missing resolved", T, || {
        alerts(&gw, "p-miss") == vec![a("adherence.no-vitals-2d", "resolved", false)]
    });
    assert_eq!(gw.events_of("p-miss"), ["alert.fired", "alert.resolved"]);

    let out = gw.cli(&["alerts", "list", "--status", "open", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    assert_eq!(gw.stop().code(), Some(0));
    // Every transition is in the history, every event id is unique.
    assert_eq!(gw.count("SELECT COUNT(*) FROM alert_history"), 7);
    assert_eq!(
        gw.count("SELECT COUNT(DISTINCT event_id) FROM outbox"),
        gw.count("SELECT COUNT(*) FROM outbox")
    );
    // No PHI at info level, and no failed evaluation on the way.
    let log = gw.log();
    assert!(!log.contains("p-hf") && !log.contains("p-dm"), "{log}");
    assert!(!log.contains("failed"), "{log}");
}

/// A rule evaluator that dies while the process lives on stops the gateway
/// with an error (its service manager restarts it) instead of leaving it
/// ingesting without alerting; after the restart the alert is raised.
#[test]
fn a_dead_rule_evaluator_stops_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let extra = "[[patients]]\nid = \"p1\"\ncare_plans = [\"hypertension\"]\n";
    let mut gw = Gateway::new(dir.path(), broker.port, &[("cuff-1", "p1")], extra);
    gw.start_with_env(&[("RPM_FAULT_INJECT", "panic-in-rules")]);
    bp(
        &broker,
        "cuff-1",
        Utc::now() - TimeDelta::minutes(2),
        190,
        100,
    );
    let status = gw.wait_exit(T);
    assert!(!status.success(), "the gateway stopped with an error");
    let log = gw.log();
    assert!(
        log.contains("the rule evaluator stopped unexpectedly"),
        "the gateway says which component stopped: {log}"
    );
    assert_eq!(gw.readings(), 3, "the readings were committed");
    gw.start();
    wait_until("evaluation caught up", T, || gw.rules_caught_up());
    assert_eq!(gw.alerts_of("p1"), vec![a("htn.crisis", "firing", false)]);
    gw.stop();
}

/// `kill -9` on either side of the rules commit: after restart the alert
/// exists exactly once, with exactly one `alert.fired` event.
#[test]
fn kill9_around_the_rules_commit_loses_and_doubles_nothing() {
    for (fault, alerts_at_crash) in [
        ("abort-before-rules-commit", 0),
        ("abort-after-rules-commit", 1),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start(dir.path());
        let extra = "[[patients]]\nid = \"p1\"\ncare_plans = [\"hypertension\"]\n";
        let mut gw = Gateway::new(dir.path(), broker.port, &[("cuff-1", "p1")], extra);
        gw.start_with_env(&[("RPM_FAULT_INJECT", fault)]);
        let now = Utc::now();
        bp(&broker, "cuff-1", now - TimeDelta::minutes(2), 190, 100);
        let status = gw.wait_exit(T);
        assert!(!status.success(), "{fault}: the gateway aborted");
        assert_eq!(gw.readings(), 3, "{fault}: the readings were committed");
        assert_eq!(gw.alerts_of("p1").len(), alerts_at_crash, "{fault}");

        gw.start();
        bp(&broker, "cuff-1", now - TimeDelta::minutes(1), 191, 101);
        wait_until("evaluation caught up", T, || {
            gw.readings() == 6 && gw.rules_caught_up()
        });
        assert_eq!(
            gw.alerts_of("p1"),
            vec![a("htn.crisis", "firing", false)],
            "{fault}: one alert, not lost, not doubled"
        );
        assert_eq!(gw.events_of("p1"), ["alert.fired"], "{fault}");
        assert_eq!(gw.stop().code(), Some(0));
    }
}

/// SIGHUP reloads the rule directory; a broken rule set is refused and the
/// old one keeps alerting.
#[test]
fn sighup_reloads_rules_and_refuses_a_broken_set() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let bundled = concat!(env!("CARGO_MANIFEST_DIR"), "/../alerting-rules/rules");
    for e in std::fs::read_dir(bundled).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, rules.join(p.file_name().unwrap())).unwrap();
    }
    let broker = Mosquitto::start(dir.path());
    let extra =
        "[rules]\ndir = \"rules\"\n\n[[patients]]\nid = \"p1\"\ncare_plans = [\"hypertension\"]\n";
    let mut gw = Gateway::new(dir.path(), broker.port, &[("cuff-1", "p1")], extra);
    gw.start();

    std::fs::write(
        rules.join("broken.toml"),
        "pack = \"broken\"\nversion = 1\n[[rule]]\nid = \"x\"\n",
    )
    .unwrap();
    gw.signal("HUP");
    wait_until("reload refused", T, || {
        gw.log().contains("new rule set refused")
    });
    assert!(gw.is_running());

    // Fix it, and lower the crisis limit to 170: the new set takes over.
    std::fs::remove_file(rules.join("broken.toml")).unwrap();
    let htn = std::fs::read_to_string(rules.join("hypertension.toml")).unwrap();
    std::fs::write(
        rules.join("hypertension.toml"),
        htn.replacen("limit = \"180 mm[Hg]\"", "limit = \"170 mm[Hg]\"", 1),
    )
    .unwrap();
    gw.signal("HUP");
    wait_until("reloaded", T, || gw.log().contains("rule set reloaded"));
    bp(&broker, "cuff-1", Utc::now(), 175, 90);
    wait_until("crisis at the new limit", T, || {
        gw.alerts_of("p1") == vec![a("htn.crisis", "firing", false)]
    });
    assert_eq!(gw.stop().code(), Some(0));
}

/// `rules check` and `rules test`, offline, as a rule author runs them.
#[test]
fn rules_check_and_test_work_offline() {
    let bundled = concat!(env!("CARGO_MANIFEST_DIR"), "/../alerting-rules/rules");
    let out = rules_cmd(&["check", bundled]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("rule set OK"));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "pack = \"bad\"\nversion = 1\n[[rule]]\nid = \"b\"\nversion = 1\nseverity = \"warning\"\nmessage = \"x\"\nsource = \"y\"\nthreshold = { metric = \"systolic\", op = \">\", limit = \"80 kg\" }\n",
    )
    .unwrap();
    let out = rules_cmd(&["check", &dir.path().display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:9:") && err.contains("threshold.limit"),
        "{err}"
    );

    let csv = dir.path().join("r.csv");
    std::fs::write(
        &csv,
        "patient,care_plan,metric,value,unit,measured_at\n\
         p1,hypertension,systolic,185,mmHg,2026-03-01T08:00:00Z\n\
         p1,hypertension,diastolic,95,mmHg,2026-03-01T08:00:00Z\n",
    )
    .unwrap();
    let csv = csv.display().to_string();
    let out = rules_cmd(&[
        "test",
        "--readings",
        &csv,
        "--until",
        "2026-03-04T09:00:00Z",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_ok(&out);
    assert!(
        text.contains("FIRE") && text.contains("htn.crisis"),
        "{text}"
    );
    assert!(text.contains("evidence: systolic 185"), "{text}");
    // Missing data up to --until: no reading for 3 days.
    assert!(text.contains("adherence.no-vitals-2d"), "{text}");
    let out = rules_cmd(&["test", "--json", "--readings", &csv]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["rule_id"], "htn.crisis");
    assert_eq!(lines[0]["kind"], "fire");
}

/// Run-time enrolment, overrides and care team through the CLI: validated
/// against the rule set, stored, audited.
#[test]
fn patients_cli_validates_and_keeps_run_time_changes() {
    let dir = tempfile::tempdir().unwrap();
    let extra = "[[patients]]\nid = \"p1\"\ncare_plans = [\"hypertension\"]\n";
    let gw = Gateway::new(dir.path(), 1, &[], extra);
    let ok = |args: &[&str]| {
        let out = gw.cli(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let out = gw.cli(&[
        "patients",
        "set-overrides",
        "p1",
        r#"{"htn.crisis": {"limits": {"systolic.limit": "170 kg"}}}"#,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("systolic.limit"));
    let out = gw.cli(&[
        "patients",
        "set-overrides",
        "p1",
        r#"{"htn.crysis": {"disabled": true}}"#,
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown rule `htn.crysis`"));
    ok(&[
        "patients",
        "set-overrides",
        "p1",
        r#"{"htn.crisis": {"limits": {"systolic.limit": "170 mmHg"}}}"#,
    ]);
    ok(&["patients", "enrol", "p1", "--plan", "heart-failure"]);
    ok(&["patients", "set-team", "p1", "north"]);
    let list = ok(&["patients", "list", "--json"]);
    let p: serde_json::Value = serde_json::from_str(list.lines().next().unwrap()).unwrap();
    assert_eq!(p["care_plans"], serde_json::json!(["heart-failure"]));
    assert_eq!(p["care_team"], "north");
    assert_eq!(
        p["overrides"]["htn.crisis"]["limits"]["systolic.limit"],
        "170 mmHg"
    );
    assert_eq!(p["origin"], "cli");
    assert_eq!(
        gw.count("SELECT COUNT(*) FROM audit_log WHERE actor = 'cli' AND patient_id = 'p1'"),
        3
    );
}

/// After a restart, the time the gateway was down (from the `runs`
/// heartbeats) is not counted as patient silence: no false "no data" alert.
#[test]
fn gateway_downtime_is_not_a_missed_readings_streak() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let extra = "[rules]\nmissing_interval = \"200ms\"\n\n[[patients]]\nid = \"p1\"\ncare_plans = [\"hypertension\"]\n";
    let mut gw = Gateway::new(dir.path(), broker.port, &[("cuff-1", "p1")], extra);
    // A previous run that ended 40 hours ago.
    let out = gw.cli(&["patients", "list"]);
    assert!(out.status.success());
    let now = Utc::now();
    let db = rusqlite::Connection::open(&gw.db).unwrap();
    db.execute(
        "INSERT INTO runs(started_at, heartbeat_at, stopped_at) VALUES (?1, ?2, NULL)",
        [
            (now - TimeDelta::hours(70)).timestamp_millis(),
            (now - TimeDelta::hours(40)).timestamp_millis(),
        ],
    )
    .unwrap();
    drop(db);
    gw.start();
    // The last reading before the outage, delivered now: 50 h old, of which
    // 40 h were the gateway's outage.
    bp(&broker, "cuff-1", now - TimeDelta::hours(50), 120, 80);
    wait_until("evaluated", T, || {
        gw.readings() == 3 && gw.rules_caught_up()
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        gw.alerts_of("p1"),
        vec![],
        "10 h of real silence is not 2 days"
    );
    assert_eq!(gw.stop().code(), Some(0));
}

fn bp_json(at: DateTime<Utc>, sys: u32, dia: u32) -> String {
    format!(
        r#"{{"measured_at":"{}","sys":{sys},"dia":{dia},"pulse":70,"unit":"mmHg"}}"#,
        rfc(at)
    )
}

/// A cuff back after a week offline uploads its memory: message by message
/// with pauses (as BLE cuffs and cellular hubs do), or as one burst. Neither
/// raises a missing-data alert, let alone a notification: the patient's
/// input is judged only once it has settled (`rules.settle`). A patient
/// truly silent for 3 days still gets each missing-data alert exactly once.
#[test]
fn uploads_in_progress_raise_no_missing_data_alert() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let mut extra = String::from("[rules]\nmissing_interval = \"100ms\"\nsettle = \"1s\"\n\n");
    for p in ["p-back", "p-burst", "p-quiet"] {
        extra.push_str(&format!(
            "[[patients]]\nid = \"{p}\"\ncare_plans = [\"hypertension\"]\n"
        ));
    }
    let mut gw = Gateway::new(
        dir.path(),
        broker.port,
        &[
            ("cuff-back", "p-back"),
            ("cuff-burst", "p-burst"),
            ("cuff-quiet", "p-quiet"),
        ],
        &extra,
    );
    gw.start();
    let now = Utc::now();
    let week: Vec<DateTime<Utc>> = (0..14)
        .map(|i| now - TimeDelta::days(7) + TimeDelta::hours(12 * i) + TimeDelta::minutes(5))
        .collect();
    // Truly silent: the last reading is 3 days and an hour old.
    bp(&broker, "cuff-quiet", now - TimeDelta::hours(73), 124, 79);
    // One burst: the week back to back.
    let lines: Vec<String> = week.iter().map(|t| bp_json(*t, 124, 79)).collect();
    broker.publish_lines("acme/bp/cuff-burst", &lines);
    // Message by message, oldest first, with pauses the evaluator sees.
    for t in &week {
        bp(&broker, "cuff-back", *t, 124, 79);
        std::thread::sleep(Duration::from_millis(150));
    }
    wait_until("quiet's alerts", T, || gw.alerts_of("p-quiet").len() == 2);
    wait_until("everything evaluated", T, || {
        gw.readings() == 3 * 29 && gw.rules_caught_up()
    });
    // Settled, and the timer has run many times since.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(gw.alerts_of("p-back"), vec![], "message by message");
    assert_eq!(gw.alerts_of("p-burst"), vec![], "one burst");
    assert_eq!(
        gw.alerts_of("p-quiet"),
        vec![
            a("adherence.no-data-3d", "firing", false),
            a("adherence.no-vitals-2d", "firing", false)
        ]
    );
    assert_eq!(gw.events_of("p-quiet"), ["alert.fired", "alert.fired"]);
    assert_eq!(gw.events_of("p-back"), Vec::<String>::new());
    assert_eq!(gw.events_of("p-burst"), Vec::<String>::new());
    assert_eq!(gw.stop().code(), Some(0));
}

/// `alerts burden` and `rules what-if` on a real store: the burden per care
/// team and rule; the stored readings replayed through the bundled rules
/// raise what was raised, through a candidate with a higher crisis limit
/// fewer alerts (and say for whom); and the what-if writes nothing.
#[test]
fn alert_burden_and_what_if_replay_on_a_real_store() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let extra = "[[patients]]\nid = \"p-n\"\ncare_plans = [\"hypertension\"]\ncare_team = \"north\"\n\n\
                 [[patients]]\nid = \"p-s\"\ncare_plans = [\"hypertension\"]\ncare_team = \"south\"\n";
    let mut gw = Gateway::new(
        dir.path(),
        broker.port,
        &[("cuff-n", "p-n"), ("cuff-s", "p-s")],
        extra,
    );
    gw.start();
    let now = Utc::now();
    bp(&broker, "cuff-n", now - TimeDelta::minutes(5), 185, 95);
    bp(&broker, "cuff-s", now - TimeDelta::minutes(5), 186, 96);
    wait_until("both crises", T, || {
        gw.alerts_of("p-n").len() == 1 && gw.alerts_of("p-s").len() == 1
    });
    // North's clears by itself (noise by the report's measure); south's is
    // acknowledged.
    bp(&broker, "cuff-n", now - TimeDelta::minutes(4), 128, 80);
    bp(&broker, "cuff-n", now - TimeDelta::minutes(3), 126, 78);
    let id = alert_id(&gw, "p-s", "htn.crisis");
    assert_ok(&gw.cli(&["alerts", "ack", &id, "--by", "nurse-7"]));
    wait_until("north resolved", T, || {
        gw.alerts_of("p-n") == vec![a("htn.crisis", "resolved", false)]
    });
    assert_eq!(gw.stop().code(), Some(0));

    let out = gw.cli(&["alerts", "burden", "--json"]);
    assert_ok(&out);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let teams = r["teams"].as_array().unwrap();
    assert_eq!(teams.len(), 2, "{r}");
    assert_eq!(teams[0]["care_team"], "north");
    assert_eq!(teams[0]["rules"][0]["rule_id"], "htn.crisis");
    assert_eq!(teams[0]["rules"][0]["alerts"], 1);
    assert_eq!(teams[0]["rules"][0]["notified"], 1);
    assert_eq!(
        teams[0]["rules"][0]["resolved_unacknowledged_within_1h"],
        1.0
    );
    assert_eq!(teams[1]["care_team"], "south");
    assert_eq!(teams[1]["rules"][0]["acknowledged"], 1);
    let out = gw.cli(&["alerts", "burden", "--care-team", "south"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("care team south") && !text.contains("care team north"),
        "{text}"
    );

    // The bundled rules as the candidate: the replay raises what was raised.
    let bundled = concat!(env!("CARGO_MANIFEST_DIR"), "/../alerting-rules/rules");
    let db_before = std::fs::read(&gw.db).unwrap();
    let out = gw.cli(&["rules", "what-if", "--rules", bundled, "--json"]);
    assert_ok(&out);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["readings"], 12, "{r}");
    let crisis = r["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["rule_id"] == "htn.crisis")
        .unwrap()
        .clone();
    assert_eq!(
        (crisis["raised"].clone(), crisis["candidate"].clone()),
        (2.into(), 2.into()),
        "{r}"
    );
    assert_eq!(r["gained"], serde_json::json!([]), "{r}");
    assert_eq!(r["lost"], serde_json::json!([]), "{r}");

    // A candidate with the crisis limit at 190: both crises are lost.
    let cand = dir.path().join("candidate");
    std::fs::create_dir(&cand).unwrap();
    for e in std::fs::read_dir(bundled).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(
            cand.join(p.file_name().unwrap()),
            text.replacen("limit = \"180 mm[Hg]\"", "limit = \"190 mm[Hg]\"", 1),
        )
        .unwrap();
    }
    let out = gw.cli(&[
        "rules",
        "what-if",
        "--rules",
        cand.to_str().unwrap(),
        "--patient",
        "p-n",
    ]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("patients who would lose alerts"), "{text}");
    assert!(text.contains("p-n htn.crisis: 1 -> 0"), "{text}");
    assert!(!text.contains("p-s"), "{text}");
    assert_eq!(
        std::fs::read(&gw.db).unwrap(),
        db_before,
        "what-if writes nothing"
    );
}
