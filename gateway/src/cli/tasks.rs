//! `rpm-gateway tasks`: follow-up tasks from the command line (list, show,
//! claim, release, complete), on the store directly, each change audited
//! as the CLI's.

use anyhow::Context;
use chrono::Utc;
use clap::Subcommand;
use std::process::ExitCode;

use crate::care::tasks::{self as care_tasks, Change, TaskView};
use crate::care::{TaskError, TaskOutcome};
use crate::config::Config;
use crate::runtime;
use crate::store::audit::{self, AuditEntry};
use crate::store::tasks::{self, TaskQuery};

/// `rpm-gateway tasks ...`
#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Tasks by deadline, soonest first (open and claimed by default).
    List {
        /// Only this care team's patients.
        #[arg(long)]
        care_team: Option<String>,
        /// Only this patient.
        #[arg(long)]
        patient: Option<String>,
        /// open, claimed, done, or a comma-separated list.
        #[arg(long)]
        status: Option<String>,
        /// Only tasks past a deadline.
        #[arg(long)]
        overdue: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// JSON lines output.
        #[arg(long)]
        json: bool,
    },
    /// One task with its alerts and history.
    Show {
        /// Task id.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Take a task.
    Claim {
        /// Task id.
        id: String,
        /// Who takes it.
        #[arg(long)]
        by: String,
    },
    /// Give a claimed task back to the team.
    Release {
        /// Task id.
        id: String,
        /// Who releases it.
        #[arg(long)]
        by: String,
    },
    /// Record a task done, with its outcome.
    Complete {
        /// Task id.
        id: String,
        /// Who did it.
        #[arg(long)]
        by: String,
        /// reached_patient, advice_given, medication_changed,
        /// clinician_notified, emergency_referral, could_not_reach,
        /// no_action_needed.
        #[arg(long)]
        outcome: String,
        /// Note.
        #[arg(long)]
        note: Option<String>,
    },
}

fn line(t: &TaskView) -> String {
    let when = |d: chrono::DateTime<Utc>| d.format("%Y-%m-%dT%H:%MZ").to_string();
    format!(
        "{}  {:<8} {:<8} {:<16} patient {}  due {}{}{}",
        t.task_id,
        t.status,
        t.priority,
        t.problem,
        t.patient_id,
        when(t.due_at),
        if t.overdue { "  OVERDUE" } else { "" },
        t.claimed_by
            .as_deref()
            .map(|c| format!("  claimed by {c}"))
            .unwrap_or_default(),
    )
}

/// Runs a `tasks` command.
pub fn run(config: &Config, cmd: TasksCommand) -> anyhow::Result<ExitCode> {
    let mut store = runtime::open_store(config)?;
    let (id, by, change, action) = match cmd {
        TasksCommand::List {
            care_team,
            patient,
            status,
            overdue,
            limit,
            json,
        } => {
            let statuses = status
                .map(|s| {
                    s.split(',')
                        .map(|s| s.trim().to_string())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            if let Some(bad) = statuses
                .iter()
                .find(|s| !["open", "claimed", "done"].contains(&s.as_str()))
            {
                anyhow::bail!("--status: `{bad}` is not open, claimed or done");
            }
            let rows = tasks::list(
                store.conn(),
                &TaskQuery {
                    care_team,
                    patient_id: patient,
                    statuses,
                    overdue,
                    limit,
                    ..TaskQuery::default()
                },
            )?;
            for t in rows {
                let v = care_tasks::view(store.conn(), t, false)?;
                if json {
                    println!("{}", serde_json::to_string(&v)?);
                } else {
                    println!("{}", line(&v));
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        TasksCommand::Show { id, json } => {
            let t = tasks::get(store.conn(), &id)?.with_context(|| format!("no task `{id}`"))?;
            let v = care_tasks::view(store.conn(), t, true)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{}", line(&v));
                println!("  alerts       {}", v.alert_ids.join(", "));
                for h in v.history.iter().flatten() {
                    println!(
                        "  {}  {:<9} {}  {}",
                        h.at.format("%Y-%m-%dT%H:%M:%SZ"),
                        h.kind,
                        h.actor.as_deref().unwrap_or("gateway"),
                        h.detail
                    );
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        TasksCommand::Claim { id, by } => (id, by, Change::Claim { assignee: None }, "task.claim"),
        TasksCommand::Release { id, by } => (id, by, Change::Release, "task.release"),
        TasksCommand::Complete {
            id,
            by,
            outcome,
            note,
        } => {
            let outcome: TaskOutcome = outcome
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--outcome: {e}"))?;
            (id, by, Change::Complete { outcome, note }, "task.complete")
        }
    };
    if by.trim().is_empty() {
        anyhow::bail!("--by must name who acts");
    }
    let tx = store.transaction()?;
    let t = match care_tasks::change(&tx, &id, &by, change, Utc::now()) {
        Ok(t) => t,
        Err(TaskError::Store(e)) => return Err(e.into()),
        Err(e) => anyhow::bail!("{e}"),
    };
    audit::append(
        &tx,
        &AuditEntry::cli(action, &format!("tasks/{id}"), Some(&t.patient_id)),
    )?;
    tx.commit()?;
    println!("{}", line(&care_tasks::view(store.conn(), t, false)?));
    Ok(ExitCode::SUCCESS)
}
