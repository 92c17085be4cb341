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
//! An MQTT message is appended to the store's inbox ([`store`]) and
//! acknowledged once that append is committed; the normalize stage
//! ([`pipeline`], run by the store writer between submissions) decodes and
//! normalizes inbox entries and commits the readings or quarantine records
//! together with the removal of the entries. Bluetooth values and HTTPS
//! pushes go through the same [`pipeline`] in the source and are committed
//! before the device or client is answered. Everything downstream ([`rules`],
//! [`delivery`], [`forward`]) reads the store from cursors of its own.
//!
//! [`api`] is the HTTP API beside the flow; [`config`] parses and validates
//! the one TOML file; [`runtime`] wires the components and drains them on
//! shutdown; [`cli`] is the `rpm-gateway` binary's commands; [`demo`] runs
//! the whole flow with simulated devices.
#![warn(missing_docs)]

pub mod api;
mod backoff;
pub mod care;
pub mod cli;
pub mod config;
pub mod delivery;
#[cfg(feature = "embedded-broker")]
mod demo;
mod fault;
pub mod forward;
pub mod metrics;
pub mod pipeline;
pub mod rules;
pub mod runtime;
pub mod sources;
pub mod store;
mod telemetry;
mod tls;
