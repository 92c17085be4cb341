//! A bundled scenario over Bluetooth LE: the real `rpm-sim run --ble`
//! serves the scenario's cuffs, scales and glucometer through the BlueZ
//! emulator on a private dbus-daemon, and the real gateway binary collects
//! them with its btleplug code path (stored-record dumps on connect, glucose
//! through RACP, live indications while connected, devices hanging up when
//! done). Every reading the sent-report lists must be in the store exactly
//! once, under the device's BLE address, with its values in canonical
//! units, its patient and its measured-at time.

use crate::common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{wait_until, Gateway, Mosquitto, SIM};
use rpm_simulator::run::RunReport;
use rpm_simulator::scenario::Scenario;
use rpm_simulator::transport::ble::{address_of, ble_kind};
use rpm_simulator::DeviceKind;

/// Four days of the demo: 4 cuffs (mmHg), 3 scales (kg and lb), a mmol/L
/// glucometer, a duplicate, a reading out of order, a malformed payload
/// (no BLE form: skipped) — in about 20 s at a day per 5 s. At that pace
/// cuffs and scales hang up between readings (memory dumps on each
/// connection), the glucometer stays connected between close readings
/// (live notifications) and hangs up over the longer gaps (RACP "records
/// ≥ N" on reconnect): measured, 17 of the 55 readings went out live over
/// 33 connections, with 3 RACP "≥ N" requests after the first "all".
const DAYS: &str = "4";
const SPEED: &str = "17280";

#[test]
fn a_scenario_over_emulated_bluez_arrives_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mqtt = Mosquitto::start(dir.path());
    let bus_dir = dir.path().join("bus");
    std::fs::create_dir_all(&bus_dir).unwrap();
    let bus = rpm_simulator::bluez::PrivateBus::start(&bus_dir)
        .expect("dbus-daemon: run scripts/test (it installs the Debian package dbus-daemon)");

    // The kit's BLE devices registered under their addresses, as
    // `rpm-sim scenarios --gateway-config demo` prints them.
    let scenario = Scenario::bundled("demo").unwrap();
    let registry: Vec<(String, String)> = scenario
        .registry()
        .iter()
        .filter(|d| ble_kind(d.kind).is_some())
        .map(|d| (address_of(&d.device_id), d.patient_id.clone()))
        .collect();
    let refs: Vec<(&str, &str)> = registry
        .iter()
        .map(|(a, p)| (a.as_str(), p.as_str()))
        .collect();
    let config = rpm_sim_config();
    assert!(config.contains(&format!("id = \"{}\"", registry[0].0)));
    let mut g = Gateway::new(
        dir.path(),
        mqtt.port,
        &refs,
        "[sources.ble]\nreconnect_min_backoff = \"200ms\"\nreconnect_max_backoff = \"1s\"\n",
    );
    g.start_with_env(&[("DBUS_SYSTEM_BUS_ADDRESS", bus.address.as_str())]);

    let report = dir.path().join("sent.json");
    let t0 = std::time::Instant::now();
    let out = Command::new(SIM)
        .args(["run", "demo", "--ble", "--days", DAYS, "--speed", SPEED])
        .arg("--report")
        .arg(&report)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rpm-sim run --ble: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "rpm-sim run --ble took {:.1} s:\n{stdout}",
        t0.elapsed().as_secs_f64()
    );

    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let runs: Vec<RunReport> = serde_json::from_value(v["runs"].clone()).unwrap();
    let [r] = runs.as_slice() else {
        panic!("one run expected")
    };
    assert!(r.complete(), "{:?}", r.unacknowledged);
    assert_eq!(r.transport, "ble");
    // Oximeters and the thermometer have no BLE device here; the cuff's
    // malformed payload (day 2) has no BLE form: all skipped, none sent.
    for d in ["ox-0042", "ox-0420", "th-0420", "bp7-0107"] {
        assert!(
            r.skipped.get(d).copied().unwrap_or(0) > 0,
            "{d}: {:?}",
            r.skipped
        );
    }
    assert_eq!(r.sent.faulty().count(), 0);
    assert!(
        r.sent.records().any(|x| x.publishes > 1),
        "the demo's duplicate is in the first 4 days"
    );

    // Every reading sent: (address, measured-at ms).
    let mut expected = BTreeSet::new();
    for rec in r.sent.expected() {
        let address = &r.ble_addresses[&rec.device_id];
        assert!(
            expected.insert((address.clone(), rec.device_time.timestamp_millis())),
            "two readings of {} at {}",
            rec.device_id,
            rec.device_time
        );
    }
    assert!(expected.len() > 40, "{} readings", expected.len());
    let stored = || {
        g.count(
            "SELECT COUNT(*) FROM (SELECT DISTINCT device_id, measured_at FROM readings WHERE source = 'ble')",
        ) as usize
    };
    wait_until(
        "every BLE reading in the store",
        Duration::from_secs(30),
        || stored() >= expected.len(),
    );
    // Let any (wrong) late duplicate land before judging.
    std::thread::sleep(Duration::from_millis(500));

    let db = g.db();
    let mut q = db
        .prepare(
            "SELECT metric, value, unit, patient_id, COUNT(DISTINCT group_id), COUNT(*) FROM readings \
             WHERE device_id = ?1 AND measured_at = ?2 GROUP BY metric",
        )
        .unwrap();
    for rec in r.sent.expected() {
        let address = &r.ble_addresses[&rec.device_id];
        let at = rec.device_time.timestamp_millis();
        let rows: Vec<(String, f64, String, String, i64, i64)> = q
            .query_map(rusqlite::params![address, at], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let what = format!("{} ({address}) at {}", rec.device_id, rec.device_time);
        assert_eq!(rows.len(), rec.values.len(), "{what}: {rows:?}");
        for (metric, value, unit) in &rec.values {
            let row = rows
                .iter()
                .find(|x| x.0 == metric.name())
                .unwrap_or_else(|| panic!("{what}: no {}", metric.name()));
            let canonical = metric.canonical_unit();
            let want = unit.convert(*value, canonical).unwrap();
            assert!(
                (row.1 - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{what}: {} {} {} stored as {} {}, want {want}",
                metric.name(),
                value,
                unit.ucum(),
                row.1,
                row.2
            );
            assert_eq!(row.2, canonical.ucum(), "{what}");
            assert_eq!(row.3, rec.patient_id, "{what}");
            assert_eq!((row.4, row.5), (1, 1), "{what}: stored more than once");
        }
    }
    assert_eq!(stored(), expected.len(), "nothing but the sent readings");
    assert_eq!(g.count("SELECT COUNT(*) FROM quarantine"), 0);

    // The glucometer's readings came through RACP: each carries its record
    // sequence number, and the gateway's durable sequence is the last one.
    let gluco = &r.ble_addresses["gm3-0311"];
    let glucose = r
        .sent
        .expected()
        .filter(|x| x.device == DeviceKind::Glucometer)
        .count() as i64;
    assert!(glucose > 0);
    assert_eq!(
        g.count(&format!(
            "SELECT COUNT(DISTINCT sequence) FROM readings WHERE device_id = '{gluco}'"
        )),
        glucose
    );
    assert!(g.stop().success());
}

/// `rpm-sim scenarios --gateway-config demo`: the registry with the BLE
/// addresses.
fn rpm_sim_config() -> String {
    let out = common::rpm_sim(&["scenarios", "--gateway-config", "demo"]);
    String::from_utf8(out.stdout).unwrap()
}
