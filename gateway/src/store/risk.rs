//! Risk tiers' tables: `risk_tiers`, `risk_history`, `risk_days`, and the
//! reads of `alerts`, `tasks` and `readings` the risk stage needs.
//!
//! The risk stage (`care/risk.rs`) follows three logs — alert history,
//! task history and readings — with durable cursors, and recomputes the
//! tiers of the patients they touch. Everything it writes for one batch
//! (tier rows, history, `risk.changed` events, data days, cursors) goes
//! through the functions here inside one transaction, so a `kill -9`
//! leaves all of it or none. The SQL of these tables lives only here.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

use super::StoreError;

/// A patient's stored tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RiskRow {
    /// Patient.
    pub patient_id: String,
    /// `high`, `rising`, `stable`, `unknown`.
    pub tier: String,
    /// The tier rule that gave it (None: unknown).
    pub rule_id: Option<String>,
    /// Its version.
    pub rule_version: Option<u32>,
    /// Its pack.
    pub pack: Option<String>,
    /// JSON list of reasons.
    pub reasons: String,
    /// When the patient entered this tier (ms).
    pub since: i64,
    /// When it was last computed (ms).
    pub computed_at: i64,
    /// History rows written.
    pub changes: i64,
    /// Newest measured time seen (ms).
    pub last_reading_at: Option<i64>,
    /// Local days with data in the last 7.
    pub data_days_7: i64,
    /// Local days with data in the last 30.
    pub data_days_30: i64,
}

const COLUMNS: &str = "patient_id, tier, rule_id, rule_version, pack, reasons, since, computed_at, changes, last_reading_at, data_days_7, data_days_30";

fn risk_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RiskRow> {
    Ok(RiskRow {
        patient_id: r.get(0)?,
        tier: r.get(1)?,
        rule_id: r.get(2)?,
        rule_version: r.get(3)?,
        pack: r.get(4)?,
        reasons: r.get(5)?,
        since: r.get(6)?,
        computed_at: r.get(7)?,
        changes: r.get(8)?,
        last_reading_at: r.get(9)?,
        data_days_7: r.get(10)?,
        data_days_30: r.get(11)?,
    })
}

/// The stored tier of a patient.
pub fn get(conn: &Connection, patient_id: &str) -> Result<Option<RiskRow>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM risk_tiers WHERE patient_id = ?1"
        ))?
        .query_row([patient_id], risk_row)
        .optional()?)
}

/// Writes a patient's tier row.
pub fn save(tx: &Transaction<'_>, r: &RiskRow) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO risk_tiers (patient_id, tier, rule_id, rule_version, pack, reasons, since, computed_at, changes, last_reading_at, data_days_7, data_days_30)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT(patient_id) DO UPDATE SET tier = excluded.tier, rule_id = excluded.rule_id,
           rule_version = excluded.rule_version, pack = excluded.pack, reasons = excluded.reasons,
           since = excluded.since, computed_at = excluded.computed_at, changes = excluded.changes,
           last_reading_at = excluded.last_reading_at, data_days_7 = excluded.data_days_7,
           data_days_30 = excluded.data_days_30",
    )?
    .execute(params![
        r.patient_id,
        r.tier,
        r.rule_id,
        r.rule_version,
        r.pack,
        r.reasons,
        r.since,
        r.computed_at,
        r.changes,
        r.last_reading_at,
        r.data_days_7,
        r.data_days_30
    ])?;
    Ok(())
}

/// One tier change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RiskChange {
    /// Row id (the FHIR RiskAssessment is `risk-<id>`).
    pub id: i64,
    /// Patient.
    pub patient_id: String,
    /// Position in the patient's history (0 = first placement).
    pub n: i64,
    /// When (ms).
    pub at: i64,
    /// From (None: first placement).
    pub from_tier: Option<String>,
    /// To.
    pub tier: String,
    /// The rule that gave it.
    pub rule_id: Option<String>,
    /// Its version.
    pub rule_version: Option<u32>,
    /// Its pack.
    pub pack: Option<String>,
    /// JSON reasons.
    pub reasons: String,
    /// The `risk.changed` event, if one was written.
    pub event_id: Option<String>,
}

const HISTORY_COLUMNS: &str =
    "id, patient_id, n, at, from_tier, tier, rule_id, rule_version, pack, reasons, event_id";

fn change_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RiskChange> {
    Ok(RiskChange {
        id: r.get(0)?,
        patient_id: r.get(1)?,
        n: r.get(2)?,
        at: r.get(3)?,
        from_tier: r.get(4)?,
        tier: r.get(5)?,
        rule_id: r.get(6)?,
        rule_version: r.get(7)?,
        pack: r.get(8)?,
        reasons: r.get(9)?,
        event_id: r.get(10)?,
    })
}

/// Appends a change (its `id` is ignored). Returns the row id.
pub fn append_history(tx: &Transaction<'_>, c: &RiskChange) -> Result<i64, StoreError> {
    tx.prepare_cached(
        "INSERT INTO risk_history (patient_id, n, at, from_tier, tier, rule_id, rule_version, pack, reasons, event_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        c.patient_id,
        c.n,
        c.at,
        c.from_tier,
        c.tier,
        c.rule_id,
        c.rule_version,
        c.pack,
        c.reasons,
        c.event_id
    ])?;
    Ok(tx.last_insert_rowid())
}

/// A patient's changes, newest first, at most `limit`.
pub fn history(
    conn: &Connection,
    patient_id: &str,
    limit: usize,
) -> Result<Vec<RiskChange>, StoreError> {
    let mut q = conn.prepare_cached(&format!(
        "SELECT {HISTORY_COLUMNS} FROM risk_history WHERE patient_id = ?1 ORDER BY n DESC LIMIT ?2"
    ))?;
    let rows = q.query_map(
        params![patient_id, i64::try_from(limit).unwrap_or(i64::MAX)],
        change_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One change by row id.
pub fn change(conn: &Connection, id: i64) -> Result<Option<RiskChange>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {HISTORY_COLUMNS} FROM risk_history WHERE id = ?1"
        ))?
        .query_row([id], change_row)
        .optional()?)
}

/// Alert-history rows after `after` with their patient: (id, patient).
pub fn alert_changes_after(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, String)>, StoreError> {
    changes_after(
        conn,
        "SELECT h.id, a.patient_id FROM alert_history h JOIN alerts a ON a.alert_id = h.alert_id
         WHERE h.id > ?1 ORDER BY h.id LIMIT ?2",
        after,
        limit,
    )
}

/// Task-history rows after `after` with their patient: (id, patient).
pub fn task_changes_after(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, String)>, StoreError> {
    changes_after(
        conn,
        "SELECT h.id, t.patient_id FROM task_history h JOIN tasks t ON t.task_id = h.task_id
         WHERE h.id > ?1 ORDER BY h.id LIMIT ?2",
        after,
        limit,
    )
}

/// (history id, patient) rows of a history table after `after`.
fn changes_after(
    conn: &Connection,
    sql: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<(i64, String)>, StoreError> {
    let mut q = conn.prepare_cached(sql)?;
    let rows = q.query_map(
        params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether a reading was committed after `seq`.
pub fn any_reading_after(conn: &Connection, after: i64) -> Result<bool, StoreError> {
    let mut q = conn.prepare_cached("SELECT 1 FROM readings WHERE seq > ?1 LIMIT 1")?;
    Ok(q.exists(params![after])?)
}

/// Hands `each` the readings after `after` in commit order, as (seq,
/// patient, measured_at ms), at most `limit` of them, until it returns
/// `false`. Returns the seq of the last reading handed over. Nothing is
/// collected: a step reads tens of thousands of rows to count days.
pub fn each_reading_after(
    conn: &Connection,
    after: i64,
    limit: usize,
    mut each: impl FnMut(i64, &str, i64) -> Result<bool, StoreError>,
) -> Result<Option<i64>, StoreError> {
    let mut q = conn.prepare_cached(
        "SELECT seq, patient_id, measured_at FROM readings WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let mut rows = q.query(params![after, i64::try_from(limit).unwrap_or(i64::MAX)])?;
    let mut last = None;
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        let patient = r.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
        if !each(seq, patient, r.get(2)?)? {
            break;
        }
        last = Some(seq);
    }
    Ok(last)
}

/// Counts `n` readings of `patient` on local `day`.
pub fn add_day(tx: &Transaction<'_>, patient_id: &str, day: i64, n: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO risk_days (patient_id, day, readings) VALUES (?1, ?2, ?3)
         ON CONFLICT(patient_id, day) DO UPDATE SET readings = readings + excluded.readings",
    )?
    .execute(params![patient_id, day, n])?;
    Ok(())
}

/// A patient's local days with data from `from_day` on.
pub fn days_from(
    conn: &Connection,
    patient_id: &str,
    from_day: i64,
) -> Result<Vec<i64>, StoreError> {
    let mut q = conn.prepare_cached(
        "SELECT day FROM risk_days WHERE patient_id = ?1 AND day >= ?2 ORDER BY day",
    )?;
    let rows = q.query_map(params![patient_id, from_day], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Enrolled patients whose tier was never computed or computed before
/// `before` (ms), oldest first.
pub fn due(conn: &Connection, before: i64, limit: usize) -> Result<Vec<String>, StoreError> {
    let mut q = conn.prepare_cached(
        "SELECT p.patient_id FROM patients p LEFT JOIN risk_tiers r ON r.patient_id = p.patient_id
         WHERE r.patient_id IS NULL OR r.computed_at < ?1
         ORDER BY COALESCE(r.computed_at, 0), p.patient_id LIMIT ?2",
    )?;
    let rows = q.query_map(
        params![before, i64::try_from(limit).unwrap_or(i64::MAX)],
        |r| r.get(0),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// An alert as the tier rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertFactRow {
    /// Alert id.
    pub alert_id: String,
    /// Rule.
    pub rule_id: String,
    /// Severity name.
    pub severity: String,
    /// Status (`firing`, `acknowledged`, `resolved`).
    pub status: String,
    /// Fired (ms).
    pub fired_at: i64,
}

/// A patient's alerts open now or fired after `since` (ms).
pub fn alert_facts(
    conn: &Connection,
    patient_id: &str,
    since: i64,
) -> Result<Vec<AlertFactRow>, StoreError> {
    let mut q = conn.prepare_cached(
        "SELECT alert_id, rule_id, severity, status, fired_at FROM alerts
         WHERE patient_id = ?1 AND fired_at > ?2
         UNION
         SELECT alert_id, rule_id, severity, status, fired_at FROM alerts
         WHERE patient_id = ?1 AND status != 'resolved'
         ORDER BY fired_at, alert_id",
    )?;
    let rows = q.query_map(params![patient_id, since], |r| {
        Ok(AlertFactRow {
            alert_id: r.get(0)?,
            rule_id: r.get(1)?,
            severity: r.get(2)?,
            status: r.get(3)?,
            fired_at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A follow-up task not done, as the tier rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFactRow {
    /// Task id.
    pub task_id: String,
    /// Priority (severity name).
    pub priority: String,
    /// A deadline was missed by `now`.
    pub overdue: bool,
}

/// A patient's tasks not done; overdue when a deadline passed by `now` (ms).
pub fn task_facts(
    conn: &Connection,
    patient_id: &str,
    now: i64,
) -> Result<Vec<TaskFactRow>, StoreError> {
    let mut q = conn.prepare_cached(
        "SELECT task_id, priority,
                overdue_at IS NOT NULL OR due_at < ?2 OR (status = 'open' AND claim_due_at IS NOT NULL AND claim_due_at < ?2)
         FROM tasks WHERE patient_id = ?1 AND status != 'done' ORDER BY opened_at, task_id",
    )?;
    let rows = q.query_map(params![patient_id, now], |r| {
        Ok(TaskFactRow {
            task_id: r.get(0)?,
            priority: r.get(1)?,
            overdue: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
