//! `tasks`, `task_alerts`, `task_history`: follow-up tasks (see
//! `care/tasks.rs` for the lifecycle, `care/escalation.rs` for deadlines).
//!
//! Every function runs on the caller's connection or transaction: opening a
//! task commits with the alert that opened it, an escalation with the
//! outbox events that report it.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, Transaction};

use super::StoreError;

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// `tsk-...` (a valid FHIR id)
    pub task_id: String,
    /// The patient followed up.
    pub patient_id: String,
    /// The patient's care team when the task opened (its calendar applies).
    pub care_team: Option<String>,
    /// The policy's problem (`blood-pressure`, ...).
    pub problem: String,
    /// The care pathway whose policy applied.
    pub pathway: String,
    /// The most severe alert joined.
    pub priority: String,
    /// `open` | `claimed` | `done`.
    pub status: String,
    /// Unix ms.
    pub opened_at: i64,
    /// To be claimed by (Unix ms).
    pub claim_due_at: Option<i64>,
    /// To be done by (Unix ms).
    pub due_at: i64,
    /// The care manager who claimed it.
    pub claimed_by: Option<String>,
    /// When (Unix ms).
    pub claimed_at: Option<i64>,
    /// Who completed it (`gateway` when closed automatically).
    pub done_by: Option<String>,
    /// When (Unix ms).
    pub done_at: Option<i64>,
    /// The outcome recorded at completion.
    pub outcome: Option<String>,
    /// The note recorded at completion.
    pub note: Option<String>,
    /// When a deadline was first missed (Unix ms).
    pub overdue_at: Option<i64>,
    /// Escalation tiers reached.
    pub escalation_tier: u32,
    /// When the escalator looks next (Unix ms).
    pub next_check_at: Option<i64>,
    /// Unix ms.
    pub updated_at: i64,
}

const COLUMNS: &str =
    "task_id, patient_id, care_team, problem, pathway, priority, status, opened_at,
    claim_due_at, due_at, claimed_by, claimed_at, done_by, done_at, outcome, note, overdue_at,
    escalation_tier, next_check_at, updated_at";

fn record(r: &Row<'_>) -> rusqlite::Result<TaskRecord> {
    Ok(TaskRecord {
        task_id: r.get(0)?,
        patient_id: r.get(1)?,
        care_team: r.get(2)?,
        problem: r.get(3)?,
        pathway: r.get(4)?,
        priority: r.get(5)?,
        status: r.get(6)?,
        opened_at: r.get(7)?,
        claim_due_at: r.get(8)?,
        due_at: r.get(9)?,
        claimed_by: r.get(10)?,
        claimed_at: r.get(11)?,
        done_by: r.get(12)?,
        done_at: r.get(13)?,
        outcome: r.get(14)?,
        note: r.get(15)?,
        overdue_at: r.get(16)?,
        escalation_tier: r.get(17)?,
        next_check_at: r.get(18)?,
        updated_at: r.get(19)?,
    })
}

/// A task by id.
pub fn get(conn: &Connection, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM tasks WHERE task_id = ?1"),
            [task_id],
            record,
        )
        .optional()?)
}

/// The patient's task for `problem` that is not done, if any.
pub fn open_for(
    conn: &Connection,
    patient_id: &str,
    problem: &str,
) -> Result<Option<TaskRecord>, StoreError> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM tasks WHERE patient_id = ?1 AND problem = ?2 AND status != 'done'"
            ),
            params![patient_id, problem],
            record,
        )
        .optional()?)
}

/// Inserts a new task (`status` open).
pub fn insert(tx: &Transaction<'_>, t: &TaskRecord) -> Result<(), StoreError> {
    tx.execute(
        &format!("INSERT INTO tasks ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"),
        params![
            t.task_id,
            t.patient_id,
            t.care_team,
            t.problem,
            t.pathway,
            t.priority,
            t.status,
            t.opened_at,
            t.claim_due_at,
            t.due_at,
            t.claimed_by,
            t.claimed_at,
            t.done_by,
            t.done_at,
            t.outcome,
            t.note,
            t.overdue_at,
            t.escalation_tier,
            t.next_check_at,
            t.updated_at
        ],
    )?;
    Ok(())
}

/// Writes every mutable field of `t` (the lifecycle and the escalator
/// compute the new state; this stores it).
pub fn save(tx: &Transaction<'_>, t: &TaskRecord) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE tasks SET priority = ?2, status = ?3, claim_due_at = ?4, due_at = ?5, claimed_by = ?6,
            claimed_at = ?7, done_by = ?8, done_at = ?9, outcome = ?10, note = ?11, overdue_at = ?12,
            escalation_tier = ?13, next_check_at = ?14, updated_at = ?15
         WHERE task_id = ?1",
        params![
            t.task_id,
            t.priority,
            t.status,
            t.claim_due_at,
            t.due_at,
            t.claimed_by,
            t.claimed_at,
            t.done_by,
            t.done_at,
            t.outcome,
            t.note,
            t.overdue_at,
            t.escalation_tier,
            t.next_check_at,
            t.updated_at
        ],
    )?;
    Ok(())
}

/// Links an alert to a task (once).
pub fn join_alert(
    tx: &Transaction<'_>,
    task_id: &str,
    alert_id: &str,
    at: i64,
) -> Result<bool, StoreError> {
    Ok(tx.execute(
        "INSERT INTO task_alerts (task_id, alert_id, joined_at) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
        params![task_id, alert_id, at],
    )? == 1)
}

/// The alerts a task follows up, oldest first.
pub fn alerts_of(conn: &Connection, task_id: &str) -> Result<Vec<String>, StoreError> {
    let mut q = conn.prepare_cached(
        "SELECT alert_id FROM task_alerts WHERE task_id = ?1 ORDER BY joined_at, alert_id",
    )?;
    let rows = q.query_map([task_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The tasks not done that follow up `alert_id`.
pub fn open_tasks_of_alert(
    conn: &Connection,
    alert_id: &str,
) -> Result<Vec<TaskRecord>, StoreError> {
    let mut q = conn.prepare_cached(&format!(
        "SELECT {} FROM tasks t JOIN task_alerts a ON a.task_id = t.task_id
         WHERE a.alert_id = ?1 AND t.status != 'done'",
        COLUMNS
            .split(',')
            .map(|c| format!("t.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    ))?;
    let rows = q.query_map([alert_id], record)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Whether every alert of the task is resolved.
pub fn all_alerts_resolved(conn: &Connection, task_id: &str) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT NOT EXISTS (SELECT 1 FROM task_alerts ta JOIN alerts a ON a.alert_id = ta.alert_id
                            WHERE ta.task_id = ?1 AND a.status != 'resolved')",
        [task_id],
        |r| r.get(0),
    )?)
}

/// Tasks the escalator must look at by `now`, soonest first.
pub fn due_for_check(
    conn: &Connection,
    now: i64,
    limit: usize,
) -> Result<Vec<TaskRecord>, StoreError> {
    let mut q = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE next_check_at IS NOT NULL AND next_check_at <= ?1
         ORDER BY next_check_at, task_id LIMIT ?2"
    ))?;
    let rows = q.query_map(
        params![now, i64::try_from(limit).unwrap_or(i64::MAX)],
        record,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A task history row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskHistoryRow {
    /// Row id (its order).
    pub id: i64,
    /// Unix ms.
    pub at: i64,
    /// `opened` | `joined` | `claimed` | `released` | `done` | `overdue` | `escalated`.
    pub kind: String,
    /// Who, when a person did it.
    pub actor: Option<String>,
    /// JSON detail.
    pub detail: String,
}

/// Appends a history row.
pub fn append_history(
    tx: &Transaction<'_>,
    task_id: &str,
    at: i64,
    kind: &str,
    actor: Option<&str>,
    detail: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO task_history (task_id, at, kind, actor, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![task_id, at, kind, actor, detail],
    )?;
    Ok(())
}

/// A task's history, in order.
pub fn history(conn: &Connection, task_id: &str) -> Result<Vec<TaskHistoryRow>, StoreError> {
    let mut q = conn.prepare_cached(
        "SELECT id, at, kind, actor, detail FROM task_history WHERE task_id = ?1 ORDER BY id",
    )?;
    let rows = q.query_map([task_id], |r| {
        Ok(TaskHistoryRow {
            id: r.get(0)?,
            at: r.get(1)?,
            kind: r.get(2)?,
            actor: r.get(3)?,
            detail: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Which tasks a listing wants.
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    /// Only patients of these care teams (JSON array; a care-team token's
    /// scope). `None`: every patient.
    pub scope_json: Option<String>,
    /// Only patients of this care team.
    pub care_team: Option<String>,
    /// Only this patient.
    pub patient_id: Option<String>,
    /// Only these statuses (empty: open and claimed).
    pub statuses: Vec<String>,
    /// Only tasks whose deadline passed (`overdue_at` set).
    pub overdue: bool,
    /// After this (due_at, task_id): the previous page's last.
    pub after: Option<(i64, String)>,
    /// Most rows.
    pub limit: usize,
}

/// Tasks by deadline (then id), filtered and keyset-paged.
pub fn list(conn: &Connection, q: &TaskQuery) -> Result<Vec<TaskRecord>, StoreError> {
    let mut clauses: Vec<String> = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    let mut add = |sql: &str, v: Vec<Value>| {
        let mut s = sql.to_string();
        for v in v {
            values.push(v);
            s = s.replacen("?#", &format!("?{}", values.len()), 1);
        }
        clauses.push(s);
    };
    if let Some(scope) = &q.scope_json {
        add(
            "patient_id IN (SELECT patient_id FROM patients WHERE care_team IN (SELECT value FROM json_each(?#)))",
            vec![scope.clone().into()],
        );
    }
    if let Some(team) = &q.care_team {
        add(
            "patient_id IN (SELECT patient_id FROM patients WHERE care_team = ?#)",
            vec![team.clone().into()],
        );
    }
    if let Some(p) = &q.patient_id {
        add("patient_id = ?#", vec![p.clone().into()]);
    }
    if q.statuses.is_empty() {
        add("status != 'done'", vec![]);
    } else {
        let list = serde_json::to_string(&q.statuses).unwrap_or_else(|_| "[]".into());
        add(
            "status IN (SELECT value FROM json_each(?#))",
            vec![list.into()],
        );
    }
    if q.overdue {
        add("overdue_at IS NOT NULL", vec![]);
    }
    if let Some((due, id)) = &q.after {
        add(
            "(due_at > ?# OR (due_at = ?# AND task_id > ?#))",
            vec![(*due).into(), (*due).into(), id.clone().into()],
        );
    }
    values.push(i64::try_from(q.limit).unwrap_or(i64::MAX).into());
    let sql = format!(
        "SELECT {COLUMNS} FROM tasks WHERE {} ORDER BY due_at, task_id LIMIT ?{}",
        clauses.join(" AND "),
        values.len()
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(values), record)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
