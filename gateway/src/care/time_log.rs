//! The care-time log: minutes care managers spend on a patient.
//!
//! RPM treatment management is paid by the minute of a calendar month, and
//! only with real-time interactive communication with the patient (at
//! least two-way audio), so every entry says how long, doing what, and
//! whether it included such a communication. Entries are evidence: they
//! are never edited or deleted. A mistake is corrected by a new entry that
//! names the one it corrects (`corrects`); the correction **supersedes**
//! the corrected entry — its minutes, activity, time and interactivity
//! replace the corrected entry's in every total, and the corrected entry
//! stays in the log, marked `superseded_by`. A correction of 0 minutes
//! voids an entry. An entry is corrected once; to change a correction,
//! correct the correction.
//!
//! A retried request must not log the minutes twice: the client names the
//! entry (`entry_id`), or sends an `Idempotency-Key` from which the entry
//! id is derived (per caller); the same id asked again with the same
//! content answers with the stored entry, with other content is refused.
//! The API (`api/care_time.rs`) and the CLI (`cli/care_time.rs`) both log
//! through [`log`], in the caller's transaction with an audit row.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use rusqlite::Transaction;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::audit::{self, AuditEntry};
use crate::store::care_time::{self, CareTimeRow};
use crate::store::{patients, StoreError};

/// The activities an entry may name.
pub const ACTIVITIES: &[&str] = &[
    "data_review",
    "patient_call",
    "care_coordination",
    "medication_management",
    "education",
    "other",
];

/// Longest single entry: a shift.
pub const MAX_MINUTES: u32 = 720;

/// How far in the future an entry may be (clocks of clients drift).
const FUTURE_SLACK: TimeDelta = TimeDelta::minutes(5);

/// An entry as asked for (API body, CLI flags).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewEntry {
    /// The client's id for the entry (a retry with the same id is stored
    /// once); absent: derived from the `Idempotency-Key`, or random.
    #[serde(default)]
    pub entry_id: Option<String>,
    /// Duration in whole minutes (or give `started_at` and `ended_at`).
    #[serde(default)]
    pub minutes: Option<u32>,
    /// When the work was done (with `minutes`; default: now).
    #[serde(default)]
    pub performed_at: Option<DateTime<Utc>>,
    /// Start of the work (with `ended_at`, instead of `minutes`).
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// End of the work.
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    /// One of [`ACTIVITIES`].
    pub activity: String,
    /// Whether it included real-time interactive communication with the
    /// patient (at least two-way audio).
    #[serde(default)]
    pub interactive: bool,
    /// Free text (no more than 4000 bytes).
    #[serde(default)]
    pub note: Option<String>,
    /// The entry this one corrects (and supersedes).
    #[serde(default)]
    pub corrects: Option<String>,
}

/// An entry as shown (API, CLI).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CareTimeEntry {
    /// Stable id.
    pub entry_id: String,
    /// Patient.
    pub patient_id: String,
    /// Activity.
    pub activity: String,
    /// Time spent, minutes (fractional for start/stop entries).
    pub minutes: f64,
    /// When the work was done (its start).
    pub performed_at: DateTime<Utc>,
    /// When it stopped, for entries given as start and stop.
    pub ended_at: Option<DateTime<Utc>>,
    /// Real-time interactive communication with the patient.
    pub interactive: bool,
    /// Free text.
    pub note: Option<String>,
    /// Token id or `cli`.
    pub recorded_by: String,
    /// When it was logged.
    pub recorded_at: DateTime<Utc>,
    /// The entry this one corrects.
    pub corrects: Option<String>,
    /// The entry that corrects this one.
    pub superseded_by: Option<String>,
    /// Whether it counts in totals (nothing supersedes it).
    pub counts: bool,
    /// Keyset position (performed_at ms, recording order).
    #[serde(skip)]
    pub key: (i64, i64),
}

fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl From<CareTimeRow> for CareTimeEntry {
    fn from(r: CareTimeRow) -> Self {
        CareTimeEntry {
            minutes: (r.seconds as f64 / 60.0 * 100.0).round() / 100.0,
            performed_at: time(r.performed_at),
            ended_at: r.ended_at.map(time),
            recorded_at: time(r.recorded_at),
            counts: r.superseded_by.is_none(),
            key: (r.performed_at, r.seq),
            entry_id: r.entry_id,
            patient_id: r.patient_id,
            activity: r.activity,
            interactive: r.interactive,
            note: r.note,
            recorded_by: r.recorded_by,
            corrects: r.corrects,
            superseded_by: r.superseded_by,
        }
    }
}

/// Why an entry was not logged.
#[derive(Debug, thiserror::Error)]
pub enum TimeLogError {
    /// The entry is malformed (the message says what to change).
    #[error("{0}")]
    Invalid(String),
    /// No such (enrolled) patient.
    #[error("no enrolled patient `{0}`")]
    UnknownPatient(String),
    /// `corrects` names no entry of this patient.
    #[error("corrects: no entry `{0}` of this patient")]
    UnknownCorrected(String),
    /// The entry named by `corrects` is corrected already.
    #[error("entry `{entry}` is already corrected by `{by}`; correct that one instead")]
    AlreadyCorrected {
        /// The entry.
        entry: String,
        /// Its correction.
        by: String,
    },
    /// The entry id (or idempotency key) was used for a different entry.
    #[error("entry `{0}` exists with other content; a retry must repeat the same request")]
    IdTaken(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for TimeLogError {
    fn from(e: rusqlite::Error) -> Self {
        TimeLogError::Store(StoreError::Sqlite(e))
    }
}

/// What [`log`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// The entry as stored.
    pub entry: CareTimeEntry,
    /// False when the same request had been logged before (a retry).
    pub created: bool,
}

fn check_id(what: &str, id: &str, max: usize) -> Result<(), TimeLogError> {
    let ok = !id.is_empty()
        && id.len() <= max
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'));
    if ok {
        Ok(())
    } else {
        Err(TimeLogError::Invalid(format!(
            "{what} must be 1 to {max} characters of letters, digits and . _ : -"
        )))
    }
}

/// The checked duration: (start ms, end ms if given, seconds).
fn span(e: &NewEntry, now: DateTime<Utc>) -> Result<(i64, Option<i64>, i64), TimeLogError> {
    let invalid = |m: &str| Err(TimeLogError::Invalid(m.into()));
    let (start, end, seconds) = match (e.minutes, e.performed_at, e.started_at, e.ended_at) {
        (Some(m), at, None, None) => {
            let at = at.unwrap_or(now);
            (at, None, i64::from(m) * 60)
        }
        (None, None, Some(s), Some(t)) => {
            if t <= s {
                return invalid("ended_at must be after started_at");
            }
            (s, Some(t), (t - s).num_seconds())
        }
        (None, _, Some(_), None) | (None, _, None, Some(_)) => {
            return invalid("give both started_at and ended_at (or minutes)")
        }
        (None, None, None, None) => {
            return invalid("give minutes (with performed_at) or started_at and ended_at")
        }
        _ => {
            return invalid(
                "give either minutes (with performed_at) or started_at and ended_at, not both",
            )
        }
    };
    if seconds > i64::from(MAX_MINUTES) * 60 {
        return Err(TimeLogError::Invalid(format!(
            "an entry is at most {MAX_MINUTES} minutes; log longer work as several entries"
        )));
    }
    if seconds == 0 && e.corrects.is_none() {
        return invalid("minutes must be at least 1 (0 only voids an entry it corrects)");
    }
    if end.unwrap_or(start) > now + FUTURE_SLACK {
        return invalid("care time cannot be logged ahead of time");
    }
    Ok((
        start.timestamp_millis(),
        end.map(|t| t.timestamp_millis()),
        seconds,
    ))
}

/// Checks an entry without a store: activity, duration, times, note, ids.
pub fn validate(e: &NewEntry, now: DateTime<Utc>) -> Result<(), TimeLogError> {
    if !ACTIVITIES.contains(&e.activity.as_str()) {
        return Err(TimeLogError::Invalid(format!(
            "activity must be one of {}",
            ACTIVITIES.join(", ")
        )));
    }
    if e.note.as_ref().is_some_and(|n| n.len() > 4000) {
        return Err(TimeLogError::Invalid("note: at most 4000 bytes".into()));
    }
    if let Some(id) = &e.entry_id {
        check_id("entry_id", id, 64)?;
    }
    if let Some(id) = &e.corrects {
        check_id("corrects", id, 64)?;
    }
    span(e, now).map(|_| ())
}

/// The entry id: the client's, or derived from the caller and its
/// idempotency key (so a retry finds the first), or random.
fn entry_id(e: &NewEntry, actor: &str, key: Option<&str>) -> Result<String, TimeLogError> {
    if let Some(id) = &e.entry_id {
        return Ok(id.clone());
    }
    let bytes: Vec<u8> = match key {
        Some(k) => {
            if k.is_empty() || k.len() > 255 || !k.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(TimeLogError::Invalid(
                    "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
                ));
            }
            let mut h = Sha256::new();
            h.update(b"rpm-care-time-v1\0");
            h.update(actor.as_bytes());
            h.update(b"\0");
            h.update(k.as_bytes());
            h.finalize()[..12].to_vec()
        }
        None => {
            let mut b = [0u8; 12];
            getrandom::fill(&mut b).map_err(|e| StoreError::Encode(format!("random: {e}")))?;
            b.to_vec()
        }
    };
    Ok(format!("ct-{}", hex::encode(bytes)))
}

/// What a request asked, as a digest: a retry must ask the same.
fn digest(patient_id: &str, e: &NewEntry) -> String {
    let mut asked = e.clone();
    asked.entry_id = None;
    let text = serde_json::to_string(&(patient_id, &asked)).unwrap_or_default();
    hex::encode(&Sha256::digest(text.as_bytes())[..16])
}

/// Logs `e` for `patient_id` in `tx`, with an audit row (`care_time.log`)
/// naming `actor` and `outcome` (HTTP status, or 0 from the CLI). The
/// caller commits.
pub fn log(
    tx: &Transaction<'_>,
    patient_id: &str,
    e: &NewEntry,
    idempotency_key: Option<&str>,
    actor: &str,
    outcome: i64,
    now: DateTime<Utc>,
) -> Result<Logged, TimeLogError> {
    validate(e, now)?;
    if patients::get(tx, patient_id)?.is_none() {
        return Err(TimeLogError::UnknownPatient(patient_id.to_string()));
    }
    let id = entry_id(e, actor, idempotency_key)?;
    let asked = digest(patient_id, e);
    if let Some(existing) = care_time::get(tx, &id)? {
        if existing.patient_id == patient_id && existing.request_digest == asked {
            return Ok(Logged {
                entry: existing.into(),
                created: false,
            });
        }
        return Err(TimeLogError::IdTaken(id));
    }
    if let Some(c) = &e.corrects {
        match care_time::get(tx, c)? {
            Some(old) if old.patient_id == patient_id => {
                if let Some(by) = old.superseded_by {
                    return Err(TimeLogError::AlreadyCorrected {
                        entry: c.clone(),
                        by,
                    });
                }
            }
            _ => return Err(TimeLogError::UnknownCorrected(c.clone())),
        }
    }
    let (performed_at, ended_at, seconds) = span(e, now)?;
    let now_ms = now.timestamp_millis();
    care_time::insert(
        tx,
        &CareTimeRow {
            seq: 0,
            entry_id: id.clone(),
            patient_id: patient_id.to_string(),
            activity: e.activity.clone(),
            seconds,
            performed_at,
            ended_at,
            interactive: e.interactive,
            note: e.note.clone(),
            recorded_by: actor.to_string(),
            recorded_at: now_ms,
            corrects: e.corrects.clone(),
            superseded_by: None,
            request_digest: asked,
        },
    )?;
    audit::append(
        tx,
        &AuditEntry {
            at: now_ms,
            actor: actor.to_string(),
            action: "care_time.log".into(),
            resource: id.clone(),
            patient_id: Some(patient_id.to_string()),
            outcome,
            detail: e.corrects.as_ref().map(|c| format!("corrects {c}")),
        },
    )?;
    let stored =
        care_time::get(tx, &id)?.ok_or_else(|| StoreError::Encode("entry vanished".into()))?;
    Ok(Logged {
        entry: stored.into(),
        created: true,
    })
}

/// A page of `patient_id`'s entries, newest first, after `before`.
pub fn list(
    conn: &rusqlite::Connection,
    patient_id: &str,
    before: Option<(i64, i64)>,
    limit: usize,
) -> Result<Vec<CareTimeEntry>, StoreError> {
    Ok(care_time::list(conn, patient_id, before, limit)?
        .into_iter()
        .map(CareTimeEntry::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::patients::PatientChange;
    use crate::store::Store;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, 18, 0, 0).unwrap()
    }

    fn call(minutes: u32) -> NewEntry {
        NewEntry {
            minutes: Some(minutes),
            activity: "patient_call".into(),
            interactive: true,
            ..Default::default()
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("s.db")).unwrap();
        s.upsert_patient("p1", "cli", &PatientChange::default())
            .unwrap();
        s.upsert_patient("p2", "cli", &PatientChange::default())
            .unwrap();
        (dir, s)
    }

    fn log_as(
        s: &mut Store,
        patient: &str,
        e: &NewEntry,
        key: Option<&str>,
    ) -> Result<Logged, TimeLogError> {
        let tx = s.transaction().unwrap();
        let r = log(&tx, patient, e, key, "tok_a", 201, now());
        if r.is_ok() {
            tx.commit().unwrap();
        }
        r
    }

    #[test]
    fn entries_are_checked() {
        let bad = |e: NewEntry| validate(&e, now()).unwrap_err().to_string();
        assert!(bad(NewEntry {
            activity: "golf".into(),
            ..call(5)
        })
        .contains("activity"));
        assert!(bad(call(0)).contains("at least 1"));
        assert!(bad(call(721)).contains("at most"));
        assert!(bad(NewEntry {
            minutes: None,
            ..call(5)
        })
        .contains("give minutes"));
        let start = now() - TimeDelta::minutes(30);
        assert!(bad(NewEntry {
            minutes: None,
            started_at: Some(start),
            ended_at: Some(start),
            ..call(5)
        })
        .contains("after"));
        assert!(bad(NewEntry {
            started_at: Some(start),
            ended_at: Some(now()),
            ..call(5)
        })
        .contains("not both"));
        assert!(bad(NewEntry {
            performed_at: Some(now() + TimeDelta::hours(1)),
            ..call(5)
        })
        .contains("ahead"));
        assert!(bad(NewEntry {
            entry_id: Some("a b".into()),
            ..call(5)
        })
        .contains("entry_id"));
        // Start and stop: 12.5 minutes.
        let (_, end, secs) = span(
            &NewEntry {
                minutes: None,
                started_at: Some(start),
                ended_at: Some(start + TimeDelta::seconds(750)),
                ..call(5)
            },
            now(),
        )
        .unwrap();
        assert_eq!((end.is_some(), secs), (true, 750));
        // A correction may void (0 minutes).
        assert!(validate(
            &NewEntry {
                corrects: Some("ct-1".into()),
                ..call(0)
            },
            now()
        )
        .is_ok());
    }

    #[test]
    fn retries_are_stored_once_and_corrections_supersede() {
        let (_d, mut s) = store();
        let first = log_as(&mut s, "p1", &call(12), Some("k-1")).unwrap();
        assert!(first.created);
        assert_eq!(first.entry.minutes, 12.0);
        // The same key and request: the stored entry, not a second one.
        let again = log_as(&mut s, "p1", &call(12), Some("k-1")).unwrap();
        assert!(!again.created);
        assert_eq!(again.entry.entry_id, first.entry.entry_id);
        // The same key, another request: refused.
        assert!(matches!(
            log_as(&mut s, "p1", &call(13), Some("k-1")),
            Err(TimeLogError::IdTaken(_))
        ));
        // A client entry id works the same way.
        let mine = NewEntry {
            entry_id: Some("visit-7".into()),
            ..call(5)
        };
        assert!(log_as(&mut s, "p1", &mine, None).unwrap().created);
        assert!(!log_as(&mut s, "p1", &mine, None).unwrap().created);
        assert!(matches!(
            log_as(&mut s, "p2", &mine, None),
            Err(TimeLogError::IdTaken(_))
        ));
        // Corrections: of this patient's entries only, once each.
        let fix = NewEntry {
            corrects: Some(first.entry.entry_id.clone()),
            ..call(20)
        };
        assert!(matches!(
            log_as(&mut s, "p2", &fix, None),
            Err(TimeLogError::UnknownCorrected(_))
        ));
        let fixed = log_as(&mut s, "p1", &fix, None).unwrap();
        assert!(matches!(
            log_as(&mut s, "p1", &fix, None),
            Err(TimeLogError::AlreadyCorrected { .. })
        ));
        let all = list(s.conn(), "p1", None, 10).unwrap();
        assert_eq!(all.len(), 3);
        let old = all
            .iter()
            .find(|e| e.entry_id == first.entry.entry_id)
            .unwrap();
        assert_eq!(
            old.superseded_by.as_deref(),
            Some(fixed.entry.entry_id.as_str())
        );
        assert!(!old.counts);
        let total: i64 =
            care_time::counted_between(s.conn(), "p1", 0, now().timestamp_millis() + 1)
                .unwrap()
                .iter()
                .map(|c| c.seconds)
                .sum();
        assert_eq!(total, 25 * 60);
        assert!(matches!(
            log_as(&mut s, "nobody", &call(5), None),
            Err(TimeLogError::UnknownPatient(_))
        ));
        // Every logged entry has its audit row.
        let rows = audit::list(s.conn(), i64::MAX, &Default::default(), 100).unwrap();
        assert_eq!(
            rows.iter()
                .filter(|r| r.entry.action == "care_time.log")
                .count(),
            3
        );
    }
}
