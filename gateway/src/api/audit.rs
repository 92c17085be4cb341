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
use crate::store::{audit, now_ms, Store, StoreError};

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

type Job = (audit::AuditEntry, oneshot::Sender<bool>);

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
        let rec = audit::AuditEntry {
            at: now_ms(),
            actor: actor.to_string(),
            action: action.to_string(),
            resource: resource.to_string(),
            patient_id: patient,
            outcome: i64::from(outcome),
            detail: None,
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
    for (r, _) in batch {
        audit::append(&tx, r)?;
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
            let filter = audit::AuditFilter {
                actor: q.actor.as_deref(),
                patient_id: q.patient.as_deref(),
            };
            let rows = audit::list(s.conn(), before, &filter, limit + 1)?;
            Ok(rows
                .into_iter()
                .map(|r| AuditEntry {
                    id: r.id,
                    at: super::page::time(r.entry.at),
                    actor: r.entry.actor,
                    action: r.entry.action,
                    resource: r.entry.resource,
                    patient_id: r.entry.patient_id,
                    outcome: r.entry.outcome,
                })
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(Json(Page::new(rows, limit, |e| e.id.to_string())))
}
