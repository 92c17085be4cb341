//! The gateway's records as FHIR R4 resources.
//!
//! One mapping serves both directions data leaves the gateway in FHIR:
//! the API's reads (`/fhir/...`) and the push into a care team's FHIR
//! server. [`observation`] turns readings into Observations, [`device`]
//! the measuring devices and the gateway itself into Devices, [`task`]
//! follow-up tasks into Tasks.
//!
//! Observations and Devices follow the HL7 Personal Health Device IG
//! (STU 2, FHIR R4; [`phd`]): a receiving server that knows the IG finds
//! MDC codes, the gateway, and the conditional-create identifier where
//! the IG puts them, one that does not still reads plain vital signs.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;

pub mod device;
pub mod observation;
pub mod phd;
pub mod task;

pub use phd::PhdContext;

/// A FHIR `instant`/`dateTime` in UTC, to the millisecond.
pub fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `[fhir]`: what the FHIR mapping needs to know that the data does not say.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FhirConfig {
    /// Everything this gateway records is test or demonstration data (a
    /// staging gateway, one fed by the simulator, `rpm-gateway demo`):
    /// every Observation is labelled `meta.security` `HTEST`, so a
    /// receiving EHR never mistakes it for a patient's.
    pub test_data: bool,
    /// Devices whose readings are test data on an otherwise clinical
    /// gateway (a demonstration cuff, a device on the bench).
    pub test_devices: Vec<String>,
}

impl FhirConfig {
    /// Whether readings of `device_id` are test data.
    pub fn is_test_device(&self, device_id: &str) -> bool {
        self.test_data || self.test_devices.iter().any(|d| d == device_id)
    }
}

/// Escapes a search parameter's name or value for a query string (FHIR
/// search links, `ifNoneExist`).
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
