//! The clinical quantities the gateway knows, with their terminology.
//!
//! Every canonical reading carries one [`Metric`]; the metric fixes the
//! canonical UCUM unit, the LOINC code and the plausibility range. Keeping all
//! of that in one table means a new metric is one new row, not a hunt through
//! the code base. Codes follow the FHIR R4 vital-signs profiles (see
//! `../shared/domain.md` §3).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::units::Unit;

/// A measured clinical quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Systolic blood pressure (BP panel component).
    Systolic,
    /// Diastolic blood pressure (BP panel component).
    Diastolic,
    /// Mean arterial pressure (BP panel component).
    MeanArterialPressure,
    /// Pulse rate reported by a blood-pressure cuff.
    PulseRate,
    /// Heart rate from a heart-rate sensor.
    HeartRate,
    /// Pulse rate reported by a pulse oximeter.
    OximetryPulseRate,
    /// Body weight.
    BodyWeight,
    /// Body height.
    BodyHeight,
    /// Body mass index.
    Bmi,
    /// Body fat percentage.
    BodyFat,
    /// Capillary blood glucose (glucometer).
    BloodGlucose,
    /// Peripheral oxygen saturation.
    Spo2,
    /// Body temperature.
    BodyTemperature,
    /// Respiratory rate.
    RespiratoryRate,
}

/// One row of the terminology table.
struct MetricInfo {
    name: &'static str,
    display: &'static str,
    loinc: &'static str,
    unit: Unit,
    /// Inclusive plausibility range in the canonical unit. Outside it a value
    /// is far more likely a device or mapping error than a physiological fact.
    range: (f64, f64),
}

const fn info(metric: Metric) -> MetricInfo {
    use Metric::*;
    let (name, display, loinc, unit, range) = match metric {
        Systolic => (
            "systolic",
            "Systolic blood pressure",
            "8480-6",
            Unit::MmHg,
            (40.0, 300.0),
        ),
        Diastolic => (
            "diastolic",
            "Diastolic blood pressure",
            "8462-4",
            Unit::MmHg,
            (20.0, 200.0),
        ),
        MeanArterialPressure => (
            "mean_arterial_pressure",
            "Mean blood pressure",
            "8478-0",
            Unit::MmHg,
            (25.0, 250.0),
        ),
        PulseRate => (
            "pulse_rate",
            "Heart rate",
            "8867-4",
            Unit::PerMin,
            (20.0, 300.0),
        ),
        HeartRate => (
            "heart_rate",
            "Heart rate",
            "8867-4",
            Unit::PerMin,
            (20.0, 300.0),
        ),
        OximetryPulseRate => (
            "oximetry_pulse_rate",
            "Heart rate by Pulse oximetry",
            "8889-8",
            Unit::PerMin,
            (20.0, 300.0),
        ),
        BodyWeight => (
            "body_weight",
            "Body weight",
            "29463-7",
            Unit::Kg,
            (0.5, 500.0),
        ),
        BodyHeight => (
            "body_height",
            "Body height",
            "8302-2",
            Unit::Cm,
            (30.0, 272.0),
        ),
        Bmi => (
            "bmi",
            "Body mass index",
            "39156-5",
            Unit::KgPerM2,
            (5.0, 150.0),
        ),
        BodyFat => (
            "body_fat",
            "Percentage of body fat Measured",
            "41982-0",
            Unit::Percent,
            (1.0, 80.0),
        ),
        BloodGlucose => (
            "blood_glucose",
            "Glucose [Mass/volume] in Capillary blood by Glucometer",
            "41653-7",
            Unit::MgPerDl,
            (10.0, 1000.0),
        ),
        Spo2 => (
            "spo2",
            "Oxygen saturation in Arterial blood by Pulse oximetry",
            "59408-5",
            Unit::Percent,
            (50.0, 100.0),
        ),
        BodyTemperature => (
            "body_temperature",
            "Body temperature",
            "8310-5",
            Unit::Celsius,
            (25.0, 45.0),
        ),
        RespiratoryRate => (
            "respiratory_rate",
            "Respiratory rate",
            "9279-1",
            Unit::PerMin,
            (2.0, 80.0),
        ),
    };
    MetricInfo {
        name,
        display,
        loinc,
        unit,
        range,
    }
}

impl Metric {
    /// Every metric, in a stable order.
    pub const ALL: [Metric; 14] = [
        Metric::Systolic,
        Metric::Diastolic,
        Metric::MeanArterialPressure,
        Metric::PulseRate,
        Metric::HeartRate,
        Metric::OximetryPulseRate,
        Metric::BodyWeight,
        Metric::BodyHeight,
        Metric::Bmi,
        Metric::BodyFat,
        Metric::BloodGlucose,
        Metric::Spo2,
        Metric::BodyTemperature,
        Metric::RespiratoryRate,
    ];

    /// The snake_case name used in profiles, rules, the store and the API.
    pub const fn name(self) -> &'static str {
        info(self).name
    }

    /// The LOINC display name.
    pub const fn display(self) -> &'static str {
        info(self).display
    }

    /// The LOINC code for this metric.
    pub const fn loinc(self) -> &'static str {
        info(self).loinc
    }

    /// The one canonical unit readings of this metric are stored in.
    pub const fn canonical_unit(self) -> Unit {
        info(self).unit
    }

    /// Inclusive plausibility range, in the canonical unit.
    pub const fn plausible_range(self) -> (f64, f64) {
        info(self).range
    }

    /// The panel this metric is a component of, if any (blood pressure).
    pub const fn panel(self) -> Option<Panel> {
        match self {
            Metric::Systolic | Metric::Diastolic | Metric::MeanArterialPressure => {
                Some(Panel::BloodPressure)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A metric name that is not in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric `{0}` (known: {known})", known = Metric::ALL.iter().map(|m| m.name()).collect::<Vec<_>>().join(", "))]
pub struct UnknownMetric(pub String);

impl FromStr for Metric {
    type Err = UnknownMetric;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownMetric(s.to_string()))
    }
}

/// A multi-component measurement that must stay together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Panel {
    /// Systolic, diastolic and mean pressure of one cuff inflation.
    BloodPressure,
}

impl Panel {
    /// LOINC code of the panel.
    pub const fn loinc(self) -> &'static str {
        match self {
            Panel::BloodPressure => "85354-9",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_ranges_are_ordered() {
        for m in Metric::ALL {
            assert_eq!(m.name().parse::<Metric>().unwrap(), m);
            let (lo, hi) = m.plausible_range();
            assert!(lo < hi, "{m}");
            assert!(!m.loinc().is_empty());
        }
        assert!("weight".parse::<Metric>().is_err());
    }
}
