//! `rpm-gateway forward`: the forwarders' state (InfluxDB, the program hub).

use clap::Subcommand;

use crate::config::Config;
use crate::runtime;

/// `forward` subcommands.
#[derive(Debug, Subcommand)]
pub enum ForwardCommand {
    /// Cursor, backlog, refused points and free disk.
    Status {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `forward` command.
pub fn run(config: &Config, cmd: ForwardCommand) -> anyhow::Result<()> {
    let ForwardCommand::Status { json } = cmd;
    let store = runtime::open_store(config)?;
    let s = crate::forward::status::status(&store, &config.forward, &config.retention)?;
    if json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!(
            "influxdb forwarding {}; cursor {} of {}; backlog {} reading(s); {} refused point(s) in quarantine; disk {} free{}",
            if s.enabled { "on" } else { "off" },
            s.cursor,
            s.newest_seq,
            s.backlog,
            s.rejected,
            s.disk_free_bytes
                .map(|b| format!("{} MiB", b / (1024 * 1024)))
                .unwrap_or_else(|| "unknown".into()),
            if s.disk_low { " (LOW)" } else { "" }
        );
        if let Some(u) = &s.upstream {
            println!(
                "upstream to the hub: cursor {} of {}; backlog {} reading(s); last taken {}",
                u.cursor,
                s.newest_seq,
                u.backlog,
                u.cursor_updated_at
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_else(|| "never".into())
            );
            println!(
                "share from the hub: {}; quarantine cursor {}",
                match (&u.share_version, u.share_applied_at) {
                    (Some(v), Some(at)) => format!(
                        "version {v} applied {}",
                        chrono::DateTime::from_timestamp_millis(at)
                            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                            .unwrap_or_default()
                    ),
                    _ => "never applied".into(),
                },
                u.quarantine_cursor
            );
        }
    }
    Ok(())
}
