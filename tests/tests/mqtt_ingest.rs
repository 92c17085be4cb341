//! End to end: real Mosquitto → the real gateway binary → a real SQLite file.

mod common;

use common::{wait_until, Gateway, Mosquitto};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn world(devices: &[(&str, &str)]) -> (tempfile::TempDir, Mosquitto, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let gw = Gateway::new(dir.path(), broker.port, devices, "");
    (dir, broker, gw)
}

fn row(gw: &Gateway, device: &str, metric: &str) -> (f64, String, String, i64) {
    gw.db()
        .query_row(
            "SELECT value, unit, loinc, measured_at FROM readings WHERE device_id = ?1 AND metric = ?2",
            [device, metric],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap_or_else(|e| panic!("no {metric} of {device}: {e}"))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// Every bundled profile's sample payload decodes to the exact values and units.
#[test]
fn every_profile_sample_decodes_exactly() {
    let (_d, broker, mut gw) = world(&[
        ("cuff-1", "p1"),
        ("scale-1", "p1"),
        ("gluco-1", "p2"),
        ("ox-1", "p2"),
        ("0024befffe804ff1", "p3"),
    ]);
    gw.start();
    broker.publish(
        "acme/bp/cuff-1",
        br#"{"measured_at":"2026-01-31T07:42:10Z","sys":16.0,"dia":11.0,"map":12.7,"pulse":71,"unit":"kPa","ihb":true,"motion":false}"#,
    );
    broker.publish("acme/scale/scale-1", br#"{"serial":"WS200","readings":[{"ts":1769845200,"weight":176.4,"unit":"lb","seq":311,"fat_pct":27.5}]}"#);
    broker.publish("acme/glucose/gluco-1", br#"{"time_ms":1769845200000,"glucose":{"value":5.4,"unit":"mmol/L"},"seq":1207,"meal":"fasting"}"#);
    broker.publish(
        "acme/oximeter/ox-1",
        br#"{"t":"2026-01-31T08:45:00+01:00","spo2":96,"pr":74,"pi":3.1}"#,
    );
    broker.publish(
        "rpm/senml/0024befffe804ff1",
        br#"[{"bn":"urn:dev:mac:0024befffe804ff1:","bt":1769845200,"n":"body_temperature","u":"[degF]","v":100.4}]"#,
    );
    wait_until("10 readings", T, || gw.readings() == 10);

    let (v, u, l, t) = row(&gw, "cuff-1", "systolic");
    assert!(close(v, 16.0 * 7.500_615_758), "{v}");
    assert_eq!(
        (u.as_str(), l.as_str(), t),
        ("mm[Hg]", "8480-6", 1_769_845_330_000)
    );
    let (v, _, l, _) = row(&gw, "cuff-1", "diastolic");
    assert!(close(v, 11.0 * 7.500_615_758) && l == "8462-4");
    let (v, u, l, _) = row(&gw, "cuff-1", "pulse_rate");
    assert_eq!((v, u.as_str(), l.as_str()), (71.0, "/min", "8867-4"));
    let (v, u, l, _) = row(&gw, "scale-1", "body_weight");
    assert!(
        close(v, 176.4 * 0.453_592_37) && u == "kg" && l == "29463-7",
        "{v}"
    );
    let (v, u, _, _) = row(&gw, "scale-1", "body_fat");
    assert_eq!((v, u.as_str()), (27.5, "%"));
    let (v, u, l, _) = row(&gw, "gluco-1", "blood_glucose");
    assert!(
        close(v, 5.4 * 18.016) && u == "mg/dL" && l == "41653-7",
        "{v}"
    );
    let (v, u, l, t) = row(&gw, "ox-1", "spo2");
    assert_eq!(
        (v, u.as_str(), l.as_str(), t),
        (96.0, "%", "59408-5", 1_769_845_500_000)
    );
    let (v, u, _, _) = row(&gw, "ox-1", "oximetry_pulse_rate");
    assert_eq!((v, u.as_str()), (74.0, "/min"));
    let (v, u, l, _) = row(&gw, "0024befffe804ff1", "body_temperature");
    assert!(close(v, 38.0) && u == "Cel" && l == "8310-5", "{v}");

    // The BP components are one measurement, with the annotations kept.
    let groups =
        gw.count("SELECT COUNT(DISTINCT group_id) FROM readings WHERE device_id = 'cuff-1'");
    assert_eq!(groups, 1);
    let ann: String = gw
        .db()
        .query_row(
            "SELECT annotations FROM readings WHERE device_id='cuff-1' AND metric='systolic'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(ann.contains("\"irregular_pulse\":\"true\""), "{ann}");
    assert_eq!(gw.stop().code(), Some(0));
}

/// Bad input of every kind is quarantined with its reason; the gateway keeps running.
#[test]
fn bad_input_is_quarantined_with_a_reason() {
    let (_d, broker, mut gw) = world(&[
        ("cuff-1", "patient-secret-17"),
        ("ox-1", "patient-secret-17"),
    ]);
    gw.start();
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "acme/bp/cuff-1",
            b"{\"sys\": 120, \"dia\":",
            "malformed_payload",
        ),
        (
            "acme/bp/cuff-1",
            br#"{"measured_at":"2026-01-31T07:42:10Z","sys":"high","dia":80,"unit":"mmHg"}"#,
            "schema_mismatch",
        ),
        (
            "acme/bp/cuff-1",
            br#"{"measured_at":"2026-01-31T07:43:10Z","dia":80,"unit":"mmHg"}"#,
            "schema_mismatch",
        ),
        (
            "acme/bp/cuff-1",
            br#"{"measured_at":"2026-01-31T07:44:10Z","sys":120,"dia":80,"unit":"psi"}"#,
            "unknown_unit",
        ),
        (
            "acme/bp/cuff-1",
            br#"{"measured_at":"2026-01-31T07:45:10Z","sys":120,"dia":80}"#,
            "missing_unit",
        ),
        (
            "acme/bp/cuff-1",
            br#"{"measured_at":"2026-01-31T07:46:10Z","sys":"NaN","dia":80,"unit":"mmHg"}"#,
            "special_value",
        ),
        (
            "acme/bp/cuff-1",
            br#"{"measured_at":"2026-01-31T07:47:10Z","sys":2047,"dia":80,"unit":"mmHg"}"#,
            "implausible_value",
        ),
        (
            "acme/oximeter/ox-9",
            br#"{"t":"2026-01-31T08:45:00Z","spo2":96,"pr":74}"#,
            "unknown_device",
        ),
        ("acme/bp/cuff-1", br#"[1,2,3]"#, "schema_mismatch"),
    ];
    for (topic, payload, _) in cases {
        broker.publish(topic, payload);
    }
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(300 * 1024));
    broker.publish("acme/bp/cuff-1", big.as_bytes());
    broker.publish(
        "acme/oximeter/ox-1",
        br#"{"t":"2026-01-31T08:46:00Z","spo2":97,"pr":70}"#,
    );
    wait_until("the good reading after the bad ones", T, || {
        gw.readings() == 2
    });
    wait_until("all quarantined", T, || {
        gw.count("SELECT COUNT(*) FROM quarantine") == cases.len() as i64 + 1
    });
    for reason in [
        "malformed_payload",
        "unknown_unit",
        "missing_unit",
        "special_value",
        "implausible_value",
        "unknown_device",
        "payload_too_large",
    ] {
        assert!(
            gw.quarantined(reason) >= 1,
            "no quarantine row for {reason}"
        );
    }
    assert_eq!(gw.quarantined("schema_mismatch"), 3);
    // Raw bytes are kept for re-processing; oversized payloads are cut to 64 KiB.
    let kept =
        gw.count("SELECT length(payload) FROM quarantine WHERE reason = 'payload_too_large'");
    assert_eq!(kept, 64 * 1024);
    assert!(gw.is_running());
    // No values or patient ids in the logs at info level.
    let log = gw.log();
    assert!(
        !log.contains("patient-secret-17") && !log.contains("2047") && !log.contains("ox-9"),
        "PHI in logs:\n{log}"
    );
    assert_eq!(gw.stop().code(), Some(0));
}

/// Killed after receiving but before committing: the broker redelivers, and
/// the reading is stored exactly once. Killed after the commit to the inbox
/// but before the PUBACK: redelivered, and deduplicated. Killed after the
/// inbox commit (and perhaps the PUBACK) but before normalization: the
/// entry waits in the inbox and becomes the reading at the next start.
#[test]
fn kill_9_around_the_commit_loses_and_duplicates_nothing() {
    for point in [
        "abort-before-commit",
        "abort-after-commit",
        "abort-before-normalize",
    ] {
        let (_d, broker, mut gw) = world(&[("ox-1", "p1")]);
        gw.start_with_env(&[("RPM_FAULT_INJECT", point)]);
        broker.publish(
            "acme/oximeter/ox-1",
            br#"{"t":"2026-01-31T08:46:00Z","spo2":97,"pr":70}"#,
        );
        let status = gw.wait_exit(T);
        assert!(
            !status.success(),
            "{point}: the fault injection should abort"
        );
        let in_inbox = if point == "abort-before-commit" { 0 } else { 1 };
        assert_eq!(gw.readings(), 0, "{point}");
        assert_eq!(gw.count("SELECT COUNT(*) FROM inbox"), in_inbox, "{point}");
        gw.start();
        wait_until("the reading", T, || gw.readings() == 2);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(gw.readings(), 2, "{point}: stored exactly once");
        assert_eq!(gw.count("SELECT COUNT(*) FROM inbox"), 0, "{point}");
        assert_eq!(gw.count("SELECT COUNT(*) FROM quarantine"), 0, "{point}");
        assert_eq!(gw.stop().code(), Some(0));
    }
}

/// Messages published while the gateway is down arrive after it restarts,
/// and a duplicate publish is stored once.
#[test]
fn persistent_session_and_duplicates() {
    let (_d, broker, mut gw) = world(&[("scale-1", "p1")]);
    gw.start();
    assert_eq!(gw.stop().code(), Some(0));
    let lines: Vec<String> = (0..50)
        .map(|i| {
            format!(
                r#"{{"readings":[{{"ts":{},"weight":{},"unit":"kg","seq":{i}}}]}}"#,
                1_769_845_200 + i * 60,
                80.0 + i as f64 / 10.0
            )
        })
        .collect();
    broker.publish_lines("acme/scale/scale-1", &lines);
    broker.publish_lines("acme/scale/scale-1", &lines[..10]); // the device resends
    gw.start();
    wait_until("50 readings", T, || gw.readings() == 50);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(gw.readings(), 50);
    assert_eq!(gw.stop().code(), Some(0));
}

/// Readings of an unknown device wait in quarantine and are re-processed
/// when the device is assigned with the CLI.
#[test]
fn assigning_a_device_reprocesses_its_quarantine() {
    let (_d, broker, mut gw) = world(&[]);
    gw.start();
    broker.publish(
        "acme/oximeter/ox-7",
        br#"{"t":"2026-01-31T08:46:00Z","spo2":97,"pr":70}"#,
    );
    wait_until("quarantine", T, || gw.quarantined("unknown_device") == 1);
    let out = gw.cli(&["devices", "assign", "ox-7", "patient-7"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-processed 1"));
    assert_eq!(
        gw.count("SELECT COUNT(*) FROM readings WHERE patient_id = 'patient-7'"),
        2
    );
    assert_eq!(
        gw.count("SELECT COUNT(*) FROM quarantine WHERE status = 'open'"),
        0
    );
    broker.publish(
        "acme/oximeter/ox-7",
        br#"{"t":"2026-01-31T09:46:00Z","spo2":95,"pr":72}"#,
    );
    wait_until("live reading of the assigned device", T, || {
        gw.readings() == 4
    });
    let out = gw.cli(&["devices", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("patient-7"));
    assert_eq!(gw.stop().code(), Some(0));
}

/// A broker restart: the gateway reconnects, and its session survives
/// (the broker persists it), so readings published meanwhile arrive.
#[test]
fn survives_a_broker_restart() {
    let (_d, mut broker, mut gw) = world(&[("ox-1", "p1")]);
    gw.start();
    broker.publish(
        "acme/oximeter/ox-1",
        br#"{"t":"2026-01-31T08:46:00Z","spo2":97,"pr":70}"#,
    );
    wait_until("first", T, || gw.readings() == 2);
    broker.stop();
    std::thread::sleep(Duration::from_millis(500));
    broker.restart();
    broker.publish(
        "acme/oximeter/ox-1",
        br#"{"t":"2026-01-31T09:46:00Z","spo2":96,"pr":71}"#,
    );
    wait_until("reading after the broker restart", T, || gw.readings() == 4);
    assert!(gw.is_running());
    assert_eq!(gw.stop().code(), Some(0));
}
