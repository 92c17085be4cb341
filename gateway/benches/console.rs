//! The console's page times: the worklist of a 5 000-patient team and a
//! 90-day patient chart: `cargo bench -p rpm-gateway --bench console [PATIENTS]`.
//!
//! Builds a store the way the gateway fills it (a BP panel morning and
//! evening on 7 days in 10 for 90 days per patient; an open alert for one
//! patient in ten, an overdue follow-up for one in twenty; one patient
//! with a glucose monitor's reading every 5 minutes for the 90 days:
//! 25 920 points), lets the risk stage take it in, then starts the real
//! `rpm-gateway` binary on it (rules and the risk stage off: they would
//! re-read the whole store at start), signs a care-team user in, and times 200
//! requests of each page over loopback (server time plus a loopback round
//! trip: an upper bound of the server's). Plain `main`. Output: a Markdown
//! table.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alerting_rules::RuleSet;
use chrono::{TimeDelta, Utc};
use rpm_gateway::care::risk::RiskStage;
use rpm_gateway::care::CareConfig;
use rpm_gateway::{PatientChange, Store};
use rusqlite::params;

const BIN: &str = env!("CARGO_BIN_EXE_rpm-gateway");

/// GET `path` with `cookie`; returns (status, body length); panics with
/// the response unless 200.
fn get(port: u16, path: &str, cookie: &str) -> (u16, usize) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let text = String::from_utf8_lossy(&all);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    assert_eq!(status, 200, "{path}: {}", &text[..text.len().min(2000)]);
    (status, all.len())
}

fn main() {
    let patients: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5000);
    let days = 90usize;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let mut store = Store::open(&path).unwrap();
    let now = Utc::now();
    let t0 = Instant::now();
    for p in 0..patients {
        store
            .upsert_patient(
                &format!("p{p:05}"),
                "cli",
                &PatientChange {
                    care_plans: Some(vec!["hypertension".into()]),
                    overrides: None,
                    care_team: Some(Some("north".into())),
                    ..PatientChange::default()
                },
            )
            .unwrap();
    }
    store
        .upsert_patient(
            "p-cgm",
            "cli",
            &PatientChange {
                care_plans: Some(vec!["diabetes".into(), "hypertension".into()]),
                overrides: None,
                care_team: Some(Some("north".into())),
                ..PatientChange::default()
            },
        )
        .unwrap();
    let enrolled = (now - TimeDelta::days(days as i64 + 1)).timestamp_millis();
    store
        .conn()
        .execute("UPDATE patients SET enrolled_at = ?1", [enrolled])
        .unwrap();
    let mut readings = 0u64;
    let mut ids: Vec<usize> = (0..patients).collect();
    ids.push(usize::MAX); // p-cgm
    for chunk in ids.chunks(250) {
        let tx = store.transaction().unwrap();
        {
            let mut q = tx
                .prepare(
                    "INSERT INTO readings (reading_id, group_id, patient_id, device_id, metric, value, unit, loinc,
                         measured_at, received_at, committed_at, source)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?9, 'mqtt')",
                )
                .unwrap();
            for &p in chunk {
                let pid = if p == usize::MAX {
                    "p-cgm".to_string()
                } else {
                    format!("p{p:05}")
                };
                for d in (0..days).rev() {
                    if p != usize::MAX && (d * 7 + p) % 10 < 3 {
                        continue;
                    }
                    for (slot, hour) in [(0, 7), (1, 19)] {
                        let t = (now - TimeDelta::days(d as i64) - TimeDelta::hours(24 - hour))
                            .timestamp_millis();
                        let group = format!("g{p}-{d}-{slot}");
                        let wobble = ((d * 13 + slot * 7) % 17) as f64;
                        for (metric, value, loinc) in [
                            ("systolic", 120.0 + wobble, "8480-6"),
                            ("diastolic", 78.0 + wobble / 2.0, "8462-4"),
                        ] {
                            readings += 1;
                            q.execute(params![
                                format!("r{readings}"),
                                group,
                                pid,
                                format!("cuff-{p}"),
                                metric,
                                value,
                                "mm[Hg]",
                                loinc,
                                t
                            ])
                            .unwrap();
                        }
                    }
                }
                if p == usize::MAX {
                    let start = now - TimeDelta::days(days as i64);
                    for i in 0..(days * 288) {
                        let t = start + TimeDelta::minutes(5 * i as i64);
                        let v = 6.0 + 3.0 * ((i as f64) / 40.0).sin();
                        readings += 1;
                        q.execute(params![
                            format!("r{readings}"),
                            format!("cgm{i}"),
                            pid,
                            "cgm-1",
                            "blood_glucose",
                            v,
                            "mmol/L",
                            "15074-8",
                            t.timestamp_millis()
                        ])
                        .unwrap();
                    }
                }
            }
        }
        tx.commit().unwrap();
    }
    {
        let tx = store.transaction().unwrap();
        for p in (0..patients).filter(|p| p % 10 == 3) {
            let sev = ["warning", "urgent", "critical", "warning"][(p / 10) % 4];
            let id = format!("al{p}");
            let at = (now - TimeDelta::hours((p % 200) as i64)).timestamp_millis();
            tx.execute(
                "INSERT INTO alerts (alert_id, patient_id, rule_id, rule_version, pack, severity, status, message, fired_at, updated_at, measured_at)
                 VALUES (?1, ?2, 'htn.crisis', 1, 'hypertension', ?3, 'firing', 'm', ?4, ?4, ?4)",
                params![id, format!("p{p:05}"), sev, at],
            )
            .unwrap();
        }
        for p in (0..patients).filter(|p| p % 20 == 7) {
            let at = (now - TimeDelta::hours(30)).timestamp_millis();
            tx.execute(
                "INSERT INTO tasks (task_id, patient_id, care_team, problem, pathway, priority, status, opened_at, due_at, updated_at)
                 VALUES (?1, ?2, 'north', 'blood-pressure', 'hypertension', 'urgent', 'open', ?3, ?4, ?3)",
                params![format!("t{p}"), format!("p{p:05}"), at, at + 4 * 3_600_000],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    drop(store);
    let load = t0.elapsed();
    let mut care = CareConfig::default();
    care.risk.batch = 1000;
    let mut stage = RiskStage::open(&path, Arc::new(RuleSet::bundled().unwrap()), care).unwrap();
    loop {
        let r = stage.step(now).unwrap();
        if r.recomputed == 0 && r.consumed == 0 {
            break;
        }
    }
    drop(stage);

    // The real binary on that store, with a care-team user.
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\n\n[api]\nenabled = true\nlisten = \"127.0.0.1:0\"\naddress_file = \"api.addr\"\n\n[rules]\nenabled = false\n\n[care.risk]\nenabled = false\n",
            path.display()
        ),
    )
    .unwrap();
    let password = "bench nurse password";
    let mut add = Command::new(BIN)
        .args(["--config", &config.display().to_string()])
        .args([
            "users",
            "add",
            "nurse",
            "--role",
            "care_team",
            "--team",
            "north",
        ])
        .arg("--password-stdin")
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    assert!(add.wait().unwrap().success());
    let mut gw = Command::new(BIN)
        .args(["run", "--config", &config.display().to_string()])
        .env("RPM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr_file = dir.path().join("api.addr");
    let deadline = Instant::now() + Duration::from_secs(300);
    let port: u16 = loop {
        if let Some(p) = std::fs::read_to_string(&addr_file)
            .ok()
            .filter(|s| s.ends_with('\n'))
            .and_then(|s| s.trim().rsplit(':').next().and_then(|p| p.parse().ok()))
        {
            break p;
        }
        assert!(Instant::now() < deadline, "the gateway did not listen");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Sign in (retried while the gateway still starts: its degraded API
    // answers 503 until the store is open).
    let body = format!("username=nurse&password={}", password.replace(' ', "+"));
    let cookie = loop {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "POST /console/signin HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let found = BufReader::new(s)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                l.strip_prefix("set-cookie: ")
                    .and_then(|c| c.split(';').next())
                    .map(str::to_string)
            });
        if let Some(c) = found {
            break c;
        }
        assert!(Instant::now() < deadline, "could not sign in");
        std::thread::sleep(Duration::from_millis(200));
    };
    let time = |path: &str| {
        let mut size = 0;
        let mut v: Vec<Duration> = (0..200)
            .map(|_| {
                let t = Instant::now();
                let (status, n) = get(port, path, &cookie);
                assert_eq!(status, 200, "{path}");
                size = n;
                t.elapsed()
            })
            .collect();
        v.sort();
        (v[v.len() / 2], v[v.len() * 99 / 100], v[v.len() - 1], size)
    };
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    let rows = [
        (
            "worklist, first page (100 of a 5 000-patient team)",
            "/console/",
        ),
        (
            "patient, 90 days of BP (2 charts, ~126 points each)",
            "/console/patients/p00001?days=90",
        ),
        (
            "patient, 90 days of CGM glucose (25 920 points) and BP",
            "/console/patients/p-cgm?days=90",
        ),
        ("patient, 7 days", "/console/patients/p00001?days=7"),
    ];
    println!(
        "store: {} patients, {readings} readings over {days} days, built in {:.0} s",
        patients + 1,
        load.as_secs_f64()
    );
    println!();
    println!("| page (200 requests each) | p50 ms | p99 ms | max ms | HTML bytes |");
    println!("|---|---|---|---|---|");
    for (what, path) in rows {
        let (p50, p99, max, size) = time(path);
        println!(
            "| {what} | {} | **{}** | {} | {size} |",
            ms(p50),
            ms(p99),
            ms(max)
        );
    }
    let _ = gw.kill();
    let _ = gw.wait();
}
