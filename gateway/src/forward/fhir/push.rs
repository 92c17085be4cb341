//! The push loop: the store's readings, alerts and follow-up tasks into
//! the EHR, each after its own durable cursor.
//!
//! Three streams, one loop, each driven from the store so that a kill -9
//! anywhere loses nothing:
//!
//! - readings after `forward.fhir` (their commit order, like the InfluxDB
//!   forwarder), as Observations;
//! - with the readings, measurements a device sent a special value for
//!   (NaN, NRes, ±INFINITY: never readings, kept as `special_value`
//!   quarantine records) after `forward.fhir.absent`, a quarantine id, as
//!   Observations with `dataAbsentReason`;
//! - alerts after `forward.fhir.alerts`, a position in `alert_history`
//!   (every transition of an alert is a row there): each alert changed
//!   since is pushed in its *current* state as a Flag;
//! - tasks after `forward.fhir.tasks`, a position in `task_history`
//!   likewise, as Tasks.
//!
//! A cursor moves only in the transaction that also quarantines what the
//! server refused, after the server accepted the rest, and that writes the
//! audit rows of what the EHR received (actor `forward:fhir`, one row per
//! patient per batch, outcome 200: every disclosure of health data is
//! audited, the push's like the API's). A crash between the
//! server's answer and that commit re-sends the batch on restart, which is
//! harmless: Observations, Devices and Patients are created conditionally
//! on their identifiers and Flags and Tasks updated conditionally (see
//! [`super::bundle`]), so a re-send changes nothing.
//!
//! The server away (connection refused, timeout, 5xx, 429, 401/403/404)
//! means backing off with jitter up to `max_backoff` and retrying the same
//! Bundle; the token endpoint refusing us holds the batch and retries every
//! `max_backoff`, reported like the hub's refusal. A Bundle refused with a
//! 4xx OperationOutcome is bisected until the refused record is alone;
//! it is then quarantined (`rejected_by_sink`, source `fhir`) with the
//! server's OperationOutcome, and the rest goes on.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::bundle::{self, Subject, Unit};
use super::client::{outcome_text, FhirClient, PostError};
use super::config::{FhirPushConfig, Push};
use crate::fault::{Fault, FaultPoint};
use crate::metrics::Metrics;
use crate::store::{now_ms, set_cursor, Store, StoreError};

/// The readings cursor in the `cursors` table.
pub const CURSOR: &str = "forward.fhir";
/// The alerts cursor: a position in `alert_history`.
pub const ALERTS_CURSOR: &str = "forward.fhir.alerts";
/// The tasks cursor: a position in `task_history`.
pub const TASKS_CURSOR: &str = "forward.fhir.tasks";
/// The special values cursor: a quarantine id.
pub const ABSENT_CURSOR: &str = "forward.fhir.absent";
/// Who the push's audit rows name.
pub const AUDIT_ACTOR: &str = "forward:fhir";
/// The action of the push's audit rows.
pub const AUDIT_ACTION: &str = "fhir.push";
/// Metric label, quarantine source.
pub const SINK: &str = "fhir";
/// Quarantine reason of records the server refused (as for InfluxDB).
pub const REJECTED: &str = crate::forward::forwarder::REJECTED;
/// The first retry waits about this long.
const FIRST_RETRY: Duration = Duration::from_millis(200);

/// Push failures (the store's; the server's are retried).
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking store task died.
    #[error("the FHIR push's store task failed: {0}")]
    Task(String),
}

/// What one step reads: a configured push, the readings' in two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Readings,
    Absent,
    Alerts,
    Tasks,
}

impl Stream {
    fn cursor(self) -> &'static str {
        match self {
            Stream::Readings => CURSOR,
            Stream::Absent => ABSENT_CURSOR,
            Stream::Alerts => ALERTS_CURSOR,
            Stream::Tasks => TASKS_CURSOR,
        }
    }

    /// The resource type the audit rows name.
    fn resource(self) -> &'static str {
        match self {
            Stream::Readings | Stream::Absent => "Observation",
            Stream::Alerts => "Flag",
            Stream::Tasks => "Task",
        }
    }
}

/// A batch read from the store: what to send and where the cursor goes.
struct Batch {
    units: Vec<Unit>,
    cursor_to: i64,
    full: bool,
}

/// The FHIR push task.
pub struct FhirPush {
    store: Option<Store>,
    client: FhirClient,
    cfg: FhirPushConfig,
    mapping: crate::fhir::FhirConfig,
    metrics: Arc<Metrics>,
    fault: Fault,
    failing: bool,
    refused: bool,
}

impl FhirPush {
    /// A push with its own store connection; `mapping` is `[fhir]`.
    pub fn new(
        store: Store,
        client: FhirClient,
        cfg: FhirPushConfig,
        mapping: crate::fhir::FhirConfig,
        metrics: Arc<Metrics>,
    ) -> FhirPush {
        FhirPush {
            store: Some(store),
            client,
            cfg,
            mapping,
            metrics,
            fault: Fault::from_env(),
            failing: false,
            refused: false,
        }
    }

    async fn with_store<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, PushError> {
        Ok(crate::forward::on_store(&mut self.store, f)
            .await
            .map_err(PushError::Task)??)
    }

    /// Pushes until `stop` resolves. A Bundle in flight is finished and its
    /// cursor committed; a wait for the server is abandoned.
    pub async fn run(mut self, stop: impl Future<Output = ()>) -> Result<(), PushError> {
        tokio::pin!(stop);
        let streams: Vec<Stream> = [Push::Readings, Push::Alerts, Push::Tasks]
            .into_iter()
            .filter(|p| self.cfg.pushes(*p))
            .flat_map(|p| match p {
                Push::Readings => vec![Stream::Readings, Stream::Absent],
                Push::Alerts => vec![Stream::Alerts],
                Push::Tasks => vec![Stream::Tasks],
            })
            .collect();
        'outer: loop {
            let mut more = false;
            for s in &streams {
                match self.step(*s, &mut stop).await {
                    Ok(None) => break 'outer,
                    Ok(Some(full)) => more |= full,
                    Err(PushError::Task(e)) => return Err(PushError::Task(e)),
                    Err(e) => {
                        tracing::error!(error = %e, "fhir push: store error; retrying");
                        tokio::select! {
                            _ = &mut stop => break 'outer,
                            _ = tokio::time::sleep(self.cfg.max_backoff) => {}
                        }
                    }
                }
            }
            let wait = if more {
                Duration::ZERO
            } else {
                self.cfg.flush_interval
            };
            tokio::select! {
                biased;
                _ = &mut stop => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!("fhir push stopped");
        Ok(())
    }

    /// Sends the next batch of `stream`. `Some(full)`: done (more may be
    /// waiting when full); `None`: stopped while waiting for the server.
    async fn step(
        &mut self,
        stream: Stream,
        stop: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<Option<bool>, PushError> {
        let (size, system) = (self.cfg.batch_size, self.cfg.patient_system.clone());
        let mapping = self.mapping.clone();
        let (cursor_name, cursor, batch) = self
            .with_store(move |s| {
                let name = stream.cursor();
                let cursor = s.cursor(name)?;
                let batch = match stream {
                    Stream::Readings => readings_batch(s, cursor, size, &system, &mapping)?,
                    Stream::Absent => absent_batch(s.conn(), cursor, size, &system, &mapping)?,
                    Stream::Alerts => history_batch(s.conn(), "alert", cursor, size, &system)?,
                    Stream::Tasks => history_batch(s.conn(), "task", cursor, size, &system)?,
                };
                if stream == Stream::Readings {
                    let newest = crate::store::queries::newest_seq(s.conn())?;
                    return Ok((name, cursor, (batch, Some(newest))));
                }
                Ok((name, cursor, (batch, None)))
            })
            .await?;
        let (batch, newest) = batch;
        if let Some(n) = newest {
            self.metrics.set_sink_backlog(SINK, (n - cursor).max(0));
        }
        if batch.cursor_to <= cursor {
            return Ok(Some(false));
        }
        let Some(refused) = self.deliver(&batch.units, stop).await else {
            return Ok(None);
        };
        self.fault.abort_at(FaultPoint::AfterForward);
        let accepted = batch.units.len() - refused.len();
        let quarantine: Vec<(Unit, Value)> = refused
            .into_iter()
            .map(|(i, oo)| (batch.units[i].clone(), oo))
            .collect();
        let n_quarantined = quarantine.len();
        let to = batch.cursor_to;
        let audit = audit_rows(&batch.units, &quarantine, stream.resource());
        self.with_store(move |s| {
            let tx = s.transaction()?;
            for (unit, oo) in &quarantine {
                quarantine_refused(&tx, unit, oo)?;
            }
            for e in &audit {
                crate::store::audit::append(&tx, e)?;
            }
            set_cursor(&tx, cursor_name, to)?;
            tx.commit()?;
            Ok(())
        })
        .await?;
        self.metrics.forwarded(SINK, accepted);
        for _ in 0..n_quarantined {
            self.metrics.quarantined(SINK, REJECTED);
        }
        if n_quarantined > 0 {
            tracing::warn!(
                records = n_quarantined,
                "the FHIR server refused records; quarantined as {REJECTED} with its OperationOutcome (see `rpm-gateway quarantine list`)"
            );
        }
        if let Some(n) = newest {
            if stream == Stream::Readings {
                self.metrics.set_sink_backlog(SINK, (n - to).max(0));
            }
        }
        Ok(Some(batch.full))
    }

    /// Sends `units` until each is accepted or refused; returns the refused
    /// ones (index, OperationOutcome). `None`: stopped while waiting.
    async fn deliver(
        &mut self,
        units: &[Unit],
        stop: &mut (impl Future<Output = ()> + Unpin),
    ) -> Option<Vec<(usize, Value)>> {
        let mut refused = Vec::new();
        // Ranges of `units` still to send (a stack: bisection pushes halves).
        let mut pending: Vec<Range<usize>> = Vec::with_capacity(16);
        pending.push(0..units.len());
        let mut attempt = 0u32;
        while let Some(range) = pending.pop() {
            if range.is_empty() {
                continue;
            }
            let refs: Vec<&Unit> = units[range.clone()].iter().collect();
            let (body, n_needs) = bundle::transaction(&refs);
            let answer = self.client.post(&body).await;
            match answer {
                Ok(entries) => {
                    attempt = 0;
                    self.back_up();
                    // A batch-style answer names refused entries itself.
                    let mut split = false;
                    for (i, oo) in entries {
                        if i >= n_needs {
                            refused.push((range.start + i - n_needs, oo));
                        } else if range.len() == 1 {
                            refused.push((range.start, oo));
                        } else {
                            split = true;
                        }
                    }
                    if split {
                        refused.retain(|(i, _)| !range.contains(i));
                        bisect(&mut pending, range);
                    }
                }
                Err(PostError::Rejected { status, outcome }) => {
                    attempt = 0;
                    self.back_up();
                    tracing::debug!(status, outcome = %outcome, units = range.len(), "fhir: Bundle refused");
                    if range.len() == 1 {
                        refused.push((range.start, outcome));
                    } else {
                        bisect(&mut pending, range);
                    }
                }
                Err(PostError::Refused { status, message }) => {
                    attempt = 0;
                    self.metrics.forward_failure(SINK, "refused");
                    if !self.refused {
                        self.refused = true;
                        tracing::error!(status, %message, "the FHIR server refuses the gateway; holding the batch (nothing skipped) and retrying every max_backoff");
                    }
                    self.metrics
                        .set_sink_refused(SINK, Some(format!("HTTP {status}: {message}")));
                    pending.push(range);
                    tokio::select! {
                        _ = &mut *stop => return None,
                        _ = tokio::time::sleep(self.cfg.max_backoff) => {}
                    }
                }
                Err(PostError::Retry { kind, message }) => {
                    self.metrics.forward_failure(SINK, &kind);
                    self.metrics.set_sink_up(SINK, false);
                    if !self.failing {
                        self.failing = true;
                        tracing::warn!(
                            kind,
                            "fhir push failed; records stay in the store and are retried"
                        );
                    }
                    tracing::debug!(kind, %message, "fhir push failed");
                    let wait = crate::backoff::delay(FIRST_RETRY, self.cfg.max_backoff, attempt);
                    attempt = attempt.saturating_add(1);
                    pending.push(range);
                    tokio::select! {
                        _ = &mut *stop => return None,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        refused.sort_by_key(|r| r.0);
        refused.dedup_by_key(|r| r.0);
        Some(refused)
    }

    /// The server answered: clear the failing and refused states.
    fn back_up(&mut self) {
        if self.failing || self.refused {
            self.failing = false;
            self.refused = false;
            self.metrics.set_sink_refused(SINK, None);
            tracing::info!("the FHIR server accepts pushes again; catching up");
        }
        self.metrics.set_sink_up(SINK, true);
    }
}

/// Pushes the halves of `range` (first half on top).
fn bisect(pending: &mut Vec<Range<usize>>, range: Range<usize>) {
    let mid = range.start + range.len() / 2;
    pending.push(mid..range.end);
    pending.push(range.start..mid);
}

/// Readings after `cursor` as Observation units, about `size` readings.
/// A blood-pressure panel is never cut in two (its halves would be two
/// Observations): a few readings more than `size` are read, and a group is
/// taken only when a reading after it shows it is complete.
fn readings_batch(
    s: &Store,
    cursor: i64,
    size: usize,
    system: &str,
    mapping: &crate::fhir::FhirConfig,
) -> Result<Batch, StoreError> {
    let limit = size + crate::fhir::observation::BP_METRICS.len();
    let rows = s.readings_after(cursor, limit)?;
    let ctx = crate::fhir::PhdContext::for_readings(s.conn(), mapping, &rows)?;
    let more = rows.len() >= limit;
    let groups = crate::fhir::observation::group(rows);
    let n_groups = groups.len();
    let mut taken: Vec<Vec<crate::store::queries::StoredReading>> = Vec::new();
    let mut count = 0;
    for (i, g) in groups.into_iter().enumerate() {
        let last_fetched = i + 1 == n_groups;
        if (last_fetched && more) || (count > 0 && count + g.len() > size) {
            break;
        }
        count += g.len();
        taken.push(g);
    }
    let full = more || taken.len() < n_groups;
    let cursor_to = taken
        .last()
        .and_then(|g| g.last())
        .map(|r| r.seq)
        .unwrap_or(cursor);
    let units = taken
        .into_iter()
        .filter_map(|g| bundle::observation_unit(g, &ctx, system))
        .collect();
    Ok(Batch {
        units,
        cursor_to,
        full,
    })
}

/// Special-value quarantine records after quarantine id `cursor`, as
/// Observations with `dataAbsentReason`. A record whose device has no
/// patient is passed over (it concerns nobody's chart).
fn absent_batch(
    conn: &rusqlite::Connection,
    cursor: i64,
    size: usize,
    system: &str,
    mapping: &crate::fhir::FhirConfig,
) -> Result<Batch, StoreError> {
    let cols = crate::store::queries::QUARANTINE_COLUMNS;
    let rows: Vec<crate::store::queries::QuarantineRow> = conn
        .prepare_cached(&format!(
            "SELECT {cols} FROM quarantine WHERE id > ?1 AND reason = 'special_value' ORDER BY id LIMIT ?2"
        ))?
        .query_map(
            rusqlite::params![cursor, size as i64],
            crate::store::queries::quarantine_row,
        )?
        .collect::<Result<_, _>>()?;
    let full = rows.len() >= size;
    let cursor_to = rows.last().map(|q| q.id).unwrap_or(cursor);
    let ctx = crate::fhir::PhdContext::load(
        conn,
        mapping,
        rows.iter().filter_map(|q| q.device_id.as_deref()),
    )?;
    let units = rows
        .iter()
        .filter_map(|q| bundle::absent_unit(q, &ctx, system))
        .collect();
    Ok(Batch {
        units,
        cursor_to,
        full,
    })
}

/// The audit rows of a batch the EHR received: per patient, how many
/// `resource`s it accepted (refused ones are quarantined, not disclosed).
fn audit_rows(
    units: &[Unit],
    refused: &[(Unit, Value)],
    resource: &str,
) -> Vec<crate::store::audit::AuditEntry> {
    let refused_entries: Vec<&Value> = refused.iter().map(|(u, _)| &u.entry).collect();
    let mut per_patient: Vec<(&str, usize)> = Vec::new();
    for u in units
        .iter()
        .filter(|u| !refused_entries.contains(&&u.entry))
    {
        for p in bundle::patients(u) {
            match per_patient.iter_mut().find(|(q, _)| *q == p) {
                Some((_, n)) => *n += 1,
                None => per_patient.push((p, 1)),
            }
        }
    }
    let at = now_ms();
    per_patient
        .into_iter()
        .map(|(patient, n)| crate::store::audit::AuditEntry {
            at,
            actor: AUDIT_ACTOR.into(),
            action: AUDIT_ACTION.into(),
            resource: resource.into(),
            patient_id: Some(patient.to_string()),
            outcome: 200,
            detail: Some(format!("{n} sent to the EHR")),
        })
        .collect()
}

/// Alerts or tasks changed after history position `cursor`, in their
/// current state, as Flag or Task units.
fn history_batch(
    conn: &rusqlite::Connection,
    kind: &str,
    cursor: i64,
    size: usize,
    system: &str,
) -> Result<Batch, StoreError> {
    let sql = match kind {
        "alert" => "SELECT id, alert_id FROM alert_history WHERE id > ?1 ORDER BY id LIMIT ?2",
        _ => "SELECT id, task_id FROM task_history WHERE id > ?1 ORDER BY id LIMIT ?2",
    };
    let rows: Vec<(i64, String)> = conn
        .prepare_cached(sql)?
        .query_map(rusqlite::params![cursor, size as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    let full = rows.len() >= size;
    let cursor_to = rows.last().map(|r| r.0).unwrap_or(cursor);
    let mut ids: Vec<String> = Vec::new();
    for (_, id) in rows {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let mut units = Vec::with_capacity(ids.len());
    for id in ids {
        if kind == "alert" {
            if let Some(a) = crate::store::alerts::get(conn, &id)? {
                units.push(bundle::flag_unit(&a, system));
            }
        } else if let Some(t) = crate::store::tasks::get(conn, &id)? {
            let view = crate::care::tasks::view(conn, t, false)?;
            units.push(bundle::task_unit(conn, &view, system)?);
        }
    }
    Ok(Batch {
        units,
        cursor_to,
        full,
    })
}

/// Quarantines a record the server refused, with its OperationOutcome.
fn quarantine_refused(
    tx: &rusqlite::Transaction<'_>,
    unit: &Unit,
    outcome: &Value,
) -> Result<(), StoreError> {
    let detail = format!(
        "refused by the FHIR server: {}; OperationOutcome {}",
        outcome_text(outcome).unwrap_or_default(),
        outcome
    );
    let payload = unit.entry.to_string();
    let at = now_ms();
    let put = |key: &str, device: &str| {
        crate::store::quarantine::insert_sink_refusal(
            tx,
            &crate::store::quarantine::SinkRefusal {
                sink: SINK,
                reading_id: key,
                device_id: device,
                reason: REJECTED,
                detail: &detail,
                payload: payload.as_bytes(),
            },
            at,
        )
    };
    match &unit.subject {
        Subject::Readings(rs) => {
            for r in rs {
                put(&r.reading_id, &r.device_id)?;
            }
        }
        Subject::Absent(id, device) => put(&format!("Observation/absent-{id}"), device)?,
        Subject::Alert(id) => put(&format!("Flag/{id}"), "")?,
        Subject::Task(id) => put(&format!("Task/{id}"), "")?,
    }
    Ok(())
}

/// Where the push stands, for `rpm-gateway forward status`. No PHI.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FhirStatus {
    /// Readings up to this `seq` were accepted (or quarantined).
    pub cursor: i64,
    /// Readings after the cursor.
    pub backlog: i64,
    /// When the readings cursor last moved (Unix ms), if ever.
    pub cursor_updated_at: Option<i64>,
    /// Alert history rows pushed.
    pub alerts_cursor: i64,
    /// Alert history rows not yet pushed.
    pub alerts_backlog: i64,
    /// Task history rows pushed.
    pub tasks_cursor: i64,
    /// Task history rows not yet pushed.
    pub tasks_backlog: i64,
    /// Special-value records pushed (a quarantine id).
    pub absent_cursor: i64,
    /// Special-value records not yet pushed.
    pub absent_backlog: i64,
    /// Open quarantine rows the FHIR server refused.
    pub rejected: i64,
}

/// Reads the push's status from `store`.
pub fn status(store: &Store) -> Result<FhirStatus, StoreError> {
    let conn = store.conn();
    let (cursor, updated) = crate::store::cursor_with_time(conn, CURSOR)?
        .map(|(c, u)| (c, Some(u)))
        .unwrap_or((0, None));
    let after = |table: &str, c: i64| -> Result<i64, StoreError> {
        Ok(conn
            .prepare_cached(&format!("SELECT COUNT(*) FROM {table} WHERE id > ?1"))?
            .query_row([c], |r| r.get(0))?)
    };
    let alerts_cursor = store.cursor(ALERTS_CURSOR)?;
    let tasks_cursor = store.cursor(TASKS_CURSOR)?;
    let absent_cursor = store.cursor(ABSENT_CURSOR)?;
    let absent_backlog: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM quarantine WHERE reason = 'special_value' AND id > ?1",
        )?
        .query_row([absent_cursor], |r| r.get(0))?;
    let rejected: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM quarantine WHERE source = ?1 AND reason = ?2 AND status = 'open'",
        )?
        .query_row([SINK, REJECTED], |r| r.get(0))?;
    Ok(FhirStatus {
        cursor,
        backlog: crate::store::queries::count_after(conn, cursor)?,
        cursor_updated_at: updated,
        alerts_cursor,
        alerts_backlog: after("alert_history", alerts_cursor)?,
        tasks_cursor,
        tasks_backlog: after("task_history", tasks_cursor)?,
        absent_cursor,
        absent_backlog,
        rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readings: a BP panel (3), a weight, a BP panel (3), a weight.
    fn store_with_panels() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let rows = [
            ("g1", "systolic"),
            ("g1", "diastolic"),
            ("g1", "mean_arterial_pressure"),
            ("g2", "body_weight"),
            ("g3", "systolic"),
            ("g3", "diastolic"),
            ("g3", "mean_arterial_pressure"),
            ("g4", "body_weight"),
        ];
        for (i, (g, m)) in rows.iter().enumerate() {
            store
                .conn()
                .execute(
                    "INSERT INTO readings (reading_id, group_id, patient_id, device_id, metric, value, unit, loinc, measured_at, received_at, committed_at, source)
                     VALUES (?1, ?2, 'p1', 'd1', ?3, 100, 'mm[Hg]', '8480-6', 1000, 1000, 1000, 'mqtt')",
                    rusqlite::params![format!("r{i}"), g, m],
                )
                .unwrap();
        }
        (dir, store)
    }

    #[test]
    fn panels_are_never_cut_and_every_reading_is_taken_once() {
        let (_dir, store) = store_with_panels();
        for size in 1..=9 {
            let mut cursor = 0;
            let mut seen: Vec<String> = Vec::new();
            let mut units = 0;
            for _ in 0..20 {
                let b = readings_batch(&store, cursor, size, "urn:p", &Default::default()).unwrap();
                if b.cursor_to == cursor {
                    break;
                }
                for u in &b.units {
                    let Subject::Readings(rs) = &u.subject else {
                        panic!()
                    };
                    let groups: std::collections::BTreeSet<&str> =
                        rs.iter().map(|r| r.group_id.as_str()).collect();
                    assert_eq!(groups.len(), 1);
                    if rs[0].metric == "systolic" {
                        assert_eq!(rs.len(), 3, "size {size}: a panel was cut");
                    }
                    seen.extend(rs.iter().map(|r| r.reading_id.clone()));
                }
                units += b.units.len();
                cursor = b.cursor_to;
            }
            let want: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
            assert_eq!(seen, want, "size {size}");
            assert_eq!(units, 4, "size {size}");
        }
    }

    #[test]
    fn special_values_are_a_stream_of_their_own_and_audited_per_patient() {
        let (_dir, store) = store_with_panels();
        let c = store.conn();
        c.execute(
            "INSERT INTO devices (device_id, patient_id, origin, registered_at) VALUES ('d1', 'p1', 'config', 0), ('d2', NULL, 'config', 0)",
            [],
        )
        .unwrap();
        for (key, device, reason, detail) in [
            ("k1", "d1", "special_value", "systolic is NaN, not a number"),
            ("k2", "d1", "bad_json", "not JSON"),
            (
                "k3",
                "d2",
                "special_value",
                "body_weight is NRes, not a number",
            ),
            (
                "k4",
                "d1",
                "special_value",
                "body_weight is +INFINITY, not a number",
            ),
        ] {
            c.execute(
                "INSERT INTO quarantine (dedup_key, received_at, source, origin, device_id, reason, detail, payload) VALUES (?1, 1000, 'mqtt', 't', ?2, ?3, ?4, x'00')",
                rusqlite::params![key, device, reason, detail],
            )
            .unwrap();
        }
        let s = status(&store).unwrap();
        assert_eq!((s.absent_cursor, s.absent_backlog), (0, 3));
        let b = absent_batch(c, 0, 2, "urn:p", &Default::default()).unwrap();
        // Ids 1 and 3 (2 is no special value); 3's device has no patient.
        assert_eq!((b.cursor_to, b.full, b.units.len()), (3, true, 1));
        assert_eq!(b.units[0].subject, Subject::Absent(1, "d1".into()));
        let o = &b.units[0].entry;
        assert_eq!(
            o["request"]["ifNoneExist"],
            "identifier=urn%3Arpm-gateway%3Aquarantine|1"
        );
        assert_eq!(
            o["resource"]["dataAbsentReason"]["coding"][0]["code"],
            "not-a-number"
        );
        let b2 = absent_batch(c, 3, 2, "urn:p", &Default::default()).unwrap();
        assert_eq!((b2.cursor_to, b2.full, b2.units.len()), (4, false, 1));
        let after = absent_batch(c, 4, 2, "urn:p", &Default::default()).unwrap();
        assert_eq!((after.cursor_to, after.units.len()), (4, 0));

        // Two Observations of p1, one refused: one audit row, one sent.
        let units = vec![b.units[0].clone(), b2.units[0].clone()];
        let rows = audit_rows(&units, &[], "Observation");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].patient_id.as_deref(), Some("p1"));
        assert_eq!(
            (rows[0].actor.as_str(), rows[0].outcome),
            (AUDIT_ACTOR, 200)
        );
        assert_eq!(rows[0].detail.as_deref(), Some("2 sent to the EHR"));
        let refused = vec![(units[1].clone(), Value::Null)];
        let rows = audit_rows(&units, &refused, "Observation");
        assert_eq!(rows[0].detail.as_deref(), Some("1 sent to the EHR"));
        assert!(audit_rows(&units[1..], &refused, "Observation").is_empty());
    }

    #[test]
    fn a_fresh_store_has_no_backlog() {
        let (_dir, store) = store_with_panels();
        let s = status(&store).unwrap();
        assert_eq!((s.cursor, s.backlog, s.rejected), (0, 8, 0));
        assert_eq!((s.alerts_backlog, s.tasks_backlog), (0, 0));
    }
}
