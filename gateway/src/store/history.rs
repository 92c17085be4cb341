//! The rule engine's view of stored readings: bounded, indexed SQLite queries.
//!
//! Every query is a range or a point lookup on the index
//! `readings(patient_id, metric, measured_at)`: a window (at most 90 days,
//! enforced by the rule loader) or the last N readings (N ≤ 1000). So the
//! cost of evaluating one reading depends on the rule windows, never on how
//! many readings the store holds (see docs/benchmarks.md, "Rule evaluation").
//!
//! The evaluator asks through its in-memory windows
//! (`crate::rules::windows`), which read each series here once and then
//! only questions reaching below what they hold (late readings); it sees
//! the store as of its batch's last commit position. The what-if replay
//! asks every question here, as of each reading's commit position (a
//! back-filled reading is invisible before it arrived). Both are these
//! queries with a `seq <= ?` bound ([`SqliteHistory::as_of`]), one
//! implementation for both.
//!
//! [`History`] cannot return errors (the engine is pure); a failed query is
//! remembered and the caller checks [`SqliteHistory::take_error`] before
//! committing, so a store error aborts the batch instead of silently turning
//! into "no data".

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use alerting_rules::{History, Point};
use chrono::{DateTime, TimeZone, Utc};
use device_profiles::Metric;
use rusqlite::{params, Connection, Statement};

use super::queries::CommittedReading;
use super::StoreError;

/// Most rows one window query returns: a safety net above the longest
/// window of a 5-minute CGM (90 days ≈ 26 000 readings).
pub const MAX_WINDOW_ROWS: i64 = 50_000;

/// [`History`] over the store's `readings` table, optionally as of a
/// commit position.
pub struct SqliteHistory<'c> {
    conn: &'c Connection,
    /// Readings with a larger `seq` are invisible (`None`: all are seen).
    bound: Cell<Option<i64>>,
    error: RefCell<Option<rusqlite::Error>>,
    /// Statements kept prepared here rather than in rusqlite's cache, which
    /// clears their bindings on return: SQLite then prepares them again at
    /// the next step (a third of a replay's time).
    stmts: RefCell<HashMap<String, Statement<'c>>>,
}

fn t(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl<'c> SqliteHistory<'c> {
    /// A view of every committed reading over `conn` (a transaction derefs
    /// to a connection).
    pub fn new(conn: &'c Connection) -> Self {
        SqliteHistory {
            conn,
            bound: Cell::new(None),
            error: RefCell::new(None),
            stmts: RefCell::new(HashMap::new()),
        }
    }

    /// A view of the readings committed at or before `seq`.
    pub fn as_of(conn: &'c Connection, seq: i64) -> Self {
        SqliteHistory {
            bound: Cell::new(Some(seq)),
            ..SqliteHistory::new(conn)
        }
    }

    /// Moves the commit position of a bounded view (the replay advances it
    /// reading by reading); an unbounded view stays unbounded.
    pub fn advance_to(&mut self, seq: i64) {
        if self.bound.get().is_some() {
            self.bound.set(Some(seq));
        }
    }

    /// `f` asked of this view as of commit position `seq` when that is
    /// earlier than its own (an unbounded view stays unbounded): the
    /// in-memory windows read a series as it was before their batch, whose
    /// readings they hold already.
    pub fn before<T>(&self, seq: i64, f: impl FnOnce(&Self) -> T) -> T {
        let own = self.bound.get();
        if let Some(b) = own {
            self.bound.set(Some(b.min(seq)));
        }
        let r = f(self);
        self.bound.set(own);
        r
    }

    /// The first query error since the last call, if any.
    pub fn take_error(&self) -> Option<rusqlite::Error> {
        self.error.borrow_mut().take()
    }

    /// Whether a query failed since the last [`SqliteHistory::take_error`].
    pub fn failed(&self) -> bool {
        self.error.borrow().is_some()
    }

    fn fail<T: Default>(&self, r: rusqlite::Result<T>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                T::default()
            }
        }
    }

    /// `clause` (`AND seq <= ?n`) when bounded, nothing otherwise: the
    /// unbounded queries carry no such clause, so the evaluator's plans
    /// are exactly the index lookups.
    fn bounded(&self, clause: &'static str) -> &'static str {
        if self.bound.get().is_some() {
            clause
        } else {
            ""
        }
    }

    /// Runs `f` on the statement of `sql`, prepared at its first use.
    fn with_stmt<T>(
        &self,
        sql: &str,
        f: impl FnOnce(&mut Statement<'c>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let mut stmts = self.stmts.borrow_mut();
        if let Some(stmt) = stmts.get_mut(sql) {
            return f(stmt);
        }
        let mut stmt = self.conn.prepare(sql)?;
        let r = f(&mut stmt);
        stmts.insert(sql.to_string(), stmt);
        r
    }

    fn points(&self, sql: String, p: impl rusqlite::Params) -> Vec<Point> {
        let r = self.with_stmt(&sql, |q| {
            q.query_map(p, |r| {
                Ok(Point {
                    reading_id: r.get_ref(0)?.as_str()?.into(),
                    measured_at: t(r.get(1)?),
                    value: r.get(2)?,
                })
            })?
            .collect()
        });
        self.fail(r)
    }
}

impl History for SqliteHistory<'_> {
    fn window(
        &self,
        patient: &str,
        metric: Metric,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<Point> {
        // The limit is a constant of the gateway, written into the SQL.
        let sql = format!(
            "SELECT reading_id, measured_at, value FROM readings
                 WHERE patient_id = ?1 AND metric = ?2 AND measured_at >= ?3 AND measured_at <= ?4{}
                 ORDER BY measured_at, reading_id LIMIT {MAX_WINDOW_ROWS}",
            self.bounded(" AND seq <= ?5")
        );
        let (from, to) = (from.timestamp_millis(), to.timestamp_millis());
        match self.bound.get() {
            Some(seq) => self.points(sql, params![patient, metric.name(), from, to, seq]),
            None => self.points(sql, params![patient, metric.name(), from, to]),
        }
    }

    fn last_n(&self, patient: &str, metric: Metric, at: DateTime<Utc>, n: usize) -> Vec<Point> {
        let sql = format!(
            "SELECT reading_id, measured_at, value FROM readings
             WHERE patient_id = ?1 AND metric = ?2 AND measured_at <= ?3{}
             ORDER BY measured_at DESC, reading_id DESC LIMIT {n}",
            self.bounded(" AND seq <= ?4")
        );
        let at = at.timestamp_millis();
        let mut v = match self.bound.get() {
            Some(seq) => self.points(sql, params![patient, metric.name(), at, seq]),
            None => self.points(sql, params![patient, metric.name(), at]),
        };
        v.reverse();
        v
    }

    fn last_seen(&self, patient: &str, metric: Option<Metric>) -> Option<DateTime<Utc>> {
        // One index lookup per metric: `MAX(measured_at)` over the patient
        // alone would walk all of the patient's index entries.
        let metrics: Vec<Metric> = match metric {
            Some(m) => vec![m],
            None => Metric::ALL.to_vec(),
        };
        let sql = format!(
            "SELECT MAX(measured_at) FROM readings WHERE patient_id = ?1 AND metric = ?2{}",
            self.bounded(" AND seq <= ?3")
        );
        let mut newest: Option<i64> = None;
        for m in metrics {
            let r = self.with_stmt(&sql, |q| match self.bound.get() {
                Some(seq) => q.query_row(params![patient, m.name(), seq], |r| r.get(0)),
                None => q.query_row(params![patient, m.name()], |r| r.get(0)),
            });
            if let Some(ms) = self.fail::<Option<i64>>(r) {
                newest = Some(newest.map_or(ms, |n| n.max(ms)));
            }
        }
        newest.map(t)
    }
}

/// The newest measured time (ms) per (patient, metric name) of the readings
/// received before `before` (ms), of one patient or all.
pub fn newest_measured_before(
    conn: &Connection,
    before: i64,
    patient: Option<&str>,
) -> Result<Vec<(String, String, i64)>, StoreError> {
    let mut st = conn.prepare(
        "SELECT patient_id, metric, MAX(measured_at) FROM readings
         WHERE received_at < ?1 AND (?2 IS NULL OR patient_id = ?2) GROUP BY patient_id, metric",
    )?;
    let rows = st.query_map(params![before, patient], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Up to `limit` readings committed after `after_seq` and received in
/// `[since, until)` (ms), of one patient or all, in commit order: a page of
/// a replay.
pub fn received_page(
    conn: &Connection,
    after_seq: i64,
    since: i64,
    until: i64,
    patient: Option<&str>,
    limit: i64,
) -> Result<Vec<CommittedReading>, StoreError> {
    super::queries::committed_where(
        conn,
        "WHERE seq > ?1 AND received_at >= ?2 AND received_at < ?3
           AND (?4 IS NULL OR patient_id = ?4)
         ORDER BY seq LIMIT ?5",
        params![after_seq, since, until, patient, limit],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn queries_are_bounded_and_ordered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        for (i, v) in [80.0, 81.0, 82.0, 83.0].iter().enumerate() {
            store
                .conn()
                .execute(
                    "INSERT INTO readings (reading_id, group_id, patient_id, device_id, metric, value, unit, loinc,
                         measured_at, received_at, committed_at, source)
                     VALUES (?1, ?1, 'p1', 'd1', 'body_weight', ?2, 'kg', '29463-7', ?3, ?3, ?3, 'mqtt')",
                    params![format!("r{i}"), v, 1_000 * i as i64],
                )
                .unwrap();
        }
        let h = SqliteHistory::new(store.conn());
        let w = h.window("p1", Metric::BodyWeight, t(1_000), t(2_000));
        assert_eq!(w.iter().map(|p| p.value).collect::<Vec<_>>(), [81.0, 82.0]);
        let l = h.last_n("p1", Metric::BodyWeight, t(2_500), 2);
        assert_eq!(l.iter().map(|p| p.value).collect::<Vec<_>>(), [81.0, 82.0]);
        assert_eq!(h.last_seen("p1", None), Some(t(3_000)));
        assert_eq!(h.last_seen("p1", Some(Metric::Spo2)), None);
        assert!(h.take_error().is_none());
        // As of the second reading (`seq` 2), the later two are invisible.
        let mut h = SqliteHistory::as_of(store.conn(), 2);
        let w = h.window("p1", Metric::BodyWeight, t(0), t(5_000));
        assert_eq!(w.iter().map(|p| p.value).collect::<Vec<_>>(), [80.0, 81.0]);
        let l = h.last_n("p1", Metric::BodyWeight, t(5_000), 3);
        assert_eq!(l.iter().map(|p| p.value).collect::<Vec<_>>(), [80.0, 81.0]);
        assert_eq!(h.last_seen("p1", None), Some(t(1_000)));
        h.advance_to(3);
        assert_eq!(h.last_seen("p1", Some(Metric::BodyWeight)), Some(t(2_000)));
        assert!(h.take_error().is_none());
        // The plan uses the index, not a scan.
        let plan: String = store
            .conn()
            .query_row(
                "EXPLAIN QUERY PLAN SELECT reading_id FROM readings WHERE patient_id = 'p1' AND metric = 'body_weight'
                 AND measured_at >= 0 AND measured_at <= 1 ORDER BY measured_at",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("readings_patient_metric_time"), "{plan}");
    }
}
