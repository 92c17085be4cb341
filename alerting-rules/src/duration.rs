//! Durations written the way people say them: `"90m"`, `"24h"`, `"7d"`.
//!
//! Rule files are read by clinicians, so a window is `"7d"`, not
//! `604800`. Only whole numbers with one unit suffix are accepted (`s`, `m`,
//! `h`, `d`, `w`); anything else is a load error rather than a guess.

use std::fmt;
use std::str::FromStr;

use chrono::TimeDelta;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration parsed from a rule file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleDuration(TimeDelta);

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{0}`: expected a whole number and a unit, like \"90m\", \"24h\" or \"7d\" (units: s, m, h, d, w)")]
pub struct DurationError(pub String);

impl RuleDuration {
    /// The duration as a chrono `TimeDelta`.
    pub const fn delta(self) -> TimeDelta {
        self.0
    }

    /// Wraps a `TimeDelta` (for code that builds rules or overrides in Rust).
    pub const fn from_delta(delta: TimeDelta) -> Self {
        RuleDuration(delta)
    }

    /// `n` hours.
    pub const fn hours(n: i64) -> Self {
        RuleDuration(TimeDelta::hours(n))
    }

    /// `n` days.
    pub const fn days(n: i64) -> Self {
        RuleDuration(TimeDelta::days(n))
    }
}

impl FromStr for RuleDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let err = || DurationError(s.to_string());
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (num, unit) = t.split_at(split);
        let n: i64 = num.parse().map_err(|_| err())?;
        // The bound keeps every product below i64 overflow and far above any
        // clinically meaningful window.
        if n > 100_000 {
            return Err(err());
        }
        let delta = match unit.trim() {
            "s" => TimeDelta::seconds(n),
            "m" | "min" => TimeDelta::minutes(n),
            "h" => TimeDelta::hours(n),
            "d" => TimeDelta::days(n),
            "w" => TimeDelta::weeks(n),
            _ => return Err(err()),
        };
        Ok(RuleDuration(delta))
    }
}

impl fmt::Display for RuleDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_delta(self.0, f)
    }
}

/// Writes a `TimeDelta` in the largest unit that divides it exactly, so a
/// duration prints back as it was written (`"7d"`, not `"168h"`).
pub(crate) fn format_delta(d: TimeDelta, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let s = d.num_seconds();
    if s != 0 && s % 604_800 == 0 && s / 604_800 >= 2 {
        // Weeks only for multi-week values; "7d" reads better than "1w".
        return write!(f, "{}w", s / 604_800);
    }
    if s != 0 && s % 86_400 == 0 {
        write!(f, "{}d", s / 86_400)
    } else if s != 0 && s % 3_600 == 0 {
        write!(f, "{}h", s / 3_600)
    } else if s % 60 == 0 {
        write!(f, "{}m", s / 60)
    } else {
        write!(f, "{s}s")
    }
}

/// Human form of a `TimeDelta` for messages (`"2d 3h"`).
pub fn humanize(d: TimeDelta) -> String {
    let total = d.num_minutes().max(0);
    let (days, hours, minutes) = (total / 1440, (total % 1440) / 60, total % 60);
    match (days, hours, minutes) {
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

impl Serialize for RuleDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RuleDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (text, secs, back) in [
            ("90m", 5_400, "90m"),
            ("24h", 86_400, "1d"),
            ("7d", 604_800, "7d"),
            ("30s", 30, "30s"),
            ("2w", 1_209_600, "2w"),
            (" 3h ", 10_800, "3h"),
        ] {
            let d: RuleDuration = text.parse().unwrap();
            assert_eq!(d.delta().num_seconds(), secs, "{text}");
            assert_eq!(d.to_string(), back);
        }
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for text in ["", "7", "d", "1.5h", "-3h", "3 days", "3y", "999999999d"] {
            assert!(text.parse::<RuleDuration>().is_err(), "{text}");
        }
    }

    #[test]
    fn humanizes() {
        assert_eq!(humanize(TimeDelta::minutes(90)), "1h 30m");
        assert_eq!(humanize(TimeDelta::hours(51)), "2d 3h");
        assert_eq!(humanize(TimeDelta::hours(48)), "2d");
    }
}
