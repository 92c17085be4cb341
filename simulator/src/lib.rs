//! # rpm-simulator
//!
//! Virtual patients and their home-monitoring devices, for the gateway's
//! demo, the end-to-end tests, load benchmarks and device vendors'
//! conformance checks.
//!
//! - [`scenario`], [`patient`], [`physiology`], [`plan`]: who the patients
//!   are, what happens to them, what their devices send and when, and the
//!   alerts a correct gateway must raise (ground truth);
//! - [`emission`], [`payload`]: a device's measurement and its wire form;
//! - [`quirks`], [`faults`]: device misbehaviour and broken input on demand;
//! - [`schedule`], [`transport`], [`run`], [`report`]: playing a plan in
//!   accelerated time over MQTT, HTTP or BLE (simulated devices served by
//!   the BlueZ emulator) and recording what was sent;
//! - [`load`]: many devices at a target rate, for benchmarks;
//! - [`check`], [`devices`]: the vendor conformance check and the catalogue;
//! - [`ble`], `bluez`: simulated BLE devices and the BlueZ D-Bus emulator;
//! - [`cli`]: the `rpm-sim` command line.
#![warn(missing_docs)]

pub mod ble;
#[cfg(feature = "bluez")]
pub mod bluez;
pub mod boxes;
pub mod care;
pub mod check;
pub mod cli;
pub mod devices;
pub mod emission;
pub mod faults;
pub mod load;
pub mod patient;
pub mod payload;
pub mod physiology;
pub mod plan;
pub mod quirks;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod transport;

pub use emission::{DeviceKind, Emission, Fault};
pub use payload::{encode, Message, WireFormat};
