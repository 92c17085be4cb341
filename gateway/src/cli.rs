//! The `rpm-gateway` command line. `anyhow` lives only here, at the edge.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Config;
use crate::runtime;

/// Remote patient monitoring gateway: device readings in, durable store, alerts out.
#[derive(Debug, Parser)]
#[command(name = "rpm-gateway", version, about)]
pub struct Cli {
    /// Configuration file (TOML). Without one, documented defaults apply.
    #[arg(short, long, global = true, env = "RPM_GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway until SIGINT/SIGTERM.
    Run,
    /// Validate the configuration and the device profiles, then exit.
    CheckConfig,
    /// Run a self-contained demo: embedded broker, temporary store, simulated patients.
    #[cfg(feature = "embedded-broker")]
    Demo(crate::demo::DemoArgs),
    /// The device registry: which patient each device belongs to.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Inputs that did not become readings.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// API tokens (bearer credentials of the HTTP API).
    #[command(subcommand)]
    Tokens(crate::api::tokens_cli::TokensCommand),
    /// Rule sets: validate a directory, replay readings offline, what-if on the store.
    #[command(subcommand)]
    Rules(crate::rules::cli::RulesCommand),
    /// Patients: care-plan enrolment, rule overrides, care team.
    #[command(subcommand)]
    Patients(crate::rules::cli::PatientsCommand),
    /// Alerts: list, show, acknowledge, resolve; the alert-burden report.
    #[command(subcommand)]
    Alerts(crate::rules::cli::AlertsCommand),
    /// Webhook endpoints, deliveries, dead letters and re-drive.
    #[command(subcommand)]
    Webhooks(crate::delivery::cli::WebhooksCommand),
    /// A webhook receiver that verifies signatures and prints alerts (for integrators; can rehearse outages).
    WebhookReceiver(crate::delivery::cli::ReceiverArgs),
    /// The store itself: status, encryption at rest, key rotation, read-only queries.
    #[command(subcommand)]
    Store(crate::store::cli::StoreCommand),
    /// Forwarding to InfluxDB and the store's disk.
    #[command(subcommand)]
    Forward(ForwardCommand),
    /// Bluetooth devices: find, pair (bond) and forget (installers).
    #[cfg(feature = "ble")]
    #[command(subcommand)]
    Ble(BleCommand),
}

/// `ble` subcommands.
#[cfg(feature = "ble")]
#[derive(Debug, Subcommand)]
pub enum BleCommand {
    /// List nearby health devices: address, name, services, signal, paired, registered.
    Scan {
        /// How long to listen.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// JSON lines output.
        #[arg(long)]
        json: bool,
    },
    /// Pair (bond) with a device in pairing mode, trust it, record its
    /// Device Information in the registry, and optionally assign it.
    Pair {
        /// Bluetooth address (AA:BB:CC:DD:EE:FF).
        address: String,
        /// The 6-digit passkey the device shows (passkey entry), or the
        /// number to confirm (numeric comparison).
        #[arg(long)]
        passkey: Option<u32>,
        /// Assign the device to this patient (its quarantined readings are re-processed).
        #[arg(long)]
        patient: Option<String>,
    },
    /// Remove a device's bond (BlueZ forgets it; pair it again to use it).
    Forget {
        /// Bluetooth address.
        address: String,
    },
}

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

/// Entry point of the binary.
pub fn main() -> ExitCode {
    crate::config::install_crypto_provider();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load(cli: &Cli) -> Result<Config, ExitCode> {
    let path = cli.config.clone().or_else(|| {
        let default = PathBuf::from("gateway.toml");
        default.exists().then_some(default)
    });
    let config = runtime::load_config(path.as_deref()).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })?;
    crate::store::configure(config.store.key_file.as_deref(), config.store.encryption).map_err(
        |e| {
            eprintln!("{e}");
            ExitCode::from(2)
        },
    )?;
    Ok(config)
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
    };
    #[cfg(feature = "embedded-broker")]
    if let Command::Demo(args) = &cli.command {
        crate::telemetry::init(&crate::config::LogConfig {
            level: "warn,rumqttd=off".into(),
            ..Default::default()
        });
        rt()?.block_on(crate::demo::run(args.clone()))?;
        return Ok(ExitCode::SUCCESS);
    }
    if matches!(&cli.command, Command::Rules(c) if !c.needs_store()) {
        if let Command::Rules(cmd) = cli.command {
            return crate::rules::cli::rules(cmd);
        }
    }
    if let Command::WebhookReceiver(args) = &cli.command {
        crate::delivery::cli::run_receiver(args)?;
        return Ok(ExitCode::SUCCESS);
    }
    let config = match load(&cli) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    match cli.command {
        Command::Run => {
            crate::telemetry::init(&config.log);
            rt()?.block_on(runtime::run(config, runtime::shutdown_signal()))?;
        }
        Command::CheckConfig => {
            let profiles = match config.profile_set() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            println!(
                "configuration OK: {} device profile(s), {} configured device(s), {} configured patient(s), store {}{}",
                profiles.len(),
                config.devices.len(),
                config.patients.len(),
                config.store.path.display(),
                if config.store.encryption {
                    " (encrypted at rest)"
                } else {
                    ""
                }
            );
        }
        #[cfg(feature = "embedded-broker")]
        Command::Demo(_) => {}
        Command::Devices(cmd) => devices(&config, cmd)?,
        #[cfg(feature = "ble")]
        Command::Ble(cmd) => ble(&config, cmd)?,
        Command::Tokens(cmd) => {
            let store = runtime::open_store(&config)?;
            crate::api::tokens_cli::run(&store, cmd)?;
        }
        Command::Rules(cmd) => return crate::rules::cli::rules_on_store(&config, cmd),
        Command::Patients(cmd) => return crate::rules::cli::patients_cmd(&config, cmd),
        Command::Alerts(cmd) => return crate::rules::cli::alerts_cmd(&config, cmd),
        Command::Webhooks(cmd) => crate::delivery::cli::webhooks(&config, cmd)?,
        Command::Store(cmd) => return crate::store::cli::store(&config, cmd),
        Command::WebhookReceiver(_) => {}
        Command::Forward(ForwardCommand::Status { json }) => {
            let store = runtime::open_store(&config)?;
            let s = crate::forward::status::status(&store, &config)?;
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
            }
        }
        Command::Quarantine(QuarantineCommand::List { json, limit }) => {
            let store = runtime::open_store(&config)?;
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
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn devices(config: &Config, cmd: DevicesCommand) -> anyhow::Result<()> {
    let mut store = runtime::open_store(config)?;
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

#[cfg(feature = "ble")]
fn ble(config: &Config, cmd: BleCommand) -> anyhow::Result<()> {
    use crate::sources::ble::pairing::{Bluez, DeviceInformation};
    use device_profiles::gatt::device::normalize_address;
    let adapter = config.sources.ble.as_ref().and_then(|b| b.adapter.clone());
    let address = |a: &str| {
        normalize_address(a)
            .ok_or_else(|| anyhow::anyhow!("`{a}` is not a Bluetooth address (AA:BB:CC:DD:EE:FF)"))
    };
    match cmd {
        BleCommand::Scan { seconds, json } => {
            let store = runtime::open_store(config)?;
            let known: std::collections::HashSet<String> =
                store.devices()?.into_iter().map(|d| d.device_id).collect();
            let bluez = Bluez::open(adapter.as_deref())?;
            eprintln!("scanning for {seconds} s ...");
            let found = bluez.scan(seconds, |a| known.contains(a))?;
            if found.is_empty() {
                eprintln!("no health device found: wake the device (take a measurement, or press its Bluetooth button) and scan again");
            }
            for d in found {
                let registered = known.contains(&d.address);
                if json {
                    let mut v = serde_json::to_value(&d)?;
                    v["registered"] = serde_json::Value::Bool(registered);
                    println!("{v}");
                } else {
                    println!(
                        "{}  {:<20} {:<24} {:>5}  {:<6} {}",
                        d.address,
                        d.name.as_deref().unwrap_or("(no name)"),
                        d.services.join(","),
                        d.rssi.map(|r| format!("{r}dBm")).unwrap_or_default(),
                        if d.paired { "paired" } else { "" },
                        if registered { "registered" } else { "new" }
                    );
                }
            }
        }
        BleCommand::Pair {
            address: a,
            passkey,
            patient,
        } => {
            let a = address(&a)?;
            let bluez = Bluez::open(adapter.as_deref())?;
            let info = bluez.pair(&a, passkey)?;
            let mut store = runtime::open_store(config)?;
            store.set_bonded(&a, true, &info, "cli")?;
            let describe = [
                info.manufacturer.as_deref(),
                info.model.as_deref(),
                info.serial_number.as_deref().map(|s| s.trim()),
                info.firmware.as_deref(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
            println!(
                "paired and trusted {a}{}",
                if describe.is_empty() {
                    String::new()
                } else {
                    format!(" ({describe})")
                }
            );
            if let Some(p) = patient {
                let pipeline = runtime::pipeline(config, Default::default())?;
                let r = store.assign_device(&a, &p, "cli", |q| pipeline.reprocess(q))?;
                println!(
                    "assigned {a} to {p}; re-processed {} quarantined reading(s), {} still refused",
                    r.recovered, r.still_refused
                );
            }
            println!("the device now reconnects to the gateway by itself: take a measurement and check `rpm-gateway devices list`");
        }
        BleCommand::Forget { address: a } => {
            let a = address(&a)?;
            let bluez = Bluez::open(adapter.as_deref())?;
            let removed = bluez.forget(&a)?;
            let mut store = runtime::open_store(config)?;
            if store.device(&a)?.is_some() {
                store.set_bonded(&a, false, &DeviceInformation::default(), "cli")?;
            }
            if removed {
                println!("forgot {a}: pair it again to use it");
            } else {
                println!("{a} was not known to bluetooth");
            }
        }
    }
    Ok(())
}
