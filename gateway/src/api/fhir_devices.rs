//! FHIR R4 `Device`: the measuring devices (PhdDevice) and this gateway
//! (PhgDevice); the mapping is [`crate::fhir::device`].
//!
//! - `GET /fhir/Device?patient=&identifier=&type=&_count=&_cursor=` → a
//!   `searchset` Bundle, by device id, the gateway first;
//! - `GET /fhir/Device/{id}` → one Device (`phg-…` is the gateway).
//!
//! A care-team token sees the devices of its own patients only (as
//! `/api/v1/devices`) and the gateway, which holds no patient's data.
//! `identifier` takes the systems the Devices carry: the gateway's device
//! ids, Bluetooth addresses and the gateway's EUI-64 system id; `type` the
//! IG's MDC device types (65573 a personal health device, 531981 the
//! gateway).

use axum::extract::State;
use axum::http::HeaderMap;
use device_profiles::Metric;
use serde_json::Value;
use std::sync::Arc;

use super::audit::AuditPatient;
use super::auth::Principal;
use super::fhir::{
    count_param, device_entry, json_format, patient_param, search_links, searchset, Fhir,
};
use super::page;
use super::problem::{ApiError, Path, Query};
use super::ApiState;
use crate::fhir::device::{phd_device, phg_device};
use crate::fhir::phd::{self, Gateway, PhdContext, MDC};
use crate::store::registry::{self, Device, DevicePage};

/// MDC device type of a personal health device.
const TYPE_PHD: &str = "65573";
/// MDC device type of the gateway.
const TYPE_PHG: &str = "531981";

/// What a `Device` search asks for.
#[derive(Debug, Default)]
struct DeviceSearch {
    patient: Option<String>,
    /// Only this device (from `identifier`).
    device_id: Option<String>,
    /// `Some(true)`: only the gateway; `Some(false)`: only devices.
    gateway: Option<bool>,
    /// The identifier named the gateway's system id (checked once read).
    system_id: Option<String>,
}

/// One `identifier` token: `system|value` or a bare value (a device id).
fn identifier_param(q: &mut DeviceSearch, v: &str) -> Result<(), ApiError> {
    let (system, value) = match v.split_once('|') {
        Some((s, v)) => (Some(s), v),
        None => (None, v),
    };
    let bad = || {
        ApiError::BadRequest(format!(
            "identifier: `{v}` is not [{}|]device-id, {}|AA-BB-CC-DD-EE-FF or {}|<EUI-64>",
            phd::DEVICE_ID_SYSTEM,
            phd::BT_MAC_SYSTEM,
            phd::SYSTEM_ID_SYSTEM
        ))
    };
    if value.is_empty() {
        return Err(bad());
    }
    match system {
        None | Some("") => q.device_id = Some(value.to_string()),
        Some(s) if s == phd::DEVICE_ID_SYSTEM => q.device_id = Some(value.to_string()),
        Some(s) if s == phd::BT_MAC_SYSTEM => {
            q.device_id = Some(phd::bluetooth_address(value).ok_or_else(bad)?);
            q.gateway = Some(false);
        }
        Some(s) if s == phd::SYSTEM_ID_SYSTEM => {
            q.system_id = Some(value.replace('-', "").to_ascii_lowercase());
            q.gateway = Some(true);
        }
        Some(_) => return Err(bad()),
    }
    Ok(())
}

/// One `type` token: `[urn:iso:std:iso:11073:10101|]65573|531981`.
fn type_param(q: &mut DeviceSearch, v: &str) -> Result<(), ApiError> {
    let code = match v.split_once('|') {
        Some((s, c)) if s.is_empty() || s == MDC => c,
        Some(_) | None if !v.contains('|') => v,
        _ => "",
    };
    let gateway = match code {
        TYPE_PHD => false,
        TYPE_PHG => true,
        _ => {
            return Err(ApiError::BadRequest(format!(
                "type: `{v}` is not {MDC}|{TYPE_PHD} (a personal health device) or {MDC}|{TYPE_PHG} (the gateway)"
            )))
        }
    };
    match q.gateway {
        Some(g) if g != gateway => {
            // Contradicting filters: nothing matches.
            q.device_id = Some(String::new());
            q.system_id = Some(String::new());
        }
        _ => q.gateway = Some(gateway),
    }
    Ok(())
}

/// The metrics a device has sent for its patient (its specialisations),
/// noting in `ctx` whether it stamped any with its own clock.
fn device_metrics(
    conn: &rusqlite::Connection,
    d: &Device,
    ctx: &mut PhdContext,
) -> Result<Vec<Metric>, crate::store::StoreError> {
    let Some(patient) = &d.patient_id else {
        return Ok(Vec::new());
    };
    let mut q = conn.prepare_cached(
        "SELECT metric, MAX(device_measured_at IS NOT NULL) FROM readings
          WHERE patient_id = ?1 AND device_id = ?2 GROUP BY metric",
    )?;
    let rows = q.query_map([patient, &d.device_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, stamped) = row?;
        if stamped {
            ctx.stamping.insert(d.device_id.clone());
        }
        if let Ok(m) = name.parse() {
            out.push(m);
        }
    }
    Ok(out)
}

/// `GET /fhir/Device`.
pub async fn search(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<(Option<AuditPatient>, Fhir), ApiError> {
    p.require_read()?;
    let mut q = DeviceSearch::default();
    let mut count = st.cfg.default_page_size.min(100);
    let mut after: Option<String> = None;
    for (k, v) in &params {
        match k.as_str() {
            "patient" => patient_param(&mut q.patient, k, v)?,
            "identifier" => identifier_param(&mut q, v)?,
            "type" => type_param(&mut q, v)?,
            "_count" => count = count_param(v, st.cfg.max_page_size)?,
            "_cursor" => after = Some(page::decode_cursor(v)?),
            "_format" if json_format(v) => {}
            other => {
                return Err(ApiError::BadRequest(format!(
                "search parameter `{other}` is not supported (patient, identifier, type, _count)"
            )))
            }
        }
    }
    let fhir_cfg = st.fhir.clone();
    let asked = q.patient.clone();
    let first_page = after.is_none();
    let (gateway, devices, more) = st
        .db
        .run(move |s| {
            let conn = s.conn();
            if let Some(pt) = &q.patient {
                p.check_patient(conn, pt, "patient")?;
            }
            let gateway = Gateway {
                system_id: registry::gateway_system_id(conn)?,
            };
            // The gateway: on the first page, when no patient or device
            // was asked for and the type (or system id) allows it.
            let with_gateway = first_page
                && q.patient.is_none()
                && q.device_id.is_none()
                && q.gateway != Some(false)
                && q.system_id.as_ref().is_none_or(|s| *s == gateway.system_id);
            let mut devices = Vec::new();
            let mut more = false;
            if q.gateway != Some(true) {
                let mut rows = match &q.device_id {
                    // One device: visible if the token sees its patient.
                    Some(id) => {
                        let found = s.device(id)?.filter(|_| after.is_none());
                        let mut keep = Vec::new();
                        if let Some(d) = found {
                            let visible = match &d.patient_id {
                                Some(pt) => p.sees(conn, pt)?,
                                None => p.scope().is_none(),
                            };
                            let patient_ok = q.patient.is_none() || q.patient == d.patient_id;
                            if visible && patient_ok {
                                keep.push(d);
                            }
                        }
                        keep
                    }
                    None => registry::devices_page(
                        conn,
                        &DevicePage {
                            after: after.clone(),
                            patient_id: q.patient.clone(),
                            scope_teams: p.scope_json(),
                            limit: count + 1,
                            ..DevicePage::default()
                        },
                    )?,
                };
                more = rows.len() > count;
                rows.truncate(count);
                let mut ctx = PhdContext {
                    gateway: Some(gateway.clone()),
                    config: (*fhir_cfg).clone(),
                    ..PhdContext::default()
                };
                for d in rows {
                    let metrics = device_metrics(conn, &d, &mut ctx)?;
                    devices.push((d.device_id.clone(), phd_device(&d, &metrics, &ctx)));
                }
            }
            Ok((with_gateway.then_some(gateway), devices, more))
        })
        .await?;
    let base = st.base_url(&headers);
    let next = devices
        .last()
        .filter(|_| more)
        .map(|(last, _)| page::encode_cursor(last));
    let links = search_links(&base, "Device", &params, next);
    let entry = |r: Value| device_entry(&base, r, "match");
    let mut entries: Vec<Value> = Vec::new();
    if let Some(g) = gateway {
        entries.push(entry(phg_device(&g)));
    }
    entries.extend(devices.into_iter().map(|(_, d)| entry(d)));
    Ok((asked.map(AuditPatient), Fhir(searchset(links, entries))))
}

/// `GET /fhir/Device/{id}`.
pub async fn read(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<(Option<AuditPatient>, Fhir), ApiError> {
    p.require_read()?;
    let fhir_cfg = st.fhir.clone();
    let (patient, r) = st
        .db
        .run(move |s| {
            let conn = s.conn();
            let gateway = Gateway {
                system_id: registry::gateway_system_id(conn)?,
            };
            if id == gateway.resource_id() {
                return Ok((None, phg_device(&gateway)));
            }
            let device_id = phd::device_id_of(&id).ok_or(ApiError::NotFound("Device"))?;
            let d = s.device(&device_id)?.ok_or(ApiError::NotFound("Device"))?;
            if p.scope().is_some() {
                // A care team sees only devices of its own patients.
                match &d.patient_id {
                    Some(pt) => p.check_patient(conn, pt, "Device")?,
                    None => return Err(ApiError::NotFound("Device")),
                }
            }
            let mut ctx = PhdContext {
                gateway: Some(gateway),
                config: (*fhir_cfg).clone(),
                ..PhdContext::default()
            };
            let metrics = device_metrics(conn, &d, &mut ctx)?;
            Ok((d.patient_id.clone(), phd_device(&d, &metrics, &ctx)))
        })
        .await?;
    Ok((patient.map(AuditPatient), Fhir(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_types_narrow_the_search() {
        let mut q = DeviceSearch::default();
        identifier_param(&mut q, "cuff-1").unwrap();
        assert_eq!(q.device_id.as_deref(), Some("cuff-1"));
        let mut q = DeviceSearch::default();
        identifier_param(&mut q, &format!("{}|aa-bb-cc-dd-ee-ff", phd::BT_MAC_SYSTEM)).unwrap();
        assert_eq!(q.device_id.as_deref(), Some("AA:BB:CC:DD:EE:FF"));
        assert_eq!(q.gateway, Some(false));
        let mut q = DeviceSearch::default();
        identifier_param(
            &mut q,
            &format!("{}|EC-DE-3D-4E-58-53-2D-31", phd::SYSTEM_ID_SYSTEM),
        )
        .unwrap();
        assert_eq!(q.system_id.as_deref(), Some("ecde3d4e58532d31"));
        assert!(identifier_param(&mut q, "http://other|x").is_err());
        assert!(identifier_param(&mut q, &format!("{}|nope", phd::BT_MAC_SYSTEM)).is_err());
        let mut q = DeviceSearch::default();
        type_param(&mut q, &format!("{MDC}|{TYPE_PHG}")).unwrap();
        assert_eq!(q.gateway, Some(true));
        type_param(&mut q, TYPE_PHG).unwrap();
        assert!(type_param(&mut q, "http://snomed.info/sct|123").is_err());
        assert!(type_param(&mut q, "1").is_err());
    }
}
