//! The BLE source on the virtual transport: simulated devices
//! (`rpm_simulator::ble`) → sessions → decode → normalize → a real SQLite
//! store, the same path as with a radio.

use crate::common;

use common::ble::VirtualGateway;
use common::wait_until;
use rpm_simulator::ble::SimDevice;
use std::time::Duration;

const CUFF: &str = "AA:00:00:00:00:01";
const SCALE: &str = "AA:00:00:00:00:02";
const GLUCO: &str = "AA:00:00:00:00:03";
const THERMO: &str = "AA:00:00:00:00:04";
const OXI: &str = "AA:00:00:00:00:05";
const HR: &str = "AA:00:00:00:00:06";
const MI: &str = "AA:00:00:00:00:07";
const T: Duration = Duration::from_secs(20);

fn devices() -> Vec<(&'static str, &'static str)> {
    [CUFF, SCALE, GLUCO, THERMO, OXI, HR, MI]
        .iter()
        .map(|d| (*d, "p1"))
        .collect()
}

#[test]
fn every_characteristic_kind_reaches_the_store_once() {
    let g = VirtualGateway::start(&devices(), "max_connections = 8");
    g.radio.add(SimDevice::bp_cuff(CUFF, 2));
    g.radio.add(SimDevice::scale(SCALE, 1));
    g.radio.add(SimDevice::glucometer(GLUCO, 3));
    // 36.6 Cel (FLOAT 366e-1), SpO2 97 % / PR 72, HR 72: no device time.
    g.radio.add(SimDevice::generic(
        THERMO,
        "Thermo",
        0x1809,
        vec![(0x2A1C, true, vec![vec![0x00, 0x6E, 0x01, 0x00, 0xFF]])],
    ));
    g.radio.add(SimDevice::generic(
        OXI,
        "Oxi",
        0x1822,
        vec![(0x2A5E, true, vec![vec![0x00, 0x61, 0x00, 0x48, 0x00]])],
    ));
    g.radio.add(SimDevice::generic(
        HR,
        "HR",
        0x180D,
        vec![(0x2A37, false, vec![vec![0x00, 0x48]])],
    ));
    g.radio.add(SimDevice::advertising_scale(MI, 72.5));

    let count = |metric: &str, dev: &str| g.count(metric, dev);
    wait_until("all readings", T, || {
        count("systolic", CUFF) == 2
            // 0x2A9D and the merged two-packet 0x2A9C carry the same
            // weighing (same device time): one reading.
            && count("body_weight", SCALE) == 1
            && count("body_fat", SCALE) == 1
            && count("blood_glucose", GLUCO) == 3
            && count("body_temperature", THERMO) == 1
            && count("spo2", OXI) == 1
            && count("heart_rate", HR) == 1
            && count("body_weight", MI) == 1
    });
    assert_eq!(count("diastolic", CUFF), 2);
    assert_eq!(count("pulse_rate", CUFF), 2);
    // The glucose context (meal) was joined to its record by sequence.
    let meals: Vec<(i64, String)> = g.query(
        "SELECT sequence, annotations FROM readings WHERE device_id = ?1 ORDER BY sequence",
        GLUCO,
    );
    assert_eq!(meals.len(), 3);
    assert!(meals[0].1.contains("preprandial"), "{meals:?}");
    assert!(!meals[1].1.contains("meal"), "{meals:?}");
    // Sequence numbers are stored; the RACP asked for everything (first contact).
    assert_eq!(
        g.radio.with_device(GLUCO, |d| d.racp_log.clone()).unwrap(),
        vec![vec![0x01, 0x01]]
    );

    // Devices resend their memory on every connection: stored once.
    for d in [CUFF, SCALE, MI] {
        g.radio.advertise(d);
    }
    g.radio.disconnect(CUFF);
    // Devices advertise again and again until the gateway connects.
    wait_until("cuff reconnect", T, || {
        g.radio.advertise(CUFF);
        g.radio.with_device(CUFF, |d| d.connections).unwrap() >= 2 && g.radio.is_connected(CUFF)
    });
    std::thread::sleep(Duration::from_millis(500));
    g.radio.disconnect(CUFF);
    wait_until("cuff third connection", T, || {
        g.radio.advertise(CUFF);
        g.radio.with_device(CUFF, |d| d.connections).unwrap() >= 3
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count("systolic", CUFF), 2);
    assert_eq!(count("body_weight", MI), 1);

    // Glucose: a new record; the next connection asks only for ≥ 4.
    g.radio.with_device(GLUCO, |d| d.add_glucose(140.0));
    g.radio.disconnect(GLUCO);
    wait_until("new glucose record", T, || {
        g.radio.advertise(GLUCO);
        count("blood_glucose", GLUCO) == 4
    });
    let log = g.radio.with_device(GLUCO, |d| d.racp_log.clone()).unwrap();
    let n = log.len();
    assert_eq!(log[n - 2], vec![0x01, 0x03, 0x01, 0x04, 0x00]);
    // Then record 3 is checked (the numbering has not restarted).
    assert_eq!(log[n - 1], vec![0x01, 0x04, 0x01, 0x03, 0x00, 0x03, 0x00]);
    let quarantined = g.quarantine_reasons();
    assert!(quarantined.is_empty(), "{quarantined:?}");
    g.stop();
}

#[test]
fn special_values_and_truncated_values_are_quarantined() {
    let g = VirtualGateway::start(&[(CUFF, "p1")], "");
    let mut cuff = SimDevice::bp_cuff(CUFF, 1);
    // An "Err" measurement: every pressure NaN (domain.md §5.1).
    cuff.push_raw_bp(vec![0x00, 0xFF, 0x07, 0xFF, 0x07, 0xFF, 0x07]);
    // Truncated.
    cuff.push_raw_bp(vec![0x1E, 0x78]);
    g.radio.add(cuff);
    wait_until("quarantine", T, || g.quarantine_reasons().len() == 2);
    let mut reasons = g.quarantine_reasons();
    reasons.sort();
    assert_eq!(reasons, vec!["invalid_gatt", "special_value"]);
    assert_eq!(g.count("systolic", CUFF), 1);
    // Resent on reconnect: still one row each.
    g.radio.disconnect(CUFF);
    wait_until("reconnect", T, || {
        g.radio.advertise(CUFF);
        g.radio.with_device(CUFF, |d| d.connections).unwrap() >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(g.quarantine_reasons().len(), 2);
    g.stop();
}

#[test]
fn unknown_device_is_quarantined_then_recovered_on_assignment() {
    let g = VirtualGateway::start(&[], "");
    g.radio.add(SimDevice::bp_cuff(CUFF, 1));
    wait_until("unknown_device quarantine", T, || {
        g.quarantine_reasons() == vec!["unknown_device"]
    });
    let recovered = g.assign(CUFF, "p9");
    assert_eq!(recovered, 1);
    assert_eq!(g.count("systolic", CUFF), 1);
    g.stop();
}

#[test]
fn device_clock_is_set_or_its_offset_corrected() {
    let g = VirtualGateway::start(&[(CUFF, "p1"), (SCALE, "p1")], "");
    // Read-only Current Time, clock 3 h fast: readings keep the device time
    // and get a corrected time, flagged.
    let mut cuff = SimDevice::bp_cuff(CUFF, 1);
    cuff.current_time = Some(false);
    cuff.clock_offset = chrono::Duration::hours(3);
    g.radio.add(cuff);
    // Writable Current Time: the gateway sets the clock on connect.
    let mut scale = SimDevice::scale(SCALE, 0);
    scale.current_time = Some(true);
    scale.clock_offset = chrono::Duration::hours(-5);
    g.radio.add(scale);
    wait_until("cuff reading", T, || g.count("systolic", CUFF) == 1);
    let rows: Vec<(i64, String)> = g.query(
        "SELECT device_measured_at - measured_at, annotations FROM readings WHERE device_id = ?1 AND metric = 'systolic'",
        CUFF,
    );
    let (diff_ms, ann) = &rows[0];
    assert!((diff_ms - 3 * 3600 * 1000).abs() < 5_000, "{rows:?}");
    assert!(ann.contains("device_offset"), "{ann}");
    wait_until("scale clock set", T, || {
        g.radio
            .with_device(SCALE, |d| d.clock_offset.is_zero())
            .unwrap()
    });
    g.stop();
}

#[test]
fn a_fast_clock_without_current_time_is_estimated_from_the_burst() {
    let g = VirtualGateway::start(&[(CUFF, "p1")], "");
    // No Current Time; clock 3 h fast; records taken 2 h and 1 h ago arrive
    // stamped +1 h and +2 h. The newest is at least 2 h ahead: that lower
    // bound corrects the whole burst, order kept, flagged.
    let mut cuff = SimDevice::bp_cuff(CUFF, 2);
    cuff.clock_offset = chrono::Duration::hours(3);
    g.radio.add(cuff);
    wait_until("cuff readings", T, || g.count("systolic", CUFF) == 2);
    let rows: Vec<(i64, String)> = g.query(
        "SELECT device_measured_at - measured_at, annotations FROM readings WHERE device_id = ?1 AND metric = 'systolic' ORDER BY device_measured_at",
        CUFF,
    );
    for (diff_ms, ann) in &rows {
        assert!((diff_ms - 2 * 3600 * 1000).abs() < 5_000, "{rows:?}");
        assert!(ann.contains("clock_offset_estimated"), "{ann}");
    }
    let measured: Vec<(i64, String)> = g.query(
        "SELECT measured_at, device_id FROM readings WHERE device_id = ?1 AND metric = 'systolic' ORDER BY device_measured_at",
        CUFF,
    );
    assert!(measured[0].0 < measured[1].0, "order kept: {measured:?}");
    g.stop();
}

/// Not a test: the rate of a large glucose transfer through the virtual
/// transport (RACP → session → decode → normalize → commit). Run with
/// `cargo test --release -p rpm-e2e --test e2e -- ble_virtual:: --ignored --nocapture`.
#[test]
#[ignore]
fn bench_glucose_transfer() {
    const N: u16 = 5000;
    let g = VirtualGateway::start(&[(GLUCO, "p1")], "");
    let start = std::time::Instant::now();
    g.radio.add(SimDevice::glucometer(GLUCO, N));
    wait_until("all records", Duration::from_secs(300), || {
        g.count("blood_glucose", GLUCO) == i64::from(N)
    });
    let took = start.elapsed();
    eprintln!(
        "{N} glucose records (half with context) committed in {:.2} s: {:.0} records/s",
        took.as_secs_f64(),
        f64::from(N) / took.as_secs_f64()
    );
    g.stop();
}

/// A vendor device with a proprietary characteristic, described by a
/// profile file with an inline byte layout: no code.
#[test]
fn vendor_profile_with_a_proprietary_characteristic() {
    let profiles = tempfile::tempdir().unwrap();
    std::fs::write(
        profiles.path().join("acme-weight.toml"),
        r#"
name = "acme-weight"
[match]
name_prefixes = ["ACME-W"]
[[characteristic]]
uuid = "0000fff1-0000-1000-8000-00805f9b34fb"
[characteristic.layout]
name = "acme-weight-v1"
length = 2
[[characteristic.layout.field]]
name = "weight"
offset = 0
type = "u16"
endian = "big"
scale = 0.1
unit = "kg"
metric = "body_weight"
"#,
    )
    .unwrap();
    let extra = format!("profile_dirs = [\"{}\"]", profiles.path().display());
    let g = VirtualGateway::start(&[(SCALE, "p1")], &extra);
    // 0x02D5 = 725 → 72.5 kg; the device advertises no standard service.
    g.radio.add(SimDevice::generic(
        SCALE,
        "ACME-W100",
        0xFFF0,
        vec![(0xFFF1, false, vec![vec![0x02, 0xD5]])],
    ));
    wait_until("vendor weight", T, || g.count("body_weight", SCALE) == 1);
    let rows: Vec<(i64, String)> = g.query(
        "SELECT CAST(value * 10 AS INTEGER), unit FROM readings WHERE device_id = ?1",
        SCALE,
    );
    assert_eq!(rows, vec![(725, "kg".to_string())]);
    g.stop();
}
