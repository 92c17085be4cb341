//! The dispatcher: fan-out, then one worker per enabled endpoint.
//!
//! - The main loop fans out new outbox events (poll every
//!   `delivery.poll_interval`, or at once when woken by an in-process
//!   producer) and keeps a worker running per enabled endpoint.
//! - A worker looks at its endpoint's oldest pending deliveries (a bounded
//!   window, `delivery.queue`), launches the due ones up to
//!   `delivery.concurrency` at a time (one probe while its breaker is half
//!   open, none while open), and never launches a patient's event while an
//!   earlier event of the same patient is still pending for that endpoint:
//!   per patient, an endpoint receives events in outbox order. Endpoints
//!   are independent: a slow one only fills its own slots.
//! - Each attempt's outcome, its log row and any operational event are
//!   committed in one transaction; until then the delivery stays `pending`,
//!   so an attempt cut short by a crash is made again after restart, with the
//!   same `webhook-id`.

use chrono::Utc;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use super::breaker::{Breaker, BreakerChange};
use super::config::DeliveryConfig;
use super::endpoints::{self, Endpoint, EndpointError};
use super::fanout::fanout;
use super::ops;
use super::retry::{AttemptOutcome, Schedule};
use super::signing::{signature_header, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use super::ssrf;
use crate::metrics::Metrics;
use crate::store::outbox::EventType;
use crate::store::webhooks::{self, AttemptLog, AttemptState, DeliveryUpdate, PendingDelivery};
use crate::store::{now_ms, Store, StoreError};
use crate::tls::{client_tls_config, TlsError, TlsSettings};

/// Dispatcher start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// TLS configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(String),
}

/// Response bytes kept in the attempt log: enough for an error message,
/// too little to copy out a document the receiver should not have sent.
const EXCERPT: usize = 200;
/// Events fanned out per transaction.
const FANOUT_BATCH: usize = 500;
/// A worker with nothing due re-reads its queue this often (re-drives and
/// changes made by other processes).
const IDLE_POLL: Duration = Duration::from_secs(1);

struct Shared {
    db: Mutex<Store>,
    /// For endpoints under the SSRF guard: its resolver refuses non-public
    /// addresses at every connection; no system proxy (a proxy would
    /// resolve and connect where the guard cannot see).
    client: reqwest::Client,
    /// For endpoints allowed to reach private networks.
    open_client: reqwest::Client,
    cfg: DeliveryConfig,
    schedule: Schedule,
    metrics: Arc<Metrics>,
}

/// The webhook dispatcher.
pub struct Dispatcher {
    shared: Arc<Shared>,
    wake: Arc<Notify>,
}

/// The HTTPS client: rustls (ring), system roots plus `ca_file`, connect
/// and total timeouts, no redirects (a signed POST is not re-sent elsewhere).
/// `guarded`: the SSRF guard's resolver, no proxy.
pub fn http_client(cfg: &DeliveryConfig, guarded: bool) -> Result<reqwest::Client, DispatchError> {
    let tls = client_tls_config(&TlsSettings {
        ca_file: cfg.ca_file.clone(),
        ..Default::default()
    })?;
    let mut b = reqwest::Client::builder();
    if guarded {
        b = b.dns_resolver(Arc::new(ssrf::GuardedResolver)).no_proxy();
    }
    b.tls_backend_preconfigured((*tls).clone())
        .connect_timeout(cfg.connect_timeout)
        .timeout(cfg.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("rpm-gateway/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(cfg.concurrency)
        .build()
        .map_err(|e| DispatchError::Client(e.to_string()))
}

async fn db<T: Send + 'static>(
    shared: &Arc<Shared>,
    f: impl FnOnce(&mut Store) -> Result<T, EndpointError> + Send + 'static,
) -> Result<T, EndpointError> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = shared
            .db
            .lock()
            .map_err(|_| EndpointError::Store(StoreError::WriterGone))?;
        f(&mut store)
    })
    .await
    .map_err(|_| EndpointError::Store(StoreError::WriterGone))?
}

impl Dispatcher {
    /// A dispatcher on its own store connection.
    pub fn new(
        store: Store,
        cfg: &DeliveryConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Dispatcher, DispatchError> {
        Ok(Dispatcher {
            shared: Arc::new(Shared {
                db: Mutex::new(store),
                client: http_client(cfg, true)?,
                open_client: http_client(cfg, false)?,
                cfg: cfg.clone(),
                schedule: cfg.schedule(),
                metrics,
            }),
            wake: Arc::new(Notify::new()),
        })
    }

    /// Wakes the dispatcher at once (an in-process producer committed an
    /// event); others are seen at the next poll.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Runs until `stop` resolves, then lets in-flight attempts finish.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let shared = self.shared;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut workers: HashMap<String, (tokio::task::JoinHandle<()>, Arc<Notify>)> =
            HashMap::new();
        tracing::info!("webhook dispatcher started");
        tokio::pin!(stop);
        loop {
            let mut more = false;
            match db(&shared, |s| fanout(s, FANOUT_BATCH)).await {
                Ok((touched, n)) => {
                    more = n >= FANOUT_BATCH;
                    if n > 0 {
                        shared.metrics.webhook_queued(n);
                    }
                    for t in touched {
                        if let Some((_, w)) = workers.get(&t) {
                            w.notify_one();
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "webhook fan-out failed; retrying"),
            }
            match db(&shared, |s| endpoints::list(s.conn())).await {
                Ok(eps) => {
                    workers.retain(|_, (h, _)| !h.is_finished());
                    for ep in eps.into_iter().filter(|e| e.enabled) {
                        if workers.contains_key(&ep.endpoint_id) {
                            continue;
                        }
                        let notify = Arc::new(Notify::new());
                        let h = tokio::spawn(worker(
                            shared.clone(),
                            ep.endpoint_id.clone(),
                            notify.clone(),
                            stop_rx.clone(),
                        ));
                        workers.insert(ep.endpoint_id, (h, notify));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read webhook endpoints"),
            }
            if more {
                continue;
            }
            tokio::select! {
                _ = &mut stop => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(shared.cfg.poll_interval) => {}
            }
        }
        let _ = stop_tx.send(true);
        for (_, (h, n)) in workers {
            n.notify_one();
            let _ = h.await;
        }
        tracing::info!("webhook dispatcher stopped");
    }
}

fn window(
    store: &Store,
    endpoint: &str,
    limit: usize,
) -> Result<Vec<PendingDelivery>, EndpointError> {
    Ok(webhooks::pending_window(store.conn(), endpoint, limit)?)
}

/// What a finished attempt tells the worker.
struct Done {
    delivery_id: i64,
    outcome: AttemptOutcome,
    status: Option<u16>,
}

async fn worker(
    shared: Arc<Shared>,
    endpoint_id: String,
    notify: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = &shared.cfg;
    let mut breaker = Breaker::new(
        cfg.breaker_threshold,
        cfg.breaker_cooldown,
        cfg.breaker_max_cooldown,
    );
    let mut inflight: HashSet<i64> = HashSet::new();
    let mut tasks: JoinSet<Done> = JoinSet::new();
    loop {
        if *stop.borrow() {
            break;
        }
        let id = endpoint_id.clone();
        let ep = match db(&shared, move |s| endpoints::get(s.conn(), &id)).await {
            Ok(Some(ep)) if ep.enabled => Some(Arc::new(ep)),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(endpoint = %endpoint_id, error = %e, "cannot read endpoint");
                None
            }
        };
        let Some(ep) = ep else { break };
        let (id, limit) = (endpoint_id.clone(), cfg.queue);
        let rows = match db(&shared, move |s| window(s, &id, limit)).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(endpoint = %endpoint_id, error = %e, "cannot read pending deliveries; retrying");
                Vec::new()
            }
        };
        let now = now_ms();
        let instant = Instant::now();
        let allowance = breaker.allowance(instant, cfg.concurrency);
        let mut wait = IDLE_POLL;
        if allowance == 0 {
            if let super::breaker::State::Open(until) = breaker.state(instant) {
                wait = until.saturating_duration_since(instant);
            }
        }
        let mut patients_seen: HashSet<String> = HashSet::new();
        for p in rows {
            let earlier_pending = match &p.patient_id {
                Some(pid) => !patients_seen.insert(pid.clone()),
                None => false,
            };
            if earlier_pending || inflight.contains(&p.delivery_id) {
                continue;
            }
            if p.next_attempt_at > now {
                wait = wait.min(Duration::from_millis((p.next_attempt_at - now) as u64));
                continue;
            }
            if inflight.len() >= allowance {
                break;
            }
            inflight.insert(p.delivery_id);
            tasks.spawn(attempt(shared.clone(), ep.clone(), p.delivery_id));
        }
        tokio::select! {
            Some(done) = tasks.join_next() => {
                if let Ok(done) = done {
                    inflight.remove(&done.delivery_id);
                    on_done(&shared, &endpoint_id, &mut breaker, &done).await;
                } else {
                    inflight.clear();
                }
            }
            _ = notify.notified() => {}
            _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {}
            _ = stop.changed() => {}
        }
    }
    // Drain: attempts already sent finish and are recorded.
    while let Some(done) = tasks.join_next().await {
        if let Ok(done) = done {
            on_done(&shared, &endpoint_id, &mut breaker, &done).await;
        }
    }
}

async fn on_done(shared: &Arc<Shared>, endpoint_id: &str, breaker: &mut Breaker, done: &Done) {
    let breaker_change = if done.outcome.is_endpoint_failure(done.status) {
        breaker.failure(Instant::now())
    } else if done.status.is_some() {
        breaker.success()
    } else {
        BreakerChange::None
    };
    match breaker_change {
        BreakerChange::Opened => {
            shared.metrics.webhook_breaker_opened(endpoint_id);
            tracing::warn!(
                endpoint = endpoint_id,
                "webhook endpoint failing: paused (circuit breaker open)"
            );
            let id = endpoint_id.to_string();
            let threshold = shared.cfg.breaker_threshold;
            let opened = now_ms().to_string();
            let r = db(shared, move |s| {
                let tx = s.transaction()?;
                ops::raise(
                    &tx,
                    EventType::DeliveryFailing,
                    &id,
                    format!("deliveries to endpoint `{id}` keep failing ({threshold} in a row); it is paused and probed"),
                    serde_json::json!({ "consecutive_failures": threshold }),
                    &[&opened],
                )?;
                tx.commit().map_err(StoreError::from)?;
                Ok(())
            })
            .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot record delivery.failing");
            }
        }
        BreakerChange::Recovered => {
            tracing::info!(endpoint = endpoint_id, "webhook endpoint recovered")
        }
        BreakerChange::None => {}
    }
}

/// What the HTTP exchange gave.
struct Exchange {
    status: Option<u16>,
    retry_after: Option<String>,
    error: Option<String>,
    latency: Duration,
}

async fn post(shared: &Shared, ep: &Endpoint, event_id: &str, body: String) -> Exchange {
    let client = if ep.allow_private_network || shared.cfg.allow_private_network {
        &shared.open_client
    } else {
        // Literal addresses never reach the resolver: checked here, at
        // every attempt (the endpoint may predate the guard).
        let refused = url::Url::parse(&ep.url)
            .ok()
            .and_then(|u| ssrf::check_literal(&u).err());
        if let Some(e) = refused {
            return Exchange {
                status: None,
                retry_after: None,
                error: Some(format!("refused: {e}")),
                latency: Duration::ZERO,
            };
        }
        &shared.client
    };
    let keys = ep.keys();
    if keys.is_empty() {
        // Never unsigned: the secrets did not open (wrong store key).
        return Exchange {
            status: None,
            retry_after: None,
            error: Some(
                "not sent: no usable signing secret (the store key does not open this endpoint's secrets: check RPM_STORE_KEY, the rpm-store-key credential or store.key_file)".into(),
            ),
            latency: Duration::ZERO,
        };
    }
    let ts = Utc::now().timestamp();
    let sig = signature_header(&keys, event_id, ts, body.as_bytes());
    let start = Instant::now();
    let res = client
        .post(&ep.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(HEADER_ID, event_id)
        .header(HEADER_TIMESTAMP, ts.to_string())
        .header(HEADER_SIGNATURE, sig)
        .body(body)
        .send()
        .await;
    match res {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            let mut error = None;
            if (300..400).contains(&status) {
                // Not followed, and nothing of it kept: a redirect is how a
                // guarded request would be sent somewhere internal.
                error = Some(format!("HTTP {status}: redirect not followed"));
            } else if !(200..300).contains(&status) {
                let mut buf = Vec::new();
                while buf.len() < EXCERPT {
                    match resp.chunk().await {
                        Ok(Some(c)) => buf.extend_from_slice(&c),
                        _ => break,
                    }
                }
                buf.truncate(EXCERPT);
                let text: String = String::from_utf8_lossy(&buf)
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                error = Some(format!("HTTP {status}: {}", text.trim()));
            }
            Exchange {
                status: Some(status),
                retry_after,
                error,
                latency: start.elapsed(),
            }
        }
        Err(e) => {
            // Never the URL: it may carry a token.
            let kind = if e.is_timeout() {
                "timeout"
            } else if e.is_connect() {
                "connect"
            } else {
                "request"
            };
            let e = e.without_url();
            let mut msg = format!("{kind}: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            Exchange {
                status: None,
                retry_after: None,
                error: Some(msg),
                latency: start.elapsed(),
            }
        }
    }
}

async fn attempt(shared: Arc<Shared>, ep: Arc<Endpoint>, delivery_id: i64) -> Done {
    let loaded = db(&shared, move |s| {
        Ok(webhooks::pending_payload(s.conn(), delivery_id)?)
    })
    .await;
    let Ok(Some((event_id, body))) = loaded else {
        return Done {
            delivery_id,
            outcome: AttemptOutcome::Successful,
            status: None,
        };
    };
    let ex = post(&shared, &ep, &event_id, body).await;
    let outcome = AttemptOutcome::classify(ex.status, ex.retry_after.as_deref(), Utc::now());
    let latency = ex.latency;
    let status = ex.status;
    let endpoint_id = ep.endpoint_id.clone();
    let o = outcome.clone();
    let sh = shared.clone();
    let label = db(&shared, move |s| {
        record(s, &sh.schedule, &endpoint_id, delivery_id, &ex, &o)
    })
    .await;
    match label {
        Ok(label) => shared
            .metrics
            .webhook_attempt(&ep.endpoint_id, label, latency),
        Err(e) => {
            tracing::warn!(endpoint = %ep.endpoint_id, error = %e, "cannot record a webhook attempt; it will be made again")
        }
    }
    Done {
        delivery_id,
        outcome,
        status,
    }
}

/// Commits an attempt: its log row, the delivery's new state, and any
/// operational event, in one transaction. Returns the metric label.
fn record(
    store: &mut Store,
    schedule: &Schedule,
    endpoint_id: &str,
    delivery_id: i64,
    ex: &Exchange,
    outcome: &AttemptOutcome,
) -> Result<&'static str, EndpointError> {
    let tx = store.transaction()?;
    let now = now_ms();
    let Some(AttemptState {
        attempts,
        round_base,
        since,
        event_id,
        event_type,
    }) = webhooks::attempt_state(&tx, delivery_id)?
    else {
        return Ok("stale");
    };
    let attempt_no = attempts + 1;
    webhooks::log_attempt(
        &tx,
        &AttemptLog {
            delivery_id,
            attempt: attempt_no,
            at: now,
            http_status: ex.status,
            latency_ms: ex.latency.as_millis() as i64,
            error: ex.error.as_deref(),
        },
    )?;
    let mut next_at = now;
    let (status, label) = match outcome {
        AttemptOutcome::Successful => ("delivered", "delivered"),
        AttemptOutcome::DontRetry => ("failed", "failed"),
        AttemptOutcome::Disable => {
            endpoints::set_enabled(&tx, endpoint_id, false, "410 Gone from the receiver")?;
            ops::raise(
                &tx,
                EventType::EndpointDisabled,
                endpoint_id,
                format!("endpoint `{endpoint_id}` answered 410 Gone and was disabled; its pending deliveries wait until it is enabled again"),
                serde_json::json!({ "http_status": 410, "delivery_id": delivery_id }),
                &[&delivery_id.to_string(), &attempt_no.to_string()],
            )?;
            ("pending", "gone")
        }
        AttemptOutcome::Retry { after } => {
            let failed = (attempt_no - round_base).max(1) as u32;
            let age = Duration::from_millis((now - since).max(0) as u64);
            match schedule.next_delay(failed, age, *after) {
                Some(d) => {
                    next_at = now + d.as_millis() as i64;
                    ("pending", "retry")
                }
                None => {
                    // A dead operational event raises nothing more: no loop.
                    if event_type.starts_with("alert.") || event_type.starts_with("risk.") {
                        ops::raise(
                            &tx,
                            EventType::DeliveryDeadLettered,
                            endpoint_id,
                            format!("a delivery to endpoint `{endpoint_id}` was dead-lettered after {attempt_no} attempt(s); re-drive it with `rpm-gateway webhooks redrive`"),
                            serde_json::json!({
                                "delivery_id": delivery_id,
                                "event_id": event_id,
                                "event_type": event_type,
                                "attempts": attempt_no,
                                "last_status": ex.status,
                            }),
                            &[&delivery_id.to_string(), &attempt_no.to_string()],
                        )?;
                    }
                    tracing::warn!(
                        endpoint = endpoint_id,
                        delivery = delivery_id,
                        "webhook delivery dead-lettered"
                    );
                    ("dead", "dead")
                }
            }
        }
    };
    webhooks::update_delivery(
        &tx,
        delivery_id,
        &DeliveryUpdate {
            status,
            attempts: attempt_no,
            next_attempt_at: next_at,
            updated_at: now,
            last_status: ex.status,
            last_error: ex.error.as_deref(),
        },
    )?;
    tx.commit().map_err(StoreError::from)?;
    Ok(label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::endpoints::NewEndpoint;
    use crate::delivery::receiver::{self, ReceiverOptions};
    use crate::delivery::route::Filter;
    use crate::delivery::signing::Secret;
    use crate::store::outbox::{enqueue, event_id, Event, OperationalData, EVENT_SCHEMA};

    /// In process: the library receiver, the dispatcher woken by its waker,
    /// an operational event routed only to an endpoint that asked for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delivers_to_the_in_process_receiver_when_woken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let secret = Secret::generate();
        let listener = receiver::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let (stop_rx_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let opts = ReceiverOptions {
            secrets: vec![Secret::parse(&secret).unwrap()],
            quiet: true,
            ..Default::default()
        };
        let server = tokio::spawn(receiver::serve(listener, opts, Some(tx), async {
            let _ = stop_rx.await;
        }));
        let mut store = Store::open(&path).unwrap();
        for (id, types) in [("ops", vec!["delivery.*".to_string()]), ("alerts", vec![])] {
            let new = NewEndpoint {
                endpoint_id: id.into(),
                url: format!("http://{addr}/{id}"),
                secret: Some(secret.clone()),
                filter: Filter {
                    event_types: types,
                    ..Default::default()
                },
                enabled: true,
                allow_private_network: true,
                ..Default::default()
            };
            endpoints::create(store.conn(), &new, "api", Default::default()).unwrap();
        }
        let cfg = DeliveryConfig {
            poll_interval: Duration::from_secs(3600),
            ..Default::default()
        };
        let d = Dispatcher::new(Store::open(&path).unwrap(), &cfg, Arc::default()).unwrap();
        let wake = d.waker();
        let (stop_tx, stop) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(d.run(async {
            let _ = stop.await;
        }));
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ev = Event {
            schema: EVENT_SCHEMA.into(),
            id: event_id(&["test", "failing"]),
            event_type: EventType::DeliveryFailing,
            timestamp: Utc::now(),
            data: OperationalData {
                endpoint_id: Some("elsewhere".into()),
                message: "x".into(),
                detail: serde_json::Value::Null,
            },
        };
        let t = store.transaction().unwrap();
        enqueue(&t, &ev, None, None, None).unwrap();
        t.commit().unwrap();
        wake.notify_one();
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.webhook_id, ev.id);
        assert_eq!(got.event["type"], "delivery.failing");
        let _ = stop_tx.send(());
        run.await.unwrap();
        let _ = stop_rx_tx.send(());
        server.await.unwrap().unwrap();
        let delivered: i64 = store
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM deliveries WHERE endpoint_id = 'ops' AND status = 'delivered'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let to_alerts: i64 = store
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM deliveries WHERE endpoint_id = 'alerts'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!((delivered, to_alerts), (1, 0));
    }
}
