//! The single writer: group commit on a dedicated thread.
//!
//! Sources submit batches and get a future that resolves once the batch is
//! durably committed; only then do they acknowledge (MQTT PUBACK, HTTP 2xx,
//! BLE record sequence). While one transaction syncs to disk the next
//! submissions queue up and go into the following transaction together, so
//! durability costs one fsync per group, not per reading. The channel is
//! bounded: a slow disk pushes back on the sources instead of growing memory.
//!
//! MQTT input is appended to the [`inbox`](super::inbox) rather than
//! decoded first; while no submission is waiting, the writer runs its
//! [`Stage`] (the normalize stage), which turns inbox entries into readings
//! in bounded slices. Appends always go first: a backlog is taken off the
//! broker at append speed, and normalization catches up behind it.
//!
//! **A failing store** (a full disk) is an episode, not a stream of errors:
//! the first failed commit is logged once and readiness reports it; while
//! it lasts, a real commit is attempted at growing intervals (up to
//! [`Episode::MAX_BACKOFF`]) and submissions in between are refused at once
//! ([`StoreError::Paused`]), so the sources neither acknowledge nor spin.
//! The first commit that succeeds again ends the episode (logged once).

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

use super::inbox::InboxEntry;
use super::{Item, Outcome, Store, StoreError};
use crate::backoff::Backoff;
use crate::fault::{Fault, FaultPoint};
use crate::metrics::Metrics;

/// Writer settings.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Most items in one transaction.
    pub max_batch_items: usize,
    /// Bounded queue of submitted batches.
    pub queue: usize,
    /// Redeliveries of input without device time within this window are duplicates.
    pub dedup_window: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_batch_items: 4096,
            queue: 4096,
            dedup_window: Duration::from_secs(24 * 3600),
        }
    }
}

/// Result of a submitted batch: its outcomes, or the reason it was not committed.
pub type CommitResult = Result<Vec<Outcome>, Arc<StoreError>>;

/// Work the writer does while no submission is waiting, on its connection
/// (SQLite has one writer at a time, and this is it).
pub trait Stage: Send + 'static {
    /// Does one bounded slice of work and commits it; returns how many
    /// entries it took (0: nothing left to do).
    fn step(&mut self, store: &mut Store) -> Result<usize, StoreError>;
}

/// How long the writer keeps working through its stage at shutdown; what is
/// left is done at the next start.
const STAGE_DRAIN_AT_SHUTDOWN: Duration = Duration::from_secs(10);

enum Job {
    Write {
        items: Vec<Item>,
        done: oneshot::Sender<CommitResult>,
    },
    Append {
        entries: Vec<InboxEntry>,
        done: oneshot::Sender<CommitResult>,
    },
    Heartbeat {
        run_id: i64,
        stopped: bool,
    },
}

/// Handle to the writer thread. Cloning is cheap; the thread ends when the
/// last handle is dropped and the queue is drained.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    committed: watch::Receiver<u64>,
}

impl Writer {
    /// Starts the writer thread on an opened store, with the stage it runs
    /// while idle (the inbox's normalize stage, if any source uses the inbox).
    pub fn start(
        store: Store,
        cfg: WriterConfig,
        metrics: Arc<Metrics>,
        stage: Option<Box<dyn Stage>>,
    ) -> (Writer, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let (commit_tx, committed) = watch::channel(0u64);
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(store, rx, cfg, commit_tx, metrics, stage))
            .unwrap_or_else(|e| panic!("cannot start the store writer thread: {e}"));
        (Writer { tx, committed }, handle)
    }

    /// Submits a batch; the returned receiver resolves once it is committed.
    /// Waits (back-pressure) while the queue is full.
    pub async fn submit(
        &self,
        items: Vec<Item>,
    ) -> Result<oneshot::Receiver<CommitResult>, StoreError> {
        self.send(|done| Job::Write { items, done }).await
    }

    /// Appends received messages to the inbox; the returned receiver
    /// resolves (with no outcomes) once they are committed.
    pub async fn append(
        &self,
        entries: Vec<InboxEntry>,
    ) -> Result<oneshot::Receiver<CommitResult>, StoreError> {
        self.send(|done| Job::Append { entries, done }).await
    }

    async fn send(
        &self,
        job: impl FnOnce(oneshot::Sender<CommitResult>) -> Job,
    ) -> Result<oneshot::Receiver<CommitResult>, StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(job(done))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        Ok(rx)
    }

    /// Records a heartbeat (or the clean stop) of a gateway run.
    pub async fn heartbeat(&self, run_id: i64, stopped: bool) {
        let _ = self.tx.send(Job::Heartbeat { run_id, stopped }).await;
    }

    /// Whether the writer thread still takes submissions.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    /// A receiver that changes after every commit of readings or quarantine
    /// records (downstream consumers wake on it; inbox appends do not count).
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }
}

fn run(
    mut store: Store,
    mut rx: mpsc::Receiver<Job>,
    cfg: WriterConfig,
    commit_tx: watch::Sender<u64>,
    metrics: Arc<Metrics>,
    mut stage: Option<Box<dyn Stage>>,
) {
    let dedup_ms = cfg.dedup_window.as_millis() as i64;
    let mut fault = Fault::from_env();
    let mut episode = Episode::new(metrics.clone(), store.path());
    let mut pending: Option<Job> = None;
    // Work left by a previous run is picked up first.
    let mut idle = IdleWork::new(stage.is_some());
    metrics.inbox_pending(super::inbox::depth(store.conn()).unwrap_or(0));
    // Readings a crash left without their keys are found by id at once
    // (else the heartbeat does it).
    if let Err(e) = store.key_readings() {
        tracing::debug!(error = %e, "reading keys not added at start; the heartbeat adds them");
    }
    loop {
        let first = match pending.take() {
            Some(j) => j,
            None => match next_job(
                &mut rx,
                &mut idle,
                &mut stage,
                &mut store,
                &commit_tx,
                &mut episode,
            ) {
                Some(j) => j,
                None => break,
            },
        };
        let mut group = Group::default();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Heartbeat { run_id, stopped } => {
                    if group.is_empty() {
                        if episode.paused().is_none() {
                            match store.heartbeat(run_id, stopped) {
                                Ok(()) => episode.succeeded(),
                                Err(e) => episode.failed(&e),
                            }
                        }
                        break;
                    }
                    pending = Some(Job::Heartbeat { run_id, stopped });
                    break;
                }
                Job::Write { items, done } => {
                    group.items += items.len();
                    group.writes.push((items, done));
                }
                Job::Append { entries, done } => {
                    group.items += entries.len();
                    group.appends.push((entries, done));
                }
            }
            if group.items < cfg.max_batch_items {
                next = rx.try_recv().ok();
            }
        }
        if group.is_empty() {
            continue;
        }
        let started = Instant::now();
        fault.abort_at(FaultPoint::BeforeCommit);
        let result = if let Some(why) = episode.paused() {
            Err(StoreError::Paused(why))
        } else {
            let result = if fault.take(FaultPoint::FailFirstCommit) {
                Err(injected_io_error())
            } else {
                commit_with_retry(&mut store, &group, dedup_ms)
            };
            match &result {
                Ok(_) => episode.succeeded(),
                Err(e) => episode.failed(e),
            }
            result
        };
        fault.abort_at(FaultPoint::AfterCommit);
        metrics.store_batch(group.items, started.elapsed());
        if result.is_ok() {
            idle.dirty = true;
        }
        if !group.appends.is_empty() && result.is_ok() {
            let appended: usize = group.appends.iter().map(|(a, _)| a.len()).sum();
            metrics.inbox_pending(appended as i64);
            idle.more();
            idle.abort_before_step = fault.is(FaultPoint::BeforeNormalize);
        }
        group.settle(result, &commit_tx, &metrics);
    }
    if let Some(stage) = stage.as_mut() {
        drain_stage(stage.as_mut(), &mut store, &commit_tx, &mut episode, idle);
    }
}

/// The submissions of one group commit.
#[derive(Default)]
struct Group {
    writes: Vec<(Vec<Item>, oneshot::Sender<CommitResult>)>,
    appends: Vec<(Vec<InboxEntry>, oneshot::Sender<CommitResult>)>,
    items: usize,
}

impl Group {
    fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.appends.is_empty()
    }

    /// Answers every submitter with the commit's result.
    fn settle(
        self,
        result: Result<Vec<Vec<Outcome>>, StoreError>,
        commit_tx: &watch::Sender<u64>,
        metrics: &Metrics,
    ) {
        match result {
            Ok(outcomes) => {
                // Downstream stages follow readings: an inbox append alone
                // gives them nothing new to do (its normalize step will),
                // and waking them would only contend for the write lock.
                if !self.writes.is_empty() {
                    commit_tx.send_modify(|n| *n += 1);
                }
                for ((_, done), out) in self.writes.into_iter().zip(outcomes) {
                    let _ = done.send(Ok(out));
                }
                for (_, done) in self.appends {
                    let _ = done.send(Ok(Vec::new()));
                }
            }
            Err(e) => {
                // Logged once per episode (see Episode).
                tracing::debug!(error = %e, items = self.items, "store commit failed; the batch is not acknowledged and will be redelivered");
                metrics.store_failure();
                let e = Arc::new(e);
                let dones = self.writes.into_iter().map(|(_, d)| d);
                for done in dones.chain(self.appends.into_iter().map(|(_, d)| d)) {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A failing store: when to try again, and what readiness and the log say.
struct Episode {
    metrics: Arc<Metrics>,
    failures: u64,
    retry_at: Option<Instant>,
    backoff: Backoff,
    why: String,
    /// The store's file (its file system's free space explains failures).
    path: std::path::PathBuf,
}

impl Episode {
    const FIRST_BACKOFF: Duration = Duration::from_millis(250);
    /// Longest interval between attempts while commits fail (an attempt is
    /// one small write: cheap, and ingestion resumes soon after space returns).
    pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

    fn new(metrics: Arc<Metrics>, path: &std::path::Path) -> Self {
        Episode {
            path: path.to_path_buf(),
            metrics,
            failures: 0,
            retry_at: None,
            backoff: Backoff::new(Self::FIRST_BACKOFF, Self::MAX_BACKOFF),
            why: String::new(),
        }
    }

    /// While failing and before the next attempt: why (submissions are
    /// refused without an attempt).
    fn paused(&self) -> Option<String> {
        self.retry_at
            .filter(|t| Instant::now() < *t)
            .map(|_| self.why.clone())
    }

    fn failed(&mut self, e: &StoreError) {
        self.failures += 1;
        self.why = e.reason_at(&self.path);
        if self.metrics.set_store_unavailable(Some(self.why.clone())) {
            tracing::error!(error = %e, "store commits are failing; ingestion is paused (nothing is acknowledged) and retried at growing intervals up to 5 s; logged once until they succeed again");
        } else {
            tracing::debug!(error = %e, failures = self.failures, "store commit still failing");
        }
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
    }

    /// Tries a small write (the newest run's heartbeat) to learn whether
    /// commits work again.
    fn probe(&mut self, store: &Store) {
        match store.probe_write() {
            Ok(()) => self.succeeded(),
            Err(e) => self.failed(&e),
        }
    }

    fn succeeded(&mut self) {
        if self.failures > 0 {
            tracing::info!(
                failed_attempts = self.failures,
                "store commits succeed again; ingestion resumes"
            );
            self.metrics.set_store_unavailable(None);
        }
        self.failures = 0;
        self.retry_at = None;
        self.backoff.reset();
    }
}

/// Whether the stage may have work, and when it may try again after a failure.
struct IdleWork {
    more: bool,
    retry_at: Option<Instant>,
    /// `abort-before-normalize`: armed once input has been appended.
    abort_before_step: bool,
    /// Written since the WAL was last truncated.
    dirty: bool,
    truncated_at: Instant,
}

impl IdleWork {
    const TRUNCATE_EVERY: Duration = Duration::from_secs(10);

    fn new(more: bool) -> Self {
        IdleWork {
            more,
            retry_at: None,
            abort_before_step: false,
            dirty: true,
            truncated_at: Instant::now()
                .checked_sub(Self::TRUNCATE_EVERY)
                .unwrap_or_else(Instant::now),
        }
    }

    fn more(&mut self) {
        self.more = true;
        self.dirty = true;
    }

    /// Idle with nothing left to do: truncates the WAL (at most every
    /// [`IdleWork::TRUNCATE_EVERY`]), so that a burst leaves no large
    /// WAL file behind on a small disk.
    fn truncate_wal(&mut self, store: &mut Store) {
        if !self.dirty || self.truncated_at.elapsed() < Self::TRUNCATE_EVERY {
            return;
        }
        if let Err(e) = store.truncate_wal() {
            tracing::debug!(error = %e, "wal truncation skipped");
        }
        self.dirty = false;
        self.truncated_at = Instant::now();
    }

    /// Runs one step of the stage, recording what it says about what is left.
    fn step(
        &mut self,
        stage: &mut dyn Stage,
        store: &mut Store,
        commit_tx: &watch::Sender<u64>,
        episode: &mut Episode,
    ) {
        if self.abort_before_step {
            crate::fault::abort(FaultPoint::BeforeNormalize);
        }
        match stage.step(store) {
            Ok(0) => self.more = false,
            Ok(n) => {
                commit_tx.send_modify(|n| *n += 1);
                episode.metrics.inbox_pending(-(n as i64));
                episode.succeeded();
                self.retry_at = None;
            }
            Err(e) => {
                // Its input stays in the inbox.
                episode.failed(&e);
                self.retry_at = episode.retry_at;
            }
        }
    }
}

/// The next submission; while there is none, the stage works in slices.
/// None when every handle is gone and the queue is empty.
fn next_job(
    rx: &mut mpsc::Receiver<Job>,
    idle: &mut IdleWork,
    stage: &mut Option<Box<dyn Stage>>,
    store: &mut Store,
    commit_tx: &watch::Sender<u64>,
    episode: &mut Episode,
) -> Option<Job> {
    loop {
        match rx.try_recv() {
            Ok(j) => return Some(j),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        let Some(stage) = stage.as_mut().filter(|_| idle.more) else {
            if episode.failures > 0 {
                // Failing with nothing to do: probe at the episode's pace,
                // so that ingestion resumes soon after space returns even
                // if no source happens to submit anything.
                if episode.paused().is_none() {
                    episode.probe(store);
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            idle.truncate_wal(store);
            return rx.blocking_recv();
        };
        match idle.retry_at {
            // Backing off after a failure: poll for submissions meanwhile.
            Some(t) if Instant::now() < t => std::thread::sleep(Duration::from_millis(20)),
            _ => idle.step(stage.as_mut(), store, commit_tx, episode),
        }
    }
}

/// At shutdown, normalizes what is still in the inbox (for a bounded time).
fn drain_stage(
    stage: &mut dyn Stage,
    store: &mut Store,
    commit_tx: &watch::Sender<u64>,
    episode: &mut Episode,
    mut idle: IdleWork,
) {
    let deadline = Instant::now() + STAGE_DRAIN_AT_SHUTDOWN;
    while idle.more && idle.retry_at.is_none() && Instant::now() < deadline {
        idle.step(stage, store, commit_tx, episode);
    }
    if idle.more {
        tracing::info!(
            "inbox not fully normalized at shutdown; the rest is done at the next start"
        );
    }
}

/// SQLite can be busy for a moment (a CLI command writing); retry briefly.
fn commit_with_retry(
    store: &mut Store,
    group: &Group,
    dedup_ms: i64,
) -> Result<Vec<Vec<Outcome>>, StoreError> {
    let batches: Vec<&[Item]> = group.writes.iter().map(|(b, _)| b.as_slice()).collect();
    let appends: Vec<&[InboxEntry]> = group.appends.iter().map(|(a, _)| a.as_slice()).collect();
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0;
    loop {
        match store.commit_group(&batches, &appends, dedup_ms) {
            Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)))
                if attempt < 5
                    && matches!(
                        f.code,
                        rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                    ) =>
            {
                attempt += 1;
                std::thread::sleep(delay);
                delay *= 2;
            }
            other => return other,
        }
    }
}

/// The error a `fail-first-commit` fault makes a commit fail with.
fn injected_io_error() -> StoreError {
    StoreError::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
        Some("fault injection".into()),
    ))
}
