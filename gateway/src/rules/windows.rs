//! The evaluator's windows: each patient's recent readings kept in memory
//! and updated as readings are evaluated, instead of range queries on the
//! store for every reading and rule.
//!
//! A rule looks back a bounded way (its window, or its last N readings:
//! [`alerting_rules::Needs`]), and readings arrive roughly in time order, so
//! the readings a new one is judged against are almost always the ones the
//! previous evaluations already read. Asking SQLite for them again per rule
//! and reading was most of the evaluator's time. Here each series (patient,
//! metric) is read from the store once, when first asked for, and then
//! follows the readings the evaluator folds in batch by batch.
//!
//! The store stays the source of truth, and every answer equals the store's
//! as of the batch's last commit position ([`SqliteHistory::as_of`]): a
//! series claims completeness only from its `floor` on (every stored reading
//! measured at or after it is in memory), and a question reaching below the
//! floor (a late reading's window, a count the series does not hold) is
//! asked of the store. Nothing here is durable: after a restart the series
//! are read again, and a cursor moved back (the store re-evaluated) or a
//! new rule set empties them.
//!
//! A series first asked for is read as the store was before the batch (its
//! readings are folded in already, kept aside for series not held): in a
//! backlog most series are first asked for in the batch that brings their
//! readings, and reading them back from the store doubled the work.
//!
//! Memory is bounded twice: a series keeps the readings within its metric's
//! longest window before its newest reading plus its longest count (older
//! readings are trimmed as new ones arrive), and all series together hold
//! at most `max_points` readings: past that, the least recently evaluated
//! patients are dropped (and read again if they come back). Readings that
//! retention may have pruned (measured more than `retention.keep` ago) are
//! dropped too, so the memory never answers with a reading the store no
//! longer has.

use std::cell::RefCell;
// Keys are patient ids and metrics, hashed several times per reading and
// rule: foldhash, not the standard library's SipHash (its protection against
// chosen keys is not needed for ids the program enrols).
use foldhash::{HashMap, HashMapExt};

use alerting_rules::{History, Needs, Point, Reach, ReadingId};
use chrono::{DateTime, TimeDelta, Utc};
use device_profiles::Metric;

use crate::store::history::{SqliteHistory, MAX_WINDOW_ROWS};

/// Readings held by default (about 90 bytes each with their id).
pub const DEFAULT_MAX_POINTS: usize = 200_000;

/// How the windows answered (for benchmarks and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// Questions answered from memory.
    pub hits: u64,
    /// Questions asked of the store (below a floor, or a series the store
    /// could not give whole).
    pub fallbacks: u64,
    /// Series read from the store.
    pub loads: u64,
    /// Readings those reads returned.
    pub loaded: u64,
    /// Series extended down to a question's start (read from the store
    /// once instead of answering that question and the next from it).
    pub extensions: u64,
    /// Patients dropped to stay within the bound.
    pub evictions: u64,
    /// Readings (and series, counted as one each) held now.
    pub held: usize,
}

/// One series: every stored reading measured at or after `floor` is in
/// `points`, ordered by (measured time, reading id).
#[derive(Debug, Clone)]
struct Series {
    floor: DateTime<Utc>,
    points: Vec<Point>,
}

/// The floor of a series that claims nothing (the store could not give it
/// whole): every question goes to the store.
const NOTHING: DateTime<Utc> = DateTime::<Utc>::MAX_UTC;
/// The floor of a series held whole.
const ALL: DateTime<Utc> = DateTime::<Utc>::MIN_UTC;

fn key(p: &Point) -> (DateTime<Utc>, &ReadingId) {
    (p.measured_at, &p.reading_id)
}

impl Series {
    /// Reads the series from the store: the last `reach.last` readings and
    /// those within `reach.window` before the newest. `None` when the store
    /// failed (the error stays in `store` for the caller).
    fn load(
        store: &SqliteHistory<'_>,
        patient: &str,
        metric: Metric,
        reach: Reach,
    ) -> Option<Self> {
        let last = reach.last.max(1);
        let tail = store.last_n(patient, metric, DateTime::<Utc>::MAX_UTC, last);
        if store.failed() {
            return None;
        }
        let Some(newest) = tail.last().map(|p| p.measured_at) else {
            return Some(Series {
                floor: ALL,
                points: Vec::new(),
            });
        };
        if tail.len() < last {
            return Some(Series {
                floor: ALL,
                points: tail,
            });
        }
        // Every reading measured after the oldest of the tail is in it
        // (ties at the oldest time may not be).
        let tail_floor = tail[0].measured_at + TimeDelta::milliseconds(1);
        let cut = newest - reach.window;
        if tail_floor <= cut {
            let points: Vec<Point> = tail
                .into_iter()
                .filter(|p| p.measured_at >= tail_floor)
                .collect();
            return Some(Series {
                floor: tail_floor,
                points,
            });
        }
        let window = store.window(patient, metric, cut, newest);
        if store.failed() {
            return None;
        }
        if window.len() as i64 >= MAX_WINDOW_ROWS {
            return Some(Series {
                floor: NOTHING,
                points: Vec::new(),
            });
        }
        Some(Series {
            floor: cut,
            points: window,
        })
    }

    /// Adds a reading just committed (ignored below the floor: the store
    /// answers there). Returns the change in readings held. Trimming waits
    /// for the batch's end: the batch's earlier measurements are evaluated
    /// after its later ones are folded in, and look back from their own
    /// time.
    fn insert(&mut self, p: Point) -> isize {
        if p.measured_at < self.floor {
            return 0;
        }
        let at = self.points.partition_point(|q| key(q) < key(&p));
        if self
            .points
            .get(at)
            .is_some_and(|q| q.reading_id == p.reading_id)
        {
            return 0;
        }
        // A duplicate id with another time is not a stored reading; the
        // store's `reading_id` is unique, so this only guards the order.
        self.points.insert(at, p);
        1
    }

    /// Drops what the reach no longer needs: readings older than both the
    /// window before the newest and the last `reach.last`.
    fn trim(&mut self, reach: Reach) -> usize {
        let last = reach.last.max(1);
        let n = self.points.len();
        if n <= last {
            return 0;
        }
        let Some(newest) = self.points.last().map(|p| p.measured_at) else {
            return 0;
        };
        let target = (newest - reach.window).min(self.points[n - last].measured_at);
        self.raise_floor(target)
    }

    /// Claims every reading from `from` on, given the store's readings
    /// measured in `[from, floor]` (ordered as the store orders them, which
    /// is [`key`] order). Returns the readings added.
    fn extend_down(&mut self, from: DateTime<Utc>, older: Vec<Point>) -> usize {
        let floor = self.floor;
        let below: Vec<Point> = older
            .into_iter()
            .filter(|p| p.measured_at < floor)
            .collect();
        let n = below.len();
        self.points.splice(0..0, below);
        self.floor = from;
        n
    }

    /// Claims nothing below `floor` any more. Returns the readings dropped.
    fn raise_floor(&mut self, floor: DateTime<Utc>) -> usize {
        if floor <= self.floor {
            return 0;
        }
        self.floor = floor;
        let k = self.points.partition_point(|p| p.measured_at < floor);
        self.points.drain(..k);
        k
    }

    fn window(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<&[Point]> {
        if from < self.floor {
            return None;
        }
        let start = self.points.partition_point(|p| p.measured_at < from);
        let end = self.points.partition_point(|p| p.measured_at <= to);
        Some(self.points.get(start..end.max(start)).unwrap_or(&[]))
    }

    fn last_n(&self, at: DateTime<Utc>, n: usize) -> Option<&[Point]> {
        let end = self.points.partition_point(|p| p.measured_at <= at);
        if end >= n {
            Some(&self.points[end - n..end])
        } else if self.floor == ALL {
            Some(&self.points[..end])
        } else {
            None
        }
    }

    fn last_seen(&self) -> Option<Option<DateTime<Utc>>> {
        match self.points.last() {
            Some(p) => Some(Some(p.measured_at)),
            None if self.floor == ALL => Some(None),
            None => None,
        }
    }
}

#[derive(Debug, Default)]
struct PatientSeries {
    /// The batch that last asked for this patient.
    used: u64,
    series: HashMap<Metric, Series>,
    /// When the patient's newest reading of any metric was measured
    /// (`Some(None)`: no reading), once asked: missing-data rules ask for it
    /// at every evaluation, and loading a series of every metric to answer
    /// would hold series the patient has no readings of.
    newest: Option<Option<DateTime<Utc>>>,
}

impl PatientSeries {
    /// Readings held (series and a known newest counted as one each).
    fn held(&self) -> usize {
        let series: usize = self.series.values().map(|s| s.points.len() + 1).sum();
        series + usize::from(self.newest.is_some())
    }
}

/// Every patient's recent readings, as of commit position [`Windows::seq`].
#[derive(Debug)]
pub struct Windows {
    needs: Needs,
    max_points: usize,
    patients: HashMap<String, PatientSeries>,
    /// Readings (and series, counted as one each) held.
    held: usize,
    /// Every series reflects the store as of this commit position.
    seq: i64,
    /// The batch's readings were committed after this position.
    start: i64,
    /// The batch's readings of series not held, by patient: a series read
    /// during the batch is read as of `start` and takes its own from here.
    fresh: HashMap<String, Vec<(Metric, Point)>>,
    batch: u64,
    /// Series that grew in this batch, trimmed at its end.
    grown: Vec<(String, Metric)>,
    stats: WindowStats,
}

impl Windows {
    /// Empty windows for a rule set's needs, holding at most `max_points`
    /// readings.
    pub fn new(needs: Needs, max_points: usize) -> Self {
        Windows {
            needs,
            max_points: max_points.max(1),
            patients: HashMap::new(),
            held: 0,
            seq: 0,
            start: 0,
            fresh: HashMap::new(),
            batch: 0,
            grown: Vec::new(),
            stats: WindowStats::default(),
        }
    }

    /// How the windows answered so far.
    pub fn stats(&self) -> WindowStats {
        WindowStats {
            held: self.held,
            ..self.stats
        }
    }

    /// Forgets everything (the next questions read the store again).
    pub fn clear(&mut self) {
        self.patients.clear();
        self.grown.clear();
        self.fresh.clear();
        self.held = 0;
        self.seq = 0;
    }

    /// Starts a batch of the readings committed after position `start` up
    /// to `seq`, every one of which is folded in next. A position behind
    /// the windows' (the cursor was moved back) empties them; readings
    /// measured before `prunable_before` (retention may have deleted them)
    /// are dropped.
    pub fn begin(&mut self, start: i64, seq: i64, prunable_before: Option<DateTime<Utc>>) {
        if seq < self.seq {
            self.clear();
        }
        self.fresh.clear();
        self.start = start.min(seq);
        self.seq = seq;
        self.batch += 1;
        if let Some(cut) = prunable_before {
            let mut dropped = 0;
            for p in self.patients.values_mut() {
                for s in p.series.values_mut() {
                    if s.floor < cut {
                        dropped += s.raise_floor(cut);
                    }
                }
                // Retention may have deleted it: read again when asked.
                if p.newest.is_some_and(|t| t.is_none_or(|t| t < cut)) {
                    p.newest = None;
                    dropped += 1;
                }
            }
            self.held -= dropped;
        }
    }

    /// Folds in a reading of the batch (committed after the start and at
    /// or before the position given to [`Windows::begin`]). A series not
    /// held keeps it aside until it is read (as of the batch's start) or
    /// the next batch begins.
    pub fn fold(&mut self, patient: &str, metric: Metric, point: Point) {
        let Some(p) = self.patients.get_mut(patient) else {
            self.keep_fresh(patient, metric, point);
            return;
        };
        if let Some(newest) = &mut p.newest {
            *newest = Some(newest.map_or(point.measured_at, |t| t.max(point.measured_at)));
        }
        match p.series.get_mut(&metric) {
            Some(s) => {
                let d = s.insert(point);
                if d > 0 {
                    self.grown.push((patient.to_string(), metric));
                }
                self.held = self.held.saturating_add_signed(d);
            }
            None => self.keep_fresh(patient, metric, point),
        }
    }

    fn keep_fresh(&mut self, patient: &str, metric: Metric, point: Point) {
        match self.fresh.get_mut(patient) {
            Some(v) => v.push((metric, point)),
            None => {
                self.fresh
                    .insert(patient.to_string(), vec![(metric, point)]);
            }
        }
    }

    /// Ends the batch: trims the series that grew to their reach, and drops
    /// the least recently used patients while more than the bound is held.
    pub fn end(&mut self) {
        for (patient, metric) in std::mem::take(&mut self.grown) {
            let reach = self.needs.reach(metric);
            if let Some(s) = self
                .patients
                .get_mut(&patient)
                .and_then(|p| p.series.get_mut(&metric))
            {
                self.held = self.held.saturating_sub(s.trim(reach));
            }
        }
        if self.held <= self.max_points {
            return;
        }
        let mut by_use: Vec<(u64, String)> = self
            .patients
            .iter()
            .map(|(id, p)| (p.used, id.clone()))
            .collect();
        by_use.sort_unstable();
        // Down to 90 %, so that a full cache does not evict at every batch.
        let target = self.max_points / 10 * 9;
        for (_, id) in by_use {
            if self.held <= target {
                break;
            }
            if let Some(p) = self.patients.remove(&id) {
                self.held = self.held.saturating_sub(p.held());
                self.stats.evictions += 1;
            }
        }
    }

    /// The engine's [`History`] for this batch: memory first, `store` (as
    /// of the batch's position) below the floors.
    pub fn view<'a, 'c>(&'a mut self, store: &'a SqliteHistory<'c>) -> WindowView<'a, 'c> {
        WindowView {
            windows: RefCell::new(self),
            store,
        }
    }

    /// When the patient's newest reading of any metric was measured, read
    /// from `store` if not known (and not kept if the store failed).
    fn newest(&mut self, store: &SqliteHistory<'_>, patient: &str) -> Option<DateTime<Utc>> {
        let p = self.patient(patient)?;
        if let Some(newest) = p.newest {
            self.stats.hits += 1;
            return newest;
        }
        let newest = store.last_seen(patient, None);
        if !store.failed() {
            p.newest = Some(newest);
            self.held += 1;
            self.stats.loads += 1;
        }
        newest
    }

    /// The series of (patient, metric), read from `store` if not held
    /// (`None`: the store failed).
    fn series(
        &mut self,
        store: &SqliteHistory<'_>,
        patient: &str,
        metric: Metric,
    ) -> Option<&Series> {
        if !self.patient(patient)?.series.contains_key(&metric) {
            let s = self.load(store, patient, metric)?;
            self.patients.get_mut(patient)?.series.insert(metric, s);
        }
        self.patients.get(patient)?.series.get(&metric)
    }

    /// The patient's windows (empty ones made if none are held), marked as
    /// used by this batch (always `Some`).
    fn patient(&mut self, patient: &str) -> Option<&mut PatientSeries> {
        if !self.patients.contains_key(patient) {
            self.patients
                .insert(patient.to_string(), PatientSeries::default());
        }
        let p = self.patients.get_mut(patient)?;
        p.used = self.batch;
        Some(p)
    }

    /// Reads a series as of the batch's start and adds the batch's
    /// readings of it (`None`: the store failed).
    fn load(&mut self, store: &SqliteHistory<'_>, patient: &str, metric: Metric) -> Option<Series> {
        let reach = self.needs.reach(metric);
        let mut s = store.before(self.start, |st| Series::load(st, patient, metric, reach))?;
        self.stats.loaded += s.points.len() as u64;
        if let Some(fresh) = self.fresh.get_mut(patient) {
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(fresh)
                .into_iter()
                .partition(|(m, _)| *m == metric);
            *fresh = rest;
            let mut grew = false;
            for (_, p) in mine {
                grew |= s.insert(p) > 0;
            }
            if grew {
                self.grown.push((patient.to_string(), metric));
            }
        }
        self.held += s.points.len() + 1;
        self.stats.loads += 1;
        Some(s)
    }
}

/// [`History`] over the windows and, below their floors, the store.
pub struct WindowView<'a, 'c> {
    windows: RefCell<&'a mut Windows>,
    store: &'a SqliteHistory<'c>,
}

impl WindowView<'_, '_> {
    /// The first store error since the last call (see
    /// [`SqliteHistory::take_error`]).
    pub fn take_error(&self) -> Option<rusqlite::Error> {
        self.store.take_error()
    }

    fn answer<T>(
        &self,
        patient: &str,
        metric: Metric,
        from_memory: impl FnOnce(&Series) -> Option<T>,
        from_store: impl FnOnce() -> T,
    ) -> T {
        let mut w = self.windows.borrow_mut();
        let hit = w.series(self.store, patient, metric).and_then(from_memory);
        match hit {
            Some(v) => {
                w.stats.hits += 1;
                v
            }
            None => {
                w.stats.fallbacks += 1;
                drop(w);
                from_store()
            }
        }
    }

    /// [`WindowView::answer`] for readings, lent to `f`: from the series
    /// in place when it holds them, else from the store.
    fn lend(
        &self,
        patient: &str,
        metric: Metric,
        from_memory: impl FnOnce(&Series) -> Option<&[Point]>,
        from_store: impl FnOnce() -> Vec<Point>,
        f: &mut dyn FnMut(&[Point]),
    ) {
        // `f` runs while the windows are borrowed: it must not ask this
        // history again (the engine's lent closures only read the slice).
        let lent = self.answer(
            patient,
            metric,
            |s| {
                from_memory(s).map(|pts| {
                    f(pts);
                    true
                })
            },
            || false,
        );
        if !lent {
            f(&from_store());
        }
    }

    /// A window that starts below a series' floor but ends within what it
    /// holds: the earlier readings of a backlog, judged after a later one
    /// loaded the series (a series loads relative to the newest stored
    /// reading). The series takes the readings down to the window's start
    /// from the store, once, so that this question and the next ones of
    /// the batch are answered from memory. A window entirely below the
    /// floor (a late reading's) is left to the store.
    fn reach_down(&self, patient: &str, metric: Metric, from: DateTime<Utc>, to: DateTime<Utc>) {
        let mut w = self.windows.borrow_mut();
        let Some(floor) = w.series(self.store, patient, metric).map(|s| s.floor) else {
            return;
        };
        if from >= floor || to < floor || floor == NOTHING {
            return;
        }
        let older = self.store.window(patient, metric, from, floor);
        if self.store.failed() || older.len() as i64 >= MAX_WINDOW_ROWS {
            return;
        }
        let Some(s) = w
            .patients
            .get_mut(patient)
            .and_then(|p| p.series.get_mut(&metric))
        else {
            return;
        };
        let added = s.extend_down(from, older);
        w.held += added;
        w.grown.push((patient.to_string(), metric));
        w.stats.extensions += 1;
    }
}

impl History for WindowView<'_, '_> {
    fn window(
        &self,
        patient: &str,
        metric: Metric,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<Point> {
        let mut out = Vec::new();
        self.with_window(patient, metric, from, to, &mut |pts| out = pts.to_vec());
        out
    }

    fn last_n(&self, patient: &str, metric: Metric, at: DateTime<Utc>, n: usize) -> Vec<Point> {
        let mut out = Vec::new();
        self.with_last_n(patient, metric, at, n, &mut |pts| out = pts.to_vec());
        out
    }

    fn with_window(
        &self,
        patient: &str,
        metric: Metric,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        f: &mut dyn FnMut(&[Point]),
    ) {
        self.reach_down(patient, metric, from, to);
        self.lend(
            patient,
            metric,
            |s| s.window(from, to),
            || self.store.window(patient, metric, from, to),
            f,
        );
    }

    fn with_last_n(
        &self,
        patient: &str,
        metric: Metric,
        at: DateTime<Utc>,
        n: usize,
        f: &mut dyn FnMut(&[Point]),
    ) {
        self.lend(
            patient,
            metric,
            |s| s.last_n(at, n),
            || self.store.last_n(patient, metric, at, n),
            f,
        );
    }

    fn last_seen(&self, patient: &str, metric: Option<Metric>) -> Option<DateTime<Utc>> {
        match metric {
            Some(m) => self.answer(
                patient,
                m,
                |s| s.last_seen(),
                || self.store.last_seen(patient, Some(m)),
            ),
            None => self.windows.borrow_mut().newest(self.store, patient),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use alerting_rules::RuleSet;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use rusqlite::params;

    const PATIENTS: [&str; 2] = ["p1", "p2"];
    /// Bundled reaches: 7 days (systolic, weight), 48 h (SpO2).
    const METRICS: [Metric; 3] = [Metric::Systolic, Metric::BodyWeight, Metric::Spo2];

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
    }

    /// One stored reading: patient, metric, measured hours after `t0`.
    type Op = (usize, usize, i64);

    /// Readings mostly in time order, some late (up to 20 days back), some
    /// at the same time as the one before.
    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec((0..2usize, 0..3usize, -480..30i64), 1..120).prop_map(|steps| {
            let mut clock = 0i64;
            steps
                .into_iter()
                .map(|(p, m, dt)| {
                    let at = if dt >= 0 {
                        clock += dt;
                        clock
                    } else if dt > -20 {
                        clock
                    } else {
                        clock + dt
                    };
                    (p, m, at)
                })
                .collect()
        })
    }

    fn store_all(store: &Store, ops: &[Op]) {
        for (i, (p, m, h)) in ops.iter().enumerate() {
            let metric = METRICS[*m];
            let at = (t0() + TimeDelta::hours(*h)).timestamp_millis();
            store
                .conn()
                .execute(
                    "INSERT INTO readings (reading_id, group_id, patient_id, device_id, metric, value, unit, loinc,
                         measured_at, received_at, committed_at, source)
                     VALUES (?1, ?1, ?2, 'd', ?3, ?4, ?5, ?6, ?7, ?7, ?7, 'mqtt')",
                    params![
                        format!("r{i:04}"),
                        PATIENTS[*p],
                        metric.name(),
                        i as f64,
                        metric.canonical_unit().to_string(),
                        metric.loinc(),
                        at
                    ],
                )
                .unwrap();
        }
    }

    /// Every question the engine may ask, from memory and from the store
    /// as of `seq`, at the times of `ats`.
    fn compare(store: &Store, windows: &mut Windows, seq: i64, ats: &[DateTime<Utc>]) {
        let sql = SqliteHistory::as_of(store.conn(), seq);
        let fallback = SqliteHistory::as_of(store.conn(), seq);
        let view = windows.view(&fallback);
        for p in PATIENTS {
            assert_eq!(view.last_seen(p, None), sql.last_seen(p, None), "{p} any");
            for m in METRICS {
                assert_eq!(view.last_seen(p, Some(m)), sql.last_seen(p, Some(m)));
                for &at in ats {
                    for back in [
                        TimeDelta::hours(1),
                        TimeDelta::hours(48),
                        TimeDelta::days(7),
                    ] {
                        assert_eq!(
                            view.window(p, m, at - back, at),
                            sql.window(p, m, at - back, at),
                            "{p} {m:?} window {back} before {at}"
                        );
                    }
                    for n in [1, 2, 3, 12] {
                        assert_eq!(
                            view.last_n(p, m, at, n),
                            sql.last_n(p, m, at, n),
                            "{p} {m:?} last {n} at {at}"
                        );
                    }
                }
            }
        }
        assert!(view.take_error().is_none());
        assert!(sql.take_error().is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The windows, fed batch by batch (with restarts and a small
        /// bound that evicts), answer exactly as the store as of each
        /// batch's position, for on-time and late readings alike.
        #[test]
        fn windows_answer_as_the_store_does(
            ops in ops(),
            batch in 1..9usize,
            max_points in prop::sample::select(vec![8usize, 60, 100_000]),
            restart in 0..12usize,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("s.db")).unwrap();
            store_all(&store, &ops);
            let needs = Needs::of(&RuleSet::bundled().unwrap());
            let mut windows = Windows::new(needs, max_points);
            for (k, chunk) in ops.chunks(batch).enumerate() {
                let seq = (k * batch + chunk.len()) as i64;
                if k > 0 && k % 12 == restart {
                    windows.clear();
                }
                let first = k * batch;
                windows.begin(first as i64, seq, None);
                let mut ats = vec![t0() + TimeDelta::days(400)];
                for (j, (p, m, h)) in chunk.iter().enumerate() {
                    let at = t0() + TimeDelta::hours(*h);
                    ats.push(at);
                    windows.fold(PATIENTS[*p], METRICS[*m], Point {
                        reading_id: format!("r{:04}", first + j).into(),
                        measured_at: at,
                        value: (first + j) as f64,
                    });
                }
                compare(&store, &mut windows, seq, &ats);
                windows.end();
                prop_assert!(windows.stats().held <= max_points);
            }
            let s = windows.stats();
            prop_assert!(s.hits > 0);
        }
    }

    /// A series first asked for in the batch that brings its readings is
    /// read as it was before the batch: a backlog's readings are not read
    /// back from the store, and the answers are still the store's.
    #[test]
    fn a_batch_s_own_readings_are_not_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let ops: Vec<Op> = (0..30usize).map(|i| (i % 2, 0, i as i64 * 3)).collect();
        store_all(&store, &ops);
        let mut windows = Windows::new(Needs::of(&RuleSet::bundled().unwrap()), 1000);
        // The first 10 readings came in an earlier batch, not held here.
        windows.begin(10, 30, None);
        for (i, (p, m, h)) in ops.iter().enumerate().skip(10) {
            windows.fold(
                PATIENTS[*p],
                METRICS[*m],
                Point {
                    reading_id: format!("r{i:04}").into(),
                    measured_at: t0() + TimeDelta::hours(*h),
                    value: i as f64,
                },
            );
        }
        compare(&store, &mut windows, 30, &[t0() + TimeDelta::hours(100)]);
        windows.end();
        let s = windows.stats();
        assert!(
            s.loaded <= 10,
            "only the readings before the batch are read: {s:?}"
        );
    }

    /// Readings retention may have pruned are never answered from memory.
    #[test]
    fn readings_retention_may_prune_are_asked_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let ops: Vec<Op> = (0..20).map(|i| (0, 0, i * 6)).collect();
        store_all(&store, &ops);
        let mut windows = Windows::new(Needs::of(&RuleSet::bundled().unwrap()), 1000);
        windows.begin(20, 20, None);
        compare(&store, &mut windows, 20, &[t0() + TimeDelta::hours(114)]);
        windows.end();
        // Retention deletes the first day.
        store
            .conn()
            .execute(
                "DELETE FROM readings WHERE measured_at < ?1",
                [(t0() + TimeDelta::hours(24)).timestamp_millis()],
            )
            .unwrap();
        windows.begin(20, 20, Some(t0() + TimeDelta::hours(24)));
        compare(&store, &mut windows, 20, &[t0() + TimeDelta::hours(114)]);
        windows.end();
    }
}
