//! Webhook endpoints and their delivery log: thin handlers over
//! `delivery::endpoints` (the same functions as `rpm-gateway webhooks`).
//! Reads: admin and read-only tokens; changes: admin. Secrets are shown
//! once, when created or rotated, and never listed.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::auth::Principal;
use super::page::{self, Page};
use super::problem::{optional_json, ApiError, Json, Path, Query};
use super::ApiState;
use crate::delivery::endpoints::{
    self, AttemptRecord, DeliveryQuery, DeliveryRecord, Endpoint, EndpointChange, EndpointError,
    NewEndpoint, Redrive,
};
use crate::delivery::route::Filter;
use crate::delivery::ssrf;

/// The endpoint `id`, or a 404.
fn endpoint(conn: &rusqlite::Connection, id: &str) -> Result<Endpoint, ApiError> {
    endpoints::get(conn, id)
        .map_err(endpoint_error)?
        .ok_or(ApiError::NotFound("webhook endpoint"))
}

pub fn endpoint_error(e: EndpointError) -> ApiError {
    match e {
        EndpointError::NotFound(_) => ApiError::NotFound("webhook endpoint"),
        EndpointError::Exists(_) => ApiError::Conflict(e.to_string()),
        EndpointError::Invalid { .. } => ApiError::Unprocessable(e.to_string()),
        EndpointError::Store(s) => s.into(),
        EndpointError::Secrets(e) => {
            tracing::error!(error = %e, "api: webhook secrets");
            ApiError::Internal
        }
    }
}

/// `GET /api/v1/webhooks`.
pub async fn list(
    State(st): State<Arc<ApiState>>,
    p: Principal,
) -> Result<Json<Vec<Endpoint>>, ApiError> {
    p.require_operator_read()?;
    st.db
        .run(|s| endpoints::list(s.conn()).map(Json).map_err(endpoint_error))
        .await
}

/// `GET /api/v1/webhooks/{endpoint_id}`.
pub async fn get(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, ApiError> {
    p.require_operator_read()?;
    st.db.run(move |s| endpoint(s.conn(), &id).map(Json)).await
}

/// `POST /api/v1/webhooks` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Create {
    endpoint_id: String,
    url: String,
    #[serde(default)]
    description: String,
    /// `whsec_...`; generated when absent.
    secret: Option<String>,
    #[serde(default)]
    filter: Filter,
    #[serde(default = "yes")]
    enabled: bool,
    /// Lift the SSRF guard for this endpoint.
    #[serde(default)]
    allow_private_network: bool,
}

fn yes() -> bool {
    true
}

/// An endpoint with its secret (shown once).
#[derive(Debug, Serialize)]
pub struct WithSecret {
    endpoint: Endpoint,
    secret: String,
}

/// `POST /api/v1/webhooks` (admin): 201 with the secret, shown only now.
pub async fn create(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Json(body): Json<Create>,
) -> Result<(StatusCode, Json<WithSecret>), ApiError> {
    p.require_admin()?;
    let policy = st.url_policy;
    guard_url(
        &body.url,
        body.allow_private_network || policy.allow_private_network,
    )
    .await?;
    let new = NewEndpoint {
        endpoint_id: body.endpoint_id,
        url: body.url,
        description: body.description,
        secret: body.secret,
        filter: body.filter,
        enabled: body.enabled,
        allow_private_network: body.allow_private_network,
    };
    let (endpoint, secret) = st
        .db
        .run(move |s| endpoints::create(s.conn(), &new, "api", policy).map_err(endpoint_error))
        .await?;
    Ok((StatusCode::CREATED, Json(WithSecret { endpoint, secret })))
}

/// `PATCH /api/v1/webhooks/{endpoint_id}` body: fields given replace.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    url: Option<String>,
    description: Option<String>,
    filter: Option<Filter>,
    enabled: Option<bool>,
    allow_private_network: Option<bool>,
}

/// The SSRF guard on a URL given to the API: its literal address, or what
/// its name resolves to now (the dispatcher checks again at every
/// connection). 422 when refused.
async fn guard_url(url: &str, allowed: bool) -> Result<(), ApiError> {
    if allowed {
        return Ok(());
    }
    let Ok(u) = url::Url::parse(url) else {
        return Ok(()); // the store-side validation words the error
    };
    ssrf::check_url(&u, std::time::Duration::from_secs(2))
        .await
        .map_err(|e| ApiError::Unprocessable(format!("url: {e}")))
}

/// `PATCH /api/v1/webhooks/{endpoint_id}` (admin).
pub async fn update(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(id): Path<String>,
    Json(body): Json<Update>,
) -> Result<Json<Endpoint>, ApiError> {
    p.require_admin()?;
    let policy = st.url_policy;
    if let Some(url) = &body.url {
        let allowed = match body.allow_private_network {
            Some(a) => a,
            None => {
                let id = id.clone();
                st.db
                    .run(move |s| endpoint(s.conn(), &id))
                    .await?
                    .allow_private_network
            }
        };
        guard_url(url, allowed || policy.allow_private_network).await?;
    }
    let actor = format!("api {}", p.token_id);
    let change = EndpointChange {
        url: body.url,
        description: body.description,
        filter: body.filter,
        enabled: body.enabled,
        allow_private_network: body.allow_private_network,
    };
    st.db
        .run(move |s| {
            endpoints::update(s.conn(), &id, &change, &actor, policy)
                .map(Json)
                .map_err(endpoint_error)
        })
        .await
}

/// `POST /api/v1/webhooks/{endpoint_id}/rotate-secret` body.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// The new `whsec_` secret; generated when absent.
    secret: Option<String>,
}

/// `POST /api/v1/webhooks/{endpoint_id}/rotate-secret` (admin): the new
/// secret signs alongside the previous one until `retire-secrets`.
pub async fn rotate_secret(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WithSecret>, ApiError> {
    p.require_admin()?;
    let body: Rotate = optional_json(&headers, &body)?;
    st.db
        .run(move |s| {
            let secret =
                endpoints::rotate_secret(s.conn(), &id, body.secret).map_err(endpoint_error)?;
            let endpoint = endpoint(s.conn(), &id)?;
            Ok(Json(WithSecret { endpoint, secret }))
        })
        .await
}

/// `POST /api/v1/webhooks/{endpoint_id}/retire-secrets` (admin): ends a
/// rotation; only the newest secret stays.
pub async fn retire_secrets(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, ApiError> {
    p.require_admin()?;
    st.db
        .run(move |s| {
            endpoints::retire_secrets(s.conn(), &id).map_err(endpoint_error)?;
            endpoint(s.conn(), &id).map(Json)
        })
        .await
}

/// `POST /api/v1/webhooks/{endpoint_id}/disable` and `/enable` (admin).
async fn set_enabled(
    st: Arc<ApiState>,
    p: Principal,
    id: String,
    enabled: bool,
) -> Result<Json<Endpoint>, ApiError> {
    p.require_admin()?;
    let reason = format!("disabled by api {}", p.token_id);
    st.db
        .run(move |s| {
            endpoints::set_enabled(s.conn(), &id, enabled, &reason).map_err(endpoint_error)?;
            endpoint(s.conn(), &id).map(Json)
        })
        .await
}

/// `POST /api/v1/webhooks/{endpoint_id}/disable` (admin): deliveries wait.
pub async fn disable(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, ApiError> {
    set_enabled(st, p, id, false).await
}

/// `POST /api/v1/webhooks/{endpoint_id}/enable` (admin): waiting deliveries resume.
pub async fn enable(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, ApiError> {
    set_enabled(st, p, id, true).await
}

/// One delivery with its attempts.
#[derive(Debug, Serialize)]
pub struct Delivery {
    #[serde(flatten)]
    delivery: DeliveryRecord,
    attempt_log: Vec<AttemptRecord>,
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

/// `GET /api/v1/webhooks/{endpoint_id}/deliveries`: the delivery log,
/// newest first, with every attempt.
pub async fn deliveries(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(endpoint_id): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Json<Page<Delivery>>, ApiError> {
    p.require_operator_read()?;
    let limit = page::limit(&st.cfg, q.limit)?;
    if let Some(s) = &q.status {
        if !matches!(s.as_str(), "pending" | "delivered" | "failed" | "dead") {
            return Err(ApiError::BadRequest(
                "status: one of pending, delivered, failed, dead".into(),
            ));
        }
    }
    let before = match &q.cursor {
        Some(c) => Some(
            page::decode_cursor(c)?
                .parse::<i64>()
                .map_err(|_| ApiError::BadRequest("invalid cursor".into()))?,
        ),
        None => None,
    };
    st.db
        .run(move |s| {
            let c = s.conn();
            endpoint(c, &endpoint_id)?;
            let rows = endpoints::deliveries(
                c,
                &DeliveryQuery {
                    endpoint_id: Some(&endpoint_id),
                    status: q.status.as_deref(),
                    before,
                    limit: limit + 1,
                },
            )
            .map_err(endpoint_error)?;
            let mut out = Vec::with_capacity(rows.len());
            for d in rows {
                let attempt_log = endpoints::attempts(c, d.delivery_id).map_err(endpoint_error)?;
                out.push(Delivery {
                    delivery: d,
                    attempt_log,
                });
            }
            Ok(Json(Page::new(out, limit, |d| {
                d.delivery.delivery_id.to_string()
            })))
        })
        .await
}

/// How many deliveries went back in the queue.
#[derive(Debug, Serialize)]
pub struct Redriven {
    redriven: usize,
}

/// `POST /api/v1/webhooks/{endpoint_id}/redrive` (admin): every dead or
/// failed delivery of the endpoint gets a fresh retry round (same event,
/// same `webhook-id`).
pub async fn redrive_endpoint(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Redriven>, ApiError> {
    redrive_endpoint_as(&st, p, id)
        .await
        .map(|n| Json(Redriven { redriven: n }))
}

/// Gives every dead or failed delivery of an endpoint a fresh retry round,
/// as `p` (admin): the API's and the console's one way to do it. Returns
/// how many.
pub async fn redrive_endpoint_as(
    st: &ApiState,
    p: Principal,
    id: String,
) -> Result<usize, ApiError> {
    p.require_admin()?;
    st.db
        .run(move |s| {
            endpoint(s.conn(), &id)?;
            endpoints::redrive(s.conn(), Redrive::Endpoint(&id)).map_err(endpoint_error)
        })
        .await
}

/// `POST /api/v1/deliveries/{delivery_id}/redrive` (admin): one dead or
/// failed delivery; 409 when it is neither.
pub async fn redrive_delivery(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(id): Path<i64>,
) -> Result<Json<Redriven>, ApiError> {
    p.require_admin()?;
    st.db
        .run(move |s| {
            let status = crate::store::webhooks::delivery_status(s.conn(), id)?;
            match status.as_deref() {
                None => Err(ApiError::NotFound("delivery")),
                Some("dead" | "failed") => {
                    let n = endpoints::redrive(s.conn(), Redrive::Delivery(id))
                        .map_err(endpoint_error)?;
                    Ok(Json(Redriven { redriven: n }))
                }
                Some(other) => Err(ApiError::Conflict(format!(
                    "delivery is {other}; only dead or failed deliveries are re-driven"
                ))),
            }
        })
        .await
}
