//! `POST /api/v1/readings`: devices and vendor clouds that push over HTTPS
//! instead of MQTT.
//!
//! Same profiles, same normalization, same store path as MQTT: the body is
//! decoded by the named profile as if the device had published it on its
//! topic, submitted to the shared writer, and answered **only once
//! committed** (a 2xx means durable; a 503 means nothing was stored and the
//! client should retry). Re-sending is harmless: readings are identified by
//! device, metric, device time and sequence, so a retry is reported as
//! `duplicate`. Two body forms:
//!
//! - `Content-Type: application/json`:
//!   `{"device_id": "cuff-1", "profile": "acme-bp-cuff", "payload": {...}}`
//!   (`profile` defaults to `senml-generic`; `payload` is the device's own
//!   JSON, kept byte for byte);
//! - `Content-Type: application/senml+json`: the SenML pack itself, with
//!   `?device_id=...` (and optionally `&profile=...`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use device_profiles::{Reject, Source};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;

use super::audit::AuditPatient;
use super::auth::Principal;
use super::problem::{ApiError, Json, Query};
use super::ApiState;
use crate::store::{Item, Outcome};

/// The profile used when a request names none.
pub const DEFAULT_PROFILE: &str = "senml-generic";

/// The JSON envelope.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    device_id: Option<String>,
    profile: Option<String>,
    payload: Box<RawValue>,
}

/// Query parameters (SenML body form).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IngestQuery {
    device_id: Option<String>,
    profile: Option<String>,
}

/// What became of one measurement (or of the whole message).
#[derive(Debug, Serialize)]
pub struct MeasurementOutcome {
    /// Position in the message; absent when the whole message was refused.
    index: Option<usize>,
    /// `stored` | `duplicate` | `quarantined`.
    outcome: &'static str,
    /// Readings of the measurement (stored or duplicate).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reading_ids: Vec<String>,
    /// Reason code (quarantined).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    /// Reason text (quarantined).
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// The response: committed, with an outcome per measurement.
#[derive(Debug, Serialize)]
pub struct IngestResponse {
    /// Always true: a response is sent only after the commit.
    committed: bool,
    /// Profile that decoded the payload.
    profile: String,
    /// Per measurement.
    measurements: Vec<MeasurementOutcome>,
}

fn is_media(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(media))
}

/// `POST /api/v1/readings` (admin or ingest tokens).
pub async fn push(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    headers: HeaderMap,
    Query(q): Query<IngestQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Option<AuditPatient>, Json<IngestResponse>), ApiError> {
    p.require_ingest()?;
    let body = body.map_err(|r| {
        if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::BadRequest(r.body_text())
        }
    })?;
    let received_at = chrono::Utc::now();
    let (device_id, profile, payload): (Option<String>, String, Vec<u8>) =
        if is_media(&headers, "application/senml+json") {
            (
                q.device_id,
                q.profile.unwrap_or_else(|| DEFAULT_PROFILE.into()),
                body.to_vec(),
            )
        } else if is_media(&headers, "application/json") {
            if q.device_id.is_some() || q.profile.is_some() {
                return Err(ApiError::BadRequest(
                    "with application/json, device_id and profile go in the body".into(),
                ));
            }
            let env: Envelope = serde_json::from_slice(&body)
                .map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
            (
                env.device_id,
                env.profile.unwrap_or_else(|| DEFAULT_PROFILE.into()),
                env.payload.get().as_bytes().to_vec(),
            )
        } else {
            return Err(ApiError::UnsupportedMediaType(
                "expected Content-Type: application/json (envelope) or application/senml+json"
                    .into(),
            ));
        };
    let items = st
        .pipeline
        .http(&profile, device_id.as_deref(), &payload, received_at)
        .map_err(|e| match e {
            crate::pipeline::HttpInputError::UnknownProfile(_) => {
                ApiError::Unprocessable(e.to_string())
            }
            _ => ApiError::BadRequest(e.to_string()),
        })?;
    // A scoped token pushes only for its own devices, with its profiles:
    // checked on what the input decoded to (a device named inside the
    // payload counts), before anything is stored.
    p.check_ingest_scope(
        &profile,
        items.iter().map(|i| match i {
            Item::Reading { group, .. } => group.readings.first().map(|r| r.device_id.as_str()),
            Item::Quarantine { device_id, .. } => device_id.as_deref(),
            Item::Response { response, .. } => response.subject.device_id.as_deref(),
        }),
    )?;
    let commit = st.writer.submit(items.clone()).await?;
    let outcomes = match commit.await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "api: pushed readings not committed; answering 503");
            return Err(ApiError::Unavailable(
                "not stored; retry the request".into(),
            ));
        }
        Err(_) => return Err(ApiError::Unavailable("the gateway is shutting down".into())),
    };
    st.pipeline.record(Source::Http, &outcomes);
    let patient = outcomes.iter().find_map(|o| match o {
        Outcome::Stored { patient_id, .. } => Some(AuditPatient(patient_id.clone())),
        _ => None,
    });
    let measurements = items
        .iter()
        .zip(&outcomes)
        .map(|(item, outcome)| describe(item, outcome))
        .collect();
    Ok((
        patient,
        Json(IngestResponse {
            committed: true,
            profile,
            measurements,
        }),
    ))
}

pub(super) fn describe(item: &Item, outcome: &Outcome) -> MeasurementOutcome {
    let (index, reading_ids, refusal) = match item {
        Item::Reading { index, group, .. } => (
            Some(*index),
            group
                .readings
                .iter()
                .map(|r| r.reading_id.clone())
                .collect(),
            None,
        ),
        Item::Quarantine { index, reason, .. } => (*index, Vec::new(), Some(reason)),
        Item::Response { .. } => (None, Vec::new(), None),
    };
    match outcome {
        Outcome::Stored { stored, .. } => MeasurementOutcome {
            index,
            outcome: if *stored > 0 { "stored" } else { "duplicate" },
            reading_ids,
            reason: None,
            detail: None,
        },
        Outcome::Quarantined { reason, .. } => MeasurementOutcome {
            index,
            outcome: "quarantined",
            reading_ids: Vec::new(),
            reason: Some(reason),
            detail: Some(
                refusal
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| Reject::UnknownDevice.to_string()),
            ),
        },
    }
}
