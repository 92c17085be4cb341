//! The writer and the commit path: answers after the commit, group commit,
//! all-or-nothing failure, dedup of readings.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

use super::{assign, count, entry, open, reading, reading_ids, refuse_readings_of, reopen};
use crate::metrics::Metrics;
use crate::store::writer::{CommitResult, Stage, Writer, WriterConfig};
use crate::store::{Item, Outcome, Store, StoreError};

/// A stage that holds the writer thread on its first step until released:
/// submissions made meanwhile queue up and go into one group commit.
struct Gate {
    entered: std_mpsc::Sender<()>,
    release: Option<std_mpsc::Receiver<()>>,
}

impl Stage for Gate {
    fn step(&mut self, _: &mut Store) -> Result<usize, StoreError> {
        if let Some(release) = self.release.take() {
            let _ = self.entered.send(());
            let _ = release.recv();
        }
        Ok(0)
    }
}

/// A writer on `store` that is held (inside its idle stage) until the
/// returned sender is used or dropped.
fn held_writer(store: Store) -> (Writer, std::thread::JoinHandle<()>, std_mpsc::Sender<()>) {
    let (entered_tx, entered) = std_mpsc::channel();
    let (release, release_rx) = std_mpsc::channel();
    let gate = Gate {
        entered: entered_tx,
        release: Some(release_rx),
    };
    let (writer, thread) = Writer::start(
        store,
        WriterConfig::default(),
        Arc::new(Metrics::default()),
        Some(Box::new(gate)),
    );
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the writer reaches its stage");
    (writer, thread, release)
}

async fn answer(rx: oneshot::Receiver<CommitResult>) -> CommitResult {
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("answered in time")
        .expect("answered, not dropped")
}

fn stored(n: usize) -> Outcome {
    Outcome::Stored {
        stored: n,
        duplicates: 0,
        patient_id: "p1".into(),
    }
}

fn duplicate() -> Outcome {
    Outcome::Stored {
        stored: 0,
        duplicates: 1,
        patient_id: "p1".into(),
    }
}

/// A submission is answered only once its commit is durable: not while
/// the writer has yet to commit it, and when it is, another connection
/// already sees its readings.
#[tokio::test]
async fn a_submission_is_answered_only_after_its_commit() {
    let (dir, mut store) = open();
    assign(&mut store, "ox-1", "p1");
    let (writer, thread, release) = held_writer(store);
    let mut rx = writer.submit(vec![reading("ox-1", "r1")]).await.unwrap();
    assert!(matches!(
        rx.try_recv(),
        Err(oneshot::error::TryRecvError::Empty)
    ));
    let reader = reopen(&dir);
    assert_eq!(count(&reader, "SELECT COUNT(*) FROM readings"), 0);
    release.send(()).unwrap();
    assert_eq!(answer(rx).await.unwrap(), vec![stored(1)]);
    assert_eq!(reading_ids(&reader), ["r1"]);
    drop(writer);
    thread.join().unwrap();
}

/// Submissions that wait together are committed in one transaction, in
/// the order they were submitted, and each submitter gets its own outcomes.
#[tokio::test]
async fn group_commit_keeps_submission_order_and_answers_each() {
    let (dir, mut store) = open();
    assign(&mut store, "ox-1", "p1");
    let (writer, thread, release) = held_writer(store);
    let a = writer
        .submit(vec![reading("ox-1", "a1"), reading("ox-1", "a2")])
        .await
        .unwrap();
    let b = writer.submit(vec![reading("ox-1", "b1")]).await.unwrap();
    let c = writer
        .submit(vec![
            reading("ox-1", "c1"),
            reading("ox-1", "a1"),
            reading("ox-1", "c2"),
        ])
        .await
        .unwrap();
    release.send(()).unwrap();
    assert_eq!(answer(a).await.unwrap(), vec![stored(1), stored(1)]);
    assert_eq!(answer(b).await.unwrap(), vec![stored(1)]);
    assert_eq!(
        answer(c).await.unwrap(),
        vec![stored(1), duplicate(), stored(1)]
    );
    // One commit for the three (the counter downstream stages wake on).
    assert_eq!(*writer.committed().borrow(), 1);
    let reader = reopen(&dir);
    assert_eq!(reading_ids(&reader), ["a1", "a2", "b1", "c1", "c2"]);
    assert_eq!(
        count(&reader, "SELECT COUNT(DISTINCT committed_at) FROM readings"),
        1
    );
    drop(writer);
    thread.join().unwrap();
}

/// When a group's commit fails, every submitter in it (readings and inbox
/// appends alike) is answered with that error, and nothing of the group is
/// stored: not the readings of the other submissions, not the appends.
#[tokio::test]
async fn a_failed_commit_answers_every_submitter_and_stores_nothing() {
    let (dir, mut store) = open();
    assign(&mut store, "ox-1", "p1");
    assign(&mut store, "boom", "p1");
    refuse_readings_of(&store, "boom");
    let (writer, thread, release) = held_writer(store);
    let good = writer.submit(vec![reading("ox-1", "r1")]).await.unwrap();
    let bad = writer.submit(vec![reading("boom", "r2")]).await.unwrap();
    let appended = writer.append(vec![entry("{}")]).await.unwrap();
    release.send(()).unwrap();
    let errors = [
        answer(good).await,
        answer(bad).await,
        answer(appended).await,
    ]
    .map(|r| r.expect_err("the group's commit failed"));
    assert!(errors[0].to_string().contains("the disk refuses boom"));
    assert!(errors.iter().all(|e| Arc::ptr_eq(e, &errors[0])));
    assert_eq!(*writer.committed().borrow(), 0);
    let reader = reopen(&dir);
    assert_eq!(count(&reader, "SELECT COUNT(*) FROM readings"), 0);
    assert_eq!(count(&reader, "SELECT COUNT(*) FROM inbox"), 0);
    drop(writer);
    thread.join().unwrap();
}

/// The group commit is one transaction: a batch that fails takes the
/// group's other batches, their quarantine records, its inbox appends and
/// the devices' `last_seen_at` with it.
#[test]
fn a_failed_group_commit_leaves_nothing_behind() {
    let (_dir, mut store) = open();
    assign(&mut store, "ox-1", "p1");
    assign(&mut store, "boom", "p1");
    refuse_readings_of(&store, "boom");
    let good = [reading("ox-1", "r1"), reading("nobody", "r2")];
    let bad = [reading("boom", "r3")];
    let err = store
        .commit_group(&[&good, &bad], &[&[entry("{}")]], 0)
        .unwrap_err();
    assert!(err.to_string().contains("the disk refuses boom"), "{err}");
    assert_eq!(count(&store, "SELECT COUNT(*) FROM readings"), 0);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM quarantine"), 0);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM inbox"), 0);
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM devices WHERE last_seen_at IS NOT NULL"
        ),
        0
    );
}

/// A reading id is stored once: the same reading again, in the same batch
/// or a later commit, is answered as a duplicate and adds no row.
#[test]
fn the_same_reading_id_twice_is_one_row_answered_duplicate() {
    let (dir, mut store) = open();
    assign(&mut store, "ox-1", "p1");
    let out = store
        .commit(&[reading("ox-1", "r1"), reading("ox-1", "r1")], 0)
        .unwrap();
    assert_eq!(out, [stored(1), duplicate()]);
    drop(store);
    let mut store = reopen(&dir);
    assert_eq!(
        store.commit(&[reading("ox-1", "r1")], 0).unwrap(),
        [duplicate()]
    );
    assert_eq!(reading_ids(&store), ["r1"]);
}

/// Ids are indexed by their first 8 characters: ids that share them are
/// still different readings, and each is still stored once.
#[test]
fn reading_ids_sharing_their_indexed_prefix_are_told_apart() {
    let (_dir, mut store) = open();
    assign(&mut store, "ox-1", "p1");
    let (a, b) = ("0123456789abcdef", "0123456789abcdee");
    let out = store
        .commit(
            &[reading("ox-1", a), reading("ox-1", b), reading("ox-1", a)],
            0,
        )
        .unwrap();
    assert_eq!(out, [stored(1), stored(1), duplicate()]);
    assert_eq!(
        store.commit(&[reading("ox-1", b)], 0).unwrap(),
        [duplicate()]
    );
    assert_eq!(reading_ids(&store), [a, b]);
}

/// Input without a device time has no natural identity: the same content
/// from the same device within the dedup window is a duplicate even under
/// another reading id; outside the window it is a new reading.
#[test]
fn timeless_input_is_deduplicated_by_content_within_the_window() {
    let (_dir, mut store) = open();
    assign(&mut store, "ox-1", "p1");
    let timeless = |id: &str, received_min: i64| {
        let mut item = reading("ox-1", id);
        if let Item::Reading { group, .. } = &mut item {
            let r = &mut group.readings[0];
            r.device_measured_at = None;
            r.content_digest = Some("digest-1".into());
            r.received_at += chrono::TimeDelta::minutes(received_min);
        }
        item
    };
    let hour = 3_600_000;
    assert_eq!(
        store.commit(&[timeless("r1", 0)], hour).unwrap(),
        [stored(1)]
    );
    assert_eq!(
        store.commit(&[timeless("r2", 30)], hour).unwrap(),
        [duplicate()]
    );
    assert_eq!(
        store.commit(&[timeless("r3", 120)], hour).unwrap(),
        [stored(1)]
    );
    assert_eq!(reading_ids(&store), ["r1", "r3"]);
}
