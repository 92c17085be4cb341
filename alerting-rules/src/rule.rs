//! The compiled rule model: what a validated rule file becomes.
//!
//! Everything here is checked and converted already (limits are in the
//! metric's canonical unit, durations are parsed, parameter names are
//! resolved), so the engine never re-validates and never fails on a rule.

use std::collections::BTreeMap;
use std::fmt;

use chrono::TimeDelta;
use device_profiles::units::Unit;
use device_profiles::Metric;
use serde::{Deserialize, Serialize};

use crate::duration::RuleDuration;
use crate::message::Template;

/// How urgent an alert is. Ordered: `Info < Warning < Urgent < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For the record; nobody is paged.
    Info,
    /// Review within the working day.
    Warning,
    /// Review within hours.
    Urgent,
    /// Act now.
    Critical,
}

impl Severity {
    /// The default re-notification interval: how often an open alert may
    /// speak again when it gets worse. Shorter for more severe alerts.
    pub const fn default_renotify(self) -> TimeDelta {
        match self {
            Severity::Info => TimeDelta::hours(24),
            Severity::Warning => TimeDelta::hours(12),
            Severity::Urgent => TimeDelta::hours(4),
            Severity::Critical => TimeDelta::hours(1),
        }
    }

    /// The lowercase name used in files and events.
    pub const fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Urgent => "urgent",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A comparison of an observed quantity with a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
}

impl Op {
    /// Whether `value op limit` holds.
    pub fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Op::Gt => value > limit,
            Op::Ge => value >= limit,
            Op::Lt => value < limit,
            Op::Le => value <= limit,
        }
    }

    /// How far `value` is past `limit` in the alerting direction (≥ 0 when
    /// breaching). The engine uses it to decide whether an open alert got
    /// materially worse, whatever the direction of the rule.
    pub fn badness(self, value: f64, limit: f64) -> f64 {
        match self {
            Op::Gt | Op::Ge => value - limit,
            Op::Lt | Op::Le => limit - value,
        }
    }

    /// True for `>`/`>=`: larger values are worse.
    pub const fn higher_is_worse(self) -> bool {
        matches!(self, Op::Gt | Op::Ge)
    }

    /// The symbol as written in rule files.
    pub const fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// Which reading a `delta` rule measures the change from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Baseline {
    /// The lowest value in the window (weight gain "from the lowest point").
    Min,
    /// The highest value in the window (a fall "from the highest point").
    Max,
    /// The oldest value in the window.
    Earliest,
}

/// The statistic of an `average` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Statistic {
    /// Arithmetic mean.
    Mean,
    /// Median (robust to a single mis-measurement).
    Median,
}

/// Which readings an `average` rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// All readings measured within this duration before the evaluation time.
    Window(RuleDuration),
    /// The last N readings at or before the evaluation time.
    Last(usize),
}

/// How many readings of a threshold rule must breach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// The latest reading alone.
    Latest,
    /// The last N readings all breach.
    Consecutive(usize),
    /// At least M of the last N readings breach.
    MOfN(usize, usize),
}

impl Count {
    /// How many recent readings the rule needs to see.
    pub const fn readings(self) -> usize {
        match self {
            Count::Latest => 1,
            Count::Consecutive(n) | Count::MOfN(_, n) => n,
        }
    }
}

/// One leaf test of a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    /// Name of the leaf: empty for a rule with a single condition, else the
    /// `name` given in the file or the 1-based position (`"1"`, `"2"`). It
    /// prefixes parameter names (`"weight.limit"`) and message placeholders.
    pub name: String,
    /// The test.
    pub kind: LeafKind,
    /// Its parameters' full names ([`param_key`]), made once: evaluation
    /// looks them up for every reading.
    pub(crate) keys: LeafKeys,
}

/// A leaf's `limit` and `baseline` parameter names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LeafKeys {
    pub(crate) limit: String,
    pub(crate) baseline: String,
}

impl Leaf {
    /// Leaf `name` testing `kind`.
    pub fn new(name: impl Into<String>, kind: LeafKind) -> Leaf {
        let name = name.into();
        let keys = LeafKeys {
            limit: param_key(&name, "limit"),
            baseline: param_key(&name, "baseline"),
        };
        Leaf { name, kind, keys }
    }
}

/// The kinds of leaf test.
#[derive(Debug, Clone, PartialEq)]
pub enum LeafKind {
    /// The latest reading(s) compared with a limit.
    Threshold {
        /// metric tested
        metric: Metric,
        /// comparison
        op: Op,
        /// how many readings must breach
        count: Count,
        /// readings older than this before the evaluation time are ignored
        max_age: RuleDuration,
    },
    /// Change of the latest reading against a baseline in a window.
    Delta {
        /// metric tested
        metric: Metric,
        /// comparison of (latest − baseline) with the limit
        op: Op,
        /// look-back window
        window: RuleDuration,
        /// baseline choice (a per-patient `baseline` override replaces it by a fixed value)
        baseline: Baseline,
    },
    /// Mean or median compared with a limit.
    Average {
        /// metric tested
        metric: Metric,
        /// mean or median
        stat: Statistic,
        /// window or last N
        scope: Scope,
        /// comparison
        op: Op,
        /// fewer readings than this (after discarding the first day): no verdict
        min_readings: usize,
        /// readings on fewer days than this (24 h periods counted from the
        /// first reading of the series, after discarding): no verdict
        min_days: usize,
        /// drop the first day of the series (24 h from its first reading),
        /// as home blood-pressure monitoring protocols do
        discard_first_day: bool,
    },
    /// Least-squares slope per day compared with a limit.
    Slope {
        /// metric tested
        metric: Metric,
        /// look-back window
        window: RuleDuration,
        /// comparison of the slope (canonical unit per day)
        op: Op,
        /// fewer readings than this: no verdict
        min_readings: usize,
    },
    /// No reading for a duration. Only at the top of a rule.
    Missing {
        /// metrics watched; empty = any metric
        metrics: Vec<Metric>,
        /// silence that raises the alert
        after: RuleDuration,
    },
}

impl LeafKind {
    /// The metric the leaf tests (none for `missing`).
    pub fn metric(&self) -> Option<Metric> {
        match self {
            LeafKind::Threshold { metric, .. }
            | LeafKind::Delta { metric, .. }
            | LeafKind::Average { metric, .. }
            | LeafKind::Slope { metric, .. } => Some(*metric),
            LeafKind::Missing { .. } => None,
        }
    }

    /// The comparison, for kinds that have one.
    pub fn op(&self) -> Option<Op> {
        match self {
            LeafKind::Threshold { op, .. }
            | LeafKind::Delta { op, .. }
            | LeafKind::Average { op, .. }
            | LeafKind::Slope { op, .. } => Some(*op),
            LeafKind::Missing { .. } => None,
        }
    }

    /// The kind's name as written in files.
    pub const fn kind_name(&self) -> &'static str {
        match self {
            LeafKind::Threshold { .. } => "threshold",
            LeafKind::Delta { .. } => "delta",
            LeafKind::Average { .. } => "average",
            LeafKind::Slope { .. } => "slope",
            LeafKind::Missing { .. } => "missing",
        }
    }
}

/// A condition: a leaf, or a combination evaluated on the same patient at
/// the same evaluation time.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// One test.
    Leaf(Leaf),
    /// Every part breaches.
    All(Vec<Condition>),
    /// At least one part breaches.
    Any(Vec<Condition>),
}

impl Condition {
    /// Every leaf, depth first, in file order.
    pub fn leaves(&self) -> Vec<&Leaf> {
        let mut out = Vec::new();
        fn walk<'a>(c: &'a Condition, out: &mut Vec<&'a Leaf>) {
            match c {
                Condition::Leaf(l) => out.push(l),
                Condition::All(cs) | Condition::Any(cs) => cs.iter().for_each(|c| walk(c, out)),
            }
        }
        walk(self, &mut out);
        out
    }

    /// Whether a new reading of `metric` triggers an evaluation (one of
    /// [`Condition::metrics`]), without collecting them: asked for every
    /// rule of every reading.
    pub fn tests(&self, metric: Metric) -> bool {
        match self {
            Condition::Leaf(l) => l.kind.metric() == Some(metric),
            Condition::All(cs) | Condition::Any(cs) => cs.iter().any(|c| c.tests(metric)),
        }
    }

    /// The metrics whose new readings should trigger an evaluation.
    pub fn metrics(&self) -> Vec<Metric> {
        let mut m: Vec<Metric> = self
            .leaves()
            .iter()
            .filter_map(|l| l.kind.metric())
            .collect();
        m.sort();
        m.dedup();
        m
    }
}

/// A named, per-patient overridable parameter of a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Default value in the canonical unit; `None` for optional parameters
    /// that only an override sets (a `delta` rule's fixed `baseline`, e.g. a
    /// dry weight).
    pub default: Option<f64>,
    /// The metric the parameter is compared with.
    pub metric: Metric,
    /// The unit the rule author wrote (used in messages).
    pub display_unit: Unit,
    /// Whether the value is a difference (change, rate) rather than a level;
    /// decides how temperatures convert.
    pub difference: bool,
}

/// When an open alert resolves.
#[derive(Debug, Clone, PartialEq)]
pub struct ClearPolicy {
    /// Number of consecutive evaluations in which the clear test must hold.
    pub consecutive: u32,
    /// Name of the clear-limit parameter (`clear_limit`) when the rule has a
    /// separate clear threshold; otherwise the clear test is "the firing
    /// condition no longer holds".
    pub limit: Option<String>,
}

/// Flap detection: more than `max_changes` fire/resolve transitions within
/// `window` marks the alert flapping, and it then holds its firing state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlapPolicy {
    /// Allowed state changes in the window.
    pub max_changes: usize,
    /// Sliding window.
    pub window: RuleDuration,
}

impl Default for FlapPolicy {
    fn default() -> Self {
        FlapPolicy {
            max_changes: 4,
            window: RuleDuration::hours(24),
        }
    }
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique id across all packs.
    pub id: String,
    /// Bumped by the author whenever the rule's meaning changes; recorded in
    /// every outcome.
    pub version: u32,
    /// The pack the rule came from.
    pub pack: String,
    /// Severity of the alert.
    pub severity: Severity,
    /// Message template.
    pub message: Template,
    /// Guideline citation.
    pub source: String,
    /// The firing condition.
    pub condition: Condition,
    /// The resolve policy.
    pub clear: ClearPolicy,
    /// Minimum interval between two notifications of one open alert.
    pub renotify: RuleDuration,
    /// Flap detection.
    pub flap: FlapPolicy,
    /// Overridable parameters, by name (`limit`, `clear_limit`,
    /// `weight.limit`, `baseline` ...).
    pub params: BTreeMap<String, Param>,
    /// The parameters resolved without overrides (made by the loader).
    pub(crate) defaults: crate::overrides::Defaults,
}

impl Rule {
    /// Whether this is a missing-data rule (evaluated by
    /// [`crate::engine::Engine::evaluate_missing`], not on readings).
    pub fn is_missing(&self) -> bool {
        matches!(
            &self.condition,
            Condition::Leaf(Leaf {
                kind: LeafKind::Missing { .. },
                ..
            })
        )
    }
}

/// Full parameter name of `param` in leaf `leaf` (`"limit"` or `"weight.limit"`).
pub fn param_key(leaf: &str, param: &str) -> String {
    if leaf.is_empty() {
        param.to_string()
    } else {
        format!("{leaf}.{param}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leaf's parameter names, made once, are the ones the loader gives
    /// its parameters (`param_key`), for a lone leaf and a named one.
    #[test]
    fn a_leaf_names_its_parameters_as_the_loader_does() {
        let rules = crate::RuleSet::bundled().unwrap();
        let mut named = 0;
        for rule in rules.rules() {
            for leaf in rule.condition.leaves() {
                assert_eq!(leaf.keys.limit, param_key(&leaf.name, "limit"));
                assert_eq!(leaf.keys.baseline, param_key(&leaf.name, "baseline"));
                if rule.params.len() > 1 && !leaf.name.is_empty() {
                    named += 1;
                    assert!(leaf.keys.limit.starts_with(&format!("{}.", leaf.name)));
                }
            }
        }
        assert!(named > 0, "the bundled packs have rules of several leaves");
    }

    /// The parameters a rule carries from loading are those an empty
    /// override resolves to (the engine uses them for patients without one).
    #[test]
    fn a_rule_carries_its_parameters_resolved_without_overrides() {
        use crate::overrides::{resolve, RuleOverride};
        let rules = crate::RuleSet::bundled().unwrap();
        for rule in rules.rules() {
            for ov in [None, Some(&RuleOverride::default())] {
                let (values, record, errors) = resolve(rule, ov);
                assert!(errors.is_empty());
                assert_eq!(rule.defaults.values, values, "{}", rule.id);
                assert_eq!(rule.defaults.record, record, "{}", rule.id);
            }
        }
    }
}
