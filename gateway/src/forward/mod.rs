//! Forwarding to InfluxDB 2 and to the program hub, and retention of the
//! embedded store.
//!
//! The embedded store is the system of record on the gateway; the forwarder
//! follows it after a durable cursor ([`forwarder`]), so the database being
//! away costs nothing but delay, and rules and alerts keep running from the
//! store meanwhile. [`retention`] prunes only what every consumer is past,
//! and reports a low disk. [`line`] is the line-protocol schema; [`sink`]
//! the InfluxDB 2 write request; [`http`] what every forwarding request
//! shares (its outcome, [`http::WriteError`]); [`config`] their sections;
//! [`status`] where it all stands (CLI, API); [`upstream`] the home box's
//! link to the program hub, on the same forwarder loop; [`hub`] the box's
//! share pull and quarantine push; [`boxes`] the hub's watch on its boxes;
//! [`fhir`] the push into the care team's EHR.

pub mod boxes;
pub mod config;
pub mod fhir;
pub mod forwarder;
pub mod http;
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

/// Runs a blocking store operation on the connection in `slot`, off the
/// async threads, and puts the connection back: what every forwarding loop
/// does with its own connection. `Err` is the blocking task's failure (or
/// the connection lost with an earlier one); the inner result is the
/// store's.
pub(crate) async fn on_store<T: Send + 'static>(
    slot: &mut Option<crate::store::Store>,
    f: impl FnOnce(&mut crate::store::Store) -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<Result<T, crate::store::StoreError>, String> {
    let mut store = slot.take().ok_or("store connection lost")?;
    let (store, result) = tokio::task::spawn_blocking(move || {
        let r = f(&mut store);
        (store, r)
    })
    .await
    .map_err(|e| e.to_string())?;
    *slot = Some(store);
    Ok(result)
}
