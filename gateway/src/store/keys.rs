//! Reading and measurement ids, found without a random index write per
//! reading.
//!
//! Ids are 128-bit hashes: an index on them puts every new reading in a
//! random leaf, and a group commit of a backlog dirties nearly every leaf of
//! such an index (in a store of a million readings, most of what a reading
//! costs to write). The writer does not need one: it finds a re-sent
//! reading among the device's readings of the same device time or input
//! digest (see `ReadingInserts`). Lookups by id (a FHIR read, an alert's
//! evidence, the rest of a measurement) go through `reading_keys`: an id's
//! 8-character prefix and the reading's sequence number, one row for the
//! reading id and one for its measurement id, filled here **in bulk**: the
//! keys of readings after the cursor `store.keys`, sorted, inside a
//! transaction that stores readings anyway, due at most once every
//! [`KeyIndexing::EVERY`] and then at most [`READINGS_PER_COMMIT`]
//! readings' worth a commit until every reading has them (and all of them
//! on the writer's heartbeat, so that a finished backlog does not stay
//! behind, and at its start: in transactions of that size, one after the
//! other). Never in a
//! commit of inbox appends alone: an acknowledgement waits for that. A bulk of sorted keys touches
//! each leaf at most once, however many keys it brings. Readings after the
//! cursor are few and recent; a lookup reads them in commit order (see
//! [`super::queries::BY_ID`]).
//!
//! The keys and the cursor move in the transaction that reads the readings,
//! so they never disagree: a lookup finds every reading at or before the
//! cursor through its keys and every reading after it by reading on. A
//! deleted reading takes its keys with it (a trigger).

use std::time::{Duration, Instant};

use rusqlite::Transaction;

use super::{cursor_in, queries, set_cursor, StoreError};

/// The cursor: readings up to it have their keys in `reading_keys`.
pub const CURSOR: &str = "store.keys";

/// When a connection that stores readings last added keys.
#[derive(Debug)]
pub(crate) struct KeyIndexing {
    last: Option<Instant>,
    every: Duration,
}

impl Default for KeyIndexing {
    fn default() -> Self {
        KeyIndexing {
            last: None,
            every: Self::EVERY,
        }
    }
}

impl KeyIndexing {
    /// Keys are added at most this often by transactions that store
    /// readings: a bulk of a second of a backlog, or every live reading
    /// once input is that sparse.
    pub(crate) const EVERY: Duration = Duration::from_secs(1);

    /// Whether a transaction storing readings now should add keys.
    pub(crate) fn due(&self) -> bool {
        self.last.is_none_or(|t| t.elapsed() >= self.every)
    }

    /// Tests: keys added by commits at most this often.
    #[cfg(test)]
    pub(crate) fn every(&mut self, every: Duration) {
        self.every = every;
    }

    /// Keys were added by a transaction that committed.
    pub(crate) fn done(&mut self) {
        self.last = Some(Instant::now());
    }
}

/// Readings whose keys are read and sorted per slice (~50 bytes a key
/// in memory), so a slice holds about 1.5 MB however long the backlog.
const SLICE_READINGS: i64 = 16_384;

/// Keys a multi-row insert takes.
const ROWS_PER_INSERT: usize = 128;

/// Most readings whose keys one transaction adds: twice a group commit's,
/// so keys catch up during a backlog, in bulks short enough that the
/// commits of the other stages (rules, forwarders) are not held back
/// behind one (a second of a backlog in one bulk held every stage still
/// for ~0.2 s).
const READINGS_PER_COMMIT: i64 = 8_192;

/// Adds the keys of the readings after the cursor, at most
/// [`READINGS_PER_COMMIT`] of them, in key order, and moves the cursor to
/// the last of them. Returns whether every reading now has its keys.
///
/// The ids are read a slice of readings at a time, in one pass over the
/// slice, their keys cut and sorted here (SQLite read every row twice for
/// the two ids, computed the generated key columns and sorted the keys in
/// its sorter: half of what a bulk cost), and inserted by statements that
/// bind them as values. One `INSERT … SELECT` would do
/// both in SQLite alone, but a statement that writes many rows and calls a
/// function (`substr`, in the key's generated column) keeps a statement
/// journal: a copy of every page it changes, in memory, until it ends. A
/// bulk touches nearly every leaf of `reading_keys`, so that copy grew with
/// the table (4–5 MB of the heap at the end of a 100 000-reading backlog,
/// up to a copy of the whole table in a large store). These statements
/// call no function and ignore conflicts, so they cannot fail halfway and
/// keep none; a leaf they change is written at commit, as before.
pub(crate) fn index_some(tx: &Transaction<'_>) -> Result<bool, StoreError> {
    index_in(tx, SLICE_READINGS, ROWS_PER_INSERT, READINGS_PER_COMMIT)
}

/// [`index_some`] with its slice, insert and bulk sizes (tests use small
/// ones).
pub(crate) fn index_in(
    tx: &Transaction<'_>,
    slice_readings: i64,
    rows_per_insert: usize,
    most: i64,
) -> Result<bool, StoreError> {
    let mark = cursor_in(tx, CURSOR)?.unwrap_or(0);
    let stored = queries::newest_seq(tx)?;
    if stored <= mark {
        return Ok(true);
    }
    let newest = stored.min(mark.saturating_add(most.max(1)));
    let mut read = tx.prepare_cached(
        "SELECT seq, reading_id, group_id FROM readings WHERE seq > ?1 AND seq <= ?2",
    )?;
    let mut many = tx.prepare_cached(&format!(
        "INSERT OR IGNORE INTO reading_keys (key, seq) VALUES {}",
        vec!["(?, ?)"; rows_per_insert].join(", ")
    ))?;
    let mut one =
        tx.prepare_cached("INSERT OR IGNORE INTO reading_keys (key, seq) VALUES (?1, ?2)")?;
    let mut keys: Vec<(Key, i64)> = Vec::new();
    let mut from = mark;
    while from < newest {
        let through = from.saturating_add(slice_readings.max(1)).min(newest);
        keys.clear();
        let mut rows = read.query([from, through])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            for column in [1, 2] {
                let id = row.get_ref(column)?.as_str_or_null().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        column,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?;
                if let Some(id) = id {
                    keys.push((Key::of(id), seq));
                }
            }
        }
        // In key order, so that a bulk touches each leaf once.
        keys.sort_unstable();
        for block in keys.chunks(rows_per_insert.max(1)) {
            if block.len() == rows_per_insert {
                many.execute(rusqlite::params_from_iter(
                    block
                        .iter()
                        .flat_map(|(key, seq)| [key as &dyn rusqlite::ToSql, seq]),
                ))?;
            } else {
                for (key, seq) in block {
                    one.execute(rusqlite::params![key, seq])?;
                }
            }
        }
        from = through;
    }
    set_cursor(tx, CURSOR, newest)?;
    Ok(newest == stored)
}

/// An id's key, held without an allocation: its first 8 characters, as the
/// schema's generated columns (`substr(id, 1, 8)`) and the lookups cut it.
///
/// Ordered as SQLite orders text (by bytes, a prefix first): the bytes
/// after `len` are zeros, so comparing the whole arrays and then the
/// lengths gives that order without looking at `len` first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    /// 8 characters take at most 32 bytes of UTF-8.
    bytes: [u8; 32],
    len: u8,
}

impl Key {
    fn of(id: &str) -> Key {
        let end = id.char_indices().nth(8).map_or(id.len(), |(i, _)| i);
        let mut bytes = [0u8; 32];
        bytes[..end].copy_from_slice(&id.as_bytes()[..end]);
        Key {
            bytes,
            len: end as u8,
        }
    }
}

impl rusqlite::ToSql for Key {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(
            // A prefix of a `str` cut at a character boundary: UTF-8.
            rusqlite::types::ValueRef::Text(&self.bytes[..usize::from(self.len)]),
        ))
    }
}
