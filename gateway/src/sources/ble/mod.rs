//! The Bluetooth LE source.
//!
//! Scans continuously and picks up devices that advertise a SIG health
//! service, match a BLE device profile, are configured under
//! `[[sources.ble.devices]]`, or are in the device registry. Broadcast-only
//! devices (scales with the reading in their service data) are decoded from
//! the advertisement; the others get a [`session`] each (several at once, up
//! to `max_connections`), reconnected with backoff after a failure.
//!
//! Nothing here blocks the gateway: without a D-Bus system bus, BlueZ or an
//! adapter, the source says so (log, `rpm_ble_adapter_available 0`), keeps
//! retrying with backoff, and every other source keeps running.
//!
//! The radio is behind [`transport::Transport`]: BlueZ through btleplug
//! ([`btleplug`], feature `ble`) in the product, or, in the tests, an
//! in-process radio over the simulator's devices (the tests crate's
//! `virtual_transport`, `tests/src/virtual_transport.rs`).

#[cfg(feature = "ble")]
pub mod btleplug;
pub mod config;
#[cfg(feature = "ble")]
pub mod pairing;
pub mod session;
pub mod transport;

use chrono::FixedOffset;
use device_profiles::gatt::device::{
    advertises_health_service, normalize_address, AdvertisementKey, AdvertisementView, BleUuid,
    DeviceProfile, DeviceProfileSet,
};
use device_profiles::Source;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::pipeline::{BleInput, Pipeline};
use crate::store::{Store, Writer};
use config::BleConfig;
use transport::{Advertisement, ScanEvent, Transport};

/// What sessions share.
pub struct Shared {
    /// Settings.
    pub cfg: BleConfig,
    /// Decode → normalize.
    pub pipeline: Arc<Pipeline>,
    /// The store writer (readings, quarantine).
    pub writer: Writer,
    /// Offset of device-local wall times (`normalize.device_utc_offset`).
    pub local_offset: FixedOffset,
    /// A connection of its own for BLE bookkeeping (sequence, link state,
    /// registry lookups); WAL lets it run beside the writer.
    store: Option<Arc<Mutex<Store>>>,
}

impl Shared {
    fn metrics(&self) -> &Metrics {
        &self.pipeline.metrics
    }

    fn pipeline_clock_offset(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::from(self.local_offset.local_minus_utc()))
    }

    async fn with_store<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<R, crate::store::StoreError> + Send + 'static,
    ) -> Option<R> {
        let store = self.store.clone()?;
        let r = tokio::task::spawn_blocking(move || {
            let s = store.lock().unwrap_or_else(|p| p.into_inner());
            f(&s)
        })
        .await
        .ok()?;
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "ble bookkeeping in the store failed");
                None
            }
        }
    }

    async fn last_sequence(&self, address: &str) -> Option<u16> {
        let a = address.to_string();
        self.with_store(move |s| s.ble_last_sequence(&a))
            .await
            .flatten()
    }

    async fn set_sequence(&self, address: &str, seq: u16) {
        let a = address.to_string();
        self.with_store(move |s| s.ble_set_sequence(&a, seq)).await;
    }

    async fn sequence_time(&self, address: &str, seq: u16) -> Option<i64> {
        let a = address.to_string();
        self.with_store(move |s| s.ble_sequence_time(&a, seq))
            .await
            .flatten()
    }

    async fn reset_sequence(&self, address: &str) -> bool {
        let a = address.to_string();
        self.with_store(move |s| s.ble_reset_sequence(&a))
            .await
            .is_some()
    }

    async fn set_link(&self, address: &str, state: &'static str, battery: Option<u8>) {
        let a = address.to_string();
        self.with_store(move |s| s.ble_set_link(&a, state, battery))
            .await;
    }

    async fn is_registered(&self, address: &str) -> bool {
        let a = address.to_string();
        self.with_store(move |s| s.is_registered(&a))
            .await
            .unwrap_or(false)
    }
}

/// The BLE source.
pub struct BleSource {
    shared: Arc<Shared>,
    profiles: DeviceProfileSet,
    transport: Arc<dyn Transport>,
}

/// Longest wait between attempts on a device that must be paired first.
const PAIRING_RETRY: Duration = Duration::from_secs(10);

/// Per-device scheduling state.
struct DeviceState {
    backoff: Backoff,
    next_attempt: Instant,
}

impl BleSource {
    /// A source over `transport`. `store_path` opens the bookkeeping
    /// connection (RACP sequences, link state, registry lookups).
    pub fn new(
        cfg: BleConfig,
        profiles: DeviceProfileSet,
        transport: Arc<dyn Transport>,
        pipeline: Arc<Pipeline>,
        writer: Writer,
        store_path: Option<PathBuf>,
        local_offset: FixedOffset,
    ) -> Self {
        let store = store_path.and_then(|p| match Store::open(&p) {
            Ok(s) => Some(Arc::new(Mutex::new(s))),
            Err(e) => {
                tracing::error!(error = %e, "ble: cannot open the store for bookkeeping; glucose records will be requested in full");
                None
            }
        });
        crate::pipeline::ble::set_profiles(profiles.clone());
        BleSource {
            shared: Arc::new(Shared {
                cfg,
                pipeline,
                writer,
                local_offset,
                store,
            }),
            profiles,
            transport,
        }
    }

    fn profile_for(&self, ad: &Advertisement, address: &str) -> Option<DeviceProfile> {
        let by_config = self
            .shared
            .cfg
            .devices
            .iter()
            .find(|d| normalize_address(&d.address).as_deref() == Some(address));
        if let Some(d) = by_config {
            return d
                .profile
                .as_deref()
                .and_then(|p| self.profiles.by_name(p))
                .cloned();
        }
        let view = AdvertisementView {
            address,
            name: ad.name.as_deref(),
            services: &ad.services,
            manufacturer_ids: ad.manufacturer_data.keys().copied().collect(),
            service_data: ad.service_data.keys().copied().collect(),
        };
        self.profiles.for_advertisement(&view).cloned()
    }

    /// Runs until `shutdown` resolves; sessions are then stopped and their
    /// in-flight commits awaited.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let (stop_tx, stop_rx) = watch::channel(false);
        let min = self.shared.cfg.reconnect_min_backoff;
        let max = self.shared.cfg.reconnect_max_backoff;
        let extra_services: Vec<BleUuid> = self
            .shared
            .cfg
            .scan_services
            .iter()
            .filter_map(|s| BleUuid::parse(s))
            .collect();

        // Start scanning; the transport reports adapter trouble as events,
        // but starting itself may fail (no D-Bus at all): retry with backoff.
        let mut backoff = Backoff::new(min, max);
        let mut scan = loop {
            let attempt = tokio::select! {
                _ = &mut shutdown => return,
                r = self.transport.scan() => r,
            };
            match attempt {
                Ok(rx) => break rx,
                Err(e) => {
                    self.shared.metrics().set_ble_adapter(false);
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "bluetooth unavailable; the BLE source is idle and retries, other sources keep running");
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        };

        let mut sessions: JoinSet<(String, bool, bool)> = JoinSet::new();
        let mut active: HashSet<String> = HashSet::new();
        let mut devices: HashMap<String, DeviceState> = HashMap::new();
        let (adv_tx, adv_rx) = mpsc::channel(1024);
        let adv_acker = tokio::spawn(ack_advertisements(self.shared.clone(), adv_rx));
        let mut recent: HashMap<(String, String), Vec<u8>> = HashMap::new();
        // Registry answers, cached: a busy radio hears many strangers.
        let mut registered: HashMap<String, (bool, Instant)> = HashMap::new();

        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(done) = sessions.join_next(), if !sessions.is_empty() => {
                    if let Ok((address, ok, unpaired)) = done {
                        active.remove(&address);
                        let st = devices.entry(address).or_insert_with(|| DeviceState { backoff: Backoff::new(min.saturating_mul(2), max), next_attempt: Instant::now() });
                        // A session that worked may reconnect soon; one that
                        // failed waits longer each time. A device waiting to
                        // be paired is tried at least every PAIRING_RETRY, so
                        // that it is taken soon after the installer pairs it.
                        let cap = if unpaired { max.min(PAIRING_RETRY.max(min)) } else { max };
                        let wait = if ok {
                            st.backoff.reset();
                            min
                        } else {
                            st.backoff.next_delay_within(cap)
                        };
                        st.next_attempt = Instant::now() + wait;
                    }
                }
                ev = scan.recv() => {
                    let Some(ev) = ev else {
                        tracing::warn!("ble scan ended; the BLE source stops");
                        break;
                    };
                    match ev {
                        ScanEvent::Adapter { available, detail } => {
                            self.shared.metrics().set_ble_adapter(available);
                            if available {
                                tracing::info!(detail = %detail, "bluetooth adapter available; scanning");
                            } else {
                                tracing::warn!(detail = %detail, "bluetooth unavailable; the BLE source waits and retries, other sources keep running");
                            }
                        }
                        ScanEvent::Advertisement(ad) => {
                            let Some(address) = normalize_address(&ad.address) else { continue };
                            let profile = self.profile_for(&ad, &address);
                            if let Some(p) = &profile {
                                self.advertised(p, &ad, &address, &adv_tx, &mut recent).await;
                            }
                            let wanted = match &profile {
                                Some(p) => p.connect,
                                None => advertises_health_service(&ad.services)
                                    || ad.services.iter().any(|s| extra_services.contains(s))
                                    || self.shared.cfg.devices.iter().any(|d| normalize_address(&d.address).as_deref() == Some(address.as_str()))
                                    || self.registered(&address, &mut registered).await,
                            };
                            let due = devices.get(&address).is_none_or(|s| Instant::now() >= s.next_attempt);
                            if !wanted || !due || active.contains(&address) || active.len() >= self.shared.cfg.max_connections {
                                continue;
                            }
                            active.insert(address.clone());
                            let (shared, transport, stop) = (self.shared.clone(), self.transport.clone(), stop_rx.clone());
                            sessions.spawn(async move {
                                let r = session::run(shared, transport, address.clone(), profile, stop).await;
                                if let Err(e) = &r {
                                    // The error text may name the device: debug only.
                                    tracing::debug!(error = %e, device = %address, "ble session failed; will retry with backoff");
                                }
                                let unpaired = matches!(r, Err(transport::TransportError::PairingRequired));
                                (address, r.is_ok(), unpaired)
                            });
                        }
                    }
                }
            }
        }

        tracing::info!("ble source draining");
        let _ = stop_tx.send(true);
        let drain = async { while sessions.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(15), drain)
            .await
            .is_err()
        {
            sessions.abort_all();
        }
        drop(adv_tx);
        let _ = adv_acker.await;
        self.shared.metrics().set_ble_adapter(false);
        tracing::info!("ble source stopped");
    }

    /// Whether the registry knows the device (cached for 30 s).
    async fn registered(
        &self,
        address: &str,
        cache: &mut HashMap<String, (bool, Instant)>,
    ) -> bool {
        if let Some((known, at)) = cache.get(address) {
            if at.elapsed() < Duration::from_secs(30) {
                return *known;
            }
        }
        let known = self.shared.is_registered(address).await;
        if cache.len() > 4096 {
            cache.clear();
        }
        cache.insert(address.to_string(), (known, Instant::now()));
        known
    }

    /// Decodes readings broadcast in the advertisement. The same bytes
    /// advertised again (scales repeat for minutes) are not resubmitted;
    /// a reading that does reach the store twice has the same id anyway.
    async fn advertised(
        &self,
        profile: &DeviceProfile,
        ad: &Advertisement,
        address: &str,
        tx: &mpsc::Sender<(
            String,
            String,
            tokio::sync::oneshot::Receiver<crate::store::writer::CommitResult>,
        )>,
        recent: &mut HashMap<(String, String), Vec<u8>>,
    ) {
        for (key, layout) in &profile.advertisements {
            let (origin, bytes) = match key {
                AdvertisementKey::ServiceData(u) => {
                    (format!("adv/{}", u.short_name()), ad.service_data.get(u))
                }
                AdvertisementKey::Manufacturer(m) => {
                    (format!("adv/m{m:04x}"), ad.manufacturer_data.get(m))
                }
            };
            let Some(bytes) = bytes else { continue };
            let k = (address.to_string(), origin.clone());
            if recent.get(&k) == Some(bytes) {
                continue;
            }
            let items = self.shared.pipeline.ble_input(
                &BleInput::Layout {
                    layout,
                    key: &origin,
                    bytes,
                },
                address,
                chrono::Utc::now(),
            );
            if items.is_empty() {
                continue;
            }
            if recent.len() > 4096 {
                recent.clear();
            }
            recent.insert(k, bytes.clone());
            match self.shared.writer.submit(items).await {
                Ok(rx) => {
                    let _ = tx.send((address.to_string(), origin, rx)).await;
                }
                Err(e) => tracing::error!(error = %e, "store writer gone"),
            }
        }
    }
}

async fn ack_advertisements(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<(
        String,
        String,
        tokio::sync::oneshot::Receiver<crate::store::writer::CommitResult>,
    )>,
) {
    while let Some((_, _, commit)) = rx.recv().await {
        match commit.await {
            Ok(Ok(outcomes)) => shared.pipeline.record(Source::Ble, &outcomes),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "advertised reading not committed; it is taken again when re-advertised after a restart")
            }
            Err(_) => {}
        }
    }
}
