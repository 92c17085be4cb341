//! `rpm-gateway webhooks ...` and `rpm-gateway webhook-receiver`: the
//! command-line edge of delivery (`anyhow` lives here, as in `cli.rs`).

use anyhow::Context as _;
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Config;
use crate::delivery::endpoints::{self, DeliveryQuery, EndpointChange, NewEndpoint, Redrive};
use crate::delivery::receiver::{self, ReceiverOptions};
use crate::delivery::route::Filter;
use crate::delivery::signing::Secret;
use crate::runtime;

/// `webhooks` subcommands.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// List endpoints.
    List {
        /// JSON lines output.
        #[arg(long)]
        json: bool,
    },
    /// Add an endpoint; prints its signing secret once.
    Add {
        /// Endpoint id.
        id: String,
        /// URL (https; http only to loopback unless delivery.allow_http).
        url: String,
        /// `whsec_...` secret (env RPM_WEBHOOK_SECRET); generated when absent.
        #[arg(long, env = "RPM_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
        /// Only these severities (repeatable).
        #[arg(long = "severity")]
        severities: Vec<String>,
        /// Only these care teams' patients (repeatable).
        #[arg(long = "care-team")]
        care_teams: Vec<String>,
        /// Only patients in these care plans (repeatable).
        #[arg(long = "care-plan")]
        care_plans: Vec<String>,
        /// Only these event types (repeatable; `alert.*`, `delivery.*`, `*`).
        #[arg(long = "event-type")]
        event_types: Vec<String>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
        /// Allow loopback, private and link-local addresses (lifts the SSRF guard for it).
        #[arg(long)]
        allow_private_network: bool,
    },
    /// Rotate the signing secret: the new one and the previous one both sign until `retire-secret`.
    RotateSecret {
        /// Endpoint id.
        id: String,
        /// The new secret (env RPM_WEBHOOK_SECRET); generated when absent.
        #[arg(long, env = "RPM_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
    },
    /// End a rotation: only the newest secret signs.
    RetireSecret {
        /// Endpoint id.
        id: String,
    },
    /// Disable an endpoint (its pending deliveries wait).
    Disable {
        /// Endpoint id.
        id: String,
    },
    /// Enable an endpoint.
    Enable {
        /// Endpoint id.
        id: String,
    },
    /// An endpoint's deliveries, newest first.
    Deliveries {
        /// Endpoint id.
        endpoint: String,
        /// Only this status: pending, delivered, failed, dead.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// JSON lines output.
        #[arg(long)]
        json: bool,
    },
    /// The attempts of one delivery.
    Attempts {
        /// Delivery id.
        delivery: i64,
        /// JSON lines output.
        #[arg(long)]
        json: bool,
    },
    /// Dead-lettered deliveries (all endpoints).
    Dead {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// JSON lines output.
        #[arg(long)]
        json: bool,
    },
    /// Re-drive dead-lettered and failed deliveries (same event, same webhook-id, a fresh retry round).
    Redrive {
        /// One delivery.
        #[arg(long, conflicts_with_all = ["endpoint", "all"])]
        delivery: Option<i64>,
        /// Every dead or failed delivery of this endpoint.
        #[arg(long, conflicts_with = "all")]
        endpoint: Option<String>,
        /// Every dead or failed delivery.
        #[arg(long)]
        all: bool,
    },
}

/// `webhook-receiver` arguments.
#[derive(Debug, Clone, Args)]
pub struct ReceiverArgs {
    /// Address to listen on. Port 0: a free port, named by the first line
    /// on stderr (`webhook-receiver listening on 127.0.0.1:PORT`).
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,
    /// Secret(s) to verify with (repeatable; env RPM_WEBHOOK_SECRET).
    #[arg(
        long = "secret",
        env = "RPM_WEBHOOK_SECRET",
        hide_env_values = true,
        required = true
    )]
    pub secrets: Vec<String>,
    /// Status answered while failing.
    #[arg(long, default_value_t = 500)]
    pub fail_status: u16,
    /// Fail every request for this long after start (`30s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub fail_for: Option<Duration>,
    /// Fail the first N requests.
    #[arg(long)]
    pub fail_first: Option<u64>,
    /// Send `Retry-After: SECONDS` with failures.
    #[arg(long)]
    pub retry_after: Option<u64>,
    /// Answer after this delay (`2s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay: Option<Duration>,
    /// JSON lines instead of readable text.
    #[arg(long)]
    pub json: bool,
}

impl ReceiverArgs {
    /// As receiver options.
    pub fn options(&self) -> anyhow::Result<ReceiverOptions> {
        let secrets = self
            .secrets
            .iter()
            .map(|s| Secret::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .context("--secret")?;
        Ok(ReceiverOptions {
            secrets,
            fail_status: self.fail_status,
            fail_for: self.fail_for,
            fail_first: self.fail_first,
            retry_after: self.retry_after,
            delay: self.delay,
            json: self.json,
            ..Default::default()
        })
    }
}

/// Runs the receiver until SIGINT/SIGTERM.
pub fn run_receiver(args: &ReceiverArgs) -> anyhow::Result<()> {
    let opts = args.options()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let listener = receiver::bind(args.listen).await?;
        eprintln!(
            "webhook-receiver listening on {}",
            listener.local_addr().unwrap_or(args.listen)
        );
        receiver::serve(listener, opts, None, runtime::shutdown_signal()).await?;
        Ok(())
    })
}

/// Runs a `webhooks` subcommand against the configured store.
pub fn webhooks(config: &Config, cmd: WebhooksCommand) -> anyhow::Result<()> {
    let mut store = runtime::open_store(config)?;
    let policy = config.delivery.url_policy();
    match cmd {
        WebhooksCommand::List { json } => {
            for e in endpoints::list(store.conn())? {
                if json {
                    println!("{}", serde_json::to_string(&e)?);
                } else {
                    let state = if e.enabled {
                        "enabled".to_string()
                    } else {
                        format!("disabled ({})", e.disabled_reason.as_deref().unwrap_or(""))
                    };
                    println!(
                        "{:<20} {:<40} {} secret(s) {:<8} {} filter {}",
                        e.endpoint_id,
                        e.url,
                        e.active_secrets,
                        e.origin,
                        state,
                        serde_json::to_string(&e.filter)?
                    );
                }
            }
        }
        WebhooksCommand::Add {
            id,
            url,
            secret,
            description,
            severities,
            care_teams,
            care_plans,
            event_types,
            disabled,
            allow_private_network,
        } => {
            let new = NewEndpoint {
                endpoint_id: id.clone(),
                url,
                description,
                secret,
                filter: Filter {
                    severities,
                    care_plans,
                    care_teams,
                    event_types,
                },
                enabled: !disabled,
                allow_private_network,
            };
            if !(allow_private_network || policy.allow_private_network) {
                if let Ok(u) = url::Url::parse(&new.url) {
                    crate::delivery::ssrf::check_url_blocking(&u)?;
                }
            }
            let tx = store.transaction()?;
            let (_, secret) = endpoints::create(&tx, &new, "cli", policy)?;
            tx.commit()?;
            println!("added webhook endpoint {id}");
            println!("signing secret (shown once; give it to the receiver): {secret}");
        }
        WebhooksCommand::RotateSecret { id, secret } => {
            let tx = store.transaction()?;
            let s = endpoints::rotate_secret(&tx, &id, secret)?;
            tx.commit()?;
            println!("rotated; deliveries to {id} now carry two signatures until `webhooks retire-secret {id}`");
            println!("new signing secret (shown once): {s}");
        }
        WebhooksCommand::RetireSecret { id } => {
            let tx = store.transaction()?;
            let n = endpoints::retire_secrets(&tx, &id)?;
            tx.commit()?;
            println!("retired {n} previous secret(s) of {id}");
        }
        WebhooksCommand::Disable { id } => {
            let tx = store.transaction()?;
            let changed = endpoints::set_enabled(&tx, &id, false, "disabled by cli")?;
            tx.commit()?;
            println!(
                "{id} {}",
                if changed {
                    "disabled"
                } else {
                    "was already disabled"
                }
            );
        }
        WebhooksCommand::Enable { id } => {
            let tx = store.transaction()?;
            let changed = endpoints::update(
                &tx,
                &id,
                &EndpointChange {
                    enabled: Some(true),
                    ..Default::default()
                },
                "cli",
                policy,
            )
            .map(|e| e.enabled)?;
            tx.commit()?;
            println!("{id} {}", if changed { "enabled" } else { "unchanged" });
        }
        WebhooksCommand::Deliveries {
            endpoint,
            status,
            limit,
            json,
        } => {
            if endpoints::get(store.conn(), &endpoint)?.is_none() {
                anyhow::bail!("no webhook endpoint `{endpoint}`");
            }
            let q = DeliveryQuery {
                endpoint_id: Some(&endpoint),
                status: status.as_deref(),
                before: None,
                limit,
            };
            print_deliveries(&endpoints::deliveries(store.conn(), &q)?, json)?;
        }
        WebhooksCommand::Attempts { delivery, json } => {
            for a in endpoints::attempts(store.conn(), delivery)? {
                if json {
                    println!("{}", serde_json::to_string(&a)?);
                } else {
                    println!(
                        "#{} {} status {} {} ms {}",
                        a.attempt,
                        a.at.format("%Y-%m-%d %H:%M:%S%.3f"),
                        a.http_status
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| "-".into()),
                        a.latency_ms,
                        a.error.as_deref().unwrap_or("")
                    );
                }
            }
        }
        WebhooksCommand::Dead { limit, json } => {
            let q = DeliveryQuery {
                status: Some("dead"),
                limit,
                ..Default::default()
            };
            print_deliveries(&endpoints::deliveries(store.conn(), &q)?, json)?;
        }
        WebhooksCommand::Redrive {
            delivery,
            endpoint,
            all,
        } => {
            let which = match (delivery, endpoint.as_deref(), all) {
                (Some(d), _, _) => Redrive::Delivery(d),
                (None, Some(e), _) => Redrive::Endpoint(e),
                (None, None, true) => Redrive::All,
                _ => anyhow::bail!("say what to re-drive: --delivery ID, --endpoint ID or --all"),
            };
            let tx = store.transaction()?;
            let n = endpoints::redrive(&tx, which)?;
            tx.commit()?;
            println!("re-driven {n} deliver{}", if n == 1 { "y" } else { "ies" });
        }
    }
    Ok(())
}

fn print_deliveries(rows: &[endpoints::DeliveryRecord], json: bool) -> anyhow::Result<()> {
    for d in rows {
        if json {
            println!("{}", serde_json::to_string(d)?);
        } else {
            println!(
                "#{:<6} {:<9} {:<22} {} {:<16} attempts {:<2} last {} {}",
                d.delivery_id,
                d.status,
                d.event_type,
                d.event_id,
                d.endpoint_id,
                d.attempts,
                d.last_status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into()),
                d.last_error.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}
