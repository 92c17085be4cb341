//! The worklist's query: one row per patient of the care teams asked for,
//! with what the ranking needs, ranked and keyset-paged in SQL.
//!
//! The rank key is computed at query time (see `care/worklist.rs` for its
//! meaning): `score` packs, most significant first, overdue follow-ups,
//! the most severe open alert, the risk tier, silence and under-measuring
//! into one integer whose decimal digits are the tuple's components;
//! `since` is how long the patient has been waiting. Rows are ordered by
//! (score DESC, since ASC, patient_id ASC) and a page continues after the
//! last row's (score, since, patient_id). Every input comes from a small
//! per-patient row or an index: `risk_tiers` (tier, newest reading, data
//! days, kept by the risk stage), open alerts (`alerts_one_open`), tasks not
//! done (`tasks_patient`), so a page costs the team's size, not its record.

use rusqlite::{params, Connection};

use super::StoreError;

/// One patient's worklist inputs and rank key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorklistRow {
    /// Patient.
    pub patient_id: String,
    /// Care team.
    pub care_team: Option<String>,
    /// Enrolment (ms).
    pub enrolled_at: i64,
    /// Follow-ups not done whose deadline passed.
    pub overdue_follow_ups: i64,
    /// Follow-ups not done.
    pub open_follow_ups: i64,
    /// The earliest missed deadline (ms).
    pub overdue_since: Option<i64>,
    /// Open alerts.
    pub open_alerts: i64,
    /// Most severe open alert: 4 critical, 3 urgent, 2 warning, 1 info, 0 none.
    pub top_severity: i64,
    /// Open alerts of that severity.
    pub top_severity_alerts: i64,
    /// When the oldest open alert fired (ms).
    pub oldest_open_alert_at: Option<i64>,
    /// Risk tier (None: never computed).
    pub tier: Option<String>,
    /// Since when (ms).
    pub tier_since: Option<i64>,
    /// Newest reading's measured time (ms).
    pub last_reading_at: Option<i64>,
    /// Local days with data in the last 30.
    pub data_days_30: i64,
    /// Data days expected by now in the 30-day period.
    pub expected_data_days: i64,
    /// No data for the silence threshold.
    pub silent: bool,
    /// Fewer data days than expected.
    pub under_measured: bool,
    /// The rank key's first part.
    pub score: i64,
    /// The rank key's second part: waiting since (ms).
    pub since: i64,
}

/// Parameters of one page.
#[derive(Debug, Clone)]
pub struct WorklistQuery {
    /// Care teams (JSON array for `json_each`); `None` = every patient.
    pub teams_json: Option<String>,
    /// Now (ms).
    pub now: i64,
    /// Silent when the newest reading (or enrolment) is older than this (ms).
    pub silent_before: i64,
    /// Data days expected in a full 30-day period.
    pub expected_data_days: i64,
    /// Continue after this (score, since, patient_id).
    pub after: Option<(i64, i64, String)>,
    /// Rows to return.
    pub limit: usize,
}

/// One page of the worklist, ranked.
pub fn page(conn: &Connection, q: &WorklistQuery) -> Result<Vec<WorklistRow>, StoreError> {
    let (a_score, a_since, a_patient) = match &q.after {
        Some((s, t, p)) => (Some(*s), *t, p.clone()),
        None => (None, 0, String::new()),
    };
    let sql = "
WITH team AS (
    SELECT patient_id, care_team, enrolled_at FROM patients
    WHERE ?1 IS NULL OR care_team IN (SELECT value FROM json_each(?1))
),
t AS (
    SELECT k.patient_id,
           SUM(k.overdue_at IS NOT NULL OR k.due_at < ?2) AS overdue,
           COUNT(*) AS open_tasks,
           MIN(CASE WHEN k.overdue_at IS NOT NULL OR k.due_at < ?2 THEN MIN(k.due_at, COALESCE(k.overdue_at, k.due_at)) END) AS overdue_since
    FROM team JOIN tasks k ON k.patient_id = team.patient_id
    WHERE k.status != 'done'
    GROUP BY k.patient_id
),
a0 AS (
    SELECT al.patient_id,
           CASE al.severity WHEN 'critical' THEN 4 WHEN 'urgent' THEN 3 WHEN 'warning' THEN 2 ELSE 1 END AS sev,
           al.fired_at
    FROM team JOIN alerts al ON al.patient_id = team.patient_id AND al.status != 'resolved'
),
a1 AS (
    SELECT patient_id, MAX(sev) AS sev, COUNT(*) AS n, MIN(fired_at) AS oldest
    FROM a0 GROUP BY patient_id
),
a AS (
    SELECT a1.patient_id, a1.sev, a1.n, a1.oldest, COUNT(*) AS top_n, MIN(a0.fired_at) AS top_oldest
    FROM a1 JOIN a0 ON a0.patient_id = a1.patient_id AND a0.sev = a1.sev
    GROUP BY a1.patient_id
),
w AS (
    SELECT team.patient_id, team.care_team, team.enrolled_at,
           COALESCE(t.overdue, 0) AS overdue, COALESCE(t.open_tasks, 0) AS open_tasks, t.overdue_since,
           COALESCE(a.n, 0) AS open_alerts, COALESCE(a.sev, 0) AS sev, COALESCE(a.top_n, 0) AS top_n,
           a.oldest, a.top_oldest,
           r.tier, r.since AS tier_since, r.last_reading_at, COALESCE(r.data_days_30, 0) AS days30,
           (?4 * MIN(30, (?2 - team.enrolled_at) / 86400000 + 1) + 29) / 30 AS expected,
           COALESCE(r.last_reading_at, team.enrolled_at) < ?3 AS silent,
           CASE r.tier WHEN 'high' THEN 3 WHEN 'rising' THEN 2 WHEN 'stable' THEN 0 ELSE 1 END AS tier_rank
    FROM team
    LEFT JOIN t ON t.patient_id = team.patient_id
    LEFT JOIN a ON a.patient_id = team.patient_id
    LEFT JOIN risk_tiers r ON r.patient_id = team.patient_id
),
ranked AS (
    SELECT *, (days30 < expected) AS under,
           (overdue > 0) * 10000 + sev * 1000 + tier_rank * 100 + silent * 10 + (days30 < expected) AS score,
           COALESCE(overdue_since, top_oldest, tier_since, enrolled_at) AS since
    FROM w
)
SELECT patient_id, care_team, enrolled_at, overdue, open_tasks, overdue_since, open_alerts, sev, top_n,
       oldest, tier, tier_since, last_reading_at, days30, expected, silent, under, score, since
FROM ranked
WHERE ?5 IS NULL OR score < ?5 OR (score = ?5 AND (since > ?6 OR (since = ?6 AND patient_id > ?7)))
ORDER BY score DESC, since, patient_id
LIMIT ?8";
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(
        params![
            q.teams_json,
            q.now,
            q.silent_before,
            q.expected_data_days,
            a_score,
            a_since,
            a_patient,
            i64::try_from(q.limit).unwrap_or(i64::MAX)
        ],
        |r| {
            Ok(WorklistRow {
                patient_id: r.get(0)?,
                care_team: r.get(1)?,
                enrolled_at: r.get(2)?,
                overdue_follow_ups: r.get(3)?,
                open_follow_ups: r.get(4)?,
                overdue_since: r.get(5)?,
                open_alerts: r.get(6)?,
                top_severity: r.get(7)?,
                top_severity_alerts: r.get(8)?,
                oldest_open_alert_at: r.get(9)?,
                tier: r.get(10)?,
                tier_since: r.get(11)?,
                last_reading_at: r.get(12)?,
                data_days_30: r.get(13)?,
                expected_data_days: r.get(14)?,
                silent: r.get(15)?,
                under_measured: r.get(16)?,
                score: r.get(17)?,
                since: r.get(18)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}
