//! The gateway's records as FHIR R4 resources.
//!
//! One mapping serves both directions data leaves the gateway in FHIR:
//! the API's reads (`/fhir/...`) and the push into a care team's FHIR
//! server. [`observation`] turns readings into Observations, [`task`]
//! follow-up tasks into Tasks.

use chrono::{DateTime, SecondsFormat, Utc};

pub mod observation;
pub mod task;

/// A FHIR `instant`/`dateTime` in UTC, to the millisecond.
pub fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}
