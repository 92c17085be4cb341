//! Cursors: the durable positions of downstream consumers over the
//! readings' commit order.

use super::{assign, open, reading, reopen};
use crate::store::{set_cursor, Store};

fn max_seq(store: &Store) -> i64 {
    store
        .conn()
        .query_row("SELECT MAX(seq) FROM readings", [], |r| r.get(0))
        .unwrap()
}

/// A cursor reads 0 (and "never set") until it is set; a cursor set in a
/// committed transaction survives reopening the store.
#[test]
fn a_cursor_is_zero_until_set_and_survives_reopen() {
    let (dir, mut store) = open();
    assert_eq!(store.cursor("rules").unwrap(), 0);
    assert_eq!(store.cursor_if_set("rules").unwrap(), None);
    let tx = store.transaction().unwrap();
    set_cursor(&tx, "rules", 5).unwrap();
    tx.commit().unwrap();
    drop(store);
    let store = reopen(&dir);
    assert_eq!(store.cursor("rules").unwrap(), 5);
    assert_eq!(store.cursor_if_set("rules").unwrap(), Some(5));
    assert_eq!(store.cursor("forward").unwrap(), 0);
}

/// A cursor moves only with the transaction that sets it, together with
/// the effect it stands for: rolled back, neither the position nor the
/// effect is kept.
#[test]
fn a_cursor_moves_only_with_its_transaction() {
    let (_dir, mut store) = open();
    let runs = |store: &Store| -> i64 {
        store
            .conn()
            .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
            .unwrap()
    };
    let runs_before = runs(&store);
    let tx = store.transaction().unwrap();
    set_cursor(&tx, "fanout", 3).unwrap();
    tx.commit().unwrap();
    let tx = store.transaction().unwrap();
    set_cursor(&tx, "fanout", 9).unwrap();
    tx.execute(
        "INSERT INTO runs(started_at, heartbeat_at) VALUES (1, 1)",
        [],
    )
    .unwrap();
    drop(tx);
    assert_eq!(store.cursor("fanout").unwrap(), 3);
    assert_eq!(runs(&store), runs_before);
}

/// Cursors only advance over the readings: every reading committed after
/// a consumer set its cursor sorts after it, even once the readings under
/// the cursor were deleted (retention) and the store reopened; so reading
/// `seq > cursor` neither misses nor repeats one.
#[test]
fn readings_committed_after_a_cursor_sort_after_it() {
    let (dir, mut store) = open();
    assign(&mut store, "ox-1", "p1");
    store
        .commit(&[reading("ox-1", "r1"), reading("ox-1", "r2")], 0)
        .unwrap();
    let position = max_seq(&store);
    let tx = store.transaction().unwrap();
    set_cursor(&tx, "forward", position).unwrap();
    tx.execute("DELETE FROM readings", []).unwrap();
    tx.commit().unwrap();
    drop(store);
    let mut store = reopen(&dir);
    store.commit(&[reading("ox-1", "r3")], 0).unwrap();
    let cursor = store.cursor("forward").unwrap();
    assert_eq!(cursor, position);
    assert!(max_seq(&store) > cursor);
}
