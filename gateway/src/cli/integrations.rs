//! `rpm-gateway integrations`: each vendor-cloud link's health on the
//! gateway's machine (the same rows as `GET /api/v1/integrations`), so an
//! operator sees a silent or refused vendor without a token.

use clap::Args;

use crate::config::Config;
use crate::runtime;

/// `integrations` arguments.
#[derive(Debug, Args)]
pub struct IntegrationsArgs {
    /// JSON output, one integration a line.
    #[arg(long)]
    json: bool,
}

/// Lists the integrations.
pub fn run(config: &Config, args: IntegrationsArgs) -> anyhow::Result<()> {
    let store = runtime::open_store(config)?;
    let views =
        crate::api::integrations::views(store.conn(), &config.integrations, chrono::Utc::now())?;
    if views.is_empty() && !args.json {
        println!("no [integrations] configured");
    }
    let fmt = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or("never".into(), |t| {
            t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        })
    };
    for v in views {
        if args.json {
            println!("{}", serde_json::to_string(&v)?);
            continue;
        }
        let today = v.days.first();
        println!(
            "{:<16} {:<6} profile {:<10} {} devices  last delivery {}  last day {}: {} pushes, {} measurements ({} quarantined), {} refused{}",
            v.name,
            v.state.to_uppercase(),
            v.profile,
            v.devices,
            fmt(v.last_delivery_at),
            today.map_or("-", |d| d.day.as_str()),
            today.map_or(0, |d| d.deliveries),
            today.map_or(0, |d| d.measurements),
            today.map_or(0, |d| d.quarantined),
            today.map_or(0, |d| d.refused),
            v.last_refusal
                .as_deref()
                .map(|r| format!("  last refusal {r} at {}", fmt(v.last_refused_at)))
                .unwrap_or_default(),
        );
    }
    Ok(())
}
