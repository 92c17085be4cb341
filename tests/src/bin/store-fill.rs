//! Fills a gateway store with synthetic readings, fast (one transaction,
//! direct SQLite inserts into the migrated schema): the backlog for the
//! forwarding tests and `bench/forward.sh`.
//!
//!   rpm-store-fill DB N          add N readings
//!   rpm-store-fill DB --cursor NAME   print a cursor's position
//!   rpm-store-fill DB --max-seq       print the newest reading's seq

use rpm_gateway::Store;
use rusqlite::params;
use std::path::Path;
use std::process::ExitCode;

/// (metric, unit, LOINC, base value)
const METRICS: [(&str, &str, &str, f64); 5] = [
    ("systolic", "mm[Hg]", "8480-6", 110.0),
    ("diastolic", "mm[Hg]", "8462-4", 70.0),
    ("body_weight", "kg", "29463-7", 80.0),
    ("spo2", "%", "59408-5", 92.0),
    ("blood_glucose", "mg/dL", "41653-7", 90.0),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(db), Some(what)) = (args.first(), args.get(1)) else {
        eprintln!("usage: rpm-store-fill DB N | DB --cursor NAME | DB --max-seq");
        return ExitCode::from(2);
    };
    let mut store = match Store::open(Path::new(db)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match what.as_str() {
        "--cursor" => store
            .cursor(args.get(2).map(String::as_str).unwrap_or(""))
            .map(|c| println!("{c}")),
        "--max-seq" => store
            .conn()
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM readings", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|m| println!("{m}"))
            .map_err(Into::into),
        n => match n.parse::<u64>() {
            Ok(n) => fill(&mut store, n),
            Err(_) => {
                eprintln!("N must be a number");
                return ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn fill(store: &mut Store, n: u64) -> Result<(), rpm_gateway::StoreError> {
    let first: i64 =
        store
            .conn()
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM readings", [], |r| {
                r.get(0)
            })?;
    let now = rpm_gateway::now_ms();
    // Measured times: one a minute per device and metric, ending now.
    let base = now - (n as i64 / 1000 + 1) * 60_000;
    let tx = store.transaction()?;
    {
        let mut q = tx.prepare(
            "INSERT INTO readings (reading_id, group_id, patient_id, device_id, metric, value, unit, loinc,
                 measured_at, received_at, committed_at, source, sequence, annotations)
             VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, 'mqtt', ?10, ?11)",
        )?;
        for k in 0..n as i64 {
            let i = first + k;
            let (metric, unit, loinc, v) = METRICS[(i % 5) as usize];
            let value = v + (i % 97) as f64 * 0.1;
            let measured = base + (i / 1000) * 60_000 + (i % 1000);
            let annotations = if i % 10 == 0 {
                r#"{"note":"synthetic"}"#
            } else {
                "{}"
            };
            q.execute(params![
                format!("fill-{i}"),
                format!("p-{}", i % 200),
                format!("d-{}", i % 1000),
                metric,
                value,
                unit,
                loinc,
                measured,
                now,
                i,
                annotations
            ])?;
        }
    }
    tx.commit()?;
    // Keyed, as readings the gateway's writer stores are.
    store.key_readings()?;
    Ok(())
}
