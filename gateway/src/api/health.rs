//! Health, readiness and metrics: unauthenticated, and free of PHI (counts
//! and states only, never an id or a value).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use super::problem::ApiError;
use super::ApiState;
use crate::store::{stats, Store};

/// `GET /healthz`: the process is alive and serving.
pub async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

fn backlog(s: &Store) -> Result<stats::Backlog, ApiError> {
    Ok(stats::backlog(s.conn())?)
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
    let upstream_refused = st.metrics.upstream_refused();
    let fhir_refused = st.metrics.fhir_refused();
    let ready = writable
        && writer
        && mqtt_ok
        && !disk_low
        && !reconnect_loop
        && unavailable.is_none()
        && upstream_refused.is_none()
        && fhir_refused.is_none();
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
    if let Some(why) = &upstream_refused {
        reasons.push(format!(
            "upstream: the hub refuses this box's readings ({why}); they are held, not skipped"
        ));
    }
    if let Some(why) = &fhir_refused {
        reasons.push(format!(
            "fhir: the EHR refuses the gateway's push ({why}); records are held, not skipped"
        ));
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
        // A box works on while its hub is away (no effect on readiness):
        // `reachable` says whether the last write reached it.
        "upstream": {"refused": upstream_refused.is_some(), "reachable": st.metrics.upstream_up()},
        // Like the hub: an EHR that is away costs delay only (no effect on readiness).
        "fhir": {"refused": fhir_refused.is_some(), "reachable": st.metrics.fhir_up()},
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
    let mut out = String::new();
    for f in stats::gauges(s.conn())? {
        let name = f.name;
        let _ = writeln!(out, "# HELP {name} {}", f.help);
        let _ = writeln!(out, "# TYPE {name} {}", f.kind);
        for (values, v) in f.samples {
            let ls: Vec<String> = f
                .labels
                .iter()
                .zip(values)
                .map(|(l, v)| {
                    format!(
                        "{l}=\"{}\"",
                        v.unwrap_or_else(|| "none".into())
                            .replace(['"', '\\', '\n'], "_")
                    )
                })
                .collect();
            if ls.is_empty() {
                let _ = writeln!(out, "{name} {v}");
            } else {
                let _ = writeln!(out, "{name}{{{}}} {v}", ls.join(","));
            }
        }
    }
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
