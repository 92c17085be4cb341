//! Patients: care-plan enrolment, per-patient rule overrides and care team.
//!
//! The rule evaluator reads these to know which rule packs apply to a
//! patient and with which limits; the API and the CLI change them at run
//! time. Overrides are stored as the JSON of `alerting_rules::Overrides`;
//! callers validate them against the active rule set before saving (the
//! store does not know the rules), and the engine skips an entry that no
//! longer validates rather than stop alerting.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{now_ms, Store, StoreError};

/// The ids of every enrolled patient, or of `only` if enrolled.
pub fn ids(conn: &Connection, only: Option<&str>) -> Result<Vec<String>, StoreError> {
    let mut st =
        conn.prepare("SELECT patient_id FROM patients WHERE (?1 IS NULL OR patient_id = ?1)")?;
    let rows = st.query_map(params![only], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A patient as the store knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatientRecord {
    /// Pseudonymous patient id.
    pub patient_id: String,
    /// Care plans (`heart-failure`, `hypertension`, ...).
    pub care_plans: Vec<String>,
    /// Rule overrides (JSON object of `alerting_rules::Overrides`).
    pub overrides: serde_json::Value,
    /// Care team, if any.
    pub care_team: Option<String>,
    /// When monitoring started.
    pub enrolled_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Who created it: config, cli, api.
    pub origin: String,
    /// The patient's IANA time zone (`None`: the care team's, from `[care]`).
    pub time_zone: Option<String>,
    /// The local date the patient's 30-day device periods count from
    /// (`None`: the local date of the first automatically transmitted reading).
    pub monitoring_start: Option<NaiveDate>,
}

/// A change to a patient; `None` fields are left as they are.
#[derive(Debug, Clone, Default)]
pub struct PatientChange {
    /// Replace the care plans.
    pub care_plans: Option<Vec<String>>,
    /// Replace the overrides (already validated by the caller).
    pub overrides: Option<serde_json::Value>,
    /// Set (`Some(Some)`) or clear (`Some(None)`) the care team.
    pub care_team: Option<Option<String>>,
    /// Set or clear the time zone (an IANA name, validated by the caller).
    pub time_zone: Option<Option<String>>,
    /// Set or clear the monitoring start date.
    pub monitoring_start: Option<Option<NaiveDate>>,
}

fn t(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PatientRecord> {
    Ok(PatientRecord {
        patient_id: r.get(0)?,
        care_plans: serde_json::from_str(&r.get::<_, String>(1)?).unwrap_or_default(),
        overrides: serde_json::from_str(&r.get::<_, String>(2)?)
            .unwrap_or_else(|_| serde_json::json!({})),
        care_team: r.get(3)?,
        enrolled_at: t(r.get(4)?),
        updated_at: t(r.get(5)?),
        origin: r.get(6)?,
        time_zone: r.get(7)?,
        monitoring_start: date(r.get(8)?),
    })
}

/// A stored `YYYY-MM-DD` (the store holds only dates written through
/// [`upsert`]; anything else reads as unset).
fn date(s: Option<String>) -> Option<NaiveDate> {
    s.and_then(|s| NaiveDate::parse_from_str(&s, "%Y-%m-%d").ok())
}

const COLUMNS: &str =
    "patient_id, care_plans, overrides, care_team, enrolled_at, updated_at, origin, time_zone, monitoring_start";

/// Reads one patient (usable inside a transaction: pass `&tx`).
/// The statement stays prepared on the connection: the rule stage reads
/// every patient of each batch, and a hub's start every configured one.
pub fn get(conn: &Connection, patient_id: &str) -> Result<Option<PatientRecord>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM patients WHERE patient_id = ?1"
        ))?
        .query_row([patient_id], row)
        .optional()?)
}

/// Creates the patient if new, then applies `change`. Returns the result.
pub fn upsert(
    conn: &Connection,
    patient_id: &str,
    origin: &str,
    change: &PatientChange,
) -> Result<PatientRecord, StoreError> {
    let now = now_ms();
    conn.execute(
        "INSERT INTO patients (patient_id, enrolled_at, updated_at, origin) VALUES (?1, ?2, ?2, ?3)
         ON CONFLICT(patient_id) DO NOTHING",
        params![patient_id, now, origin],
    )?;
    if let Some(plans) = &change.care_plans {
        conn.execute(
            "UPDATE patients SET care_plans = ?2, updated_at = ?3 WHERE patient_id = ?1",
            params![patient_id, json(plans)?, now],
        )?;
    }
    if let Some(o) = &change.overrides {
        conn.execute(
            "UPDATE patients SET overrides = ?2, updated_at = ?3 WHERE patient_id = ?1",
            params![patient_id, json(o)?, now],
        )?;
    }
    if let Some(team) = &change.care_team {
        conn.execute(
            "UPDATE patients SET care_team = ?2, updated_at = ?3 WHERE patient_id = ?1",
            params![patient_id, team, now],
        )?;
    }
    if let Some(zone) = &change.time_zone {
        conn.execute(
            "UPDATE patients SET time_zone = ?2, updated_at = ?3 WHERE patient_id = ?1",
            params![patient_id, zone, now],
        )?;
    }
    if let Some(start) = &change.monitoring_start {
        conn.execute(
            "UPDATE patients SET monitoring_start = ?2, updated_at = ?3 WHERE patient_id = ?1",
            params![
                patient_id,
                start.map(|d| d.format("%Y-%m-%d").to_string()),
                now
            ],
        )?;
    }
    get(conn, patient_id)?.ok_or_else(|| StoreError::Encode("patient vanished".into()))
}

/// Patients whose id is greater than `after` (keyset pagination), in id
/// order, optionally only those of the given care teams.
pub fn list(
    conn: &Connection,
    after: Option<&str>,
    teams: Option<&[String]>,
    limit: usize,
) -> Result<Vec<PatientRecord>, StoreError> {
    let teams_json = teams.map(|t| serde_json::to_string(t).unwrap_or_else(|_| "[]".into()));
    let mut q = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM patients
         WHERE patient_id > ?1
           AND (?2 IS NULL OR care_team IN (SELECT value FROM json_each(?2)))
         ORDER BY patient_id LIMIT ?3"
    ))?;
    let rows = q.query_map(params![after.unwrap_or(""), teams_json, limit as i64], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// JSON text of a column value.
fn json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Encode(e.to_string()))
}

impl Store {
    /// One patient.
    pub fn patient(&self, patient_id: &str) -> Result<Option<PatientRecord>, StoreError> {
        get(&self.conn, patient_id)
    }

    /// Creates or changes a patient in its own transaction.
    pub fn upsert_patient(
        &mut self,
        patient_id: &str,
        origin: &str,
        change: &PatientChange,
    ) -> Result<PatientRecord, StoreError> {
        let tx = self.transaction()?;
        let p = upsert(&tx, patient_id, origin, change)?;
        tx.commit()?;
        Ok(p)
    }
}

/// Whether `patient_id` exists and is in one of `teams` (a JSON array of
/// care-team names).
pub fn in_care_teams(conn: &Connection, patient_id: &str, teams: &str) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM patients WHERE patient_id = ?1
                 AND care_team IN (SELECT value FROM json_each(?2)))",
        params![patient_id, teams],
        |r| r.get(0),
    )?)
}

/// Patients after `after` in id order: everyone enrolled and everyone ever
/// evaluated (with a watermark), at most `limit`.
pub fn enrolled_or_evaluated(
    conn: &Connection,
    after: &str,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let mut q = conn.prepare_cached(
        "SELECT patient_id FROM patients WHERE patient_id > ?1
         UNION
         SELECT patient_id FROM patient_watermarks WHERE patient_id > ?1
         ORDER BY 1 LIMIT ?2",
    )?;
    let rows = q.query_map(
        params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
        |r| r.get(0),
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every patient's care team and enrolment time (ms).
pub fn enrolments(conn: &Connection) -> Result<Vec<(Option<String>, i64)>, StoreError> {
    let mut st = conn.prepare_cached("SELECT care_team, enrolled_at FROM patients")?;
    let rows = st.query_map([], |r| {
        Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A patient as the RPM report needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPatient {
    /// Patient id.
    pub patient_id: String,
    /// Care team, if any.
    pub care_team: Option<String>,
    /// Own time zone, if set.
    pub time_zone: Option<String>,
    /// Monitoring start, if set.
    pub monitoring_start: Option<NaiveDate>,
}

/// Every patient the RPM report covers, in id order: the enrolled ones,
/// and those a device is assigned to without an enrolment (no team, no
/// zone of their own).
pub fn report_patients(conn: &Connection) -> Result<Vec<ReportPatient>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT patient_id, care_team, time_zone, monitoring_start FROM patients
         UNION ALL
         SELECT DISTINCT d.patient_id, NULL, NULL, NULL FROM devices d
          WHERE d.patient_id IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM patients p WHERE p.patient_id = d.patient_id)
         ORDER BY 1",
    )?;
    let rows = st.query_map([], |r| {
        Ok(ReportPatient {
            patient_id: r.get(0)?,
            care_team: r.get(1)?,
            time_zone: r.get(2)?,
            monitoring_start: date(r.get(3)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Marks a patient enrolled from config as changed at run time (origin
/// `cli`), so that config no longer undoes the change.
pub fn claim_from_config(
    conn: &Connection,
    patient_id: &str,
    origin: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE patients SET origin = ?2 WHERE patient_id = ?1 AND origin = 'config'",
        params![patient_id, origin],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_changes_only_what_is_given_and_lists_by_team() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let p = store
            .upsert_patient(
                "p1",
                "cli",
                &PatientChange {
                    care_plans: Some(vec!["heart-failure".into()]),
                    care_team: Some(Some("north".into())),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(p.care_plans, vec!["heart-failure".to_string()]);
        let p = store
            .upsert_patient(
                "p1",
                "api",
                &PatientChange {
                    overrides: Some(serde_json::json!({"htn.crisis": {"disabled": true}})),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(p.care_team.as_deref(), Some("north"));
        assert_eq!(p.origin, "cli");
        assert_eq!(p.overrides["htn.crisis"]["disabled"], true);
        store
            .upsert_patient("p2", "cli", &PatientChange::default())
            .unwrap();
        let all = list(store.conn(), None, None, 10).unwrap();
        assert_eq!(all.len(), 2);
        let north = list(store.conn(), None, Some(&["north".to_string()]), 10).unwrap();
        assert_eq!(north.len(), 1);
        let after = list(store.conn(), Some("p1"), None, 10).unwrap();
        assert_eq!(after[0].patient_id, "p2");
    }
}
