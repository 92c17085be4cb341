//! InfluxDB forwarding end to end: the real gateway binary forwarding from
//! its real SQLite store to a real VictoriaMetrics (InfluxDB line protocol on
//! `/api/v2/write`), read back through its export API; and to a recording
//! InfluxDB 2 stand-in for what VictoriaMetrics does not check (auth, org,
//! bucket, precision, gzip, whole-request 400s, 401/404/429/503).

use crate::common;

use common::influx::{Answer, InfluxRecorder};
use common::victoria::{Sample, VictoriaMetrics};
use common::{fill_store, wait_until, Gateway, Mosquitto};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const CURSOR: &str = "forward.influxdb";

fn forward_section(url: &str, extra: &str) -> String {
    format!(
        "[forward.influxdb]\nurl = \"{url}\"\norg = \"rpm\"\nbucket = \"readings\"\nflush_interval = \"100ms\"\nmax_backoff = \"1s\"\ntimeout = \"5s\"\n{extra}\n"
    )
}

/// A stored reading as the forwarder should write it.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    series: String,
    labels: BTreeMap<String, String>,
    value: f64,
    ts_ms: i64,
}

fn family(metric: &str) -> &'static str {
    match metric {
        "systolic" | "diastolic" | "mean_arterial_pressure" | "pulse_rate" => "rpm_blood_pressure",
        "spo2" | "oximetry_pulse_rate" => "rpm_oximetry",
        "body_weight" | "body_height" | "bmi" | "body_fat" => "rpm_body_composition",
        "blood_glucose" => "rpm_glucose",
        "body_temperature" => "rpm_temperature",
        "heart_rate" | "respiratory_rate" => "rpm_vitals",
        _ => "rpm_other",
    }
}

fn expected(gw: &Gateway) -> Vec<Expected> {
    let db = gw.db();
    let mut q = db
        .prepare("SELECT patient_id, device_id, metric, source, unit, value, measured_at FROM readings ORDER BY seq")
        .unwrap();
    q.query_map([], |r| {
        let metric: String = r.get(2)?;
        let labels = [
            ("patient_id", r.get::<_, String>(0)?),
            ("device_id", r.get(1)?),
            ("metric", metric.clone()),
            ("source", r.get(3)?),
            ("unit", r.get(4)?),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Ok(Expected {
            series: format!("{}_value", family(&metric)),
            labels,
            value: r.get(5)?,
            ts_ms: r.get(6)?,
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// (series name, labels, timestamp): a point's identity.
type SeriesAt = (String, Vec<(String, String)>, i64);

/// Every stored reading is in VictoriaMetrics exactly once, with its exact
/// tags and timestamp, and its value (VictoriaMetrics keeps values as
/// decimals of up to 15 significant digits: compared to 1e-12 relative).
fn assert_each_once(gw: &Gateway, samples: &[Sample]) {
    let want = expected(gw);
    assert_eq!(
        samples.len(),
        want.len(),
        "value samples vs stored readings"
    );
    let mut index: BTreeMap<SeriesAt, Vec<f64>> = BTreeMap::new();
    for s in samples {
        let labels = s.labels.clone().into_iter().collect();
        index
            .entry((s.name.clone(), labels, s.ts_ms))
            .or_default()
            .push(s.value);
    }
    for e in &want {
        let key = (
            e.series.clone(),
            e.labels.clone().into_iter().collect::<Vec<_>>(),
            e.ts_ms,
        );
        let got = index
            .get(&key)
            .unwrap_or_else(|| panic!("missing in VictoriaMetrics: {e:?}"));
        assert_eq!(got.len(), 1, "{e:?} arrived {} times", got.len());
        let rel = ((got[0] - e.value) / e.value).abs();
        assert!(rel < 1e-12, "{e:?}: got {}", got[0]);
    }
}

/// A gateway with only a store (no sources) holding `n` synthetic readings,
/// forwarding to `url` with `extra` settings; not started yet.
fn filled(dir: &Path, url: &str, extra: &str, n: u64) -> Gateway {
    let gw = Gateway::store_only(dir, &forward_section(url, extra));
    fill_store(&gw.db, n);
    gw
}

/// The gateway of [`filled`] on its store as it is, with other settings.
fn filled_again(dir: &Path, url: &str, extra: &str) -> Gateway {
    Gateway::store_only(dir, &forward_section(url, extra))
}

/// Starts `gw` with `env` and waits until it has forwarded every reading.
fn drain(gw: &mut Gateway, env: &[(&str, &str)]) {
    gw.start_unready(env);
    wait_until("forwarder caught up", T, || caught_up(gw));
}

/// VictoriaMetrics holds `n` samples: each stored reading once, exactly.
fn assert_forwarded(gw: &Gateway, vm: &VictoriaMetrics, n: usize) {
    let samples = vm.values(n, T);
    assert_each_once(gw, &samples);
}

fn caught_up(gw: &Gateway) -> bool {
    let max = gw.count("SELECT COALESCE(MAX(seq), 0) FROM readings");
    max > 0 && gw.cursor(CURSOR) == max
}

fn publish_kit(broker: &Mosquitto, round: u32) {
    let t = 1_769_845_200 + round as i64 * 3600;
    broker.publish(
        "acme/bp/cuff-1",
        format!(r#"{{"measured_at":"{}","sys":16.0,"dia":11.0,"map":12.7,"pulse":{},"unit":"kPa","ihb":true,"motion":false}}"#,
            chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339(), 60 + round).as_bytes(),
    );
    broker.publish(
        "acme/glucose/gluco-1",
        format!(r#"{{"time_ms":{},"glucose":{{"value":5.4,"unit":"mmol/L"}},"seq":{round},"meal":"fasting"}}"#, t * 1000).as_bytes(),
    );
    broker.publish(
        "rpm/senml/0024befffe804ff1",
        format!(r#"[{{"bn":"urn:dev:mac:0024befffe804ff1:","bt":{t},"n":"body_temperature","u":"[degF]","v":100.{round}}}]"#).as_bytes(),
    );
}

const KIT: &[(&str, &str)] = &[
    ("cuff-1", "p 1,a=b"), // a patient id full of line-protocol specials
    ("gluco-1", "p2"),
    ("0024befffe804ff1", "p3"),
];
/// A started gateway that takes the [`KIT`] devices from `broker` and
/// forwards to `url`.
fn kit_gateway(dir: &Path, broker: &Mosquitto, url: &str) -> Gateway {
    let mut gw = Gateway::new(dir, broker.port, KIT, &forward_section(url, ""));
    gw.start();
    gw
}

/// Readings per `publish_kit` round: 4 BP + 1 glucose + 1 temperature.
const PER_ROUND: i64 = 6;

/// MQTT → gateway → store → forwarder → VictoriaMetrics: every reading
/// arrives once with exact values, tags and timestamps; annotations arrive
/// as their own fields.
#[test]
fn every_reading_arrives_once_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let vm = VictoriaMetrics::start(dir.path());
    let broker = Mosquitto::start(dir.path());
    let mut gw = kit_gateway(dir.path(), &broker, &vm.url());
    for round in 0..3 {
        publish_kit(&broker, round);
    }
    wait_until("18 readings", T, || gw.readings() == 3 * PER_ROUND);
    wait_until("forwarder caught up", T, || caught_up(&gw));
    assert_forwarded(&gw, &vm, 18);
    // The glucometer's meal annotation is a field of the same point (VictoriaMetrics
    // keeps string fields as a series valued 0).
    let all = vm.export();
    assert_eq!(
        all.iter().filter(|s| s.name == "rpm_glucose_meal").count(),
        3,
        "{all:?}"
    );
    assert!(all
        .iter()
        .any(|s| s.labels.get("patient_id").map(String::as_str) == Some("p 1,a=b")));
    gw.stop();
    assert!(!gw.log().contains("p 1,a=b"), "PHI in the info log");
}

fn outage_secs() -> u64 {
    std::env::var("RPM_TEST_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60)
}

/// The server stops for a minute (override with RPM_TEST_OUTAGE_SECS) while
/// readings keep arriving: they are stored, the forwarder backs off, and when
/// the server returns everything arrives, each reading once.
#[test]
fn a_server_outage_of_minutes_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut vm = VictoriaMetrics::start(dir.path());
    let broker = Mosquitto::start(dir.path());
    let gw = kit_gateway(dir.path(), &broker, &vm.url());
    publish_kit(&broker, 0);
    wait_until("first round forwarded", T, || {
        gw.readings() == PER_ROUND && caught_up(&gw)
    });

    vm.stop();
    let outage = Duration::from_secs(outage_secs());
    let start = std::time::Instant::now();
    let mut round = 1;
    while start.elapsed() < outage {
        publish_kit(&broker, round);
        round += 1;
        std::thread::sleep(outage / 6);
    }
    let total = round as i64 * PER_ROUND;
    wait_until("all stored during the outage", T, || gw.readings() == total);
    assert!(
        !caught_up(&gw),
        "nothing can be forwarded while the server is down"
    );
    assert!(gw.log().contains("influxdb write failed"), "{}", gw.log());

    vm.restart();
    wait_until("forwarder caught up after the outage", T, || caught_up(&gw));
    assert_forwarded(&gw, &vm, total as usize);
    assert!(gw.log().contains("influxdb accepts writes again"));
}

/// kill -9 after the server accepted a batch and before the cursor moved:
/// on restart the batch is sent again, and since a point's identity is
/// (measurement, tags, timestamp) it leaves no duplicate (VictoriaMetrics
/// with -dedup.minScrapeInterval=1ms keeps one sample per series and
/// timestamp, as InfluxDB keeps one point).
#[test]
fn kill_9_between_write_and_cursor_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let vm = VictoriaMetrics::start_dedup(dir.path());
    let mut gw = filled(dir.path(), &vm.url(), "batch_size = 1000", 2500);
    gw.start_unready(&[("RPM_FAULT_INJECT", "abort-after-forward")]);
    let status = gw.wait_exit(T);
    assert!(!status.success(), "the fault injection aborts the gateway");
    assert_eq!(gw.cursor(CURSOR), 0, "the cursor did not move");
    let first = vm.values(1000, T);
    assert_eq!(
        first.len(),
        1000,
        "the first batch was written before the crash"
    );

    drain(&mut gw, &[]);
    assert_forwarded(&gw, &vm, 2500);
    gw.stop();
}

/// The batch re-sent after a crash is byte for byte the batch the server
/// already accepted: same measurement, tags, fields and timestamps, so
/// InfluxDB overwrites each point with itself.
#[test]
fn the_resent_batch_is_identical() {
    let dir = tempfile::tempdir().unwrap();
    let rec = InfluxRecorder::start();
    let mut gw = filled(dir.path(), &rec.url(), "batch_size = 100", 250);
    gw.start_unready(&[("RPM_FAULT_INJECT", "abort-after-forward")]);
    assert!(!gw.wait_exit(T).success());
    assert_eq!(rec.requests().len(), 1);
    drain(&mut gw, &[]);
    gw.stop();
    let reqs = rec.requests();
    assert_eq!(reqs.len(), 4, "the crashed batch again, then the rest");
    assert_eq!(reqs[1].body, reqs[0].body);
    assert_eq!(reqs[0].lines().len(), 100);
}

/// A real SIGKILL at an arbitrary moment while a backlog drains: restart,
/// and every reading arrives exactly once.
#[test]
fn kill_9_mid_drain_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let vm = VictoriaMetrics::start_dedup(dir.path());
    let mut gw = filled(dir.path(), &vm.url(), "batch_size = 500", 50_000);
    gw.start_unready(&[]);
    wait_until("some batches forwarded", T, || gw.cursor(CURSOR) >= 1000);
    gw.kill9();
    let at = gw.cursor(CURSOR);
    assert!(at < 50_000, "killed mid-drain (cursor {at})");
    drain(&mut gw, &[]);
    assert_forwarded(&gw, &vm, 50_000);
    gw.stop();
}

/// What real InfluxDB 2 checks and VictoriaMetrics does not: the request
/// itself. Path, org/bucket/precision, `Authorization: Token`, gzip.
#[test]
fn request_is_what_influxdb_2_expects() {
    for gzip in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let rec = InfluxRecorder::start();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "s3cret-token\n").unwrap();
        let mut gw = filled(
            dir.path(),
            &rec.url(),
            &format!("gzip = {gzip}\nbatch_size = 40\ntoken_file = \"token\""),
            100,
        );
        drain(&mut gw, &[]);
        gw.stop();
        let reqs = rec.requests();
        assert_eq!(reqs.len(), 3, "100 readings in batches of 40");
        for r in &reqs {
            assert_eq!(
                (r.method.as_str(), r.path.as_str()),
                ("POST", "/api/v2/write")
            );
            assert_eq!(r.param("org"), Some("rpm"));
            assert_eq!(r.param("bucket"), Some("readings"));
            assert_eq!(r.param("precision"), Some("ns"));
            assert_eq!(r.header("authorization"), Some("Token s3cret-token"));
            assert_eq!(
                r.header("content-encoding"),
                gzip.then_some("gzip"),
                "gzip {gzip}"
            );
            if gzip {
                assert_eq!(&r.raw[..2], &[0x1f, 0x8b], "a gzip body");
            }
        }
        let lines = rec.accepted_lines();
        assert_eq!(lines.len(), 100);
        // Reading 0 of the filler: patient p-0, device d-0, systolic 110,
        // annotated; timestamp in nanoseconds.
        let ts_ms = gw.count("SELECT measured_at FROM readings WHERE reading_id = 'fill-0'");
        assert_eq!(
            lines[0],
            format!("rpm_blood_pressure,device_id=d-0,metric=systolic,patient_id=p-0,source=mqtt,unit=mm[Hg] value=110,note=\"synthetic\" {}", ts_ms * 1_000_000)
        );
        assert_eq!(
            lines[1],
            format!("rpm_blood_pressure,device_id=d-1,metric=diastolic,patient_id=p-1,source=mqtt,unit=mm[Hg] value=70.1 {}", (ts_ms + 1) * 1_000_000)
        );
        assert!(!gw.log().contains("s3cret"), "the token is never logged");
    }
}

/// An InfluxDB behind a private CA: the forwarder trusts it through
/// `ca_file`, and without it refuses the connection (nothing is sent,
/// nothing is lost: the cursor stays put until the CA is configured).
#[test]
fn https_to_a_server_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::TestCa::new(dir.path());
    let rec = InfluxRecorder::start_tls(&ca);
    let mut gw = filled(dir.path(), &rec.url(), "batch_size = 40", 100);
    gw.start_until("influxdb write failed", &[]);
    assert!(rec.requests().is_empty(), "no request without trust");
    assert_eq!(gw.cursor(CURSOR), 0);
    assert_eq!(gw.count("SELECT COUNT(*) FROM quarantine"), 0);
    gw.stop();
    let trusted = format!("batch_size = 40\nca_file = \"{}\"", ca.ca.display());
    let mut gw = filled_again(dir.path(), &rec.url(), &trusted);
    drain(&mut gw, &[]);
    gw.stop();
    assert_eq!(rec.accepted_lines().len(), 100);
}

/// Real InfluxDB refuses the whole request for one bad line (400). The bad
/// point is found — named by the server's message, or by bisection when the
/// message names none — and quarantined with the server's message; the rest
/// of the batch proceeds, and the quarantined point is not sent again.
#[test]
fn a_rejected_point_is_quarantined_and_the_batch_proceeds() {
    let dir = tempfile::tempdir().unwrap();
    let rec = InfluxRecorder::start();
    rec.answer(|r| {
        if let Some(l) = r.lines().into_iter().find(|l| l.contains("device_id=d-17,")) {
            // InfluxDB 2 quotes the line it could not parse.
            return Answer::error(400, "invalid", &format!("unable to parse '{l}': invalid field format"));
        }
        if r.body.contains("device_id=d-42,") {
            // ... and names none on a type conflict.
            return Answer::error(400, "invalid", "partial write: field type conflict: input field \"value\" on measurement \"rpm_oximetry\" is type integer, already exists as type float dropped=1");
        }
        Answer::no_content()
    });
    let mut gw = filled(dir.path(), &rec.url(), "batch_size = 100", 300);
    // A tag ending in a backslash cannot be written: refused by the encoder.
    rusqlite::Connection::open(&gw.db)
        .unwrap()
        .execute(
            "UPDATE readings SET patient_id = 'p-5\\' WHERE device_id = 'd-5'",
            [],
        )
        .unwrap();
    drain(&mut gw, &[]);
    std::thread::sleep(Duration::from_millis(500));
    gw.stop();

    let accepted = rec.accepted_lines();
    assert_eq!(accepted.len(), 300 - 3);
    assert!(!accepted.iter().any(|l| l.contains("device_id=d-17,")
        || l.contains("device_id=d-42,")
        || l.contains("device_id=d-5,")));
    let unique: std::collections::BTreeSet<_> = accepted.iter().collect();
    assert_eq!(
        unique.len(),
        accepted.len(),
        "each good point accepted once"
    );

    let db = gw.db();
    let mut q = db
        .prepare("SELECT source, origin, device_id, reason, detail, CAST(payload AS TEXT) FROM quarantine ORDER BY device_id")
        .unwrap();
    let rows: Vec<(String, String, String, String, String, String)> = q
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    // The encoder's refusal keeps the reading itself, as JSON.
    let (source, _, device, reason, detail, payload) = &rows[2];
    assert_eq!(
        (source.as_str(), device.as_str(), reason.as_str()),
        ("influxdb", "d-5", "rejected_by_sink")
    );
    assert!(
        detail.starts_with("not sent: ") && detail.contains("backslash"),
        "{detail}"
    );
    let reading: serde_json::Value = serde_json::from_str(payload).unwrap();
    assert_eq!(reading["device_id"], "d-5");
    assert_eq!(reading["patient_id"], "p-5\\");
    assert!(reading["reading_id"].is_string(), "{payload}");
    for (row, device, message) in [
        (&rows[0], "d-17", "unable to parse"),
        (&rows[1], "d-42", "field type conflict"),
    ] {
        assert_eq!(
            (
                row.0.as_str(),
                row.1.as_str(),
                row.2.as_str(),
                row.3.as_str()
            ),
            ("influxdb", "influxdb", device, "rejected_by_sink")
        );
        assert!(
            row.4.starts_with("HTTP 400: ") && row.4.contains(message),
            "{}",
            row.4
        );
        assert!(
            row.5.starts_with("rpm_") && row.5.contains(&format!("device_id={device},")),
            "{}",
            row.5
        );
    }
    // Sent again only while being isolated, never after.
    let last_with_bad = rec
        .requests()
        .iter()
        .rposition(|r| r.body.contains("device_id=d-17,") || r.body.contains("device_id=d-42,"))
        .unwrap();
    assert_eq!(rec.requests()[last_with_bad].status, 400);
    assert!(rec.requests()[last_with_bad + 1..]
        .iter()
        .all(|r| r.status == 204));
}

/// 401, 404 (bucket not found), 429 and 503 with Retry-After are not the
/// data's fault: retried with backoff, nothing quarantined, nothing lost.
#[test]
fn auth_bucket_and_throttling_are_retried_not_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let rec = InfluxRecorder::start();
    let mut n = 0;
    rec.answer(move |_| {
        n += 1;
        match n {
            1 => Answer::error(401, "unauthorized", "unauthorized access"),
            2 => Answer::error(404, "not found", "bucket \"readings\" not found"),
            3 => Answer::error(429, "too many requests", "rate limited").retry_after(1),
            4 => Answer::error(503, "unavailable", "service unavailable").retry_after(1),
            _ => Answer::no_content(),
        }
    });
    let mut gw = filled(dir.path(), &rec.url(), "batch_size = 50", 120);
    drain(&mut gw, &[("RPM_INFLUXDB_TOKEN", "env-token")]);
    gw.stop();
    let reqs = rec.requests();
    let statuses: Vec<u16> = reqs.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401, 404, 429, 503, 204, 204, 204]);
    // The same first batch until accepted.
    assert!(reqs[..5].iter().all(|r| r.body == reqs[0].body));
    assert_eq!(reqs[0].header("authorization"), Some("Token env-token"));
    assert_eq!(rec.accepted_lines().len(), 120);
    assert_eq!(gw.count("SELECT COUNT(*) FROM quarantine"), 0);
    assert!(!gw.log().contains("env-token"));
}

/// Retention never prunes what is not forwarded; a low disk is reported
/// (the `store.disk_low` operational event, once) and nothing is dropped.
#[test]
fn retention_keeps_unforwarded_readings_and_disk_low_is_loud() {
    let dir = tempfile::tempdir().unwrap();
    let rec = InfluxRecorder::start();
    rec.answer(|_| Answer::error(503, "unavailable", "down"));
    let mut gw = filled(
        dir.path(),
        &rec.url(),
        "[retention]\nkeep = \"1h\"\ninterval = \"1s\"\nmin_free_percent = 99.9\n",
        100,
    );
    // Make them old: measured and stored two hours ago.
    {
        let c = rusqlite::Connection::open(&gw.db).unwrap();
        c.execute(
            "UPDATE readings SET measured_at = measured_at - 7200000, committed_at = committed_at - 7200000",
            [],
        )
        .unwrap();
    }
    gw.start_unready(&[]);
    wait_until("disk_low event", T, || {
        gw.count("SELECT COUNT(*) FROM outbox WHERE event_type = 'store.disk_low'") == 1
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        gw.count("SELECT COUNT(*) FROM outbox WHERE event_type = 'store.disk_low'"),
        1,
        "raised once, not every tick"
    );
    assert_eq!(gw.readings(), 100, "unforwarded readings are never pruned");
    let out = gw.cli(&["forward", "status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (s["disk_low"].as_bool(), s["backlog"].as_i64()),
        (Some(true), Some(100))
    );
    assert!(gw.log().contains("disk is low"));

    // The server returns: forwarded, then pruned.
    rec.answer(|_| Answer::no_content());
    wait_until("forwarded and pruned", T, || {
        caught_up(&gw) || gw.readings() == 0
    });
    wait_until("pruned", T, || gw.readings() == 0);
    assert_eq!(rec.accepted_lines().len(), 100);
    gw.stop();
}
