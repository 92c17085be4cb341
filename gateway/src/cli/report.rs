//! `rpm-gateway report rpm`: the RPM program report of a month
//! ([`crate::care::report`]), for a terminal, as JSON or as CSV. Run
//! against the store file (read-only use, audited as `report.rpm`).

use clap::{Subcommand, ValueEnum};

use crate::care::report::{self, RpmQuery};
use crate::config::Config;
use crate::runtime;
use crate::store::audit::{self, AuditEntry};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table for a terminal.
    Table,
    /// The JSON document of `GET /api/v1/reports/rpm`.
    Json,
    /// CSV: a line per device period and per treatment month.
    Csv,
}

/// `report` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Data days, care minutes and the CPT codes they support, per patient, for a calendar month.
    Rpm {
        /// The calendar month, YYYY-MM.
        #[arg(long)]
        period: String,
        /// Only this care team.
        #[arg(long)]
        care_team: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

/// Runs a `report` command.
pub fn run(config: &Config, cmd: ReportCommand) -> anyhow::Result<()> {
    match cmd {
        ReportCommand::Rpm {
            period,
            care_team,
            format,
        } => {
            let month = report::parse_month(&period)?;
            let store = runtime::open_store(config)?;
            let q = RpmQuery {
                month,
                care_team,
                scope: None,
                now: chrono::Utc::now(),
            };
            let r = report::rpm_report(store.conn(), &config.care, &q)?;
            audit::append(
                store.conn(),
                &AuditEntry::cli("report.rpm", &format!("reports/rpm/{period}"), None),
            )?;
            match format {
                Format::Table => print!("{}", report::render(&r)),
                Format::Json => println!("{}", serde_json::to_string_pretty(&r)?),
                Format::Csv => print!("{}", report::to_csv(&r)),
            }
        }
    }
    Ok(())
}
