//! Patients and care plans: enrol in care plans, set per-patient rule
//! overrides, assign to a care team (over `store::patients`). Care plans
//! and overrides are checked against the active rule set before saving.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Deserializer};
use std::sync::Arc;

use super::audit::AuditPatient;
use super::auth::Principal;
use super::page::{self, Page};
use super::problem::{ApiError, Json, Path, Query};
use super::ApiState;
use crate::store::patients::{self, PatientChange, PatientRecord};

/// A patient id the API accepts: pseudonymous, short, no odd characters.
pub fn check_patient_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "patient_id must be 1 to 128 characters of letters, digits and . _ : -".into(),
        ))
    }
}

/// `GET /api/v1/patients` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientsQuery {
    /// Only this care team.
    care_team: Option<String>,
    /// From `next_cursor`.
    cursor: Option<String>,
    /// Page size.
    limit: Option<usize>,
}

/// `GET /api/v1/patients`: by id; a care-team token sees its teams only.
pub async fn list(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Query(q): Query<PatientsQuery>,
) -> Result<Json<Page<PatientRecord>>, ApiError> {
    p.require_read()?;
    let limit = page::limit(&st.cfg, q.limit)?;
    let after = q.cursor.as_deref().map(page::decode_cursor).transpose()?;
    let teams: Option<Vec<String>> = match (p.scope(), q.care_team) {
        (None, None) => None,
        (None, Some(t)) => Some(vec![t]),
        (Some(mine), None) => Some(mine.to_vec()),
        (Some(mine), Some(t)) => Some(mine.iter().filter(|m| **m == t).cloned().collect()),
    };
    let rows = st
        .db
        .run(move |s| {
            Ok(patients::list(
                s.conn(),
                after.as_deref(),
                teams.as_deref(),
                limit + 1,
            )?)
        })
        .await?;
    Ok(Json(Page::new(rows, limit, |r| r.patient_id.clone())))
}

/// `GET /api/v1/patients/{patient_id}`.
pub async fn get(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(patient_id): Path<String>,
) -> Result<(AuditPatient, Json<PatientRecord>), ApiError> {
    p.require_read()?;
    let id = patient_id.clone();
    let rec = st
        .db
        .run(move |s| {
            p.check_patient(s.conn(), &id, "patient")?;
            s.patient(&id)?.ok_or(ApiError::NotFound("patient"))
        })
        .await?;
    Ok((AuditPatient(patient_id), Json(rec)))
}

/// `Some(None)` for an explicit `null`, `None` when absent.
fn double_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PUT /api/v1/patients/{patient_id}` body: each field given replaces the
/// stored one; absent fields are left as they are.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientBody {
    /// Care plans (`heart-failure`, `hypertension`, ...).
    care_plans: Option<Vec<String>>,
    /// Rule overrides (`{"rule.id": {"disabled": true}, ...}`).
    overrides: Option<serde_json::Value>,
    /// Care team; `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    care_team: Option<Option<String>>,
    /// IANA time zone; `null` falls back to the care team's.
    #[serde(default, deserialize_with = "double_option")]
    time_zone: Option<Option<String>>,
    /// Local date (`YYYY-MM-DD`) the 30-day device periods count from;
    /// `null`: the local date of the first automatically transmitted reading.
    #[serde(default, deserialize_with = "double_option")]
    monitoring_start: Option<Option<String>>,
}

/// `PUT /api/v1/patients/{patient_id}` (admin): enrols (201) or changes (200).
pub async fn put(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(patient_id): Path<String>,
    Json(body): Json<PatientBody>,
) -> Result<(StatusCode, AuditPatient, Json<PatientRecord>), ApiError> {
    p.require_admin()?;
    check_patient_id(&patient_id)?;
    if let Some(plans) = &body.care_plans {
        if let Some(known) = st.rules.as_ref().and_then(|r| r.plans()) {
            let unknown: Vec<&str> = plans
                .iter()
                .filter(|pl| !known.is_known(pl))
                .map(String::as_str)
                .collect();
            if !unknown.is_empty() {
                return Err(ApiError::Unprocessable(format!(
                    "unknown care plan(s): {}",
                    unknown.join(", ")
                )));
            }
        }
    }
    if let Some(o) = &body.overrides {
        let parsed: alerting_rules::overrides::Overrides = serde_json::from_value(o.clone())
            .map_err(|e| ApiError::Unprocessable(format!("overrides: {e}")))?;
        if let Some(rules) = &st.rules {
            parsed.validate(rules).map_err(|errs| {
                ApiError::Unprocessable(format!(
                    "overrides: {}",
                    errs.iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                ))
            })?;
        }
    }
    if let Some(Some(team)) = &body.care_team {
        if team.trim().is_empty() || team.len() > 128 {
            return Err(ApiError::BadRequest(
                "care_team must be 1 to 128 characters (or null)".into(),
            ));
        }
    }
    if let Some(Some(zone)) = &body.time_zone {
        crate::care::config::parse_time_zone(zone)
            .map_err(|e| ApiError::Unprocessable(format!("time_zone: {e}")))?;
    }
    let monitoring_start = match body.monitoring_start {
        Some(Some(d)) => Some(Some(
            chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d").map_err(|_| {
                ApiError::BadRequest(format!(
                    "monitoring_start: `{d}` is not a local date like 2026-10-15 (or null)"
                ))
            })?,
        )),
        Some(None) => Some(None),
        None => None,
    };
    let change = PatientChange {
        care_plans: body.care_plans,
        overrides: body.overrides,
        care_team: body.care_team,
        time_zone: body.time_zone,
        monitoring_start,
    };
    let id = patient_id.clone();
    let (created, rec) = st
        .db
        .run(move |s| {
            if crate::store::share::is_hub_owned_patient(s.conn(), &id)? {
                return Err(ApiError::Conflict(super::devices::HUB_OWNED.into()));
            }
            let tx = s.transaction()?;
            let existed = patients::get(&tx, &id)?.is_some();
            let rec = patients::upsert(&tx, &id, "api", &change)?;
            tx.commit()?;
            Ok((!existed, rec))
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, AuditPatient(patient_id), Json(rec)))
}
