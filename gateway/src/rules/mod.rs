//! Alert rules, driven from the durable store.
//!
//! The rule engine (`alerting-rules`) is a pure function; this module gives
//! it the gateway's data and persists what it decides:
//!
//! - [`evaluator`]: follows committed readings after the durable cursor
//!   `rules` in commit (`seq`) order, one measurement (`group_id`) at a time
//!   in measured-time order per patient, and writes alert states, the
//!   patient watermark, `alerts`, `alert_history`, outbox events and the
//!   cursor in **one** transaction — so `kill -9` anywhere neither loses an
//!   alert nor fires one twice;
//! - [`missing`]: the missing-data timer, with the gateway's own downtime
//!   (from the `runs` heartbeats) and device-offline inhibition;
//! - [`clock`]: what "now" is: the wall clock, or the data's own time for
//!   accelerated replays (`rules.clock`);
//! - [`windows`]: each patient's recent readings in memory, following the
//!   evaluated readings, so a reading costs no range query per rule; below
//!   their floors (late readings) the store's [`crate::store::history`]
//!   answers (bounded, indexed queries, so the cost of a reading does not
//!   grow with the record);
//! - [`lifecycle`]: acknowledge (with snooze) and manual resolve, shared by
//!   the CLI and the HTTP API;
//! - [`burden`]: the alert-burden report (per care team and rule);
//! - [`whatif`]: replaying stored readings through a candidate rule set;
//! - [`worker`]: the rule stage's run loop (wake on commit, timers, SIGHUP
//!   reload);
//! - the `rules`, `patients` and `alerts` commands are in `crate::cli`.
//!
//! The bundled rule packs are defaults a program can edit, not medical advice.

pub mod burden;
pub mod clock;
pub mod config;
pub mod evaluator;
pub mod lifecycle;
pub mod missing;
mod persist;
pub use persist::{AlertChange, AlertHook};
#[cfg(test)]
mod tests;
pub mod whatif;
pub mod windows;
pub mod worker;

use std::path::Path;

use alerting_rules::{Engine, EngineConfig, LoadErrors, RuleSet};

use crate::store::{patients, StoreError};
use config::RulesConfig;

/// Name of the evaluator's durable cursor in `cursors`.
pub const CURSOR: &str = "rules";

/// Failures of the rule stage. Bad rule files are [`LoadErrors`] with file,
/// line and field; everything else is the store.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The rule set does not load.
    #[error("{0}")]
    Load(#[from] LoadErrors),
}

impl From<rusqlite::Error> for RulesError {
    fn from(e: rusqlite::Error) -> Self {
        RulesError::Store(StoreError::Sqlite(e))
    }
}

/// Loads the configured rule set: `rules.dir`, or the bundled packs.
pub fn load_rule_set(dir: Option<&Path>) -> Result<RuleSet, LoadErrors> {
    match dir {
        Some(d) => RuleSet::load_dir(d),
        None => RuleSet::bundled(),
    }
}

/// Builds the engine from config.
pub fn engine(cfg: &RulesConfig) -> Result<Engine, LoadErrors> {
    let rules = load_rule_set(cfg.dir.as_deref())?;
    Ok(Engine::with_config(rules, engine_config(cfg)))
}

/// Engine settings from config.
pub fn engine_config(cfg: &RulesConfig) -> EngineConfig {
    let d = EngineConfig::default();
    EngineConfig {
        late_receipt: chrono::TimeDelta::from_std(cfg.late_receipt).unwrap_or(d.late_receipt),
        settle: chrono::TimeDelta::from_std(cfg.settle).unwrap_or(d.settle),
    }
}

/// Applies the config's `[[patients]]`. A patient changed at run time (CLI,
/// API) keeps those changes: config only creates patients the store does
/// not know, and updates those it created itself. Runs inside the caller's
/// transaction (one for all of them at start).
pub(crate) fn apply_config_patients(
    conn: &rusqlite::Connection,
    enrolments: &[config::PatientEnrolment],
) -> Result<(), StoreError> {
    for p in enrolments {
        let existing = patients::get(conn, &p.id)?;
        if existing.as_ref().is_some_and(|e| e.origin != "config") {
            continue;
        }
        let start = p.monitoring_start_date();
        let change = patients::PatientChange {
            care_plans: Some(p.care_plans.clone()),
            overrides: None,
            care_team: Some(p.care_team.clone()),
            time_zone: Some(p.time_zone.clone()),
            monitoring_start: Some(start),
        };
        let same = existing.as_ref().is_some_and(|e| {
            e.care_plans == p.care_plans
                && e.care_team.as_deref() == p.care_team.as_deref()
                && e.time_zone.as_deref() == p.time_zone.as_deref()
                && e.monitoring_start == start
        });
        if !same {
            patients::upsert(conn, &p.id, "config", &change)?;
        }
    }
    Ok(())
}
