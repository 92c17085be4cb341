//! The audit log's one writer and reader.
//!
//! Who read or changed what, with what outcome, is written from several
//! places: the API's group-committing audit writer (one row per request),
//! alert lifecycle actions (in the transaction of the change, so a change is
//! never without its row) and the CLI (actor `cli`, outcome 0). They used to
//! carry four slightly different `INSERT`s; one [`AuditEntry`] and one
//! [`append`] keep the columns and their meaning in one place. Values never
//! go here: the resource names a thing, it does not hold its data.

use rusqlite::{params, Connection};

use super::StoreError;

/// One audit row as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When, in ms since the epoch.
    pub at: i64,
    /// Token id, `cli` or `system`.
    pub actor: String,
    /// Route template or action name (`GET /api/v1/readings`, `alert.acknowledge`).
    pub action: String,
    /// The concrete thing acted on.
    pub resource: String,
    /// The patient concerned, when there is one.
    pub patient_id: Option<String>,
    /// HTTP status, or 0 for the CLI.
    pub outcome: i64,
    /// Free text, rarely used.
    pub detail: Option<String>,
}

impl AuditEntry {
    /// A CLI change (actor `cli`, outcome 0) made now.
    pub fn cli(action: &str, resource: &str, patient_id: Option<&str>) -> AuditEntry {
        AuditEntry {
            at: super::now_ms(),
            actor: "cli".into(),
            action: action.into(),
            resource: resource.into(),
            patient_id: patient_id.map(str::to_string),
            outcome: 0,
            detail: None,
        }
    }
}

/// One audit row as stored: the entry and its id (the listing's cursor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuditEntry {
    /// Row id; ids grow with time.
    pub id: i64,
    /// The row.
    pub entry: AuditEntry,
}

/// Appends one row. Pass a transaction (it derefs to a connection) to have
/// the row commit with the change it records. The statement is cached, so
/// a batch is one call per row in one transaction.
pub fn append(conn: &Connection, e: &AuditEntry) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO audit_log (at, actor, action, resource, patient_id, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        e.at,
        e.actor,
        e.action,
        e.resource,
        e.patient_id,
        e.outcome,
        e.detail
    ])?;
    Ok(())
}

/// Filters of [`list`].
#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    /// Only this actor.
    pub actor: Option<&'a str>,
    /// Only this patient.
    pub patient_id: Option<&'a str>,
}

/// Up to `limit` rows with an id below `before`, newest first.
pub fn list(
    conn: &Connection,
    before: i64,
    filter: &AuditFilter<'_>,
    limit: usize,
) -> Result<Vec<StoredAuditEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at, actor, action, resource, patient_id, outcome, detail FROM audit_log
         WHERE id < ?1 AND (?2 IS NULL OR actor = ?2) AND (?3 IS NULL OR patient_id = ?3)
         ORDER BY id DESC LIMIT ?4",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(
        params![before, filter.actor, filter.patient_id, limit],
        |r| {
            Ok(StoredAuditEntry {
                id: r.get(0)?,
                entry: AuditEntry {
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    resource: r.get(4)?,
                    patient_id: r.get(5)?,
                    outcome: r.get(6)?,
                    detail: r.get(7)?,
                },
            })
        },
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn entry(at: i64, actor: &str, patient: Option<&str>) -> AuditEntry {
        AuditEntry {
            at,
            actor: actor.into(),
            action: "GET /api/v1/patients/{patient_id}".into(),
            resource: "/api/v1/patients/p1".into(),
            patient_id: patient.map(str::to_string),
            outcome: 200,
            detail: None,
        }
    }

    #[test]
    fn appends_and_lists_newest_first_with_filters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("s.db")).expect("open");
        {
            let tx = store.transaction().expect("tx");
            append(&tx, &entry(1, "tok_a", Some("p1"))).expect("append");
            append(&tx, &entry(2, "tok_b", None)).expect("append");
            append(&tx, &AuditEntry::cli("token.create", "tok_c", None)).expect("append");
            tx.commit().expect("commit");
        }
        let all = list(store.conn(), i64::MAX, &AuditFilter::default(), 10).expect("list");
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].entry.actor, "cli");
        assert_eq!(all[0].entry.outcome, 0);
        assert!(all.windows(2).all(|w| w[0].id > w[1].id));
        assert_eq!(all[2].entry, entry(1, "tok_a", Some("p1")));

        let page = list(store.conn(), all[0].id, &AuditFilter::default(), 1).expect("list");
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].id, all[1].id);

        let f = AuditFilter {
            actor: Some("tok_a"),
            patient_id: None,
        };
        assert_eq!(list(store.conn(), i64::MAX, &f, 10).expect("list").len(), 1);
        let f = AuditFilter {
            actor: None,
            patient_id: Some("p1"),
        };
        let by_patient = list(store.conn(), i64::MAX, &f, 10).expect("list");
        assert_eq!(by_patient.len(), 1);
        assert_eq!(by_patient[0].entry.actor, "tok_a");
    }

    #[test]
    fn a_rolled_back_change_leaves_no_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("s.db")).expect("open");
        {
            let tx = store.transaction().expect("tx");
            append(&tx, &entry(1, "tok_a", None)).expect("append");
            drop(tx);
        }
        let all = list(store.conn(), i64::MAX, &AuditFilter::default(), 10).expect("list");
        assert!(all.is_empty());
    }
}
