//! The alert-burden report: how much each rule asks of each care team.
//!
//! Alert fatigue is the first reason remote-monitoring programs fail: when
//! a quarter of submissions are in alert range, nurses stop answering in
//! time. A program tunes its rules only if it can see what they cost, so
//! this report reads the `alerts` and `alert_history` tables of a period
//! and gives, per care team and per rule:
//!
//! - alerts per 100 patient-days (the team's patients, counted from their
//!   enrolment, within the period);
//! - notified vs recorded silently (snoozed, device offline, flapping);
//! - the share resolved without an acknowledgement within 1 h of firing
//!   (likely noise: nobody needed to act, the condition went away);
//! - the share that flapped;
//! - time to acknowledge, p50 and p90;
//! - re-notifications (notified updates of an open alert).
//!
//! An alert belongs to the period in which it fired. Care-team scoping is
//! the caller's: the API passes a care-team token's teams, and a patient
//! without a team is reported under no team (visible to operators only).
//! The CLI (`alerts burden`) and `GET /api/v1/reports/alert-burden` share
//! this code.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::Connection;
use serde::Serialize;

use crate::store::alerts::{self, ms};
use crate::store::{patients, StoreError};

/// "Resolved without acknowledgement within this long of firing": noise.
pub const NOISE_WITHIN: TimeDelta = TimeDelta::hours(1);

/// What to report on.
#[derive(Debug, Clone)]
pub struct BurdenQuery {
    /// Start of the period (alerts fired at or after).
    pub since: DateTime<Utc>,
    /// End of the period (alerts fired before).
    pub until: DateTime<Utc>,
    /// Only this care team.
    pub care_team: Option<String>,
    /// Only these care teams (a care-team token's scope); `None`: all.
    pub scope: Option<Vec<String>>,
}

/// The figures of one rule (or of all rules) for one care team.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Alerts fired in the period.
    pub alerts: u64,
    /// Of which the firing was notified.
    pub notified: u64,
    /// Of which the firing was recorded without a notification.
    pub silent: u64,
    /// Alerts per 100 patient-days (`None` without patient-days).
    pub per_100_patient_days: Option<f64>,
    /// Share of alerts resolved without acknowledgement within 1 h of firing.
    pub resolved_unacknowledged_within_1h: f64,
    /// Share of alerts that flapped.
    pub flapping: f64,
    /// Alerts acknowledged.
    pub acknowledged: u64,
    /// Time from firing to acknowledgement, median (seconds).
    pub ack_p50_seconds: Option<f64>,
    /// Time from firing to acknowledgement, 90th percentile (seconds).
    pub ack_p90_seconds: Option<f64>,
    /// Notified updates of open alerts.
    pub renotifications: u64,
}

/// One rule's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleBurden {
    pub rule_id: String,
    /// Figures.
    #[serde(flatten)]
    pub stats: Stats,
}

/// One care team's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TeamBurden {
    /// Care team (`None`: patients without a team).
    pub care_team: Option<String>,
    /// Patients counted for patient-days.
    pub patients: u64,
    /// Patient-days in the period.
    pub patient_days: f64,
    /// Every rule together.
    pub total: Stats,
    /// Per rule, by rule id.
    pub rules: Vec<RuleBurden>,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BurdenReport {
    /// Start of the period.
    pub since: DateTime<Utc>,
    /// End of the period.
    pub until: DateTime<Utc>,
    /// Per care team, by name (no team first).
    pub teams: Vec<TeamBurden>,
}

#[derive(Default)]
struct Acc {
    alerts: u64,
    notified: u64,
    noise: u64,
    flapping: u64,
    ack: Vec<f64>,
    renotified: u64,
}

impl Acc {
    fn stats(&self, patient_days: f64) -> Stats {
        let share = |n: u64| {
            if self.alerts == 0 {
                0.0
            } else {
                round(n as f64 / self.alerts as f64)
            }
        };
        let mut ack = self.ack.clone();
        ack.sort_by(f64::total_cmp);
        Stats {
            alerts: self.alerts,
            notified: self.notified,
            silent: self.alerts - self.notified,
            per_100_patient_days: (patient_days > 0.0)
                .then(|| round(self.alerts as f64 * 100.0 / patient_days)),
            resolved_unacknowledged_within_1h: share(self.noise),
            flapping: share(self.flapping),
            acknowledged: ack.len() as u64,
            ack_p50_seconds: percentile(&ack, 0.5),
            ack_p90_seconds: percentile(&ack, 0.9),
            renotifications: self.renotified,
        }
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn in_scope(q: &BurdenQuery, team: &Option<String>) -> bool {
    if q.care_team.is_some() && *team != q.care_team {
        return false;
    }
    match (&q.scope, team) {
        (None, _) => true,
        (Some(teams), Some(t)) => teams.contains(t),
        (Some(_), None) => false,
    }
}

/// Builds the report of the period.
pub fn burden(conn: &Connection, q: &BurdenQuery) -> Result<BurdenReport, StoreError> {
    let since = q.since.timestamp_millis();
    let until = q.until.timestamp_millis();
    // Patient-days: each patient from enrolment (or the period's start) to
    // the period's end (or now, if sooner).
    let end = until.min(Utc::now().timestamp_millis());
    let mut days: BTreeMap<Option<String>, (u64, f64)> = BTreeMap::new();
    for (team, enrolled) in patients::enrolments(conn)? {
        if !in_scope(q, &team) {
            continue;
        }
        let from = enrolled.max(since);
        let d = (end - from).max(0) as f64 / 86_400_000.0;
        let e = days.entry(team).or_default();
        e.0 += 1;
        e.1 += d;
    }
    let mut acc: BTreeMap<Option<String>, BTreeMap<String, Acc>> = BTreeMap::new();
    for f in alerts::fired_between(conn, since, until)? {
        let alerts::FiredSummary {
            rule_id: rule,
            care_team: team,
            fired_at: fired,
            acknowledged_at: acked,
            resolved_at: resolved,
            flapping,
            fire_notified: notified,
            renotified,
            flapped,
        } = f;
        if !in_scope(q, &team) {
            continue;
        }
        let a = acc.entry(team).or_default().entry(rule).or_default();
        a.alerts += 1;
        a.notified += u64::from(notified.unwrap_or(false));
        let noise = acked.is_none()
            && resolved.is_some_and(|r| r - fired <= NOISE_WITHIN.num_milliseconds());
        a.noise += u64::from(noise);
        a.flapping += u64::from(flapping || flapped > 0);
        if let Some(t) = acked {
            a.ack.push((t - fired).max(0) as f64 / 1000.0);
        }
        a.renotified += renotified.max(0) as u64;
    }
    let teams: std::collections::BTreeSet<Option<String>> =
        days.keys().chain(acc.keys()).cloned().collect();
    let mut out = Vec::new();
    for team in teams {
        let (patients, pd) = days.get(&team).copied().unwrap_or((0, 0.0));
        let rules = acc.remove(&team).unwrap_or_default();
        let mut total = Acc::default();
        for a in rules.values() {
            total.alerts += a.alerts;
            total.notified += a.notified;
            total.noise += a.noise;
            total.flapping += a.flapping;
            total.ack.extend_from_slice(&a.ack);
            total.renotified += a.renotified;
        }
        out.push(TeamBurden {
            care_team: team,
            patients,
            patient_days: round(pd),
            total: total.stats(pd),
            rules: rules
                .iter()
                .map(|(rule, a)| RuleBurden {
                    rule_id: rule.clone(),
                    stats: a.stats(pd),
                })
                .collect(),
        });
    }
    Ok(BurdenReport {
        since: q.since,
        until: q.until,
        teams: out,
    })
}

/// The report as a table for a terminal.
pub fn render(r: &BurdenReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "alert burden {} .. {}",
        r.since.format("%Y-%m-%dT%H:%M:%SZ"),
        r.until.format("%Y-%m-%dT%H:%M:%SZ")
    );
    let secs = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{:.0}m", s / 60.0));
    for t in &r.teams {
        let _ = writeln!(
            s,
            "\ncare team {}: {} patient(s), {:.1} patient-days",
            t.care_team.as_deref().unwrap_or("(none)"),
            t.patients,
            t.patient_days
        );
        let _ = writeln!(
            s,
            "  {:<32} {:>6} {:>9} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "rule",
            "alerts",
            "/100 pd",
            "notified",
            "silent",
            "noise1h",
            "flapping",
            "ack p50",
            "ack p90",
            "renotif"
        );
        let mut line = |name: &str, st: &Stats| {
            let _ = writeln!(
                s,
                "  {:<32} {:>6} {:>9} {:>8} {:>6} {:>7.0}% {:>7.0}% {:>8} {:>8} {:>7}",
                name,
                st.alerts,
                st.per_100_patient_days
                    .map_or("-".to_string(), |v| format!("{v:.2}")),
                st.notified,
                st.silent,
                st.resolved_unacknowledged_within_1h * 100.0,
                st.flapping * 100.0,
                secs(st.ack_p50_seconds),
                secs(st.ack_p90_seconds),
                st.renotifications
            );
        };
        for rb in &t.rules {
            line(&rb.rule_id, &rb.stats);
        }
        line("(all rules)", &t.total);
    }
    s
}

/// Parses a report bound: RFC 3339, or a date (`2026-03-01`, midnight UTC).
pub fn parse_bound(v: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&Utc));
    }
    let d = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok()?;
    ms(Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0];
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.9), Some(90.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7.0], 0.9), Some(7.0));
    }

    #[test]
    fn bounds_take_times_and_dates() {
        assert_eq!(
            parse_bound("2026-03-01").unwrap().to_rfc3339(),
            "2026-03-01T00:00:00+00:00"
        );
        assert!(parse_bound("2026-03-01T08:00:00+01:00").is_some());
        assert!(parse_bound("yesterday").is_none());
    }
}
