//! Evaluating a condition at one instant for one patient.
//!
//! Each leaf returns a three-valued status: `Breach`, `Normal`, or
//! `Unknown` (not enough data: fewer readings than the rule needs, or only
//! stale ones). `Unknown` never resolves an alert and never fires one: an
//! absent reading is the business of missing-data rules, not of thresholds.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use device_profiles::Metric;
use serde::{Deserialize, Serialize};

use crate::history::{History, Point};
use crate::model::{Evidence, NewReading};
use crate::quantity::{convert_difference, format_number};
use crate::rule::{
    param_key, Baseline, Condition, Count, Leaf, LeafKind, Op, Rule, Scope, Statistic,
};

/// Most readings cited as evidence by one leaf (an average over a week of
/// glucose sensor data would otherwise cite two thousand).
pub const MAX_EVIDENCE: usize = 20;

/// Outcome of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The condition holds.
    Breach,
    /// The condition does not hold.
    Normal,
    /// Not enough data to say.
    Unknown,
}

/// What one leaf saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeafOutcome {
    /// Leaf name (empty for a single-condition rule).
    pub name: String,
    /// Leaf kind (`threshold`, `delta` …).
    pub kind: String,
    /// Metric tested.
    pub metric: Option<Metric>,
    /// Comparison.
    pub op: Option<Op>,
    /// Observed quantity in the canonical unit (reading, change, mean, rate
    /// per day; hours of silence for missing-data rules).
    pub value: Option<f64>,
    /// Effective limit in the canonical unit.
    pub limit: Option<f64>,
    /// Baseline of a delta leaf.
    pub baseline: Option<f64>,
    /// Readings used.
    pub count: usize,
    /// Status.
    pub status: Status,
    /// Readings cited.
    pub evidence: Vec<Evidence>,
    /// How far past the limit (≥ 0 when breaching), to detect worsening.
    #[serde(skip)]
    pub score: f64,
}

/// Outcome of a whole condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Combined status.
    pub status: Status,
    /// Combined badness (meaningful when breaching).
    pub score: f64,
    /// Every leaf, in rule order.
    pub leaves: Vec<LeafOutcome>,
}

impl Verdict {
    /// Evidence of the breaching leaves (of all leaves when none breaches),
    /// without duplicates.
    pub fn evidence(&self) -> Vec<Evidence> {
        let breaching: Vec<&LeafOutcome> = self
            .leaves
            .iter()
            .filter(|l| l.status == Status::Breach)
            .collect();
        let from: Vec<&LeafOutcome> = if breaching.is_empty() {
            self.leaves.iter().collect()
        } else {
            breaching
        };
        let mut out: Vec<Evidence> = Vec::new();
        for l in from {
            for e in &l.evidence {
                if !out
                    .iter()
                    .any(|o| o.reading_id == e.reading_id && o.metric == e.metric)
                {
                    out.push(e.clone());
                }
            }
        }
        out
    }
}

/// Stored history plus the readings being evaluated, deduplicated by id.
pub(crate) struct View<'a> {
    pub patient: &'a str,
    pub history: &'a dyn History,
    pub fresh: &'a [NewReading],
}

impl View<'_> {
    /// Lends `f` the stored readings of `metric` in `[from, to]` with the
    /// fresh ones merged in. The history's slice is lent as it is when it
    /// already holds every fresh reading in range (the gateway's windows
    /// do: a batch's readings are committed before it is evaluated); only
    /// otherwise are the readings copied to merge them.
    fn with_window<R>(
        &self,
        metric: Metric,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        f: impl FnOnce(&[Point]) -> R,
    ) -> R {
        let ask = |g: &mut dyn FnMut(&[Point])| {
            self.history.with_window(self.patient, metric, from, to, g)
        };
        self.lent(ask, metric, Some(from), to, usize::MAX, f)
    }

    /// Lends `f` the last `n` readings of `metric` measured at or before
    /// `at`, fresh ones merged in (see [`View::with_window`]).
    fn with_last_n<R>(
        &self,
        metric: Metric,
        at: DateTime<Utc>,
        n: usize,
        f: impl FnOnce(&[Point]) -> R,
    ) -> R {
        let ask =
            |g: &mut dyn FnMut(&[Point])| self.history.with_last_n(self.patient, metric, at, n, g);
        self.lent(ask, metric, None, at, n, f)
    }

    /// What `ask` lends, [`View::merged`] into `f`.
    fn lent<R>(
        &self,
        ask: impl FnOnce(&mut dyn FnMut(&[Point])),
        metric: Metric,
        from: Option<DateTime<Utc>>,
        to: DateTime<Utc>,
        n: usize,
        f: impl FnOnce(&[Point]) -> R,
    ) -> R {
        let mut f = Some(f);
        let mut out = None;
        ask(&mut |pts| {
            if let Some(f) = f.take() {
                out = Some(self.merged(metric, pts, from, to, n, f));
            }
        });
        match (out, f) {
            (Some(r), _) => r,
            // A history that never called back lent nothing.
            (None, Some(f)) => self.merged(metric, &[], from, to, n, f),
            (None, None) => unreachable!("a lent window's result is kept"),
        }
    }

    /// `pts` (in time order, ties by reading id) with the fresh readings of
    /// `metric` in `[from, to]` that it lacks, the last `n` of them lent
    /// to `f`.
    fn merged<R>(
        &self,
        metric: Metric,
        pts: &[Point],
        from: Option<DateTime<Utc>>,
        to: DateTime<Utc>,
        n: usize,
        f: impl FnOnce(&[Point]) -> R,
    ) -> R {
        let in_range =
            |r: &&NewReading| r.measured_at <= to && from.is_none_or(|f| r.measured_at >= f);
        // A reading is found where its time and id sort; the scan by id
        // only runs for one that is not there (a history without it).
        let held = |r: &NewReading| {
            pts.binary_search_by(|p| {
                p.measured_at
                    .cmp(&r.measured_at)
                    .then_with(|| p.reading_id.cmp_str(&r.id))
            })
            .is_ok()
                || pts.iter().any(|p| p.reading_id == *r.id)
        };
        let missing = |r: &&NewReading| r.metric == metric && in_range(r) && !held(r);
        if !self.fresh.iter().any(|r| missing(&r)) {
            return f(&pts[pts.len().saturating_sub(n)..]);
        }
        let mut all = pts.to_vec();
        for r in self.fresh.iter().filter(missing) {
            // Two fresh readings with one id are one reading.
            if !all.iter().any(|p| p.reading_id == *r.id) {
                all.push(Point {
                    reading_id: r.id.as_str().into(),
                    measured_at: r.measured_at,
                    value: r.value,
                });
            }
        }
        all.sort_by(|a, b| (a.measured_at, &a.reading_id).cmp(&(b.measured_at, &b.reading_id)));
        f(&all[all.len().saturating_sub(n)..])
    }
}

/// Inputs shared by every leaf of one evaluation.
pub(crate) struct Eval<'a> {
    pub view: View<'a>,
    pub at: DateTime<Utc>,
    /// Effective parameters in canonical units.
    pub limits: &'a BTreeMap<String, f64>,
    /// Clear test: compare the latest reading with `clear_limit` instead of
    /// the firing limit and count.
    pub clear_mode: bool,
}

pub(crate) fn evaluate(rule: &Rule, e: &Eval) -> Verdict {
    let mut leaves = Vec::new();
    let (status, score) = eval_condition(&rule.condition, e, &mut leaves);
    Verdict {
        status,
        score,
        leaves,
    }
}

fn eval_condition(c: &Condition, e: &Eval, out: &mut Vec<LeafOutcome>) -> (Status, f64) {
    match c {
        Condition::Leaf(l) => {
            let o = eval_leaf(l, e);
            let r = (o.status, o.score);
            out.push(o);
            r
        }
        Condition::All(parts) => {
            let rs: Vec<(Status, f64)> = parts.iter().map(|p| eval_condition(p, e, out)).collect();
            let status = if rs.iter().all(|r| r.0 == Status::Breach) {
                Status::Breach
            } else if rs.iter().any(|r| r.0 == Status::Normal) {
                Status::Normal
            } else {
                Status::Unknown
            };
            (status, rs.iter().map(|r| r.1).fold(f64::INFINITY, f64::min))
        }
        Condition::Any(parts) => {
            let rs: Vec<(Status, f64)> = parts.iter().map(|p| eval_condition(p, e, out)).collect();
            // A part without data does not keep an `any` alert open when the
            // parts that have data are normal.
            let status = if rs.iter().any(|r| r.0 == Status::Breach) {
                Status::Breach
            } else if rs.iter().any(|r| r.0 == Status::Normal) {
                Status::Normal
            } else {
                Status::Unknown
            };
            let score = rs
                .iter()
                .filter(|r| r.0 == Status::Breach)
                .map(|r| r.1)
                .fold(f64::NEG_INFINITY, f64::max);
            (status, score)
        }
    }
}

/// The newest [`MAX_EVIDENCE`] of `pts`, cited.
fn evidence<P: Borrow<Point>>(metric: Metric, pts: &[P]) -> Vec<Evidence> {
    pts[pts.len().saturating_sub(MAX_EVIDENCE)..]
        .iter()
        .map(|p| {
            let p = p.borrow();
            Evidence {
                reading_id: p.reading_id.clone(),
                metric,
                value: p.value,
                measured_at: p.measured_at,
            }
        })
        .collect()
}

/// A day in milliseconds.
const DAY_MS: i64 = 86_400_000;

fn eval_leaf(leaf: &Leaf, e: &Eval) -> LeafOutcome {
    let limit = e
        .clear_mode
        .then(|| e.limits.get("clear_limit").copied())
        .flatten()
        .or_else(|| e.limits.get(&leaf.keys.limit).copied());
    let mut o = LeafOutcome {
        name: leaf.name.clone(),
        kind: leaf.kind.kind_name().to_string(),
        metric: leaf.kind.metric(),
        op: leaf.kind.op(),
        value: None,
        limit,
        baseline: None,
        count: 0,
        status: Status::Unknown,
        evidence: Vec::new(),
        score: f64::NEG_INFINITY,
    };
    let Some(limit) = limit else { return o };
    match &leaf.kind {
        LeafKind::Threshold {
            metric,
            op,
            count,
            max_age,
        } => {
            let count = if e.clear_mode { Count::Latest } else { *count };
            let oldest = e.at - max_age.delta();
            e.view.with_last_n(*metric, e.at, count.readings(), |pts| {
                threshold(&mut o, pts, *metric, *op, count, oldest, limit);
            });
        }
        LeafKind::Delta {
            metric,
            op,
            window,
            baseline,
        } => {
            let fixed = e.limits.get(&leaf.keys.baseline).copied();
            e.view
                .with_window(*metric, e.at - window.delta(), e.at, |pts| {
                    delta(&mut o, pts, *metric, *op, fixed, *baseline, limit);
                });
        }
        LeafKind::Average {
            metric,
            stat,
            scope,
            op,
            min_readings,
            min_days,
            discard_first_day,
        } => {
            let average = |pts: &[Point]| {
                let spec = AverageSpec {
                    stat: *stat,
                    min_readings: *min_readings,
                    min_days: *min_days,
                    discard_first_day: *discard_first_day,
                };
                average(&mut o, pts, *metric, *op, &spec, limit);
            };
            match scope {
                Scope::Window(w) => e.view.with_window(*metric, e.at - w.delta(), e.at, average),
                Scope::Last(n) => e.view.with_last_n(*metric, e.at, *n, average),
            }
        }
        LeafKind::Slope {
            metric,
            window,
            op,
            min_readings,
        } => {
            e.view
                .with_window(*metric, e.at - window.delta(), e.at, |pts| {
                    o.count = pts.len();
                    o.evidence = evidence(*metric, pts);
                    if pts.len() < *min_readings {
                        return;
                    }
                    let Some(rate) = slope_per_day(pts) else {
                        return;
                    };
                    o.value = Some(rate);
                    o.status = status_of(op.holds(rate, limit));
                    o.score = op.badness(rate, limit);
                });
        }
        LeafKind::Missing { .. } => {}
    }
    o
}

/// A threshold leaf over the last readings `pts` (newest last).
fn threshold(
    o: &mut LeafOutcome,
    pts: &[Point],
    metric: Metric,
    op: Op,
    count: Count,
    oldest: DateTime<Utc>,
    limit: f64,
) {
    let Some(newest) = pts.last() else { return };
    o.count = pts.len();
    o.value = Some(newest.value);
    if newest.measured_at < oldest {
        o.evidence = evidence(metric, std::slice::from_ref(newest));
        return;
    }
    let breaching: Vec<&Point> = pts.iter().filter(|p| op.holds(p.value, limit)).collect();
    let n = count.readings();
    o.status = match count {
        Count::Latest => status_of(op.holds(newest.value, limit)),
        Count::Consecutive(_) if breaching.len() == n => Status::Breach,
        Count::Consecutive(_) if pts.len() < n && breaching.len() == pts.len() => Status::Unknown,
        Count::Consecutive(_) => Status::Normal,
        Count::MOfN(m, _) if breaching.len() >= m => Status::Breach,
        Count::MOfN(m, _) if breaching.len() + (n - pts.len()) >= m => Status::Unknown,
        Count::MOfN(..) => Status::Normal,
    };
    o.score = breaching
        .iter()
        .map(|p| op.badness(p.value, limit))
        .fold(f64::NEG_INFINITY, f64::max);
    if o.status != Status::Breach {
        o.score = op.badness(newest.value, limit);
    }
    o.evidence = if breaching.is_empty() || o.status != Status::Breach {
        evidence(metric, std::slice::from_ref(newest))
    } else {
        evidence(metric, &breaching)
    };
}

/// A delta leaf over the window `pts` (the newest is the current reading).
fn delta(
    o: &mut LeafOutcome,
    pts: &[Point],
    metric: Metric,
    op: Op,
    fixed: Option<f64>,
    baseline: Baseline,
    limit: f64,
) {
    let Some((current, earlier)) = pts.split_last() else {
        return;
    };
    o.count = pts.len();
    let base: Option<(f64, Option<&Point>)> = match fixed {
        Some(b) => Some((b, None)),
        None => match baseline {
            Baseline::Min => earlier.iter().min_by(|a, b| a.value.total_cmp(&b.value)),
            Baseline::Max => earlier.iter().max_by(|a, b| a.value.total_cmp(&b.value)),
            Baseline::Earliest => earlier.first(),
        }
        .map(|p| (p.value, Some(p))),
    };
    let Some((base, base_point)) = base else {
        o.evidence = evidence(metric, std::slice::from_ref(current));
        return;
    };
    let change = current.value - base;
    o.value = Some(change);
    o.baseline = Some(base);
    o.status = status_of(op.holds(change, limit));
    o.score = op.badness(change, limit);
    let mut cited: Vec<&Point> = base_point.into_iter().collect();
    cited.push(current);
    o.evidence = evidence(metric, &cited);
}

/// What an average leaf asks of its readings.
struct AverageSpec {
    stat: Statistic,
    min_readings: usize,
    min_days: usize,
    discard_first_day: bool,
}

/// An average leaf over `pts` (in time order).
fn average(
    o: &mut LeafOutcome,
    pts: &[Point],
    metric: Metric,
    op: Op,
    spec: &AverageSpec,
    limit: f64,
) {
    // Days are 24 h periods from the series' first reading: the store has
    // no patient time zone, and a patient measures at about the same times
    // each day. The points are in time order, so a day's points are
    // adjacent and the first day a prefix.
    let first = pts.first().map_or(0, |p| p.measured_at.timestamp_millis());
    let day = |p: &Point| (p.measured_at.timestamp_millis() - first) / DAY_MS;
    let pts = if spec.discard_first_day {
        &pts[pts.partition_point(|p| day(p) == 0)..]
    } else {
        pts
    };
    let mut days = 0;
    let mut last_day = None;
    for d in pts.iter().map(day) {
        if last_day != Some(d) {
            days += 1;
            last_day = Some(d);
        }
    }
    o.count = pts.len();
    o.evidence = evidence(metric, pts);
    if pts.len() < spec.min_readings || pts.is_empty() || days < spec.min_days {
        return;
    }
    let v = match spec.stat {
        Statistic::Mean => pts.iter().map(|p| p.value).sum::<f64>() / pts.len() as f64,
        Statistic::Median => {
            let mut values: Vec<f64> = pts.iter().map(|p| p.value).collect();
            values.sort_by(f64::total_cmp);
            let mid = values.len() / 2;
            if values.len().is_multiple_of(2) {
                (values[mid - 1] + values[mid]) / 2.0
            } else {
                values[mid]
            }
        }
    };
    o.value = Some(v);
    o.status = status_of(op.holds(v, limit));
    o.score = op.badness(v, limit);
}

fn status_of(breach: bool) -> Status {
    if breach {
        Status::Breach
    } else {
        Status::Normal
    }
}

/// Ordinary least-squares slope, in value units per day. `None` when all
/// readings share one instant.
pub fn slope_per_day(pts: &[Point]) -> Option<f64> {
    let first = pts.first()?.measured_at;
    let xs: Vec<f64> = pts
        .iter()
        .map(|p| (p.measured_at - first).num_milliseconds() as f64 / 86_400_000.0)
        .collect();
    let n = pts.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = pts.iter().map(|p| p.value).sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx <= f64::EPSILON {
        return None;
    }
    let sxy: f64 = xs
        .iter()
        .zip(pts)
        .map(|(x, p)| (x - mx) * (p.value - my))
        .sum();
    Some(sxy / sxx)
}

/// Placeholder values for a message: per leaf (`weight.value`) and, for
/// the primary leaf, unqualified (`value`).
pub(crate) fn placeholders(rule: &Rule, v: &Verdict) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let primary = v
        .leaves
        .iter()
        .position(|l| l.status == Status::Breach)
        .unwrap_or(0);
    let mut details = Vec::new();
    for (i, l) in v.leaves.iter().enumerate() {
        let fields = leaf_fields(rule, l);
        details.push(detail(l, &fields));
        for (k, val) in &fields {
            if !l.name.is_empty() {
                out.insert(format!("{}.{k}", l.name), val.clone());
            }
            if i == primary {
                out.insert((*k).to_string(), val.clone());
            }
        }
    }
    out.insert("details".to_string(), details.join("; "));
    out.insert("severity".to_string(), rule.severity.to_string());
    out.insert("rule".to_string(), rule.id.clone());
    out
}

fn leaf_fields(rule: &Rule, l: &LeafOutcome) -> Vec<(&'static str, String)> {
    let leaf = rule
        .condition
        .leaves()
        .into_iter()
        .find(|x| x.name == l.name);
    let mut f = Vec::new();
    if let Some(m) = l.metric {
        f.push(("metric", m.name().to_string()));
    }
    if let Some(op) = l.op {
        f.push(("op", op.symbol().to_string()));
    }
    f.push(("count", l.count.to_string()));
    let param = rule.params.get(&param_key(&l.name, "limit"));
    if let (Some(p), Some(m)) = (param, l.metric) {
        let canonical = m.canonical_unit();
        let unit = p.display_unit;
        let show = |v: f64, diff: bool| {
            let c = if diff {
                convert_difference(v, canonical, unit)
            } else {
                canonical.convert(v, unit)
            };
            format_number(c.unwrap_or(v))
        };
        f.push(("unit", crate::quantity::unit_symbol(unit).to_string()));
        if let Some(v) = l.value {
            let s = show(v, p.difference);
            f.push((
                "value",
                if p.difference && v > 0.0 {
                    format!("+{s}")
                } else {
                    s
                },
            ));
        }
        if let Some(v) = l.limit {
            f.push(("limit", show(v, p.difference)));
        }
        if let Some(b) = l.baseline {
            f.push(("baseline", show(b, false)));
        }
    }
    if let Some(leaf) = leaf {
        let w = match &leaf.kind {
            LeafKind::Delta { window, .. } | LeafKind::Slope { window, .. } => {
                Some(window.to_string())
            }
            LeafKind::Average {
                scope: Scope::Window(w),
                ..
            } => Some(w.to_string()),
            LeafKind::Average {
                scope: Scope::Last(n),
                ..
            } => Some(format!("last {n}")),
            LeafKind::Missing { after, .. } => Some(after.to_string()),
            LeafKind::Threshold { .. } => None,
        };
        if let Some(w) = w {
            f.push(("window", w));
        }
        if let LeafKind::Missing { .. } = &leaf.kind {
            if let Some(h) = l.value {
                f.push((
                    "value",
                    crate::duration::humanize(TimeDelta::minutes((h * 60.0).round() as i64)),
                ));
            }
            if let Some(h) = l.limit {
                f.push((
                    "limit",
                    crate::duration::humanize(TimeDelta::minutes((h * 60.0).round() as i64)),
                ));
            }
        }
    }
    f
}

fn detail(l: &LeafOutcome, fields: &[(&'static str, String)]) -> String {
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.as_str())
    };
    let what = match l.kind.as_str() {
        "delta" => "change",
        "average" => "average",
        "slope" => "rate/day",
        "missing" => "silence",
        _ => "",
    };
    let mut s = String::new();
    if let Some(m) = get("metric") {
        s.push_str(m);
    }
    if !what.is_empty() {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(what);
    }
    match (get("value"), l.status) {
        (Some(v), _) => {
            s.push(' ');
            s.push_str(v);
            if let Some(u) = get("unit") {
                s.push(' ');
                s.push_str(u);
            }
        }
        (None, _) => s.push_str(" (no data)"),
    }
    if l.status == Status::Breach {
        if let (Some(op), Some(lim)) = (get("op"), get("limit")) {
            s.push_str(&format!(" {op} {lim}"));
            if let Some(u) = get("unit") {
                s.push(' ');
                s.push_str(u);
            }
        }
        if let Some(w) = get("window") {
            s.push_str(&format!(" ({w})"));
        }
    } else if l.status == Status::Normal {
        s.push_str(" (ok)");
    }
    s
}
