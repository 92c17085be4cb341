//! Process metrics, rendered in the Prometheus text format.
//!
//! Counters are labelled by source and reason code only: never by patient or
//! device (no PHI in metrics, and bounded cardinality).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// All metrics of one gateway process.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
    batch_count: AtomicU64,
    batch_items: AtomicU64,
    batch_micros: AtomicU64,
    store_failures: AtomicU64,
    mqtt_connected: AtomicI64,
    forward: ForwardGauges,
}

/// Gauges of the forwarder and the store's disk (issue 8).
#[derive(Default)]
struct ForwardGauges {
    backlog: AtomicI64,
    up: AtomicI64,
    disk_free_bytes: AtomicI64,
    disk_low: AtomicI64,
}

impl Metrics {
    fn add(&self, name: &'static str, labels: String, n: u64) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entry((name, labels)).or_default() += n;
        }
    }

    /// Readings newly stored.
    pub fn stored(&self, source: &str, n: usize) {
        self.add(
            "rpm_readings_stored_total",
            format!("source=\"{source}\""),
            n as u64,
        );
    }

    /// Readings that were already stored (redeliveries, resends).
    pub fn duplicates(&self, source: &str, n: usize) {
        self.add(
            "rpm_readings_duplicate_total",
            format!("source=\"{source}\""),
            n as u64,
        );
    }

    /// An input (or measurement) quarantined.
    pub fn quarantined(&self, source: &str, reason: &str) {
        self.add(
            "rpm_readings_quarantined_total",
            format!("source=\"{source}\",reason=\"{reason}\""),
            1,
        );
    }

    /// A message received from a source.
    pub fn received(&self, source: &str) {
        self.add(
            "rpm_messages_received_total",
            format!("source=\"{source}\""),
            1,
        );
    }

    /// A store batch committed (or failed) after `took`.
    pub fn store_batch(&self, items: usize, took: Duration) {
        self.batch_count.fetch_add(1, Ordering::Relaxed);
        self.batch_items.fetch_add(items as u64, Ordering::Relaxed);
        self.batch_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// A store commit failed.
    pub fn store_failure(&self) {
        self.store_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// MQTT connection state.
    pub fn set_mqtt_connected(&self, up: bool) {
        self.mqtt_connected.store(up as i64, Ordering::Relaxed);
    }

    /// Whether the MQTT source is connected.
    pub fn mqtt_connected(&self) -> bool {
        self.mqtt_connected.load(Ordering::Relaxed) == 1
    }

    /// Points a sink accepted.
    pub fn forwarded(&self, sink: &str, points: usize) {
        self.add(
            "rpm_forward_points_total",
            format!("sink=\"{sink}\""),
            points as u64,
        );
        self.add("rpm_forward_batches_total", format!("sink=\"{sink}\""), 1);
    }

    /// A failed write to a sink, by kind (`unreachable`, `timeout`,
    /// `server_error`, `throttled`, `unauthorized`, `not_found`, `rejected`).
    pub fn forward_failure(&self, sink: &str, kind: &str) {
        self.add(
            "rpm_forward_failures_total",
            format!("sink=\"{sink}\",kind=\"{kind}\""),
            1,
        );
    }

    /// Readings committed but not yet accepted by the sink.
    pub fn set_forward_backlog(&self, readings: i64) {
        self.forward.backlog.store(readings, Ordering::Relaxed);
    }

    /// Readings waiting to be forwarded.
    pub fn forward_backlog(&self) -> i64 {
        self.forward.backlog.load(Ordering::Relaxed)
    }

    /// Whether the last write to the sink succeeded.
    pub fn set_forward_up(&self, up: bool) {
        self.forward.up.store(up as i64, Ordering::Relaxed);
    }

    /// Readings removed by the retention policy.
    pub fn pruned(&self, readings: usize) {
        self.add(
            "rpm_store_pruned_total",
            "policy=\"retention\"".into(),
            readings as u64,
        );
    }

    /// Free space of the store's file system and whether it counts as low.
    pub fn set_disk(&self, free_bytes: u64, low: bool) {
        self.forward.disk_free_bytes.store(
            i64::try_from(free_bytes).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        self.forward.disk_low.store(low as i64, Ordering::Relaxed);
    }

    /// Whether the store's disk is low (readiness reports not ready).
    pub fn store_disk_low(&self) -> bool {
        self.forward.disk_low.load(Ordering::Relaxed) == 1
    }

    fn render_forward(&self, out: &mut String) {
        let g = &self.forward;
        for (name, kind, v) in [
            ("rpm_forward_backlog", "gauge", &g.backlog),
            ("rpm_forward_up", "gauge", &g.up),
            ("rpm_store_disk_free_bytes", "gauge", &g.disk_free_bytes),
            ("rpm_store_disk_low", "gauge", &g.disk_low),
        ] {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut last = "";
        if let Ok(c) = self.counters.lock() {
            for ((name, labels), v) in c.iter() {
                if *name != last {
                    let _ = writeln!(out, "# TYPE {name} counter");
                    last = name;
                }
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
        let secs = self.batch_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "# TYPE rpm_store_batch_seconds summary");
        let _ = writeln!(out, "rpm_store_batch_seconds_sum {secs}");
        let _ = writeln!(
            out,
            "rpm_store_batch_seconds_count {}",
            self.batch_count.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE rpm_store_batch_items_total counter");
        let _ = writeln!(
            out,
            "rpm_store_batch_items_total {}",
            self.batch_items.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE rpm_store_failures_total counter");
        let _ = writeln!(
            out,
            "rpm_store_failures_total {}",
            self.store_failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE rpm_mqtt_connected gauge");
        let _ = writeln!(
            out,
            "rpm_mqtt_connected {}",
            self.mqtt_connected.load(Ordering::Relaxed)
        );
        self.render_forward(&mut out);
        out
    }
}
