//! Care plans: which packs apply to a patient.
//!
//! A plan (`heart-failure`, `hypertension`, `diabetes`, `copd`) selects
//! packs; `always` packs (fever, adherence) apply to every patient; a plan
//! may exclude a pack another plan brings in. The exclusion is what keeps the
//! general "SpO2 < 90 %" warning away from a COPD patient whose target range
//! is 88–92 % (BTS 2017), even when that patient is also on a heart-failure
//! plan.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// One care plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Packs the plan selects.
    #[serde(default)]
    pub packs: Vec<String>,
    /// Packs removed for patients on this plan, whichever plan selected them.
    #[serde(default)]
    pub excludes: Vec<String>,
}

/// The `plans.toml` file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarePlans {
    /// Packs for every patient, whatever the plan.
    #[serde(default)]
    pub always: Vec<String>,
    /// Plans by name.
    #[serde(default)]
    pub plan: BTreeMap<String, Plan>,
}

impl CarePlans {
    /// The packs that apply to a patient on `plans`. Unknown plan names add
    /// nothing (the gateway validates plan names with
    /// [`CarePlans::is_known`] when a patient is enrolled), so such a patient
    /// still gets the `always` packs.
    pub fn packs_for<S: AsRef<str>>(&self, plans: &[S]) -> BTreeSet<String> {
        self.pack_set(plans)
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// [`CarePlans::packs_for`], borrowed from the plans.
    pub fn pack_set<S: AsRef<str>>(&self, plans: &[S]) -> BTreeSet<&str> {
        let mut packs: BTreeSet<&str> = self.always.iter().map(String::as_str).collect();
        let mut excluded = BTreeSet::new();
        for name in plans {
            if let Some(p) = self.plan.get(name.as_ref()) {
                packs.extend(p.packs.iter().map(String::as_str));
                excluded.extend(p.excludes.iter().map(String::as_str));
            }
        }
        packs.retain(|p| !excluded.contains(p));
        packs
    }

    /// Whether `plan` is defined.
    pub fn is_known(&self, plan: &str) -> bool {
        self.plan.contains_key(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_plus_plan_minus_excludes() {
        let plans: CarePlans = toml::from_str(
            r#"
            always = ["fever", "adherence"]
            [plan.hf]
            packs = ["heart-failure", "oxygen"]
            [plan.copd]
            packs = ["copd"]
            excludes = ["oxygen"]
            "#,
        )
        .unwrap();
        let hf = plans.packs_for(&["hf"]);
        assert!(hf.contains("oxygen") && hf.contains("fever") && hf.contains("heart-failure"));
        let both = plans.packs_for(&["hf", "copd"]);
        assert!(!both.contains("oxygen") && both.contains("copd"));
        let unknown = plans.packs_for(&["nope"]);
        assert_eq!(unknown.len(), 2);
    }
}
