//! The single writer: group commit on a dedicated thread.
//!
//! Sources submit batches and get a future that resolves once the batch is
//! durably committed; only then do they acknowledge (MQTT PUBACK, HTTP 2xx,
//! BLE record sequence). While one transaction syncs to disk the next
//! submissions queue up and go into the following transaction together, so
//! durability costs one fsync per group, not per reading. The channel is
//! bounded: a slow disk pushes back on the sources instead of growing memory.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

use super::{Item, Outcome, Store, StoreError};
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

enum Job {
    Write {
        items: Vec<Item>,
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
    /// Starts the writer thread on an opened store.
    pub fn start(
        store: Store,
        cfg: WriterConfig,
        metrics: Arc<Metrics>,
    ) -> (Writer, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let (commit_tx, committed) = watch::channel(0u64);
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(store, rx, cfg, commit_tx, metrics))
            .unwrap_or_else(|e| panic!("cannot start the store writer thread: {e}"));
        (Writer { tx, committed }, handle)
    }

    /// Submits a batch; the returned receiver resolves once it is committed.
    /// Waits (back-pressure) while the queue is full.
    pub async fn submit(
        &self,
        items: Vec<Item>,
    ) -> Result<oneshot::Receiver<CommitResult>, StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Job::Write { items, done })
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

    /// A receiver that changes after every commit (downstream consumers wake on it).
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
) {
    let dedup_ms = cfg.dedup_window.as_millis() as i64;
    let mut fault = FaultInjection::from_env();
    let mut pending: Option<Job> = None;
    loop {
        let first = match pending.take() {
            Some(j) => j,
            None => match rx.blocking_recv() {
                Some(j) => j,
                None => break,
            },
        };
        let mut jobs = Vec::new();
        let mut items = 0;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Heartbeat { run_id, stopped } => {
                    if jobs.is_empty() {
                        if let Err(e) = store.heartbeat(run_id, stopped) {
                            tracing::warn!(error = %e, "store heartbeat failed");
                        }
                        break;
                    }
                    pending = Some(Job::Heartbeat { run_id, stopped });
                    break;
                }
                Job::Write { items: batch, done } => {
                    items += batch.len();
                    jobs.push((batch, done));
                }
            }
            if items < cfg.max_batch_items {
                next = rx.try_recv().ok();
            }
        }
        if jobs.is_empty() {
            continue;
        }
        let started = Instant::now();
        fault.maybe_abort(FaultInjection::BeforeCommit);
        let result = if fault.take_failure() {
            Err(FaultInjection::io_error())
        } else {
            commit_with_retry(&mut store, &jobs, dedup_ms)
        };
        fault.maybe_abort(FaultInjection::AfterCommit);
        metrics.store_batch(items, started.elapsed());
        match result {
            Ok(outcomes) => {
                commit_tx.send_modify(|n| *n += 1);
                for ((_, done), out) in jobs.into_iter().zip(outcomes) {
                    let _ = done.send(Ok(out));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, items, "store commit failed; the batch is not acknowledged and will be redelivered");
                metrics.store_failure();
                let e = Arc::new(e);
                for (_, done) in jobs {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// SQLite can be busy for a moment (a CLI command writing); retry briefly.
fn commit_with_retry(
    store: &mut Store,
    jobs: &[(Vec<Item>, oneshot::Sender<CommitResult>)],
    dedup_ms: i64,
) -> Result<Vec<Vec<Outcome>>, StoreError> {
    let batches: Vec<&[Item]> = jobs.iter().map(|(b, _)| b.as_slice()).collect();
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0;
    loop {
        match store.commit_many(&batches, dedup_ms) {
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

/// Crash points for the end-to-end tests (`RPM_FAULT_INJECT`): the process
/// aborts, as with `kill -9`, at an exact point of the commit protocol. Off
/// unless the variable is set; documented in README under "Testing".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultInjection {
    None,
    BeforeCommit,
    AfterCommit,
    /// The first commit fails as with a disk I/O error; later ones succeed.
    FailFirstCommit,
}

impl FaultInjection {
    fn from_env() -> Self {
        match std::env::var("RPM_FAULT_INJECT").as_deref() {
            Ok("abort-before-commit") => FaultInjection::BeforeCommit,
            Ok("abort-after-commit") => FaultInjection::AfterCommit,
            Ok("fail-first-commit") => FaultInjection::FailFirstCommit,
            _ => FaultInjection::None,
        }
    }

    /// True once, for `fail-first-commit`.
    fn take_failure(&mut self) -> bool {
        let fail = *self == FaultInjection::FailFirstCommit;
        if fail {
            eprintln!("fault injection: failing this commit");
            *self = FaultInjection::None;
        }
        fail
    }

    fn io_error() -> StoreError {
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
            Some("fault injection".into()),
        ))
    }

    fn maybe_abort(self, at: FaultInjection) {
        if self != FaultInjection::None && self == at {
            eprintln!("fault injection: aborting at {at:?}");
            std::process::abort();
        }
    }
}
