//! The audit log: who read or changed what, and with what outcome.
//!
//! One row per authenticated (or refused) API request: the token id, the
//! route template (`GET /api/v1/patients/{patient_id}`), the concrete
//! resource, the patient concerned when there is one, and the HTTP status.
//! Values never go here; the store itself is the place for PHI.

use axum::response::{IntoResponseParts, ResponseParts};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use super::auth::Principal;
use super::page::Page;
use super::problem::{ApiError, Json, Query};
use super::ApiState;
use crate::store::{now_ms, Store, StoreError};

/// Set by a handler on its response: the patient the request concerned.
#[derive(Debug, Clone)]
pub struct AuditPatient(pub String);

impl IntoResponseParts for AuditPatient {
    type Error = std::convert::Infallible;
    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        res.extensions_mut().insert(self);
        Ok(res)
    }
}

/// One record to write.
struct Record {
    at: i64,
    actor: String,
    action: String,
    resource: String,
    patient: Option<String>,
    outcome: u16,
}

type Job = (Record, oneshot::Sender<bool>);

/// The audit writer: records are group-committed on a thread of their own
/// (one transaction, one fsync, for all the requests that arrived while the
/// previous batch was syncing), and each request waits for its record to
/// be durable before its response leaves.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
}

impl AuditLog {
    /// Starts the writer on its own connection to the store at `path`. It
    /// stops when the last handle is dropped.
    pub fn start(path: &Path) -> Result<AuditLog, StoreError> {
        let store = Store::open(path)?;
        let (tx, rx) = mpsc::channel(1024);
        std::thread::Builder::new()
            .name("api-audit".into())
            .spawn(move || run(store, rx))
            .map_err(|e| StoreError::Encode(format!("cannot start the audit writer: {e}")))?;
        Ok(AuditLog { tx })
    }

    /// Writes one record and waits until it is committed.
    pub async fn record(
        &self,
        actor: &str,
        action: &str,
        resource: &str,
        patient: Option<String>,
        outcome: u16,
    ) -> Result<(), ApiError> {
        let rec = Record {
            at: now_ms(),
            actor: actor.to_string(),
            action: action.to_string(),
            resource: resource.to_string(),
            patient,
            outcome,
        };
        let (done, rx) = oneshot::channel();
        let unavailable = || ApiError::Unavailable("the audit log cannot be written".into());
        self.tx.send((rec, done)).await.map_err(|_| unavailable())?;
        match rx.await {
            Ok(true) => Ok(()),
            _ => Err(unavailable()),
        }
    }
}

fn run(mut store: Store, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let ok = match write(&mut store, &batch) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, records = batch.len(), "api: audit records not written");
                false
            }
        };
        for (_, done) in batch {
            let _ = done.send(ok);
        }
    }
}

fn write(store: &mut Store, batch: &[Job]) -> Result<(), StoreError> {
    let tx = store.transaction()?;
    {
        let mut q = tx.prepare_cached(
            "INSERT INTO audit_log (at, actor, action, resource, patient_id, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (r, _) in batch {
            q.execute(rusqlite::params![
                r.at, r.actor, r.action, r.resource, r.patient, r.outcome
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// One audit record as listed.
#[derive(Debug, Serialize)]
pub struct AuditEntry {
    id: i64,
    at: chrono::DateTime<chrono::Utc>,
    actor: String,
    action: String,
    resource: String,
    patient_id: Option<String>,
    outcome: i64,
}

/// `GET /api/v1/audit` filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    actor: Option<String>,
    patient: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/audit`: newest first (admin).
pub async fn list(
    axum::extract::State(st): axum::extract::State<Arc<ApiState>>,
    p: Principal,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    p.require_admin()?;
    let limit = super::page::limit(&st.cfg, q.limit)?;
    let before: i64 = match &q.cursor {
        Some(c) => super::page::decode_cursor(c)?
            .parse()
            .map_err(|_| ApiError::BadRequest("invalid cursor".into()))?,
        None => i64::MAX,
    };
    let rows = st
        .db
        .run(move |s| {
            let mut stmt = s.conn().prepare(
                "SELECT id, at, actor, action, resource, patient_id, outcome FROM audit_log
                 WHERE id < ?1 AND (?2 IS NULL OR actor = ?2) AND (?3 IS NULL OR patient_id = ?3)
                 ORDER BY id DESC LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                rusqlite::params![before, q.actor, q.patient, limit as i64 + 1],
                |r| {
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        at: super::page::time(r.get(1)?),
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        resource: r.get(4)?,
                        patient_id: r.get(5)?,
                        outcome: r.get(6)?,
                    })
                },
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await?;
    Ok(Json(Page::new(rows, limit, |e| e.id.to_string())))
}
