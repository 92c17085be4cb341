//! What-if replay: the stored readings of a period through a candidate
//! rule set, compared with the alerts that were raised.
//!
//! A program tuning its alert burden asks "had the crisis limit been 185,
//! or the home-BP pack off for this plan, how many alerts would we have
//! had, and for whom?". This module answers it with the engine the
//! evaluator uses, on the store as it is, and writes nothing: the store is
//! opened read-only.
//!
//! Readings are replayed in commit (`seq`) order, one measurement at a
//! time, at the time they were committed (the evaluator's "now" on the
//! wall clock); the engine sees history as of each reading's commit (a
//! back-filled reading is not visible before it arrived), with the
//! patient's current care plans and overrides. Missing-data rules tick
//! hourly, with the gateway's recorded downtime, and wait for a patient's
//! input to settle as the evaluator does. Alert states start empty at the
//! period's start (alerts open then are not carried over).
//!
//! Large stores stream: readings are read in pages of [`PAGE`] rows, each
//! page its own short read, and only per-patient state (alert states,
//! newest measured time per metric) stays in memory.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use alerting_rules::{
    AlertState, Engine, History, Input, MissingInput, NewReading, Overrides, Patient, Point,
    RuleSet, TransitionKind,
};
use chrono::{DateTime, DurationRound, TimeDelta, TimeZone, Utc};
use device_profiles::Metric;
use rusqlite::Connection;
use serde::Serialize;

use super::missing::gateway_downtime;
use crate::store::history::{self, SqliteHistory};
use crate::store::StoreError;

/// Rows read per page.
pub const PAGE: i64 = 20_000;

/// What to replay.
#[derive(Debug, Clone)]
pub struct WhatIfQuery {
    /// Readings committed at or after.
    pub since: DateTime<Utc>,
    /// Readings committed before.
    pub until: DateTime<Utc>,
    /// Only this patient.
    pub patient: Option<String>,
}

/// One rule's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RuleCount {
    pub rule_id: String,
    /// Alerts raised in the period (the store).
    pub raised: u64,
    /// Alerts the candidate would have raised.
    pub candidate: u64,
    /// Of which notified.
    pub candidate_notified: u64,
}

/// A patient whose alerts change under the candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangedPatient {
    pub patient_id: String,
    pub rule_id: String,
    /// Alerts raised.
    pub raised: u64,
    /// Alerts the candidate would have raised.
    pub candidate: u64,
}

/// The comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WhatIfReport {
    /// Start of the period.
    pub since: DateTime<Utc>,
    /// End of the period.
    pub until: DateTime<Utc>,
    /// Readings replayed.
    pub readings: u64,
    /// Measurements replayed.
    pub measurements: u64,
    /// Patients replayed.
    pub patients: u64,
    /// Per rule (every rule of either set that raised or would raise).
    pub rules: Vec<RuleCount>,
    /// Patients with more alerts of a rule under the candidate.
    pub gained: Vec<ChangedPatient>,
    /// Patients with fewer alerts of a rule under the candidate.
    pub lost: Vec<ChangedPatient>,
}

fn t(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// The store as of one commit position: the store's history bounded by
/// `seq`, with `last_seen` served from memory (it is asked for every
/// patient at every missing-data tick).
struct AsOf<'c> {
    readings: SqliteHistory<'c>,
    last_seen: HashMap<String, HashMap<Metric, DateTime<Utc>>>,
}

impl History for AsOf<'_> {
    fn window(
        &self,
        patient: &str,
        metric: Metric,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<Point> {
        self.readings.window(patient, metric, from, to)
    }

    fn last_n(&self, patient: &str, metric: Metric, at: DateTime<Utc>, n: usize) -> Vec<Point> {
        self.readings.last_n(patient, metric, at, n)
    }

    fn last_seen(&self, patient: &str, metric: Option<Metric>) -> Option<DateTime<Utc>> {
        let seen = self.last_seen.get(patient)?;
        match metric {
            Some(m) => seen.get(&m).copied(),
            None => seen.values().max().copied(),
        }
    }
}

/// A stored reading waiting for the rest of its measurement (`reading`
/// is `None` for a metric this build does not know).
struct Pending {
    seq: i64,
    group: String,
    patient: String,
    committed: DateTime<Utc>,
    reading: Option<NewReading>,
}

struct Run {
    patient: Patient,
    states: BTreeMap<String, AlertState>,
    watermark: Option<DateTime<Utc>>,
    last_input: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct Counts {
    /// (patient, rule) → (raised, candidate, candidate notified)
    by: BTreeMap<(String, String), (u64, u64, u64)>,
}

impl Counts {
    fn candidate(&mut self, patient: &str, rule: &str, notified: bool) {
        let e = self
            .by
            .entry((patient.to_string(), rule.to_string()))
            .or_default();
        e.1 += 1;
        e.2 += u64::from(notified);
    }
}

/// Loads a patient's plans and overrides as the evaluator would.
fn load_patient(conn: &Connection, id: &str) -> Result<Patient, StoreError> {
    let rec = crate::store::patients::get(conn, id)?;
    Ok(match rec {
        Some(r) => Patient {
            id: id.to_string(),
            care_plans: r.care_plans,
            overrides: serde_json::from_value::<Overrides>(r.overrides).unwrap_or_default(),
            enrolled_at: Some(r.enrolled_at),
        },
        None => Patient {
            id: id.to_string(),
            care_plans: Vec::new(),
            overrides: Overrides::default(),
            enrolled_at: None,
        },
    })
}

/// Opens the store read-only (with its key when it is encrypted): the
/// what-if writes nothing.
pub fn open_read_only(path: &Path) -> Result<crate::store::cipher::ReadOnly, StoreError> {
    crate::store::cipher::open_read_only(path)
}

/// Replays the period through `engine` and compares with the store's alerts.
pub fn what_if(
    conn: &Connection,
    engine: &Engine,
    q: &WhatIfQuery,
) -> Result<WhatIfReport, StoreError> {
    let since = q.since.timestamp_millis();
    let until = q.until.timestamp_millis();
    let downtime = gateway_downtime(conn, q.until)?;
    let mut hist = AsOf {
        readings: SqliteHistory::as_of(conn, 0),
        last_seen: HashMap::new(),
    };
    // Newest measured time per (patient, metric) before the period.
    for (p, m, at) in history::newest_measured_before(conn, since, q.patient.as_deref())? {
        if let Ok(m) = m.parse::<Metric>() {
            hist.last_seen.entry(p).or_default().insert(m, t(at));
        }
    }
    let mut runs: BTreeMap<String, Run> = BTreeMap::new();
    // Everyone enrolled is watched (a patient who never sends is silent).
    for id in crate::store::patients::ids(conn, q.patient.as_deref())? {
        let patient = load_patient(conn, &id)?;
        runs.insert(
            id,
            Run {
                patient,
                states: BTreeMap::new(),
                watermark: None,
                last_input: None,
            },
        );
    }
    let mut rp = Replay {
        engine,
        conn,
        downtime,
        hist,
        runs,
        counts: Counts::default(),
        next_tick: None,
    };
    let mut readings = 0u64;
    let mut measurements = 0u64;
    let mut after = 0i64;
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        // One read transaction per page: the engine's queries for it share
        // one snapshot and one lock (and a live gateway's checkpoints wait
        // for one page at most).
        let tx = conn.unchecked_transaction()?;
        let page: Vec<Pending> =
            history::received_page(conn, after, since, until, q.patient.as_deref(), PAGE)?
                .into_iter()
                .map(|r| Pending {
                    seq: r.seq,
                    group: r.group_id,
                    patient: r.patient_id,
                    committed: t(r.committed_at.max(r.received_at)),
                    reading: r.metric.parse::<Metric>().ok().map(|metric| NewReading {
                        id: r.reading_id,
                        metric,
                        value: r.value,
                        measured_at: t(r.measured_at),
                        received_at: t(r.received_at),
                    }),
                })
                .collect();
        let last_page = (page.len() as i64) < PAGE;
        for row in page {
            after = row.seq;
            // Stored readings are canonical; an unknown metric is a newer
            // gateway's, skipped as the evaluator skips it.
            if row.reading.is_none() {
                continue;
            }
            readings += 1;
            // A measurement ends where the next group starts.
            if pending.first().is_some_and(|p| p.group != row.group) {
                measurements += 1;
                rp.measurement(std::mem::take(&mut pending))?;
            }
            pending.push(row);
        }
        tx.commit()?;
        if last_page {
            break;
        }
    }
    let tx = conn.unchecked_transaction()?;
    if !pending.is_empty() {
        measurements += 1;
        rp.measurement(pending)?;
    }
    if rp.next_tick.is_none() {
        rp.next_tick = Some(hour_after(q.since));
    }
    rp.ticks_until(q.until, false);
    tx.commit()?;
    let Replay {
        hist,
        runs,
        mut counts,
        ..
    } = rp;
    if let Some(e) = hist.readings.take_error() {
        return Err(e.into());
    }
    // What was raised.
    for (p, rule, n) in
        crate::store::alerts::fired_counts(conn, since, until, q.patient.as_deref())?
    {
        counts.by.entry((p, rule)).or_default().0 += n.max(0) as u64;
    }
    let mut rules: BTreeMap<String, RuleCount> = BTreeMap::new();
    let mut gained = Vec::new();
    let mut lost = Vec::new();
    for ((p, rule), (raised, cand, notified)) in &counts.by {
        let r = rules.entry(rule.clone()).or_insert_with(|| RuleCount {
            rule_id: rule.clone(),
            ..Default::default()
        });
        r.raised += raised;
        r.candidate += cand;
        r.candidate_notified += notified;
        let change = ChangedPatient {
            patient_id: p.clone(),
            rule_id: rule.clone(),
            raised: *raised,
            candidate: *cand,
        };
        if cand > raised {
            gained.push(change);
        } else if cand < raised {
            lost.push(change);
        }
    }
    Ok(WhatIfReport {
        since: q.since,
        until: q.until,
        readings,
        measurements,
        patients: runs.len() as u64,
        rules: rules.into_values().collect(),
        gained,
        lost,
    })
}

/// The replay's running state.
struct Replay<'c, 'e> {
    engine: &'e Engine,
    conn: &'c Connection,
    downtime: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    hist: AsOf<'c>,
    runs: BTreeMap<String, Run>,
    counts: Counts,
    /// The next hourly missing-data tick; `None` until the first reading
    /// (a period that starts long before the data does not tick through
    /// empty years).
    next_tick: Option<DateTime<Utc>>,
}

fn hour_after(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t) + TimeDelta::hours(1)
}

impl Replay<'_, '_> {
    /// The hourly missing-data ticks before `now` (`inclusive`: at it too).
    fn ticks_until(&mut self, now: DateTime<Utc>, inclusive: bool) {
        let Some(mut at) = self.next_tick else {
            self.next_tick = Some(hour_after(now));
            return;
        };
        let ids: Vec<String> = self.runs.keys().cloned().collect();
        while at < now || (inclusive && at == now) {
            for id in &ids {
                self.missing(id, at, true);
            }
            at += TimeDelta::hours(1);
        }
        self.next_tick = Some(at);
    }

    /// The missing-data rules of one patient at `now` (with the gateway's
    /// downtime on the timer, none right after a reading, as the evaluator).
    fn missing(&mut self, id: &str, now: DateTime<Utc>, timer: bool) {
        let Some(run) = self.runs.get_mut(id) else {
            return;
        };
        let ts = self.engine.evaluate_missing(&MissingInput {
            patient: &run.patient,
            history: &self.hist,
            states: &run.states,
            now,
            gateway_downtime: if timer { &self.downtime } else { &[] },
            device_offline: false,
            last_input: run.last_input,
        });
        for tr in ts {
            if tr.kind == TransitionKind::Fire {
                self.counts
                    .candidate(&run.patient.id, &tr.rule_id, tr.notify);
            }
            run.states.insert(tr.rule_id.clone(), tr.state);
        }
    }

    /// Evaluates one measurement (one group), after the ticks before it.
    fn measurement(&mut self, group: Vec<Pending>) -> Result<(), StoreError> {
        let Some(first) = group.first() else {
            return Ok(());
        };
        let patient = first.patient.clone();
        let seq = group.iter().map(|g| g.seq).max().unwrap_or(first.seq);
        // The evaluator's "now" on the wall clock: when it was committed.
        let now = group
            .iter()
            .map(|g| g.committed)
            .max()
            .unwrap_or(first.committed);
        self.ticks_until(now, true);
        self.hist.readings.advance_to(seq);
        let readings: Vec<NewReading> = group.into_iter().filter_map(|g| g.reading).collect();
        let seen = self.hist.last_seen.entry(patient.clone()).or_default();
        for r in &readings {
            let e = seen.entry(r.metric).or_insert(r.measured_at);
            *e = (*e).max(r.measured_at);
        }
        if !self.runs.contains_key(&patient) {
            let p = load_patient(self.conn, &patient)?;
            self.runs.insert(
                patient.clone(),
                Run {
                    patient: p,
                    states: BTreeMap::new(),
                    watermark: None,
                    last_input: None,
                },
            );
        }
        let Some(run) = self.runs.get_mut(&patient) else {
            return Ok(());
        };
        let eval = self.engine.evaluate(&Input {
            patient: &run.patient,
            readings: &readings,
            history: &self.hist,
            states: &run.states,
            watermark: run.watermark,
            now,
        });
        run.watermark = eval.watermark;
        for tr in eval.transitions {
            if tr.kind == TransitionKind::Fire {
                self.counts
                    .candidate(&run.patient.id, &tr.rule_id, tr.notify);
            }
            run.states.insert(tr.rule_id.clone(), tr.state);
        }
        run.last_input = Some(now);
        self.missing(&patient, now, false);
        Ok(())
    }
}

/// The report as text.
pub fn render(r: &WhatIfReport, candidate: &RuleSet) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "what-if {} .. {}: {} reading(s), {} measurement(s), {} patient(s) through {} candidate rule(s)",
        r.since.format("%Y-%m-%dT%H:%M:%SZ"),
        r.until.format("%Y-%m-%dT%H:%M:%SZ"),
        r.readings,
        r.measurements,
        r.patients,
        candidate.rules().len()
    );
    let _ = writeln!(
        s,
        "{:<34} {:>8} {:>10} {:>8} {:>8}",
        "rule", "raised", "candidate", "notified", "change"
    );
    for c in &r.rules {
        let _ = writeln!(
            s,
            "{:<34} {:>8} {:>10} {:>8} {:>+8}",
            c.rule_id,
            c.raised,
            c.candidate,
            c.candidate_notified,
            c.candidate as i64 - c.raised as i64
        );
    }
    for (title, list) in [("gain", &r.gained), ("lose", &r.lost)] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(s, "patients who would {title} alerts:");
        for c in list {
            let _ = writeln!(
                s,
                "  {} {}: {} -> {}",
                c.patient_id, c.rule_id, c.raised, c.candidate
            );
        }
    }
    s
}
