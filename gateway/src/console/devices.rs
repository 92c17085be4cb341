//! The installer's pages: the device registry (last seen, battery,
//! connection, bonded), assigning and unassigning devices (an assignment
//! re-processes the device's quarantined input, as the API and the CLI
//! do), the quarantine with reasons and raw payloads, and re-processing.
//!
//! On a program hub, the home boxes that push to it (last contact, backlog,
//! clock offset, Bluetooth adapter, silent) are listed too: a silent box is
//! the installer's to visit, not the care team's patient to call.
//!
//! Scoped like the API: a care-team user sees its patients' devices only
//! and no quarantine (raw payloads are operator data); changes are the
//! admin's.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use std::sync::Arc;

use super::pages::{error_page, render, urlencode, when, when_opt, Layout};
use super::Signed;
use crate::api::audit::AuditPatient;
use crate::api::auth::Principal;
use crate::api::ApiState;
use crate::store::boxes::BoxRow;
use crate::store::queries::{QuarantinePage, QuarantineRow};
use crate::store::registry::{DevicePage, ReprocessResult};

struct DeviceRow {
    device_id: String,
    patient: String,
    assigned: bool,
    last_seen: String,
    battery: String,
    connection: String,
    source: String,
    bonded: bool,
    model: String,
}

struct QuarantineItem {
    id: i64,
    received: String,
    source: String,
    device: String,
    reason: String,
    detail: String,
    count: i64,
}

struct BoxItem {
    box_id: String,
    last_contact: String,
    backlog: String,
    clock_offset: String,
    ble: String,
    version: String,
    silent: bool,
}

impl From<BoxRow> for BoxItem {
    fn from(b: BoxRow) -> Self {
        let dash = || "—".to_string();
        BoxItem {
            last_contact: when(b.last_contact_at),
            backlog: b.backlog.map(|n| n.to_string()).unwrap_or_else(dash),
            clock_offset: b
                .clock_offset_ms
                .map(|ms| format!("{:+.1} s", ms as f64 / 1000.0))
                .unwrap_or_else(dash),
            ble: b.ble_state.unwrap_or_else(dash),
            version: b.version.unwrap_or_else(dash),
            silent: b.silent,
            box_id: b.box_id,
        }
    }
}

#[derive(Template)]
#[template(path = "console/devices.html")]
struct DevicesPage {
    layout: Layout,
    devices: Vec<DeviceRow>,
    boxes: Vec<BoxItem>,
    /// Link the Bluetooth page (the BLE source is on, an operator role).
    ble: bool,
    quarantine: Vec<QuarantineItem>,
    operator: bool,
    admin: bool,
    notice: String,
}

/// `GET /console/devices` parameters.
#[derive(Debug, Deserialize)]
pub struct DevicesQuery {
    notice: Option<String>,
}

/// Devices and quarantine rows shown at most.
const ROWS: usize = 500;

/// `GET /console/devices`: the registry and the open quarantine.
pub async fn devices(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
    Query(q): Query<DevicesQuery>,
) -> Response {
    let operator = p.require_operator_read().is_ok();
    let admin = p.require_admin().is_ok();
    let loaded = async {
        p.require_read()?;
        let scope = p.scope_json();
        st.db
            .run(move |s| {
                let boxes = crate::store::boxes::list(s.conn(), scope.as_deref())?;
                let devices = crate::store::registry::devices_page(
                    s.conn(),
                    &DevicePage {
                        scope_teams: scope,
                        limit: ROWS,
                        ..Default::default()
                    },
                )?;
                let quarantine: Vec<QuarantineRow> = if operator {
                    crate::store::queries::quarantine_page(
                        s.conn(),
                        &QuarantinePage {
                            status: Some("open".into()),
                            limit: ROWS,
                            ..Default::default()
                        },
                    )?
                } else {
                    Vec::new()
                };
                Ok((devices, boxes, quarantine))
            })
            .await
    }
    .await;
    let (devices, boxes, quarantine) = match loaded {
        Ok(x) => x,
        Err(e) => return error_page(e, Some(&signed)),
    };
    let page = DevicesPage {
        layout: Layout::new("Devices — rpm-gateway", Some(&signed)),
        devices: devices
            .into_iter()
            .map(|d| DeviceRow {
                assigned: d.patient_id.is_some(),
                patient: d.patient_id.unwrap_or_default(),
                last_seen: when_opt(d.last_seen_at),
                battery: d
                    .battery_pct
                    .map(|b| format!("{b} %"))
                    .unwrap_or_else(|| "—".into()),
                connection: d.connection.unwrap_or_else(|| "—".into()),
                source: d.source.unwrap_or_else(|| "—".into()),
                bonded: d.bonded,
                model: [d.information.manufacturer, d.information.model]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" "),
                device_id: d.device_id,
            })
            .collect(),
        boxes: boxes.into_iter().map(BoxItem::from).collect(),
        ble: cfg!(feature = "ble") && operator && st.ble_configured,
        quarantine: quarantine
            .into_iter()
            .map(|r| QuarantineItem {
                id: r.id,
                received: when(r.received_at),
                source: r.source,
                device: r.device_id.unwrap_or_else(|| "—".into()),
                reason: r.reason,
                detail: r.detail,
                count: r.count,
            })
            .collect(),
        operator,
        admin,
        notice: q.notice.map(notice_text).unwrap_or_default(),
    };
    render(&page, StatusCode::OK)
}

fn notice_text(code: String) -> String {
    match code.split_once(':') {
        Some(("assigned", n)) => {
            format!("Device assigned; {n} quarantined measurement(s) became readings.")
        }
        Some(("reprocessed", n)) => {
            format!("Re-processed: {n} reading(s) recovered.")
        }
        Some(("refused", reason)) => format!("Re-processed, refused again: {reason}."),
        _ if code == "unassigned" => {
            "Device unassigned: its later readings are quarantined until it is assigned again."
                .into()
        }
        _ => String::new(),
    }
}

/// `POST /console/devices/assign` form.
#[derive(Debug, Deserialize)]
pub struct AssignForm {
    device_id: String,
    patient_id: String,
}

/// `POST /console/devices/assign` (admin).
pub async fn assign(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
    Form(form): Form<AssignForm>,
) -> Response {
    let patient = form.patient_id.trim().to_string();
    match crate::api::devices::assign_as(&st, p, form.device_id.trim().to_string(), patient.clone())
        .await
    {
        Ok(r) => {
            let n = r.reprocessed.map_or(0, |r| r.recovered);
            let mut resp =
                Redirect::to(&format!("/console/devices?notice=assigned:{n}")).into_response();
            resp.extensions_mut().insert(AuditPatient(patient));
            resp
        }
        Err(e) => error_page(e, Some(&signed)),
    }
}

/// `POST /console/devices/{device_id}/unassign` (admin).
pub async fn unassign(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
    axum::extract::Path(device_id): axum::extract::Path<String>,
) -> Response {
    match crate::api::devices::unassign_as(&st, p, device_id).await {
        Ok((before, _)) => {
            let mut resp = Redirect::to("/console/devices?notice=unassigned").into_response();
            if let Some(pt) = before.patient_id {
                resp.extensions_mut().insert(AuditPatient(pt));
            }
            resp
        }
        Err(e) => error_page(e, Some(&signed)),
    }
}

#[derive(Template)]
#[template(path = "console/quarantine.html")]
struct QuarantineEntryPage {
    layout: Layout,
    id: i64,
    received: String,
    source: String,
    origin: String,
    profile: String,
    device: String,
    reason: String,
    detail: String,
    status: String,
    count: i64,
    payload_text: String,
    payload_hex: String,
    admin: bool,
    open: bool,
}

/// `GET /console/quarantine/{id}`: the raw payload and why it was refused.
pub async fn quarantine_entry(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
    axum::extract::Path(id): axum::extract::Path<i64>,
) -> Response {
    let admin = p.require_admin().is_ok();
    match st
        .db
        .run(move |s| crate::api::quarantine::load(s.conn(), &p, id))
        .await
    {
        Ok(d) => render(
            &QuarantineEntryPage {
                layout: Layout::new(format!("Quarantine {id} — rpm-gateway"), Some(&signed)),
                id: d.row.id,
                received: when(d.row.received_at),
                source: d.row.source,
                origin: d.row.origin,
                profile: d.row.profile.unwrap_or_else(|| "—".into()),
                device: d.row.device_id.unwrap_or_else(|| "—".into()),
                reason: d.row.reason,
                detail: d.row.detail,
                open: d.row.status == "open",
                status: d.row.status,
                count: d.row.count,
                payload_text: d.payload_text.unwrap_or_default(),
                payload_hex: d.payload_hex.unwrap_or_default(),
                admin,
            },
            StatusCode::OK,
        ),
        Err(e) => error_page(e, Some(&signed)),
    }
}

/// `POST /console/quarantine/{id}/reprocess` (admin).
pub async fn reprocess(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
    axum::extract::Path(id): axum::extract::Path<i64>,
) -> Response {
    match crate::api::quarantine::reprocess_as(&st, p, id).await {
        Ok(ReprocessResult::Recovered { reading_ids }) => Redirect::to(&format!(
            "/console/devices?notice=reprocessed:{}",
            reading_ids.len()
        ))
        .into_response(),
        Ok(ReprocessResult::StillRefused { reason, .. }) => Redirect::to(&format!(
            "/console/devices?notice=refused:{}",
            urlencode(reason)
        ))
        .into_response(),
        Ok(ReprocessResult::NotOpen { .. }) => Redirect::to("/console/devices").into_response(),
        Err(e) => error_page(e, Some(&signed)),
    }
}
