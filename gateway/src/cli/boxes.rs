//! `rpm-gateway boxes`: the program hub's view of its home boxes, for
//! installers and operators on the hub's machine (the same rows as
//! `GET /api/v1/boxes`).

use clap::Args;

use crate::config::Config;
use crate::runtime;

/// `boxes` arguments.
#[derive(Debug, Args)]
pub struct BoxesArgs {
    /// JSON output, one box a line.
    #[arg(long)]
    json: bool,
}

/// Lists the boxes.
pub fn run(config: &Config, args: BoxesArgs) -> anyhow::Result<()> {
    let store = runtime::open_store(config)?;
    let boxes = crate::store::boxes::list(store.conn(), None)?;
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    for b in boxes {
        if args.json {
            println!("{}", serde_json::to_string(&b)?);
            continue;
        }
        println!(
            "{:<24} {:<7} last contact {}  backlog {}  clock offset {}  BLE {}  version {}",
            b.box_id,
            if b.silent { "SILENT" } else { "ok" },
            fmt(b.last_contact_at),
            b.backlog.map_or("?".into(), |v| v.to_string()),
            b.clock_offset_ms
                .map_or("?".into(), |v| format!("{:+.1} s", v as f64 / 1000.0)),
            b.ble_state.as_deref().unwrap_or("-"),
            b.version.as_deref().unwrap_or("?"),
        );
    }
    Ok(())
}
