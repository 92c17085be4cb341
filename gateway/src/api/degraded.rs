//! Degraded mode: the gateway is up, the store is not (yet) usable.
//!
//! A home gateway whose disk is full must not exit and restart in a loop
//! (nothing would then answer a health check, and nobody would see why).
//! When the store cannot be opened or written at start for a reason that
//! time may cure (a full disk, an I/O error), the gateway serves
//! `/healthz` (200: the process is alive), `/readyz` (503 with the reason)
//! and `/metrics`, ingests nothing (MQTT input stays queued at the broker,
//! unacknowledged), retries at growing intervals, and starts normally as
//! soon as the store can be written again. Every other route answers 503.
//!
//! This module serves the degraded routes; the waiting is the runtime's
//! (`crate::runtime`), which hands the socket on to the API proper.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use tokio::sync::watch;

use super::config::ApiConfig;
use super::listener::Listener;
use super::problem::ApiError;
use super::{server, ApiStartError};
use crate::metrics::Metrics;

/// Binds the API address and serves the degraded routes until `stop`; the
/// socket stays open for the API proper.
pub async fn serve(
    cfg: &ApiConfig,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<(tokio::task::JoinHandle<()>, Listener), ApiStartError> {
    let cfg = cfg.clone();
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => Some(crate::tls::acceptor(c, k)?),
        _ => None,
    };
    let listener = Listener::bind(&cfg).await?;
    tracing::info!(addr = %listener.addr(), "api listening (degraded: the store is unavailable)");
    let app = Router::new()
        .route("/healthz", get(super::health::healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(|State(m): State<Arc<Metrics>>| async move {
            let why = m.store_unavailable().unwrap_or_default();
            ApiError::Unavailable(format!("{why}; the gateway is waiting for its store"))
        })
        .with_state(metrics.clone());
    let shared = listener.shared()?;
    let task = tokio::spawn(async move {
        server::serve(
            shared,
            app,
            tls,
            server::Bounds::from(&cfg),
            metrics,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )
        .await;
    });
    Ok((task, listener))
}

async fn readyz(State(m): State<Arc<Metrics>>) -> Response {
    let why = m
        .store_unavailable()
        .unwrap_or_else(|| "store: starting".into());
    let body = serde_json::json!({
        "ready": false,
        "degraded": true,
        "reasons": [why],
        "store": {"available": false},
    });
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

async fn metrics_text(State(m): State<Arc<Metrics>>) -> Response {
    let mut body = m.render();
    body.push_str("# store gauges unavailable\n");
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
