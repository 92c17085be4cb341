//! The rule-file syntax as serde sees it: plain structs with
//! `deny_unknown_fields`, so a misspelt key is an error with its path and
//! line, and `toml::Spanned` wherever a later semantic check needs a line.

use device_profiles::Metric;
use serde::Deserialize;
use toml::Spanned;

use crate::duration::RuleDuration;
use crate::quantity::Quantity;
use crate::rule::{Baseline, Op, Severity, Statistic};

/// One `[[rule]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub id: Spanned<String>,
    pub version: Spanned<u32>,
    pub severity: Severity,
    pub message: Spanned<String>,
    pub source: Spanned<String>,
    #[serde(default)]
    pub renotify: Option<Spanned<RuleDuration>>,
    #[serde(default)]
    pub clear: Option<RawClear>,
    #[serde(default)]
    pub flap: Option<RawFlap>,
    // The condition keys are repeated here rather than flattened: serde's
    // `flatten` buffers the input, which loses spans and `deny_unknown_fields`.
    #[serde(default)]
    pub threshold: Option<RawThreshold>,
    #[serde(default)]
    pub delta: Option<RawDelta>,
    #[serde(default)]
    pub average: Option<RawAverage>,
    #[serde(default)]
    pub slope: Option<RawSlope>,
    #[serde(default)]
    pub all: Option<Vec<Spanned<RawPart>>>,
    #[serde(default)]
    pub any: Option<Vec<Spanned<RawPart>>>,
    #[serde(default)]
    pub missing: Option<RawMissing>,
}

/// The condition keys of a rule or of a part, gathered for compilation.
#[derive(Debug, Default)]
pub(crate) struct RawKinds {
    pub threshold: Option<RawThreshold>,
    pub delta: Option<RawDelta>,
    pub average: Option<RawAverage>,
    pub slope: Option<RawSlope>,
    pub all: Option<Vec<Spanned<RawPart>>>,
    pub any: Option<Vec<Spanned<RawPart>>>,
    pub missing: Option<RawMissing>,
}

/// One part of an `all`/`any` combination.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPart {
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub threshold: Option<RawThreshold>,
    #[serde(default)]
    pub delta: Option<RawDelta>,
    #[serde(default)]
    pub average: Option<RawAverage>,
    #[serde(default)]
    pub slope: Option<RawSlope>,
    #[serde(default)]
    pub all: Option<Vec<Spanned<RawPart>>>,
    #[serde(default)]
    pub any: Option<Vec<Spanned<RawPart>>>,
}

impl RawRule {
    /// Moves the condition keys out.
    pub fn take_kinds(&mut self) -> RawKinds {
        RawKinds {
            threshold: self.threshold.take(),
            delta: self.delta.take(),
            average: self.average.take(),
            slope: self.slope.take(),
            all: self.all.take(),
            any: self.any.take(),
            missing: self.missing.take(),
        }
    }
}

impl RawPart {
    /// Moves the condition keys out (`missing` is not allowed in a part, so
    /// serde has refused it already).
    pub fn into_kinds(self) -> RawKinds {
        RawKinds {
            threshold: self.threshold,
            delta: self.delta,
            average: self.average,
            slope: self.slope,
            all: self.all,
            any: self.any,
            missing: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawThreshold {
    pub metric: Metric,
    pub op: Op,
    pub limit: Spanned<Quantity>,
    #[serde(default)]
    pub consecutive: Option<Spanned<usize>>,
    #[serde(default)]
    pub m_of_n: Option<Spanned<Vec<usize>>>,
    #[serde(default)]
    pub max_age: Option<Spanned<RuleDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDelta {
    pub metric: Metric,
    pub op: Op,
    pub limit: Spanned<Quantity>,
    pub window: Spanned<RuleDuration>,
    pub baseline: Baseline,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAverage {
    pub metric: Metric,
    #[serde(default = "default_stat")]
    pub stat: Statistic,
    #[serde(default)]
    pub window: Option<Spanned<RuleDuration>>,
    #[serde(default)]
    pub last: Option<Spanned<usize>>,
    pub op: Op,
    pub limit: Spanned<Quantity>,
    pub min_readings: Spanned<usize>,
    #[serde(default)]
    pub min_days: Option<Spanned<usize>>,
    #[serde(default)]
    pub discard_first_day: bool,
}

fn default_stat() -> Statistic {
    Statistic::Mean
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSlope {
    pub metric: Metric,
    pub window: Spanned<RuleDuration>,
    pub op: Op,
    /// Per day.
    pub limit: Spanned<Quantity>,
    pub min_readings: Spanned<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMissing {
    #[serde(default)]
    pub metrics: Option<Vec<Metric>>,
    #[serde(rename = "for")]
    pub after: Spanned<RuleDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClear {
    #[serde(default)]
    pub limit: Option<Spanned<Quantity>>,
    #[serde(default)]
    pub consecutive: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFlap {
    pub max_changes: Spanned<usize>,
    pub window: Spanned<RuleDuration>,
}

/// One `[[tier]]` entry of a tier pack (see `tier.rs`). Every condition key
/// given must hold for the tier rule to match.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTier {
    pub id: Spanned<String>,
    pub version: Spanned<u32>,
    pub tier: Spanned<String>,
    pub description: Spanned<String>,
    pub source: Spanned<String>,
    #[serde(default)]
    pub alerts: Option<Spanned<RawTierAlerts>>,
    #[serde(default)]
    pub data_days: Option<Spanned<RawTierDataDays>>,
    #[serde(default)]
    pub tasks: Option<Spanned<RawTierTasks>>,
    #[serde(default)]
    pub enrolled: Option<Spanned<RawTierEnrolled>>,
}

/// `alerts = { ... }`: alerts counted by severity, kind and time.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTierAlerts {
    #[serde(default)]
    pub min_severity: Option<Severity>,
    #[serde(default)]
    pub open: bool,
    #[serde(default)]
    pub within: Option<Spanned<RuleDuration>>,
    #[serde(default)]
    pub kind: Option<Spanned<String>>,
    #[serde(default)]
    pub rules: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub at_least: Option<Spanned<u32>>,
    #[serde(default)]
    pub fewer_than: Option<Spanned<u32>>,
}

/// `data_days = { within = "7d", at_least | fewer_than = N }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTierDataDays {
    pub within: Spanned<RuleDuration>,
    #[serde(default)]
    pub at_least: Option<Spanned<u32>>,
    #[serde(default)]
    pub fewer_than: Option<Spanned<u32>>,
}

/// `tasks = { overdue = true, min_priority = "urgent", at_least = 1 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTierTasks {
    #[serde(default)]
    pub overdue: bool,
    #[serde(default)]
    pub min_priority: Option<Severity>,
    #[serde(default)]
    pub at_least: Option<Spanned<u32>>,
    #[serde(default)]
    pub fewer_than: Option<Spanned<u32>>,
}

/// `enrolled = { for_at_least = "7d" }` or `{ for_less_than = "7d" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTierEnrolled {
    #[serde(default)]
    pub for_at_least: Option<Spanned<RuleDuration>>,
    #[serde(default)]
    pub for_less_than: Option<Spanned<RuleDuration>>,
}
