//! The FHIR push: readings, alerts and follow-up tasks into the care
//! team's EHR, from the store, after durable cursors.
//!
//! The EHR is where clinicians look; the gateway's store stays the system
//! of record, and the push follows it like the InfluxDB forwarder does
//! (its own loop, not the forwarder's: a FHIR server takes records as
//! transaction Bundles of conditional creates and updates, not lines).
//! [`config`] is `[forward.fhir]`; [`auth`] SMART Backend Services or a
//! static token; [`bundle`] the records as idempotent Bundle entries;
//! [`client`] one POST and its classification; [`push`] the loop, its
//! cursors and quarantine. The chapter is docs/fhir-push.md.

pub mod auth;
pub mod bundle;
pub mod client;
pub mod config;
pub mod push;

pub use config::FhirPushConfig;
pub use push::FhirPush;
