//! `[rules]` and `[[patients]]`: the rule stage and care-plan enrolment.
//!
//! The rule set is loaded during validation, so `check-config` reports a
//! broken rule file (with its own file, line and field) and a patient
//! enrolled on a plan the rule set does not define, all at once.

use device_profiles::profile::FileError;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[rules]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Evaluate rules (alerts, outbox events).
    pub enabled: bool,
    /// Directory of rule packs (`*.toml`, optional `plans.toml`), relative
    /// to the config file; absent = the packs bundled with the gateway.
    pub dir: Option<PathBuf>,
    /// How often missing-data rules are evaluated.
    #[serde(with = "humantime_serde")]
    pub missing_interval: Duration,
    /// A reading received this long after it was measured is late.
    #[serde(with = "humantime_serde")]
    pub late_receipt: Duration,
    /// A patient whose last reading was taken in less than this ago is
    /// still uploading: missing-data rules do not fire for them yet.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// Readings evaluated per transaction (up to 4 × as many while
    /// catching up with a backlog).
    pub batch_readings: usize,
    /// What "now" is for the rules: the wall clock (live monitoring), or
    /// the data (replays, demos and tests only; see [`RulesClock::Data`]).
    pub clock: RulesClock,
}

/// `rules.clock`: where the rule stage takes "now" from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RulesClock {
    /// The wall clock: silence is judged against the time of day, minus the
    /// gateway's own downtime. The only setting for live monitoring.
    #[default]
    Wall,
    /// The newest (clock-corrected) measured-at committed in the store,
    /// never going backwards; gateway downtime is ignored. For replays,
    /// demos and tests, where days of readings arrive in seconds and the
    /// wall clock says nothing about how long a patient was silent. Never
    /// for live monitoring: a patient stops being judged silent when every
    /// device stops sending.
    Data,
}

impl RulesClock {
    /// As written in config.
    pub const fn name(self) -> &'static str {
        match self {
            RulesClock::Wall => "wall",
            RulesClock::Data => "data",
        }
    }
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            enabled: true,
            dir: None,
            missing_interval: Duration::from_secs(60),
            late_receipt: Duration::from_secs(3600),
            settle: Duration::from_secs(120),
            batch_readings: 500,
            clock: RulesClock::Wall,
        }
    }
}

/// `[[patients]]`: enrolment applied at start (run-time changes made with
/// `rpm-gateway patients ...` or the API are kept).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientEnrolment {
    /// Pseudonymous patient id.
    pub id: String,
    /// Care plans (`heart-failure`, `hypertension`, `diabetes`, `copd`).
    #[serde(default)]
    pub care_plans: Vec<String>,
    /// Care team (webhook routing, API scopes).
    #[serde(default)]
    pub care_team: Option<String>,
    /// The patient's IANA time zone (`America/Los_Angeles`); absent: the
    /// care team's (`[care]`).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// The local date the 30-day device periods count from
    /// (`2026-10-15`, quoted or not); absent: the local date of the first
    /// automatically transmitted reading.
    #[serde(default)]
    pub monitoring_start: Option<LocalDate>,
}

/// A local date as TOML writes it: a bare date (`2026-10-15`) or a string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum LocalDate {
    /// A TOML date.
    Toml(toml::value::Datetime),
    /// A string, `YYYY-MM-DD`.
    Text(String),
}

impl LocalDate {
    /// The date, if it is one (a TOML date without time or offset, or a
    /// `YYYY-MM-DD` string).
    pub fn date(&self) -> Option<chrono::NaiveDate> {
        match self {
            LocalDate::Toml(d) if d.time.is_none() && d.offset.is_none() => {
                let d = d.date?;
                chrono::NaiveDate::from_ymd_opt(
                    i32::from(d.year),
                    u32::from(d.month),
                    u32::from(d.day),
                )
            }
            LocalDate::Toml(_) => None,
            LocalDate::Text(s) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok(),
        }
    }
}

impl PatientEnrolment {
    /// The monitoring start, when given and valid.
    pub fn monitoring_start_date(&self) -> Option<chrono::NaiveDate> {
        self.monitoring_start.as_ref().and_then(LocalDate::date)
    }
}

/// Validates `[rules]` and `[[patients]]`, loading the rule set.
pub fn validate(
    rules: &RulesConfig,
    patients: &[PatientEnrolment],
    text: &str,
    file: &Path,
    errors: &mut Vec<FileError>,
) {
    let at = |n: Option<usize>, field: &str, key: &str, message: String| {
        let path = match n {
            Some(n) => format!("patients[{n}].{key}"),
            None => format!("rules.{key}"),
        };
        FileError::located(file, text, &path, field, message)
    };
    if rules.missing_interval < Duration::from_millis(100) {
        errors.push(at(
            None,
            "rules.missing_interval",
            "missing_interval",
            "must be at least 100ms".into(),
        ));
    }
    if rules.batch_readings == 0 {
        errors.push(at(
            None,
            "rules.batch_readings",
            "batch_readings",
            "must be greater than 0".into(),
        ));
    }
    let set = match crate::rules::load_rule_set(rules.dir.as_deref()) {
        Ok(s) => Some(s),
        Err(e) => {
            // The rule files' own positions: each error names its file.
            errors.extend(e.errors);
            None
        }
    };
    let mut seen = BTreeSet::new();
    for (n, p) in patients.iter().enumerate() {
        if p.id.trim().is_empty() {
            errors.push(at(
                Some(n),
                &format!("patients[{n}].id"),
                "id",
                "must not be empty".into(),
            ));
        }
        if !seen.insert(p.id.as_str()) {
            errors.push(at(
                Some(n),
                &format!("patients[{n}].id"),
                "id",
                format!("patient `{}` is listed more than once", p.id),
            ));
        }
        if let Some(zone) = &p.time_zone {
            if zone.parse::<chrono_tz::Tz>().is_err() {
                errors.push(at(
                    Some(n),
                    &format!("patients[{n}].time_zone"),
                    "time_zone",
                    format!("`{zone}` is not an IANA time zone name like America/Los_Angeles or Pacific/Auckland"),
                ));
            }
        }
        if p.monitoring_start.is_some() && p.monitoring_start_date().is_none() {
            errors.push(at(
                Some(n),
                &format!("patients[{n}].monitoring_start"),
                "monitoring_start",
                "must be a local date like 2026-10-15".into(),
            ));
        }
        if let Some(plans) = set.as_ref().and_then(|s| s.plans()) {
            for plan in &p.care_plans {
                if !plans.is_known(plan) {
                    let known: Vec<&str> = plans.plan.keys().map(String::as_str).collect();
                    errors.push(at(
                        Some(n),
                        &format!("patients[{n}].care_plans"),
                        "care_plans",
                        format!("unknown care plan `{plan}` (known: {})", known.join(", ")),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn unknown_plan_and_bad_rules_dir_are_reported_with_lines() {
        let text = "[rules]\nmissing_interval = \"1s\"\n\n[[patients]]\nid = \"p1\"\ncare_plans = [\"heart-failure\"]\n\n[[patients]]\nid = \"p2\"\ncare_plans = [\"heart-failur\"]\n";
        let e = Config::from_toml(text, Path::new("g.toml")).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].line, 10, "{e}");
        assert_eq!(e.0[0].field, "patients[1].care_plans");
        assert!(e.to_string().contains("heart-failur"), "{e}");

        let ok =
            Config::from_toml(&text.replace("failur\"", "failure\""), Path::new("g.toml")).unwrap();
        assert_eq!(ok.patients.len(), 2);
        assert_eq!(ok.rules.missing_interval.as_secs(), 1);

        let e = Config::from_toml("[rules]\ndir = \"no-such-dir\"\n", Path::new("/tmp/g.toml"))
            .unwrap_err();
        assert!(e.to_string().contains("no-such-dir"), "{e}");
    }

    #[test]
    fn patient_clocks_are_checked() {
        let text = "[[patients]]\nid = \"p1\"\ntime_zone = \"Pacific/Auckland\"\nmonitoring_start = 2026-10-15\n\n[[patients]]\nid = \"p2\"\nmonitoring_start = \"2026-11-02\"\n";
        let c = Config::from_toml(text, Path::new("g.toml")).unwrap();
        let d = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(c.patients[0].monitoring_start_date(), Some(d("2026-10-15")));
        assert_eq!(c.patients[1].monitoring_start_date(), Some(d("2026-11-02")));
        assert_eq!(c.patients[0].time_zone.as_deref(), Some("Pacific/Auckland"));

        let bad = "[[patients]]\nid = \"p1\"\ntime_zone = \"Mars/Olympus\"\nmonitoring_start = \"15/10/2026\"\n";
        let e = Config::from_toml(bad, Path::new("g.toml")).unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        assert_eq!(e.0[0].field, "patients[0].time_zone");
        assert_eq!(e.0[0].line, 3, "{e}");
        assert_eq!(e.0[1].field, "patients[0].monitoring_start");
    }

    #[test]
    fn clock_is_wall_by_default_and_validated_up_front() {
        use crate::config::RulesClock;
        let c = Config::from_toml("", Path::new("g.toml")).unwrap();
        assert_eq!(c.rules.clock, RulesClock::Wall);
        let c = Config::from_toml("[rules]\nclock = \"data\"\n", Path::new("g.toml")).unwrap();
        assert_eq!(c.rules.clock, RulesClock::Data);
        assert_eq!(c.rules.clock.name(), "data");

        let e = Config::from_toml(
            "[rules]\nmissing_interval = \"1s\"\nclock = \"replay\"\n",
            Path::new("g.toml"),
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].field, "rules.clock", "{e}");
        assert_eq!(e.0[0].line, 3, "{e}");
        assert!(
            e.to_string().contains("replay") && e.to_string().contains("wall"),
            "{e}"
        );
    }
}
