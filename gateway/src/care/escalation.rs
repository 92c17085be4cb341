//! The escalator: notices follow-up tasks nobody claimed or completed in
//! time, and tells the next tier.
//!
//! It is driven from the store, like the rule stage: every task carries
//! `next_check_at`, the next moment something can happen to it (a
//! deadline, an escalation tier). The escalator visits the tasks whose
//! moment has passed and, per task in one transaction, records the missed
//! deadline (`task.overdue`) and each tier reached (`task.escalated`) with
//! their outbox events and the next moment to look. A crash before the
//! commit leaves the task due for the same visit; after it, the task is
//! not due any more: every event is written exactly once. The event ids
//! derive from (task, tier), so even a bug that let a visit run twice
//! would find the outbox's unique id in its way.
//!
//! Tiers count from the first deadline missed (the claim deadline of an
//! unclaimed task, or the done deadline), in the care team's calendar, and
//! follow until the task is done: a task claimed late is still expected
//! done by its deadline. After downtime every tier that fell due is
//! recorded, each with its own event, in order.

use chrono::{DateTime, Utc};
use rusqlite::Transaction;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::calendar::Calendar;
use super::tasks::{first_deadline, FollowUp};
use crate::fault::{Fault, FaultPoint};
use crate::rules::clock::Clock;
use crate::store::outbox::{self, EscalationRef, Event, EventType, TaskData, EVENT_SCHEMA};
use crate::store::tasks::{self, TaskRecord};
use crate::store::{patients, Store, StoreError};

/// Most tasks visited per transaction batch.
const BATCH: usize = 200;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Tasks that became overdue.
    pub overdue: usize,
    /// Escalation tiers reached.
    pub escalated: usize,
}

/// The escalator over its own store connection.
pub struct Escalator {
    store: Store,
    follow_up: Arc<FollowUp>,
    clock: Clock,
    delivery: Option<Arc<tokio::sync::Notify>>,
    fault: Fault,
}

impl Escalator {
    /// Opens its own connection to the store at `path`.
    pub fn open(path: &Path, follow_up: Arc<FollowUp>, clock: Clock) -> Result<Self, StoreError> {
        Ok(Escalator {
            store: Store::open(path)?,
            follow_up,
            clock,
            delivery: None,
            fault: Fault::from_env(),
        })
    }

    /// Wakes the webhook dispatcher after events are committed.
    pub fn with_delivery_waker(mut self, waker: Arc<tokio::sync::Notify>) -> Self {
        self.delivery = Some(waker);
        self
    }

    /// Visits every task due by now.
    pub fn pass(&mut self) -> Result<Pass, StoreError> {
        let Some(now) = self.clock.now(self.store.conn())? else {
            return Ok(Pass::default());
        };
        let mut total = Pass::default();
        loop {
            let due = tasks::due_for_check(self.store.conn(), now.timestamp_millis(), BATCH)?;
            if due.is_empty() {
                break;
            }
            let tx = self.store.transaction()?;
            for t in &due {
                let p = visit(&tx, &self.follow_up, t, now)?;
                total.overdue += p.overdue;
                total.escalated += p.escalated;
            }
            if total != Pass::default() {
                self.fault.abort_at(FaultPoint::BeforeEscalationCommit);
            }
            tx.commit()?;
            if total != Pass::default() {
                self.fault.abort_at(FaultPoint::AfterEscalationCommit);
            }
            if due.len() < BATCH {
                break;
            }
        }
        if total != Pass::default() {
            if let Some(w) = &self.delivery {
                w.notify_one();
            }
        }
        Ok(total)
    }
}

/// One task's visit at `now`: overdue, tiers, next moment.
pub fn visit(
    tx: &Transaction<'_>,
    follow_up: &FollowUp,
    task: &TaskRecord,
    now: DateTime<Utc>,
) -> Result<Pass, StoreError> {
    let mut pass = Pass::default();
    // The task as it stands in this transaction (a care manager may have
    // just claimed or completed it).
    let Some(mut t) = tasks::get(tx, &task.task_id)? else {
        return Ok(pass);
    };
    if t.status == "done" {
        if t.next_check_at.is_some() {
            t.next_check_at = None;
            tasks::save(tx, &t)?;
        }
        return Ok(pass);
    }
    let now_ms = now.timestamp_millis();
    let team = follow_up.care.team(t.care_team.as_deref());
    let cal = Calendar::new(team);
    let tiers = follow_up
        .policy
        .pathway_named(&t.pathway)
        .or_else(|| follow_up.policy.pathway(&[]))
        .map(|p| p.escalation.clone())
        .unwrap_or_default();
    let patient = patients::get(tx, &t.patient_id)?;
    let care_plans = patient
        .as_ref()
        .map(|p| p.care_plans.clone())
        .unwrap_or_default();
    let at = now_ms.max(t.updated_at);
    if t.overdue_at.is_none() {
        let deadline = first_deadline(&t);
        if deadline > now_ms {
            t.next_check_at = Some(deadline);
            tasks::save(tx, &t)?;
            return Ok(pass);
        }
        let missed = missed(&t, deadline);
        t.overdue_at = Some(deadline);
        t.updated_at = at;
        tasks::append_history(
            tx,
            &t.task_id,
            at,
            "overdue",
            None,
            &serde_json::json!({ "missed": missed, "deadline": deadline }).to_string(),
        )?;
        emit(
            tx,
            &t,
            &care_plans,
            EventType::TaskOverdue,
            None,
            at,
            missed,
        )?;
        pass.overdue += 1;
    }
    let overdue_at = DateTime::from_timestamp_millis(t.overdue_at.unwrap_or(now_ms)).unwrap_or(now);
    let missed = missed(&t, t.overdue_at.unwrap_or(now_ms));
    t.next_check_at = None;
    while let Some(tier) = tiers.get(t.escalation_tier as usize) {
        let due = cal.deadline(overdue_at, tier.after).timestamp_millis();
        if due > now_ms {
            t.next_check_at = Some(due);
            break;
        }
        t.escalation_tier += 1;
        t.updated_at = at;
        let reached = EscalationRef {
            tier: t.escalation_tier,
            to: tier.to.clone(),
        };
        tasks::append_history(
            tx,
            &t.task_id,
            at,
            "escalated",
            None,
            &serde_json::json!({ "tier": reached.tier, "to": reached.to, "due": due }).to_string(),
        )?;
        emit(
            tx,
            &t,
            &care_plans,
            EventType::TaskEscalated,
            Some(reached),
            at,
            missed,
        )?;
        pass.escalated += 1;
    }
    tasks::save(tx, &t)?;
    Ok(pass)
}

/// Which deadline `deadline` was: the claim deadline of a task still
/// unclaimed then, or the done deadline.
fn missed(t: &TaskRecord, deadline: i64) -> &'static str {
    match t.claim_due_at {
        Some(c) if c == deadline && t.claimed_at.is_none_or(|at| at > c) => "claim",
        _ => "done",
    }
}

fn emit(
    tx: &Transaction<'_>,
    t: &TaskRecord,
    care_plans: &[String],
    event_type: EventType,
    escalation: Option<EscalationRef>,
    at: i64,
    missed: &str,
) -> Result<(), StoreError> {
    let time = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
    let tier = escalation.as_ref().map_or(0, |e| e.tier);
    let data = TaskData {
        task_id: t.task_id.clone(),
        patient_id: t.patient_id.clone(),
        care_team: t.care_team.clone(),
        care_plans: care_plans.to_vec(),
        problem: t.problem.clone(),
        pathway: t.pathway.clone(),
        priority: t.priority.clone(),
        status: t.status.clone(),
        missed: missed.to_string(),
        opened_at: time(t.opened_at),
        claim_due_at: t.claim_due_at.map(time),
        due_at: time(t.due_at),
        claimed_by: t.claimed_by.clone(),
        overdue_at: t.overdue_at.map(time),
        escalation,
        alert_ids: tasks::alerts_of(tx, &t.task_id)?,
        link: format!("/api/v1/tasks/{}", t.task_id),
    };
    let event = Event {
        schema: EVENT_SCHEMA.to_string(),
        id: outbox::event_id(&[&t.task_id, event_type.name(), &tier.to_string()]),
        event_type,
        timestamp: time(at),
        data,
    };
    outbox::enqueue(tx, &event, None, Some(&t.patient_id), Some(&t.priority))?;
    Ok(())
}

/// Runs the escalator every `interval` (counting in `metrics`) until `stop` resolves, then once
/// more (a replay's last data time is judged too). On the data clock
/// (replays, demos, tests) days pass in seconds, so it looks every 200 ms
/// at most. Store errors are logged and the pass retried at the next tick
/// (nothing was committed, so nothing is skipped).
pub async fn run(
    mut escalator: Escalator,
    interval: Duration,
    metrics: Arc<crate::metrics::Metrics>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let interval = match escalator.clock.is_data() {
        true => interval.min(Duration::from_millis(200)),
        false => interval,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!("follow-up escalation started");
    let mut stopping = false;
    while !stopping {
        tokio::select! {
            _ = &mut stop => stopping = true,
            _ = tick.tick() => {}
        }
        let result = tokio::task::spawn_blocking(move || {
            let r = escalator.pass();
            (escalator, r)
        })
        .await;
        match result {
            Ok((e, r)) => {
                escalator = e;
                match r {
                    Ok(p) if p != Pass::default() => {
                        metrics.follow_ups_escalated(p.overdue, p.escalated);
                        tracing::info!(
                            overdue = p.overdue,
                            escalated = p.escalated,
                            "follow-up tasks past their deadlines"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => {
                        metrics.escalation_failure();
                        tracing::warn!(error = %e, "follow-up escalation pass failed; retrying")
                    }
                }
            }
            // A panic in the pass: the supervisor sees this task end.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    tracing::info!("follow-up escalation stopped");
}
