//! Vendor-cloud integrations: `POST /api/v1/integrations/{name}` receives
//! the pushes of a cellular device cloud (Tenovi, Telli Health, ...) in the
//! vendor's own format and with the vendor's own authentication;
//! `GET /api/v1/integrations` shows each link's health.
//!
//! A push goes the way of every HTTPS ingest: decoded by the integration's
//! profile, scope-checked, submitted to the shared writer and answered only
//! once committed. A JSON array is a batch: each element is decoded (and its
//! bytes kept) on its own. A push naming a device the integration may not
//! push for is refused whole (403) before anything is stored; a push that
//! fails authentication gets 401. Every push, accepted or refused, is
//! audited under `integration:NAME` and counted in the link's health
//! ([`crate::store::integrations`]).

pub mod config;
mod verify;
pub mod watch;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use device_profiles::Source;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::auth::Principal;
use super::ingest::{describe, MeasurementOutcome};
use super::limits::{retry_after, ClientAddr};
use super::problem::{ApiError, Json};
use super::ApiState;
use crate::store::integrations::{self as health, Push};
use crate::store::{Item, Outcome};
use config::IntegrationsConfig;
pub use verify::{Integration, IntegrationError};

/// The audit action of a push.
const PUSH_ACTION: &str = "POST /api/v1/integrations/{name}";

/// The configured integrations with their secrets, read once at start.
#[derive(Default)]
pub struct Integrations {
    by_name: BTreeMap<String, Integration>,
    cfg: IntegrationsConfig,
}

impl Integrations {
    /// Resolves every integration's secret.
    pub fn load(cfg: &IntegrationsConfig) -> Result<Integrations, IntegrationError> {
        let mut by_name = BTreeMap::new();
        for (name, c) in cfg {
            by_name.insert(name.clone(), Integration::new(name, c)?);
        }
        Ok(Integrations {
            by_name,
            cfg: cfg.clone(),
        })
    }
}

/// The response to an accepted push.
#[derive(Debug, Serialize)]
pub struct PushResponse {
    /// Always true: a response is sent only after the commit.
    committed: bool,
    /// The integration.
    integration: String,
    /// Profile that decoded the payload.
    profile: String,
    /// Per measurement, in the order of the push (`message`: the element of
    /// a batch).
    measurements: Vec<BatchOutcome>,
}

/// One measurement's outcome within a batch.
#[derive(Debug, Serialize)]
pub struct BatchOutcome {
    /// Element of the batch (0 for a single object).
    message: usize,
    #[serde(flatten)]
    outcome: MeasurementOutcome,
}

/// `POST /api/v1/integrations/{name}`: authenticated by the integration's
/// own scheme, not by a bearer token.
pub async fn push(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(integration) = st.integrations.by_name.get(&name) else {
        return ApiError::NotFound("integration").into_response();
    };
    let client = client.map(|c| c.0 .0);
    if let Some(wait) = client.and_then(|ip| st.limits.blocked(ip)) {
        st.metrics.api_rate_limited("client");
        return ApiError::TooManyRequests(retry_after(wait)).into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(r) => {
            let e = if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge
            } else {
                ApiError::BadRequest(r.body_text())
            };
            return refuse(&st, integration, e, "bad_request").await;
        }
    };
    if !integration.verify(&headers, &body) {
        st.metrics.api_auth_failure("integration");
        if let Some(wait) = client.and_then(|ip| st.limits.failure(ip)) {
            st.metrics.api_rate_limited("client");
            return ApiError::TooManyRequests(retry_after(wait)).into_response();
        }
        let mut resp = refuse(&st, integration, ApiError::Unauthorized, "unauthorized").await;
        if let Some(challenge) = integration.challenge() {
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        return resp;
    }
    match accept(&st, integration, &body).await {
        Ok((patient, r)) => {
            let _ = st
                .audit
                .record(
                    &integration.actor(),
                    PUSH_ACTION,
                    &resource(&name),
                    patient,
                    200,
                )
                .await;
            r.into_response()
        }
        Err((e, reason)) => refuse(&st, integration, e, reason).await,
    }
}

fn resource(name: &str) -> String {
    format!("/api/v1/integrations/{name}")
}

/// Answers a refused push: counted in the link's health and audited.
async fn refuse(
    st: &Arc<ApiState>,
    integration: &Integration,
    e: ApiError,
    reason: &'static str,
) -> Response {
    let name = integration.name.clone();
    let now = chrono::Utc::now();
    if let Err(err) = st
        .db
        .run(move |s| Ok(health::record(s.conn(), &name, now, Push::Refused(reason))?))
        .await
    {
        tracing::warn!(integration = %integration.name, error = ?err, "api: integration health not recorded");
    }
    let resp = e.into_response();
    let _ = st
        .audit
        .record(
            &integration.actor(),
            PUSH_ACTION,
            &resource(&integration.name),
            None,
            resp.status().as_u16(),
        )
        .await;
    resp
}

/// Decodes, scope-checks and commits an authenticated push.
async fn accept(
    st: &Arc<ApiState>,
    integration: &Integration,
    body: &[u8],
) -> Result<(Option<String>, Json<PushResponse>), (ApiError, &'static str)> {
    let received_at = chrono::Utc::now();
    let messages = split_batch(body);
    let mut items = Vec::new();
    let mut message_of = Vec::new();
    for (n, m) in messages.iter().enumerate() {
        let decoded = st
            .pipeline
            .http(&integration.profile, None, m, received_at)
            .map_err(|e| (ApiError::Unprocessable(e.to_string()), "unprocessable"))?;
        message_of.extend(std::iter::repeat_n(n, decoded.len()));
        items.extend(decoded);
    }
    // Only the vendor's own devices: a device named anywhere in the push
    // that is not this integration's refuses the whole push. Input that
    // names no device at all (not JSON, no device field) is quarantined.
    let allowed = items.iter().all(|i| match i {
        Item::Reading { group, .. } => group
            .readings
            .first()
            .is_some_and(|r| integration.allows(&r.device_id)),
        Item::Quarantine { device_id, .. } => {
            device_id.as_deref().is_none_or(|d| integration.allows(d))
        }
        Item::Response { .. } => false,
    });
    if !allowed {
        return Err((ApiError::Forbidden, "device_not_allowed"));
    }
    let commit = st
        .writer
        .submit(items.clone())
        .await
        .map_err(|e| (ApiError::from(e), "unavailable"))?;
    let outcomes = match commit.await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            tracing::error!(integration = %integration.name, error = %e, "api: integration push not committed; answering 503");
            return Err((
                ApiError::Unavailable("not stored; retry the request".into()),
                "unavailable",
            ));
        }
        Err(_) => {
            return Err((
                ApiError::Unavailable("the gateway is shutting down".into()),
                "unavailable",
            ))
        }
    };
    st.pipeline.record(Source::Http, &outcomes);
    let quarantined = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Quarantined { .. }))
        .count() as i64;
    let measurements = outcomes.len() as i64;
    let name = integration.name.clone();
    if let Err(err) = st
        .db
        .run(move |s| {
            Ok(health::record(
                s.conn(),
                &name,
                received_at,
                Push::Delivered {
                    measurements,
                    quarantined,
                },
            )?)
        })
        .await
    {
        tracing::warn!(integration = %integration.name, error = ?err, "api: integration health not recorded");
    }
    let patient = outcomes.iter().find_map(|o| match o {
        Outcome::Stored { patient_id, .. } => Some(patient_id.clone()),
        _ => None,
    });
    let measurements = items
        .iter()
        .zip(&outcomes)
        .zip(message_of)
        .map(|((item, outcome), message)| BatchOutcome {
            message,
            outcome: describe(item, outcome),
        })
        .collect();
    Ok((
        patient,
        Json(PushResponse {
            committed: true,
            integration: integration.name.clone(),
            profile: integration.profile.clone(),
            measurements,
        }),
    ))
}

/// A JSON array is a batch of messages, each kept byte for byte; anything
/// else is one message (quarantined by the decoder if it is not JSON).
fn split_batch(body: &[u8]) -> Vec<Vec<u8>> {
    let starts_array = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[');
    if starts_array {
        if let Ok(items) = serde_json::from_slice::<Vec<Box<serde_json::value::RawValue>>>(body) {
            return items
                .into_iter()
                .map(|r| r.get().as_bytes().to_vec())
                .collect();
        }
    }
    vec![body.to_vec()]
}

/// One integration as listed.
#[derive(Debug, Serialize)]
pub struct IntegrationView {
    /// `[integrations.NAME]`.
    pub name: String,
    /// Profile its pushes are decoded with.
    pub profile: String,
    /// How the vendor authenticates.
    pub auth: config::AuthKind,
    /// Devices it may push for.
    pub devices: usize,
    /// `ok`, `stale` (no accepted push for `stale_after`) or `never` (none yet).
    pub state: &'static str,
    /// Silence after which it is stale.
    #[serde(with = "humantime_serde")]
    pub stale_after: std::time::Duration,
    /// Last accepted push.
    pub last_delivery_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Last refused push.
    pub last_refused_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Reason code of the last refusal.
    pub last_refusal: Option<String>,
    /// Counts of the most recent days with traffic, newest first.
    pub days: Vec<health::Day>,
}

/// The health of every integration, from the store (`now` decides staleness).
pub fn views(
    conn: &rusqlite::Connection,
    integrations: &IntegrationsConfig,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<IntegrationView>, crate::store::StoreError> {
    let time = |ms: Option<i64>| ms.and_then(chrono::DateTime::from_timestamp_millis);
    integrations
        .iter()
        .map(|(name, i)| {
            let h = health::health(conn, name, 14)?;
            let state = match time(h.last_delivery_at) {
                None => "never",
                Some(t) if (now - t).to_std().unwrap_or_default() > i.stale_after => "stale",
                Some(_) => "ok",
            };
            Ok(IntegrationView {
                name: name.clone(),
                profile: i.profile.clone(),
                auth: i.auth,
                devices: i.devices.len(),
                state,
                stale_after: i.stale_after,
                last_delivery_at: time(h.last_delivery_at),
                last_refused_at: time(h.last_refused_at),
                last_refusal: h.last_refusal,
                days: h.days,
            })
        })
        .collect()
}

/// `GET /api/v1/integrations`: each link's health (admin, read-only).
pub async fn list(
    State(st): State<Arc<ApiState>>,
    p: Principal,
) -> Result<Json<Vec<IntegrationView>>, ApiError> {
    p.require_operator_read()?;
    let st2 = st.clone();
    let views = st
        .db
        .run(move |s| Ok(views(s.conn(), &st2.integrations.cfg, chrono::Utc::now())?))
        .await?;
    Ok(Json(views))
}

#[cfg(test)]
mod tests {
    #[test]
    fn batches_keep_each_element() {
        let b = super::split_batch(b" [ {\"a\": 1}, {\"b\" : [2]} ]");
        assert_eq!(b, vec![b"{\"a\": 1}".to_vec(), b"{\"b\" : [2]}".to_vec()]);
        assert_eq!(super::split_batch(b"{\"a\":1}").len(), 1);
        assert_eq!(super::split_batch(b"[1, ").len(), 1);
    }
}
