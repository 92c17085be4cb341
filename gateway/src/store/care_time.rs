//! The `care_time` table: minutes care managers spent on a patient.
//!
//! Append-only by design: what a clinician logged is evidence, so a row is
//! never updated or deleted. A correction is a new row naming the row it
//! corrects (`corrects`); the unique index on `corrects` lets a row be
//! corrected once, so the entries that count are exactly those no other
//! row corrects (a correction of a correction supersedes that one in
//! turn). Validation and the meaning of the fields live in
//! `care::time_log`; this module only reads and writes rows.

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;

/// One row as stored, with the entry that supersedes it (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CareTimeRow {
    /// Recording order.
    pub seq: i64,
    /// Stable id.
    pub entry_id: String,
    /// Patient.
    pub patient_id: String,
    /// Activity code.
    pub activity: String,
    /// Time spent, seconds.
    pub seconds: i64,
    /// When the work started (ms).
    pub performed_at: i64,
    /// When it stopped (ms), for entries given as start and stop.
    pub ended_at: Option<i64>,
    /// Real-time interactive communication with the patient.
    pub interactive: bool,
    /// Free text.
    pub note: Option<String>,
    /// Token id or `cli`.
    pub recorded_by: String,
    /// When it was recorded (ms).
    pub recorded_at: i64,
    /// The entry this one corrects.
    pub corrects: Option<String>,
    /// The entry that corrects this one (then this one no longer counts).
    pub superseded_by: Option<String>,
    /// Digest of what was asked (idempotent retries compare it).
    pub request_digest: String,
}

const COLUMNS: &str =
    "c.seq, c.entry_id, c.patient_id, c.activity, c.seconds, c.performed_at, c.ended_at,
     c.interactive, c.note, c.recorded_by, c.recorded_at, c.corrects,
     (SELECT x.entry_id FROM care_time x WHERE x.corrects = c.entry_id), c.request_digest";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CareTimeRow> {
    Ok(CareTimeRow {
        seq: r.get(0)?,
        entry_id: r.get(1)?,
        patient_id: r.get(2)?,
        activity: r.get(3)?,
        seconds: r.get(4)?,
        performed_at: r.get(5)?,
        ended_at: r.get(6)?,
        interactive: r.get::<_, i64>(7)? != 0,
        note: r.get(8)?,
        recorded_by: r.get(9)?,
        recorded_at: r.get(10)?,
        corrects: r.get(11)?,
        superseded_by: r.get(12)?,
        request_digest: r.get(13)?,
    })
}

/// Appends a row (`seq` and `superseded_by` of `e` are ignored). Pass the
/// caller's transaction: the checks of `care::time_log` and the audit row
/// commit with it.
pub fn insert(conn: &Connection, e: &CareTimeRow) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO care_time (entry_id, patient_id, activity, seconds, performed_at, ended_at,
             interactive, note, recorded_by, recorded_at, corrects, request_digest)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        e.entry_id,
        e.patient_id,
        e.activity,
        e.seconds,
        e.performed_at,
        e.ended_at,
        i64::from(e.interactive),
        e.note,
        e.recorded_by,
        e.recorded_at,
        e.corrects,
        e.request_digest,
    ])?;
    Ok(conn.last_insert_rowid())
}

/// One entry by id.
pub fn get(conn: &Connection, entry_id: &str) -> Result<Option<CareTimeRow>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM care_time c WHERE c.entry_id = ?1"
        ))?
        .query_row([entry_id], row)
        .optional()?)
}

/// A patient's entries, newest first by (performed_at, seq), after the
/// keyset position `before` (exclusive), at most `limit`.
pub fn list(
    conn: &Connection,
    patient_id: &str,
    before: Option<(i64, i64)>,
    limit: usize,
) -> Result<Vec<CareTimeRow>, StoreError> {
    let (t, s) = before.unwrap_or((i64::MAX, i64::MAX));
    let mut q = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM care_time c
         WHERE c.patient_id = ?1 AND (c.performed_at, c.seq) < (?2, ?3)
         ORDER BY c.performed_at DESC, c.seq DESC LIMIT ?4"
    ))?;
    let rows = q.query_map(
        params![patient_id, t, s, i64::try_from(limit).unwrap_or(i64::MAX)],
        row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// An entry that counts (no other entry corrects it), as totals need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// When the work started (ms).
    pub performed_at: i64,
    /// Time spent, seconds.
    pub seconds: i64,
    /// Real-time interactive communication with the patient.
    pub interactive: bool,
}

/// The entries of `patient_id` that count, performed in `[from, to)` (ms).
pub fn counted_between(
    conn: &Connection,
    patient_id: &str,
    from: i64,
    to: i64,
) -> Result<Vec<Counted>, StoreError> {
    let mut q = conn.prepare_cached(
        "SELECT c.performed_at, c.seconds, c.interactive FROM care_time c
         WHERE c.patient_id = ?1 AND c.performed_at >= ?2 AND c.performed_at < ?3
           AND NOT EXISTS (SELECT 1 FROM care_time x WHERE x.corrects = c.entry_id)
         ORDER BY c.performed_at",
    )?;
    let rows = q.query_map(params![patient_id, from, to], |r| {
        Ok(Counted {
            performed_at: r.get(0)?,
            seconds: r.get(1)?,
            interactive: r.get::<_, i64>(2)? != 0,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn entry(id: &str, seconds: i64, at: i64, corrects: Option<&str>) -> CareTimeRow {
        CareTimeRow {
            seq: 0,
            entry_id: id.into(),
            patient_id: "p1".into(),
            activity: "patient_call".into(),
            seconds,
            performed_at: at,
            ended_at: None,
            interactive: true,
            note: None,
            recorded_by: "cli".into(),
            recorded_at: at,
            corrects: corrects.map(str::to_string),
            superseded_by: None,
            request_digest: String::new(),
        }
    }

    #[test]
    fn a_correction_supersedes_once_and_totals_skip_the_corrected() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let tx = store.transaction().unwrap();
        insert(&tx, &entry("a", 600, 1_000, None)).unwrap();
        insert(&tx, &entry("b", 300, 2_000, None)).unwrap();
        insert(&tx, &entry("a2", 900, 1_000, Some("a"))).unwrap();
        // `a` is corrected already: a second correction of it is refused.
        assert!(insert(&tx, &entry("a3", 60, 1_000, Some("a"))).is_err());
        // Ids are unique.
        assert!(insert(&tx, &entry("b", 60, 3_000, None)).is_err());
        tx.commit().unwrap();
        let a = get(store.conn(), "a").unwrap().unwrap();
        assert_eq!(a.superseded_by.as_deref(), Some("a2"));
        let counted = counted_between(store.conn(), "p1", 0, 10_000).unwrap();
        assert_eq!(
            counted.iter().map(|c| c.seconds).collect::<Vec<_>>(),
            vec![900, 300]
        );
        assert!(counted_between(store.conn(), "p1", 1_500, 10_000)
            .unwrap()
            .iter()
            .all(|c| c.performed_at == 2_000));
        let page = list(store.conn(), "p1", None, 2).unwrap();
        assert_eq!(page[0].entry_id, "b");
        let next = list(
            store.conn(),
            "p1",
            Some((page[1].performed_at, page[1].seq)),
            10,
        )
        .unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].entry_id, "a");
    }
}
