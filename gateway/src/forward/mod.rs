//! Forwarding to InfluxDB 2 and to the program hub, and retention of the
//! embedded store.
//!
//! The embedded store is the system of record on the gateway; the forwarder
//! follows it after a durable cursor ([`forwarder`]), so the database being
//! away costs nothing but delay, and rules and alerts keep running from the
//! store meanwhile. [`retention`] prunes only what every consumer is past,
//! and reports a low disk. [`line`] is the line-protocol schema; [`sink`]
//! the HTTP write through the `influxdb2` crate; [`config`] their sections;
//! [`status`] where it all stands (CLI, API); [`upstream`] the home box's
//! link to the program hub, on the same forwarder loop; [`hub`] the box's
//! share pull and quarantine push; [`boxes`] the hub's watch on its boxes;
//! [`fhir`] the push into the care team's EHR.

pub mod boxes;
pub mod config;
pub mod fhir;
pub mod forwarder;
pub mod hub;
pub mod line;
pub mod retention;
pub mod sink;
pub mod status;
pub mod upstream;

pub use config::{ForwardConfig, RetentionConfig};
pub use forwarder::{Forwarder, ForwarderConfig};
pub use retention::Retention;
pub use sink::InfluxSink;
pub use upstream::UpstreamSink;
