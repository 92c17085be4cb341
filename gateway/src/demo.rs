//! `rpm-gateway demo`: the whole flow on one machine with nothing installed.
//!
//! An embedded MQTT broker (rumqttd) on a free local port, a store in a
//! temporary directory, the real gateway runtime, and simulated patients'
//! devices publishing over real MQTT (QoS 1) — including a malformed payload
//! and a device nobody registered. A live view reads what was committed
//! (from the store, after a cursor, like every downstream consumer) and a
//! summary closes the run.

use anyhow::Context as _;
use chrono::{Duration as ChronoDuration, Utc};
use clap::Args;
use device_profiles::{Metric, Unit};
use rpm_simulator::mqtt::Publisher;
use rpm_simulator::{encode, DeviceKind, Emission, Fault, WireFormat};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, DeviceAssignment, MqttConfig};
use crate::store::Store;

/// Options of `rpm-gateway demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Simulated days of readings.
    #[arg(long, default_value_t = 3)]
    pub days: u32,
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

struct Patient {
    id: &'static str,
    kit: Vec<(DeviceKind, String)>,
}

fn patients() -> Vec<Patient> {
    let kit = |p: &str, kinds: &[DeviceKind]| {
        kinds
            .iter()
            .map(|k| (*k, format!("{}-{}", format!("{k:?}").to_lowercase(), p)))
            .collect::<Vec<_>>()
    };
    use DeviceKind::*;
    vec![
        Patient {
            id: "patient-anna",
            kit: kit("anna", &[BpCuff, Scale]),
        },
        Patient {
            id: "patient-ben",
            kit: kit("ben", &[Glucometer, Thermometer]),
        },
        Patient {
            id: "patient-chen",
            kit: kit("chen", &[PulseOximeter, Scale, BpCuff]),
        },
    ]
}

/// Deterministic, plausible values (the full physiology lives in the simulator).
fn values(kind: DeviceKind, day: u32, slot: u32) -> Vec<(Metric, f64, Unit)> {
    let w = (day * 7 + slot * 3) as f64;
    let wobble = (w.sin() * 3.0).round();
    match kind {
        DeviceKind::BpCuff => vec![
            (Metric::Systolic, 128.0 + wobble, Unit::MmHg),
            (Metric::Diastolic, 82.0 + wobble / 2.0, Unit::MmHg),
            (Metric::PulseRate, 70.0 + wobble, Unit::PerMin),
        ],
        DeviceKind::Scale => vec![(Metric::BodyWeight, 180.0 + day as f64 * 0.9, Unit::Lb)],
        DeviceKind::Glucometer => vec![(Metric::BloodGlucose, 6.1 + wobble / 5.0, Unit::MmolPerL)],
        DeviceKind::PulseOximeter => {
            vec![
                (Metric::Spo2, 95.0 + wobble / 3.0, Unit::Percent),
                (Metric::OximetryPulseRate, 76.0, Unit::PerMin),
            ]
        }
        DeviceKind::Thermometer => {
            vec![(Metric::BodyTemperature, 36.8 + wobble / 10.0, Unit::Celsius)]
        }
    }
}

fn emissions(days: u32) -> Vec<Emission> {
    let start = Utc::now() - ChronoDuration::days(days as i64);
    let mut out = Vec::new();
    for day in 0..days {
        for slot in 0..2u32 {
            for p in patients() {
                for (kind, device) in &p.kit {
                    let at = start
                        + ChronoDuration::days(day as i64)
                        + ChronoDuration::hours(7 + slot as i64 * 12);
                    out.push(Emission {
                        at,
                        patient_id: p.id.into(),
                        device_id: device.clone(),
                        device: *kind,
                        values: values(*kind, day, slot),
                        annotations: BTreeMap::new(),
                        sequence: Some((day * 2 + slot) as u64),
                        fault: None,
                    });
                }
            }
        }
    }
    out.sort_by_key(|e| e.at);
    // Faults a real deployment sees: a broken payload, an unregistered device.
    let mid = out.len() / 2;
    if let Some(e) = out.get(mid).cloned() {
        out.insert(
            mid,
            Emission {
                fault: Some(Fault::Malformed),
                ..e.clone()
            },
        );
        out.insert(
            mid + 1,
            Emission {
                fault: Some(Fault::UnknownDevice),
                ..e
            },
        );
    }
    out
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let temp = tempfile_dir()?;
    let dir = args.keep.clone().unwrap_or_else(|| temp.clone());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let store_path = dir.join("rpm-demo.db");
    let port = free_port()?;
    start_broker(port)?;
    wait_for_port(port).await?;

    let mut config = Config::default();
    config.store.path = store_path.clone();
    config.sources.mqtt = Some(MqttConfig {
        port,
        client_id: Some("rpm-gateway-demo".into()),
        ..MqttConfig::default()
    });
    config.devices = patients()
        .iter()
        .flat_map(|p| {
            p.kit.iter().map(|(_, d)| DeviceAssignment {
                id: d.clone(),
                patient: p.id.into(),
            })
        })
        .collect();

    println!("rpm-gateway demo");
    println!("  embedded MQTT broker  127.0.0.1:{port}");
    println!("  store                 {}", store_path.display());
    println!(
        "  patients              {}",
        patients()
            .iter()
            .map(|p| p.id)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(crate::runtime::run(config, async move {
        let _ = stop_rx.await;
    }));
    // Let the gateway connect and subscribe before devices publish.
    tokio::time::sleep(Duration::from_millis(800)).await;

    let (view_stop_tx, view_stop_rx) = tokio::sync::watch::channel(false);
    let view = tokio::task::spawn_blocking({
        let path = store_path.clone();
        move || live_view(&path, view_stop_rx)
    });

    let all = emissions(args.days);
    let pace = Duration::from_millis((args.seconds * 1000) / all.len().max(1) as u64);
    let mut publisher = Publisher::connect("127.0.0.1", port, "demo-devices");
    for e in &all {
        let format = if e.device == DeviceKind::Thermometer {
            WireFormat::Senml
        } else {
            WireFormat::Vendor
        };
        publisher.publish(&encode(e, format)).await?;
        tokio::time::sleep(pace).await;
    }
    let sent = publisher.sent();
    publisher.close(Duration::from_secs(10)).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let _ = stop_tx.send(());
    gateway.await.context("gateway task")??;
    let _ = view_stop_tx.send(true);
    let _ = view.await;

    let store = Store::open(&store_path)?;
    println!();
    println!("summary");
    println!("  messages published    {sent}");
    println!("  readings stored       {}", store.count_readings()?);
    for (reason, n) in store.quarantine_counts()? {
        println!("  quarantined           {n} × {reason}");
    }
    println!();
    println!(
        "Look inside: sqlite3 {} 'SELECT * FROM readings_view LIMIT 10'",
        store_path.display()
    );
    if args.keep.is_none() {
        println!("(temporary; pass --keep DIR to keep the store)");
        let _ = std::fs::remove_dir_all(&temp);
    }
    Ok(())
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
