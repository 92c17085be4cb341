//! Per-patient personalisation: disable a rule or change its limits.
//!
//! Clinicians set a target blood pressure or a dry weight per patient; the
//! gateway stores [`Overrides`] (serde, JSON-friendly) and passes them in
//! with the patient. Overrides are applied at evaluation and the values used
//! are recorded in every outcome as [`EffectiveLimit`]s, so an alert can
//! always be traced to the exact numbers it was judged by.

use std::collections::BTreeMap;

use device_profiles::units::Unit;
use serde::{Deserialize, Serialize};

use crate::quantity::{convert_difference, Quantity};
use crate::rule::{Condition, Rule};
use crate::ruleset::RuleSet;

/// Overrides of one patient, by rule id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Overrides(pub BTreeMap<String, RuleOverride>);

/// Overrides of one rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleOverride {
    /// The rule does not run for this patient.
    #[serde(default)]
    pub disabled: bool,
    /// Parameter name (`limit`, `clear_limit`, `baseline`, `weight.limit`
    /// …) to value with unit (`"150 mm[Hg]"`, `"82.5 kg"`).
    #[serde(default)]
    pub limits: BTreeMap<String, Quantity>,
}

/// A limit as used by one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EffectiveLimit {
    /// Value in the canonical unit of the metric.
    pub value: f64,
    /// The canonical unit.
    pub unit: Unit,
    /// The same value in the unit the rule (or override) was written in.
    pub display: Quantity,
    /// Whether a per-patient override set it.
    pub overridden: bool,
}

/// An override that cannot be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OverrideError {
    /// No such rule.
    #[error("override for unknown rule `{0}`")]
    UnknownRule(String),
    /// No such parameter in the rule.
    #[error("rule `{rule}` has no parameter `{param}` (it has: {known})")]
    UnknownParam {
        /// rule id
        rule: String,
        /// the name given
        param: String,
        /// the rule's parameters
        known: String,
    },
    /// The value's unit does not fit the parameter.
    #[error("rule `{rule}` parameter `{param}`: {error}")]
    Unit {
        /// rule id
        rule: String,
        /// parameter
        param: String,
        /// the unit problem
        error: crate::quantity::QuantityError,
    },
}

impl Overrides {
    /// Whether `rule_id` is disabled for the patient.
    pub fn is_disabled(&self, rule_id: &str) -> bool {
        self.0.get(rule_id).is_some_and(|o| o.disabled)
    }

    /// Checks every override against `rules`. The gateway calls this when a
    /// clinician saves overrides, and refuses to store an invalid one; the
    /// engine itself skips invalid entries (the effective limits then show
    /// the defaults that were used) rather than stop alerting.
    pub fn validate(&self, rules: &RuleSet) -> Result<(), Vec<OverrideError>> {
        let mut errs = Vec::new();
        for (id, o) in &self.0 {
            match rules.get(id) {
                None => errs.push(OverrideError::UnknownRule(id.clone())),
                Some(rule) => errs.extend(resolve(rule, Some(o)).2),
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// The limits `rule` uses for a patient with overrides `ov` (entries that
/// cannot be applied fall back to the rule's defaults, as in evaluation):
/// what a chart draws as the patient's limit lines.
pub fn effective_limits(
    rule: &Rule,
    ov: Option<&RuleOverride>,
) -> BTreeMap<String, EffectiveLimit> {
    resolve(rule, ov).1
}

/// Effective parameter values of `rule` for a patient: canonical numbers
/// for evaluation, the record for outcomes, and the entries that were
/// skipped.
/// A rule's parameters as no override changes them, resolved once when
/// the rule is loaded: most patients have no override, and the engine
/// needs them for every rule at every reading.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Defaults {
    /// Values in the canonical unit, by parameter name.
    pub values: BTreeMap<String, f64>,
    /// What the outcomes record of them.
    pub record: BTreeMap<String, EffectiveLimit>,
}

impl Defaults {
    /// `rule`'s parameters without overrides.
    pub(crate) fn of(rule: &Rule) -> Defaults {
        let (values, record, _) = resolve(rule, None);
        Defaults { values, record }
    }
}

pub(crate) fn resolve(
    rule: &Rule,
    ov: Option<&RuleOverride>,
) -> (
    BTreeMap<String, f64>,
    BTreeMap<String, EffectiveLimit>,
    Vec<OverrideError>,
) {
    let mut values = BTreeMap::new();
    let mut record = BTreeMap::new();
    let mut errs = Vec::new();
    let mut overridden = BTreeMap::new();
    if let Some(o) = ov {
        for (name, q) in &o.limits {
            let Some(param) = rule.params.get(name) else {
                errs.push(OverrideError::UnknownParam {
                    rule: rule.id.clone(),
                    param: name.clone(),
                    known: rule.params.keys().cloned().collect::<Vec<_>>().join(", "),
                });
                continue;
            };
            let converted = if param.difference {
                q.difference_in_canonical(param.metric)
            } else {
                q.level_in_canonical(param.metric)
            };
            match (converted, q.unit_for(param.metric)) {
                (Ok(v), Ok(unit)) => {
                    overridden.insert(name.clone(), (v, unit));
                }
                (Err(error), _) | (_, Err(error)) => errs.push(OverrideError::Unit {
                    rule: rule.id.clone(),
                    param: name.clone(),
                    error,
                }),
            }
        }
    }
    for (name, param) in &rule.params {
        let canonical = param.metric.canonical_unit();
        let (value, display_unit, is_override) = match overridden.get(name) {
            Some(&(v, unit)) => (v, unit, true),
            None => match param.default {
                Some(v) => (v, param.display_unit, false),
                None => continue,
            },
        };
        values.insert(name.clone(), value);
        let shown = if param.difference {
            convert_difference(value, canonical, display_unit)
        } else {
            canonical.convert(value, display_unit)
        };
        record.insert(
            name.clone(),
            EffectiveLimit {
                value,
                unit: canonical,
                display: Quantity::new(shown.unwrap_or(value), display_unit),
                overridden: is_override,
            },
        );
    }
    // An overridden firing limit without an overridden clear limit could
    // leave the clear limit on the wrong side; clamp it to the firing limit.
    if let (Some(&limit), Some(&clear), Condition::Leaf(leaf)) = (
        values.get("limit"),
        values.get("clear_limit"),
        &rule.condition,
    ) {
        if let Some(op) = leaf.kind.op() {
            let clamped = if op.higher_is_worse() {
                clear.min(limit)
            } else {
                clear.max(limit)
            };
            if clamped != clear {
                values.insert("clear_limit".to_string(), clamped);
                if let (Some(rec), Some(lim)) =
                    (record.get("limit").cloned(), record.get_mut("clear_limit"))
                {
                    lim.value = clamped;
                    lim.display = rec.display;
                }
            }
        }
    }
    (values, record, errs)
}
