//! `rpm-sim scenarios`, `run` and `load`: argument handling and printing
//! around [`crate::run`] and [`crate::load`].

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;

use super::{LoadArgs, RunArgs};
use crate::run::{prepare, RunOptions, RunReport};
use crate::scenario::{Scenario, ScenarioError};
use crate::transport::http::HttpTransport;
use crate::transport::mqtt::{parse_addr, Publisher};

/// A bundled scenario by name, or a scenario file.
pub(super) fn resolve(arg: &str) -> Result<Scenario, ScenarioError> {
    let p = Path::new(arg);
    if p.exists() || arg.ends_with(".toml") {
        Scenario::load(p)
    } else {
        Scenario::bundled(arg)
    }
}

fn bundled() -> anyhow::Result<Vec<Scenario>> {
    Scenario::all_bundled().map_err(|errs| {
        anyhow::anyhow!(errs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"))
    })
}

pub(super) fn scenarios(gateway_config: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    if let Some(name) = gateway_config {
        let s = resolve(&name)?;
        println!(
            "# devices of scenario `{}` (rpm-sim scenarios --gateway-config)",
            s.name
        );
        for d in s.registry() {
            println!(
                "[[devices]]\nid = \"{}\"\npatient = \"{}\"\n",
                d.device_id, d.patient_id
            );
        }
        #[cfg(feature = "bluez")]
        print_ble_devices(&s);
        return Ok(ExitCode::SUCCESS);
    }
    let list = bundled()?;
    if json {
        let v: Vec<_> = list
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "description": s.description,
                    "days": s.days,
                    "patients": s.patients.len(),
                    "expected_alerts": s.expected_alerts(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("Bundled scenarios (rpm-sim run NAME --mqtt HOST:PORT):");
    for s in list {
        println!(
            "\n  {:<30} {} days, {} patients, {} expected alert(s)\n  {}",
            s.name,
            s.days,
            s.patients.len(),
            s.expected_alerts().len(),
            s.description
        );
        for e in s.expected_alerts() {
            let days = match e.until_day {
                Some(u) if u != e.day => format!("days {}-{u}", e.day),
                _ => format!("day {}", e.day),
            };
            println!("      {:<26} {:<12} {days}", e.rule.as_str(), e.patient);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The same kit over BLE (`rpm-sim run NAME --ble`): the gateway knows a
/// BLE device by its address, so each cuff, scale and glucometer is
/// registered under the address the simulator gives it.
#[cfg(feature = "bluez")]
fn print_ble_devices(s: &Scenario) {
    use crate::devices::kind_name;
    use crate::transport::ble::{address_of, ble_kind};
    println!(
        "# the same devices over BLE (rpm-sim run {} --ble); enable the source with [sources.ble]",
        s.name
    );
    for d in s.registry().iter().filter(|d| ble_kind(d.kind).is_some()) {
        println!(
            "[[devices]] # {} {}\nid = \"{}\"\npatient = \"{}\"\n",
            kind_name(d.kind),
            d.device_id,
            address_of(&d.device_id),
            d.patient_id
        );
    }
}

/// The play options of `rpm-sim run` (any transport), validated: quirks
/// parsed and the speed checked against the schedule's limits.
pub(super) fn options(
    a: &RunArgs,
    faults: Vec<crate::emission::Fault>,
) -> anyhow::Result<RunOptions> {
    if let Some(s) = a.speed {
        crate::schedule::Schedule::new(Utc::now(), s)?;
    }
    Ok(RunOptions {
        speed: a.speed,
        seed: a.seed,
        start: a.start,
        days: a.days,
        quirks: crate::quirks::parse_list(&a.quirks).map_err(anyhow::Error::msg)?,
        faults,
    })
}

pub(super) async fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !a.ble,
        "this rpm-sim was built without BLE (feature `bluez`)"
    );
    anyhow::ensure!(a.private_bus.is_none(), "--private-bus goes with --ble");
    let list = if a.all {
        bundled()?
    } else {
        a.scenarios
            .iter()
            .map(|n| resolve(n))
            .collect::<Result<Vec<_>, _>>()?
    };
    let o = options(
        &a,
        crate::faults::parse_list(&a.faults).map_err(anyhow::Error::msg)?,
    )?;
    let mqtt = a.mqtt.as_deref().map(parse_addr).transpose()?;
    let now = Utc::now();
    let close = Duration::from_secs(30);
    let care = match &a.care_api {
        Some(url) => Some(crate::care::CareApi {
            base: crate::transport::http::Target::parse(url)?,
            token: a
                .care_token
                .clone()
                .context("--care-api needs --care-token (or RPM_SIM_CARE_TOKEN)")?,
        }),
        None => None,
    };
    let mut tasks = Vec::new();
    for s in &list {
        let s = prepare(s, &o, now);
        let speed = a.speed;
        println!(
            "{}: {} days from {} at {}x, {} publishes planned",
            s.name,
            s.days,
            s.start.format("%Y-%m-%d"),
            speed.unwrap_or(s.speed),
            s.plan().outgoing().len()
        );
        let task = if let Some((host, port)) = &mqtt {
            let id = format!("rpm-sim-{}-{}", s.name, std::process::id());
            let t = Publisher::connect(host, *port, &id);
            let care = care.clone();
            tokio::spawn(async move {
                crate::run::run_only(&s, speed, t, close, care.as_ref(), |_| true).await
            })
        } else {
            let url = a
                .http
                .as_deref()
                .context("give --mqtt HOST:PORT or --http URL")?;
            let mut t = HttpTransport::new(url, a.token.clone())?;
            let vendor = a.as_vendor;
            if let Some(v) = vendor {
                t = t.as_vendor(v, vendor_auth(&a, v)?);
            }
            let care = care.clone();
            tokio::spawn(async move {
                crate::run::run_only(&s, speed, t, close, care.as_ref(), |p| {
                    vendor.is_none_or(|v| crate::transport::vendor::carries(v, p.emission.device))
                })
                .await
            })
        };
        tasks.push(task);
    }
    let mut reports: Vec<RunReport> = Vec::new();
    for t in tasks {
        reports.push(t.await.context("scenario task")??);
    }
    finish(&reports, a.report.as_deref())
}

/// The authentication of `--as VENDOR`.
fn vendor_auth(
    a: &RunArgs,
    v: crate::transport::vendor::Vendor,
) -> anyhow::Result<crate::transport::vendor::VendorAuth> {
    use crate::transport::vendor::{Vendor, VendorAuth};
    let secret = a
        .vendor_secret
        .clone()
        .context("--as needs --vendor-secret (or RPM_SIM_VENDOR_SECRET)")?;
    Ok(match (a.vendor_hmac, v) {
        (true, _) => VendorAuth::Hmac {
            header: a
                .vendor_header
                .clone()
                .unwrap_or_else(|| "x-signature".into()),
            secret,
        },
        (false, Vendor::Tenovi) => VendorAuth::Basic {
            user: a.vendor_user.clone().unwrap_or_else(|| "tenovi".into()),
            password: secret,
        },
        (false, Vendor::Telli) => VendorAuth::ApiKey {
            header: a
                .vendor_header
                .clone()
                .unwrap_or_else(|| "x-api-key".into()),
            key: secret,
        },
    })
}

/// Prints each run's tally, writes the sent-report, and says whether every
/// run was complete.
pub(super) fn finish(reports: &[RunReport], report: Option<&Path>) -> anyhow::Result<ExitCode> {
    let mut complete = true;
    for r in reports {
        let failures: usize = r.sent.failures().values().map(|f| f.reasons.len()).sum();
        let skipped: u64 = r.skipped.values().sum();
        println!(
            "{}: {} readings ({} valid, {} faulty), {} publishes, {} failed{}, in {:.1} s{}",
            r.scenario,
            r.sent.records().count(),
            r.sent.expected().count(),
            r.sent.faulty().count(),
            r.sent.publishes(),
            failures,
            if skipped > 0 {
                format!(", {skipped} skipped (no {} form)", r.transport)
            } else {
                String::new()
            },
            r.wall_seconds,
            r.unacknowledged
                .as_deref()
                .map(|u| format!("; {u}"))
                .unwrap_or_default()
        );
        complete &= r.complete();
    }
    if let Some(path) = report {
        let body = serde_json::json!({ "runs": reports });
        std::fs::write(path, serde_json::to_vec_pretty(&body)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("sent-report: {}", path.display());
    }
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(super) async fn load(a: LoadArgs) -> anyhow::Result<ExitCode> {
    if a.print_config {
        print!("{}", crate::load::gateway_config(a.devices));
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::ensure!(a.devices > 0, "--devices must be at least 1");
    anyhow::ensure!(
        a.rate.is_finite() && a.rate > 0.0,
        "--rate must be a positive number"
    );
    let (host, port) = parse_addr(a.mqtt.as_deref().context("--mqtt HOST:PORT")?)?;
    let o = crate::load::LoadOptions {
        host,
        port,
        devices: a.devices,
        rate: a.rate,
        duration: a.duration,
        connections: a.connections,
        drain_timeout: Duration::from_secs(60),
    };
    let r = crate::load::run(&o).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", r.render());
    }
    Ok(if r.acked == r.messages {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
