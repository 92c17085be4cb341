//! `rpm-gateway demo`: the whole flow on one machine with nothing installed.
//!
//! The demo is a list of stages run in order (see [`run`]): an embedded MQTT
//! broker (rumqttd) on a free local port, a store in a temporary directory,
//! the real gateway runtime, a live view that reads what was committed (from
//! the store, after a cursor, like every downstream consumer), the patients
//! of the simulator's `demo` scenario (`simulator/scenarios/demo.toml`: five
//! patients, a week, every rule pack, device quirks, a malformed payload and
//! an unregistered device) played in accelerated time over real MQTT (QoS 1)
//! through the simulator's own transport, and a summary with the alerts the
//! gateway raised beside the scenario's ground truth. A new stage (a webhook
//! receiver) is one more method on [`Demo`] and one more line in [`run`].

use anyhow::Context as _;
use chrono::Utc;
use clap::Args;
use rpm_simulator::run::{prepare, RunOptions, RunReport, StartAt};
use rpm_simulator::scenario::Scenario;
use rpm_simulator::transport::mqtt::Publisher;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, DeviceAssignment, MqttConfig};
use crate::store::Store;

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
    view: Option<Running<()>>,
    sent: Option<RunReport>,
}

/// Runs the demo: its stages, in order.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut demo = Demo::prepare(args)?;
    demo.start_broker().await?;
    demo.start_gateway().await?;
    demo.start_live_view();
    demo.play_devices().await?;
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
        })
    }

    async fn start_broker(&mut self) -> anyhow::Result<()> {
        start_broker(self.port)?;
        wait_for_port(self.port).await
    }

    /// The real gateway runtime, with the scenario's devices assigned.
    async fn start_gateway(&mut self) -> anyhow::Result<()> {
        let mut config = Config::default();
        config.store.path = self.store_path.clone();
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
            })
            .collect();
        // Days of readings arrive in seconds: without this every alert
        // would be flagged late (received long after it was measured).
        config.rules.late_receipt = Duration::from_secs(30 * 86_400);

        println!("rpm-gateway demo");
        println!("  embedded MQTT broker  127.0.0.1:{}", self.port);
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
        Ok(())
    }

    fn start_live_view(&mut self) {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let path = self.store_path.clone();
        let task = tokio::task::spawn_blocking(move || live_view(&path, rx));
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

    /// Lets the last batch commit, then stops the gateway (it drains) and
    /// the live view.
    async fn stop(&mut self) -> anyhow::Result<()> {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if let Some((stop, task)) = self.gateway.take() {
            let _ = stop.send(true);
            task.await.context("gateway task")??;
        }
        if let Some((stop, task)) = self.view.take() {
            let _ = stop.send(true);
            let _ = task.await;
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
        let mut raised = crate::rules::alerts::list(
            store.conn(),
            &crate::rules::alerts::AlertFilter {
                status: None,
                patient_id: None,
                limit: 1000,
            },
        )?;
        raised.sort_by_key(|a| a.measured_at);
        // Missing-data (adherence) rules judge silence against the wall
        // clock, which a week replayed in seconds does not follow: count
        // them, don't show them as findings.
        let replay_artifacts = raised.iter().filter(|a| a.pack == "adherence").count();
        raised.retain(|a| a.pack != "adherence");
        println!("alerts the gateway raised ({}):", raised.len());
        for a in &raised {
            println!(
                "  {:<26} {:<10} {:<8} {:<9} {}  {}",
                a.rule_id,
                a.patient_id,
                a.severity,
                a.status,
                a.measured_at
                    .map(|t| t.format("%a %d %b %H:%M").to_string())
                    .unwrap_or_default(),
                a.message
            );
        }
        if replay_artifacts > 0 {
            println!("  (+{replay_artifacts} missing-data alert(s): silence is judged on the wall clock, not meaningful in an accelerated replay)");
        }
        println!();
        println!(
            "alerts a correct gateway raises (ground truth of {}):",
            self.scenario.file.display()
        );
        for a in rpm_simulator::run::alert_windows(&self.scenario) {
            println!(
                "  {:<26} {:<10} {} .. {}",
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

/// Prints committed readings and quarantined input as they land.
fn live_view(path: &std::path::Path, stop: tokio::sync::watch::Receiver<bool>) {
    let Ok(store) = Store::open(path) else { return };
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
        if done {
            println!();
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
