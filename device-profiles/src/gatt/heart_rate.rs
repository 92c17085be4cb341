//! Heart Rate Measurement 0x2A37 (domain.md §1.10).
//!
//! RR-intervals fill the rest of the value, so an odd byte left over is a
//! malformed value (trailing byte), and flags bits 5-7 (RFU) are rejected:
//! an unknown field before the RR-intervals would be read as intervals.
//! The RR flag with no interval following is rejected too (length disagrees
//! with the flags).
//!
//! Clinical choice: when the sensor supports contact detection and reports
//! *no* skin contact, the heart rate is not the patient's; the measurement
//! is `not_clinical` ("sensor contact not detected").

use super::error::{Characteristic, Fault, GattError, GattErrorKind};
use super::reader::{reject_reserved, Put, Reader};
use crate::decoded::{Annotations, Component, DecodedMeasurement};
use crate::metric::Metric;

/// Width of the heart-rate field (flags bit 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HeartRateFormat {
    /// uint8.
    #[default]
    U8,
    /// uint16.
    U16,
}

/// Sensor Contact Status (flags bits 1-2), kept bit-exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SensorContact {
    /// 0: contact detection not supported.
    #[default]
    NotSupported,
    /// 1: also "not supported" per the specification.
    NotSupportedAlt,
    /// 2: supported, contact not detected.
    NotDetected,
    /// 3: supported, contact detected.
    Detected,
}

impl SensorContact {
    fn from_bits(b: u8) -> Self {
        match b & 0b11 {
            0 => SensorContact::NotSupported,
            1 => SensorContact::NotSupportedAlt,
            2 => SensorContact::NotDetected,
            _ => SensorContact::Detected,
        }
    }

    fn bits(self) -> u8 {
        match self {
            SensorContact::NotSupported => 0,
            SensorContact::NotSupportedAlt => 1,
            SensorContact::NotDetected => 2,
            SensorContact::Detected => 3,
        }
    }

    /// Annotation value.
    pub const fn name(self) -> &'static str {
        match self {
            SensorContact::NotSupported | SensorContact::NotSupportedAlt => "not_supported",
            SensorContact::NotDetected => "not_detected",
            SensorContact::Detected => "detected",
        }
    }
}

/// Heart Rate Measurement 0x2A37.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct HeartRateMeasurement {
    /// Width the heart rate was (or is to be) sent in. A value above 255
    /// is always encoded as uint16.
    pub format: HeartRateFormat,
    /// Beats per minute.
    pub heart_rate: u16,
    /// Sensor contact status.
    pub sensor_contact: SensorContact,
    /// Energy expended in kJ (flags bit 3).
    pub energy_expended_kj: Option<u16>,
    /// RR-intervals in 1/1024 s, oldest first (flags bit 4 when non-empty).
    pub rr_intervals: Vec<u16>,
}

impl HeartRateMeasurement {
    /// Decodes a 0x2A37 value.
    pub fn decode(bytes: &[u8]) -> Result<Self, GattError> {
        Self::decode_inner(bytes).map_err(|f| f.at(Characteristic::HeartRateMeasurement))
    }

    fn decode_inner(bytes: &[u8]) -> Result<Self, Fault> {
        let mut r = Reader::new(bytes);
        let flags = r.u8("flags")?;
        reject_reserved(flags.into(), 0xE0, 0, "flags")?;
        let (format, heart_rate) = if flags & 0x01 != 0 {
            (HeartRateFormat::U16, r.u16("heart rate")?)
        } else {
            (HeartRateFormat::U8, r.u8("heart rate")?.into())
        };
        let energy_expended_kj = (flags & 0x08 != 0)
            .then(|| r.u16("energy expended"))
            .transpose()?;
        let mut rr_intervals = Vec::new();
        if flags & 0x10 != 0 {
            if r.remaining() == 0 {
                return Err(Fault::new(
                    r.pos(),
                    GattErrorKind::Truncated {
                        field: "rr-interval",
                        needed: 2,
                        available: 0,
                    },
                ));
            }
            while r.remaining() >= 2 {
                rr_intervals.push(r.u16("rr-interval")?);
            }
        }
        r.finish()?;
        Ok(HeartRateMeasurement {
            format,
            heart_rate,
            sensor_contact: SensorContact::from_bits(flags >> 1),
            energy_expended_kj,
            rr_intervals,
        })
    }

    fn wide(&self) -> bool {
        self.format == HeartRateFormat::U16 || self.heart_rate > 0xFF
    }

    /// The flags this value encodes to.
    pub fn flags(&self) -> u8 {
        u8::from(self.wide())
            | self.sensor_contact.bits() << 1
            | u8::from(self.energy_expended_kj.is_some()) << 3
            | u8::from(!self.rr_intervals.is_empty()) << 4
    }

    /// Encodes; flags follow from the fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + 2 * self.rr_intervals.len());
        out.put_u8(self.flags());
        if self.wide() {
            out.put_u16(self.heart_rate);
        } else {
            out.put_u8(self.heart_rate as u8);
        }
        if let Some(e) = self.energy_expended_kj {
            out.put_u16(e);
        }
        for rr in &self.rr_intervals {
            out.put_u16(*rr);
        }
        out
    }

    /// RR-intervals in milliseconds (exact: 1/1024 s is a binary fraction).
    pub fn rr_intervals_ms(&self) -> Vec<f64> {
        self.rr_intervals
            .iter()
            .map(|&rr| f64::from(rr) * 1000.0 / 1024.0)
            .collect()
    }

    /// One [`Metric::HeartRate`] measurement; sensor contact, energy
    /// expended and RR-intervals (raw 1/1024 s and ms) as annotations.
    pub fn to_measurements(&self) -> Vec<DecodedMeasurement> {
        let mut a = Annotations::new();
        a.insert("sensor_contact".into(), self.sensor_contact.name().into());
        if let Some(e) = self.energy_expended_kj {
            a.insert("energy_expended_kj".into(), e.to_string());
        }
        if !self.rr_intervals.is_empty() {
            let raw: Vec<String> = self.rr_intervals.iter().map(u16::to_string).collect();
            let ms: Vec<String> = self.rr_intervals_ms().iter().map(f64::to_string).collect();
            a.insert("rr_intervals_1024".into(), raw.join(","));
            a.insert("rr_intervals_ms".into(), ms.join(","));
        }
        vec![DecodedMeasurement {
            components: vec![Component::number(
                Metric::HeartRate,
                f64::from(self.heart_rate),
                "/min",
            )],
            annotations: a,
            not_clinical: (self.sensor_contact == SensorContact::NotDetected)
                .then(|| "sensor contact not detected".to_string()),
            ..Default::default()
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nordic_vectors() {
        let m = HeartRateMeasurement::decode(&[0x00, 0x55]).unwrap();
        assert_eq!(
            (m.heart_rate, m.sensor_contact, m.energy_expended_kj),
            (85, SensorContact::NotSupported, None)
        );
        assert!(m.rr_intervals.is_empty());
        let bytes = [0x1E, 0x55, 0x32, 0x00, 0x21, 0x00];
        let m = HeartRateMeasurement::decode(&bytes).unwrap();
        assert_eq!(
            (m.heart_rate, m.sensor_contact, m.energy_expended_kj),
            (85, SensorContact::Detected, Some(50))
        );
        assert_eq!(m.rr_intervals, [33]);
        assert_eq!(m.encode(), bytes);
        let d = &m.to_measurements()[0];
        assert_eq!(d.annotations["rr_intervals_ms"], "32.2265625");
        assert_eq!(d.annotations["sensor_contact"], "detected");
        let bytes = [
            0x1F, 0x01, 0x01, 0x32, 0x01, 0x01, 0x00, 0x02, 0x01, 0xFF, 0xFF,
        ];
        let m = HeartRateMeasurement::decode(&bytes).unwrap();
        assert_eq!((m.heart_rate, m.energy_expended_kj), (257, Some(306)));
        assert_eq!(m.rr_intervals, [1, 258, 65535]);
        assert_eq!(m.encode(), bytes);
    }

    #[test]
    fn malformed_and_no_contact() {
        assert!(
            HeartRateMeasurement::decode(&[0x10, 0x55]).is_err(),
            "RR flag without intervals"
        );
        assert!(
            HeartRateMeasurement::decode(&[0x10, 0x55, 1, 0, 2]).is_err(),
            "odd RR byte"
        );
        assert!(HeartRateMeasurement::decode(&[0x20, 0x55]).is_err());
        assert!(HeartRateMeasurement::decode(&[0x01, 0x55]).is_err());
        let d = &HeartRateMeasurement::decode(&[0x04, 0x55])
            .unwrap()
            .to_measurements()[0];
        assert_eq!(
            d.not_clinical.as_deref(),
            Some("sensor contact not detected")
        );
    }
}
