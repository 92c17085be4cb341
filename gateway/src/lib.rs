//! # rpm-gateway
//!
//! The data flow shows in the module names:
//!
//! ```text
//! sources ──► decode ──► normalize ──► store ──► (rules ──► delivery)
//!   mqtt       profiles    units, LOINC,   SQLite WAL, group commit,
//!                          clock, ids      registry, quarantine, cursors
//! ```
//!
//! [`config`] parses and validates the one TOML file; [`runtime`] wires the
//! components and drains them on shutdown; [`cli`] is the `rpm-gateway`
//! binary's commands; [`demo`] runs the whole flow with simulated devices.
#![warn(missing_docs)]

pub mod api;
pub mod cli;
pub mod config;
pub mod decode;
pub mod delivery;
#[cfg(feature = "embedded-broker")]
pub mod demo;
pub mod forward;
pub mod metrics;
pub mod normalize;
pub mod pipeline;
pub mod rules;
pub mod runtime;
pub mod sources;
pub mod store;
pub mod telemetry;
