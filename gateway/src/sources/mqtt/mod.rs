//! The MQTT source (rumqttc, MQTT 3.1.1 or 5, QoS 1).
//!
//! - **Persistent session**: fixed client id, clean session off, so the
//!   broker queues readings published while the gateway is down.
//! - **Ack after commit**: manual acks; a PUBACK is sent only once the
//!   message is committed to the store's inbox, from which the normalize
//!   stage makes readings or quarantine records (see [`crate::store::inbox`]).
//!   A crash between receipt and commit leaves the message unacknowledged,
//!   and the broker redelivers it; the stable reading id makes the
//!   redelivery harmless.
//! - **Subscribe on every connect** (certainly when the broker reports no
//!   session present, but also when it does: the session may lack a
//!   subscription); **never unsubscribe** on shutdown (that would drop the
//!   queue).
//! - Acks of a previous connection are never sent on a new one (the broker
//!   redelivers those messages and packet ids may be reused).
//! - **PUBACKs go out in bursts** (MQTT 3.1.1): rumqttc writes each request
//!   it is given in a write of its own, so a backlog cost a system call per
//!   message on both sides. The acker hands committed packet ids back to
//!   the event loop's task, which writes every ack ready at that moment and
//!   flushes once ([`protocol::Connection::acknowledge`]); it checks the
//!   connection's generation itself, so a stale ack cannot slip onto a new
//!   connection. MQTT 5's event loop keeps its connection private: there
//!   the acker acknowledges through the client, one ack per write.
//! - A **failed commit forces a reconnect**: the broker only redelivers an
//!   unacknowledged message on a new connection, so waiting would leave the
//!   reading stuck until the next network hiccup.
//! - MQTT 5 sets an explicit session expiry (see [`protocol`]).
//! - **The event loop never waits on its own acks.** Acks travel from the
//!   acker task back to the event loop's task (MQTT 3.1.1, an unbounded
//!   channel) or through rumqttc's bounded request channel (MQTT 5), which
//!   only the event loop drains. If the event loop could in turn block on
//!   the acker (a bounded hand-over queue), a broker flushing a large queued backlog
//!   fills both and the two wait on each other for ever: no more acks, no
//!   more reads, no shutdown. So the hand-over queue is unbounded, and the
//!   event loop only ever waits on the store writer, which never waits on
//!   MQTT. What bounds it: the writer's queue (a slow disk stops the event
//!   loop, and TCP pushes back on the broker) and the broker's in-flight
//!   window (MQTT 5 Receive Maximum = `pipeline_depth`). An entry is a
//!   packet id and a commit handle, not the payload.
//! - **No poison message.** A message larger than `max_packet_bytes` is
//!   taken, acknowledged once its first [`OVERSIZED_KEEP`] bytes and size
//!   are committed, and quarantined (`payload_too_large`). A client that
//!   refused it instead would drop the connection, and the broker would send
//!   the same message first again on the next: nothing behind it would ever
//!   flow. (The client accepts any size MQTT allows; the broker's
//!   `message_size_limit` bounds the memory one message can take.)
//! - **A failed store commit backs off.** While commits keep failing (a
//!   full disk), reconnects wait longer and longer (up to
//!   [`STORE_FAILING_MAX_BACKOFF`]) instead of resetting at every CONNACK;
//!   the writer logs the episode once. Every lost connection is counted,
//!   and readiness reports a source reconnecting in a loop.

pub mod config;
mod protocol;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::store::inbox::InboxEntry;
use crate::store::writer::CommitResult;
use crate::store::Writer;
use crate::tls::{client_tls_config, TlsError};
use config::MqttConfig;
use device_profiles::Source;
use protocol::{AckToken, Client, Connection, Incoming, Settings};

/// Bytes kept of a message larger than `max_packet_bytes` (as much as
/// quarantine keeps of any input).
pub const OVERSIZED_KEEP: usize = crate::store::QUARANTINE_PAYLOAD_LIMIT;

/// Longest wait between reconnects while store commits keep failing.
pub const STORE_FAILING_MAX_BACKOFF: Duration = Duration::from_secs(60);
const STORE_FAILING_FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// First wait before reconnecting after a lost connection.
const RECONNECT_FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// MQTT source failures (configuration only: network trouble is retried).
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// TLS could not be set up.
    #[error("mqtt tls: {0}")]
    Tls(#[from] TlsError),
    /// Credentials could not be read.
    #[error("mqtt credentials: {0}")]
    Credentials(String),
    /// No client id (validation should have caught this).
    #[error("mqtt: a client id is required")]
    NoClientId,
}

/// The MQTT source.
pub struct MqttSource {
    cfg: MqttConfig,
    filters: Vec<String>,
    metrics: Arc<Metrics>,
    writer: Writer,
}

struct Pending {
    generation: u64,
    token: AckToken,
    commit: oneshot::Receiver<CommitResult>,
}

/// A committed publish, ready to be acknowledged on its connection.
struct Ready {
    generation: u64,
    token: AckToken,
}

/// Where the acker sends what is committed: to the event loop's task,
/// which writes the acks in bursts (MQTT 3.1.1), or through the client.
enum AckRoute {
    EventLoop(mpsc::UnboundedSender<Ready>),
    Client(Client),
}

/// Most acks written in one burst.
const ACK_BURST: usize = 1024;

impl MqttSource {
    /// A source subscribing to `filters` (from the loaded profiles). It
    /// only appends to the inbox: decoding happens in the normalize stage.
    pub fn new(
        cfg: MqttConfig,
        filters: Vec<String>,
        metrics: Arc<Metrics>,
        writer: Writer,
    ) -> Self {
        MqttSource {
            cfg,
            filters,
            metrics,
            writer,
        }
    }

    fn settings(&self) -> Result<Settings, MqttError> {
        let client_id = match &self.cfg.client_id {
            Some(id) => id.clone(),
            None if !self.cfg.persistent_session => format!("rpm-gateway-{}", std::process::id()),
            None => return Err(MqttError::NoClientId),
        };
        let credentials = self.cfg.credentials().map_err(MqttError::Credentials)?;
        let transport = match &self.cfg.tls {
            Some(tls) => Some(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(client_tls_config(tls)?),
            )),
            None => None,
        };
        Ok(Settings {
            client_id,
            credentials,
            transport,
        })
    }

    /// Runs until `shutdown` resolves, then drains: in-flight messages are
    /// committed and acknowledged, and the session is kept.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), MqttError> {
        let depth = self.cfg.pipeline_depth;
        let (client, mut conn) = protocol::connect(&self.cfg, self.settings()?, depth + 64);
        let generation = Arc::new(AtomicU64::new(0));
        let commit_failed = Arc::new(Notify::new());
        // Unbounded on purpose: see "the event loop never waits on its own
        // acks" in the module docs.
        let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Pending>();
        // Unbounded for the same reason: the event loop's task empties it.
        let (route, mut ready) = if conn.writes_acks() {
            let (tx, rx) = mpsc::unbounded_channel::<Ready>();
            (AckRoute::EventLoop(tx), Some(rx))
        } else {
            (AckRoute::Client(client.clone()), None)
        };
        let acker = tokio::spawn(ack_in_order(
            ack_rx,
            route,
            generation.clone(),
            commit_failed.clone(),
        ));
        let mut burst: Vec<AckToken> = Vec::with_capacity(ACK_BURST);
        let metrics = self.metrics.clone();
        let mut backoff = Backoff::new(RECONNECT_FIRST_BACKOFF, self.cfg.reconnect_max_backoff);
        // Grows while store commits fail; a CONNACK does not reset it.
        let mut store_backoff =
            Backoff::new(STORE_FAILING_FIRST_BACKOFF, STORE_FAILING_MAX_BACKOFF);
        let mut store_episode = false;
        tokio::pin!(shutdown);

        loop {
            let event = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                _ = commit_failed.notified() => {
                    // Drop this connection's pending acks and reconnect so
                    // the broker redelivers what was not committed.
                    generation.fetch_add(1, Ordering::SeqCst);
                    // Not a lost connection (the loop readiness reports):
                    // the store's failure is reported as such.
                    metrics.set_mqtt_connected(false);
                    // Once per episode (the writer logs the store's side).
                    let wait = store_backoff.next_delay();
                    if store_episode {
                        tracing::debug!(retry_in_ms = wait.as_millis() as u64, "store commit failed; reconnecting to get the unacknowledged readings redelivered");
                    } else {
                        store_episode = true;
                        tracing::warn!(retry_in_ms = wait.as_millis() as u64, "store commit failed; reconnecting to get the unacknowledged readings redelivered (at growing intervals while commits fail; logged once)");
                    }
                    conn.reconnect();
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = store_recovers(&metrics, wait) => {}
                    }
                    continue;
                }
                Some(first) = next_ready(&mut ready) => {
                    let current = generation.load(Ordering::SeqCst);
                    match write_burst(&mut conn, first, &mut ready, current, &mut burst).await {
                        Ok(()) => continue,
                        Err(e) => {
                            // The next poll reconnects.
                            conn.reconnect();
                            Err(e)
                        }
                    }
                }
                e = conn.poll() => e,
            };
            match event {
                Ok(Incoming::Refused(code)) => {
                    tracing::error!(%code, "mqtt broker refused the connection");
                }
                Ok(Incoming::Connected { session_present }) => {
                    backoff.reset();
                    generation.fetch_add(1, Ordering::SeqCst);
                    let store_ok = metrics.store_unavailable().is_none();
                    if store_ok {
                        store_backoff.reset();
                        store_episode = false;
                        tracing::info!(
                            session_present,
                            protocol = self.cfg.protocol.name(),
                            "mqtt connected"
                        );
                    } else {
                        // Reconnected to retry a failing store: not news.
                        tracing::debug!(session_present, "mqtt connected");
                    }
                    // Subscribe on every connect, not only when the broker
                    // has no session: a session can exist without our
                    // subscriptions (killed between CONNACK and SUBACK, or
                    // a profile added since). Re-subscribing an existing
                    // filter keeps the session's queue and the flow.
                    let c = client.clone();
                    let filters = self.filters.clone();
                    tokio::spawn(async move {
                        if let Err(e) = c.subscribe(&filters).await {
                            tracing::error!(error = %e, "mqtt subscribe request failed");
                        }
                    });
                    if session_present {
                        metrics.set_mqtt_connected(true);
                    }
                }
                Ok(Incoming::Subscribed) => {
                    if metrics.store_unavailable().is_none() {
                        tracing::info!(filters = self.filters.len(), "mqtt subscribed");
                    }
                    metrics.set_mqtt_connected(true);
                }
                Ok(Incoming::Publish {
                    topic,
                    payload,
                    token,
                }) => {
                    metrics.received(Source::Mqtt.name());
                    let entry = if payload.len() > self.cfg.max_packet_bytes {
                        // Neither the topic (it names the device) nor bytes
                        // are logged: the quarantine entry has them.
                        tracing::warn!(
                            size = payload.len(),
                            limit = self.cfg.max_packet_bytes,
                            "mqtt message larger than max_packet_bytes; acknowledged and quarantined as payload_too_large with its first 64 KiB"
                        );
                        InboxEntry {
                            origin: topic,
                            payload: Arc::from(&payload[..OVERSIZED_KEEP.min(payload.len())]),
                            received_at: chrono::Utc::now(),
                            truncated_from: Some(payload.len()),
                        }
                    } else {
                        InboxEntry {
                            origin: topic,
                            payload: Arc::from(&payload[..]),
                            received_at: chrono::Utc::now(),
                            truncated_from: None,
                        }
                    };
                    drop(payload);
                    let commit = match self.writer.append(vec![entry]).await {
                        Ok(rx) => rx,
                        Err(e) => {
                            tracing::error!(error = %e, "store writer gone; stopping the mqtt source");
                            break;
                        }
                    };
                    let pending = Pending {
                        generation: generation.load(Ordering::SeqCst),
                        token,
                        commit,
                    };
                    if ack_tx.send(pending).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    metrics.set_mqtt_connected(false);
                    metrics.mqtt_connection_lost();
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "mqtt connection lost");
                    tokio::select! {
                        _ = &mut shutdown => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }

        // Drain: finish the commits already submitted and send their acks,
        // which needs the event loop polled. New publishes are left
        // unacknowledged: the broker keeps them for the next session.
        tracing::info!("mqtt source draining");
        drop(ack_tx);
        let drain = async {
            let mut acker = acker;
            let mut acker_done = false;
            loop {
                if acker_done && ready.is_none() {
                    break;
                }
                tokio::select! {
                    biased;
                    _ = &mut acker, if !acker_done => acker_done = true,
                    r = next_ready(&mut ready) => match r {
                        Some(first) => {
                            let current = generation.load(Ordering::SeqCst);
                            if write_burst(&mut conn, first, &mut ready, current, &mut burst).await.is_err() {
                                break;
                            }
                        }
                        // The acker is gone and every ack it handed over is written.
                        None => break,
                    },
                    e = conn.poll() => if e.is_err() { tokio::time::sleep(Duration::from_millis(50)).await },
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(15), drain).await;
        client.disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match conn.poll().await {
                    Ok(Incoming::Disconnected) | Err(_) => break,
                    _ => {}
                }
            }
        })
        .await;
        metrics.set_mqtt_connected(false);
        tracing::info!("mqtt source stopped");
        Ok(())
    }
}

/// Waits `max`, or less if the store's commits work again meanwhile (the
/// writer probes it): redelivery then resumes at once.
async fn store_recovers(metrics: &Metrics, max: Duration) {
    let until = tokio::time::Instant::now() + max;
    let step = Duration::from_millis(250);
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(step.min(until - tokio::time::Instant::now())).await;
        if metrics.store_unavailable().is_none() {
            return;
        }
    }
}

/// The next committed publish handed back by the acker; `None` once the
/// acker is gone and all are taken (never, for MQTT 5: pending for ever).
async fn next_ready(ready: &mut Option<mpsc::UnboundedReceiver<Ready>>) -> Option<Ready> {
    match ready {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Writes the acks of `first` and of every publish ready now, in one flush
/// (see [`take_burst`]).
async fn write_burst(
    conn: &mut Connection,
    first: Ready,
    ready: &mut Option<mpsc::UnboundedReceiver<Ready>>,
    generation: u64,
    burst: &mut Vec<AckToken>,
) -> Result<(), String> {
    take_burst(first, ready, generation, burst);
    conn.acknowledge(burst).await
}

/// `first` and every ack ready now (up to [`ACK_BURST`]) into `burst`,
/// without those of an earlier connection.
fn take_burst(
    first: Ready,
    ready: &mut Option<mpsc::UnboundedReceiver<Ready>>,
    generation: u64,
    burst: &mut Vec<AckToken>,
) {
    burst.clear();
    let mut next = Some(first);
    while let Some(r) = next.take() {
        if r.generation == generation {
            burst.push(r.token);
        }
        if burst.len() < ACK_BURST {
            next = ready.as_mut().and_then(|rx| rx.try_recv().ok());
        }
    }
}

/// Acknowledges publishes in the order received, each once its commit is
/// done. A failed commit is not acknowledged: the broker redelivers it.
async fn ack_in_order(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    route: AckRoute,
    generation: Arc<AtomicU64>,
    commit_failed: Arc<Notify>,
) {
    while let Some(p) = rx.recv().await {
        match p.commit.await {
            Ok(Ok(_)) => {
                let sent = match &route {
                    AckRoute::EventLoop(tx) => tx
                        .send(Ready {
                            generation: p.generation,
                            token: p.token,
                        })
                        .is_ok(),
                    AckRoute::Client(client) => {
                        p.generation != generation.load(Ordering::SeqCst)
                            || client.ack(p.token).await.is_ok()
                    }
                };
                if !sent {
                    return;
                }
            }
            Ok(Err(e)) => {
                // The writer logs a failing store once per episode.
                tracing::debug!(error = %e, "reading not committed; leaving it unacknowledged for redelivery");
                if p.generation == generation.load(Ordering::SeqCst) {
                    commit_failed.notify_one();
                }
            }
            Err(_) => return,
        }
    }
}
