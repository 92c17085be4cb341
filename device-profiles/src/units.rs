//! Units: parsing of what devices send, UCUM codes, and conversion to the
//! canonical unit of each metric.
//!
//! A unit is never guessed: a string that is not in the alias table is an
//! error, and so is a unit that does not measure the metric's dimension
//! (kilograms for a blood pressure). Conversion factors come from UCUM; the
//! glucose factor uses the molar mass of glucose (180.16 g/mol → 18.016).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::metric::Metric;

/// `mm[Hg]` per kPa (UCUM: 1 `mm[Hg]` = 133.322 Pa).
pub const MMHG_PER_KPA: f64 = 7.500_615_758;
/// kg per avoirdupois pound (exact by definition).
pub const KG_PER_LB: f64 = 0.453_592_37;
/// mg/dL of glucose per mmol/L (molar mass 180.16 g/mol).
pub const GLUCOSE_MGDL_PER_MMOLL: f64 = 18.016;

/// A unit the gateway understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Unit {
    /// kilogram
    Kg,
    /// gram
    G,
    /// avoirdupois pound
    Lb,
    /// millimetre of mercury
    MmHg,
    /// kilopascal
    KPa,
    /// milligram per decilitre
    MgPerDl,
    /// millimole per litre (glucose)
    MmolPerL,
    /// percent
    Percent,
    /// degree Celsius
    Celsius,
    /// degree Fahrenheit
    Fahrenheit,
    /// per minute (beats, breaths)
    PerMin,
    /// centimetre
    Cm,
    /// metre
    M,
    /// international inch
    Inch,
    /// kilogram per square metre (BMI)
    KgPerM2,
    /// a questionnaire score (UCUM annotation `{score}`: dimensionless)
    Score,
}

/// What a unit measures; a conversion is only possible inside one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// mass
    Mass,
    /// pressure
    Pressure,
    /// glucose concentration (mass or molar; glucose-specific factor)
    GlucoseConcentration,
    /// fraction in percent
    Fraction,
    /// temperature
    Temperature,
    /// frequency per minute
    Rate,
    /// length
    Length,
    /// mass per area
    MassPerArea,
    /// a questionnaire's score: converts to nothing else
    Score,
}

impl Unit {
    /// The UCUM code (case-sensitive) of this unit.
    pub const fn ucum(self) -> &'static str {
        match self {
            Unit::Kg => "kg",
            Unit::G => "g",
            Unit::Lb => "[lb_av]",
            Unit::MmHg => "mm[Hg]",
            Unit::KPa => "kPa",
            Unit::MgPerDl => "mg/dL",
            Unit::MmolPerL => "mmol/L",
            Unit::Percent => "%",
            Unit::Celsius => "Cel",
            Unit::Fahrenheit => "[degF]",
            Unit::PerMin => "/min",
            Unit::Cm => "cm",
            Unit::M => "m",
            Unit::Inch => "[in_i]",
            Unit::KgPerM2 => "kg/m2",
            Unit::Score => "{score}",
        }
    }

    /// The dimension this unit measures.
    pub const fn dimension(self) -> Dimension {
        match self {
            Unit::Kg | Unit::G | Unit::Lb => Dimension::Mass,
            Unit::MmHg | Unit::KPa => Dimension::Pressure,
            Unit::MgPerDl | Unit::MmolPerL => Dimension::GlucoseConcentration,
            Unit::Percent => Dimension::Fraction,
            Unit::Celsius | Unit::Fahrenheit => Dimension::Temperature,
            Unit::PerMin => Dimension::Rate,
            Unit::Cm | Unit::M | Unit::Inch => Dimension::Length,
            Unit::KgPerM2 => Dimension::MassPerArea,
            Unit::Score => Dimension::Score,
        }
    }

    /// Converts `value` from this unit to `to`. `None` when the dimensions
    /// differ (the caller quarantines; it never guesses).
    pub fn convert(self, value: f64, to: Unit) -> Option<f64> {
        if self == to {
            return Some(value);
        }
        if self.dimension() != to.dimension() {
            return None;
        }
        // Affine temperature conversions first; the rest go through a base unit.
        match (self, to) {
            (Unit::Fahrenheit, Unit::Celsius) => return Some((value - 32.0) * 5.0 / 9.0),
            (Unit::Celsius, Unit::Fahrenheit) => return Some(value * 9.0 / 5.0 + 32.0),
            _ => {}
        }
        Some(value * self.to_base() / to.to_base())
    }

    /// Factor to the dimension's base unit (`kg`, `mm[Hg]`, `mg/dL`, `%`, `/min`, `cm`, `kg/m2`).
    fn to_base(self) -> f64 {
        match self {
            Unit::Kg => 1.0,
            Unit::G => 0.001,
            Unit::Lb => KG_PER_LB,
            Unit::MmHg => 1.0,
            Unit::KPa => MMHG_PER_KPA,
            Unit::MgPerDl => 1.0,
            Unit::MmolPerL => GLUCOSE_MGDL_PER_MMOLL,
            Unit::Percent | Unit::PerMin | Unit::KgPerM2 | Unit::Score => 1.0,
            Unit::Cm => 1.0,
            Unit::M => 100.0,
            Unit::Inch => 2.54,
            // Temperatures are handled above; identity keeps this total.
            Unit::Celsius | Unit::Fahrenheit => 1.0,
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ucum())
    }
}

/// A unit string that is not in the alias table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown unit `{0}`")]
pub struct UnknownUnit(pub String);

/// Accepted spellings: UCUM codes first, then what devices and SenML
/// (RFC 8428 §12.1) actually send.
const ALIASES: &[(&str, Unit)] = &[
    ("kg", Unit::Kg),
    ("g", Unit::G),
    ("[lb_av]", Unit::Lb),
    ("lb", Unit::Lb),
    ("lbs", Unit::Lb),
    ("mm[Hg]", Unit::MmHg),
    ("mmHg", Unit::MmHg),
    ("mmhg", Unit::MmHg),
    ("kPa", Unit::KPa),
    ("mg/dL", Unit::MgPerDl),
    ("mg/dl", Unit::MgPerDl),
    ("mmol/L", Unit::MmolPerL),
    ("mmol/l", Unit::MmolPerL),
    ("%", Unit::Percent),
    ("%EL", Unit::Percent),
    ("Cel", Unit::Celsius),
    ("°C", Unit::Celsius),
    ("degC", Unit::Celsius),
    ("C", Unit::Celsius),
    ("[degF]", Unit::Fahrenheit),
    ("°F", Unit::Fahrenheit),
    ("degF", Unit::Fahrenheit),
    ("F", Unit::Fahrenheit),
    ("/min", Unit::PerMin),
    ("1/min", Unit::PerMin),
    ("beat/min", Unit::PerMin),
    ("beats/min", Unit::PerMin),
    ("bpm", Unit::PerMin),
    ("{beats}/min", Unit::PerMin),
    ("{breaths}/min", Unit::PerMin),
    ("cm", Unit::Cm),
    ("m", Unit::M),
    ("[in_i]", Unit::Inch),
    ("in", Unit::Inch),
    ("kg/m2", Unit::KgPerM2),
    ("kg/m^2", Unit::KgPerM2),
    ("{score}", Unit::Score),
];

impl FromStr for Unit {
    type Err = UnknownUnit;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        ALIASES
            .iter()
            .find(|(alias, _)| *alias == t)
            .map(|(_, u)| *u)
            .ok_or_else(|| UnknownUnit(s.to_string()))
    }
}

/// A unit name checked against the alias table when a file is loaded, so
/// that a typo is reported at the field that has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitName(pub String, pub Unit);

impl<'de> Deserialize<'de> for UnitName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let unit = s.parse::<Unit>().map_err(serde::de::Error::custom)?;
        Ok(UnitName(s, unit))
    }
}

/// Why a value could not be put into its metric's canonical unit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UnitError {
    /// The unit string is not known.
    #[error(transparent)]
    Unknown(#[from] UnknownUnit),
    /// The metric needs a unit and none was given.
    #[error("no unit given for {0}, and it needs one")]
    Missing(Metric),
    /// The unit measures something else.
    #[error("unit `{unit}` cannot measure {metric}")]
    Incompatible {
        /// the metric
        metric: Metric,
        /// the unit given
        unit: Unit,
    },
}

/// Converts `value` given in `unit` (a device's spelling, or none) into the
/// canonical unit of `metric`.
///
/// A missing unit is accepted only where the metric's unit cannot be
/// ambiguous: percentages (SpO2, body fat), rates per minute and BMI. Weight,
/// pressure, glucose, temperature and height always need one.
pub fn to_canonical(metric: Metric, value: f64, unit: Option<&str>) -> Result<f64, UnitError> {
    let canonical = metric.canonical_unit();
    let given = match unit.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => u.parse::<Unit>()?,
        None if unit_is_implied(canonical) => canonical,
        None => return Err(UnitError::Missing(metric)),
    };
    given
        .convert(value, canonical)
        .ok_or(UnitError::Incompatible {
            metric,
            unit: given,
        })
}

fn unit_is_implied(unit: Unit) -> bool {
    matches!(
        unit,
        Unit::Percent | Unit::PerMin | Unit::KgPerM2 | Unit::Score
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn conversions() {
        assert!(close(
            to_canonical(Metric::BodyWeight, 200.0, Some("lb")).unwrap(),
            90.718474
        ));
        assert!(close(
            to_canonical(Metric::BloodGlucose, 5.0, Some("mmol/L")).unwrap(),
            90.08
        ));
        assert!(close(
            to_canonical(Metric::Systolic, 16.0, Some("kPa")).unwrap(),
            120.009852
        ));
        assert!(close(
            to_canonical(Metric::BodyTemperature, 98.6, Some("°F")).unwrap(),
            37.0
        ));
        assert!(close(
            to_canonical(Metric::BodyHeight, 1.8, Some("m")).unwrap(),
            180.0
        ));
        assert_eq!(to_canonical(Metric::Spo2, 97.0, None).unwrap(), 97.0);
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            to_canonical(Metric::BodyWeight, 80.0, None),
            Err(UnitError::Missing(_))
        ));
        assert!(matches!(
            to_canonical(Metric::BodyWeight, 80.0, Some("stone")),
            Err(UnitError::Unknown(_))
        ));
        assert!(matches!(
            to_canonical(Metric::Systolic, 80.0, Some("kg")),
            Err(UnitError::Incompatible { .. })
        ));
    }

    #[test]
    fn every_ucum_code_parses_to_itself() {
        for (_, u) in ALIASES {
            assert_eq!(u.ucum().parse::<Unit>().unwrap(), *u);
        }
    }
}
