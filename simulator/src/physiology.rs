//! Physiology of virtual patients: baselines per condition, day-to-day
//! variation, circadian rhythm and the glucose response to meals.
//!
//! Everything here is a pure function of a seed: no thread RNG, no wall
//! clock. Random variation is **bounded** on purpose. A real scale wanders by
//! half a kilo from one morning to the next, and in real life that sometimes
//! trips a weight-gain rule; in a scenario it must not, because each scenario
//! file states the alerts a correct gateway raises and that ground truth has to
//! hold for every seed. So the "normal" part of every vital is kept inside a
//! quiet band ([`QuietBands`]) that sits clear of every alert threshold of
//! `domain.md` §4, and only designed events ([`Effects`]) push values across.

use std::f64::consts::PI;

use chrono::{DateTime, Timelike, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The clinical condition that selects a patient's baseline and the rule
/// packs a gateway applies to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// No chronic condition (control patient).
    Healthy,
    /// Treated essential hypertension.
    Hypertension,
    /// Chronic heart failure, on diuretics.
    HeartFailure,
    /// Type 2 diabetes, on insulin or sulfonylurea (so hypoglycaemia is possible).
    Diabetes,
    /// Chronic obstructive pulmonary disease, at risk of hypercapnic failure
    /// (SpO2 target 88–92 %).
    Copd,
}

impl Condition {
    /// The gateway care plan that monitors this condition (the bundled
    /// `alerting-rules/rules/plans.toml`), if any.
    pub const fn care_plan(self) -> Option<&'static str> {
        match self {
            Condition::Healthy => None,
            Condition::Hypertension => Some("hypertension"),
            Condition::HeartFailure => Some("heart-failure"),
            Condition::Diabetes => Some("diabetes"),
            Condition::Copd => Some("copd"),
        }
    }

    /// The snake_case name used in scenario files.
    pub const fn name(self) -> &'static str {
        match self {
            Condition::Healthy => "healthy",
            Condition::Hypertension => "hypertension",
            Condition::HeartFailure => "heart_failure",
            Condition::Diabetes => "diabetes",
            Condition::Copd => "copd",
        }
    }
}

/// A patient's usual values, in canonical units, at rest and fasting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// Morning (fasted, after voiding) body weight, kg.
    pub weight_kg: f64,
    /// Daily-mean systolic pressure, mmHg.
    pub systolic: f64,
    /// Daily-mean diastolic pressure, mmHg.
    pub diastolic: f64,
    /// Resting pulse, /min.
    pub pulse: f64,
    /// Fasting capillary glucose, mg/dL.
    pub glucose_mg_dl: f64,
    /// Resting SpO2, %.
    pub spo2: f64,
    /// Daily-mean core temperature, °C.
    pub temperature_c: f64,
}

impl Baseline {
    /// Typical values of a patient with `condition` (treated, stable).
    ///
    /// Treated hypertension sits at 124/76, at goal and well below
    /// the 135/85 home threshold of `htn-7d-mean-high`, so a scenario that
    /// wants that alert says so with a baseline override.
    pub const fn typical(condition: Condition) -> Baseline {
        match condition {
            Condition::Healthy => Baseline {
                weight_kg: 72.0,
                systolic: 118.0,
                diastolic: 76.0,
                pulse: 68.0,
                glucose_mg_dl: 90.0,
                spo2: 97.5,
                temperature_c: 36.7,
            },
            Condition::Hypertension => Baseline {
                weight_kg: 88.0,
                systolic: 124.0,
                diastolic: 76.0,
                pulse: 72.0,
                glucose_mg_dl: 96.0,
                spo2: 97.0,
                temperature_c: 36.7,
            },
            Condition::HeartFailure => Baseline {
                weight_kg: 82.0,
                systolic: 116.0,
                diastolic: 72.0,
                pulse: 74.0,
                glucose_mg_dl: 100.0,
                spo2: 96.0,
                temperature_c: 36.6,
            },
            Condition::Diabetes => Baseline {
                weight_kg: 94.0,
                systolic: 126.0,
                diastolic: 78.0,
                pulse: 76.0,
                glucose_mg_dl: 122.0,
                spo2: 97.0,
                temperature_c: 36.7,
            },
            Condition::Copd => Baseline {
                weight_kg: 66.0,
                systolic: 124.0,
                diastolic: 78.0,
                pulse: 84.0,
                glucose_mg_dl: 95.0,
                spo2: 92.5,
                temperature_c: 36.7,
            },
        }
    }
}

/// Optional per-patient overrides of [`Baseline::typical`], as written in a
/// scenario file (`baseline = { systolic = 148, diastolic = 94 }`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselinePatch {
    /// Morning body weight, kg.
    pub weight_kg: Option<f64>,
    /// Daily-mean systolic pressure, mmHg.
    pub systolic: Option<f64>,
    /// Daily-mean diastolic pressure, mmHg.
    pub diastolic: Option<f64>,
    /// Resting pulse, /min.
    pub pulse: Option<f64>,
    /// Fasting glucose, mg/dL.
    pub glucose_mg_dl: Option<f64>,
    /// Resting SpO2, %.
    pub spo2: Option<f64>,
    /// Daily-mean temperature, °C.
    pub temperature_c: Option<f64>,
}

impl BaselinePatch {
    /// `base` with every given field replaced.
    pub fn apply(&self, base: Baseline) -> Baseline {
        Baseline {
            weight_kg: self.weight_kg.unwrap_or(base.weight_kg),
            systolic: self.systolic.unwrap_or(base.systolic),
            diastolic: self.diastolic.unwrap_or(base.diastolic),
            pulse: self.pulse.unwrap_or(base.pulse),
            glucose_mg_dl: self.glucose_mg_dl.unwrap_or(base.glucose_mg_dl),
            spo2: self.spo2.unwrap_or(base.spo2),
            temperature_c: self.temperature_c.unwrap_or(base.temperature_c),
        }
    }
}

/// Inclusive `(low, high)` bounds.
pub type Band = (f64, f64);

/// Where the undisturbed value of each vital is kept, so that no alert rule
/// of `domain.md` §4 can fire without a designed event: SBP never > 180 nor
/// < 90, DBP never > 120 nor < 60, glucose never < 70 nor > 180, SpO2 never
/// < 90 (< 88 for COPD), temperature never ≥ 38.0 °C.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuietBands {
    /// Systolic, mmHg.
    pub systolic: Band,
    /// Diastolic, mmHg.
    pub diastolic: Band,
    /// Pulse, /min.
    pub pulse: Band,
    /// Glucose, mg/dL.
    pub glucose_mg_dl: Band,
    /// SpO2, %.
    pub spo2: Band,
    /// Temperature, °C.
    pub temperature_c: Band,
}

impl QuietBands {
    /// The bands for a condition. COPD patients live lower on SpO2 (BTS
    /// target 88–92 %); the band still stays ≥ 90 so that neither the COPD
    /// rule (< 88) nor a general one (< 90) fires on baseline values.
    pub const fn for_condition(condition: Condition) -> QuietBands {
        let spo2 = match condition {
            Condition::Copd => (90.0, 96.0),
            _ => (92.0, 100.0),
        };
        QuietBands {
            systolic: (96.0, 172.0),
            diastolic: (62.0, 112.0),
            pulse: (52.0, 104.0),
            glucose_mg_dl: (76.0, 172.0),
            spo2,
            temperature_c: (35.9, 37.6),
        }
    }

    /// The baseline fields that lie outside their band (name, value, band),
    /// for scenario validation.
    pub fn violations(&self, b: &Baseline) -> Vec<(&'static str, f64, Band)> {
        let mut out = Vec::new();
        for (name, value, band) in [
            ("systolic", b.systolic, self.systolic),
            ("diastolic", b.diastolic, self.diastolic),
            ("pulse", b.pulse, self.pulse),
            ("glucose_mg_dl", b.glucose_mg_dl, self.glucose_mg_dl),
            ("spo2", b.spo2, self.spo2),
            ("temperature_c", b.temperature_c, self.temperature_c),
        ] {
            if !(value >= band.0 && value <= band.1) {
                out.push((name, value, band));
            }
        }
        if !(b.weight_kg >= 25.0 && b.weight_kg <= 250.0) {
            out.push(("weight_kg", b.weight_kg, (25.0, 250.0)));
        }
        out
    }
}

/// Additive changes to the vitals caused by scenario events (decompensation,
/// fever, desaturation), applied on top of the banded normal values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Effects {
    /// Retained fluid, kg.
    pub weight_kg: f64,
    /// Systolic change, mmHg.
    pub systolic: f64,
    /// Diastolic change, mmHg.
    pub diastolic: f64,
    /// Pulse change, /min.
    pub pulse: f64,
    /// Glucose change, mg/dL.
    pub glucose_mg_dl: f64,
    /// SpO2 change, % (negative = desaturation).
    pub spo2: f64,
    /// When set, the febrile daily-mean temperature, °C (replaces the
    /// baseline instead of adding to it, so a scenario states the fever it
    /// wants rather than an offset from a baseline it may not know).
    pub fever_c: Option<f64>,
}

/// Sum of two effect sets (the higher fever wins).
impl std::ops::Add for Effects {
    type Output = Effects;

    fn add(self, o: Effects) -> Effects {
        Effects {
            weight_kg: self.weight_kg + o.weight_kg,
            systolic: self.systolic + o.systolic,
            diastolic: self.diastolic + o.diastolic,
            pulse: self.pulse + o.pulse,
            glucose_mg_dl: self.glucose_mg_dl + o.glucose_mg_dl,
            spo2: self.spo2 + o.spo2,
            fever_c: match (self.fever_c, o.fever_c) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// All vitals of a patient at one instant, canonical units, unrounded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vitals {
    /// kg
    pub weight_kg: f64,
    /// mmHg
    pub systolic: f64,
    /// mmHg
    pub diastolic: f64,
    /// /min
    pub pulse: f64,
    /// mg/dL
    pub glucose_mg_dl: f64,
    /// %
    pub spo2: f64,
    /// °C
    pub temperature_c: f64,
    /// The cuff detects an irregular heartbeat (atrial fibrillation is common
    /// in heart failure).
    pub irregular_pulse: bool,
}

/// One day's slow deviation from baseline (hydration, salt, sleep, stress),
/// shared by every reading of that day.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct DayDrift {
    weight_kg: f64,
    systolic: f64,
    diastolic: f64,
    pulse: f64,
    glucose_mg_dl: f64,
    spo2: f64,
    temperature_c: f64,
}

/// Usual meal times, hours after local midnight (breakfast, lunch, dinner).
pub const MEALS_H: [f64; 3] = [7.5, 12.5, 18.5];

/// The physiological model of one patient over a scenario.
#[derive(Debug, Clone)]
pub struct Physiology {
    condition: Condition,
    baseline: Baseline,
    bands: QuietBands,
    start: DateTime<Utc>,
    drift: Vec<DayDrift>,
}

impl Physiology {
    /// Builds the model for `days` days from `start` (midnight of day 0).
    /// The day-to-day drift is an AR(1) process per vital (today resembles
    /// yesterday), drawn up front from `seed` so that which readings a
    /// patient skips never changes the values of the others.
    pub fn new(
        condition: Condition,
        baseline: Baseline,
        start: DateTime<Utc>,
        days: u32,
        seed: u64,
    ) -> Physiology {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut drift = Vec::with_capacity(days as usize + 1);
        let mut d = DayDrift::default();
        // (AR coefficient, innovation sd, bound)
        let w = (0.6, 0.08, 0.15);
        let s = (0.5, 3.0, 6.0);
        let di = (0.5, 2.0, 4.0);
        let p = (0.5, 2.0, 4.0);
        let g = (0.4, 5.0, 10.0);
        let o = (0.5, 0.4, 0.8);
        let t = (0.5, 0.08, 0.15);
        for _ in 0..=days {
            d = DayDrift {
                weight_kg: ar(d.weight_kg, w, &mut rng),
                systolic: ar(d.systolic, s, &mut rng),
                diastolic: ar(d.diastolic, di, &mut rng),
                pulse: ar(d.pulse, p, &mut rng),
                glucose_mg_dl: ar(d.glucose_mg_dl, g, &mut rng),
                spo2: ar(d.spo2, o, &mut rng),
                temperature_c: ar(d.temperature_c, t, &mut rng),
            };
            drift.push(d);
        }
        Physiology {
            condition,
            baseline,
            bands: QuietBands::for_condition(condition),
            start,
            drift,
        }
    }

    /// The patient's condition.
    pub fn condition(&self) -> Condition {
        self.condition
    }

    /// The patient's baseline.
    pub fn baseline(&self) -> &Baseline {
        &self.baseline
    }

    /// The vitals at `at`, with `effects` from events. `rng` supplies the
    /// measurement-to-measurement noise; pass one seeded per reading so that
    /// each reading's noise depends only on its identity.
    pub fn sample(&self, at: DateTime<Utc>, effects: &Effects, rng: &mut impl Rng) -> Vitals {
        let b = &self.baseline;
        let q = &self.bands;
        let day = ((at - self.start).num_seconds().max(0) / 86_400) as usize;
        let d = self
            .drift
            .get(day)
            .or(self.drift.last())
            .copied()
            .unwrap_or_default();
        let h = hour_of_day(at);

        // Weight: lowest in the morning after voiding; up to ~0.5 kg more by
        // the evening (food and drink).
        let diurnal_w = 0.5 * ((h - 7.0) / 12.0).clamp(0.0, 1.0);
        let weight =
            b.weight_kg + d.weight_kg + diurnal_w + noise(rng, 0.03, 0.05) + effects.weight_kg;

        // Blood pressure: morning surge, evening and night dip.
        let (sbp_c, dbp_c) = bp_circadian(h);
        let sbp = clamp(
            b.systolic + d.systolic + sbp_c + noise(rng, 4.0, 8.0),
            q.systolic,
        ) + effects.systolic;
        let dbp = clamp(
            b.diastolic + d.diastolic + dbp_c + noise(rng, 3.0, 6.0),
            q.diastolic,
        ) + effects.diastolic;

        let pulse_c = 4.0 * (2.0 * PI * (h - 15.0) / 24.0).cos();
        let fever_pulse = effects
            .fever_c
            .map(|f| 8.0 * (f - b.temperature_c).max(0.0))
            .unwrap_or(0.0);
        let pulse = clamp(b.pulse + d.pulse + pulse_c + noise(rng, 3.0, 6.0), q.pulse)
            + effects.pulse
            + fever_pulse;

        let glucose = clamp(
            b.glucose_mg_dl + d.glucose_mg_dl + self.glucose_response(h) + noise(rng, 4.0, 8.0),
            q.glucose_mg_dl,
        ) + effects.glucose_mg_dl;

        // SpO2 dips a little during sleep.
        let spo2_c = if !(6.0..23.0).contains(&h) { -0.8 } else { 0.0 };
        let spo2 = clamp(b.spo2 + d.spo2 + spo2_c + noise(rng, 0.6, 1.0), q.spo2) + effects.spo2;

        // Temperature: lowest around 04:00, highest around 18:00. A fever
        // keeps the rhythm around the febrile mean (evening spikes).
        let temp_c = 0.35 * (2.0 * PI * (h - 18.0) / 24.0).cos();
        let temp_noise = noise(rng, 0.06, 0.1);
        let temperature = match effects.fever_c {
            Some(f) => f + temp_c + temp_noise,
            None => clamp(
                b.temperature_c + d.temperature_c + temp_c + temp_noise,
                q.temperature_c,
            ),
        };

        let af_rate = match self.condition {
            Condition::HeartFailure => 0.2,
            _ => 0.02,
        };
        let irregular_pulse = rng.random_bool(af_rate);

        Vitals {
            weight_kg: weight.clamp(20.0, 300.0),
            systolic: sbp.clamp(50.0, 260.0),
            diastolic: dbp.clamp(30.0, 160.0),
            pulse: pulse.clamp(30.0, 200.0),
            glucose_mg_dl: glucose.clamp(20.0, 600.0),
            spo2: spo2.clamp(60.0, 100.0),
            temperature_c: temperature.clamp(34.0, 42.5),
            irregular_pulse,
        }
    }

    /// Glucose rise over fasting at hour `h`: a dawn phenomenon for diabetics
    /// and one gamma-shaped response per meal, peaking ~45 min after eating
    /// (healthy) or ~75 min and higher (diabetes).
    fn glucose_response(&self, h: f64) -> f64 {
        let (amp, peak_h, dawn) = match self.condition {
            Condition::Diabetes => (45.0, 1.25, 8.0),
            _ => (30.0, 0.75, 0.0),
        };
        let dawn = if (4.0..7.5).contains(&h) { dawn } else { 0.0 };
        let meals: f64 = MEALS_H
            .iter()
            .map(|m| {
                let dt = h - m;
                if dt <= 0.0 {
                    0.0
                } else {
                    amp * (dt / peak_h) * (1.0 - dt / peak_h).exp()
                }
            })
            .sum();
        dawn + meals
    }
}

/// Systolic and diastolic circadian offsets at hour `h`: highest around
/// 08:00 (morning surge), lowest around 20:00 and at night.
pub fn bp_circadian(h: f64) -> (f64, f64) {
    let s = 6.0 * (2.0 * PI * (h - 8.0) / 24.0).cos();
    (s, 0.6 * s)
}

/// Hours (with fraction) since midnight of `at`.
pub fn hour_of_day(at: DateTime<Utc>) -> f64 {
    f64::from(at.num_seconds_from_midnight()) / 3600.0
}

/// A meal-context label for a glucose reading taken at hour `h`, as a
/// glucometer's context record would carry it.
pub fn meal_context(h: f64) -> &'static str {
    if h >= 21.0 {
        return "bedtime";
    }
    if h < MEALS_H[0] {
        return "fasting";
    }
    for m in MEALS_H {
        if h >= m && h - m <= 3.0 {
            return "postprandial";
        }
        if h < m && m - h <= 1.0 {
            return "preprandial";
        }
    }
    "casual"
}

fn clamp(v: f64, band: Band) -> f64 {
    v.clamp(band.0, band.1)
}

fn ar(prev: f64, (phi, sd, bound): (f64, f64, f64), rng: &mut impl Rng) -> f64 {
    (phi * prev + gaussian(rng) * sd).clamp(-bound, bound)
}

/// Gaussian noise with standard deviation `sd`, cut at ±`bound`.
pub fn noise(rng: &mut impl Rng, sd: f64, bound: f64) -> f64 {
    (gaussian(rng) * sd).clamp(-bound, bound)
}

/// A standard normal draw (Box–Muller), so no `rand_distr` dependency.
pub fn gaussian(rng: &mut impl Rng) -> f64 {
    // 1 - u is in (0, 1], so ln never sees 0.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

/// Derives an independent seed from a scenario seed and labels (patient id,
/// stream name, device, timestamp), so that each patient, each random stream
/// and each reading has its own sequence: adding a patient or an event does
/// not shift anyone else's numbers. FNV-1a then the SplitMix64 finaliser;
/// stable across platforms and Rust versions (unlike `DefaultHasher`).
pub fn derive_seed(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    for b in seed.to_le_bytes() {
        eat(b);
    }
    for p in parts {
        for &b in *p {
            eat(b);
        }
        eat(0xff);
    }
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap()
    }

    fn at(day: i64, h: u32, m: u32) -> DateTime<Utc> {
        start() + chrono::TimeDelta::days(day) + chrono::TimeDelta::minutes(i64::from(h * 60 + m))
    }

    #[test]
    fn morning_bp_is_higher_than_evening() {
        let c = Condition::Hypertension;
        let p = Physiology::new(c, Baseline::typical(c), start(), 30, 7);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (mut am, mut pm) = (0.0, 0.0);
        for d in 0..30 {
            am += p
                .sample(at(d, 7, 30), &Effects::default(), &mut rng)
                .systolic;
            pm += p
                .sample(at(d, 20, 0), &Effects::default(), &mut rng)
                .systolic;
        }
        assert!(am / 30.0 > pm / 30.0 + 6.0, "am {am} pm {pm}");
    }

    #[test]
    fn glucose_rises_after_meals() {
        let c = Condition::Diabetes;
        let p = Physiology::new(c, Baseline::typical(c), start(), 10, 7);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for d in 0..10 {
            let fasting = p
                .sample(at(d, 6, 45), &Effects::default(), &mut rng)
                .glucose_mg_dl;
            let post = p
                .sample(at(d, 8, 45), &Effects::default(), &mut rng)
                .glucose_mg_dl;
            assert!(post > fasting + 15.0, "day {d}: {fasting} -> {post}");
        }
    }

    #[test]
    fn quiet_values_stay_in_bands_for_many_seeds() {
        for c in [
            Condition::Healthy,
            Condition::Hypertension,
            Condition::HeartFailure,
            Condition::Diabetes,
            Condition::Copd,
        ] {
            let q = QuietBands::for_condition(c);
            let b = Baseline::typical(c);
            assert!(q.violations(&b).is_empty(), "{c:?}");
            for seed in 0..20 {
                let p = Physiology::new(c, b, start(), 14, seed);
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let mut prev_w: Option<f64> = None;
                for d in 0..14 {
                    for h in [0, 4, 7, 9, 13, 19, 23] {
                        let v = p.sample(at(d, h, 0), &Effects::default(), &mut rng);
                        assert!(v.systolic >= q.systolic.0 && v.systolic <= q.systolic.1);
                        assert!(v.spo2 >= q.spo2.0 && v.temperature_c < 38.0);
                        assert!(v.glucose_mg_dl >= 70.0 && v.glucose_mg_dl <= 180.0);
                    }
                    let w = p
                        .sample(at(d, 7, 0), &Effects::default(), &mut rng)
                        .weight_kg;
                    if let Some(pw) = prev_w {
                        assert!((w - pw).abs() < 0.6, "weight jumped {pw} -> {w}");
                    }
                    prev_w = Some(w);
                }
            }
        }
    }

    #[test]
    fn fever_sets_the_febrile_mean() {
        let c = Condition::Healthy;
        let p = Physiology::new(c, Baseline::typical(c), start(), 3, 1);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let fx = Effects {
            fever_c: Some(38.9),
            ..Effects::default()
        };
        let morning = p.sample(at(1, 8, 0), &fx, &mut rng).temperature_c;
        let evening = p.sample(at(1, 18, 0), &fx, &mut rng).temperature_c;
        assert!(morning >= 38.3 && evening > morning, "{morning} {evening}");
    }

    #[test]
    fn meal_context_labels() {
        assert_eq!(meal_context(6.75), "fasting");
        assert_eq!(meal_context(9.5), "postprandial");
        assert_eq!(meal_context(18.0), "preprandial");
        assert_eq!(meal_context(21.5), "bedtime");
        assert_eq!(meal_context(16.0), "casual");
    }

    #[test]
    fn derived_seeds_differ_by_label_and_are_stable() {
        let a = derive_seed(42, &[b"p1", b"adherence"]);
        assert_eq!(a, derive_seed(42, &[b"p1", b"adherence"]));
        assert_ne!(a, derive_seed(42, &[b"p1", b"physiology"]));
        assert_ne!(a, derive_seed(43, &[b"p1", b"adherence"]));
        // Label boundaries matter: ("ab","c") is not ("a","bc").
        assert_ne!(
            derive_seed(1, &[b"ab", b"c"]),
            derive_seed(1, &[b"a", b"bc"])
        );
    }
}
