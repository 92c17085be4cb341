//! Simulated Bluetooth LE health devices: their GATT table, advertisement,
//! and behaviour (stored-memory replay, Record Access Control Point, Current
//! Time, two-packet body composition, broadcast-only scales), with values
//! encoded by the very GATT encoders of `device-profiles`.
//!
//! A [`SimDevice`] knows nothing about transports: the gateway's virtual
//! transport and the BlueZ D-Bus emulator (`bluez` module) both host the
//! same devices, so a test over either exercises the same device behaviour.
//!
//! Scenario runs over BLE start devices empty ([`SimDevice::empty`]) and
//! [`SimDevice::store`] each reading as it is taken; every value a device
//! sends can carry the tag of the record it comes from ([`Tagged`]), so the
//! run knows which readings went out.

use chrono::{Duration, NaiveDateTime, Utc};
use device_profiles::gatt::bpm::{BloodPressureMeasurement, MeasurementStatus, PressureUnit};
use device_profiles::gatt::device::BleUuid;
use device_profiles::gatt::glucose::{
    ConcentrationUnit, GlucoseConcentration, GlucoseMeasurement, GlucoseMeasurementContext,
    GlucoseType, SampleLocation,
};
use device_profiles::gatt::racp::{OpCode, Operand, Operator, Racp, ResponseCode};
use device_profiles::gatt::uuid as u;
use device_profiles::gatt::{
    BodyCompositionMeasurement, CurrentTime, DateTime, MeasurementSystem, Sfloat, WeightMeasurement,
};
use std::collections::BTreeMap;

/// GATT properties of a simulated characteristic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Props {
    /// read
    pub read: bool,
    /// write (with response)
    pub write: bool,
    /// notify
    pub notify: bool,
    /// indicate
    pub indicate: bool,
}

impl Props {
    const INDICATE: Props = Props {
        read: false,
        write: false,
        notify: false,
        indicate: true,
    };
    const NOTIFY: Props = Props {
        read: false,
        write: false,
        notify: true,
        indicate: false,
    };
    const RACP: Props = Props {
        read: false,
        write: true,
        notify: false,
        indicate: true,
    };
    const READ_WRITE: Props = Props {
        read: true,
        write: true,
        notify: true,
        indicate: false,
    };
    const READ_ONLY: Props = Props {
        read: true,
        write: false,
        notify: false,
        indicate: false,
    };
    const READ: Props = Props {
        read: true,
        write: false,
        notify: true,
        indicate: false,
    };

    /// BlueZ flag strings (GattCharacteristic1.Flags).
    pub fn bluez_flags(self) -> Vec<&'static str> {
        let mut f = Vec::new();
        if self.read {
            f.push("read");
        }
        if self.write {
            f.push("write");
        }
        if self.notify {
            f.push("notify");
        }
        if self.indicate {
            f.push("indicate");
        }
        f
    }
}

/// How a device that requires bonding pairs (the host's agent is asked
/// accordingly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairingMethod {
    /// No user interaction.
    JustWorks,
    /// The device shows this passkey; the host must enter it.
    Passkey(u32),
    /// Both show this number; the host confirms (numeric comparison).
    Confirm(u32),
}

/// Device Information characteristics (service 0x180A), in
/// [`SimDevice::info`] order.
pub const DEVICE_INFORMATION: [u16; 4] = [0x2A29, 0x2A24, 0x2A25, 0x2A26];

/// One GATT service of a simulated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimService {
    /// Service UUID.
    pub uuid: BleUuid,
    /// Characteristics.
    pub characteristics: Vec<(BleUuid, Props)>,
}

/// A value the device sends: (characteristic, bytes).
pub type Emission = (BleUuid, Vec<u8>);

/// A value the device sends with the tag of the stored record it carries
/// (`None` for values of no tagged record: RACP responses, test memory).
/// Tags let a scenario run tell which of its readings went over the air.
pub type Tagged = (BleUuid, Vec<u8>, Option<u64>);

/// A blood-pressure measurement in a cuff's memory.
#[derive(Debug, Clone, PartialEq)]
pub struct BpRecord {
    /// Device-clock time of the measurement.
    pub at: NaiveDateTime,
    /// Systolic, in `unit`.
    pub systolic: f64,
    /// Diastolic, in `unit`.
    pub diastolic: f64,
    /// Mean arterial pressure, in `unit`.
    pub mean: f64,
    /// Pulse rate, /min.
    pub pulse: f64,
    /// mmHg or kPa (the characteristic's unit flag).
    pub unit: PressureUnit,
    /// Measurement Status bit 2.
    pub irregular_pulse: bool,
    /// The reading this record carries (scenario runs).
    pub tag: Option<u64>,
}

/// A weighing in a scale's memory.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightRecord {
    /// Device-clock time.
    pub at: NaiveDateTime,
    /// Weight, in kg (SI) or lb (Imperial).
    pub weight: f64,
    /// SI or Imperial (the characteristic's unit flag).
    pub system: MeasurementSystem,
    /// Body fat %, sent as Body Composition (0x2A9C, two packets) when the
    /// scale has that service.
    pub body_fat: Option<f64>,
    /// The reading this record carries.
    pub tag: Option<u64>,
}

/// A glucose record in a glucometer's memory (given only through RACP, or
/// notified as it is taken while the collector listens).
#[derive(Debug, Clone, PartialEq)]
pub struct GlucoseRecord {
    /// Sequence number.
    pub sequence: u16,
    /// Device-clock time.
    pub at: NaiveDateTime,
    /// Concentration in mg/dL ([`ConcentrationUnit::KgPerL`]) or mmol/L
    /// ([`ConcentrationUnit::MolPerL`]).
    pub value: f64,
    /// kg/L or mol/L on the wire.
    pub unit: ConcentrationUnit,
    /// Meal code of a Glucose Measurement Context (1 preprandial, 2
    /// postprandial, 3 fasting, 4 casual, 5 bedtime).
    pub meal: Option<u8>,
    /// The reading this record carries.
    pub tag: Option<u64>,
}

/// A measurement to add to a device's memory.
#[derive(Debug, Clone, PartialEq)]
pub enum StoredRecord {
    /// To a cuff.
    Bp(BpRecord),
    /// To a scale.
    Weight(WeightRecord),
    /// To a glucometer (its sequence is assigned on storing).
    Glucose(GlucoseRecord),
}

/// What kind of device, with its stored memory.
#[derive(Debug, Clone, PartialEq)]
pub enum SimKind {
    /// Blood pressure cuff: replays its whole memory (0x2A35 indications)
    /// on every subscription, as real cuffs do.
    BpCuff {
        /// Stored measurements, oldest first.
        memory: Vec<BpRecord>,
        /// raw values to send after the memory (special values, garbage)
        extra: Vec<Vec<u8>>,
    },
    /// Weight scale with body composition (0x2A9D, 0x2A9C in two packets).
    Scale {
        /// Stored weighings, oldest first.
        memory: Vec<WeightRecord>,
        /// Offers Body Composition (0x181B) beside Weight Scale.
        body_composition: bool,
    },
    /// Glucometer: sends records only when asked through RACP.
    Glucometer {
        /// Stored records, by ascending sequence.
        records: Vec<GlucoseRecord>,
    },
    /// Any standard device: a service whose characteristics send the given
    /// values when subscribed (thermometer, oximeter, heart rate, ...).
    Generic {
        /// 16-bit service UUID
        service: u16,
        /// (16-bit characteristic UUID, indicate (else notify), values sent)
        characteristics: Vec<(u16, bool, Vec<Vec<u8>>)>,
    },
    /// Broadcast-only scale (Xiaomi Mi Scale V1 service data 0x181D).
    AdvertisingScale {
        /// (time, kg)
        reading: (NaiveDateTime, f64),
    },
}

/// A simulated device.
#[derive(Debug, Clone, PartialEq)]
pub struct SimDevice {
    /// `AA:BB:CC:DD:EE:FF`.
    pub address: String,
    /// Local name.
    pub name: String,
    /// Kind and memory.
    pub kind: SimKind,
    /// Device clock minus true time (wrong clocks are common).
    pub clock_offset: Duration,
    /// Offers a Current Time characteristic (0x1805/0x2A2B): writable when
    /// `Some(true)`, read-only when `Some(false)`.
    pub current_time: Option<bool>,
    /// Gives its measurements only to a bonded host, paired this way.
    pub bonding: Option<PairingMethod>,
    /// Device Information (0x180A): manufacturer, model, serial, firmware.
    pub info: Option<[String; 4]>,
    /// RACP requests received (tests check what the gateway asked for).
    pub racp_log: Vec<Vec<u8>>,
    /// Connections accepted.
    pub connections: u32,
}

fn dt(t: NaiveDateTime) -> Option<DateTime> {
    DateTime::from_naive(t)
}

fn sf(v: f64, decimals: u8) -> Sfloat {
    Sfloat::from_f64(v, decimals)
        .unwrap_or(Sfloat::from_special(device_profiles::SpecialValue::NaN))
}

impl SimDevice {
    fn new(address: &str, name: &str, kind: SimKind) -> Self {
        SimDevice {
            address: address.to_string(),
            name: name.to_string(),
            kind,
            clock_offset: Duration::zero(),
            current_time: None,
            bonding: None,
            info: None,
            racp_log: Vec::new(),
            connections: 0,
        }
    }

    /// A BP cuff with `n` stored measurements, one per hour up to now.
    pub fn bp_cuff(address: &str, n: usize) -> Self {
        let now = Utc::now().naive_utc();
        let memory = (0..n)
            .map(|i| BpRecord {
                at: now - Duration::hours((n - i) as i64),
                systolic: 120.0 + i as f64,
                diastolic: 80.0,
                mean: 93.0,
                pulse: 70.0,
                unit: PressureUnit::MmHg,
                irregular_pulse: false,
                tag: None,
            })
            .collect();
        SimDevice::new(
            address,
            "BP-Cuff",
            SimKind::BpCuff {
                memory,
                extra: Vec::new(),
            },
        )
    }

    /// A scale with `n` stored weighings (with body composition).
    pub fn scale(address: &str, n: usize) -> Self {
        let now = Utc::now().naive_utc();
        let memory = (0..n)
            .map(|i| WeightRecord {
                at: now - Duration::hours((n - i) as i64),
                weight: 80.0 + i as f64 * 0.5,
                system: MeasurementSystem::Si,
                body_fat: Some(25.0),
                tag: None,
            })
            .collect();
        SimDevice::new(
            address,
            "Scale",
            SimKind::Scale {
                memory,
                body_composition: true,
            },
        )
    }

    /// A glucometer with records 1..=n; odd ones carry a meal context.
    pub fn glucometer(address: &str, n: u16) -> Self {
        let now = Utc::now().naive_utc();
        let records = (1..=n)
            .map(|s| GlucoseRecord {
                sequence: s,
                at: now - Duration::hours(i64::from(n - s + 1)),
                value: 90.0 + f64::from(s % 100),
                unit: ConcentrationUnit::KgPerL,
                meal: (s % 2 == 1).then_some(1),
                tag: None,
            })
            .collect();
        SimDevice::new(address, "Glucometer", SimKind::Glucometer { records })
    }

    /// A cuff, a weight-only scale or a glucometer with an empty memory,
    /// filled later with [`SimDevice::store`] (scenario runs).
    pub fn empty(address: &str, kind: EmptyKind) -> Self {
        let (name, kind) = match kind {
            EmptyKind::BpCuff => (
                "BP-Cuff",
                SimKind::BpCuff {
                    memory: Vec::new(),
                    extra: Vec::new(),
                },
            ),
            EmptyKind::Scale => (
                "Scale",
                SimKind::Scale {
                    memory: Vec::new(),
                    body_composition: false,
                },
            ),
            EmptyKind::Glucometer => (
                "Glucometer",
                SimKind::Glucometer {
                    records: Vec::new(),
                },
            ),
        };
        SimDevice::new(address, name, kind)
    }

    /// A standard device of any other kind (see [`SimKind::Generic`]).
    pub fn generic(
        address: &str,
        name: &str,
        service: u16,
        characteristics: Vec<(u16, bool, Vec<Vec<u8>>)>,
    ) -> Self {
        SimDevice::new(
            address,
            name,
            SimKind::Generic {
                service,
                characteristics,
            },
        )
    }

    /// A Xiaomi-style broadcast-only scale.
    pub fn advertising_scale(address: &str, kg: f64) -> Self {
        let t = Utc::now().naive_utc() - Duration::minutes(1);
        SimDevice::new(
            address,
            "MI SCALE2",
            SimKind::AdvertisingScale { reading: (t, kg) },
        )
    }

    /// Adds a new glucose record (next sequence number); returns it.
    pub fn add_glucose(&mut self, mg_dl: f64) -> Option<u16> {
        let at = Utc::now().naive_utc() + self.clock_offset;
        self.store(StoredRecord::Glucose(GlucoseRecord {
            sequence: 0,
            at,
            value: mg_dl,
            unit: ConcentrationUnit::KgPerL,
            meal: None,
            tag: None,
        }))
        .ok()?;
        match &self.kind {
            SimKind::Glucometer { records } => records.last().map(|r| r.sequence),
            _ => None,
        }
    }

    /// Adds a new BP measurement taken now (device clock).
    pub fn add_bp(&mut self, systolic: f64, diastolic: f64) {
        let at = Utc::now().naive_utc() + self.clock_offset;
        let _ = self.store(StoredRecord::Bp(BpRecord {
            at,
            systolic,
            diastolic,
            mean: (systolic + 2.0 * diastolic) / 3.0,
            pulse: 72.0,
            unit: PressureUnit::MmHg,
            irregular_pulse: false,
            tag: None,
        }));
    }

    /// Stores a measurement (a glucose record gets the next sequence
    /// number) and returns the values a connected device sends for it at
    /// once, on characteristics the collector listens to; or why this kind
    /// of device cannot store it.
    pub fn store(&mut self, record: StoredRecord) -> Result<Vec<Tagged>, String> {
        let off = self.clock_offset;
        match (&mut self.kind, record) {
            (SimKind::BpCuff { memory, .. }, StoredRecord::Bp(r)) => {
                let v = bp_value(&r, off);
                memory.push(r);
                Ok(vec![v])
            }
            (
                SimKind::Scale {
                    memory,
                    body_composition,
                },
                StoredRecord::Weight(r),
            ) => {
                let mut out = vec![weight_value(&r, off)];
                if *body_composition {
                    out.extend(body_values(&r, off));
                }
                memory.push(r);
                Ok(out)
            }
            (SimKind::Glucometer { records }, StoredRecord::Glucose(mut r)) => {
                r.sequence = records.last().map_or(1, |x| x.sequence.wrapping_add(1));
                let out = glucose_values(&r);
                records.push(r);
                Ok(out)
            }
            (_, r) => Err(format!("{} cannot store {r:?}", self.name)),
        }
    }

    /// The device is reset (or replaced by one with the same address): its
    /// memory is cleared, and a glucometer numbers records from 1 again.
    pub fn reset_memory(&mut self) {
        match &mut self.kind {
            SimKind::BpCuff { memory, .. } => memory.clear(),
            SimKind::Scale { memory, .. } => memory.clear(),
            SimKind::Glucometer { records } => records.clear(),
            SimKind::Generic { .. } | SimKind::AdvertisingScale { .. } => {}
        }
    }

    /// Sets a wrong device clock (device minus true time): the records
    /// already in memory carry it too, as if taken with that clock.
    pub fn set_clock_offset(&mut self, offset: Duration) {
        let delta = offset - self.clock_offset;
        self.clock_offset = offset;
        // Cuffs and scales add the offset when they send; glucose records
        // keep their device time.
        if let SimKind::Glucometer { records } = &mut self.kind {
            for r in records {
                r.at += delta;
            }
        }
    }

    /// Raw bytes the cuff sends after its memory (special values, truncated).
    pub fn push_raw_bp(&mut self, bytes: Vec<u8>) {
        if let SimKind::BpCuff { extra, .. } = &mut self.kind {
            extra.push(bytes);
        }
    }

    /// Advertised service UUIDs.
    pub fn advertised_services(&self) -> Vec<BleUuid> {
        let s = match self.kind {
            SimKind::BpCuff { .. } => vec![u::SERVICE_BLOOD_PRESSURE],
            SimKind::Scale {
                body_composition: true,
                ..
            } => vec![u::SERVICE_WEIGHT_SCALE, u::SERVICE_BODY_COMPOSITION],
            SimKind::Scale { .. } => vec![u::SERVICE_WEIGHT_SCALE],
            SimKind::Glucometer { .. } => vec![u::SERVICE_GLUCOSE],
            SimKind::Generic { service, .. } => vec![service],
            SimKind::AdvertisingScale { .. } => vec![],
        };
        s.into_iter().map(BleUuid::from_u16).collect()
    }

    /// Advertised service data (broadcast readings).
    pub fn service_data(&self) -> BTreeMap<BleUuid, Vec<u8>> {
        let mut m = BTreeMap::new();
        if let SimKind::AdvertisingScale { reading: (t, kg) } = &self.kind {
            let raw = (kg * 200.0).round() as u16;
            let mut v = vec![0x22];
            v.extend_from_slice(&raw.to_le_bytes());
            if let Some(d) = dt(*t + self.clock_offset) {
                v.extend(d.encode());
            }
            m.insert(BleUuid::from_u16(u::SERVICE_WEIGHT_SCALE), v);
        }
        m
    }

    /// True when the device accepts connections.
    pub fn connectable(&self) -> bool {
        !matches!(self.kind, SimKind::AdvertisingScale { .. })
    }

    /// The GATT table.
    pub fn services(&self) -> Vec<SimService> {
        let c = |x: u16, p: Props| (BleUuid::from_u16(x), p);
        let mut out = match self.kind {
            SimKind::BpCuff { .. } => vec![SimService {
                uuid: BleUuid::from_u16(u::SERVICE_BLOOD_PRESSURE),
                characteristics: vec![c(u::BLOOD_PRESSURE_MEASUREMENT, Props::INDICATE)],
            }],
            SimKind::Scale {
                body_composition, ..
            } => {
                let mut v = vec![SimService {
                    uuid: BleUuid::from_u16(u::SERVICE_WEIGHT_SCALE),
                    characteristics: vec![c(u::WEIGHT_MEASUREMENT, Props::INDICATE)],
                }];
                if body_composition {
                    v.push(SimService {
                        uuid: BleUuid::from_u16(u::SERVICE_BODY_COMPOSITION),
                        characteristics: vec![c(u::BODY_COMPOSITION_MEASUREMENT, Props::INDICATE)],
                    });
                }
                v
            }
            SimKind::Glucometer { .. } => vec![SimService {
                uuid: BleUuid::from_u16(u::SERVICE_GLUCOSE),
                characteristics: vec![
                    c(u::GLUCOSE_MEASUREMENT, Props::NOTIFY),
                    c(u::GLUCOSE_MEASUREMENT_CONTEXT, Props::NOTIFY),
                    c(u::RECORD_ACCESS_CONTROL_POINT, Props::RACP),
                ],
            }],
            SimKind::Generic {
                service,
                ref characteristics,
            } => vec![SimService {
                uuid: BleUuid::from_u16(service),
                characteristics: characteristics
                    .iter()
                    .map(|(x, ind, _)| c(*x, if *ind { Props::INDICATE } else { Props::NOTIFY }))
                    .collect(),
            }],
            SimKind::AdvertisingScale { .. } => vec![],
        };
        if self.info.is_some() {
            out.push(SimService {
                uuid: BleUuid::from_u16(0x180A),
                characteristics: DEVICE_INFORMATION
                    .iter()
                    .map(|x| c(*x, Props::READ_ONLY))
                    .collect(),
            });
        }
        if let Some(writable) = self.current_time {
            out.push(SimService {
                uuid: BleUuid::from_u16(u::SERVICE_CURRENT_TIME),
                characteristics: vec![c(
                    u::CURRENT_TIME,
                    if writable {
                        Props::READ_WRITE
                    } else {
                        Props::READ
                    },
                )],
            });
        }
        out
    }

    /// A connection was made.
    pub fn on_connect(&mut self) {
        self.connections += 1;
    }

    /// Notifications were enabled on `uuid`: the values the device sends
    /// (a cuff or a scale replays its whole memory).
    pub fn on_subscribe(&mut self, uuid: BleUuid) -> Vec<Emission> {
        untag(self.on_subscribe_tagged(uuid))
    }

    /// [`SimDevice::on_subscribe`], each value with its record's tag.
    pub fn on_subscribe_tagged(&mut self, uuid: BleUuid) -> Vec<Tagged> {
        let off = self.clock_offset;
        match (&self.kind, uuid.as_u16()) {
            (SimKind::BpCuff { memory, extra }, Some(u::BLOOD_PRESSURE_MEASUREMENT)) => {
                let mut out: Vec<Tagged> = memory.iter().map(|r| bp_value(r, off)).collect();
                out.extend(extra.iter().map(|b| (uuid, b.clone(), None)));
                out
            }
            (SimKind::Scale { memory, .. }, Some(u::WEIGHT_MEASUREMENT)) => {
                memory.iter().map(|r| weight_value(r, off)).collect()
            }
            (
                SimKind::Scale {
                    memory,
                    body_composition: true,
                },
                Some(u::BODY_COMPOSITION_MEASUREMENT),
            ) => memory.iter().flat_map(|r| body_values(r, off)).collect(),
            (
                SimKind::Generic {
                    characteristics, ..
                },
                Some(x),
            ) => characteristics
                .iter()
                .filter(|c| c.0 == x)
                .flat_map(|c| c.2.iter().map(|v| (uuid, v.clone(), None)))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A value was written: the device's reply values, or an ATT error text.
    pub fn on_write(&mut self, uuid: BleUuid, value: &[u8]) -> Result<Vec<Emission>, String> {
        self.on_write_tagged(uuid, value).map(untag)
    }

    /// [`SimDevice::on_write`], each value with its record's tag.
    pub fn on_write_tagged(&mut self, uuid: BleUuid, value: &[u8]) -> Result<Vec<Tagged>, String> {
        match uuid.as_u16() {
            Some(u::CURRENT_TIME) if self.current_time == Some(true) => {
                CurrentTime::decode(value).map_err(|e| e.to_string())?;
                // The clock is now right (records already stored keep theirs).
                self.clock_offset = Duration::zero();
                Ok(Vec::new())
            }
            Some(u::RECORD_ACCESS_CONTROL_POINT) => {
                self.racp_log.push(value.to_vec());
                Ok(self.racp(value))
            }
            _ => Err("org.bluez.Error.NotPermitted".into()),
        }
    }

    /// A value was read.
    pub fn on_read(&self, uuid: BleUuid) -> Result<Vec<u8>, String> {
        if let (Some(info), Some(x)) = (&self.info, uuid.as_u16()) {
            if let Some(i) = DEVICE_INFORMATION.iter().position(|d| *d == x) {
                return Ok(info[i].as_bytes().to_vec());
            }
        }
        match uuid.as_u16() {
            Some(u::CURRENT_TIME) if self.current_time.is_some() => {
                let now = Utc::now().naive_utc() + self.clock_offset;
                CurrentTime::from_naive(now)
                    .map(|c| c.encode())
                    .ok_or_else(|| "clock out of range".to_string())
            }
            _ => Err("org.bluez.Error.NotPermitted".into()),
        }
    }

    fn racp(&self, value: &[u8]) -> Vec<Tagged> {
        let racp_uuid = BleUuid::from_u16(u::RECORD_ACCESS_CONTROL_POINT);
        let respond = |op: u8, code: ResponseCode| {
            (
                racp_uuid,
                Racp::Response {
                    request_op_code: op,
                    code,
                }
                .encode(),
                None,
            )
        };
        let SimKind::Glucometer { records } = &self.kind else {
            return vec![respond(
                value.first().copied().unwrap_or(0),
                ResponseCode::OpCodeNotSupported,
            )];
        };
        let req = match Racp::decode(value) {
            Ok(Racp::Request(r)) => r,
            _ => {
                return vec![respond(
                    value.first().copied().unwrap_or(0),
                    ResponseCode::InvalidOperator,
                )]
            }
        };
        if req.op_code != OpCode::ReportStoredRecords {
            return vec![respond(
                req.op_code.code(),
                ResponseCode::OpCodeNotSupported,
            )];
        }
        let mut out: Vec<Tagged> = match (req.operator, &req.operand) {
            (Operator::AllRecords, _) => records.iter().flat_map(glucose_values).collect(),
            (Operator::GreaterThanOrEqual, Operand::Sequence(from)) => records
                .iter()
                .filter(|r| r.sequence >= *from)
                .flat_map(glucose_values)
                .collect(),
            (Operator::WithinRange, Operand::SequenceRange(lo, hi)) => records
                .iter()
                .filter(|r| (*lo..=*hi).contains(&r.sequence))
                .flat_map(glucose_values)
                .collect(),
            (Operator::LastRecord, _) => records.last().map(glucose_values).unwrap_or_default(),
            _ => return vec![respond(1, ResponseCode::OperatorNotSupported)],
        };
        let code = if out.is_empty() {
            ResponseCode::NoRecordsFound
        } else {
            ResponseCode::Success
        };
        out.push(respond(1, code));
        out
    }
}

/// Which empty device [`SimDevice::empty`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyKind {
    /// Blood pressure cuff.
    BpCuff,
    /// Weight scale (no body composition).
    Scale,
    /// Glucometer.
    Glucometer,
}

fn untag(v: Vec<Tagged>) -> Vec<Emission> {
    v.into_iter().map(|(u, b, _)| (u, b)).collect()
}

fn bp_value(r: &BpRecord, off: Duration) -> Tagged {
    let decimals = if r.unit == PressureUnit::KPa { 1 } else { 0 };
    let v = BloodPressureMeasurement {
        unit: r.unit,
        systolic: sf(r.systolic, decimals),
        diastolic: sf(r.diastolic, decimals),
        mean_arterial_pressure: sf(r.mean, decimals),
        timestamp: dt(r.at + off),
        pulse_rate: Some(sf(r.pulse, 0)),
        user_id: None,
        status: Some(MeasurementStatus(if r.irregular_pulse {
            0x0004
        } else {
            0
        })),
    };
    (
        BleUuid::from_u16(u::BLOOD_PRESSURE_MEASUREMENT),
        v.encode(),
        r.tag,
    )
}

fn weight_value(r: &WeightRecord, off: Duration) -> Tagged {
    let v = WeightMeasurement {
        system: r.system,
        weight_raw: r.system.mass_raw(r.weight).unwrap_or(0xFFFF),
        timestamp: dt(r.at + off),
        user_id: None,
        bmi_height: None,
    };
    (BleUuid::from_u16(u::WEIGHT_MEASUREMENT), v.encode(), r.tag)
}

/// Body composition in two packets: the second carries the weight.
fn body_values(r: &WeightRecord, off: Duration) -> Vec<Tagged> {
    let uuid = BleUuid::from_u16(u::BODY_COMPOSITION_MEASUREMENT);
    let Some(fat) = r.body_fat else {
        return Vec::new();
    };
    let first = BodyCompositionMeasurement {
        multiple_packet: true,
        body_fat_raw: (fat * 10.0).round() as u16,
        timestamp: dt(r.at + off),
        impedance_raw: Some(5000),
        ..Default::default()
    };
    let second = BodyCompositionMeasurement {
        multiple_packet: true,
        body_fat_raw: first.body_fat_raw,
        weight_raw: r.system.mass_raw(r.weight),
        ..Default::default()
    };
    vec![
        (uuid, first.encode(), r.tag),
        (uuid, second.encode(), r.tag),
    ]
}

/// A glucose record: Glucose Measurement, then its context if it has one.
fn glucose_values(r: &GlucoseRecord) -> Vec<Tagged> {
    // mg/dL → kg/L is ×1e-5 (tenths of mg/dL as 1e-6 kg/L); mmol/L → mol/L
    // is ×1e-3 (tenths of mmol/L as 1e-4 mol/L).
    let value = match r.unit {
        ConcentrationUnit::KgPerL => Sfloat::from_decimal((r.value * 10.0).round() as i64, -6),
        ConcentrationUnit::MolPerL => Sfloat::from_decimal((r.value * 10.0).round() as i64, -4),
    };
    let m = GlucoseMeasurement {
        sequence_number: r.sequence,
        base_time: dt(r.at).unwrap_or(DateTime {
            year: 0,
            month: 0,
            day: 0,
            hours: 0,
            minutes: 0,
            seconds: 0,
        }),
        time_offset_minutes: None,
        unit: r.unit,
        concentration: Some(GlucoseConcentration {
            value: value.unwrap_or(sf(0.0, 0)),
            sample_type: GlucoseType::CapillaryWholeBlood,
            sample_location: SampleLocation::Finger,
        }),
        sensor_status: None,
        context_follows: r.meal.is_some(),
    };
    let mut out = vec![(BleUuid::from_u16(u::GLUCOSE_MEASUREMENT), m.encode(), r.tag)];
    if let Some(meal) = r.meal {
        let c = GlucoseMeasurementContext {
            sequence_number: r.sequence,
            meal: Some(meal),
            ..Default::default()
        };
        out.push((
            BleUuid::from_u16(u::GLUCOSE_MEASUREMENT_CONTEXT),
            c.encode(),
            r.tag,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use device_profiles::gatt::decode_characteristic;

    #[test]
    fn devices_emit_decodable_values() {
        let mut cuff = SimDevice::bp_cuff("AA:00:00:00:00:01", 2);
        let e = cuff.on_subscribe(BleUuid::from_u16(u::BLOOD_PRESSURE_MEASUREMENT));
        assert_eq!(e.len(), 2);
        for (uuid, b) in &e {
            decode_characteristic(uuid.as_u16().unwrap(), b).unwrap();
        }
        let mut g = SimDevice::glucometer("AA:00:00:00:00:02", 3);
        let racp = BleUuid::from_u16(u::RECORD_ACCESS_CONTROL_POINT);
        let e = g.on_write(racp, &Racp::report_from(2).encode()).unwrap();
        // seq 2 (no context), seq 3 + context, response
        assert_eq!(e.len(), 4);
        let d = decode_characteristic(0x2A18, &e[0].1).unwrap();
        assert_eq!(d.to_measurements()[0].sequence, Some(2));
        assert_eq!(
            decode_characteristic(0x2A52, &e[3].1).unwrap(),
            device_profiles::gatt::Decoded::Racp(Racp::Response {
                request_op_code: 1,
                code: ResponseCode::Success
            })
        );
        let e = g.on_write(racp, &Racp::report_from(9).encode()).unwrap();
        assert_eq!(e.len(), 1);
        let mut s = SimDevice::scale("AA:00:00:00:00:03", 1);
        let e = s.on_subscribe(BleUuid::from_u16(u::BODY_COMPOSITION_MEASUREMENT));
        assert_eq!(e.len(), 2);
    }
}
