//! The `rpm-gateway` command line, one file per command group. `anyhow`
//! lives only here, at the edge; the commands call the components' typed
//! functions.

#[cfg(feature = "ble")]
mod ble;
mod boxes;
mod care_time;
mod devices;
mod forward;
mod integrations;
mod quarantine;
mod questionnaires;
mod report;
mod risk;
mod rules;
mod store;
mod tasks;
mod tokens;
mod users;
mod webhooks;
mod worklist;

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
    Devices(devices::DevicesCommand),
    /// Inputs that did not become readings.
    #[command(subcommand)]
    Quarantine(quarantine::QuarantineCommand),
    /// API tokens (bearer credentials of the HTTP API).
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// Web console users: add, list, disable, set a password.
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Rule sets: validate a directory, replay readings offline, what-if on the store.
    #[command(subcommand)]
    Rules(rules::RulesCommand),
    /// Questionnaire definitions: validate a program's own, list the bundled ones.
    #[command(subcommand)]
    Questionnaires(questionnaires::QuestionnairesCommand),
    /// Patients: care-plan enrolment, rule overrides, care team.
    #[command(subcommand)]
    Patients(rules::PatientsCommand),
    /// Alerts: list, show, acknowledge, resolve; the alert-burden report.
    #[command(subcommand)]
    Alerts(rules::AlertsCommand),
    /// Follow-up tasks: list, show, claim, release, complete.
    #[command(subcommand)]
    Tasks(tasks::TasksCommand),
    /// The care-time log: minutes spent on a patient (never edited; corrections supersede).
    #[command(subcommand)]
    CareTime(care_time::CareTimeCommand),
    /// Program reports: the RPM report (data days, care minutes, CPT codes supported).
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// Risk tiers: a patient's tier, its reasons and history.
    #[command(subcommand)]
    Risk(risk::RiskCommand),
    /// The care team's patients ranked by who needs attention now, each with why.
    Worklist(worklist::WorklistArgs),
    /// Webhook endpoints, deliveries, dead letters and re-drive.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// A webhook receiver that verifies signatures and prints alerts (for integrators; can rehearse outages).
    WebhookReceiver(webhooks::ReceiverArgs),
    /// The store itself: status, encryption at rest, key rotation, read-only queries.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Forwarding (InfluxDB, the hub, the FHIR push) and the store's disk; the FHIR push's key.
    #[command(subcommand)]
    Forward(forward::ForwardCommand),
    /// The home boxes that push to this hub: last contact, backlog, clock offset, BLE, silent.
    Boxes(boxes::BoxesArgs),
    /// Vendor-cloud integrations and their link health (deliveries per day, refusals, staleness).
    Integrations(integrations::IntegrationsArgs),
    /// Bluetooth devices: find, pair (bond) and forget (installers).
    #[cfg(feature = "ble")]
    #[command(subcommand)]
    Ble(ble::BleCommand),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    crate::tls::install_crypto_provider();
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
            return rules::rules(cmd);
        }
    }
    if let Command::Questionnaires(cmd) = cli.command {
        return questionnaires::run(cmd);
    }
    if let Command::WebhookReceiver(args) = &cli.command {
        webhooks::run_receiver(args)?;
        return Ok(ExitCode::SUCCESS);
    }
    let config = match load(&cli) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    match cli.command {
        Command::Run => {
            crate::telemetry::init(&config.log);
            rt()?.block_on(async { runtime::run(config, runtime::shutdown_signal()).await })?;
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
        Command::Devices(cmd) => devices::run(&config, cmd)?,
        #[cfg(feature = "ble")]
        Command::Ble(cmd) => ble::run(&config, cmd)?,
        Command::Tokens(cmd) => {
            let store = runtime::open_store(&config)?;
            tokens::run(&store, cmd)?;
        }
        Command::Users(cmd) => {
            let store = runtime::open_store(&config)?;
            users::run(&store, cmd)?;
        }
        Command::Rules(cmd) => return rules::rules_on_store(&config, cmd),
        Command::Patients(cmd) => return rules::patients_cmd(&config, cmd),
        Command::Alerts(cmd) => return rules::alerts_cmd(&config, cmd),
        Command::Tasks(cmd) => return tasks::run(&config, cmd),
        Command::Risk(cmd) => return risk::run(&config, cmd),
        Command::Worklist(args) => return worklist::run(&config, args),
        Command::Webhooks(cmd) => webhooks::webhooks(&config, cmd)?,
        Command::CareTime(cmd) => care_time::run(&config, cmd)?,
        Command::Report(cmd) => report::run(&config, cmd)?,
        Command::Store(cmd) => return store::store(&config, cmd),
        Command::WebhookReceiver(_) | Command::Questionnaires(_) => {}
        Command::Forward(cmd) => forward::run(&config, cmd)?,
        Command::Boxes(args) => boxes::run(&config, args)?,
        Command::Integrations(args) => integrations::run(&config, args)?,
        Command::Quarantine(cmd) => quarantine::run(&config, cmd)?,
    }
    Ok(ExitCode::SUCCESS)
}
