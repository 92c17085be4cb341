//! `rpm-gateway ble`: an installer's scan, pair and forget.

use clap::Subcommand;

use crate::config::Config;
use crate::runtime;

/// `ble` subcommands.
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

/// Runs a `ble` command.
pub fn run(config: &Config, cmd: BleCommand) -> anyhow::Result<()> {
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
