//! Devices: register, assign to / unassign from a patient, list with last
//! seen, battery and connection state. Assigning re-processes the device's
//! quarantined `unknown_device` input in the same transaction (as the CLI).

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::audit::AuditPatient;
use super::auth::Principal;
use super::page::{self, Keyed, Page};
use super::problem::{ApiError, Json, Path, Query};
use super::ApiState;
use crate::pipeline::valid_device_id;
use crate::store::registry::{Device, DevicePage, Reprocessed};

/// The list is by device id; the cursor names it.
impl Keyed for Device {
    fn key(&self) -> String {
        self.device_id.clone()
    }
}

/// `GET /api/v1/devices` parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesQuery {
    /// Only this patient's devices.
    patient: Option<String>,
    /// `true`: only assigned devices; `false`: only unassigned ones.
    assigned: Option<bool>,
    /// From `next_cursor`.
    cursor: Option<String>,
    /// Page size.
    limit: Option<usize>,
}

/// `GET /api/v1/devices`: by device id.
pub async fn list(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Query(q): Query<DevicesQuery>,
) -> Result<(Option<AuditPatient>, Json<Page<Device>>), ApiError> {
    p.require_read()?;
    let limit = page::limit(&st.cfg, q.limit)?;
    let mut select = DevicePage {
        after: q.cursor.as_deref().map(page::decode_cursor).transpose()?,
        assigned: q.assigned,
        patient_id: q.patient.clone(),
        scope_teams: None,
        limit: limit + 1,
    };
    page::scoped(&st.db, p, q.patient, limit, move |conn, scope| {
        select.scope_teams = scope;
        crate::store::registry::devices_page(conn, &select)
    })
    .await
}

fn visible_device(
    s: &crate::store::Store,
    p: &Principal,
    device_id: &str,
) -> Result<Device, ApiError> {
    let d = s.device(device_id)?.ok_or(ApiError::NotFound("device"))?;
    if p.scope().is_some() {
        // A care team sees only devices of its own patients.
        match &d.patient_id {
            Some(pt) => p.check_patient(s.conn(), pt, "device")?,
            None => return Err(ApiError::NotFound("device")),
        }
    }
    Ok(d)
}

/// 409 for a device whose assignment this home box takes from the
/// program hub's share: it is changed at the hub.
fn refuse_hub_owned(s: &crate::store::Store, device_id: &str) -> Result<(), ApiError> {
    if crate::store::share::is_hub_owned_device(s.conn(), device_id)? {
        return Err(ApiError::Conflict(HUB_OWNED.into()));
    }
    Ok(())
}

/// Why a home box refuses a local edit of what its hub owns.
pub const HUB_OWNED: &str =
    "the program hub owns this (this gateway is a home box applying the hub's share): change it at the hub";

/// `GET /api/v1/devices/{device_id}`.
pub async fn get(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(device_id): Path<String>,
) -> Result<(Option<AuditPatient>, Json<Device>), ApiError> {
    p.require_read()?;
    let d = st
        .db
        .run(move |s| visible_device(s, &p, &device_id))
        .await?;
    Ok((d.patient_id.clone().map(AuditPatient), Json(d)))
}

/// `POST /api/v1/devices` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    device_id: String,
    /// Assign at once (optional).
    patient_id: Option<String>,
}

/// `POST /api/v1/devices` result.
#[derive(Debug, Serialize)]
pub struct Registered {
    pub device: Device,
    /// Quarantined input re-processed by the assignment, if one was made.
    pub reprocessed: Option<Reprocessed>,
}

fn check_ids(device_id: &str, patient_id: Option<&str>) -> Result<(), ApiError> {
    if !valid_device_id(device_id) {
        return Err(ApiError::BadRequest(
            "device_id must be 1 to 128 characters of letters, digits and . _ : -".into(),
        ));
    }
    if let Some(pt) = patient_id {
        super::patients::check_patient_id(pt)?;
    }
    Ok(())
}

/// `POST /api/v1/devices` (admin): registers a device; 201 when new, 409
/// when it is registered already.
pub async fn register(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Json(body): Json<Register>,
) -> Result<(StatusCode, Option<AuditPatient>, Json<Registered>), ApiError> {
    p.require_admin()?;
    check_ids(&body.device_id, body.patient_id.as_deref())?;
    let pipeline = st.pipeline.clone();
    let patient = body.patient_id.clone();
    let out = st
        .db
        .run(move |s| {
            refuse_hub_owned(s, &body.device_id)?;
            if !s.register_device(&body.device_id, "api")? {
                return Err(ApiError::Conflict(
                    "device is already registered; assign it with PUT /api/v1/devices/{device_id}/patient".into(),
                ));
            }
            let reprocessed = match &body.patient_id {
                Some(pt) => Some(s.assign_device(&body.device_id, pt, "api", |q| {
                    pipeline.reprocess(q)
                })?),
                None => None,
            };
            let device = s
                .device(&body.device_id)?
                .ok_or(ApiError::NotFound("device"))?;
            Ok(Registered {
                device,
                reprocessed,
            })
        })
        .await?;
    Ok((StatusCode::CREATED, patient.map(AuditPatient), Json(out)))
}

/// `PUT /api/v1/devices/{device_id}/patient` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    patient_id: String,
}

/// `PUT /api/v1/devices/{device_id}/patient` (admin): assigns (registering
/// the device if new) and re-processes its quarantined input.
pub async fn assign(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(device_id): Path<String>,
    Json(body): Json<Assign>,
) -> Result<(AuditPatient, Json<Registered>), ApiError> {
    let patient = body.patient_id.clone();
    let out = assign_as(&st, p, device_id, body.patient_id).await?;
    Ok((AuditPatient(patient), Json(out)))
}

/// Assigns a device to a patient as `p` (admin), registering it if new,
/// and re-processes its quarantined input in the same transaction: the
/// API's and the console's one way to do it.
pub async fn assign_as(
    st: &ApiState,
    p: Principal,
    device_id: String,
    patient_id: String,
) -> Result<Registered, ApiError> {
    p.require_admin()?;
    check_ids(&device_id, Some(&patient_id))?;
    let pipeline = st.pipeline.clone();
    st.db
        .run(move |s| {
            refuse_hub_owned(s, &device_id)?;
            let r = s.assign_device(&device_id, &patient_id, "api", |q| pipeline.reprocess(q))?;
            let device = s.device(&device_id)?.ok_or(ApiError::NotFound("device"))?;
            Ok(Registered {
                device,
                reprocessed: Some(r),
            })
        })
        .await
}

/// `DELETE /api/v1/devices/{device_id}/patient` (admin): later readings of
/// the device are quarantined until it is assigned again.
pub async fn unassign(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(device_id): Path<String>,
) -> Result<(Option<AuditPatient>, Json<Device>), ApiError> {
    let (before, d) = unassign_as(&st, p, device_id).await?;
    Ok((before.patient_id.map(AuditPatient), Json(d)))
}

/// Unassigns a device as `p` (admin): later readings of the device are
/// quarantined until it is assigned again. Returns the device before and
/// after.
pub async fn unassign_as(
    st: &ApiState,
    p: Principal,
    device_id: String,
) -> Result<(Device, Device), ApiError> {
    p.require_admin()?;
    st.db
        .run(move |s| {
            let before = s.device(&device_id)?.ok_or(ApiError::NotFound("device"))?;
            refuse_hub_owned(s, &device_id)?;
            s.unassign_device(&device_id)?;
            let d = s.device(&device_id)?.ok_or(ApiError::NotFound("device"))?;
            Ok((before, d))
        })
        .await
}
