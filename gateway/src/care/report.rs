//! The RPM program report: which remote-monitoring CPT codes a month's
//! data and care time support, per patient.
//!
//! A program has to show, per patient, that the three parts of remote
//! monitoring happened: set-up, device data, treatment management (HHS OIG
//! found 43 % of enrollees without all three in 2024). The gateway holds
//! the evidence for the first two and the care-time log for the third;
//! this report reads them against the code definitions of the **CY2026
//! Medicare Physician Fee Schedule final rule (90 FR 49266, FR Doc.
//! 2025-19787, effective 1 January 2026)**:
//!
//! | code | supported when |
//! |---|---|
//! | 99453 | set-up, once per episode: the first 30-day period of the episode with at least 2 data days |
//! | 99445 | device data on 2–15 days of a 30-day period (not with 99454) |
//! | 99454 | device data on 16–30 days of a 30-day period |
//! | 99470 | 10–19 care minutes in the calendar month with at least one real-time interactive communication (not with 99457) |
//! | 99457 | the first 20 care minutes in the calendar month with at least one real-time interactive communication |
//! | 99458 | each further full 20 minutes after 99457 (units) |
//!
//! What it counts, and how:
//!
//! - **Data days** are distinct *local* days (the patient's IANA zone, or
//!   their care team's) with at least one automatically transmitted
//!   reading: two devices on one day are one day; readings typed in by a
//!   person (annotation `entry = "manual"`) never count. A local day is 23
//!   or 25 hours long across a DST change.
//! - **30-day periods** count from the patient's monitoring start (set, or
//!   the local date of their first automatically transmitted reading):
//!   period *n* is days `30(n-1)` to `30n-1` after it. A period belongs to
//!   the calendar month in which it **ends**, so every period is reported
//!   exactly once; a month holds zero, one or two period ends.
//! - **Care minutes** are the counted entries of the care-time log (a
//!   correction replaces the entry it corrects) performed in the local
//!   calendar month, summed in seconds and cut to whole minutes.
//!
//! It is a data-sufficiency report, not billing advice: consent, medical
//! necessity, who may bill and the one-biller-per-period rule are decided
//! elsewhere, and the report says so in every format.

use chrono::{DateTime, Datelike, LocalResult, NaiveDate, NaiveTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use rusqlite::Connection;
use serde::Serialize;
use std::collections::BTreeSet;

use super::config::{parse_time_zone, CareConfig};
use crate::store::patients::{self, ReportPatient};
use crate::store::{care_time, queries, StoreError};

/// The rule the codes are read against.
pub const FEE_SCHEDULE: &str =
    "CY2026 Medicare Physician Fee Schedule final rule, 90 FR 49266 (FR Doc. 2025-19787), effective 2026-01-01";

/// What the report is and is not; in every format.
pub const NOTICE: &str = "Data-sufficiency report: what the gateway's device data and care-time log support under the CPT remote physiologic monitoring codes. Not billing advice: consent, medical necessity, the billing practitioner and one biller per 30-day period are documented and decided elsewhere.";

/// How periods and months are counted; in the JSON report.
pub const METHOD: &str = "30-day periods count from the patient's monitoring start in the patient's time zone and are reported in the calendar month in which they end; data days are distinct local days with automatically transmitted readings (manual entries excluded); care minutes are counted care-time entries performed in the local calendar month.";

/// Days in a device period.
pub const PERIOD_DAYS: i64 = 30;

/// A CPT code of remote physiologic monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Code {
    /// Set-up and patient education, once per episode.
    #[serde(rename = "99453")]
    Setup,
    /// Device supply, data on 2–15 days of a 30-day period (new in 2026).
    #[serde(rename = "99445")]
    Device2To15,
    /// Device supply, data on 16–30 days of a 30-day period.
    #[serde(rename = "99454")]
    Device16To30,
    /// First 10 minutes of treatment management in a month (new in 2026).
    #[serde(rename = "99470")]
    Management10,
    /// First 20 minutes of treatment management in a month.
    #[serde(rename = "99457")]
    Management20,
    /// Each additional 20 minutes.
    #[serde(rename = "99458")]
    ManagementAdditional20,
}

impl Code {
    /// Every code, in report column order.
    pub const ALL: [Code; 6] = [
        Code::Setup,
        Code::Device2To15,
        Code::Device16To30,
        Code::Management10,
        Code::Management20,
        Code::ManagementAdditional20,
    ];

    /// The CPT code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::Setup => "99453",
            Code::Device2To15 => "99445",
            Code::Device16To30 => "99454",
            Code::Management10 => "99470",
            Code::Management20 => "99457",
            Code::ManagementAdditional20 => "99458",
        }
    }
}

/// A code and its units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Units {
    /// The code.
    pub code: Code,
    /// Units (1 except for 99458).
    pub units: u32,
}

fn one(code: Code) -> Units {
    Units { code, units: 1 }
}

/// The device codes one 30-day period supports: 99454 with data on 16 or
/// more days, else 99445 with 2 or more (never both); 99453 with the
/// first period of the episode that has 2 or more.
pub fn device_codes(data_days: u32, first_of_episode: bool) -> Vec<Units> {
    let mut out = Vec::new();
    if first_of_episode && data_days >= 2 {
        out.push(one(Code::Setup));
    }
    if data_days >= 16 {
        out.push(one(Code::Device16To30));
    } else if data_days >= 2 {
        out.push(one(Code::Device2To15));
    }
    out
}

/// The treatment-management codes of a calendar month: none without a
/// real-time interactive communication; 99457 from 20 minutes, plus one
/// 99458 per further full 20; else 99470 from 10 minutes (never with 99457).
pub fn treatment_codes(minutes: u32, interactive_contacts: u32) -> Vec<Units> {
    if interactive_contacts == 0 {
        return Vec::new();
    }
    if minutes >= 20 {
        let mut out = vec![one(Code::Management20)];
        let more = (minutes - 20) / 20;
        if more > 0 {
            out.push(Units {
                code: Code::ManagementAdditional20,
                units: more,
            });
        }
        out
    } else if minutes >= 10 {
        vec![one(Code::Management10)]
    } else {
        Vec::new()
    }
}

/// The periods of an episode starting on `start` that end in
/// `[first, last]`: (number from 1, first day, last day).
pub fn periods_ending_in(
    start: NaiveDate,
    first: NaiveDate,
    last: NaiveDate,
) -> Vec<(u32, NaiveDate, NaiveDate)> {
    let mut out = Vec::new();
    // The first period whose last day is on or after `first`.
    let behind = (first - start).num_days() - (PERIOD_DAYS - 1);
    let mut n = if behind <= 0 {
        0
    } else {
        (behind + PERIOD_DAYS - 1) / PERIOD_DAYS
    };
    loop {
        let from = start + TimeDelta::days(n * PERIOD_DAYS);
        let to = from + TimeDelta::days(PERIOD_DAYS - 1);
        if to > last {
            break;
        }
        if to >= first {
            out.push((u32::try_from(n + 1).unwrap_or(u32::MAX), from, to));
        }
        n += 1;
    }
    out
}

/// The first instant (ms) of local day `d` in `tz`: midnight, or the end
/// of a DST gap that swallowed midnight.
pub fn day_start(tz: Tz, d: NaiveDate) -> i64 {
    let mut t = d.and_time(NaiveTime::MIN);
    for _ in 0..48 {
        match tz.from_local_datetime(&t) {
            LocalResult::Single(x) => return x.timestamp_millis(),
            LocalResult::Ambiguous(a, _) => return a.timestamp_millis(),
            LocalResult::None => t += TimeDelta::minutes(30),
        }
    }
    d.and_time(NaiveTime::MIN).and_utc().timestamp_millis()
}

/// The local date of `ms` in `tz`.
pub fn local_date(tz: Tz, ms: i64) -> NaiveDate {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .with_timezone(&tz)
        .date_naive()
}

/// Distinct local days of time-ordered instants: a date conversion per
/// day, not per reading (the next day's first instant is kept).
struct Days {
    tz: Tz,
    next: i64,
}

impl Days {
    fn new(tz: Tz) -> Days {
        Days { tz, next: i64::MIN }
    }

    /// The local day of `ms` if it is a new one.
    fn push(&mut self, ms: i64) -> Option<NaiveDate> {
        if ms < self.next {
            return None;
        }
        let d = local_date(self.tz, ms);
        self.next = d
            .succ_opt()
            .map(|n| day_start(self.tz, n))
            .unwrap_or(i64::MAX);
        Some(d)
    }
}

/// Finds the first period of an episode with at least 2 data days, fed
/// distinct days in order.
#[derive(Debug)]
struct FirstPeriod {
    start: NaiveDate,
    current: Option<(i64, u32)>,
    found: Option<u32>,
}

impl FirstPeriod {
    fn new(start: NaiveDate) -> FirstPeriod {
        FirstPeriod {
            start,
            current: None,
            found: None,
        }
    }

    fn day(&mut self, d: NaiveDate) {
        if self.found.is_some() || d < self.start {
            return;
        }
        let n = (d - self.start).num_days() / PERIOD_DAYS;
        let days = match self.current {
            Some((m, k)) if m == n => k + 1,
            _ => 1,
        };
        self.current = Some((n, days));
        if days >= 2 {
            self.found = u32::try_from(n + 1).ok();
        }
    }
}

/// What to report on.
#[derive(Debug, Clone)]
pub struct RpmQuery {
    /// The calendar month (its first day).
    pub month: NaiveDate,
    /// Only this care team.
    pub care_team: Option<String>,
    /// Only these care teams (a care-team token's scope); `None`: all.
    pub scope: Option<Vec<String>>,
    /// Now: which periods are over.
    pub now: DateTime<Utc>,
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The period asked for is not a month.
    #[error("period: `{0}` is not a calendar month like 2026-11")]
    BadMonth(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Parses `YYYY-MM` to the month's first day.
pub fn parse_month(s: &str) -> Result<NaiveDate, ReportError> {
    let bad = || ReportError::BadMonth(s.to_string());
    let (y, m) = s.split_once('-').ok_or_else(bad)?;
    if y.len() != 4 || m.len() != 2 {
        return Err(bad());
    }
    let (y, m) = (
        y.parse::<i32>().map_err(|_| bad())?,
        m.parse::<u32>().map_err(|_| bad())?,
    );
    NaiveDate::from_ymd_opt(y, m, 1)
        .filter(|d| (2000..=2200).contains(&d.year()))
        .ok_or_else(bad)
}

fn month_last(first: NaiveDate) -> NaiveDate {
    let next = if first.month() == 12 {
        NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
    };
    next.and_then(|n| n.pred_opt()).unwrap_or(first)
}

/// One 30-day device period of a patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodReport {
    /// Number in the episode, from 1.
    pub number: u32,
    /// First local day.
    pub start: NaiveDate,
    /// Last local day.
    pub end: NaiveDate,
    /// Whether the period is over (its counts are final).
    pub complete: bool,
    /// Local days with automatically transmitted data.
    pub data_days: u32,
    /// Local days with manually entered readings only (not counted).
    pub manual_only_days: u32,
    /// The device codes the period supports.
    pub codes: Vec<Units>,
}

/// A patient's calendar month of treatment management.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonthReport {
    /// First local day.
    pub start: NaiveDate,
    /// Last local day.
    pub end: NaiveDate,
    /// Local days of the month with automatically transmitted data.
    pub data_days: u32,
    /// Care minutes (counted entries).
    pub care_minutes: u32,
    /// Minutes of entries with real-time interactive communication.
    pub interactive_minutes: u32,
    /// Entries with real-time interactive communication.
    pub interactive_contacts: u32,
    /// Counted care-time entries.
    pub entries: u32,
    /// The treatment-management codes the month supports.
    pub codes: Vec<Units>,
}

/// Something a program should look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// Stable code.
    pub code: &'static str,
    /// What it means for this patient.
    pub detail: String,
}

/// One patient's month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatientReport {
    /// Patient.
    pub patient_id: String,
    /// Care team.
    pub care_team: Option<String>,
    /// The time zone days are counted in.
    pub time_zone: String,
    /// Where it comes from: `patient` or `care_team`.
    pub time_zone_from: &'static str,
    /// The episode's first day.
    pub monitoring_start: Option<NaiveDate>,
    /// Where it comes from: `patient` (set) or `first_reading`.
    pub monitoring_start_from: Option<&'static str>,
    /// Device periods ending in the month.
    pub periods: Vec<PeriodReport>,
    /// Treatment management in the month.
    pub month: MonthReport,
    /// Every code supported this month (periods and month).
    pub codes: Vec<Units>,
    /// Warnings.
    pub warnings: Vec<Warning>,
}

/// Patients and units per code over the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Total {
    /// The code.
    pub code: Code,
    /// Patients it is supported for.
    pub patients: u32,
    /// Units.
    pub units: u32,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RpmReport {
    /// The calendar month, `YYYY-MM`.
    pub period: String,
    /// When it was made.
    pub generated_at: DateTime<Utc>,
    /// What it is not.
    pub notice: &'static str,
    /// The rule the codes are read against.
    pub fee_schedule: &'static str,
    /// How periods, days and minutes are counted.
    pub method: &'static str,
    /// The care team asked for.
    pub care_team: Option<String>,
    /// Per code.
    pub totals: Vec<Total>,
    /// Per patient, by id.
    pub patients: Vec<PatientReport>,
}

fn in_scope(q: &RpmQuery, team: &Option<String>) -> bool {
    if q.care_team.is_some() && *team != q.care_team {
        return false;
    }
    match (&q.scope, team) {
        (None, _) => true,
        (Some(teams), Some(t)) => teams.contains(t),
        (Some(_), None) => false,
    }
}

/// What the store says about one patient's month, before any rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// Monitoring start and whether it was set (else: first reading).
    pub start: Option<(NaiveDate, bool)>,
    /// Local days with automatic data, from the earliest period start (or
    /// the month's first day) to the month's end or the last period's.
    pub data_days: BTreeSet<NaiveDate>,
    /// Local days with manual readings in the same window.
    pub manual_days: BTreeSet<NaiveDate>,
    /// The first period of the episode with at least 2 data days.
    pub first_qualifying: Option<u32>,
    /// Counted care-time entries of the month: (seconds, interactive).
    pub care: Vec<(i64, bool)>,
}

/// The pure part: a patient's month from its facts. `today` is the
/// patient's local date now.
pub fn assess(
    month: NaiveDate,
    today: NaiveDate,
    facts: &Facts,
) -> (Vec<PeriodReport>, MonthReport, Vec<Warning>) {
    let last = month_last(month);
    let mut warnings = Vec::new();
    let mut warn = |code: &'static str, detail: String| warnings.push(Warning { code, detail });
    let count = |set: &BTreeSet<NaiveDate>, a: NaiveDate, b: NaiveDate| {
        u32::try_from(set.range(a..=b).count()).unwrap_or(u32::MAX)
    };
    let periods: Vec<PeriodReport> = match facts.start {
        None => {
            warn(
                "no_device_data",
                "no automatically transmitted reading yet and no monitoring start set: no 30-day period".into(),
            );
            Vec::new()
        }
        Some((start, _)) => periods_ending_in(start, month, last)
            .into_iter()
            .map(|(number, from, to)| {
                let data_days = count(&facts.data_days, from, to);
                let manual_only_days = u32::try_from(
                    facts
                        .manual_days
                        .range(from..=to)
                        .filter(|d| !facts.data_days.contains(d))
                        .count(),
                )
                .unwrap_or(u32::MAX);
                PeriodReport {
                    number,
                    start: from,
                    end: to,
                    complete: to < today,
                    data_days,
                    manual_only_days,
                    codes: device_codes(data_days, facts.first_qualifying == Some(number)),
                }
            })
            .collect(),
    };
    let seconds: i64 = facts.care.iter().map(|c| c.0).sum();
    let interactive_seconds: i64 = facts.care.iter().filter(|c| c.1).map(|c| c.0).sum();
    let contacts =
        u32::try_from(facts.care.iter().filter(|c| c.1 && c.0 > 0).count()).unwrap_or(u32::MAX);
    let minutes = u32::try_from(seconds.max(0) / 60).unwrap_or(u32::MAX);
    let month_report = MonthReport {
        start: month,
        end: last,
        data_days: count(&facts.data_days, month, last),
        care_minutes: minutes,
        interactive_minutes: u32::try_from(interactive_seconds.max(0) / 60).unwrap_or(u32::MAX),
        interactive_contacts: contacts,
        entries: u32::try_from(facts.care.iter().filter(|c| c.0 > 0).count()).unwrap_or(u32::MAX),
        codes: treatment_codes(minutes, contacts),
    };
    for p in &periods {
        if p.data_days < 2 {
            warn(
                "few_data_days",
                format!(
                    "period {} ({} to {}): {} day(s) with device data; device supply needs at least 2",
                    p.number, p.start, p.end, p.data_days
                ),
            );
        }
        if p.manual_only_days > 0 {
            warn(
                "manual_readings_not_counted",
                format!(
                    "period {}: {} day(s) with only manually entered readings, not counted as device data",
                    p.number, p.manual_only_days
                ),
            );
        }
        if !p.complete {
            warn(
                "period_in_progress",
                format!(
                    "period {} ends {}: its data days may still grow",
                    p.number, p.end
                ),
            );
        }
    }
    if facts.start.is_some() && periods.is_empty() {
        warn(
            "no_period_ends_this_month",
            "no 30-day period of this patient ends in this month; its days are reported with the month its period ends in".into(),
        );
    }
    let data = periods.iter().any(|p| p.data_days >= 2) || month_report.data_days >= 2;
    if data && contacts == 0 {
        warn(
            "no_interactive_contact",
            "device data but no real-time interactive communication logged this month: no treatment-management code".into(),
        );
    }
    if minutes > 0 && contacts == 0 {
        warn(
            "minutes_without_interactive_contact",
            format!("{minutes} care minute(s) without a real-time interactive communication"),
        );
    }
    if contacts > 0 && minutes < 10 {
        warn(
            "minutes_below_threshold",
            format!("{minutes} care minute(s): treatment management starts at 10"),
        );
    }
    if minutes > 0 && month_report.data_days == 0 {
        warn(
            "minutes_without_device_data",
            "care minutes logged in a month without a day of device data".into(),
        );
    }
    (periods, month_report, warnings)
}

/// Gathers one patient's facts from the store.
fn facts(
    conn: &Connection,
    p: &ReportPatient,
    tz: Tz,
    month: NaiveDate,
) -> Result<Facts, StoreError> {
    let last = month_last(month);
    let month_from = day_start(tz, month);
    let month_to = last.succ_opt().map_or(i64::MAX, |d| day_start(tz, d));
    let care = care_time::counted_between(conn, &p.patient_id, month_from, month_to)?
        .into_iter()
        .map(|c| (c.seconds, c.interactive))
        .collect();
    let readings = queries::PatientReadings::of(conn, &p.patient_id)?;
    let start = match p.monitoring_start {
        Some(d) => Some((d, true)),
        None => readings
            .first_automatic()?
            .map(|ms| (local_date(tz, ms), false)),
    };
    let mut f = Facts {
        start,
        care,
        ..Default::default()
    };
    let Some((start, _)) = start else {
        return Ok(f);
    };
    let periods = periods_ending_in(start, month, last);
    let from = periods.first().map_or(month, |p| p.1.min(month));
    let to = periods.last().map_or(last, |p| p.2.max(last));
    let (from_ms, to_ms) = (
        day_start(tz, from),
        to.succ_opt().map_or(i64::MAX, |d| day_start(tz, d)),
    );
    let mut first = FirstPeriod::new(start);
    // Set-up is supported once, in the episode's first period with 2 data
    // days: look for it before the window, stopping as soon as it is found.
    if start < from && !periods.is_empty() {
        let mut days = Days::new(tz);
        readings.each_time(day_start(tz, start), from_ms, |ms, manual| {
            if !manual {
                if let Some(d) = days.push(ms) {
                    first.day(d);
                }
            }
            first.found.is_none()
        })?;
    }
    let mut days = Days::new(tz);
    readings.each_time(from_ms, to_ms, |ms, manual| {
        if manual {
            f.manual_days.insert(local_date(tz, ms));
        } else if let Some(d) = days.push(ms) {
            f.data_days.insert(d);
            first.day(d);
        }
        true
    })?;
    f.first_qualifying = first.found;
    Ok(f)
}

/// Builds the report of a calendar month.
pub fn rpm_report(
    conn: &Connection,
    care: &CareConfig,
    q: &RpmQuery,
) -> Result<RpmReport, ReportError> {
    let mut out = Vec::new();
    for p in patients::report_patients(conn)? {
        if !in_scope(q, &p.care_team) {
            continue;
        }
        let team_zone = care.team(p.care_team.as_deref()).time_zone;
        let own = p.time_zone.as_deref().and_then(|z| parse_time_zone(z).ok());
        let (tz, tz_from) = match own {
            Some(z) => (z, "patient"),
            None => (team_zone, "care_team"),
        };
        let f = facts(conn, &p, tz, q.month)?;
        let today = q.now.with_timezone(&tz).date_naive();
        let (periods, month, warnings) = assess(q.month, today, &f);
        let mut codes: Vec<Units> = periods
            .iter()
            .flat_map(|p| p.codes.iter().copied())
            .chain(month.codes.iter().copied())
            .collect();
        codes.sort_by_key(|u| u.code);
        out.push(PatientReport {
            patient_id: p.patient_id,
            care_team: p.care_team,
            time_zone: tz.name().to_string(),
            time_zone_from: tz_from,
            monitoring_start: f.start.map(|s| s.0),
            monitoring_start_from: f
                .start
                .map(|s| if s.1 { "patient" } else { "first_reading" }),
            periods,
            month,
            codes,
            warnings,
        });
    }
    let totals = Code::ALL
        .iter()
        .map(|&code| {
            let mut t = Total {
                code,
                patients: 0,
                units: 0,
            };
            for p in &out {
                let units: u32 = p
                    .codes
                    .iter()
                    .filter(|u| u.code == code)
                    .map(|u| u.units)
                    .sum();
                if units > 0 {
                    t.patients += 1;
                    t.units += units;
                }
            }
            t
        })
        .collect();
    Ok(RpmReport {
        period: q.month.format("%Y-%m").to_string(),
        generated_at: q.now,
        notice: NOTICE,
        fee_schedule: FEE_SCHEDULE,
        method: METHOD,
        care_team: q.care_team.clone(),
        totals,
        patients: out,
    })
}

/// The CSV columns.
pub const CSV_HEADER: &str = "period,patient_id,care_team,time_zone,line,number,start,end,complete,data_days,manual_only_days,care_minutes,interactive_minutes,interactive_contacts,99453,99445,99454,99470,99457,99458,warnings";

/// One CSV cell. Text a spreadsheet would take for a formula (a care
/// team or patient id starting with `=`, `+`, `-`, `@`, tab or CR) is
/// prefixed with `'` (the OWASP advice against CSV injection).
fn csv_field(s: &str) -> String {
    let s = match s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        true => format!("'{s}"),
        false => s.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn units_of(codes: &[Units], code: Code) -> String {
    let n: u32 = codes
        .iter()
        .filter(|u| u.code == code)
        .map(|u| u.units)
        .sum();
    n.to_string()
}

/// The report as CSV: a `#` line with the notice, the header, then per
/// patient a `device_period` line per period ending in the month and one
/// `treatment_month` line (with the patient's warnings), so that summing a
/// code's column counts its units.
pub fn to_csv(r: &RpmReport) -> String {
    let mut s = format!(
        "# {} Codes read against the {}.\n{CSV_HEADER}\n",
        NOTICE, FEE_SCHEDULE
    );
    for p in &r.patients {
        let head = [
            csv_field(&r.period),
            csv_field(&p.patient_id),
            csv_field(p.care_team.as_deref().unwrap_or("")),
            csv_field(&p.time_zone),
        ]
        .join(",");
        for per in &p.periods {
            let codes: Vec<String> = Code::ALL.iter().map(|&c| units_of(&per.codes, c)).collect();
            s.push_str(&format!(
                "{head},device_period,{},{},{},{},{},{},,,,{},\n",
                per.number,
                per.start,
                per.end,
                per.complete,
                per.data_days,
                per.manual_only_days,
                codes.join(",")
            ));
        }
        let m = &p.month;
        let codes: Vec<String> = Code::ALL.iter().map(|&c| units_of(&m.codes, c)).collect();
        let warnings: Vec<&str> = p.warnings.iter().map(|w| w.code).collect();
        s.push_str(&format!(
            "{head},treatment_month,,{},{},{},{},,{},{},{},{},{}\n",
            m.start,
            m.end,
            m.end
                < r.generated_at
                    .with_timezone(&zone(&p.time_zone))
                    .date_naive(),
            m.data_days,
            m.care_minutes,
            m.interactive_minutes,
            m.interactive_contacts,
            codes.join(","),
            csv_field(&warnings.join(";"))
        ));
    }
    s
}

fn zone(name: &str) -> Tz {
    parse_time_zone(name).unwrap_or(Tz::UTC)
}

/// The report for a terminal.
pub fn render(r: &RpmReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "RPM program report {}", r.period);
    let _ = writeln!(s, "{NOTICE}");
    let _ = writeln!(s, "Codes read against the {FEE_SCHEDULE}.");
    for p in &r.patients {
        let _ = writeln!(
            s,
            "\n{} (team {}, {}; monitoring since {})",
            p.patient_id,
            p.care_team.as_deref().unwrap_or("-"),
            p.time_zone,
            p.monitoring_start
                .map_or_else(|| "-".to_string(), |d| d.to_string())
        );
        for per in &p.periods {
            let _ = writeln!(
                s,
                "  period {} {}..{}{}: {} data day(s) -> {}",
                per.number,
                per.start,
                per.end,
                if per.complete { "" } else { " (in progress)" },
                per.data_days,
                codes_text(&per.codes)
            );
        }
        let m = &p.month;
        let _ = writeln!(
            s,
            "  month: {} care minute(s), {} interactive in {} contact(s) -> {}",
            m.care_minutes,
            m.interactive_minutes,
            m.interactive_contacts,
            codes_text(&m.codes)
        );
        for w in &p.warnings {
            let _ = writeln!(s, "  ! {}: {}", w.code, w.detail);
        }
    }
    let _ = writeln!(s, "\ntotals:");
    for t in &r.totals {
        let _ = writeln!(
            s,
            "  {}: {} patient(s), {} unit(s)",
            t.code.as_str(),
            t.patients,
            t.units
        );
    }
    s
}

fn codes_text(codes: &[Units]) -> String {
    if codes.is_empty() {
        return "none".into();
    }
    codes
        .iter()
        .map(|u| {
            if u.units == 1 {
                u.code.as_str().to_string()
            } else {
                format!("{} x{}", u.code.as_str(), u.units)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
