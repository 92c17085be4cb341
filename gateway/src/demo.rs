//! `rpm-gateway demo`: the whole flow on one machine with nothing installed.
//!
//! The demo is a list of stages run in order (see [`run`]): an embedded MQTT
//! broker (rumqttd) on a free local port, a webhook receiver on another
//! (the one `rpm-gateway webhook-receiver` runs, verifying every signature
//! with a secret generated for the run), a store in a temporary directory,
//! the real gateway runtime with that receiver as its `[[webhooks]]`
//! endpoint, a live view that reads what was committed (from the store,
//! after a cursor, like every downstream consumer) and prints each verified
//! webhook as it arrives, the patients of the simulator's `demo` scenario
//! (`simulator/scenarios/demo.toml`: five patients, a week, every rule pack,
//! device quirks, a malformed payload and an unregistered device) played in
//! accelerated time over real MQTT (QoS 1) through the simulator's own
//! transport, and a summary with the alerts the gateway raised beside the
//! scenario's ground truth, and the webhooks delivered.
//!
//! The gateway runs on the data clock (`rules.clock = "data"`): a week
//! played in seconds is judged in the week's own time, so the adherence
//! (missing-data) alerts of the non-adherent patient are real findings.

use anyhow::Context as _;
use chrono::Utc;
use clap::Args;
use rpm_simulator::run::{prepare, RunOptions, RunReport, StartAt};
use rpm_simulator::scenario::Scenario;
use rpm_simulator::transport::mqtt::Publisher;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, DeviceAssignment, MqttConfig, RulesClock, WebhookConfig};
use crate::delivery::receiver::{self, Received, ReceiverOptions};
use crate::delivery::signing::Secret;
use crate::store::Store;

/// How often the demo's gateway judges silence (on the data clock).
const MISSING_INTERVAL: Duration = Duration::from_millis(200);

/// Options of `rpm-gateway demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Simulated days of the demo scenario to play (all 7 by default).
    #[arg(long)]
    pub days: Option<u32>,
    /// Wall-clock seconds over which the simulated days are played.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Keep the store in this directory instead of a temporary one.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// Do not wait at the end for the console to be looked at (the demo
    /// waits for Enter only when run in a terminal).
    #[arg(long)]
    pub no_wait: bool,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
/// Starts rumqttd on `port` on its own thread (it runs its own runtimes).
fn start_broker(port: u16) -> anyhow::Result<()> {
    use rumqttd::{Config as BrokerConfig, ConnectionSettings, RouterConfig, ServerSettings};
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: 1 << 20,
        max_inflight_count: 200,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "demo".into(),
        listen: format!("127.0.0.1:{port}").parse()?,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = BrokerConfig {
        id: 0,
        router: RouterConfig {
            max_connections: 100,
            max_outgoing_packet_count: 200,
            max_segment_size: 10 * 1024 * 1024,
            max_segment_count: 10,
            ..Default::default()
        },
        v4: Some([("demo".to_string(), server)].into_iter().collect()),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("demo-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                eprintln!("embedded broker stopped: {e}");
            }
        })?;
    Ok(())
}

/// A stage running in the background: its stop signal and its task.
type Running<T> = (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<T>);

/// The demo's state, built up stage by stage.
struct Demo {
    args: DemoArgs,
    scenario: Scenario,
    temp: PathBuf,
    store_path: PathBuf,
    port: u16,
    gateway: Option<Running<Result<(), crate::runtime::RunError>>>,
    view: Option<Running<Webhooks>>,
    sent: Option<RunReport>,
    /// The receiver's URL and signing secret (for the gateway's config).
    webhook: Option<(String, String)>,
    /// Verified deliveries, for the live view (taken when it starts).
    received: Option<tokio::sync::mpsc::Receiver<Received>>,
    receiver: Option<Running<Result<(), receiver::ReceiverError>>>,
    /// What the live view saw arrive.
    webhooks: Webhooks,
    /// The console's address, once the API listens.
    console: Option<String>,
}

/// Verified webhook deliveries seen by the live view.
#[derive(Debug, Default, Clone)]
struct Webhooks {
    /// By event type (`alert.fired`, ...), first deliveries only.
    by_type: std::collections::BTreeMap<String, usize>,
    /// Re-deliveries of an id already received.
    duplicates: usize,
}

impl Webhooks {
    fn total(&self) -> usize {
        self.by_type.values().sum()
    }
}

/// Runs the demo: its stages, in order.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut demo = Demo::prepare(args)?;
    demo.start_broker().await?;
    demo.start_receiver().await?;
    demo.start_gateway().await?;
    demo.start_live_view();
    demo.play_devices().await?;
    demo.settle().await;
    demo.wait_for_browser().await;
    demo.stop().await?;
    demo.summary()
}

impl Demo {
    /// The scenario (moved so that its last day ends today), the store's
    /// directory, the broker's port.
    fn prepare(args: DemoArgs) -> anyhow::Result<Demo> {
        let scenario = Scenario::bundled("demo").context("loading the demo scenario")?;
        let scenario = prepare(
            &scenario,
            &RunOptions {
                days: args.days,
                start: StartAt::Today,
                ..RunOptions::default()
            },
            Utc::now(),
        );
        let temp = tempfile_dir()?;
        let dir = args.keep.clone().unwrap_or_else(|| temp.clone());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Demo {
            store_path: dir.join("rpm-demo.db"),
            port: free_port()?,
            args,
            scenario,
            temp,
            gateway: None,
            view: None,
            sent: None,
            webhook: None,
            received: None,
            receiver: None,
            console: None,
            webhooks: Webhooks::default(),
        })
    }

    async fn start_broker(&mut self) -> anyhow::Result<()> {
        start_broker(self.port)?;
        wait_for_port(self.port).await
    }

    /// The webhook receiver (`delivery::receiver`), in process on a free
    /// local port, verifying with a secret made for this run. It prints
    /// nothing itself: verified deliveries go to the live view.
    async fn start_receiver(&mut self) -> anyhow::Result<()> {
        let listener = receiver::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let secret = Secret::generate();
        let opts = ReceiverOptions {
            secrets: vec![Secret::parse(&secret)?],
            quiet: true,
            ..ReceiverOptions::default()
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(receiver::serve(listener, opts, Some(tx), async move {
            let _ = stop_rx.changed().await;
        }));
        self.receiver = Some((stop_tx, task));
        self.received = Some(rx);
        self.webhook = Some((format!("http://{addr}/rpm-alerts"), secret));
        Ok(())
    }

    /// The real gateway runtime, with the scenario's devices assigned.
    async fn start_gateway(&mut self) -> anyhow::Result<()> {
        let mut config = Config::default();
        config.store.path = self.store_path.clone();
        // Simulated patients: their FHIR resources are labelled test data.
        config.fhir.test_data = true;
        config.sources.mqtt = Some(MqttConfig {
            port: self.port,
            client_id: Some("rpm-gateway-demo".into()),
            ..MqttConfig::default()
        });
        config.devices = self
            .scenario
            .registry()
            .into_iter()
            .map(|d| DeviceAssignment {
                id: d.device_id,
                patient: d.patient_id,
            })
            .collect();
        // Each patient enrolled in the care plan of their condition, so
        // every bundled rule pack has someone to watch.
        config.patients = self
            .scenario
            .patients
            .iter()
            .map(|p| crate::config::PatientEnrolment {
                id: p.id.clone(),
                care_plans: p
                    .condition
                    .care_plan()
                    .into_iter()
                    .map(String::from)
                    .collect(),
                care_team: None,
                time_zone: None,
                monitoring_start: None,
            })
            .collect();
        // Days of readings arrive in seconds: without this every alert
        // would be flagged late (received long after it was measured).
        config.rules.late_receipt = Duration::from_secs(30 * 86_400);
        // ... and silence is judged in the week's time, not the wall
        // clock's (a demo is a replay: never do this live).
        config.rules.clock = RulesClock::Data;
        config.rules.missing_interval = MISSING_INTERVAL;
        if let Some((url, secret)) = &self.webhook {
            config.webhooks = vec![WebhookConfig {
                id: "demo-receiver".into(),
                url: url.clone(),
                secret: Some(secret.clone()),
                secret_env: None,
                secret_file: None,
                description: "the demo's in-process webhook receiver".into(),
                filter: Default::default(),
                enabled: true,
                // The receiver is on this machine, in this process.
                allow_private_network: true,
            }];
        }

        // The web console, on a loopback port of the system's choosing,
        // with a demo user whose password is made for this run.
        let addr_file = self.store_path.with_file_name("api.addr");
        let _ = std::fs::remove_file(&addr_file);
        config.api.enabled = true;
        config.api.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        config.api.address_file = Some(addr_file.clone());
        let password = demo_user(&self.store_path)?;

        println!("rpm-gateway demo");
        println!("  embedded MQTT broker  127.0.0.1:{}", self.port);
        if let Some((url, _)) = &self.webhook {
            println!("  webhook receiver      {url} (signatures verified with a secret made for this run)");
        }
        println!("  store                 {}", self.store_path.display());
        println!(
            "  scenario              {} ({} days from {}, played in {} s)",
            self.scenario.name,
            self.scenario.days,
            self.scenario.start.format("%Y-%m-%d"),
            self.args.seconds
        );
        println!(
            "  patients              {}",
            self.scenario
                .patients
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!();

        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let gateway = tokio::spawn(crate::runtime::run(config, async move {
            let _ = stop_rx.changed().await;
        }));
        self.gateway = Some((stop_tx, gateway));
        // Let the gateway connect and subscribe before devices publish.
        tokio::time::sleep(Duration::from_millis(800)).await;
        for _ in 0..50 {
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                if a.ends_with('\n') {
                    self.console = Some(format!("http://{}/console/", a.trim()));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(url) = &self.console {
            println!("  web console           {url}");
            println!("  console sign-in       user `{DEMO_USER}`, password `{password}` (made for this run)");
            println!();
        }
        Ok(())
    }

    /// In a terminal, keeps the gateway and its console up until Enter,
    /// so the week can be looked at in a browser.
    async fn wait_for_browser(&self) {
        use std::io::IsTerminal;
        let Some(url) = &self.console else { return };
        if self.args.no_wait || !std::io::stdin().is_terminal() {
            return;
        }
        println!();
        println!("The week is in the console: {url}");
        println!("Press Enter to stop the demo and see the summary.");
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await;
    }

    fn start_live_view(&mut self) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let path = self.store_path.clone();
        let hooks = self.received.take();
        let task = tokio::task::spawn_blocking(move || live_view(&path, hooks, rx));
        self.view = Some((tx, task));
    }

    /// The scenario's devices, in accelerated time, over MQTT.
    async fn play_devices(&mut self) -> anyhow::Result<()> {
        let span = f64::from(self.scenario.days) * 86_400.0;
        let speed = span / self.args.seconds.max(1) as f64;
        let publisher = Publisher::connect("127.0.0.1", self.port, "demo-devices");
        let report = rpm_simulator::run::run(
            &self.scenario,
            Some(speed),
            publisher,
            Duration::from_secs(10),
        )
        .await?;
        if let Some(u) = &report.unacknowledged {
            anyhow::bail!("{u}");
        }
        self.sent = Some(report);
        Ok(())
    }

    /// Waits (at most 20 s) until the gateway is done with what was sent:
    /// every reading committed and evaluated, silence judged at the last
    /// reading's time, every event fanned out and no delivery pending; the
    /// same for a second in a row.
    async fn settle(&self) {
        let Ok(store) = Store::open(&self.store_path) else {
            return;
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let (mut last, mut quiet_since) = (None, std::time::Instant::now());
        while std::time::Instant::now() < deadline {
            tokio::time::sleep(MISSING_INTERVAL).await;
            let Ok(p) = progress(&store) else { continue };
            if last != Some(p) {
                (last, quiet_since) = (Some(p), std::time::Instant::now());
            } else if p.done() && quiet_since.elapsed() >= Duration::from_secs(1) {
                return;
            }
        }
    }

    /// Stops the gateway (it drains), the receiver and the live view.
    async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some((stop, task)) = self.gateway.take() {
            let _ = stop.send(true);
            task.await.context("gateway task")??;
        }
        if let Some((stop, task)) = self.receiver.take() {
            let _ = stop.send(true);
            task.await.context("webhook receiver task")??;
        }
        if let Some((stop, task)) = self.view.take() {
            let _ = stop.send(true);
            self.webhooks = task.await.unwrap_or_default();
        }
        Ok(())
    }

    fn summary(&self) -> anyhow::Result<()> {
        let store = Store::open(&self.store_path)?;
        let sent = self.sent.as_ref().map_or(0, |r| r.sent.publishes());
        println!();
        println!("summary");
        println!("  messages published    {sent}");
        println!("  readings stored       {}", store.count_readings()?);
        for (reason, n) in store.quarantine_counts()? {
            println!("  quarantined           {n} × {reason}");
        }
        println!();
        let mut raised = crate::store::alerts::list(
            store.conn(),
            &crate::store::alerts::AlertFilter {
                status: None,
                patient_id: None,
                limit: 1000,
            },
        )?;
        // A missing-data alert has no triggering reading: it fired when the
        // silence (on the data clock) reached the rule's limit.
        raised.sort_by_key(|a| a.measured_at.unwrap_or(a.fired_at));
        println!("alerts the gateway raised ({}):", raised.len());
        // One rule column for both tables, as wide as the longest rule id.
        let windows = rpm_simulator::run::alert_windows(&self.scenario);
        let rule_w = raised
            .iter()
            .map(|a| a.rule_id.len())
            .chain(windows.iter().map(|a| a.rule.as_str().len()))
            .max()
            .unwrap_or(0);
        for a in &raised {
            println!(
                "  {:<rule_w$} {:<10} {:<8} {:<9} {}  {}",
                a.rule_id,
                a.patient_id,
                a.severity,
                a.status,
                a.measured_at.unwrap_or(a.fired_at).format("%a %d %b %H:%M"),
                a.message
            );
        }
        println!();
        let tasks = crate::store::tasks::list(
            store.conn(),
            &crate::store::tasks::TaskQuery {
                statuses: vec!["open".into(), "claimed".into(), "done".into()],
                limit: 1000,
                ..Default::default()
            },
        )?;
        println!(
            "follow-up tasks opened ({}); nobody in the demo takes them, so they escalate:",
            tasks.len()
        );
        let at = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .unwrap_or_default()
                .format("%a %d %b %H:%M")
                .to_string()
        };
        for t in &tasks {
            let status = match &t.outcome {
                Some(o) => format!("done: {o}"),
                None => t.status.clone(),
            };
            println!(
                "  {:<16} {:<10} {:<8} opened {}  due {}  escalation tier {}  {status}",
                t.problem,
                t.patient_id,
                t.priority,
                at(t.opened_at),
                at(t.due_at),
                t.escalation_tier
            );
        }
        println!();
        let w = &self.webhooks;
        let kinds: Vec<String> = w.by_type.iter().map(|(t, n)| format!("{n} {t}")).collect();
        println!(
            "webhooks received     {} verified ({}) for {} alerts raised",
            w.total(),
            if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.join(", ")
            },
            raised.len()
        );
        let deliveries: Vec<String> = crate::store::stats::backlog(store.conn())?
            .deliveries
            .into_iter()
            .map(|(status, n)| format!("{n} {status}"))
            .collect();
        println!(
            "webhook deliveries    {}{}",
            if deliveries.is_empty() {
                "none".to_string()
            } else {
                deliveries.join(", ")
            },
            if w.duplicates > 0 {
                format!(" ({} re-delivered)", w.duplicates)
            } else {
                String::new()
            }
        );
        println!();
        println!(
            "alerts a correct gateway raises (ground truth of {}):",
            self.scenario.file.display()
        );
        for a in windows {
            println!(
                "  {:<rule_w$} {:<10} {} .. {}",
                a.rule.as_str(),
                a.patient,
                a.from.format("%a %d %b"),
                (a.until - chrono::TimeDelta::seconds(1)).format("%a %d %b")
            );
        }
        println!();
        println!(
            "Look inside: sqlite3 {} 'SELECT * FROM readings_view LIMIT 10'",
            self.store_path.display()
        );
        if self.args.keep.is_none() {
            println!("(temporary; pass --keep DIR to keep the store)");
            let _ = std::fs::remove_dir_all(&self.temp);
        }
        Ok(())
    }
}

/// The console user the demo signs in with.
const DEMO_USER: &str = "demo";

/// Creates the demo's console user (admin: the demo patients have no care
/// team) with a random password, or gives a kept store's one a new
/// password; returns the password.
fn demo_user(store_path: &std::path::Path) -> anyhow::Result<String> {
    let store = Store::open(store_path)?;
    let password = crate::console::auth::random_token()
        .map_err(|e| anyhow::anyhow!("no system randomness: {e}"))?[..20]
        .to_string();
    let hash = crate::console::auth::hash_password(&password)?;
    if crate::store::users::get(store.conn(), DEMO_USER)?.is_some() {
        crate::store::users::set_password(store.conn(), DEMO_USER, &hash)?;
    } else {
        crate::store::users::create(
            store.conn(),
            DEMO_USER,
            crate::store::tokens::Role::Admin,
            &[],
            &hash,
        )?;
    }
    Ok(password)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("rpm-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn wait_for_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the embedded broker did not start on port {port}")
}

/// Where the gateway stands: (newest reading, rules cursor, newest outbox
/// event, fan-out cursor, pending deliveries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress(i64, i64, i64, i64, i64);

impl Progress {
    fn done(self) -> bool {
        self.1 >= self.0 && self.3 >= self.2 && self.4 == 0
    }
}

fn progress(store: &Store) -> Result<Progress, crate::store::StoreError> {
    let b = crate::store::stats::backlog(store.conn())?;
    Ok(Progress(
        b.readings_last_seq,
        store.cursor(crate::rules::CURSOR)?,
        b.outbox_last_seq,
        store.cursor(crate::delivery::fanout::CURSOR)?,
        b.deliveries.get("pending").copied().unwrap_or(0),
    ))
}

/// One verified webhook, on a line of its own.
fn print_webhook(r: &Received) {
    let d = &r.event["data"];
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    println!();
    print!(
        "  WEBHOOK {:<16} {:<8} {:<10} {:<29} {}  (signature verified)",
        s(&r.event["type"]),
        s(&d["severity"]).to_uppercase(),
        s(&d["patient_id"]),
        s(&d["rule"]["id"]),
        s(&d["message"]),
    );
}

/// Prints committed readings, quarantined input and verified webhooks as
/// they land; returns the webhooks seen.
fn live_view(
    path: &std::path::Path,
    mut hooks: Option<tokio::sync::mpsc::Receiver<Received>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Webhooks {
    let mut seen = Webhooks::default();
    let Ok(store) = Store::open(path) else {
        return seen;
    };
    let (mut seq, mut qid) = (0i64, 0i64);
    let mut last_group = String::new();
    loop {
        let done = *stop.borrow();
        if let Ok(rows) = store.readings_after(seq, 500) {
            for r in rows {
                seq = r.seq;
                if r.group_id != last_group {
                    println!();
                    print!(
                        "  stored  {:<14} {:<22} {}  ",
                        r.patient_id,
                        r.device_id,
                        r.measured_at.format("%a %H:%M")
                    );
                    last_group = r.group_id.clone();
                }
                print!("{} {:.1} {}  ", r.metric, r.value, r.unit);
            }
        }
        if let Ok(rows) = store.quarantine_after(qid, 100) {
            for q in rows {
                qid = q.id;
                println!();
                print!(
                    "  QUARANTINED  {:<18} {}  ({})",
                    q.reason, q.origin, q.detail
                );
                last_group.clear();
            }
        }
        while let Some(r) = hooks.as_mut().and_then(|h| h.try_recv().ok()) {
            if r.duplicate_of > 0 {
                seen.duplicates += 1;
                continue;
            }
            let kind = r.event["type"].as_str().unwrap_or("?").to_string();
            *seen.by_type.entry(kind).or_default() += 1;
            print_webhook(&r);
            last_group.clear();
        }
        if done {
            println!();
            return seen;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
