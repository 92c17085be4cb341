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
    gauges: Mutex<BTreeMap<(&'static str, String), f64>>,
    forward: ForwardGauges,
    ble_adapter: AtomicI64,
    ble_links: AtomicI64,
    inbox_pending: AtomicI64,
    health: Health,
}

/// Losses of the MQTT connection within this window that make a
/// reconnect loop (readiness reports it).
pub const RECONNECT_LOOP_WINDOW: Duration = Duration::from_secs(60);
/// How many losses within [`RECONNECT_LOOP_WINDOW`] make a loop.
pub const RECONNECT_LOOP_LOSSES: usize = 5;

/// What readiness needs beyond connection flags: a source reconnecting in
/// a loop, a store whose commits keep failing.
#[derive(Default)]
struct Health {
    mqtt_losses: AtomicU64,
    mqtt_recent_losses: Mutex<std::collections::VecDeque<std::time::Instant>>,
    /// Why the store cannot be written (commits failing, or the store could
    /// not be opened at start); None when it can.
    store_unavailable: Mutex<Option<String>>,
    store_failure_episodes: AtomicU64,
    /// Why the upstream hub refuses this box's batches, while it does.
    upstream_refused: Mutex<Option<String>>,
    /// Why the EHR (its token endpoint) refuses the FHIR push, while it does.
    fhir_refused: Mutex<Option<String>>,
}

/// Gauges of the forwarders and the store's disk.
#[derive(Default)]
struct ForwardGauges {
    backlog: AtomicI64,
    up: AtomicI64,
    disk_free_bytes: AtomicI64,
    disk_low: AtomicI64,
}

/// `rpm_<sink>_<what>` for the sinks the forwarder knows.
fn sink_gauge(sink: &str, what: &str) -> &'static str {
    match (sink, what) {
        ("upstream", "backlog") => "rpm_upstream_backlog",
        ("upstream", "up") => "rpm_upstream_up",
        ("upstream", _) => "rpm_upstream_refused",
        ("fhir", "backlog") => "rpm_fhir_backlog",
        ("fhir", "up") => "rpm_fhir_up",
        ("fhir", _) => "rpm_fhir_refused",
        (_, "refused") => "rpm_forward_refused",
        (_, "up") => "rpm_forward_up",
        _ => "rpm_forward_backlog",
    }
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

    /// Inbox entries appended (+) or normalized (-).
    pub fn inbox_pending(&self, delta: i64) {
        self.inbox_pending.fetch_add(delta, Ordering::Relaxed);
    }

    /// A store commit failed.
    pub fn store_failure(&self) {
        self.store_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The MQTT connection was lost (or dropped by the gateway to get
    /// unacknowledged messages redelivered).
    pub fn mqtt_connection_lost(&self) {
        self.health.mqtt_losses.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut q) = self.health.mqtt_recent_losses.lock() {
            let now = std::time::Instant::now();
            q.push_back(now);
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) > RECONNECT_LOOP_WINDOW)
            {
                q.pop_front();
            }
            while q.len() > RECONNECT_LOOP_LOSSES * 4 {
                q.pop_front();
            }
        }
    }

    /// Whether the MQTT source is reconnecting in a loop: at least
    /// [`RECONNECT_LOOP_LOSSES`] connection losses within the last
    /// [`RECONNECT_LOOP_WINDOW`].
    pub fn mqtt_reconnect_loop(&self) -> bool {
        let Ok(q) = self.health.mqtt_recent_losses.lock() else {
            return false;
        };
        let now = std::time::Instant::now();
        q.iter()
            .filter(|t| now.duration_since(**t) <= RECONNECT_LOOP_WINDOW)
            .count()
            >= RECONNECT_LOOP_LOSSES
    }

    /// The store cannot be written now (`Some(why)`), or can again (None).
    /// Returns true when this starts an episode (it was writable before).
    pub fn set_store_unavailable(&self, why: Option<String>) -> bool {
        let Ok(mut s) = self.health.store_unavailable.lock() else {
            return false;
        };
        let starts = s.is_none() && why.is_some();
        if starts {
            self.health
                .store_failure_episodes
                .fetch_add(1, Ordering::Relaxed);
        }
        *s = why;
        starts
    }

    /// Why the store cannot be written, if it cannot.
    pub fn store_unavailable(&self) -> Option<String> {
        self.health
            .store_unavailable
            .lock()
            .ok()
            .and_then(|s| s.clone())
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

    /// A request refused for want of a valid token (`missing`, `invalid`).
    pub fn api_auth_failure(&self, reason: &str) {
        self.add(
            "rpm_api_auth_failures_total",
            format!("reason=\"{reason}\""),
            1,
        );
    }

    /// A request or connection refused by a limit (`client`, `token`, `connections`).
    pub fn api_rate_limited(&self, limit: &str) {
        self.add(
            "rpm_api_rate_limited_total",
            format!("limit=\"{limit}\""),
            1,
        );
    }

    fn gauge(&self, name: &'static str, labels: String, v: f64) {
        if let Ok(mut g) = self.gauges.lock() {
            g.insert((name, labels), v);
        }
    }

    /// Measurements evaluated by the rule engine.
    pub fn rules_evaluated(&self, measurements: usize) {
        self.add(
            "rpm_rules_evaluations_total",
            String::new(),
            measurements as u64,
        );
    }

    /// A rule batch evaluated again inside its write transaction because
    /// an enrolment or alert state changed after its snapshot.
    pub fn rules_reevaluated(&self) {
        self.add("rpm_rules_reevaluations_total", String::new(), 1);
    }

    /// Alert transitions by kind (`fire`, `update`, `resolve`).
    pub fn rules_transitions(&self, kind: &str, n: usize) {
        self.add(
            "rpm_alert_transitions_total",
            format!("kind=\"{kind}\""),
            n as u64,
        );
    }

    /// Follow-up tasks that went overdue, and escalation tiers reached.
    pub fn follow_ups_escalated(&self, overdue: usize, escalated: usize) {
        self.add("rpm_tasks_overdue_total", String::new(), overdue as u64);
        self.add("rpm_tasks_escalated_total", String::new(), escalated as u64);
    }

    /// An escalation pass failed and will be retried.
    pub fn escalation_failure(&self) {
        self.add("rpm_escalation_failures_total", String::new(), 1);
    }

    /// A rule evaluation (or missing-data tick) failed and will be retried.
    pub fn rules_failure(&self) {
        self.add("rpm_rules_failures_total", String::new(), 1);
    }

    /// A rule reload (SIGHUP) succeeded or was refused.
    pub fn rules_reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "refused" };
        self.add("rpm_rules_reloads_total", format!("result=\"{result}\""), 1);
    }

    /// Open alerts by state.
    pub fn set_alerts_open(&self, firing: i64, acknowledged: i64) {
        self.gauge("rpm_alerts_open", "status=\"firing\"".into(), firing as f64);
        self.gauge(
            "rpm_alerts_open",
            "status=\"acknowledged\"".into(),
            acknowledged as f64,
        );
    }

    /// Seconds between the commit of the newest reading of the last rule
    /// batch and its evaluation.
    pub fn set_rules_lag(&self, seconds: f64) {
        self.gauge("rpm_rules_evaluation_lag_seconds", String::new(), seconds);
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

    /// Readings committed but not yet accepted by `sink` (`influxdb` keeps
    /// its unlabelled `rpm_forward_backlog`; others get `rpm_<sink>_backlog`).
    pub fn set_sink_backlog(&self, sink: &'static str, readings: i64) {
        match sink {
            "influxdb" => self.set_forward_backlog(readings),
            _ => self.gauge(sink_gauge(sink, "backlog"), String::new(), readings as f64),
        }
    }

    /// Whether the last write to `sink` got an answer.
    pub fn set_sink_up(&self, sink: &'static str, up: bool) {
        match sink {
            "influxdb" => self.set_forward_up(up),
            _ => self.gauge(
                sink_gauge(sink, "up"),
                String::new(),
                f64::from(u8::from(up)),
            ),
        }
    }

    /// Why `sink` refuses the batch it holds (`None`: it does not).
    /// The upstream hub's and the EHR's refusals make the gateway not ready.
    pub fn set_sink_refused(&self, sink: &'static str, why: Option<String>) {
        self.gauge(
            sink_gauge(sink, "refused"),
            String::new(),
            f64::from(u8::from(why.is_some())),
        );
        let held = match sink {
            "upstream" => &self.health.upstream_refused,
            "fhir" => &self.health.fhir_refused,
            _ => return,
        };
        if let Ok(mut r) = held.lock() {
            *r = why;
        }
    }

    /// Why the EHR refuses the FHIR push, while it does.
    pub fn fhir_refused(&self) -> Option<String> {
        self.health.fhir_refused.lock().ok().and_then(|r| r.clone())
    }

    /// Whether the FHIR push's last request got an answer (`None`: none yet).
    pub fn fhir_up(&self) -> Option<bool> {
        let g = self.gauges.lock().ok()?;
        g.get(&(sink_gauge("fhir", "up"), String::new()))
            .map(|v| *v >= 1.0)
    }

    /// Why the upstream hub refuses this box's readings, while it does.
    pub fn upstream_refused(&self) -> Option<String> {
        self.health
            .upstream_refused
            .lock()
            .ok()
            .and_then(|r| r.clone())
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
            ("rpm_inbox_pending", "gauge", &self.inbox_pending),
            ("rpm_forward_backlog", "gauge", &g.backlog),
            ("rpm_forward_up", "gauge", &g.up),
            ("rpm_store_disk_free_bytes", "gauge", &g.disk_free_bytes),
            ("rpm_store_disk_low", "gauge", &g.disk_low),
        ] {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        }
    }

    /// A sink's backlog as last set (`None`: not set yet).
    pub fn sink_backlog(&self, sink: &'static str) -> Option<i64> {
        if sink == "influxdb" {
            return Some(self.forward_backlog());
        }
        let g = self.gauges.lock().ok()?;
        g.get(&(sink_gauge(sink, "backlog"), String::new()))
            .map(|v| *v as i64)
    }

    /// Whether the last write to the upstream hub got an answer (`None`:
    /// none tried yet, or no upstream).
    pub fn upstream_up(&self) -> Option<bool> {
        let g = self.gauges.lock().ok()?;
        g.get(&(sink_gauge("upstream", "up"), String::new()))
            .map(|v| *v >= 1.0)
    }

    /// BLE adapter state: usable or not (no D-Bus, no BlueZ, no adapter).
    pub fn set_ble_adapter(&self, up: bool) {
        self.ble_adapter.store(up as i64, Ordering::Relaxed);
    }

    /// Whether the BLE source has a usable adapter (readiness).
    pub fn ble_adapter_available(&self) -> bool {
        self.ble_adapter.load(Ordering::Relaxed) == 1
    }

    /// BLE devices connected now.
    pub fn ble_connected_devices(&self) -> i64 {
        self.ble_links.load(Ordering::Relaxed)
    }

    /// A BLE connect abandoned after `connect_timeout` (the link is torn
    /// down with `Device1.Disconnect` and the device retried with backoff).
    pub fn ble_connect_timeout(&self) {
        self.add("rpm_ble_connect_timeouts_total", String::new(), 1);
    }

    /// A glucometer's record numbers restarted (reset or replaced meter).
    pub fn ble_sequence_reset(&self) {
        self.add("rpm_ble_sequence_resets_total", String::new(), 1);
    }

    /// A BLE device refused its measurements until it is paired (bonded).
    pub fn ble_pairing_required(&self) {
        self.add("rpm_ble_pairing_required_total", String::new(), 1);
    }

    /// A BLE device link opened (+1) or closed (-1).
    pub fn ble_links(&self, delta: i64) {
        self.ble_links.fetch_add(delta, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        /// One sample line; an empty label set is written without braces.
        fn sample(out: &mut String, name: &str, labels: &str, v: impl std::fmt::Display) {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {v}");
            }
        }
        let mut out = String::new();
        let mut last = "";
        if let Ok(c) = self.counters.lock() {
            for ((name, labels), v) in c.iter() {
                if *name != last {
                    let _ = writeln!(out, "# TYPE {name} counter");
                    last = name;
                }
                sample(&mut out, name, labels, v);
            }
        }
        if let Ok(g) = self.gauges.lock() {
            let mut last: &str = "";
            for ((name, labels), v) in g.iter() {
                if *name != last {
                    let _ = writeln!(out, "# TYPE {name} gauge");
                    last = *name;
                }
                sample(&mut out, name, labels, v);
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
        for (name, kind, v) in [
            (
                "rpm_mqtt_connection_losses_total",
                "counter",
                self.health.mqtt_losses.load(Ordering::Relaxed),
            ),
            (
                "rpm_mqtt_reconnect_loop",
                "gauge",
                self.mqtt_reconnect_loop() as u64,
            ),
            (
                "rpm_store_unavailable",
                "gauge",
                self.store_unavailable().is_some() as u64,
            ),
            (
                "rpm_store_failure_episodes_total",
                "counter",
                self.health.store_failure_episodes.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {v}");
        }
        self.render_forward(&mut out);
        let _ = writeln!(out, "# TYPE rpm_ble_adapter_available gauge");
        let _ = writeln!(
            out,
            "rpm_ble_adapter_available {}",
            self.ble_adapter.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE rpm_ble_connected_devices gauge");
        let _ = writeln!(
            out,
            "rpm_ble_connected_devices {}",
            self.ble_links.load(Ordering::Relaxed)
        );
        out
    }
}

/// Webhook delivery (labelled by endpoint id: configured names, never PHI).
impl Metrics {
    /// A webhook attempt finished: `outcome` is delivered | retry | failed |
    /// gone | dead; labelled by endpoint id (configured names, not PHI).
    pub fn webhook_attempt(&self, endpoint: &str, outcome: &str, latency: Duration) {
        self.add(
            "rpm_webhook_attempts_total",
            format!("endpoint=\"{endpoint}\",outcome=\"{outcome}\""),
            1,
        );
        self.add(
            "rpm_webhook_attempt_milliseconds_total",
            format!("endpoint=\"{endpoint}\""),
            latency.as_millis() as u64,
        );
    }

    /// Deliveries queued for endpoints by the fan-out.
    pub fn webhook_queued(&self, n: usize) {
        self.add(
            "rpm_webhook_deliveries_queued_total",
            String::new(),
            n as u64,
        );
    }

    /// An endpoint's circuit breaker opened (the endpoint is paused).
    pub fn webhook_breaker_opened(&self, endpoint: &str) {
        self.add(
            "rpm_webhook_breaker_opened_total",
            format!("endpoint=\"{endpoint}\""),
            1,
        );
    }
}
