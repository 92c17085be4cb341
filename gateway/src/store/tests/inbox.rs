//! The inbox: appended in the writer's group commit, taken oldest first,
//! and left only in the transaction that stores what an entry became.

use super::{assign, count, entry, open, reading, reading_ids, refuse_readings_of, reopen};
use crate::store::inbox::{self, InboxEntry};

fn payloads(entries: &[(i64, InboxEntry)]) -> Vec<&[u8]> {
    entries.iter().map(|(_, e)| &e.payload[..]).collect()
}

/// Appended entries are durable (they survive a reopen) and are taken in
/// order of receipt, at most `limit` of them and no more than `max_bytes`
/// of payload, but always at least one.
#[test]
fn entries_are_taken_oldest_first_within_the_bounds() {
    let (dir, mut store) = open();
    let mut big = entry(&"x".repeat(100));
    big.truncated_from = Some(300_000);
    store
        .commit_group(
            &[],
            &[&[entry("first-----"), entry("second----")], &[big]],
            0,
        )
        .unwrap();
    drop(store);
    let store = reopen(&dir);
    assert_eq!(inbox::depth(store.conn()).unwrap(), 3);
    let all = inbox::oldest(store.conn(), 10, usize::MAX).unwrap();
    assert_eq!(payloads(&all)[..2], [b"first-----", b"second----"]);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(all[2].1.truncated_from, Some(300_000));
    assert_eq!(all[0].1.origin, "rpm/ox/ox-1");
    assert_eq!(
        payloads(&inbox::oldest(store.conn(), 10, 25).unwrap()),
        [b"first-----", b"second----"]
    );
    assert_eq!(inbox::oldest(store.conn(), 1, usize::MAX).unwrap().len(), 1);
    assert_eq!(inbox::oldest(store.conn(), 10, 1).unwrap().len(), 1);
}

/// An entry leaves the inbox in the very commit that stores its readings:
/// after it, the taken entries are gone and their readings are there; the
/// entries not taken wait.
#[test]
fn an_entry_leaves_the_inbox_with_what_it_became() {
    let (_dir, mut store) = open();
    assign(&mut store, "ox-1", "p1");
    store
        .commit_group(&[], &[&[entry("one"), entry("two"), entry("three")]], 0)
        .unwrap();
    let taken = inbox::oldest(store.conn(), 2, usize::MAX).unwrap();
    let through = taken[1].0;
    let (one, two) = (reading("ox-1", "r-one"), reading("ox-1", "r-two"));
    store.commit_inbox(&[&[one], &[two]], through, 0).unwrap();
    assert_eq!(reading_ids(&store), ["r-one", "r-two"]);
    let left = inbox::oldest(store.conn(), 10, usize::MAX).unwrap();
    assert_eq!(payloads(&left), [b"three"]);
}

/// If storing what entries became fails, they stay in the inbox and none
/// of their readings is stored: an entry is in the inbox or became
/// readings, never both and never neither.
#[test]
fn a_failed_normalize_commit_keeps_the_entries_and_stores_nothing() {
    let (_dir, mut store) = open();
    assign(&mut store, "ox-1", "p1");
    assign(&mut store, "boom", "p1");
    refuse_readings_of(&store, "boom");
    store
        .commit_group(&[], &[&[entry("one"), entry("two")]], 0)
        .unwrap();
    let taken = inbox::oldest(store.conn(), 10, usize::MAX).unwrap();
    let through = taken[1].0;
    let good = [reading("ox-1", "r-one")];
    let bad = [reading("boom", "r-two")];
    assert!(store.commit_inbox(&[&good, &bad], through, 0).is_err());
    assert_eq!(inbox::depth(store.conn()).unwrap(), 2);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM readings"), 0);
}
