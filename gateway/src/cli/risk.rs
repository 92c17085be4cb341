//! `rpm-gateway risk show --patient P`: a patient's risk tier, the tier
//! rule and facts behind it, and its changes. Every read is audited
//! (actor `cli`), like the API's.

use clap::Subcommand;
use std::process::ExitCode;

use crate::config::Config;
use crate::store::audit::{append, AuditEntry};
use crate::store::{patients, risk};

/// `risk` subcommands.
#[derive(Debug, Subcommand)]
pub enum RiskCommand {
    /// A patient's tier, its reasons and its history.
    Show {
        /// The patient.
        #[arg(long)]
        patient: String,
        /// JSON output (the API's shape, without the history's FHIR ids).
        #[arg(long)]
        json: bool,
    },
}

fn ms(t: i64) -> String {
    crate::store::outbox::rfc3339(chrono::DateTime::from_timestamp_millis(t).unwrap_or_default())
}

/// Runs a `risk` command.
pub fn run(config: &Config, cmd: RiskCommand) -> anyhow::Result<ExitCode> {
    let store = crate::runtime::open_store(config)?;
    let RiskCommand::Show { patient, json } = cmd;
    let conn = store.conn();
    append(
        conn,
        &AuditEntry::cli(
            "risk.show",
            &format!("patients/{patient}/risk"),
            Some(&patient),
        ),
    )?;
    if patients::get(conn, &patient)?.is_none() {
        eprintln!("no patient `{patient}`");
        return Ok(ExitCode::from(1));
    }
    let row = risk::get(conn, &patient)?;
    let history = risk::history(conn, &patient, 50)?;
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap_or_default();
    if json {
        let v = serde_json::json!({
            "patient_id": patient,
            "tier": row.as_ref().map_or("unknown", |r| r.tier.as_str()),
            "since": row.as_ref().map(|r| ms(r.since)),
            "computed_at": row.as_ref().map(|r| ms(r.computed_at)),
            "rule": row.as_ref().and_then(|r| r.rule_id.as_ref().map(|id| serde_json::json!({"id": id, "version": r.rule_version, "pack": r.pack}))),
            "reasons": row.as_ref().map(|r| parse(&r.reasons)).unwrap_or_else(|| serde_json::json!([])),
            "data_days_7": row.as_ref().map_or(0, |r| r.data_days_7),
            "data_days_30": row.as_ref().map_or(0, |r| r.data_days_30),
            "history": history.iter().map(|c| serde_json::json!({
                "at": ms(c.at), "from_tier": c.from_tier, "tier": c.tier,
                "rule": c.rule_id, "rule_version": c.rule_version, "reasons": parse(&c.reasons),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    match &row {
        None => println!("{patient}: unknown (not computed yet)"),
        Some(r) => {
            println!(
                "{patient}: {} since {} (computed {}){}",
                r.tier,
                ms(r.since),
                ms(r.computed_at),
                r.rule_id
                    .as_ref()
                    .map(|id| format!(" by {id} v{}", r.rule_version.unwrap_or_default()))
                    .unwrap_or_default()
            );
            for reason in parse(&r.reasons).as_array().into_iter().flatten() {
                let mut line = format!("  - {}", reason["text"].as_str().unwrap_or_default());
                for (key, label) in [("alert_ids", "alerts"), ("task_ids", "tasks")] {
                    if let Some(ids) = reason[key].as_array().filter(|a| !a.is_empty()) {
                        let ids: Vec<&str> = ids.iter().filter_map(|v| v.as_str()).collect();
                        line.push_str(&format!(" [{label}: {}]", ids.join(", ")));
                    }
                }
                println!("{line}");
            }
            println!(
                "  data days: {} of the last 7, {} of the last 30",
                r.data_days_7, r.data_days_30
            );
        }
    }
    if !history.is_empty() {
        println!("history:");
        for c in &history {
            println!(
                "  {} {} -> {}{}",
                ms(c.at),
                c.from_tier.as_deref().unwrap_or("(none)"),
                c.tier,
                c.rule_id
                    .as_ref()
                    .map(|id| format!(" ({id})"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
