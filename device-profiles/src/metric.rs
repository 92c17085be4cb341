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
    /// PHQ-2 total score (0–6), depression screen.
    Phq2Total,
    /// PHQ-9 total score (0–27), depression severity.
    Phq9Total,
    /// PHQ-9 item 9 (thoughts of being better off dead or of self-harm,
    /// 0–3): any answer above 0 needs a clinician whatever the total.
    Phq9SelfHarm,
    /// GAD-7 total score (0–21), anxiety severity.
    Gad7Total,
    /// mMRC dyspnoea grade (0–4).
    MmrcGrade,
    /// Heart-failure daily check-in zone: 0 green, 1 yellow, 2 red.
    HfSymptomZone,
    /// Heart-failure check-in: breathing compared with usual (0 as usual,
    /// 1 more short of breath with activity, 2 short of breath at rest).
    HfBreathlessness,
    /// Heart-failure check-in: swelling compared with usual (0 none or as
    /// usual, 1 more swelling).
    HfSwelling,
    /// COPD daily diary: how many of the three major exacerbation symptoms
    /// (more breathless, more sputum, sputum colour changed) are present (0–3).
    CopdMajorSymptoms,
    /// COPD daily diary: breathlessness compared with usual (0 as usual,
    /// 1 worse, 2 much worse).
    CopdBreathlessness,
    /// KCCQ-12 overall summary score (0–100), from a definition the
    /// program licenses and loads itself.
    Kccq12Summary,
    /// COPD Assessment Test total (0–40), from a definition the program
    /// licenses and loads itself.
    CatTotal,
}

/// The code system of metrics that have no LOINC code (instrument answers
/// and scores LOINC does not name): the metric's own name is the code.
pub const METRIC_CODE_SYSTEM: &str = "https://rpm-gateway.dev/fhir/CodeSystem/metric";

/// The LOINC code system.
pub const LOINC_SYSTEM: &str = "http://loinc.org";

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
        // Questionnaire scores: the range is the instrument's own; a value
        // outside it is a scoring or mapping error. LOINC codes where LOINC
        // names the score (see device-profiles/questionnaires/*.json),
        // none (our own code system) where it does not.
        Phq2Total => (
            "phq2_total",
            "Patient Health Questionnaire-2 (PHQ-2) total score [Reported]",
            "55758-7",
            Unit::Score,
            (0.0, 6.0),
        ),
        Phq9Total => (
            "phq9_total",
            "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]",
            "44261-6",
            Unit::Score,
            (0.0, 27.0),
        ),
        Phq9SelfHarm => (
            "phq9_self_harm",
            "Thoughts that you would be better off dead, or of hurting yourself in some way in the last 2 weeks",
            "44260-8",
            Unit::Score,
            (0.0, 3.0),
        ),
        Gad7Total => (
            "gad7_total",
            "Generalized anxiety disorder 7 item (GAD-7) total score [Reported.PHQ]",
            "70274-6",
            Unit::Score,
            (0.0, 21.0),
        ),
        MmrcGrade => (
            "mmrc_grade",
            "Modified Medical Research Council dyspnoea grade",
            "",
            Unit::Score,
            (0.0, 4.0),
        ),
        HfSymptomZone => (
            "hf_symptom_zone",
            "Heart failure symptom check-in zone (0 green, 1 yellow, 2 red)",
            "",
            Unit::Score,
            (0.0, 2.0),
        ),
        HfBreathlessness => (
            "hf_breathlessness",
            "Heart failure check-in: shortness of breath compared with usual",
            "",
            Unit::Score,
            (0.0, 2.0),
        ),
        HfSwelling => (
            "hf_swelling",
            "Heart failure check-in: swelling compared with usual",
            "",
            Unit::Score,
            (0.0, 1.0),
        ),
        CopdMajorSymptoms => (
            "copd_major_symptoms",
            "COPD diary: major exacerbation symptoms present (Anthonisen)",
            "",
            Unit::Score,
            (0.0, 3.0),
        ),
        CopdBreathlessness => (
            "copd_breathlessness",
            "COPD diary: breathlessness compared with usual",
            "",
            Unit::Score,
            (0.0, 2.0),
        ),
        Kccq12Summary => (
            "kccq12_summary",
            "KCCQ-12 overall summary score",
            "",
            Unit::Score,
            (0.0, 100.0),
        ),
        CatTotal => (
            "cat_total",
            "COPD Assessment Test total score",
            "",
            Unit::Score,
            (0.0, 40.0),
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
    pub const ALL: [Metric; 26] = [
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
        Metric::Phq2Total,
        Metric::Phq9Total,
        Metric::Phq9SelfHarm,
        Metric::Gad7Total,
        Metric::MmrcGrade,
        Metric::HfSymptomZone,
        Metric::HfBreathlessness,
        Metric::HfSwelling,
        Metric::CopdMajorSymptoms,
        Metric::CopdBreathlessness,
        Metric::Kccq12Summary,
        Metric::CatTotal,
    ];

    /// The snake_case name used in profiles, rules, the store and the API.
    pub const fn name(self) -> &'static str {
        info(self).name
    }

    /// The LOINC display name.
    pub const fn display(self) -> &'static str {
        info(self).display
    }

    /// The LOINC code for this metric; empty for the questionnaire answers
    /// and scores LOINC has no code for (see [`Metric::coding`]).
    pub const fn loinc(self) -> &'static str {
        info(self).loinc
    }

    /// (system, code) that names this metric in FHIR: LOINC where it has a
    /// code, else [`METRIC_CODE_SYSTEM`] with the metric's name.
    pub const fn coding(self) -> (&'static str, &'static str) {
        let i = info(self);
        if i.loinc.is_empty() {
            (METRIC_CODE_SYSTEM, i.name)
        } else {
            (LOINC_SYSTEM, i.loinc)
        }
    }

    /// Whether this metric is a patient-reported answer or score, not a
    /// device measurement.
    pub const fn is_reported(self) -> bool {
        matches!(info(self).unit, Unit::Score)
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
    /// The panel's name as stored and serialized (`blood_pressure`).
    pub const fn name(self) -> &'static str {
        match self {
            Panel::BloodPressure => "blood_pressure",
        }
    }

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
            assert!(!m.loinc().is_empty() || m.is_reported(), "{m}");
            assert!(!m.coding().1.is_empty());
        }
        assert!("weight".parse::<Metric>().is_err());
        let p = Panel::BloodPressure;
        assert_eq!(serde_json::to_value(p).unwrap(), p.name());
    }
}
