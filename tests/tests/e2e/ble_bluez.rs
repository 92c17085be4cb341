//! The real btleplug code path of the real gateway binary, against the
//! BlueZ emulator (`rpm-bluez-emulator`) on a private dbus-daemon: discover,
//! connect, subscribe, receive indications, glucose RACP across a gateway
//! restart, forced disconnect and reconnect; and no BlueZ at all.

use crate::common;

use common::ble::BluezEmulator;
use common::{wait_until, Gateway, Mosquitto};
use std::time::Duration;

const CUFF: &str = "AA:00:00:00:00:01";
const SCALE: &str = "AA:00:00:00:00:02";
const GLUCO: &str = "AA:00:00:00:00:03";
const MI: &str = "AA:00:00:00:00:07";
const T: Duration = Duration::from_secs(40);
const BLE: &str =
    "[sources.ble]\nreconnect_min_backoff = \"200ms\"\nreconnect_max_backoff = \"2s\"\n";

fn count(g: &Gateway, metric: &str, device: &str) -> i64 {
    g.count(&format!(
        "SELECT COUNT(*) FROM readings WHERE metric = '{metric}' AND device_id = '{device}' AND source = 'ble'"
    ))
}

#[test]
fn gateway_binary_over_emulated_bluez() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let mut emu = BluezEmulator::start(
        dir.path(),
        &[
            &format!("bp,{CUFF},2"),
            &format!("scale,{SCALE},1"),
            &format!("glucometer,{GLUCO},3"),
            &format!("mi-scale,{MI}"),
        ],
    );
    let devices = [(CUFF, "p1"), (SCALE, "p1"), (GLUCO, "p2"), (MI, "p1")];
    let mut g = Gateway::new(dir.path(), mqtt.port, &devices, BLE);
    let bus = emu.bus.address.clone();
    let env = [("DBUS_SYSTEM_BUS_ADDRESS", bus.as_str())];
    g.start_with_env(&env);

    // Discover, connect, subscribe, receive: BP and weight indications,
    // glucose records through RACP ("report all" on first contact), and the
    // broadcast-only scale from its advertisement.
    wait_until("readings over emulated BlueZ", T, || {
        count(&g, "systolic", CUFF) == 2
            && count(&g, "body_weight", SCALE) == 1
            && count(&g, "body_fat", SCALE) == 1
            && count(&g, "blood_glucose", GLUCO) == 3
            && count(&g, "body_weight", MI) == 1
    });
    emu.wait_for(&format!("WRITE {GLUCO} 2a52 0101"), 1);
    assert_eq!(
        g.count(&format!("SELECT COUNT(*) FROM devices WHERE device_id = '{CUFF}' AND connection = 'connected' AND source = 'ble'")),
        1
    );

    // Forced disconnect: the gateway reconnects when the cuff advertises
    // again, the cuff replays its memory, nothing is stored twice, and a
    // new measurement arrives.
    emu.send(&format!("add-bp {CUFF} 150 95"));
    emu.send(&format!("disconnect {CUFF}"));
    emu.wait_for(&format!("CONNECTED {CUFF}"), 2);
    wait_until("new BP after reconnect", T, || {
        count(&g, "systolic", CUFF) == 3
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(&g, "systolic", CUFF), 3);
    assert_eq!(
        count(&g, "body_weight", MI),
        1,
        "re-advertised weighing stored once"
    );

    // Adapter reset: powered off (every link drops), then on again; the
    // gateway resumes scanning and reconnects.
    let cuff_connections = emu.count(&format!("CONNECTED {CUFF}"));
    emu.send("power off");
    emu.wait_for(&format!("DISCONNECTED {CUFF}"), 2);
    std::thread::sleep(Duration::from_millis(300));
    emu.send("power on");
    emu.wait_for(&format!("CONNECTED {CUFF}"), cuff_connections + 1);
    assert_eq!(count(&g, "systolic", CUFF), 3);

    // Gateway restart: the glucometer is asked only for records after the
    // last committed sequence (3), and gets the new one.
    assert!(g.stop().success());
    emu.send(&format!("add-glucose {GLUCO} 140"));
    emu.send(&format!("disconnect {GLUCO}"));
    g.start_with_env(&env);
    wait_until("glucose record 4", T, || {
        count(&g, "blood_glucose", GLUCO) == 4
    });
    emu.wait_for(&format!("WRITE {GLUCO} 2a52 0103010400"), 1);
    assert_eq!(
        emu.count(&format!("WRITE {GLUCO} 2a52 0101")),
        1,
        "all records were asked for only once"
    );
    assert_eq!(
        g.count(&format!(
            "SELECT COUNT(DISTINCT sequence) FROM readings WHERE device_id = '{GLUCO}'"
        )),
        4
    );
    assert_eq!(g.count("SELECT COUNT(*) FROM quarantine"), 0);
    assert!(g.stop().success());
}

#[test]
fn without_bluez_the_gateway_says_so_and_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    // A bus where nobody owns org.bluez, then no bus at all.
    let bus_dir = dir.path().join("bus");
    std::fs::create_dir_all(&bus_dir).unwrap();
    let bus = rpm_simulator::bluez::PrivateBus::start(&bus_dir).unwrap();
    let no_bus = format!("unix:path={}/nothing-here", dir.path().display());
    for (i, address) in [bus.address.clone(), no_bus].into_iter().enumerate() {
        let mut g = Gateway::new(dir.path(), mqtt.port, &[("cuff-1", "p1")], BLE);
        g.start_with_env(&[("DBUS_SYSTEM_BUS_ADDRESS", address.as_str())]);
        wait_until("the log to say bluetooth is unavailable", T, || {
            g.log().contains("bluetooth unavailable")
        });
        assert!(g.is_running());
        let before = g.readings();
        let payload = format!(
            r#"{{"measured_at":"{}","sys":120,"dia":80,"map":93,"pulse":71,"unit":"mmHg"}}"#,
            (chrono::Utc::now() - chrono::Duration::minutes(i as i64)).format("%Y-%m-%dT%H:%M:%SZ")
        );
        mqtt.publish("acme/bp/cuff-1", payload.as_bytes());
        wait_until("the MQTT reading", T, || g.readings() > before);
        // The installer's commands say so too.
        let (ok, out) = ble_cli(&g, &address, &["scan", "--seconds", "1"]);
        assert!(!ok);
        assert!(out.contains("bluetooth unavailable"), "{out}");
        assert!(g.stop().success());
    }
}

/// A glucose record counts as taken only once committed: a crash before
/// the commit leaves the durable sequence where it was, so the next run asks
/// for the same records again and stores them; a crash after the commit
/// loses nothing either (the next run asks only for newer ones).
#[test]
fn glucose_records_are_taken_only_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let emu = BluezEmulator::start(dir.path(), &[&format!("glucometer,{GLUCO},3")]);
    let bus = emu.bus.address.clone();
    let mut g = Gateway::new(dir.path(), mqtt.port, &[(GLUCO, "p2")], BLE);
    g.start_with_env(&[
        ("DBUS_SYSTEM_BUS_ADDRESS", bus.as_str()),
        ("RPM_FAULT_INJECT", "abort-before-commit"),
    ]);
    assert!(!g.wait_exit(T).success(), "aborted before the first commit");
    assert_eq!(count(&g, "blood_glucose", GLUCO), 0);
    emu.wait_for(&format!("WRITE {GLUCO} 2a52 0101"), 1);

    g.start_with_env(&[("DBUS_SYSTEM_BUS_ADDRESS", bus.as_str())]);
    wait_until("the 3 records", T, || {
        count(&g, "blood_glucose", GLUCO) == 3
    });
    // Nothing was committed by the first run: everything was asked for again.
    emu.wait_for(&format!("WRITE {GLUCO} 2a52 0101"), 2);
    assert!(g.stop().success());

    // A new record; the gateway dies right after committing it, before its
    // sequence is recorded. The next run still asks only for newer records
    // (the stored readings carry the sequence) and stores nothing twice.
    let mut emu = emu;
    emu.send(&format!("add-glucose {GLUCO} 140"));
    emu.send(&format!("disconnect {GLUCO}"));
    g.start_with_env(&[
        ("DBUS_SYSTEM_BUS_ADDRESS", bus.as_str()),
        ("RPM_FAULT_INJECT", "abort-after-commit"),
    ]);
    assert!(!g.wait_exit(T).success(), "aborted after the first commit");
    assert_eq!(count(&g, "blood_glucose", GLUCO), 4);
    emu.send(&format!("disconnect {GLUCO}"));
    g.start_with_env(&[("DBUS_SYSTEM_BUS_ADDRESS", bus.as_str())]);
    emu.wait_for(&format!("WRITE {GLUCO} 2a52 0103010500"), 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(&g, "blood_glucose", GLUCO), 4);
    assert!(g.stop().success());
}

/// Gateway + emulator on a fresh bus, `devices` assigned, `ble` the
/// `[sources.ble]` table.
fn field(
    dir: &std::path::Path,
    flags: &[&str],
    specs: &[&str],
    devices: &[(&str, &str)],
    ble: &str,
) -> (Mosquitto, BluezEmulator, Gateway) {
    let mqtt = Mosquitto::start(dir);
    let emu = BluezEmulator::start_with(dir, flags, specs);
    let mut g = Gateway::new(dir, mqtt.port, devices, ble);
    let bus = emu.bus.address.clone();
    g.start_with_env(&[("DBUS_SYSTEM_BUS_ADDRESS", bus.as_str())]);
    (mqtt, emu, g)
}

/// A cuff that hangs up 0 ms after its last indication, and sends each
/// record once (it saw it acknowledged): every value BlueZ delivered before
/// the disconnect is stored. 30 connections of 10 records, none lost.
#[test]
fn values_sent_just_before_a_disconnect_are_all_stored() {
    let dir = tempfile::tempdir().unwrap();
    let ble =
        "[sources.ble]\nreconnect_min_backoff = \"20ms\"\nreconnect_max_backoff = \"200ms\"\n";
    let (_mqtt, mut emu, mut g) = field(
        dir.path(),
        &[
            "--hang-up-when-sent",
            "--send-once",
            "--notify-delay-ms",
            "5",
            "--advertise-ms",
            "30",
        ],
        &[&format!("bp,{CUFF},0")],
        &[(CUFF, "p1")],
        ble,
    );
    for k in 1..=30 {
        emu.send(&format!("store-bp {CUFF} 10"));
        emu.wait_for(&format!("DISCONNECTED {CUFF}"), k);
    }
    let delivered = emu
        .lines()
        .iter()
        .filter(|l| l.starts_with(&format!("DELIVERED {CUFF} ")))
        .count();
    assert_eq!(delivered, 300, "the emulator sent every record once");
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while count(&g, "systolic", CUFF) < 300 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        count(&g, "systolic", CUFF),
        300,
        "readings stored of 300 sent"
    );
    assert!(g.stop().success());
}

/// Readings of a device not yet assigned are quarantined; assigning it
/// yields exactly what it would have yielded if assigned at the time: the
/// glucose context (meal) and the corrected device clock, flagged.
#[test]
fn quarantined_ble_records_reprocess_like_the_live_path() {
    let dir = tempfile::tempdir().unwrap();
    const LATE: &str = "AA:00:00:00:00:13";
    const LIVE_CTS: &str = "AA:00:00:00:00:14";
    const LATE_CTS: &str = "AA:00:00:00:00:15";
    // Every meter's clock is 3 h fast. Two have no Current Time (the offset
    // is estimated from the burst of records), two a readable one (the
    // offset is measured). One of each is assigned at the time.
    let (_mqtt, _emu, mut g) = field(
        dir.path(),
        &[],
        &[
            &format!("glucometer,{GLUCO},3,clock=+180"),
            &format!("glucometer,{LATE},3,clock=+180"),
            &format!("glucometer,{LIVE_CTS},3,clock=+180,cts=read"),
            &format!("glucometer,{LATE_CTS},3,clock=+180,cts=read"),
        ],
        &[(GLUCO, "p1"), (LIVE_CTS, "p1")],
        BLE,
    );
    let quarantined = |d: &str| {
        g.count(&format!(
            "SELECT COUNT(*) FROM quarantine WHERE device_id = '{d}' AND reason = 'unknown_device'"
        ))
    };
    wait_until("live readings and quarantined ones", T, || {
        count(&g, "blood_glucose", GLUCO) == 3
            && count(&g, "blood_glucose", LIVE_CTS) == 3
            && quarantined(LATE) == 3
            && quarantined(LATE_CTS) == 3
    });
    for late in [LATE, LATE_CTS] {
        let out = g.cli(&["devices", "assign", late, "p2"]);
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("re-processed 3"),
            "{out:?}"
        );
    }
    type Row = (i64, f64, i64, i64, String);
    let rows = |device: &str| -> Vec<Row> {
        let db = g.db();
        let mut q = db
            .prepare("SELECT sequence, value, device_measured_at, measured_at, annotations FROM readings WHERE device_id = ?1 AND metric = 'blood_glucose' ORDER BY sequence")
            .unwrap();
        q.query_map([device], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    };
    for (live, late, estimated) in [(GLUCO, LATE, true), (LIVE_CTS, LATE_CTS, false)] {
        let (live, late) = (rows(live), rows(late));
        assert_eq!(live.len(), 3);
        assert_eq!(late.len(), 3);
        for (a, b) in live.iter().zip(&late) {
            assert_eq!((a.0, a.1), (b.0, b.1), "sequence and value");
            let ja: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&a.4).unwrap();
            let jb: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&b.4).unwrap();
            let keys = |m: &serde_json::Map<String, serde_json::Value>| {
                m.keys().cloned().collect::<Vec<_>>()
            };
            assert_eq!(keys(&ja), keys(&jb), "annotations {} vs {}", a.4, b.4);
            assert_eq!(ja.get("clock_corrected"), Some(&"device_offset".into()));
            assert_eq!(
                ja.contains_key("clock_offset_estimated"),
                estimated,
                "{}",
                a.4
            );
            for (k, v) in &ja {
                if k != "clock_offset_s" {
                    assert_eq!(Some(v), jb.get(k), "annotation {k}");
                }
            }
            // The same correction (within the time the two meters' records
            // were made apart).
            let (off_a, off_b) = (a.2 - a.3, b.2 - b.3);
            assert!((off_a - off_b).abs() < 3_000, "{off_a} vs {off_b}");
            // Measured: 3 h. Estimated: a lower bound, the newest record
            // being 2 h ahead.
            let least = if estimated { 2 } else { 3 } * 3_600_000 - 60_000;
            assert!(off_a > least, "corrected by {off_a} ms");
        }
        // Records 1 and 3 carried a meal context.
        assert!(late[0].4.contains("meal"), "{}", late[0].4);
        assert!(!late[1].4.contains("meal"), "{}", late[1].4);
    }
    assert!(g.stop().success());
}

/// A bluetoothd that signals `Powered` again each time it is set (and the
/// scan sets it): the gateway reacts to changes only.
#[test]
fn a_resignalled_powered_property_does_not_loop() {
    let dir = tempfile::tempdir().unwrap();
    let (_mqtt, mut emu, mut g) = field(
        dir.path(),
        &["--resignal-powered"],
        &[&format!("bp,{CUFF},2")],
        &[(CUFF, "p1")],
        BLE,
    );
    wait_until("the cuff's readings", T, || {
        count(&g, "systolic", CUFF) == 2
    });
    // Give a loop the time to show (it makes thousands of calls a second).
    std::thread::sleep(Duration::from_millis(700));
    let sets = emu.count("SET-POWERED true");
    assert!(sets <= 2, "Powered set {sets} times");
    // A real change is still followed: off, on, and the cuff comes back.
    emu.send("power off");
    emu.wait_for(&format!("DISCONNECTED {CUFF}"), 1);
    emu.send(&format!("add-bp {CUFF} 150 95"));
    emu.send("power on");
    wait_until("the new reading", T, || count(&g, "systolic", CUFF) == 3);
    std::thread::sleep(Duration::from_millis(700));
    let sets = emu.count("SET-POWERED true");
    assert!(sets <= 4, "Powered set {sets} times");
    let available = g.log().matches("bluetooth adapter available").count();
    assert!(available <= 3, "{available} INFO lines");
    assert!(g.stop().success());
}

/// Service discovery stalls: the connect times out, the gateway calls
/// Device1.Disconnect (the device advertises again) and retries.
#[test]
fn a_connect_that_times_out_is_torn_down_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let mut emu = BluezEmulator::start(dir.path(), &[&format!("bp,{CUFF},2")]);
    emu.send(&format!("stall {CUFF} 1"));
    let ble = format!("{BLE}connect_timeout = \"1s\"\n");
    let mut g = Gateway::new(dir.path(), mqtt.port, &[(CUFF, "p1")], &ble);
    let bus = emu.bus.address.clone();
    g.start_with_env(&[("DBUS_SYSTEM_BUS_ADDRESS", bus.as_str())]);
    emu.wait_for(&format!("STALLED {CUFF}"), 1);
    emu.wait_for(&format!("DISCONNECTED {CUFF}"), 1);
    wait_until("readings after the retry", T, || {
        count(&g, "systolic", CUFF) == 2
    });
    assert_eq!(emu.count(&format!("STALLED {CUFF}")), 1);
    assert!(g.stop().success());
}

/// bluetoothd restarts: org.bluez changes owner, links vanish without a
/// signal, the adapter is back powered but not discovering. The gateway
/// says so and resumes discovery and connections.
#[test]
fn a_bluetoothd_restart_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (_mqtt, mut emu, mut g) = field(
        dir.path(),
        &[],
        &[&format!("bp,{CUFF},2")],
        &[(CUFF, "p1")],
        &format!("{BLE}\n[api]\nenabled = true\n{}\n", common::API_LISTEN),
    );
    let api = g.api_port();
    let adapter_available = || {
        let (_, body) = common::http::request(api, "GET", "/metrics", b"").unwrap();
        String::from_utf8_lossy(&body).contains("rpm_ble_adapter_available 1")
    };
    wait_until("the cuff's readings", T, || {
        count(&g, "systolic", CUFF) == 2
    });
    emu.send("restart");
    emu.wait_for("RESTARTED", 1);
    emu.send(&format!("add-bp {CUFF} 150 95"));
    wait_until("the reading taken after the restart", T, || {
        count(&g, "systolic", CUFF) == 3
    });
    emu.wait_for("DISCOVERING true", 2);
    let log = g.log();
    assert!(
        log.contains("bluetoothd restarted (org.bluez changed owner); resuming discovery"),
        "{log}"
    );
    assert!(log.contains("bluetooth unavailable"), "{log}");
    assert!(adapter_available());
    assert!(g.stop().success());
}

/// A glucometer reset (or replaced): its record numbers start again at 1.
/// The gateway notices, fetches the new records, and goes on from there
/// without losing or duplicating any.
#[test]
fn a_glucometer_sequence_reset_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let (_mqtt, mut emu, mut g) = field(
        dir.path(),
        &[],
        &[&format!("glucometer,{GLUCO},3")],
        &[(GLUCO, "p2")],
        BLE,
    );
    wait_until("the 3 records", T, || {
        count(&g, "blood_glucose", GLUCO) == 3
    });
    emu.send(&format!("reset-meter {GLUCO}"));
    emu.send(&format!("add-glucose {GLUCO} 150"));
    emu.send(&format!("add-glucose {GLUCO} 160"));
    emu.send(&format!("disconnect {GLUCO}"));
    wait_until("the 2 records after the reset", T, || {
        count(&g, "blood_glucose", GLUCO) == 5
    });
    // ≥ 4 found nothing, the newest record (2) told, all were asked for.
    emu.wait_for(&format!("WRITE {GLUCO} 2a52 0106"), 1);
    emu.wait_for(&format!("WRITE {GLUCO} 2a52 0101"), 2);
    // The next record (3 of the new numbering) is asked for as usual.
    emu.send(&format!("add-glucose {GLUCO} 170"));
    emu.send(&format!("disconnect {GLUCO}"));
    wait_until("the record after that", T, || {
        count(&g, "blood_glucose", GLUCO) == 6
    });
    emu.wait_for(&format!("WRITE {GLUCO} 2a52 0103010300"), 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(&g, "blood_glucose", GLUCO), 6);
    // Reset again, and the new meter has exactly as many records as the
    // last one taken: the newest record has that sequence number but
    // another time (device times have a resolution of one second).
    std::thread::sleep(Duration::from_millis(1100));
    emu.send(&format!("reset-meter {GLUCO}"));
    for v in [101, 102, 103] {
        emu.send(&format!("add-glucose {GLUCO} {v}"));
    }
    emu.send(&format!("disconnect {GLUCO}"));
    wait_until("the 3 records after the second reset", T, || {
        count(&g, "blood_glucose", GLUCO) == 9
    });
    emu.wait_for(&format!("WRITE {GLUCO} 2a52 0101"), 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(&g, "blood_glucose", GLUCO), 9);
    // And once more, the new meter now holding more records (4) than the
    // last one taken (3): "≥ 4" finds only its record 4, record 3 has
    // another time, all are fetched.
    std::thread::sleep(Duration::from_millis(1100));
    emu.send(&format!("reset-meter {GLUCO}"));
    for v in [111, 112, 113, 114] {
        emu.send(&format!("add-glucose {GLUCO} {v}"));
    }
    emu.send(&format!("disconnect {GLUCO}"));
    wait_until("the 4 records after the third reset", T, || {
        count(&g, "blood_glucose", GLUCO) == 13
    });
    emu.wait_for(&format!("WRITE {GLUCO} 2a52 0101"), 4);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(&g, "blood_glucose", GLUCO), 13);
    assert_eq!(g.count("SELECT COUNT(*) FROM quarantine"), 0);
    assert!(g.stop().success());
}

/// `rpm-gateway ble ...` against the emulator's bus.
fn ble_cli(g: &Gateway, bus: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(common::BIN)
        .arg("--config")
        .arg(&g.config)
        .arg("ble")
        .args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A cuff that gives its records only to a bonded host: refused until
/// paired (the gateway says so), the installer's scan and pairing with
/// clear errors (not in pairing mode, no or wrong passkey), the bond and
/// Device Information in the registry, then the readings; forget.
#[test]
fn a_bonded_cuff_is_paired_by_the_installer_and_delivers() {
    const OMRON: &str = "AA:00:00:00:00:21";
    let dir = tempfile::tempdir().unwrap();
    let (_mqtt, mut emu, mut g) = field(
        dir.path(),
        &[],
        &[&format!("bp,{OMRON},2,bond=passkey:123456")],
        &[(OMRON, "p1")],
        BLE,
    );
    let bus = emu.bus.address.clone();
    emu.wait_for(&format!("AUTH-REQUIRED {OMRON}"), 1);
    wait_until("the registry to say pairing is required", T, || {
        g.count(&format!(
            "SELECT COUNT(*) FROM devices WHERE device_id = '{OMRON}' AND connection = 'pairing_required'"
        )) == 1
    });
    assert!(g.log().contains("until it is paired"));
    assert_eq!(count(&g, "systolic", OMRON), 0);

    let (ok, out) = ble_cli(&g, &bus, &["scan", "--seconds", "1"]);
    assert!(ok, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(OMRON) && l.contains("0x1810") && l.contains("registered")),
        "{out}"
    );

    let (ok, out) = ble_cli(&g, &bus, &["pair", OMRON, "--passkey", "123456"]);
    assert!(!ok);
    assert!(out.contains("pairing mode"), "{out}");
    emu.send(&format!("pairing-mode {OMRON} on"));
    let (ok, out) = ble_cli(&g, &bus, &["pair", OMRON]);
    assert!(!ok);
    assert!(out.contains("asks for a passkey"), "{out}");
    let (ok, out) = ble_cli(&g, &bus, &["pair", OMRON, "--passkey", "111111"]);
    assert!(!ok);
    assert!(out.contains("wrong passkey"), "{out}");
    let (ok, out) = ble_cli(
        &g,
        &bus,
        &["pair", OMRON, "--passkey", "123456", "--patient", "p1"],
    );
    assert!(ok, "{out}");
    assert!(out.contains("Omron Healthcare HEM-7361T"), "{out}");
    emu.wait_for(&format!("PAIRED {OMRON}"), 1);

    wait_until("the bonded cuff's readings", T, || {
        count(&g, "systolic", OMRON) == 2
    });
    assert_eq!(
        g.count(&format!(
            "SELECT COUNT(*) FROM devices WHERE device_id = '{OMRON}' AND bonded = 1 AND manufacturer = 'Omron Healthcare' AND model = 'HEM-7361T' AND firmware = '1.2.0' AND patient_id = 'p1'"
        )),
        1
    );

    let (ok, out) = ble_cli(&g, &bus, &["forget", OMRON]);
    assert!(ok, "{out}");
    emu.wait_for(&format!("REMOVED {OMRON}"), 1);
    assert_eq!(
        g.count(&format!(
            "SELECT COUNT(*) FROM devices WHERE device_id = '{OMRON}' AND bonded = 0"
        )),
        1
    );
    assert!(g.stop().success());
}

/// The other two pairing methods: numeric comparison (the number is
/// checked when given, a different one is rejected) and Just Works.
#[test]
fn numeric_comparison_and_just_works_pairing() {
    const CUFF2: &str = "AA:00:00:00:00:22";
    const SCALE2: &str = "AA:00:00:00:00:23";
    let dir = tempfile::tempdir().unwrap();
    let (_mqtt, mut emu, mut g) = field(
        dir.path(),
        &[],
        &[
            &format!("bp,{CUFF2},1,bond=confirm:654321"),
            &format!("scale,{SCALE2},1,bond=justworks"),
        ],
        &[(CUFF2, "p1"), (SCALE2, "p1")],
        BLE,
    );
    let bus = emu.bus.address.clone();
    emu.send(&format!("pairing-mode {CUFF2} on"));
    emu.send(&format!("pairing-mode {SCALE2} on"));
    let (ok, out) = ble_cli(&g, &bus, &["pair", CUFF2, "--passkey", "111111"]);
    assert!(!ok);
    assert!(out.contains("pairing rejected"), "{out}");
    let (ok, out) = ble_cli(&g, &bus, &["pair", CUFF2, "--passkey", "654321"]);
    assert!(ok, "{out}");
    let (ok, out) = ble_cli(&g, &bus, &["pair", SCALE2]);
    assert!(ok, "{out}");
    wait_until("both bonded devices' readings", T, || {
        count(&g, "systolic", CUFF2) == 1 && count(&g, "body_weight", SCALE2) == 1
    });
    assert_eq!(
        g.count("SELECT COUNT(*) FROM devices WHERE bonded = 1 AND model = 'HEM-7361T'"),
        2
    );
    // An adapter that is not there is named as such.
    let text = std::fs::read_to_string(&g.config)
        .unwrap()
        .replace("[sources.ble]\n", "[sources.ble]\nadapter = \"hci9\"\n");
    let other = dir.path().join("hci9.toml");
    std::fs::write(&other, text).unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("--config")
        .arg(&other)
        .args(["ble", "scan", "--seconds", "1"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no bluetooth adapter named hci9"), "{err}");
    assert!(g.stop().success());
}

/// A cuff that connects with three and a half days of measurements in its
/// memory (one an hour) dumps them all on connect, oldest first: the dump
/// raises no missing-data alert (judged on its first record alone, the
/// patient would look silent for 80 hours).
#[test]
fn a_cuffs_memory_dump_on_connect_raises_no_missing_data_alert() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let mut emu = BluezEmulator::start(dir.path(), &[&format!("bp,{CUFF},80")]);
    let extra = format!(
        "{BLE}\n[rules]\nmissing_interval = \"100ms\"\nsettle = \"1s\"\n\n[[patients]]\nid = \"p1\"\ncare_plans = [\"hypertension\"]\n"
    );
    let mut g = Gateway::new(dir.path(), mqtt.port, &[(CUFF, "p1")], &extra);
    let bus = emu.bus.address.clone();
    g.start_with_env(&[("DBUS_SYSTEM_BUS_ADDRESS", bus.as_str())]);
    wait_until("the whole memory", T, || {
        count(&g, "systolic", CUFF) == 80 && g.rules_caught_up()
    });
    // Settled, and the missing-data timer has run many times since.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        g.count("SELECT COUNT(*) FROM alerts WHERE rule_id LIKE 'adherence.%'"),
        0
    );
    assert_eq!(
        g.count("SELECT COUNT(*) FROM outbox WHERE payload LIKE '%adherence.%'"),
        0
    );
    emu.send(&format!("disconnect {CUFF}"));
    assert!(g.stop().success());
}

/// The installer does the same from the console's Bluetooth page: a scan
/// lists the cuff (registered), pairing without the passkey is refused with
/// the reason on the page, with it the cuff is bonded and assigned, and its
/// readings arrive. A care-team user may not scan; a form without its CSRF
/// token changes nothing.
#[test]
fn the_console_scans_and_pairs_a_bonded_cuff() {
    use common::console::{add_user, raw, sign_in, status};
    const OMRON: &str = "AA:00:00:00:00:24";
    let dir = tempfile::tempdir().unwrap();
    let with_api = format!("{BLE}\n[api]\nenabled = true\n{}\n", common::API_LISTEN);
    let (_mqtt, mut emu, mut g) = field(
        dir.path(),
        &[],
        &[&format!("bp,{OMRON},2,bond=passkey:123456")],
        &[(OMRON, "p1")],
        &with_api,
    );
    let port = g.api_port();
    add_user(&g, "installer", "admin", &[], "installer password 1");
    add_user(
        &g,
        "nurse",
        "care_team",
        &["north"],
        "north nurse password 1",
    );
    let admin = sign_in(port, "installer", "installer password 1");
    let nurse = sign_in(port, "nurse", "north nurse password 1");
    // The form's CSRF token, from the page itself.
    let page = raw(port, "GET", "/console/ble", &[("Cookie", &admin)], "");
    assert_eq!(status(&page), 200);
    let html = String::from_utf8_lossy(&page.body).to_string();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();

    let r = raw(port, "GET", "/console/ble", &[("Cookie", &nurse)], "");
    assert_eq!(status(&r), 403);
    let r = raw(
        port,
        "POST",
        "/console/ble/pair",
        &[("Cookie", &admin)],
        &format!("address={OMRON}&passkey=123456"),
    );
    assert_eq!(status(&r), 403, "no CSRF token");

    emu.wait_for(&format!("AUTH-REQUIRED {OMRON}"), 1);
    let r = raw(
        port,
        "POST",
        "/console/ble/scan",
        &[("Cookie", &admin)],
        &format!("csrf={csrf}&seconds=1"),
    );
    let html = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(status(&r), 200, "{html}");
    assert!(
        html.contains(OMRON) && html.contains("0x1810") && html.contains("registered"),
        "{html}"
    );

    emu.send(&format!("pairing-mode {OMRON} on"));
    let r = raw(
        port,
        "POST",
        "/console/ble/pair",
        &[("Cookie", &admin)],
        &format!("csrf={csrf}&address={OMRON}&passkey=&patient_id=p1"),
    );
    let html = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(status(&r), 422, "{html}");
    assert!(html.contains("asks for a passkey"), "{html}");
    let r = raw(
        port,
        "POST",
        "/console/ble/pair",
        &[("Cookie", &admin)],
        &format!("csrf={csrf}&address={OMRON}&passkey=123456&patient_id=p1"),
    );
    let html = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(status(&r), 200, "{html}");
    assert!(
        html.contains("Paired and trusted") && html.contains("assigned to p1"),
        "{html}"
    );
    emu.wait_for(&format!("PAIRED {OMRON}"), 1);
    wait_until("the bonded cuff's readings", T, || {
        count(&g, "systolic", OMRON) == 2
    });
    assert_eq!(
        g.count(&format!(
            "SELECT COUNT(*) FROM devices WHERE device_id = '{OMRON}' AND bonded = 1 AND model = 'HEM-7361T' AND patient_id = 'p1'"
        )),
        1
    );
    wait_until(
        "the scan, both pairings and the refused form audited",
        T,
        || {
            g.count("SELECT COUNT(*) FROM audit_log WHERE actor = 'user:installer' AND action LIKE 'POST /console/ble/%'") == 4
        },
    );
    assert!(g.stop().success());
}
