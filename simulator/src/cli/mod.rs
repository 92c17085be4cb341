//! The `rpm-sim` command line: a thin shell over the library (argument
//! parsing, printing, exit codes). `anyhow` lives only here.
//!
//! Exit codes: 0 success; 1 a check refused the input, or a run did not
//! deliver everything; 2 bad arguments or files.

#[cfg(feature = "bluez")]
mod ble;
mod check;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Virtual patients and devices for rpm-gateway: vendor conformance
/// checks, scenario runs over MQTT, HTTP or BLE, load.
#[derive(Debug, Parser)]
#[command(name = "rpm-sim", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Decode a device's payload (or GATT bytes) with the gateway's own
    /// decoders and print the canonical readings, or why they are refused.
    Check(CheckArgs),
    /// List the devices the simulator emulates and what `check` decodes.
    Devices {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the bundled scenarios and their expected alerts, or print one
    /// scenario's device registry as gateway config.
    Scenarios {
        /// Print `[[devices]]` entries for this scenario (name or file).
        #[arg(long, value_name = "SCENARIO")]
        gateway_config: Option<String>,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Play scenarios in accelerated time over MQTT, HTTP or BLE.
    Run(RunArgs),
    /// Publish from many devices at a target rate (benchmarks).
    Load(LoadArgs),
    /// Play N home boxes against a program hub at once: each pulls its
    /// share and sends the readings of its time offline upstream.
    Boxes(BoxesArgs),
    /// The BlueZ D-Bus emulator: the arguments of `rpm-bluez-emulator`
    /// (`--private-bus DIR`, `--adapter hci0`, `--device KIND,ADDRESS[,N]`).
    #[cfg(feature = "bluez")]
    #[command(disable_help_flag = true)]
    Bluez {
        /// Passed to the emulator as they are (`--help` for its usage).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `rpm-sim check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Device profile: a TOML file, or the name of a bundled profile.
    #[arg(long, requires = "payload", conflicts_with_all = ["gatt", "layout"])]
    profile: Option<String>,
    /// The payload file (`-` for stdin), exactly as the device publishes it.
    #[arg(long)]
    payload: Option<PathBuf>,
    /// The MQTT topic it is published on (an example topic of the profile by default).
    #[arg(long)]
    topic: Option<String>,
    /// GATT characteristic value bytes, hex (`"1E 80 00 50 00"`).
    #[arg(long, value_name = "HEX")]
    gatt: Option<String>,
    /// The characteristic's 16-bit UUID (`0x2A35`).
    #[arg(
        long,
        value_name = "UUID",
        requires = "gatt",
        conflicts_with = "layout"
    )]
    characteristic: Option<String>,
    /// A vendor byte layout (TOML) to decode `--gatt` bytes with.
    #[arg(long, requires = "gatt")]
    layout: Option<PathBuf>,
    /// The time of receipt the clock checks compare with (RFC 3339; now by default).
    #[arg(long)]
    received_at: Option<chrono::DateTime<chrono::Utc>>,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `rpm-sim run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenarios: bundled names or files.
    #[arg(required_unless_present = "all")]
    scenarios: Vec<String>,
    /// Every bundled scenario, concurrently.
    #[arg(long, conflicts_with = "scenarios")]
    all: bool,
    /// MQTT broker HOST:PORT (QoS 1).
    #[arg(
        long,
        value_name = "HOST:PORT",
        required_unless_present_any = ["http", "ble"]
    )]
    mqtt: Option<String>,
    /// HTTP ingest URL (`http://HOST:PORT/api/v1/readings`).
    #[arg(long, value_name = "URL", conflicts_with = "mqtt")]
    http: Option<String>,
    /// Bearer token for HTTP ingest.
    #[arg(long, env = "RPM_SIM_HTTP_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Push as a cellular vendor cloud (`tenovi` or `telli`) in its own
    /// format to --http (the gateway's `/api/v1/integrations/NAME`); kinds
    /// the vendor does not carry are skipped.
    #[arg(
        long = "as",
        value_name = "VENDOR",
        requires = "http",
        conflicts_with = "token"
    )]
    as_vendor: Option<crate::transport::vendor::Vendor>,
    /// The vendor's secret: Tenovi's Basic password, Telli's API key, or the
    /// HMAC secret with --vendor-hmac.
    #[arg(
        long,
        env = "RPM_SIM_VENDOR_SECRET",
        hide_env_values = true,
        requires = "as_vendor"
    )]
    vendor_secret: Option<String>,
    /// Basic user name (Tenovi; default `tenovi`).
    #[arg(long, requires = "as_vendor")]
    vendor_user: Option<String>,
    /// Header of the API key (default `x-api-key`) or signature (default `x-signature`).
    #[arg(long, requires = "as_vendor")]
    vendor_header: Option<String>,
    /// Sign each push with HMAC-SHA256 of the body instead.
    #[arg(long, requires = "as_vendor")]
    vendor_hmac: bool,
    /// The gateway's API (`http://HOST:PORT`): the scenario's care team
    /// (`[[care]]`) claims and completes follow-up tasks there.
    #[arg(long, value_name = "URL")]
    care_api: Option<String>,
    /// Bearer token of the care team (admin or care_team role).
    #[arg(long, env = "RPM_SIM_CARE_TOKEN", hide_env_values = true)]
    care_token: Option<String>,
    /// Simulated seconds per wall second (10080 = a week per minute; the scenario's own by default).
    #[arg(long)]
    speed: Option<f64>,
    /// Seed (the scenario's own by default).
    #[arg(long)]
    seed: Option<u64>,
    /// Day 0: `today` (the run ends at today's midnight UTC), `file`, or a date.
    #[arg(long, default_value = "today")]
    start: crate::run::StartAt,
    /// Only the first N days.
    #[arg(long)]
    days: Option<u32>,
    /// Quirks for every device: duplicate,out-of-order,skew,burst (or all).
    #[arg(long, default_value = "")]
    quirks: String,
    /// Faulty messages: malformed,truncated,nan,unknown-unit,unknown-device,implausible,oversized (or all).
    #[arg(long, default_value = "")]
    faults: String,
    /// Write the sent-report (JSON) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Over Bluetooth LE, one scenario: its cuffs, scales and glucometers
    /// become devices of a BlueZ emulator run by this process (on
    /// DBUS_SYSTEM_BUS_ADDRESS), their readings the devices' stored records;
    /// other kinds and payload faults are skipped.
    #[arg(long, conflicts_with_all = ["mqtt", "http", "all", "faults"])]
    ble: bool,
    /// With --ble: serve a private dbus-daemon started in this directory
    /// (prints `BUS <address>` for the gateway's DBUS_SYSTEM_BUS_ADDRESS).
    #[arg(long, value_name = "DIR")]
    private_bus: Option<PathBuf>,
}

/// `rpm-sim boxes`.
#[derive(Debug, Args)]
pub struct BoxesArgs {
    /// The hub's API base, `http://HOST:PORT`.
    #[arg(long)]
    hub: String,
    /// The boxes: a file with one `NAME TOKEN DEVICE[,DEVICE]` a line (the
    /// first device a BP cuff, the second a scale).
    #[arg(long)]
    tokens: std::path::PathBuf,
    /// Play only the first N boxes of the file.
    #[arg(long)]
    boxes: Option<usize>,
    /// How long the boxes were offline (their readings span it, up to now).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    offline: std::time::Duration,
    /// Measurements per device per day.
    #[arg(long, default_value_t = 4)]
    per_day: u32,
    /// Readings per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Requests in flight at once over all boxes.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Every this many boxes, the last BP measurement is a hypertensive
    /// crisis (alerts for the hub); 0: none.
    #[arg(long, default_value_t = 0)]
    crisis_every: usize,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// `rpm-sim load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// MQTT broker HOST:PORT.
    #[arg(
        long,
        value_name = "HOST:PORT",
        required_unless_present = "print_config"
    )]
    mqtt: Option<String>,
    /// Virtual devices.
    #[arg(long, default_value_t = 1000)]
    devices: u32,
    /// Target readings per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// How long to publish (`60s`, `5m`).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,
    /// MQTT connections the devices share.
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Print the `[[devices]]` gateway config for the load devices and exit.
    #[arg(long)]
    print_config: bool,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Parses the process arguments and runs; the binary's whole `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rpm-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check(a) => check::run(a),
        Command::Devices { json } => {
            let list = crate::devices::catalogue();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", crate::devices::render(&list));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Scenarios {
            gateway_config,
            json,
        } => run::scenarios(gateway_config, json),
        #[cfg(feature = "bluez")]
        Command::Run(a) if a.ble => runtime()?.block_on(ble::run(a)),
        Command::Run(a) => runtime()?.block_on(run::run(a)),
        Command::Load(a) => runtime()?.block_on(run::load(a)),
        Command::Boxes(a) => {
            let text = std::fs::read_to_string(&a.tokens)?;
            let mut boxes = crate::boxes::parse_boxes(&text).map_err(anyhow::Error::msg)?;
            if let Some(n) = a.boxes {
                boxes.truncate(n);
            }
            let plan = crate::boxes::BoxesPlan {
                hub: a.hub,
                offline: a.offline,
                per_day: a.per_day,
                batch: a.batch,
                concurrency: a.concurrency,
                crisis_every: a.crisis_every,
            };
            let r = runtime()?
                .block_on(crate::boxes::run(boxes, plan))
                .map_err(anyhow::Error::msg)?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} boxes: {} readings sent ({} stored, {} duplicates) in {:.2} s = {:.0} readings/s; {} requests ({} retried), p50 {:.1} ms, p99 {:.1} ms; {} unchanged shares (304); last box done at {:.2} s",
                    r.boxes, r.readings_sent, r.stored, r.duplicates, r.elapsed_s, r.readings_per_s,
                    r.requests, r.retries, r.request_p50_ms, r.request_p99_ms, r.shares_304, r.last_box_done_s
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "bluez")]
        Command::Bluez { args } => Ok(crate::bluez::cli::main_with_args(args)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
