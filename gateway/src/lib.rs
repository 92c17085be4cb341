//! # rpm-gateway
//!
//! The data flow shows in the module names:
//!
//! ```text
//!  sources ──────────► store ──────► pipeline ──────► store ──► rules ──► delivery
//!   mqtt: append to     inbox         decode,          readings   alerts,   webhooks
//!   the inbox, PUBACK   (durable      normalize        quarantine outbox    (signed)
//!   after the commit    commit        (on the writer's                  └─► forward
//!   ble, https: decode  point)        thread)                               (InfluxDB)
//!   and normalize, then
//!   commit, then ack
//! ```
//!
//! An MQTT message is appended to the store's inbox (`store`) and
//! acknowledged once that append is committed; the normalize stage
//! (`pipeline`, run by the store writer between submissions) decodes and
//! normalizes inbox entries and commits the readings or quarantine records
//! together with the removal of the entries. Bluetooth values and HTTPS
//! pushes go through the same `pipeline` in the source and are committed
//! before the device or client is answered. Everything downstream (`rules`,
//! `delivery`, `forward`) reads the store from cursors of its own.
//!
//! `api` is the HTTP API beside the flow (`fhir` its FHIR mapping, shared
//! with the FHIR push); `config` parses and validates
//! the one TOML file; `runtime` wires the components and drains them on
//! shutdown; `cli` is the `rpm-gateway` binary's commands; `demo` runs
//! the whole flow with simulated devices.
//!
//! The modules are private; what the binary, the end-to-end tests and the
//! benchmarks use is re-exported here, and nothing else is a promise.
#![warn(missing_docs)]

mod api;
mod backoff;
pub mod care;
mod cli;
mod config;
mod console;
mod delivery;
#[cfg(feature = "embedded-broker")]
mod demo;
mod fault;
mod fhir;
mod forward;
mod metrics;
mod pipeline;
mod rules;
mod runtime;
mod sources;
mod store;
mod telemetry;
mod tls;

pub use api::route_list;
pub use cli::main;
pub use config::Config;
pub use metrics::Metrics;
pub use pipeline::Pipeline;
pub use rules::evaluator::{Evaluator, EvaluatorConfig};
pub use rules::whatif::{open_read_only, what_if, WhatIfQuery, WhatIfReport};
pub use runtime::{apply_config_devices, pipeline};
pub use store::patients::PatientChange;
pub use store::{now_ms, set_cursor, Store, StoreError, Writer, WriterConfig};

/// Bluetooth: the source, and the transport it drives (a real adapter, or
/// the tests' virtual radio).
pub mod ble {
    pub use crate::sources::ble::{transport, BleSource};
}

/// Webhook events as the gateway queues them, the secrets that sign them,
/// and the check a receiver written in Rust makes.
pub mod webhooks {
    pub use crate::delivery::signing::{verify, Secret};
    pub use crate::store::outbox::{
        enqueue, event_id, AlertData, Event, EventType, EvidenceReading, RuleRef, EVENT_SCHEMA,
    };
}

/// The store's encryption: its key, and a connection opened with one.
pub mod encryption {
    pub use crate::store::cipher::{connect, Keying};
    pub use crate::store::secrets::random_key;
}
