//! Test harness: a patient, in-memory history and state, readings fed in
//! order, transitions applied the way the gateway would.
#![allow(dead_code)]

use std::collections::BTreeMap;

use alerting_rules::engine::{Input, MissingInput};
use alerting_rules::load::SourceFile;
use alerting_rules::{
    AlertState, Engine, MemoryHistory, NewReading, Overrides, Patient, Point, RuleSet, Transition,
    TransitionKind,
};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use device_profiles::Metric;

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).unwrap()
}

/// `t0` + `m` minutes.
pub fn at(m: i64) -> DateTime<Utc> {
    t0() + TimeDelta::minutes(m)
}

pub fn hours(h: i64) -> i64 {
    h * 60
}

pub fn days(d: i64) -> i64 {
    d * 1440
}

/// A one-pack rule set from `[[rule]]` entries.
pub fn rules(body: &str) -> RuleSet {
    let text = format!("pack = \"test\"\nversion = 1\n{body}");
    RuleSet::from_sources(&[SourceFile::new("test.toml", text)], None)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A single rule `t` with the given condition lines.
pub fn rule(condition: &str) -> RuleSet {
    rules(&format!(
        "[[rule]]\nid = \"t\"\nversion = 3\nseverity = \"warning\"\nmessage = \"{{details}}\"\nsource = \"test\"\n{condition}\n"
    ))
}

pub struct Sim {
    pub engine: Engine,
    pub patient: Patient,
    pub history: MemoryHistory,
    pub states: BTreeMap<String, AlertState>,
    pub watermark: Option<DateTime<Utc>>,
    /// The patient's last input, as the gateway records it (`None`: settled).
    pub last_input: Option<DateTime<Utc>>,
    n: usize,
}

impl Sim {
    pub fn new(set: RuleSet) -> Self {
        Sim {
            engine: Engine::new(set),
            patient: Patient {
                id: "p1".into(),
                care_plans: vec![],
                overrides: Overrides::default(),
                enrolled_at: Some(t0()),
            },
            history: MemoryHistory::new(),
            states: BTreeMap::new(),
            watermark: None,
            last_input: None,
            n: 0,
        }
    }

    pub fn bundled(plans: &[&str]) -> Self {
        let mut s = Sim::new(RuleSet::bundled().unwrap());
        s.patient.care_plans = plans.iter().map(|p| p.to_string()).collect();
        s
    }

    /// Feeds one measurement (several metrics at one time), received at
    /// `received` and processed then.
    pub fn measure_received(
        &mut self,
        values: &[(Metric, f64)],
        measured: DateTime<Utc>,
        received: DateTime<Utc>,
    ) -> Vec<Transition> {
        let readings: Vec<NewReading> = values
            .iter()
            .map(|&(metric, value)| {
                self.n += 1;
                NewReading {
                    id: format!("r{}", self.n),
                    metric,
                    value,
                    measured_at: measured,
                    received_at: received,
                }
            })
            .collect();
        for r in &readings {
            self.history.insert(
                &self.patient.id,
                r.metric,
                Point {
                    reading_id: r.id.as_str().into(),
                    measured_at: r.measured_at,
                    value: r.value,
                },
            );
        }
        let ev = self.engine.evaluate(&Input {
            patient: &self.patient,
            readings: &readings,
            history: &self.history,
            states: &self.states,
            watermark: self.watermark,
            now: received,
        });
        self.watermark = ev.watermark;
        for t in &ev.transitions {
            self.states.insert(t.rule_id.clone(), t.state.clone());
        }
        ev.transitions
    }

    pub fn measure(&mut self, values: &[(Metric, f64)], when: DateTime<Utc>) -> Vec<Transition> {
        self.measure_received(values, when, when)
    }

    pub fn one(&mut self, metric: Metric, value: f64, when: DateTime<Utc>) -> Vec<Transition> {
        self.measure(&[(metric, value)], when)
    }

    pub fn missing(
        &mut self,
        now: DateTime<Utc>,
        downtime: &[(DateTime<Utc>, DateTime<Utc>)],
        offline: bool,
    ) -> Vec<Transition> {
        let ts = self.engine.evaluate_missing(&MissingInput {
            patient: &self.patient,
            history: &self.history,
            states: &self.states,
            now,
            gateway_downtime: downtime,
            device_offline: offline,
            last_input: self.last_input,
        });
        for t in &ts {
            self.states.insert(t.rule_id.clone(), t.state.clone());
        }
        ts
    }
}

/// The transition kind of rule `id` in `ts` (`None` when not evaluated).
pub fn kind_of(ts: &[Transition], id: &str) -> Option<TransitionKind> {
    ts.iter().find(|t| t.rule_id == id).map(|t| t.kind)
}

pub fn get<'a>(ts: &'a [Transition], id: &str) -> &'a Transition {
    ts.iter()
        .find(|t| t.rule_id == id)
        .unwrap_or_else(|| panic!("rule {id} not evaluated: {ts:#?}"))
}

pub fn is_open(s: &Sim, id: &str) -> bool {
    s.states.get(id).is_some_and(|st| st.open.is_some())
}
