//! The embedded store: one SQLite file in WAL mode.
//!
//! Everything durable lives here: readings, quarantine, the device registry,
//! downstream cursors and gateway runs. Sources hand batches to the
//! [`writer`], which group-commits them and only then lets the source
//! acknowledge; everything downstream reads from here after a durable cursor.

pub mod alerts;
pub mod audit;
pub mod ble;
pub mod boxes;
pub mod care_time;
pub mod cipher;
pub mod config;
pub mod files;
pub mod history;
pub mod inbox;
pub mod integrations;
pub(crate) mod keys;
pub mod listing;
pub mod maintenance;
pub mod outbox;
pub mod patients;
pub(crate) mod quarantine;
pub mod queries;
pub mod registry;
pub mod responses;
pub mod risk;
pub mod runs;
mod schema;
pub mod secrets;
pub mod share;
pub mod stats;
pub mod tasks;
pub mod tokens;
pub mod users;
pub mod webhooks;
pub mod worklist;
pub mod writer;

#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use device_profiles::{ReadingGroup, Reject, Source};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use writer::{Writer, WriterConfig};

/// Store failures. Input problems are never store errors: they are quarantined.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer gateway.
    #[error("store schema version {found} is newer than this gateway supports ({supported}); upgrade the gateway")]
    SchemaTooNew {
        /// found in the file
        found: i64,
        /// known to this build
        supported: i64,
    },
    /// The store could not be created or opened.
    #[error("cannot open store {path}: {source}")]
    Open {
        /// The store file.
        path: PathBuf,
        /// SQLite's refusal.
        source: rusqlite::Error,
    },
    /// The store file is not owner-only, or cannot be created so, or
    /// its lock is held.
    #[error(transparent)]
    Files(#[from] files::FileError),
    /// The store's encryption and the key given do not match.
    #[error(transparent)]
    Cipher(#[from] cipher::CipherError),
    /// Encrypting, decrypting or re-keying the store did not happen.
    #[error(transparent)]
    Maintenance(#[from] maintenance::MaintenanceError),
    /// The writer thread has stopped.
    #[error("the store writer has stopped")]
    WriterGone,
    /// Commits have been failing (a full disk, an I/O error) and this one
    /// was not attempted: the writer retries at growing intervals.
    #[error("store commits are failing ({0}); retried later")]
    Paused(String),
    /// A value could not be encoded for storage.
    #[error("cannot encode a stored value: {0}")]
    Encode(String),
}

impl StoreError {
    /// Whether this is the file system being full.
    pub fn is_disk_full(&self) -> bool {
        let code = match self {
            StoreError::Sqlite(e) | StoreError::Open { source: e, .. } => e.sqlite_error_code(),
            _ => None,
        };
        code == Some(rusqlite::ErrorCode::DiskFull)
    }

    /// Whether waiting may cure it (space freed, the disk back): a full
    /// disk or an I/O error, as opposed to a schema or a bug.
    pub fn is_transient(&self) -> bool {
        let code = match self {
            StoreError::Sqlite(e) | StoreError::Open { source: e, .. } => e.sqlite_error_code(),
            StoreError::Paused(_) => return true,
            _ => None,
        };
        matches!(
            code,
            Some(
                rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
            )
        )
    }

    /// A short operator-facing reason (readiness, the once-per-episode log)
    /// for a failure of the store at `path`. SQLite reports a full disk as
    /// an I/O error when it fails to grow its shared-memory file: with no
    /// space left on the store's file system, that is a full disk too.
    pub fn reason_at(&self, path: &Path) -> String {
        if self.is_out_of_space_at(path) {
            "store: the disk is full".into()
        } else {
            format!("store: commits fail: {self}")
        }
    }

    /// Whether this failure of the store at `path` is its file system being
    /// full: SQLite says so (`SQLITE_FULL`), or it reports an I/O error or
    /// cannot create a file while no space is left.
    pub fn is_out_of_space_at(&self, path: &Path) -> bool {
        if self.is_disk_full() {
            return true;
        }
        let code = match self {
            StoreError::Sqlite(e) | StoreError::Open { source: e, .. } => e.sqlite_error_code(),
            _ => None,
        };
        let io = matches!(
            code,
            Some(rusqlite::ErrorCode::SystemIoFailure | rusqlite::ErrorCode::CannotOpen)
        );
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        io && files::disk_space(dir).is_ok_and(|d| d.available < 64 * 1024)
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The input a batch item came from: kept whole so that anything quarantined
/// can be re-processed later (a device assigned, a profile corrected).
#[derive(Debug, Clone)]
pub struct RawInput {
    /// Source kind.
    pub source: Source,
    /// MQTT topic, BLE address/characteristic, or HTTP route.
    pub origin: String,
    /// The profile that decoded it, if one did.
    pub profile: Option<String>,
    /// The bytes as received.
    pub payload: Arc<[u8]>,
    /// Time of receipt.
    pub received_at: DateTime<Utc>,
    /// Digest of the payload.
    pub digest: String,
    /// What the connection knew besides the bytes (JSON, BLE: see
    /// `pipeline::ble::BleFacts`), kept with a quarantined input.
    pub facts: Option<String>,
    /// Bytes received (more than `payload` holds when only the start of an
    /// oversized message was kept).
    pub size: usize,
}

impl RawInput {
    /// Received bytes, whole, with their digest.
    pub fn new(
        source: Source,
        origin: &str,
        profile: Option<String>,
        payload: &[u8],
        received_at: DateTime<Utc>,
    ) -> RawInput {
        RawInput::shared(source, origin, profile, Arc::from(payload), received_at)
    }

    /// [`RawInput::new`] sharing bytes already held (an inbox entry's)
    /// instead of copying them: a backlog's steps hold thousands.
    pub fn shared(
        source: Source,
        origin: &str,
        profile: Option<String>,
        payload: Arc<[u8]>,
        received_at: DateTime<Utc>,
    ) -> RawInput {
        RawInput {
            source,
            origin: origin.to_string(),
            profile,
            digest: device_profiles::canonical::content_digest(&payload),
            size: payload.len(),
            payload,
            received_at,
            facts: None,
        }
    }
}

/// Page cache, in KiB, of a connection that streams through new readings
/// (see [`Store::streaming`]): room for a B-tree's inner pages.
pub const STREAM_CACHE_KIB: i64 = 512;

/// Bytes the WAL file is cut back to after a checkpoint.
pub const WAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;

/// Payload bytes kept for oversized input.
pub const QUARANTINE_PAYLOAD_LIMIT: usize = 64 * 1024;

/// One thing to commit.
#[derive(Debug, Clone)]
pub enum Item {
    /// A canonical measurement, to be bound to the device's patient at commit.
    Reading {
        /// origin
        raw: Arc<RawInput>,
        /// position in the message
        index: usize,
        /// the readings (patient id is filled in at commit)
        group: ReadingGroup,
    },
    /// An input, or one measurement of it, that did not become readings.
    Quarantine {
        /// origin
        raw: Arc<RawInput>,
        /// position in the message (None: the whole message)
        index: Option<usize>,
        /// device, if known
        device_id: Option<String>,
        /// The typed reason it cannot be a reading.
        reason: Reject,
    },
    /// A validated questionnaire response: stored whole, its scores and
    /// marked answers as readings, in one transaction.
    Response {
        /// origin
        raw: Arc<RawInput>,
        /// the response, validated and scored
        response: Arc<device_profiles::questionnaire::Accepted>,
    },
}

/// What became of an item.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Readings stored (a reading already present is skipped, counted in `duplicates`).
    Stored {
        /// readings newly stored
        stored: usize,
        /// readings that were already there
        duplicates: usize,
        /// patient the device is assigned to
        patient_id: String,
    },
    /// Quarantined with this reason code (or already quarantined earlier).
    Quarantined {
        /// reason code
        reason: &'static str,
        /// false when this exact input was quarantined before
        new: bool,
    },
}

/// Sets what this process's stores are opened with: the store key (see
/// [`secrets`]) and whether the store is encrypted (see [`cipher`]).
pub fn configure(key_file: Option<&Path>, encryption: bool) -> Result<(), StoreError> {
    secrets::configure(key_file).map_err(cipher::CipherError::from)?;
    cipher::configure(encryption);
    Ok(())
}

/// Makes `conn` wait up to about 10 s for another connection's lock.
///
/// SQLite's own `busy_timeout` sleeps in steps growing to 100 ms, so a
/// writer that finds the lock taken by a stage's short commit (the rules,
/// a forwarder's cursor) often sleeps for far longer than the commit held
/// it; at a backlog's rates that idles the writer for seconds. This waits
/// in steps of at most 1 ms instead.
pub(crate) fn wait_for_locks(conn: &mut Connection) -> rusqlite::Result<()> {
    fn busy(attempt: i32) -> bool {
        // 25 µs doubling to 1 ms, then 1 ms steps: ~10 s in all.
        let attempt = u32::try_from(attempt).unwrap_or(0);
        if attempt > 10_000 {
            return false;
        }
        let micros = (25u64 << attempt.min(6)).min(1_000);
        std::thread::sleep(Duration::from_micros(micros));
        true
    }
    conn.busy_handler(Some(busy))
}

/// A connection to the store with the pragmas the gateway relies on.
pub struct Store {
    // Dropped after the connection: the lock outlives it.
    conn: Connection,
    path: PathBuf,
    /// When this connection last added reading keys (see [`keys`]).
    keys: keys::KeyIndexing,
    _lock: files::StoreLock,
}

impl Store {
    /// Opens (creating if needed) and migrates the store, encrypted or
    /// not as this process is configured (see [`configure`]).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, &cipher::Keying::configured(path)?)
    }

    /// Opens (creating if needed) and migrates the store with `keying`.
    pub fn open_with(path: &Path, keying: &cipher::Keying) -> Result<Store, StoreError> {
        files::prepare(path)?;
        let lock = files::lock(path, files::LockMode::Shared)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = cipher::connect(path, flags, keying)?;
        // WAL: readers (API, CLI) never block the writer. synchronous=FULL:
        // a committed reading survives a power cut, which home boxes get.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // 2 MiB of page cache (SQLite's default), taken only as used: the
        // gateway holds a connection per stage (rules, delivery, forwarders,
        // API), and their caches add up. The writer too: since its readings'
        // indexes are keyed by device and time (see keys.rs), a group commit
        // touches few of their pages, and 8 MiB indexed a backlog no faster.
        // Stages that stream through new readings keep less (`streaming`).
        conn.pragma_update(None, "cache_size", -2048)?;
        // Checkpoint every ~16 MiB of WAL instead of SQLite's ~4 MiB: a
        // large group commit would otherwise checkpoint (copy its pages into
        // the database and sync it) after nearly every transaction.
        conn.pragma_update(None, "wal_autocheckpoint", 4000)?;
        // After a checkpoint the WAL file is cut back to this size when it
        // is reused (SQLite keeps its largest size otherwise): the space
        // an operator frees on a full disk is not taken again by a WAL that
        // once grew. The writer also truncates it when idle (see writer.rs).
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        wait_for_locks(&mut conn)?;
        schema::migrate(&mut conn)?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            keys: keys::KeyIndexing::default(),
            _lock: lock,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tests: how often commits add reading keys (see [`keys`]).
    #[cfg(test)]
    pub(crate) fn keys_every(&mut self, every: std::time::Duration) {
        self.keys.every(every);
    }

    /// The same connection with a page cache of [`STREAM_CACHE_KIB`], for
    /// a stage that streams through new readings (the rule evaluator, a
    /// forwarder). In WAL mode SQLite empties a connection's cache whenever
    /// another connection has committed since its last read, so while
    /// readings arrive such a cache lives for one read transaction, in which
    /// a stream reads each page about once: 2 MiB of it would only hold
    /// pages read already, at a drain's busiest moment.
    pub fn streaming(self) -> Result<Store, StoreError> {
        self.conn
            .pragma_update(None, "cache_size", -STREAM_CACHE_KIB)?;
        Ok(self)
    }

    /// The underlying connection (read queries).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// A read transaction: every query in it sees the store as of its
    /// first read, while other connections go on committing. It cannot
    /// write once another connection has committed (WAL): stages that
    /// decide on a snapshot write in a [`Store::transaction`] of their own.
    pub fn snapshot(&mut self) -> Result<Transaction<'_>, StoreError> {
        Ok(self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?)
    }

    /// A write transaction (`BEGIN IMMEDIATE`): downstream stages commit
    /// their effect and their cursor together in one.
    pub fn transaction(&mut self) -> Result<Transaction<'_>, StoreError> {
        Ok(self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
    }

    /// Commits items in one transaction; returns an outcome per item.
    pub fn commit(
        &mut self,
        items: &[Item],
        dedup_window_ms: i64,
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut out = self.commit_many(&[items], dedup_window_ms)?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Commits several batches in one transaction (group commit); returns
    /// the outcomes batch by batch.
    pub fn commit_many(
        &mut self,
        batches: &[&[Item]],
        dedup_window_ms: i64,
    ) -> Result<Vec<Vec<Outcome>>, StoreError> {
        self.commit_with(batches, dedup_window_ms, |_| Ok(()))
    }

    /// The writer's group commit: item batches and inbox appends together.
    pub fn commit_group(
        &mut self,
        batches: &[&[Item]],
        appends: &[&[inbox::InboxEntry]],
        dedup_window_ms: i64,
    ) -> Result<Vec<Vec<Outcome>>, StoreError> {
        self.commit_with(batches, dedup_window_ms, |tx| {
            appends.iter().try_for_each(|a| inbox::append(tx, a))
        })
    }

    /// Commits what inbox entries became and removes them, up to and
    /// including `through`, in one transaction.
    pub fn commit_inbox(
        &mut self,
        batches: &[&[Item]],
        through: i64,
        dedup_window_ms: i64,
    ) -> Result<Vec<Vec<Outcome>>, StoreError> {
        self.commit_with(batches, dedup_window_ms, |tx| {
            inbox::remove_through(tx, through)
        })
    }

    fn commit_with(
        &mut self,
        batches: &[&[Item]],
        dedup_window_ms: i64,
        also: impl FnOnce(&Transaction<'_>) -> Result<(), StoreError>,
    ) -> Result<Vec<Vec<Outcome>>, StoreError> {
        // With readings, not with inbox appends alone: a bulk of keys
        // never holds up an acknowledgement.
        let add_keys = self.keys.due() && !batches.is_empty();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = now_ms();
        let mut seen = SeenDevices::default();
        let mut inserts = ReadingInserts::new(&tx)?;
        let mut out = Vec::with_capacity(batches.len());
        // Refusals are grouped per message before they are written (see
        // store/quarantine.rs); their outcomes are filled in after.
        let mut refusals = quarantine::Quarantine::default();
        let mut waiting: Vec<(usize, usize, usize, &'static str)> = Vec::new();
        for (b, items) in batches.iter().enumerate() {
            let mut outcomes = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match apply(&tx, &mut inserts, item, now, dedup_window_ms, &mut seen)? {
                    Applied::Done(o) => outcomes.push(o),
                    Applied::Refused { raw, refusal } => {
                        let code = refusal.reason.code();
                        let ticket = refusals.add(raw, refusal);
                        waiting.push((b, i, ticket, code));
                        outcomes.push(Outcome::Quarantined {
                            reason: code,
                            new: false,
                        });
                    }
                }
            }
            out.push(outcomes);
        }
        // Its statements borrow the transaction, which commits below.
        drop(inserts);
        let new = refusals.write(&tx)?;
        for (b, i, ticket, reason) in waiting {
            out[b][i] = Outcome::Quarantined {
                reason,
                new: new[ticket],
            };
        }
        seen.touch(&tx, now)?;
        also(&tx)?;
        // A bounded bulk (see keys.rs); keys stay due at the next commit
        // until every reading has them.
        let keyed = add_keys && keys::index_some(&tx)?;
        tx.commit()?;
        if keyed {
            self.keys.done();
        }
        Ok(out)
    }

    /// Checkpoints the WAL and truncates it to zero bytes, if no reader
    /// or writer is in the way right now (it is skipped otherwise).
    pub fn truncate_wal(&mut self) -> Result<(), StoreError> {
        self.conn.busy_timeout(Duration::ZERO)?;
        let r = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(0)
            });
        wait_for_locks(&mut self.conn)?;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Records the start of a gateway run; returns its id.
    pub fn start_run(&self) -> Result<i64, StoreError> {
        let now = now_ms();
        self.conn.execute(
            "INSERT INTO runs(started_at, heartbeat_at) VALUES (?1, ?1)",
            params![now],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// A small write that needs space (the newest run's heartbeat): whether
    /// commits work again after they failed.
    pub fn probe_write(&self) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE runs SET heartbeat_at = ?1 WHERE run_id = (SELECT MAX(run_id) FROM runs)",
            params![now_ms()],
        )?;
        Ok(())
    }

    /// Adds the keys of every reading stored without them (see [`keys`]):
    /// at the writer's start (readings a crash left unkeyed), or after a
    /// store was filled by other means.
    pub fn key_readings(&mut self) -> Result<(), StoreError> {
        self.key_readings_with(|_| Ok(()))
    }

    /// Heartbeat of the current run; the keys of readings stored since
    /// keys were last added go in with it (see [`keys`]).
    pub fn heartbeat(&mut self, run_id: i64, stopped: bool) -> Result<(), StoreError> {
        let now = now_ms();
        let stopped_at = stopped.then_some(now);
        self.key_readings_with(|tx| {
            tx.execute(
                "UPDATE runs SET heartbeat_at = ?2, stopped_at = COALESCE(?3, stopped_at) WHERE run_id = ?1",
                params![run_id, now, stopped_at],
            )?;
            Ok(())
        })
    }

    /// Adds the keys of every reading stored without them, the first bulk
    /// in one transaction with `also`, the rest in transactions of their
    /// own, each as short as a commit's bulk: a large gap (a backlog's
    /// tail, a store filled by other means) holds no other stage's commit
    /// back for long.
    fn key_readings_with(
        &mut self,
        also: impl FnOnce(&Transaction<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let tx = self.transaction()?;
        also(&tx)?;
        let mut keyed = keys::index_some(&tx)?;
        tx.commit()?;
        while !keyed {
            let tx = self.transaction()?;
            keyed = keys::index_some(&tx)?;
            tx.commit()?;
        }
        self.keys.done();
        Ok(())
    }

    /// Reads a cursor (0 when new).
    pub fn cursor(&self, name: &str) -> Result<i64, StoreError> {
        Ok(self.cursor_if_set(name)?.unwrap_or(0))
    }

    /// Reads a cursor, `None` when it was never set.
    pub fn cursor_if_set(&self, name: &str) -> Result<Option<i64>, StoreError> {
        cursor_in(&self.conn, name)
    }
}

/// Reads a cursor on any connection (inside a transaction: pass `&tx`),
/// `None` when it was never set.
pub fn cursor_in(conn: &Connection, name: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT position FROM cursors WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()?)
}

/// A cursor's position and when it last moved (ms), if set.
pub fn cursor_with_time(conn: &Connection, name: &str) -> Result<Option<(i64, i64)>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT position, updated_at FROM cursors WHERE name = ?1")?
        .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Sets a cursor inside a transaction, together with the effect it stands for.
pub fn set_cursor(tx: &Transaction<'_>, name: &str, position: i64) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO cursors(name, position, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
        params![name, position, now_ms()],
    )?;
    Ok(())
}

fn patient_of(tx: &Transaction<'_>, device_id: &str) -> Result<Option<String>, StoreError> {
    Ok(tx
        .prepare_cached("SELECT patient_id FROM devices WHERE device_id = ?1")?
        .query_row([device_id], |r| r.get::<_, Option<String>>(0))
        .optional()?
        .flatten())
}

/// The devices one transaction has seen, with their patient.
///
/// A backlog brings many readings of the same device into one group
/// commit: the registry is read once per device and transaction (still
/// inside it, so an assignment committed before is seen), and
/// `last_seen_at` is written once per device, at the end.
#[derive(Default)]
struct SeenDevices {
    patients: std::collections::HashMap<String, Option<String>>,
}

impl SeenDevices {
    fn patient(
        &mut self,
        tx: &Transaction<'_>,
        device_id: &str,
    ) -> Result<Option<String>, StoreError> {
        if let Some(p) = self.patients.get(device_id) {
            return Ok(p.clone());
        }
        let p = patient_of(tx, device_id)?;
        self.patients.insert(device_id.to_string(), p.clone());
        Ok(p)
    }

    /// Sets `last_seen_at` of the known devices that sent something.
    fn touch(&self, tx: &Transaction<'_>, now: i64) -> Result<(), StoreError> {
        let mut update =
            tx.prepare_cached("UPDATE devices SET last_seen_at = ?2 WHERE device_id = ?1")?;
        for (device_id, patient) in &self.patients {
            if patient.is_some() {
                update.execute(params![device_id, now])?;
            }
        }
        Ok(())
    }
}

/// What applying an item did: its outcome, or a refusal to quarantine.
enum Applied<'a> {
    Done(Outcome),
    Refused {
        raw: &'a RawInput,
        refusal: quarantine::Refusal<'a>,
    },
}

static UNKNOWN_DEVICE: Reject = Reject::UnknownDevice;
static UNKNOWN_PATIENT: Reject = Reject::UnknownPatient;
static PATIENT_MISMATCH: Reject = Reject::PatientMismatch;

fn apply<'a>(
    tx: &Transaction<'_>,
    inserts: &mut ReadingInserts<'_>,
    item: &'a Item,
    now: i64,
    dedup_window_ms: i64,
    seen: &mut SeenDevices,
) -> Result<Applied<'a>, StoreError> {
    match item {
        Item::Reading { raw, index, group } => {
            let device_id = group
                .readings
                .first()
                .map(|r| r.device_id.as_str())
                .unwrap_or_default();
            // The registry is read inside the write transaction: an
            // assignment committed by the CLI is seen by the very next batch,
            // and its re-processing cannot miss a reading quarantined meanwhile.
            let Some(patient_id) = seen.patient(tx, device_id)? else {
                return Ok(Applied::Refused {
                    raw,
                    refusal: quarantine::Refusal {
                        index: Some(*index),
                        device_id: Some(device_id),
                        reason: &UNKNOWN_DEVICE,
                    },
                });
            };
            inserts
                .group(group, &patient_id, now, dedup_window_ms)
                .map(Applied::Done)
        }
        Item::Response { raw, response } => {
            let device_id = response.subject.device_id.as_deref();
            // The patient the response names (enrolled), else the one its
            // device is assigned to, read inside the transaction as for readings.
            let patient_id = match (&response.subject.patient_id, device_id) {
                (Some(p), _) => responses::patient_enrolled(tx, p)?.then(|| p.clone()),
                (None, Some(d)) => seen.patient(tx, d)?,
                (None, None) => None,
            };
            // A device answers for its own patient only.
            if let (Some(p), Some(d)) = (&patient_id, device_id) {
                if seen.patient(tx, d)?.as_ref() != Some(p) {
                    return Ok(Applied::Refused {
                        raw,
                        refusal: quarantine::Refusal {
                            index: Some(0),
                            device_id,
                            reason: &PATIENT_MISMATCH,
                        },
                    });
                }
            }
            let Some(patient_id) = patient_id else {
                let reason = match response.subject.patient_id {
                    Some(_) => &UNKNOWN_PATIENT,
                    None => &UNKNOWN_DEVICE,
                };
                return Ok(Applied::Refused {
                    raw,
                    refusal: quarantine::Refusal {
                        index: Some(0),
                        device_id,
                        reason,
                    },
                });
            };
            let received_at = raw.received_at;
            let group = response.readings(&patient_id, received_at, raw.source);
            if !responses::insert(
                tx,
                response,
                &patient_id,
                received_at.timestamp_millis(),
                now,
                raw.source.name(),
            )? {
                return Ok(Applied::Done(Outcome::Stored {
                    stored: 0,
                    duplicates: group.readings.len().max(1),
                    patient_id,
                }));
            }
            inserts
                .group(&group, &patient_id, now, dedup_window_ms)
                .map(Applied::Done)
        }
        Item::Quarantine {
            raw,
            index,
            device_id,
            reason,
        } => Ok(Applied::Refused {
            raw,
            refusal: quarantine::Refusal {
                index: *index,
                device_id: device_id.as_deref(),
                reason,
            },
        }),
    }
}

/// The statements that store readings, prepared once per transaction (a
/// group commit stores thousands of measurements; looking each statement
/// up in the cache per measurement was a tenth of the writer's time).
pub(crate) struct ReadingInserts<'tx> {
    stored_at_time: rusqlite::CachedStatement<'tx>,
    stored_with_digest: rusqlite::CachedStatement<'tx>,
    stored_already: rusqlite::CachedStatement<'tx>,
    insert: rusqlite::CachedStatement<'tx>,
    seen: rusqlite::CachedStatement<'tx>,
}

impl<'tx> ReadingInserts<'tx> {
    /// Prepares them on `tx`.
    pub(crate) fn new(tx: &'tx Transaction<'_>) -> Result<Self, StoreError> {
        Ok(ReadingInserts {
            // A reading is stored once: its id is looked up in this
            // transaction (the writer's) among the device's readings of the
            // same device time (its identity, see
            // `device_profiles::canonical`), or of the same input digest
            // for readings without one: indexes where a device's readings
            // sit together, not a random one (see the schema). Two
            // statements, not an INSERT … SELECT: a one-row INSERT … VALUES
            // needs no statement journal.
            stored_at_time: tx.prepare_cached(
                "SELECT 1 FROM readings WHERE device_id = ?1 AND device_measured_at = ?2 AND reading_id = ?3",
            )?,
            stored_with_digest: tx.prepare_cached(
                "SELECT 1 FROM readings WHERE device_id = ?1 AND content_digest = ?2 AND reading_id = ?3",
            )?,
            // Neither (no producer makes such a reading): by id.
            stored_already: tx
                .prepare_cached(&format!("SELECT 1 FROM readings WHERE {}", queries::BY_ID))?,
            insert: tx.prepare_cached(
                "INSERT INTO readings (reading_id, group_id, panel, patient_id, device_id, metric, value, unit, loinc,
             device_measured_at, measured_at, received_at, committed_at, source, sequence, annotations, content_digest)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
            )?,
            seen: tx.prepare_cached(
                "SELECT 1 FROM readings WHERE device_id = ?1 AND content_digest = ?2 AND metric = ?3 AND received_at >= ?4 LIMIT 1",
            )?,
        })
    }

    /// Inserts a measurement's readings for `patient_id`.
    pub(crate) fn group(
        &mut self,
        group: &ReadingGroup,
        patient_id: &str,
        now: i64,
        dedup_window_ms: i64,
    ) -> Result<Outcome, StoreError> {
        let mut stored = 0;
        let mut duplicates = 0;
        let panel = group.panel.map(|p| p.name());
        for r in &group.readings {
            // Input without a device time has no natural identity: a redelivery
            // of the same bytes within the window is the same reading.
            if let Some(d) = &r.content_digest {
                let since = r.received_at.timestamp_millis() - dedup_window_ms;
                if self
                    .seen
                    .exists(params![r.device_id, d, r.metric.name(), since])?
                {
                    duplicates += 1;
                    continue;
                }
            }
            let stored_already = match (r.device_measured_at, &r.content_digest) {
                (Some(t), _) => self.stored_at_time.exists(params![
                    r.device_id,
                    t.timestamp_millis(),
                    r.reading_id
                ])?,
                (None, Some(d)) => {
                    self.stored_with_digest
                        .exists(params![r.device_id, d, r.reading_id])?
                }
                (None, None) => self.stored_already.exists([&r.reading_id])?,
            };
            if stored_already {
                duplicates += 1;
                continue;
            }
            // Most readings have none.
            let annotations: std::borrow::Cow<'_, str> = if r.annotations.is_empty() {
                "{}".into()
            } else {
                serde_json::to_string(&r.annotations)
                    .unwrap_or_else(|_| "{}".into())
                    .into()
            };
            self.insert.execute(params![
                r.reading_id,
                r.group_id,
                panel,
                patient_id,
                r.device_id,
                r.metric.name(),
                r.value,
                r.unit,
                r.loinc,
                r.device_measured_at.map(|t| t.timestamp_millis()),
                r.measured_at.timestamp_millis(),
                r.received_at.timestamp_millis(),
                now,
                r.source.name(),
                r.sequence.and_then(|s| i64::try_from(s).ok()),
                annotations,
                r.content_digest,
            ])?;
            stored += 1;
        }
        Ok(Outcome::Stored {
            stored,
            duplicates,
            patient_id: patient_id.to_string(),
        })
    }
}
