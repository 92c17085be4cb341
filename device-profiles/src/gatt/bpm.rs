//! Blood Pressure Measurement 0x2A35 and Intermediate Cuff Pressure 0x2A36
//! (domain.md §1.1, §1.2).
//!
//! Flags bits 5-7 are RFU. Every defined flag bit adds a field, so a device
//! setting an RFU bit most likely sends a field we cannot place; we reject
//! the value ([`GattErrorKind::ReservedBits`]) rather than guess where the
//! pulse rate starts. Measurement Status bits 6-15 are RFU too, but they do
//! not move any byte, so they are kept as sent.
//!
//! A cuff that fails sends NaN for every pressure with a clean status word
//! (domain.md §5.1); the NaNs stay [`RawValue::Special`] and the canonicaliser
//! refuses the whole panel.
//!
//! [`GattErrorKind::ReservedBits`]: super::error::GattErrorKind::ReservedBits
//! [`RawValue::Special`]: crate::decoded::RawValue::Special

use super::datetime::DateTime;
use super::error::{Characteristic, Fault, GattError};
use super::ieee11073::Sfloat;
use super::reader::{reject_reserved, Put, Reader};
use crate::decoded::{Annotations, Component, DecodedMeasurement};
use crate::metric::Metric;

/// Unit of the pressures (flags bit 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PressureUnit {
    /// Millimetres of mercury (bit 0 = 0).
    #[default]
    MmHg,
    /// Kilopascal (bit 0 = 1).
    KPa,
}

impl PressureUnit {
    /// UCUM code.
    pub const fn ucum(self) -> &'static str {
        match self {
            PressureUnit::MmHg => "mm[Hg]",
            PressureUnit::KPa => "kPa",
        }
    }
}

/// Pulse-rate range (Measurement Status bits 3-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PulseRateRange {
    /// 0: within range.
    WithinRange,
    /// 1: exceeds upper limit.
    AboveUpperLimit,
    /// 2: less than lower limit.
    BelowLowerLimit,
    /// 3: RFU.
    Reserved,
}

impl PulseRateRange {
    /// Annotation value.
    pub const fn name(self) -> &'static str {
        match self {
            PulseRateRange::WithinRange => "within_range",
            PulseRateRange::AboveUpperLimit => "above_upper_limit",
            PulseRateRange::BelowLowerLimit => "below_lower_limit",
            PulseRateRange::Reserved => "reserved",
        }
    }
}

/// Blood Pressure Measurement Status (16 bits, kept raw so that RFU bits
/// survive a re-encode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MeasurementStatus(pub u16);

impl MeasurementStatus {
    /// Bit 0: body movement detected during measurement.
    pub const fn body_movement(self) -> bool {
        self.0 & 0x0001 != 0
    }
    /// Bit 1: cuff too loose (0 = cuff fits properly).
    pub const fn cuff_too_loose(self) -> bool {
        self.0 & 0x0002 != 0
    }
    /// Bit 2: irregular pulse detected.
    pub const fn irregular_pulse(self) -> bool {
        self.0 & 0x0004 != 0
    }
    /// Bits 3-4: pulse rate range.
    pub const fn pulse_rate_range(self) -> PulseRateRange {
        match (self.0 >> 3) & 0b11 {
            0 => PulseRateRange::WithinRange,
            1 => PulseRateRange::AboveUpperLimit,
            2 => PulseRateRange::BelowLowerLimit,
            _ => PulseRateRange::Reserved,
        }
    }
    /// Bit 5: improper measurement position.
    pub const fn improper_position(self) -> bool {
        self.0 & 0x0020 != 0
    }

    fn annotate(self, a: &mut Annotations) {
        let b = |v: bool| if v { "true" } else { "false" }.to_string();
        a.insert("body_movement".into(), b(self.body_movement()));
        a.insert("cuff_too_loose".into(), b(self.cuff_too_loose()));
        a.insert("irregular_pulse".into(), b(self.irregular_pulse()));
        a.insert(
            "pulse_rate_range".into(),
            self.pulse_rate_range().name().into(),
        );
        a.insert("improper_position".into(), b(self.improper_position()));
        a.insert("measurement_status_raw".into(), format!("{:#06x}", self.0));
    }
}

/// User ID value meaning "unknown user".
pub const USER_UNKNOWN: u8 = 0xFF;

/// Blood Pressure Measurement 0x2A35: one finished cuff measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BloodPressureMeasurement {
    /// Unit of the three pressures.
    pub unit: PressureUnit,
    /// Systolic pressure.
    pub systolic: Sfloat,
    /// Diastolic pressure.
    pub diastolic: Sfloat,
    /// Mean arterial pressure.
    pub mean_arterial_pressure: Sfloat,
    /// Time Stamp (flags bit 1).
    pub timestamp: Option<DateTime>,
    /// Pulse rate in beats per minute (flags bit 2).
    pub pulse_rate: Option<Sfloat>,
    /// User ID (flags bit 3); 0xFF = unknown user.
    pub user_id: Option<u8>,
    /// Measurement Status (flags bit 4).
    pub status: Option<MeasurementStatus>,
}

/// Intermediate Cuff Pressure 0x2A36: the cuff pressure streamed during
/// inflation. Same layout as 0x2A35, but only the first pressure means
/// anything; it is progress, never a blood-pressure result, and has no
/// conversion to measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IntermediateCuffPressure {
    /// Unit of the pressures.
    pub unit: PressureUnit,
    /// Current cuff pressure.
    pub current_cuff_pressure: Sfloat,
    /// The unused diastolic slot, kept as sent (conformant devices send NaN,
    /// others 0; not validated, domain.md §1.2).
    pub unused_diastolic: Sfloat,
    /// The unused mean-arterial-pressure slot, kept as sent.
    pub unused_mean: Sfloat,
    /// Time Stamp (flags bit 1).
    pub timestamp: Option<DateTime>,
    /// Pulse rate (flags bit 2).
    pub pulse_rate: Option<Sfloat>,
    /// User ID (flags bit 3).
    pub user_id: Option<u8>,
    /// Measurement Status (flags bit 4).
    pub status: Option<MeasurementStatus>,
}

/// The shared layout of both characteristics.
struct Frame {
    unit: PressureUnit,
    values: [Sfloat; 3],
    timestamp: Option<DateTime>,
    pulse_rate: Option<Sfloat>,
    user_id: Option<u8>,
    status: Option<MeasurementStatus>,
}

const RFU_FLAGS: u32 = 0xE0;

fn read_frame(bytes: &[u8]) -> Result<Frame, Fault> {
    let mut r = Reader::new(bytes);
    let flags = r.u8("flags")?;
    reject_reserved(flags.into(), RFU_FLAGS, 0, "flags")?;
    let unit = if flags & 0x01 != 0 {
        PressureUnit::KPa
    } else {
        PressureUnit::MmHg
    };
    let values = [
        r.sfloat("systolic")?,
        r.sfloat("diastolic")?,
        r.sfloat("mean arterial pressure")?,
    ];
    let timestamp = (flags & 0x02 != 0)
        .then(|| DateTime::read(&mut r))
        .transpose()?;
    let pulse_rate = (flags & 0x04 != 0)
        .then(|| r.sfloat("pulse rate"))
        .transpose()?;
    let user_id = (flags & 0x08 != 0).then(|| r.u8("user id")).transpose()?;
    let status = (flags & 0x10 != 0)
        .then(|| r.u16("measurement status").map(MeasurementStatus))
        .transpose()?;
    r.finish()?;
    Ok(Frame {
        unit,
        values,
        timestamp,
        pulse_rate,
        user_id,
        status,
    })
}

fn write_frame(f: &Frame) -> Vec<u8> {
    let flags = u8::from(f.unit == PressureUnit::KPa)
        | u8::from(f.timestamp.is_some()) << 1
        | u8::from(f.pulse_rate.is_some()) << 2
        | u8::from(f.user_id.is_some()) << 3
        | u8::from(f.status.is_some()) << 4;
    let mut out = Vec::with_capacity(19);
    out.put_u8(flags);
    for v in f.values {
        out.put_sfloat(v);
    }
    if let Some(t) = &f.timestamp {
        t.write(&mut out);
    }
    if let Some(p) = f.pulse_rate {
        out.put_sfloat(p);
    }
    if let Some(u) = f.user_id {
        out.put_u8(u);
    }
    if let Some(s) = f.status {
        out.put_u16(s.0);
    }
    out
}

impl BloodPressureMeasurement {
    /// Decodes a 0x2A35 value.
    pub fn decode(bytes: &[u8]) -> Result<Self, GattError> {
        let f = read_frame(bytes).map_err(|e| e.at(Characteristic::BloodPressureMeasurement))?;
        let [systolic, diastolic, mean_arterial_pressure] = f.values;
        Ok(BloodPressureMeasurement {
            unit: f.unit,
            systolic,
            diastolic,
            mean_arterial_pressure,
            timestamp: f.timestamp,
            pulse_rate: f.pulse_rate,
            user_id: f.user_id,
            status: f.status,
        })
    }

    /// Encodes; flags follow from which optional fields are present.
    pub fn encode(&self) -> Vec<u8> {
        write_frame(&Frame {
            unit: self.unit,
            values: [self.systolic, self.diastolic, self.mean_arterial_pressure],
            timestamp: self.timestamp,
            pulse_rate: self.pulse_rate,
            user_id: self.user_id,
            status: self.status,
        })
    }

    /// The flags byte this value encodes to.
    pub fn flags(&self) -> u8 {
        self.encode().first().copied().unwrap_or_default()
    }

    /// One measurement: systolic, diastolic and mean arterial pressure (one
    /// panel, refused whole if any is a special value) plus the pulse rate
    /// when present; status bits and user id as annotations.
    pub fn to_measurements(&self) -> Vec<DecodedMeasurement> {
        let unit = self.unit.ucum();
        let mut components = vec![
            Component {
                metric: Metric::Systolic,
                value: self.systolic.to_raw_value(),
                unit: Some(unit.into()),
            },
            Component {
                metric: Metric::Diastolic,
                value: self.diastolic.to_raw_value(),
                unit: Some(unit.into()),
            },
            Component {
                metric: Metric::MeanArterialPressure,
                value: self.mean_arterial_pressure.to_raw_value(),
                unit: Some(unit.into()),
            },
        ];
        if let Some(p) = self.pulse_rate {
            components.push(Component {
                metric: Metric::PulseRate,
                value: p.to_raw_value(),
                unit: Some("/min".into()),
            });
        }
        let mut annotations = Annotations::new();
        if let Some(s) = self.status {
            s.annotate(&mut annotations);
        }
        stamped(self.timestamp, self.user_id, components, annotations)
    }
}

fn user_id_text(u: u8) -> String {
    if u == USER_UNKNOWN {
        "unknown".into()
    } else {
        u.to_string()
    }
}

/// The one measurement of a characteristic with an optional Time Stamp and
/// User ID (blood pressure, weight, body composition, temperature): timed
/// by the device's clock when it sent a usable time, the user as annotation
/// `user_id` ("unknown" for 0xFF).
pub(crate) fn stamped(
    timestamp: Option<DateTime>,
    user_id: Option<u8>,
    components: Vec<Component>,
    mut annotations: Annotations,
) -> Vec<DecodedMeasurement> {
    if let Some(u) = user_id {
        annotations.insert("user_id".into(), user_id_text(u));
    }
    vec![DecodedMeasurement {
        time: timestamp.and_then(|t| t.to_device_time()),
        components,
        annotations,
        ..Default::default()
    }]
}

impl IntermediateCuffPressure {
    /// Decodes a 0x2A36 value.
    pub fn decode(bytes: &[u8]) -> Result<Self, GattError> {
        let f = read_frame(bytes).map_err(|e| e.at(Characteristic::IntermediateCuffPressure))?;
        let [current_cuff_pressure, unused_diastolic, unused_mean] = f.values;
        Ok(IntermediateCuffPressure {
            unit: f.unit,
            current_cuff_pressure,
            unused_diastolic,
            unused_mean,
            timestamp: f.timestamp,
            pulse_rate: f.pulse_rate,
            user_id: f.user_id,
            status: f.status,
        })
    }

    /// Encodes; flags follow from which optional fields are present.
    pub fn encode(&self) -> Vec<u8> {
        write_frame(&Frame {
            unit: self.unit,
            values: [
                self.current_cuff_pressure,
                self.unused_diastolic,
                self.unused_mean,
            ],
            timestamp: self.timestamp,
            pulse_rate: self.pulse_rate,
            user_id: self.user_id,
            status: self.status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoded::{RawValue, SpecialValue};
    use crate::gatt::error::GattErrorKind;

    #[test]
    fn nordic_vector_kpa_with_status() {
        let bytes = [
            0x15, 0xBD, 0xF0, 0x0B, 0x00, 0x9F, 0xF0, 0x3C, 0x00, 0x12, 0x00,
        ];
        let m = BloodPressureMeasurement::decode(&bytes).unwrap();
        assert_eq!(m.unit, PressureUnit::KPa);
        assert_eq!(m.systolic.to_f64(), Some(18.9));
        assert_eq!(m.diastolic.to_f64(), Some(11.0));
        assert_eq!(m.mean_arterial_pressure.to_f64(), Some(15.9));
        assert_eq!(m.pulse_rate.and_then(Sfloat::to_f64), Some(60.0));
        let s = m.status.unwrap();
        assert!(
            s.cuff_too_loose()
                && !s.body_movement()
                && !s.irregular_pulse()
                && !s.improper_position()
        );
        assert_eq!(s.pulse_rate_range(), PulseRateRange::BelowLowerLimit);
        assert_eq!(m.encode(), bytes);
        assert_eq!(m.flags(), 0x15);
        let d = &m.to_measurements()[0];
        assert_eq!(d.components.len(), 4);
        assert_eq!(d.components[0].unit.as_deref(), Some("kPa"));
        assert_eq!(d.components[3].metric, Metric::PulseRate);
        assert_eq!(d.annotations["cuff_too_loose"], "true");
        assert_eq!(d.annotations["pulse_rate_range"], "below_lower_limit");
        assert_eq!(d.time, None);
    }

    #[test]
    fn failed_cuff_is_nan_not_2047() {
        let bytes = hex::decode("16FF07FF07FF07E80706170E230AFF070000").unwrap();
        let m = BloodPressureMeasurement::decode(&bytes).unwrap();
        assert_eq!(m.systolic.special(), Some(SpecialValue::NaN));
        let d = &m.to_measurements()[0];
        assert!(d
            .components
            .iter()
            .all(|c| c.value == RawValue::Special(SpecialValue::NaN)));
        assert!(d.time.is_some());
    }

    #[test]
    fn malformed() {
        let e = BloodPressureMeasurement::decode(&[0x20, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(
            e.kind,
            GattErrorKind::ReservedBits {
                field: "flags",
                bits: 0x20
            }
        );
        let e = BloodPressureMeasurement::decode(&[0x04, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert_eq!((e.offset, e.characteristic.id().as_str()), (7, "0x2A35"));
        let e = BloodPressureMeasurement::decode(&[0x00, 0, 0, 0, 0, 0, 0, 9]).unwrap_err();
        assert_eq!(e.kind, GattErrorKind::TrailingBytes { count: 1 });
        assert!(BloodPressureMeasurement::decode(&[]).is_err());
    }

    #[test]
    fn intermediate_cuff_pressure() {
        let bytes = [0x15, 0x6F, 0xF0, 0, 0, 0, 0, 0x3C, 0, 0x12, 0];
        let m = IntermediateCuffPressure::decode(&bytes).unwrap();
        assert_eq!(m.current_cuff_pressure.to_f64(), Some(11.1));
        assert_eq!(m.encode(), bytes);
        assert_eq!(
            IntermediateCuffPressure::decode(&[1])
                .unwrap_err()
                .characteristic
                .id(),
            "0x2A36"
        );
    }
}
