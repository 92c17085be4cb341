//! A validated set of packs and care plans.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{FileError, LoadErrors};
use crate::load::{load_pack, load_plans, PackInfo, SourceFile};
use crate::plan::CarePlans;
use crate::rule::Rule;
use crate::tier::{RuleMention, TierRule, TierSet};

/// The packs shipped with the crate, as (file name, text). They are defaults
/// a program edits, not medical advice.
pub const BUNDLED_PACKS: &[(&str, &str)] = &[
    (
        "hypertension.toml",
        include_str!("../rules/hypertension.toml"),
    ),
    (
        "heart-failure.toml",
        include_str!("../rules/heart-failure.toml"),
    ),
    ("diabetes.toml", include_str!("../rules/diabetes.toml")),
    ("copd.toml", include_str!("../rules/copd.toml")),
    ("oxygen.toml", include_str!("../rules/oxygen.toml")),
    ("fever.toml", include_str!("../rules/fever.toml")),
    ("adherence.toml", include_str!("../rules/adherence.toml")),
    ("mood.toml", include_str!("../rules/mood.toml")),
    ("risk-tiers.toml", include_str!("../rules/risk-tiers.toml")),
];

/// The bundled `plans.toml`.
pub const BUNDLED_PLANS: (&str, &str) = ("plans.toml", include_str!("../rules/plans.toml"));

/// The bundled follow-up policy (file name, text), read by the gateway.
pub const BUNDLED_FOLLOW_UP: (&str, &str) =
    (FOLLOW_UP_FILE, include_str!("../rules/follow-up.toml"));

/// Name of the care-plan file in a rules directory.
pub const PLANS_FILE: &str = "plans.toml";

/// The care team's follow-up policy beside the packs (read by the gateway's
/// care loop, not a rule pack).
pub const FOLLOW_UP_FILE: &str = "follow-up.toml";

/// Every rule of every loaded pack, with the care plans.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Where each pack's rules lie in `rules` (they are loaded a pack at a
    /// time), so a patient's rules are found a pack at a time.
    pack_runs: Vec<std::ops::Range<usize>>,
    index: BTreeMap<String, usize>,
    packs: Vec<PackInfo>,
    plans: Option<CarePlans>,
    tiers: TierSet,
}

impl RuleSet {
    /// Loads packs and, optionally, care plans from in-memory sources.
    /// Returns every error of every file at once.
    pub fn from_sources(
        packs: &[SourceFile],
        plans: Option<&SourceFile>,
    ) -> Result<RuleSet, LoadErrors> {
        let mut errs: Vec<FileError> = Vec::new();
        let mut set = RuleSet {
            rules: Vec::new(),
            pack_runs: Vec::new(),
            index: BTreeMap::new(),
            packs: Vec::new(),
            plans: None,
            tiers: TierSet::default(),
        };
        let mut first_seen: BTreeMap<String, (String, usize)> = BTreeMap::new();
        let mut tier_seen: BTreeMap<String, (String, usize)> = BTreeMap::new();
        let mut tiers: Vec<TierRule> = Vec::new();
        let mut trend_rules = std::collections::BTreeSet::new();
        let mut mentions: Vec<(String, RuleMention)> = Vec::new();
        for src in packs {
            let Some(pack) = load_pack(src, &mut errs) else {
                continue;
            };
            if let Some(other) = set.packs.iter().find(|p| p.name == pack.info.name) {
                errs.push(FileError::whole(
                    &src.name,
                    "pack",
                    format!(
                        "pack `{}` is also defined in {}",
                        pack.info.name, other.file
                    ),
                ));
                continue;
            }
            for (rule, (line, column)) in pack.rules {
                if let Some((file, first_line)) = first_seen.get(&rule.id) {
                    errs.push(FileError {
                        line,
                        column,
                        ..FileError::whole(
                            &src.name,
                            "id",
                            format!(
                                "duplicate rule id `{}` (first defined in {file}:{first_line})",
                                rule.id
                            ),
                        )
                    });
                    continue;
                }
                first_seen.insert(rule.id.clone(), (src.name.clone(), line));
                set.index.insert(rule.id.clone(), set.rules.len());
                set.rules.push(rule);
            }
            for (tier, (line, column)) in pack.tiers {
                if let Some((file, first_line)) = tier_seen.get(&tier.id) {
                    errs.push(FileError {
                        line,
                        column,
                        ..FileError::whole(
                            &src.name,
                            "id",
                            format!(
                                "duplicate tier rule id `{}` (first defined in {file}:{first_line})",
                                tier.id
                            ),
                        )
                    });
                    continue;
                }
                tier_seen.insert(tier.id.clone(), (src.name.clone(), line));
                tiers.push(tier);
            }
            trend_rules.extend(pack.trend_rules);
            mentions.extend(pack.mentions.into_iter().map(|m| (src.name.clone(), m)));
            set.packs.push(pack.info);
        }
        // Tier packs may name rules of any pack: checked once all are read.
        for (file, m) in mentions {
            if !set.index.contains_key(&m.rule_id) {
                errs.push(FileError {
                    line: m.line,
                    column: m.column,
                    ..FileError::whole(&file, m.field, format!("unknown rule `{}`", m.rule_id))
                });
            }
        }
        set.pack_runs = pack_runs(&set.rules);
        set.tiers = TierSet::new(tiers, trend_rules);
        if let Some(p) = plans {
            let names: Vec<String> = set.packs.iter().map(|p| p.name.clone()).collect();
            set.plans = load_plans(p, &names, &mut errs);
        }
        if errs.is_empty() {
            Ok(set)
        } else {
            errs.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            Err(LoadErrors { errors: errs })
        }
    }

    /// Loads every `*.toml` of `dir` (sorted by name); `plans.toml`, when
    /// present, is the care-plan file. Without it every pack applies to every
    /// patient.
    pub fn load_dir(dir: &Path) -> Result<RuleSet, LoadErrors> {
        let io = |file: &Path, e: std::io::Error| LoadErrors {
            errors: vec![FileError::whole(file, "", e.to_string())],
        };
        let entries = std::fs::read_dir(dir).map_err(|e| io(dir, e))?;
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| io(dir, e))?.path();
            if path.extension().is_some_and(|x| x == "toml") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let mut packs = Vec::new();
        let mut plans = None;
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            let src = SourceFile::new(path.display().to_string(), text);
            if path.file_name().is_some_and(|n| n == FOLLOW_UP_FILE) {
                continue;
            }
            if path.file_name().is_some_and(|n| n == PLANS_FILE) {
                plans = Some(src);
            } else {
                packs.push(src);
            }
        }
        RuleSet::from_sources(&packs, plans.as_ref())
    }

    /// The packs and plans shipped with the crate.
    pub fn bundled() -> Result<RuleSet, LoadErrors> {
        let packs: Vec<SourceFile> = BUNDLED_PACKS
            .iter()
            .map(|(n, t)| SourceFile::new(*n, *t))
            .collect();
        RuleSet::from_sources(
            &packs,
            Some(&SourceFile::new(BUNDLED_PLANS.0, BUNDLED_PLANS.1)),
        )
    }

    /// All rules, in pack and file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// A rule by id.
    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.index.get(id).and_then(|&i| self.rules.get(i))
    }

    /// The packs loaded.
    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }

    /// The risk-tier rules of every pack (see [`crate::tier`]).
    pub fn tiers(&self) -> &TierSet {
        &self.tiers
    }

    /// Whether `rule_id` is a missing-data rule.
    pub fn is_missing_data_rule(&self, rule_id: &str) -> bool {
        self.get(rule_id).is_some_and(|r| {
            matches!(
                &r.condition,
                crate::rule::Condition::Leaf(crate::rule::Leaf {
                    kind: crate::rule::LeafKind::Missing { .. },
                    ..
                })
            )
        })
    }

    /// The care plans, when a plans file was loaded.
    pub fn plans(&self) -> Option<&CarePlans> {
        self.plans.as_ref()
    }

    /// The rules that apply to a patient on `care_plans`: without a plans
    /// file, all of them.
    pub fn rules_for<S: AsRef<str>>(&self, care_plans: &[S]) -> Vec<&Rule> {
        self.each_rule_for(care_plans).collect()
    }

    /// [`RuleSet::rules_for`] without collecting them (asked for every
    /// reading evaluated).
    ///
    /// A pack's rules are asked about once, not each of them: this runs for
    /// every reading evaluated, and looking each of some thirty rules' pack
    /// up among the patient's was about a tenth of evaluating a reading.
    pub fn each_rule_for<S: AsRef<str>>(&self, care_plans: &[S]) -> impl Iterator<Item = &Rule> {
        let packs = self.plans.as_ref().map(|p| p.pack_set(care_plans));
        self.pack_runs
            .iter()
            .filter(move |run| {
                packs.as_ref().is_none_or(|p| {
                    self.rules
                        .get(run.start)
                        .is_some_and(|r| p.contains(r.pack.as_str()))
                })
            })
            .flat_map(move |run| self.rules.get(run.clone()).unwrap_or(&[]))
    }
}

/// The runs of consecutive rules of one pack, in order.
fn pack_runs(rules: &[Rule]) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        match runs.last_mut() {
            Some(run) if rules[run.start].pack == rule.pack => run.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    runs
}
