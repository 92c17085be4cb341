//! Alerts as stored: one row from fire to resolve, and its history.
//!
//! Read by the CLI, the HTTP API and the outbox event builder. Every
//! change of an alert (fired, updated and resolved as the rules decide,
//! acknowledged, resolved and noted by a person) is a row of
//! `alert_history` with its time, actor and evidence.
//!
//! The rule evaluator's own bookkeeping lives here too: each (patient, rule)
//! engine state in `alert_state` and each patient's evaluation watermark in
//! `patient_watermarks`. The rules component decides transitions and
//! encodes states, limits and evidence as JSON; these functions only move
//! rows, inside the caller's transaction, so a crash leaves all or none.

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::StoreError;

/// An alert row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRecord {
    /// Stable alert id.
    pub alert_id: String,
    /// Whose alert it is: what care-team scoping and audit rows go by.
    pub patient_id: String,
    /// The rule that fired it (one open alert per patient and rule).
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
    /// Firing and clearing too often: notifications are held back.
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

/// One entry of an alert's history: a rule's transition or a person's
/// action.
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

/// An alert with its patient's care team, as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TeamAlert {
    /// The alert row.
    pub alert: AlertRecord,
    /// The patient's care team now (`None`: none, or not enrolled).
    pub care_team: Option<String>,
}

/// One page of alerts, newest first by (`fired_at`, `alert_id`).
#[derive(Debug, Clone, Default)]
pub struct AlertPage {
    /// `firing`, `acknowledged`, `resolved`, or `open` (not resolved);
    /// the caller checks the word.
    pub status: Option<String>,
    /// `info`, `warning`, `urgent` or `critical`.
    pub severity: Option<String>,
    /// Only this patient.
    pub patient_id: Option<String>,
    /// Only patients of this care team.
    pub care_team: Option<String>,
    /// Only patients of these care teams (a JSON array: a care-team
    /// token's scope).
    pub scope_teams: Option<String>,
    /// After this (`fired_at` ms, `alert_id`): the keyset cursor.
    pub before: Option<(i64, String)>,
    /// Most rows.
    pub limit: usize,
}

const TEAM_HEAD: &str = "a.alert_id, a.patient_id, a.rule_id, a.rule_version, a.pack, a.severity, a.status, a.message,
     a.limits, a.evidence, a.late, a.flapping, a.fired_at, a.measured_at, a.updated_at, a.acknowledged_by,
     a.acknowledged_at, a.ack_note, a.snooze_until, a.resolved_at, a.resolved_by, p.care_team
     FROM alerts a LEFT JOIN patients p ON p.patient_id = a.patient_id";

fn team_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TeamAlert> {
    Ok(TeamAlert {
        alert: row(r)?,
        care_team: r.get(21)?,
    })
}

/// One alert with its patient's care team.
pub fn get_with_team(conn: &Connection, alert_id: &str) -> Result<Option<TeamAlert>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {TEAM_HEAD} WHERE a.alert_id = ?1"))?
        .query_row([alert_id], team_row)
        .optional()?)
}

/// The page of alerts `q` selects.
pub fn page(conn: &Connection, q: &AlertPage) -> Result<Vec<TeamAlert>, StoreError> {
    let mut f = super::listing::Filter::default();
    match q.status.as_deref() {
        None => {}
        Some("open") => f.add("a.status != ?", "resolved".to_string()),
        Some(s) => f.add("a.status = ?", s.to_string()),
    }
    if let Some(s) = &q.severity {
        f.add("a.severity = ?", s.clone());
    }
    if let Some(t) = &q.care_team {
        f.add("p.care_team = ?", t.clone());
    }
    if let Some((t, id)) = &q.before {
        f.add2("(a.fired_at, a.alert_id) < (?a, ?b)", *t, id.clone());
    }
    if let Some(pt) = &q.patient_id {
        f.add("a.patient_id = ?", pt.clone());
    }
    f.scope("a.patient_id", q.scope_teams.clone());
    f.query(
        conn,
        TEAM_HEAD,
        "a.fired_at DESC, a.alert_id DESC",
        q.limit,
        team_row,
    )
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

/// A stored engine state: its JSON and the open alert it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredState {
    pub rule_id: String,
    /// The engine's state (JSON).
    pub state: String,
    /// The open alert, if any.
    pub alert_id: Option<String>,
}

/// A patient's stored engine states.
pub fn states(conn: &Connection, patient_id: &str) -> Result<Vec<StoredState>, StoreError> {
    let mut q = conn
        .prepare_cached("SELECT rule_id, state, alert_id FROM alert_state WHERE patient_id = ?1")?;
    let rows = q.query_map([patient_id], |r| {
        Ok(StoredState {
            rule_id: r.get(0)?,
            state: r.get(1)?,
            alert_id: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Writes (inserts or replaces) one engine state.
pub fn save_state(
    conn: &Connection,
    patient_id: &str,
    rule_id: &str,
    state: &str,
    alert_id: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO alert_state (patient_id, rule_id, state, alert_id, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(patient_id, rule_id) DO UPDATE SET state = excluded.state, alert_id = excluded.alert_id,
             updated_at = excluded.updated_at",
    )?
    .execute(params![patient_id, rule_id, state, alert_id, now])?;
    Ok(())
}

/// A patient's watermark and input time (ms), `(None, None)` when never set.
pub fn watermark(
    conn: &Connection,
    patient_id: &str,
) -> Result<(Option<i64>, Option<i64>), StoreError> {
    Ok(conn
        .prepare_cached("SELECT watermark, input_at FROM patient_watermarks WHERE patient_id = ?1")?
        .query_row([patient_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((None, None)))
}

/// Writes a patient's watermark; an absent input time keeps the stored one.
pub fn save_watermark(
    conn: &Connection,
    patient_id: &str,
    watermark: i64,
    input_at: Option<i64>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO patient_watermarks(patient_id, watermark, input_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(patient_id) DO UPDATE SET watermark = excluded.watermark,
                 input_at = COALESCE(excluded.input_at, input_at)",
    )?
    .execute(params![patient_id, watermark, input_at])?;
    Ok(())
}

/// A count of the changes to what the rule stage reads besides readings
/// (enrolment, overrides, care teams, alert states), kept by triggers: equal
/// at two moments, nothing of it changed in between.
pub fn rule_input_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT version FROM rule_input_changes WHERE id = 1")?
        .query_row([], |r| r.get(0))?)
}

/// The time (ms) of an alert's newest history row.
pub fn last_history_at(conn: &Connection, alert_id: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT MAX(at) FROM alert_history WHERE alert_id = ?1")?
        .query_row([alert_id], |r| r.get(0))?)
}

/// Number of history rows of an alert.
pub fn history_len(conn: &Connection, alert_id: &str) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM alert_history WHERE alert_id = ?1")?
        .query_row([alert_id], |r| r.get(0))?)
}

/// A history row to append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewHistory<'a> {
    /// The alert whose history grows.
    pub alert_id: &'a str,
    /// When (ms).
    pub at: i64,
    /// `fired` | `updated` | `acknowledged` | `resolved` | `note`.
    pub kind: &'a str,
    /// Whether an outbox event was written with it.
    pub notified: bool,
    /// Who, for actions.
    pub actor: Option<&'a str>,
    /// The detail (JSON).
    pub detail: &'a str,
}

/// Appends a history row.
pub fn append_history(conn: &Connection, h: &NewHistory<'_>) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO alert_history (alert_id, at, kind, notified, actor, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![h.alert_id, h.at, h.kind, h.notified, h.actor, h.detail])?;
    Ok(())
}

/// Whether an alert id is taken.
pub fn exists(conn: &Connection, alert_id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM alerts WHERE alert_id = ?1")?
        .exists([alert_id])?)
}

/// What a rule's transition says of an alert: written when it fires and
/// again at each update.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertContent<'a> {
    /// The version of the rule that decided it, so that a later edit of
    /// the rule does not rewrite what the alert said.
    pub rule_version: u32,
    /// Severity name.
    pub severity: &'a str,
    /// The rendered message, as notified.
    pub message: &'a str,
    /// Limits (JSON).
    pub limits: &'a str,
    /// Evidence (JSON).
    pub evidence: &'a str,
    /// On late data.
    pub late: bool,
    /// Firing and clearing too often: notifications are held back.
    pub flapping: bool,
}

/// A firing alert to insert (`updated_at` = `fired_at`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlert<'a> {
    /// Stable id.
    pub alert_id: &'a str,
    /// Whose alert it is.
    pub patient_id: &'a str,
    /// The rule that fired it.
    pub rule_id: &'a str,
    /// Rule pack.
    pub pack: &'a str,
    /// What the rule's transition says.
    pub content: AlertContent<'a>,
    /// Fired (ms).
    pub fired_at: i64,
    /// Measurement time (ms).
    pub measured_at: Option<i64>,
    /// Snoozed until (ms).
    pub snooze_until: Option<i64>,
}

/// Inserts a firing alert.
pub fn insert(conn: &Connection, a: &NewAlert<'_>) -> Result<(), StoreError> {
    let c = &a.content;
    conn.prepare_cached(
        "INSERT INTO alerts (alert_id, patient_id, rule_id, rule_version, pack, severity, status, message, limits,
             evidence, late, flapping, fired_at, measured_at, updated_at, snooze_until)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'firing', ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?12, ?14)",
    )?
    .execute(params![
        a.alert_id,
        a.patient_id,
        a.rule_id,
        c.rule_version,
        a.pack,
        c.severity,
        c.message,
        c.limits,
        c.evidence,
        c.late,
        c.flapping,
        a.fired_at,
        a.measured_at,
        a.snooze_until,
    ])?;
    Ok(())
}

/// Applies an update transition at `updated_at` (ms).
pub fn update(
    conn: &Connection,
    alert_id: &str,
    c: &AlertContent<'_>,
    updated_at: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE alerts SET rule_version = ?2, severity = ?3, message = ?4, limits = ?5, evidence = ?6,
                             late = ?7, flapping = ?8, updated_at = ?9 WHERE alert_id = ?1",
    )?
    .execute(params![
        alert_id,
        c.rule_version,
        c.severity,
        c.message,
        c.limits,
        c.evidence,
        c.late,
        c.flapping,
        updated_at
    ])?;
    Ok(())
}

/// Resolves an alert by its rule (no actor), unless already resolved.
pub fn resolve_by_rule(
    conn: &Connection,
    alert_id: &str,
    at: i64,
    flapping: bool,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE alerts SET status = 'resolved', resolved_at = ?2, updated_at = ?2, flapping = ?3
                     WHERE alert_id = ?1 AND status != 'resolved'",
    )?
    .execute(params![alert_id, at, flapping])?;
    Ok(())
}

/// Sets the flapping flag.
pub fn set_flapping(
    conn: &Connection,
    alert_id: &str,
    flapping: bool,
    at: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE alerts SET flapping = ?2, updated_at = ?3 WHERE alert_id = ?1")?
        .execute(params![alert_id, flapping, at])?;
    Ok(())
}

/// Resolves (by `system`) every open alert of a patient's rule.
pub fn close_open(
    conn: &Connection,
    patient_id: &str,
    rule_id: &str,
    at: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE alerts SET status = 'resolved', resolved_at = ?3, resolved_by = 'system', updated_at = ?3
         WHERE patient_id = ?1 AND rule_id = ?2 AND status != 'resolved'",
    )?
    .execute(params![patient_id, rule_id, at])?;
    Ok(())
}

/// The stored engine state (JSON) of a patient's rule.
pub fn state(
    conn: &Connection,
    patient_id: &str,
    rule_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT state FROM alert_state WHERE patient_id = ?1 AND rule_id = ?2")?
        .query_row(params![patient_id, rule_id], |r| r.get(0))
        .optional()?)
}

/// An acknowledgement to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acknowledgement<'a> {
    /// Who.
    pub by: &'a str,
    /// When (ms).
    pub at: i64,
    /// A note (kept when absent).
    pub note: Option<&'a str>,
    /// The first acknowledgement: who and when are recorded (later ones
    /// keep them).
    pub first: bool,
    /// Notifications snoozed until (ms).
    pub snooze_until: Option<i64>,
}

/// Marks an alert acknowledged.
pub fn acknowledge(
    conn: &Connection,
    alert_id: &str,
    a: &Acknowledgement<'_>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE alerts SET status = 'acknowledged',
             acknowledged_by = CASE WHEN ?5 THEN ?2 ELSE acknowledged_by END,
             acknowledged_at = CASE WHEN ?5 THEN ?3 ELSE acknowledged_at END,
             ack_note = COALESCE(?4, ack_note), snooze_until = ?6, updated_at = ?3
         WHERE alert_id = ?1",
    )?
    .execute(params![
        alert_id,
        a.by,
        a.at,
        a.note,
        a.first,
        a.snooze_until
    ])?;
    Ok(())
}

/// Resolves an alert by hand.
pub fn resolve_by(conn: &Connection, alert_id: &str, at: i64, by: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE alerts SET status = 'resolved', resolved_at = ?2, resolved_by = ?3, updated_at = ?2
         WHERE alert_id = ?1",
    )?
    .execute(params![alert_id, at, by])?;
    Ok(())
}

/// The number of alerts fired in `[since, until)` (ms) per (patient, rule),
/// of one patient or all.
pub fn fired_counts(
    conn: &Connection,
    since: i64,
    until: i64,
    patient: Option<&str>,
) -> Result<Vec<(String, String, i64)>, StoreError> {
    let mut st = conn.prepare(
        "SELECT patient_id, rule_id, COUNT(*) FROM alerts
         WHERE fired_at >= ?1 AND fired_at < ?2 AND (?3 IS NULL OR patient_id = ?3)
         GROUP BY patient_id, rule_id",
    )?;
    let rows = st.query_map(params![since, until, patient], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// An alert fired in a period, summarised for the alert-burden report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredSummary {
    /// The rule that fired it (the report counts per rule).
    pub rule_id: String,
    /// The patient's care team.
    pub care_team: Option<String>,
    /// Fired (ms).
    pub fired_at: i64,
    /// Acknowledged (ms).
    pub acknowledged_at: Option<i64>,
    /// Resolved (ms).
    pub resolved_at: Option<i64>,
    /// Flapping now.
    pub flapping: bool,
    /// Whether firing notified (`None`: no `fired` history row).
    pub fire_notified: Option<bool>,
    /// Notified updates.
    pub renotified: i64,
    /// History rows that recorded flapping.
    pub flapped: i64,
}

/// The alerts fired in `[since, until)` (ms), summarised.
pub fn fired_between(
    conn: &Connection,
    since: i64,
    until: i64,
) -> Result<Vec<FiredSummary>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT a.rule_id, p.care_team, a.fired_at, a.acknowledged_at, a.resolved_at, a.flapping,
             (SELECT h.notified FROM alert_history h WHERE h.alert_id = a.alert_id AND h.kind = 'fired' ORDER BY h.id LIMIT 1),
             (SELECT COUNT(*) FROM alert_history h WHERE h.alert_id = a.alert_id AND h.kind = 'updated' AND h.notified = 1),
             (SELECT COUNT(*) FROM alert_history h WHERE h.alert_id = a.alert_id AND json_extract(h.detail, '$.flapping') = 1)
         FROM alerts a LEFT JOIN patients p ON p.patient_id = a.patient_id
         WHERE a.fired_at >= ?1 AND a.fired_at < ?2",
    )?;
    let rows = st.query_map(params![since, until], |r| {
        Ok(FiredSummary {
            rule_id: r.get(0)?,
            care_team: r.get(1)?,
            fired_at: r.get(2)?,
            acknowledged_at: r.get(3)?,
            resolved_at: r.get(4)?,
            flapping: r.get(5)?,
            fire_notified: r.get(6)?,
            renotified: r.get(7)?,
            flapped: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
