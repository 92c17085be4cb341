//! The caller's view of stored readings, and an in-memory implementation.
//!
//! The engine asks only for bounded slices — a window of at most
//! [`crate::load::MAX_WINDOW`] or the last N readings with N at most
//! [`crate::load::MAX_LAST`] — so the cost of evaluating a reading does not
//! grow with the length of a patient's record. The gateway implements
//! [`History`] over its SQLite store with an index on
//! `(patient, metric, measured_at)`, and in front of it keeps each series'
//! recent readings in memory as far back as the rule set reaches
//! ([`Needs`]).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use device_profiles::Metric;
use serde::{Deserialize, Serialize};

use crate::reading_id::ReadingId;
use crate::rule::{LeafKind, Scope};
use crate::ruleset::RuleSet;

/// One stored reading of one metric, in the metric's canonical unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The reading's stable id (cited as evidence), held compactly.
    pub reading_id: ReadingId,
    /// When it was measured (UTC).
    pub measured_at: DateTime<Utc>,
    /// Value in the metric's canonical unit.
    pub value: f64,
}

/// Read access to a patient's stored readings.
///
/// All lists are ordered oldest first by `measured_at` (ties by reading id).
/// The readings being evaluated may or may not be stored yet: the engine
/// merges them in and removes duplicates by reading id, so the gateway can
/// insert and evaluate in one transaction in either order.
pub trait History {
    /// Readings of `metric` measured in `[from, to]` (inclusive).
    fn window(
        &self,
        patient: &str,
        metric: Metric,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<Point>;
    /// The last `n` readings of `metric` measured at or before `at`.
    fn last_n(&self, patient: &str, metric: Metric, at: DateTime<Utc>, n: usize) -> Vec<Point>;
    /// When the newest reading of `metric` (of any metric when `None`) was
    /// measured.
    fn last_seen(&self, patient: &str, metric: Option<Metric>) -> Option<DateTime<Utc>>;

    /// [`History::window`], lent to `f` instead of returned: a history that
    /// holds the readings (the gateway's windows) answers without copying
    /// them, once per rule and reading evaluated. `f` is called exactly
    /// once and must not call back into the history.
    fn with_window(
        &self,
        patient: &str,
        metric: Metric,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        f: &mut dyn FnMut(&[Point]),
    ) {
        f(&self.window(patient, metric, from, to));
    }

    /// [`History::last_n`], lent to `f` as [`History::with_window`] lends.
    fn with_last_n(
        &self,
        patient: &str,
        metric: Metric,
        at: DateTime<Utc>,
        n: usize,
        f: &mut dyn FnMut(&[Point]),
    ) {
        f(&self.last_n(patient, metric, at, n));
    }
}

/// How far back a rule set looks, per metric: the longest window any of its
/// leaves asks for and the most readings any asks for by count.
///
/// A cache of recent readings that keeps, per series, the readings measured
/// within `window` before the newest and at least the last `last` ones,
/// answers every query the engine makes for a reading measured no earlier
/// than the newest one; older (late) readings reach further back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// Longest look-back window (zero when only counts are asked).
    pub window: TimeDelta,
    /// Most readings asked for by count (at least 1: `last_seen`).
    pub last: usize,
}

impl Default for Reach {
    fn default() -> Self {
        Reach {
            window: TimeDelta::zero(),
            last: 1,
        }
    }
}

/// The [`Reach`] of a rule set per metric; metrics no rule tests get the
/// default (the newest reading only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    by_metric: BTreeMap<Metric, Reach>,
}

impl Needs {
    /// What the rules of `rules` ask of a history.
    pub fn of(rules: &RuleSet) -> Needs {
        let mut by_metric: BTreeMap<Metric, Reach> = BTreeMap::new();
        for rule in rules.rules() {
            for leaf in rule.condition.leaves() {
                let (metric, window, last) = match &leaf.kind {
                    LeafKind::Threshold { metric, count, .. } => {
                        (*metric, TimeDelta::zero(), count.readings())
                    }
                    LeafKind::Delta { metric, window, .. }
                    | LeafKind::Slope { metric, window, .. } => (*metric, window.delta(), 1),
                    LeafKind::Average { metric, scope, .. } => match scope {
                        Scope::Window(w) => (*metric, w.delta(), 1),
                        Scope::Last(n) => (*metric, TimeDelta::zero(), *n),
                    },
                    LeafKind::Missing { .. } => continue,
                };
                let r = by_metric.entry(metric).or_default();
                r.window = r.window.max(window);
                r.last = r.last.max(last);
            }
        }
        Needs { by_metric }
    }

    /// The reach of `metric`'s series.
    pub fn reach(&self, metric: Metric) -> Reach {
        self.by_metric.get(&metric).copied().unwrap_or_default()
    }
}

/// Readings in memory, for tests and the offline replay tool.
#[derive(Debug, Clone, Default)]
pub struct MemoryHistory {
    series: BTreeMap<(String, Metric), Vec<Point>>,
}

impl MemoryHistory {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a reading, keeping the series ordered; a reading id already
    /// stored for the series is ignored (idempotent ingest).
    pub fn insert(&mut self, patient: &str, metric: Metric, point: Point) {
        let series = self
            .series
            .entry((patient.to_string(), metric))
            .or_default();
        if series.iter().any(|p| p.reading_id == point.reading_id) {
            return;
        }
        let key = (point.measured_at, &point.reading_id);
        let pos = series.partition_point(|p| (p.measured_at, &p.reading_id) <= key);
        series.insert(pos, point);
    }

    fn series(&self, patient: &str, metric: Metric) -> &[Point] {
        self.series
            .get(&(patient.to_string(), metric))
            .map_or(&[], Vec::as_slice)
    }
}

impl MemoryHistory {
    fn window_of(
        &self,
        patient: &str,
        metric: Metric,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> &[Point] {
        let s = self.series(patient, metric);
        let start = s.partition_point(|p| p.measured_at < from);
        let end = s.partition_point(|p| p.measured_at <= to);
        s.get(start..end.max(start)).unwrap_or(&[])
    }

    fn last_n_of(&self, patient: &str, metric: Metric, at: DateTime<Utc>, n: usize) -> &[Point] {
        let s = self.series(patient, metric);
        let end = s.partition_point(|p| p.measured_at <= at);
        s.get(end.saturating_sub(n)..end).unwrap_or(&[])
    }
}

impl History for MemoryHistory {
    fn window(
        &self,
        patient: &str,
        metric: Metric,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<Point> {
        self.window_of(patient, metric, from, to).to_vec()
    }

    fn last_n(&self, patient: &str, metric: Metric, at: DateTime<Utc>, n: usize) -> Vec<Point> {
        self.last_n_of(patient, metric, at, n).to_vec()
    }

    fn with_window(
        &self,
        patient: &str,
        metric: Metric,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        f: &mut dyn FnMut(&[Point]),
    ) {
        f(self.window_of(patient, metric, from, to));
    }

    fn with_last_n(
        &self,
        patient: &str,
        metric: Metric,
        at: DateTime<Utc>,
        n: usize,
        f: &mut dyn FnMut(&[Point]),
    ) {
        f(self.last_n_of(patient, metric, at, n));
    }

    fn last_seen(&self, patient: &str, metric: Option<Metric>) -> Option<DateTime<Utc>> {
        match metric {
            Some(m) => self.series(patient, m).last().map(|p| p.measured_at),
            None => self
                .series
                .iter()
                .filter(|((p, _), _)| p == patient)
                .filter_map(|(_, s)| s.last().map(|p| p.measured_at))
                .max(),
        }
    }
}
