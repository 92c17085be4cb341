//! Alerts as stored: one row from fire to resolve, and its history.
//!
//! Read by the CLI, the HTTP API and the outbox event builder. Every
//! transition (fired, updated, acknowledged, resolved, note) is a row of
//! `alert_history` with its time, actor and evidence.

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::StoreError;

/// An alert row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRecord {
    /// Stable alert id.
    pub alert_id: String,
    /// Patient.
    pub patient_id: String,
    /// Rule id.
    pub rule_id: String,
    /// Rule version that fired it (updated with later notifications).
    pub rule_version: u32,
    /// Pack of the rule.
    pub pack: String,
    /// `info` | `warning` | `urgent` | `critical`.
    pub severity: String,
    /// `firing` | `acknowledged` | `resolved`.
    pub status: String,
    /// Message at the last notification.
    pub message: String,
    /// Effective limits that fired it (JSON, per parameter).
    pub limits: serde_json::Value,
    /// Readings cited (JSON array of evidence readings with unit and LOINC).
    pub evidence: serde_json::Value,
    /// Fired by back-filled or delayed data.
    pub late: bool,
    /// Flapping.
    pub flapping: bool,
    /// When it fired (processing time).
    pub fired_at: DateTime<Utc>,
    /// Measured time of the reading that fired it.
    pub measured_at: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Acknowledgement note.
    pub ack_note: Option<String>,
    /// Notifications suppressed until then.
    pub snooze_until: Option<DateTime<Utc>>,
    /// When it resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Who resolved it (`None`: automatically).
    pub resolved_by: Option<String>,
}

/// One transition of an alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    /// Row id (order).
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// `fired` | `updated` | `acknowledged` | `resolved` | `note`.
    pub kind: String,
    /// Whether a notification (outbox event) was written.
    pub notified: bool,
    /// Who (acknowledge, manual resolve).
    pub actor: Option<String>,
    /// Note, evidence, limits, late flag.
    pub detail: serde_json::Value,
}

/// Which alerts to list.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// `firing`, `acknowledged`, `resolved`, or `open` (not resolved).
    pub status: Option<String>,
    /// Only this patient.
    pub patient_id: Option<String>,
    /// Most rows (newest first).
    pub limit: usize,
}

pub(crate) fn ms(t: Option<i64>) -> Option<DateTime<Utc>> {
    t.and_then(|t| Utc.timestamp_millis_opt(t).single())
}

fn t(v: i64) -> DateTime<Utc> {
    ms(Some(v)).unwrap_or_default()
}

const COLUMNS: &str = "alert_id, patient_id, rule_id, rule_version, pack, severity, status, message, limits, evidence,
    late, flapping, fired_at, measured_at, updated_at, acknowledged_by, acknowledged_at, ack_note, snooze_until,
    resolved_at, resolved_by";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AlertRecord> {
    let json = |s: String| serde_json::from_str(&s).unwrap_or(serde_json::Value::Null);
    Ok(AlertRecord {
        alert_id: r.get(0)?,
        patient_id: r.get(1)?,
        rule_id: r.get(2)?,
        rule_version: r.get(3)?,
        pack: r.get(4)?,
        severity: r.get(5)?,
        status: r.get(6)?,
        message: r.get(7)?,
        limits: json(r.get(8)?),
        evidence: json(r.get(9)?),
        late: r.get(10)?,
        flapping: r.get(11)?,
        fired_at: t(r.get(12)?),
        measured_at: ms(r.get(13)?),
        updated_at: t(r.get(14)?),
        acknowledged_by: r.get(15)?,
        acknowledged_at: ms(r.get(16)?),
        ack_note: r.get(17)?,
        snooze_until: ms(r.get(18)?),
        resolved_at: ms(r.get(19)?),
        resolved_by: r.get(20)?,
    })
}

/// One alert (usable inside a transaction: pass `&tx`).
pub fn get(conn: &Connection, alert_id: &str) -> Result<Option<AlertRecord>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM alerts WHERE alert_id = ?1"))?
        .query_row([alert_id], row)
        .optional()?)
}

/// Alerts matching `filter`, newest first.
pub fn list(conn: &Connection, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
    let (status, open) = match filter.status.as_deref() {
        Some("open") => (None, true),
        other => (other, false),
    };
    let mut q = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM alerts
         WHERE (?1 IS NULL OR status = ?1) AND (?2 = 0 OR status != 'resolved')
           AND (?3 IS NULL OR patient_id = ?3)
         ORDER BY fired_at DESC, alert_id LIMIT ?4"
    ))?;
    let rows = q.query_map(
        params![status, open, filter.patient_id, filter.limit.max(1) as i64],
        row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The history of one alert, oldest first.
pub fn history(conn: &Connection, alert_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
    let mut q = conn.prepare_cached(
        "SELECT id, at, kind, notified, actor, detail FROM alert_history WHERE alert_id = ?1 ORDER BY id",
    )?;
    let rows = q.query_map([alert_id], |r| {
        Ok(HistoryEntry {
            id: r.get(0)?,
            at: t(r.get(1)?),
            kind: r.get(2)?,
            notified: r.get(3)?,
            actor: r.get(4)?,
            detail: serde_json::from_str(&r.get::<_, String>(5)?).unwrap_or_default(),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Open alerts by status (`firing`, `acknowledged`), for the metrics gauge.
pub fn open_counts(conn: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    let mut q = conn.prepare_cached(
        "SELECT status, COUNT(*) FROM alerts WHERE status IN ('firing', 'acknowledged') GROUP BY status",
    )?;
    let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
