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

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use super::listener::Listener;
use super::problem::ApiError;
use super::{server, ApiStartError};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::runtime::{is_transient, store_error, RunError};

/// Longest wait between attempts to open the store.
pub const MAX_RETRY: Duration = Duration::from_secs(5);

/// Serves the degraded API (when enabled) and retries `attempt` until it
/// succeeds (`Some`, with the API's socket to hand on to [`super::start`]),
/// fails for a reason time will not cure (`Err`), or `shutdown` resolves
/// (`None`).
pub async fn wait_for_store<T, S>(
    config: &Config,
    metrics: &Arc<Metrics>,
    first: &RunError,
    shutdown: &mut Pin<&mut S>,
    mut attempt: impl FnMut() -> Result<T, RunError>,
) -> Result<Option<(T, Option<Listener>)>, RunError>
where
    S: Future<Output = ()>,
{
    let path = &config.store.path;
    let reason = |e: &RunError| {
        store_error(e)
            .map(|s| s.reason_at(path))
            .unwrap_or_else(|| e.to_string())
    };
    metrics.set_store_unavailable(Some(reason(first)));
    tracing::error!(error = %first, "cannot start on this store; waiting in a degraded mode (health and metrics served, readiness 503, nothing ingested or acknowledged) and retrying at growing intervals up to 5 s; logged once");
    let (stop_tx, stop_rx) = watch::channel(false);
    let (server, listener) = match config.api.enabled {
        true => {
            let (task, listener) = serve(config, metrics.clone(), stop_rx).await?;
            (Some(task), Some(listener))
        }
        false => (None, None),
    };
    let mut backoff = Backoff::new(Duration::from_millis(500), MAX_RETRY);
    let mut attempts = 0u64;
    let outcome = loop {
        tokio::select! {
            _ = shutdown.as_mut() => break Ok(None),
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
        attempts += 1;
        match attempt() {
            Ok(t) => break Ok(Some(t)),
            Err(e) if is_transient(&e, config) => {
                tracing::debug!(error = %e, attempts, "store still unavailable");
                metrics.set_store_unavailable(Some(reason(&e)));
            }
            Err(e) => break Err(e),
        }
    };
    let _ = stop_tx.send(true);
    if let Some(task) = server {
        let _ = task.await;
    }
    match outcome {
        Ok(Some(t)) => {
            metrics.set_store_unavailable(None);
            tracing::info!(attempts, "store available again; starting");
            Ok(Some((t, listener)))
        }
        other => {
            if listener.is_some() {
                super::listener::withdraw(&config.api);
            }
            other.map(|_| None)
        }
    }
}

/// Binds the API address and serves the degraded routes until `stop`; the
/// socket stays open for the API proper.
async fn serve(
    config: &Config,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> Result<(tokio::task::JoinHandle<()>, Listener), ApiStartError> {
    let cfg = config.api.clone();
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
            server::Bounds {
                max_connections: cfg.max_connections,
                per_client: cfg.max_connections_per_client,
                header_timeout: cfg.header_timeout,
            },
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
