//! Questionnaire responses: the `responses` table.
//!
//! A response is stored whole (as the FHIR `QuestionnaireResponse` it was
//! validated into) in the same transaction as the readings its scores
//! became, so a score is never without the answers that gave it, and a
//! response is never acknowledged without its scores. The subject is
//! added when read: the patient may have been found through the device's
//! assignment at commit time.

use device_profiles::questionnaire::Accepted;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::{json, Value};

use super::StoreError;

/// A stored response.
#[derive(Debug, Clone)]
pub struct StoredResponse {
    /// Identity.
    pub response_id: String,
    /// The patient.
    pub patient_id: String,
    /// The FHIR resource as stored (without subject).
    pub resource: Value,
}

impl StoredResponse {
    /// The response as a FHIR `QuestionnaireResponse`, with its subject.
    pub fn fhir(&self) -> Value {
        let mut r = self.resource.clone();
        r["subject"] = json!({"reference": format!("Patient/{}", self.patient_id)});
        r
    }
}

/// Inserts a response for `patient_id`; false when it was already stored.
pub fn insert(
    tx: &Transaction<'_>,
    a: &Accepted,
    patient_id: &str,
    received_at: i64,
    now: i64,
    source: &str,
) -> Result<bool, StoreError> {
    let scores: Vec<Value> = a
        .scores
        .iter()
        .map(|s| json!({"metric": s.metric.name(), "value": s.value, "missing": s.missing}))
        .collect();
    let n = tx
        .prepare_cached(
            "INSERT INTO responses (response_id, patient_id, device_id, questionnaire, version,
                 authored_at, received_at, committed_at, source, resource, scores)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT(response_id) DO NOTHING",
        )?
        .execute(params![
            a.response_id,
            patient_id,
            a.subject.device_id,
            a.questionnaire.url,
            a.questionnaire.version,
            a.authored.timestamp_millis(),
            received_at,
            now,
            source,
            a.resource.to_string(),
            Value::Array(scores).to_string(),
        ])?;
    Ok(n == 1)
}

const COLUMNS: &str = "response_id, patient_id, resource";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredResponse> {
    let resource: String = r.get(2)?;
    Ok(StoredResponse {
        response_id: r.get(0)?,
        patient_id: r.get(1)?,
        resource: serde_json::from_str(&resource).unwrap_or(Value::Null),
    })
}

/// One response by id.
pub fn get(conn: &Connection, response_id: &str) -> Result<Option<StoredResponse>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM responses WHERE response_id = ?1"
        ))?
        .query_row([response_id], row)
        .optional()?)
}

/// Responses, newest first: of one patient, or (patient `None`) of the
/// patients of `teams` (JSON array; `None`: every patient), optionally of
/// one questionnaire, at most `limit`.
pub fn list(
    conn: &Connection,
    patient_id: Option<&str>,
    teams: Option<&str>,
    questionnaire: Option<&str>,
    limit: usize,
) -> Result<Vec<StoredResponse>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM responses r
         WHERE (?1 IS NULL OR r.patient_id = ?1)
           AND (?2 IS NULL OR r.patient_id IN (
                SELECT p.patient_id FROM patients p, json_each(?2) t WHERE p.care_team = t.value))
           AND (?3 IS NULL OR r.questionnaire = ?3)
         ORDER BY r.authored_at DESC, r.seq DESC LIMIT ?4"
    ))?;
    let rows = stmt.query_map(
        params![
            patient_id,
            teams,
            questionnaire,
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        row,
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Whether `patient_id` is enrolled.
pub fn patient_enrolled(tx: &Transaction<'_>, patient_id: &str) -> Result<bool, StoreError> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM patients WHERE patient_id = ?1")?
        .query_row([patient_id], |_| Ok(()))
        .optional()?
        .is_some())
}
