//! The rule stage's worker: the async loop that drives the evaluator.
//!
//! Wakes on every ingest commit (`Writer::committed`), on a one-second poll
//! (readings committed by another process, such as a CLI assignment that
//! re-processes quarantine), on the missing-data interval, and on SIGHUP.
//! On the data clock (`rules.clock = "data"`) the missing-data rules run at
//! every wake-up where the data's time moved, and once more at stop.
//! The SQLite work runs on the blocking pool; errors are logged, counted
//! and retried on the next wake-up (the cursor has not moved, so nothing is
//! skipped). Reload builds the new rule set first and swaps it in only if
//! it loads: a broken rule set is refused, the old one stays active, and
//! alert state (in the store) is untouched either way.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alerting_rules::{Engine, EngineConfig};
use tokio::sync::{mpsc, watch};

use super::evaluator::Evaluator;
use super::load_rule_set;
use crate::metrics::Metrics;

/// What the worker needs beyond the evaluator: where to reload rules from, and how often silence is judged.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Rule directory (`None`: bundled packs), re-read on reload.
    pub rules_dir: Option<PathBuf>,
    /// Engine settings.
    pub engine: EngineConfig,
    /// Missing-data evaluation interval.
    pub missing_interval: Duration,
}

/// A receiver that yields once per SIGHUP (never on platforms without it).
pub fn reload_signal() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        // A reload already pending covers this one too.
                        let _ = tx.try_send(());
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; rule reload is off"),
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// Runs the evaluator until `stop` resolves, then evaluates what is left.
pub async fn run(
    cfg: WorkerConfig,
    evaluator: Evaluator,
    mut committed: watch::Receiver<u64>,
    mut reload: mpsc::Receiver<()>,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut missing = tokio::time::interval(cfg.missing_interval.max(Duration::from_millis(100)));
    missing.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut committed_open = true;
    let mut ev = Some(evaluator);
    tracing::info!(
        rules = ev.as_ref().map_or(0, |e| e.engine().rules().rules().len()),
        "rule evaluation started"
    );
    loop {
        let mut do_missing = false;
        tokio::select! {
            _ = &mut stop => break,
            r = committed.changed(), if committed_open => {
                if r.is_err() {
                    committed_open = false;
                }
            }
            _ = poll.tick() => {}
            _ = missing.tick() => do_missing = true,
            Some(()) = reload.recv() => {
                if let Some(e) = ev.as_mut() {
                    reload_rules(&cfg, e, &metrics).await;
                }
            }
        }
        // On the data clock silence is judged whenever the data's time
        // moved (`tick` does nothing otherwise), not on a wall-clock timer
        // that a replay outruns.
        let data_clock = ev.as_ref().is_some_and(Evaluator::uses_data_clock);
        ev = work(ev, do_missing || data_clock, &metrics).await;
        if ev.is_none() {
            return;
        }
    }
    // Readings committed before the sources stopped are evaluated now
    // rather than after the next start (either is correct: the cursor is durable).
    // On the data clock the missing-data rules are judged too: a replay
    // that ends is judged at its last reading's time, every patient's input
    // settled (nothing more will arrive).
    let last_tick = ev.as_ref().is_some_and(Evaluator::uses_data_clock);
    let ev = work(ev, false, &metrics).await;
    if last_tick {
        if let Some(mut e) = ev {
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(err) = e.final_tick() {
                    tracing::error!(error = %err, "missing-data evaluation failed at stop");
                }
            })
            .await;
        }
    }
    tracing::info!("rule evaluation stopped");
}

async fn work(
    ev: Option<Evaluator>,
    do_missing: bool,
    metrics: &Arc<Metrics>,
) -> Option<Evaluator> {
    let mut e = ev?;
    let metrics = metrics.clone();
    let joined = tokio::task::spawn_blocking(move || {
        if let Err(err) = e.catch_up() {
            metrics.rules_failure();
            tracing::error!(error = %err, "rule evaluation failed; retrying on the next wake-up");
        }
        if do_missing {
            if let Err(err) = e.tick() {
                metrics.rules_failure();
                tracing::error!(error = %err, "missing-data evaluation failed; retrying on the next tick");
            }
        }
        let _ = e.update_gauges();
        e
    })
    .await;
    match joined {
        Ok(e) => Some(e),
        Err(err) => {
            tracing::error!(error = %err, "rule evaluation task panicked; rule evaluation stopped");
            None
        }
    }
}

async fn reload_rules(cfg: &WorkerConfig, ev: &mut Evaluator, metrics: &Metrics) {
    let dir = cfg.rules_dir.clone();
    let loaded = tokio::task::spawn_blocking(move || load_rule_set(dir.as_deref())).await;
    match loaded {
        Ok(Ok(rules)) => {
            let n = rules.rules().len();
            ev.set_engine(Arc::new(Engine::with_config(rules, cfg.engine)));
            metrics.rules_reload(true);
            tracing::info!(rules = n, "rule set reloaded");
        }
        Ok(Err(errors)) => {
            metrics.rules_reload(false);
            tracing::error!(errors = %errors, "new rule set refused; the previous one stays active");
        }
        Err(err) => {
            metrics.rules_reload(false);
            tracing::error!(error = %err, "rule reload failed; the previous rule set stays active");
        }
    }
}
