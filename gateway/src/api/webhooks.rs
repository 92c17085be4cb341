//! Webhook endpoints and their delivery log (operator data: admin and
//! read-only tokens). Secrets are never returned, only how many are active.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::auth::Principal;
use super::page::{self, time, time_opt, Filter, Page};
use super::problem::{ApiError, Json, Path, Query};
use super::ApiState;

/// An endpoint as listed.
#[derive(Debug, Serialize)]
pub struct Endpoint {
    endpoint_id: String,
    url: String,
    description: String,
    active_secrets: usize,
    enabled: bool,
    disabled_reason: Option<String>,
    filter: serde_json::Value,
    origin: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// `GET /api/v1/webhooks`.
pub async fn list(
    State(st): State<Arc<ApiState>>,
    p: Principal,
) -> Result<Json<Vec<Endpoint>>, ApiError> {
    p.require_operator_read()?;
    st.db
        .run(|s| {
            let mut stmt = s.conn().prepare(
                "SELECT endpoint_id, url, description, secrets, enabled, disabled_reason, filter, origin, created_at, updated_at
                 FROM webhook_endpoints ORDER BY endpoint_id",
            )?;
            let rows = stmt.query_map([], |r| {
                let secrets: Vec<String> =
                    serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default();
                Ok(Endpoint {
                    endpoint_id: r.get(0)?,
                    url: r.get(1)?,
                    description: r.get(2)?,
                    active_secrets: secrets.len(),
                    enabled: r.get::<_, i64>(4)? != 0,
                    disabled_reason: r.get(5)?,
                    filter: serde_json::from_str(&r.get::<_, String>(6)?)
                        .unwrap_or(serde_json::Value::Null),
                    origin: r.get(7)?,
                    created_at: time(r.get(8)?),
                    updated_at: time(r.get(9)?),
                })
            })?;
            Ok(Json(rows.collect::<Result<Vec<_>, _>>()?))
        })
        .await
}

/// One delivery (event × endpoint) with its attempts.
#[derive(Debug, Serialize)]
pub struct Delivery {
    delivery_id: i64,
    event_id: String,
    event_type: String,
    alert_id: Option<String>,
    status: String,
    attempts: i64,
    next_attempt_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_status: Option<i64>,
    last_error: Option<String>,
    attempt_log: Vec<Attempt>,
}

/// One attempt.
#[derive(Debug, Serialize)]
pub struct Attempt {
    attempt: i64,
    at: DateTime<Utc>,
    http_status: Option<i64>,
    latency_ms: i64,
    error: Option<String>,
}

/// `GET /api/v1/webhooks/{endpoint_id}/deliveries` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// `pending` | `delivered` | `failed` | `dead`.
    status: Option<String>,
    /// From `next_cursor`.
    cursor: Option<String>,
    /// Page size.
    limit: Option<usize>,
}

/// `GET /api/v1/webhooks/{endpoint_id}/deliveries`: the delivery log, newest first.
pub async fn deliveries(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(endpoint_id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Json<Page<Delivery>>, ApiError> {
    p.require_operator_read()?;
    let limit = page::limit(&st.cfg, q.limit)?;
    let mut f = Filter::default();
    f.add("d.endpoint_id = ?", endpoint_id.clone());
    if let Some(s) = q.status {
        if !matches!(s.as_str(), "pending" | "delivered" | "failed" | "dead") {
            return Err(ApiError::BadRequest(
                "status: one of pending, delivered, failed, dead".into(),
            ));
        }
        f.add("d.status = ?", s);
    }
    if let Some(c) = &q.cursor {
        let id: i64 = page::decode_cursor(c)?
            .parse()
            .map_err(|_| ApiError::BadRequest("invalid cursor".into()))?;
        f.add("d.delivery_id < ?", id);
    }
    st.db
        .run(move |s| {
            let c = s.conn();
            let exists: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE endpoint_id = ?1)",
                [&endpoint_id],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(ApiError::NotFound("webhook endpoint"));
            }
            let sql = format!(
                "SELECT d.delivery_id, o.event_id, o.event_type, o.alert_id, d.status, d.attempts, d.next_attempt_at,
                        d.created_at, d.updated_at, d.last_status, d.last_error
                 FROM deliveries d JOIN outbox o ON o.seq = d.event_seq {}
                 ORDER BY d.delivery_id DESC LIMIT {}",
                f.sql(),
                limit + 1
            );
            let mut stmt = c.prepare(&sql)?;
            let mut rows = stmt
                .query_map(rusqlite::params_from_iter(f.params.iter()), |r| {
                    let status: String = r.get(4)?;
                    let next: i64 = r.get(6)?;
                    Ok(Delivery {
                        delivery_id: r.get(0)?,
                        event_id: r.get(1)?,
                        event_type: r.get(2)?,
                        alert_id: r.get(3)?,
                        next_attempt_at: time_opt(
                            matches!(status.as_str(), "pending" | "failed").then_some(next),
                        ),
                        status,
                        attempts: r.get(5)?,
                        created_at: time(r.get(7)?),
                        updated_at: time(r.get(8)?),
                        last_status: r.get(9)?,
                        last_error: r.get(10)?,
                        attempt_log: Vec::new(),
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut att = c.prepare_cached(
                "SELECT attempt, at, http_status, latency_ms, error FROM delivery_attempts WHERE delivery_id = ?1 ORDER BY attempt",
            )?;
            for d in rows.iter_mut().take(limit) {
                d.attempt_log = att
                    .query_map([d.delivery_id], |r| {
                        Ok(Attempt {
                            attempt: r.get(0)?,
                            at: time(r.get(1)?),
                            http_status: r.get(2)?,
                            latency_ms: r.get(3)?,
                            error: r.get(4)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
            }
            Ok(Json(Page::new(rows, limit, |d| d.delivery_id.to_string())))
        })
        .await
}
