//! Retention of the embedded store, and its disk.
//!
//! Retention is a policy, never a side effect of pressure: readings are
//! pruned only when they are older than `retention.keep` (both measured and
//! stored that long ago) **and** every downstream consumer is past them —
//! each forwarder's cursor (InfluxDB, the upstream hub) when it is on, and the rule
//! evaluator's cursor (`rules`) when it exists. Unforwarded readings are
//! never removed, whatever the disk says.
//!
//! When free space drops below `min_free_bytes` or `min_free_percent`, the
//! gateway says so loudly and once per episode: the `rpm_store_disk_low`
//! gauge (readiness reads it through [`Metrics::store_disk_low`]), a warning
//! in the log, and a `store.disk_low` operational event in the outbox for
//! the webhook dispatcher.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::config::RetentionConfig;
use crate::metrics::Metrics;
use crate::store::outbox::{self, Event, EventType, OperationalData, EVENT_SCHEMA};
use crate::store::{now_ms, Store, StoreError};

/// The rule evaluator's cursor: pruning never passes it either.
pub const RULES_CURSOR: &str = "rules";
/// Readings deleted per transaction (short write locks: ingestion goes on).
const CHUNK: i64 = 5000;

pub use crate::store::files::{disk_space, DiskSpace};

impl RetentionConfig {
    /// Whether `d` counts as low.
    pub fn is_low(&self, d: DiskSpace) -> bool {
        let pct = if d.total == 0 {
            100.0
        } else {
            d.available as f64 * 100.0 / d.total as f64
        };
        d.available < self.min_free_bytes || pct < self.min_free_percent
    }
}

/// The highest `seq` that may be pruned, given the consumers' cursors.
pub fn prune_limit(store: &Store, forwarding: &[&str]) -> Result<i64, StoreError> {
    let mut limit = i64::MAX;
    for cursor in forwarding {
        limit = limit.min(store.cursor(cursor)?);
    }
    let rules = store.cursor_if_set(RULES_CURSOR)?;
    if let Some(r) = rules {
        limit = limit.min(r);
    }
    Ok(limit)
}

/// Deletes readings at or below `limit` measured and committed before
/// `cutoff_ms`, in short transactions. Returns how many.
pub fn prune(store: &mut Store, limit: i64, cutoff_ms: i64) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let tx = store.transaction()?;
        let n = crate::store::queries::delete_old(&tx, limit, cutoff_ms, CHUNK)?;
        tx.commit()?;
        total += n;
        if (n as i64) < CHUNK {
            return Ok(total);
        }
    }
}

/// The retention and disk task.
pub struct Retention {
    state: Option<TickState>,
    interval: Duration,
}

impl Retention {
    /// A retention task with its own store connection. `forwarding`: the
    /// cursors of the forwarders that are on, which bound pruning.
    pub fn new(
        store: Store,
        cfg: RetentionConfig,
        forwarding: Vec<&'static str>,
        metrics: Arc<Metrics>,
    ) -> Retention {
        let dir = store
            .path()
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Retention {
            interval: cfg.interval,
            state: Some(TickState {
                store,
                cfg,
                forwarding,
                metrics,
                dir,
                low: false,
                alerted: false,
            }),
        }
    }

    /// Runs a check (and pruning) every `interval` until `stop` resolves.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let Some(mut state) = self.state.take() else {
                return;
            };
            match tokio::task::spawn_blocking(move || {
                state.tick();
                state
            })
            .await
            {
                Ok(state) => self.state = Some(state),
                Err(e) => {
                    tracing::error!(error = %e, "retention task failed; retention and disk checks stop");
                    return;
                }
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}

/// The task's state (moved to a blocking thread for each tick and back).
struct TickState {
    store: Store,
    cfg: RetentionConfig,
    forwarding: Vec<&'static str>,
    metrics: Arc<Metrics>,
    dir: PathBuf,
    /// In a low-disk episode (already reported).
    low: bool,
    /// The event of this episode is in the outbox.
    alerted: bool,
}

impl TickState {
    fn tick(&mut self) {
        match disk_space(&self.dir) {
            Ok(d) => self.disk(d),
            Err(e) => tracing::warn!(error = %e, "cannot read the store's free disk space"),
        }
        if let Some(keep) = self.cfg.keep {
            let cutoff = now_ms() - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
            let result = prune_limit(&self.store, &self.forwarding)
                .and_then(|limit| prune(&mut self.store, limit, cutoff));
            match result {
                Ok(0) => {}
                Ok(n) => {
                    self.metrics.pruned(n);
                    tracing::info!(readings = n, "retention pruned forwarded readings");
                }
                Err(e) => tracing::warn!(error = %e, "retention failed; retrying next interval"),
            }
        }
    }

    fn disk(&mut self, d: DiskSpace) {
        let low = self.cfg.is_low(d);
        self.metrics.set_disk(d.available, low);
        if low && !self.low {
            self.low = true;
            tracing::warn!(
                free_bytes = d.available,
                total_bytes = d.total,
                "the store's disk is low: readings are kept (unforwarded ones are never pruned), but the store will stop accepting input when it is full"
            );
        } else if !low && self.low {
            self.low = false;
            self.alerted = false;
            tracing::info!(
                free_bytes = d.available,
                "the store's disk is no longer low"
            );
        }
        if self.low && !self.alerted {
            match self.raise(d) {
                Ok(()) => self.alerted = true,
                // The disk may be too full for the event itself: next tick.
                Err(e) => tracing::error!(error = %e, "cannot record the store.disk_low event"),
            }
        }
    }

    /// Writes the `store.disk_low` event (once per episode).
    fn raise(&mut self, d: DiskSpace) -> Result<(), StoreError> {
        let now = Utc::now();
        let event = Event {
            schema: EVENT_SCHEMA.into(),
            id: outbox::event_id(&["store.disk_low", &now.timestamp_millis().to_string()]),
            event_type: EventType::StoreDiskLow,
            timestamp: now,
            data: OperationalData {
                endpoint_id: None,
                message: format!(
                    "the gateway's store disk is low: {} MiB free of {} MiB",
                    d.available / (1024 * 1024),
                    d.total / (1024 * 1024)
                ),
                detail: serde_json::json!({
                    "free_bytes": d.available,
                    "total_bytes": d.total,
                    "min_free_bytes": self.cfg.min_free_bytes,
                    "min_free_percent": self.cfg.min_free_percent,
                }),
            },
        };
        let tx = self.store.transaction()?;
        outbox::enqueue(&tx, &event, None, None, Some("warning"))?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::forwarder::CURSOR as FORWARD_CURSOR;
    use crate::store::set_cursor;

    fn fill(store: &mut Store, n: i64, measured_ms: i64, committed_ms: i64) {
        let tx = store.transaction().unwrap();
        for i in 0..n {
            tx.execute(
                "INSERT INTO readings (reading_id, group_id, patient_id, device_id, metric, value, unit, loinc,
                     measured_at, received_at, committed_at, source)
                 VALUES (?1, ?1, 'p', 'd', 'spo2', 97, '%', '59408-5', ?2, ?3, ?3, 'mqtt')",
                rusqlite::params![format!("r{measured_ms}-{i}"), measured_ms + i, committed_ms],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    fn seqs(store: &Store) -> (i64, i64, i64) {
        store
            .conn()
            .query_row(
                "SELECT COUNT(*), COALESCE(MIN(seq),0), COALESCE(MAX(seq),0) FROM readings",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
    }

    #[test]
    fn prunes_only_what_every_consumer_is_past_and_is_old() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let day = 24 * 3600 * 1000;
        let old = now_ms() - 40 * day;
        fill(&mut store, 12_000, old, old); // seq 1..=12000: old
        fill(&mut store, 10, now_ms(), now_ms()); // 12001..=12010: new
        let cutoff = now_ms() - 30 * day;

        // Forwarding on, nothing forwarded: nothing goes.
        assert_eq!(prune_limit(&store, &[FORWARD_CURSOR]).unwrap(), 0);
        assert_eq!(prune(&mut store, 0, cutoff).unwrap(), 0);

        // Forwarded up to 11000, the rule evaluator up to 10500.
        let tx = store.transaction().unwrap();
        set_cursor(&tx, FORWARD_CURSOR, 11_000).unwrap();
        set_cursor(&tx, RULES_CURSOR, 10_500).unwrap();
        tx.commit().unwrap();
        let limit = prune_limit(&store, &[FORWARD_CURSOR]).unwrap();
        assert_eq!(limit, 10_500);
        // A box's upstream link that has not sent anything holds everything.
        let both = [FORWARD_CURSOR, crate::forward::upstream::CURSOR];
        assert_eq!(prune_limit(&store, &both).unwrap(), 0);
        assert_eq!(prune(&mut store, limit, cutoff).unwrap(), 10_500);
        assert_eq!(seqs(&store), (1510, 10_501, 12_010));

        // Everything forwarded and evaluated: the new readings stay.
        let tx = store.transaction().unwrap();
        set_cursor(&tx, FORWARD_CURSOR, 12_010).unwrap();
        set_cursor(&tx, RULES_CURSOR, 12_010).unwrap();
        tx.commit().unwrap();
        let limit = prune_limit(&store, &[FORWARD_CURSOR]).unwrap();
        assert_eq!(prune(&mut store, limit, cutoff).unwrap(), 1500);
        assert_eq!(seqs(&store), (10, 12_001, 12_010));
    }

    #[test]
    fn disk_low_is_raised_once_per_episode() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let metrics = Arc::new(Metrics::default());
        let cfg = RetentionConfig {
            min_free_bytes: u64::MAX,
            ..RetentionConfig::default()
        };
        let mut t = Retention::new(store, cfg, Vec::new(), metrics.clone())
            .state
            .unwrap();
        for _ in 0..3 {
            t.tick();
        }
        assert!(metrics.store_disk_low());
        assert!(metrics.render().contains("rpm_store_disk_low 1"));
        let events: i64 = t
            .store
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE event_type = 'store.disk_low'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(events, 1);
        // Recovered, then low again: a new episode, a new event.
        t.cfg.min_free_bytes = 0;
        t.cfg.min_free_percent = 0.0;
        t.tick();
        assert!(!metrics.store_disk_low());
        t.cfg.min_free_bytes = u64::MAX;
        std::thread::sleep(Duration::from_millis(5));
        t.tick();
        let events: i64 = t
            .store
            .conn()
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
            .unwrap();
        assert_eq!(events, 2);
    }
}
