//! The forwarder: store-and-forward from the embedded store to a sink.
//!
//! One loop serves every sink ([`Sink`]: InfluxDB, the upstream hub). It
//! reads committed readings after the sink's durable cursor (`forward.influxdb`,
//! `forward.upstream` in the `cursors` table) in commit order, writes them in
//! batches, and moves the cursor only once the sink has accepted the batch.
//! A crash between the write and the cursor commit re-sends that batch on
//! restart; that is harmless because both sinks are idempotent: an InfluxDB
//! point's identity (measurement, tags, timestamp) makes the write
//! idempotent (see [`super::line`]), and the hub keeps a reading once by
//! its `reading_id`.
//!
//! While the sink is unreachable, slow or answers 5xx/429 (or InfluxDB
//! refuses us with 401/403/404, a configuration problem) the forwarder backs
//! off with jitter up to `max_backoff` and retries the same batch; ingestion
//! goes on into the store meanwhile, and once the sink answers again the
//! backlog drains in full batches back to back.
//!
//! A 400/413/422 from InfluxDB means some point in the batch is bad (real
//! InfluxDB refuses the whole request for one bad line): the batch is
//! bisected until the bad point is alone — or picked out directly when the
//! server's message quotes exactly one line — and that point is quarantined
//! (`rejected_by_sink`, with the server's message and the line) in the same
//! transaction that moves the cursor past it. It is not sent again; the
//! rest proceeds.
//!
//! **Pipelined.** While a batch is in flight, the next one is read from the
//! store (on a blocking thread, with the cursor commit of the batch before):
//! a backlog drains at the rate of the requests, not of requests plus reads
//! plus fsyncs. The cursor still moves only in order and only past batches
//! the sink accepted (their refused points quarantined in the same
//! transaction); a batch accepted but not yet committed is committed before
//! the forwarder waits (caught up, stopped, or a store error), and at worst
//! a crash re-sends the last two batches, which is harmless (idempotent).
//! A batch is encoded as it is read (on that thread): the forwarder holds
//! the lines of two batches, never their rows, which are three times larger.
//!
//! A *refusal* ([`WriteError::Refused`]: the hub answers a 4xx other than
//! 408/429, e.g. a token that does not name the device) is not the data's
//! fault and nothing is skipped: the batch is held, the refusal is logged,
//! counted (`kind="refused"`) and reported (readiness, gauge), and the same
//! batch is tried again every `max_backoff` until the hub takes it.

use std::borrow::Cow;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::http::WriteError;
use super::line;
use super::sink::InfluxSink;
use crate::fault::{Fault, FaultPoint};
use crate::metrics::Metrics;
use crate::store::{now_ms, set_cursor, Store, StoreError};

/// The first retry of a refused or failed batch waits about this long.
const FIRST_RETRY: Duration = Duration::from_millis(200);

/// The InfluxDB forwarder's cursor in the `cursors` table.
pub const CURSOR: &str = "forward.influxdb";
/// Quarantine reason of points the sink refused.
pub const REJECTED: &str = "rejected_by_sink";

/// Forwarder failures (the store; the server's failures are retried).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking store task died.
    #[error("the forwarder's store task failed: {0}")]
    Task(String),
}

/// Forwarder settings.
#[derive(Debug, Clone, Copy)]
pub struct ForwarderConfig {
    /// Points per request.
    pub batch_size: usize,
    /// Wait when caught up.
    pub flush_interval: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
}

/// Where the forwarder sends readings.
pub trait Sink: Send + Sync + 'static {
    /// Metric label and name in logs (`influxdb`, `upstream`).
    const NAME: &'static str;
    /// The sink's cursor in the `cursors` table.
    const CURSOR: &'static str;
    /// Reads up to `limit` readings committed after `after`, in commit
    /// order, and adds each one's wire form to `batch` ([`Encoded::add`]),
    /// reading of each only what that form needs.
    fn read(
        &self,
        store: &Store,
        after: i64,
        limit: usize,
        batch: &mut Encoded,
    ) -> Result<(), StoreError>;
    /// Sends encoded readings (concatenated) in one request.
    fn write(&self, body: Bytes) -> impl Future<Output = Result<(), WriteError>> + Send;
}

impl Sink for InfluxSink {
    const NAME: &'static str = "influxdb";
    const CURSOR: &'static str = CURSOR;
    fn read(
        &self,
        store: &Store,
        after: i64,
        limit: usize,
        batch: &mut Encoded,
    ) -> Result<(), StoreError> {
        store.each_point_after(after, limit, |p| {
            batch.add(p.seq, |out| {
                line::encode(&p, out).map_err(|e| format!("not sent: {e}"))
            })
        })
    }
    fn write(&self, body: Bytes) -> impl Future<Output = Result<(), WriteError>> + Send {
        InfluxSink::write(self, body)
    }
}

/// What a step did.
enum Step {
    /// A full batch went: there may be more.
    Full,
    /// Nothing more to send for now.
    CaughtUp,
    /// Stopped while waiting for the server.
    Stopped,
}

/// A point the sink (or the encoder) refused.
struct Refused {
    index: usize,
    detail: String,
}

/// A batch the sink took whose cursor move (and the quarantine of its
/// refused points) is not committed yet.
struct Accepted {
    last: i64,
    quarantine: Vec<Rejected>,
    accepted: usize,
}

/// A point to quarantine: refused by the encoder (its ids known then) or
/// by the sink (its ids read back when the batch is committed: retention
/// keeps every reading a forwarder's cursor has not passed).
struct Rejected {
    seq: i64,
    /// Reading and device id, when known.
    ids: Option<(String, String)>,
    /// What was sent (the line), or the reading as JSON if not encodable.
    payload: String,
    detail: String,
}

/// A batch as the sink sees it, read and encoded in one pass on the store's
/// thread: only its lines are held while it waits and while it is in
/// flight, never its rows (about three times larger).
pub struct Encoded {
    /// Sequence of the last reading read (the cursor past the batch).
    last: i64,
    /// The encoded lines, and the sequence of the reading each encodes.
    lines: LineBuf,
    seqs: Vec<i64>,
    /// Readings the encoder refused.
    refused: Vec<Rejected>,
}

impl Encoded {
    /// Readings read.
    fn len(&self) -> usize {
        self.lines.len() + self.refused.len()
    }

    /// Adds the reading `seq` as `encode` writes it; an error is the reason
    /// it cannot be sent (it is quarantined, never sent).
    pub fn add(&mut self, seq: i64, encode: impl FnOnce(&mut String) -> Result<(), String>) {
        self.last = seq;
        match self.lines.push(encode) {
            Ok(()) => self.seqs.push(seq),
            // The reading itself is read back for the quarantine record.
            Err(detail) => self.refused.push(Rejected {
                seq,
                ids: None,
                payload: String::new(),
                detail,
            }),
        }
    }
}

/// Lines being encoded into one buffer (a batch is sent as one body,
/// mostly whole: no allocation a line, no copy to join them).
struct LineBuf {
    text: String,
    /// Where each line ends in `text` (after its `\n`).
    ends: Vec<usize>,
}

impl LineBuf {
    fn with_capacity(lines: usize) -> Self {
        LineBuf {
            text: String::with_capacity(lines * 160),
            ends: Vec::with_capacity(lines),
        }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Appends one line with `encode`; on error nothing is kept.
    fn push<E>(&mut self, encode: impl FnOnce(&mut String) -> Result<(), E>) -> Result<(), E> {
        let start = self.text.len();
        match encode(&mut self.text) {
            Ok(()) => {
                self.ends.push(self.text.len());
                Ok(())
            }
            Err(e) => {
                self.text.truncate(start);
                Err(e)
            }
        }
    }

    /// The lines, ready to send: a request body is a slice of their
    /// buffer, shared, never copied.
    fn seal(self) -> Lines {
        Lines {
            text: Bytes::from(self.text),
            ends: self.ends,
        }
    }
}

/// A batch's encoded lines as they are sent (UTF-8: made from a `String`).
struct Lines {
    text: Bytes,
    /// Where each line ends in `text` (after its `\n`).
    ends: Vec<usize>,
}

impl Lines {
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Where line `i` starts in `text` (its end, for `i` = the count).
    fn start(&self, i: usize) -> usize {
        i.checked_sub(1).map_or(0, |prev| self.ends[prev])
    }

    /// Lines `range`, concatenated (the buffer shared, not copied).
    fn slice(&self, range: Range<usize>) -> Bytes {
        let start = self.start(range.start);
        self.text.slice(start..self.start(range.end).max(start))
    }

    /// Line `i`, with its `\n`.
    fn line(&self, i: usize) -> Cow<'_, str> {
        let start = self.start(i);
        String::from_utf8_lossy(&self.text[start..self.start(i + 1).max(start)])
    }
}

/// Reads and encodes up to `limit` readings after `after`.
fn read_batch<S: Sink>(
    store: &Store,
    sink: &S,
    after: i64,
    limit: usize,
) -> Result<Encoded, StoreError> {
    let mut b = Encoded {
        last: after,
        lines: LineBuf::with_capacity(limit),
        seqs: Vec::with_capacity(limit),
        refused: Vec::new(),
    };
    sink.read(store, after, limit, &mut b)?;
    // Refused by the encoder (rare): the quarantine keeps the reading itself.
    for r in &mut b.refused {
        if let Some(reading) = store.reading_by_seq(r.seq)? {
            r.payload = serde_json::to_string(&reading).unwrap_or_default();
            r.ids = Some((reading.reading_id, reading.device_id));
        }
    }
    Ok(b)
}

/// The next batch, read while the previous one was in flight.
struct Ahead {
    after: i64,
    batch: Encoded,
    newest: i64,
}

impl Ahead {
    /// Reads and encodes the batch after `after`, with the newest sequence
    /// (for the backlog gauge).
    fn read<S: Sink>(
        store: &Store,
        sink: &S,
        after: i64,
        limit: usize,
    ) -> Result<Ahead, StoreError> {
        Ok(Ahead {
            after,
            batch: read_batch(store, sink, after, limit)?,
            newest: crate::store::queries::newest_seq(store.conn())?,
        })
    }
}

/// What a store job gives back: the batches it could not commit (to try
/// again) with the error, and the batch read ahead.
struct JobResult {
    unsaved: Result<(), (Vec<Accepted>, StoreError)>,
    ahead: Option<Result<Ahead, StoreError>>,
}

/// The forwarder task.
pub struct Forwarder<S: Sink> {
    store: Option<Store>,
    sink: Arc<S>,
    cfg: ForwarderConfig,
    metrics: Arc<Metrics>,
    fault: Fault,
    failing: bool,
    refused: bool,
    /// Accepted batches whose cursor is not committed yet, oldest first.
    unsaved: Vec<Accepted>,
    /// The batch after the one just sent.
    ahead: Option<Ahead>,
}

impl<S: Sink> Forwarder<S> {
    /// A forwarder with its own store connection.
    pub fn new(store: Store, sink: S, cfg: ForwarderConfig, metrics: Arc<Metrics>) -> Forwarder<S> {
        Forwarder {
            store: Some(store),
            sink: Arc::new(sink),
            cfg,
            metrics,
            fault: Fault::from_env(),
            failing: false,
            refused: false,
            unsaved: Vec::new(),
            ahead: None,
        }
    }

    /// Starts a store job on a blocking thread: commits the accepted
    /// batches' cursor (and their quarantined points), then reads the batch
    /// after `read_after`. The store connection is the job's until
    /// [`Forwarder::finish_job`].
    fn start_job(
        &mut self,
        read_after: Option<i64>,
    ) -> Result<tokio::task::JoinHandle<(Store, JobResult)>, ForwardError> {
        let mut store = self
            .store
            .take()
            .ok_or_else(|| ForwardError::Task("store connection lost".into()))?;
        let unsaved = std::mem::take(&mut self.unsaved);
        let batch_size = self.cfg.batch_size;
        let sink = self.sink.clone();
        Ok(tokio::task::spawn_blocking(move || {
            let unsaved = if unsaved.is_empty() {
                Ok(())
            } else {
                save::<S>(&mut store, &unsaved).map_err(|e| (unsaved, e))
            };
            let ahead = read_after.map(|after| Ahead::read(&store, &*sink, after, batch_size));
            (store, JobResult { unsaved, ahead })
        }))
    }

    /// Takes the store connection back from a job; counts what it
    /// committed, keeps what it could not commit, returns the read-ahead.
    async fn finish_job(
        &mut self,
        job: tokio::task::JoinHandle<(Store, JobResult)>,
        committing: usize,
        quarantining: usize,
    ) -> Result<Option<Ahead>, ForwardError> {
        let (store, result) = job.await.map_err(|e| ForwardError::Task(e.to_string()))?;
        self.store = Some(store);
        match result.unsaved {
            Ok(()) => {
                self.metrics.forwarded(S::NAME, committing);
                for _ in 0..quarantining {
                    self.metrics.quarantined(S::NAME, REJECTED);
                }
                if quarantining > 0 {
                    tracing::warn!(
                        points = quarantining,
                        "{} refused points; quarantined as {REJECTED} (see `rpm-gateway quarantine list`)",
                        S::NAME
                    );
                }
            }
            Err((mut failed, e)) => {
                // Oldest first: they go before anything accepted since.
                failed.append(&mut self.unsaved);
                self.unsaved = failed;
                return Err(e.into());
            }
        }
        Ok(match result.ahead {
            Some(Ok(a)) => Some(a),
            // Read again by the next step.
            Some(Err(e)) => {
                tracing::debug!(error = %e, "{} forwarder: read-ahead failed", S::NAME);
                None
            }
            None => None,
        })
    }

    /// Commits the cursor of every accepted batch (before waiting).
    async fn save_unsaved(&mut self) -> Result<(), ForwardError> {
        if self.unsaved.is_empty() {
            return Ok(());
        }
        let (n, q) = counts(&self.unsaved);
        let job = self.start_job(None)?;
        self.finish_job(job, n, q).await.map(|_| ())
    }

    /// Runs a blocking store operation off the async threads.
    async fn with_store<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ForwardError> {
        Ok(crate::forward::on_store(&mut self.store, f)
            .await
            .map_err(ForwardError::Task)??)
    }

    /// Forwards until `stop` resolves. The batch in flight when it does is
    /// finished (bounded by the request timeout) and its cursor committed;
    /// a wait for the server is abandoned (the batch is re-read next start).
    /// A store error (busy, disk full) is retried after `max_backoff`.
    pub async fn run(mut self, stop: impl Future<Output = ()>) -> Result<(), ForwardError> {
        tokio::pin!(stop);
        loop {
            let step = self.step(&mut stop).await;
            if !matches!(step, Ok(Step::Full)) {
                // Before waiting (or stopping) the cursor is where the sink is.
                if let Err(e) = self.save_unsaved().await {
                    tracing::error!(error = %e, "{} forwarder: cannot commit the cursor; retrying", S::NAME);
                }
            }
            let wait = match step {
                Ok(Step::Stopped) => break,
                Ok(Step::Full) => None,
                Ok(Step::CaughtUp) => Some(self.cfg.flush_interval),
                Err(ForwardError::Task(e)) => return Err(ForwardError::Task(e)),
                Err(e) => {
                    tracing::error!(error = %e, "{} forwarder: store error; retrying", S::NAME);
                    Some(self.cfg.max_backoff)
                }
            };
            match wait {
                None if poll_once(&mut stop).await => break,
                None => {}
                Some(d) => tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(d) => {}
                },
            }
        }
        tracing::info!("{} forwarder stopped", S::NAME);
        Ok(())
    }

    /// Forwards the next batch after the cursor (read ahead while the
    /// previous one was in flight, or read now).
    async fn step(
        &mut self,
        stop: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<Step, ForwardError> {
        let batch_size = self.cfg.batch_size;
        let ahead = match self.ahead.take() {
            Some(a) => a,
            None => {
                self.save_unsaved().await?;
                let sink = self.sink.clone();
                self.with_store(move |s| {
                    let after = s.cursor(S::CURSOR)?;
                    Ahead::read(s, &*sink, after, batch_size)
                })
                .await?
            }
        };
        let Ahead {
            after: cursor,
            batch,
            newest: max_seq,
        } = ahead;
        self.metrics
            .set_sink_backlog(S::NAME, (max_seq - cursor).max(0));
        let full = batch.len() >= batch_size;
        if batch.len() == 0 {
            return Ok(Step::CaughtUp);
        }
        let last = batch.last;
        if self.forward(batch, full, stop).await?.is_none() {
            return Ok(Step::Stopped);
        }
        self.metrics
            .set_sink_backlog(S::NAME, (max_seq - last).max(0));
        Ok(if full { Step::Full } else { Step::CaughtUp })
    }

    /// Sends one batch while the store commits the previous batches' cursor
    /// and (if this one is full) reads the next; the batch is then accepted,
    /// its cursor committed by the next store job. `None`: stopped while
    /// waiting for the server.
    async fn forward(
        &mut self,
        batch: Encoded,
        full: bool,
        stop: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<Option<()>, ForwardError> {
        let Encoded {
            last,
            lines,
            seqs,
            refused: mut quarantine,
            ..
        } = batch;
        let lines = lines.seal();
        let (n, q) = counts(&self.unsaved);
        let job = self.start_job(full.then_some(last))?;
        let delivered = self.deliver(&lines, stop).await;
        self.ahead = self.finish_job(job, n, q).await?;
        let Some(rejected) = delivered else {
            self.ahead = None;
            return Ok(None);
        };
        self.fault.abort_at(FaultPoint::AfterForward);
        let accepted = lines.len() - rejected.len();
        quarantine.extend(rejected.into_iter().map(|r| Rejected {
            seq: seqs[r.index],
            ids: None,
            payload: lines.line(r.index).into_owned(),
            detail: r.detail,
        }));
        quarantine.sort_by_key(|r| r.seq);
        self.unsaved.push(Accepted {
            last,
            quarantine,
            accepted,
        });
        Ok(Some(()))
    }

    /// Writes `lines` until every one is accepted or refused; returns the
    /// refused ones. `None`: stopped while waiting for the server.
    async fn deliver(
        &mut self,
        lines: &Lines,
        stop: &mut (impl Future<Output = ()> + Unpin),
    ) -> Option<Vec<Refused>> {
        let mut refused = Vec::new();
        // Ranges of `lines` still to send (a stack: bisection pushes halves).
        let mut pending: Vec<Range<usize>> = Vec::with_capacity(16);
        pending.push(0..lines.len());
        let mut attempt = 0u32;
        while let Some(range) = pending.pop() {
            if range.is_empty() {
                continue;
            }
            match self.sink.write(lines.slice(range.clone())).await {
                Ok(()) => {
                    attempt = 0;
                    if self.failing || self.refused {
                        self.failing = false;
                        self.refused = false;
                        self.metrics.set_sink_refused(S::NAME, None);
                        tracing::info!("{} accepts writes again; catching up", S::NAME);
                    }
                    self.metrics.set_sink_up(S::NAME, true);
                }
                Err(WriteError::Refused { status, message }) => {
                    attempt = 0;
                    self.metrics.set_sink_up(S::NAME, true);
                    self.metrics.forward_failure(S::NAME, "refused");
                    if !self.refused {
                        self.refused = true;
                        // The hub's problem title names no reading.
                        tracing::error!(
                            status,
                            %message,
                            "{} refuses this batch; holding it (nothing skipped) and retrying every max_backoff", S::NAME
                        );
                    }
                    self.metrics
                        .set_sink_refused(S::NAME, Some(format!("HTTP {status}: {message}")));
                    pending.push(range);
                    tokio::select! {
                        _ = &mut *stop => return None,
                        _ = tokio::time::sleep(self.cfg.max_backoff) => {}
                    }
                }
                Err(WriteError::Rejected { status, message }) => {
                    attempt = 0;
                    self.metrics.set_sink_up(S::NAME, true);
                    self.metrics.forward_failure(S::NAME, "rejected");
                    tracing::debug!(status, %message, points = range.len(), "{} rejected a batch", S::NAME);
                    let detail = format!("HTTP {status}: {message}");
                    if range.len() == 1 {
                        refused.push(Refused {
                            index: range.start,
                            detail,
                        });
                        continue;
                    }
                    // The server named one line of this range: take it out
                    // and send the rest again, else split in halves.
                    let named: Vec<usize> = range
                        .clone()
                        .filter(|&i| message.contains(lines.line(i).trim_end()))
                        .collect();
                    if let [i] = named[..] {
                        refused.push(Refused { index: i, detail });
                        pending.push(i + 1..range.end);
                        pending.push(range.start..i);
                    } else {
                        let mid = range.start + range.len() / 2;
                        pending.push(mid..range.end);
                        pending.push(range.start..mid);
                    }
                }
                Err(WriteError::Retry {
                    kind,
                    status,
                    message,
                }) => {
                    self.metrics.forward_failure(S::NAME, &kind);
                    self.metrics.set_sink_up(S::NAME, false);
                    if !self.failing {
                        self.failing = true;
                        // The message may quote data: debug only.
                        tracing::warn!(
                            kind,
                            status,
                            "{} write failed; readings stay in the store and are retried",
                            S::NAME
                        );
                    }
                    tracing::debug!(kind, status, %message, "{} write failed", S::NAME);
                    let wait = crate::backoff::delay(FIRST_RETRY, self.cfg.max_backoff, attempt);
                    attempt = attempt.saturating_add(1);
                    pending.push(range);
                    tokio::select! {
                        _ = &mut *stop => return None,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        Some(refused)
    }
}

/// True when `stop` has already resolved (without waiting).
async fn poll_once(stop: &mut (impl Future<Output = ()> + Unpin)) -> bool {
    tokio::select! {
        biased;
        _ = stop => true,
        _ = std::future::ready(()) => false,
    }
}

/// Points accepted and quarantined in these batches.
fn counts(batches: &[Accepted]) -> (usize, usize) {
    batches
        .iter()
        .fold((0, 0), |(n, q), b| (n + b.accepted, q + b.quarantine.len()))
}

/// Commits accepted batches: their refused points quarantined and the
/// cursor past the newest, in one transaction.
fn save<S: Sink>(store: &mut Store, batches: &[Accepted]) -> Result<(), StoreError> {
    let Some(last) = batches.last().map(|b| b.last) else {
        return Ok(());
    };
    let tx = store.transaction()?;
    for r in batches.iter().flat_map(|b| &b.quarantine) {
        quarantine_rejected(&tx, S::NAME, r)?;
    }
    set_cursor(&tx, S::CURSOR, last)?;
    tx.commit()?;
    Ok(())
}

/// Quarantines a point the sink refused, keyed by reading so it is kept once.
fn quarantine_rejected(
    tx: &rusqlite::Transaction<'_>,
    sink: &str,
    r: &Rejected,
) -> Result<(), StoreError> {
    use rusqlite::OptionalExtension;
    let read_back;
    let (reading_id, device_id) = match &r.ids {
        Some((reading, device)) => (reading.as_str(), device.as_str()),
        None => {
            read_back = tx
                .query_row(
                    "SELECT reading_id, device_id FROM readings WHERE seq = ?1",
                    [r.seq],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
                )
                .optional()?;
            match &read_back {
                Some((reading, device)) => (reading.as_str(), device.as_str()),
                // Not stored any more: nothing left to keep.
                None => return Ok(()),
            }
        }
    };
    crate::store::quarantine::insert_sink_refusal(
        tx,
        &crate::store::quarantine::SinkRefusal {
            sink,
            reading_id,
            device_id,
            reason: REJECTED,
            detail: &r.detail,
            payload: r.payload.as_bytes(),
        },
        now_ms(),
    )
}
