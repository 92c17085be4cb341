//! Care time over HTTP: `POST` and `GET /api/v1/patients/{patient_id}/care-time`.
//!
//! Logging is a clinical write (admin and care-team tokens, a care team
//! only for its own patients: 404 otherwise, as for every patient route);
//! reading needs a reading role. The rules of an entry (durations,
//! corrections that supersede, idempotent retries) are
//! [`crate::care::time_log`]'s; the entry and its audit row commit
//! together, and the request is audited like every other by the guard.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use std::sync::Arc;

use super::audit::AuditPatient;
use super::auth::Principal;
use super::page::{self, Page};
use super::patients::check_patient_id;
use super::problem::{ApiError, Json, Path, Query};
use super::ApiState;
use crate::care::time_log::{self, CareTimeEntry, NewEntry, TimeLogError};

/// The header that makes a retried `POST` safe.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

fn time_log_error(e: TimeLogError) -> ApiError {
    match e {
        TimeLogError::Invalid(m) => ApiError::BadRequest(m),
        TimeLogError::UnknownPatient(_) => ApiError::NotFound("patient"),
        TimeLogError::UnknownCorrected(_) => ApiError::Unprocessable(e.to_string()),
        TimeLogError::AlreadyCorrected { .. } | TimeLogError::IdTaken(_) => {
            ApiError::Conflict(e.to_string())
        }
        TimeLogError::Store(s) => s.into(),
    }
}

/// `POST /api/v1/patients/{patient_id}/care-time`: 201 with the entry, or
/// 200 with the stored one when the request is a retry.
pub async fn log(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(patient_id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<NewEntry>,
) -> Result<(StatusCode, AuditPatient, Json<CareTimeEntry>), ApiError> {
    p.require_clinical_write()?;
    check_patient_id(&patient_id)?;
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::BadRequest("Idempotency-Key must be ASCII".into()))?
                .to_string(),
        ),
    };
    let logged = log_as(&st, p, patient_id.clone(), body, key).await?;
    let status = if logged.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, AuditPatient(patient_id), Json(logged.entry)))
}

/// Logs care time on a patient as `p` (admin, the patient's care team):
/// the API's and the console's one way to do it.
pub async fn log_as(
    st: &ApiState,
    p: Principal,
    patient_id: String,
    body: NewEntry,
    key: Option<String>,
) -> Result<time_log::Logged, ApiError> {
    p.require_clinical_write()?;
    check_patient_id(&patient_id)?;
    st.db
        .run(move |s| {
            p.check_patient(s.conn(), &patient_id, "patient")?;
            let tx = s.transaction()?;
            let logged = time_log::log(
                &tx,
                &patient_id,
                &body,
                key.as_deref(),
                &p.token_id,
                201,
                chrono::Utc::now(),
            )
            .map_err(time_log_error)?;
            tx.commit()?;
            Ok(logged)
        })
        .await
}

/// `GET /api/v1/patients/{patient_id}/care-time` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CareTimeQuery {
    /// From `next_cursor`.
    cursor: Option<String>,
    /// Page size.
    limit: Option<usize>,
}

/// `GET /api/v1/patients/{patient_id}/care-time`: every entry, superseded
/// ones included (marked), newest first by time performed.
pub async fn list(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(patient_id): Path<String>,
    Query(q): Query<CareTimeQuery>,
) -> Result<(AuditPatient, Json<Page<CareTimeEntry>>), ApiError> {
    p.require_read()?;
    let limit = page::limit(&st.cfg, q.limit)?;
    let before = q.cursor.as_deref().map(page::decode_pair).transpose()?;
    let id = patient_id.clone();
    let rows = st
        .db
        .run(move |s| {
            p.check_patient(s.conn(), &id, "patient")?;
            if crate::store::patients::get(s.conn(), &id)?.is_none() {
                return Err(ApiError::NotFound("patient"));
            }
            Ok(time_log::list(s.conn(), &id, before, limit + 1)?)
        })
        .await?;
    let page = Page::new(rows, limit, |e| format!("{}.{}", e.key.0, e.key.1));
    Ok((AuditPatient(patient_id), Json(page)))
}
