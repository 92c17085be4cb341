//! Body Composition Measurement 0x2A9C (domain.md §1.4).
//!
//! Flags are 16 bits; bits 13-15 are RFU and rejected (each defined bit adds
//! a field). Bit 12, Multiple Packet Measurement, means the device split one
//! record over two indications because it did not fit the ATT MTU. Each
//! packet carries its own flags describing the fields *in that packet*
//! (plus the mandatory body fat), so each packet decodes on its own, strictly,
//! and the flag is exposed as [`BodyCompositionMeasurement::multiple_packet`];
//! [`BodyCompositionMeasurement::merge`] joins the two halves.

use super::bpm::stamped;
use super::datetime::DateTime;
use super::error::{Characteristic, Fault, GattError, GattErrorKind};
use super::ieee11073::decimal_to_f64;
use super::reader::{reject_reserved, Put, Reader};
use super::weight::{push_optional, MeasurementSystem};
use crate::decoded::{Annotations, Component, DecodedMeasurement, RawValue, SpecialValue};
use crate::metric::Metric;

/// Body fat value meaning "Measurement Unsuccessful".
pub const BODY_FAT_UNSUCCESSFUL: u16 = 0xFFFF;

/// Body Composition Measurement 0x2A9C. Masses are raw uint16 in 0.005 kg
/// or 0.01 lb (see [`MeasurementSystem::mass`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BodyCompositionMeasurement {
    /// Units (flags bit 0).
    pub system: MeasurementSystem,
    /// Flags bit 12: this packet is one of two making up the record.
    pub multiple_packet: bool,
    /// Body fat in 0.1 % (mandatory); 0xFFFF = unsuccessful.
    pub body_fat_raw: u16,
    /// Time Stamp (bit 1).
    pub timestamp: Option<DateTime>,
    /// User ID (bit 2).
    pub user_id: Option<u8>,
    /// Basal metabolism in kJ (bit 3).
    pub basal_metabolism_kj: Option<u16>,
    /// Muscle percentage in 0.1 % (bit 4).
    pub muscle_percent_raw: Option<u16>,
    /// Muscle mass (bit 5).
    pub muscle_mass_raw: Option<u16>,
    /// Fat free mass (bit 6).
    pub fat_free_mass_raw: Option<u16>,
    /// Soft lean mass (bit 7).
    pub soft_lean_mass_raw: Option<u16>,
    /// Body water mass (bit 8).
    pub body_water_mass_raw: Option<u16>,
    /// Impedance in 0.1 Ω (bit 9).
    pub impedance_raw: Option<u16>,
    /// Weight (bit 10).
    pub weight_raw: Option<u16>,
    /// Height in 0.001 m or 0.1 in (bit 11).
    pub height_raw: Option<u16>,
}

const RFU_FLAGS: u32 = 0xE000;

impl BodyCompositionMeasurement {
    /// Decodes one 0x2A9C packet.
    pub fn decode(bytes: &[u8]) -> Result<Self, GattError> {
        Self::decode_inner(bytes).map_err(|f| f.at(Characteristic::BodyCompositionMeasurement))
    }

    fn decode_inner(bytes: &[u8]) -> Result<Self, Fault> {
        let mut r = Reader::new(bytes);
        let flags = r.u16("flags")?;
        reject_reserved(flags.into(), RFU_FLAGS, 0, "flags")?;
        let bit = |n: u16| flags & (1 << n) != 0;
        let mut m = BodyCompositionMeasurement {
            system: if bit(0) {
                MeasurementSystem::Imperial
            } else {
                MeasurementSystem::Si
            },
            multiple_packet: bit(12),
            body_fat_raw: r.u16("body fat percentage")?,
            ..Default::default()
        };
        m.timestamp = bit(1).then(|| DateTime::read(&mut r)).transpose()?;
        m.user_id = bit(2).then(|| r.u8("user id")).transpose()?;
        let after_user = r.pos();
        let mut opt = |n: u16, field: &'static str| bit(n).then(|| r.u16(field)).transpose();
        m.basal_metabolism_kj = opt(3, "basal metabolism")?;
        m.muscle_percent_raw = opt(4, "muscle percentage")?;
        m.muscle_mass_raw = opt(5, "muscle mass")?;
        m.fat_free_mass_raw = opt(6, "fat free mass")?;
        m.soft_lean_mass_raw = opt(7, "soft lean mass")?;
        m.body_water_mass_raw = opt(8, "body water mass")?;
        m.impedance_raw = opt(9, "impedance")?;
        m.weight_raw = opt(10, "weight")?;
        m.height_raw = opt(11, "height")?;
        r.finish()?;
        if m.body_fat_raw == BODY_FAT_UNSUCCESSFUL && flags & 0x0FF8 != 0 {
            return Err(Fault::new(
                after_user,
                GattErrorKind::Inconsistent {
                    field: "flags",
                    detail: "optional fields present although the measurement was unsuccessful",
                },
            ));
        }
        Ok(m)
    }

    /// The flags this value encodes to.
    pub fn flags(&self) -> u16 {
        let b = |set: bool, n: u16| u16::from(set) << n;
        b(self.system == MeasurementSystem::Imperial, 0)
            | b(self.timestamp.is_some(), 1)
            | b(self.user_id.is_some(), 2)
            | b(self.basal_metabolism_kj.is_some(), 3)
            | b(self.muscle_percent_raw.is_some(), 4)
            | b(self.muscle_mass_raw.is_some(), 5)
            | b(self.fat_free_mass_raw.is_some(), 6)
            | b(self.soft_lean_mass_raw.is_some(), 7)
            | b(self.body_water_mass_raw.is_some(), 8)
            | b(self.impedance_raw.is_some(), 9)
            | b(self.weight_raw.is_some(), 10)
            | b(self.height_raw.is_some(), 11)
            | b(self.multiple_packet, 12)
    }

    /// Encodes one packet; flags follow from which fields are present.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.put_u16(self.flags());
        out.put_u16(self.body_fat_raw);
        if let Some(t) = &self.timestamp {
            t.write(&mut out);
        }
        if let Some(u) = self.user_id {
            out.put_u8(u);
        }
        for v in self.u16_fields().into_iter().flatten() {
            out.put_u16(v);
        }
        out
    }

    fn u16_fields(&self) -> [Option<u16>; 9] {
        [
            self.basal_metabolism_kj,
            self.muscle_percent_raw,
            self.muscle_mass_raw,
            self.fat_free_mass_raw,
            self.soft_lean_mass_raw,
            self.body_water_mass_raw,
            self.impedance_raw,
            self.weight_raw,
            self.height_raw,
        ]
    }

    /// Body fat in %, `None` when unsuccessful.
    pub fn body_fat_percent(&self) -> Option<f64> {
        (self.body_fat_raw != BODY_FAT_UNSUCCESSFUL)
            .then(|| decimal_to_f64(i128::from(self.body_fat_raw), -1))
    }

    /// Joins the two packets of a multiple-packet record. `None` when they
    /// cannot be halves of one record: not both flagged, different units,
    /// body fat, time or user, or the same field with two different values.
    /// The result is a complete record (`multiple_packet` cleared).
    pub fn merge(&self, second: &Self) -> Option<Self> {
        fn pick<T: PartialEq + Copy>(a: Option<T>, b: Option<T>) -> Result<Option<T>, ()> {
            match (a, b) {
                (Some(x), Some(y)) if x != y => Err(()),
                (x, y) => Ok(x.or(y)),
            }
        }
        let compatible = self.multiple_packet
            && second.multiple_packet
            && self.system == second.system
            && self.body_fat_raw == second.body_fat_raw;
        if !compatible {
            return None;
        }
        let merged = (|| {
            Ok::<_, ()>(BodyCompositionMeasurement {
                system: self.system,
                multiple_packet: false,
                body_fat_raw: self.body_fat_raw,
                timestamp: pick(self.timestamp, second.timestamp)?,
                user_id: pick(self.user_id, second.user_id)?,
                basal_metabolism_kj: pick(self.basal_metabolism_kj, second.basal_metabolism_kj)?,
                muscle_percent_raw: pick(self.muscle_percent_raw, second.muscle_percent_raw)?,
                muscle_mass_raw: pick(self.muscle_mass_raw, second.muscle_mass_raw)?,
                fat_free_mass_raw: pick(self.fat_free_mass_raw, second.fat_free_mass_raw)?,
                soft_lean_mass_raw: pick(self.soft_lean_mass_raw, second.soft_lean_mass_raw)?,
                body_water_mass_raw: pick(self.body_water_mass_raw, second.body_water_mass_raw)?,
                impedance_raw: pick(self.impedance_raw, second.impedance_raw)?,
                weight_raw: pick(self.weight_raw, second.weight_raw)?,
                height_raw: pick(self.height_raw, second.height_raw)?,
            })
        })();
        merged.ok()
    }

    /// One measurement: body fat (special NaN when unsuccessful, so it is
    /// quarantined), weight and height when present and available; the other
    /// compartments have no metric of their own and become annotations with
    /// their unit (`muscle_mass` = "15 kg").
    pub fn to_measurements(&self) -> Vec<DecodedMeasurement> {
        let mut annotations = Annotations::new();
        let fat = match self.body_fat_percent() {
            Some(v) => RawValue::Number(v),
            None => RawValue::Special(SpecialValue::NaN),
        };
        let mut components = vec![Component {
            metric: Metric::BodyFat,
            value: fat,
            unit: Some("%".into()),
        }];
        let sys = self.system;
        if let Some(w) = self.weight_raw {
            push_optional(
                &mut components,
                &mut annotations,
                Metric::BodyWeight,
                w,
                sys.mass_unit(),
                |r| sys.mass(r),
            );
        }
        if let Some(h) = self.height_raw {
            push_optional(
                &mut components,
                &mut annotations,
                Metric::BodyHeight,
                h,
                sys.length_unit(),
                |r| sys.length(r),
            );
        }
        let mut note = |key: &str, raw: Option<u16>, text: &dyn Fn(u16) -> String| {
            if let Some(r) = raw {
                let v = if r == 0xFFFF {
                    "unavailable".to_string()
                } else {
                    text(r)
                };
                annotations.insert(key.into(), v);
            }
        };
        let tenth = |r: u16| decimal_to_f64(i128::from(r), -1).to_string();
        let mass = |r: u16| format!("{} {}", sys.mass(r), sys.mass_unit());
        note("basal_metabolism_kj", self.basal_metabolism_kj, &|r| {
            r.to_string()
        });
        note("muscle_percent", self.muscle_percent_raw, &tenth);
        note("muscle_mass", self.muscle_mass_raw, &mass);
        note("fat_free_mass", self.fat_free_mass_raw, &mass);
        note("soft_lean_mass", self.soft_lean_mass_raw, &mass);
        note("body_water_mass", self.body_water_mass_raw, &mass);
        note("impedance_ohm", self.impedance_raw, &tenth);
        if self.multiple_packet {
            annotations.insert("multiple_packet".into(), "true".into());
        }
        stamped(self.timestamp, self.user_id, components, annotations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector() {
        let bytes = [0x30, 0x00, 0x64, 0x00, 0xC8, 0x00, 0xB8, 0x0B];
        let m = BodyCompositionMeasurement::decode(&bytes).unwrap();
        assert_eq!(m.body_fat_percent(), Some(10.0));
        assert_eq!(m.muscle_percent_raw, Some(200));
        assert_eq!(m.muscle_mass_raw.map(|r| m.system.mass(r)), Some(15.0));
        assert_eq!(m.encode(), bytes);
        let d = &m.to_measurements()[0];
        assert_eq!(d.components.len(), 1);
        assert_eq!(d.annotations["muscle_percent"], "20");
        assert_eq!(d.annotations["muscle_mass"], "15 kg");
    }

    #[test]
    fn multiple_packets_merge() {
        let a = BodyCompositionMeasurement {
            multiple_packet: true,
            body_fat_raw: 250,
            weight_raw: Some(14000),
            ..Default::default()
        };
        let b = BodyCompositionMeasurement {
            multiple_packet: true,
            body_fat_raw: 250,
            impedance_raw: Some(5000),
            ..Default::default()
        };
        for p in [a, b] {
            let d = BodyCompositionMeasurement::decode(&p.encode()).unwrap();
            assert!(d.multiple_packet);
            assert_eq!(d, p);
        }
        let m = a.merge(&b).unwrap();
        assert_eq!(
            (m.weight_raw, m.impedance_raw, m.multiple_packet),
            (Some(14000), Some(5000), false)
        );
        let c = BodyCompositionMeasurement {
            weight_raw: Some(1),
            ..b
        };
        assert!(a.merge(&c).is_none());
        let d = &m.to_measurements()[0];
        assert_eq!(d.components[1].value, RawValue::Number(70.0));
    }

    #[test]
    fn malformed() {
        assert!(BodyCompositionMeasurement::decode(&[0x00, 0x20, 0, 0]).is_err());
        assert!(
            BodyCompositionMeasurement::decode(&[0x00, 0x04, 0, 0]).is_err(),
            "weight flagged, absent"
        );
        let e = BodyCompositionMeasurement::decode(&[0x00, 0x04, 0xFF, 0xFF, 1, 0]).unwrap_err();
        assert!(matches!(e.kind, GattErrorKind::Inconsistent { .. }));
        assert!(BodyCompositionMeasurement::decode(&[
            0x06, 0x00, 0xFF, 0xFF, 0xE8, 7, 1, 1, 0, 0, 0, 1
        ])
        .is_ok());
    }
}
