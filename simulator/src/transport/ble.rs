//! Bluetooth LE: a scenario's cuffs, scales and glucometers become
//! simulated devices ([`SimDevice`]) of a BlueZ D-Bus emulator run by this
//! process, and each reading becomes a record in its device's memory, with
//! the device-clock time the scenario gives it.
//!
//! The gateway then takes the records as it takes a real device's: a cuff
//! or a scale replays its memory on every connection (0x2A35 / 0x2A9D
//! indications), a glucometer gives the records newer than the last one
//! the gateway has through RACP; a reading taken while the gateway listens
//! goes out at once (a live indication, in accelerated time). Devices hang
//! up once they have sent everything (`idle_disconnect`), as real ones do,
//! so the next readings wait in memory until the gateway reconnects.
//!
//! A reading counts as delivered once its value went out to a listening
//! gateway (the emulator reports `DELIVERED ADDRESS TAG`, the tag being the
//! reading's [`crate::plan::EmissionId`]); [`Transport::close`] waits for
//! every reading to be delivered. Pulse oximeters, thermometers and the
//! payload faults of [`crate::faults`] have no BLE form here: the caller
//! leaves them out of the plan ([`carries`]) and reports them as skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use device_profiles::gatt::bpm::PressureUnit;
use device_profiles::gatt::glucose::ConcentrationUnit;
use device_profiles::gatt::MeasurementSystem;
use device_profiles::{Metric, Unit};

use super::{Transport, TransportError};
use crate::ble::{BpRecord, EmptyKind, GlucoseRecord, SimDevice, StoredRecord, WeightRecord};
use crate::bluez::{Command, EmulatorConfig};
use crate::emission::{DeviceKind, Emission};
use crate::plan::{Outgoing, Planned};

/// BLE transport failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BleError {
    /// The emulator could not start, or stopped.
    #[error("bluez emulator: {0}")]
    Emulator(String),
    /// A reading this transport cannot carry.
    #[error("no BLE form: {0}")]
    Unsupported(String),
    /// Two devices hash to one address (rename one).
    #[error("devices `{0}` and `{1}` would share BLE address {2}")]
    AddressClash(String, String, String),
    /// Readings still in the devices' memories when the run ended (the
    /// gateway did not connect, or not in time): how many, and the devices.
    #[error("{0} reading(s) never went out to a gateway (devices {1})")]
    Undelivered(usize, String),
}

/// The simulated device kind of a scenario device kind, if it has one.
pub fn ble_kind(kind: DeviceKind) -> Option<EmptyKind> {
    match kind {
        DeviceKind::BpCuff => Some(EmptyKind::BpCuff),
        DeviceKind::Scale => Some(EmptyKind::Scale),
        DeviceKind::Glucometer => Some(EmptyKind::Glucometer),
        DeviceKind::PulseOximeter | DeviceKind::Thermometer | DeviceKind::Tablet => None,
    }
}

/// True when a planned reading goes over BLE: a kind with a BLE device,
/// and no payload fault.
pub fn carries(p: &Planned) -> bool {
    ble_kind(p.emission.device).is_some() && p.emission.fault.is_none()
}

/// The BLE address of a scenario device: a static random address (top
/// bits `11`) derived from the device id (FNV-1a), so that the gateway's
/// device registry can name it before the run (`rpm-sim scenarios
/// --gateway-config`).
pub fn address_of(device_id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    format!(
        "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
        b[2] | 0xC0,
        b[3],
        b[4],
        b[5],
        b[6],
        b[7]
    )
}

/// Meal codes of the Glucose Measurement Context, by the names the
/// simulator and the gateway use.
const MEALS: [&str; 5] = [
    "preprandial",
    "postprandial",
    "fasting",
    "casual",
    "bedtime",
];

fn value_of(e: &Emission, m: Metric) -> Option<(f64, Unit)> {
    e.values
        .iter()
        .find(|(x, _, _)| *x == m)
        .map(|(_, v, u)| (*v, *u))
}

fn unsupported(e: &Emission, what: &str) -> BleError {
    BleError::Unsupported(format!("{:?} reading: {what}", e.device))
}

/// The record a device stores for emission `e` (its device-clock time,
/// values and units as the device sends them), tagged with `tag`. GATT
/// date-times have whole seconds: sub-second parts are dropped.
pub fn record_of(e: &Emission, tag: u64) -> Result<StoredRecord, BleError> {
    if let Some(f) = e.fault {
        return Err(unsupported(e, &format!("payload fault {f:?}")));
    }
    let at = e.at.naive_utc();
    let tag = Some(tag);
    match e.device {
        DeviceKind::BpCuff => {
            let (systolic, unit) =
                value_of(e, Metric::Systolic).ok_or_else(|| unsupported(e, "no systolic"))?;
            let unit = match unit {
                Unit::MmHg => PressureUnit::MmHg,
                Unit::KPa => PressureUnit::KPa,
                u => return Err(unsupported(e, &format!("unit {}", u.ucum()))),
            };
            let (diastolic, _) =
                value_of(e, Metric::Diastolic).ok_or_else(|| unsupported(e, "no diastolic"))?;
            let mean = value_of(e, Metric::MeanArterialPressure)
                .map_or(diastolic + (systolic - diastolic) / 3.0, |v| v.0);
            let (pulse, _) =
                value_of(e, Metric::PulseRate).ok_or_else(|| unsupported(e, "no pulse"))?;
            Ok(StoredRecord::Bp(BpRecord {
                at,
                systolic,
                diastolic,
                mean,
                pulse,
                unit,
                irregular_pulse: e.annotations.get("irregular_pulse").map(String::as_str)
                    == Some("true"),
                tag,
            }))
        }
        DeviceKind::Scale => {
            let (weight, unit) =
                value_of(e, Metric::BodyWeight).ok_or_else(|| unsupported(e, "no weight"))?;
            let system = match unit {
                Unit::Kg => MeasurementSystem::Si,
                Unit::Lb => MeasurementSystem::Imperial,
                u => return Err(unsupported(e, &format!("unit {}", u.ucum()))),
            };
            Ok(StoredRecord::Weight(WeightRecord {
                at,
                weight,
                system,
                body_fat: None,
                tag,
            }))
        }
        DeviceKind::Glucometer => {
            let (value, unit) =
                value_of(e, Metric::BloodGlucose).ok_or_else(|| unsupported(e, "no glucose"))?;
            let unit = match unit {
                Unit::MgPerDl => ConcentrationUnit::KgPerL,
                Unit::MmolPerL => ConcentrationUnit::MolPerL,
                u => return Err(unsupported(e, &format!("unit {}", u.ucum()))),
            };
            let meal = e
                .annotations
                .get("meal")
                .and_then(|m| MEALS.iter().position(|x| x == m))
                .and_then(|i| u8::try_from(i + 1).ok());
            Ok(StoredRecord::Glucose(GlucoseRecord {
                sequence: 0,
                at,
                value,
                unit,
                meal,
                tag,
            }))
        }
        DeviceKind::PulseOximeter | DeviceKind::Thermometer | DeviceKind::Tablet => {
            Err(unsupported(e, "no simulated BLE device of this kind"))
        }
    }
}

/// How to run the emulator.
#[derive(Debug, Clone)]
pub struct BleOptions {
    /// The bus to serve (`unix:path=...`); the system bus when `None`.
    pub bus: Option<String>,
    /// Adapter name.
    pub adapter: String,
    /// A device hangs up after this long without sending.
    pub idle_disconnect: Duration,
    /// After the last delivery, how long to stay up so that the gateway
    /// reads the values already on the bus before `org.bluez` goes away.
    pub linger: Duration,
}

impl Default for BleOptions {
    fn default() -> Self {
        BleOptions {
            bus: None,
            adapter: "hci0".into(),
            idle_disconnect: Duration::from_millis(1500),
            linger: Duration::from_secs(1),
        }
    }
}

/// The BLE transport: an emulator thread hosting the devices.
pub struct BleTransport {
    commands: mpsc::Sender<Command>,
    /// Tag → device address of each reading not yet delivered.
    undelivered: Arc<Mutex<BTreeMap<u64, String>>>,
    emulator: Option<std::thread::JoinHandle<Result<(), String>>>,
    linger: Duration,
}

impl BleTransport {
    /// Starts the emulator with one empty device per `(device id, kind)` of
    /// a BLE kind (others are ignored) and returns once it owns `org.bluez`.
    /// Blocks for that moment (call it off the async executor). With
    /// `RPM_SIM_DEBUG_EVENTS` set, the emulator's event lines (addresses and
    /// reading tags only) go to stderr.
    pub fn start(devices: &[(String, DeviceKind)], o: &BleOptions) -> Result<Self, BleError> {
        let mut sims: Vec<SimDevice> = Vec::new();
        let mut ids: Vec<&str> = Vec::new();
        for (id, kind) in devices {
            let Some(k) = ble_kind(*kind) else { continue };
            let address = address_of(id);
            if let Some(j) = sims.iter().position(|s| s.address == address) {
                return Err(BleError::AddressClash(ids[j].into(), id.clone(), address));
            }
            sims.push(SimDevice::empty(&address, k));
            ids.push(id);
        }
        let cfg = EmulatorConfig {
            adapter: o.adapter.clone(),
            bus: o.bus.clone(),
            idle_disconnect: Some(o.idle_disconnect),
            quiet_when_sent: true,
            ..EmulatorConfig::default()
        };
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let (ev_tx, ev_rx) = mpsc::channel::<String>();
        let emulator = std::thread::Builder::new()
            .name("bluez-emulator".into())
            .spawn(move || crate::bluez::run(cfg, sims, cmd_rx, ev_tx).map_err(|e| e.to_string()))
            .map_err(|e| BleError::Emulator(e.to_string()))?;
        let undelivered = Arc::new(Mutex::new(BTreeMap::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let pending = undelivered.clone();
        std::thread::Builder::new()
            .name("bluez-events".into())
            .spawn(move || {
                for line in ev_rx {
                    if std::env::var_os("RPM_SIM_DEBUG_EVENTS").is_some() {
                        eprintln!("{:?} {line}", std::time::SystemTime::now());
                    }
                    if line == "READY" {
                        let _ = ready_tx.send(());
                    } else if let Some(rest) = line.strip_prefix("DELIVERED ") {
                        if let Some(tag) = rest.split(' ').nth(1).and_then(|t| t.parse().ok()) {
                            pending
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&tag);
                        }
                    } else {
                        // Device addresses only: no readings, no patients.
                        tracing::debug!(event = %line, "bluez emulator");
                    }
                }
            })
            .map_err(|e| BleError::Emulator(e.to_string()))?;
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let why = if emulator.is_finished() {
                match emulator.join() {
                    Ok(Err(e)) => e,
                    _ => "stopped".into(),
                }
            } else {
                "not ready within 10 s".into()
            };
            return Err(BleError::Emulator(why));
        }
        Ok(BleTransport {
            commands: cmd_tx,
            undelivered,
            emulator: Some(emulator),
            linger: o.linger,
        })
    }

    fn undelivered(&self) -> usize {
        self.undelivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    fn undelivered_devices(&self) -> String {
        let left = self.undelivered.lock().unwrap_or_else(|p| p.into_inner());
        let devices: BTreeSet<&str> = left.values().map(String::as_str).collect();
        devices.into_iter().collect::<Vec<_>>().join(", ")
    }

    fn stop(&mut self) -> Result<(), BleError> {
        let _ = self.commands.send(Command::Quit);
        match self.emulator.take().map(std::thread::JoinHandle::join) {
            Some(Ok(Err(e))) => Err(BleError::Emulator(e)),
            Some(Err(_)) => Err(BleError::Emulator("emulator thread panicked".into())),
            _ => Ok(()),
        }
    }
}

impl Drop for BleTransport {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

impl Transport for BleTransport {
    fn name(&self) -> &'static str {
        "ble"
    }

    /// Stores the reading in its device's memory. A duplicate publish
    /// (`copy > 0`) stores nothing: a device holds a measurement once, and
    /// re-sends it with its memory on every connection anyway.
    async fn send(&mut self, o: &Outgoing) -> Result<(), TransportError> {
        if o.copy > 0 {
            return Ok(());
        }
        let record = record_of(&o.emission, o.id.0)?;
        let address = address_of(&o.emission.device_id);
        self.undelivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(o.id.0, address.clone());
        self.commands
            .send(Command::Store(address, Box::new(record)))
            .map_err(|_| BleError::Emulator("stopped".into()))?;
        Ok(())
    }

    /// Waits up to `timeout` for every reading to reach the gateway, stays
    /// up for the linger time, then stops the emulator.
    async fn close(mut self, timeout: Duration) -> Result<(), TransportError> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.undelivered() > 0 && tokio::time::Instant::now() < deadline {
            if self.emulator.as_ref().is_some_and(|t| t.is_finished()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(self.linger).await;
        let left = self.undelivered();
        let devices = self.undelivered_devices();
        let stopped = tokio::task::spawn_blocking(move || self.stop())
            .await
            .map_err(|e| BleError::Emulator(e.to_string()))?;
        stopped?;
        if left > 0 {
            return Err(BleError::Undelivered(left, devices).into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ble::Tagged;
    use chrono::{TimeZone, Utc};
    use device_profiles::decoded::{DeviceTime, RawValue};
    use device_profiles::gatt::device::BleUuid;
    use device_profiles::gatt::{
        decode_characteristic, merge_context, uuid as u, GlucoseMeasurementContext, Racp,
    };

    fn emission(device: DeviceKind, values: Vec<(Metric, f64, Unit)>) -> Emission {
        Emission {
            at: Utc.with_ymd_and_hms(2026, 3, 2, 7, 15, 42).unwrap(),
            patient_id: "p".into(),
            device_id: "dev-1".into(),
            device,
            values,
            annotations: BTreeMap::new(),
            sequence: Some(3),
            fault: None,
        }
    }

    /// Decodes what a device sends as the gateway's decoders see it:
    /// (metric, value, unit, device time), and `("meal", 0, name, time)`.
    fn decoded(values: &[Tagged]) -> Vec<(String, f64, String, String)> {
        let mut ms = Vec::new();
        for (uuid, bytes, _) in values {
            let short = uuid.as_u16().unwrap();
            if short == u::GLUCOSE_MEASUREMENT_CONTEXT {
                let c = GlucoseMeasurementContext::decode(bytes).unwrap();
                assert!(merge_context(&mut ms, &c));
                continue;
            }
            ms.extend(
                decode_characteristic(short, bytes)
                    .unwrap()
                    .to_measurements(),
            );
        }
        let mut out = Vec::new();
        for m in ms {
            let at = match m.time {
                Some(DeviceTime::Local(t)) => t.to_string(),
                t => format!("{t:?}"),
            };
            for c in &m.components {
                if let RawValue::Number(v) = c.value {
                    out.push((
                        c.metric.name().to_string(),
                        v,
                        c.unit.clone().unwrap_or_default(),
                        at.clone(),
                    ));
                }
            }
            if let Some(meal) = m.annotations.get("meal") {
                out.push(("meal".into(), 0.0, meal.to_string(), at.clone()));
            }
        }
        out
    }

    #[test]
    fn bp_reading_becomes_a_cuff_record_in_its_unit() {
        let mut e = emission(
            DeviceKind::BpCuff,
            vec![
                (Metric::Systolic, 18.1, Unit::KPa),
                (Metric::Diastolic, 11.2, Unit::KPa),
                (Metric::MeanArterialPressure, 13.5, Unit::KPa),
                (Metric::PulseRate, 77.0, Unit::PerMin),
            ],
        );
        e.annotations
            .insert("irregular_pulse".into(), "true".into());
        let r = record_of(&e, 9).unwrap();
        let StoredRecord::Bp(bp) = &r else {
            panic!("{r:?}")
        };
        assert_eq!(bp.unit, PressureUnit::KPa);
        assert!(bp.irregular_pulse);
        assert_eq!(bp.tag, Some(9));
        let mut cuff = SimDevice::empty("C0:00:00:00:00:01", EmptyKind::BpCuff);
        let live = cuff.store(r).unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].2, Some(9));
        let d = decoded(&live);
        assert!(
            d.contains(&(
                "systolic".into(),
                18.1,
                "kPa".into(),
                "2026-03-02 07:15:42".into()
            )),
            "{d:?}"
        );
        assert!(d.iter().any(|x| x.0 == "pulse_rate" && x.1 == 77.0));
        // The memory replays it on the next subscription.
        let replay = cuff.on_subscribe_tagged(BleUuid::from_u16(u::BLOOD_PRESSURE_MEASUREMENT));
        assert_eq!(replay, live);
    }

    #[test]
    fn weighing_keeps_its_unit_and_scale_has_no_body_composition() {
        let e = emission(
            DeviceKind::Scale,
            vec![(Metric::BodyWeight, 185.2, Unit::Lb)],
        );
        let mut scale = SimDevice::empty("C0:00:00:00:00:02", EmptyKind::Scale);
        let live = scale.store(record_of(&e, 1).unwrap()).unwrap();
        let d = decoded(&live);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].0, "body_weight");
        assert!((d[0].1 - 185.2).abs() < 0.006, "{d:?}");
        assert_eq!(d[0].2, "[lb_av]");
        assert_eq!(scale.services().len(), 1);
    }

    #[test]
    fn glucose_readings_are_racp_records_with_meal_context() {
        let mut g = SimDevice::empty("C0:00:00:00:00:03", EmptyKind::Glucometer);
        for (i, (v, meal)) in [(5.4, "fasting"), (7.9, "postprandial")].iter().enumerate() {
            let mut e = emission(
                DeviceKind::Glucometer,
                vec![(Metric::BloodGlucose, *v, Unit::MmolPerL)],
            );
            e.annotations.insert("meal".into(), meal.to_string());
            g.store(record_of(&e, 10 + i as u64).unwrap()).unwrap();
        }
        let racp = BleUuid::from_u16(u::RECORD_ACCESS_CONTROL_POINT);
        // Records ≥ 2: the second one, its context, the response.
        let out = g
            .on_write_tagged(racp, &Racp::report_from(2).encode())
            .unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].2, Some(11));
        let d = decoded(&out[..2]);
        assert!(
            d.iter()
                .any(|x| x.0 == "blood_glucose" && (x.1 - 7.9).abs() < 1e-9 && x.2 == "mmol/L"),
            "{d:?}"
        );
        assert!(
            d.iter().any(|x| x.0 == "meal" && x.2 == "postprandial"),
            "{d:?}"
        );
        assert_eq!(out[2].2, None);
    }

    #[test]
    fn kinds_and_faults_without_a_ble_form_are_refused() {
        let e = emission(
            DeviceKind::Thermometer,
            vec![(Metric::BodyTemperature, 37.0, Unit::Celsius)],
        );
        assert!(record_of(&e, 0).is_err());
        let mut e = emission(
            DeviceKind::Scale,
            vec![(Metric::BodyWeight, 80.0, Unit::Kg)],
        );
        e.fault = Some(crate::emission::Fault::Malformed);
        assert!(record_of(&e, 0).is_err());
        assert!(ble_kind(DeviceKind::PulseOximeter).is_none());
    }

    #[test]
    fn addresses_are_stable_static_random_and_distinct() {
        let a = address_of("bp7-0042");
        assert_eq!(a, address_of("bp7-0042"));
        assert_ne!(a, address_of("bp7-0107"));
        assert!(u8::from_str_radix(&a[..2], 16).unwrap() >= 0xC0);
        assert_eq!(
            device_profiles::gatt::device::normalize_address(&a).as_deref(),
            Some(a.as_str())
        );
    }

    /// Every bundled scenario: each BLE reading maps to a record, and no
    /// two devices share an address.
    #[test]
    fn every_bundled_ble_reading_maps() {
        let mut seen = BTreeMap::new();
        for s in crate::scenario::Scenario::all_bundled().unwrap() {
            for d in s.registry() {
                let a = address_of(&d.device_id);
                if let Some(other) = seen.insert(a.clone(), d.device_id.clone()) {
                    assert_eq!(other, d.device_id, "{a}");
                }
            }
            for p in s.plan().readings.iter().filter(|p| carries(p)) {
                record_of(&p.emission, p.id.0).unwrap();
            }
        }
    }
}
