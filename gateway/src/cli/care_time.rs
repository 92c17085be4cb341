//! `rpm-gateway care-time log|list`: the care-time log from a terminal.
//!
//! The same rules as the API ([`crate::care::time_log`]): an entry is
//! never edited, `--corrects` supersedes an earlier one. The actor is
//! `cli`; every write and every read is audited.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Subcommand;

use crate::care::time_log::{self, NewEntry};
use crate::config::Config;
use crate::runtime;
use crate::store::audit::{self, AuditEntry};

/// `care-time` subcommands.
#[derive(Debug, Subcommand)]
pub enum CareTimeCommand {
    /// Log minutes spent on a patient (never edited; correct with --corrects).
    Log {
        /// Patient id.
        #[arg(long)]
        patient: String,
        /// Duration in whole minutes (or --start and --stop).
        #[arg(long)]
        minutes: Option<u32>,
        /// Start of the work, RFC 3339 (with --stop).
        #[arg(long)]
        start: Option<String>,
        /// End of the work, RFC 3339 (with --start).
        #[arg(long)]
        stop: Option<String>,
        /// When the work was done, RFC 3339 (with --minutes; default now).
        #[arg(long)]
        at: Option<String>,
        /// data_review, patient_call, care_coordination, medication_management, education, other.
        #[arg(long)]
        activity: String,
        /// It included real-time interactive communication with the patient (at least two-way audio).
        #[arg(long)]
        interactive: bool,
        /// Free text.
        #[arg(long)]
        note: Option<String>,
        /// The entry this one corrects (and supersedes); 0 minutes voids it.
        #[arg(long)]
        corrects: Option<String>,
        /// Your id for the entry: running the command again with it logs nothing twice.
        #[arg(long)]
        entry_id: Option<String>,
    },
    /// A patient's entries, newest first (superseded ones marked).
    List {
        /// Patient id.
        #[arg(long)]
        patient: String,
        /// JSON lines.
        #[arg(long)]
        json: bool,
    },
}

fn when(flag: &str, v: Option<String>) -> anyhow::Result<Option<DateTime<Utc>>> {
    v.map(|s| {
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .with_context(|| format!("--{flag}: `{s}` is not an RFC 3339 time"))
    })
    .transpose()
}

/// Runs a `care-time` command.
pub fn run(config: &Config, cmd: CareTimeCommand) -> anyhow::Result<()> {
    let mut store = runtime::open_store(config)?;
    match cmd {
        CareTimeCommand::Log {
            patient,
            minutes,
            start,
            stop,
            at,
            activity,
            interactive,
            note,
            corrects,
            entry_id,
        } => {
            let e = NewEntry {
                entry_id,
                minutes,
                performed_at: when("at", at)?,
                started_at: when("start", start)?,
                ended_at: when("stop", stop)?,
                activity,
                interactive,
                note,
                corrects,
            };
            let tx = store.transaction()?;
            let logged = time_log::log(&tx, &patient, &e, None, "cli", 0, Utc::now())?;
            tx.commit()?;
            let en = logged.entry;
            println!(
                "{} {} {} min {}{}{}",
                if logged.created {
                    "logged"
                } else {
                    "already logged"
                },
                en.entry_id,
                en.minutes,
                en.activity,
                if en.interactive { " (interactive)" } else { "" },
                en.corrects
                    .as_deref()
                    .map(|c| format!(", supersedes {c}"))
                    .unwrap_or_default()
            );
        }
        CareTimeCommand::List { patient, json } => {
            let mut all = Vec::new();
            let mut before = None;
            loop {
                let page = time_log::list(store.conn(), &patient, before, 500)?;
                let Some(last) = page.last() else { break };
                before = Some(last.key);
                all.extend(page);
            }
            audit::append(
                store.conn(),
                &AuditEntry::cli(
                    "care_time.list",
                    &format!("patients/{patient}/care-time"),
                    Some(&patient),
                ),
            )?;
            for e in &all {
                if json {
                    println!("{}", serde_json::to_string(e)?);
                } else {
                    println!(
                        "{} {} {:>6} min {:<22} {:<11} by {}{}{}",
                        e.performed_at.format("%Y-%m-%dT%H:%M:%SZ"),
                        e.entry_id,
                        e.minutes,
                        e.activity,
                        if e.interactive { "interactive" } else { "-" },
                        e.recorded_by,
                        e.corrects
                            .as_deref()
                            .map(|c| format!(" corrects {c}"))
                            .unwrap_or_default(),
                        e.superseded_by
                            .as_deref()
                            .map(|c| format!(" SUPERSEDED by {c}"))
                            .unwrap_or_default(),
                    );
                }
            }
        }
    }
    Ok(())
}
