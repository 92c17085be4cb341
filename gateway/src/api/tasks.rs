//! Follow-up tasks: `GET /api/v1/tasks`, one task with its history, and
//! the care manager's actions (claim, release, complete).
//!
//! Scoped like alerts: a care-team token sees and acts on its teams'
//! patients only, and another team's task is a 404, exactly as a task that
//! does not exist. Every action is one transaction with its history row and
//! an audit row naming it; the answer is the task as it then stands.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use std::sync::Arc;

use super::audit::AuditPatient;
use super::auth::Principal;
use super::page::{self, Page};
use super::problem::{ApiError, Json, Path, Query};
use super::ApiState;
use crate::care::tasks::{self as care_tasks, Change, TaskView};
use crate::care::{TaskError, TaskOutcome};
use crate::store::tasks::{self, TaskQuery};

/// `GET /api/v1/tasks` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksQuery {
    /// Only this care team's patients.
    care_team: Option<String>,
    /// Only this patient.
    patient: Option<String>,
    /// `open`, `claimed`, `done`, or a comma-separated list (default: open,claimed).
    status: Option<String>,
    /// Only tasks past a deadline.
    overdue: Option<bool>,
    /// From `next_cursor`.
    cursor: Option<String>,
    /// Page size.
    limit: Option<usize>,
}

/// `GET /api/v1/tasks`: by deadline, soonest first.
pub async fn list(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Query(q): Query<TasksQuery>,
) -> Result<(Option<AuditPatient>, Json<Page<TaskView>>), ApiError> {
    p.require_read()?;
    let limit = page::limit(&st.cfg, q.limit)?;
    let statuses = match q.status.as_deref() {
        None => Vec::new(),
        Some(s) => s
            .split(',')
            .map(|s| match s.trim() {
                v @ ("open" | "claimed" | "done") => Ok(v.to_string()),
                _ => Err(ApiError::BadRequest(
                    "status: open, claimed, done, or a comma-separated list of them".into(),
                )),
            })
            .collect::<Result<_, _>>()?,
    };
    let after = page::decode_time_id(q.cursor.as_deref())?;
    let audit = q.patient.clone().map(AuditPatient);
    let query = TaskQuery {
        scope_json: p.scope_json(),
        care_team: q.care_team,
        patient_id: q.patient,
        statuses,
        overdue: q.overdue.unwrap_or(false),
        after,
        limit: limit + 1,
    };
    let views = st
        .db
        .run(move |s| {
            let rows = tasks::list(s.conn(), &query)?;
            let views = rows
                .into_iter()
                .map(|t| care_tasks::view(s.conn(), t, false))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(views)
        })
        .await?;
    let page = Page::new(views, limit, |t| {
        format!("{}.{}", t.due_at.timestamp_millis(), t.task_id)
    });
    Ok((audit, Json(page)))
}

/// One task with its history, if this token may see it.
pub fn load(
    conn: &rusqlite::Connection,
    p: &Principal,
    task_id: &str,
) -> Result<TaskView, ApiError> {
    let t = tasks::get(conn, task_id)?.ok_or(ApiError::NotFound("task"))?;
    p.check_patient(conn, &t.patient_id, "task")?;
    Ok(care_tasks::view(conn, t, true)?)
}

/// `GET /api/v1/tasks/{task_id}`.
pub async fn get(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(task_id): Path<String>,
) -> Result<(AuditPatient, Json<TaskView>), ApiError> {
    p.require_read()?;
    let view = st.db.run(move |s| load(s.conn(), &p, &task_id)).await?;
    Ok((AuditPatient(view.patient_id.clone()), Json(view)))
}

/// `POST /api/v1/tasks/{task_id}/claim` body.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// Claim on behalf of this care manager (default: the caller).
    assignee: Option<String>,
}

/// `POST /api/v1/tasks/{task_id}/complete` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    /// `reached_patient`, `advice_given`, `medication_changed`,
    /// `clinician_notified`, `emergency_referral`, `could_not_reach`,
    /// `no_action_needed`.
    outcome: String,
    /// Free text.
    note: Option<String>,
}

/// `POST /api/v1/tasks/{task_id}/claim`: 409 when someone else holds it.
pub async fn claim(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(task_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(AuditPatient, Json<TaskView>), ApiError> {
    p.require_clinical_write()?;
    let body: ClaimBody = super::problem::optional_json(&headers, &body)?;
    let view = claim_as(&st, p, task_id, body.assignee).await?;
    Ok((AuditPatient(view.patient_id.clone()), Json(view)))
}

/// `POST /api/v1/tasks/{task_id}/release`: back to the team.
pub async fn release(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(task_id): Path<String>,
) -> Result<(AuditPatient, Json<TaskView>), ApiError> {
    p.require_clinical_write()?;
    let view = act(&st, p, task_id, "task.release", Change::Release).await?;
    Ok((AuditPatient(view.patient_id.clone()), Json(view)))
}

/// `POST /api/v1/tasks/{task_id}/complete`: done, with an outcome.
pub async fn complete(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(task_id): Path<String>,
    Json(body): Json<CompleteBody>,
) -> Result<(AuditPatient, Json<TaskView>), ApiError> {
    p.require_clinical_write()?;
    let view = complete_as(&st, p, task_id, &body.outcome, body.note).await?;
    Ok((AuditPatient(view.patient_id.clone()), Json(view)))
}

/// Completes a task as `p` with an outcome (see [`TaskOutcome`]) and a
/// note: the API's and the console's one way to do it.
pub async fn complete_as(
    st: &Arc<ApiState>,
    p: Principal,
    task_id: String,
    outcome: &str,
    note: Option<String>,
) -> Result<TaskView, ApiError> {
    p.require_clinical_write()?;
    let outcome: TaskOutcome = outcome
        .parse()
        .map_err(|e: String| ApiError::BadRequest(format!("outcome: {e}")))?;
    if note.as_ref().is_some_and(|n| n.len() > 4000) {
        return Err(ApiError::BadRequest("note: at most 4000 bytes".into()));
    }
    act(
        st,
        p,
        task_id,
        "task.complete",
        Change::Complete { outcome, note },
    )
    .await
}

/// Claims a task as `p` (for `assignee`, default `p`): the API's and the
/// console's one way to do it. 409 when someone else holds it.
pub async fn claim_as(
    st: &Arc<ApiState>,
    p: Principal,
    task_id: String,
    assignee: Option<String>,
) -> Result<TaskView, ApiError> {
    p.require_clinical_write()?;
    if assignee
        .as_ref()
        .is_some_and(|a| a.trim().is_empty() || a.len() > 200)
    {
        return Err(ApiError::BadRequest("assignee: 1 to 200 bytes".into()));
    }
    act(st, p, task_id, "task.claim", Change::Claim { assignee }).await
}

/// Who acted, as recorded on the task: the token's name and id.
fn actor(p: &Principal) -> String {
    format!("{} ({})", p.name, p.token_id)
}

async fn act(
    st: &Arc<ApiState>,
    p: Principal,
    task_id: String,
    action: &'static str,
    change: Change,
) -> Result<TaskView, ApiError> {
    let state = st.clone();
    st.db
        .run(move |s| {
            let before = load(s.conn(), &p, &task_id)?;
            let now = state.now(s.conn())?;
            let tx = s.transaction()?;
            care_tasks::change(&tx, &task_id, &actor(&p), change, now).map_err(task_error)?;
            crate::store::audit::append(
                &tx,
                &crate::store::audit::AuditEntry {
                    at: crate::store::now_ms(),
                    actor: p.token_id.clone(),
                    action: action.to_string(),
                    resource: task_id.clone(),
                    patient_id: Some(before.patient_id.clone()),
                    outcome: 200,
                    detail: None,
                },
            )?;
            tx.commit()?;
            load(s.conn(), &p, &task_id)
        })
        .await
}

fn task_error(e: TaskError) -> ApiError {
    match e {
        TaskError::NotFound(_) => ApiError::NotFound("task"),
        TaskError::Conflict(m) => ApiError::Conflict(m),
        TaskError::Store(s) => s.into(),
    }
}
