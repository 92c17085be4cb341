//! Questionnaire responses: `POST /api/v1/responses` (plain JSON),
//! `POST /fhir/QuestionnaireResponse`, their FHIR reads, and the loaded
//! definitions as `GET /fhir/Questionnaire`.
//!
//! A response is validated against its definition and scored by the shared
//! pipeline, submitted to the writer and answered **only once committed**,
//! exactly like pushed readings: 201 stored (its scores became readings in
//! the same transaction), 200 already stored (the same identity: a retry
//! is harmless), 422 refused, which is also committed: the bytes are in
//! quarantine with the reason code, for an operator to see.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use device_profiles::{Reject, Source};
use serde_json::{json, Value};
use std::sync::Arc;

use super::audit::AuditPatient;
use super::auth::Principal;
use super::fhir::{count_param, json_format, operation_outcome, patient_param, Fhir};
use super::problem::{ApiError, Path, Query};
use super::ApiState;
use crate::fhir::instant as fhir_instant;
use crate::pipeline::{ResponseForm, RESPONSE_PROFILE};
use crate::store::responses::{self, StoredResponse};
use crate::store::{Item, Outcome};

/// What a submission became.
enum Submitted {
    Stored {
        new: bool,
        patient_id: String,
        response: Arc<device_profiles::questionnaire::Accepted>,
    },
    Quarantined(Reject),
}

async fn submit(
    st: &ApiState,
    p: &Principal,
    form: ResponseForm,
    route: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<Submitted, ApiError> {
    p.require_ingest()?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::BadRequest(r.body_text())
        }
    })?;
    st.pipeline.metrics.received(Source::Http.name());
    let item = st
        .pipeline
        .response(Source::Http, route, None, form, &body, chrono::Utc::now());
    // A token scoped to devices submits only for them (a response naming
    // only a patient is not one of its devices).
    let device = match &item {
        Item::Response { response, .. } => response.subject.device_id.as_deref(),
        Item::Quarantine { device_id, .. } => device_id.as_deref(),
        Item::Reading { .. } => None,
    };
    p.check_ingest_scope(RESPONSE_PROFILE, std::iter::once(device))?;
    let items = vec![item];
    let commit = st.writer.submit(items.clone()).await?;
    let outcomes = match commit.await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "api: questionnaire response not committed; answering 503");
            return Err(ApiError::Unavailable(
                "not stored; retry the request".into(),
            ));
        }
        Err(_) => return Err(ApiError::Unavailable("the gateway is shutting down".into())),
    };
    st.pipeline.record(Source::Http, &outcomes);
    Ok(
        match (items.into_iter().next(), outcomes.into_iter().next()) {
            // A response already stored counts all its readings (at least one)
            // as duplicates; a new one none.
            (
                Some(Item::Response { response, .. }),
                Some(Outcome::Stored {
                    duplicates,
                    patient_id,
                    ..
                }),
            ) => Submitted::Stored {
                new: duplicates == 0,
                patient_id,
                response,
            },
            (Some(Item::Quarantine { reason, .. }), _) => Submitted::Quarantined(reason),
            (Some(Item::Response { .. }), Some(Outcome::Quarantined { reason, .. })) => {
                Submitted::Quarantined(match reason {
                    "unknown_patient" => Reject::UnknownPatient,
                    "patient_mismatch" => Reject::PatientMismatch,
                    _ => Reject::UnknownDevice,
                })
            }
            _ => return Err(ApiError::Internal),
        },
    )
}

fn scores_json(a: &device_profiles::questionnaire::Accepted) -> Vec<Value> {
    a.scores
        .iter()
        .map(|s| {
            let (system, code) = s.metric.coding();
            json!({"metric": s.metric.name(), "value": s.value, "unit": "{score}",
                   "code": {"system": system, "code": code}, "missing": s.missing})
        })
        .collect()
}

/// `POST /api/v1/responses` (admin or ingest tokens): the plain form.
pub async fn submit_plain(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Option<AuditPatient>, Response), ApiError> {
    Ok(
        match submit(&st, &p, ResponseForm::Plain, "/api/v1/responses", body).await? {
            Submitted::Stored {
                new,
                patient_id,
                response,
            } => {
                let body = json!({
                    "committed": true,
                    "outcome": if new { "stored" } else { "duplicate" },
                    "response_id": response.response_id,
                    "patient_id": patient_id,
                    "questionnaire": response.questionnaire.url,
                    "version": response.questionnaire.version,
                    "scores": scores_json(&response),
                    "readings": response.values.iter().map(|(m, v)| json!({"metric": m.name(), "value": v})).collect::<Vec<_>>(),
                });
                let status = if new {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                (
                    Some(AuditPatient(patient_id)),
                    (status, axum::Json(body)).into_response(),
                )
            }
            Submitted::Quarantined(reason) => (
                None,
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    axum::Json(json!({
                        "committed": true,
                        "outcome": "quarantined",
                        "reason": reason.code(),
                        "detail": reason.to_string(),
                    })),
                )
                    .into_response(),
            ),
        },
    )
}

/// `POST /fhir/QuestionnaireResponse` (admin or ingest tokens).
pub async fn submit_fhir(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Option<AuditPatient>, Response), ApiError> {
    Ok(
        match submit(
            &st,
            &p,
            ResponseForm::Fhir,
            "/fhir/QuestionnaireResponse",
            body,
        )
        .await?
        {
            Submitted::Stored {
                new,
                patient_id,
                response,
            } => {
                let mut r = response.resource.clone();
                r["subject"] = json!({"reference": format!("Patient/{patient_id}")});
                let location = format!(
                    "{}/fhir/QuestionnaireResponse/{}",
                    st.base_url(&headers),
                    response.response_id
                );
                let status = if new {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                let mut resp = (status, Fhir(r)).into_response();
                if let Ok(v) = location.parse() {
                    resp.headers_mut().insert(axum::http::header::LOCATION, v);
                }
                (Some(AuditPatient(patient_id)), resp)
            }
            Submitted::Quarantined(reason) => {
                let mut oo =
                    operation_outcome(422, &format!("quarantined ({}): {reason}", reason.code()));
                oo["issue"][0]["code"] = json!("invalid");
                (
                    None,
                    (StatusCode::UNPROCESSABLE_ENTITY, Fhir(oo)).into_response(),
                )
            }
        },
    )
}

/// `GET /fhir/QuestionnaireResponse/{id}`.
pub async fn read(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<(AuditPatient, Fhir), ApiError> {
    p.require_read()?;
    let r = st
        .db
        .run(move |s| {
            let r = responses::get(s.conn(), &id)?
                .ok_or(ApiError::NotFound("QuestionnaireResponse"))?;
            p.check_patient(s.conn(), &r.patient_id, "QuestionnaireResponse")?;
            Ok(r)
        })
        .await?;
    Ok((AuditPatient(r.patient_id.clone()), Fhir(r.fhir())))
}

/// `GET /fhir/QuestionnaireResponse?patient=&questionnaire=&_count=`.
pub async fn search(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<(Option<AuditPatient>, Fhir), ApiError> {
    p.require_read()?;
    let mut patient = None;
    let mut questionnaire = None;
    let mut count = st.cfg.default_page_size.min(100);
    for (k, v) in &params {
        match k.as_str() {
            "patient" | "subject" => patient_param(&mut patient, k, v)?,
            "questionnaire" => {
                questionnaire = Some(v.split('|').next().unwrap_or_default().to_string())
            }
            "_count" => count = count_param(v, st.cfg.max_page_size)?,
            "_format" if json_format(v) => {}
            other => {
                return Err(ApiError::BadRequest(format!(
                    "search parameter `{other}` is not supported (patient, questionnaire, _count)"
                )))
            }
        }
    }
    let scope = p.scope_json();
    let pid = patient.clone();
    let rows: Vec<StoredResponse> = st
        .db
        .run(move |s| {
            if let Some(pid) = &pid {
                // Another team's patient: an empty result, as for Observation.
                if !p.sees(s.conn(), pid)? {
                    return Ok(Vec::new());
                }
            }
            Ok(responses::list(
                s.conn(),
                pid.as_deref(),
                scope.as_deref(),
                questionnaire.as_deref(),
                count,
            )?)
        })
        .await?;
    let base = st.base_url(&headers);
    let entries: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"fullUrl": format!("{base}/fhir/QuestionnaireResponse/{}", r.response_id),
                   "resource": r.fhir(), "search": {"mode": "match"}})
        })
        .collect();
    Ok((
        patient.map(AuditPatient),
        Fhir(json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "timestamp": fhir_instant(chrono::Utc::now()),
            "total": entries.len(),
            "entry": entries,
        })),
    ))
}

/// `GET /fhir/Questionnaire`: the loaded definitions (any reader).
pub async fn questionnaires(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    headers: HeaderMap,
) -> Result<Fhir, ApiError> {
    p.require_read()?;
    let base = st.base_url(&headers);
    let entries: Vec<Value> = st
        .pipeline
        .questionnaires
        .iter()
        .map(|q| {
            let id = q
                .resource
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or(&q.name);
            json!({"fullUrl": format!("{base}/fhir/Questionnaire/{id}"), "resource": q.resource,
                   "search": {"mode": "match"}})
        })
        .collect();
    Ok(Fhir(json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": fhir_instant(chrono::Utc::now()),
        "total": entries.len(),
        "entry": entries,
    })))
}

/// `GET /fhir/Questionnaire/{id}`.
pub async fn questionnaire(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Fhir, ApiError> {
    p.require_read()?;
    st.pipeline
        .questionnaires
        .by_id(&id)
        .map(|q| Fhir(q.resource.clone()))
        .ok_or(ApiError::NotFound("Questionnaire"))
}
