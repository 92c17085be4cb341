//! Transports: how virtual devices' messages reach a gateway, and the one
//! loop that plays a scenario's plan through any of them in accelerated
//! time.
//!
//! A [`Transport`] takes an [`Outgoing`] (the emission as the device's own
//! clock stamps it, and its wire format) and encodes it as its link needs:
//! MQTT and HTTP send the JSON payloads of [`crate::payload`]; BLE (`ble`,
//! the BlueZ emulator) stores the reading in a simulated device whose GATT
//! values the gateway collects. That is the seam: implement [`Transport`]
//! and [`play`] drives it.

#[cfg(feature = "bluez")]
pub mod ble;
pub mod http;
pub mod mqtt;
pub mod vendor;

use std::future::Future;
use std::time::Duration;

use crate::plan::{Outgoing, Plan};
use crate::report::SentReport;
use crate::schedule::Schedule;

/// A send that failed for good (after the transport's own retries).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// MQTT client failure.
    #[error(transparent)]
    Mqtt(#[from] mqtt::PublishError),
    /// HTTP failure.
    #[error(transparent)]
    Http(#[from] http::HttpError),
    /// BLE (BlueZ emulator) failure.
    #[cfg(feature = "bluez")]
    #[error(transparent)]
    Ble(#[from] ble::BleError),
}

/// A link from virtual devices to a gateway.
pub trait Transport: Send {
    /// Short name for reports and logs (`mqtt`, `http`, `ble`).
    fn name(&self) -> &'static str;

    /// Sends one message. `Ok` means the link took it: for MQTT the publish
    /// is queued (QoS 1; [`Transport::close`] waits for every PUBACK), for
    /// HTTP the gateway answered.
    fn send(&mut self, o: &Outgoing) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Waits up to `timeout` until everything sent is acknowledged, then
    /// closes the link.
    fn close(self, timeout: Duration) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// Plays `plan` through `transport`: each publish waits for its send time
/// on `schedule` (wall clock from the moment this is called), and each
/// outcome is recorded in `report`. A failed send is recorded and the run
/// goes on (a real device keeps measuring while its link is down).
pub async fn play<T: Transport>(
    plan: &Plan,
    schedule: &Schedule,
    transport: &mut T,
    report: &mut SentReport,
) {
    let t0 = tokio::time::Instant::now();
    for o in plan.outgoing() {
        tokio::time::sleep_until(t0 + schedule.wall_offset(o.send_at)).await;
        match transport.send(&o).await {
            Ok(()) => report.record(&o),
            Err(e) => report.record_failure(&o, e.to_string()),
        }
    }
}
