//! Reports: `GET /api/v1/reports/alert-burden` and `GET /api/v1/reports/rpm`.
//!
//! The alert-burden report ([`crate::rules::burden`]) and the RPM program
//! report ([`crate::care::report`]) over HTTP, scoped
//! like every other route: a care-team token sees its own teams only (and
//! asking for another team is answered with an empty report, exactly as
//! for a team that does not exist); admin and read-only tokens see every
//! team, patients without a team included.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

use super::auth::Principal;
use super::problem::{ApiError, Json, Query};
use super::ApiState;
use crate::care::report::{self, ReportError, RpmQuery};
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

/// `GET /api/v1/reports/rpm` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpmParams {
    /// The calendar month, `YYYY-MM`.
    period: String,
    /// Only this care team.
    care_team: Option<String>,
    /// `json` (default) or `csv` (as `Accept: text/csv`).
    format: Option<String>,
}

/// `GET /api/v1/reports/rpm`: the RPM program report of a month
/// ([`crate::care::report`]), JSON, or CSV with `Accept: text/csv` or
/// `format=csv`. Scoped like the alert-burden report.
pub async fn rpm(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    headers: HeaderMap,
    Query(q): Query<RpmParams>,
) -> Result<Response, ApiError> {
    p.require_read()?;
    let month = report::parse_month(&q.period).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let csv = match q.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        Some(_) => return Err(ApiError::BadRequest("format: csv or json".into())),
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|m| m.split(';').next().is_some_and(|m| m.trim() == "text/csv"))
            }),
    };
    let query = RpmQuery {
        month,
        care_team: q.care_team,
        scope: p.scope().map(<[String]>::to_vec),
        now: chrono::Utc::now(),
    };
    let care = st.care.clone();
    let r = st
        .db
        .run(move |s| {
            report::rpm_report(s.conn(), &care, &query).map_err(|e| match e {
                ReportError::BadMonth(_) => ApiError::BadRequest(e.to_string()),
                ReportError::Store(s) => s.into(),
            })
        })
        .await?;
    if csv {
        Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            report::to_csv(&r),
        )
            .into_response())
    } else {
        Ok(Json(r).into_response())
    }
}
