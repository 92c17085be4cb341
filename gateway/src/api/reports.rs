//! Reports: `GET /api/v1/reports/alert-burden`.
//!
//! The alert-burden report ([`crate::rules::burden`]) over HTTP, scoped
//! like every other route: a care-team token sees its own teams only (and
//! asking for another team is answered with an empty report, exactly as
//! for a team that does not exist); admin and read-only tokens see every
//! team, patients without a team included.

use axum::extract::State;
use serde::Deserialize;
use std::sync::Arc;

use super::auth::Principal;
use super::problem::{ApiError, Json, Query};
use super::ApiState;
use crate::rules::burden::{self, BurdenQuery, BurdenReport};

/// `GET /api/v1/reports/alert-burden` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurdenParams {
    /// Start (RFC 3339 or YYYY-MM-DD; default: 30 days before `until`).
    since: Option<String>,
    /// End (RFC 3339 or YYYY-MM-DD; default: now).
    until: Option<String>,
    /// Only this care team.
    care_team: Option<String>,
}

fn bound(name: &str, v: &str) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    burden::parse_bound(v).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{name}: `{v}` is not an RFC 3339 time like 2026-01-31T07:42:10Z or a date like 2026-01-31"
        ))
    })
}

/// `GET /api/v1/reports/alert-burden`.
pub async fn alert_burden(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Query(q): Query<BurdenParams>,
) -> Result<Json<BurdenReport>, ApiError> {
    p.require_read()?;
    let until = match &q.until {
        Some(u) => bound("until", u)?,
        None => chrono::Utc::now(),
    };
    let since = match &q.since {
        Some(s) => bound("since", s)?,
        None => until - chrono::TimeDelta::days(30),
    };
    if since >= until {
        return Err(ApiError::BadRequest("since must be before until".into()));
    }
    let query = BurdenQuery {
        since,
        until,
        care_team: q.care_team,
        scope: p.scope().map(<[String]>::to_vec),
    };
    let report = st
        .db
        .run(move |s| Ok(burden::burden(s.conn(), &query)?))
        .await?;
    Ok(Json(report))
}
