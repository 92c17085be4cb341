//! Weight Measurement 0x2A9D (domain.md §1.3).
//!
//! The wire resolution is fixed by the characteristic (0.005 kg or 0.01 lb),
//! not by the Weight Scale Feature's resolution field, which only describes
//! the device's precision. Values are kept as raw integers and converted
//! exactly (`raw × 5 × 10^-3`), so 14000 is exactly 70.0 kg.
//!
//! Flags bits 4-7 are RFU and rejected: each defined bit adds fields, so an
//! unknown bit means an unknown layout.

use super::bpm::stamped;
use super::datetime::DateTime;
use super::error::{Characteristic, Fault, GattError, GattErrorKind};
use super::ieee11073::decimal_to_f64;
use super::reader::{reject_reserved, Put, Reader};
use crate::decoded::{Annotations, Component, DecodedMeasurement, RawValue, SpecialValue};
use crate::metric::Metric;

/// Weight value meaning "Measurement Unsuccessful".
pub const WEIGHT_UNSUCCESSFUL: u16 = 0xFFFF;

/// SI (kg, m) or Imperial (lb, in): flags bit 0 of weight scale and body
/// composition measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MeasurementSystem {
    /// Kilograms and metres.
    #[default]
    Si,
    /// Pounds and inches.
    Imperial,
}

impl MeasurementSystem {
    /// UCUM code of masses.
    pub const fn mass_unit(self) -> &'static str {
        match self {
            MeasurementSystem::Si => "kg",
            MeasurementSystem::Imperial => "[lb_av]",
        }
    }

    /// UCUM code of lengths.
    pub const fn length_unit(self) -> &'static str {
        match self {
            MeasurementSystem::Si => "m",
            MeasurementSystem::Imperial => "[in_i]",
        }
    }

    /// A raw mass (uint16) in [`Self::mass_unit`]: ×0.005 kg or ×0.01 lb.
    pub fn mass(self, raw: u16) -> f64 {
        match self {
            MeasurementSystem::Si => decimal_to_f64(i128::from(raw) * 5, -3),
            MeasurementSystem::Imperial => decimal_to_f64(i128::from(raw), -2),
        }
    }

    /// A raw height (uint16) in [`Self::length_unit`]: ×0.001 m or ×0.1 in.
    pub fn length(self, raw: u16) -> f64 {
        match self {
            MeasurementSystem::Si => decimal_to_f64(i128::from(raw), -3),
            MeasurementSystem::Imperial => decimal_to_f64(i128::from(raw), -1),
        }
    }

    /// The raw mass nearest to `value` (in [`Self::mass_unit`]), for
    /// encoders; `None` when not finite, negative or too large (0xFFFF is
    /// reserved for "unsuccessful").
    pub fn mass_raw(self, value: f64) -> Option<u16> {
        let steps = match self {
            MeasurementSystem::Si => value / 0.005,
            MeasurementSystem::Imperial => value / 0.01,
        };
        raw_u16(steps)
    }

    /// The raw height nearest to `value` (in [`Self::length_unit`]).
    pub fn length_raw(self, value: f64) -> Option<u16> {
        let steps = match self {
            MeasurementSystem::Si => value * 1000.0,
            MeasurementSystem::Imperial => value * 10.0,
        };
        raw_u16(steps)
    }

    fn from_bit(set: bool) -> Self {
        if set {
            MeasurementSystem::Imperial
        } else {
            MeasurementSystem::Si
        }
    }
}

fn raw_u16(steps: f64) -> Option<u16> {
    let r = steps.round();
    (r.is_finite() && (0.0..f64::from(u16::MAX)).contains(&r)).then_some(r as u16)
}

/// BMI (×0.1 kg/m²) and height, present together (flags bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BmiHeight {
    /// BMI in 0.1 kg/m².
    pub bmi_raw: u16,
    /// Height in 0.001 m or 0.1 in.
    pub height_raw: u16,
}

/// Weight Measurement 0x2A9D.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WeightMeasurement {
    /// Units (flags bit 0).
    pub system: MeasurementSystem,
    /// Weight in 0.005 kg or 0.01 lb; [`WEIGHT_UNSUCCESSFUL`] = failed.
    pub weight_raw: u16,
    /// Time Stamp (flags bit 1).
    pub timestamp: Option<DateTime>,
    /// User ID (flags bit 2); 255 = unknown user.
    pub user_id: Option<u8>,
    /// BMI and height (flags bit 3).
    pub bmi_height: Option<BmiHeight>,
}

impl WeightMeasurement {
    /// Decodes a 0x2A9D value. A "measurement unsuccessful" weight with BMI
    /// and height present is rejected: the specification disables those
    /// fields then, so their presence means the value is not what it says.
    pub fn decode(bytes: &[u8]) -> Result<Self, GattError> {
        Self::decode_inner(bytes).map_err(|f| f.at(Characteristic::WeightMeasurement))
    }

    fn decode_inner(bytes: &[u8]) -> Result<Self, Fault> {
        let mut r = Reader::new(bytes);
        let flags = r.u8("flags")?;
        reject_reserved(flags.into(), 0xF0, 0, "flags")?;
        let system = MeasurementSystem::from_bit(flags & 0x01 != 0);
        let weight_raw = r.u16("weight")?;
        let timestamp = (flags & 0x02 != 0)
            .then(|| DateTime::read(&mut r))
            .transpose()?;
        let user_id = (flags & 0x04 != 0).then(|| r.u8("user id")).transpose()?;
        let at = r.pos();
        let bmi_height = (flags & 0x08 != 0)
            .then(|| {
                Ok::<_, Fault>(BmiHeight {
                    bmi_raw: r.u16("bmi")?,
                    height_raw: r.u16("height")?,
                })
            })
            .transpose()?;
        r.finish()?;
        if weight_raw == WEIGHT_UNSUCCESSFUL && bmi_height.is_some() {
            return Err(Fault::new(
                at,
                GattErrorKind::Inconsistent {
                    field: "bmi",
                    detail:
                        "BMI and height present although the weight measurement was unsuccessful",
                },
            ));
        }
        Ok(WeightMeasurement {
            system,
            weight_raw,
            timestamp,
            user_id,
            bmi_height,
        })
    }

    /// Encodes; flags follow from which optional fields are present.
    pub fn encode(&self) -> Vec<u8> {
        let flags = u8::from(self.system == MeasurementSystem::Imperial)
            | u8::from(self.timestamp.is_some()) << 1
            | u8::from(self.user_id.is_some()) << 2
            | u8::from(self.bmi_height.is_some()) << 3;
        let mut out = Vec::with_capacity(15);
        out.put_u8(flags);
        out.put_u16(self.weight_raw);
        if let Some(t) = &self.timestamp {
            t.write(&mut out);
        }
        if let Some(u) = self.user_id {
            out.put_u8(u);
        }
        if let Some(b) = self.bmi_height {
            out.put_u16(b.bmi_raw);
            out.put_u16(b.height_raw);
        }
        out
    }

    /// Weight in [`MeasurementSystem::mass_unit`]; `None` when unsuccessful.
    pub fn weight(&self) -> Option<f64> {
        (self.weight_raw != WEIGHT_UNSUCCESSFUL).then(|| self.system.mass(self.weight_raw))
    }

    /// BMI in kg/m² (whatever the unit system).
    pub fn bmi(&self) -> Option<f64> {
        self.bmi_height
            .map(|b| decimal_to_f64(i128::from(b.bmi_raw), -1))
    }

    /// Height in [`MeasurementSystem::length_unit`].
    pub fn height(&self) -> Option<f64> {
        self.bmi_height.map(|b| self.system.length(b.height_raw))
    }

    /// One measurement: body weight, and BMI and height when present.
    ///
    /// An unsuccessful weight stays a special value (NaN), so the record is
    /// quarantined with its bytes rather than dropped. A BMI or height of 0
    /// or 0xFFFF (scales without a user profile send these) is left out with
    /// an `…=unavailable` annotation instead: they are not measurements, and
    /// as one record is one measurement, keeping them would take the weight
    /// down with them.
    pub fn to_measurements(&self) -> Vec<DecodedMeasurement> {
        let mut annotations = Annotations::new();
        let weight = match self.weight() {
            Some(w) => RawValue::Number(w),
            None => {
                annotations.insert("weight_unsuccessful".into(), "true".into());
                RawValue::Special(SpecialValue::NaN)
            }
        };
        let mut components = vec![Component {
            metric: Metric::BodyWeight,
            value: weight,
            unit: Some(self.system.mass_unit().into()),
        }];
        if let Some(b) = self.bmi_height {
            push_optional(
                &mut components,
                &mut annotations,
                Metric::Bmi,
                b.bmi_raw,
                "kg/m2",
                |r| decimal_to_f64(i128::from(r), -1),
            );
            push_optional(
                &mut components,
                &mut annotations,
                Metric::BodyHeight,
                b.height_raw,
                self.system.length_unit(),
                |r| self.system.length(r),
            );
        }
        stamped(self.timestamp, self.user_id, components, annotations)
    }
}

/// Adds a secondary uint16 value as a component unless it is 0 or 0xFFFF
/// ("not available"), in which case it becomes an annotation.
pub(crate) fn push_optional(
    components: &mut Vec<Component>,
    annotations: &mut Annotations,
    metric: Metric,
    raw: u16,
    unit: &str,
    value: impl Fn(u16) -> f64,
) {
    if raw == 0 || raw == 0xFFFF {
        annotations.insert(metric.name().into(), "unavailable".into());
    } else {
        components.push(Component::number(metric, value(raw), unit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors() {
        let m = WeightMeasurement::decode(&[0x00, 0xB0, 0x36]).unwrap();
        assert_eq!((m.weight(), m.system.mass_unit()), (Some(70.0), "kg"));
        let m = WeightMeasurement::decode(&[0x01, 0x54, 0x3D]).unwrap();
        assert_eq!((m.weight(), m.system.mass_unit()), (Some(157.0), "[lb_av]"));
        let bytes = [0x0C, 0xB0, 0x36, 0x05, 0xF5, 0x00, 0xD6, 0x06];
        let m = WeightMeasurement::decode(&bytes).unwrap();
        assert_eq!(
            (m.user_id, m.bmi(), m.height()),
            (Some(5), Some(24.5), Some(1.75))
        );
        assert_eq!(m.encode(), bytes);
        let d = &m.to_measurements()[0];
        let metrics: Vec<_> = d.components.iter().map(|c| c.metric).collect();
        assert_eq!(
            metrics,
            [Metric::BodyWeight, Metric::Bmi, Metric::BodyHeight]
        );
        assert_eq!(d.components[2].unit.as_deref(), Some("m"));
    }

    #[test]
    fn unsuccessful() {
        let m = WeightMeasurement::decode(&[0x00, 0xFF, 0xFF]).unwrap();
        assert_eq!(m.weight(), None);
        let d = &m.to_measurements()[0];
        assert_eq!(d.components[0].value, RawValue::Special(SpecialValue::NaN));
        let e = WeightMeasurement::decode(&[0x08, 0xFF, 0xFF, 1, 0, 1, 0]).unwrap_err();
        assert!(matches!(e.kind, GattErrorKind::Inconsistent { .. }), "{e}");
        assert_eq!(e.offset, 3);
        let d = &WeightMeasurement::decode(&[0x08, 0xB0, 0x36, 0, 0, 0, 0])
            .unwrap()
            .to_measurements()[0];
        assert_eq!(d.components.len(), 1);
        assert_eq!(d.annotations["bmi"], "unavailable");
    }

    #[test]
    fn malformed() {
        assert!(matches!(
            WeightMeasurement::decode(&[0x10, 0, 0]).unwrap_err().kind,
            GattErrorKind::ReservedBits { bits: 0x10, .. }
        ));
        assert_eq!(
            WeightMeasurement::decode(&[0x02, 0, 0]).unwrap_err().offset,
            3
        );
        assert_eq!(MeasurementSystem::Si.mass_raw(70.0), Some(14000));
        assert_eq!(MeasurementSystem::Si.mass_raw(-1.0), None);
    }
}
