//! `rpm-gateway devices`: assign, unassign and list devices.

use clap::Subcommand;

use crate::config::Config;
use crate::runtime;

/// `devices` subcommands.
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Assign a device to a patient; its quarantined readings are re-processed.
    Assign {
        /// Device id.
        device: String,
        /// Patient id.
        patient: String,
    },
    /// Unassign a device; its later readings are quarantined until assigned again.
    Unassign {
        /// Device id.
        device: String,
    },
    /// List devices.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `devices` command.
pub fn run(config: &Config, cmd: DevicesCommand) -> anyhow::Result<()> {
    let mut store = runtime::open_store(config)?;
    if let DevicesCommand::Assign { device, .. } | DevicesCommand::Unassign { device } = &cmd {
        if crate::store::share::is_hub_owned_device(store.conn(), device)? {
            anyhow::bail!("device `{device}`: the program hub owns its assignment (this gateway is a home box applying the hub's share); change it at the hub");
        }
    }
    match cmd {
        DevicesCommand::Assign { device, patient } => {
            let pipeline = runtime::pipeline(config, Default::default())?;
            let r = store.assign_device(&device, &patient, "cli", |q| pipeline.reprocess(q))?;
            println!(
                "assigned {device} to {patient}; re-processed {} quarantined reading(s), {} still refused",
                r.recovered, r.still_refused
            );
        }
        DevicesCommand::Unassign { device } => {
            if store.unassign_device(&device)? {
                println!("unassigned {device}");
            } else {
                anyhow::bail!("no device `{device}` in the registry");
            }
        }
        DevicesCommand::List { json } => {
            for d in store.devices()? {
                if json {
                    println!("{}", serde_json::to_string(&d)?);
                } else {
                    let seen = d
                        .last_seen_at
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string());
                    println!(
                        "{:<24} {:<20} {:<7} last seen {}{}{}",
                        d.device_id,
                        d.patient_id.as_deref().unwrap_or("(unassigned)"),
                        d.origin,
                        seen.as_deref().unwrap_or("never"),
                        d.connection
                            .as_deref()
                            .map(|c| format!(", {}", c.replace('_', " ")))
                            .unwrap_or_default(),
                        if d.bonded { ", bonded" } else { "" }
                    );
                }
            }
        }
    }
    Ok(())
}
