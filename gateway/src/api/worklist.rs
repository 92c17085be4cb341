//! `GET /api/v1/worklist`: a care team's patients ranked by who needs
//! attention now (see `care/worklist.rs` for the rank key), keyset-paged.
//!
//! A care-team token sees its own teams' patients only: without
//! `care_team` all of its teams, with one of its teams that team, with
//! another team nothing. Admin and read-only tokens see the team asked for,
//! or every patient.

use axum::extract::State;
use chrono::Utc;
use serde::Deserialize;
use std::sync::Arc;

use super::auth::Principal;
use super::page::{self, Page};
use super::problem::{ApiError, Json, Query};
use super::ApiState;
use crate::care::worklist::{self, WorklistItem};

/// `GET /api/v1/worklist` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorklistQuery {
    /// Only this care team.
    care_team: Option<String>,
    /// From `next_cursor`.
    cursor: Option<String>,
    /// Page size.
    limit: Option<usize>,
}

/// `GET /api/v1/worklist`.
pub async fn list(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Query(q): Query<WorklistQuery>,
) -> Result<Json<Page<WorklistItem>>, ApiError> {
    p.require_read()?;
    let limit = page::limit(&st.cfg, q.limit)?;
    let after = match q.cursor.as_deref() {
        Some(c) => Some(
            worklist::parse_cursor_key(&page::decode_cursor(c)?)
                .ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))?,
        ),
        None => None,
    };
    let teams: Option<Vec<String>> = match (p.scope(), q.care_team) {
        (None, None) => None,
        (None, Some(t)) => Some(vec![t]),
        (Some(mine), None) => Some(mine.to_vec()),
        (Some(mine), Some(t)) => Some(mine.iter().filter(|m| **m == t).cloned().collect()),
    };
    let cfg = st.care.worklist.clone();
    let rows = st
        .db
        .run(move |s| {
            Ok(worklist::page(
                s.conn(),
                &cfg,
                teams.as_deref(),
                Utc::now(),
                after,
                limit + 1,
            )?)
        })
        .await?;
    Ok(Json(Page::new(rows, limit, WorklistItem::cursor_key)))
}
