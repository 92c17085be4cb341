//! The audit log: who read or changed what, and with what outcome.
//!
//! One row per authenticated (or refused) API request: the token id, the
//! route template (`GET /api/v1/patients/{patient_id}`), the concrete
//! resource, the patient concerned when there is one, and the HTTP status.
//! Values never go here; the store itself is the place for PHI.

use axum::response::{IntoResponseParts, ResponseParts};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::auth::Principal;
use super::page::Page;
use super::problem::{ApiError, Json, Query};
use super::ApiState;
use crate::store::now_ms;

/// Set by a handler on its response: the patient the request concerned.
#[derive(Debug, Clone)]
pub struct AuditPatient(pub String);

impl IntoResponseParts for AuditPatient {
    type Error = std::convert::Infallible;
    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        res.extensions_mut().insert(self);
        Ok(res)
    }
}

/// Writes one audit record.
pub async fn record(
    st: &Arc<ApiState>,
    actor: &str,
    action: &str,
    resource: &str,
    patient: Option<String>,
    outcome: u16,
) -> Result<(), ApiError> {
    let (actor, action, resource) = (actor.to_string(), action.to_string(), resource.to_string());
    let r = st
        .db
        .run(move |s| {
            s.conn().execute(
                "INSERT INTO audit_log (at, actor, action, resource, patient_id, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![now_ms(), actor, action, resource, patient, outcome],
            )?;
            Ok(())
        })
        .await;
    if let Err(e) = &r {
        tracing::error!(error = %e, "api: audit record not written");
    }
    r
}

/// One audit record as listed.
#[derive(Debug, Serialize)]
pub struct AuditEntry {
    id: i64,
    at: chrono::DateTime<chrono::Utc>,
    actor: String,
    action: String,
    resource: String,
    patient_id: Option<String>,
    outcome: i64,
}

/// `GET /api/v1/audit` filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    actor: Option<String>,
    patient: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/audit`: newest first (admin).
pub async fn list(
    axum::extract::State(st): axum::extract::State<Arc<ApiState>>,
    p: Principal,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    p.require_admin()?;
    let limit = super::page::limit(&st.cfg, q.limit)?;
    let before: i64 = match &q.cursor {
        Some(c) => super::page::decode_cursor(c)?
            .parse()
            .map_err(|_| ApiError::BadRequest("invalid cursor".into()))?,
        None => i64::MAX,
    };
    let rows = st
        .db
        .run(move |s| {
            let mut stmt = s.conn().prepare(
                "SELECT id, at, actor, action, resource, patient_id, outcome FROM audit_log
                 WHERE id < ?1 AND (?2 IS NULL OR actor = ?2) AND (?3 IS NULL OR patient_id = ?3)
                 ORDER BY id DESC LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                rusqlite::params![before, q.actor, q.patient, limit as i64 + 1],
                |r| {
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        at: super::page::time(r.get(1)?),
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        resource: r.get(4)?,
                        patient_id: r.get(5)?,
                        outcome: r.get(6)?,
                    })
                },
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await?;
    Ok(Json(Page::new(rows, limit, |e| e.id.to_string())))
}
