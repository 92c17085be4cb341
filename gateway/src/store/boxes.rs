//! The program hub's view of its home boxes: one row per box.
//!
//! Every push and pull of a box carries its health (backlog, clock, BLE
//! adapter state, version); the hub keeps the last of it with the time of
//! contact ([`record_contact`]). A box is named by its ingest token's name.
//!
//! Silence is an operational matter, not a clinical one: the box watch
//! (`forward::boxes`) asks for the boxes silent since before a cutoff
//! ([`silent_due`]) and raises `box.silent` for each ([`mark_silent`]); the
//! next contact of that box raises `box.back`. Each event is written in the
//! same transaction as the `silent` flag it reports, with an id numbered by
//! the box's `events` count, so a crash neither loses nor repeats one.

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

use super::outbox::{self, Event, EventType, OperationalData, EVENT_SCHEMA};
use super::StoreError;

/// What a box said about itself with one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoxHealth {
    /// Readings the box holds that the hub has not taken.
    pub backlog: Option<i64>,
    /// The box's clock when it sent the request (Unix ms).
    pub clock_ms: Option<i64>,
    /// `available` | `unavailable`; `None`: the box has no BLE source.
    pub ble_state: Option<String>,
    /// The box's gateway version.
    pub version: Option<String>,
}

/// Which kind of contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact {
    /// Readings or quarantine records pushed.
    Push,
    /// The share pulled.
    Pull,
}

/// A box as the hub knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BoxRow {
    pub box_id: String,
    pub first_contact_at: DateTime<Utc>,
    pub last_contact_at: DateTime<Utc>,
    pub last_push_at: Option<DateTime<Utc>>,
    pub last_pull_at: Option<DateTime<Utc>>,
    /// Readings at the box not yet at the hub, at the last contact.
    pub backlog: Option<i64>,
    /// Box clock minus hub clock at the last contact (request latency
    /// included: a few hundred milliseconds are noise).
    pub clock_offset_ms: Option<i64>,
    pub ble_state: Option<String>,
    pub version: Option<String>,
    /// Silent longer than `[upstream_intake] silent_after`.
    pub silent: bool,
    pub silent_since: Option<DateTime<Utc>>,
}

fn t(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BoxRow> {
    Ok(BoxRow {
        box_id: r.get(0)?,
        first_contact_at: t(r.get(1)?),
        last_contact_at: t(r.get(2)?),
        last_push_at: r.get::<_, Option<i64>>(3)?.map(t),
        last_pull_at: r.get::<_, Option<i64>>(4)?.map(t),
        backlog: r.get(5)?,
        clock_offset_ms: r.get(6)?,
        ble_state: r.get(7)?,
        version: r.get(8)?,
        silent: r.get(9)?,
        silent_since: r.get::<_, Option<i64>>(10)?.map(t),
    })
}

const COLUMNS: &str =
    "box_id, first_contact_at, last_contact_at, last_push_at, last_pull_at, backlog, \
     clock_offset_ms, ble_state, version, silent, silent_since";

/// Every box, by id; with `teams` (a JSON array of care teams), only the
/// boxes whose token names a device of one of those teams' patients.
pub fn list(conn: &Connection, teams: Option<&str>) -> Result<Vec<BoxRow>, StoreError> {
    let mut q = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM boxes b WHERE ?1 IS NULL OR EXISTS (
             SELECT 1 FROM api_tokens t, json_each(t.devices) d
             JOIN devices v ON v.device_id = d.value
             JOIN patients p ON p.patient_id = v.patient_id
             WHERE t.token_id = b.token_id AND p.care_team IN (SELECT value FROM json_each(?1)))
         ORDER BY box_id"
    ))?;
    let rows = q.query_map([teams], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How fresh a box's row is kept: contacts of one kind (push, pull) closer
/// together than this (a box's requests come in bursts) are written once.
pub const CONTACT_RESOLUTION_MS: i64 = 500;

/// Records a contact of `box_id` at hub time `now` (ms) with its health,
/// and raises `box.back` in the same transaction if the box was silent.
/// A contact within [`CONTACT_RESOLUTION_MS`] of the last one of its kind
/// changes nothing. Returns whether `box.back` was raised.
pub fn record_contact(
    tx: &Transaction<'_>,
    box_id: &str,
    token_id: &str,
    kind: Contact,
    health: &BoxHealth,
    now: i64,
) -> Result<bool, StoreError> {
    let offset = health.clock_ms.map(|c| c - now);
    let (push, pull) = match kind {
        Contact::Push => (Some(now), None),
        Contact::Pull => (None, Some(now)),
    };
    let was: Option<(bool, i64, Option<i64>, Option<i64>)> = tx
        .query_row(
            &format!(
                "SELECT silent, events, silent_since, {} FROM boxes WHERE box_id = ?1",
                match kind {
                    Contact::Push => "last_push_at",
                    Contact::Pull => "last_pull_at",
                }
            ),
            [box_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    // The same kind of contact moments ago: the row is fresh enough, and a
    // write per request would cost the hub a commit as dear as the readings'.
    if let Some((false, _, _, Some(last))) = was {
        if (0..CONTACT_RESOLUTION_MS).contains(&(now - last)) {
            return Ok(false);
        }
    }
    tx.execute(
        "INSERT INTO boxes (box_id, token_id, first_contact_at, last_contact_at, last_push_at, last_pull_at,
                            backlog, clock_offset_ms, ble_state, version)
         VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(box_id) DO UPDATE SET token_id = excluded.token_id,
             last_contact_at = excluded.last_contact_at,
             last_push_at = COALESCE(excluded.last_push_at, last_push_at),
             last_pull_at = COALESCE(excluded.last_pull_at, last_pull_at),
             backlog = COALESCE(excluded.backlog, backlog),
             clock_offset_ms = COALESCE(excluded.clock_offset_ms, clock_offset_ms),
             ble_state = excluded.ble_state,
             version = COALESCE(excluded.version, version),
             silent = 0, silent_since = NULL",
        params![
            box_id,
            token_id,
            now,
            push,
            pull,
            health.backlog,
            offset,
            health.ble_state,
            health.version
        ],
    )?;
    let Some((true, events, since, _)) = was else {
        return Ok(false);
    };
    let n = events + 1;
    tx.execute(
        "UPDATE boxes SET events = ?2 WHERE box_id = ?1",
        params![box_id, n],
    )?;
    let at = t(now);
    let silent_for = since.map(|s| (now - s) / 1000);
    let event = Event {
        schema: EVENT_SCHEMA.into(),
        id: outbox::event_id(&["box.back", box_id, &n.to_string()]),
        event_type: EventType::BoxBack,
        timestamp: at,
        data: OperationalData {
            endpoint_id: None,
            message: format!("home box {box_id} is in contact again"),
            detail: serde_json::json!({
                "box_id": box_id,
                "silent_since": since.map(|s| outbox::rfc3339(t(s))),
                "silent_seconds": silent_for,
                "backlog": health.backlog,
            }),
        },
    };
    outbox::enqueue(tx, &event, None, None, Some("info"))?;
    Ok(true)
}

/// Boxes heard last before `cutoff` (ms) and not yet reported silent.
pub fn silent_due(conn: &Connection, cutoff: i64) -> Result<Vec<BoxRow>, StoreError> {
    let mut q = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM boxes WHERE silent = 0 AND last_contact_at < ?1 ORDER BY box_id"
    ))?;
    let rows = q.query_map([cutoff], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The next time a box may fall silent: its last contact, oldest first.
pub fn oldest_contact(conn: &Connection) -> Result<Option<i64>, StoreError> {
    Ok(conn.query_row(
        "SELECT MIN(last_contact_at) FROM boxes WHERE silent = 0",
        [],
        |r| r.get(0),
    )?)
}

/// Marks `box_id` silent and raises `box.silent`, in one transaction, if it
/// has still not been heard since `cutoff`. Returns whether it did.
pub fn mark_silent(
    tx: &Transaction<'_>,
    box_id: &str,
    cutoff: i64,
    silent_after_s: u64,
    now: i64,
) -> Result<bool, StoreError> {
    let b: Option<(i64, i64, Option<i64>)> = tx
        .query_row(
            "SELECT last_contact_at, events, backlog FROM boxes
             WHERE box_id = ?1 AND silent = 0 AND last_contact_at < ?2",
            params![box_id, cutoff],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((last, events, backlog)) = b else {
        return Ok(false);
    };
    let n = events + 1;
    tx.execute(
        "UPDATE boxes SET silent = 1, silent_since = ?2, events = ?3 WHERE box_id = ?1",
        params![box_id, last, n],
    )?;
    let event = Event {
        schema: EVENT_SCHEMA.into(),
        id: outbox::event_id(&["box.silent", box_id, &n.to_string()]),
        event_type: EventType::BoxSilent,
        timestamp: t(now),
        data: OperationalData {
            endpoint_id: None,
            message: format!(
                "home box {box_id} has not been in contact for more than {silent_after_s} s"
            ),
            detail: serde_json::json!({
                "box_id": box_id,
                "last_contact_at": outbox::rfc3339(t(last)),
                "silent_after_seconds": silent_after_s,
                "backlog": backlog,
            }),
        },
    };
    outbox::enqueue(tx, &event, None, None, Some("warning"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::open;

    fn events(conn: &Connection, kind: &str) -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM outbox WHERE event_type = ?1",
            [kind],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn silence_and_return_are_reported_once_each() {
        let (_d, mut s) = open();
        let h = BoxHealth {
            backlog: Some(3),
            clock_ms: Some(10_500),
            ble_state: Some("available".into()),
            version: Some("1.0".into()),
        };
        let tx = s.transaction().unwrap();
        assert!(!record_contact(&tx, "box-1", "tok", Contact::Push, &h, 10_000).unwrap());
        tx.commit().unwrap();
        let b = list(s.conn(), None).unwrap().remove(0);
        assert_eq!((b.backlog, b.clock_offset_ms), (Some(3), Some(500)));
        assert_eq!(b.last_pull_at, None);
        assert!(silent_due(s.conn(), 10_000).unwrap().is_empty());
        assert_eq!(silent_due(s.conn(), 10_001).unwrap().len(), 1);
        let tx = s.transaction().unwrap();
        assert!(mark_silent(&tx, "box-1", 20_000, 5, 20_000).unwrap());
        assert!(!mark_silent(&tx, "box-1", 30_000, 5, 30_000).unwrap());
        tx.commit().unwrap();
        assert!(silent_due(s.conn(), 40_000).unwrap().is_empty());
        assert_eq!(events(s.conn(), "box.silent"), 1);
        let tx = s.transaction().unwrap();
        let pull = BoxHealth::default();
        assert!(record_contact(&tx, "box-1", "tok", Contact::Pull, &pull, 50_000).unwrap());
        assert!(!record_contact(&tx, "box-1", "tok", Contact::Pull, &pull, 50_001).unwrap());
        tx.commit().unwrap();
        assert_eq!(events(s.conn(), "box.back"), 1);
        // A burst is written once: the contact 1 ms later changed nothing.
        let b = list(s.conn(), None).unwrap().remove(0);
        assert_eq!(b.last_contact_at.timestamp_millis(), 50_000);
        assert!(!b.silent);
        assert_eq!(
            b.backlog,
            Some(3),
            "a contact without health keeps the last"
        );
        assert!(b.last_pull_at.is_some() && b.last_push_at.is_some());
        // A second episode has its own event ids.
        let tx = s.transaction().unwrap();
        assert!(mark_silent(&tx, "box-1", 60_000, 5, 60_000).unwrap());
        tx.commit().unwrap();
        assert_eq!(events(s.conn(), "box.silent"), 2);
        // A care team sees the boxes of its patients only.
        s.conn()
            .execute_batch(
                "INSERT INTO api_tokens (token_id, name, token_hash, role, created_at, devices)
                     VALUES ('tok', 'box-1', 'h', 'ingest', 0, '[\"cuff-1\"]');
                 INSERT INTO devices (device_id, patient_id, origin, registered_at) VALUES ('cuff-1', 'p1', 'cli', 0);
                 INSERT INTO patients (patient_id, care_team, enrolled_at, updated_at) VALUES ('p1', 'north', 0, 0);",
            )
            .unwrap();
        assert_eq!(list(s.conn(), Some(r#"["north"]"#)).unwrap().len(), 1);
        assert!(list(s.conn(), Some(r#"["south"]"#)).unwrap().is_empty());
    }
}
