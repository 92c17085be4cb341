//! Risk tiers: which patients need attention first, and why.
//!
//! A care team with hundreds of patients cannot read every alert; it needs
//! each patient placed in one of four tiers — `high`, `rising`, `stable`,
//! `unknown` — by rules it can read and change, with the facts behind the
//! placement. Tier rules live in rule packs (`[[tier]]` entries, versioned
//! like alert rules) and look only at facts the gateway already keeps:
//! recent alerts (by severity, by rule, trend rules, missing-data rules),
//! days with data, open follow-up tasks and enrolment. The evaluation here
//! is a pure function of those facts ([`TierSet::evaluate`]): the tiers
//! are tried high, then rising, then stable (file order within a tier), the
//! first rule whose every condition holds wins, and a patient no rule
//! places is `unknown` — there is not enough data to say "stable".
//!
//! Format, with errors at file, line and field like the alert rules:
//!
//! ```toml
//! pack = "risk-tiers"
//! version = 1
//! trend_rules = ["hf.weight-gain-7d"]      # alerts of these rules are "trend" alerts
//!
//! [[tier]]
//! id = "tier.high.critical-alert"
//! version = 1
//! tier = "high"                           # high | rising | stable
//! description = "A critical alert in the last 7 days"
//! source = "Program default"
//! alerts = { min_severity = "critical", within = "7d", at_least = 1 }
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::duration::RuleDuration;
use crate::load::Ctx;
use crate::raw::{RawTier, RawTierAlerts, RawTierDataDays, RawTierEnrolled, RawTierTasks};
use crate::rule::Severity;

/// Longest look-back of a tier condition (as for alert rules).
pub const MAX_TIER_WINDOW: RuleDuration = RuleDuration::days(90);
/// Largest count a tier condition may compare with.
pub const MAX_TIER_COUNT: u32 = 1000;

/// A patient's risk tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Needs attention now.
    High,
    /// Getting worse or slipping out of monitoring.
    Rising,
    /// Monitored, nothing pressing.
    Stable,
    /// Not enough data to say.
    Unknown,
}

impl Tier {
    /// The name used in files, the store and events.
    pub const fn name(self) -> &'static str {
        match self {
            Tier::High => "high",
            Tier::Rising => "rising",
            Tier::Stable => "stable",
            Tier::Unknown => "unknown",
        }
    }

    /// The tier named `s`.
    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "high" => Some(Tier::High),
            "rising" => Some(Tier::Rising),
            "stable" => Some(Tier::Stable),
            "unknown" => Some(Tier::Unknown),
            _ => None,
        }
    }

    /// Order of evaluation and of attention: high first.
    pub const fn rank(self) -> u8 {
        match self {
            Tier::High => 0,
            Tier::Rising => 1,
            Tier::Stable => 2,
            Tier::Unknown => 3,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A count compared with a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountTest {
    /// `at_least = N`.
    AtLeast(u32),
    /// `fewer_than = N`.
    FewerThan(u32),
}

impl CountTest {
    /// Whether `n` passes.
    pub fn holds(self, n: u32) -> bool {
        match self {
            CountTest::AtLeast(k) => n >= k,
            CountTest::FewerThan(k) => n < k,
        }
    }

    fn text(self) -> String {
        match self {
            CountTest::AtLeast(k) => format!("at least {k}"),
            CountTest::FewerThan(k) => format!("fewer than {k}"),
        }
    }
}

/// Which alerts an `alerts` condition counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertKind {
    /// Every alert.
    Any,
    /// Alerts of the pack's `trend_rules`.
    Trend,
    /// Alerts of missing-data rules.
    MissingData,
    /// Alerts of these rules.
    Rules(Vec<String>),
}

/// One condition of a tier rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TierCondition {
    /// Alerts of at least `min_severity`, of `kind`, open now (`open`)
    /// and/or fired within `within`.
    Alerts {
        /// lowest severity counted
        min_severity: Severity,
        /// only alerts not resolved
        open: bool,
        /// only alerts fired this recently
        within: Option<RuleDuration>,
        /// which rules' alerts
        kind: AlertKind,
        /// the comparison
        count: CountTest,
    },
    /// Local days with at least one reading among the last `days` (today
    /// included).
    DataDays {
        /// window in whole days
        days: u32,
        /// the comparison
        count: CountTest,
    },
    /// Follow-up tasks not done.
    Tasks {
        /// only overdue ones
        overdue: bool,
        /// lowest priority counted
        min_priority: Severity,
        /// the comparison
        count: CountTest,
    },
    /// Time since enrolment.
    Enrolled {
        /// enrolled at least this long ago (`Some`) ...
        at_least: Option<RuleDuration>,
        /// ... and less than this long ago (`Some`)
        less_than: Option<RuleDuration>,
    },
}

/// A compiled `[[tier]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierRule {
    /// Unique id.
    pub id: String,
    /// Bumped when the meaning changes; stored with every tier it gives.
    pub version: u32,
    /// Pack it came from.
    pub pack: String,
    /// The tier it gives.
    pub tier: Tier,
    /// What it means, for people.
    pub description: String,
    /// Where its thresholds come from.
    pub source: String,
    /// Every one must hold.
    pub conditions: Vec<TierCondition>,
}

/// An alert as a tier rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertFact {
    /// Alert id.
    pub alert_id: String,
    /// Rule that fired it.
    pub rule_id: String,
    /// Its severity.
    pub severity: Severity,
    /// Not resolved.
    pub open: bool,
    /// When it fired.
    pub fired_at: DateTime<Utc>,
    /// Its rule is a missing-data rule.
    pub missing_data: bool,
}

/// A follow-up task not done, as a tier rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFact {
    /// Task id.
    pub task_id: String,
    /// Its priority (the most severe alert it follows up).
    pub priority: Severity,
    /// A deadline was missed.
    pub overdue: bool,
}

/// Everything a tier rule may look at, for one patient at one time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierFacts {
    /// Evaluation time.
    pub now: DateTime<Utc>,
    /// Enrolment, when the patient is enrolled.
    pub enrolled_at: Option<DateTime<Utc>>,
    /// Alerts open now or fired within [`TierSet::lookback`].
    pub alerts: Vec<AlertFact>,
    /// Tasks not done.
    pub tasks: Vec<TaskFact>,
    /// Local days with data, as days before today (0 = today), within the look-back.
    pub data_days_ago: BTreeSet<u32>,
}

/// A tier rule, as recorded with the tier it gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierRuleRef {
    /// Rule id.
    pub id: String,
    /// Rule version.
    pub version: u32,
    /// Pack.
    pub pack: String,
}

/// One fact behind a tier: which condition, what was found, which alerts
/// and tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierReason {
    /// `alerts`, `data_days`, `tasks`, `enrolled`, or `none` (no rule matched).
    pub condition: String,
    /// For people: "2 alerts of severity urgent or above fired within 7d (at least 2)".
    pub text: String,
    /// The count compared (alerts, days, tasks; days enrolled).
    pub count: u32,
    /// The alerts counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alert_ids: Vec<String>,
    /// The tasks counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_ids: Vec<String>,
}

/// A patient's tier with its reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierOutcome {
    /// The tier.
    pub tier: Tier,
    /// The rule that gave it (`None`: `unknown`, no rule matched).
    pub rule: Option<TierRuleRef>,
    /// The facts.
    pub reasons: Vec<TierReason>,
}

/// The tier rules of a rule set, in evaluation order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TierSet {
    rules: Vec<TierRule>,
    trend_rules: BTreeSet<String>,
}

impl TierSet {
    /// From rules in file order and the trend rule ids.
    pub fn new(mut rules: Vec<TierRule>, trend_rules: BTreeSet<String>) -> TierSet {
        // Stable sort: file order within a tier.
        rules.sort_by_key(|r| r.tier.rank());
        TierSet { rules, trend_rules }
    }

    /// The rules, high first.
    pub fn rules(&self) -> &[TierRule] {
        &self.rules
    }

    /// No tier rule loaded.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether alerts of `rule_id` count as trend alerts.
    pub fn is_trend(&self, rule_id: &str) -> bool {
        self.trend_rules.contains(rule_id)
    }

    /// The trend rule ids.
    pub fn trend_rules(&self) -> &BTreeSet<String> {
        &self.trend_rules
    }

    /// How far back facts must reach (the longest window of any condition;
    /// at least one day).
    pub fn lookback(&self) -> TimeDelta {
        let mut d = TimeDelta::days(1);
        for r in &self.rules {
            for c in &r.conditions {
                let w = match c {
                    TierCondition::Alerts {
                        within: Some(w), ..
                    } => w.delta(),
                    TierCondition::DataDays { days, .. } => TimeDelta::days(i64::from(*days)),
                    _ => TimeDelta::zero(),
                };
                d = d.max(w);
            }
        }
        d
    }

    /// The tier of a patient with `facts`: the first rule (high, rising,
    /// stable) whose every condition holds, or `unknown`.
    pub fn evaluate(&self, facts: &TierFacts) -> TierOutcome {
        for rule in &self.rules {
            let mut reasons = Vec::with_capacity(rule.conditions.len());
            let all = rule.conditions.iter().all(|c| match self.check(c, facts) {
                (true, reason) => {
                    reasons.push(reason);
                    true
                }
                (false, _) => false,
            });
            if all {
                return TierOutcome {
                    tier: rule.tier,
                    rule: Some(TierRuleRef {
                        id: rule.id.clone(),
                        version: rule.version,
                        pack: rule.pack.clone(),
                    }),
                    reasons,
                };
            }
        }
        let days14 = facts.data_days_ago.iter().filter(|d| **d < 14).count() as u32;
        TierOutcome {
            tier: Tier::Unknown,
            rule: None,
            reasons: vec![TierReason {
                condition: "none".into(),
                text: format!(
                    "no tier rule matched: not enough data to place the patient ({days14} day(s) with data in the last 14)"
                ),
                count: days14,
                alert_ids: Vec::new(),
                task_ids: Vec::new(),
            }],
        }
    }

    /// Whether `c` holds for `facts`, and the fact found.
    fn check(&self, c: &TierCondition, f: &TierFacts) -> (bool, TierReason) {
        match c {
            TierCondition::Alerts {
                min_severity,
                open,
                within,
                kind,
                count,
            } => {
                let since = within.map(|w| f.now - w.delta());
                let ids: Vec<String> = f
                    .alerts
                    .iter()
                    .filter(|a| a.severity >= *min_severity)
                    .filter(|a| !*open || a.open)
                    .filter(|a| since.is_none_or(|s| a.fired_at > s))
                    .filter(|a| match kind {
                        AlertKind::Any => true,
                        AlertKind::Trend => self.trend_rules.contains(&a.rule_id),
                        AlertKind::MissingData => a.missing_data,
                        AlertKind::Rules(r) => r.contains(&a.rule_id),
                    })
                    .map(|a| a.alert_id.clone())
                    .collect();
                let n = ids.len() as u32;
                let what = match kind {
                    AlertKind::Any => "alert(s)".to_string(),
                    AlertKind::Trend => "trend alert(s)".to_string(),
                    AlertKind::MissingData => "missing-data alert(s)".to_string(),
                    AlertKind::Rules(r) => format!("alert(s) of {}", r.join(", ")),
                };
                let mut when = Vec::new();
                if *open {
                    when.push("open".to_string());
                }
                if let Some(w) = within {
                    when.push(format!("fired within {w}"));
                }
                let text = format!(
                    "{n} {what} of severity {min_severity} or above, {} ({})",
                    when.join(" and "),
                    count.text()
                );
                (
                    count.holds(n),
                    TierReason {
                        condition: "alerts".into(),
                        text,
                        count: n,
                        alert_ids: ids,
                        task_ids: Vec::new(),
                    },
                )
            }
            TierCondition::DataDays { days, count } => {
                let n = f.data_days_ago.iter().filter(|d| **d < *days).count() as u32;
                (
                    count.holds(n),
                    TierReason {
                        condition: "data_days".into(),
                        text: format!("{n} day(s) with data in the last {days} ({})", count.text()),
                        count: n,
                        alert_ids: Vec::new(),
                        task_ids: Vec::new(),
                    },
                )
            }
            TierCondition::Tasks {
                overdue,
                min_priority,
                count,
            } => {
                let ids: Vec<String> = f
                    .tasks
                    .iter()
                    .filter(|t| t.priority >= *min_priority && (!*overdue || t.overdue))
                    .map(|t| t.task_id.clone())
                    .collect();
                let n = ids.len() as u32;
                let what = if *overdue {
                    "overdue follow-up(s)"
                } else {
                    "open follow-up(s)"
                };
                (
                    count.holds(n),
                    TierReason {
                        condition: "tasks".into(),
                        text: format!(
                            "{n} {what} of priority {min_priority} or above ({})",
                            count.text()
                        ),
                        count: n,
                        alert_ids: Vec::new(),
                        task_ids: ids,
                    },
                )
            }
            TierCondition::Enrolled {
                at_least,
                less_than,
            } => {
                let Some(e) = f.enrolled_at else {
                    return (
                        false,
                        TierReason {
                            condition: "enrolled".into(),
                            text: "not enrolled".into(),
                            count: 0,
                            alert_ids: Vec::new(),
                            task_ids: Vec::new(),
                        },
                    );
                };
                let age = f.now - e;
                let ok = at_least.is_none_or(|d| age >= d.delta())
                    && less_than.is_none_or(|d| age < d.delta());
                let mut bounds = Vec::new();
                if let Some(d) = at_least {
                    bounds.push(format!("at least {d}"));
                }
                if let Some(d) = less_than {
                    bounds.push(format!("less than {d}"));
                }
                let days = age.num_days().max(0) as u32;
                (
                    ok,
                    TierReason {
                        condition: "enrolled".into(),
                        text: format!("enrolled {days} day(s) ago ({})", bounds.join(" and ")),
                        count: days,
                        alert_ids: Vec::new(),
                        task_ids: Vec::new(),
                    },
                )
            }
        }
    }
}

/// A rule id a tier pack names (`trend_rules`, `alerts.rules`), checked
/// against every loaded pack once all are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleMention {
    pub rule_id: String,
    pub line: usize,
    pub column: usize,
    pub field: String,
}

fn count_test(
    ctx: &mut Ctx,
    at_least: &Option<Spanned<u32>>,
    fewer_than: &Option<Spanned<u32>>,
    span: Range<usize>,
    path: &str,
) -> Option<CountTest> {
    let check = |ctx: &mut Ctx, v: &Spanned<u32>, field: &str, min: u32| {
        let n = *v.get_ref();
        if n < min || n > MAX_TIER_COUNT {
            ctx.err(
                Some(v.span()),
                format!("{path}.{field}"),
                format!("must be {min}..={MAX_TIER_COUNT}"),
            );
            return false;
        }
        true
    };
    match (at_least, fewer_than) {
        (Some(a), None) => check(ctx, a, "at_least", 1).then(|| CountTest::AtLeast(*a.get_ref())),
        (None, Some(f)) => {
            check(ctx, f, "fewer_than", 1).then(|| CountTest::FewerThan(*f.get_ref()))
        }
        (Some(a), Some(_)) => {
            ctx.err(
                Some(a.span()),
                format!("{path}.at_least"),
                "use either at_least or fewer_than, not both",
            );
            None
        }
        (None, None) => {
            ctx.err(Some(span), path, "needs `at_least = N` or `fewer_than = N`");
            None
        }
    }
}

fn window(ctx: &mut Ctx, w: &Spanned<RuleDuration>, field: String) -> Option<RuleDuration> {
    let d = w.get_ref().delta();
    if d <= TimeDelta::zero() || d > MAX_TIER_WINDOW.delta() {
        ctx.err(
            Some(w.span()),
            field,
            format!("must be more than 0 and at most {MAX_TIER_WINDOW}"),
        );
        return None;
    }
    Some(*w.get_ref())
}

fn alerts(
    ctx: &mut Ctx,
    raw: Spanned<RawTierAlerts>,
    path: &str,
    refs: &mut Vec<RuleMention>,
) -> Option<TierCondition> {
    let span = raw.span();
    let a = raw.into_inner();
    for r in a.rules.iter().flatten() {
        let (line, column) = crate::error::line_col(ctx.text, r.span().start);
        refs.push(RuleMention {
            rule_id: r.get_ref().clone(),
            line,
            column,
            field: format!("{path}.rules"),
        });
    }
    let before = ctx.errs.len();
    let count = count_test(ctx, &a.at_least, &a.fewer_than, span.clone(), path);
    let within = a
        .within
        .as_ref()
        .and_then(|w| window(ctx, w, format!("{path}.within")));
    if !a.open && a.within.is_none() {
        ctx.err(
            Some(span.clone()),
            path,
            "needs `open = true`, `within = \"7d\"` or both (which alerts to count)",
        );
    }
    let kind = match (&a.kind, &a.rules) {
        (Some(k), Some(_)) => {
            ctx.err(
                Some(k.span()),
                format!("{path}.kind"),
                "use either kind or rules, not both",
            );
            None
        }
        (None, Some(rules)) if rules.is_empty() => {
            ctx.err(
                Some(span),
                format!("{path}.rules"),
                "name at least one rule",
            );
            None
        }
        (None, Some(rules)) => Some(AlertKind::Rules(
            rules.iter().map(|r| r.get_ref().clone()).collect(),
        )),
        (Some(k), None) => match k.get_ref().as_str() {
            "any" => Some(AlertKind::Any),
            "trend" => Some(AlertKind::Trend),
            "missing_data" => Some(AlertKind::MissingData),
            other => {
                ctx.err(
                    Some(k.span()),
                    format!("{path}.kind"),
                    format!("unknown kind `{other}` (any, trend, missing_data)"),
                );
                None
            }
        },
        (None, None) => Some(AlertKind::Any),
    };
    if ctx.errs.len() != before {
        return None;
    }
    Some(TierCondition::Alerts {
        min_severity: a.min_severity.unwrap_or(Severity::Info),
        open: a.open,
        within,
        kind: kind?,
        count: count?,
    })
}

fn data_days(ctx: &mut Ctx, raw: Spanned<RawTierDataDays>, path: &str) -> Option<TierCondition> {
    let span = raw.span();
    let d = raw.into_inner();
    let count = count_test(ctx, &d.at_least, &d.fewer_than, span, path);
    let w = window(ctx, &d.within, format!("{path}.within"))?;
    let delta = w.delta();
    if delta.num_seconds() % 86_400 != 0 {
        ctx.err(
            Some(d.within.span()),
            format!("{path}.within"),
            "data days are counted in whole local days: use `d` or `w`",
        );
        return None;
    }
    let days = delta.num_days() as u32;
    let count = count?;
    let limit = match count {
        CountTest::AtLeast(k) => k,
        CountTest::FewerThan(k) => k.saturating_sub(1),
    };
    if limit > days {
        let field = match count {
            CountTest::AtLeast(_) => "at_least",
            CountTest::FewerThan(_) => "fewer_than",
        };
        ctx.err(
            Some(d.within.span()),
            format!("{path}.{field}"),
            format!("cannot exceed the {days} day(s) of `within`"),
        );
        return None;
    }
    Some(TierCondition::DataDays { days, count })
}

fn tasks(ctx: &mut Ctx, raw: Spanned<RawTierTasks>, path: &str) -> Option<TierCondition> {
    let span = raw.span();
    let t = raw.into_inner();
    let count = count_test(ctx, &t.at_least, &t.fewer_than, span, path)?;
    Some(TierCondition::Tasks {
        overdue: t.overdue,
        min_priority: t.min_priority.unwrap_or(Severity::Info),
        count,
    })
}

fn enrolled(ctx: &mut Ctx, raw: Spanned<RawTierEnrolled>, path: &str) -> Option<TierCondition> {
    let span = raw.span();
    let e = raw.into_inner();
    if e.for_at_least.is_none() && e.for_less_than.is_none() {
        ctx.err(
            Some(span),
            path,
            "needs `for_at_least = \"7d\"`, `for_less_than = \"7d\"` or both",
        );
        return None;
    }
    let at_least = match &e.for_at_least {
        Some(w) => Some(window(ctx, w, format!("{path}.for_at_least"))?),
        None => None,
    };
    let less_than = match &e.for_less_than {
        Some(w) => Some(window(ctx, w, format!("{path}.for_less_than"))?),
        None => None,
    };
    if let (Some(a), Some(l), Some(w)) = (at_least, less_than, &e.for_less_than) {
        if a >= l {
            ctx.err(
                Some(w.span()),
                format!("{path}.for_less_than"),
                "must be longer than for_at_least",
            );
            return None;
        }
    }
    Some(TierCondition::Enrolled {
        at_least,
        less_than,
    })
}

/// Compiles one `[[tier]]` entry; errors go to `ctx`. Returns the rule and
/// the position of its id (for the duplicate check across packs).
pub(crate) fn compile_tier(
    ctx: &mut Ctx,
    raw: RawTier,
    span: Range<usize>,
    path: &str,
    refs: &mut Vec<RuleMention>,
) -> Option<(TierRule, (usize, usize))> {
    let before = ctx.errs.len();
    let id = raw.id.get_ref().clone();
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
    {
        ctx.err(
            Some(raw.id.span()),
            format!("{path}.id"),
            "tier rule ids use lowercase letters, digits, `.`, `-` and `_`",
        );
    }
    if *raw.version.get_ref() == 0 {
        ctx.err(
            Some(raw.version.span()),
            format!("{path}.version"),
            "versions start at 1",
        );
    }
    let tier = match Tier::parse(raw.tier.get_ref()) {
        Some(Tier::Unknown) => {
            ctx.err(
                Some(raw.tier.span()),
                format!("{path}.tier"),
                "`unknown` is what no rule matching means; a rule gives high, rising or stable",
            );
            None
        }
        Some(t) => Some(t),
        None => {
            ctx.err(
                Some(raw.tier.span()),
                format!("{path}.tier"),
                format!(
                    "unknown tier `{}` (high, rising, stable)",
                    raw.tier.get_ref()
                ),
            );
            None
        }
    };
    for (field, v) in [("description", &raw.description), ("source", &raw.source)] {
        if v.get_ref().trim().is_empty() {
            ctx.err(
                Some(v.span()),
                format!("{path}.{field}"),
                if field == "source" {
                    "say where the thresholds come from (a program default is a source)"
                } else {
                    "say what the rule means"
                },
            );
        }
    }
    let mut conditions = Vec::new();
    if let Some(a) = raw.alerts {
        conditions.push(alerts(ctx, a, &format!("{path}.alerts"), refs));
    }
    if let Some(d) = raw.data_days {
        conditions.push(data_days(ctx, d, &format!("{path}.data_days")));
    }
    if let Some(t) = raw.tasks {
        conditions.push(tasks(ctx, t, &format!("{path}.tasks")));
    }
    if let Some(e) = raw.enrolled {
        conditions.push(enrolled(ctx, e, &format!("{path}.enrolled")));
    }
    if conditions.is_empty() {
        ctx.err(
            Some(span),
            path,
            "needs at least one condition (alerts, data_days, tasks, enrolled)",
        );
    }
    if ctx.errs.len() != before {
        return None;
    }
    let conditions: Option<Vec<TierCondition>> = conditions.into_iter().collect();
    let pos = crate::error::line_col(ctx.text, raw.id.span().start);
    Some((
        TierRule {
            id,
            version: *raw.version.get_ref(),
            pack: String::new(),
            tier: tier?,
            description: raw.description.into_inner(),
            source: raw.source.into_inner(),
            conditions: conditions?,
        },
        pos,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::SourceFile;
    use crate::RuleSet;

    fn set(tiers: &str) -> Result<RuleSet, crate::LoadErrors> {
        RuleSet::from_sources(
            &[
                SourceFile::new(
                    "a.toml",
                    "pack = \"a\"\nversion = 1\n[[rule]]\nid = \"a.trend\"\nversion = 1\nseverity = \"warning\"\nmessage = \"m\"\nsource = \"s\"\nthreshold = { metric = \"systolic\", op = \">\", limit = \"150 mm[Hg]\" }\n",
                ),
                SourceFile::new("t.toml", tiers),
            ],
            None,
        )
    }

    const HEAD: &str = "pack = \"t\"\nversion = 1\ntrend_rules = [\"a.trend\"]\n";

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-10T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn alert(id: &str, rule: &str, sev: Severity, hours_ago: i64, open: bool) -> AlertFact {
        AlertFact {
            alert_id: id.into(),
            rule_id: rule.into(),
            severity: sev,
            open,
            fired_at: t0() - TimeDelta::hours(hours_ago),
            missing_data: rule.starts_with("adherence."),
        }
    }

    #[test]
    fn the_bundled_tiers_load_and_place_patients_high_first() {
        let set = RuleSet::bundled().unwrap_or_else(|e| panic!("{e}"));
        let tiers = set.tiers();
        assert!(!tiers.is_empty());
        assert!(tiers.rules().windows(2).all(|w| w[0].tier <= w[1].tier));
        assert!(tiers.is_trend("hf.weight-gain-7d"));
        let base = TierFacts {
            now: t0(),
            enrolled_at: Some(t0() - TimeDelta::days(60)),
            data_days_ago: (0..10).collect(),
            ..Default::default()
        };
        // Measured, no alerts: stable.
        let o = tiers.evaluate(&base);
        assert_eq!(o.tier, Tier::Stable, "{o:?}");
        // A critical alert two days ago: high, citing the alert.
        let mut f = base.clone();
        f.alerts
            .push(alert("al1", "htn.crisis", Severity::Critical, 48, false));
        let o = tiers.evaluate(&f);
        assert_eq!(o.tier, Tier::High);
        assert_eq!(o.reasons[0].alert_ids, vec!["al1".to_string()]);
        // A trend alert: rising.
        let mut f = base.clone();
        f.alerts.push(alert(
            "al2",
            "hf.weight-gain-7d",
            Severity::Urgent,
            300,
            false,
        ));
        assert_eq!(tiers.evaluate(&f).tier, Tier::Rising);
        // An overdue urgent follow-up: high, citing the task.
        let mut f = base.clone();
        f.tasks.push(TaskFact {
            task_id: "t1".into(),
            priority: Severity::Urgent,
            overdue: true,
        });
        let o = tiers.evaluate(&f);
        assert_eq!(o.tier, Tier::High);
        assert_eq!(o.reasons[0].task_ids, vec!["t1".to_string()]);
        // Silent for a week after a month enrolled: rising.
        let mut f = base.clone();
        f.data_days_ago = [20, 21].into_iter().collect();
        assert_eq!(tiers.evaluate(&f).tier, Tier::Rising);
        // Enrolled yesterday, no data: unknown.
        let f = TierFacts {
            now: t0(),
            enrolled_at: Some(t0() - TimeDelta::days(1)),
            ..Default::default()
        };
        let o = tiers.evaluate(&f);
        assert_eq!((o.tier, o.rule.is_none()), (Tier::Unknown, true));
    }

    #[test]
    fn first_matching_rule_wins_in_tier_order_and_every_condition_must_hold() {
        let s = set(&format!(
            "{HEAD}[[tier]]\nid = \"s\"\nversion = 1\ntier = \"stable\"\ndescription = \"d\"\nsource = \"s\"\ndata_days = {{ within = \"7d\", at_least = 1 }}\n\
             [[tier]]\nid = \"r\"\nversion = 2\ntier = \"rising\"\ndescription = \"d\"\nsource = \"s\"\nalerts = {{ kind = \"trend\", open = true, at_least = 1 }}\ndata_days = {{ within = \"7d\", at_least = 1 }}\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let tiers = s.tiers();
        assert_eq!(tiers.rules()[0].id, "r");
        let mut f = TierFacts {
            now: t0(),
            data_days_ago: [0].into_iter().collect(),
            ..Default::default()
        };
        f.alerts
            .push(alert("x", "a.trend", Severity::Warning, 1, true));
        let o = tiers.evaluate(&f);
        assert_eq!(o.tier, Tier::Rising);
        assert_eq!(o.rule.as_ref().map(|r| r.version), Some(2));
        assert_eq!(o.reasons.len(), 2);
        // Resolved: only the stable rule holds.
        f.alerts[0].open = false;
        assert_eq!(tiers.evaluate(&f).tier, Tier::Stable);
        // No data: nothing holds.
        f.data_days_ago.clear();
        assert_eq!(tiers.evaluate(&f).tier, Tier::Unknown);
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = set(&format!(
            "{HEAD}[[tier]]\nid = \"x\"\nversion = 1\ntier = \"urgent\"\ndescription = \"d\"\nsource = \"s\"\nalerts = {{ within = \"7d\" }}\n\
             [[tier]]\nid = \"y\"\nversion = 1\ntier = \"high\"\ndescription = \"d\"\nsource = \"\"\ndata_days = {{ within = \"36h\", at_least = 1 }}\nbogus = 1\n"
        ))
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("t.toml:7:8: field `tier[0].tier`: unknown tier `urgent`"),
            "{text}"
        );
        assert!(
            text.contains("t.toml:10:10: field `tier[0].alerts`: needs `at_least = N`"),
            "{text}"
        );
        assert!(text.contains("tier[1].bogus"), "{text}");
        let e = set(&format!(
            "{HEAD}[[tier]]\nid = \"y\"\nversion = 1\ntier = \"high\"\ndescription = \"d\"\nsource = \"\"\ndata_days = {{ within = \"36h\", at_least = 1 }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("field `tier[0].source`: say where"), "{e}");
        assert!(
            e.contains(
                "field `tier[0].data_days.within`: data days are counted in whole local days"
            ),
            "{e}"
        );
        let e = set("pack = \"t\"\nversion = 1\ntrend_rules = [\"no.such\"]\n[[tier]]\nid = \"z\"\nversion = 1\ntier = \"high\"\ndescription = \"d\"\nsource = \"s\"\nalerts = { rules = [\"nope\"], open = true, at_least = 1 }\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml:3:16: field `trend_rules`: unknown rule `no.such`"),
            "{e}"
        );
        assert!(
            e.contains("field `tier[0].alerts.rules`: unknown rule `nope`"),
            "{e}"
        );
    }
}
