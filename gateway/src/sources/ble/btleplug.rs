//! The real radio: BlueZ over D-Bus through btleplug (feature `ble`).
//!
//! At run time it needs a D-Bus system bus (`DBUS_SYSTEM_BUS_ADDRESS` may
//! point at any bus, e.g. the BlueZ emulator's) and BlueZ with an adapter.
//! Without them it reports [`ScanEvent::Adapter`] `available: false` with
//! the reason and retries with backoff; it never fails the gateway.

use btleplug::api::{
    Central, CentralEvent, CentralState, Characteristic, Manager as _, Peripheral as _, ScanFilter,
    WriteType,
};
use btleplug::platform::{Adapter, Manager, Peripheral, PeripheralId};
use device_profiles::gatt::device::BleUuid;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::transport::{
    Advertisement, BoxFuture, CharacteristicInfo, Link, LinkEvent, ScanEvent, Transport,
    TransportError,
};

type Links = Arc<Mutex<HashMap<PeripheralId, mpsc::Sender<LinkEvent>>>>;

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

/// One scanning run: until the adapter goes away or the receiver is dropped.
/// Returns true when the receiver is gone.
async fn scan_once(
    name: Option<&str>,
    slot: &tokio::sync::Mutex<Option<Adapter>>,
    links: &Links,
    tx: &mpsc::Sender<ScanEvent>,
) -> Result<bool, TransportError> {
    let adapter = pick_adapter(name).await?;
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
        return Ok(true);
    }
    // Devices BlueZ already knows (seen before the scan started).
    if let Ok(ps) = adapter.peripherals().await {
        for p in ps {
            if let Some(ad) = advertisement(&adapter, &p.id()).await {
                if tx.send(ScanEvent::Advertisement(ad)).await.is_err() {
                    return Ok(true);
                }
            }
        }
    }
    while let Some(ev) = events.next().await {
        let id = match ev {
            CentralEvent::DeviceDiscovered(id)
            | CentralEvent::DeviceUpdated(id)
            | CentralEvent::ServicesAdvertisement { id, .. }
            | CentralEvent::ServiceDataAdvertisement { id, .. }
            | CentralEvent::ManufacturerDataAdvertisement { id, .. }
            | CentralEvent::RssiUpdate { id, .. } => id,
            CentralEvent::DeviceDisconnected(id) => {
                let link = links.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                if let Some(l) = link {
                    let _ = l.try_send(LinkEvent::Disconnected);
                }
                continue;
            }
            CentralEvent::StateUpdate(CentralState::PoweredOn) => {
                // Back after a reset: scanning must be started again.
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
                    return Ok(true);
                }
                continue;
            }
            CentralEvent::StateUpdate(_) => {
                for (_, l) in links.lock().unwrap_or_else(|p| p.into_inner()).drain() {
                    let _ = l.try_send(LinkEvent::Disconnected);
                }
                if tx
                    .send(ScanEvent::Adapter {
                        available: false,
                        detail: "adapter powered off".into(),
                    })
                    .await
                    .is_err()
                {
                    return Ok(true);
                }
                continue;
            }
            _ => continue,
        };
        if let Some(ad) = advertisement(&adapter, &id).await {
            if tx.send(ScanEvent::Advertisement(ad)).await.is_err() {
                return Ok(true);
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
            let mut backoff = Duration::from_secs(1);
            loop {
                match scan_once(name.as_deref(), &slot, &links, &tx).await {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(e) => {
                        *slot.lock().await = None;
                        for (_, l) in links.lock().unwrap_or_else(|p| p.into_inner()).drain() {
                            let _ = l.try_send(LinkEvent::Disconnected);
                        }
                        let ev = ScanEvent::Adapter {
                            available: false,
                            detail: e.to_string(),
                        };
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max);
            }
        });
        Box::pin(async move { Ok(rx) })
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
            self.links
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(peripheral.id(), tx.clone());
            let fwd_tx = tx.clone();
            let forward = tokio::spawn(async move {
                while let Some(n) = stream.next().await {
                    let ev = LinkEvent::Value {
                        uuid: from_uuid(n.uuid),
                        value: n.value,
                    };
                    if fwd_tx.send(ev).await.is_err() {
                        return;
                    }
                }
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
            self.peripheral.subscribe(c).await.map_err(gatt_err)
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
