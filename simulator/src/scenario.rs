//! Scenarios as data: who the patients are, what happens to them and their
//! devices, and which alerts a correct gateway must raise.
//!
//! A scenario file (`scenarios/*.toml`) has a header (`name`, `start`,
//! `days`, `seed`, `speed`), `[[patients]]` with their `[[patients.devices]]`,
//! timed events under `[[events.<kind>]]`, and the ground truth as
//! `[[expect]]` entries. Days are counted from 0 (day 0 is the start date);
//! `at` is a time of day `"HH:MM"`. All times are UTC, which is also the
//! patients' local time.
//!
//! The ground truth is written by the scenario's author from its design,
//! never computed by an alert engine. It holds for any seed because the
//! physiology keeps undisturbed values inside quiet bands (see
//! [`crate::physiology::QuietBands`]); an `until_day` gives the window where
//! the exact firing day depends on a rule's windowing policy (weight over
//! 24 h vs calendar days, deadman timers).
//!
//! Assumed rule applicability, for writing expectations: `htn-crisis`,
//! `hypotension`, `fever`, the adherence rules and the glucose thresholds
//! apply to every patient with the device; `hf-*` to heart failure,
//! `htn-7d-mean-high` to hypertension; `copd-spo2-low` (< 88 %) replaces
//! `spo2-low` (< 90 %) for COPD patients.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, NaiveTime, TimeDelta, Timelike, Utc};
use device_profiles::profile::{line_col, parse_toml};
use device_profiles::units::UnitName;
use device_profiles::FileError;
use serde::{Deserialize, Serialize};

use crate::emission::{DeviceKind, Emission, Fault};
use crate::patient::{
    allowed_units, default_times, default_unit, Adherence, DeviceSpec, Episode, PatientSpec,
    SpotValues, TimeOfDay, VirtualPatient,
};
use crate::payload::WireFormat;
use crate::physiology::{derive_seed, Baseline, BaselinePatch, Condition, QuietBands};
use crate::plan::{EmissionId, Plan, Planned, Quirk};
use crate::schedule::Schedule;

/// The directory of the scenarios shipped with the simulator.
pub fn bundled_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// The bundled scenarios compiled into the binary, by name, in name order.
const EMBEDDED: [(&str, &str); 8] = [
    (
        "copd-desaturation",
        include_str!("../scenarios/copd-desaturation.toml"),
    ),
    ("demo", include_str!("../scenarios/demo.toml")),
    ("fever", include_str!("../scenarios/fever.toml")),
    (
        "heart-failure-decompensation",
        include_str!("../scenarios/heart-failure-decompensation.toml"),
    ),
    (
        "hypertensive-crisis",
        include_str!("../scenarios/hypertensive-crisis.toml"),
    ),
    (
        "hypoglycaemia",
        include_str!("../scenarios/hypoglycaemia.toml"),
    ),
    (
        "non-adherence",
        include_str!("../scenarios/non-adherence.toml"),
    ),
    (
        "upload-patterns",
        include_str!("../scenarios/upload-patterns.toml"),
    ),
];

/// The alert rules scenarios state expectations for (ids shared with the
/// alerting-rules crate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RuleId {
    /// SBP > 180 and/or DBP > 120.
    #[serde(rename = "htn-crisis")]
    HtnCrisis,
    /// 7-day mean of home BP ≥ 135/85.
    #[serde(rename = "htn-7d-mean-high")]
    Htn7dMeanHigh,
    /// SBP < 90 or DBP < 60.
    #[serde(rename = "hypotension")]
    Hypotension,
    /// Weight up > 2 lb (0.9 kg) in 24 h.
    #[serde(rename = "hf-weight-gain-24h")]
    HfWeightGain24h,
    /// Weight up ≥ 5 lb (2.3 kg) in 7 days.
    #[serde(rename = "hf-weight-gain-7d")]
    HfWeightGain7d,
    /// Glucose < 70 and ≥ 54 mg/dL.
    #[serde(rename = "dm-hypo-l1")]
    DmHypoL1,
    /// Glucose < 54 mg/dL.
    #[serde(rename = "dm-hypo-l2")]
    DmHypoL2,
    /// Glucose 181–250 mg/dL.
    #[serde(rename = "dm-hyper-l1")]
    DmHyperL1,
    /// Glucose > 250 mg/dL.
    #[serde(rename = "dm-hyper-l2")]
    DmHyperL2,
    /// SpO2 < 88 % (COPD).
    #[serde(rename = "copd-spo2-low")]
    CopdSpo2Low,
    /// SpO2 < 90 %.
    #[serde(rename = "spo2-low")]
    Spo2Low,
    /// Temperature ≥ 38.3 °C.
    #[serde(rename = "fever")]
    Fever,
    /// No reading from the patient for 2 days.
    #[serde(rename = "adherence-no-readings-2d")]
    AdherenceNoReadings2d,
    /// No data from the patient for 3 days.
    #[serde(rename = "adherence-no-data-3d")]
    AdherenceNoData3d,
    /// Heart-failure check-in in the yellow zone twice in a row.
    #[serde(rename = "hf-symptoms-yellow")]
    HfSymptomsYellow,
    /// Heart-failure check-in in the red zone.
    #[serde(rename = "hf-symptoms-red")]
    HfSymptomsRed,
    /// More short of breath (check-in) with weight gain.
    #[serde(rename = "hf-breathless-weight-gain")]
    HfBreathlessWeightGain,
    /// COPD diary: two or more major symptoms on two days in a row.
    #[serde(rename = "copd-exacerbation-symptoms")]
    CopdExacerbationSymptoms,
    /// COPD diary: more breathless, with SpO2 3 points below its 48 h high.
    #[serde(rename = "copd-breathless-spo2-drop")]
    CopdBreathlessSpo2Drop,
}

impl RuleId {
    /// Every rule id.
    pub const ALL: [RuleId; 19] = [
        RuleId::HtnCrisis,
        RuleId::Htn7dMeanHigh,
        RuleId::Hypotension,
        RuleId::HfWeightGain24h,
        RuleId::HfWeightGain7d,
        RuleId::DmHypoL1,
        RuleId::DmHypoL2,
        RuleId::DmHyperL1,
        RuleId::DmHyperL2,
        RuleId::CopdSpo2Low,
        RuleId::Spo2Low,
        RuleId::Fever,
        RuleId::AdherenceNoReadings2d,
        RuleId::AdherenceNoData3d,
        RuleId::HfSymptomsYellow,
        RuleId::HfSymptomsRed,
        RuleId::HfBreathlessWeightGain,
        RuleId::CopdExacerbationSymptoms,
        RuleId::CopdBreathlessSpo2Drop,
    ];

    /// The rule's id string.
    pub const fn as_str(self) -> &'static str {
        match self {
            RuleId::HtnCrisis => "htn-crisis",
            RuleId::Htn7dMeanHigh => "htn-7d-mean-high",
            RuleId::Hypotension => "hypotension",
            RuleId::HfWeightGain24h => "hf-weight-gain-24h",
            RuleId::HfWeightGain7d => "hf-weight-gain-7d",
            RuleId::DmHypoL1 => "dm-hypo-l1",
            RuleId::DmHypoL2 => "dm-hypo-l2",
            RuleId::DmHyperL1 => "dm-hyper-l1",
            RuleId::DmHyperL2 => "dm-hyper-l2",
            RuleId::CopdSpo2Low => "copd-spo2-low",
            RuleId::Spo2Low => "spo2-low",
            RuleId::Fever => "fever",
            RuleId::AdherenceNoReadings2d => "adherence-no-readings-2d",
            RuleId::AdherenceNoData3d => "adherence-no-data-3d",
            RuleId::HfSymptomsYellow => "hf-symptoms-yellow",
            RuleId::HfSymptomsRed => "hf-symptoms-red",
            RuleId::HfBreathlessWeightGain => "hf-breathless-weight-gain",
            RuleId::CopdExacerbationSymptoms => "copd-exacerbation-symptoms",
            RuleId::CopdBreathlessSpo2Drop => "copd-breathless-spo2-drop",
        }
    }
}

impl RuleId {
    /// The id of the rule in the gateway's bundled rule packs
    /// (`alerting-rules/rules/*.toml`) that implements this expectation, if
    /// one does (`dm-hyper-l1`, 181–250 mg/dL, has no bundled rule).
    pub const fn pack_rule(self) -> Option<&'static str> {
        Some(match self {
            RuleId::HtnCrisis => "htn.crisis",
            RuleId::Htn7dMeanHigh => "htn.home-mean-high",
            RuleId::Hypotension => "htn.hypotension",
            RuleId::HfWeightGain24h => "hf.weight-gain-24h",
            RuleId::HfWeightGain7d => "hf.weight-gain-7d",
            RuleId::DmHypoL1 => "dm.hypo-level1",
            RuleId::DmHypoL2 => "dm.hypo-level2",
            RuleId::DmHyperL1 => return None,
            RuleId::DmHyperL2 => "dm.hyper-level2",
            RuleId::CopdSpo2Low => "copd.spo2-low",
            RuleId::Spo2Low => "spo2.low",
            RuleId::Fever => "fever",
            RuleId::AdherenceNoReadings2d => "adherence.no-vitals-2d",
            RuleId::AdherenceNoData3d => "adherence.no-data-3d",
            RuleId::HfSymptomsYellow => "hf.symptoms-yellow-zone",
            RuleId::HfSymptomsRed => "hf.symptoms-red-zone",
            RuleId::HfBreathlessWeightGain => "hf.breathless-with-weight-gain",
            RuleId::CopdExacerbationSymptoms => "copd.exacerbation-symptoms",
            RuleId::CopdBreathlessSpo2Drop => "copd.breathless-with-spo2-drop",
        })
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule id that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown rule id `{0}`")]
pub struct UnknownRule(pub String);

impl FromStr for RuleId {
    type Err = UnknownRule;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RuleId::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRule(s.to_string()))
    }
}

/// One alert a correct gateway raises during the scenario (ground truth).
///
/// Contract: for each `(rule, patient)`, a correct gateway raises at least
/// one alert whose triggering time falls in each expectation's window
/// ([`ExpectedAlert::window`]), and none outside all of that pair's windows.
/// How often it re-notifies inside a window (a condition that clears and
/// returns near a threshold) is its own policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedAlert {
    /// The rule.
    pub rule: RuleId,
    /// The patient.
    pub patient: String,
    /// Day (0-based) of the triggering reading, or of the deadman deadline
    /// for adherence rules; the earliest acceptable day with `until_day`.
    pub day: u32,
    /// Latest acceptable day, when the exact day depends on the rule's
    /// windowing policy.
    #[serde(default)]
    pub until_day: Option<u32>,
    /// Why this alert fires (for the reader of a failing test).
    #[serde(default)]
    pub note: String,
}

/// What the scenario's care team does about a patient's follow-up task,
/// and when (`[[care]]`): it claims or completes the patient's open task
/// through the gateway's API at that simulated moment. A patient no action
/// names is left alone, so their task goes overdue and escalates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CareAction {
    /// Whose task.
    pub patient: String,
    /// Day (0-based).
    pub day: u32,
    /// Time of day (UTC, like every scenario time).
    pub at: TimeOfDay,
    /// `claim` or `complete`.
    pub action: CareVerb,
    /// The care manager.
    pub by: String,
    /// `complete`: the outcome (`reached_patient`, `advice_given`, ...).
    #[serde(default)]
    pub outcome: Option<String>,
}

/// A care team's action on a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CareVerb {
    /// Take the task.
    Claim,
    /// Record it done with an outcome.
    Complete,
}

/// Ground truth of the care loop (`[[expect_task]]`): the follow-up task a
/// correct gateway opens for a patient's problem (with the bundled
/// follow-up policy and the team in UTC), the escalation tiers it reaches
/// by the end of the run, and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedTask {
    /// The patient.
    pub patient: String,
    /// The policy's problem (`blood-pressure`, ...).
    pub problem: String,
    /// Escalation tiers reached.
    pub tiers: u32,
    /// The outcome recorded; absent: not done.
    #[serde(default)]
    pub outcome: Option<String>,
    /// Why (for the reader of a failing test).
    #[serde(default)]
    pub note: String,
}

/// Ground truth of the RPM program report (`[[expect_report]]`): for a
/// patient and calendar month (`YYYY-MM`, the scenario's own dates), the
/// 30-day device periods ending in that month with their days of
/// automatically transmitted data, and the CPT codes the month supports
/// (`99453`, `99445`, ...; see the gateway's care loop chapter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedReport {
    /// The patient.
    pub patient: String,
    /// The calendar month, `YYYY-MM`.
    pub period: String,
    /// Data days of each 30-day period ending in the month, in order.
    pub data_days: Vec<u32>,
    /// Every code the month's report supports for the patient, sorted.
    pub codes: Vec<String>,
    /// Why (for the reader of a failing test).
    #[serde(default)]
    pub note: String,
}

impl ExpectedAlert {
    /// Last acceptable day.
    pub fn last_day(&self) -> u32 {
        self.until_day.unwrap_or(self.day)
    }

    /// The simulated time window `[from, until)` in which the alert's
    /// triggering time must fall, for a scenario starting at `start`.
    pub fn window(&self, start: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        (
            day_start(start, self.day),
            day_start(start, self.last_day() + 1),
        )
    }
}

fn day_start(start: DateTime<Utc>, day: u32) -> DateTime<Utc> {
    start + TimeDelta::days(i64::from(day))
}

fn default_retest() -> bool {
    true
}
fn default_spo2_drop_per_day() -> f64 {
    1.5
}
fn default_ramp_hours() -> f64 {
    12.0
}
fn default_copies() -> u32 {
    2
}
fn default_gap() -> u32 {
    2
}

/// Heart-failure decompensation: weight up by `kg_per_day` for `days` days
/// from `start_day` at `at`, SpO2 drifting down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HfDecompensation {
    /// Patient id.
    pub patient: String,
    /// Onset day.
    pub start_day: u32,
    /// Onset time of day (default 00:00).
    #[serde(default)]
    pub at: TimeOfDay,
    /// Ramp length, days.
    pub days: u32,
    /// Weight gain, kg per day (0.5–1 is typical).
    pub kg_per_day: f64,
    /// SpO2 fall, percentage points per day (default 1.5).
    #[serde(default = "default_spo2_drop_per_day")]
    pub spo2_drop_per_day: f64,
}

/// A designed blood-pressure reading (hypertensive crisis or hypotension),
/// with an optional retest 5 minutes later (AHA: wait, retest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BpEvent {
    /// Patient id.
    pub patient: String,
    /// Day.
    pub day: u32,
    /// Time of day.
    pub at: TimeOfDay,
    /// Systolic, mmHg.
    pub systolic: f64,
    /// Diastolic, mmHg.
    pub diastolic: f64,
    /// Retest 5 min later, slightly closer to normal but on the same side of
    /// the threshold (crisis: −4/−3; hypotension: +2/+2). Default true.
    #[serde(default = "default_retest")]
    pub retest: bool,
}

/// A designed glucose reading (hypo- or hyperglycaemia), with retests every
/// 15 minutes (the "rule of 15" after treating a hypo).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlucoseEvent {
    /// Patient id.
    pub patient: String,
    /// Day.
    pub day: u32,
    /// Time of day.
    pub at: TimeOfDay,
    /// Glucose, mg/dL (converted if the meter sends mmol/L).
    pub glucose_mg_dl: f64,
    /// Retest values, mg/dL, 15 min apart.
    #[serde(default)]
    pub retests_mg_dl: Vec<f64>,
}

/// A desaturation (COPD exacerbation): SpO2 down by `spo2_drop` over
/// `ramp_hours`, for `days` days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Desaturation {
    /// Patient id.
    pub patient: String,
    /// Onset day.
    pub start_day: u32,
    /// Onset time (default 00:00).
    #[serde(default)]
    pub at: TimeOfDay,
    /// Duration, days.
    pub days: u32,
    /// Percentage points lost at the nadir.
    pub spo2_drop: f64,
    /// Hours to reach the nadir (default 12).
    #[serde(default = "default_ramp_hours")]
    pub ramp_hours: f64,
}

/// A fever with daily-mean temperature `temperature_c` for `days` days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeverEvent {
    /// Patient id.
    pub patient: String,
    /// Onset day.
    pub start_day: u32,
    /// Onset time (default 00:00).
    #[serde(default)]
    pub at: TimeOfDay,
    /// Duration, days.
    pub days: u32,
    /// Febrile daily mean, °C (readings swing ±0.35 °C around it, higher in
    /// the evening, ±0.1 noise): ≥ 38.75 keeps every febrile reading ≥ 38.3.
    pub temperature_c: f64,
}

/// A non-adherence streak: no readings at all for `days` days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonAdherence {
    /// Patient id.
    pub patient: String,
    /// First day without readings.
    pub start_day: u32,
    /// Length, days.
    pub days: u32,
}

/// A device's battery runs out at `day`/`at`; the device stops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatteryOut {
    /// Device id.
    pub device: String,
    /// Day.
    pub day: u32,
    /// Time of day.
    pub at: TimeOfDay,
    /// The battery is replaced this many days later (never, if absent).
    #[serde(default)]
    pub replaced_after_days: Option<u32>,
}

/// The device's first reading at or after `day`/`at` is published `copies`
/// times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuplicateQuirk {
    /// Device id.
    pub device: String,
    /// Day.
    pub day: u32,
    /// Time of day.
    pub at: TimeOfDay,
    /// Total publishes (default 2).
    #[serde(default = "default_copies")]
    pub copies: u32,
    /// Seconds between copies (default 2).
    #[serde(default = "default_gap")]
    pub gap_seconds: u32,
}

/// The device's first reading at or after `day`/`at` arrives after its next
/// reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutOfOrderQuirk {
    /// Device id.
    pub device: String,
    /// Day.
    pub day: u32,
    /// Time of day.
    pub at: TimeOfDay,
}

/// The device's clock is off by `minutes` from `day`/`at`, for `hours`
/// (to the end if absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockSkewQuirk {
    /// Device id.
    pub device: String,
    /// From day (default 0).
    #[serde(default)]
    pub day: u32,
    /// From time (default 00:00).
    #[serde(default)]
    pub at: TimeOfDay,
    /// Device clock minus true time, minutes.
    pub minutes: i64,
    /// Duration, hours (to the end if absent).
    #[serde(default)]
    pub hours: Option<u32>,
}

/// The device has no link for `hours` from `day`/`at`; what it measures
/// meanwhile is stored and uploaded on reconnect, oldest first, one message
/// every `gap_seconds` (1 s, as BLE cuffs and cellular hubs do; 0: one
/// burst). With `memory_dump`, the device sends its whole memory on
/// reconnect (a BLE cuff replaying its stored records), readings that were
/// delivered before the link went down included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineQuirk {
    /// Device id.
    pub device: String,
    /// Day.
    pub day: u32,
    /// Time of day.
    pub at: TimeOfDay,
    /// Offline duration, hours.
    pub hours: f64,
    /// Seconds between the messages of the upload on reconnect.
    #[serde(default = "one_second")]
    pub gap_seconds: f64,
    /// On reconnect the device re-sends its whole memory first.
    #[serde(default)]
    pub memory_dump: bool,
}

fn one_second() -> f64 {
    1.0
}

/// An extra, faulty message from a device at `day`/`at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultEvent {
    /// Device id (for `unknown_device`, the message goes out under
    /// `unregistered-<device>`).
    pub device: String,
    /// Day.
    pub day: u32,
    /// Time of day.
    pub at: TimeOfDay,
    /// The fault.
    pub fault: Fault,
}

/// All timed events of a scenario, one array per kind
/// (`[[events.fever]]`, `[[events.duplicate]]`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Events {
    /// Heart-failure decompensations.
    #[serde(default)]
    pub hf_decompensation: Vec<HfDecompensation>,
    /// Hypertensive crises.
    #[serde(default)]
    pub hypertensive_crisis: Vec<BpEvent>,
    /// Hypotensive readings.
    #[serde(default)]
    pub hypotension: Vec<BpEvent>,
    /// Hypoglycaemia episodes.
    #[serde(default)]
    pub hypoglycaemia: Vec<GlucoseEvent>,
    /// Hyperglycaemia episodes.
    #[serde(default)]
    pub hyperglycaemia: Vec<GlucoseEvent>,
    /// Desaturations.
    #[serde(default)]
    pub desaturation: Vec<Desaturation>,
    /// Fevers.
    #[serde(default)]
    pub fever: Vec<FeverEvent>,
    /// Non-adherence streaks.
    #[serde(default)]
    pub non_adherence: Vec<NonAdherence>,
    /// Dead batteries.
    #[serde(default)]
    pub battery_out: Vec<BatteryOut>,
    /// Duplicate publishes.
    #[serde(default)]
    pub duplicate: Vec<DuplicateQuirk>,
    /// Out-of-order deliveries.
    #[serde(default)]
    pub out_of_order: Vec<OutOfOrderQuirk>,
    /// Device clock skews.
    #[serde(default)]
    pub clock_skew: Vec<ClockSkewQuirk>,
    /// Offline periods with stored-reading bursts.
    #[serde(default)]
    pub offline: Vec<OfflineQuirk>,
    /// Injected faults.
    #[serde(default)]
    pub fault: Vec<FaultEvent>,
}

/// A device in a scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    kind: DeviceKind,
    id: String,
    #[serde(default)]
    unit: Option<UnitName>,
    #[serde(default)]
    times: Option<Vec<TimeOfDay>>,
    #[serde(default)]
    format: WireFormat,
}

/// A patient in a scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPatient {
    id: String,
    condition: Condition,
    #[serde(default)]
    baseline: BaselinePatch,
    #[serde(default)]
    adherence: Adherence,
    devices: Vec<RawDevice>,
}

fn default_speed() -> f64 {
    1.0
}

/// A scenario file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    start: toml::value::Datetime,
    days: u32,
    seed: u64,
    #[serde(default = "default_speed")]
    speed: f64,
    patients: Vec<RawPatient>,
    #[serde(default)]
    events: Events,
    #[serde(default)]
    expect: Vec<ExpectedAlert>,
    #[serde(default)]
    care: Vec<CareAction>,
    #[serde(default)]
    expect_task: Vec<ExpectedTask>,
    #[serde(default)]
    expect_report: Vec<ExpectedReport>,
}

/// A scenario that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {}: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid scenario; every problem found, each with
    /// file, line, column and field.
    #[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The problems, in file order of discovery.
        problems: Vec<FileError>,
    },
}

impl ScenarioError {
    /// The located problems (empty for an I/O error).
    pub fn problems(&self) -> &[FileError] {
        match self {
            ScenarioError::Io { .. } => &[],
            ScenarioError::Invalid { problems } => problems,
        }
    }
}

/// Which patient owns a device, for registering the kit with a gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceAssignment {
    /// Device id.
    pub device_id: String,
    /// Patient id.
    pub patient_id: String,
    /// The patient's condition.
    pub condition: Condition,
    /// Device kind.
    pub kind: DeviceKind,
    /// Unit the device sends.
    pub unit: device_profiles::Unit,
    /// Wire format.
    pub format: WireFormat,
}

/// A loaded, validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Scenario name.
    pub name: String,
    /// What it demonstrates.
    pub description: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Simulated start (midnight UTC; day 0).
    pub start: DateTime<Utc>,
    /// Simulated length, days.
    pub days: u32,
    /// Seed of all randomness.
    pub seed: u64,
    /// Suggested speed factor for live runs (simulated s per wall s).
    pub speed: f64,
    /// The patients.
    pub patients: Vec<PatientSpec>,
    /// The timed events.
    pub events: Events,
    /// Ground truth: the alerts a correct gateway raises.
    pub expect: Vec<ExpectedAlert>,
    /// The care team's actions on follow-up tasks.
    pub care: Vec<CareAction>,
    /// Ground truth of the care loop: the follow-up tasks.
    pub expect_tasks: Vec<ExpectedTask>,
    /// Ground truth of the RPM program report.
    pub expect_reports: Vec<ExpectedReport>,
}

/// One step of a field path (`events.fever[0].patient`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(s: &str) -> Seg {
        Seg::Key(s.to_string())
    }
}
impl From<usize> for Seg {
    fn from(i: usize) -> Seg {
        Seg::Index(i)
    }
}

macro_rules! path {
    ($($s:expr),* $(,)?) => { vec![$(Seg::from($s)),*] };
}

fn path_string(p: &[Seg]) -> String {
    let mut s = String::new();
    for seg in p {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Start offset of the deepest existing node on `path` in the TOML text.
fn locate(text: &str, path: &[Seg]) -> Option<usize> {
    device_profiles::profile::locate(text, &path_string(path))
}

/// Validation problems of one file.
struct Problems<'a> {
    file: &'a Path,
    text: &'a str,
    list: Vec<FileError>,
}

impl Problems<'_> {
    fn add(&mut self, path: Vec<Seg>, message: impl Into<String>) {
        let (line, column) = locate(self.text, &path)
            .map(|o| line_col(self.text, o))
            .unwrap_or((0, 0));
        self.list.push(FileError {
            file: self.file.to_path_buf(),
            line,
            column,
            field: path_string(&path),
            message: message.into(),
        });
    }

    fn range(&mut self, path: Vec<Seg>, value: f64, lo: f64, hi: f64) {
        if !(value >= lo && value <= hi) {
            self.add(path, format!("{value} is outside {lo}..={hi}"));
        }
    }
}

fn kind_name(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Scale => "scale",
        DeviceKind::BpCuff => "bp_cuff",
        DeviceKind::Glucometer => "glucometer",
        DeviceKind::PulseOximeter => "pulse_oximeter",
        DeviceKind::Thermometer => "thermometer",
        DeviceKind::Tablet => "tablet",
    }
}

impl Scenario {
    /// Loads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            file: path.to_path_buf(),
            source,
        })?;
        Scenario::parse(&text, path)
    }

    /// Parses and validates scenario text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Scenario, ScenarioError> {
        let raw: RawScenario =
            parse_toml(text, file).map_err(|e| ScenarioError::Invalid { problems: vec![e] })?;
        let mut p = Problems {
            file,
            text,
            list: Vec::new(),
        };
        let scenario = Scenario::validate(raw, file, &mut p);
        if p.list.is_empty() {
            Ok(scenario)
        } else {
            Err(ScenarioError::Invalid { problems: p.list })
        }
    }

    /// Loads every `*.toml` in `dir`, in file-name order; every broken file's
    /// error, not only the first.
    pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, Vec<ScenarioError>> {
        let entries = std::fs::read_dir(dir).map_err(|source| {
            vec![ScenarioError::Io {
                file: dir.to_path_buf(),
                source,
            }]
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let (mut ok, mut errs) = (Vec::new(), Vec::new());
        for f in files {
            match Scenario::load(&f) {
                Ok(s) => ok.push(s),
                Err(e) => errs.push(e),
            }
        }
        if errs.is_empty() {
            Ok(ok)
        } else {
            Err(errs)
        }
    }

    /// Loads a bundled scenario by name (`"demo"` → `scenarios/demo.toml`):
    /// from the source tree when it is there (edits show at once), else the
    /// copy compiled into the binary (an installed `rpm-sim` or gateway demo).
    pub fn bundled(name: &str) -> Result<Scenario, ScenarioError> {
        let file = bundled_dir().join(format!("{name}.toml"));
        match EMBEDDED.iter().find(|(n, _)| *n == name) {
            Some((_, text)) if !file.exists() => Scenario::parse(text, &file),
            _ => Scenario::load(&file),
        }
    }

    /// Every bundled scenario, in name order (see [`Scenario::bundled`]).
    pub fn all_bundled() -> Result<Vec<Scenario>, Vec<ScenarioError>> {
        if bundled_dir().is_dir() {
            return Scenario::load_dir(&bundled_dir());
        }
        let (mut ok, mut errs) = (Vec::new(), Vec::new());
        for (name, _) in EMBEDDED {
            match Scenario::bundled(name) {
                Ok(s) => ok.push(s),
                Err(e) => errs.push(e),
            }
        }
        if errs.is_empty() {
            Ok(ok)
        } else {
            Err(errs)
        }
    }

    /// The same scenario with another seed.
    pub fn with_seed(&self, seed: u64) -> Scenario {
        Scenario {
            seed,
            ..self.clone()
        }
    }

    /// The same scenario moved to start at `start` (a midnight UTC): day
    /// numbers, events and expectations keep their meaning. Live runs use it
    /// so that measured times are recent (a gateway refuses readings older
    /// than its `max_age`).
    pub fn with_start(&self, start: DateTime<Utc>) -> Result<Scenario, String> {
        if start.num_seconds_from_midnight() != 0 || start.nanosecond() != 0 {
            return Err(format!("start {start} is not a midnight UTC"));
        }
        Ok(Scenario {
            start,
            ..self.clone()
        })
    }

    /// The same scenario moved so that its last day ends at today's
    /// midnight (UTC): every reading is in the past, the newest a few hours
    /// old.
    pub fn ending_today(&self, now: DateTime<Utc>) -> Scenario {
        let today = now.date_naive().and_time(NaiveTime::MIN).and_utc();
        Scenario {
            start: today - TimeDelta::days(i64::from(self.days)),
            ..self.clone()
        }
    }

    /// The first `days` days only (at least 1): later events are dropped and
    /// expectations are cut to the shorter run (an alert expected after the
    /// end is no longer expected; the tasks' ground truth, which depends on
    /// the whole run, is dropped).
    pub fn truncated(&self, days: u32) -> Scenario {
        let days = days.clamp(1, self.days);
        let mut s = self.clone();
        s.days = days;
        s.events.fault.retain(|f| f.day < days);
        s.care.retain(|c| c.day < days);
        if days < self.days {
            s.expect_tasks.clear();
            s.expect_reports.clear();
        }
        s.expect = self
            .expect
            .iter()
            .filter(|e| e.day < days)
            .map(|e| ExpectedAlert {
                until_day: e.until_day.map(|u| u.min(days - 1)),
                ..e.clone()
            })
            .collect();
        s
    }

    /// Simulated end (exclusive).
    pub fn end(&self) -> DateTime<Utc> {
        day_start(self.start, self.days)
    }

    /// The instant `day`/`at`.
    pub fn moment(&self, day: u32, at: TimeOfDay) -> DateTime<Utc> {
        day_start(self.start, day) + at.as_delta()
    }

    /// The ground truth.
    pub fn expected_alerts(&self) -> &[ExpectedAlert] {
        &self.expect
    }

    /// The accelerated-time schedule at the scenario's suggested speed.
    pub fn schedule(&self) -> Schedule {
        // `speed` was validated positive and finite at load time; a
        // hand-built Scenario with a bad speed falls back to real time.
        Schedule::new(self.start, self.speed).unwrap_or(Schedule::real_time(self.start))
    }

    /// Every device with its patient, for registering with a gateway.
    pub fn registry(&self) -> Vec<DeviceAssignment> {
        self.patients
            .iter()
            .flat_map(|p| {
                p.devices.iter().map(move |d| DeviceAssignment {
                    device_id: d.id.clone(),
                    patient_id: p.id.clone(),
                    condition: p.condition,
                    kind: d.kind,
                    unit: d.unit,
                    format: d.format,
                })
            })
            .collect()
    }

    /// Every reading's emission with its true measured-at time, in
    /// measurement order, each once (faulty messages included; duplicates
    /// and skewed clocks are in [`Scenario::plan`]).
    pub fn emissions(&self) -> Vec<Emission> {
        self.plan().emissions()
    }

    /// The whole run: readings with ids, quirks and send times.
    pub fn plan(&self) -> Plan {
        let mut episodes: BTreeMap<&str, Vec<Episode>> = BTreeMap::new();
        let owner = self.device_owners();
        let ev = &self.events;
        for e in &ev.hf_decompensation {
            episodes
                .entry(&e.patient)
                .or_default()
                .push(Episode::Decompensation {
                    from: self.moment(e.start_day, e.at),
                    days: f64::from(e.days),
                    kg_per_day: e.kg_per_day,
                    spo2_drop_per_day: e.spo2_drop_per_day,
                });
        }
        for (list, crisis) in [(&ev.hypertensive_crisis, true), (&ev.hypotension, false)] {
            for e in list {
                let at = self.moment(e.day, e.at);
                let v = episodes.entry(&e.patient).or_default();
                v.push(Episode::Spot {
                    at,
                    values: SpotValues::BloodPressure {
                        systolic: e.systolic,
                        diastolic: e.diastolic,
                    },
                });
                if e.retest {
                    let (ds, dd) = if crisis { (-4.0, -3.0) } else { (2.0, 2.0) };
                    v.push(Episode::Spot {
                        at: at + TimeDelta::minutes(5),
                        values: SpotValues::BloodPressure {
                            systolic: e.systolic + ds,
                            diastolic: e.diastolic + dd,
                        },
                    });
                }
            }
        }
        for e in ev.hypoglycaemia.iter().chain(&ev.hyperglycaemia) {
            let at = self.moment(e.day, e.at);
            let v = episodes.entry(&e.patient).or_default();
            v.push(Episode::Spot {
                at,
                values: SpotValues::Glucose {
                    mg_dl: e.glucose_mg_dl,
                },
            });
            for (i, g) in e.retests_mg_dl.iter().enumerate() {
                v.push(Episode::Spot {
                    at: at + TimeDelta::minutes(15 * (i as i64 + 1)),
                    values: SpotValues::Glucose { mg_dl: *g },
                });
            }
        }
        for e in &ev.desaturation {
            let from = self.moment(e.start_day, e.at);
            episodes
                .entry(&e.patient)
                .or_default()
                .push(Episode::Desaturation {
                    from,
                    until: from + TimeDelta::days(i64::from(e.days)),
                    ramp_hours: e.ramp_hours,
                    spo2_drop: e.spo2_drop,
                });
        }
        for e in &ev.fever {
            let from = self.moment(e.start_day, e.at);
            episodes
                .entry(&e.patient)
                .or_default()
                .push(Episode::Fever {
                    from,
                    until: from + TimeDelta::days(i64::from(e.days)),
                    temperature_c: e.temperature_c,
                });
        }
        for e in &ev.non_adherence {
            episodes
                .entry(&e.patient)
                .or_default()
                .push(Episode::Absent {
                    from: day_start(self.start, e.start_day),
                    until: day_start(self.start, e.start_day + e.days),
                });
        }
        for e in &ev.battery_out {
            let Some(p) = owner.get(e.device.as_str()) else {
                continue;
            };
            let from = self.moment(e.day, e.at);
            episodes.entry(p).or_default().push(Episode::DeviceDown {
                device_id: e.device.clone(),
                from,
                until: e
                    .replaced_after_days
                    .map(|d| from + TimeDelta::days(i64::from(d))),
            });
        }

        let patients: Vec<VirtualPatient> = self
            .patients
            .iter()
            .map(|spec| {
                VirtualPatient::new(spec.clone(), self.start, self.days, self.seed)
                    .with_episodes(episodes.remove(spec.id.as_str()).unwrap_or_default())
            })
            .collect();

        let mut emissions: Vec<(Emission, WireFormat)> = Vec::new();
        for vp in &patients {
            for e in vp.emissions() {
                let format = vp
                    .spec()
                    .devices
                    .iter()
                    .find(|d| d.id == e.device_id)
                    .map_or(WireFormat::Vendor, |d| d.format);
                emissions.push((e, format));
            }
        }
        // Faults: extra messages shaped like the device's real readings.
        // They take no sequence number, so a gateway's gap detection is not
        // disturbed by readings it must refuse anyway.
        for f in &ev.fault {
            let Some(vp) = patients
                .iter()
                .find(|p| p.spec().devices.iter().any(|d| d.id == f.device))
            else {
                continue;
            };
            let Some(device) = vp.spec().devices.iter().find(|d| d.id == f.device) else {
                continue;
            };
            let mut e = vp.reading(device, self.moment(f.day, f.at), None, 0xfa);
            e.fault = Some(f.fault);
            emissions.push((e, device.format));
        }
        emissions.sort_by(|(a, _), (b, _)| {
            (
                a.at,
                &a.patient_id,
                &a.device_id,
                a.fault.is_some(),
                a.sequence,
            )
                .cmp(&(
                    b.at,
                    &b.patient_id,
                    &b.device_id,
                    b.fault.is_some(),
                    b.sequence,
                ))
        });

        let mut readings: Vec<Planned> = emissions
            .into_iter()
            .enumerate()
            .map(|(i, (emission, format))| {
                let latency = 1 + derive_seed(
                    self.seed,
                    &[
                        b"latency",
                        emission.device_id.as_bytes(),
                        &emission.at.timestamp().to_le_bytes(),
                        &[u8::from(emission.fault.is_some())],
                    ],
                ) % 15;
                let send = emission.at + TimeDelta::seconds(latency as i64);
                Planned {
                    id: EmissionId(i as u64),
                    emission,
                    format,
                    quirks: Vec::new(),
                    sends: vec![send],
                }
            })
            .collect();
        self.apply_quirks(&mut readings);
        Plan {
            start: self.start,
            end: self.end(),
            readings,
        }
    }

    fn device_owners(&self) -> BTreeMap<&str, &str> {
        self.patients
            .iter()
            .flat_map(|p| {
                p.devices
                    .iter()
                    .map(move |d| (d.id.as_str(), p.id.as_str()))
            })
            .collect()
    }

    /// Applies transport quirks: clock skew (payload time), duplicates, then
    /// out-of-order delivery, then offline bursts (the link holds whatever
    /// would have been sent while it was down).
    fn apply_quirks(&self, readings: &mut [Planned]) {
        let ev = &self.events;
        let first_at = |readings: &[Planned], device: &str, t: DateTime<Utc>| {
            readings
                .iter()
                .position(|p| p.emission.device_id == device && !p.is_fault() && p.emission.at >= t)
        };
        for q in &ev.clock_skew {
            let from = self.moment(q.day, q.at);
            let until = q.hours.map(|h| from + TimeDelta::hours(i64::from(h)));
            for p in readings.iter_mut() {
                let t = p.emission.at;
                if p.emission.device_id == q.device && t >= from && until.is_none_or(|u| t < u) {
                    p.quirks.push(Quirk::ClockSkew { minutes: q.minutes });
                }
            }
        }
        for q in &ev.duplicate {
            if let Some(i) = first_at(readings, &q.device, self.moment(q.day, q.at)) {
                let p = &mut readings[i];
                let first = p.sends[0];
                for c in 1..q.copies {
                    p.sends
                        .push(first + TimeDelta::seconds(i64::from(q.gap_seconds * c)));
                }
                p.quirks.push(Quirk::Duplicate {
                    copies: q.copies,
                    gap_seconds: q.gap_seconds,
                });
            }
        }
        for q in &ev.out_of_order {
            let Some(i) = first_at(readings, &q.device, self.moment(q.day, q.at)) else {
                continue;
            };
            let next = readings[i + 1..]
                .iter()
                .find(|p| p.emission.device_id == q.device)
                .map(|p| p.sends[0]);
            if let Some(next) = next {
                let p = &mut readings[i];
                let shift = next + TimeDelta::seconds(1) - p.sends[0];
                for s in &mut p.sends {
                    *s += shift;
                }
                p.quirks.push(Quirk::OutOfOrder);
            }
        }
        for q in &ev.offline {
            let from = self.moment(q.day, q.at);
            let until = from + TimeDelta::milliseconds((q.hours * 3_600_000.0) as i64);
            let gap_ms = (q.gap_seconds * 1000.0) as i64;
            let mut held = 0i64;
            let mut next = || {
                let t = until + TimeDelta::milliseconds(held * gap_ms);
                held += 1;
                t
            };
            // Oldest first: the readings are planned in measured order.
            for p in readings
                .iter_mut()
                .filter(|p| p.emission.device_id == q.device && !p.is_fault())
            {
                if q.memory_dump && p.emission.at < from {
                    let at = next();
                    p.sends.push(at);
                    p.quirks.push(Quirk::MemoryDump {
                        reconnect_at: until,
                    });
                    continue;
                }
                let mut touched = false;
                for s in &mut p.sends {
                    if *s >= from && *s < until {
                        *s = next();
                        touched = true;
                    }
                }
                if touched {
                    p.quirks.push(Quirk::StoredBurst {
                        reconnect_at: until,
                    });
                }
            }
        }
        for p in readings.iter_mut() {
            p.sends.sort();
        }
    }

    fn validate(raw: RawScenario, file: &Path, p: &mut Problems<'_>) -> Scenario {
        if raw.name.trim().is_empty() {
            p.add(path!["name"], "must not be empty");
        }
        if !(1..=366).contains(&raw.days) {
            p.add(path!["days"], format!("{} is outside 1..=366", raw.days));
        }
        if !(raw.speed.is_finite() && raw.speed > 0.0) {
            p.add(path!["speed"], "must be a positive number");
        }
        let start = match start_time(&raw.start) {
            Ok(s) => s,
            Err(m) => {
                p.add(path!["start"], m);
                DateTime::<Utc>::UNIX_EPOCH
            }
        };

        if raw.patients.is_empty() {
            p.add(path!["patients"], "a scenario needs at least one patient");
        }
        let mut patients = Vec::new();
        let mut patient_ids = BTreeSet::new();
        let mut device_ids = BTreeSet::new();
        for (i, rp) in raw.patients.iter().enumerate() {
            if rp.id.trim().is_empty() {
                p.add(path!["patients", i, "id"], "must not be empty");
            } else if !patient_ids.insert(rp.id.clone()) {
                p.add(
                    path!["patients", i, "id"],
                    format!("duplicate patient id `{}`", rp.id),
                );
            }
            let baseline = rp.baseline.apply(Baseline::typical(rp.condition));
            for (field, value, (lo, hi)) in
                QuietBands::for_condition(rp.condition).violations(&baseline)
            {
                p.add(
                    path!["patients", i, "baseline", field],
                    format!(
                        "{value} is outside {lo}..={hi}, the band in which a {} baseline raises no alert (use an event instead)",
                        rp.condition.name()
                    ),
                );
            }
            let a = rp.adherence;
            p.range(
                path!["patients", i, "adherence", "miss_rate"],
                a.miss_rate,
                0.0,
                0.9,
            );
            p.range(
                path!["patients", i, "adherence", "double_rate"],
                a.double_rate,
                0.0,
                0.5,
            );
            if a.jitter_minutes > 180 {
                p.add(
                    path!["patients", i, "adherence", "jitter_minutes"],
                    "at most 180",
                );
            }
            if rp.devices.is_empty() {
                p.add(
                    path!["patients", i, "devices"],
                    "a patient needs at least one device",
                );
            }
            let mut devices = Vec::new();
            for (j, d) in rp.devices.iter().enumerate() {
                if d.id.trim().is_empty() || d.id.contains(['/', '+', '#']) {
                    p.add(
                        path!["patients", i, "devices", j, "id"],
                        "must be non-empty, without `/`, `+` or `#` (it is an MQTT topic level)",
                    );
                } else if !device_ids.insert(d.id.clone()) {
                    p.add(
                        path!["patients", i, "devices", j, "id"],
                        format!("duplicate device id `{}`", d.id),
                    );
                }
                let unit = match &d.unit {
                    Some(u) if !allowed_units(d.kind).contains(&u.1) => {
                        p.add(
                            path!["patients", i, "devices", j, "unit"],
                            format!("a {} cannot send `{}`", kind_name(d.kind), u.0),
                        );
                        default_unit(d.kind)
                    }
                    Some(u) => u.1,
                    None => default_unit(d.kind),
                };
                let times = match &d.times {
                    Some(t) if t.is_empty() => {
                        p.add(
                            path!["patients", i, "devices", j, "times"],
                            "needs at least one time",
                        );
                        default_times(d.kind, rp.condition)
                    }
                    Some(t) => {
                        let mut t = t.clone();
                        t.sort();
                        t
                    }
                    None => default_times(d.kind, rp.condition),
                };
                devices.push(DeviceSpec {
                    kind: d.kind,
                    id: d.id.clone(),
                    unit,
                    times,
                    format: d.format,
                });
            }
            patients.push(PatientSpec {
                id: rp.id.clone(),
                condition: rp.condition,
                baseline,
                adherence: rp.adherence,
                devices,
            });
        }

        let days = raw.days;
        let ctx = Ctx {
            patients: &patients,
            days,
        };
        ctx.events(&raw.events, p);
        for (k, e) in raw.expect.iter().enumerate() {
            if !patients.iter().any(|x| x.id == e.patient) {
                p.add(
                    path!["expect", k, "patient"],
                    format!("no patient `{}`", e.patient),
                );
            }
            if e.day >= days {
                p.add(
                    path!["expect", k, "day"],
                    format!("day {} is past the scenario's {days} days", e.day),
                );
            }
            if let Some(u) = e.until_day {
                if u < e.day || u >= days {
                    p.add(
                        path!["expect", k, "until_day"],
                        format!("must be in {}..{days}", e.day),
                    );
                }
            }
        }

        for (k, c) in raw.care.iter().enumerate() {
            if !patients.iter().any(|x| x.id == c.patient) {
                p.add(
                    path!["care", k, "patient"],
                    format!("no patient `{}`", c.patient),
                );
            }
            if c.day >= days {
                p.add(
                    path!["care", k, "day"],
                    format!("day {} is past the scenario's {days} days", c.day),
                );
            }
            if c.by.trim().is_empty() {
                p.add(path!["care", k, "by"], "must name the care manager");
            }
            if (c.action == CareVerb::Complete) != c.outcome.is_some() {
                p.add(
                    path!["care", k, "outcome"],
                    "a `complete` names its outcome, a `claim` none",
                );
            }
        }
        for (k, r) in raw.expect_report.iter().enumerate() {
            if !patients.iter().any(|x| x.id == r.patient) {
                p.add(
                    path!["expect_report", k, "patient"],
                    format!("no patient `{}`", r.patient),
                );
            }
            if chrono::NaiveDate::parse_from_str(&format!("{}-01", r.period), "%Y-%m-%d").is_err() {
                p.add(path!["expect_report", k, "period"], "a month like 2026-03");
            }
        }
        for (k, t) in raw.expect_task.iter().enumerate() {
            if !patients.iter().any(|x| x.id == t.patient) {
                p.add(
                    path!["expect_task", k, "patient"],
                    format!("no patient `{}`", t.patient),
                );
            }
        }

        Scenario {
            name: raw.name,
            description: raw.description,
            file: file.to_path_buf(),
            start,
            days,
            seed: raw.seed,
            speed: raw.speed,
            patients,
            events: raw.events,
            expect: raw.expect,
            care: raw.care,
            expect_tasks: raw.expect_task,
            expect_reports: raw.expect_report,
        }
    }
}

/// What event validation needs to know.
struct Ctx<'a> {
    patients: &'a [PatientSpec],
    days: u32,
}

impl Ctx<'_> {
    fn patient(
        &self,
        kind: &str,
        k: usize,
        id: &str,
        needs: Option<DeviceKind>,
        p: &mut Problems<'_>,
    ) {
        match self.patients.iter().find(|x| x.id == id) {
            None => p.add(
                path!["events", kind, k, "patient"],
                format!("no patient `{id}`"),
            ),
            Some(x) => {
                if let Some(n) = needs {
                    if x.device_of(n).is_none() {
                        p.add(
                            path!["events", kind, k, "patient"],
                            format!("patient `{id}` has no {}", kind_name(n)),
                        );
                    }
                }
            }
        }
    }

    fn device(&self, kind: &str, k: usize, id: &str, p: &mut Problems<'_>) {
        if !self
            .patients
            .iter()
            .any(|x| x.devices.iter().any(|d| d.id == id))
        {
            p.add(
                path!["events", kind, k, "device"],
                format!("no device `{id}`"),
            );
        }
    }

    fn day(&self, kind: &str, k: usize, field: &str, day: u32, p: &mut Problems<'_>) {
        if day >= self.days {
            p.add(
                path!["events", kind, k, field],
                format!("day {day} is past the scenario's {} days", self.days),
            );
        }
    }

    fn span(&self, kind: &str, k: usize, days: u32, p: &mut Problems<'_>) {
        if days == 0 {
            p.add(path!["events", kind, k, "days"], "must be at least 1");
        }
    }

    fn events(&self, ev: &Events, p: &mut Problems<'_>) {
        for (k, e) in ev.hf_decompensation.iter().enumerate() {
            let n = "hf_decompensation";
            self.patient(n, k, &e.patient, Some(DeviceKind::Scale), p);
            self.day(n, k, "start_day", e.start_day, p);
            self.span(n, k, e.days, p);
            p.range(path!["events", n, k, "kg_per_day"], e.kg_per_day, 0.1, 2.0);
            p.range(
                path!["events", n, k, "spo2_drop_per_day"],
                e.spo2_drop_per_day,
                0.0,
                5.0,
            );
        }
        for (n, list) in [
            ("hypertensive_crisis", &ev.hypertensive_crisis),
            ("hypotension", &ev.hypotension),
        ] {
            for (k, e) in list.iter().enumerate() {
                self.patient(n, k, &e.patient, Some(DeviceKind::BpCuff), p);
                self.day(n, k, "day", e.day, p);
                p.range(path!["events", n, k, "systolic"], e.systolic, 50.0, 260.0);
                p.range(path!["events", n, k, "diastolic"], e.diastolic, 30.0, 160.0);
                if e.diastolic >= e.systolic {
                    p.add(path!["events", n, k, "diastolic"], "must be below systolic");
                }
            }
        }
        for (n, list) in [
            ("hypoglycaemia", &ev.hypoglycaemia),
            ("hyperglycaemia", &ev.hyperglycaemia),
        ] {
            for (k, e) in list.iter().enumerate() {
                self.patient(n, k, &e.patient, Some(DeviceKind::Glucometer), p);
                self.day(n, k, "day", e.day, p);
                p.range(
                    path!["events", n, k, "glucose_mg_dl"],
                    e.glucose_mg_dl,
                    20.0,
                    600.0,
                );
                for (r, g) in e.retests_mg_dl.iter().enumerate() {
                    p.range(path!["events", n, k, "retests_mg_dl", r], *g, 20.0, 600.0);
                }
            }
        }
        for (k, e) in ev.desaturation.iter().enumerate() {
            let n = "desaturation";
            self.patient(n, k, &e.patient, Some(DeviceKind::PulseOximeter), p);
            self.day(n, k, "start_day", e.start_day, p);
            self.span(n, k, e.days, p);
            p.range(path!["events", n, k, "spo2_drop"], e.spo2_drop, 0.0, 30.0);
            p.range(
                path!["events", n, k, "ramp_hours"],
                e.ramp_hours,
                0.0,
                240.0,
            );
        }
        for (k, e) in ev.fever.iter().enumerate() {
            let n = "fever";
            self.patient(n, k, &e.patient, Some(DeviceKind::Thermometer), p);
            self.day(n, k, "start_day", e.start_day, p);
            self.span(n, k, e.days, p);
            p.range(
                path!["events", n, k, "temperature_c"],
                e.temperature_c,
                37.0,
                42.0,
            );
        }
        for (k, e) in ev.non_adherence.iter().enumerate() {
            let n = "non_adherence";
            self.patient(n, k, &e.patient, None, p);
            self.day(n, k, "start_day", e.start_day, p);
            self.span(n, k, e.days, p);
        }
        for (k, e) in ev.battery_out.iter().enumerate() {
            self.device("battery_out", k, &e.device, p);
            self.day("battery_out", k, "day", e.day, p);
        }
        for (k, e) in ev.duplicate.iter().enumerate() {
            self.device("duplicate", k, &e.device, p);
            self.day("duplicate", k, "day", e.day, p);
            if !(2..=10).contains(&e.copies) {
                p.add(
                    path!["events", "duplicate", k, "copies"],
                    "must be in 2..=10",
                );
            }
        }
        for (k, e) in ev.out_of_order.iter().enumerate() {
            self.device("out_of_order", k, &e.device, p);
            self.day("out_of_order", k, "day", e.day, p);
        }
        for (k, e) in ev.clock_skew.iter().enumerate() {
            self.device("clock_skew", k, &e.device, p);
            self.day("clock_skew", k, "day", e.day, p);
            if e.minutes == 0 || e.minutes.abs() > 60 * 24 * 365 * 10 {
                p.add(
                    path!["events", "clock_skew", k, "minutes"],
                    "must be non-zero and within ten years",
                );
            }
        }
        for (k, e) in ev.offline.iter().enumerate() {
            self.device("offline", k, &e.device, p);
            self.day("offline", k, "day", e.day, p);
            p.range(
                path!["events", "offline", k, "hours"],
                e.hours,
                0.01,
                24.0 * 14.0,
            );
            p.range(
                path!["events", "offline", k, "gap_seconds"],
                e.gap_seconds,
                0.0,
                3600.0,
            );
        }
        for (k, e) in ev.fault.iter().enumerate() {
            self.device("fault", k, &e.device, p);
            self.day("fault", k, "day", e.day, p);
        }
    }
}

/// A TOML date (`2026-03-02`, midnight UTC) or offset date-time
/// (`2026-03-02T00:00:00Z`), which must be a midnight.
fn start_time(dt: &toml::value::Datetime) -> Result<DateTime<Utc>, String> {
    let parsed = match (&dt.date, &dt.time, &dt.offset) {
        (Some(_), None, None) => {
            let d = chrono::NaiveDate::parse_from_str(&dt.to_string(), "%Y-%m-%d")
                .map_err(|e| e.to_string())?;
            d.and_time(NaiveTime::MIN).and_utc()
        }
        (Some(_), Some(_), Some(_)) => DateTime::parse_from_rfc3339(&dt.to_string())
            .map_err(|e| format!("`{dt}`: {e}"))?
            .with_timezone(&Utc),
        _ => {
            return Err(format!(
                "`{dt}` needs a date and, with a time, a UTC offset (e.g. 2026-03-02T00:00:00Z)"
            ))
        }
    };
    if parsed.num_seconds_from_midnight() != 0 || parsed.nanosecond() != 0 {
        return Err(format!(
            "`{dt}` must be a midnight UTC (day 0 starts at 00:00)"
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
start = 2026-03-02
days = 3
seed = 1

[[patients]]
id = "p1"
condition = "heart_failure"

[[patients.devices]]
kind = "scale"
id = "s1"
unit = "lb"
"#;

    #[test]
    fn minimal_scenario_loads() {
        let s = Scenario::parse(MINIMAL, Path::new("t.toml")).unwrap();
        assert_eq!(s.start.to_rfc3339(), "2026-03-02T00:00:00+00:00");
        assert_eq!(s.patients[0].devices[0].unit, device_profiles::Unit::Lb);
        assert!(!s.emissions().is_empty());
    }

    #[test]
    fn reference_errors_are_located() {
        let text = format!("{MINIMAL}\n[[events.fever]]\npatient = \"nobody\"\nstart_day = 1\ndays = 1\ntemperature_c = 38.9\n");
        let err = Scenario::parse(&text, Path::new("t.toml")).unwrap_err();
        let p = &err.problems()[0];
        assert_eq!(p.field, "events.fever[0].patient");
        assert_eq!(
            p.line,
            text.lines()
                .position(|l| l.starts_with("patient = \"nobody\""))
                .unwrap()
                + 1
        );
        assert!(err.to_string().contains("t.toml:"), "{err}");
    }

    #[test]
    fn start_must_be_midnight() {
        let text = MINIMAL.replace("start = 2026-03-02", "start = 2026-03-02T07:00:00Z");
        let err = Scenario::parse(&text, Path::new("t.toml")).unwrap_err();
        assert_eq!(err.problems()[0].field, "start");
        assert_eq!(err.problems()[0].line, 3);
    }

    /// Every file in `scenarios/` is compiled in, identical.
    #[test]
    fn every_bundled_file_is_embedded() {
        let mut names: Vec<String> = std::fs::read_dir(bundled_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let embedded: Vec<&str> = EMBEDDED.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, embedded);
        for (name, text) in EMBEDDED {
            let on_disk =
                std::fs::read_to_string(bundled_dir().join(format!("{name}.toml"))).unwrap();
            assert_eq!(on_disk, text, "{name}");
        }
    }

    #[test]
    fn rule_ids_round_trip() {
        for r in RuleId::ALL {
            assert_eq!(r.as_str().parse::<RuleId>().unwrap(), r);
        }
    }

    /// The mapping to the gateway's rule ids names rules that exist in the
    /// bundled packs (read as text: the simulator does not depend on the
    /// rule engine).
    #[test]
    fn pack_rules_exist_in_the_bundled_packs() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../alerting-rules/rules");
        let mut text = String::new();
        for e in std::fs::read_dir(dir).unwrap() {
            text.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap());
        }
        for r in RuleId::ALL {
            if let Some(id) = r.pack_rule() {
                assert!(text.contains(&format!("id = \"{id}\"")), "{r} -> {id}");
            }
        }
    }

    #[test]
    fn rebased_and_truncated() {
        let s = Scenario::parse(MINIMAL, Path::new("t.toml")).unwrap();
        let now = DateTime::parse_from_rfc3339("2027-06-10T15:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let r = s.ending_today(now);
        assert_eq!(r.end().to_rfc3339(), "2027-06-10T00:00:00+00:00");
        assert!(r.plan().readings.iter().all(|p| p.emission.at < now));
        assert!(s.with_start(now).is_err());
        let t = s.truncated(1);
        assert!(t
            .plan()
            .readings
            .iter()
            .all(|p| p.emission.at < s.start + TimeDelta::days(1)));
    }
}
