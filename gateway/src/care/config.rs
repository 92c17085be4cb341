//! `[care]` and `[care.teams.NAME]`: the care teams' clocks.
//!
//! Deadlines ("within 4 working hours"), periods ("the patient's 30-day
//! period") and working days are local: a team in Auckland and a patient in
//! Los Angeles do not share a midnight, and both see DST changes. Every
//! team names its IANA time zone, its working week, its working hours and
//! its holidays; a patient without a time zone of their own uses their
//! team's, a team without a section uses `[care]`'s defaults.

use chrono::{NaiveDate, NaiveTime, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `[care]`
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawCare")]
pub struct CareConfig {
    /// Open follow-up tasks from notified alerts and escalate them.
    pub enabled: bool,
    /// The follow-up policy file (TOML, beside the rule packs); absent =
    /// `follow-up.toml` in `rules.dir`, or the policy bundled with the
    /// gateway.
    pub policy: Option<PathBuf>,
    /// How often deadlines are checked.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// The calendar of a team without its own section (and of patients
    /// without a team); a team's section starts from it.
    pub default_team: TeamConfig,
    /// Care teams by name, as patients and tokens name them: each the
    /// `[care]` calendar with the keys its section sets.
    pub teams: BTreeMap<String, TeamConfig>,
    /// `[care.risk]`: risk tiers (see `care/risk.rs`).
    pub risk: super::risk::RiskConfig,
    /// `[care.worklist]`: the worklist's silence and data-day thresholds.
    pub worklist: super::worklist::WorklistConfig,
}

impl Default for CareConfig {
    fn default() -> Self {
        CareConfig {
            enabled: true,
            policy: None,
            check_interval: Duration::from_secs(30),
            default_team: TeamConfig::default(),
            teams: BTreeMap::new(),
            risk: Default::default(),
            worklist: Default::default(),
        }
    }
}

/// `[care]` as written: the calendar keys beside the others, and each
/// team's section as the keys it sets (it inherits the rest).
#[derive(Deserialize)]
#[serde(default)]
struct RawCare {
    enabled: bool,
    policy: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    check_interval: Duration,
    teams: BTreeMap<String, toml::Table>,
    risk: super::risk::RiskConfig,
    worklist: super::worklist::WorklistConfig,
    /// The calendar keys (and, to be refused, any unknown key).
    #[serde(flatten)]
    calendar: toml::Table,
}

impl Default for RawCare {
    fn default() -> Self {
        let d = CareConfig::default();
        RawCare {
            enabled: d.enabled,
            policy: d.policy,
            check_interval: d.check_interval,
            teams: BTreeMap::new(),
            risk: d.risk,
            worklist: d.worklist,
            calendar: toml::Table::new(),
        }
    }
}

impl TryFrom<RawCare> for CareConfig {
    type Error = String;
    fn try_from(raw: RawCare) -> Result<Self, String> {
        let calendar = |t: toml::Table, at: &str| {
            TeamConfig::deserialize(t).map_err(|e| format!("{at}{}", e.message()))
        };
        let default_team = calendar(raw.calendar.clone(), "")?;
        let mut teams = BTreeMap::new();
        for (name, own) in raw.teams {
            let mut merged = raw.calendar.clone();
            merged.extend(own);
            teams.insert(name.clone(), calendar(merged, &format!("teams.{name}: "))?);
        }
        Ok(CareConfig {
            enabled: raw.enabled,
            policy: raw.policy,
            check_interval: raw.check_interval,
            default_team,
            teams,
            risk: raw.risk,
            worklist: raw.worklist,
        })
    }
}

impl CareConfig {
    /// The calendar of `team` (its own section, or the defaults).
    pub fn team(&self, team: Option<&str>) -> &TeamConfig {
        team.and_then(|t| self.teams.get(t))
            .unwrap_or(&self.default_team)
    }
}

/// A care team's working calendar.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TeamConfig {
    /// IANA time zone, e.g. `America/Los_Angeles`.
    #[serde(deserialize_with = "time_zone")]
    pub time_zone: Tz,
    /// Working days, e.g. `["mon", "tue", "wed", "thu", "fri"]`.
    #[serde(deserialize_with = "weekdays")]
    pub working_days: Vec<Weekday>,
    /// Start of the working day, local time (`08:00`).
    #[serde(deserialize_with = "local_time")]
    pub day_start: NaiveTime,
    /// End of the working day, local time (`17:00`).
    #[serde(deserialize_with = "local_time")]
    pub day_end: NaiveTime,
    /// Dates with no working hours (`2026-12-25`).
    pub holidays: Vec<NaiveDate>,
}

impl Default for TeamConfig {
    fn default() -> Self {
        TeamConfig {
            time_zone: Tz::UTC,
            working_days: vec![
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ],
            day_start: NaiveTime::from_hms_opt(8, 0, 0).unwrap_or_default(),
            day_end: NaiveTime::from_hms_opt(17, 0, 0).unwrap_or_default(),
            holidays: Vec::new(),
        }
    }
}

/// Parses an IANA time-zone name.
pub fn parse_time_zone(s: &str) -> Result<Tz, String> {
    s.parse::<Tz>().map_err(|_| {
        format!("`{s}` is not an IANA time zone name like America/Los_Angeles or Pacific/Auckland")
    })
}

fn time_zone<'de, D: Deserializer<'de>>(d: D) -> Result<Tz, D::Error> {
    let s = String::deserialize(d)?;
    parse_time_zone(&s).map_err(serde::de::Error::custom)
}

fn weekdays<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Weekday>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    names
        .iter()
        .map(|n| {
            n.parse::<Weekday>().map_err(|_| {
                serde::de::Error::custom(format!("`{n}` is not a weekday (mon, tue, ... sun)"))
            })
        })
        .collect()
}

fn local_time<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
    let s = String::deserialize(d)?;
    NaiveTime::parse_from_str(&s, "%H:%M")
        .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a local time like 08:30")))
}

/// Checks `[care]`: working hours that make a day.
pub fn validate(care: &CareConfig, err: &mut dyn FnMut(&str, &str, String)) {
    let teams = std::iter::once(("care".to_string(), &care.default_team)).chain(
        care.teams
            .iter()
            .map(|(n, t)| (format!("care.teams.{n}"), t)),
    );
    for (table, t) in teams {
        if t.day_start >= t.day_end {
            err(&table, "day_end", "must be after day_start".into());
        }
        if t.working_days.is_empty() {
            err(&table, "working_days", "must name at least one day".into());
        }
    }
    super::risk::validate(&care.risk, err);
    super::worklist::validate(&care.worklist, err);
    if care.check_interval < Duration::from_millis(100) {
        err("care", "check_interval", "must be at least 100ms".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teams_inherit_the_care_calendar_and_set_their_own_keys() {
        let c: CareConfig = toml::from_str(
            "time_zone = \"America/New_York\"\nday_end = \"18:00\"\nholidays = [\"2026-11-26\"]\n[teams.auckland]\ntime_zone = \"Pacific/Auckland\"\nworking_days = [\"mon\", \"tue\"]\nday_start = \"09:00\"\nholidays = [\"2026-12-25\"]\n[teams.boston]\n",
        )
        .unwrap();
        assert_eq!(c.team(None).time_zone, chrono_tz::America::New_York);
        assert_eq!(
            c.team(Some("nobody")).time_zone,
            chrono_tz::America::New_York
        );
        let a = c.team(Some("auckland"));
        assert_eq!(a.time_zone, chrono_tz::Pacific::Auckland);
        assert_eq!(a.working_days, vec![Weekday::Mon, Weekday::Tue]);
        assert_eq!(a.day_start, NaiveTime::from_hms_opt(9, 0, 0).unwrap());
        // Keys a team does not set come from [care]; those it sets replace them.
        assert_eq!(a.day_end, NaiveTime::from_hms_opt(18, 0, 0).unwrap());
        assert_eq!(a.holidays, vec!["2026-12-25".parse().unwrap()]);
        assert_eq!(c.team(Some("boston")), c.team(None));
        let e = toml::from_str::<CareConfig>("time_zone = \"Mars/Olympus\"\n").unwrap_err();
        assert!(e.to_string().contains("IANA"), "{e}");
        let e = toml::from_str::<CareConfig>("bogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
        let e = toml::from_str::<CareConfig>("[teams.x]\nday_start = \"8\"\n").unwrap_err();
        assert!(e.to_string().contains("teams.x: "), "{e}");
    }
}
