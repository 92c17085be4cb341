//! Read queries over readings and quarantine rows (CLI, demo view, the API).
//!
//! The column lists and row mappers are shared by every reader so that a
//! reading or a quarantine row reads back the same wherever it is shown; the
//! API's keyset-paged listings build on them through its page helper.

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{Store, StoreError};

/// A stored reading as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredReading {
    /// Commit order.
    pub seq: i64,
    /// Stable id.
    pub reading_id: String,
    /// Measurement id.
    pub group_id: String,
    pub patient_id: String,
    pub device_id: String,
    /// Metric name.
    pub metric: String,
    /// Value in `unit`.
    pub value: f64,
    /// UCUM unit.
    pub unit: String,
    /// LOINC code.
    pub loinc: String,
    /// Device's own time.
    pub device_measured_at: Option<DateTime<Utc>>,
    /// Corrected time.
    pub measured_at: DateTime<Utc>,
    /// Receipt time.
    pub received_at: DateTime<Utc>,
    /// Source kind.
    pub source: String,
    /// Device sequence number.
    pub sequence: Option<i64>,
    /// Annotations (JSON object).
    pub annotations: serde_json::Value,
    /// Panel of the measurement (`blood_pressure`), if any: read for the
    /// upstream link, not shown by the API.
    #[serde(skip)]
    pub panel: Option<String>,
    /// Digest of the input, kept for readings without device time (their
    /// identity across redeliveries): read for the upstream link only.
    #[serde(skip)]
    pub content_digest: Option<String>,
}

/// A quarantine row as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuarantineRow {
    /// Row id.
    pub id: i64,
    /// Receipt time.
    pub received_at: DateTime<Utc>,
    /// Source kind.
    pub source: String,
    /// Topic or other origin.
    pub origin: String,
    /// Profile that decoded it.
    pub profile: Option<String>,
    /// Device, if known.
    pub device_id: Option<String>,
    /// Reason code.
    pub reason: String,
    /// Reason text.
    pub detail: String,
    /// open | reprocessed | discarded
    pub status: String,
    /// Payload size kept.
    pub payload_len: usize,
    /// Measurements of the message refused alike, which this entry stands for.
    pub count: i64,
    /// Their positions in the message (`0-99,104`), when more than one and
    /// kept; the first is `measurement_index`.
    pub measurement_indexes: Option<String>,
    /// Position of the (first) measurement in the message; None: the whole message.
    pub measurement_index: Option<i64>,
    /// Bytes received (the payload keeps the first 64 KiB).
    pub payload_size: Option<i64>,
}

fn t(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The condition [`BY_ID`] and [`BY_GROUP`] share: a reading whose id
/// column `$column` is `?1`, found through `reading_keys` (an id's
/// 8-character prefix, filled in bulk by the writer up to the cursor
/// `store.keys`, see `store/keys.rs`) for readings up to that cursor, and by
/// reading the few readings after it; the full id picks the reading.
macro_rules! keyed {
    ($column:literal) => {
        concat!(
            "(seq IN (SELECT seq FROM reading_keys WHERE key = substr(?1, 1, 8)) ",
            "OR seq > COALESCE((SELECT position FROM cursors WHERE name = 'store.keys'), 0)) ",
            "AND ",
            $column,
            " = ?1"
        )
    };
}

/// Finds readings by reading id `?1`.
pub const BY_ID: &str = keyed!("reading_id");

/// Finds the readings of measurement `?1`.
pub const BY_GROUP: &str = keyed!("group_id");

/// Readings found by [`BY_ID`] and its kin come in commit order through
/// this clause, not `ORDER BY seq`: asked for rows in rowid order, SQLite
/// prefers reading the whole table in that order to finding the few rows
/// and sorting them (`+seq` is an expression no index gives in order).
const IN_ORDER: &str = "ORDER BY +seq";

/// The statements that find readings by id, made once. None reads the
/// whole table (a test checks SQLite's plan of each).
pub(crate) struct ById {
    /// A measurement's blood-pressure parts.
    blood_pressure_group: String,
    /// A measurement's readings.
    group: String,
    /// One reading that is not part of a blood-pressure measurement.
    single: String,
    /// A reading's metric and measurement.
    metric_and_group: String,
    /// The rest of measurement `?1` after `?2`, through the keys, reading
    /// after the later of `?2` and the keys' cursor.
    rest_of_group: String,
    /// The same among the readings of device `?3` at device time `?4` (an
    /// index probe).
    rest_of_group_at: String,
}

impl ById {
    pub(crate) fn get() -> &'static ById {
        static STATEMENTS: std::sync::LazyLock<ById> = std::sync::LazyLock::new(|| {
            ById {
            blood_pressure_group: format!(
                "SELECT {READING_COLUMNS} FROM readings WHERE {BY_GROUP} AND metric IN {BP_METRICS} {IN_ORDER}"
            ),
            group: format!("SELECT {READING_COLUMNS} FROM readings WHERE {BY_GROUP} {IN_ORDER}"),
            single: format!(
                "SELECT {READING_COLUMNS} FROM readings WHERE {BY_ID} AND metric NOT IN {BP_METRICS}"
            ),
            metric_and_group: format!("SELECT metric, group_id FROM readings WHERE {BY_ID}"),
            rest_of_group: format!(
                "{COMMITTED} WHERE (seq IN (SELECT seq FROM reading_keys WHERE key = substr(?1, 1, 8) AND seq > ?2) \
                 OR seq > MAX(?2, COALESCE((SELECT position FROM cursors WHERE name = 'store.keys'), 0))) \
                 AND group_id = ?1 {IN_ORDER}"
            ),
            rest_of_group_at: format!(
                "{COMMITTED} WHERE device_id = ?3 AND device_measured_at = ?4 AND group_id = ?1 AND seq > ?2 {IN_ORDER}"
            ),
        }
        });
        &STATEMENTS
    }

    /// Every statement, for the test of their plans.
    #[cfg(test)]
    pub(crate) fn all(&self) -> [&str; 6] {
        [
            &self.blood_pressure_group,
            &self.group,
            &self.single,
            &self.metric_and_group,
            &self.rest_of_group,
            &self.rest_of_group_at,
        ]
    }
}

/// Columns read by [`reading_row`], in its order.
pub const READING_COLUMNS: &str =
    "seq, reading_id, group_id, patient_id, device_id, metric, value, unit, loinc, \
     device_measured_at, measured_at, received_at, source, sequence, annotations, \
     panel, content_digest";

/// Maps a row selected with [`READING_COLUMNS`].
pub fn reading_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredReading> {
    Ok(StoredReading {
        seq: r.get(0)?,
        reading_id: r.get(1)?,
        group_id: r.get(2)?,
        patient_id: r.get(3)?,
        device_id: r.get(4)?,
        metric: r.get(5)?,
        value: r.get(6)?,
        unit: r.get(7)?,
        loinc: r.get(8)?,
        device_measured_at: r.get::<_, Option<i64>>(9)?.map(t),
        measured_at: t(r.get(10)?),
        received_at: t(r.get(11)?),
        source: r.get(12)?,
        sequence: r.get(13)?,
        annotations: serde_json::from_str(&r.get::<_, String>(14)?).unwrap_or_default(),
        panel: r.get(15)?,
        content_digest: r.get(16)?,
    })
}

/// What a time-series point carries of a stored reading, borrowed from its
/// row ([`Store::each_point_after`]): its text stays in SQLite's buffers,
/// its time is in Unix milliseconds and its annotations are the stored JSON
/// text. The InfluxDB forwarder encodes a backlog from these: reading each
/// row into a [`StoredReading`] (seventeen columns, ten allocations and a
/// JSON parse) took most of its time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointRef<'a> {
    /// Commit order.
    pub seq: i64,
    pub patient_id: &'a str,
    pub device_id: &'a str,
    /// Metric name.
    pub metric: &'a str,
    pub value: f64,
    /// UCUM unit.
    pub unit: &'a str,
    /// Corrected time (ms).
    pub measured_at: i64,
    /// Source kind.
    pub source: &'a str,
    /// A JSON object; `{}` for most readings.
    pub annotations: &'a str,
}

/// Columns read by [`point_row`], in its order.
const POINT_COLUMNS: &str =
    "seq, patient_id, device_id, metric, value, unit, measured_at, source, annotations";

/// Borrows a row selected with [`POINT_COLUMNS`].
fn point_row<'a>(r: &'a rusqlite::Row<'a>) -> rusqlite::Result<PointRef<'a>> {
    let text = |i: usize| -> rusqlite::Result<&'a str> {
        r.get_ref(i)?.as_str().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    };
    Ok(PointRef {
        seq: r.get(0)?,
        patient_id: text(1)?,
        device_id: text(2)?,
        metric: text(3)?,
        value: r.get(4)?,
        unit: text(5)?,
        measured_at: r.get(6)?,
        source: text(7)?,
        annotations: text(8)?,
    })
}

/// Columns read by [`quarantine_row`], in its order.
pub const QUARANTINE_COLUMNS: &str =
    "id, received_at, source, origin, profile, device_id, reason, detail, status, \
     COALESCE((SELECT length(p.payload) FROM quarantine_payloads p WHERE p.digest = quarantine.payload_digest), length(quarantine.payload)), \
     count, measurement_indexes, measurement_index, \
     (SELECT p.size FROM quarantine_payloads p WHERE p.digest = quarantine.payload_digest)";

/// The payload of a quarantine row (kept once per digest since schema 5).
pub const QUARANTINE_PAYLOAD: &str =
    "COALESCE((SELECT p.payload FROM quarantine_payloads p WHERE p.digest = quarantine.payload_digest), quarantine.payload)";

/// Maps a row selected with [`QUARANTINE_COLUMNS`].
pub fn quarantine_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<QuarantineRow> {
    Ok(QuarantineRow {
        id: r.get(0)?,
        received_at: t(r.get(1)?),
        source: r.get(2)?,
        origin: r.get(3)?,
        profile: r.get(4)?,
        device_id: r.get(5)?,
        reason: r.get(6)?,
        detail: r.get(7)?,
        status: r.get(8)?,
        payload_len: r.get::<_, i64>(9)? as usize,
        count: r.get(10)?,
        measurement_indexes: r.get(11)?,
        measurement_index: r.get(12)?,
        payload_size: r.get(13)?,
    })
}

impl Store {
    /// Readings committed after `after_seq`, in commit order, at most `limit`.
    pub fn readings_after(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<StoredReading>, StoreError> {
        let mut q = self.conn.prepare_cached(&format!(
            "SELECT {READING_COLUMNS} FROM readings WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))?;
        let rows = q.query_map(params![after_seq, limit as i64], reading_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// [`Store::readings_after`] one reading at a time: a caller that turns
    /// each into something smaller (the forwarder's lines) never holds the
    /// batch as rows.
    pub fn each_reading_after(
        &self,
        after_seq: i64,
        limit: usize,
        mut f: impl FnMut(StoredReading),
    ) -> Result<(), StoreError> {
        let mut q = self.conn.prepare_cached(&format!(
            "SELECT {READING_COLUMNS} FROM readings WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))?;
        for r in q.query_map(params![after_seq, limit as i64], reading_row)? {
            f(r?);
        }
        Ok(())
    }

    /// Each reading committed after `after_seq` (at most `limit`, in commit
    /// order) as a time-series point borrowed from its row.
    pub fn each_point_after(
        &self,
        after_seq: i64,
        limit: usize,
        mut f: impl FnMut(PointRef<'_>),
    ) -> Result<(), StoreError> {
        let mut q = self.conn.prepare_cached(&format!(
            "SELECT {POINT_COLUMNS} FROM readings WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))?;
        let mut rows = q.query(params![after_seq, limit as i64])?;
        while let Some(row) = rows.next()? {
            f(point_row(row)?);
        }
        Ok(())
    }

    /// The reading with sequence number `seq`, if it is stored.
    pub fn reading_by_seq(&self, seq: i64) -> Result<Option<StoredReading>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {READING_COLUMNS} FROM readings WHERE seq = ?1"),
                [seq],
                reading_row,
            )
            .optional()?)
    }

    /// Quarantine rows with id greater than `after_id`, at most `limit`.
    pub fn quarantine_after(
        &self,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<QuarantineRow>, StoreError> {
        let mut q = self.conn.prepare_cached(&format!(
            "SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE id > ?1 ORDER BY id LIMIT ?2"
        ))?;
        let rows = q.query_map(params![after_id, limit as i64], quarantine_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Number of readings.
    pub fn count_readings(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM readings", [], |r| r.get(0))?)
    }

    /// Open quarantine rows by reason.
    pub fn quarantine_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut q = self
            .conn
            .prepare("SELECT reason, COUNT(*) FROM quarantine WHERE status = 'open' GROUP BY reason ORDER BY reason")?;
        let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Metrics stored as the parts of one blood-pressure measurement.
const BP_METRICS: &str = "('systolic', 'diastolic', 'mean_arterial_pressure')";

/// The newest reading of `metric` for a patient (by measurement time, then
/// commit order).
pub fn latest_reading(
    conn: &Connection,
    patient_id: &str,
    metric: &str,
) -> Result<Option<StoredReading>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {READING_COLUMNS} FROM readings WHERE patient_id = ?1 AND metric = ?2
                 ORDER BY measured_at DESC, seq DESC LIMIT 1"
    ))?;
    let mut rows = stmt.query_map(params![patient_id, metric], reading_row)?;
    Ok(rows.next().transpose()?)
}

/// The parts of one blood-pressure measurement, in commit order.
pub fn blood_pressure_group(
    conn: &Connection,
    group_id: &str,
) -> Result<Vec<StoredReading>, StoreError> {
    let mut stmt = conn.prepare_cached(&ById::get().blood_pressure_group)?;
    let rows = stmt.query_map([group_id], reading_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// All readings of one measurement, in commit order.
pub fn group_readings(conn: &Connection, group_id: &str) -> Result<Vec<StoredReading>, StoreError> {
    let mut stmt = conn.prepare_cached(&ById::get().group)?;
    let rows = stmt.query_map([group_id], reading_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// One reading that is not part of a blood-pressure measurement (those are
/// read together, by group).
pub fn single_reading(
    conn: &Connection,
    reading_id: &str,
) -> Result<Vec<StoredReading>, StoreError> {
    let mut stmt = conn.prepare_cached(&ById::get().single)?;
    let rows = stmt.query_map([reading_id], reading_row)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// The metric and measurement group of a stored reading, if it exists.
pub fn reading_group(
    conn: &Connection,
    reading_id: &str,
) -> Result<Option<(String, String)>, StoreError> {
    Ok(conn
        .prepare_cached(&ById::get().metric_and_group)?
        .query_row([reading_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// One quarantine row and its payload bytes.
pub fn quarantine_with_payload(
    conn: &Connection,
    id: i64,
) -> Result<Option<(QuarantineRow, Vec<u8>)>, StoreError> {
    let found = conn.query_row(
        &format!("SELECT {QUARANTINE_COLUMNS}, {QUARANTINE_PAYLOAD} FROM quarantine WHERE id = ?1"),
        [id],
        |r| Ok((quarantine_row(r)?, r.get::<_, Vec<u8>>(14)?)),
    );
    match found {
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        other => Ok(Some(other?)),
    }
}

/// One page of readings, in measured-time order (`measured_at`, `seq`).
#[derive(Debug, Clone, Default)]
pub struct ReadingPage {
    /// Only this metric (canonical name).
    pub metric: Option<String>,
    /// Measured at or after (ms).
    pub since: Option<i64>,
    /// Measured before (ms).
    pub until: Option<i64>,
    /// After this (`measured_at` ms, `seq`): the keyset cursor.
    pub after: Option<(i64, i64)>,
    /// Only this device.
    pub device_id: Option<String>,
    /// Only this patient.
    pub patient_id: Option<String>,
    /// Only patients of these care teams (a JSON array: a care-team
    /// token's scope).
    pub scope_teams: Option<String>,
    /// Most rows.
    pub limit: usize,
}

/// A patient's values of one metric measured in `[from, to)` (ms), in
/// time order, as (measured at ms, value): what a chart draws, without the
/// rest of each reading.
pub fn series(
    conn: &Connection,
    patient_id: &str,
    metric: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(i64, f64)>, StoreError> {
    let mut q = conn.prepare_cached(
        "SELECT measured_at, value FROM readings
         WHERE patient_id = ?1 AND metric = ?2 AND measured_at >= ?3 AND measured_at < ?4
         ORDER BY measured_at, seq",
    )?;
    let rows = q.query_map(rusqlite::params![patient_id, metric, from, to], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Limits a listing of readings in (measured time, seq) order to a
/// patient and to metrics (`None`: any). With a patient, one arm per metric
/// (the patient's own when none are named), merged from
/// `readings_patient_metric_time` ([`super::listing::Filter::split`]).
fn by_patient_and_metrics(
    conn: &Connection,
    f: &mut super::listing::Filter,
    patient_id: Option<&str>,
    metrics: Option<Vec<String>>,
) -> Result<(), StoreError> {
    match (patient_id, metrics) {
        (Some(p), metrics) => {
            f.add("patient_id = ?", p.to_string());
            let metrics = match metrics {
                Some(ms) => ms,
                None => patient_metrics(conn, p)?,
            };
            f.split("metric", metrics);
        }
        (None, Some(ms)) => f.add(
            "metric IN (SELECT value FROM json_each(?))",
            serde_json::to_string(&ms).unwrap_or_else(|_| "[]".into()),
        ),
        (None, None) => {}
    }
    Ok(())
}

/// The page of readings `q` selects.
pub fn readings_page(conn: &Connection, q: &ReadingPage) -> Result<Vec<StoredReading>, StoreError> {
    let mut f = super::listing::Filter::default();
    if let Some(s) = q.since {
        f.add("measured_at >= ?", s);
    }
    if let Some(u) = q.until {
        f.add("measured_at < ?", u);
    }
    if let Some((t, seq)) = q.after {
        f.add2("(measured_at, seq) > (?a, ?b)", t, seq);
    }
    if let Some(d) = &q.device_id {
        f.add("device_id = ?", d.clone());
    }
    f.scope("patient_id", q.scope_teams.clone());
    by_patient_and_metrics(
        conn,
        &mut f,
        q.patient_id.as_deref(),
        q.metric.clone().map(|m| vec![m]),
    )?;
    f.query(
        conn,
        &format!("{READING_COLUMNS} FROM readings"),
        "measured_at, seq",
        q.limit,
        reading_row,
    )
}

/// One page of quarantine rows, oldest first (`id`).
#[derive(Debug, Clone, Default)]
pub struct QuarantinePage {
    /// `open`, `reprocessed` or `discarded` (the caller checks the word).
    pub status: Option<String>,
    /// Only this reason code.
    pub reason: Option<String>,
    /// Only this device.
    pub device_id: Option<String>,
    /// Only this source (`mqtt`, `ble`, `https`).
    pub source: Option<String>,
    /// After this id: the keyset cursor.
    pub after: Option<i64>,
    /// Most rows.
    pub limit: usize,
}

/// The page of quarantine rows `q` selects.
pub fn quarantine_page(
    conn: &Connection,
    q: &QuarantinePage,
) -> Result<Vec<QuarantineRow>, StoreError> {
    let mut f = super::listing::Filter::default();
    if let Some(s) = &q.status {
        f.add("status = ?", s.clone());
    }
    if let Some(r) = &q.reason {
        f.add("reason = ?", r.clone());
    }
    if let Some(d) = &q.device_id {
        f.add("device_id = ?", d.clone());
    }
    if let Some(s) = &q.source {
        f.add("source = ?", s.clone());
    }
    if let Some(id) = q.after {
        f.add("id > ?", id);
    }
    f.query(
        conn,
        &format!("{QUARANTINE_COLUMNS} FROM quarantine"),
        "id",
        q.limit,
        quarantine_row,
    )
}

/// A committed reading as the rule evaluator reads it (times in ms).
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedReading {
    /// Commit order.
    pub seq: i64,
    /// Stable id.
    pub reading_id: String,
    /// Measurement id.
    pub group_id: String,
    pub patient_id: String,
    /// Metric name.
    pub metric: String,
    pub value: f64,
    /// Corrected measurement time.
    pub measured_at: i64,
    /// Receipt time.
    pub received_at: i64,
    /// Commit time.
    pub committed_at: i64,
}

const COMMITTED: &str = "SELECT seq, reading_id, group_id, patient_id, metric, value, measured_at, received_at, committed_at
                      FROM readings";

fn committed(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<CommittedReading>, StoreError> {
    let mut q = conn.prepare_cached(sql)?;
    let rows = q.query_map(p, |r| {
        Ok(CommittedReading {
            seq: r.get(0)?,
            reading_id: r.get(1)?,
            group_id: r.get(2)?,
            patient_id: r.get(3)?,
            metric: r.get(4)?,
            value: r.get(5)?,
            measured_at: r.get(6)?,
            received_at: r.get(7)?,
            committed_at: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The committed readings `tail` (`WHERE ... ORDER BY ...`) selects.
pub(super) fn committed_where(
    conn: &Connection,
    tail: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<CommittedReading>, StoreError> {
    committed(conn, &format!("{COMMITTED} {tail}"), p)
}

/// Up to `limit` readings committed after `after_seq`, in commit order.
pub fn committed_after(
    conn: &Connection,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<CommittedReading>, StoreError> {
    committed(
        conn,
        &format!("{COMMITTED} WHERE seq > ?1 ORDER BY seq LIMIT ?2"),
        params![after_seq, i64::try_from(limit).unwrap_or(i64::MAX)],
    )
}

/// The readings of a measurement committed after `after_seq` (the rest of
/// a measurement a batch limit cut), in commit order. When the reading at
/// `after_seq` is one of the measurement's and has a device time, the rest
/// are found among the device's readings of that time (the time the
/// measurement's id is built on): an index probe, where the keys would
/// leave the readings after their cursor to be read (the rule stage asks
/// right behind the writer).
pub fn committed_in_group_after(
    conn: &Connection,
    group_id: &str,
    after_seq: i64,
) -> Result<Vec<CommittedReading>, StoreError> {
    let at: Option<(String, Option<i64>, String)> = conn
        .prepare_cached(
            "SELECT device_id, device_measured_at, group_id FROM readings WHERE seq = ?1",
        )?
        .query_row([after_seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let by_id = ById::get();
    match at {
        Some((device, Some(t), group)) if group == group_id => committed(
            conn,
            &by_id.rest_of_group_at,
            params![group_id, after_seq, device, t],
        ),
        _ => committed(conn, &by_id.rest_of_group, params![group_id, after_seq]),
    }
}

/// The highest sequence and measured-at (ms) of readings committed after
/// `after_seq`; `(None, None)` when there are none.
pub fn newest_after(
    conn: &Connection,
    after_seq: i64,
) -> Result<(Option<i64>, Option<i64>), StoreError> {
    Ok(conn
        .prepare_cached("SELECT MAX(seq), MAX(measured_at) FROM readings WHERE seq > ?1")?
        .query_row(params![after_seq], |r| Ok((r.get(0)?, r.get(1)?)))?)
}

/// The newest reading's sequence number (0 in an empty store).
pub fn newest_seq(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM readings")?
        .query_row([], |r| r.get(0))?)
}

/// Readings committed after `seq`.
pub fn count_after(conn: &Connection, seq: i64) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM readings WHERE seq > ?1")?
        .query_row([seq], |r| r.get(0))?)
}

/// Deletes at most `chunk` readings at or below `limit` measured and
/// committed before `cutoff_ms` (retention; one short transaction each).
pub fn delete_old(
    conn: &Connection,
    limit: i64,
    cutoff_ms: i64,
    chunk: i64,
) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "DELETE FROM readings WHERE seq IN (
             SELECT seq FROM readings
             WHERE seq <= ?1 AND measured_at < ?2 AND committed_at < ?2
             ORDER BY seq LIMIT ?3)",
        params![limit, cutoff_ms, chunk],
    )?)
}

/// Whether a row of `readings` was typed in by a person (annotation
/// `entry = "manual"`, see `device_profiles::canonical::MANUAL_ENTRY`).
/// Most rows have no annotations, and skip the JSON parse.
const MANUAL: &str = "(annotations != '{}' AND json_extract(annotations, '$.entry') IS 'manual')";

/// One patient's readings in time order across metrics, as the RPM report
/// reads them: the patient's series, each a range of
/// `readings_patient_metric_time` in time order, merged as they are read
/// (a reader that stops early reads no more). The metrics are looked up
/// once (a skip scan: one seek per metric, however long the series).
pub struct PatientReadings<'c> {
    conn: &'c Connection,
    patient_id: String,
    metrics: Vec<String>,
}

impl<'c> PatientReadings<'c> {
    /// `patient_id`'s readings in the store `conn` reads.
    pub fn of(conn: &'c Connection, patient_id: &str) -> Result<Self, StoreError> {
        let mut q = conn.prepare_cached(
            "WITH RECURSIVE m(metric) AS (
                 SELECT (SELECT MIN(metric) FROM readings WHERE patient_id = ?1)
                 UNION ALL
                 SELECT (SELECT MIN(metric) FROM readings WHERE patient_id = ?1 AND metric > m.metric)
                 FROM m WHERE m.metric IS NOT NULL)
             SELECT metric FROM m WHERE metric IS NOT NULL",
        )?;
        let metrics = q
            .query_map([patient_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(PatientReadings {
            conn,
            patient_id: patient_id.to_string(),
            metrics,
        })
    }

    /// When the first automatically transmitted reading (not typed in by
    /// hand) was measured (ms), if any.
    pub fn first_automatic(&self) -> Result<Option<i64>, StoreError> {
        let mut first = None;
        self.each_time(i64::MIN, i64::MAX, |ms, manual| {
            if !manual {
                first = Some(ms);
            }
            manual
        })?;
        Ok(first)
    }

    /// Streams the readings measured in `[from, to)` (ms) in time order to
    /// `each(measured_at, manual)` until it returns false.
    pub fn each_time(
        &self,
        from: i64,
        to: i64,
        mut each: impl FnMut(i64, bool) -> bool,
    ) -> Result<(), StoreError> {
        let mut f = reading_times(&self.patient_id, from, to);
        f.split("metric", self.metrics.clone());
        let Some((sql, values)) = f.statement(&format!("measured_at, {MANUAL} FROM readings"), "1")
        else {
            return Ok(());
        };
        let mut q = self.conn.prepare_cached(&sql)?;
        let mut rows = q.query(rusqlite::params_from_iter(values))?;
        while let Some(r) = rows.next()? {
            if !each(r.get(0)?, r.get::<_, bool>(1)?) {
                break;
            }
        }
        Ok(())
    }
}

/// The metrics `patient_id` has readings of, in name order.
pub fn patient_metrics(conn: &Connection, patient_id: &str) -> Result<Vec<String>, StoreError> {
    Ok(PatientReadings::of(conn, patient_id)?.metrics)
}

/// The filter of [`PatientReadings::each_time`].
pub(crate) fn reading_times(patient_id: &str, from: i64, to: i64) -> super::listing::Filter {
    let mut f = super::listing::Filter::default();
    f.add("patient_id = ?", patient_id.to_string());
    f.add("measured_at >= ?", from);
    f.add("measured_at < ?", to);
    f
}

/// Which readings a FHIR Observation search wants (every condition ANDed).
#[derive(Debug, Clone, Default)]
pub struct ReadingSearch {
    /// Only this patient.
    pub patient_id: Option<String>,
    /// Only these metrics (by name); `None`: any.
    pub metrics: Option<Vec<String>>,
    /// Measured at or after (Unix ms).
    pub from: Option<i64>,
    /// Measured before (Unix ms).
    pub before: Option<i64>,
    /// After this (measured_at, seq): the previous page's last.
    pub after: Option<(i64, i64)>,
    /// Only patients of these care teams (JSON array); `None`: every patient.
    pub scope_json: Option<String>,
    /// Most rows.
    pub limit: usize,
}

/// Readings in (measured time, commit) order for a FHIR search.
pub fn search_readings(
    conn: &Connection,
    q: &ReadingSearch,
) -> Result<Vec<StoredReading>, StoreError> {
    let mut f = super::listing::Filter::default();
    if let Some(t) = q.from {
        f.add("measured_at >= ?", t);
    }
    if let Some(t) = q.before {
        f.add("measured_at < ?", t);
    }
    if let Some((t, seq)) = q.after {
        f.add2("(measured_at, seq) > (?a, ?b)", t, seq);
    }
    f.scope("patient_id", q.scope_json.clone());
    by_patient_and_metrics(conn, &mut f, q.patient_id.as_deref(), q.metrics.clone())?;
    f.query(
        conn,
        &format!("{READING_COLUMNS} FROM readings"),
        "measured_at, seq",
        q.limit,
        reading_row,
    )
}
