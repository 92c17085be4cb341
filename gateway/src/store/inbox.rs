//! The inbox: the durable commit point of MQTT input.
//!
//! A message is appended here as received (topic, bytes, time of receipt)
//! and acknowledged to the broker once the append is committed. Decoding,
//! normalization and the readings table come after, in the normalize stage
//! ([`crate::pipeline::inbox`]), which removes the entries it has turned
//! into readings or quarantine records in the same transaction.
//!
//! Why a separate step: an append is sequential (the table is keyed by an
//! increasing sequence, no other index), so a backlog flushed by the broker
//! after an outage is taken off its hands at close to the rate it can send,
//! while the readings table (random-keyed reading ids, per-patient indexes)
//! catches up behind. Nothing is lost in between: the entry is durable
//! before the PUBACK, and it leaves the inbox only in the transaction that
//! stores what it became. A redelivery (a crash between commit and PUBACK)
//! is a second entry whose readings have the same ids: stored once.

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, Transaction};
use std::sync::Arc;

use super::StoreError;

/// One received message, waiting to be normalized.
#[derive(Debug, Clone)]
pub struct InboxEntry {
    /// The MQTT topic it came on.
    pub origin: String,
    /// The bytes as received.
    pub payload: Arc<[u8]>,
    /// Time of receipt.
    pub received_at: DateTime<Utc>,
}

/// Appends entries (inside the writer's group transaction).
pub(crate) fn append(tx: &Transaction<'_>, entries: &[InboxEntry]) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO inbox (source, origin, payload, received_at) VALUES ('mqtt', ?1, ?2, ?3)",
    )?;
    for e in entries {
        insert.execute(params![
            e.origin,
            &e.payload[..],
            e.received_at.timestamp_millis()
        ])?;
    }
    Ok(())
}

/// The oldest `limit` entries, in order of receipt, with their sequence.
pub fn oldest(conn: &Connection, limit: usize) -> Result<Vec<(i64, InboxEntry)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, origin, payload, received_at FROM inbox ORDER BY seq LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit as i64], |r| {
        let received: i64 = r.get(3)?;
        Ok((
            r.get::<_, i64>(0)?,
            InboxEntry {
                origin: r.get(1)?,
                payload: Arc::from(r.get::<_, Vec<u8>>(2)?),
                received_at: Utc
                    .timestamp_millis_opt(received)
                    .single()
                    .unwrap_or_default(),
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Removes the entries up to and including `seq` (they have been stored).
pub(crate) fn remove_through(tx: &Transaction<'_>, seq: i64) -> Result<(), StoreError> {
    tx.prepare_cached("DELETE FROM inbox WHERE seq <= ?1")?
        .execute([seq])?;
    Ok(())
}

/// Entries waiting.
pub fn depth(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT COUNT(*) FROM inbox", [], |r| r.get(0))?)
}
