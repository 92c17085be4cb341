//! `rpm-sim check`: argument handling and printing around [`crate::check`].

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context as _;

use super::CheckArgs;
use crate::check::{self, CheckOptions};

pub(super) fn run(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut o = CheckOptions::default();
    if let Some(t) = a.received_at {
        o.received_at = t;
    }
    let report = if let Some(profile) = &a.profile {
        let profile = check::load_profile(profile)?;
        let path = a
            .payload
            .as_ref()
            .context("--profile needs --payload FILE")?;
        let payload = if path.as_os_str() == "-" {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b)?;
            b
        } else {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        };
        check::check_mqtt(&profile, a.topic.as_deref(), &payload, &o)?
    } else if let Some(hex) = &a.gatt {
        let bytes = check::parse_hex(hex)?;
        if let Some(layout) = &a.layout {
            let layout = device_profiles::gatt::Layout::load(layout)?;
            check::check_layout(&layout, &bytes, &o)
        } else {
            let uuid = a
                .characteristic
                .as_deref()
                .context("--gatt needs --characteristic UUID (or --layout FILE)")?;
            check::check_gatt(check::parse_uuid(uuid)?, &bytes, &o)
        }
    } else {
        anyhow::bail!("give --profile FILE --payload FILE, or --gatt HEX --characteristic UUID");
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
