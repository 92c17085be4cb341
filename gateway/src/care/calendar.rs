//! Working time in a care team's calendar.
//!
//! A follow-up deadline reads like a nurse would say it: "within an hour"
//! (any time), "within 4 working hours", "by the end of the next working
//! day". The last two depend on the team's working week, its working
//! hours, its holidays and its time zone, DST included: 4 working hours
//! from Friday 15:00 in Los Angeles end on Monday at 11:00 local time, and
//! the Monday after the clocks change is still 8 to 5 local. All the
//! arithmetic happens on local dates and times and converts to UTC only
//! at the edges, through the IANA database (`chrono-tz`).

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use super::config::TeamConfig;

/// How far ahead a search for working time looks before giving up (a
/// calendar whose every day is a holiday).
const HORIZON_DAYS: u32 = 800;

/// A deadline as a policy writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Elapsed time, at any hour (`1h`).
    Elapsed(TimeDelta),
    /// Working time only (`4 working hours`).
    Working(TimeDelta),
    /// The end of the working day `n` working days on: 0 is the end of
    /// today's working day (or of the next one, when today's is over or
    /// today is not a working day), 1 the end of the next working day.
    EndOfWorkingDay(u32),
}

impl Deadline {
    /// Parses `1h`, `30m`, `4 working hours`, `90 working minutes`,
    /// `2 working days`, `end of working day`, `end of next working day`.
    pub fn parse(s: &str) -> Result<Deadline, String> {
        let t = s.trim();
        match t {
            "end of working day" | "end of the working day" => {
                return Ok(Deadline::EndOfWorkingDay(0))
            }
            "end of next working day" | "end of the next working day" => {
                return Ok(Deadline::EndOfWorkingDay(1))
            }
            _ => {}
        }
        let words: Vec<&str> = t.split_whitespace().collect();
        if let [n, "working", unit] = words.as_slice() {
            let n: u32 = n
                .parse()
                .map_err(|_| format!("`{s}`: `{n}` is not a whole number"))?;
            return match *unit {
                "day" | "days" => Ok(Deadline::EndOfWorkingDay(n)),
                "hour" | "hours" => Ok(Deadline::Working(TimeDelta::hours(n.into()))),
                "minute" | "minutes" => Ok(Deadline::Working(TimeDelta::minutes(n.into()))),
                _ => Err(format!(
                    "`{s}`: working time is counted in minutes, hours or days"
                )),
            };
        }
        let d = humantime::parse_duration(t).map_err(|_| {
            format!(
                "`{s}` is not a deadline like `1h`, `4 working hours` or `end of next working day`"
            )
        })?;
        TimeDelta::from_std(d)
            .map(Deadline::Elapsed)
            .map_err(|_| format!("`{s}` is too long"))
    }
}

impl std::fmt::Display for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Deadline::Elapsed(d) => write!(f, "{}m", d.num_minutes()),
            Deadline::Working(d) => write!(f, "{} working minutes", d.num_minutes()),
            Deadline::EndOfWorkingDay(0) => f.write_str("end of working day"),
            Deadline::EndOfWorkingDay(n) => write!(f, "end of {n} working days"),
        }
    }
}

/// A team's working calendar.
#[derive(Debug, Clone)]
pub struct Calendar<'a> {
    team: &'a TeamConfig,
}

impl<'a> Calendar<'a> {
    /// The calendar of `team`.
    pub fn new(team: &'a TeamConfig) -> Self {
        Calendar { team }
    }

    /// The team's time zone.
    pub fn zone(&self) -> Tz {
        self.team.time_zone
    }

    /// When `deadline` falls for something that starts at `from`.
    pub fn deadline(&self, from: DateTime<Utc>, deadline: Deadline) -> DateTime<Utc> {
        match deadline {
            Deadline::Elapsed(d) => from + d,
            Deadline::Working(d) => self.add_working(from, d),
            Deadline::EndOfWorkingDay(n) => self.end_of_working_day(from, n),
        }
    }

    /// Whether `date` (local) has working hours.
    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        self.team.working_days.contains(&date.weekday()) && !self.team.holidays.contains(&date)
    }

    /// The working hours of `date` in UTC, when it has any.
    fn hours(&self, date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if !self.is_working_day(date) {
            return None;
        }
        let start = self.instant(date.and_time(self.team.day_start));
        let end = self.instant(date.and_time(self.team.day_end));
        (start < end).then_some((start, end))
    }

    /// A local wall time as an instant. A time the clocks skip (spring
    /// forward) is taken as the first instant after the gap; a time that
    /// happens twice (fall back), as its first occurrence.
    fn instant(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let tz = self.team.time_zone;
        let mut probe = local;
        for _ in 0..4 {
            match tz.from_local_datetime(&probe) {
                LocalResult::Single(t) => return t.with_timezone(&Utc),
                LocalResult::Ambiguous(first, _) => return first.with_timezone(&Utc),
                LocalResult::None => probe += TimeDelta::minutes(30),
            }
        }
        Utc.from_utc_datetime(&local)
    }

    fn local_date(&self, t: DateTime<Utc>) -> NaiveDate {
        t.with_timezone(&self.team.time_zone).date_naive()
    }

    /// `from` plus `amount` of working time.
    pub fn add_working(&self, from: DateTime<Utc>, amount: TimeDelta) -> DateTime<Utc> {
        let mut left = amount;
        let mut date = self.local_date(from);
        for _ in 0..HORIZON_DAYS {
            if let Some((start, end)) = self.hours(date) {
                let begin = start.max(from);
                if begin < end {
                    let available = end - begin;
                    if left <= available {
                        return begin + left;
                    }
                    left -= available;
                }
            }
            date = date.succ_opt().unwrap_or(date);
        }
        from + amount
    }

    /// The end of the working day `n` working days after the local date of
    /// `from`; for `n = 0`, the end of today's working hours while they
    /// last, otherwise of the next working day (see
    /// [`Deadline::EndOfWorkingDay`]). "The next working day" after a
    /// Friday evening is Monday.
    pub fn end_of_working_day(&self, from: DateTime<Utc>, n: u32) -> DateTime<Utc> {
        let mut date = self.local_date(from);
        if n == 0 {
            if let Some((_, end)) = self.hours(date).filter(|(_, end)| from < *end) {
                return end;
            }
        }
        let mut counted = 0;
        for _ in 0..HORIZON_DAYS {
            date = date.succ_opt().unwrap_or(date);
            if let Some((_, end)) = self.hours(date) {
                counted += 1;
                if counted >= n {
                    return end;
                }
            }
        }
        from + TimeDelta::days(i64::from(n) + 1)
    }

    /// Working time between `from` and `to` (zero when `to` is earlier).
    pub fn working_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> TimeDelta {
        let mut total = TimeDelta::zero();
        let mut date = self.local_date(from);
        let last = self.local_date(to);
        while date <= last {
            if let Some((start, end)) = self.hours(date) {
                let (a, b) = (start.max(from), end.min(to));
                if a < b {
                    total += b - a;
                }
            }
            match date.succ_opt() {
                Some(d) => date = d,
                None => break,
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveTime, Weekday};

    fn team(zone: Tz, holidays: &[&str]) -> TeamConfig {
        TeamConfig {
            time_zone: zone,
            holidays: holidays.iter().map(|d| d.parse().unwrap()).collect(),
            ..TeamConfig::default()
        }
    }

    fn local(zone: Tz, s: &str) -> DateTime<Utc> {
        let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        zone.from_local_datetime(&naive)
            .earliest()
            .unwrap()
            .with_timezone(&Utc)
    }

    fn show(zone: Tz, t: DateTime<Utc>) -> String {
        t.with_timezone(&zone)
            .format("%a %Y-%m-%d %H:%M %Z")
            .to_string()
    }

    #[test]
    fn deadlines_parse_as_written() {
        assert_eq!(
            Deadline::parse("1h").unwrap(),
            Deadline::Elapsed(TimeDelta::hours(1))
        );
        assert_eq!(
            Deadline::parse("4 working hours").unwrap(),
            Deadline::Working(TimeDelta::hours(4))
        );
        assert_eq!(
            Deadline::parse("end of next working day").unwrap(),
            Deadline::EndOfWorkingDay(1)
        );
        assert_eq!(
            Deadline::parse("5 working days").unwrap(),
            Deadline::EndOfWorkingDay(5)
        );
        assert!(Deadline::parse("4 working weeks").is_err());
        assert!(Deadline::parse("soon")
            .unwrap_err()
            .contains("4 working hours"));
    }

    /// Ground truth worked by hand on a calendar: Los Angeles, 08:00-17:00
    /// Monday to Friday, Thanksgiving (26 Nov 2026) a holiday; the clocks go
    /// back on Sunday 1 Nov 2026.
    #[test]
    fn working_hours_skip_nights_weekends_and_holidays_in_los_angeles() {
        let la = chrono_tz::America::Los_Angeles;
        let cal_team = team(la, &["2026-11-26"]);
        let cal = Calendar::new(&cal_team);
        let four = Deadline::Working(TimeDelta::hours(4));
        let cases = [
            // Inside the day.
            ("2026-11-02 09:00", four, "Mon 2026-11-02 13:00 PST"),
            // Friday afternoon runs into Monday morning.
            ("2026-11-06 15:00", four, "Mon 2026-11-09 10:00 PST"),
            // Saturday counts from Monday's start.
            ("2026-11-07 11:00", four, "Mon 2026-11-09 12:00 PST"),
            // Across the DST change: Friday (PDT) to Monday (PST), local hours kept.
            ("2026-10-30 16:00", four, "Mon 2026-11-02 11:00 PST"),
            // Wednesday evening before Thanksgiving: Thursday is a holiday.
            ("2026-11-25 16:30", four, "Fri 2026-11-27 11:30 PST"),
            // Before the day starts.
            ("2026-11-03 06:00", four, "Tue 2026-11-03 12:00 PST"),
            // End of next working day.
            (
                "2026-11-02 10:00",
                Deadline::EndOfWorkingDay(1),
                "Tue 2026-11-03 17:00 PST",
            ),
            (
                "2026-11-06 20:00",
                Deadline::EndOfWorkingDay(1),
                "Mon 2026-11-09 17:00 PST",
            ),
            (
                "2026-11-25 10:00",
                Deadline::EndOfWorkingDay(1),
                "Fri 2026-11-27 17:00 PST",
            ),
            (
                "2026-11-02 10:00",
                Deadline::EndOfWorkingDay(0),
                "Mon 2026-11-02 17:00 PST",
            ),
            (
                "2026-11-07 10:00",
                Deadline::EndOfWorkingDay(0),
                "Mon 2026-11-09 17:00 PST",
            ),
            // Elapsed time ignores the calendar, and the change of clocks:
            // 1 h after 01:30 PDT on 1 Nov is 01:30 PST.
            (
                "2026-11-01 01:30",
                Deadline::Elapsed(TimeDelta::hours(1)),
                "Sun 2026-11-01 01:30 PST",
            ),
        ];
        for (from, d, want) in cases {
            assert_eq!(
                show(la, cal.deadline(local(la, from), d)),
                want,
                "{from} + {d}"
            );
        }
    }

    /// Auckland: NZDT begins on Sunday 27 Sep 2026 (02:00 → 03:00); a team
    /// that works Sundays sees a shorter UTC day but the same local hours.
    #[test]
    fn auckland_keeps_local_hours_across_its_dst_change() {
        let akl = chrono_tz::Pacific::Auckland;
        let mut t = team(akl, &[]);
        t.working_days = vec![Weekday::Sat, Weekday::Sun];
        t.day_start = NaiveTime::from_hms_opt(1, 0, 0).unwrap();
        t.day_end = NaiveTime::from_hms_opt(5, 0, 0).unwrap();
        let cal = Calendar::new(&t);
        // 01:00-05:00 on the change day is 3 hours of real time.
        let from = local(akl, "2026-09-27 01:00");
        assert_eq!(
            cal.working_between(from, local(akl, "2026-09-27 06:00")),
            TimeDelta::hours(3)
        );
        // 2 working hours from 01:00 end at 04:00 local (02:00-03:00 never happens).
        assert_eq!(
            show(akl, cal.add_working(from, TimeDelta::hours(2))),
            "Sun 2026-09-27 04:00 NZDT"
        );
        // Saturday 04:00 + 2 working hours: 1 h Saturday, then Sunday 01:00 + 1 h.
        assert_eq!(
            show(
                akl,
                cal.add_working(local(akl, "2026-09-26 04:00"), TimeDelta::hours(2))
            ),
            "Sun 2026-09-27 03:00 NZDT"
        );
    }

    #[test]
    fn a_calendar_without_working_days_does_not_loop_forever() {
        let mut t = team(Tz::UTC, &[]);
        t.working_days = vec![];
        let cal = Calendar::new(&t);
        let from = Utc::now();
        assert_eq!(
            cal.add_working(from, TimeDelta::hours(4)),
            from + TimeDelta::hours(4)
        );
    }
}
