//! `rpm-sim run --ble`: one scenario over Bluetooth LE, its devices served
//! by the BlueZ emulator in this process (see [`crate::transport::ble`]).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;

use super::RunArgs;
use crate::bluez::PrivateBus;
use crate::emission::DeviceKind;
use crate::run::{prepare, run_only};
use crate::transport::ble::{address_of, ble_kind, carries, BleOptions, BleTransport};

pub(super) async fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let [name] = a.scenarios.as_slice() else {
        anyhow::bail!("--ble plays one scenario (the emulator owns org.bluez alone)");
    };
    let o = super::run::options(&a, Vec::new())?;
    let s = prepare(&super::run::resolve(name)?, &o, Utc::now());
    let bus = match &a.private_bus {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let b = PrivateBus::start(dir)?;
            println!("BUS {}", b.address);
            Some(b)
        }
        None => None,
    };
    let options = BleOptions {
        bus: bus.as_ref().map(|b| b.address.clone()),
        ..BleOptions::default()
    };
    let registry = s.registry();
    let devices: Vec<(String, DeviceKind)> = registry
        .iter()
        .map(|d| (d.device_id.clone(), d.kind))
        .collect();
    let transport = tokio::task::spawn_blocking(move || BleTransport::start(&devices, &options))
        .await
        .context("emulator start")??;
    let addresses: std::collections::BTreeMap<String, String> = registry
        .iter()
        .filter(|d| ble_kind(d.kind).is_some())
        .map(|d| (d.device_id.clone(), address_of(&d.device_id)))
        .collect();
    println!(
        "{}: {} days from {} at {}x over BLE, {} devices, {} readings planned",
        s.name,
        s.days,
        s.start.format("%Y-%m-%d"),
        a.speed.unwrap_or(s.speed),
        addresses.len(),
        s.plan().readings.iter().filter(|p| carries(p)).count()
    );
    let mut r = run_only(
        &s,
        a.speed,
        transport,
        Duration::from_secs(30),
        None,
        carries,
    )
    .await?;
    r.ble_addresses = addresses;
    drop(bus);
    super::run::finish(&[r], a.report.as_deref())
}

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command};
    use clap::Parser;

    #[test]
    fn bluez_arguments_pass_through_untouched() {
        let cli = Cli::try_parse_from([
            "rpm-sim",
            "bluez",
            "--private-bus",
            "/tmp/x",
            "--device",
            "bp,AA:00:00:00:00:01,2",
            "--help",
        ])
        .unwrap();
        let Command::Bluez { args } = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(
            args,
            [
                "--private-bus",
                "/tmp/x",
                "--device",
                "bp,AA:00:00:00:00:01,2",
                "--help"
            ]
        );
    }

    #[test]
    fn ble_runs_need_no_broker_and_take_no_payload_faults() {
        let cli = Cli::try_parse_from(["rpm-sim", "run", "demo", "--ble", "--days", "2"]).unwrap();
        let Command::Run(a) = cli.command else {
            panic!("{cli:?}")
        };
        assert!(a.ble && a.mqtt.is_none());
        for bad in [
            &["rpm-sim", "run", "demo", "--ble", "--mqtt", "h:1"][..],
            &["rpm-sim", "run", "demo", "--ble", "--faults", "all"],
            &["rpm-sim", "run", "--all", "--ble"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
