//! Webhook endpoints, their deliveries and delivery attempts as stored.
//!
//! The delivery component decides what to send where and when (routing,
//! signing, the SSRF guard, back-off); the rows it reads and writes are
//! owned here, as typed functions over a `&Connection` (a `Transaction`
//! derefs to one) so that callers choose the transaction. Endpoint rows
//! keep their secrets (sealed) and filter as the JSON text the delivery
//! component writes and parses: the store does not know routing filters or
//! signing keys, and does not open secrets.

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{now_ms, StoreError};

/// The status of one delivery (`pending`, `failed`, `dead`, `delivered`),
/// `None` when there is no such delivery.
pub fn delivery_status(conn: &Connection, delivery_id: i64) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT status FROM deliveries WHERE delivery_id = ?1",
            [delivery_id],
            |r| r.get(0),
        )
        .optional()?)
}

/// Queues a delivery of outbox event `event_seq` to an endpoint; `false`
/// when it was queued before (the (event, endpoint) key is unique, so a
/// fan-out redone after a crash adds nothing).
pub fn queue_delivery(
    conn: &Connection,
    event_seq: i64,
    endpoint_id: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "INSERT INTO deliveries (event_seq, endpoint_id, status, attempts, next_attempt_at, created_at, updated_at)
                 VALUES (?1, ?2, 'pending', 0, ?3, ?3, ?3) ON CONFLICT(event_seq, endpoint_id) DO NOTHING",
        params![event_seq, endpoint_id, now],
    )?;
    Ok(n == 1)
}

/// A pending delivery in a dispatcher worker's window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDelivery {
    pub delivery_id: i64,
    /// Not to be tried before (ms).
    pub next_attempt_at: i64,
    /// The event's patient, if any.
    pub patient_id: Option<String>,
}

/// Up to `limit` pending deliveries to an endpoint, in event order.
pub fn pending_window(
    conn: &Connection,
    endpoint_id: &str,
    limit: usize,
) -> Result<Vec<PendingDelivery>, StoreError> {
    let mut q = conn.prepare_cached(
        "SELECT d.delivery_id, d.next_attempt_at, o.patient_id
         FROM deliveries d JOIN outbox o ON o.seq = d.event_seq
         WHERE d.endpoint_id = ?1 AND d.status = 'pending' ORDER BY d.event_seq LIMIT ?2",
    )?;
    let rows = q.query_map(
        params![endpoint_id, i64::try_from(limit).unwrap_or(i64::MAX)],
        |r| {
            Ok(PendingDelivery {
                delivery_id: r.get(0)?,
                next_attempt_at: r.get(1)?,
                patient_id: r.get(2)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The event id and body of a delivery that is still pending.
pub fn pending_payload(
    conn: &Connection,
    delivery_id: i64,
) -> Result<Option<(String, String)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT o.event_id, o.payload FROM deliveries d JOIN outbox o ON o.seq = d.event_seq
                 WHERE d.delivery_id = ?1 AND d.status = 'pending'",
            [delivery_id],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )
        .optional()?)
}

/// What recording an attempt needs to know about a pending delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptState {
    /// Attempts made so far.
    pub attempts: i64,
    /// Attempts before the current round (a re-drive starts a new one).
    pub round_base: i64,
    /// Start of the current round (re-drive or creation, ms).
    pub since: i64,
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
}

/// The attempt state of a delivery that is still pending.
pub fn attempt_state(
    conn: &Connection,
    delivery_id: i64,
) -> Result<Option<AttemptState>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT d.attempts, d.round_base, COALESCE(d.redriven_at, d.created_at), o.event_id, o.event_type
             FROM deliveries d JOIN outbox o ON o.seq = d.event_seq
             WHERE d.delivery_id = ?1 AND d.status = 'pending'",
            [delivery_id],
            |r| {
                Ok(AttemptState {
                    attempts: r.get(0)?,
                    round_base: r.get(1)?,
                    since: r.get(2)?,
                    event_id: r.get(3)?,
                    event_type: r.get(4)?,
                })
            },
        )
        .optional()?)
}

/// One attempt as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptLog<'a> {
    pub delivery_id: i64,
    /// 1-based attempt number.
    pub attempt: i64,
    /// When (ms).
    pub at: i64,
    /// The receiver's status, if it answered.
    pub http_status: Option<u16>,
    /// Round trip (ms).
    pub latency_ms: i64,
    /// Why there was no answer.
    pub error: Option<&'a str>,
}

/// Logs one attempt.
pub fn log_attempt(conn: &Connection, a: &AttemptLog<'_>) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO delivery_attempts (delivery_id, attempt, at, http_status, latency_ms, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            a.delivery_id,
            a.attempt,
            a.at,
            a.http_status,
            a.latency_ms,
            a.error
        ],
    )?;
    Ok(())
}

/// A delivery's state after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryUpdate<'a> {
    /// `pending`, `delivered`, `failed` or `dead`.
    pub status: &'a str,
    /// Attempts made.
    pub attempts: i64,
    /// Not to be tried before (ms).
    pub next_attempt_at: i64,
    /// Now (ms).
    pub updated_at: i64,
    /// The last answer's status.
    pub last_status: Option<u16>,
    /// The last failure without an answer.
    pub last_error: Option<&'a str>,
}

/// Records a delivery's state after an attempt.
pub fn update_delivery(
    conn: &Connection,
    delivery_id: i64,
    u: &DeliveryUpdate<'_>,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4, updated_at = ?5,
                last_status = ?6, last_error = ?7
         WHERE delivery_id = ?1",
        params![
            delivery_id,
            u.status,
            u.attempts,
            u.next_attempt_at,
            u.updated_at,
            u.last_status,
            u.last_error
        ],
    )?;
    Ok(())
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// A delivery (one event to one endpoint).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryRecord {
    /// Id.
    pub delivery_id: i64,
    /// Outbox sequence of the event.
    pub event_seq: i64,
    /// Event id (= `webhook-id`).
    pub event_id: String,
    pub event_type: String,
    pub endpoint_id: String,
    /// pending | delivered | failed | dead.
    pub status: String,
    /// Attempts so far (all rounds).
    pub attempts: i64,
    /// Next attempt (pending only).
    pub next_attempt_at: DateTime<Utc>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Last HTTP status.
    pub last_status: Option<i64>,
    /// Last error or response excerpt.
    pub last_error: Option<String>,
}

/// One attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    pub delivery_id: i64,
    /// 1, 2, ...
    pub attempt: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// HTTP status, if a response came.
    pub http_status: Option<i64>,
    /// Time to response or failure.
    pub latency_ms: i64,
    /// Error or response excerpt.
    pub error: Option<String>,
}

/// Which deliveries to list.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery<'a> {
    /// Only this endpoint.
    pub endpoint_id: Option<&'a str>,
    /// Only this status.
    pub status: Option<&'a str>,
    /// Only ids below this (newest first, keyset pagination).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

/// Deliveries per endpoint and status: (endpoint id, status, count), the
/// delivery health an operator looks at first. A pending delivery that
/// has failed before counts as `retrying`.
pub fn delivery_counts(conn: &Connection) -> Result<Vec<(String, String, i64)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT endpoint_id, CASE WHEN status = 'pending' AND attempts > 0 THEN 'retrying' ELSE status END AS s,
                COUNT(*)
         FROM deliveries GROUP BY endpoint_id, s",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deliveries, newest first.
pub fn deliveries(
    conn: &Connection,
    q: &DeliveryQuery<'_>,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.delivery_id, d.event_seq, o.event_id, o.event_type, d.endpoint_id, d.status, d.attempts,
                d.next_attempt_at, d.created_at, d.updated_at, d.last_status, d.last_error
         FROM deliveries d JOIN outbox o ON o.seq = d.event_seq
         WHERE (?1 IS NULL OR d.endpoint_id = ?1) AND (?2 IS NULL OR d.status = ?2)
           AND (?3 IS NULL OR d.delivery_id < ?3)
         ORDER BY d.delivery_id DESC LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        params![q.endpoint_id, q.status, q.before, q.limit.max(1) as i64],
        |r| {
            Ok(DeliveryRecord {
                delivery_id: r.get(0)?,
                event_seq: r.get(1)?,
                event_id: r.get(2)?,
                event_type: r.get(3)?,
                endpoint_id: r.get(4)?,
                status: r.get(5)?,
                attempts: r.get(6)?,
                next_attempt_at: time(r.get(7)?),
                created_at: time(r.get(8)?),
                updated_at: time(r.get(9)?),
                last_status: r.get(10)?,
                last_error: r.get(11)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The attempts of one delivery, in order.
pub fn attempts(conn: &Connection, delivery_id: i64) -> Result<Vec<AttemptRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT delivery_id, attempt, at, http_status, latency_ms, error FROM delivery_attempts
         WHERE delivery_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([delivery_id], |r| {
        Ok(AttemptRecord {
            delivery_id: r.get(0)?,
            attempt: r.get(1)?,
            at: time(r.get(2)?),
            http_status: r.get(3)?,
            latency_ms: r.get(4)?,
            error: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What to re-drive.
#[derive(Debug, Clone, Copy)]
pub enum Redrive<'a> {
    /// One delivery (dead or failed).
    Delivery(i64),
    /// Every dead or failed delivery of an endpoint.
    Endpoint(&'a str),
    /// Every dead or failed delivery.
    All,
}

/// Puts dead-lettered (and failed) deliveries back in the queue with a
/// fresh retry round: same event, same `webhook-id`. Returns how many.
pub fn redrive(conn: &Connection, which: Redrive<'_>) -> Result<usize, StoreError> {
    let (id, endpoint) = match which {
        Redrive::Delivery(id) => (Some(id), None),
        Redrive::Endpoint(e) => (None, Some(e)),
        Redrive::All => (None, None),
    };
    let n = conn.execute(
        "UPDATE deliveries SET status = 'pending', round_base = attempts, redriven_at = ?3,
                next_attempt_at = ?3, updated_at = ?3
         WHERE status IN ('dead', 'failed')
           AND (?1 IS NULL OR delivery_id = ?1) AND (?2 IS NULL OR endpoint_id = ?2)",
        params![id, endpoint, now_ms()],
    )?;
    Ok(n)
}

const ENDPOINT_COLUMNS: &str = "endpoint_id, url, description, secrets, enabled, disabled_reason, filter, origin, created_at, updated_at, allow_private_network";

/// A `webhook_endpoints` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRow {
    /// Stable id.
    pub endpoint_id: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Free text for operators.
    pub description: String,
    /// The sealed secrets, a JSON array, newest first.
    pub secrets: String,
    /// Deliveries are attempted only while enabled.
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// The routing filter (JSON).
    pub filter: String,
    /// config | cli | api.
    pub origin: String,
    /// Created (ms).
    pub created_at: i64,
    /// Last change (ms).
    pub updated_at: i64,
    /// The SSRF guard is off for it.
    pub allow_private_network: bool,
}

fn endpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EndpointRow> {
    Ok(EndpointRow {
        endpoint_id: r.get(0)?,
        url: r.get(1)?,
        description: r.get(2)?,
        secrets: r.get(3)?,
        enabled: r.get::<_, i64>(4)? != 0,
        disabled_reason: r.get(5)?,
        filter: r.get(6)?,
        origin: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        allow_private_network: r.get::<_, i64>(10)? != 0,
    })
}

/// All endpoint rows, by id.
pub fn endpoints(conn: &Connection) -> Result<Vec<EndpointRow>, StoreError> {
    let mut q = conn.prepare_cached(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY endpoint_id"
    ))?;
    let rows = q.query_map([], endpoint_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One endpoint row.
pub fn endpoint(conn: &Connection, endpoint_id: &str) -> Result<Option<EndpointRow>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE endpoint_id = ?1"),
            [endpoint_id],
            endpoint_row,
        )
        .optional()?)
}

/// Every endpoint's id and secrets column (sealed or, from older gateways
/// or hand edits, plain).
pub fn endpoint_secrets(conn: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    Ok(conn
        .prepare("SELECT endpoint_id, secrets FROM webhook_endpoints")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?)
}

/// Replaces an endpoint's secrets column; `updated_at` when the change is
/// one an operator would see (sealing plain text in place is not).
pub fn set_endpoint_secrets(
    conn: &Connection,
    endpoint_id: &str,
    secrets: &str,
    updated_at: Option<i64>,
) -> Result<(), StoreError> {
    match updated_at {
        Some(now) => conn.execute(
            "UPDATE webhook_endpoints SET secrets = ?2, updated_at = ?3 WHERE endpoint_id = ?1",
            params![endpoint_id, secrets, now],
        )?,
        None => conn.execute(
            "UPDATE webhook_endpoints SET secrets = ?2 WHERE endpoint_id = ?1",
            params![endpoint_id, secrets],
        )?,
    };
    Ok(())
}

/// Inserts an endpoint row (`updated_at` = `created_at`).
pub fn insert_endpoint(conn: &Connection, e: &EndpointRow) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO webhook_endpoints (endpoint_id, url, description, secrets, enabled, disabled_reason, filter, origin, created_at, updated_at, allow_private_network)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)",
        params![
            e.endpoint_id,
            e.url,
            e.description,
            e.secrets,
            e.enabled as i64,
            e.disabled_reason,
            e.filter,
            e.origin,
            e.created_at,
            e.allow_private_network as i64
        ],
    )?;
    Ok(())
}

/// One operator-changeable field of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointField<'a> {
    /// The URL.
    Url(&'a str),
    /// The description.
    Description(&'a str),
    /// The routing filter (JSON).
    Filter(&'a str),
    /// Whether the SSRF guard is off for it.
    AllowPrivateNetwork(bool),
}

/// Sets one field and `updated_at`.
pub fn set_endpoint_field(
    conn: &Connection,
    endpoint_id: &str,
    field: EndpointField<'_>,
    now: i64,
) -> Result<(), StoreError> {
    match field {
        EndpointField::AllowPrivateNetwork(allowed) => conn.execute(
            "UPDATE webhook_endpoints SET allow_private_network = ?2, updated_at = ?3 WHERE endpoint_id = ?1",
            params![endpoint_id, allowed as i64, now],
        )?,
        EndpointField::Url(url) => conn.execute(
            "UPDATE webhook_endpoints SET url = ?2, updated_at = ?3 WHERE endpoint_id = ?1",
            params![endpoint_id, url, now],
        )?,
        EndpointField::Description(d) => conn.execute(
            "UPDATE webhook_endpoints SET description = ?2, updated_at = ?3 WHERE endpoint_id = ?1",
            params![endpoint_id, d, now],
        )?,
        EndpointField::Filter(f) => conn.execute(
            "UPDATE webhook_endpoints SET filter = ?2, updated_at = ?3 WHERE endpoint_id = ?1",
            params![endpoint_id, f, now],
        )?,
    };
    Ok(())
}

/// Enables (clearing the reason) or disables (recording `reason`).
pub fn set_endpoint_enabled(
    conn: &Connection,
    endpoint_id: &str,
    enabled: bool,
    reason: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE webhook_endpoints SET enabled = ?2, disabled_reason = ?3, updated_at = ?4 WHERE endpoint_id = ?1",
        params![endpoint_id, enabled as i64, reason, now],
    )?;
    Ok(())
}
