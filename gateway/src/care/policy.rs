//! The follow-up policy: which alerts open a task, its deadlines, and its
//! escalation tiers, per care pathway.
//!
//! It is a file beside the rule packs (`follow-up.toml`), because it is
//! clinical program content like the packs: a program edits it, reviews it
//! and versions it; the gateway bundles a default. It is parsed and
//! checked up front, every error with its file, line and field, so
//! `check-config` catches a deadline nobody could meet before a care team
//! depends on it.

use alerting_rules::ruleset::{BUNDLED_FOLLOW_UP, FOLLOW_UP_FILE};
use alerting_rules::Severity;
use device_profiles::profile::{parse_toml, FileError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::calendar::Deadline;

/// The policy, checked.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `version` in the file: recorded on every task it opened.
    pub version: u32,
    problems: Vec<(String, Vec<String>)>,
    pathways: BTreeMap<String, Pathway>,
}

/// One care pathway's follow-up rules and escalation tiers.
#[derive(Debug, Clone)]
pub struct Pathway {
    /// The pathway's name (`default`, or a care plan).
    pub name: String,
    follow_up: Vec<FollowUpRule>,
    /// Escalation tiers, in order.
    pub escalation: Vec<Tier>,
}

/// When a notified alert opens a task, and its deadlines.
#[derive(Debug, Clone)]
pub struct FollowUpRule {
    severities: Vec<Severity>,
    rules: Vec<String>,
    /// Whether the alert opens (or joins) a task at all.
    pub open: bool,
    /// To be claimed by; none: no claim deadline.
    pub claim_within: Option<Deadline>,
    /// To be done by.
    pub deadline: Deadline,
    /// A task whose alerts have all resolved by themselves, unclaimed, is
    /// closed (`no_action_needed`): the data came back.
    pub close_when_resolved: bool,
}

/// An escalation tier.
#[derive(Debug, Clone)]
pub struct Tier {
    /// After the first missed deadline.
    pub after: Deadline,
    /// Who is told (a role receivers route on).
    pub to: String,
}

/// What the policy says about one alert.
#[derive(Debug, Clone)]
pub struct Decision<'a> {
    /// The pathway that applied.
    pub pathway: &'a Pathway,
    /// The rule that matched.
    pub rule: &'a FollowUpRule,
    /// The problem the alert belongs to.
    pub problem: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    version: u32,
    #[serde(default)]
    problems: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pathway: BTreeMap<String, RawPathway>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPathway {
    #[serde(default)]
    follow_up: Vec<RawFollowUp>,
    #[serde(default)]
    escalation: Vec<RawTier>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFollowUp {
    #[serde(default)]
    severity: Vec<Severity>,
    #[serde(default)]
    rules: Vec<String>,
    #[serde(default = "yes")]
    open: bool,
    claim_within: Option<String>,
    deadline: Option<String>,
    #[serde(default)]
    close_when_resolved: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    after: String,
    to: String,
}

impl Policy {
    /// The policy at `path`, or — with no path — `follow-up.toml` in the
    /// rules directory when there is one, else the bundled policy.
    pub fn load(path: Option<&Path>, rules_dir: Option<&Path>) -> Result<Policy, Vec<FileError>> {
        let file: Option<PathBuf> = match (path, rules_dir) {
            (Some(p), _) => Some(p.to_path_buf()),
            (None, Some(d)) => Some(d.join(FOLLOW_UP_FILE)).filter(|f| f.is_file()),
            (None, None) => None,
        };
        match file {
            Some(f) => {
                let text = std::fs::read_to_string(&f).map_err(|e| {
                    vec![FileError {
                        file: f.clone(),
                        line: 0,
                        column: 0,
                        field: "(file)".into(),
                        message: e.to_string(),
                    }]
                })?;
                Policy::parse(&text, &f)
            }
            None => Policy::parse(BUNDLED_FOLLOW_UP.1, Path::new(BUNDLED_FOLLOW_UP.0)),
        }
    }

    /// Parses and checks policy text (`file` names it in errors).
    pub fn parse(text: &str, file: &Path) -> Result<Policy, Vec<FileError>> {
        let raw: RawPolicy = parse_toml(text, file).map_err(|e| vec![e])?;
        let mut errors = Vec::new();
        let mut deadline = |path: String, s: &str| match Deadline::parse(s) {
            Ok(d) => Some(d),
            Err(m) => {
                errors.push(FileError::located(file, text, &path, path.clone(), m));
                None
            }
        };
        let mut pathways = BTreeMap::new();
        for (name, p) in raw.pathway {
            let mut follow_up = Vec::new();
            for (i, f) in p.follow_up.into_iter().enumerate() {
                let at = |k: &str| format!("pathway.{name}.follow_up[{i}].{k}");
                let claim_within = f
                    .claim_within
                    .as_deref()
                    .and_then(|s| deadline(at("claim_within"), s));
                let due = match (&f.deadline, f.open) {
                    (Some(s), _) => deadline(at("deadline"), s),
                    (None, false) => Some(Deadline::Elapsed(chrono::TimeDelta::zero())),
                    (None, true) => {
                        deadline(at("deadline"), "(none: a task needs a deadline)");
                        None
                    }
                };
                if let Some(due) = due {
                    follow_up.push(FollowUpRule {
                        severities: f.severity,
                        rules: f.rules,
                        open: f.open,
                        claim_within,
                        deadline: due,
                        close_when_resolved: f.close_when_resolved,
                    });
                }
            }
            let mut escalation = Vec::new();
            for (i, t) in p.escalation.into_iter().enumerate() {
                if let Some(after) =
                    deadline(format!("pathway.{name}.escalation[{i}].after"), &t.after)
                {
                    escalation.push(Tier { after, to: t.to });
                }
            }
            pathways.insert(
                name.clone(),
                Pathway {
                    name,
                    follow_up,
                    escalation,
                },
            );
        }
        if !pathways.contains_key("default") {
            errors.push(FileError::located(
                file,
                text,
                "pathway",
                "pathway.default",
                "a `[pathway.default]` section is needed: it applies to patients on no other pathway".into(),
            ));
        }
        for (name, p) in &pathways {
            for (i, t) in p.escalation.iter().enumerate() {
                if t.to.trim().is_empty() {
                    errors.push(FileError::located(
                        file,
                        text,
                        &format!("pathway.{name}.escalation[{i}].to"),
                        format!("pathway.{name}.escalation[{i}].to"),
                        "must name who is told".into(),
                    ));
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Policy {
            version: raw.version,
            problems: raw.problems.into_iter().collect(),
            pathways,
        })
    }

    /// The pathway of a patient on `care_plans`.
    pub fn pathway(&self, care_plans: &[String]) -> Option<&Pathway> {
        care_plans
            .iter()
            .find_map(|p| self.pathways.get(p))
            .or_else(|| self.pathways.get("default"))
    }

    /// A pathway by name.
    pub fn pathway_named(&self, name: &str) -> Option<&Pathway> {
        self.pathways.get(name)
    }

    /// The problem an alert of `rule_id` (of `pack`) belongs to.
    pub fn problem(&self, rule_id: &str, pack: &str) -> String {
        self.problems
            .iter()
            .find(|(_, globs)| globs.iter().any(|g| glob(g, rule_id)))
            .map_or_else(|| pack.to_string(), |(name, _)| name.clone())
    }

    /// What the policy says about a notified alert, or `None` when no
    /// follow-up rule matches it (no task).
    pub fn decide(
        &self,
        care_plans: &[String],
        rule_id: &str,
        pack: &str,
        severity: Severity,
    ) -> Option<Decision<'_>> {
        let pathway = self.pathway(care_plans)?;
        let rule = pathway.follow_up.iter().find(|f| {
            (f.severities.is_empty() || f.severities.contains(&severity))
                && (f.rules.is_empty() || f.rules.iter().any(|g| glob(g, rule_id)))
        })?;
        Some(Decision {
            pathway,
            rule,
            problem: self.problem(rule_id, pack),
        })
    }
}

/// `htn.*` style patterns: a trailing `*` matches any rest.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn the_bundled_policy_loads_and_decides() {
        let p = Policy::load(None, None).unwrap();
        let hf = vec!["heart-failure".to_string()];
        let d = p
            .decide(
                &hf,
                "hf.weight-gain-24h",
                "heart-failure",
                Severity::Warning,
            )
            .unwrap();
        assert_eq!(d.pathway.name, "heart-failure");
        assert_eq!(d.problem, "fluid-status");
        assert_eq!(d.rule.deadline, Deadline::EndOfWorkingDay(0));
        let d = p
            .decide(&[], "htn.crisis", "hypertension", Severity::Critical)
            .unwrap();
        assert_eq!(d.pathway.name, "default");
        assert_eq!(d.problem, "blood-pressure");
        assert_eq!(
            d.rule.claim_within,
            Some(Deadline::Elapsed(TimeDelta::minutes(15)))
        );
        assert_eq!(d.rule.deadline, Deadline::Elapsed(TimeDelta::hours(1)));
        let d = p
            .decide(&[], "adherence.no-data-3d", "adherence", Severity::Urgent)
            .unwrap();
        // Data gaps come first: followed up by the next working day, and
        // closed when the data comes back.
        assert_eq!(d.rule.deadline, Deadline::EndOfWorkingDay(1));
        assert!(d.rule.close_when_resolved);
        assert_eq!(d.problem, "data-gaps");
        let d = p.decide(&[], "fever", "fever", Severity::Info).unwrap();
        assert!(!d.rule.open);
        assert_eq!(p.problem("fever", "fever"), "fever");
        assert_eq!(p.pathway(&[]).unwrap().escalation.len(), 2);
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let text = "version = 1\n[pathway.default]\n[[pathway.default.follow_up]]\nseverity = [\"urgent\"]\ndeadline = \"soonish\"\n[[pathway.default.escalation]]\nafter = \"0m\"\nto = \"\"\n";
        let e = Policy::parse(text, Path::new("follow-up.toml")).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].field, "pathway.default.follow_up[0].deadline");
        assert_eq!(e[0].line, 5, "{e:?}");
        assert_eq!(e[1].field, "pathway.default.escalation[0].to");
        let e = Policy::parse("version = 1\n[pathway.hf]\n", Path::new("f.toml")).unwrap_err();
        assert!(e[0].message.contains("pathway.default"), "{e:?}");
        let e = Policy::parse(
            "version = 1\n[pathway.default]\nescalate = 1\n",
            Path::new("f.toml"),
        )
        .unwrap_err();
        assert!(e[0].to_string().contains("unknown field"), "{e:?}");
    }
}
