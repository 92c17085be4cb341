//! Readings found by reading or measurement id: through keys the writer
//! adds in bulk up to the cursor `store.keys`, and by reading on after it.

use super::{assign, count, entry, open, reading, reopen};
use crate::store::{keys, queries, Item, Outcome, Store};
use device_profiles::Metric;
use std::time::Duration;

/// A store whose commits add keys only the first time (then the heartbeat
/// does), so that what a test sees does not depend on its speed.
fn open_keyed_once() -> (tempfile::TempDir, Store) {
    let (dir, mut store) = open();
    store.keys_every(Duration::from_secs(3600));
    (dir, store)
}

/// [`open_keyed_once`] with device `ox-1` assigned and one reading, `first`,
/// stored and keyed by that first commit: later commits add no keys, so a
/// test adds them when it means to.
fn keyed_once_after(first: &str) -> (tempfile::TempDir, Store) {
    let (dir, mut store) = open_keyed_once();
    assign(&mut store, "ox-1", "p1");
    store.commit(&[reading("ox-1", first)], 0).unwrap();
    assert_eq!(cursor(&store), 1, "the first commit adds keys");
    (dir, store)
}

fn cursor(store: &Store) -> i64 {
    store.cursor(keys::CURSOR).unwrap()
}

fn found(store: &Store, id: &str) -> bool {
    let by_id = queries::reading_group(store.conn(), id).unwrap();
    let by_group = queries::group_readings(store.conn(), id).unwrap();
    assert_eq!(by_id.is_some(), by_group.len() == 1, "{id}");
    by_id.is_some()
}

/// Keys are added at most once a second by a commit that stores readings,
/// and by the heartbeat; a reading is found by its id before its keys are
/// added (after the cursor) and after (through them), once either way.
#[test]
fn readings_are_found_by_id_before_and_after_their_keys_are_added() {
    let (dir, mut store) = open_keyed_once();
    assign(&mut store, "ox-1", "p1");
    assign(&mut store, "ox-2", "p2");
    store.commit(&[reading("ox-1", "aaaaaaaa01")], 0).unwrap();
    assert_eq!(cursor(&store), 1, "the first commit adds keys");
    store
        .commit(
            &[reading("ox-1", "aaaaaaaa02"), reading("ox-2", "bbbbbbbb01")],
            0,
        )
        .unwrap();
    assert_eq!(cursor(&store), 1, "not again within the interval");
    for id in ["aaaaaaaa01", "aaaaaaaa02", "bbbbbbbb01"] {
        assert!(found(&store, id), "{id}");
    }
    assert!(
        !found(&store, "aaaaaaaa03"),
        "a shared prefix is not the id"
    );

    store.heartbeat(0, false).unwrap();
    assert_eq!(cursor(&store), 3);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM reading_keys WHERE seq > 1"),
        2
    );
    for id in ["aaaaaaaa01", "aaaaaaaa02", "bbbbbbbb01"] {
        assert!(found(&store, id), "{id}");
    }

    drop(store);
    // Another connection, as after a restart: its first commit with
    // readings adds keys; an inbox append (an acknowledgement waits for
    // it) never does.
    let mut store = reopen(&dir);
    store.keys_every(Duration::from_secs(3600));
    store.commit(&[reading("ox-1", "cccccccc01")], 0).unwrap();
    assert_eq!(cursor(&store), 4);
    store.commit(&[reading("ox-1", "cccccccc02")], 0).unwrap();
    drop(store);
    let mut store = reopen(&dir);
    store
        .commit_group(&[], &[&[entry(r#"{"spo2":97}"#)]], 0)
        .unwrap();
    assert_eq!(cursor(&store), 4, "an inbox append adds no keys");
    store.commit(&[reading("ox-1", "cccccccc03")], 0).unwrap();
    assert_eq!(cursor(&store), 6);
    for id in ["cccccccc01", "cccccccc02", "cccccccc03"] {
        assert!(found(&store, id), "{id}");
    }

    // A deleted reading takes its keys with it.
    store
        .conn()
        .execute("DELETE FROM readings WHERE reading_id = 'aaaaaaaa02'", [])
        .unwrap();
    assert!(!found(&store, "aaaaaaaa02"));
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM reading_keys WHERE seq = 2"),
        0
    );
}

/// A bulk adds its keys slice by slice, in inserts of many rows and a
/// tail of single ones: the same rows one insert of them all would add.
#[test]
fn keys_added_in_slices_are_those_of_every_reading() {
    let (_dir, mut store) = keyed_once_after("00000000-x");
    // Keys out of order, some shared by several readings.
    let id = |i: u64| format!("{:08x}-{i}", (i * 2_654_435_761) & 0xffff_f000);
    let items: Vec<Item> = (0..300).map(|i| reading("ox-1", &id(i))).collect();
    store.commit(&items, 0).unwrap();
    assert_eq!(cursor(&store), 1, "within the interval: no keys yet");

    // A commit's bulk stops at its bound, the cursor with it; lookups
    // find the readings beyond by reading on.
    let tx = store.transaction().unwrap();
    assert!(!keys::index_in(&tx, 64, 7, 100).unwrap());
    tx.commit().unwrap();
    assert_eq!(cursor(&store), 101);
    for i in [0, 150, 299] {
        assert!(found(&store, &id(i)), "{}", id(i));
    }

    let tx = store.transaction().unwrap();
    assert!(keys::index_in(&tx, 64, 7, i64::MAX).unwrap());
    tx.commit().unwrap();
    assert_eq!(cursor(&store), 301);
    let all = count(
        &store,
        "SELECT COUNT(*) FROM (SELECT reading_key, seq FROM readings
                               UNION SELECT group_key, seq FROM readings)",
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM reading_keys"), all);
    assert_eq!(
        count(
            &store,
            "SELECT COUNT(*) FROM readings r WHERE NOT EXISTS (
                 SELECT 1 FROM reading_keys k WHERE k.key = r.reading_key AND k.seq = r.seq)"
        ),
        0
    );
    for i in [0, 150, 299] {
        assert!(found(&store, &id(i)), "{}", id(i));
    }
}

/// Keys are cut from ids as SQLite cuts them (`substr(id, 1, 8)`: eight
/// characters, not bytes), whatever the ids hold, so that every reading is
/// found through its keys.
#[test]
fn keys_are_cut_as_sqlite_cuts_ids() {
    let (_dir, mut store) = keyed_once_after("first-reading");
    let ids = [
        "abc",
        "12345678",
        "123456789",
        "ééééééééé-1",
        "𝄞𝄞𝄞𝄞𝄞𝄞𝄞𝄞𝄞-2",
        "a𝄞b€c𝄞déf-3",
        "Zz",
    ];
    let items: Vec<Item> = ids.iter().map(|id| reading("ox-1", id)).collect();
    store.commit(&items, 0).unwrap();
    let tx = store.transaction().unwrap();
    assert!(keys::index_in(&tx, 3, 2, i64::MAX).unwrap());
    tx.commit().unwrap();
    for column in ["reading_key", "group_key"] {
        assert_eq!(
            count(
                &store,
                &format!(
                    "SELECT COUNT(*) FROM readings r WHERE NOT EXISTS (
                         SELECT 1 FROM reading_keys k WHERE k.key = r.{column} AND k.seq = r.seq)"
                )
            ),
            0,
            "{column}"
        );
    }
    for id in ids {
        assert!(found(&store, id), "{id}");
    }
}

/// A re-sent reading is found among its device's readings of the same
/// device time (an index where they sit together), before and after its
/// keys were added; input without a device time by its digest.
#[test]
fn a_re_sent_reading_is_stored_once() {
    let (_dir, mut store) = open_keyed_once();
    assign(&mut store, "ox-1", "p1");
    let stored = |out: &[Outcome]| match &out[0] {
        Outcome::Stored { stored, .. } => *stored,
        other => panic!("{other:?}"),
    };
    let first = store.commit(&[reading("ox-1", "aaaaaaaa01")], 0).unwrap();
    assert_eq!(stored(&first), 1);
    let again = store.commit(&[reading("ox-1", "aaaaaaaa01")], 0).unwrap();
    assert_eq!(stored(&again), 0, "in the tail");
    store.heartbeat(0, false).unwrap();
    let again = store.commit(&[reading("ox-1", "aaaaaaaa01")], 0).unwrap();
    assert_eq!(stored(&again), 0, "keyed");

    let mut undated = reading("ox-1", "dddddddd01");
    if let Item::Reading { group, .. } = &mut undated {
        group.readings[0].device_measured_at = None;
        group.readings[0].content_digest = Some("digest:0".into());
    }
    assert_eq!(stored(&store.commit(&[undated.clone()], 0).unwrap()), 1);
    assert_eq!(stored(&store.commit(&[undated], 0).unwrap()), 0);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM readings"), 2);

    for (sql, index) in [
        (
            "SELECT 1 FROM readings WHERE device_id = ?1 AND device_measured_at = ?2 AND reading_id = ?3",
            "readings_device_time",
        ),
        (
            "SELECT 1 FROM readings WHERE device_id = ?1 AND content_digest = ?2 AND reading_id = ?3",
            "readings_device_digest",
        ),
    ] {
        let plan: String = store
            .conn()
            .query_row(
                &format!("EXPLAIN QUERY PLAN {sql}"),
                rusqlite::params!["ox-1", 1, "x"],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains(index), "{plan}");
    }
}

/// The rest of a measurement after a position (what the rule stage reads
/// so as never to split one) is found before and after its keys are added,
/// reading on from the later of the position and the keys' cursor.
#[test]
fn the_rest_of_a_measurement_is_found_after_a_position() {
    let (_dir, mut store) = open_keyed_once();
    assign(&mut store, "ox-1", "p1");
    let measurement = |group_id: &str, second: &str| {
        let mut item = reading("ox-1", group_id);
        if let Item::Reading { group, .. } = &mut item {
            let mut other = group.readings[0].clone();
            other.reading_id = second.into();
            other.metric = Metric::PulseRate;
            group.readings.push(other);
        }
        item
    };
    store
        .commit(&[measurement("gggggggg01", "rrrrrrrr01")], 0)
        .unwrap();
    store
        .commit(&[measurement("hhhhhhhh01", "rrrrrrrr02")], 0)
        .unwrap();
    assert_eq!(cursor(&store), 2, "the second measurement is not keyed yet");
    let rest = |store: &Store, group: &str, after: i64| -> Vec<i64> {
        queries::committed_in_group_after(store.conn(), group, after)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect()
    };
    for _ in 0..2 {
        assert_eq!(rest(&store, "gggggggg01", 0), [1, 2]);
        assert_eq!(rest(&store, "gggggggg01", 1), [2]);
        assert!(rest(&store, "gggggggg01", 2).is_empty());
        assert_eq!(rest(&store, "hhhhhhhh01", 1), [3, 4]);
        assert_eq!(rest(&store, "hhhhhhhh01", 3), [4]);
        store.heartbeat(0, false).unwrap();
        assert_eq!(cursor(&store), 4);
    }
    // Without a device time: through the keys and the readings after them.
    let mut undated = measurement("iiiiiiii01", "rrrrrrrr03");
    if let Item::Reading { group, .. } = &mut undated {
        for r in &mut group.readings {
            r.device_measured_at = None;
            r.content_digest = Some("digest:0".into());
        }
    }
    store.commit(&[undated], 0).unwrap();
    assert_eq!(rest(&store, "iiiiiiii01", 4), [5, 6]);
    assert_eq!(rest(&store, "iiiiiiii01", 5), [6]);
    store.heartbeat(0, false).unwrap();
    assert_eq!(rest(&store, "iiiiiiii01", 5), [6]);
}

/// Every statement that finds readings by id finds them through the keys
/// and the readings after their cursor, or through an index probe: none
/// reads the whole table (SQLite would, to give rows in commit order
/// without a sort).
#[test]
fn lookups_by_id_never_read_the_whole_table() {
    let (_dir, store) = open();
    assert!(queries::BY_ID.contains(&format!("name = '{}'", keys::CURSOR)));
    for sql in queries::ById::get().all() {
        let mut stmt = store
            .conn()
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let values = ["gggggggg01", "1", "ox-1", "1"];
        let plan: Vec<String> = stmt
            .query_map(
                rusqlite::params_from_iter(&values[..stmt.parameter_count()]),
                |r| r.get(3),
            )
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let keyed = plan
            .iter()
            .any(|l| l.contains("SEARCH reading_keys USING PRIMARY KEY"))
            && plan
                .iter()
                .any(|l| l.contains("SEARCH readings USING INTEGER PRIMARY KEY (rowid>?)"));
        let probed = plan.iter().any(|l| {
            l.contains("SEARCH readings USING INDEX readings_device_time (device_id=? AND device_measured_at=?")
        });
        assert!(
            (keyed || probed) && !plan.iter().any(|l| l.contains("SCAN readings")),
            "{sql}\n{plan:#?}"
        );
    }
}

/// A gap longer than one bulk (a backlog's tail, a store filled by other
/// means) is keyed by the heartbeat and at start in bulks one after the
/// other, up to the newest reading.
#[test]
fn a_gap_longer_than_a_bulk_is_keyed_to_the_end() {
    let (_dir, mut store) = keyed_once_after("00000000-first");
    let id = |i: u64| format!("{:08x}-{i}", (i * 2_654_435_761) & 0xffff_ffff);
    let items: Vec<Item> = (0..9_000).map(|i| reading("ox-1", &id(i))).collect();
    store.commit(&items, 0).unwrap();
    assert_eq!(cursor(&store), 1, "within the interval: no keys yet");
    store.key_readings().unwrap();
    assert_eq!(cursor(&store), 9_001);
    for i in [0, 4_500, 8_999] {
        assert!(found(&store, &id(i)), "{}", id(i));
    }
}
