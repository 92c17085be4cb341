//! A webhook receiver for integrators: listens, verifies Standard Webhooks
//! signatures, deduplicates on `webhook-id`, prints alerts readably (or as
//! JSON lines), and can be told to fail or be slow to rehearse outages.
//!
//! `rpm-gateway webhook-receiver` runs it; the demo and tests run it in
//! process with [`serve`]. It is also the reference for what a receiver
//! should do: verify (timestamp tolerance, constant-time comparison), then
//! deduplicate, then answer 2xx quickly.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::signing::{
    verify, Secret, DEFAULT_TOLERANCE_SECS, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP,
};

/// Largest body accepted.
const MAX_BODY: usize = 1024 * 1024;

/// Receiver failures.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// Cannot listen.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's refusal (taken, not ours).
        source: std::io::Error,
    },
    /// Accept failed.
    #[error("accept: {0}")]
    Accept(std::io::Error),
}

/// How the receiver behaves.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// Secrets to verify with (any matches).
    pub secrets: Vec<Secret>,
    /// Status to answer while failing.
    pub fail_status: u16,
    /// Fail every request during this long after start.
    pub fail_for: Option<Duration>,
    /// Fail the first N requests.
    pub fail_first: Option<u64>,
    /// Send `Retry-After: N` with failures.
    pub retry_after: Option<u64>,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
    /// JSON lines on stdout instead of readable text.
    pub json: bool,
    /// Print nothing (in-process use with `events`).
    pub quiet: bool,
    /// Timestamp tolerance.
    pub tolerance_secs: i64,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        ReceiverOptions {
            secrets: Vec::new(),
            fail_status: 500,
            fail_for: None,
            fail_first: None,
            retry_after: None,
            delay: None,
            json: false,
            quiet: false,
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
        }
    }
}

/// One accepted delivery.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Received {
    /// `webhook-id`.
    pub webhook_id: String,
    /// Times this id was accepted before (0: first).
    pub duplicate_of: u64,
    /// The event body.
    pub event: serde_json::Value,
}

struct State {
    opts: ReceiverOptions,
    started: Instant,
    requests: AtomicU64,
    seen: Mutex<HashMap<String, u64>>,
    events: Option<mpsc::Sender<Received>>,
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ReceiverError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ReceiverError::Bind { addr, source })
}

/// Serves until `shutdown` resolves. Accepted deliveries are printed (unless
/// `quiet`) and sent to `events` if given.
pub async fn serve(
    listener: TcpListener,
    opts: ReceiverOptions,
    events: Option<mpsc::Sender<Received>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ReceiverError> {
    let state = Arc::new(State {
        opts,
        started: Instant::now(),
        requests: AtomicU64::new(0),
        seen: Mutex::new(HashMap::new()),
        events,
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let (stream, _) = accepted.map_err(ReceiverError::Accept)?;
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        }
    }
}

fn reply(status: u16, retry_after: Option<u64>, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(s) = retry_after {
        if let Ok(v) = s.to_string().parse() {
            r.headers_mut().insert(hyper::header::RETRY_AFTER, v);
        }
    }
    r
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let o = &state.opts;
    if req.method() != Method::POST {
        return Ok(reply(405, None, "POST only"));
    }
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let (id, ts, sig) = (
        header(HEADER_ID),
        header(HEADER_TIMESTAMP),
        header(HEADER_SIGNATURE),
    );
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(413, None, "body too large")),
    };
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    if o.json && !o.quiet {
        // Arrival, before any delay: shows attempts cut short by the sender.
        println!("{}", serde_json::json!({"webhook_id": id, "arrived": true}));
    }
    if let Some(d) = o.delay {
        tokio::time::sleep(d).await;
    }
    let failing = o.fail_first.is_some_and(|k| n <= k)
        || o.fail_for.is_some_and(|d| state.started.elapsed() < d);
    if failing {
        print_line(
            o,
            &serde_json::json!({"webhook_id": id, "responded": o.fail_status, "rehearsal": true}),
            || {
                format!(
                    "{} responded {} (rehearsing an outage)",
                    id.as_deref().unwrap_or("?"),
                    o.fail_status
                )
            },
        );
        return Ok(reply(o.fail_status, o.retry_after, "rehearsed failure"));
    }
    let now = chrono::Utc::now().timestamp();
    if let Err(e) = verify(
        &o.secrets,
        id.as_deref(),
        ts.as_deref(),
        sig.as_deref(),
        &body,
        now,
        o.tolerance_secs,
    ) {
        print_line(
            o,
            &serde_json::json!({"webhook_id": id, "responded": 401, "error": e.to_string()}),
            || format!("REJECTED {}: {e}", id.as_deref().unwrap_or("?")),
        );
        return Ok(reply(401, None, "invalid signature"));
    }
    let id = id.unwrap_or_default();
    let dup = {
        let mut seen = state.seen.lock().unwrap_or_else(|p| p.into_inner());
        let c = seen.entry(id.clone()).or_insert(0);
        *c += 1;
        *c - 1
    };
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let received = Received {
        webhook_id: id,
        duplicate_of: dup,
        event,
    };
    print_line(
        o,
        &serde_json::json!({"webhook_id": received.webhook_id, "responded": 200, "duplicate": dup > 0, "event": received.event}),
        || readable(&received),
    );
    if let Some(tx) = &state.events {
        let _ = tx.send(received).await;
    }
    Ok(reply(200, None, ""))
}

fn print_line(o: &ReceiverOptions, json: &serde_json::Value, text: impl FnOnce() -> String) {
    if o.quiet {
        return;
    }
    if o.json {
        println!("{json}");
    } else {
        println!("{}", text());
    }
}

/// One readable line (or a few) per event.
pub fn readable(r: &Received) -> String {
    let e = &r.event;
    let d = &e["data"];
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let mut out = format!("{} {:<22}", s(&e["timestamp"]), s(&e["type"]));
    if s(&e["type"]).starts_with("alert.") {
        out.push_str(&format!(
            " {:<8} patient {} — {} (rule {} v{}; alert {})",
            s(&d["severity"]).to_uppercase(),
            s(&d["patient_id"]),
            s(&d["message"]),
            s(&d["rule"]["id"]),
            d["rule"]["version"],
            s(&d["alert_id"]),
        ));
        if let Some(ev) = d["evidence"].as_array() {
            for r in ev {
                out.push_str(&format!(
                    "\n    {} {} {} (LOINC {}) measured {}",
                    s(&r["metric"]),
                    r["value"],
                    s(&r["unit"]),
                    s(&r["loinc"]),
                    s(&r["measured_at"]),
                ));
            }
        }
        out.push_str(&format!("\n    {}", s(&d["link"])));
    } else {
        out.push_str(&format!(" {}", s(&d["message"])));
    }
    if r.duplicate_of > 0 {
        out.push_str(&format!(
            "  [duplicate #{} of {}]",
            r.duplicate_of, r.webhook_id
        ));
    }
    out
}
