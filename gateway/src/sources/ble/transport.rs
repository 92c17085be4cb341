//! The small interface between the BLE source and a radio.
//!
//! Two implementations: `btleplug` (BlueZ over D-Bus, real devices or the
//! BlueZ emulator; feature `ble`) and the tests crate's virtual transport
//! (`tests/src/virtual_transport.rs`: in-process, hosting the simulator's
//! devices), which is why this trait and its types are public. Everything
//! above this trait — device selection, sessions, RACP, decode, normalize,
//! store — is the same code for both, so the virtual transport tests the
//! real path.
//!
//! Object-safe (boxed futures) so the source holds an `Arc<dyn Transport>`.

use device_profiles::gatt::device::BleUuid;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::mpsc;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Transport failures. None is fatal to the gateway: the source logs them,
/// reports the adapter state, and retries with backoff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No D-Bus system bus, no BlueZ, or no adapter.
    #[error("bluetooth unavailable: {0}")]
    Unavailable(String),
    /// The device could not be reached or dropped the link.
    #[error("device link: {0}")]
    Link(String),
    /// A GATT operation failed (the device refused a write, ...).
    #[error("gatt operation: {0}")]
    Gatt(String),
    /// The device refuses its measurements until it is paired (bonded):
    /// ATT insufficient authentication on the CCCD write.
    #[error("the device must be paired first (rpm-gateway ble pair)")]
    PairingRequired,
    /// The characteristic is not on the device.
    #[error("characteristic {0} not found")]
    NoCharacteristic(BleUuid),
}

/// What one advertisement showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertisement {
    /// `AA:BB:CC:DD:EE:FF`.
    pub address: String,
    /// Local name.
    pub name: Option<String>,
    /// Advertised services.
    pub services: Vec<BleUuid>,
    /// Manufacturer data by company id.
    pub manufacturer_data: BTreeMap<u16, Vec<u8>>,
    /// Service data by UUID.
    pub service_data: BTreeMap<BleUuid, Vec<u8>>,
}

/// Events of the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEvent {
    /// A device advertised (or changed its advertised data).
    Advertisement(Advertisement),
    /// The adapter became usable (true) or not (false), with a reason.
    Adapter {
        /// usable
        available: bool,
        /// why (no D-Bus, no adapter, adapter reset)
        detail: String,
    },
}

/// A characteristic found by service discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CharacteristicInfo {
    /// Service UUID.
    pub service: BleUuid,
    /// Characteristic UUID.
    pub uuid: BleUuid,
    /// Can notify.
    pub notify: bool,
    /// Can indicate.
    pub indicate: bool,
    /// Can be read.
    pub read: bool,
    /// Can be written (with response).
    pub write: bool,
}

/// Events of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A notification or indication.
    Value {
        /// characteristic
        uuid: BleUuid,
        /// bytes
        value: Vec<u8>,
    },
    /// The link is gone.
    Disconnected,
}

/// A radio.
pub trait Transport: Send + Sync + 'static {
    /// Starts scanning; events arrive on the receiver until the transport
    /// is dropped. Adapter trouble is reported as [`ScanEvent::Adapter`]
    /// and retried inside the transport, never returned as an error later.
    fn scan(&self) -> BoxFuture<'_, Result<mpsc::Receiver<ScanEvent>, TransportError>>;

    /// Connects to a device and discovers its services.
    fn connect<'a>(
        &'a self,
        address: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Link>, TransportError>>;

    /// Called when a connect took too long and was abandoned: tears down
    /// whatever link the radio may still hold, so that the device
    /// advertises again and is retried.
    fn cancel_connect<'a>(&'a self, address: &'a str) -> BoxFuture<'a, ()> {
        let _ = address;
        Box::pin(async {})
    }
}

/// One connection to a device.
pub trait Link: Send + Sync {
    /// The characteristics found by discovery.
    fn characteristics(&self) -> Vec<CharacteristicInfo>;

    /// The events of this link. Call once, before subscribing (values sent
    /// before would be lost).
    fn events(&mut self) -> Option<mpsc::Receiver<LinkEvent>>;

    /// Enables notifications or indications.
    fn subscribe(&self, uuid: BleUuid) -> BoxFuture<'_, Result<(), TransportError>>;

    /// Reads a value.
    fn read(&self, uuid: BleUuid) -> BoxFuture<'_, Result<Vec<u8>, TransportError>>;

    /// Writes a value with response.
    fn write(&self, uuid: BleUuid, value: Vec<u8>) -> BoxFuture<'_, Result<(), TransportError>>;

    /// Disconnects.
    fn disconnect(&self) -> BoxFuture<'_, Result<(), TransportError>>;
}
