//! # device-profiles
//!
//! Everything rpm-gateway knows about devices, kept apart from the service so
//! that the gateway, the simulator and vendors' conformance checks use the
//! very same code:
//!
//! - [`metric`] and [`units`]: the clinical vocabulary (LOINC, UCUM, ranges);
//! - [`decoded`]: what a decoder produces;
//! - [`profile`], [`senml`], [`json`]: declarative MQTT device profiles (TOML) and
//!   the payload formats they describe;
//! - [`gatt`]: Bluetooth SIG GATT health characteristics;
//! - [`canonical`]: the canonical reading and the rules that make one;
//! - [`questionnaire`]: patient-reported outcome definitions (FHIR
//!   `Questionnaire`), response validation and scoring;
//! - [`reject`]: why an input did not become a reading.
#![warn(missing_docs)]

pub mod canonical;
pub mod decoded;
pub mod gatt;
pub mod json;
pub mod metric;
pub mod profile;
pub mod questionnaire;
pub mod reject;
pub mod senml;
pub mod units;

pub use canonical::{canonicalize, ClockPolicy, Reading, ReadingGroup, Source};
pub use decoded::{Component, DecodedMeasurement, DeviceTime, RawValue, SpecialValue};
pub use metric::{Metric, Panel};
pub use profile::{FileError, Profile, ProfileSet};
pub use reject::Reject;
pub use units::Unit;
