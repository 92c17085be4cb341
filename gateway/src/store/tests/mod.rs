//! Unit tests of the durable core: the writer's group commit, reading
//! dedup, the inbox, cursors, the registry's re-processing and the bounded
//! quarantine, each against a real SQLite file in a temp dir (no mocks).
//!
//! A failing disk is played by a trigger that makes SQLite refuse the
//! insert of one device's readings: the commit then fails inside its
//! transaction exactly as it would on an I/O error, which is what the
//! "nothing partial" promises are about.

mod cursors;
mod inbox;
mod keys;
mod quarantine;
mod registry;
mod responses;
mod writer;

use chrono::{DateTime, TimeZone, Utc};
use device_profiles::{Metric, Reading, ReadingGroup, Source};
use std::sync::Arc;
use tempfile::TempDir;

use super::inbox::InboxEntry;
use super::{Item, RawInput, Store};

/// A store in a fresh temp dir (the dir lives as long as the first value).
pub(crate) fn open() -> (TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    (dir, store)
}

/// The same file again, as another connection or after a restart.
fn reopen(dir: &TempDir) -> Store {
    Store::open(&dir.path().join("s.db")).unwrap()
}

/// A fixed measurement time, so that only what a test varies differs.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0).unwrap()
}

/// A received message: its bytes are `payload` on topic `origin`.
fn raw(origin: &str, payload: &[u8]) -> Arc<RawInput> {
    Arc::new(RawInput::new(
        Source::Mqtt,
        origin,
        Some("test".into()),
        payload,
        t0(),
    ))
}

/// One SpO2 measurement of `device` with the stable id `id`.
fn group(device: &str, id: &str, value: f64) -> ReadingGroup {
    ReadingGroup {
        group_id: id.into(),
        panel: None,
        readings: vec![Reading {
            reading_id: id.into(),
            group_id: id.into(),
            patient_id: String::new(),
            device_id: device.into(),
            metric: Metric::Spo2,
            value,
            unit: Metric::Spo2.canonical_unit().to_string(),
            loinc: Metric::Spo2.loinc().into(),
            device_measured_at: Some(t0()),
            measured_at: t0(),
            received_at: t0(),
            source: Source::Mqtt,
            sequence: None,
            annotations: Default::default(),
            content_digest: None,
        }],
    }
}

/// A reading item as a source submits it: the message's bytes are the id,
/// so that re-decoding it (registry tests) gives the same reading.
fn reading(device: &str, id: &str) -> Item {
    Item::Reading {
        raw: raw(&format!("rpm/ox/{device}"), id.as_bytes()),
        index: 0,
        group: group(device, id, 97.0),
    }
}

/// An MQTT message appended to the inbox.
fn entry(payload: &str) -> InboxEntry {
    InboxEntry {
        origin: "rpm/ox/ox-1".into(),
        payload: Arc::from(payload.as_bytes()),
        received_at: t0(),
        truncated_from: None,
    }
}

/// Assigns `device` to `patient` (nothing waits in quarantine).
fn assign(store: &mut Store, device: &str, patient: &str) {
    store
        .assign_device(device, patient, "test", |_| Vec::new())
        .unwrap();
}

/// Makes every commit that inserts a reading of `device` fail, as a failing
/// disk would: SQLite aborts the statement and the transaction is rolled back.
fn refuse_readings_of(store: &Store, device: &str) {
    store
        .conn()
        .execute_batch(&format!(
            "CREATE TRIGGER \"refuse_{device}\" BEFORE INSERT ON readings WHEN NEW.device_id = '{device}'
             BEGIN SELECT RAISE(ABORT, 'the disk refuses {device}'); END;"
        ))
        .unwrap();
}

/// Undoes [`refuse_readings_of`] (the disk is back).
fn accept_readings_of(store: &Store, device: &str) {
    store
        .conn()
        .execute_batch(&format!("DROP TRIGGER \"refuse_{device}\";"))
        .unwrap();
}

fn count(store: &Store, sql: &str) -> i64 {
    store.conn().query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Reading ids in commit order (`seq`, which downstream cursors follow).
fn reading_ids(store: &Store) -> Vec<String> {
    let mut q = store
        .conn()
        .prepare("SELECT reading_id FROM readings ORDER BY seq")
        .unwrap();
    q.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A statement from the cache is not parsed again at each use, whatever
/// its plan could depend on (a bound `LIMIT`, a range and an ordering on a
/// patient's rows): rusqlite clears the bindings of every statement it
/// returns to its cache, which SQLite takes as a reason to prepare a
/// value-dependent plan again unless plans never depend on bound values.
#[test]
fn cached_statements_are_not_prepared_again() {
    use rusqlite::{params, StatementStatus};
    let (_dir, store) = open();
    let queries = [
        "SELECT seq, patient_id FROM readings WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        "SELECT day FROM risk_days WHERE patient_id = ?1 AND day >= ?2 ORDER BY day",
        "SELECT alert_id FROM alerts WHERE patient_id = ?1 AND fired_at > ?2
         UNION SELECT alert_id FROM alerts WHERE patient_id = ?1 AND status != 'resolved'
         ORDER BY alert_id",
    ];
    for sql in queries {
        for (i, p) in ["p1", "p2", "p3"].into_iter().enumerate() {
            let mut q = store.conn().prepare_cached(sql).unwrap();
            let n = if sql.contains("LIMIT") {
                q.query(params![i as i64, i as i64 + 5])
                    .unwrap()
                    .next()
                    .unwrap()
                    .is_none()
            } else {
                q.query(params![p, i as i64])
                    .unwrap()
                    .next()
                    .unwrap()
                    .is_none()
            };
            assert!(n);
        }
        let q = store.conn().prepare_cached(sql).unwrap();
        assert_eq!(q.get_status(StatementStatus::RePrepare), 0, "{sql}");
    }
}

/// A stage that streams through new readings keeps a small page cache;
/// every other connection keeps SQLite's default.
#[test]
fn a_streaming_connection_keeps_a_small_page_cache() {
    let (dir, store) = open();
    let cache = |s: &Store| -> i64 {
        s.conn()
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(cache(&store), -2048);
    let stream = reopen(&dir).streaming().unwrap();
    assert_eq!(cache(&stream), -super::STREAM_CACHE_KIB);
}
