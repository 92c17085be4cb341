//! Quarantine writes with a bounded cost per message.
//!
//! One message can hold thousands of measurements (a SenML pack of 20 000
//! tiny records fits in 256 KiB). Writing one row per refused measurement,
//! each with its own copy of the payload, let a single bad message add
//! gigabytes to the store and hold the writer for seconds; a few such
//! messages filled a home gateway's disk. So, per message:
//!
//! - its bytes are kept **once** (first [`QUARANTINE_PAYLOAD_LIMIT`] bytes),
//!   in `quarantine_payloads` keyed by their digest, shared by every row of
//!   the message and by any later message with the same bytes;
//! - refusals with the same reason and device are **one row** with a
//!   `count` and the positions it covers (`measurement_indexes`, as ranges:
//!   `0-99,104`), which re-processing uses;
//! - at most [`MAX_ROWS_PER_MESSAGE`] such rows; refusals of further
//!   devices are folded into one row per reason without a device, so the
//!   number of rows is bounded by that limit plus the number of reason codes;
//! - a detail text of at most [`DETAIL_LIMIT`] bytes per row, and position
//!   lists of at most [`INDEX_TEXT_BUDGET`] bytes per message (a row whose
//!   list does not fit keeps its count; re-processing it tries every
//!   measurement of the message).
//!
//! What one message can add is therefore bounded whatever it holds: one
//! payload copy (at most 64 KiB) and at most 64 + (number of reason codes)
//! rows whose text fields together stay under 64 KiB. The same message
//! delivered again adds nothing (the rows are keyed by origin, digest and
//! first position, as before).

use device_profiles::Reject;
use rusqlite::{params, Transaction};
use std::collections::HashMap;

use super::{RawInput, StoreError, QUARANTINE_PAYLOAD_LIMIT};

/// Rows one message may add for distinct (reason, device) pairs.
pub const MAX_ROWS_PER_MESSAGE: usize = 64;
/// Bytes of detail text kept per row.
pub const DETAIL_LIMIT: usize = 512;
/// Bytes of position lists kept per message.
pub const INDEX_TEXT_BUDGET: usize = 16 * 1024;

/// One refused measurement (or, with `index` None, a whole message).
pub(crate) struct Refusal<'a> {
    pub index: Option<usize>,
    pub device_id: Option<&'a str>,
    pub reason: &'a Reject,
}

/// Refusals of one transaction, grouped per message, reason and device.
/// Each [`Quarantine::add`] returns a ticket; [`Quarantine::write`] returns
/// for every ticket whether its row is new.
#[derive(Default)]
pub(crate) struct Quarantine<'a> {
    groups: Vec<Group<'a>>,
    /// (message, reason code, device) → group.
    by_key: HashMap<(String, &'static str, Option<&'a str>), usize>,
    /// Distinct (reason, device) groups per message.
    per_message: HashMap<String, usize>,
    tickets: Vec<usize>,
}

struct Group<'a> {
    raw: &'a RawInput,
    device_id: Option<&'a str>,
    first: &'a Reject,
    /// Positions in order of arrival (None: the whole message).
    indexes: Vec<Option<usize>>,
}

fn message_key(raw: &RawInput) -> String {
    format!("{}|{}|{}", raw.source.name(), raw.origin, raw.digest)
}

impl<'a> Quarantine<'a> {
    /// Adds a refusal; returns its ticket.
    pub fn add(&mut self, raw: &'a RawInput, r: Refusal<'a>) -> usize {
        let message = message_key(raw);
        let code = r.reason.code();
        let mut key = (message.clone(), code, r.device_id);
        if r.index.is_none() {
            // A whole-message refusal is its own row.
            key.2 = None;
        }
        let at = match self.by_key.get(&key) {
            Some(&at) => Some(at),
            None => {
                let n = self.per_message.entry(message.clone()).or_default();
                if *n >= MAX_ROWS_PER_MESSAGE && r.index.is_some() {
                    // Beyond the limit: one row per reason, without a device.
                    key.2 = None;
                    self.by_key.get(&key).copied()
                } else {
                    *n += 1;
                    None
                }
            }
        };
        let at = match at {
            Some(at) => at,
            None => {
                self.groups.push(Group {
                    raw,
                    device_id: key.2,
                    first: r.reason,
                    indexes: Vec::new(),
                });
                let at = self.groups.len() - 1;
                self.by_key.insert(key, at);
                at
            }
        };
        self.groups[at].indexes.push(r.index);
        self.tickets.push(at);
        self.tickets.len() - 1
    }

    /// Writes the rows; returns, per ticket, whether its row was new.
    pub fn write(self, tx: &Transaction<'_>) -> Result<Vec<bool>, StoreError> {
        let mut budget = INDEX_TEXT_BUDGET;
        let mut new = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            new.push(write_group(tx, g, &mut budget)?);
        }
        Ok(self.tickets.iter().map(|&g| new[g]).collect())
    }
}

/// Keeps the payload once; returns its digest.
fn keep_payload(tx: &Transaction<'_>, raw: &RawInput) -> Result<(), StoreError> {
    let keep = raw.payload.len().min(QUARANTINE_PAYLOAD_LIMIT);
    tx.prepare_cached(
        "INSERT INTO quarantine_payloads (digest, size, payload, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(digest) DO NOTHING",
    )?
    .execute(params![
        raw.digest,
        raw.size as i64,
        &raw.payload[..keep],
        super::now_ms()
    ])?;
    Ok(())
}

fn write_group(
    tx: &Transaction<'_>,
    g: &Group<'_>,
    budget: &mut usize,
) -> Result<bool, StoreError> {
    let raw = g.raw;
    let first = g.indexes.first().copied().flatten();
    let key = format!(
        "{}|{}",
        message_key(raw),
        first.map(|i| i.to_string()).unwrap_or_else(|| "*".into())
    );
    let count = g.indexes.len();
    let positions: Vec<usize> = g.indexes.iter().filter_map(|i| *i).collect();
    let ranges = (count > 1)
        .then(|| ranges(&positions))
        .filter(|r| r.len() <= *budget);
    if let Some(r) = &ranges {
        *budget -= r.len();
    }
    keep_payload(tx, raw)?;
    let n = tx
        .prepare_cached(
            "INSERT INTO quarantine (dedup_key, received_at, source, origin, profile, device_id, measurement_index,
                 reason, detail, payload, payload_digest, count, measurement_indexes, facts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, x'', ?10, ?11, ?12, ?13)
             ON CONFLICT(dedup_key) DO NOTHING",
        )?
        .execute(params![
            key,
            raw.received_at.timestamp_millis(),
            raw.source.name(),
            raw.origin,
            raw.profile,
            g.device_id,
            first.map(|i| i as i64),
            g.first.code(),
            truncate(&g.first.to_string(), DETAIL_LIMIT),
            raw.digest,
            count as i64,
            ranges,
            raw.facts,
        ])?;
    Ok(n == 1)
}

/// At most `limit` bytes of `s`, cut at a character boundary.
pub(crate) fn truncate(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        return s.to_string();
    }
    let mut end = limit.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Positions as ranges: `[0,1,2,5,7,8]` → `0-2,5,7-8`.
pub(crate) fn ranges(positions: &[usize]) -> String {
    let mut sorted = positions.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

/// Parses [`ranges`] text; None when it is not such a list. At most
/// `limit` positions (a list cannot name more than its message holds).
pub(crate) fn parse_ranges(text: &str, limit: usize) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => {
                let a: usize = part.parse().ok()?;
                (a, a)
            }
        };
        if b < a || out.len() + (b - a) >= limit {
            return None;
        }
        out.extend(a..=b);
    }
    Some(out)
}

/// A point a downstream sink (`sink`, e.g. `influxdb`) refused: kept once per
/// reading (`<sink>|<reading id>`) with the line that was refused as its
/// payload, for an operator to see and re-drive.
pub struct SinkRefusal<'a> {
    /// The sink, also the record's source and origin.
    pub sink: &'a str,
    /// The reading refused.
    pub reading_id: &'a str,
    /// Its device.
    pub device_id: &'a str,
    /// The reason code.
    pub reason: &'a str,
    /// What the sink said.
    pub detail: &'a str,
    /// What was sent.
    pub payload: &'a [u8],
}

/// Records a sink's refusal (once per reading).
pub fn insert_sink_refusal(
    tx: &Transaction<'_>,
    r: &SinkRefusal<'_>,
    at_ms: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO quarantine (dedup_key, received_at, source, origin, profile, device_id, measurement_index, reason, detail, payload)
         VALUES (?1, ?2, ?3, ?4, NULL, ?5, NULL, ?6, ?7, ?8)
         ON CONFLICT(dedup_key) DO NOTHING",
    )?
    .execute(params![
        format!("{}|{}", r.sink, r.reading_id),
        at_ms,
        r.sink,
        r.sink,
        r.device_id,
        r.reason,
        r.detail,
        r.payload,
    ])?;
    Ok(())
}

/// A quarantine record as a home box sends it to the program hub
/// (`POST /api/v1/upstream/quarantine`): everything re-processing needs,
/// the raw bytes base64-encoded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuarantineRecord {
    /// The row's id at the box: with the box's name, its identity at the hub.
    pub id: i64,
    pub received_at: chrono::DateTime<chrono::Utc>,
    pub source: String,
    pub origin: String,
    pub profile: Option<String>,
    pub device_id: Option<String>,
    pub measurement_index: Option<i64>,
    pub count: i64,
    pub measurement_indexes: Option<String>,
    pub reason: String,
    pub detail: String,
    /// `open` | `reprocessed` | `discarded`, at the box when sent.
    pub status: String,
    #[serde(with = "b64")]
    pub payload: Vec<u8>,
    pub facts: Option<String>,
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let t = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(t.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// Quarantine records after row `after`, in id order, at most `limit`:
/// input the box refused, not a sink's refusal of its own forwarding.
/// Returns them and the id of the last row looked at (the next cursor).
pub fn records_after(
    conn: &rusqlite::Connection,
    after: i64,
    limit: usize,
) -> Result<(Vec<QuarantineRecord>, i64), StoreError> {
    let mut q = conn.prepare_cached(
        "SELECT id, received_at, source, origin, profile, device_id, measurement_index, count,
                measurement_indexes, reason, detail, status,
                COALESCE((SELECT p.payload FROM quarantine_payloads p WHERE p.digest = quarantine.payload_digest), payload),
                facts
         FROM quarantine WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows: Vec<QuarantineRecord> = q
        .query_map(params![after, limit as i64], |r| {
            Ok(QuarantineRecord {
                id: r.get(0)?,
                received_at: chrono::DateTime::from_timestamp_millis(r.get(1)?).unwrap_or_default(),
                source: r.get(2)?,
                origin: r.get(3)?,
                profile: r.get(4)?,
                device_id: r.get(5)?,
                measurement_index: r.get(6)?,
                count: r.get(7)?,
                measurement_indexes: r.get(8)?,
                reason: r.get(9)?,
                detail: r.get(10)?,
                status: r.get(11)?,
                payload: r.get(12)?,
                facts: r.get(13)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let last = rows.last().map_or(after, |r| r.id);
    let sent = rows
        .into_iter()
        .filter(|r| r.reason != SINK_REFUSAL_REASON)
        .collect();
    Ok((sent, last))
}

/// The reason code of a sink's refusal (`forward::forwarder::REJECTED`).
const SINK_REFUSAL_REASON: &str = "rejected_by_sink";

/// Stores a box's quarantine record at the hub, once per (box, row id),
/// with `via` in its facts. Returns whether it is new.
pub fn insert_from_box(
    tx: &Transaction<'_>,
    r: &QuarantineRecord,
    via: &str,
) -> Result<bool, StoreError> {
    let mut facts = r
        .facts
        .as_deref()
        .and_then(|f| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(f).ok())
        .unwrap_or_default();
    facts.insert("via".into(), serde_json::Value::String(via.to_string()));
    let facts = serde_json::Value::Object(facts).to_string();
    let payload = &r.payload[..r.payload.len().min(QUARANTINE_PAYLOAD_LIMIT)];
    let n = tx
        .prepare_cached(
            "INSERT INTO quarantine (dedup_key, received_at, source, origin, profile, device_id, measurement_index,
                                     count, measurement_indexes, reason, detail, payload, status, facts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT(dedup_key) DO NOTHING",
        )?
        .execute(params![
            format!("{via}|{}", r.id),
            r.received_at.timestamp_millis(),
            r.source,
            r.origin,
            r.profile,
            r.device_id,
            r.measurement_index,
            r.count.max(1),
            r.measurement_indexes,
            r.reason,
            r.detail,
            payload,
            r.status,
            facts,
        ])?;
    Ok(n == 1)
}

/// Open quarantine records of `reason`.
pub fn count_open(conn: &rusqlite::Connection, reason: &str) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM quarantine WHERE reason = ?1 AND status = 'open'")?
        .query_row([reason], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Item, Outcome, Store};
    use device_profiles::{Metric, Source};
    use std::sync::Arc;

    fn raw(payload: &[u8]) -> Arc<RawInput> {
        Arc::new(RawInput::new(
            Source::Http,
            "rpm/senml/d",
            Some("senml-generic".into()),
            payload,
            chrono::Utc::now(),
        ))
    }

    fn refused(raw: &Arc<RawInput>, index: usize, device: &str, reason: Reject) -> Item {
        Item::Quarantine {
            raw: raw.clone(),
            index: Some(index),
            device_id: Some(device.to_string()),
            reason,
        }
    }

    fn count(store: &Store, sql: &str) -> i64 {
        store.conn().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Thousands of refusals of one message: one payload copy, one row per
    /// (reason, device), at most MAX_ROWS_PER_MESSAGE + one per reason; a
    /// redelivery adds nothing; every item still gets its outcome.
    #[test]
    fn one_message_costs_a_bounded_number_of_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let r = raw(&vec![b'x'; 100 * 1024]);
        let implausible = Reject::Implausible {
            metric: Metric::Spo2,
            value: 500.0,
            unit: "%",
            low: 50.0,
            high: 100.0,
        };
        let mut items: Vec<Item> = (0..3000)
            .map(|i| refused(&r, i, "d", implausible.clone()))
            .collect();
        // 200 devices nobody knows, each refused for the same reason.
        items.extend((0..200).map(|i| refused(&r, 3000 + i, &format!("dev-{i}"), Reject::Empty)));
        let out = store.commit(&items, 0).unwrap();
        assert_eq!(out.len(), 3200);
        assert!(out
            .iter()
            .all(|o| matches!(o, Outcome::Quarantined { new: true, .. })));
        let rows = count(&store, "SELECT COUNT(*) FROM quarantine");
        assert!(rows <= (MAX_ROWS_PER_MESSAGE + 2) as i64, "{rows}");
        assert_eq!(count(&store, "SELECT SUM(count) FROM quarantine"), 3200);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM quarantine_payloads"), 1);
        assert_eq!(
            count(&store, "SELECT length(payload) FROM quarantine_payloads"),
            64 * 1024
        );
        assert_eq!(
            count(&store, "SELECT size FROM quarantine_payloads"),
            100 * 1024
        );
        let ranges: String = store
            .conn()
            .query_row(
                "SELECT measurement_indexes FROM quarantine WHERE reason = 'implausible_value'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(ranges, "0-2999");
        // The same message again: nothing new.
        let out = store.commit(&items, 0).unwrap();
        assert!(out
            .iter()
            .all(|o| matches!(o, Outcome::Quarantined { new: false, .. })));
        assert_eq!(count(&store, "SELECT COUNT(*) FROM quarantine"), rows);
    }

    #[test]
    fn ranges_round_trip() {
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(ranges(&[3]), "3");
        assert_eq!(parse_ranges("0-2,5,7-8", 100).unwrap(), [0, 1, 2, 5, 7, 8]);
        assert_eq!(parse_ranges("0-99999999999", 1000), None);
        assert_eq!(parse_ranges("x", 10), None);
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("abc", 10), "abc");
        let t = truncate(&"é".repeat(400), 512);
        assert!(t.len() <= 512 && t.ends_with("..."));
    }
}
