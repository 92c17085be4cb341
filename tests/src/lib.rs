//! Helpers for the end-to-end tests live in `tests/tests/e2e/common/`.
//!
//! This library holds the test-only pieces that implement the gateway's own
//! interfaces, kept out of the shipped gateway: [`virtual_transport`], an
//! in-process Bluetooth LE radio over the simulator's devices.

pub mod virtual_transport;
