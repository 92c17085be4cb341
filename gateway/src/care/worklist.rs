//! The worklist: a care team's patients ranked by who needs attention now,
//! each row saying why.
//!
//! A nurse opening the gateway in the morning should not have to read
//! every alert to find the patient to call first. The rank key is a tuple
//! computed at query time from the patient's current state, compared
//! component by component, most significant first:
//!
//! 1. has an overdue follow-up (a task whose deadline passed) — yes first;
//! 2. the most severe open alert — critical, urgent, warning, info, none;
//! 3. the risk tier — high, rising, unknown, stable;
//! 4. silent — no reading for `[care.worklist] silent_after` (default 3 days);
//! 5. under-measured — fewer local days with data in the last 30 than
//!    expected by now (`expected_data_days` of 30, pro rata for patients
//!    enrolled less than 30 days);
//! 6. waiting since — the earliest missed deadline, else the oldest open
//!    alert of the top severity, else when the tier began, else enrolment:
//!    older first;
//! 7. the patient id, so that the order is total.
//!
//! Pages are keyset-paged on that key (see `store/worklist.rs`), so paging
//! is stable while data arrives: a row is never shown twice or skipped
//! because of rows that moved elsewhere; a patient whose own state changed
//! between two pages appears where the new state puts it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::worklist::{self as query, WorklistQuery, WorklistRow};
use crate::store::StoreError;

/// `[care.worklist]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorklistConfig {
    /// A patient with no reading for this long is "silent".
    #[serde(with = "humantime_serde")]
    pub silent_after: Duration,
    /// Days with data expected in a 30-day period (16: the CPT 99454
    /// device-supply requirement, CMS CY2026 PFS final rule).
    pub expected_data_days: u32,
}

impl Default for WorklistConfig {
    fn default() -> Self {
        WorklistConfig {
            silent_after: Duration::from_secs(3 * 86_400),
            expected_data_days: 16,
        }
    }
}

/// Checks `[care.worklist]`.
pub fn validate(cfg: &WorklistConfig, err: &mut dyn FnMut(&str, &str, String)) {
    if cfg.silent_after < Duration::from_secs(3600) {
        err(
            "care.worklist",
            "silent_after",
            "must be at least 1h".into(),
        );
    }
    if cfg.expected_data_days == 0 || cfg.expected_data_days > 30 {
        err(
            "care.worklist",
            "expected_data_days",
            "must be 1 to 30".into(),
        );
    }
}

/// The rank key of a row, as documented above (also in the API response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RankKey {
    /// Components 1-5 packed as decimal digits: overdue (0/1) × 10000 +
    /// severity (0-4) × 1000 + tier (stable 0, unknown 1, rising 2, high 3)
    /// × 100 + silent (0/1) × 10 + under-measured (0/1). Higher first.
    pub score: i64,
    /// Waiting since. Older first.
    pub since: DateTime<Utc>,
}

/// One worklist row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorklistItem {
    /// Patient.
    pub patient_id: String,
    /// Care team.
    pub care_team: Option<String>,
    /// Position key.
    pub rank: RankKey,
    /// Why the patient is where they are, most important first.
    pub reasons: Vec<String>,
    /// Risk tier (`unknown` when never computed).
    pub tier: String,
    /// When the tier began.
    pub tier_since: Option<DateTime<Utc>>,
    /// Follow-ups not done whose deadline passed.
    pub overdue_follow_ups: i64,
    /// Follow-ups not done.
    pub open_follow_ups: i64,
    /// Open alerts.
    pub open_alerts: i64,
    /// Most severe open alert.
    pub top_severity: Option<String>,
    /// When the oldest open alert fired.
    pub oldest_open_alert_at: Option<DateTime<Utc>>,
    /// Newest reading.
    pub last_reading_at: Option<DateTime<Utc>>,
    /// No reading for `silent_after`.
    pub silent: bool,
    /// Local days with data in the last 30.
    pub data_days_30: i64,
    /// Expected by now.
    pub expected_data_days: i64,
    /// Fewer data days than expected.
    pub under_measured: bool,
}

const SEVERITIES: [&str; 5] = ["none", "info", "warning", "urgent", "critical"];

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn ago(now: DateTime<Utc>, ms: i64) -> String {
    let d = now - time(ms);
    if d.num_days() >= 1 {
        format!("{} day(s)", d.num_days())
    } else if d.num_hours() >= 1 {
        format!("{} hour(s)", d.num_hours())
    } else {
        format!("{} minute(s)", d.num_minutes().max(0))
    }
}

impl WorklistItem {
    /// A row with its reasons, as of `now`.
    pub fn from_row(r: WorklistRow, now: DateTime<Utc>) -> WorklistItem {
        let mut reasons = Vec::new();
        if r.overdue_follow_ups > 0 {
            reasons.push(format!(
                "{} overdue follow-up(s){}",
                r.overdue_follow_ups,
                r.overdue_since
                    .map(|t| format!(", the first overdue for {}", ago(now, t)))
                    .unwrap_or_default()
            ));
        }
        let top = usize::try_from(r.top_severity).unwrap_or(0).min(4);
        if top > 0 {
            reasons.push(format!(
                "{} open {} alert(s) of {} open{}",
                r.top_severity_alerts,
                SEVERITIES[top],
                r.open_alerts,
                r.oldest_open_alert_at
                    .map(|t| format!(", the oldest fired {} ago", ago(now, t)))
                    .unwrap_or_default()
            ));
        }
        let tier = r.tier.clone().unwrap_or_else(|| "unknown".into());
        if tier != "stable" {
            reasons.push(format!(
                "risk tier {tier}{}",
                r.tier_since
                    .map(|t| format!(" for {}", ago(now, t)))
                    .unwrap_or_default()
            ));
        }
        if r.silent {
            reasons.push(match r.last_reading_at {
                Some(t) => format!("silent: no data for {}", ago(now, t)),
                None => format!(
                    "silent: no data since enrolment {} ago",
                    ago(now, r.enrolled_at)
                ),
            });
        }
        if r.under_measured {
            reasons.push(format!(
                "under-measured: data on {} day(s) of the last 30, {} expected by now",
                r.data_days_30, r.expected_data_days
            ));
        }
        if r.open_follow_ups > r.overdue_follow_ups {
            reasons.push(format!(
                "{} follow-up(s) open, not yet due",
                r.open_follow_ups - r.overdue_follow_ups
            ));
        }
        if reasons.is_empty() {
            reasons.push("nothing open: stable and measured".into());
        }
        WorklistItem {
            patient_id: r.patient_id,
            care_team: r.care_team,
            rank: RankKey {
                score: r.score,
                since: time(r.since),
            },
            reasons,
            tier,
            tier_since: r.tier_since.map(time),
            overdue_follow_ups: r.overdue_follow_ups,
            open_follow_ups: r.open_follow_ups,
            open_alerts: r.open_alerts,
            top_severity: (top > 0).then(|| SEVERITIES[top].to_string()),
            oldest_open_alert_at: r.oldest_open_alert_at.map(time),
            last_reading_at: r.last_reading_at.map(time),
            silent: r.silent,
            data_days_30: r.data_days_30,
            expected_data_days: r.expected_data_days,
            under_measured: r.under_measured,
        }
    }

    /// The keyset cursor after this row: `score.since_ms.patient_id`.
    pub fn cursor_key(&self) -> String {
        format!(
            "{}.{}.{}",
            self.rank.score,
            self.rank.since.timestamp_millis(),
            self.patient_id
        )
    }
}

/// Parses a cursor key made by [`WorklistItem::cursor_key`].
pub fn parse_cursor_key(key: &str) -> Option<(i64, i64, String)> {
    let (score, rest) = key.split_once('.')?;
    let (since, patient) = rest.split_once('.')?;
    Some((
        score.parse().ok()?,
        since.parse().ok()?,
        patient.to_string(),
    ))
}

/// One page: the teams' patients (`None`: every patient) after `after`.
pub fn page(
    conn: &rusqlite::Connection,
    cfg: &WorklistConfig,
    teams: Option<&[String]>,
    now: DateTime<Utc>,
    after: Option<(i64, i64, String)>,
    limit: usize,
) -> Result<Vec<WorklistItem>, StoreError> {
    let silent =
        chrono::TimeDelta::from_std(cfg.silent_after).unwrap_or(chrono::TimeDelta::days(3));
    let q = WorklistQuery {
        teams_json: teams.map(|t| serde_json::to_string(t).unwrap_or_else(|_| "[]".into())),
        now: now.timestamp_millis(),
        silent_before: (now - silent).timestamp_millis(),
        expected_data_days: i64::from(cfg.expected_data_days),
        after,
        limit,
    };
    Ok(query::page(conn, &q)?
        .into_iter()
        .map(|r| WorklistItem::from_row(r, now))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::patients::PatientChange;
    use crate::store::Store;
    use rusqlite::params;

    /// Hand-built patients in every state; the order is written out by hand.
    #[test]
    fn the_rank_order_is_the_documented_tuple_and_pages_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let now = Utc::now();
        let ms = |days: f64| now.timestamp_millis() - (days * 86_400_000.0) as i64;
        for p in [
            "a-stable",
            "b-silent",
            "c-warning",
            "d-critical",
            "e-overdue",
            "f-rising",
            "g-under",
            "h-other-team",
            "i-critical-older",
        ] {
            let team = if p == "h-other-team" {
                "south"
            } else {
                "north"
            };
            store
                .upsert_patient(
                    p,
                    "cli",
                    &PatientChange {
                        care_plans: None,
                        overrides: None,
                        care_team: Some(Some(team.into())),
                        time_zone: None,
                        monitoring_start: None,
                    },
                )
                .unwrap();
        }
        let tx = store.transaction().unwrap();
        tx.execute("UPDATE patients SET enrolled_at = ?1", [ms(60.0)])
            .unwrap();
        // Tier rows: (patient, tier, since, last reading, days in 30).
        for (p, tier, since, last, d30) in [
            ("a-stable", "stable", 10.0, 0.1, 25),
            ("b-silent", "rising", 2.0, 5.0, 20),
            ("c-warning", "stable", 9.0, 0.1, 25),
            ("d-critical", "high", 1.0, 0.1, 25),
            ("e-overdue", "rising", 3.0, 0.2, 25),
            ("f-rising", "rising", 4.0, 0.1, 25),
            ("g-under", "stable", 8.0, 0.5, 5),
            ("h-other-team", "high", 1.0, 0.1, 25),
            ("i-critical-older", "high", 1.0, 0.1, 25),
        ] {
            tx.execute(
                "INSERT INTO risk_tiers (patient_id, tier, since, computed_at, last_reading_at, data_days_30) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![p, tier, ms(since), now.timestamp_millis(), ms(last), d30],
            )
            .unwrap();
        }
        for (id, p, sev, fired, status) in [
            ("al1", "c-warning", "warning", 1.0, "firing"),
            ("al2", "d-critical", "critical", 0.5, "acknowledged"),
            ("al3", "d-critical", "warning", 2.0, "firing"),
            ("al4", "i-critical-older", "critical", 0.9, "firing"),
            ("al5", "a-stable", "critical", 3.0, "resolved"),
            ("al6", "h-other-team", "critical", 0.2, "firing"),
        ] {
            tx.execute(
                "INSERT INTO alerts (alert_id, patient_id, rule_id, rule_version, pack, severity, status, message, fired_at, updated_at) VALUES (?1, ?2, ?1, 1, 'x', ?3, ?4, 'm', ?5, ?5)",
                params![id, p, sev, status, ms(fired)],
            )
            .unwrap();
        }
        tx.execute(
            "INSERT INTO tasks (task_id, patient_id, care_team, problem, pathway, priority, status, opened_at, due_at, updated_at) VALUES ('t1', 'e-overdue', 'north', 'bp', 'htn', 'warning', 'open', ?1, ?2, ?1)",
            params![ms(2.0), ms(1.0)],
        )
        .unwrap();
        tx.commit().unwrap();

        let cfg = WorklistConfig::default();
        let teams = vec!["north".to_string()];
        let all = page(store.conn(), &cfg, Some(&teams), now, None, 100).unwrap();
        let order: Vec<&str> = all.iter().map(|i| i.patient_id.as_str()).collect();
        assert_eq!(
            order,
            vec![
                "e-overdue",        // overdue follow-up
                "i-critical-older", // open critical, fired 0.9 d ago
                "d-critical",       // open critical, fired 0.5 d ago
                "c-warning",        // open warning
                "b-silent",         // rising and silent
                "f-rising",         // rising
                "g-under",          // stable, under-measured
                "a-stable",         // nothing open (its critical alert is resolved)
            ]
        );
        assert!(
            all[0].reasons[0].starts_with("1 overdue follow-up"),
            "{:?}",
            all[0].reasons
        );
        assert!(all[4].silent && all[4].reasons.iter().any(|r| r.starts_with("silent")));
        assert!(all[6].under_measured);
        assert_eq!(all[7].reasons, vec!["nothing open: stable and measured"]);
        // Keyset pages of 3 give the same order, whatever arrives between.
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let p = page(store.conn(), &cfg, Some(&teams), now, after.clone(), 3).unwrap();
            if p.is_empty() {
                break;
            }
            after = p.last().and_then(|i| parse_cursor_key(&i.cursor_key()));
            paged.extend(p.into_iter().map(|i| i.patient_id));
        }
        assert_eq!(paged, order);
        // Unscoped: the other team's patient too.
        assert_eq!(
            page(store.conn(), &cfg, None, now, None, 100)
                .unwrap()
                .len(),
            9
        );
    }
}
