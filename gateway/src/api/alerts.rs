//! Alerts: list and filter, and one alert with its evidence and history.
//! Read straight from the `alerts` and `alert_history` tables (schema v2);
//! care-team tokens see only their teams' patients.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::audit::AuditPatient;
use super::auth::Principal;
use super::page::{self, time, time_opt, Filter, Keyed, Listing, Page};
use super::problem::{ApiError, Json, Path, Query};
use super::ApiState;
use crate::rules::lifecycle::{self, LifecycleError};

/// An alert as the API shows it.
#[derive(Debug, Serialize)]
pub struct Alert {
    alert_id: String,
    patient_id: String,
    care_team: Option<String>,
    rule_id: String,
    rule_version: i64,
    pack: String,
    severity: String,
    status: String,
    message: String,
    limits: serde_json::Value,
    evidence: serde_json::Value,
    late: bool,
    flapping: bool,
    fired_at: DateTime<Utc>,
    measured_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    acknowledged_by: Option<String>,
    acknowledged_at: Option<DateTime<Utc>>,
    ack_note: Option<String>,
    snooze_until: Option<DateTime<Utc>>,
    resolved_at: Option<DateTime<Utc>>,
    resolved_by: Option<String>,
}

const COLUMNS: &str = "a.alert_id, a.patient_id, p.care_team, a.rule_id, a.rule_version, a.pack, a.severity, a.status, a.message,
     a.limits, a.evidence, a.late, a.flapping, a.fired_at, a.measured_at, a.updated_at, a.acknowledged_by,
     a.acknowledged_at, a.ack_note, a.snooze_until, a.resolved_at, a.resolved_by";

fn json(s: String) -> serde_json::Value {
    serde_json::from_str(&s).unwrap_or(serde_json::Value::Null)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Alert> {
    Ok(Alert {
        alert_id: r.get(0)?,
        patient_id: r.get(1)?,
        care_team: r.get(2)?,
        rule_id: r.get(3)?,
        rule_version: r.get(4)?,
        pack: r.get(5)?,
        severity: r.get(6)?,
        status: r.get(7)?,
        message: r.get(8)?,
        limits: json(r.get(9)?),
        evidence: json(r.get(10)?),
        late: r.get::<_, i64>(11)? != 0,
        flapping: r.get::<_, i64>(12)? != 0,
        fired_at: time(r.get(13)?),
        measured_at: time_opt(r.get(14)?),
        updated_at: time(r.get(15)?),
        acknowledged_by: r.get(16)?,
        acknowledged_at: time_opt(r.get(17)?),
        ack_note: r.get(18)?,
        snooze_until: time_opt(r.get(19)?),
        resolved_at: time_opt(r.get(20)?),
        resolved_by: r.get(21)?,
    })
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
    /// Patient id.
    patient: Option<String>,
    /// Care team.
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
    let mut f = Filter::default();
    match q.status.as_deref() {
        None => {}
        Some("open") => f.add("a.status != ?", "resolved".to_string()),
        Some(s @ ("firing" | "acknowledged" | "resolved")) => f.add("a.status = ?", s.to_string()),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "status: one of firing, acknowledged, resolved, open".into(),
            ))
        }
    }
    match q.severity.as_deref() {
        None => {}
        Some(s @ ("info" | "warning" | "urgent" | "critical")) => {
            f.add("a.severity = ?", s.to_string())
        }
        Some(_) => {
            return Err(ApiError::BadRequest(
                "severity: one of info, warning, urgent, critical".into(),
            ))
        }
    }
    if let Some(t) = &q.care_team {
        f.add("p.care_team = ?", t.clone());
    }
    if let Some(c) = &q.cursor {
        let key = page::decode_cursor(c)?;
        let (t, id) = key
            .split_once('.')
            .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_string())))
            .ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))?;
        f.add2("(a.fired_at, a.alert_id) < (?a, ?b)", t, id);
    }
    let head =
        format!("{COLUMNS} FROM alerts a LEFT JOIN patients p ON p.patient_id = a.patient_id");
    Listing::new(f, head, "a.fired_at DESC, a.alert_id DESC", limit)
        .scoped_page(&st.db, p, q.patient, "a.patient_id", row)
        .await
}

/// One transition of an alert.
#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    at: DateTime<Utc>,
    kind: String,
    notified: bool,
    actor: Option<String>,
    detail: serde_json::Value,
}

/// An alert with its history.
#[derive(Debug, Serialize)]
pub struct AlertDetail {
    #[serde(flatten)]
    alert: Alert,
    history: Vec<HistoryEntry>,
}

/// Reads one alert with its history, if this token may see it.
pub fn load(
    conn: &rusqlite::Connection,
    p: &Principal,
    alert_id: &str,
) -> Result<AlertDetail, ApiError> {
    let alert = conn.query_row(
        &format!(
            "SELECT {COLUMNS} FROM alerts a LEFT JOIN patients p ON p.patient_id = a.patient_id WHERE a.alert_id = ?1"
        ),
        [alert_id],
        row,
    );
    let alert = match alert {
        Err(rusqlite::Error::QueryReturnedNoRows) => return Err(ApiError::NotFound("alert")),
        other => other?,
    };
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
) -> Result<(AuditPatient, Json<AlertDetail>), ApiError>
where
    F: FnOnce(&rusqlite::Transaction<'_>, &str, &str) -> Result<(), LifecycleError>
        + Send
        + 'static,
{
    let detail = st
        .db
        .run(move |s| act_in(s, &p, &alert_id, action, f))
        .await?;
    Ok(audited(detail))
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
    check_note(&body.note)?;
    let snooze = match &body.snooze {
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
    act(&st, p, alert_id, "alert.acknowledge", move |tx, id, by| {
        lifecycle::acknowledge_in(tx, id, by, body.note.as_deref(), snooze, Utc::now()).map(|_| ())
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
    check_note(&body.note)?;
    act(&st, p, alert_id, "alert.resolve", move |tx, id, by| {
        lifecycle::resolve_in(tx, id, by, body.note.as_deref(), Utc::now()).map(|_| ())
    })
    .await
}
