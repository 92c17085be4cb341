//! The outbox: events waiting to be delivered to care managers.
//!
//! Whatever produces an event (the rule evaluator firing an alert, an API
//! acknowledgement, the dispatcher reporting a failing endpoint) writes it
//! here **in the same transaction** as the change it reports. The webhook
//! dispatcher delivers from this table after a durable cursor, so a crash
//! can neither lose an event nor invent one, and a retried delivery carries
//! the same `event_id` (the Standard Webhooks `webhook-id`) so receivers can
//! deduplicate.
//!
//! The body is versioned: [`EVENT_SCHEMA`] names it, and
//! `gateway/schema/webhook-event.v1.json` is its JSON Schema.

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, Transaction};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::StoreError;

/// Version tag carried in every event body.
pub const EVENT_SCHEMA: &str = "rpm-gateway.event.v1";

/// Event types. Alert events carry [`AlertData`]; operational events carry
/// [`OperationalData`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// A new alert opened.
    #[serde(rename = "alert.fired")]
    AlertFired,
    /// An open alert got new evidence or escalated.
    #[serde(rename = "alert.updated")]
    AlertUpdated,
    /// Someone acknowledged an alert.
    #[serde(rename = "alert.acknowledged")]
    AlertAcknowledged,
    /// An alert resolved (automatically or by hand).
    #[serde(rename = "alert.resolved")]
    AlertResolved,
    /// Deliveries to an endpoint keep failing.
    #[serde(rename = "delivery.failing")]
    DeliveryFailing,
    /// A delivery exhausted its retries and was dead-lettered.
    #[serde(rename = "delivery.dead_lettered")]
    DeliveryDeadLettered,
    /// An endpoint was disabled (410 Gone, or by hand).
    #[serde(rename = "endpoint.disabled")]
    EndpointDisabled,
    /// The store's disk is running low.
    #[serde(rename = "store.disk_low")]
    StoreDiskLow,
    /// A follow-up task missed its deadline (to be claimed, or done).
    #[serde(rename = "task.overdue")]
    TaskOverdue,
    /// An overdue task reached an escalation tier.
    #[serde(rename = "task.escalated")]
    TaskEscalated,
    /// A patient's risk tier changed (carries [`RiskData`]).
    #[serde(rename = "risk.changed")]
    RiskChanged,
    /// A home box has not been in contact with the hub for longer than
    /// `[upstream_intake] silent_after`.
    #[serde(rename = "box.silent")]
    BoxSilent,
    /// A home box reported silent is in contact again.
    #[serde(rename = "box.back")]
    BoxBack,
    /// A vendor-cloud integration accepted no push for longer than its
    /// `stale_after`.
    #[serde(rename = "integration.stale")]
    IntegrationStale,
    /// A stale integration accepted a push again.
    #[serde(rename = "integration.back")]
    IntegrationBack,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 15] = [
        EventType::AlertFired,
        EventType::AlertUpdated,
        EventType::AlertAcknowledged,
        EventType::AlertResolved,
        EventType::DeliveryFailing,
        EventType::DeliveryDeadLettered,
        EventType::EndpointDisabled,
        EventType::StoreDiskLow,
        EventType::TaskOverdue,
        EventType::TaskEscalated,
        EventType::RiskChanged,
        EventType::BoxSilent,
        EventType::BoxBack,
        EventType::IntegrationStale,
        EventType::IntegrationBack,
    ];

    /// The wire name (`alert.fired`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            EventType::AlertFired => "alert.fired",
            EventType::AlertUpdated => "alert.updated",
            EventType::AlertAcknowledged => "alert.acknowledged",
            EventType::AlertResolved => "alert.resolved",
            EventType::DeliveryFailing => "delivery.failing",
            EventType::DeliveryDeadLettered => "delivery.dead_lettered",
            EventType::EndpointDisabled => "endpoint.disabled",
            EventType::StoreDiskLow => "store.disk_low",
            EventType::TaskOverdue => "task.overdue",
            EventType::TaskEscalated => "task.escalated",
            EventType::RiskChanged => "risk.changed",
            EventType::BoxSilent => "box.silent",
            EventType::BoxBack => "box.back",
            EventType::IntegrationStale => "integration.stale",
            EventType::IntegrationBack => "integration.back",
        }
    }

    /// Whether this is an alert event (routed by patient, plan and team).
    pub const fn is_alert(self) -> bool {
        matches!(
            self,
            EventType::AlertFired
                | EventType::AlertUpdated
                | EventType::AlertAcknowledged
                | EventType::AlertResolved
        )
    }
}

/// A reading cited in an alert, as sent to receivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceReading {
    /// Stable reading id.
    pub reading_id: String,
    /// Metric name (`systolic`, `body_weight`, ...).
    pub metric: String,
    /// Value in `unit`.
    pub value: f64,
    /// UCUM unit.
    pub unit: String,
    /// LOINC code.
    pub loinc: String,
    /// When it was measured (UTC, RFC 3339).
    pub measured_at: DateTime<Utc>,
}

/// The rule that fired an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleRef {
    /// Rule id.
    pub id: String,
    /// Rule version that fired it.
    pub version: u32,
    /// Pack the rule belongs to.
    pub pack: String,
}

/// `data` of an alert event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertData {
    /// Alert id.
    pub alert_id: String,
    /// Patient id (pseudonymous).
    pub patient_id: String,
    /// The patient's care team, if any.
    pub care_team: Option<String>,
    /// The patient's care plans.
    pub care_plans: Vec<String>,
    /// The rule.
    pub rule: RuleRef,
    /// `info` | `warning` | `urgent` | `critical`.
    pub severity: String,
    /// `firing` | `acknowledged` | `resolved`.
    pub status: String,
    /// Human-readable message.
    pub message: String,
    /// Effective limits that fired it (JSON object, per parameter).
    pub limits: serde_json::Value,
    /// Readings cited.
    pub evidence: Vec<EvidenceReading>,
    /// Back-filled or delayed data fired it.
    pub late: bool,
    /// The alert is flapping.
    pub flapping: bool,
    /// When it fired.
    pub fired_at: DateTime<Utc>,
    /// Measured time of the reading that fired it.
    pub measured_at: Option<DateTime<Utc>>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// Acknowledgement note.
    pub ack_note: Option<String>,
    /// When it resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Link to the alert in the API (`/api/v1/alerts/{id}`, relative unless
    /// `api.public_url` is set).
    pub link: String,
}

/// The tier rule behind a tier, in a `risk.changed` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierRuleRef {
    /// Tier rule id.
    pub id: String,
    /// Its version.
    pub version: u32,
    /// Its pack.
    pub pack: String,
}

/// `data` of a `risk.changed` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskData {
    /// Patient id (pseudonymous).
    pub patient_id: String,
    /// The patient's care team, if any.
    pub care_team: Option<String>,
    /// The patient's care plans.
    pub care_plans: Vec<String>,
    /// `high` | `rising` | `stable` | `unknown`.
    pub tier: String,
    /// The tier before (`None`: first placement).
    pub previous_tier: Option<String>,
    /// The tier rule that gave it (`None`: `unknown`, no rule matched).
    pub rule: Option<TierRuleRef>,
    /// The facts: which condition, what was found, alert and task ids.
    pub reasons: serde_json::Value,
    /// When the tier changed.
    pub changed_at: DateTime<Utc>,
    /// Link to the patient's risk in the API (`/api/v1/patients/{id}/risk`).
    pub link: String,
}

/// `data` of a follow-up task event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskData {
    /// Task id.
    pub task_id: String,
    /// Patient id (pseudonymous).
    pub patient_id: String,
    /// The patient's care team, if any.
    pub care_team: Option<String>,
    /// The patient's care plans.
    pub care_plans: Vec<String>,
    /// The problem followed up (`blood-pressure`, ...).
    pub problem: String,
    /// The care pathway whose policy set the deadlines.
    pub pathway: String,
    /// The most severe alert the task follows up.
    pub priority: String,
    /// `open` | `claimed`.
    pub status: String,
    /// Which deadline was missed: `claim` or `done`.
    pub missed: String,
    /// When it opened.
    pub opened_at: DateTime<Utc>,
    /// To be claimed by.
    pub claim_due_at: Option<DateTime<Utc>>,
    /// To be done by.
    pub due_at: DateTime<Utc>,
    /// Who claimed it.
    pub claimed_by: Option<String>,
    /// When the first deadline was missed.
    pub overdue_at: Option<DateTime<Utc>>,
    /// `task.escalated`: the tier reached (1 = first) and who is told.
    pub escalation: Option<EscalationRef>,
    /// The alerts followed up.
    pub alert_ids: Vec<String>,
    /// Link to the task in the API.
    pub link: String,
}

/// The escalation tier a `task.escalated` event reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationRef {
    /// 1 for the first tier.
    pub tier: u32,
    /// Who is told (`charge-nurse`, `physician`, ... as the policy names them).
    pub to: String,
}

/// `data` of an operational event. Never carries PHI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationalData {
    /// Endpoint concerned, if any.
    pub endpoint_id: Option<String>,
    /// Human-readable description.
    pub message: String,
    /// Extra machine-readable detail.
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// An event body: `{"type", "timestamp", "data"}` as Standard Webhooks
/// recommends, plus a schema tag and the event id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event<D> {
    /// Always [`EVENT_SCHEMA`].
    pub schema: String,
    /// Event id (= `webhook-id`).
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// When the event happened.
    pub timestamp: DateTime<Utc>,
    /// Type-specific data.
    pub data: D,
}

/// A stable event id from what identifies the event (e.g. alert id,
/// transition kind and its sequence in the alert's history), so that a
/// re-run after a crash produces the same id and the outbox's unique index
/// keeps it once.
pub fn event_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0x1f]);
    }
    format!("evt_{}", &hex::encode(h.finalize())[..32])
}

/// Writes an event inside the caller's transaction. Returns its outbox
/// sequence, or `None` when an event with this id is already there.
pub fn enqueue<D: Serialize>(
    tx: &Transaction<'_>,
    event: &Event<D>,
    alert_id: Option<&str>,
    patient_id: Option<&str>,
    severity: Option<&str>,
) -> Result<Option<i64>, StoreError> {
    let payload = serde_json::to_string(event).map_err(|e| StoreError::Encode(e.to_string()))?;
    let n = tx.execute(
        "INSERT INTO outbox (event_id, event_type, alert_id, patient_id, severity, created_at, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(event_id) DO NOTHING",
        params![
            event.id,
            event.event_type.name(),
            alert_id,
            patient_id,
            severity,
            event.timestamp.timestamp_millis(),
            payload
        ],
    )?;
    Ok((n == 1).then(|| tx.last_insert_rowid()))
}

/// RFC 3339 with milliseconds and `Z`, as every time in event bodies.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An outbox event as fan-out reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Outbox sequence.
    pub seq: i64,
    /// `alert.fired`, `store.disk_low`, ...
    pub event_type: String,
    /// The patient, for alert events.
    pub patient_id: Option<String>,
    /// The severity, for alert events.
    pub severity: Option<String>,
    /// The event body (JSON).
    pub payload: String,
}

/// Whether there are events after the position of cursor `cursor`
/// (a read that takes no write lock).
pub fn has_events_after_cursor(conn: &Connection, cursor: &str) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM outbox WHERE seq > COALESCE((SELECT position FROM cursors WHERE name = ?1), 0))",
        [cursor],
        |r| r.get(0),
    )?)
}

/// Up to `limit` events after `after_seq`, in order.
pub fn events_after(
    conn: &Connection,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<OutboxRow>, StoreError> {
    let mut q = conn.prepare_cached(
        "SELECT seq, event_type, patient_id, severity, payload FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = q.query_map(
        params![after_seq, i64::try_from(limit).unwrap_or(i64::MAX)],
        |r| {
            Ok(OutboxRow {
                seq: r.get(0)?,
                event_type: r.get(1)?,
                patient_id: r.get(2)?,
                severity: r.get(3)?,
                payload: r.get(4)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn enqueue_is_idempotent_on_event_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let ev = Event {
            schema: EVENT_SCHEMA.into(),
            id: event_id(&["a1", "fired", "0"]),
            event_type: EventType::DeliveryFailing,
            timestamp: Utc::now(),
            data: OperationalData {
                endpoint_id: Some("ep".into()),
                message: "failing".into(),
                detail: serde_json::Value::Null,
            },
        };
        let tx = store.transaction().unwrap();
        assert!(enqueue(&tx, &ev, None, None, None).unwrap().is_some());
        assert!(enqueue(&tx, &ev, None, None, None).unwrap().is_none());
        tx.commit().unwrap();
        let body: String = store
            .conn()
            .query_row("SELECT payload FROM outbox", [], |r| r.get(0))
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "delivery.failing");
        assert_eq!(v["schema"], EVENT_SCHEMA);
    }
}
