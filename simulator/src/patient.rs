//! A virtual patient: a condition, a kit of devices, measurement habits, and
//! the episodes a scenario puts them through; the output is the time-ordered
//! list of [`Emission`]s their devices produce.
//!
//! Randomness is derived per decision, not drawn from one running stream:
//! each measurement slot (patient, device, day, slot) and each reading gets
//! its own seed from [`derive_seed`]. Adding an event or a device therefore
//! changes only what it touches; the rest of the week stays byte-identical.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use device_profiles::{Metric, Unit};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::emission::{DeviceKind, Emission};
use crate::payload::WireFormat;
use crate::physiology::{
    derive_seed, hour_of_day, meal_context, Baseline, Condition, Effects, Physiology, Vitals,
};

/// A time of day (device-local wall clock; scenarios run in UTC), written
/// `"07:30"` or `"07:30:15"` in scenario files.
/// The default is midnight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay(u32);

impl TimeOfDay {
    /// From hours and minutes; `None` when out of range.
    pub const fn hm(hours: u32, minutes: u32) -> Option<TimeOfDay> {
        if hours < 24 && minutes < 60 {
            Some(TimeOfDay(hours * 3600 + minutes * 60))
        } else {
            None
        }
    }

    /// Seconds after midnight.
    pub const fn seconds(self) -> u32 {
        self.0
    }

    /// As an offset from midnight.
    pub fn as_delta(self) -> TimeDelta {
        TimeDelta::seconds(i64::from(self.0))
    }
}

/// A time-of-day string that is not `HH:MM[:SS]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time of day `{0}` (expected HH:MM or HH:MM:SS, 00:00..23:59:59)")]
pub struct BadTimeOfDay(pub String);

impl FromStr for TimeOfDay {
    type Err = BadTimeOfDay;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadTimeOfDay(s.to_string());
        let parts: Vec<&str> = s.split(':').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.len() != 2) {
            return Err(bad());
        }
        let mut n = [0u32; 3];
        for (i, p) in parts.iter().enumerate() {
            n[i] = p.parse().map_err(|_| bad())?;
        }
        if n[0] > 23 || n[1] > 59 || n[2] > 59 {
            return Err(bad());
        }
        Ok(TimeOfDay(n[0] * 3600 + n[1] * 60 + n[2]))
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s) = (self.0 / 3600, self.0 / 60 % 60, self.0 % 60);
        if s == 0 {
            write!(f, "{h:02}:{m:02}")
        } else {
            write!(f, "{h:02}:{m:02}:{s:02}")
        }
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One device of a patient's kit.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec {
    /// Kind of device.
    pub kind: DeviceKind,
    /// Device id as it appears on the wire (serial number).
    pub id: String,
    /// The unit the device sends (a US scale sends lb, a European meter mmol/L).
    pub unit: Unit,
    /// The patient's usual measurement times with this device.
    pub times: Vec<TimeOfDay>,
    /// The wire format the device speaks.
    pub format: WireFormat,
}

impl DeviceSpec {
    /// A device with the kind's default unit and times.
    pub fn new(kind: DeviceKind, id: impl Into<String>, condition: Condition) -> DeviceSpec {
        DeviceSpec {
            kind,
            id: id.into(),
            unit: default_unit(kind),
            times: default_times(kind, condition),
            format: WireFormat::Vendor,
        }
    }
}

/// The unit a kind sends unless told otherwise.
pub const fn default_unit(kind: DeviceKind) -> Unit {
    match kind {
        DeviceKind::Scale => Unit::Kg,
        DeviceKind::BpCuff => Unit::MmHg,
        DeviceKind::Glucometer => Unit::MgPerDl,
        DeviceKind::PulseOximeter => Unit::Percent,
        DeviceKind::Thermometer => Unit::Celsius,
        DeviceKind::Tablet => Unit::Score,
    }
}

/// The units a kind can be configured to send (the first value's unit; a
/// cuff's pulse and an oximeter's pulse rate are always /min).
pub fn allowed_units(kind: DeviceKind) -> &'static [Unit] {
    match kind {
        DeviceKind::Scale => &[Unit::Kg, Unit::Lb],
        DeviceKind::BpCuff => &[Unit::MmHg, Unit::KPa],
        DeviceKind::Glucometer => &[Unit::MgPerDl, Unit::MmolPerL],
        DeviceKind::PulseOximeter => &[Unit::Percent],
        DeviceKind::Thermometer => &[Unit::Celsius, Unit::Fahrenheit],
        DeviceKind::Tablet => &[Unit::Score],
    }
}

/// Usual measurement times of a kind, following common RPM protocols: weigh
/// once on waking, BP morning and evening, glucose fasting / after
/// breakfast / before dinner / at bedtime for diabetics (fasting only
/// otherwise), oximetry twice a day, temperature once.
pub fn default_times(kind: DeviceKind, condition: Condition) -> Vec<TimeOfDay> {
    let t = |h: u32, m: u32| TimeOfDay(h * 3600 + m * 60);
    match kind {
        DeviceKind::Scale => vec![t(7, 0)],
        DeviceKind::BpCuff => vec![t(7, 15), t(19, 30)],
        DeviceKind::Glucometer => match condition {
            Condition::Diabetes => vec![t(6, 45), t(9, 30), t(18, 0), t(21, 30)],
            _ => vec![t(6, 45)],
        },
        DeviceKind::PulseOximeter => vec![t(8, 30), t(20, 30)],
        DeviceKind::Thermometer => vec![t(8, 0)],
        // The daily check-in, after breakfast.
        DeviceKind::Tablet => vec![t(9, 0)],
    }
}

/// How reliably a patient measures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Adherence {
    /// Probability of forgetting one scheduled measurement. A patient never
    /// forgets every measurement of a day by chance (whole days without data
    /// come only from a `non_adherence` event or a dead battery), nor while
    /// unwell (decompensation, desaturation, fever), so that the ground
    /// truth of adherence and event rules holds for every seed.
    pub miss_rate: f64,
    /// Probability of measuring twice in a row (a second reading 1–5 min
    /// later, e.g. a BP retest).
    pub double_rate: f64,
    /// How far from the usual time a measurement happens, ± minutes.
    pub jitter_minutes: u32,
}

impl Default for Adherence {
    fn default() -> Self {
        Adherence {
            miss_rate: 0.08,
            double_rate: 0.05,
            jitter_minutes: 20,
        }
    }
}

/// A virtual patient's static description.
#[derive(Debug, Clone, PartialEq)]
pub struct PatientSpec {
    /// Patient id (ground truth; never on the wire).
    pub id: String,
    /// Clinical condition.
    pub condition: Condition,
    /// Usual values.
    pub baseline: Baseline,
    /// Measurement habits.
    pub adherence: Adherence,
    /// The kit, in a fixed order.
    pub devices: Vec<DeviceSpec>,
}

impl PatientSpec {
    /// The first device of `kind` in the kit.
    pub fn device_of(&self, kind: DeviceKind) -> Option<&DeviceSpec> {
        self.devices.iter().find(|d| d.kind == kind)
    }
}

/// Something that happens to a patient during a scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum Episode {
    /// Heart-failure decompensation: fluid retention raises weight linearly
    /// by `kg_per_day` from `from` for `days` days (then stays up, untreated),
    /// SpO2 falls by `spo2_drop_per_day` and pulse rises 3/min per day.
    Decompensation {
        /// Onset.
        from: DateTime<Utc>,
        /// Ramp length, days.
        days: f64,
        /// Weight gain rate.
        kg_per_day: f64,
        /// SpO2 fall rate, percentage points per day.
        spo2_drop_per_day: f64,
    },
    /// A desaturation (COPD exacerbation, pneumonia): SpO2 falls by
    /// `spo2_drop` over the first `ramp_hours`, holds until `until`, then
    /// returns to baseline; pulse rises 1.5/min per point lost.
    Desaturation {
        /// Onset.
        from: DateTime<Utc>,
        /// End.
        until: DateTime<Utc>,
        /// Ramp length, hours.
        ramp_hours: f64,
        /// Percentage points lost at the nadir.
        spo2_drop: f64,
    },
    /// Fever with daily-mean temperature `temperature_c`; the patient also
    /// checks their temperature at 14:00 and 21:00 while febrile.
    Fever {
        /// Onset.
        from: DateTime<Utc>,
        /// Defervescence.
        until: DateTime<Utc>,
        /// Febrile daily mean, °C.
        temperature_c: f64,
    },
    /// The patient takes no measurement at all (non-adherence streak).
    Absent {
        /// First instant without readings.
        from: DateTime<Utc>,
        /// First instant with readings again.
        until: DateTime<Utc>,
    },
    /// A device's battery runs out: it produces nothing from `from`
    /// (until `until`, when the battery is replaced, if given).
    DeviceDown {
        /// The device.
        device_id: String,
        /// Battery dead from.
        from: DateTime<Utc>,
        /// Battery replaced at.
        until: Option<DateTime<Utc>>,
    },
    /// An extra measurement with designed values (the patient felt unwell
    /// and measured): a hypertensive crisis, hypotension, a hypo- or
    /// hyperglycaemia reading. Taken with the patient's first device of the
    /// matching kind.
    Spot {
        /// Measurement time.
        at: DateTime<Utc>,
        /// Designed values.
        values: SpotValues,
    },
}

/// Designed values of a [`Episode::Spot`] measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpotValues {
    /// A blood-pressure reading (pulse from physiology).
    BloodPressure {
        /// mmHg
        systolic: f64,
        /// mmHg
        diastolic: f64,
    },
    /// A glucose reading.
    Glucose {
        /// mg/dL
        mg_dl: f64,
    },
}

impl SpotValues {
    /// The device kind that measures these values.
    pub const fn kind(self) -> DeviceKind {
        match self {
            SpotValues::BloodPressure { .. } => DeviceKind::BpCuff,
            SpotValues::Glucose { .. } => DeviceKind::Glucometer,
        }
    }
}

/// One planned measurement before values are drawn.
#[derive(Debug, Clone)]
struct Slot {
    device: usize,
    at: DateTime<Utc>,
    spot: Option<SpotValues>,
    forgotten: bool,
    doubled: Option<TimeDelta>,
}

/// A patient living through a scenario.
#[derive(Debug, Clone)]
pub struct VirtualPatient {
    spec: PatientSpec,
    physiology: Physiology,
    episodes: Vec<Episode>,
    start: DateTime<Utc>,
    days: u32,
    seed: u64,
}

impl VirtualPatient {
    /// A patient over `days` days from `start` (midnight of day 0), their
    /// randomness derived from `scenario_seed` and their id.
    pub fn new(
        spec: PatientSpec,
        start: DateTime<Utc>,
        days: u32,
        scenario_seed: u64,
    ) -> VirtualPatient {
        let seed = derive_seed(scenario_seed, &[spec.id.as_bytes()]);
        let physiology = Physiology::new(
            spec.condition,
            spec.baseline,
            start,
            days,
            derive_seed(seed, &[b"physiology"]),
        );
        VirtualPatient {
            spec,
            physiology,
            episodes: Vec::new(),
            start,
            days,
            seed,
        }
    }

    /// Adds episodes.
    pub fn with_episodes(mut self, episodes: impl IntoIterator<Item = Episode>) -> VirtualPatient {
        self.episodes.extend(episodes);
        self
    }

    /// The patient's description.
    pub fn spec(&self) -> &PatientSpec {
        &self.spec
    }

    /// The patient's episodes.
    pub fn episodes(&self) -> &[Episode] {
        &self.episodes
    }

    /// End of the simulated span.
    pub fn end(&self) -> DateTime<Utc> {
        self.start + TimeDelta::days(i64::from(self.days))
    }

    /// The summed event effects at `t`.
    pub fn effects_at(&self, t: DateTime<Utc>) -> Effects {
        let day_s = 86_400.0;
        self.episodes.iter().fold(Effects::default(), |acc, e| {
            let fx = match *e {
                Episode::Decompensation {
                    from,
                    days,
                    kg_per_day,
                    spo2_drop_per_day,
                } if t >= from => {
                    let elapsed = ((t - from).num_seconds() as f64 / day_s).min(days);
                    Effects {
                        weight_kg: kg_per_day * elapsed,
                        spo2: -spo2_drop_per_day * elapsed,
                        pulse: 3.0 * elapsed,
                        ..Effects::default()
                    }
                }
                Episode::Desaturation {
                    from,
                    until,
                    ramp_hours,
                    spo2_drop,
                } if t >= from && t < until => {
                    let h = (t - from).num_seconds() as f64 / 3600.0;
                    let k = if ramp_hours > 0.0 {
                        (h / ramp_hours).min(1.0)
                    } else {
                        1.0
                    };
                    Effects {
                        spo2: -spo2_drop * k,
                        pulse: 1.5 * spo2_drop * k,
                        ..Effects::default()
                    }
                }
                Episode::Fever {
                    from,
                    until,
                    temperature_c,
                } if t >= from && t < until => Effects {
                    fever_c: Some(temperature_c),
                    ..Effects::default()
                },
                _ => Effects::default(),
            };
            acc + fx
        })
    }

    /// Whether the patient measures nothing at `t` (non-adherence).
    fn absent(&self, t: DateTime<Utc>) -> bool {
        self.episodes
            .iter()
            .any(|e| matches!(e, Episode::Absent { from, until } if t >= *from && t < *until))
    }

    /// Whether `device_id` has no battery at `t`.
    pub fn device_down(&self, device_id: &str, t: DateTime<Utc>) -> bool {
        self.episodes.iter().any(|e| match e {
            Episode::DeviceDown {
                device_id: d,
                from,
                until,
            } => d == device_id && t >= *from && until.is_none_or(|u| t < u),
            _ => false,
        })
    }

    /// Whether the patient feels unwell at `t` (an effect episode is under
    /// way): symptomatic patients do not forget to measure. This also keeps
    /// the designed readings of an event in the data whatever the seed.
    fn symptomatic(&self, t: DateTime<Utc>) -> bool {
        self.episodes.iter().any(|e| match *e {
            // Fluid stays on until treated: unwell to the end.
            Episode::Decompensation { from, .. } => t >= from,
            Episode::Desaturation { from, until, .. } | Episode::Fever { from, until, .. } => {
                t >= from && t < until
            }
            _ => false,
        })
    }

    /// The answers of a daily check-in at `t`, as scores: the COPD diary
    /// for a COPD patient (`copd_breathlessness`, `copd_major_symptoms`),
    /// the heart-failure check-in otherwise (`hf_breathlessness`,
    /// `hf_swelling`). Symptoms come **ahead** of the measurable signs, as
    /// patients report: in a decompensation, breathing is worse with
    /// activity from two days before the weight starts to rise, ankles
    /// swell from its onset, and breathlessness at rest (red zone) from two
    /// days after it; in a desaturation (exacerbation), the diary shows more
    /// breathlessness a day before the SpO2 falls, more sputum from its
    /// onset and purulent sputum (three major symptoms) a day after, and
    /// breathlessness "much worse" from the end of the ramp.
    fn checkin(&self, t: DateTime<Utc>) -> Vec<(Metric, f64, Unit)> {
        let day = TimeDelta::days(1);
        let copd = self.spec.condition == Condition::Copd;
        let (mut breathing, mut second) = (0.0f64, 0.0f64);
        for e in &self.episodes {
            match *e {
                Episode::Decompensation { from, .. } if !copd => {
                    if t >= from - day * 2 {
                        breathing = breathing.max(1.0);
                    }
                    if t >= from {
                        second = 1.0; // swelling
                    }
                    if t >= from + day * 2 {
                        breathing = 2.0;
                    }
                }
                Episode::Desaturation {
                    from,
                    until,
                    ramp_hours,
                    ..
                } if copd && t < until => {
                    if t >= from - day {
                        breathing = breathing.max(1.0);
                        second = second.max(1.0);
                    }
                    if t >= from {
                        second = second.max(2.0); // + more sputum
                    }
                    if t >= from + day {
                        second = 3.0; // + purulent sputum
                    }
                    if t >= from + TimeDelta::minutes((ramp_hours * 60.0) as i64) {
                        breathing = 2.0;
                    }
                }
                _ => {}
            }
        }
        if copd {
            vec![
                (Metric::CopdBreathlessness, breathing, Unit::Score),
                (Metric::CopdMajorSymptoms, second, Unit::Score),
            ]
        } else {
            // The zone the gateway scores (the worst answer; the other
            // answers follow these two), sent for the ground truth.
            vec![
                (Metric::HfBreathlessness, breathing, Unit::Score),
                (Metric::HfSwelling, second, Unit::Score),
                (Metric::HfSymptomZone, breathing.max(second), Unit::Score),
            ]
        }
    }

    /// Whether the patient is febrile at `t` (they then check more often).
    fn febrile(&self, t: DateTime<Utc>) -> bool {
        self.episodes
            .iter()
            .any(|e| matches!(e, Episode::Fever { from, until, .. } if t >= *from && t < *until))
    }

    /// Every emission of the patient's devices over the span, ordered by
    /// measurement time, each device's sequence numbers increasing in
    /// measurement order. No faults here: the scenario adds those.
    pub fn emissions(&self) -> Vec<Emission> {
        let slots = self.slots();
        let mut out: Vec<Emission> = Vec::new();
        for s in slots.iter().filter(|s| !s.forgotten) {
            let device = &self.spec.devices[s.device];
            out.push(self.reading(device, s.at, s.spot, 0));
            if let Some(gap) = s.doubled {
                out.push(self.reading(device, s.at + gap, s.spot, 1));
            }
        }
        out.sort_by(|a, b| (a.at, &a.device_id).cmp(&(b.at, &b.device_id)));
        // Sequence numbers: each device starts somewhere in its history.
        let mut next: BTreeMap<String, u64> = BTreeMap::new();
        for e in &mut out {
            let n = next.entry(e.device_id.clone()).or_insert_with(|| {
                100 + derive_seed(self.seed, &[b"seq", e.device_id.as_bytes()]) % 900
            });
            e.sequence = Some(*n);
            *n += 1;
        }
        out
    }

    /// The measurement a device makes at `at`; `spot` overrides values with
    /// a designed episode, `variant` separates the noise of a second reading
    /// taken at a near-identical time. Public so a scenario can build faulty
    /// copies that look like the device's real readings.
    pub fn reading(
        &self,
        device: &DeviceSpec,
        at: DateTime<Utc>,
        spot: Option<SpotValues>,
        variant: u8,
    ) -> Emission {
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(
            self.seed,
            &[
                b"reading",
                device.id.as_bytes(),
                &at.timestamp().to_le_bytes(),
                &[variant],
            ],
        ));
        let mut v = self.physiology.sample(at, &self.effects_at(at), &mut rng);
        match spot {
            Some(SpotValues::BloodPressure {
                systolic,
                diastolic,
            }) => {
                v.systolic = systolic;
                v.diastolic = diastolic;
                // Symptomatic, anxious: a faster pulse.
                v.pulse += if systolic > 150.0 { 14.0 } else { 8.0 };
            }
            Some(SpotValues::Glucose { mg_dl }) => v.glucose_mg_dl = mg_dl,
            None => {}
        }
        let mut annotations = BTreeMap::new();
        match device.kind {
            DeviceKind::BpCuff => {
                annotations.insert("irregular_pulse".to_string(), v.irregular_pulse.to_string());
            }
            DeviceKind::Glucometer => {
                let meal = if spot.is_some() {
                    "casual"
                } else {
                    meal_context(hour_of_day(at))
                };
                annotations.insert("meal".to_string(), meal.to_string());
            }
            _ => {}
        }
        let values = match device.kind {
            DeviceKind::Tablet => self.checkin(at),
            _ => device_values(device.kind, device.unit, &v),
        };
        Emission {
            at,
            patient_id: self.spec.id.clone(),
            device_id: device.id.clone(),
            device: device.kind,
            values,
            annotations,
            sequence: None,
            fault: None,
        }
    }

    /// All measurement slots, with adherence decisions taken.
    fn slots(&self) -> Vec<Slot> {
        let mut slots = Vec::new();
        let jitter = i64::from(self.spec.adherence.jitter_minutes) * 60;
        for day in 0..self.days {
            let midnight = self.start + TimeDelta::days(i64::from(day));
            let mut today: Vec<Slot> = Vec::new();
            for (di, device) in self.spec.devices.iter().enumerate() {
                let mut times: Vec<(u32, TimeOfDay)> = device
                    .times
                    .iter()
                    .copied()
                    .enumerate()
                    .map(|(i, t)| (i as u32, t))
                    .collect();
                if device.kind == DeviceKind::Thermometer {
                    for (i, (h, m)) in [(14u32, 0u32), (21, 0)].into_iter().enumerate() {
                        let t = TimeOfDay(h * 3600 + m * 60);
                        if self.febrile(midnight + t.as_delta()) {
                            times.push((100 + i as u32, t));
                        }
                    }
                }
                for (idx, t) in times {
                    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(
                        self.seed,
                        &[
                            b"slot",
                            device.id.as_bytes(),
                            &day.to_le_bytes(),
                            &idx.to_le_bytes(),
                        ],
                    ));
                    // Draw every number whatever the outcome, so outcomes
                    // never shift each other.
                    let j = if jitter > 0 {
                        rng.random_range(-jitter..=jitter)
                    } else {
                        0
                    };
                    let forget = rng.random_bool(self.spec.adherence.miss_rate.clamp(0.0, 1.0));
                    let double = rng.random_bool(self.spec.adherence.double_rate.clamp(0.0, 1.0));
                    let gap = TimeDelta::seconds(rng.random_range(60..=300));
                    let secs = (i64::from(t.seconds()) + j).clamp(0, 86_399);
                    let at = midnight + TimeDelta::seconds(secs);
                    today.push(Slot {
                        device: di,
                        at,
                        spot: None,
                        forgotten: forget && !self.symptomatic(at),
                        doubled: double.then_some(gap),
                    });
                }
            }
            // Outages remove slots outright; forgetting is then limited so
            // that a day with any possible measurement keeps at least one.
            today.retain(|s| {
                !self.absent(s.at) && !self.device_down(&self.spec.devices[s.device].id, s.at)
            });
            today.sort_by_key(|s| (s.at, s.device));
            if !today.is_empty() && today.iter().all(|s| s.forgotten) {
                today[0].forgotten = false;
            }
            slots.extend(today);
        }
        // Designed spot measurements: never forgotten, but a patient who is
        // absent or whose device is dead cannot take them.
        for e in &self.episodes {
            if let Episode::Spot { at, values } = *e {
                let Some(di) = self
                    .spec
                    .devices
                    .iter()
                    .position(|d| d.kind == values.kind())
                else {
                    continue;
                };
                if at < self.start
                    || at >= self.end()
                    || self.absent(at)
                    || self.device_down(&self.spec.devices[di].id, at)
                {
                    continue;
                }
                slots.push(Slot {
                    device: di,
                    at,
                    spot: Some(values),
                    forgotten: false,
                    doubled: None,
                });
            }
        }
        slots
    }
}

/// The values a device of `kind` sends for vitals `v`, in `unit`, rounded to
/// the device's display resolution (0.1 kg / 0.2 lb, whole mmHg, whole mg/dL
/// or 0.1 mmol/L, whole %, 0.1 °C/°F).
pub fn device_values(kind: DeviceKind, unit: Unit, v: &Vitals) -> Vec<(Metric, f64, Unit)> {
    let conv = |metric: Metric, value: f64, step: f64| -> (Metric, f64, Unit) {
        let x = metric
            .canonical_unit()
            .convert(value, unit)
            .unwrap_or(value);
        (metric, round_to(x, step), unit)
    };
    match kind {
        DeviceKind::Scale => {
            let step = if unit == Unit::Lb { 0.2 } else { 0.1 };
            vec![conv(Metric::BodyWeight, v.weight_kg, step)]
        }
        DeviceKind::BpCuff => {
            let sys = v.systolic.round();
            let dia = v.diastolic.round();
            let map = (dia + (sys - dia) / 3.0).round();
            let step = if unit == Unit::KPa { 0.1 } else { 1.0 };
            vec![
                conv(Metric::Systolic, sys, step),
                conv(Metric::Diastolic, dia, step),
                conv(Metric::MeanArterialPressure, map, step),
                (Metric::PulseRate, v.pulse.round(), Unit::PerMin),
            ]
        }
        DeviceKind::Glucometer => {
            let step = if unit == Unit::MmolPerL { 0.1 } else { 1.0 };
            vec![conv(Metric::BloodGlucose, v.glucose_mg_dl, step)]
        }
        DeviceKind::PulseOximeter => vec![
            (Metric::Spo2, v.spo2.round().min(100.0), Unit::Percent),
            (Metric::OximetryPulseRate, v.pulse.round(), Unit::PerMin),
        ],
        DeviceKind::Thermometer => vec![conv(Metric::BodyTemperature, v.temperature_c, 0.1)],
        // A well patient's check-in; a patient's own come from
        // `Patient::checkin`, which knows their episodes.
        DeviceKind::Tablet => vec![
            (Metric::HfBreathlessness, 0.0, Unit::Score),
            (Metric::HfSwelling, 0.0, Unit::Score),
        ],
    }
}

/// `x` rounded to a multiple of `step`, without binary noise (`36.7`, not
/// `36.700000000000003`) so that encodings are stable.
fn round_to(x: f64, step: f64) -> f64 {
    let n = (x / step).round();
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as i32
    };
    let p = 10f64.powi(decimals);
    (n * step * p).round() / p
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap()
    }

    fn spec(condition: Condition) -> PatientSpec {
        PatientSpec {
            id: "p1".into(),
            condition,
            baseline: Baseline::typical(condition),
            adherence: Adherence::default(),
            devices: vec![
                DeviceSpec::new(DeviceKind::Scale, "s1", condition),
                DeviceSpec {
                    unit: Unit::Lb,
                    ..DeviceSpec::new(DeviceKind::Scale, "s2", condition)
                },
                DeviceSpec::new(DeviceKind::BpCuff, "b1", condition),
                DeviceSpec {
                    unit: Unit::MmolPerL,
                    ..DeviceSpec::new(DeviceKind::Glucometer, "g1", condition)
                },
            ],
        }
    }

    #[test]
    fn time_of_day_parses_and_prints() {
        assert_eq!(
            "07:30".parse::<TimeOfDay>().unwrap(),
            TimeOfDay::hm(7, 30).unwrap()
        );
        assert_eq!("23:59:59".parse::<TimeOfDay>().unwrap().seconds(), 86_399);
        assert_eq!("07:30".parse::<TimeOfDay>().unwrap().to_string(), "07:30");
        for bad in ["7:30", "24:00", "07:60", "07", "ab:cd", "07:30:00:00"] {
            assert!(bad.parse::<TimeOfDay>().is_err(), "{bad}");
        }
    }

    #[test]
    fn emissions_are_ordered_and_sequenced_per_device() {
        let p = VirtualPatient::new(spec(Condition::Diabetes), start(), 7, 42);
        let e = p.emissions();
        assert!(e.windows(2).all(|w| w[0].at <= w[1].at));
        let mut last: BTreeMap<&str, u64> = BTreeMap::new();
        for x in &e {
            let s = x.sequence.unwrap();
            if let Some(prev) = last.insert(&x.device_id, s) {
                assert_eq!(s, prev + 1);
            }
        }
        // Units as configured, rounded to the device resolution.
        let lb = e.iter().find(|x| x.device_id == "s2").unwrap();
        assert_eq!(lb.values[0].2, Unit::Lb);
        assert!(lb.values[0].1 > 150.0);
        let g = e.iter().find(|x| x.device_id == "g1").unwrap();
        assert_eq!(g.values[0].2, Unit::MmolPerL);
        assert_eq!(g.values[0].1, round_to(g.values[0].1, 0.1));
    }

    #[test]
    fn every_day_has_a_reading_without_outages() {
        let mut s = spec(Condition::Healthy);
        s.adherence.miss_rate = 0.9;
        let p = VirtualPatient::new(s, start(), 30, 5);
        let e = p.emissions();
        for d in 0..30 {
            let lo = start() + TimeDelta::days(d);
            assert!(
                e.iter()
                    .any(|x| x.at >= lo && x.at < lo + TimeDelta::days(1)),
                "day {d}"
            );
        }
    }

    #[test]
    fn absence_and_dead_battery_remove_readings() {
        let p = VirtualPatient::new(spec(Condition::Healthy), start(), 7, 5).with_episodes([
            Episode::Absent {
                from: start() + TimeDelta::days(2),
                until: start() + TimeDelta::days(4),
            },
            Episode::DeviceDown {
                device_id: "b1".into(),
                from: start() + TimeDelta::days(5),
                until: None,
            },
        ]);
        let e = p.emissions();
        assert!(!e
            .iter()
            .any(|x| x.at >= start() + TimeDelta::days(2) && x.at < start() + TimeDelta::days(4)));
        assert!(!e
            .iter()
            .any(|x| x.device_id == "b1" && x.at >= start() + TimeDelta::days(5)));
        assert!(e
            .iter()
            .any(|x| x.device_id == "s1" && x.at >= start() + TimeDelta::days(5)));
    }

    #[test]
    fn spot_readings_carry_designed_values() {
        let at = start() + TimeDelta::hours(30);
        let p = VirtualPatient::new(spec(Condition::Hypertension), start(), 3, 1).with_episodes([
            Episode::Spot {
                at,
                values: SpotValues::BloodPressure {
                    systolic: 192.0,
                    diastolic: 118.0,
                },
            },
        ]);
        let e = p.emissions();
        let x = e.iter().find(|x| x.at == at).unwrap();
        assert_eq!(x.values[0], (Metric::Systolic, 192.0, Unit::MmHg));
        assert_eq!(x.values[1], (Metric::Diastolic, 118.0, Unit::MmHg));
    }

    #[test]
    fn rounding_is_clean() {
        assert_eq!(round_to(36.749, 0.1), 36.7);
        assert_eq!(round_to(176.5, 0.2), 176.6);
        assert_eq!(round_to(5.44, 0.1), 5.4);
        assert_eq!(round_to(131.6, 1.0), 132.0);
    }
}
