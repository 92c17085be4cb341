//! Offline replay for the `rules test` tool: run recorded readings through
//! the engine with in-memory history and state, and print what would have
//! been sent.
//!
//! Readings are processed in arrival order (`received_at`, else
//! `measured_at`; a stable sort keeps file order for ties), so a file can
//! reproduce back-filled data. Readings of one patient with the same
//! measured and arrival time form one measurement (a blood-pressure panel).
//! Missing-data rules are evaluated on an hourly tick of the replay clock,
//! and after each measurement of the patient. The replay clock is the
//! arrival time, so the patient's input settles as it does in the gateway:
//! readings that share one `received_at` (an upload) are never judged
//! silent part-way through.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use device_profiles::Metric;
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, EngineConfig, Input, MissingInput, Note, Transition, TransitionKind};
use crate::history::{MemoryHistory, Point};
use crate::model::{Evidence, NewReading, Patient};
use crate::overrides::{EffectiveLimit, Overrides};
use crate::rule::Severity;
use crate::ruleset::RuleSet;
use crate::state::AlertState;

/// One reading of a replay input, already in the canonical unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayReading {
    /// Patient id.
    pub patient: String,
    /// Care plans of the patient.
    pub care_plans: Vec<String>,
    /// Metric.
    pub metric: Metric,
    /// Value in the metric's canonical unit.
    pub value: f64,
    /// Measured time.
    pub measured_at: DateTime<Utc>,
    /// Arrival time (defaults to `measured_at`).
    pub received_at: Option<DateTime<Utc>>,
    /// Reading id.
    pub reading_id: String,
}

/// An alert event as the gateway would have produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Processing time.
    pub at: DateTime<Utc>,
    /// Measured time of the triggering reading(s).
    pub measured_at: Option<DateTime<Utc>>,
    /// Fire, update or resolve.
    pub kind: TransitionKind,
    /// Whether a notification would have been sent.
    pub notify: bool,
    /// Why (not) notified.
    pub note: Option<Note>,
    /// Patient id.
    pub patient_id: String,
    /// Rule id.
    pub rule_id: String,
    /// Rule version.
    pub rule_version: u32,
    /// Severity.
    pub severity: Severity,
    /// Rendered message.
    pub message: String,
    /// Late data.
    pub late: bool,
    /// Flapping.
    pub flapping: bool,
    /// Readings cited.
    pub evidence: Vec<Evidence>,
    /// Effective limits.
    pub limits: BTreeMap<String, EffectiveLimit>,
}

impl From<&Transition> for AlertEvent {
    fn from(t: &Transition) -> Self {
        AlertEvent {
            at: t.at,
            measured_at: t.measured_at,
            kind: t.kind,
            notify: t.notify,
            note: t.note,
            patient_id: t.patient_id.clone(),
            rule_id: t.rule_id.clone(),
            rule_version: t.rule_version,
            severity: t.severity,
            message: t.message.clone(),
            late: t.late,
            flapping: t.flapping,
            evidence: t.evidence.clone(),
            limits: t.limits.clone(),
        }
    }
}

impl AlertEvent {
    /// One JSON object on one line.
    pub fn to_json_line(&self) -> String {
        // Serializing plain data with finite numbers cannot fail; fall back
        // to an error object rather than panic.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

impl fmt::Display for AlertEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            TransitionKind::Fire => "FIRE",
            TransitionKind::Update => "UPDATE",
            TransitionKind::Resolve => "RESOLVE",
            TransitionKind::NoChange => "NOCHANGE",
        };
        write!(
            f,
            "{} {:<7} {:<8} {} patient={} v{}: {}",
            self.at.format("%Y-%m-%dT%H:%M:%SZ"),
            kind,
            self.severity,
            self.rule_id,
            self.patient_id,
            self.rule_version,
            self.message
        )?;
        let mut flags = Vec::new();
        if !self.notify {
            flags.push(match self.note {
                Some(n) => format!(
                    "silent: {}",
                    serde_json::to_string(&n)
                        .unwrap_or_default()
                        .trim_matches('"')
                ),
                None => "silent".to_string(),
            });
        }
        if self.late {
            flags.push("late".to_string());
        }
        if self.flapping {
            flags.push("flapping".to_string());
        }
        if !flags.is_empty() {
            write!(f, " [{}]", flags.join(", "))?;
        }
        Ok(())
    }
}

/// Extra replay settings.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Per-patient overrides.
    pub overrides: BTreeMap<String, Overrides>,
    /// Gateway downtime to simulate for missing-data rules.
    pub gateway_downtime: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// Engine settings (late receipt, settle time).
    pub config: EngineConfig,
}

/// Most missing-data ticks one replay runs (a year of hourly ticks), so a
/// typo in a date cannot make the tool spin for hours.
const MAX_TICKS: usize = 24 * 366;

/// Replays `readings` through `rules` and returns the fire, update and
/// resolve events (notified or not), in processing order. Readings after
/// `until` are ignored; missing-data rules are ticked up to `until`.
pub fn replay(
    rules: &RuleSet,
    readings: impl IntoIterator<Item = ReplayReading>,
    until: Option<DateTime<Utc>>,
) -> Vec<AlertEvent> {
    replay_with(rules, readings, until, &ReplayOptions::default())
}

struct PatientRun {
    patient: Patient,
    states: BTreeMap<String, AlertState>,
    watermark: Option<DateTime<Utc>>,
    /// Arrival time of the patient's last measurement.
    last_input: Option<DateTime<Utc>>,
}

/// [`replay`] with overrides and simulated gateway downtime.
pub fn replay_with(
    rules: &RuleSet,
    readings: impl IntoIterator<Item = ReplayReading>,
    until: Option<DateTime<Utc>>,
    opts: &ReplayOptions,
) -> Vec<AlertEvent> {
    let engine = Engine::with_config(rules.clone(), opts.config);
    let mut rs: Vec<ReplayReading> = readings
        .into_iter()
        .filter(|r| until.is_none_or(|u| r.received_at.unwrap_or(r.measured_at) <= u))
        .collect();
    rs.sort_by_key(|r| r.received_at.unwrap_or(r.measured_at));
    let mut history = MemoryHistory::new();
    let mut patients: BTreeMap<String, PatientRun> = BTreeMap::new();
    let mut events = Vec::new();
    let mut next_tick: Option<DateTime<Utc>> = None;
    let mut ticks = 0usize;

    let tick_all = |at: DateTime<Utc>,
                    patients: &mut BTreeMap<String, PatientRun>,
                    history: &MemoryHistory,
                    events: &mut Vec<AlertEvent>| {
        for run in patients.values_mut() {
            missing_step(&engine, run, history, at, opts, events);
        }
    };

    let mut i = 0;
    while i < rs.len() {
        let first = &rs[i];
        let now = first.received_at.unwrap_or(first.measured_at);
        let mut j = i + 1;
        while j < rs.len()
            && rs[j].patient == first.patient
            && rs[j].measured_at == first.measured_at
            && rs[j].received_at.unwrap_or(rs[j].measured_at) == now
        {
            j += 1;
        }
        // Missing-data ticks that fall before this measurement.
        let mut tick = next_tick.unwrap_or_else(|| hour_after(now));
        while tick <= now && ticks < MAX_TICKS {
            tick_all(tick, &mut patients, &history, &mut events);
            tick += TimeDelta::hours(1);
            ticks += 1;
        }
        next_tick = Some(tick);

        let group = &rs[i..j];
        let pid = first.patient.clone();
        let run = patients.entry(pid.clone()).or_insert_with(|| PatientRun {
            patient: Patient {
                id: pid.clone(),
                care_plans: Vec::new(),
                overrides: opts.overrides.get(&pid).cloned().unwrap_or_default(),
                enrolled_at: Some(first.measured_at),
            },
            states: BTreeMap::new(),
            watermark: None,
            last_input: None,
        });
        for r in group {
            for p in &r.care_plans {
                if !run.patient.care_plans.contains(p) {
                    run.patient.care_plans.push(p.clone());
                }
            }
        }
        let new: Vec<NewReading> = group
            .iter()
            .map(|r| NewReading {
                id: r.reading_id.clone(),
                metric: r.metric,
                value: r.value,
                measured_at: r.measured_at,
                received_at: r.received_at.unwrap_or(r.measured_at),
            })
            .collect();
        for r in &new {
            history.insert(
                &pid,
                r.metric,
                Point {
                    reading_id: r.id.as_str().into(),
                    measured_at: r.measured_at,
                    value: r.value,
                },
            );
        }
        let eval = engine.evaluate(&Input {
            patient: &run.patient,
            readings: &new,
            history: &history,
            states: &run.states,
            watermark: run.watermark,
            now,
        });
        run.watermark = eval.watermark;
        run.last_input = Some(now);
        apply(run, eval.transitions, &mut events);
        missing_step(&engine, run, &history, now, opts, &mut events);
        i = j;
    }
    if let (Some(u), Some(mut tick)) = (until, next_tick) {
        while tick <= u && ticks < MAX_TICKS {
            tick_all(tick, &mut patients, &history, &mut events);
            tick += TimeDelta::hours(1);
            ticks += 1;
        }
    } else if until.is_none() {
        // Without an end time, the replay ends once its last upload has
        // settled: silence is judged once more then.
        if let Some(last) = patients.values().filter_map(|r| r.last_input).max() {
            tick_all(
                last + engine.config().settle,
                &mut patients,
                &history,
                &mut events,
            );
        }
    }
    events
}

fn hour_after(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t) + TimeDelta::hours(1)
}

fn missing_step(
    engine: &Engine,
    run: &mut PatientRun,
    history: &MemoryHistory,
    now: DateTime<Utc>,
    opts: &ReplayOptions,
    events: &mut Vec<AlertEvent>,
) {
    let ts = engine.evaluate_missing(&MissingInput {
        patient: &run.patient,
        history,
        states: &run.states,
        now,
        gateway_downtime: &opts.gateway_downtime,
        device_offline: false,
        last_input: run.last_input,
    });
    apply(run, ts, events);
}

fn apply(run: &mut PatientRun, transitions: Vec<Transition>, events: &mut Vec<AlertEvent>) {
    for t in transitions {
        if t.kind != TransitionKind::NoChange {
            events.push(AlertEvent::from(&t));
        }
        run.states.insert(t.rule_id.clone(), t.state);
    }
}
