//! PLX Spot-Check Measurement 0x2A5E and PLX Continuous Measurement 0x2A5F
//! (domain.md §1.9).
//!
//! Flags bits 5-7 of both are RFU and rejected (each defined bit adds a
//! field). Measurement Status bits 0-4 and Device and Sensor Status bits
//! 16-23 are RFU but move nothing: kept as sent.
//!
//! Gateway rule (domain.md §1.9): a reading whose Measurement Status says
//! demonstration (10), testing (11), unavailable (13), questionable (14) or
//! invalid (15), or whose Device and Sensor Status has any of bits 1-8 or
//! 11-15 set, is `not_clinical` with the bit names as the reason. "Data from
//! measurement storage" (9) is a normal backfill and only annotated, as are
//! the remaining bits. Spot-check flag bit 4 ("device clock is not set")
//! becomes the `device_clock_not_set` annotation; the time is still passed
//! on and judged by the canonicaliser's clock policy.

use super::bit_names;
use super::datetime::DateTime;
use super::error::{Characteristic, Fault, GattError};
use super::ieee11073::Sfloat;
use super::reader::{reject_reserved, Put, Reader};
use crate::decoded::{Annotations, Component, DecodedMeasurement};
use crate::metric::Metric;

/// PLX Measurement Status (16 bits, raw).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PlxMeasurementStatus(pub u16);

impl PlxMeasurementStatus {
    const NAMES: [(u32, &'static str); 11] = [
        (1 << 5, "measurement_ongoing"),
        (1 << 6, "early_estimated_data"),
        (1 << 7, "validated_data"),
        (1 << 8, "fully_qualified_data"),
        (1 << 9, "data_from_measurement_storage"),
        (1 << 10, "data_for_demonstration"),
        (1 << 11, "data_for_testing"),
        (1 << 12, "calibration_ongoing"),
        (1 << 13, "measurement_unavailable"),
        (1 << 14, "questionable_measurement_detected"),
        (1 << 15, "invalid_measurement_detected"),
    ];
    /// Bits that make a reading not clinical.
    pub const NOT_CLINICAL: u16 = (1 << 10) | (1 << 11) | (1 << 13) | (1 << 14) | (1 << 15);
    /// Bit 9: the record comes from the device's storage (backfill).
    pub const FROM_STORAGE: u16 = 1 << 9;

    /// Names of the set bits within `mask`.
    pub fn names(self, mask: u16) -> Vec<&'static str> {
        bit_names(&Self::NAMES, u32::from(self.0 & mask))
    }
}

/// PLX Device and Sensor Status (24 bits, raw in the low bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PlxDeviceSensorStatus(pub u32);

impl PlxDeviceSensorStatus {
    const NAMES: [(u32, &'static str); 16] = [
        (1 << 0, "extended_display_update_ongoing"),
        (1 << 1, "equipment_malfunction_detected"),
        (1 << 2, "signal_processing_irregularity_detected"),
        (1 << 3, "inadequate_signal_detected"),
        (1 << 4, "poor_signal_detected"),
        (1 << 5, "low_perfusion_detected"),
        (1 << 6, "erratic_signal_detected"),
        (1 << 7, "nonpulsatile_signal_detected"),
        (1 << 8, "questionable_pulse_detected"),
        (1 << 9, "signal_analysis_ongoing"),
        (1 << 10, "sensor_interference_detected"),
        (1 << 11, "sensor_unconnected_to_user"),
        (1 << 12, "unknown_sensor_connected"),
        (1 << 13, "sensor_displaced"),
        (1 << 14, "sensor_malfunctioning"),
        (1 << 15, "sensor_disconnected"),
    ];
    /// Bits 1-8 and 11-15.
    pub const NOT_CLINICAL: u32 = 0x01FE | 0xF800;

    /// Names of the set bits within `mask`.
    pub fn names(self, mask: u32) -> Vec<&'static str> {
        bit_names(&Self::NAMES, self.0 & mask)
    }
}

/// An SpO2 and pulse-rate pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpO2Pr {
    /// SpO2 in %.
    pub spo2: Sfloat,
    /// Pulse rate in beats per minute.
    pub pulse_rate: Sfloat,
}

/// PLX Spot-Check Measurement 0x2A5E.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlxSpotCheck {
    /// SpO2 and pulse rate.
    pub reading: SpO2Pr,
    /// Timestamp (flags bit 0).
    pub timestamp: Option<DateTime>,
    /// Measurement Status (flags bit 1).
    pub measurement_status: Option<PlxMeasurementStatus>,
    /// Device and Sensor Status (flags bit 2).
    pub device_sensor_status: Option<PlxDeviceSensorStatus>,
    /// Pulse Amplitude Index in % (flags bit 3).
    pub pulse_amplitude_index: Option<Sfloat>,
    /// Flags bit 4: the device clock is not set.
    pub device_clock_not_set: bool,
}

/// PLX Continuous Measurement 0x2A5F (no timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlxContinuous {
    /// SpO2 and pulse rate, normal averaging.
    pub normal: SpO2Pr,
    /// Fast averaging (flags bit 0).
    pub fast: Option<SpO2Pr>,
    /// Slow averaging (flags bit 1).
    pub slow: Option<SpO2Pr>,
    /// Measurement Status (flags bit 2).
    pub measurement_status: Option<PlxMeasurementStatus>,
    /// Device and Sensor Status (flags bit 3).
    pub device_sensor_status: Option<PlxDeviceSensorStatus>,
    /// Pulse Amplitude Index in % (flags bit 4).
    pub pulse_amplitude_index: Option<Sfloat>,
}

fn read_pair(r: &mut Reader<'_>) -> Result<SpO2Pr, Fault> {
    Ok(SpO2Pr {
        spo2: r.sfloat("spo2")?,
        pulse_rate: r.sfloat("pulse rate")?,
    })
}

fn write_pair(out: &mut Vec<u8>, p: SpO2Pr) {
    out.put_sfloat(p.spo2);
    out.put_sfloat(p.pulse_rate);
}

/// The optional fields both PLX measurements end with: Measurement Status,
/// Device and Sensor Status (24 bits) and Pulse Amplitude Index, always in
/// this order and flagged by three consecutive bits from `first_flag`.
type Tail = (
    Option<PlxMeasurementStatus>,
    Option<PlxDeviceSensorStatus>,
    Option<Sfloat>,
);

fn read_tail(r: &mut Reader<'_>, flags: u8, first_flag: u8) -> Result<Tail, Fault> {
    let measurement_status = (flags & first_flag != 0)
        .then(|| r.u16("measurement status").map(PlxMeasurementStatus))
        .transpose()?;
    let device_sensor_status = (flags & (first_flag << 1) != 0)
        .then(|| r.u24("device and sensor status").map(PlxDeviceSensorStatus))
        .transpose()?;
    let pulse_amplitude_index = (flags & (first_flag << 2) != 0)
        .then(|| r.sfloat("pulse amplitude index"))
        .transpose()?;
    Ok((
        measurement_status,
        device_sensor_status,
        pulse_amplitude_index,
    ))
}

fn write_tail(
    out: &mut Vec<u8>,
    measurement_status: Option<PlxMeasurementStatus>,
    device_sensor_status: Option<PlxDeviceSensorStatus>,
    pulse_amplitude_index: Option<Sfloat>,
) {
    if let Some(s) = measurement_status {
        out.put_u16(s.0);
    }
    if let Some(s) = device_sensor_status {
        out.put_u24(s.0);
    }
    if let Some(p) = pulse_amplitude_index {
        out.put_sfloat(p);
    }
}

impl PlxSpotCheck {
    /// Decodes a 0x2A5E value.
    pub fn decode(bytes: &[u8]) -> Result<Self, GattError> {
        Self::decode_inner(bytes).map_err(|f| f.at(Characteristic::PlxSpotCheckMeasurement))
    }

    fn decode_inner(bytes: &[u8]) -> Result<Self, Fault> {
        let mut r = Reader::new(bytes);
        let flags = r.u8("flags")?;
        reject_reserved(flags.into(), 0xE0, 0, "flags")?;
        let reading = read_pair(&mut r)?;
        let timestamp = (flags & 0x01 != 0)
            .then(|| DateTime::read(&mut r))
            .transpose()?;
        let (measurement_status, device_sensor_status, pulse_amplitude_index) =
            read_tail(&mut r, flags, 0x02)?;
        r.finish()?;
        Ok(PlxSpotCheck {
            reading,
            timestamp,
            measurement_status,
            device_sensor_status,
            pulse_amplitude_index,
            device_clock_not_set: flags & 0x10 != 0,
        })
    }

    /// The flags this value encodes to.
    pub fn flags(&self) -> u8 {
        u8::from(self.timestamp.is_some())
            | u8::from(self.measurement_status.is_some()) << 1
            | u8::from(self.device_sensor_status.is_some()) << 2
            | u8::from(self.pulse_amplitude_index.is_some()) << 3
            | u8::from(self.device_clock_not_set) << 4
    }

    /// Encodes; flags follow from the fields. Device and Sensor Status is
    /// written as its low 24 bits.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(19);
        out.put_u8(self.flags());
        write_pair(&mut out, self.reading);
        if let Some(t) = &self.timestamp {
            t.write(&mut out);
        }
        write_tail(
            &mut out,
            self.measurement_status,
            self.device_sensor_status,
            self.pulse_amplitude_index,
        );
        out
    }

    /// One measurement: [`Metric::Spo2`] and [`Metric::OximetryPulseRate`].
    pub fn to_measurements(&self) -> Vec<DecodedMeasurement> {
        let mut m = plx_measurement(
            self.reading,
            self.measurement_status,
            self.device_sensor_status,
            self.pulse_amplitude_index,
        );
        m.time = self.timestamp.and_then(|t| t.to_device_time());
        if self.device_clock_not_set {
            m.annotations
                .insert("device_clock_not_set".into(), "true".into());
        }
        vec![m]
    }
}

impl PlxContinuous {
    /// Decodes a 0x2A5F value.
    pub fn decode(bytes: &[u8]) -> Result<Self, GattError> {
        Self::decode_inner(bytes).map_err(|f| f.at(Characteristic::PlxContinuousMeasurement))
    }

    fn decode_inner(bytes: &[u8]) -> Result<Self, Fault> {
        let mut r = Reader::new(bytes);
        let flags = r.u8("flags")?;
        reject_reserved(flags.into(), 0xE0, 0, "flags")?;
        let normal = read_pair(&mut r)?;
        let fast = (flags & 0x01 != 0).then(|| read_pair(&mut r)).transpose()?;
        let slow = (flags & 0x02 != 0).then(|| read_pair(&mut r)).transpose()?;
        let (measurement_status, device_sensor_status, pulse_amplitude_index) =
            read_tail(&mut r, flags, 0x04)?;
        r.finish()?;
        Ok(PlxContinuous {
            normal,
            fast,
            slow,
            measurement_status,
            device_sensor_status,
            pulse_amplitude_index,
        })
    }

    /// The flags this value encodes to.
    pub fn flags(&self) -> u8 {
        u8::from(self.fast.is_some())
            | u8::from(self.slow.is_some()) << 1
            | u8::from(self.measurement_status.is_some()) << 2
            | u8::from(self.device_sensor_status.is_some()) << 3
            | u8::from(self.pulse_amplitude_index.is_some()) << 4
    }

    /// Encodes; flags follow from the fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20);
        out.put_u8(self.flags());
        write_pair(&mut out, self.normal);
        for p in [self.fast, self.slow].into_iter().flatten() {
            write_pair(&mut out, p);
        }
        write_tail(
            &mut out,
            self.measurement_status,
            self.device_sensor_status,
            self.pulse_amplitude_index,
        );
        out
    }

    /// One measurement of the normal-averaged SpO2 and pulse rate (no time:
    /// continuous readings are "now"); fast and slow averages as annotations.
    pub fn to_measurements(&self) -> Vec<DecodedMeasurement> {
        let mut m = plx_measurement(
            self.normal,
            self.measurement_status,
            self.device_sensor_status,
            self.pulse_amplitude_index,
        );
        for (name, pair) in [("fast", self.fast), ("slow", self.slow)] {
            if let Some(p) = pair {
                m.annotations
                    .insert(format!("spo2_{name}_percent"), p.spo2.to_string());
                m.annotations.insert(
                    format!("pulse_rate_{name}_per_min"),
                    p.pulse_rate.to_string(),
                );
            }
        }
        vec![m]
    }
}

fn plx_measurement(
    reading: SpO2Pr,
    measurement_status: Option<PlxMeasurementStatus>,
    device_status: Option<PlxDeviceSensorStatus>,
    pai: Option<Sfloat>,
) -> DecodedMeasurement {
    let mut a = Annotations::new();
    let mut reasons = Vec::new();
    if let Some(s) = measurement_status {
        a.insert("measurement_status_raw".into(), format!("{:#06x}", s.0));
        let all = s.names(u16::MAX);
        if !all.is_empty() {
            a.insert("measurement_status".into(), all.join(","));
        }
        if s.0 & PlxMeasurementStatus::FROM_STORAGE != 0 {
            a.insert("from_storage".into(), "true".into());
        }
        reasons.extend(s.names(PlxMeasurementStatus::NOT_CLINICAL));
    }
    if let Some(s) = device_status {
        a.insert("device_sensor_status_raw".into(), format!("{:#08x}", s.0));
        let all = s.names(u32::MAX);
        if !all.is_empty() {
            a.insert("device_sensor_status".into(), all.join(","));
        }
        reasons.extend(s.names(PlxDeviceSensorStatus::NOT_CLINICAL));
    }
    if let Some(p) = pai {
        a.insert("pulse_amplitude_index_percent".into(), p.to_string());
    }
    DecodedMeasurement {
        components: vec![
            Component {
                metric: Metric::Spo2,
                value: reading.spo2.to_raw_value(),
                unit: Some("%".into()),
            },
            Component {
                metric: Metric::OximetryPulseRate,
                value: reading.pulse_rate.to_raw_value(),
                unit: Some("/min".into()),
            },
        ],
        annotations: a,
        not_clinical: (!reasons.is_empty())
            .then(|| format!("oximeter reports {}", reasons.join(", "))),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoded::RawValue;

    #[test]
    fn spot_check_vector() {
        let bytes = hex::decode("0FACF3BEF5E8070B1D170839204022000066E3").unwrap();
        let m = PlxSpotCheck::decode(&bytes).unwrap();
        assert_eq!(m.reading.spo2.to_f64(), Some(94.0));
        assert_eq!(m.reading.pulse_rate.to_f64(), Some(147.0));
        assert_eq!(m.measurement_status, Some(PlxMeasurementStatus(0x4020)));
        assert_eq!(m.device_sensor_status, Some(PlxDeviceSensorStatus(0x22)));
        assert_eq!(m.pulse_amplitude_index.and_then(Sfloat::to_f64), Some(8.7));
        assert_eq!(m.encode(), bytes);
        let d = &m.to_measurements()[0];
        assert_eq!(d.components[0].value, RawValue::Number(94.0));
        let reason = d.not_clinical.as_deref().unwrap_or_default();
        assert!(
            reason.contains("questionable_measurement_detected"),
            "{reason}"
        );
        assert!(
            reason.contains("equipment_malfunction_detected"),
            "{reason}"
        );
        assert!(reason.contains("low_perfusion_detected"), "{reason}");
        assert!(!reason.contains("measurement_ongoing"), "{reason}");
    }

    #[test]
    fn continuous_vectors() {
        let bytes = hex::decode("1C5F005A00200000000057F0").unwrap();
        let m = PlxContinuous::decode(&bytes).unwrap();
        assert_eq!(
            (m.normal.spo2.to_f64(), m.normal.pulse_rate.to_f64()),
            (Some(95.0), Some(90.0))
        );
        assert_eq!(m.pulse_amplitude_index.and_then(Sfloat::to_f64), Some(8.7));
        assert_eq!(m.encode(), bytes);
        let d = &m.to_measurements()[0];
        assert_eq!(d.not_clinical, None, "measurement ongoing alone is fine");
        assert_eq!(d.components[1].unit.as_deref(), Some("/min"));
        let m = PlxContinuous::decode(&[0, 0x64, 0, 0x5A, 0]).unwrap();
        assert_eq!(m.normal.spo2.to_f64(), Some(100.0));
    }

    #[test]
    fn clock_not_set_and_storage() {
        let m = PlxSpotCheck {
            reading: SpO2Pr {
                spo2: Sfloat::from_raw(97),
                pulse_rate: Sfloat::from_raw(70),
            },
            timestamp: None,
            measurement_status: Some(PlxMeasurementStatus(PlxMeasurementStatus::FROM_STORAGE)),
            device_sensor_status: None,
            pulse_amplitude_index: None,
            device_clock_not_set: true,
        };
        assert_eq!(PlxSpotCheck::decode(&m.encode()).unwrap(), m);
        let d = &m.to_measurements()[0];
        assert_eq!(d.annotations["device_clock_not_set"], "true");
        assert_eq!(d.annotations["from_storage"], "true");
        assert_eq!(d.not_clinical, None);
    }

    #[test]
    fn malformed() {
        assert!(PlxSpotCheck::decode(&[0x20, 0, 0, 0, 0]).is_err());
        assert_eq!(
            PlxSpotCheck::decode(&[0x04, 0, 0, 0, 0, 1, 2])
                .unwrap_err()
                .offset,
            5
        );
        assert!(PlxContinuous::decode(&[0x00, 0, 0, 0, 0, 0]).is_err());
    }
}
