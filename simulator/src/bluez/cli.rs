//! The `rpm-bluez-emulator` command line (also for `rpm-sim bluez`).
//!
//! ```text
//! rpm-bluez-emulator [--private-bus DIR] [--adapter hci0]
//!                    --device bp,AA:00:00:00:00:01[,N] --device scale,ADDR[,N]
//!                    --device glucometer,ADDR[,N] --device mi-scale,ADDR[,KG]
//! ```
//! Without `--private-bus` it serves the bus in `DBUS_SYSTEM_BUS_ADDRESS`.
//! With it, it starts its own `dbus-daemon` and prints `BUS <address>`.
//! It prints `READY` once it owns `org.bluez`, then one line per event
//! (CONNECTED, DISCONNECTED, WRITE ...). Commands on stdin, one per line:
//! `disconnect ADDR`, `add-glucose ADDR MGDL`, `add-bp ADDR SYS DIA`,
//! `store-bp ADDR N` (N records at once), `add KIND,ADDR[,N]`,
//! `reset-meter ADDR`, `stall ADDR N` (the next N connects stall in service
//! discovery), `restart` (bluetoothd restarts), `pairing-mode ADDR on|off`,
//! `power on|off`, `quit`
//! (end of input quits too).
//!
//! Device options after the count: `clock=MINUTES` (a wrong device clock),
//! `cts=read|write` (Current Time), `bond=justworks|passkey:N|confirm:N`
//! (gives its records only once bonded; pairs only in pairing mode; offers
//! Device Information). Behaviour flags: `--hang-up-when-sent`
//! (devices disconnect 0 ms after their last value), `--send-once` (no
//! replay of delivered records), `--resignal-powered` (Powered is signalled
//! even when unchanged), `--notify-delay-ms N`, `--advertise-ms N`.

use super::{run, Command, EmulatorConfig, PrivateBus};
use crate::ble::SimDevice;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;

fn device(spec: &str) -> Result<SimDevice, String> {
    let parts: Vec<&str> = spec.split(',').collect();
    let (kind, addr) = match parts.as_slice() {
        [k, a, ..] => (*k, *a),
        _ => return Err(format!("`{spec}`: expected KIND,ADDRESS[,N]")),
    };
    let n: Option<f64> = parts.get(2).and_then(|n| n.parse().ok());
    let mut d = match kind {
        "bp" => SimDevice::bp_cuff(addr, n.unwrap_or(2.0) as usize),
        "scale" => SimDevice::scale(addr, n.unwrap_or(1.0) as usize),
        "glucometer" => SimDevice::glucometer(addr, n.unwrap_or(3.0) as u16),
        "mi-scale" => SimDevice::advertising_scale(addr, n.unwrap_or(72.5)),
        other => {
            return Err(format!(
                "unknown device kind `{other}` (bp, scale, glucometer, mi-scale)"
            ))
        }
    };
    // Options after the count: `clock=+120` (device clock off by minutes),
    // `cts=read|write` (a Current Time characteristic).
    for opt in parts.iter().skip(3) {
        match opt.split_once('=') {
            Some(("clock", m)) => {
                let m: i64 = m
                    .trim_start_matches('+')
                    .parse()
                    .map_err(|_| format!("`{opt}`: clock=MINUTES"))?;
                d.set_clock_offset(chrono::Duration::minutes(m));
            }
            Some(("bond", how)) => {
                let method = match how.split_once(':') {
                    None if how == "justworks" => crate::ble::PairingMethod::JustWorks,
                    Some(("passkey", n)) => crate::ble::PairingMethod::Passkey(
                        n.parse().map_err(|_| format!("`{opt}`: passkey:NNNNNN"))?,
                    ),
                    Some(("confirm", n)) => crate::ble::PairingMethod::Confirm(
                        n.parse().map_err(|_| format!("`{opt}`: confirm:NNNNNN"))?,
                    ),
                    _ => return Err(format!("`{opt}`: bond=justworks|passkey:N|confirm:N")),
                };
                d.bonding = Some(method);
                d.info = Some([
                    "Omron Healthcare".into(),
                    "HEM-7361T".into(),
                    format!("SN{}", addr.replace(':', "")),
                    "1.2.0".into(),
                ]);
            }
            Some(("cts", "read")) => d.current_time = Some(false),
            Some(("cts", "write")) => d.current_time = Some(true),
            _ => return Err(format!("`{opt}`: unknown device option")),
        }
    }
    Ok(d)
}

fn command(line: &str) -> Option<Command> {
    let w: Vec<&str> = line.split_whitespace().collect();
    match w.as_slice() {
        ["disconnect", a] => Some(Command::Disconnect(a.to_string())),
        ["add-glucose", a, v] => v
            .parse()
            .ok()
            .map(|v| Command::AddGlucose(a.to_string(), v)),
        ["add-bp", a, s, d] => Some(Command::AddBp(
            a.to_string(),
            s.parse().ok()?,
            d.parse().ok()?,
        )),
        ["add", spec] => device(spec).ok().map(|d| Command::Add(Box::new(d))),
        ["store-bp", a, n] => Some(Command::StoreBp(a.to_string(), n.parse().ok()?)),
        ["reset-meter", a] => Some(Command::ResetMeter(a.to_string())),
        ["stall", a, n] => Some(Command::Stall(a.to_string(), n.parse().ok()?)),
        ["restart"] => Some(Command::Restart),
        ["pairing-mode", a, on] => Some(Command::PairingMode(a.to_string(), *on == "on")),
        ["power", "on"] => Some(Command::Power(true)),
        ["power", "off"] => Some(Command::Power(false)),
        ["quit"] => Some(Command::Quit),
        _ => None,
    }
}

/// Runs the emulator with command-line `args` (without the program name).
pub fn main_with_args(args: impl IntoIterator<Item = String>) -> ExitCode {
    let mut cfg = EmulatorConfig::default();
    let mut devices = Vec::new();
    let mut private: Option<PathBuf> = None;
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        let r = match a.as_str() {
            "--device" => args
                .next()
                .ok_or("--device needs a value".to_string())
                .and_then(|s| device(&s))
                .map(|d| devices.push(d)),
            "--adapter" => args
                .next()
                .map(|s| cfg.adapter = s)
                .ok_or("--adapter needs a value".to_string()),
            "--hang-up-when-sent" => {
                cfg.hang_up_when_sent = true;
                Ok(())
            }
            "--send-once" => {
                cfg.send_once = true;
                Ok(())
            }
            "--resignal-powered" => {
                cfg.resignal_powered = true;
                Ok(())
            }
            "--notify-delay-ms" | "--advertise-ms" => args
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .map(|ms| {
                    let d = std::time::Duration::from_millis(ms);
                    if a == "--notify-delay-ms" {
                        cfg.notify_delay = d;
                    } else {
                        cfg.advertise_every = d;
                    }
                })
                .ok_or(format!("{a} needs milliseconds")),
            "--private-bus" => args
                .next()
                .map(|s| private = Some(PathBuf::from(s)))
                .ok_or("--private-bus needs a directory".to_string()),
            "-h" | "--help" => {
                println!("usage: rpm-bluez-emulator [--private-bus DIR] [--adapter hci0] [--hang-up-when-sent] [--send-once] [--resignal-powered] [--notify-delay-ms N] [--advertise-ms N] --device KIND,ADDRESS[,N][,clock=MIN][,cts=read|write][,bond=justworks|passkey:N|confirm:N] ...");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument `{other}`")),
        };
        if let Err(e) = r {
            eprintln!("rpm-bluez-emulator: {e}");
            return ExitCode::from(2);
        }
    }
    let _bus = match private {
        Some(dir) => match PrivateBus::start(&dir) {
            Ok(b) => {
                std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &b.address);
                println!("BUS {}", b.address);
                Some(b)
            }
            Err(e) => {
                eprintln!("rpm-bluez-emulator: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let (cmd_tx, cmd_rx) = mpsc::channel();
    let (ev_tx, ev_rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            match command(&line) {
                Some(c) => {
                    if cmd_tx.send(c).is_err() {
                        return;
                    }
                }
                None => eprintln!("rpm-bluez-emulator: unknown command `{line}`"),
            }
        }
        let _ = cmd_tx.send(Command::Quit);
    });
    std::thread::spawn(move || {
        let mut out = std::io::stdout();
        for line in ev_rx {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    });
    match run(cfg, devices, cmd_rx, ev_tx) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rpm-bluez-emulator: {e}");
            ExitCode::FAILURE
        }
    }
}
