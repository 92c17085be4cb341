//! `rpm-gateway forward`: the forwarders' state (InfluxDB, the program hub,
//! the FHIR push), and the FHIR push's client key.

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
    /// Makes the FHIR push's private key (`[forward.fhir.auth] key_file`,
    /// owner-only) and prints its JWKS; never overwrites a key.
    FhirKey,
    /// Prints the public JWKS of the FHIR push's key, to register with the EHR.
    FhirJwks,
}

/// The SMART key file of `[forward.fhir.auth]`.
fn key_file(config: &Config) -> anyhow::Result<&std::path::Path> {
    match config.forward.fhir.as_ref().map(|f| &f.auth) {
        Some(crate::forward::fhir::config::AuthConfig::Smart { key_file, .. }) => Ok(key_file),
        _ => anyhow::bail!("[forward.fhir.auth] is not kind = \"smart\": no key to make or print"),
    }
}

/// Runs a `forward` command.
pub fn run(config: &Config, cmd: ForwardCommand) -> anyhow::Result<()> {
    use crate::forward::fhir::auth::ClientKey;
    let json = match cmd {
        ForwardCommand::Status { json } => json,
        ForwardCommand::FhirKey => {
            let path = key_file(config)?;
            let key = ClientKey::generate(path)?;
            eprintln!(
                "wrote {} (owner-only); register this JWKS with the EHR:",
                path.display()
            );
            println!("{}", serde_json::to_string_pretty(&key.jwks())?);
            return Ok(());
        }
        ForwardCommand::FhirJwks => {
            let key = ClientKey::load(key_file(config)?)?;
            println!("{}", serde_json::to_string_pretty(&key.jwks())?);
            return Ok(());
        }
    };
    let store = runtime::open_store(config)?;
    let s = crate::forward::status::status(&store, &config.forward, &config.retention)?;
    let fhir = match config.forward.fhir {
        Some(_) => Some(crate::forward::fhir::push::status(&store)?),
        None => None,
    };
    if json {
        let mut v = serde_json::to_value(&s)?;
        v["fhir"] = serde_json::to_value(&fhir)?;
        println!("{v}");
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
        if let Some(f) = &fhir {
            println!(
                "fhir push: readings cursor {} of {}; backlog {} reading(s), {} special value(s), {} alert change(s), {} task change(s); {} refused record(s) in quarantine",
                f.cursor, s.newest_seq, f.backlog, f.absent_backlog, f.alerts_backlog, f.tasks_backlog, f.rejected
            );
        }
    }
    Ok(())
}
