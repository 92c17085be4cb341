//! An in-process Bluetooth LE radio hosting simulated devices
//! ([`rpm_simulator::ble::SimDevice`]): advertisements, connections,
//! subscriptions, writes and reads behave as the devices define, and the
//! values go through the very same session, decode, normalize and store
//! path as those of a real radio.
//!
//! It implements the gateway's public
//! [`Transport`](rpm_gateway::ble::transport::Transport) trait from
//! outside the gateway: it lives here, with the tests that use it, so that
//! the shipped binary carries neither it nor the simulator.

use device_profiles::gatt::device::BleUuid;
use rpm_simulator::ble::SimDevice;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

use rpm_gateway::ble::transport::{
    Advertisement, BoxFuture, CharacteristicInfo, Link, LinkEvent, ScanEvent, Transport,
    TransportError,
};

#[derive(Default)]
struct State {
    devices: HashMap<String, SimDevice>,
    links: HashMap<String, mpsc::Sender<LinkEvent>>,
    scan: Option<mpsc::Sender<ScanEvent>>,
    adapter: bool,
}

/// The transport (give it to the BLE source).
#[derive(Clone)]
pub struct VirtualTransport {
    state: Arc<Mutex<State>>,
}

/// The control side (keep it in the test).
#[derive(Clone)]
pub struct VirtualRadio {
    state: Arc<Mutex<State>>,
}

/// A transport and its control handle.
pub fn virtual_radio() -> (VirtualTransport, VirtualRadio) {
    let state = Arc::new(Mutex::new(State {
        adapter: true,
        ..State::default()
    }));
    (
        VirtualTransport {
            state: state.clone(),
        },
        VirtualRadio { state },
    )
}

fn advertisement(d: &SimDevice) -> Advertisement {
    Advertisement {
        address: d.address.clone(),
        name: Some(d.name.clone()),
        services: d.advertised_services(),
        manufacturer_data: Default::default(),
        service_data: d.service_data(),
    }
}

impl VirtualRadio {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or replaces) a device and advertises it.
    pub fn add(&self, device: SimDevice) {
        let address = device.address.clone();
        self.lock().devices.insert(address.clone(), device);
        self.advertise(&address);
    }

    /// Sends one advertisement of the device.
    pub fn advertise(&self, address: &str) {
        let st = self.lock();
        if let (Some(d), Some(tx), true) = (st.devices.get(address), &st.scan, st.adapter) {
            let _ = tx.try_send(ScanEvent::Advertisement(advertisement(d)));
        }
    }

    /// Changes a device (add records, change its clock) and returns `f`'s result.
    pub fn with_device<R>(&self, address: &str, f: impl FnOnce(&mut SimDevice) -> R) -> Option<R> {
        self.lock().devices.get_mut(address).map(f)
    }

    /// Drops the device's link, as when it walks out of range.
    pub fn disconnect(&self, address: &str) {
        if let Some(tx) = self.lock().links.remove(address) {
            let _ = tx.try_send(LinkEvent::Disconnected);
        }
    }

    /// True while the gateway holds a link to the device.
    pub fn is_connected(&self, address: &str) -> bool {
        self.lock().links.contains_key(address)
    }

    /// Powers the adapter off (every link drops) or on.
    pub fn set_adapter(&self, available: bool) {
        let mut st = self.lock();
        st.adapter = available;
        if !available {
            for (_, tx) in st.links.drain() {
                let _ = tx.try_send(LinkEvent::Disconnected);
            }
        }
        if let Some(tx) = &st.scan {
            let _ = tx.try_send(ScanEvent::Adapter {
                available,
                detail: if available {
                    "virtual adapter on".into()
                } else {
                    "virtual adapter off".into()
                },
            });
        }
    }
}

impl Transport for VirtualTransport {
    fn scan(&self) -> BoxFuture<'_, Result<mpsc::Receiver<ScanEvent>, TransportError>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(256);
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let _ = tx.try_send(ScanEvent::Adapter {
                available: st.adapter,
                detail: "virtual adapter".into(),
            });
            for d in st.devices.values() {
                let _ = tx.try_send(ScanEvent::Advertisement(advertisement(d)));
            }
            st.scan = Some(tx);
            Ok(rx)
        })
    }

    fn connect<'a>(
        &'a self,
        address: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Link>, TransportError>> {
        Box::pin(async move {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if !st.adapter {
                return Err(TransportError::Unavailable("virtual adapter off".into()));
            }
            let d = st
                .devices
                .get_mut(address)
                .filter(|d| d.connectable())
                .ok_or_else(|| TransportError::Link(format!("{address} does not answer")))?;
            d.on_connect();
            let characteristics = d
                .services()
                .iter()
                .flat_map(|s| {
                    s.characteristics
                        .iter()
                        .map(|(uuid, p)| CharacteristicInfo {
                            service: s.uuid,
                            uuid: *uuid,
                            notify: p.notify,
                            indicate: p.indicate,
                            read: p.read,
                            write: p.write,
                        })
                })
                .collect();
            let (tx, rx) = mpsc::channel(1024);
            st.links.insert(address.to_string(), tx.clone());
            Ok(Box::new(VirtualLink {
                address: address.to_string(),
                state: self.state.clone(),
                characteristics,
                tx,
                rx: Some(rx),
            }) as Box<dyn Link>)
        })
    }
}

struct VirtualLink {
    address: String,
    state: Arc<Mutex<State>>,
    characteristics: Vec<CharacteristicInfo>,
    tx: mpsc::Sender<LinkEvent>,
    rx: Option<mpsc::Receiver<LinkEvent>>,
}

impl VirtualLink {
    /// Runs `f` on the device if this link is still the live one.
    fn device<R>(&self, f: impl FnOnce(&mut SimDevice) -> R) -> Result<R, TransportError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let live = st
            .links
            .get(&self.address)
            .is_some_and(|t| t.same_channel(&self.tx));
        match (live, st.devices.get_mut(&self.address)) {
            (true, Some(d)) => Ok(f(d)),
            _ => Err(TransportError::Link("not connected".into())),
        }
    }

    async fn emit(&self, values: Vec<(BleUuid, Vec<u8>)>) {
        for (uuid, value) in values {
            if self
                .tx
                .send(LinkEvent::Value { uuid, value })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

impl Link for VirtualLink {
    fn characteristics(&self) -> Vec<CharacteristicInfo> {
        self.characteristics.clone()
    }

    fn events(&mut self) -> Option<mpsc::Receiver<LinkEvent>> {
        self.rx.take()
    }

    fn subscribe(&self, uuid: BleUuid) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            if !self.characteristics.iter().any(|c| c.uuid == uuid) {
                return Err(TransportError::NoCharacteristic(uuid));
            }
            let values = self.device(|d| d.on_subscribe(uuid))?;
            self.emit(values).await;
            Ok(())
        })
    }

    fn read(&self, uuid: BleUuid) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        Box::pin(async move {
            self.device(|d| d.on_read(uuid))?
                .map_err(TransportError::Gatt)
        })
    }

    fn write(&self, uuid: BleUuid, value: Vec<u8>) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            let values = self
                .device(|d| d.on_write(uuid, &value))?
                .map_err(TransportError::Gatt)?;
            // Replies arrive after the write returns, as over the air.
            let tx = self.tx.clone();
            tokio::spawn(async move {
                for (uuid, value) in values {
                    if tx.send(LinkEvent::Value { uuid, value }).await.is_err() {
                        return;
                    }
                }
            });
            Ok(())
        })
    }

    fn disconnect(&self) -> BoxFuture<'_, Result<(), TransportError>> {
        Box::pin(async move {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if st
                .links
                .get(&self.address)
                .is_some_and(|t| t.same_channel(&self.tx))
            {
                st.links.remove(&self.address);
            }
            Ok(())
        })
    }
}
