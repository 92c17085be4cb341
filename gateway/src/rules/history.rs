//! The engine's view of stored readings: bounded, indexed SQLite queries.
//!
//! Every query is a range or a point lookup on the index
//! `readings(patient_id, metric, measured_at)`: a window (at most 90 days,
//! enforced by the rule loader) or the last N readings (N ≤ 1000). So the
//! cost of evaluating one reading depends on the rule windows, never on how
//! many readings the store holds (see docs/benchmarks.md, "Rule evaluation").
//!
//! [`History`] cannot return errors (the engine is pure); a failed query is
//! remembered and the evaluator checks [`SqliteHistory::take_error`] before
//! committing, so a store error aborts the batch instead of silently turning
//! into "no data".

use std::cell::RefCell;

use alerting_rules::{History, Point};
use chrono::{DateTime, TimeZone, Utc};
use device_profiles::Metric;
use rusqlite::{params, Connection};

/// Most rows one window query returns: a safety net above the longest
/// window of a 5-minute CGM (90 days ≈ 26 000 readings).
pub const MAX_WINDOW_ROWS: i64 = 50_000;

/// [`History`] over the store's `readings` table.
pub struct SqliteHistory<'c> {
    conn: &'c Connection,
    error: RefCell<Option<rusqlite::Error>>,
}

fn t(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl<'c> SqliteHistory<'c> {
    /// A view over `conn` (a transaction derefs to a connection).
    pub fn new(conn: &'c Connection) -> Self {
        SqliteHistory {
            conn,
            error: RefCell::new(None),
        }
    }

    /// The first query error since the last call, if any.
    pub fn take_error(&self) -> Option<rusqlite::Error> {
        self.error.borrow_mut().take()
    }

    fn fail<T: Default>(&self, r: rusqlite::Result<T>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => {
                let mut slot = self.error.borrow_mut();
                if slot.is_none() {
                    *slot = Some(e);
                }
                T::default()
            }
        }
    }

    fn points(&self, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<Vec<Point>> {
        let mut q = self.conn.prepare_cached(sql)?;
        let rows = q.query_map(params, |r| {
            Ok(Point {
                reading_id: r.get(0)?,
                measured_at: t(r.get(1)?),
                value: r.get(2)?,
            })
        })?;
        rows.collect()
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
        // Limits are literals: SQLite plans `ORDER BY ... LIMIT ?` by the
        // bound value and would prepare the statement again at each new
        // binding (a quarter of a replay's time).
        let r = self.points(
            &format!(
                "SELECT reading_id, measured_at, value FROM readings
                 WHERE patient_id = ?1 AND metric = ?2 AND measured_at >= ?3 AND measured_at <= ?4
                 ORDER BY measured_at, reading_id LIMIT {MAX_WINDOW_ROWS}"
            ),
            params![
                patient,
                metric.name(),
                from.timestamp_millis(),
                to.timestamp_millis()
            ],
        );
        self.fail(r)
    }

    fn last_n(&self, patient: &str, metric: Metric, at: DateTime<Utc>, n: usize) -> Vec<Point> {
        let r = self.points(
            &format!(
                "SELECT reading_id, measured_at, value FROM readings
                 WHERE patient_id = ?1 AND metric = ?2 AND measured_at <= ?3
                 ORDER BY measured_at DESC, reading_id DESC LIMIT {n}"
            ),
            params![patient, metric.name(), at.timestamp_millis()],
        );
        let mut v = self.fail(r);
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
        let mut newest: Option<i64> = None;
        for m in metrics {
            let r = self
                .conn
                .prepare_cached(
                    "SELECT MAX(measured_at) FROM readings WHERE patient_id = ?1 AND metric = ?2",
                )
                .and_then(|mut q| q.query_row(params![patient, m.name()], |r| r.get(0)));
            if let Some(ms) = self.fail::<Option<i64>>(r) {
                newest = Some(newest.map_or(ms, |n| n.max(ms)));
            }
        }
        newest.map(t)
    }
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
