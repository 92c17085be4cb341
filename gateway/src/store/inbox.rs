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
//! while the readings table (several indexes, per patient and by id)
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
    /// Bytes received, when `payload` keeps only the start of a message
    /// larger than the source takes (it is quarantined as such).
    pub truncated_from: Option<usize>,
}

/// Appends entries (inside the writer's group transaction).
pub(crate) fn append(tx: &Transaction<'_>, entries: &[InboxEntry]) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO inbox (source, origin, payload, received_at, size) VALUES ('mqtt', ?1, ?2, ?3, ?4)",
    )?;
    for e in entries {
        insert.execute(params![
            e.origin,
            &e.payload[..],
            e.received_at.timestamp_millis(),
            e.truncated_from.map(|n| n as i64),
        ])?;
    }
    Ok(())
}

/// The oldest entries, in order of receipt, with their sequence: at most
/// `limit` of them, and no more than `max_bytes` of payload (but always at
/// least one), so that one step of the normalize stage holds the writer for
/// a bounded time whatever the messages weigh.
pub fn oldest(
    conn: &Connection,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<(i64, InboxEntry)>, StoreError> {
    oldest_after(conn, 0, limit, max_bytes)
}

/// The oldest entries after sequence `after`, as [`oldest`].
pub fn oldest_after(
    conn: &Connection,
    after: i64,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<(i64, InboxEntry)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, origin, payload, received_at, size FROM inbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let mut rows = stmt.query([after, limit as i64])?;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(r) = rows.next()? {
        let payload: Vec<u8> = r.get(2)?;
        if !out.is_empty() && bytes + payload.len() > max_bytes {
            break;
        }
        bytes += payload.len();
        let received: i64 = r.get(3)?;
        out.push((
            r.get::<_, i64>(0)?,
            InboxEntry {
                origin: r.get(1)?,
                payload: Arc::from(payload),
                received_at: Utc
                    .timestamp_millis_opt(received)
                    .single()
                    .unwrap_or_default(),
                truncated_from: r.get::<_, Option<i64>>(4)?.map(|n| n.max(0) as usize),
            },
        ));
    }
    Ok(out)
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
