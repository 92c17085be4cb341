//! Alerts: list and filter, and one alert with its evidence and history,
//! read through the store's `alerts` module; care-team tokens see only
//! their teams' patients.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::audit::AuditPatient;
use super::auth::Principal;
use super::page::{self, Keyed, Page};
use super::problem::{ApiError, Json, Path, Query};
use super::ApiState;
use crate::rules::lifecycle::{self, LifecycleError};
use crate::store::alerts::{AlertPage, TeamAlert};

/// An alert as the API shows it.
#[derive(Debug, Serialize)]
pub struct Alert {
    pub alert_id: String,
    pub patient_id: String,
    pub care_team: Option<String>,
    pub rule_id: String,
    pub rule_version: i64,
    pub pack: String,
    pub severity: String,
    pub status: String,
    pub message: String,
    pub limits: serde_json::Value,
    pub evidence: serde_json::Value,
    pub late: bool,
    pub flapping: bool,
    pub fired_at: DateTime<Utc>,
    pub measured_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub ack_note: Option<String>,
    pub snooze_until: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
}

impl From<TeamAlert> for Alert {
    fn from(t: TeamAlert) -> Alert {
        let a = t.alert;
        Alert {
            alert_id: a.alert_id,
            patient_id: a.patient_id,
            care_team: t.care_team,
            rule_id: a.rule_id,
            rule_version: i64::from(a.rule_version),
            pack: a.pack,
            severity: a.severity,
            status: a.status,
            message: a.message,
            limits: a.limits,
            evidence: a.evidence,
            late: a.late,
            flapping: a.flapping,
            fired_at: a.fired_at,
            measured_at: a.measured_at,
            updated_at: a.updated_at,
            acknowledged_by: a.acknowledged_by,
            acknowledged_at: a.acknowledged_at,
            ack_note: a.ack_note,
            snooze_until: a.snooze_until,
            resolved_at: a.resolved_at,
            resolved_by: a.resolved_by,
        }
    }
}

/// The list is newest first by (fired_at, alert_id); the cursor names both.
impl Keyed for Alert {
    fn key(&self) -> String {
        format!("{}.{}", self.fired_at.timestamp_millis(), self.alert_id)
    }
}

/// `GET /api/v1/alerts` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    /// `firing` | `acknowledged` | `resolved` | `open` (firing or acknowledged).
    status: Option<String>,
    /// `info` | `warning` | `urgent` | `critical`.
    severity: Option<String>,
    patient: Option<String>,
    care_team: Option<String>,
    /// From `next_cursor`.
    cursor: Option<String>,
    /// Page size.
    limit: Option<usize>,
}

/// `GET /api/v1/alerts`: newest first.
pub async fn list(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Query(q): Query<AlertsQuery>,
) -> Result<(Option<AuditPatient>, Json<Page<Alert>>), ApiError> {
    p.require_read()?;
    let limit = page::limit(&st.cfg, q.limit)?;
    match q.status.as_deref() {
        None | Some("open" | "firing" | "acknowledged" | "resolved") => {}
        Some(_) => {
            return Err(ApiError::BadRequest(
                "status: one of firing, acknowledged, resolved, open".into(),
            ))
        }
    }
    match q.severity.as_deref() {
        None | Some("info" | "warning" | "urgent" | "critical") => {}
        Some(_) => {
            return Err(ApiError::BadRequest(
                "severity: one of info, warning, urgent, critical".into(),
            ))
        }
    }
    let before = page::decode_time_id(q.cursor.as_deref())?;
    let mut select = AlertPage {
        status: q.status,
        severity: q.severity,
        patient_id: q.patient.clone(),
        care_team: q.care_team,
        scope_teams: None,
        before,
        limit: limit + 1,
    };
    page::scoped(&st.db, p, q.patient, limit, move |conn, scope| {
        select.scope_teams = scope;
        let rows = crate::store::alerts::page(conn, &select)?;
        Ok(rows.into_iter().map(Alert::from).collect())
    })
    .await
}

/// One entry of an alert's history: a rule's transition or a person's
/// action.
#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub notified: bool,
    pub actor: Option<String>,
    pub detail: serde_json::Value,
}

/// An alert with its history.
#[derive(Debug, Serialize)]
pub struct AlertDetail {
    #[serde(flatten)]
    pub alert: Alert,
    pub history: Vec<HistoryEntry>,
}

/// Reads one alert with its history, if this token may see it.
pub fn load(
    conn: &rusqlite::Connection,
    p: &Principal,
    alert_id: &str,
) -> Result<AlertDetail, ApiError> {
    let alert: Alert = crate::store::alerts::get_with_team(conn, alert_id)?
        .ok_or(ApiError::NotFound("alert"))?
        .into();
    p.check_patient(conn, &alert.patient_id, "alert")?;
    let history = crate::store::alerts::history(conn, alert_id)?
        .into_iter()
        .map(|h| HistoryEntry {
            at: h.at,
            kind: h.kind,
            notified: h.notified,
            actor: h.actor,
            detail: h.detail,
        })
        .collect();
    Ok(AlertDetail { alert, history })
}

/// `GET /api/v1/alerts/{alert_id}`.
pub async fn get(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(alert_id): Path<String>,
) -> Result<(AuditPatient, Json<AlertDetail>), ApiError> {
    p.require_read()?;
    let detail = st.db.run(move |s| load(s.conn(), &p, &alert_id)).await?;
    Ok(audited(detail))
}

/// The response for one alert, audited under its patient.
fn audited(detail: AlertDetail) -> (AuditPatient, Json<AlertDetail>) {
    (AuditPatient(detail.alert.patient_id.clone()), Json(detail))
}

/// `POST /api/v1/alerts/{alert_id}/acknowledge` body.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// Free-text note.
    note: Option<String>,
    /// Snooze notifications for this long (`30m`, `2h`).
    snooze: Option<String>,
}

/// `POST /api/v1/alerts/{alert_id}/resolve` body.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ResolveBody {
    /// Free-text note.
    note: Option<String>,
}

/// Who acted, as recorded on the alert: the token's name and id.
fn actor(p: &Principal) -> String {
    format!("{} ({})", p.name, p.token_id)
}

fn lifecycle_error(e: LifecycleError) -> ApiError {
    match e {
        LifecycleError::NotFound(_) => ApiError::NotFound("alert"),
        LifecycleError::AlreadyResolved(_) => {
            ApiError::Conflict("the alert is already resolved".into())
        }
        LifecycleError::NoActor | LifecycleError::NegativeSnooze => {
            ApiError::BadRequest(e.to_string())
        }
        LifecycleError::Store(s) => s.into(),
    }
}

fn check_note(note: &Option<String>) -> Result<(), ApiError> {
    if note.as_ref().is_some_and(|n| n.len() > 4000) {
        return Err(ApiError::BadRequest("note: at most 4000 bytes".into()));
    }
    Ok(())
}

/// Runs a lifecycle action on an alert this token may see, in one
/// transaction with an audit row naming the change, and answers with the
/// alert as it is afterwards. `f` gets the transaction, the alert id and
/// the actor.
async fn act<F>(
    st: &ApiState,
    p: Principal,
    alert_id: String,
    action: &'static str,
    f: F,
) -> Result<AlertDetail, ApiError>
where
    F: FnOnce(&rusqlite::Transaction<'_>, &str, &str) -> Result<(), LifecycleError>
        + Send
        + 'static,
{
    st.db
        .run(move |s| act_in(s, &p, &alert_id, action, f))
        .await
}

fn act_in(
    s: &mut crate::store::Store,
    p: &Principal,
    alert_id: &str,
    action: &str,
    f: impl FnOnce(&rusqlite::Transaction<'_>, &str, &str) -> Result<(), LifecycleError>,
) -> Result<AlertDetail, ApiError> {
    let before = load(s.conn(), p, alert_id)?;
    let tx = s.transaction()?;
    f(&tx, alert_id, &actor(p)).map_err(lifecycle_error)?;
    crate::store::audit::append(
        &tx,
        &crate::store::audit::AuditEntry {
            at: crate::store::now_ms(),
            actor: p.token_id.clone(),
            action: action.to_string(),
            resource: alert_id.to_string(),
            patient_id: Some(before.alert.patient_id.clone()),
            outcome: 200,
            detail: None,
        },
    )?;
    tx.commit()?;
    load(s.conn(), p, alert_id)
}

/// `POST /api/v1/alerts/{alert_id}/acknowledge` (admin, care team of the
/// patient): records who and the note, optionally snoozes notifications;
/// the `alert.acknowledged` event is queued in the same transaction.
pub async fn acknowledge(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(alert_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(AuditPatient, Json<AlertDetail>), ApiError> {
    p.require_clinical_write()?;
    let body: AckBody = super::problem::optional_json(&headers, &body)?;
    let detail = acknowledge_as(&st, p, alert_id, body.note, body.snooze).await?;
    Ok(audited(detail))
}

/// Acknowledges an alert as `p` (admin, care team of the patient), with a
/// note and a snooze (`30m`, `2h`; at most 7 days): the API's and the
/// console's one way to do it.
pub async fn acknowledge_as(
    st: &ApiState,
    p: Principal,
    alert_id: String,
    note: Option<String>,
    snooze: Option<String>,
) -> Result<AlertDetail, ApiError> {
    p.require_clinical_write()?;
    check_note(&note)?;
    let snooze = match snooze.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => {
            let d = humantime::parse_duration(text).map_err(|_| {
                ApiError::BadRequest(format!("snooze: `{text}` is not a duration like 30m or 2h"))
            })?;
            if d > std::time::Duration::from_secs(7 * 24 * 3600) {
                return Err(ApiError::BadRequest("snooze: at most 7 days".into()));
            }
            Some(
                chrono::TimeDelta::from_std(d)
                    .map_err(|_| ApiError::BadRequest("snooze: too long".into()))?,
            )
        }
    };
    act(st, p, alert_id, "alert.acknowledge", move |tx, id, by| {
        lifecycle::acknowledge_in(tx, id, by, note.as_deref(), snooze, Utc::now()).map(|_| ())
    })
    .await
}

/// `POST /api/v1/alerts/{alert_id}/resolve` (admin, care team of the
/// patient): resolves by hand; `alert.resolved` is queued in the same
/// transaction. 409 when already resolved.
pub async fn resolve(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(alert_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(AuditPatient, Json<AlertDetail>), ApiError> {
    p.require_clinical_write()?;
    let body: ResolveBody = super::problem::optional_json(&headers, &body)?;
    let detail = resolve_as(&st, p, alert_id, body.note).await?;
    Ok(audited(detail))
}

/// Resolves an alert by hand as `p` (admin, care team of the patient):
/// the API's and the console's one way to do it. 409 when already resolved.
pub async fn resolve_as(
    st: &ApiState,
    p: Principal,
    alert_id: String,
    note: Option<String>,
) -> Result<AlertDetail, ApiError> {
    p.require_clinical_write()?;
    check_note(&note)?;
    act(st, p, alert_id, "alert.resolve", move |tx, id, by| {
        lifecycle::resolve_in(tx, id, by, note.as_deref(), Utc::now()).map(|_| ())
    })
    .await
}
