//! Follow-up tasks: opened by notified alerts, claimed and completed by
//! care managers, escalated when nobody does (see [`super::escalation`]).
//!
//! One task per patient and problem: a second alert about the same
//! problem (a week's weight gain after a day's) joins the open task and
//! may raise its priority and bring its deadlines forward, never push them
//! back. The policy ([`super::policy`]) says which alerts open tasks and
//! their deadlines in the care team's calendar ([`super::calendar`]).
//!
//! A task opens in the evaluator's transaction, with the alert that opened
//! it, so a task exists exactly when its alert was notified. Lifecycle
//! changes (claim, release, done) come from the API and the CLI, each with
//! a history row naming who and when; the caller adds the audit row in the
//! same transaction.

use alerting_rules::Severity;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, Transaction};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::str::FromStr;

use super::calendar::Calendar;
use super::config::CareConfig;
use super::policy::Policy;
use crate::rules::{AlertChange, AlertHook};
use crate::store::tasks::{self, TaskRecord};
use crate::store::StoreError;

/// What a care manager records on completing a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskOutcome {
    /// Spoke with the patient.
    ReachedPatient,
    /// Advice given to the patient.
    AdviceGiven,
    /// Medication changed.
    MedicationChanged,
    /// The patient's clinician was told.
    ClinicianNotified,
    /// Sent to emergency care.
    EmergencyReferral,
    /// Tried and could not reach the patient.
    CouldNotReach,
    /// Reviewed: nothing to do.
    NoActionNeeded,
}

impl TaskOutcome {
    /// Every outcome, for help texts.
    pub const ALL: [TaskOutcome; 7] = [
        TaskOutcome::ReachedPatient,
        TaskOutcome::AdviceGiven,
        TaskOutcome::MedicationChanged,
        TaskOutcome::ClinicianNotified,
        TaskOutcome::EmergencyReferral,
        TaskOutcome::CouldNotReach,
        TaskOutcome::NoActionNeeded,
    ];

    /// As stored and sent.
    pub const fn name(self) -> &'static str {
        match self {
            TaskOutcome::ReachedPatient => "reached_patient",
            TaskOutcome::AdviceGiven => "advice_given",
            TaskOutcome::MedicationChanged => "medication_changed",
            TaskOutcome::ClinicianNotified => "clinician_notified",
            TaskOutcome::EmergencyReferral => "emergency_referral",
            TaskOutcome::CouldNotReach => "could_not_reach",
            TaskOutcome::NoActionNeeded => "no_action_needed",
        }
    }
}

impl FromStr for TaskOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TaskOutcome::ALL
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| {
                format!(
                    "`{s}` is not an outcome; one of: {}",
                    TaskOutcome::ALL.map(TaskOutcome::name).join(", ")
                )
            })
    }
}

/// Why a lifecycle change was refused.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// No such task (or not visible to the caller).
    #[error("no task `{0}`")]
    NotFound(String),
    /// The change does not fit the task's state.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The care loop's part of rule evaluation: the policy and the calendars.
#[derive(Debug, Clone)]
pub struct FollowUp {
    /// The follow-up policy.
    pub policy: Policy,
    /// `[care]`.
    pub care: CareConfig,
}

fn severity(name: &str) -> Severity {
    match name {
        "critical" => Severity::Critical,
        "urgent" => Severity::Urgent,
        "warning" => Severity::Warning,
        _ => Severity::Info,
    }
}

fn task_id(alert_id: &str, problem: &str) -> String {
    let mut h = Sha256::new();
    for p in [alert_id, problem] {
        h.update(p.as_bytes());
        h.update([0x1f]);
    }
    format!("tsk-{}", &hex::encode(h.finalize())[..24])
}

fn detail(v: serde_json::Value) -> String {
    v.to_string()
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When the escalator must look at a task next (before it is overdue):
/// its claim deadline while unclaimed, else its done deadline.
pub fn first_deadline(t: &TaskRecord) -> i64 {
    match (t.status.as_str(), t.claim_due_at) {
        ("open", Some(c)) => c.min(t.due_at),
        _ => t.due_at,
    }
}

impl AlertHook for FollowUp {
    /// Opens, joins or closes the follow-up task an alert transition
    /// calls for, inside the evaluator's transaction.
    fn on_alert(&self, tx: &Transaction<'_>, c: &AlertChange<'_>) -> Result<(), StoreError> {
        let a = c.alert;
        let sev = severity(&a.severity);
        let Some(decision) = self.policy.decide(c.care_plans, &a.rule_id, &a.pack, sev) else {
            return Ok(());
        };
        let at = c.at.timestamp_millis();
        if c.resolved {
            if !decision.rule.close_when_resolved {
                return Ok(());
            }
            for mut t in tasks::open_tasks_of_alert(tx, &a.alert_id)? {
                if t.status == "open" && tasks::all_alerts_resolved(tx, &t.task_id)? {
                    let at = at.max(t.updated_at);
                    t.status = "done".into();
                    t.done_by = Some("gateway".into());
                    t.done_at = Some(at);
                    t.outcome = Some(TaskOutcome::NoActionNeeded.name().into());
                    t.note =
                        Some("every alert of the task resolved before anyone claimed it".into());
                    t.next_check_at = None;
                    t.updated_at = at;
                    tasks::save(tx, &t)?;
                    tasks::append_history(
                        tx,
                        &t.task_id,
                        at,
                        "done",
                        None,
                        &detail(serde_json::json!({
                            "outcome": TaskOutcome::NoActionNeeded.name(),
                            "automatic": true,
                            "alert_id": a.alert_id,
                        })),
                    )?;
                }
            }
            return Ok(());
        }
        if !c.notified || !decision.rule.open {
            return Ok(());
        }
        let cal_team = self.care.team(c.care_team);
        let cal = Calendar::new(cal_team);
        let claim_due = decision
            .rule
            .claim_within
            .map(|d| cal.deadline(c.at, d).timestamp_millis());
        let due = cal
            .deadline(c.at, decision.rule.deadline)
            .timestamp_millis();
        match tasks::open_for(tx, &a.patient_id, &decision.problem)? {
            None => {
                let mut t = TaskRecord {
                    task_id: task_id(&a.alert_id, &decision.problem),
                    patient_id: a.patient_id.clone(),
                    care_team: c.care_team.map(String::from),
                    problem: decision.problem.clone(),
                    pathway: decision.pathway.name.clone(),
                    priority: a.severity.clone(),
                    status: "open".into(),
                    opened_at: at,
                    claim_due_at: claim_due,
                    due_at: due,
                    claimed_by: None,
                    claimed_at: None,
                    done_by: None,
                    done_at: None,
                    outcome: None,
                    note: None,
                    overdue_at: None,
                    escalation_tier: 0,
                    next_check_at: None,
                    updated_at: at,
                };
                t.next_check_at = Some(first_deadline(&t));
                tasks::insert(tx, &t)?;
                tasks::join_alert(tx, &t.task_id, &a.alert_id, at)?;
                tasks::append_history(
                    tx,
                    &t.task_id,
                    at,
                    "opened",
                    None,
                    &detail(serde_json::json!({
                        "alert_id": a.alert_id,
                        "rule_id": a.rule_id,
                        "severity": a.severity,
                        "policy_version": self.policy.version,
                        "claim_due_at": claim_due,
                        "due_at": due,
                    })),
                )?;
            }
            Some(mut t) => {
                let at = at.max(t.updated_at);
                let joined = tasks::join_alert(tx, &t.task_id, &a.alert_id, at)?;
                let raised = sev > severity(&t.priority);
                if !joined && !raised {
                    return Ok(());
                }
                if raised {
                    t.priority = a.severity.clone();
                    // Deadlines only come forward.
                    t.due_at = t.due_at.min(due);
                    if t.status == "open" {
                        t.claim_due_at = min_opt(t.claim_due_at, claim_due);
                    }
                    if t.overdue_at.is_none() {
                        t.next_check_at = Some(first_deadline(&t));
                    }
                }
                t.updated_at = at;
                tasks::save(tx, &t)?;
                tasks::append_history(
                    tx,
                    &t.task_id,
                    at,
                    "joined",
                    None,
                    &detail(serde_json::json!({
                        "alert_id": a.alert_id,
                        "rule_id": a.rule_id,
                        "severity": a.severity,
                        "priority_raised": raised,
                        "claim_due_at": t.claim_due_at,
                        "due_at": t.due_at,
                    })),
                )?;
            }
        }
        Ok(())
    }
}

/// A lifecycle change asked by a care manager.
#[derive(Debug, Clone)]
pub enum Change {
    /// Take the task (`assignee`: on behalf of someone else).
    Claim {
        /// Who takes it; `None`: the caller.
        assignee: Option<String>,
    },
    /// Give it back to the team.
    Release,
    /// Done, with an outcome and a note.
    Complete {
        /// What was done.
        outcome: TaskOutcome,
        /// Free text.
        note: Option<String>,
    },
}

/// Applies `change` by `actor` at `now` inside `tx`; returns the task as
/// it now stands. Claiming a task one already holds changes nothing;
/// claiming one someone else holds, or changing a done task, is refused.
pub fn change(
    tx: &Transaction<'_>,
    task_id: &str,
    actor: &str,
    change: Change,
    now: DateTime<Utc>,
) -> Result<TaskRecord, TaskError> {
    let mut t = tasks::get(tx, task_id)?.ok_or_else(|| TaskError::NotFound(task_id.into()))?;
    if t.status == "done" {
        return Err(TaskError::Conflict(format!(
            "task `{task_id}` is done ({})",
            t.outcome.as_deref().unwrap_or("no outcome")
        )));
    }
    // Times within one task never go back, whatever the clocks did.
    let at = now.timestamp_millis().max(t.updated_at);
    let (kind, extra) = match change {
        Change::Claim { assignee } => {
            let who = assignee.unwrap_or_else(|| actor.to_string());
            match t.claimed_by.as_deref() {
                Some(c) if c == who => return Ok(t),
                Some(c) => {
                    return Err(TaskError::Conflict(format!(
                        "task `{task_id}` is claimed by `{c}`: release it first"
                    )))
                }
                None => {}
            }
            let late = t.claim_due_at.is_some_and(|d| d < at);
            t.status = "claimed".into();
            t.claimed_by = Some(who.clone());
            t.claimed_at = Some(at);
            if t.overdue_at.is_none() {
                t.next_check_at = Some(first_deadline(&t));
            }
            (
                "claimed",
                serde_json::json!({ "claimed_by": who, "late": late }),
            )
        }
        Change::Release => {
            let Some(was) = t.claimed_by.take() else {
                return Err(TaskError::Conflict(format!(
                    "task `{task_id}` is not claimed"
                )));
            };
            t.status = "open".into();
            t.claimed_at = None;
            if t.overdue_at.is_none() {
                t.next_check_at = Some(first_deadline(&t));
            }
            ("released", serde_json::json!({ "was_claimed_by": was }))
        }
        Change::Complete { outcome, note } => {
            t.status = "done".into();
            t.done_by = Some(actor.to_string());
            t.done_at = Some(at);
            t.outcome = Some(outcome.name().into());
            t.note = note.clone();
            t.next_check_at = None;
            if t.claimed_by.is_none() {
                t.claimed_by = Some(actor.to_string());
                t.claimed_at = Some(at);
            }
            let late = at > t.due_at;
            (
                "done",
                serde_json::json!({ "outcome": outcome.name(), "note": note, "late": late }),
            )
        }
    };
    t.updated_at = at;
    tasks::save(tx, &t)?;
    tasks::append_history(tx, task_id, at, kind, Some(actor), &detail(extra))?;
    Ok(t)
}

/// A task with its alerts and history, as the API and CLI show it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    /// Task id.
    pub task_id: String,
    /// Patient.
    pub patient_id: String,
    /// The care team whose calendar set the deadlines.
    pub care_team: Option<String>,
    /// Problem.
    pub problem: String,
    /// Care pathway.
    pub pathway: String,
    /// Most severe alert joined.
    pub priority: String,
    /// `open` | `claimed` | `done`.
    pub status: String,
    /// Opened.
    pub opened_at: DateTime<Utc>,
    /// To be claimed by.
    pub claim_due_at: Option<DateTime<Utc>>,
    /// To be done by.
    pub due_at: DateTime<Utc>,
    /// Past a deadline, not done.
    pub overdue: bool,
    /// When a deadline was first missed.
    pub overdue_at: Option<DateTime<Utc>>,
    /// Escalation tiers reached.
    pub escalation_tier: u32,
    /// Claimed by.
    pub claimed_by: Option<String>,
    /// Claimed at.
    pub claimed_at: Option<DateTime<Utc>>,
    /// Done by.
    pub done_by: Option<String>,
    /// Done at.
    pub done_at: Option<DateTime<Utc>>,
    /// Outcome.
    pub outcome: Option<String>,
    /// Note.
    pub note: Option<String>,
    /// The alerts followed up.
    pub alert_ids: Vec<String>,
    /// Every change (detail view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<HistoryView>>,
}

/// One change of a task.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryView {
    /// When.
    pub at: DateTime<Utc>,
    /// `opened` | `joined` | `claimed` | `released` | `done` | `overdue` | `escalated`.
    pub kind: String,
    /// Who (absent: the gateway).
    pub actor: Option<String>,
    /// What (JSON).
    pub detail: serde_json::Value,
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The view of `t`; with its history when `with_history`.
pub fn view(conn: &Connection, t: TaskRecord, with_history: bool) -> Result<TaskView, StoreError> {
    let alert_ids = tasks::alerts_of(conn, &t.task_id)?;
    let history = if with_history {
        Some(
            tasks::history(conn, &t.task_id)?
                .into_iter()
                .map(|h| HistoryView {
                    at: time(h.at),
                    kind: h.kind,
                    actor: h.actor,
                    detail: serde_json::from_str(&h.detail).unwrap_or(serde_json::Value::Null),
                })
                .collect(),
        )
    } else {
        None
    };
    let now = Utc::now().timestamp_millis();
    let overdue = t.status != "done" && (t.overdue_at.is_some() || first_deadline(&t) < now);
    Ok(TaskView {
        overdue,
        task_id: t.task_id,
        patient_id: t.patient_id,
        care_team: t.care_team,
        problem: t.problem,
        pathway: t.pathway,
        priority: t.priority,
        status: t.status,
        opened_at: time(t.opened_at),
        claim_due_at: t.claim_due_at.map(time),
        due_at: time(t.due_at),
        overdue_at: t.overdue_at.map(time),
        escalation_tier: t.escalation_tier,
        claimed_by: t.claimed_by,
        claimed_at: t.claimed_at.map(time),
        done_by: t.done_by,
        done_at: t.done_at.map(time),
        outcome: t.outcome,
        note: t.note,
        alert_ids,
        history,
    })
}
