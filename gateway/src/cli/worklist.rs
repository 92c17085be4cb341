//! `rpm-gateway worklist [--care-team T] [--json]`: the care team's
//! patients ranked by who needs attention now, each with why (see
//! `care/worklist.rs` for the order). The read is audited (actor `cli`).

use chrono::Utc;
use clap::Args;
use std::process::ExitCode;

use crate::care::worklist;
use crate::config::Config;
use crate::store::audit::{append, AuditEntry};

/// `worklist` arguments.
#[derive(Debug, Args)]
pub struct WorklistArgs {
    /// Only this care team (default: every patient).
    #[arg(long)]
    care_team: Option<String>,
    /// At most this many patients.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// One JSON object a line.
    #[arg(long)]
    json: bool,
}

/// Runs `worklist`.
pub fn run(config: &Config, args: WorklistArgs) -> anyhow::Result<ExitCode> {
    let store = crate::runtime::open_store(config)?;
    let conn = store.conn();
    append(
        conn,
        &AuditEntry::cli(
            "worklist",
            &format!(
                "worklist{}",
                args.care_team
                    .as_ref()
                    .map(|t| format!("?care_team={t}"))
                    .unwrap_or_default()
            ),
            None,
        ),
    )?;
    let teams = args.care_team.map(|t| vec![t]);
    let rows = worklist::page(
        conn,
        &config.care.worklist,
        teams.as_deref(),
        Utc::now(),
        None,
        args.limit.max(1),
    )?;
    for (i, r) in rows.iter().enumerate() {
        if args.json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            println!(
                "{:>3}. {} [{}{}] {}",
                i + 1,
                r.patient_id,
                r.tier,
                r.care_team
                    .as_ref()
                    .map(|t| format!(", {t}"))
                    .unwrap_or_default(),
                r.reasons.join("; ")
            );
        }
    }
    if rows.is_empty() && !args.json {
        println!("no patients");
    }
    Ok(ExitCode::SUCCESS)
}
