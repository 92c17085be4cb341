//! End-to-end tests of the whole system: real Mosquitto, real SQLite files,
//! the real binaries. One test binary (linked once) with a module per area;
//! run one area with `cargo test -p rpm-e2e --test e2e -- webhooks::`.
//!
//! Every test builds its own world in a temp dir (its own broker, gateway,
//! receivers, on ports of their own: see `common`), so the tests of all
//! areas run side by side in this one process. Nothing here sets the
//! process's environment or current directory: child processes get theirs
//! through `Command`.

mod common;

mod api;
mod ble_bluez;
mod ble_virtual;
mod care_report;
mod care_tasks;
mod care_worklist;
mod cli;
mod console;
mod fhir_push;
mod influx_forward;
mod lean_build;
mod mqtt_ingest;
mod mqtt_session;
mod responses;
mod rules;
mod scenario_ble;
mod scenarios_e2e;
mod store_encryption;
mod upstream;
mod vendor_clouds;
mod webhooks;
