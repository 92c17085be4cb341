//! The normalize stage: inbox entries → readings and quarantine.
//!
//! Runs on the store writer's thread whenever no submission is waiting (see
//! [`crate::store::writer::Stage`]). Each step takes the oldest entries,
//! decodes and normalizes them exactly as a message just received would be,
//! and commits the result together with the removal of those entries: an
//! entry is either still in the inbox or has become what it decodes to,
//! never both and never neither, whatever the moment of a crash.
//!
//! While a step commits, the entries of the next one (when a backlog waits)
//! are already decoded on another thread: decoding is a third of a step's
//! work and needs no store, so a drain uses a second core for it. Decoding
//! depends only on the entry, never on what earlier steps stored, and the
//! steps still commit strictly in the inbox's order.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use device_profiles::{Reject, Source};

use super::Pipeline;
use crate::store::inbox::{self, InboxEntry};
use crate::store::writer::Stage;
use crate::store::{Item, RawInput, Store, StoreError};

/// Entries per step: as many as a group commit takes (fewer, larger
/// transactions write each index page once per step instead of many
/// times); an append arriving meanwhile waits for one step, tens of ms.
pub const STEP_ENTRIES: usize = 4096;

/// Payload bytes per step: a few large messages make a short step, so a
/// reading queued behind them waits for tens of ms, not seconds.
pub const STEP_BYTES: usize = 4 * 1024 * 1024;

/// Turns inbox entries into store items, one step at a time.
pub struct NormalizeStage {
    pipeline: Arc<Pipeline>,
    dedup_window_ms: i64,
    step_entries: usize,
    /// The next step's entries, being decoded on another thread.
    ahead: Option<Ahead>,
}

/// Entries read for the next step (first and last sequence, count) and the
/// thread decoding them.
struct Ahead {
    first: i64,
    through: i64,
    count: usize,
    items: std::thread::JoinHandle<Vec<Vec<Item>>>,
}

impl NormalizeStage {
    /// A stage normalizing with `pipeline`.
    pub fn new(pipeline: Arc<Pipeline>, dedup_window: std::time::Duration) -> Self {
        NormalizeStage {
            pipeline,
            dedup_window_ms: dedup_window.as_millis() as i64,
            step_entries: STEP_ENTRIES,
            ahead: None,
        }
    }

    /// The next step's entries and their items, decoded ahead when they
    /// still are the oldest in the inbox (nothing else removes entries, so
    /// they are unless the stage was interrupted), else read and decoded now.
    fn next_items(&mut self, store: &Store) -> Result<(usize, i64, Vec<Vec<Item>>), StoreError> {
        if let Some(ahead) = self.ahead.take() {
            let oldest: Option<i64> =
                store
                    .conn()
                    .query_row("SELECT MIN(seq) FROM inbox", [], |r| r.get(0))?;
            if oldest == Some(ahead.first) {
                if let Ok(items) = ahead.items.join() {
                    return Ok((ahead.count, ahead.through, items));
                }
            }
        }
        let entries = inbox::oldest(store.conn(), self.step_entries, STEP_BYTES)?;
        let through = entries.last().map_or(0, |(seq, _)| *seq);
        let items = entries
            .iter()
            .map(|(_, e)| items(&self.pipeline, e))
            .collect();
        Ok((entries.len(), through, items))
    }

    /// Starts decoding the entries after `through`, if any wait.
    fn decode_ahead(&mut self, store: &Store, through: i64) -> Result<(), StoreError> {
        let entries = inbox::oldest_after(store.conn(), through, self.step_entries, STEP_BYTES)?;
        let (Some((first, _)), Some((last, _))) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let (first, last, count) = (*first, *last, entries.len());
        let pipeline = self.pipeline.clone();
        let decode = move || {
            entries
                .iter()
                .map(|(_, e)| items(&pipeline, e))
                .collect::<Vec<_>>()
        };
        // Without a thread (none can be made now) the step decodes them itself.
        if let Ok(handle) = std::thread::Builder::new()
            .name("normalize-ahead".into())
            .spawn(decode)
        {
            self.ahead = Some(Ahead {
                first,
                through: last,
                count,
                items: handle,
            });
        }
        Ok(())
    }
}

/// The items an entry becomes. A decoder that panics on some input is a
/// bug; the input is quarantined (`decoder_failure`) so that it does not
/// stop the inbox behind it, and can be re-processed once fixed.
fn items(pipeline: &Pipeline, entry: &InboxEntry) -> Vec<Item> {
    if let Some(size) = entry.truncated_from {
        // Larger than the source takes: only its start was kept.
        let mut raw = RawInput::shared(
            Source::Mqtt,
            &entry.origin,
            None,
            entry.payload.clone(),
            entry.received_at,
        );
        raw.size = size;
        let limit = pipeline.decoder.max_payload();
        return vec![Item::Quarantine {
            raw: Arc::new(raw),
            index: None,
            device_id: None,
            reason: Reject::PayloadTooLarge { size, limit },
        }];
    }
    let decode = || pipeline.mqtt(&entry.origin, &entry.payload, entry.received_at);
    catch_unwind(AssertUnwindSafe(decode)).unwrap_or_else(|panic| {
        let detail = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        tracing::error!("decoder failed on an input; quarantined as decoder_failure");
        let raw = Arc::new(RawInput::shared(
            Source::Mqtt,
            &entry.origin,
            None,
            entry.payload.clone(),
            entry.received_at,
        ));
        vec![Item::Quarantine {
            raw,
            index: None,
            device_id: None,
            reason: Reject::DecoderFailure { detail },
        }]
    })
}

impl Stage for NormalizeStage {
    fn step(&mut self, store: &mut Store) -> Result<usize, StoreError> {
        let (count, through, items) = self.next_items(store)?;
        if count == 0 {
            return Ok(0);
        }
        self.decode_ahead(store, through)?;
        let batches: Vec<&[Item]> = items.iter().map(Vec::as_slice).collect();
        let outcomes = store.commit_inbox(&batches, through, self.dedup_window_ms)?;
        for o in &outcomes {
            self.pipeline.record(Source::Mqtt, o);
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::writer::{Writer, WriterConfig};
    use chrono::Utc;
    use std::path::Path;

    fn stage(dir: &Path) -> (Store, NormalizeStage) {
        let pipeline = Arc::new(Pipeline::new(
            device_profiles::profile::bundled(),
            &crate::pipeline::config::NormalizeConfig::default(),
            Arc::default(),
        ));
        let mut store = Store::open(&dir.join("s.db")).unwrap();
        store
            .assign_device("ox-1", "p1", "test", |_| unreachable!())
            .unwrap();
        let stage = NormalizeStage::new(pipeline, std::time::Duration::from_secs(3600));
        (store, stage)
    }

    fn entry(payload: &str) -> InboxEntry {
        InboxEntry {
            origin: "acme/oximeter/ox-1".into(),
            payload: Arc::from(payload.as_bytes()),
            received_at: Utc::now(),
            truncated_from: None,
        }
    }

    fn count(store: &Store, table: &str) -> i64 {
        store
            .conn()
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    /// An entry leaves the inbox in the transaction that stores what it
    /// became: readings, or a quarantine record.
    #[test]
    fn a_step_turns_entries_into_readings_and_quarantine_and_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut stage) = stage(dir.path());
        let good = entry(r#"{"t":"2026-01-31T08:46:00Z","spo2":97,"pr":70}"#);
        let bad = entry("{not json");
        store
            .commit_group(&[], &[&[good.clone(), bad, good]], 0)
            .unwrap();
        assert_eq!(inbox::depth(store.conn()).unwrap(), 3);
        stage.step_entries = 2;
        assert_eq!(stage.step(&mut store).unwrap(), 2);
        assert_eq!(inbox::depth(store.conn()).unwrap(), 1);
        assert_eq!(count(&store, "readings"), 2);
        assert_eq!(count(&store, "quarantine"), 1);
        // The third is a redelivery of the first: same reading ids.
        assert_eq!(stage.step(&mut store).unwrap(), 1);
        assert_eq!(stage.step(&mut store).unwrap(), 0);
        assert_eq!(count(&store, "readings"), 2);
        assert_eq!(inbox::depth(store.conn()).unwrap(), 0);
    }

    /// Entries decoded ahead are used only while they still are the oldest
    /// in the inbox: removed meanwhile, they are not stored.
    #[test]
    fn entries_decoded_ahead_are_used_only_while_still_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, mut stage) = stage(dir.path());
        let at = |m: u32| {
            entry(&format!(
                r#"{{"t":"2026-01-31T08:{m:02}:00Z","spo2":97,"pr":70}}"#
            ))
        };
        store
            .commit_group(&[], &[&[at(1), at(2), at(3), at(4)]], 0)
            .unwrap();
        stage.step_entries = 2;
        assert_eq!(stage.step(&mut store).unwrap(), 2);
        assert!(stage.ahead.is_some(), "the next two are decoded ahead");
        store
            .conn()
            .execute("DELETE FROM inbox WHERE seq = 3", [])
            .unwrap();
        assert_eq!(stage.step(&mut store).unwrap(), 1);
        assert_eq!(stage.step(&mut store).unwrap(), 0);
        assert_eq!(count(&store, "readings"), 6);
    }

    /// The writer acknowledges an append once it is committed, and its
    /// stage normalizes it while no submission waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_normalizes_appended_entries_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let (store, stage) = stage(dir.path());
        let metrics = Arc::new(Metrics::default());
        let (writer, thread) = Writer::start(
            store,
            WriterConfig::default(),
            metrics.clone(),
            Some(Box::new(stage)),
        );
        let mut committed = writer.committed();
        let done = writer
            .append(vec![entry(
                r#"{"t":"2026-01-31T08:46:00Z","spo2":97,"pr":70}"#,
            )])
            .await
            .unwrap();
        assert_eq!(done.await.unwrap().unwrap(), Vec::new());
        let reader = Store::open(&dir.path().join("s.db")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while count(&reader, "readings") < 2 {
                let _ = committed.changed().await;
            }
        })
        .await
        .unwrap();
        assert_eq!(inbox::depth(reader.conn()).unwrap(), 0);
        drop(writer);
        thread.join().unwrap();
        assert!(metrics.render().contains("rpm_inbox_pending 0\n"));
    }
}
