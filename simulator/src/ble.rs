//! Simulated Bluetooth LE health devices: their GATT table, advertisement,
//! and behaviour (stored-memory replay, Record Access Control Point, Current
//! Time, two-packet body composition, broadcast-only scales), with values
//! encoded by the very GATT encoders of `device-profiles`.
//!
//! A [`SimDevice`] knows nothing about transports: the gateway's virtual
//! transport and the BlueZ D-Bus emulator (`bluez` module) both host the
//! same devices, so a test over either exercises the same device behaviour.

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

/// What kind of device, with its stored memory.
#[derive(Debug, Clone, PartialEq)]
pub enum SimKind {
    /// Blood pressure cuff: replays its whole memory (0x2A35 indications)
    /// on every subscription, as real cuffs do.
    BpCuff {
        /// (time, systolic, diastolic, mean, pulse) in mmHg and /min
        memory: Vec<(NaiveDateTime, f64, f64, f64, f64)>,
        /// raw values to send after the memory (special values, garbage)
        extra: Vec<Vec<u8>>,
    },
    /// Weight scale with body composition (0x2A9D, 0x2A9C in two packets).
    Scale {
        /// (time, kg, body fat %)
        memory: Vec<(NaiveDateTime, f64, f64)>,
    },
    /// Glucometer: sends records only when asked through RACP.
    Glucometer {
        /// (sequence, time, mg/dL, meal context)
        records: Vec<(u16, NaiveDateTime, f64, Option<u8>)>,
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
            racp_log: Vec::new(),
            connections: 0,
        }
    }

    /// A BP cuff with `n` stored measurements, one per hour up to now.
    pub fn bp_cuff(address: &str, n: usize) -> Self {
        let now = Utc::now().naive_utc();
        let memory = (0..n)
            .map(|i| {
                let t = now - Duration::hours((n - i) as i64);
                let s = 120.0 + i as f64;
                (t, s, 80.0, 93.0, 70.0)
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

    /// A scale with `n` stored weighings.
    pub fn scale(address: &str, n: usize) -> Self {
        let now = Utc::now().naive_utc();
        let memory = (0..n)
            .map(|i| {
                (
                    now - Duration::hours((n - i) as i64),
                    80.0 + i as f64 * 0.5,
                    25.0,
                )
            })
            .collect();
        SimDevice::new(address, "Scale", SimKind::Scale { memory })
    }

    /// A glucometer with records 1..=n; odd ones carry a meal context.
    pub fn glucometer(address: &str, n: u16) -> Self {
        let now = Utc::now().naive_utc();
        let records = (1..=n)
            .map(|s| {
                (
                    s,
                    now - Duration::hours(i64::from(n - s + 1)),
                    90.0 + f64::from(s % 100),
                    (s % 2 == 1).then_some(1),
                )
            })
            .collect();
        SimDevice::new(address, "Glucometer", SimKind::Glucometer { records })
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
        let now = Utc::now().naive_utc() + self.clock_offset;
        if let SimKind::Glucometer { records } = &mut self.kind {
            let seq = records.last().map_or(1, |r| r.0 + 1);
            records.push((seq, now, mg_dl, None));
            return Some(seq);
        }
        None
    }

    /// Adds a new BP measurement taken now (device clock).
    pub fn add_bp(&mut self, systolic: f64, diastolic: f64) {
        let now = Utc::now().naive_utc() + self.clock_offset;
        if let SimKind::BpCuff { memory, .. } = &mut self.kind {
            memory.push((
                now,
                systolic,
                diastolic,
                (systolic + 2.0 * diastolic) / 3.0,
                72.0,
            ));
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
            SimKind::Scale { .. } => vec![u::SERVICE_WEIGHT_SCALE, u::SERVICE_BODY_COMPOSITION],
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
            SimKind::Scale { .. } => vec![
                SimService {
                    uuid: BleUuid::from_u16(u::SERVICE_WEIGHT_SCALE),
                    characteristics: vec![c(u::WEIGHT_MEASUREMENT, Props::INDICATE)],
                },
                SimService {
                    uuid: BleUuid::from_u16(u::SERVICE_BODY_COMPOSITION),
                    characteristics: vec![c(u::BODY_COMPOSITION_MEASUREMENT, Props::INDICATE)],
                },
            ],
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
        let off = self.clock_offset;
        match (&self.kind, uuid.as_u16()) {
            (SimKind::BpCuff { memory, extra }, Some(u::BLOOD_PRESSURE_MEASUREMENT)) => {
                let mut out: Vec<Emission> = memory
                    .iter()
                    .map(|(t, s, d, m, p)| {
                        let v = BloodPressureMeasurement {
                            unit: PressureUnit::MmHg,
                            systolic: sf(*s, 0),
                            diastolic: sf(*d, 0),
                            mean_arterial_pressure: sf(*m, 0),
                            timestamp: dt(*t + off),
                            pulse_rate: Some(sf(*p, 0)),
                            user_id: None,
                            status: Some(MeasurementStatus(0)),
                        };
                        (uuid, v.encode())
                    })
                    .collect();
                out.extend(extra.iter().map(|b| (uuid, b.clone())));
                out
            }
            (SimKind::Scale { memory }, Some(u::WEIGHT_MEASUREMENT)) => memory
                .iter()
                .map(|(t, kg, _)| {
                    let v = WeightMeasurement {
                        system: MeasurementSystem::Si,
                        weight_raw: MeasurementSystem::Si.mass_raw(*kg).unwrap_or(0xFFFF),
                        timestamp: dt(*t + off),
                        user_id: None,
                        bmi_height: None,
                    };
                    (uuid, v.encode())
                })
                .collect(),
            (SimKind::Scale { memory }, Some(u::BODY_COMPOSITION_MEASUREMENT)) => memory
                .iter()
                .flat_map(|(t, kg, fat)| {
                    // Two packets: the second carries the weight.
                    let first = BodyCompositionMeasurement {
                        multiple_packet: true,
                        body_fat_raw: (fat * 10.0).round() as u16,
                        timestamp: dt(*t + off),
                        impedance_raw: Some(5000),
                        ..Default::default()
                    };
                    let second = BodyCompositionMeasurement {
                        multiple_packet: true,
                        body_fat_raw: first.body_fat_raw,
                        weight_raw: MeasurementSystem::Si.mass_raw(*kg),
                        ..Default::default()
                    };
                    [(uuid, first.encode()), (uuid, second.encode())]
                })
                .collect(),
            (
                SimKind::Generic {
                    characteristics, ..
                },
                Some(x),
            ) => characteristics
                .iter()
                .filter(|c| c.0 == x)
                .flat_map(|c| c.2.iter().map(|v| (uuid, v.clone())))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A value was written: the device's reply values, or an ATT error text.
    pub fn on_write(&mut self, uuid: BleUuid, value: &[u8]) -> Result<Vec<Emission>, String> {
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

    fn racp(&self, value: &[u8]) -> Vec<Emission> {
        let racp_uuid = BleUuid::from_u16(u::RECORD_ACCESS_CONTROL_POINT);
        let respond = |op: u8, code: ResponseCode| {
            (
                racp_uuid,
                Racp::Response {
                    request_op_code: op,
                    code,
                }
                .encode(),
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
        let from = match (req.operator, &req.operand) {
            (Operator::AllRecords, _) => 0,
            (Operator::GreaterThanOrEqual, Operand::Sequence(s)) => *s,
            _ => return vec![respond(1, ResponseCode::OperatorNotSupported)],
        };
        let mut out = Vec::new();
        for (seq, t, mg, meal) in records.iter().filter(|r| r.0 >= from) {
            let m = GlucoseMeasurement {
                sequence_number: *seq,
                base_time: dt(*t).unwrap_or(DateTime {
                    year: 0,
                    month: 0,
                    day: 0,
                    hours: 0,
                    minutes: 0,
                    seconds: 0,
                }),
                time_offset_minutes: None,
                unit: ConcentrationUnit::KgPerL,
                concentration: Some(GlucoseConcentration {
                    // mg/dL → kg/L: ×1e-5
                    value: Sfloat::from_decimal((mg * 10.0).round() as i64, -6)
                        .unwrap_or(sf(0.0, 0)),
                    sample_type: GlucoseType::CapillaryWholeBlood,
                    sample_location: SampleLocation::Finger,
                }),
                sensor_status: None,
                context_follows: meal.is_some(),
            };
            out.push((BleUuid::from_u16(u::GLUCOSE_MEASUREMENT), m.encode()));
            if let Some(meal) = meal {
                let c = GlucoseMeasurementContext {
                    sequence_number: *seq,
                    meal: Some(*meal),
                    ..Default::default()
                };
                out.push((
                    BleUuid::from_u16(u::GLUCOSE_MEASUREMENT_CONTEXT),
                    c.encode(),
                ));
            }
        }
        let code = if out.is_empty() {
            ResponseCode::NoRecordsFound
        } else {
            ResponseCode::Success
        };
        out.push(respond(1, code));
        out
    }
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
