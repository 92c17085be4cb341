//! `rpm-gateway quarantine`: input that could not be a reading, with its reason.

use clap::Subcommand;

use crate::config::Config;
use crate::runtime;

/// `quarantine` subcommands.
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// List quarantined inputs with their reasons.
    List {
        /// JSON lines output.
        #[arg(long)]
        json: bool,
        /// At most this many rows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// Runs a `quarantine` command.
pub fn run(config: &Config, cmd: QuarantineCommand) -> anyhow::Result<()> {
    let QuarantineCommand::List { json, limit } = cmd;
    let store = runtime::open_store(config)?;
    let rows = store.quarantine_after(0, limit)?;
    for r in rows {
        if json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "#{:<5} {} {:<5} {:<18} {:<11} {} — {}",
                r.id,
                r.received_at.format("%Y-%m-%d %H:%M:%S"),
                r.source,
                r.reason,
                r.status,
                r.origin,
                r.detail
            );
        }
    }
    Ok(())
}
