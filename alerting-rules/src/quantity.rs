//! Quantities with units, as written in rule files and overrides
//! (`"180 mm[Hg]"`, `"2 lb"`, `"38.0 Cel"`).
//!
//! Limits are converted to the metric's canonical unit once, at load time,
//! so evaluation compares plain numbers with readings that are already
//! canonical. The unit a limit was written in is kept for messages: a
//! clinician who wrote pounds reads pounds.

use std::fmt;
use std::str::FromStr;

use device_profiles::units::Unit;
use device_profiles::Metric;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number with an optional unit. The unit may be left out only where the
/// metric's unit cannot be ambiguous (percent, per minute, kg/m2), the same
/// policy `device_profiles::units::to_canonical` applies to readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantity {
    /// The number as written.
    pub value: f64,
    /// The unit as written, if any.
    pub unit: Option<Unit>,
}

/// Why a quantity string or its unit was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantityError {
    /// Not `<number> <unit>`.
    #[error(
        "invalid quantity `{0}`: expected a number and a unit, like \"180 mm[Hg]\" or \"2 lb\""
    )]
    Syntax(String),
    /// The unit is not one the gateway knows.
    #[error("unknown unit `{unit}` in `{text}`")]
    UnknownUnit {
        /// the unit text
        unit: String,
        /// the whole quantity
        text: String,
    },
    /// The unit measures something else than the metric.
    #[error("unit `{unit}` cannot measure {metric} (canonical unit {canonical})")]
    Incompatible {
        /// the metric
        metric: Metric,
        /// the unit written
        unit: Unit,
        /// the metric's canonical unit
        canonical: Unit,
    },
    /// The metric needs an explicit unit.
    #[error("{metric} needs a unit (for example \"{example} {canonical}\")")]
    MissingUnit {
        /// the metric
        metric: Metric,
        /// its canonical unit
        canonical: Unit,
        /// the number written
        example: f64,
    },
    /// NaN or infinite.
    #[error("the number must be finite")]
    NotFinite,
}

impl Quantity {
    /// A quantity in a known unit.
    pub const fn new(value: f64, unit: Unit) -> Self {
        Quantity {
            value,
            unit: Some(unit),
        }
    }

    /// The unit to use for `metric`: the one written, or the canonical one
    /// where it is implied.
    pub fn unit_for(&self, metric: Metric) -> Result<Unit, QuantityError> {
        let canonical = metric.canonical_unit();
        match self.unit {
            Some(u) if u.dimension() == canonical.dimension() => Ok(u),
            Some(unit) => Err(QuantityError::Incompatible {
                metric,
                unit,
                canonical,
            }),
            None if matches!(
                canonical,
                Unit::Percent | Unit::PerMin | Unit::KgPerM2 | Unit::Score
            ) =>
            {
                Ok(canonical)
            }
            None => Err(QuantityError::MissingUnit {
                metric,
                canonical,
                example: self.value,
            }),
        }
    }

    /// The value as a level in `metric`'s canonical unit (a limit compared
    /// with readings).
    pub fn level_in_canonical(&self, metric: Metric) -> Result<f64, QuantityError> {
        let unit = self.unit_for(metric)?;
        convert_level(self.value, unit, metric.canonical_unit()).ok_or(
            QuantityError::Incompatible {
                metric,
                unit,
                canonical: metric.canonical_unit(),
            },
        )
    }

    /// The value as a *difference* in `metric`'s canonical unit (a change or
    /// a rate per day). Differs from [`Quantity::level_in_canonical`] only for
    /// temperatures: a rise of 1.8 °F is a rise of 1 °C, not of −16.8 °C.
    pub fn difference_in_canonical(&self, metric: Metric) -> Result<f64, QuantityError> {
        let unit = self.unit_for(metric)?;
        convert_difference(self.value, unit, metric.canonical_unit()).ok_or(
            QuantityError::Incompatible {
                metric,
                unit,
                canonical: metric.canonical_unit(),
            },
        )
    }
}

/// Converts a level (a reading, a threshold) between units.
pub fn convert_level(value: f64, from: Unit, to: Unit) -> Option<f64> {
    from.convert(value, to)
}

/// Converts a difference between units: the affine offset of temperature
/// scales cancels out.
pub fn convert_difference(value: f64, from: Unit, to: Unit) -> Option<f64> {
    Some(from.convert(value, to)? - from.convert(0.0, to)?)
}

/// Formats a number for a message: at most two decimals, no trailing zeros.
pub fn format_number(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let end = t
            .char_indices()
            .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || ((c == '-' || c == '+') && i == 0)))
            .map_or(t.len(), |(i, _)| i);
        let (num, unit) = t.split_at(end);
        let value: f64 = num
            .parse()
            .map_err(|_| QuantityError::Syntax(s.to_string()))?;
        if !value.is_finite() {
            return Err(QuantityError::NotFinite);
        }
        let unit = unit.trim();
        let unit = if unit.is_empty() {
            None
        } else {
            Some(
                unit.parse::<Unit>()
                    .map_err(|_| QuantityError::UnknownUnit {
                        unit: unit.to_string(),
                        text: s.to_string(),
                    })?,
            )
        };
        Ok(Quantity { value, unit })
    }
}

/// The symbol a clinician reads (`mmHg`, `lb`, `°C`). UCUM codes such as
/// `[lb_av]` are right for interchange and wrong for a message; every symbol
/// here parses back through the unit alias table.
pub fn unit_symbol(unit: Unit) -> &'static str {
    match unit {
        Unit::Lb => "lb",
        Unit::MmHg => "mmHg",
        Unit::Celsius => "°C",
        Unit::Fahrenheit => "°F",
        Unit::Inch => "in",
        Unit::PerMin => "/min",
        other => other.ucum(),
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.unit {
            Some(u) => write!(f, "{} {}", format_number(self.value), unit_symbol(u)),
            None => f.write_str(&format_number(self.value)),
        }
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    /// Accepts `"180 mm[Hg]"` and, for unit-implied metrics, a bare number.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Int(i64),
            Float(f64),
        }
        match Repr::deserialize(deserializer)? {
            Repr::Text(s) => s.parse().map_err(serde::de::Error::custom),
            Repr::Int(i) => Ok(Quantity {
                value: i as f64,
                unit: None,
            }),
            Repr::Float(v) if v.is_finite() => Ok(Quantity {
                value: v,
                unit: None,
            }),
            Repr::Float(_) => Err(serde::de::Error::custom(QuantityError::NotFinite)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let q: Quantity = "180 mm[Hg]".parse().unwrap();
        assert_eq!(q, Quantity::new(180.0, Unit::MmHg));
        let q: Quantity = "2lb".parse().unwrap();
        assert_eq!(q, Quantity::new(2.0, Unit::Lb));
        let q: Quantity = "-3 %".parse().unwrap();
        assert_eq!(q, Quantity::new(-3.0, Unit::Percent));
        let q: Quantity = "88".parse().unwrap();
        assert_eq!(q.unit, None);
        assert!("mmHg 180".parse::<Quantity>().is_err());
        assert!("180 stone".parse::<Quantity>().is_err());
    }

    #[test]
    fn converts_levels_and_differences() {
        let f: Quantity = "100.4 [degF]".parse().unwrap();
        assert!((f.level_in_canonical(Metric::BodyTemperature).unwrap() - 38.0).abs() < 1e-9);
        let d: Quantity = "1.8 [degF]".parse().unwrap();
        assert!((d.difference_in_canonical(Metric::BodyTemperature).unwrap() - 1.0).abs() < 1e-9);
        let lb: Quantity = "2 lb".parse().unwrap();
        assert!((lb.level_in_canonical(Metric::BodyWeight).unwrap() - 0.907_184_74).abs() < 1e-9);
        assert!(matches!(
            lb.level_in_canonical(Metric::Systolic),
            Err(QuantityError::Incompatible { .. })
        ));
        let bare: Quantity = "180".parse().unwrap();
        assert!(matches!(
            bare.level_in_canonical(Metric::Systolic),
            Err(QuantityError::MissingUnit { .. })
        ));
        assert_eq!(bare.level_in_canonical(Metric::Spo2).unwrap(), 180.0);
    }

    #[test]
    fn formats() {
        assert_eq!(format_number(180.0), "180");
        assert_eq!(format_number(0.907_184), "0.91");
        assert_eq!(format_number(-0.001), "0");
        assert_eq!(Quantity::new(38.0, Unit::Celsius).to_string(), "38 °C");
        for u in [
            Unit::Lb,
            Unit::MmHg,
            Unit::Celsius,
            Unit::Fahrenheit,
            Unit::Inch,
            Unit::PerMin,
            Unit::Kg,
            Unit::MgPerDl,
        ] {
            assert_eq!(unit_symbol(u).parse::<Unit>().unwrap(), u);
        }
    }
}
