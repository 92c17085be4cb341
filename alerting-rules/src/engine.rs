//! The alert state machine.
//!
//! For each (patient, rule) the engine maps the stored [`AlertState`] and a
//! condition verdict to a [`Transition`] carrying the next state. It is
//! deterministic: the same readings, states and `now` give the same
//! transitions, so the gateway can persist state and outbox atomically and
//! replays are exact.
//!
//! # Semantics
//!
//! - **Order.** The caller feeds readings in measured-time order per
//!   patient. A reading measured before the patient's watermark (the newest
//!   measured time already evaluated) is *late*: it is evaluated against the
//!   window as it stands at its measured time, flagged `late`, may fire or
//!   update, but never resolves (an old normal reading says nothing about
//!   now). A reading received more than [`EngineConfig::late_receipt`] after
//!   it was measured is flagged late too.
//! - **One open alert per (patient, rule).** A breach while open produces an
//!   `Update` only when it is materially worse (further past the limit than
//!   at the last notification) *and* the rule's re-notify interval has passed
//!   since the last notification *and* the alert is not snoozed; otherwise
//!   `NoChange`. No storms.
//! - **Hysteresis.** An open alert resolves only after the clear test holds
//!   in `clear.consecutive` consecutive evaluations (default 2; 1 for
//!   missing-data rules). The clear test is `clear.limit` when given
//!   (fires above 180, clears at or below 160), else "the firing condition
//!   is false". An evaluation without enough data changes nothing.
//! - **Flapping.** Fire and resolve transitions are counted in the rule's
//!   flap window; a resolve that would exceed `flap.max_changes` is held:
//!   the alert stays open, marked flapping, until the window has room again.
//! - **Snooze.** [`crate::state::acknowledge`] sets `snooze_until`; until
//!   then updates are not notified and a re-fire is recorded without a
//!   notification. A resolve notifies only if the fire was notified.
//! - **Inhibition.** Missing-data rules take a `device_offline` flag: when
//!   the device is known offline, transitions are recorded but not notified;
//!   once the flag clears and the silence persists, the next evaluation
//!   notifies.
//! - **Settling.** Silence is judged only once the patient's input has
//!   settled: a device back from days offline uploads its memory oldest
//!   first, a message at a time, and after the first old reading the
//!   patient *looks* silent for days. While the patient's last input
//!   ([`MissingInput::last_input`], on the same clock as `now`) is less than
//!   [`EngineConfig::settle`] old, a missing-data breach is not acted on
//!   (`NoChange`, [`Note::Settling`]): the rest of the upload can only make
//!   the silence shorter. A normal verdict is acted on at once (more data
//!   can never contradict it), so an open "no data" alert still resolves
//!   with the first reading that ends the silence.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::condition::{evaluate, placeholders, Eval, LeafOutcome, Status, Verdict, View};
use crate::history::History;
use crate::missing::silence;
use crate::model::{Evidence, NewReading, Patient};
use crate::overrides::{resolve, EffectiveLimit};
use crate::rule::{LeafKind, Rule, Severity};
use crate::ruleset::RuleSet;
use crate::state::{AlertState, AlertStatus, OpenAlert};

/// Engine-wide settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineConfig {
    /// A reading received this long after it was measured is flagged late.
    pub late_receipt: TimeDelta,
    /// A patient whose last input is more recent than this is still
    /// uploading: missing-data rules do not fire or update for them yet.
    pub settle: TimeDelta,
}

/// Default of [`EngineConfig::settle`]: well above the pauses between the
/// messages of one upload (BLE record transfer, a cellular hub's retries),
/// well below any missing-data window.
pub const DEFAULT_SETTLE: TimeDelta = TimeDelta::minutes(2);

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            late_receipt: TimeDelta::hours(1),
            settle: DEFAULT_SETTLE,
        }
    }
}

/// What happened to a (patient, rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    /// A new alert opened.
    Fire,
    /// The open alert got materially worse.
    Update,
    /// The open alert cleared.
    Resolve,
    /// Nothing to tell (the state may still have changed: clear streak, flap
    /// window).
    NoChange,
}

/// Why a transition was, or was not, notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Note {
    /// Update: worse than at the last notification.
    NewPeak,
    /// Fire or update recorded silently: snoozed.
    Snoozed,
    /// Recorded silently: the device is known offline.
    Inhibited,
    /// Resolve held, or fire marked: the alert is flapping.
    Flapping,
    /// Still breaching but not worse than notified.
    NotMaterial,
    /// Worse, but the re-notify interval has not passed.
    RenotifyInterval,
    /// A late reading does not resolve.
    Late,
    /// Not enough data to judge.
    NoData,
    /// The clear test held, but not yet often enough.
    ClearPending,
    /// The condition is normal and no alert is open.
    Normal,
    /// Resolve of an alert that was never notified: nothing to tell.
    NeverNotified,
    /// Missing data: the patient's input has not settled yet (an upload is
    /// in progress), so silence is not judged.
    Settling,
}

/// The outcome of one rule for one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// What happened.
    pub kind: TransitionKind,
    /// Whether the gateway should send a notification (outbox row).
    pub notify: bool,
    /// Why (not) notified, or why nothing changed.
    pub note: Option<Note>,
    /// Patient id.
    pub patient_id: String,
    /// Rule id.
    pub rule_id: String,
    /// Rule version used.
    pub rule_version: u32,
    /// Pack of the rule.
    pub pack: String,
    /// Severity.
    pub severity: Severity,
    /// Processing time (`now`).
    pub at: DateTime<Utc>,
    /// Measured time of the evaluated reading(s); `None` for missing-data
    /// evaluations.
    pub measured_at: Option<DateTime<Utc>>,
    /// Rendered message (empty for `NoChange`).
    pub message: String,
    /// Status of the condition.
    pub status: Status,
    /// What every leaf saw.
    pub leaves: Vec<LeafOutcome>,
    /// Readings cited.
    pub evidence: Vec<Evidence>,
    /// Effective limits used, after overrides.
    pub limits: BTreeMap<String, EffectiveLimit>,
    /// Back-filled or delayed data.
    pub late: bool,
    /// The alert is flapping.
    pub flapping: bool,
    /// The state to persist for (patient, rule).
    pub state: AlertState,
}

/// The result of evaluating one measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// One transition per rule evaluated (including `NoChange`).
    pub transitions: Vec<Transition>,
    /// The patient's new watermark (newest measured time evaluated): persist
    /// it with the states.
    pub watermark: Option<DateTime<Utc>>,
}

/// Input of [`Engine::evaluate`].
pub struct Input<'a> {
    /// The patient, with plans and overrides.
    pub patient: &'a Patient,
    /// The readings of one measurement (e.g. systolic, diastolic, pulse of
    /// one cuff inflation), all measured at the same time.
    pub readings: &'a [NewReading],
    /// Stored readings.
    pub history: &'a dyn History,
    /// Current states of this patient, by rule id (absent = never fired).
    pub states: &'a BTreeMap<String, AlertState>,
    /// The patient's watermark before this measurement.
    pub watermark: Option<DateTime<Utc>>,
    /// Processing time: compared with re-notify intervals, snoozes and flap
    /// windows.
    pub now: DateTime<Utc>,
}

/// Input of [`Engine::evaluate_missing`].
pub struct MissingInput<'a> {
    /// The patient.
    pub patient: &'a Patient,
    /// Stored readings (only `last_seen` is asked).
    pub history: &'a dyn History,
    /// Current states of this patient, by rule id.
    pub states: &'a BTreeMap<String, AlertState>,
    /// Processing time.
    pub now: DateTime<Utc>,
    /// Intervals during which the gateway itself was down.
    pub gateway_downtime: &'a [(DateTime<Utc>, DateTime<Utc>)],
    /// The patient's device is known offline (an alert for the device team
    /// exists): record, do not notify.
    pub device_offline: bool,
    /// When the patient's last input (any reading) was taken in, on the
    /// clock of `now`; `None`: never (or unknown), which counts as settled.
    pub last_input: Option<DateTime<Utc>>,
}

/// Per-step context shared by reading and missing-data evaluations.
struct Step<'a> {
    rule: &'a Rule,
    patient: &'a Patient,
    now: DateTime<Utc>,
    measured_at: Option<DateTime<Utc>>,
    late: bool,
    inhibited: bool,
    limits: BTreeMap<String, EffectiveLimit>,
}

/// Tolerance for "materially worse": float noise is not news.
const EPS: f64 = 1e-9;

/// The rule engine: a rule set and settings.
#[derive(Debug, Clone)]
pub struct Engine {
    rules: RuleSet,
    config: EngineConfig,
}

impl Engine {
    /// An engine with default settings.
    pub fn new(rules: RuleSet) -> Self {
        Engine {
            rules,
            config: EngineConfig::default(),
        }
    }

    /// An engine with explicit settings.
    pub fn with_config(rules: RuleSet, config: EngineConfig) -> Self {
        Engine { rules, config }
    }

    /// The rule set.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Evaluates one measurement of one patient against every applicable
    /// rule that tests one of its metrics.
    pub fn evaluate(&self, input: &Input) -> Evaluation {
        let Some(t) = input.readings.iter().map(|r| r.measured_at).max() else {
            return Evaluation {
                transitions: Vec::new(),
                watermark: input.watermark,
            };
        };
        let late = input.watermark.is_some_and(|w| t < w)
            || input
                .readings
                .iter()
                .any(|r| r.received_at - r.measured_at > self.config.late_receipt);
        let watermark = Some(input.watermark.map_or(t, |w| w.max(t)));
        let mut transitions = Vec::new();
        for rule in self.rules.each_rule_for(&input.patient.care_plans) {
            if rule.is_missing() || input.patient.overrides.is_disabled(&rule.id) {
                continue;
            }
            if !input
                .readings
                .iter()
                .any(|r| rule.condition.tests(r.metric))
            {
                continue;
            }
            let overridden = input.patient.overrides.0.get(&rule.id);
            let (values, record) = match overridden.filter(|o| !o.limits.is_empty()) {
                None => (
                    Cow::Borrowed(&rule.defaults.values),
                    rule.defaults.record.clone(),
                ),
                Some(o) => {
                    let (values, record, _skipped) = resolve(rule, Some(o));
                    (Cow::Owned(values), record)
                }
            };
            let view = || View {
                patient: &input.patient.id,
                history: input.history,
                fresh: input.readings,
            };
            let verdict = evaluate(
                rule,
                &Eval {
                    view: view(),
                    at: t,
                    limits: &values,
                    clear_mode: false,
                },
            );
            let clear_holds = if rule.clear.limit.is_some() {
                let v = evaluate(
                    rule,
                    &Eval {
                        view: view(),
                        at: t,
                        limits: &values,
                        clear_mode: true,
                    },
                );
                holds(v.status)
            } else {
                holds(verdict.status)
            };
            let prev = prior_state(input.states, rule);
            let step = Step {
                rule,
                patient: input.patient,
                now: input.now,
                measured_at: Some(t),
                late,
                inhibited: false,
                limits: record,
            };
            transitions.push(step.run(prev, verdict, clear_holds));
        }
        Evaluation {
            transitions,
            watermark,
        }
    }

    /// The engine settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Whether the patient's input has settled at `now` (see the module
    /// documentation): no input for [`EngineConfig::settle`].
    pub fn settled(&self, last_input: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        last_input.is_none_or(|t| now - t >= self.config.settle)
    }

    /// Evaluates the missing-data rules of one patient at `now`. The gateway
    /// calls it on a timer (and may call it after each reading so an open
    /// "no data" alert resolves promptly).
    pub fn evaluate_missing(&self, input: &MissingInput) -> Vec<Transition> {
        let settled = self.settled(input.last_input, input.now);
        let mut out = Vec::new();
        for rule in self.rules.each_rule_for(&input.patient.care_plans) {
            if !rule.is_missing() || input.patient.overrides.is_disabled(&rule.id) {
                continue;
            }
            let Some(leaf) = rule.condition.leaves().into_iter().next() else {
                continue;
            };
            let LeafKind::Missing { metrics, after } = &leaf.kind else {
                continue;
            };
            let mut verdict = missing_verdict(input, metrics, after.delta());
            // An upload in progress is not silence: a breach waits until
            // the input settles (the rest can only shorten the silence).
            let settling = !settled && verdict.status == Status::Breach;
            if settling {
                verdict.status = Status::Unknown;
            }
            let clear_holds = holds(verdict.status);
            let prev = prior_state(input.states, rule);
            let step = Step {
                rule,
                patient: input.patient,
                now: input.now,
                measured_at: None,
                late: false,
                inhibited: input.device_offline,
                limits: BTreeMap::new(),
            };
            let mut t = step.run(prev, verdict, clear_holds);
            if settling && t.kind == TransitionKind::NoChange {
                t.note = Some(Note::Settling);
            }
            out.push(t);
        }
        out
    }
}

/// The stored state of `rule`, or a fresh one if it never fired.
fn prior_state(states: &BTreeMap<String, AlertState>, rule: &Rule) -> AlertState {
    states
        .get(&rule.id)
        .cloned()
        .unwrap_or_else(|| AlertState::new(&rule.id, rule.version))
}

fn holds(s: Status) -> Option<bool> {
    match s {
        Status::Normal => Some(true),
        Status::Breach => Some(false),
        Status::Unknown => None,
    }
}

fn hours(d: TimeDelta) -> f64 {
    d.num_seconds() as f64 / 3600.0
}

/// The verdict of a missing-data rule: the longest effective silence among
/// the watched metrics. A metric never seen is not watched (the patient has
/// no such device) unless the rule watches any metric, in which case a
/// patient who never sent anything is silent since enrolment.
fn missing_verdict(
    input: &MissingInput,
    metrics: &[device_profiles::Metric],
    after: TimeDelta,
) -> Verdict {
    let mut worst: Option<(Option<device_profiles::Metric>, TimeDelta)> = None;
    let mut consider = |metric, last: Option<DateTime<Utc>>| {
        if let Some(last) = last {
            let s = silence(input.now, last, input.gateway_downtime);
            if worst.is_none_or(|(_, w)| s > w) {
                worst = Some((metric, s));
            }
        }
    };
    if metrics.is_empty() {
        let last = input
            .history
            .last_seen(&input.patient.id, None)
            .or(input.patient.enrolled_at);
        consider(None, last);
    } else {
        for &m in metrics {
            consider(Some(m), input.history.last_seen(&input.patient.id, Some(m)));
        }
    }
    let (status, value, score, metric) = match worst {
        Some((m, s)) => {
            let st = if s >= after {
                Status::Breach
            } else {
                Status::Normal
            };
            (st, Some(hours(s)), hours(s) - hours(after), m)
        }
        None => (Status::Unknown, None, f64::NEG_INFINITY, None),
    };
    let leaf = LeafOutcome {
        name: String::new(),
        kind: "missing".to_string(),
        metric,
        op: None,
        value,
        limit: Some(hours(after)),
        baseline: None,
        count: 0,
        status,
        evidence: Vec::new(),
        score,
    };
    Verdict {
        status,
        score,
        leaves: vec![leaf],
    }
}

impl Step<'_> {
    fn transition(
        &mut self,
        kind: TransitionKind,
        notify: bool,
        note: Option<Note>,
        v: Verdict,
        state: AlertState,
    ) -> Transition {
        let message = if kind == TransitionKind::NoChange {
            String::new()
        } else {
            self.rule.message.render(&placeholders(self.rule, &v))
        };
        let evidence = v.evidence();
        Transition {
            kind,
            notify,
            note,
            patient_id: self.patient.id.clone(),
            rule_id: self.rule.id.clone(),
            rule_version: self.rule.version,
            pack: self.rule.pack.clone(),
            severity: self.rule.severity,
            at: self.now,
            measured_at: self.measured_at,
            message,
            status: v.status,
            leaves: v.leaves,
            evidence,
            limits: std::mem::take(&mut self.limits),
            late: self.late,
            flapping: state.flapping,
            state,
        }
    }

    /// The state machine proper: the transition from `st` on verdict `v`.
    /// Consumes the step: its limits and the verdict's leaves move into the
    /// transition.
    fn run(mut self, mut st: AlertState, v: Verdict, clear_holds: Option<bool>) -> Transition {
        use TransitionKind::*;
        let rule = self.rule;
        let now = self.now;
        let score = v.score;
        if st.rule_id != rule.id {
            st.rule_id = rule.id.clone();
        }
        st.rule_version = rule.version;
        let horizon = now - rule.flap.window.delta();
        st.flap_changes.retain(|&c| c > horizon);
        if st.flapping && st.flap_changes.len() <= rule.flap.max_changes && st.open.is_none() {
            st.flapping = false;
        }
        let snoozed = st.is_snoozed(now);
        match (st.open.take(), v.status) {
            (None, Status::Breach) => {
                st.flap_changes.push(now);
                if st.flap_changes.len() > rule.flap.max_changes {
                    st.flapping = true;
                }
                let notify = !snoozed && !self.inhibited;
                let note = if self.inhibited {
                    Some(Note::Inhibited)
                } else if snoozed {
                    Some(Note::Snoozed)
                } else if st.flapping {
                    Some(Note::Flapping)
                } else {
                    None
                };
                st.clear_streak = 0;
                let mut t = self.transition(Fire, notify, note, v, st);
                t.state.open = Some(OpenAlert {
                    status: AlertStatus::Firing,
                    since: now,
                    measured_at: self.measured_at,
                    last_notified: notify.then_some(now),
                    peak_score: finite(score),
                    severity: rule.severity,
                    evidence: t.evidence.clone(),
                    limits: t.limits.clone(),
                    message: t.message.clone(),
                    acknowledged_by: None,
                    acknowledged_at: None,
                });
                t
            }
            (None, _) => {
                st.clear_streak = 0;
                let note = if v.status == Status::Unknown {
                    Note::NoData
                } else {
                    Note::Normal
                };
                self.transition(NoChange, false, Some(note), v, st)
            }
            (Some(mut open), Status::Breach) => {
                st.clear_streak = 0;
                let material = score > open.peak_score + EPS;
                let too_soon = open
                    .last_notified
                    .is_some_and(|l| now - l < rule.renotify.delta());
                let note = if !material {
                    Some(Note::NotMaterial)
                } else if too_soon {
                    Some(Note::RenotifyInterval)
                } else if snoozed {
                    Some(Note::Snoozed)
                } else if self.inhibited {
                    Some(Note::Inhibited)
                } else {
                    None
                };
                if let Some(n) = note {
                    st.open = Some(open);
                    return self.transition(NoChange, false, Some(n), v, st);
                }
                let mut t = self.transition(Update, true, Some(Note::NewPeak), v, st);
                open.peak_score = finite(score);
                open.last_notified = Some(now);
                open.evidence = t.evidence.clone();
                open.limits = t.limits.clone();
                open.message = t.message.clone();
                t.state.open = Some(open);
                t
            }
            (Some(open), _) => {
                if self.late {
                    st.open = Some(open);
                    return self.transition(NoChange, false, Some(Note::Late), v, st);
                }
                match clear_holds {
                    Some(true) => st.clear_streak += 1,
                    Some(false) => st.clear_streak = 0,
                    None => {
                        st.open = Some(open);
                        return self.transition(NoChange, false, Some(Note::NoData), v, st);
                    }
                }
                if st.clear_streak < rule.clear.consecutive {
                    st.open = Some(open);
                    return self.transition(NoChange, false, Some(Note::ClearPending), v, st);
                }
                if st.flap_changes.len() + 1 > rule.flap.max_changes {
                    st.flapping = true;
                    st.open = Some(open);
                    return self.transition(NoChange, false, Some(Note::Flapping), v, st);
                }
                st.flap_changes.push(now);
                st.flapping = false;
                st.clear_streak = 0;
                let notified = open.last_notified.is_some();
                let note = if notified {
                    None
                } else {
                    Some(Note::NeverNotified)
                };
                self.transition(Resolve, notified, note, v, st)
            }
        }
    }
}

/// Scores are compared, stored and serialized; keep them finite.
fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}
