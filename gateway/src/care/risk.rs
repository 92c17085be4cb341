//! The risk stage: every enrolled patient's tier, kept current from the
//! store, with its reasons and its history.
//!
//! Tier rules (`alerting_rules::tier`, `[[tier]]` entries of the rule
//! packs) are a pure function of facts the store already holds; this stage
//! decides *when* to apply them and persists what they say. It follows
//! three logs with durable cursors — `alert_history` (`risk.alerts`),
//! `task_history` (`risk.tasks`) and `readings` (`risk.readings`, which
//! also feeds `risk_days`, the patient's local days with data) — and
//! recomputes the patients they touch; patients nothing touched are
//! recomputed once their tier is older than `[care.risk] recompute_after`
//! (default an hour, so windows that slide by, such as "in the last 7
//! days", are applied at least that often). A batch's tier rows, history
//! rows, `risk.changed` outbox events, data days and cursors commit in one
//! transaction: `kill -9` anywhere loses no change and repeats none, and
//! event ids derive from (patient, position in the patient's history), so
//! even a batch run twice would enqueue each event once.
//!
//! A patient with no row is `unknown`; the first placement is recorded in
//! the history, and reported by an event unless it is `unknown` (nothing
//! changed for anyone watching).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use alerting_rules::tier::{AlertFact, TaskFact, TierFacts, TierOutcome};
use alerting_rules::{RuleSet, Severity, Tier};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;
use rusqlite::Transaction;
use serde::Deserialize;

use super::config::CareConfig;
use crate::fault::{Fault, FaultPoint};
use crate::store::outbox::{self, Event, EventType, RiskData, TierRuleRef, EVENT_SCHEMA};
use crate::store::risk::{self as table, RiskChange, RiskRow};
use crate::store::{cursor_in, patients, set_cursor, Store, StoreError};

/// Cursor over `alert_history.id`.
pub const ALERTS_CURSOR: &str = "risk.alerts";
/// Cursor over `task_history.id`.
pub const TASKS_CURSOR: &str = "risk.tasks";
/// Cursor over `readings.seq`.
pub const READINGS_CURSOR: &str = "risk.readings";

/// Most readings counted per step. Counting is cheap; what costs is
/// recomputing the patients they touch, once per step however many of
/// their readings it takes, so a backlog is taken in large steps.
pub const READINGS_PER_STEP: usize = 50_000;

/// A step takes readings of at most `batch` × this many patients.
const PATIENTS_PER_BATCH_FROM_READINGS: usize = 10;

/// Readings counted for one step: after and through which seq, how many,
/// per (patient, local day) and the newest per enrolled patient.
#[derive(Debug, Default)]
struct DaysTaken {
    after: i64,
    through: i64,
    readings: usize,
    /// Per enrolled patient: the newest reading and readings per local day.
    patients: HashMap<String, PatientDays>,
}

/// What a step's readings say of one patient.
#[derive(Debug)]
struct PatientDays {
    newest: i64,
    days: HashMap<i64, i64>,
}

/// `[care.risk]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RiskConfig {
    /// Keep risk tiers (the worklist shows them).
    pub enabled: bool,
    /// How often the stage looks for new alerts, tasks and readings.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A tier older than this is recomputed even if nothing touched the
    /// patient (at most 1 day: tiers are at least daily).
    #[serde(with = "humantime_serde")]
    pub recompute_after: Duration,
    /// Most patients recomputed per transaction.
    pub batch: usize,
}

impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig {
            enabled: true,
            poll_interval: Duration::from_secs(1),
            recompute_after: Duration::from_secs(3600),
            batch: 200,
        }
    }
}

/// Checks `[care.risk]`.
pub fn validate(cfg: &RiskConfig, err: &mut dyn FnMut(&str, &str, String)) {
    if cfg.poll_interval < Duration::from_millis(50) {
        err("care.risk", "poll_interval", "must be at least 50ms".into());
    }
    if cfg.recompute_after < Duration::from_secs(1)
        || cfg.recompute_after > Duration::from_secs(86_400)
    {
        err(
            "care.risk",
            "recompute_after",
            "must be 1s to 1d (tiers are recomputed at least daily)".into(),
        );
    }
    if cfg.batch == 0 || cfg.batch > 10_000 {
        err("care.risk", "batch", "must be 1 to 10000".into());
    }
}

/// Failures of the risk stage.
#[derive(Debug, thiserror::Error)]
pub enum RiskError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The rule set (with its tier rules) does not load.
    #[error("{0}")]
    Load(#[from] alerting_rules::LoadErrors),
}

impl From<rusqlite::Error> for RiskError {
    fn from(e: rusqlite::Error) -> Self {
        RiskError::Store(StoreError::Sqlite(e))
    }
}

/// A local date as days since 1970-01-01.
pub fn local_day(t: DateTime<Utc>, tz: Tz) -> i64 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    (t.with_timezone(&tz).date_naive() - epoch).num_days()
}

fn severity(s: &str) -> Severity {
    serde_json::from_value(serde_json::Value::String(s.to_string())).unwrap_or(Severity::Info)
}

/// What one step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Patients whose tier was recomputed.
    pub recomputed: usize,
    /// Tier changes recorded.
    pub changed: usize,
    /// Log entries (alert history, task history, readings) taken in.
    pub consumed: usize,
}

/// The risk stage on its own store connection.
pub struct RiskStage {
    store: Store,
    rules: Arc<RuleSet>,
    care: CareConfig,
    fault: Fault,
}

impl RiskStage {
    /// Opens the stage's connection.
    pub fn open(path: &Path, rules: Arc<RuleSet>, care: CareConfig) -> Result<Self, RiskError> {
        Ok(RiskStage {
            store: Store::open(path)?,
            rules,
            care,
            fault: Fault::from_env(),
        })
    }

    /// The stage over an open store (tests, benchmarks, the CLI).
    pub fn with_store(store: Store, rules: Arc<RuleSet>, care: CareConfig) -> Self {
        RiskStage {
            store,
            rules,
            care,
            fault: Fault::default(),
        }
    }

    /// The store (read access for tests and tools).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Takes in what the logs hold after the cursors (up to a batch) and
    /// recomputes the touched and the due patients, in one transaction.
    pub fn step(&mut self, now: DateTime<Utc>) -> Result<StepReport, RiskError> {
        let batch = self.care.risk.batch.max(1);
        let stale = now
            - TimeDelta::from_std(self.care.risk.recompute_after).unwrap_or(TimeDelta::hours(1));
        // A read first: the write lock is taken only when there is work.
        {
            let conn = self.store.conn();
            let r = cursor_in(conn, READINGS_CURSOR)?.unwrap_or(0);
            let a = cursor_in(conn, ALERTS_CURSOR)?.unwrap_or(0);
            let t = cursor_in(conn, TASKS_CURSOR)?.unwrap_or(0);
            let work = table::any_reading_after(conn, r)?
                || !table::alert_changes_after(conn, a, 1)?.is_empty()
                || !table::task_changes_after(conn, t, 1)?.is_empty()
                || !table::due(conn, stale.timestamp_millis(), 1)?.is_empty();
            if !work {
                return Ok(StepReport::default());
            }
        }
        // New readings are counted on a snapshot, before the write lock:
        // only this stage moves their cursor and writes data days.
        let days = self.count_days(batch * PATIENTS_PER_BATCH_FROM_READINGS)?;
        let rules = self.rules.clone();
        let care = self.care.clone();
        let tx = self.store.transaction()?;
        let mut report = StepReport::default();
        let mut events = 0usize;
        let mut touched: BTreeSet<String> = BTreeSet::new();
        let mut newest: HashMap<String, i64> = HashMap::new();

        // Readings: data days and the newest reading, per patient.
        if let Some(taken) = days {
            if cursor_in(&tx, READINGS_CURSOR)?.unwrap_or(0) == taken.after {
                for (p, seen) in &taken.patients {
                    for (day, n) in &seen.days {
                        table::add_day(&tx, p, *day, *n)?;
                    }
                }
                set_cursor(&tx, READINGS_CURSOR, taken.through)?;
                report.consumed += taken.readings;
                touched.extend(taken.patients.keys().cloned());
                newest = taken
                    .patients
                    .into_iter()
                    .map(|(p, seen)| (p, seen.newest))
                    .collect();
            }
        }
        // Alert and task changes.
        let pos = cursor_in(&tx, ALERTS_CURSOR)?.unwrap_or(0);
        let rows = table::alert_changes_after(&tx, pos, batch)?;
        if let Some(last) = rows.last().map(|r| r.0) {
            report.consumed += rows.len();
            touched.extend(rows.into_iter().map(|r| r.1));
            set_cursor(&tx, ALERTS_CURSOR, last)?;
        }
        let pos = cursor_in(&tx, TASKS_CURSOR)?.unwrap_or(0);
        let rows = table::task_changes_after(&tx, pos, batch)?;
        if let Some(last) = rows.last().map(|r| r.0) {
            report.consumed += rows.len();
            touched.extend(rows.into_iter().map(|r| r.1));
            set_cursor(&tx, TASKS_CURSOR, last)?;
        }
        // Tiers gone stale (and patients never placed).
        if touched.len() < batch {
            touched.extend(table::due(
                &tx,
                stale.timestamp_millis(),
                batch - touched.len(),
            )?);
        }
        for p in &touched {
            let Some(record) = patients::get(&tx, p)? else {
                continue;
            };
            let tz = care.team(record.care_team.as_deref()).time_zone;
            let (changed, event) =
                recompute(&tx, &rules, &record, tz, now, newest.get(p).copied())?;
            report.recomputed += 1;
            report.changed += usize::from(changed);
            events += usize::from(event);
        }
        if events > 0 {
            self.fault.abort_at(FaultPoint::BeforeRiskCommit);
        }
        tx.commit()?;
        if events > 0 {
            self.fault.abort_at(FaultPoint::AfterRiskCommit);
        }
        Ok(report)
    }

    /// The readings after the readings cursor, counted per enrolled
    /// patient and local day on a read snapshot: up to
    /// [`READINGS_PER_STEP`] of them, fewer where the next one would make
    /// more than `patients` patients (each is recomputed in the step's
    /// write transaction). `None` when none wait.
    fn count_days(&mut self, patients: usize) -> Result<Option<DaysTaken>, RiskError> {
        let care = self.care.clone();
        let snap = self.store.snapshot()?;
        let after = cursor_in(&snap, READINGS_CURSOR)?.unwrap_or(0);
        let mut taken = DaysTaken {
            after,
            ..DaysTaken::default()
        };
        // A patient's time zone, `None` when not enrolled (no tier).
        let mut zones: HashMap<String, Option<Tz>> = HashMap::new();
        let last = table::each_reading_after(&snap, after, READINGS_PER_STEP, |_, p, measured| {
            let tz = match zones.get(p) {
                Some(tz) => *tz,
                None => {
                    if taken.patients.len() >= patients {
                        return Ok(false);
                    }
                    let tz = patients::get(&snap, p)?
                        .map(|r| care.team(r.care_team.as_deref()).time_zone);
                    zones.insert(p.to_string(), tz);
                    tz
                }
            };
            taken.readings += 1;
            let Some(tz) = tz else {
                return Ok(true);
            };
            let t = DateTime::from_timestamp_millis(measured).unwrap_or_default();
            let day = local_day(t, tz);
            match taken.patients.get_mut(p) {
                Some(seen) => {
                    seen.newest = seen.newest.max(measured);
                    *seen.days.entry(day).or_default() += 1;
                }
                None => {
                    let seen = PatientDays {
                        newest: measured,
                        days: HashMap::from([(day, 1)]),
                    };
                    taken.patients.insert(p.to_string(), seen);
                }
            }
            Ok(true)
        })?;
        Ok(last.map(|through| DaysTaken { through, ..taken }))
    }

    /// Runs until `stop` resolves, waking every `poll_interval`. On SIGHUP
    /// the tier rules are reloaded from `rules_dir` (`None`: the bundled
    /// packs) like the alert rules: a set that does not load is refused and
    /// the previous one stays.
    pub async fn run(self, rules_dir: Option<std::path::PathBuf>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut reload = crate::rules::worker::reload_signal();
        let mut tick = tokio::time::interval(self.care.risk.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stage = Some(self);
        tracing::info!(
            tier_rules = stage.as_ref().map_or(0, |s| s.rules.tiers().rules().len()),
            "risk tiers started"
        );
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = tick.tick() => {}
                Some(()) = reload.recv() => {
                    let dir = rules_dir.clone();
                    match tokio::task::spawn_blocking(move || crate::rules::load_rule_set(dir.as_deref())).await {
                        Ok(Ok(rules)) => {
                            if let Some(s) = stage.as_mut() {
                                s.rules = Arc::new(rules);
                                tracing::info!(tier_rules = s.rules.tiers().rules().len(), "tier rules reloaded");
                            }
                        }
                        Ok(Err(errors)) => tracing::error!(errors = %errors, "new tier rules refused; the previous ones stay active"),
                        Err(e) => tracing::error!(error = %e, "tier rule reload failed; the previous ones stay active"),
                    }
                }
            }
            let Some(mut s) = stage.take() else {
                return;
            };
            let joined = tokio::task::spawn_blocking(move || {
                // A backlog is taken a batch per transaction, a bounded
                // number per wake-up so that a stop is never held up long.
                for _ in 0..50 {
                    match s.step(Utc::now()) {
                        Ok(r) if r.recomputed > 0 || r.consumed > 0 => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::error!(error = %e, "risk tiers: recomputation failed; retrying on the next wake-up");
                            break;
                        }
                    }
                }
                s
            })
            .await;
            match joined {
                Ok(s) => stage = Some(s),
                Err(e) => {
                    tracing::error!(error = %e, "risk tiers: the stage panicked; it stopped");
                    return;
                }
            }
        }
        tracing::info!("risk tiers stopped");
    }
}

/// The facts of one patient, now.
fn facts(
    tx: &Transaction<'_>,
    rules: &RuleSet,
    record: &patients::PatientRecord,
    tz: Tz,
    now: DateTime<Utc>,
) -> Result<(TierFacts, i64, i64), StoreError> {
    let tiers = rules.tiers();
    let lookback = tiers.lookback().max(TimeDelta::days(30));
    let p = &record.patient_id;
    let alerts = table::alert_facts(tx, p, (now - lookback).timestamp_millis())?
        .into_iter()
        .map(|a| AlertFact {
            missing_data: rules.is_missing_data_rule(&a.rule_id),
            severity: severity(&a.severity),
            open: a.status != "resolved",
            fired_at: DateTime::from_timestamp_millis(a.fired_at).unwrap_or_default(),
            alert_id: a.alert_id,
            rule_id: a.rule_id,
        })
        .collect();
    let tasks = table::task_facts(tx, p, now.timestamp_millis())?
        .into_iter()
        .map(|t| TaskFact {
            priority: severity(&t.priority),
            overdue: t.overdue,
            task_id: t.task_id,
        })
        .collect();
    let today = local_day(now, tz);
    let days = table::days_from(tx, p, today - lookback.num_days())?;
    let ago: BTreeSet<u32> = days
        .iter()
        .map(|d| u32::try_from((today - d).max(0)).unwrap_or(u32::MAX))
        .collect();
    let last7 = ago.iter().filter(|d| **d < 7).count() as i64;
    let last30 = ago.iter().filter(|d| **d < 30).count() as i64;
    Ok((
        TierFacts {
            now,
            enrolled_at: Some(record.enrolled_at),
            alerts,
            tasks,
            data_days_ago: ago,
        },
        last7,
        last30,
    ))
}

/// The tier a patient would have now (no write): for `risk show --now`
/// and tests.
pub fn assess(
    tx: &Transaction<'_>,
    rules: &RuleSet,
    record: &patients::PatientRecord,
    tz: Tz,
    now: DateTime<Utc>,
) -> Result<TierOutcome, StoreError> {
    let (f, _, _) = facts(tx, rules, record, tz, now)?;
    Ok(rules.tiers().evaluate(&f))
}

/// Recomputes one patient's tier and writes the row, and on a change the
/// history row and the `risk.changed` event. Returns whether it changed
/// and whether an event was written.
fn recompute(
    tx: &Transaction<'_>,
    rules: &RuleSet,
    record: &patients::PatientRecord,
    tz: Tz,
    now: DateTime<Utc>,
    newest: Option<i64>,
) -> Result<(bool, bool), StoreError> {
    let (f, last7, last30) = facts(tx, rules, record, tz, now)?;
    let outcome = rules.tiers().evaluate(&f);
    let prev = table::get(tx, &record.patient_id)?;
    let reasons =
        serde_json::to_string(&outcome.reasons).map_err(|e| StoreError::Encode(e.to_string()))?;
    let at = now.timestamp_millis();
    let tier = outcome.tier.name().to_string();
    let last_reading_at = match (prev.as_ref().and_then(|r| r.last_reading_at), newest) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let mut row = RiskRow {
        patient_id: record.patient_id.clone(),
        tier: tier.clone(),
        rule_id: outcome.rule.as_ref().map(|r| r.id.clone()),
        rule_version: outcome.rule.as_ref().map(|r| r.version),
        pack: outcome.rule.as_ref().map(|r| r.pack.clone()),
        reasons: reasons.clone(),
        since: prev.as_ref().map_or(at, |r| r.since),
        computed_at: at,
        changes: prev.as_ref().map_or(0, |r| r.changes),
        last_reading_at,
        data_days_7: last7,
        data_days_30: last30,
    };
    let changed = prev.as_ref().is_none_or(|r| r.tier != tier);
    let mut evented = false;
    if changed {
        let n = row.changes;
        let from = prev.as_ref().map(|r| r.tier.clone());
        let silent = prev.is_none() && outcome.tier == Tier::Unknown;
        let event_id = (!silent).then(|| {
            outbox::event_id(&[
                EventType::RiskChanged.name(),
                &record.patient_id,
                &n.to_string(),
            ])
        });
        table::append_history(
            tx,
            &RiskChange {
                id: 0,
                patient_id: record.patient_id.clone(),
                n,
                at,
                from_tier: from.clone(),
                tier: tier.clone(),
                rule_id: row.rule_id.clone(),
                rule_version: row.rule_version,
                pack: row.pack.clone(),
                reasons: reasons.clone(),
                event_id: event_id.clone(),
            },
        )?;
        if let Some(id) = event_id {
            evented = true;
            let event = Event {
                schema: EVENT_SCHEMA.to_string(),
                id,
                event_type: EventType::RiskChanged,
                timestamp: now,
                data: RiskData {
                    patient_id: record.patient_id.clone(),
                    care_team: record.care_team.clone(),
                    care_plans: record.care_plans.clone(),
                    tier: tier.clone(),
                    previous_tier: from,
                    rule: outcome.rule.as_ref().map(|r| TierRuleRef {
                        id: r.id.clone(),
                        version: r.version,
                        pack: r.pack.clone(),
                    }),
                    reasons: serde_json::to_value(&outcome.reasons)
                        .map_err(|e| StoreError::Encode(e.to_string()))?,
                    changed_at: now,
                    link: format!("/api/v1/patients/{}/risk", record.patient_id),
                },
            };
            outbox::enqueue(tx, &event, None, Some(&record.patient_id), None)?;
        }
        row.since = at;
        row.changes = n + 1;
    }
    table::save(tx, &row)?;
    Ok((changed, evented))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::patients::PatientChange;

    fn stage(dir: &Path) -> RiskStage {
        let store = Store::open(&dir.join("s.db")).unwrap();
        RiskStage::with_store(
            store,
            Arc::new(RuleSet::bundled().unwrap()),
            CareConfig::default(),
        )
    }

    fn enrol(s: &mut RiskStage, p: &str, team: &str) {
        s.store
            .upsert_patient(
                p,
                "cli",
                &PatientChange {
                    care_plans: Some(vec!["hypertension".into()]),
                    overrides: None,
                    care_team: Some(Some(team.into())),
                    time_zone: None,
                    monitoring_start: None,
                },
            )
            .unwrap();
    }

    fn alert(s: &mut RiskStage, p: &str, id: &str, rule: &str, sev: &str, at: i64) {
        let tx = s.store.transaction().unwrap();
        tx.execute(
            "INSERT INTO alerts (alert_id, patient_id, rule_id, rule_version, pack, severity, status, message, fired_at, updated_at)
             VALUES (?1, ?2, ?3, 1, 'x', ?4, 'firing', 'm', ?5, ?5)",
            rusqlite::params![id, p, rule, sev, at],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO alert_history (alert_id, at, kind, notified) VALUES (?1, ?2, 'fired', 1)",
            rusqlite::params![id, at],
        )
        .unwrap();
        tx.commit().unwrap();
    }

    fn drain(s: &mut RiskStage, now: DateTime<Utc>) -> usize {
        let mut changed = 0;
        loop {
            let r = s.step(now).unwrap();
            changed += r.changed;
            if r.recomputed == 0 && r.consumed == 0 {
                return changed;
            }
        }
    }

    #[test]
    fn tiers_follow_alerts_and_every_change_is_one_event_with_its_history() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = stage(dir.path());
        enrol(&mut s, "p1", "north");
        let now = Utc::now();
        // First placement: unknown, recorded, no event.
        assert_eq!(drain(&mut s, now), 1);
        let r = table::get(s.store.conn(), "p1").unwrap().unwrap();
        assert_eq!((r.tier.as_str(), r.changes), ("unknown", 1));
        let events = |s: &RiskStage| -> i64 {
            s.store
                .conn()
                .query_row(
                    "SELECT COUNT(*) FROM outbox WHERE event_type = 'risk.changed'",
                    [],
                    |r| r.get(0),
                )
                .unwrap()
        };
        assert_eq!(events(&s), 0);
        // A critical alert: high, one event, the alert cited.
        alert(
            &mut s,
            "p1",
            "al1",
            "htn.crisis",
            "critical",
            now.timestamp_millis(),
        );
        assert_eq!(drain(&mut s, now), 1);
        let r = table::get(s.store.conn(), "p1").unwrap().unwrap();
        assert_eq!(r.tier, "high");
        assert_eq!(r.rule_id.as_deref(), Some("tier.high.critical-alert"));
        assert!(r.reasons.contains("al1"), "{}", r.reasons);
        assert_eq!(events(&s), 1);
        let body: String = s
            .store
            .conn()
            .query_row("SELECT payload FROM outbox", [], |r| r.get(0))
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["data"]["previous_tier"], "unknown");
        assert_eq!(v["data"]["tier"], "high");
        assert_eq!(v["data"]["care_team"], "north");
        // Nothing new: nothing written, even when due again (same tier).
        assert_eq!(drain(&mut s, now), 0);
        assert_eq!(drain(&mut s, now + TimeDelta::hours(2)), 0);
        assert_eq!(events(&s), 1);
        let h = table::history(s.store.conn(), "p1", 10).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].from_tier.as_deref(), Some("unknown"));
        // A rerun of the same change would write the same event id.
        let again = outbox::event_id(&[EventType::RiskChanged.name(), "p1", "1"]);
        assert_eq!(h[0].event_id.as_deref(), Some(again.as_str()));
    }

    fn reading(s: &mut RiskStage, p: &str, at: DateTime<Utc>) {
        let ms = at.timestamp_millis();
        s.store
            .conn()
            .execute(
                "INSERT INTO readings (reading_id, group_id, patient_id, device_id, metric, value, unit, loinc,
                     measured_at, received_at, committed_at, source)
                 VALUES (?1, ?1, ?2, 'd1', 'systolic', 120, 'mm[Hg]', '8480-6', ?3, ?3, ?3, 'mqtt')",
                rusqlite::params![format!("r-{p}-{ms}"), p, ms],
            )
            .unwrap();
    }

    fn tier_row(s: &RiskStage, p: &str) -> Option<RiskRow> {
        table::get(s.store.conn(), p).unwrap()
    }

    /// A backlog of readings is counted in one step however many there
    /// are of each patient: each patient is recomputed once, with its data
    /// days and newest reading; readings of patients not enrolled only move
    /// the cursor.
    #[test]
    fn a_backlog_of_readings_is_counted_in_one_step_per_patient() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = stage(dir.path());
        enrol(&mut s, "p1", "north");
        enrol(&mut s, "p2", "north");
        // Noon: minutes apart never cross a day.
        let now = DateTime::parse_from_rfc3339("2026-03-10T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        drain(&mut s, now);
        for (i, d) in [9, 3, 2, 2, 0].into_iter().enumerate() {
            reading(
                &mut s,
                "p1",
                now - TimeDelta::days(d) - TimeDelta::minutes(i as i64 * 5),
            );
        }
        reading(&mut s, "p1", now);
        reading(&mut s, "p2", now - TimeDelta::days(20));
        reading(&mut s, "p3", now);
        let r = s.step(now).unwrap();
        assert_eq!((r.consumed, r.recomputed), (8, 2));
        let p1 = tier_row(&s, "p1").unwrap();
        assert_eq!((p1.data_days_7, p1.data_days_30), (3, 4));
        assert_eq!(p1.last_reading_at, Some(now.timestamp_millis()));
        let p2 = tier_row(&s, "p2").unwrap();
        assert_eq!((p2.data_days_7, p2.data_days_30), (0, 1));
        assert!(tier_row(&s, "p3").is_none());
        let r = s.step(now).unwrap();
        assert_eq!((r.consumed, r.recomputed), (0, 0));
        assert_eq!(cursor_in(s.store.conn(), READINGS_CURSOR).unwrap(), Some(8));
    }

    /// A step takes the readings of at most `batch` × 10 patients, stopping
    /// before the first reading of one more; the next step goes on from
    /// there and every reading is counted once.
    #[test]
    fn a_step_takes_readings_of_a_bounded_number_of_patients() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = stage(dir.path());
        s.care.risk.batch = 1;
        let patients: Vec<String> = (0..12).map(|i| format!("p{i:02}")).collect();
        for p in &patients {
            enrol(&mut s, p, "north");
        }
        let now = Utc::now();
        drain(&mut s, now);
        for round in 0..2 {
            for p in &patients {
                reading(&mut s, p, now - TimeDelta::days(round));
            }
        }
        for want in [(10, 10), (10, 10), (4, 4), (0, 0)] {
            let r = s.step(now).unwrap();
            assert_eq!((r.consumed, r.recomputed), want);
        }
        for p in &patients {
            assert_eq!(tier_row(&s, p).unwrap().data_days_7, 2, "{p}");
        }
    }

    #[test]
    fn data_days_are_local_to_the_team() {
        let tz: Tz = "Pacific/Auckland".parse().unwrap();
        let t = DateTime::parse_from_rfc3339("2026-03-10T11:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        // 00:30 on 11 March in Auckland, still 10 March in UTC.
        assert_eq!(local_day(t, tz), local_day(t, Tz::UTC) + 1);
    }
}
