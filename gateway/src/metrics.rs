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

    /// An API request answered (route template, never the concrete path).
    pub fn api_request(&self, method: &str, route: &str, status: u16) {
        let route = if route.is_empty() { "unmatched" } else { route };
        self.add(
            "rpm_api_requests_total",
            format!("method=\"{method}\",route=\"{route}\",status=\"{status}\""),
            1,
        );
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
        out
    }
}
