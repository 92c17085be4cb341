//! Counts across the store's tables for health and metrics.
//!
//! Readiness reports how far downstream consumers are behind and the
//! Prometheus scrape exports gauges computed from the tables at scrape time.
//! These are read-only aggregates spanning many tables (readings, outbox,
//! cursors, deliveries, quarantine, alerts, devices, webhook endpoints), so
//! they live together here rather than one count in each owner: what the
//! API sees is typed counts and labelled samples, never SQL, and no value
//! or id ever leaves (counts and states only, free of PHI).

use rusqlite::Connection;
use serde::Serialize;
use std::collections::BTreeMap;

use super::StoreError;

/// Sizes of the queues downstream of the store.
#[derive(Debug, Serialize, Default)]
pub struct Backlog {
    /// Highest committed reading sequence.
    pub readings_last_seq: i64,
    /// Highest outbox sequence.
    pub outbox_last_seq: i64,
    /// Durable cursor positions of downstream consumers (rules, delivery,
    /// forwarder) by name; compare with the sequences above.
    pub cursors: BTreeMap<String, i64>,
    /// Webhook deliveries by status (pending, failed, dead, delivered).
    pub deliveries: BTreeMap<String, i64>,
    /// Open quarantine entries.
    pub quarantine_open: i64,
}

/// The backlog as readiness reports it.
pub fn backlog(c: &Connection) -> Result<Backlog, StoreError> {
    let mut b = Backlog {
        readings_last_seq: c.query_row("SELECT COALESCE(MAX(seq), 0) FROM readings", [], |r| {
            r.get(0)
        })?,
        outbox_last_seq: c
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM outbox", [], |r| r.get(0))?,
        quarantine_open: c.query_row(
            "SELECT COUNT(*) FROM quarantine WHERE status = 'open'",
            [],
            |r| r.get(0),
        )?,
        ..Default::default()
    };
    let mut q = c.prepare_cached("SELECT name, position FROM cursors ORDER BY name")?;
    for row in q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
        let (k, v) = row?;
        b.cursors.insert(k, v);
    }
    let mut q = c.prepare_cached(
        "SELECT status, COUNT(*) FROM deliveries GROUP BY status ORDER BY status",
    )?;
    for row in q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
        let (k, v) = row?;
        b.deliveries.insert(k, v);
    }
    Ok(b)
}

/// One metric family computed from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeFamily {
    /// Metric name.
    pub name: &'static str,
    /// `gauge` or `counter`.
    pub kind: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Label names, in the order of each sample's label values.
    pub labels: &'static [&'static str],
    /// Label values (None where the column was NULL) and the value (0 where NULL).
    pub samples: Vec<(Vec<Option<String>>, f64)>,
}

/// (name, kind, help, query, labels): each query selects the label values
/// then the value.
const FAMILIES: &[(&str, &str, &str, &str, &[&str])] = &[
    (
        "rpm_alerts",
        "gauge",
        "Alerts by status and severity.",
        "SELECT status, severity, COUNT(*) FROM alerts GROUP BY status, severity ORDER BY 1, 2",
        &["status", "severity"],
    ),
    (
        "rpm_deliveries",
        "gauge",
        "Webhook deliveries by status (pending and failed are the backlog).",
        "SELECT status, COUNT(*) FROM deliveries GROUP BY status ORDER BY 1",
        &["status"],
    ),
    ("rpm_delivery_attempts_total", "counter", "Webhook delivery attempts by outcome.",
        "SELECT CASE WHEN error IS NULL AND http_status BETWEEN 200 AND 299 THEN 'success' ELSE 'failure' END AS o, COUNT(*) FROM delivery_attempts GROUP BY o ORDER BY o", &["outcome"]),
    (
        "rpm_delivery_attempt_latency_seconds_sum",
        "counter",
        "Total latency of webhook delivery attempts.",
        "SELECT SUM(latency_ms) / 1000.0 FROM delivery_attempts",
        &[],
    ),
    (
        "rpm_outbox_last_seq",
        "gauge",
        "Highest outbox sequence.",
        "SELECT COALESCE(MAX(seq), 0) FROM outbox",
        &[],
    ),
    (
        "rpm_boxes",
        "gauge",
        "Home boxes that push to this hub, silent (box.silent raised) or in contact.",
        "SELECT CASE WHEN silent = 1 THEN 'silent' ELSE 'in_contact' END AS st, COUNT(*) FROM boxes GROUP BY st ORDER BY st",
        &["state"],
    ),
    (
        "rpm_boxes_backlog_readings",
        "gauge",
        "Readings the home boxes hold that this hub has not taken, as they last reported.",
        "SELECT COALESCE(SUM(backlog), 0) FROM boxes",
        &[],
    ),
    (
        "rpm_readings_last_seq",
        "gauge",
        "Highest committed reading sequence.",
        "SELECT COALESCE(MAX(seq), 0) FROM readings",
        &[],
    ),
    (
        "rpm_cursor_position",
        "gauge",
        "Durable position of each downstream consumer.",
        "SELECT name, position FROM cursors ORDER BY name",
        &["cursor"],
    ),
    (
        "rpm_quarantine_open",
        "gauge",
        "Open quarantine entries by reason.",
        "SELECT reason, COUNT(*) FROM quarantine WHERE status = 'open' GROUP BY reason ORDER BY 1",
        &["reason"],
    ),
    (
        "rpm_devices",
        "gauge",
        "Registered devices by connection state (BLE: connected/disconnected).",
        "SELECT COALESCE(connection, 'none'), COUNT(*) FROM devices GROUP BY 1 ORDER BY 1",
        &["connection"],
    ),
    ("rpm_webhook_endpoints", "gauge", "Webhook endpoints by state.",
        "SELECT CASE WHEN enabled = 1 THEN 'enabled' ELSE 'disabled' END, COUNT(*) FROM webhook_endpoints GROUP BY 1 ORDER BY 1", &["state"]),
];

/// The gauges computed from the store, in export order.
pub fn gauges(c: &Connection) -> Result<Vec<GaugeFamily>, StoreError> {
    let mut out = Vec::with_capacity(FAMILIES.len());
    for &(name, kind, help, sql, labels) in FAMILIES {
        let mut q = c.prepare_cached(sql)?;
        let n = labels.len();
        let mut rows = q.query([])?;
        let mut samples = Vec::new();
        while let Some(r) = rows.next()? {
            let mut ls = Vec::with_capacity(n);
            for i in 0..n {
                ls.push(r.get::<_, Option<String>>(i)?);
            }
            samples.push((ls, r.get::<_, Option<f64>>(n)?.unwrap_or(0.0)));
        }
        out.push(GaugeFamily {
            name,
            kind,
            help,
            labels,
            samples,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_fresh_store_has_an_empty_backlog_and_every_family() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("s.db")).expect("open");
        let b = backlog(store.conn()).expect("backlog");
        assert_eq!(b.readings_last_seq, 0);
        assert_eq!(b.quarantine_open, 0);
        let g = gauges(store.conn()).expect("gauges");
        assert_eq!(g.len(), FAMILIES.len());
        let seq = g
            .iter()
            .find(|f| f.name == "rpm_readings_last_seq")
            .expect("family");
        assert_eq!(seq.samples, vec![(vec![], 0.0)]);
    }
}
