//! End to end: real Mosquitto → the real gateway binary → a real SQLite file.

use crate::common;

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
    let kept = gw.count(
        "SELECT length(p.payload) FROM quarantine q JOIN quarantine_payloads p ON p.digest = q.payload_digest
         WHERE q.reason = 'payload_too_large'",
    );
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

/// Another process using the store beside the running gateway (a CLI
/// command, this test's own queries, the `sqlite3` shell) must never take
/// itself for the store's last user: it would delete the WAL on closing,
/// the gateway would go on committing into an unlinked file, and a
/// `kill -9` would lose every reading acknowledged since.
#[test]
fn readings_committed_after_a_command_beside_the_gateway_survive_kill_9() {
    let (dir, broker, mut gw) = world(&[("ox-1", "p1")]);
    gw.start();
    let wal = dir.path().join("rpm.db-wal");
    for (i, t) in ["08:46", "08:47", "08:48"].iter().enumerate() {
        broker.publish(
            "acme/oximeter/ox-1",
            format!(r#"{{"t":"2026-01-31T{t}:00Z","spo2":97,"pr":70}}"#).as_bytes(),
        );
        let want = 2 * (i as i64 + 1);
        wait_until("the reading", T, || gw.readings() == want);
        // A command of the gateway's own, and another program (Python's
        // sqlite3, read-write, as the `sqlite3` shell or a backup script
        // would open it), each opening and closing the store.
        let out = gw.cli(&["forward", "status"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        common::succeeded(
            std::process::Command::new("python3")
                .args([
                    "-c",
                    "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('SELECT COUNT(*) FROM readings').fetchone(); c.close()",
                ])
                .arg(dir.path().join("rpm.db")),
        );
        assert!(
            wal.exists(),
            "the WAL was taken from under the running gateway"
        );
    }
    gw.kill9();
    assert_eq!(gw.readings(), 6, "every committed reading survives kill -9");
    drop(broker);
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

/// Bytes of the store's files (database and WAL).
fn store_bytes(gw: &Gateway) -> u64 {
    let wal = gw.db.with_extension("db-wal");
    [&gw.db, &wal]
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// One SenML pack of thousands of tiny invalid records (two kinds of
/// refusal: implausible values, unmapped names; and valid ones) costs a
/// bounded amount: its bytes are kept once, each kind of refusal is
/// one row with a count, the store grows by well under 1 MiB (the stated
/// bound: 64 KiB of payload plus at most 64 + number-of-reasons rows whose
/// text stays under 64 KiB), and a reading right behind it is committed
/// within the normal latency. Assigning the unknown device re-processes its
/// row: every one of its measurements becomes readings.
#[test]
fn an_amplification_pack_costs_a_bounded_amount_and_delays_nothing() {
    let (_d, broker, mut gw) = world(&[("pack-1", "p1"), ("cuff-1", "p1")]);
    gw.start();
    // A first reading settles the store's files (schema, WAL) before measuring.
    broker.publish(
        "rpm/senml/cuff-1",
        br#"[{"bt":1780000000,"n":"spo2","v":97}]"#,
    );
    wait_until("the first reading", T, || gw.readings() == 1);
    std::thread::sleep(Duration::from_millis(300));
    let before = store_bytes(&gw);

    let mut recs = Vec::new();
    for i in 0..1500 {
        recs.push(format!(r#"{{"n":"spo2","v":500,"t":-{}}}"#, i + 10));
    }
    for i in 0..1500 {
        recs.push(format!(r#"{{"n":"mood","v":3,"t":-{}}}"#, i + 2000));
    }
    for i in 0..500 {
        recs.push(format!(r#"{{"n":"spo2","v":97,"t":-{}}}"#, i + 5000));
    }
    let pack = format!("[{}]", recs.join(","));
    assert!(pack.len() > 64 * 1024, "{}", pack.len());
    broker.publish("rpm/senml/pack-1", pack.as_bytes());
    let published = std::time::Instant::now();
    broker.publish(
        "rpm/senml/cuff-1",
        br#"[{"bt":1780000060,"n":"spo2","v":96}]"#,
    );
    wait_until("the reading behind the pack", T, || {
        gw.count("SELECT COUNT(*) FROM readings WHERE device_id = 'cuff-1'") == 2
    });
    let latency = published.elapsed();
    assert!(latency < Duration::from_secs(2), "{latency:?}");
    wait_until("the pack quarantined", T, || {
        gw.count("SELECT COALESCE(SUM(count), 0) FROM quarantine") == 3000
    });
    assert_eq!(
        gw.readings(),
        502,
        "the pack's 500 valid records are stored"
    );

    let rows: Vec<(String, Option<String>, i64, Option<String>)> = {
        let db = gw.db();
        let mut q = db
            .prepare(
                "SELECT reason, device_id, count, measurement_indexes FROM quarantine ORDER BY id",
            )
            .unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(rows.len(), 2, "{rows:?}");
    let find = |reason: &str| rows.iter().find(|r| r.0 == reason).unwrap().clone();
    assert_eq!(find("implausible_value").2, 1500);
    assert_eq!(find("implausible_value").3.as_deref(), Some("0-1499"));
    assert_eq!(find("unmapped_field").2, 1500);
    // The payload is kept once, whatever the number of rows.
    assert_eq!(gw.count("SELECT COUNT(*) FROM quarantine_payloads"), 1);
    assert_eq!(
        gw.count("SELECT SUM(length(payload)) FROM quarantine_payloads"),
        64 * 1024
    );
    assert_eq!(gw.count("SELECT SUM(length(payload)) FROM quarantine"), 0);
    let grown = store_bytes(&gw).saturating_sub(before);
    eprintln!("amplification pack: the store grew by {grown} bytes; the reading behind it took {latency:?}");
    assert!(grown < 1024 * 1024, "the store grew by {grown} bytes");

    // A pack of a device nobody assigned (refused at commit, in the store):
    // one entry; assigning the device re-processes every measurement of it.
    let recs: Vec<String> = (0..300)
        .map(|i| format!(r#"{{"n":"spo2","v":97,"t":-{}}}"#, i + 10))
        .collect();
    broker.publish("rpm/senml/ox-7", format!("[{}]", recs.join(",")).as_bytes());
    wait_until("the unknown device's pack", T, || {
        gw.count("SELECT COALESCE(SUM(count), 0) FROM quarantine WHERE device_id = 'ox-7'") == 300
    });
    assert_eq!(
        gw.count("SELECT COUNT(*) FROM quarantine WHERE device_id = 'ox-7'"),
        1
    );
    let out = gw.cli(&["devices", "assign", "ox-7", "patient-7"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("re-processed 300"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        gw.count("SELECT COUNT(*) FROM readings WHERE patient_id = 'patient-7'"),
        300
    );
    assert_eq!(gw.count("SELECT COUNT(*) FROM quarantine_payloads"), 2);
    assert_eq!(
        gw.count("SELECT COUNT(*) FROM quarantine WHERE device_id = 'ox-7' AND status = 'open'"),
        0
    );
    assert!(gw.is_running());
    assert_eq!(gw.stop().code(), Some(0));
}

/// A message larger than `max_packet_bytes` (16 MiB) on MQTT 3.1.1 and 5:
/// acknowledged and quarantined (`payload_too_large`, its size, topic and
/// first 64 KiB), and the 100 messages behind it are stored. A client that
/// refused it would reconnect for ever (3.1.1: the broker sends it first
/// again) or never see it (5: the broker drops what exceeds the client's
/// maximum packet size).
#[test]
fn an_oversized_message_is_quarantined_and_what_follows_flows() {
    for protocol in ["3.1.1", "5"] {
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start_unlimited(dir.path());
        let extra = format!("protocol = \"{protocol}\"\nsession_expiry = \"1h\"\n");
        let mut gw = Gateway::new(dir.path(), broker.port, &[("ox-1", "p1")], "");
        // The protocol belongs to [sources.mqtt], which Gateway::new writes first.
        let text = std::fs::read_to_string(&gw.config).unwrap().replace(
            "reconnect_max_backoff = \"1s\"\n",
            &format!("reconnect_max_backoff = \"1s\"\n{extra}"),
        );
        std::fs::write(&gw.config, text).unwrap();
        gw.start();
        let big = vec![b'x'; 17 * 1024 * 1024];
        broker.publish("acme/oximeter/ox-1", &big);
        let lines: Vec<String> = (0..100)
            .map(|i| {
                format!(
                    r#"{{"t":"2026-01-31T08:{:02}:{:02}Z","spo2":97,"pr":70}}"#,
                    i / 60,
                    i % 60
                )
            })
            .collect();
        broker.publish_lines("acme/oximeter/ox-1", &lines);
        wait_until(&format!("{protocol}: the 100 messages behind"), T, || {
            gw.readings() == 200
        });
        wait_until(
            &format!("{protocol}: the oversized one quarantined"),
            T,
            || gw.quarantined("payload_too_large") == 1,
        );
        let (origin, size, kept, detail): (String, i64, i64, String) = gw
            .db()
            .query_row(
                "SELECT q.origin, p.size, length(p.payload), q.detail FROM quarantine q
                 JOIN quarantine_payloads p ON p.digest = q.payload_digest",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(origin, "acme/oximeter/ox-1");
        assert_eq!((size, kept), (17 * 1024 * 1024, 64 * 1024));
        assert!(detail.contains(&(17 * 1024 * 1024).to_string()), "{detail}");
        // One connection throughout: the message did not make it reconnect.
        assert_eq!(
            gw.log().matches("mqtt connection lost").count(),
            0,
            "{protocol}"
        );
        assert_eq!(gw.stop().code(), Some(0), "{protocol}");
    }
}

/// A source that keeps losing its connection (here another client with the
/// gateway's id takes it over, again and again) is reported by `/readyz`
/// and by metrics, although it is "connected" most of the time.
#[test]
fn readiness_reports_a_source_reconnecting_in_a_loop() {
    use common::api_client::{api_config, start_with_api, Api};
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let mut gw = Gateway::new(dir.path(), broker.port, &[], &api_config(""));
    let port = start_with_api(&mut gw);
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        cacert: None,
    };
    wait_until("ready", T, || {
        api.request("GET", "/readyz", None, None).status == 200
    });
    let id = format!("gw-test-{}", broker.port);
    let in_loop = || {
        let r = api.request("GET", "/readyz", None, None);
        r.status == 503 && r.text().contains("reconnecting in a loop")
    };
    let mut takeovers = 0;
    while !in_loop() {
        assert!(
            takeovers < 10,
            "no loop reported after {takeovers} takeovers"
        );
        // Each time the gateway is back, another client takes its id.
        wait_until("the gateway to reconnect", T, || {
            api.request("GET", "/readyz", None, None).json()["mqtt"]["connected"] == true
        });
        broker.publish_as(&id, "other/topic", b"x");
        takeovers += 1;
    }
    assert!(takeovers >= 5, "{takeovers}");
    let r = api.request("GET", "/readyz", None, None);
    let body = r.json();
    assert_eq!(body["mqtt"]["reconnect_loop"], true, "{body}");
    assert!(
        body["reasons"]
            .to_string()
            .contains("reconnecting in a loop"),
        "{body}"
    );
    let m = api.request("GET", "/metrics", None, None).text();
    assert!(m.contains("rpm_mqtt_reconnect_loop 1"), "{m}");
    assert!(!m.contains("rpm_mqtt_connection_losses_total 0\n"), "{m}");
    assert_eq!(gw.stop().code(), Some(0));
}

/// A small tmpfs of our own, unmounted on drop; None where mounting is not
/// possible (not root, no mount namespace privileges).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }

    /// Keeps the file system full until [`KeepFull::stop`]: tops it up
    /// every 20 ms, since the gateway gives space back when it can (its
    /// WAL is checkpointed and cut back when the writer is idle).
    fn keep_full(&self) -> KeepFull {
        let path = self.0.join("filler");
        fill(&path);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (path, stop) = (path.clone(), stop.clone());
            move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    fill(&path);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        KeepFull { path, stop, thread }
    }
}

/// A file system kept full by [`Tmpfs::keep_full`].
struct KeepFull {
    path: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl KeepFull {
    /// Stops topping up and gives the space back.
    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap();
        std::fs::remove_file(&self.path).unwrap();
    }
}

/// Writes (appends to) `path` until the file system is full.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.write_all(&[0u8; 512]);
    while f.write_all(&[0u8; 1]).is_ok() {}
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Lines the gateway logged after the first `from` bytes of its log.
fn log_lines_since(gw: &Gateway, from: usize) -> Vec<String> {
    gw.log()
        .get(from..)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A full disk, while running and at start (on a small tmpfs): the gateway
/// stays up, acknowledges nothing, reports not ready with the reason, logs a
/// bounded number of lines, and ingests everything once space returns,
/// without a restart. Started on a full disk it serves health and metrics in
/// a degraded mode instead of exiting.
#[test]
fn a_full_disk_pauses_ingestion_and_it_resumes_when_space_returns() {
    use common::api_client::{api_config, Api};
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("disk"), "16m") else {
        eprintln!(
            "SKIPPED a_full_disk_pauses_ingestion_and_it_resumes_when_space_returns: \
             cannot mount a tmpfs here (needs root); CI runs it as root"
        );
        return;
    };
    let broker = Mosquitto::start(dir.path());
    // A 16 MiB disk is always "low" by the default thresholds (512 MiB, 5 %).
    let extra = format!(
        "{}\n[retention]\nmin_free_bytes = 1\nmin_free_percent = 0.0\n",
        api_config("")
    );
    let mut gw = Gateway::new(dir.path(), broker.port, &[("ox-1", "p1")], &extra);
    let db = disk.0.join("rpm.db");
    let text = std::fs::read_to_string(&gw.config)
        .unwrap()
        .replace(&gw.db.display().to_string(), &db.display().to_string());
    std::fs::write(&gw.config, text).unwrap();
    gw.db = db;
    let reading =
        |minute: i32| format!(r#"{{"t":"2026-01-31T09:{minute:02}:00Z","spo2":97,"pr":70}}"#);
    gw.start();
    let api = Api {
        base: format!("http://127.0.0.1:{}", gw.api_port()),
        cacert: None,
    };
    let ready = || api.request("GET", "/readyz", None, None);
    wait_until("ready", T, || ready().status == 200);
    broker.publish("acme/oximeter/ox-1", reading(0).as_bytes());
    wait_until("the first reading", T, || gw.readings() == 2);
    std::thread::sleep(Duration::from_millis(300));

    // The disk fills while running.
    let full = disk.keep_full();
    let started = std::time::Instant::now();
    let from = gw.log().len();
    let mut published = 0;
    wait_until("readyz to report the full disk", T, || {
        published += 1;
        broker.publish("acme/oximeter/ox-1", reading(published).as_bytes());
        let r = ready();
        r.status == 503 && r.text().contains("disk is full")
    });
    let stored = gw.readings();
    for _ in 0..3 {
        published += 1;
        broker.publish("acme/oximeter/ox-1", reading(published).as_bytes());
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(gw.readings(), stored, "nothing is stored on a full disk");
    let lines = log_lines_since(&gw, from);
    eprintln!(
        "full disk while running: {} log lines in ~{:?}",
        lines.len(),
        started.elapsed()
    );
    assert!(
        lines.len() <= 12,
        "{} lines in ~6 s:\n{}",
        lines.len(),
        lines.join("\n")
    );
    let m = api.request("GET", "/metrics", None, None).text();
    assert!(m.contains("rpm_store_unavailable 1"), "{m}");
    assert!(m.contains("rpm_store_failure_episodes_total 1"), "{m}");
    full.stop();
    let freed = std::time::Instant::now();
    let all = 2 + 2 * published as i64;
    wait_until("the readings queued meanwhile", T, || gw.readings() == all);
    eprintln!("resumed {:?} after space returned", freed.elapsed());
    wait_until("ready again", T, || ready().status == 200);
    assert!(gw.log().contains("store commits succeed again"));
    assert_eq!(gw.stop().code(), Some(0));

    // Started on a full disk: up, not ready, nothing ingested; then resumes.
    let full = disk.keep_full();
    let from = gw.log().len();
    gw.start_unready(&[]);
    // Degraded, then serving: one socket, one port.
    let port = gw.api_port();
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        cacert: None,
    };
    let ready = || api.request("GET", "/readyz", None, None);
    wait_until("the degraded API", T, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert_eq!(api.request("GET", "/healthz", None, None).status, 200);
    let r = ready();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("disk is full"), "{}", r.text());
    for m in published + 1..=published + 3 {
        broker.publish("acme/oximeter/ox-1", reading(m).as_bytes());
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(gw.is_running(), "the gateway exited on a full disk");
    let lines = log_lines_since(&gw, from);
    eprintln!(
        "started on a full disk: {} log lines in ~3 s:\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(
        lines.len() <= 10,
        "{} lines in ~5 s:\n{}",
        lines.len(),
        lines.join("\n")
    );
    full.stop();
    let freed = std::time::Instant::now();
    wait_until("the readings queued at the broker", T, || {
        gw.readings() == all + 6
    });
    eprintln!("started {:?} after space returned", freed.elapsed());
    wait_until("ready again", T, || ready().status == 200);
    // The WAL is cut back once the writer is idle.
    wait_until("the WAL truncated", T, || {
        std::fs::metadata(gw.db.with_extension("db-wal")).map_or(0, |m| m.len()) <= 4 * 1024 * 1024
    });
    assert_eq!(gw.stop().code(), Some(0));
}
