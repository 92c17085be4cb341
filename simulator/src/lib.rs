//! # rpm-simulator
//!
//! Virtual patients and their home-monitoring devices, for the gateway's
//! demo, the end-to-end tests, load benchmarks and device vendors'
//! conformance checks.
//!
//! - [`emission`]: what a virtual device emits;
//! - [`payload`]: encoding emissions as MQTT payloads of the bundled profiles;
//! - [`mqtt`]: publishing them to a broker (QoS 1).
#![warn(missing_docs)]

pub mod ble;
#[cfg(feature = "bluez")]
pub mod bluez;
pub mod emission;
pub mod mqtt;
pub mod payload;

pub use emission::{DeviceKind, Emission, Fault};
pub use payload::{encode, Message, WireFormat};
pub mod patient;
pub mod physiology;
pub mod plan;
pub mod report;
pub mod scenario;
pub mod schedule;
