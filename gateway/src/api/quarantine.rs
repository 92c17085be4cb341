//! Quarantine: inputs that did not become readings, with their reasons, and
//! the re-process action (after a profile was corrected or a device
//! assigned). Operator data (admin and read-only tokens): raw payloads may
//! carry anything, and are not scoped to a care team.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::auth::Principal;
use super::page::{self, Keyed, Page};
use super::problem::{ApiError, Json, Path, Query};
use super::ApiState;
use crate::store::queries::{self, QuarantinePage, QuarantineRow};
use crate::store::registry::ReprocessResult;

/// The list is by entry id; the cursor names it.
impl Keyed for QuarantineRow {
    fn key(&self) -> String {
        self.id.to_string()
    }
}

/// `GET /api/v1/quarantine` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineQuery {
    /// `open` | `reprocessed` | `discarded`.
    pub status: Option<String>,
    /// Reason code.
    pub reason: Option<String>,
    pub device: Option<String>,
    /// `mqtt` | `ble` | `http`.
    pub source: Option<String>,
    /// From `next_cursor`.
    pub cursor: Option<String>,
    /// Page size.
    pub limit: Option<usize>,
}

/// `GET /api/v1/quarantine`: oldest first.
pub async fn list(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Query(q): Query<QuarantineQuery>,
) -> Result<Json<Page<QuarantineRow>>, ApiError> {
    p.require_operator_read()?;
    let limit = page::limit(&st.cfg, q.limit)?;
    if let Some(s) = &q.status {
        if !matches!(s.as_str(), "open" | "reprocessed" | "discarded") {
            return Err(ApiError::BadRequest(
                "status: one of open, reprocessed, discarded".into(),
            ));
        }
    }
    let after = match &q.cursor {
        None => None,
        Some(c) => Some(
            page::decode_cursor(c)?
                .parse::<i64>()
                .map_err(|_| ApiError::BadRequest("invalid cursor".into()))?,
        ),
    };
    let select = QuarantinePage {
        status: q.status,
        reason: q.reason,
        device_id: q.device,
        source: q.source,
        after,
        limit: limit + 1,
    };
    let rows = st
        .db
        .run(move |s| Ok(queries::quarantine_page(s.conn(), &select)?))
        .await?;
    Ok(Json(Page::new(rows, limit, Keyed::key)))
}

/// One quarantined input with its payload.
#[derive(Debug, Serialize)]
pub struct QuarantineDetail {
    #[serde(flatten)]
    pub row: QuarantineRow,
    /// The payload as text, when it is UTF-8.
    pub payload_text: Option<String>,
    /// The payload as hex, when it is not.
    pub payload_hex: Option<String>,
}

/// One quarantined input with its payload (operator roles).
pub fn load(
    conn: &rusqlite::Connection,
    p: &Principal,
    id: i64,
) -> Result<QuarantineDetail, ApiError> {
    p.require_operator_read()?;
    let Some((row, payload)) = queries::quarantine_with_payload(conn, id)? else {
        return Err(ApiError::NotFound("quarantine entry"));
    };
    let (payload_text, payload_hex) = match String::from_utf8(payload) {
        Ok(t) => (Some(t), None),
        Err(e) => (None, Some(hex::encode(e.into_bytes()))),
    };
    Ok(QuarantineDetail {
        row,
        payload_text,
        payload_hex,
    })
}

/// `GET /api/v1/quarantine/{id}`.
pub async fn get(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(id): Path<i64>,
) -> Result<Json<QuarantineDetail>, ApiError> {
    p.require_operator_read()?;
    st.db.run(move |s| load(s.conn(), &p, id).map(Json)).await
}

/// `POST /api/v1/quarantine/{id}/reprocess` (admin): decodes the input
/// again with the current profiles and registry. 200 with what happened;
/// 409 when the entry is not open.
pub async fn reprocess(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(id): Path<i64>,
) -> Result<Json<ReprocessResult>, ApiError> {
    reprocess_as(&st, p, id).await.map(Json)
}

/// Re-processes a quarantined input as `p` (admin): the API's and the
/// console's one way to do it. 409 when the entry is not open.
pub async fn reprocess_as(
    st: &ApiState,
    p: Principal,
    id: i64,
) -> Result<ReprocessResult, ApiError> {
    p.require_admin()?;
    let pipeline = st.pipeline.clone();
    let result = st
        .db
        .run(move |s| Ok(s.reprocess_quarantined(id, |q| pipeline.reprocess(q))?))
        .await?;
    match result {
        None => Err(ApiError::NotFound("quarantine entry")),
        Some(ReprocessResult::NotOpen { status }) => Err(ApiError::Conflict(format!(
            "quarantine entry is {status}, not open"
        ))),
        Some(r) => Ok(r),
    }
}
