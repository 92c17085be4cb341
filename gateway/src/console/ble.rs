//! The installer's Bluetooth page: the health devices advertising nearby
//! (address, name, services, signal, paired, registered) and pairing one
//! that is in pairing mode (passkey entry, numeric comparison or Just
//! Works), recording its Device Information in the registry and, when a
//! patient is named, assigning it — the same steps as `rpm-gateway ble scan`
//! and `ble pair`, on the gateway's own adapter.
//!
//! Shown only where the BLE source is on. Scanning is an operator's read,
//! pairing an admin's change; both are audited by the console's session
//! layer like every other action. BlueZ is driven over blocking D-Bus, so
//! the work runs on the blocking pool, never on the server's threads.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use serde::Deserialize;
use std::sync::Arc;

use super::pages::{error_page, render, Layout};
use super::Signed;
use crate::api::auth::Principal;
use crate::api::problem::ApiError;
use crate::api::ApiState;
use crate::sources::ble::pairing::{Bluez, Nearby, PairingError};

/// Longest scan the page offers (the request waits for it).
const MAX_SCAN_SECONDS: u64 = 30;

struct NearbyRow {
    address: String,
    name: String,
    services: String,
    rssi: String,
    paired: bool,
    registered: bool,
}

#[derive(Template)]
#[template(path = "console/ble.html")]
struct BlePage {
    layout: Layout,
    enabled: bool,
    admin: bool,
    scanned: bool,
    nearby: Vec<NearbyRow>,
    notice: String,
    error: String,
}

impl BlePage {
    fn new(st: &ApiState, signed: &Signed, p: &Principal) -> BlePage {
        BlePage {
            layout: Layout::new("Bluetooth — rpm-gateway", Some(signed)),
            enabled: st.ble_configured,
            admin: p.require_admin().is_ok(),
            scanned: false,
            nearby: Vec::new(),
            notice: String::new(),
            error: String::new(),
        }
    }
}

/// `GET /console/ble`.
pub async fn page(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
) -> Response {
    if let Err(e) = p.require_operator_read() {
        return error_page(e, Some(&signed));
    }
    render(&BlePage::new(&st, &signed, &p), StatusCode::OK)
}

/// `POST /console/ble/scan` form.
#[derive(Debug, Deserialize)]
pub struct ScanForm {
    seconds: Option<u64>,
}

/// `POST /console/ble/scan`: listens for `seconds` and lists what was heard.
pub async fn scan(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
    Form(form): Form<ScanForm>,
) -> Response {
    if let Err(e) = p.require_operator_read() {
        return error_page(e, Some(&signed));
    }
    let mut page = BlePage::new(&st, &signed, &p);
    if !st.ble_configured {
        return render(&page, StatusCode::CONFLICT);
    }
    let known = match st
        .db
        .run(|s| Ok(s.devices()?.into_iter().map(|d| d.device_id).collect()))
        .await
    {
        Ok(k) => k,
        Err(e) => return error_page(e, Some(&signed)),
    };
    let known: std::collections::HashSet<String> = known;
    let seconds = form.seconds.unwrap_or(5).clamp(1, MAX_SCAN_SECONDS);
    let adapter = st.ble_adapter.clone();
    let found = blocking(move || {
        Bluez::open(adapter.as_deref())?
            .scan(seconds, |a| known.contains(a))
            .map(|list| {
                list.into_iter()
                    .map(|d: Nearby| {
                        let registered = known.contains(&d.address);
                        (d, registered)
                    })
                    .collect::<Vec<_>>()
            })
    })
    .await;
    page.scanned = true;
    match found {
        Ok(list) => {
            page.nearby = list
                .into_iter()
                .map(|(d, registered)| NearbyRow {
                    name: d.name.unwrap_or_else(|| "(no name)".into()),
                    services: d.services.join(", "),
                    rssi: d
                        .rssi
                        .map(|r| format!("{r} dBm"))
                        .unwrap_or_else(|| "—".into()),
                    paired: d.paired,
                    registered,
                    address: d.address,
                })
                .collect();
            render(&page, StatusCode::OK)
        }
        Err(e) => {
            page.error = e;
            render(&page, StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

/// `POST /console/ble/pair` form.
#[derive(Debug, Deserialize)]
pub struct PairForm {
    address: String,
    /// Empty: none given (Just Works, or the device asks and is refused).
    #[serde(default)]
    passkey: String,
    /// Empty: pair without assigning.
    #[serde(default)]
    patient_id: String,
}

/// `POST /console/ble/pair` (admin): bonds, trusts, records the Device
/// Information and, with a patient, assigns (re-processing its quarantine).
pub async fn pair(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
    Form(form): Form<PairForm>,
) -> Response {
    if let Err(e) = p.require_admin() {
        return error_page(e, Some(&signed));
    }
    let mut page = BlePage::new(&st, &signed, &p);
    if !st.ble_configured {
        return render(&page, StatusCode::CONFLICT);
    }
    let Some(address) = device_profiles::gatt::device::normalize_address(form.address.trim())
    else {
        page.error = format!(
            "`{}` is not a Bluetooth address (AA:BB:CC:DD:EE:FF).",
            form.address.trim()
        );
        return render(&page, StatusCode::UNPROCESSABLE_ENTITY);
    };
    let passkey = match form.passkey.trim() {
        "" => None,
        k => match k.parse::<u32>() {
            Ok(n) if n <= 999_999 => Some(n),
            _ => {
                page.error = "The passkey is the 6-digit number the device shows.".into();
                return render(&page, StatusCode::UNPROCESSABLE_ENTITY);
            }
        },
    };
    let adapter = st.ble_adapter.clone();
    let a = address.clone();
    let info = match blocking(move || Bluez::open(adapter.as_deref())?.pair(&a, passkey)).await {
        Ok(info) => info,
        Err(e) => {
            page.error = e;
            return render(&page, StatusCode::UNPROCESSABLE_ENTITY);
        }
    };
    let a = address.clone();
    let stored = st
        .db
        .run(move |s| Ok(s.set_bonded(&a, true, &info, "console")?))
        .await;
    if let Err(e) = stored {
        return error_page(e, Some(&signed));
    }
    page.notice = format!("Paired and trusted {address}.");
    let patient = form.patient_id.trim().to_string();
    if !patient.is_empty() {
        match crate::api::devices::assign_as(&st, p, address.clone(), patient.clone()).await {
            Ok(r) => {
                let n = r.reprocessed.map_or(0, |r| r.recovered);
                page.notice = format!(
                    "Paired and trusted {address}, assigned to {patient}; {n} quarantined measurement(s) became readings."
                );
            }
            Err(e) => {
                page.error = format!("Paired, but not assigned: {e}.");
                return render(&page, e.status());
            }
        }
    }
    page.notice
        .push_str(" The device now reconnects to the gateway by itself: take a measurement.");
    render(&page, StatusCode::OK)
}

/// Runs BlueZ work on the blocking pool; its error as the sentence to show.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PairingError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(ApiError::Unavailable(e.to_string()).to_string()),
    }
}
