//! The evaluator: committed readings → alert transitions, exactly once.
//!
//! Each [`Evaluator::step`] evaluates a batch on a read snapshot of the
//! evaluator's own connection (WAL: the ingest writer keeps its own, and
//! goes on committing meanwhile), then writes the outcome in one short
//! `BEGIN IMMEDIATE` transaction:
//!
//! 1. read up to `batch` readings after the cursor `rules`, in commit
//!    (`seq`) order, completing the last measurement so that a blood
//!    pressure panel is never split;
//! 2. group them by measurement (`group_id`) and order the measurements by
//!    (patient, measured time) — a scale uploading a week at once is
//!    evaluated day by day, and the engine flags it late (received long
//!    after measured, or older than the patient's watermark);
//! 3. fold the batch's readings into the in-memory windows
//!    ([`super::windows`]), which answer the engine's history questions
//!    as the store would as of the batch's last commit position;
//! 4. per patient: load the enrolment (care plans, overrides), the alert
//!    states and the watermark, evaluate every measurement, then the
//!    missing-data rules (so an open "no data" alert resolves promptly; a
//!    patient whose input just moved is not judged silent until it settles,
//!    see `alerting_rules::EngineConfig::settle`);
//! 5. in the write transaction: if an enrolment or alert state changed
//!    since the snapshot (triggers count such changes), evaluate again
//!    there; persist every transition (state, alert row, history, outbox
//!    event when it notifies), the watermarks and the cursor, and commit.
//!
//! The write lock is held only for step 5: evaluating outside it is what
//! lets the writer index while the rules catch up.
//!
//! "Now" is read on the snapshot, and again in the write transaction when
//! an input moved; per alert no time is earlier than the alert's previous
//! history row: an acknowledgement made meanwhile is never followed by a
//! transition stamped before it, nor by one decided without it.
//!
//! A crash before the commit leaves nothing, so the batch is evaluated
//! again after restart; a crash after it leaves everything, and the cursor
//! says so. Fault points for the end-to-end tests:
//! `RPM_FAULT_INJECT=abort-before-rules-commit | abort-after-rules-commit`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use alerting_rules::{
    Engine, History, Input, MissingInput, Needs, NewReading, Point, Transition, TransitionKind,
};
use chrono::{DateTime, TimeDelta, Utc};
use device_profiles::Metric;
use rusqlite::{Connection, Transaction};

use super::clock::Clock;
use super::missing::{device_offline, gateway_downtime, watched_patients};
use super::persist::{self, PatientCtx};
use super::windows::{WindowStats, Windows, DEFAULT_MAX_POINTS};
use super::{RulesError, CURSOR};
use crate::fault::{Fault, FaultPoint};
use crate::metrics::Metrics;
use crate::store::alerts::{self, ms};
use crate::store::history::SqliteHistory;
use crate::store::{set_cursor, Store};

/// How many times `batch_readings` a batch grows to while catching up.
pub const CATCH_UP_BATCHES: usize = 4;

/// Evaluator settings.
#[derive(Debug, Clone, Copy)]
pub struct EvaluatorConfig {
    /// Readings per transaction; up to [`CATCH_UP_BATCHES`] times as many
    /// while catching up (the ingest writer waits while the evaluator holds
    /// the write lock, so keep transactions short).
    pub batch_readings: usize,
    /// Most patients per missing-data transaction.
    pub patients_per_tick: usize,
    /// Most readings the in-memory windows hold (least recently evaluated
    /// patients are dropped beyond it).
    pub window_points: usize,
    /// `retention.keep`: readings measured longer ago may be pruned from
    /// the store, so the windows do not answer with them.
    pub retention_keep: Option<std::time::Duration>,
}

impl Default for EvaluatorConfig {
    fn default() -> Self {
        EvaluatorConfig {
            batch_readings: 500,
            patients_per_tick: 200,
            window_points: DEFAULT_MAX_POINTS,
            retention_keep: None,
        }
    }
}

/// What a step or a tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Readings evaluated.
    pub readings: usize,
    /// Measurements (groups) evaluated.
    pub measurements: usize,
    /// Alerts fired.
    pub fired: usize,
    /// Alerts updated (notified).
    pub updated: usize,
    /// Alerts resolved.
    pub resolved: usize,
    /// Outbox events written.
    pub events: usize,
}

impl Report {
    fn add(&mut self, kind: TransitionKind, notified: bool) {
        match kind {
            TransitionKind::Fire => self.fired += 1,
            TransitionKind::Update => self.updated += 1,
            TransitionKind::Resolve => self.resolved += 1,
            TransitionKind::NoChange => {}
        }
        if notified {
            self.events += 1;
        }
    }

    fn merge(&mut self, o: Report) {
        self.readings += o.readings;
        self.measurements += o.measurements;
        self.fired += o.fired;
        self.updated += o.updated;
        self.resolved += o.resolved;
        self.events += o.events;
    }
}

use crate::store::queries::{self, CommittedReading as Row};

struct Group {
    group_id: String,
    patient_id: String,
    first_seq: i64,
    measured_at: DateTime<Utc>,
    readings: Vec<NewReading>,
}

/// The rule evaluator over its own store connection.
pub struct Evaluator {
    store: Store,
    engine: Arc<Engine>,
    cfg: EvaluatorConfig,
    metrics: Arc<Metrics>,
    fault: Fault,
    clock: Clock,
    /// Data clock only: the time of the last complete missing-data tick
    /// (a tick at the same data time would decide the same).
    ticked_at: Option<DateTime<Utc>>,
    /// The input has ended (a replay's clean stop): every patient's input
    /// counts as settled.
    input_closed: bool,
    /// The webhook dispatcher of this process, woken after outbox events
    /// are committed so they go out now rather than at its next poll.
    delivery: Option<Arc<tokio::sync::Notify>>,
    /// The care loop: notified alerts open follow-up tasks.
    follow_up: Option<Arc<dyn super::persist::AlertHook>>,
    /// Recent readings per patient, as of the last evaluated batch.
    windows: Windows,
    /// Tests: run between a step's snapshot and its write transaction.
    #[cfg(test)]
    pub(crate) between: Option<Box<dyn FnMut() + Send>>,
}

impl Evaluator {
    /// Opens its own connection to the store at `path`.
    pub fn open(
        path: &Path,
        engine: Arc<Engine>,
        cfg: EvaluatorConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RulesError> {
        Ok(Self::new(
            Store::open(path)?.streaming()?,
            engine,
            cfg,
            metrics,
        ))
    }

    /// An evaluator over an opened store.
    pub fn new(
        store: Store,
        engine: Arc<Engine>,
        cfg: EvaluatorConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Evaluator {
            windows: Windows::new(Needs::of(engine.rules()), cfg.window_points),
            store,
            engine,
            cfg,
            metrics,
            fault: Fault::from_env(),
            clock: Clock::Wall,
            ticked_at: None,
            input_closed: false,
            delivery: None,
            follow_up: None,
            #[cfg(test)]
            between: None,
        }
    }

    /// Takes "now" from `clock` (`rules.clock`; the wall clock by default).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Wakes `dispatcher` (see [`crate::delivery::dispatch::Dispatcher::waker`])
    /// whenever a step commits transitions.
    pub fn with_delivery_waker(mut self, dispatcher: Arc<tokio::sync::Notify>) -> Self {
        self.delivery = Some(dispatcher);
        self
    }

    /// Drives `hook` (the care loop's follow-up tasks) from every notified
    /// or resolving transition, in the same transaction.
    pub fn with_follow_up(mut self, follow_up: Arc<dyn super::persist::AlertHook>) -> Self {
        self.follow_up = Some(follow_up);
        self
    }

    /// Whether "now" is the data clock (replays, demos, tests).
    pub fn uses_data_clock(&self) -> bool {
        self.clock.is_data()
    }

    /// Now, on the configured clock (`None`: the data clock has no data yet).
    pub fn now(&mut self) -> Result<Option<DateTime<Utc>>, RulesError> {
        Ok(self.clock.now(self.store.conn())?)
    }

    /// Swaps the rule set (SIGHUP reload). Alert state is in the store and
    /// carries over; rules that disappeared simply stop being evaluated.
    pub fn set_engine(&mut self, engine: Arc<Engine>) {
        self.windows = Windows::new(Needs::of(engine.rules()), self.cfg.window_points);
        self.engine = engine;
    }

    /// How the in-memory windows answered so far.
    pub fn window_stats(&self) -> WindowStats {
        self.windows.stats()
    }

    /// Forgets the in-memory windows, as a restart does.
    pub fn forget_windows(&mut self) {
        self.windows.clear();
    }

    /// The engine in use.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The store connection.
    pub fn store(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Evaluates every committed reading after the cursor, batch by batch,
    /// each at "now" on the configured clock, read inside its transaction.
    ///
    /// Behind a backlog the batches grow (doubling, up to
    /// [`CATCH_UP_BATCHES`] × `batch_readings`): the outcome of each waits
    /// for its turn at the write lock behind the ingest writer's group
    /// commit, so a batch of fixed size falls further behind with every
    /// turn. Caught up, they are `batch_readings` again.
    pub fn catch_up(&mut self) -> Result<Report, RulesError> {
        let mut total = Report::default();
        let base = self.cfg.batch_readings.max(1);
        let mut limit = base;
        loop {
            let r = self.run_step(None, limit)?;
            if r.readings == 0 {
                return Ok(total);
            }
            limit = if r.readings >= limit {
                (limit * 2).min(base * CATCH_UP_BATCHES)
            } else {
                base
            };
            total.merge(r);
        }
    }

    /// Evaluates one batch of readings after the cursor at processing time
    /// `now` and commits its outcome. Returns what it did (0 readings:
    /// caught up).
    pub fn step(&mut self, now: DateTime<Utc>) -> Result<Report, RulesError> {
        self.run_step(Some(now), self.cfg.batch_readings.max(1))
    }

    /// One batch at `at`, or at "now" on the configured clock.
    ///
    /// The batch is evaluated on a read snapshot, outside the store's one
    /// write lock (the writer and the other stages go on committing), and
    /// what it decided is written in a short write transaction — if none
    /// of its other inputs (enrolment, overrides, alert states: counted by
    /// triggers, see [`alerts::rule_input_version`]) changed meanwhile.
    /// If one did (an acknowledgement, a snooze, a manual resolve), the
    /// batch is evaluated again inside the write transaction, at a "now"
    /// read there: a transition never follows an action it did not see.
    /// On the wall clock "now" is also never earlier than the receipt of
    /// any reading in the batch (a clock stepped back by NTP does not make
    /// an alert precede its evidence).
    fn run_step(&mut self, at: Option<DateTime<Utc>>, batch: usize) -> Result<Report, RulesError> {
        let engine = self.engine.clone();
        let wall = self.clock.counts_downtime();
        let snap = self.store.snapshot()?;
        let inputs = alerts::rule_input_version(&snap)?;
        let now = match at {
            Some(t) => t,
            None => match self.clock.now(&snap)? {
                Some(t) => t,
                None => return Ok(Report::default()),
            },
        };
        let cursor = crate::store::cursor_in(&snap, CURSOR)?.unwrap_or(0);
        let mut batch_rows = queries::committed_after(&snap, cursor, batch)?;
        let Some(last) = batch_rows.last() else {
            return Ok(Report::default());
        };
        // Never split a measurement across transactions.
        let rest = queries::committed_in_group_after(&snap, &last.group_id, last.seq)?;
        batch_rows.extend(rest);
        let max_seq = batch_rows.iter().map(|r| r.seq).max().unwrap_or(cursor);
        let newest_commit = batch_rows.iter().map(|r| r.committed_at).max();
        let newest_receipt = ms(batch_rows
            .iter()
            .map(|r| r.received_at.max(r.committed_at))
            .max())
        .filter(|_| wall);
        let now = newest_receipt.map_or(now, |r| now.max(r));
        let groups = group(batch_rows);
        let prunable_before = self
            .cfg
            .retention_keep
            .and_then(|k| TimeDelta::from_std(k).ok())
            .map(|k| Utc::now() - k + TimeDelta::minutes(1));
        self.windows.begin(cursor, max_seq, prunable_before);
        for g in &groups {
            for r in &g.readings {
                self.windows.fold(
                    &g.patient_id,
                    r.metric,
                    Point {
                        reading_id: r.id.as_str().into(),
                        measured_at: r.measured_at,
                        value: r.value,
                    },
                );
            }
        }
        let mut b = Batch {
            groups: &groups,
            max_seq,
            now,
            downtime: if wall {
                gateway_downtime(&snap, now)?
            } else {
                Vec::new()
            },
            follow_up: self.follow_up.clone(),
        };
        let plans = evaluate(&snap, &engine, &mut self.windows, &b);
        self.windows.end();
        let mut plans = plans?;
        drop(snap);
        #[cfg(test)]
        if let Some(f) = self.between.as_mut() {
            f();
        }

        let tx = self.store.transaction()?;
        if crate::store::cursor_in(&tx, CURSOR)?.unwrap_or(0) != cursor {
            // Another process evaluated this batch meanwhile.
            return Ok(Report::default());
        }
        if alerts::rule_input_version(&tx)? != inputs {
            self.metrics.rules_reevaluated();
            if at.is_none() {
                if let Some(t) = self.clock.now(&tx)? {
                    b.now = b.now.max(t);
                }
            }
            if wall {
                b.downtime = gateway_downtime(&tx, b.now)?;
            }
            plans = evaluate(&tx, &engine, &mut self.windows, &b)?;
            self.windows.end();
        }
        let mut report = Report {
            readings: groups.iter().map(|g| g.readings.len()).sum(),
            measurements: groups.len(),
            ..Report::default()
        };
        for plan in plans {
            report.merge(plan.persist(&tx)?);
        }
        set_cursor(&tx, CURSOR, max_seq)?;
        self.fault.abort_at(FaultPoint::BeforeRulesCommit);
        if self.fault.is(FaultPoint::RulesPanic) {
            panic!("fault injection: the rule evaluator panics");
        }
        tx.commit()?;
        self.fault.abort_at(FaultPoint::AfterRulesCommit);
        self.metrics.rules_evaluated(report.measurements);
        self.count(&report);
        if let Some(c) = ms(newest_commit) {
            self.metrics
                .set_rules_lag((b.now - c).num_milliseconds().max(0) as f64 / 1000.0);
        }
        Ok(report)
    }

    /// The missing-data timer: evaluates every watched patient at "now" on
    /// the configured clock. On the data clock, only when the data's time
    /// moved since the last tick (`None`: nothing to do).
    pub fn tick(&mut self) -> Result<Option<Report>, RulesError> {
        let Some(now) = self.now()? else {
            return Ok(None);
        };
        if self.clock.is_data() && self.ticked_at.is_some_and(|t| t >= now) {
            return Ok(None);
        }
        let r = self.tick_pages(None)?;
        if self.clock.is_data() {
            self.ticked_at = Some(now);
        }
        Ok(Some(r))
    }

    /// The last missing-data tick of a stopping gateway on the data clock:
    /// no more input will come, so every patient's input has settled and is
    /// judged (a replay that ends with an upload is judged on all of it, as
    /// `rules test` judges a file that ends). Nothing on the wall clock,
    /// where time goes on after the stop.
    pub fn final_tick(&mut self) -> Result<Option<Report>, RulesError> {
        if !self.clock.is_data() {
            return Ok(None);
        }
        self.input_closed = true;
        self.ticked_at = None;
        self.tick()
    }

    /// Evaluates the missing-data rules of every watched patient at `now`.
    pub fn tick_missing(&mut self, now: DateTime<Utc>) -> Result<Report, RulesError> {
        self.tick_pages(Some(now))
    }

    /// The timer's pages of patients, each in one transaction, at `at` or
    /// at "now" on the configured clock read inside each transaction (so a
    /// reading committed while waiting for the lock is never judged, nor
    /// resolves an alert, at a time before it arrived).
    fn tick_pages(&mut self, at: Option<DateTime<Utc>>) -> Result<Report, RulesError> {
        let engine = self.engine.clone();
        let wall = self.clock.counts_downtime();
        let mut after = String::new();
        let mut total = Report::default();
        let mut prev: Option<DateTime<Utc>> = None;
        loop {
            let tx = self.store.transaction()?;
            let now = match at {
                Some(t) => t,
                None => match self.clock.now(&tx)? {
                    Some(t) => t,
                    None => break,
                },
            };
            let now = prev.map_or(now, |p| p.max(now));
            prev = Some(now);
            let downtime = if wall {
                gateway_downtime(&tx, now)?
            } else {
                Vec::new()
            };
            let ids = watched_patients(&tx, &after, self.cfg.patients_per_tick.max(1))?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            {
                let history = SqliteHistory::new(&tx);
                for pid in &ids {
                    let mut ctx = persist::load_patient(&tx, pid)?;
                    ctx.follow_up = self.follow_up.clone();
                    let ts = missing_for(
                        &tx,
                        &engine,
                        (&history, &history),
                        &ctx,
                        now,
                        &downtime,
                        self.input_closed,
                    )?;
                    let trigger = missing_trigger(now);
                    for t in ts {
                        let a = persist::apply(&tx, &mut ctx, t, &trigger)?;
                        total.add(a.kind, a.notified);
                    }
                }
            }
            tx.commit()?;
            after = last;
        }
        self.count(&total);
        Ok(total)
    }

    fn count(&self, r: &Report) {
        // Outbox events were just committed: deliver them now, not at the
        // dispatcher's next poll.
        if let Some(d) = &self.delivery {
            if r.fired + r.updated + r.resolved > 0 {
                d.notify_one();
            }
        }
        for (kind, n) in [
            ("fire", r.fired),
            ("update", r.updated),
            ("resolve", r.resolved),
        ] {
            if n > 0 {
                self.metrics.rules_transitions(kind, n);
            }
        }
    }

    /// Refreshes the open-alert gauges.
    pub fn update_gauges(&self) -> Result<(), RulesError> {
        let mut firing = 0;
        let mut acked = 0;
        for (status, n) in alerts::open_counts(self.store.conn())? {
            match status.as_str() {
                "firing" => firing = n,
                "acknowledged" => acked = n,
                _ => {}
            }
        }
        self.metrics.set_alerts_open(firing, acked);
        Ok(())
    }
}

/// A batch as [`evaluate`] takes it.
struct Batch<'g> {
    /// Its measurements, by (patient, measured time).
    groups: &'g [Group],
    /// Its last commit position: history is read as of it.
    max_seq: i64,
    /// The evaluation's clock.
    now: DateTime<Utc>,
    /// Wall clock only: when the gateway was down.
    downtime: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// The care loop's hook, for the write transaction.
    follow_up: Option<Arc<dyn super::persist::AlertHook>>,
}

/// What the evaluation decided for one patient: the context as loaded and
/// the transitions decided over it, in order, with the new watermark and
/// input time. Persisted in the write transaction.
struct Plan {
    ctx: PatientCtx,
    transitions: Vec<(Transition, String)>,
    watermark: Option<DateTime<Utc>>,
    input_at: Option<DateTime<Utc>>,
}

impl Plan {
    /// Applies the transitions in the order they were decided (each over
    /// the state the one before left), then the watermark.
    fn persist(mut self, tx: &Transaction<'_>) -> Result<Report, RulesError> {
        let mut report = Report::default();
        for (t, trigger) in self.transitions {
            let a = persist::apply(tx, &mut self.ctx, t, &trigger)?;
            report.add(a.kind, a.notified);
        }
        self.ctx.watermark = self.watermark;
        self.ctx.input_at = self.input_at;
        persist::save_watermark(tx, &mut self.ctx)?;
        Ok(report)
    }
}

/// Evaluates a batch whose readings are folded into `windows`, reading the
/// rest from `conn` (a snapshot, or the write transaction). Writes nothing.
fn evaluate(
    conn: &Connection,
    engine: &Engine,
    windows: &mut Windows,
    b: &Batch<'_>,
) -> Result<Vec<Plan>, RulesError> {
    let store = SqliteHistory::as_of(conn, b.max_seq);
    let history = windows.view(&store);
    let mut plans = Vec::new();
    let mut i = 0;
    while i < b.groups.len() {
        let pid = &b.groups[i].patient_id;
        let mut loaded = persist::load_patient(conn, pid)?;
        loaded.follow_up = b.follow_up.clone();
        let mut ctx = loaded.clone();
        let mut transitions: Vec<(Transition, String)> = Vec::new();
        // Per rule, where its latest transition is when that one carries
        // only the rule's next state (see `persist::shed`).
        let mut state_only: HashMap<String, usize> = HashMap::new();
        while let Some(g) = b.groups.get(i).filter(|g| g.patient_id == *pid) {
            let eval = engine.evaluate(&Input {
                patient: &ctx.patient,
                readings: &g.readings,
                history: &history,
                states: &ctx.states,
                watermark: ctx.watermark,
                now: b.now,
            });
            if let Some(e) = history.take_error() {
                return Err(e.into());
            }
            ctx.watermark = eval.watermark;
            for mut t in eval.transitions {
                let prev = ctx.states.get(&t.rule_id);
                let only = persist::shed(&mut t, prev);
                // Every reading brings a transition of each of its rules:
                // the rule's state is updated in place, its id copied
                // only the first time.
                match ctx.states.get_mut(&t.rule_id) {
                    Some(s) => s.clone_from(&t.state),
                    None => {
                        ctx.states.insert(t.rule_id.clone(), t.state.clone());
                    }
                }
                // Of a run of such transitions of one rule only the last
                // counts: each would overwrite the state the one before it
                // saved, in the same transaction, and nothing else reads
                // them. The last takes the first one's place (a rule's
                // state row is independent of the other rules' writes).
                match (only, state_only.get(&t.rule_id)) {
                    (true, Some(&at)) => transitions[at] = (t, g.group_id.clone()),
                    (true, None) => {
                        state_only.insert(t.rule_id.clone(), transitions.len());
                        transitions.push((t, g.group_id.clone()));
                    }
                    (false, _) => {
                        state_only.remove(&t.rule_id);
                        transitions.push((t, g.group_id.clone()));
                    }
                }
            }
            i += 1;
        }
        // The patient's input just moved: silence is not judged until it
        // settles, but an open "no data" alert the new readings end
        // resolves now.
        ctx.input_at = Some(ctx.input_at.map_or(b.now, |t| t.max(b.now)));
        let trigger = missing_trigger(b.now);
        for t in missing_for(
            conn,
            engine,
            (&history, &store),
            &ctx,
            b.now,
            &b.downtime,
            false,
        )? {
            transitions.push((t, trigger.clone()));
        }
        plans.push(Plan {
            watermark: ctx.watermark,
            input_at: ctx.input_at,
            ctx: loaded,
            transitions,
        });
    }
    Ok(plans)
}

/// What a missing-data transition at `now` is triggered by.
fn missing_trigger(now: DateTime<Utc>) -> String {
    format!("missing@{}", now.timestamp_millis())
}

/// The missing-data transitions of a patient at `now`. `history`: the
/// readings as the engine sees them, and the store behind them (whose
/// errors abort the batch).
fn missing_for(
    conn: &Connection,
    engine: &Engine,
    (history, store): (&dyn History, &SqliteHistory<'_>),
    ctx: &PatientCtx,
    now: DateTime<Utc>,
    downtime: &[(DateTime<Utc>, DateTime<Utc>)],
    input_closed: bool,
) -> Result<Vec<Transition>, RulesError> {
    let offline = device_offline(conn, &ctx.patient.id)?;
    let ts = engine.evaluate_missing(&MissingInput {
        patient: &ctx.patient,
        history,
        states: &ctx.states,
        now,
        gateway_downtime: downtime,
        device_offline: offline,
        last_input: if input_closed { None } else { ctx.input_at },
    });
    if let Some(e) = store.take_error() {
        return Err(e.into());
    }
    Ok(ts)
}

/// Groups rows into measurements, ordered by (patient, measured time,
/// commit order).
fn group(rows: Vec<Row>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut index = HashMap::new();
    for r in rows {
        let Ok(metric) = r.metric.parse::<Metric>() else {
            // Stored readings are canonical; an unknown name means a newer
            // gateway wrote it. Skip rather than stop alerting.
            tracing::warn!("skipping a stored reading with an unknown metric");
            continue;
        };
        let (Some(measured_at), Some(received_at)) =
            (ms(Some(r.measured_at)), ms(Some(r.received_at)))
        else {
            continue;
        };
        let i = *index.entry(r.group_id.clone()).or_insert_with(|| {
            groups.push(Group {
                group_id: r.group_id.clone(),
                patient_id: r.patient_id.clone(),
                first_seq: r.seq,
                measured_at,
                // Most measurements are one reading (a pushed one would
                // make room for four): a catching-up batch holds thousands.
                readings: Vec::with_capacity(1),
            });
            groups.len() - 1
        });
        let g = &mut groups[i];
        g.measured_at = g.measured_at.max(measured_at);
        g.readings.push(NewReading {
            id: r.reading_id,
            metric,
            value: r.value,
            measured_at,
            received_at,
        });
    }
    groups.sort_by(|a, b| {
        (&a.patient_id, a.measured_at, a.first_seq).cmp(&(
            &b.patient_id,
            b.measured_at,
            b.first_seq,
        ))
    });
    groups
}
