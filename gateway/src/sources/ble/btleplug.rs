//! The real radio: BlueZ over D-Bus through btleplug (feature `ble`).
//!
//! At run time it needs a D-Bus system bus (`DBUS_SYSTEM_BUS_ADDRESS` may
//! point at any bus, e.g. the BlueZ emulator's) and BlueZ with an adapter.
//! Without them it reports [`ScanEvent::Adapter`] `available: false` with
//! the reason and retries with backoff; it never fails the gateway.
//!
//! What real BlueZ does that the happy path does not show:
//! - **Values just before a disconnect.** A device may hang up less than a
//!   millisecond after its last indication. bluez-async dispatches every
//!   D-Bus message, in bus order, into the channels of all the streams it
//!   matches, so when the adapter stream reports the disconnect, the values
//!   sent before it are already queued in the link's notification stream.
//!   The disconnect is therefore not put on the link's channel directly: it
//!   is handed to the link's forwarder, which first moves every queued value
//!   and only then reports [`LinkEvent::Disconnected`].
//! - **Re-signalled properties.** Some bluetoothd versions signal
//!   `Powered = true` again when it is set to the value it already has, and
//!   `start_scan` sets it: scanning is restarted only on a change of state,
//!   and restarts are spaced by a backoff.
//! - **A connect that never completes** (service discovery stalls) leaves
//!   the link up in BlueZ, and a connected device no longer advertises:
//!   [`Transport::cancel_connect`] calls `Device1.Disconnect`.
//! - **bluetoothd restarts.** The `org.bluez` name changes owner and the
//!   new daemon comes back with its adapter already powered but not
//!   discovering: a watch on the name's owner ends the scanning run, links
//!   are reported gone, and scanning starts again on the new daemon.

use btleplug::api::{
    Central, CentralEvent, CentralState, Characteristic, Manager as _, Peripheral as _, ScanFilter,
    WriteType,
};
use btleplug::platform::{Adapter, Manager, Peripheral, PeripheralId};
use device_profiles::gatt::device::BleUuid;
use futures_util::FutureExt;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::transport::{
    Advertisement, BoxFuture, CharacteristicInfo, Link, LinkEvent, ScanEvent, Transport,
    TransportError,
};
use crate::backoff::Backoff;

/// Open links: the signal that tells each link's forwarder its device is gone.
type Links = Arc<Mutex<HashMap<PeripheralId, oneshot::Sender<()>>>>;

/// Tells the forwarders of `links` (all when `id` is None) that their
/// device is gone; each reports it after the values already received.
fn links_gone(links: &Links, id: Option<&PeripheralId>) {
    let mut map = links.lock().unwrap_or_else(|p| p.into_inner());
    let gone: Vec<oneshot::Sender<()>> = match id {
        Some(id) => map.remove(id).into_iter().collect(),
        None => map.drain().map(|(_, v)| v).collect(),
    };
    for g in gone {
        let _ = g.send(());
    }
}

/// btleplug on BlueZ.
pub struct BtleplugTransport {
    adapter_name: Option<String>,
    max_backoff: Duration,
    adapter: Arc<tokio::sync::Mutex<Option<Adapter>>>,
    links: Links,
}

impl BtleplugTransport {
    /// Uses the adapter named `adapter` (`hci0`), or the first one.
    pub fn new(adapter: Option<String>, max_backoff: Duration) -> Self {
        BtleplugTransport {
            adapter_name: adapter,
            max_backoff,
            adapter: Arc::new(tokio::sync::Mutex::new(None)),
            links: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

fn to_uuid(u: BleUuid) -> Uuid {
    Uuid::from_u128(u.0)
}

fn from_uuid(u: Uuid) -> BleUuid {
    BleUuid(u.as_u128())
}

fn unavailable(e: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable(e.to_string())
}

async fn pick_adapter(name: Option<&str>) -> Result<Adapter, TransportError> {
    let manager = Manager::new().await.map_err(|e| {
        unavailable(format!(
            "no D-Bus system bus or BlueZ ({e}); set DBUS_SYSTEM_BUS_ADDRESS or start bluetoothd"
        ))
    })?;
    let adapters = manager.adapters().await.map_err(unavailable)?;
    for a in adapters {
        let info = a.adapter_info().await.unwrap_or_default();
        if name.is_none_or(|n| info.split_whitespace().next() == Some(n)) {
            return Ok(a);
        }
    }
    Err(unavailable(match name {
        Some(n) => format!("no bluetooth adapter named {n}"),
        None => "no bluetooth adapter".to_string(),
    }))
}

async fn advertisement(adapter: &Adapter, id: &PeripheralId) -> Option<Advertisement> {
    let p = adapter.peripheral(id).await.ok()?;
    let props = p.properties().await.ok()??;
    Some(Advertisement {
        address: props.address.to_string(),
        name: props.local_name.or(props.advertisement_name),
        services: props.services.into_iter().map(from_uuid).collect(),
        manufacturer_data: props.manufacturer_data.into_iter().collect(),
        service_data: props
            .service_data
            .into_iter()
            .map(|(k, v)| (from_uuid(k), v))
            .collect(),
    })
}

/// Watches the owner of `org.bluez` on a D-Bus connection of its own (a
/// thread): resolves when the name changes owner, i.e. bluetoothd stopped
/// or restarted. Stops when dropped.
struct OwnerWatch {
    changed: oneshot::Receiver<()>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for OwnerWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn watch_bluez_owner() -> Result<OwnerWatch, TransportError> {
    use dbus::message::MatchRule;
    let conn = tokio::task::spawn_blocking(|| {
        let conn = dbus::blocking::Connection::new_system()?;
        let rule = MatchRule::new_signal("org.freedesktop.DBus", "NameOwnerChanged")
            .with_sender("org.freedesktop.DBus");
        let seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = seen.clone();
        conn.add_match(
            rule,
            move |(name, _old, _new): (String, String, String), _, _| {
                if name == "org.bluez" {
                    s.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                true
            },
        )?;
        Ok::<_, dbus::Error>((conn, seen))
    })
    .await
    .map_err(unavailable)?
    .map_err(|e| unavailable(format!("watching org.bluez: {e}")))?;
    let (tx, rx) = oneshot::channel();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::Builder::new()
        .name("ble-owner-watch".into())
        .spawn(move || {
            let (conn, seen) = conn;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let lost = conn.process(Duration::from_millis(250)).is_err();
                if lost || seen.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = tx.send(());
                    return;
                }
            }
        })
        .map_err(unavailable)?;
    Ok(OwnerWatch { changed: rx, stop })
}

/// How one scanning run ended without error.
enum RunEnd {
    /// The receiver is gone: stop for good.
    Closed,
    /// bluetoothd went away or restarted: start again on the new one.
    Restarted,
}

/// Spaces restarts of scanning after the adapter comes back.
struct RestartBackoff {
    last: Option<Instant>,
    wait: Duration,
    max: Duration,
}

impl RestartBackoff {
    const MIN: Duration = Duration::from_millis(500);

    /// Waits as long as needed before the next restart.
    async fn pace(&mut self) {
        if let Some(last) = self.last {
            let since = last.elapsed();
            if since > self.max * 4 {
                self.wait = Self::MIN;
            } else if since < self.wait {
                tokio::time::sleep(self.wait - since).await;
                self.wait = (self.wait * 2).min(self.max);
            }
        }
        self.last = Some(Instant::now());
    }
}

/// One scanning run: until the adapter goes away, bluetoothd restarts or
/// the receiver is dropped.
async fn scan_once(
    name: Option<&str>,
    slot: &tokio::sync::Mutex<Option<Adapter>>,
    links: &Links,
    tx: &mpsc::Sender<ScanEvent>,
    max_backoff: Duration,
) -> Result<RunEnd, TransportError> {
    let adapter = pick_adapter(name).await?;
    let mut owner = watch_bluez_owner().await?;
    let mut events = adapter.events().await.map_err(unavailable)?;
    adapter
        .start_scan(ScanFilter::default())
        .await
        .map_err(unavailable)?;
    *slot.lock().await = Some(adapter.clone());
    let info = adapter.adapter_info().await.unwrap_or_default();
    if tx
        .send(ScanEvent::Adapter {
            available: true,
            detail: info,
        })
        .await
        .is_err()
    {
        return Ok(RunEnd::Closed);
    }
    // Devices BlueZ already knows (seen before the scan started).
    if let Ok(ps) = adapter.peripherals().await {
        for p in ps {
            if let Some(ad) = advertisement(&adapter, &p.id()).await {
                if tx.send(ScanEvent::Advertisement(ad)).await.is_err() {
                    return Ok(RunEnd::Closed);
                }
            }
        }
    }
    // Scanning was just started with the adapter on: only a change of
    // state matters from here.
    let mut powered = true;
    let mut restarts = RestartBackoff {
        last: None,
        wait: RestartBackoff::MIN,
        max: max_backoff.max(RestartBackoff::MIN),
    };
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = &mut owner.changed => return Ok(RunEnd::Restarted),
        };
        let Some(ev) = ev else { break };
        let id = match ev {
            CentralEvent::DeviceDiscovered(id)
            | CentralEvent::DeviceUpdated(id)
            | CentralEvent::ServicesAdvertisement { id, .. }
            | CentralEvent::ServiceDataAdvertisement { id, .. }
            | CentralEvent::ManufacturerDataAdvertisement { id, .. }
            | CentralEvent::RssiUpdate { id, .. } => id,
            CentralEvent::DeviceDisconnected(id) => {
                links_gone(links, Some(&id));
                continue;
            }
            CentralEvent::StateUpdate(CentralState::PoweredOn) => {
                if powered {
                    // Re-signalled without a change (start_scan sets it).
                    continue;
                }
                powered = true;
                // Back after a reset: scanning must be started again, but
                // an adapter that flaps is not chased.
                restarts.pace().await;
                adapter
                    .start_scan(ScanFilter::default())
                    .await
                    .map_err(unavailable)?;
                if tx
                    .send(ScanEvent::Adapter {
                        available: true,
                        detail: "adapter powered on".into(),
                    })
                    .await
                    .is_err()
                {
                    return Ok(RunEnd::Closed);
                }
                continue;
            }
            CentralEvent::StateUpdate(_) => {
                if !powered {
                    continue;
                }
                powered = false;
                links_gone(links, None);
                if tx
                    .send(ScanEvent::Adapter {
                        available: false,
                        detail: "adapter powered off".into(),
                    })
                    .await
                    .is_err()
                {
                    return Ok(RunEnd::Closed);
                }
                continue;
            }
            _ => continue,
        };
        if let Some(ad) = advertisement(&adapter, &id).await {
            if tx.send(ScanEvent::Advertisement(ad)).await.is_err() {
                return Ok(RunEnd::Closed);
            }
        }
    }
    Err(unavailable("the BlueZ event stream ended"))
}

impl Transport for BtleplugTransport {
    fn scan(&self) -> BoxFuture<'_, Result<mpsc::Receiver<ScanEvent>, TransportError>> {
        let (tx, rx) = mpsc::channel(1024);
        let name = self.adapter_name.clone();
        let slot = self.adapter.clone();
        let links = self.links.clone();
        let max = self.max_backoff;
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_secs(1), max);
            loop {
                let started = Instant::now();
                let end = scan_once(name.as_deref(), &slot, &links, &tx, max).await;
                *slot.lock().await = None;
                links_gone(&links, None);
                // A run that worked for a while starts the backoff afresh.
                if started.elapsed() > max {
                    backoff.reset();
                }
                let detail = match end {
                    Ok(RunEnd::Closed) => return,
                    Ok(RunEnd::Restarted) => {
                        tracing::info!("bluetoothd restarted (org.bluez changed owner); resuming discovery and reconnecting devices");
                        backoff = Backoff::new(Duration::from_millis(200), max);
                        "bluetoothd restarted".to_string()
                    }
                    Err(e) => e.to_string(),
                };
                let ev = ScanEvent::Adapter {
                    available: false,
                    detail,
                };
                if tx.send(ev).await.is_err() {
                    return;
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        });
        Box::pin(async move { Ok(rx) })
    }

    fn cancel_connect<'a>(&'a self, address: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(adapter) = self.adapter.lock().await.clone() else {
                return;
            };
            let Ok(peripherals) = adapter.peripherals().await else {
                return;
            };
            if let Some(p) = peripherals
                .into_iter()
                .find(|p| p.address().to_string().eq_ignore_ascii_case(address))
            {
                links_gone(&self.links, Some(&p.id()));
                // Device1.Disconnect: BlueZ may hold the link up (service
                // discovery stalled), and a connected device does not
                // advertise, so it would never be tried again.
                let _ = tokio::time::timeout(Duration::from_secs(5), p.disconnect()).await;
            }
        })
    }

    fn connect<'a>(
        &'a self,
        address: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Link>, TransportError>> {
        Box::pin(async move {
            let adapter = self
                .adapter
                .lock()
                .await
                .clone()
                .ok_or_else(|| unavailable("no adapter"))?;
            let peripheral = adapter
                .peripherals()
                .await
                .map_err(unavailable)?
                .into_iter()
                .find(|p| p.address().to_string().eq_ignore_ascii_case(address))
                .ok_or_else(|| TransportError::Link("device not known to BlueZ".into()))?;
            let link_err = |e: btleplug::Error| TransportError::Link(e.to_string());
            peripheral.connect().await.map_err(link_err)?;
            peripheral.discover_services().await.map_err(link_err)?;
            // The notification stream must exist before any subscription.
            let mut stream = peripheral.notifications().await.map_err(link_err)?;
            let (tx, rx) = mpsc::channel(1024);
            let (gone_tx, mut gone) = oneshot::channel::<()>();
            self.links
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(peripheral.id(), gone_tx);
            // A device that hung up before its link was listed here would
            // never be reported gone.
            if !peripheral.is_connected().await.unwrap_or(false) {
                links_gone(&self.links, Some(&peripheral.id()));
            }
            let forward = tokio::spawn(async move {
                let value = |n: btleplug::api::ValueNotification| LinkEvent::Value {
                    uuid: from_uuid(n.uuid),
                    value: n.value,
                };
                loop {
                    tokio::select! {
                        biased;
                        n = stream.next() => match n {
                            Some(n) => {
                                if tx.send(value(n)).await.is_err() {
                                    return;
                                }
                            }
                            None => break,
                        },
                        _ = &mut gone => {
                            // Every value BlueZ sent before the disconnect is
                            // already queued in the stream (module docs).
                            while let Some(Some(n)) = stream.next().now_or_never() {
                                if tx.send(value(n)).await.is_err() {
                                    return;
                                }
                            }
                            break;
                        }
                    }
                }
                let _ = tx.send(LinkEvent::Disconnected).await;
            });
            let chars: Vec<Characteristic> = peripheral.characteristics().into_iter().collect();
            Ok(Box::new(BtleplugLink {
                peripheral,
                chars,
                rx: Some(rx),
                links: self.links.clone(),
                forward,
            }) as Box<dyn Link>)
        })
    }
}

struct BtleplugLink {
    peripheral: Peripheral,
    chars: Vec<Characteristic>,
    rx: Option<mpsc::Receiver<LinkEvent>>,
    links: Links,
    forward: tokio::task::JoinHandle<()>,
}

impl BtleplugLink {
    fn find(&self, uuid: BleUuid) -> Result<&Characteristic, TransportError> {
        let u = to_uuid(uuid);
        self.chars
            .iter()
            .find(|c| c.uuid == u)
            .ok_or(TransportError::NoCharacteristic(uuid))
    }
}

fn gatt_err(e: btleplug::Error) -> TransportError {
    TransportError::Gatt(e.to_string())
}

impl Link for BtleplugLink {
    fn characteristics(&self) -> Vec<CharacteristicInfo> {
        use btleplug::api::CharPropFlags as F;
        self.chars
            .iter()
            .map(|c| CharacteristicInfo {
                service: from_uuid(c.service_uuid),
                uuid: from_uuid(c.uuid),
                notify: c.properties.contains(F::NOTIFY),
                indicate: c.properties.contains(F::INDICATE),
                read: c.properties.contains(F::READ),
                write: c.properties.contains(F::WRITE),
            })
            .collect()
    }

    fn events(&mut self) -> Option<mpsc::Receiver<LinkEvent>> {
        self.rx.take()
    }

    fn subscribe(&self, uuid: BleUuid) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            let c = self.find(uuid)?;
            self.peripheral.subscribe(c).await.map_err(|e| {
                let text = e.to_string();
                // Bonded-only devices refuse the CCCD write until paired.
                if text.contains("AuthenticationFailed")
                    || text.contains("Insufficient Authentication")
                    || text.contains("Insufficient Encryption")
                {
                    TransportError::PairingRequired
                } else {
                    TransportError::Gatt(text)
                }
            })
        })
    }

    fn read(&self, uuid: BleUuid) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        Box::pin(async move {
            let c = self.find(uuid)?;
            self.peripheral.read(c).await.map_err(gatt_err)
        })
    }

    fn write(&self, uuid: BleUuid, value: Vec<u8>) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            let c = self.find(uuid)?;
            self.peripheral
                .write(c, &value, WriteType::WithResponse)
                .await
                .map_err(gatt_err)
        })
    }

    fn disconnect(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            self.forward.abort();
            self.links
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.peripheral.id());
            self.peripheral
                .disconnect()
                .await
                .map_err(|e| TransportError::Link(e.to_string()))
        })
    }
}
