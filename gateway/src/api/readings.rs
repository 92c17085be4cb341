//! Readings: query by patient, metric, device and time range (keyset
//! pagination), and the latest reading of each metric of a patient.

use axum::extract::State;
use device_profiles::Metric;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::audit::AuditPatient;
use super::auth::Principal;
use super::page::{self, Keyed, Page};
use super::problem::{ApiError, Json, Path, Query};
use super::ApiState;
use crate::store::queries::{self, ReadingPage, StoredReading};

/// The list is by (measured_at, seq); the cursor names both.
impl Keyed for StoredReading {
    fn key(&self) -> String {
        format!("{}.{}", self.measured_at.timestamp_millis(), self.seq)
    }
}

/// `GET /api/v1/readings` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingsQuery {
    pub patient: Option<String>,
    /// Metric name (`systolic`, `body_weight`, ...).
    pub metric: Option<String>,
    pub device: Option<String>,
    /// Measured at or after (RFC 3339).
    pub since: Option<String>,
    /// Measured before (RFC 3339).
    pub until: Option<String>,
    /// From `next_cursor`.
    pub cursor: Option<String>,
    /// Page size.
    pub limit: Option<usize>,
}

/// Checks a metric name.
pub fn metric(name: &str) -> Result<Metric, ApiError> {
    name.parse::<Metric>()
        .map_err(|e| ApiError::BadRequest(format!("metric: {e}")))
}

/// `GET /api/v1/readings`: in measured-time order, oldest first.
pub async fn list(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Query(q): Query<ReadingsQuery>,
) -> Result<(Option<AuditPatient>, Json<Page<StoredReading>>), ApiError> {
    p.require_read()?;
    let limit = page::limit(&st.cfg, q.limit)?;
    let mut select = ReadingPage {
        metric: q
            .metric
            .as_deref()
            .map(|m| metric(m).map(|m| m.name().to_string()))
            .transpose()?,
        since: q
            .since
            .as_deref()
            .map(|s| page::parse_time("since", s))
            .transpose()?,
        until: q
            .until
            .as_deref()
            .map(|u| page::parse_time("until", u))
            .transpose()?,
        after: q.cursor.as_deref().map(page::decode_pair).transpose()?,
        device_id: q.device,
        patient_id: q.patient.clone(),
        scope_teams: None,
        limit: limit + 1,
    };
    page::scoped(&st.db, p, q.patient, limit, move |conn, scope| {
        select.scope_teams = scope;
        queries::readings_page(conn, &select)
    })
    .await
}

/// The latest reading of each metric of a patient.
#[derive(Debug, Serialize)]
pub struct Latest {
    patient_id: String,
    latest: BTreeMap<&'static str, StoredReading>,
}

/// `GET /api/v1/patients/{patient_id}/readings/latest`.
pub async fn latest(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(patient_id): Path<String>,
) -> Result<(AuditPatient, Json<Latest>), ApiError> {
    p.require_read()?;
    let id = patient_id.clone();
    let latest = st
        .db
        .run(move |s| {
            p.check_patient(s.conn(), &id, "patient")?;
            let mut out = BTreeMap::new();
            for m in Metric::ALL {
                if let Some(r) = queries::latest_reading(s.conn(), &id, m.name())? {
                    out.insert(m.name(), r);
                }
            }
            Ok(out)
        })
        .await?;
    Ok((
        AuditPatient(patient_id.clone()),
        Json(Latest { patient_id, latest }),
    ))
}
