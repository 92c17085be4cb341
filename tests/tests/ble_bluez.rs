//! The real btleplug code path of the real gateway binary, against the
//! BlueZ emulator (`rpm-bluez-emulator`) on a private dbus-daemon: discover,
//! connect, subscribe, receive indications, glucose RACP across a gateway
//! restart, forced disconnect and reconnect; and no BlueZ at all.

mod common;

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
