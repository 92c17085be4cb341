//! Health, readiness and metrics: unauthenticated, and free of PHI (counts
//! and states only, never an id or a value).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use super::problem::ApiError;
use super::ApiState;
use crate::store::Store;

/// `GET /healthz`: the process is alive and serving.
pub async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Sizes of the queues downstream of the store.
#[derive(Debug, Serialize, Default)]
pub struct Backlog {
    /// Highest committed reading sequence.
    readings_last_seq: i64,
    /// Highest outbox sequence.
    outbox_last_seq: i64,
    /// Durable cursor positions of downstream consumers (rules, delivery,
    /// forwarder) by name; compare with the sequences above.
    cursors: BTreeMap<String, i64>,
    /// Webhook deliveries by status (pending, failed, dead, delivered).
    deliveries: BTreeMap<String, i64>,
    /// Open quarantine entries.
    quarantine_open: i64,
}

fn backlog(s: &Store) -> Result<Backlog, ApiError> {
    let c = s.conn();
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

/// Whether a write transaction can be started now (the file is writable
/// and not locked for long).
fn store_writable(s: &Store) -> bool {
    let c = s.conn();
    let _ = c.busy_timeout(Duration::from_secs(2));
    let ok = c.execute_batch("BEGIN IMMEDIATE; ROLLBACK;").is_ok();
    let _ = c.busy_timeout(Duration::from_secs(10));
    ok
}

/// `GET /readyz`: 200 when the store is writable, its disk is not low, the
/// writer runs and the MQTT source (if configured) is connected; 503
/// otherwise. The body says which part is not ready and how large the
/// backlogs are. A missing BLE adapter is reported but does not make the
/// gateway unready: its other sources keep working.
pub async fn readyz(State(st): State<Arc<ApiState>>) -> Response {
    let probe = st.db.run(|s| Ok((store_writable(s), backlog(s)?))).await;
    let (writable, backlog) = match probe {
        Ok((w, b)) => (w, Some(b)),
        Err(_) => (false, None),
    };
    let writer = st.writer.is_running();
    let mqtt_connected = st.metrics.mqtt_connected();
    let mqtt_ok = !st.mqtt_configured || mqtt_connected;
    let disk_low = st.metrics.store_disk_low();
    let reconnect_loop = st.mqtt_configured && st.metrics.mqtt_reconnect_loop();
    let unavailable = st.metrics.store_unavailable();
    let ready =
        writable && writer && mqtt_ok && !disk_low && !reconnect_loop && unavailable.is_none();
    let mut reasons = Vec::new();
    if let Some(why) = &unavailable {
        reasons.push(why.clone());
    } else if !writable {
        reasons.push("store: cannot start a write transaction".to_string());
    }
    if !writer {
        reasons.push("store: the writer has stopped".into());
    }
    if disk_low {
        reasons.push("store: disk space is low".into());
    }
    if reconnect_loop {
        reasons.push(format!(
            "mqtt: reconnecting in a loop ({} or more lost connections within {} s)",
            crate::metrics::RECONNECT_LOOP_LOSSES,
            crate::metrics::RECONNECT_LOOP_WINDOW.as_secs()
        ));
    } else if !mqtt_ok {
        reasons.push("mqtt: not connected".into());
    }
    let ble_state = match (st.ble_configured, st.metrics.ble_adapter_available()) {
        (false, _) => "not_configured",
        (true, true) => "adapter_available",
        (true, false) => "no_adapter",
    };
    let body = serde_json::json!({
        "ready": ready,
        "reasons": reasons,
        "store": {"writable": writable, "writer_running": writer, "disk_low": disk_low,
                  "commits_failing": unavailable.is_some()},
        "mqtt": {"configured": st.mqtt_configured, "connected": mqtt_connected,
                 "reconnect_loop": reconnect_loop},
        "ble": {"state": ble_state, "connected_devices": st.metrics.ble_connected_devices()},
        "backlog": backlog,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// Gauges computed from the store at scrape time.
fn store_gauges(s: &Store) -> Result<String, ApiError> {
    let c = s.conn();
    let mut out = String::new();
    let mut family =
        |name: &str, kind: &str, help: &str, sql: &str, labels: &[&str]| -> Result<(), ApiError> {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let mut q = c.prepare_cached(sql)?;
            let n = labels.len();
            let mut rows = q.query([])?;
            while let Some(r) = rows.next()? {
                let mut ls = Vec::new();
                for (i, l) in labels.iter().enumerate() {
                    let v: Option<String> = r.get(i)?;
                    ls.push(format!(
                        "{l}=\"{}\"",
                        v.unwrap_or_else(|| "none".into())
                            .replace(['"', '\\', '\n'], "_")
                    ));
                }
                let v: f64 = r.get::<_, Option<f64>>(n)?.unwrap_or(0.0);
                if ls.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{}}} {v}", ls.join(","));
                }
            }
            Ok(())
        };
    family(
        "rpm_alerts",
        "gauge",
        "Alerts by status and severity.",
        "SELECT status, severity, COUNT(*) FROM alerts GROUP BY status, severity ORDER BY 1, 2",
        &["status", "severity"],
    )?;
    family(
        "rpm_deliveries",
        "gauge",
        "Webhook deliveries by status (pending and failed are the backlog).",
        "SELECT status, COUNT(*) FROM deliveries GROUP BY status ORDER BY 1",
        &["status"],
    )?;
    family("rpm_delivery_attempts_total", "counter", "Webhook delivery attempts by outcome.",
        "SELECT CASE WHEN error IS NULL AND http_status BETWEEN 200 AND 299 THEN 'success' ELSE 'failure' END AS o, COUNT(*) FROM delivery_attempts GROUP BY o ORDER BY o", &["outcome"])?;
    family(
        "rpm_delivery_attempt_latency_seconds_sum",
        "counter",
        "Total latency of webhook delivery attempts.",
        "SELECT SUM(latency_ms) / 1000.0 FROM delivery_attempts",
        &[],
    )?;
    family(
        "rpm_outbox_last_seq",
        "gauge",
        "Highest outbox sequence.",
        "SELECT COALESCE(MAX(seq), 0) FROM outbox",
        &[],
    )?;
    family(
        "rpm_readings_last_seq",
        "gauge",
        "Highest committed reading sequence.",
        "SELECT COALESCE(MAX(seq), 0) FROM readings",
        &[],
    )?;
    family(
        "rpm_cursor_position",
        "gauge",
        "Durable position of each downstream consumer.",
        "SELECT name, position FROM cursors ORDER BY name",
        &["cursor"],
    )?;
    family(
        "rpm_quarantine_open",
        "gauge",
        "Open quarantine entries by reason.",
        "SELECT reason, COUNT(*) FROM quarantine WHERE status = 'open' GROUP BY reason ORDER BY 1",
        &["reason"],
    )?;
    family(
        "rpm_devices",
        "gauge",
        "Registered devices by connection state (BLE: connected/disconnected).",
        "SELECT COALESCE(connection, 'none'), COUNT(*) FROM devices GROUP BY 1 ORDER BY 1",
        &["connection"],
    )?;
    family("rpm_webhook_endpoints", "gauge", "Webhook endpoints by state.",
        "SELECT CASE WHEN enabled = 1 THEN 'enabled' ELSE 'disabled' END, COUNT(*) FROM webhook_endpoints GROUP BY 1 ORDER BY 1", &["state"])?;
    Ok(out)
}

/// `GET /metrics`: Prometheus text format: the process counters, then
/// gauges read from the store.
pub async fn metrics(State(st): State<Arc<ApiState>>) -> Response {
    let mut body = st.metrics.render();
    match st.db.run(|s| store_gauges(s)).await {
        Ok(g) => body.push_str(&g),
        Err(_) => body.push_str("# store gauges unavailable\n"),
    }
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
