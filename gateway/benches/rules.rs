//! Rule evaluation cost per reading with 10 000 and 1 000 000 readings
//! already stored: `cargo bench -p rpm-gateway --bench rules`.
//!
//! The history has the same density in both runs (100 patients, a blood
//! pressure panel, a weight and a glucose reading every 6 hours), so the
//! rule windows hold the same number of readings; only the length of the
//! record differs (6 days vs 625 days per patient). If evaluation used unbounded
//! queries the second run would be ~100× slower per reading; with bounded
//! indexed queries it should cost about the same (B-tree depth grows by a
//! level or so). The evaluator keeps recent readings in memory: the first
//! pass after a start reads each patient's windows from the store (cold),
//! a second pass of as many new readings finds them held (warm, the steady
//! state of a running gateway). Plain `main` (no criterion): one timed pass per size, plus
//! the missing-data tick over all patients, plus a `rules what-if` replay
//! of every stored reading through the bundled rules (streamed from the
//! read-only store, hourly missing-data ticks over the whole record).
//! Output: a Markdown table.

use std::sync::Arc;
use std::time::Instant;

use alerting_rules::{Engine, RuleSet};
use chrono::{TimeDelta, TimeZone, Utc};
use rpm_gateway::{set_cursor, Evaluator, EvaluatorConfig, PatientChange, Store};
use rusqlite::params;

const PATIENTS: usize = 100;
/// Readings per measurement slot: systolic, diastolic, weight, glucose.
const PER_SLOT: usize = 4;
const STEP_HOURS: i64 = 6;
/// New measurements evaluated per run.
const NEW_SLOTS: usize = 5;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 1_000_000]
    } else {
        sizes
    };
    println!("| stored readings | history per patient | new readings | evaluation µs/reading cold / warm | readings/s warm | answered from memory (warm) | missing-data tick (100 patients) ms | what-if replay of all readings s |");
    println!("|---|---|---|---|---|---|---|---|");
    for n in sizes {
        run(n);
    }
}

fn run(stored: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("bench.db")).unwrap();
    let slots = stored / (PATIENTS * PER_SLOT);
    let now = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let start = now - TimeDelta::hours(STEP_HOURS * slots as i64);
    for p in 0..PATIENTS {
        store
            .upsert_patient(
                &format!("p{p}"),
                "cli",
                &PatientChange {
                    care_plans: Some(vec![
                        "heart-failure".into(),
                        "hypertension".into(),
                        "diabetes".into(),
                    ]),
                    ..Default::default()
                },
            )
            .unwrap();
    }
    let mut n = 0u64;
    // The history, already evaluated: the cursor is at its end.
    let (tx, max) = insert(&mut store, &mut n, 0, slots, start);
    set_cursor(&tx, "rules", max).unwrap();
    tx.commit().unwrap();
    // New readings after it.
    let (tx, _) = insert(&mut store, &mut n, slots, slots + NEW_SLOTS, start);
    tx.commit().unwrap();
    let new_readings = NEW_SLOTS * PATIENTS * PER_SLOT;
    measure(store, slots, now, new_readings, &mut n, start);
}

fn insert<'s>(
    store: &'s mut Store,
    n: &mut u64,
    slot_from: usize,
    slot_to: usize,
    base: chrono::DateTime<Utc>,
) -> (rusqlite::Transaction<'s>, i64) {
    let tx = store.transaction().unwrap();
    {
        let mut q = tx
                .prepare(
                    "INSERT INTO readings (reading_id, group_id, patient_id, device_id, metric, value, unit, loinc,
                         measured_at, received_at, committed_at, source)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?9, 'mqtt')",
                )
                .unwrap();
        for s in slot_from..slot_to {
            let t = (base + TimeDelta::hours(STEP_HOURS * s as i64)).timestamp_millis();
            for p in 0..PATIENTS {
                let pid = format!("p{p}");
                let wobble = ((s * 7 + p) % 11) as f64;
                let bp_group = format!("bp-{p}-{s}");
                for (group, metric, value, unit, loinc) in [
                    (
                        bp_group.as_str(),
                        "systolic",
                        120.0 + wobble,
                        "mm[Hg]",
                        "8480-6",
                    ),
                    (
                        bp_group.as_str(),
                        "diastolic",
                        75.0 + wobble / 2.0,
                        "mm[Hg]",
                        "8462-4",
                    ),
                    (
                        &format!("w-{p}-{s}"),
                        "body_weight",
                        80.0 + wobble / 20.0,
                        "kg",
                        "29463-7",
                    ),
                    (
                        &format!("g-{p}-{s}"),
                        "blood_glucose",
                        110.0 + wobble,
                        "mg/dL",
                        "41653-7",
                    ),
                ] {
                    *n += 1;
                    q.execute(params![
                        format!("r{}", *n),
                        group,
                        pid,
                        format!("d{p}"),
                        metric,
                        value,
                        unit,
                        loinc,
                        t
                    ])
                    .unwrap();
                }
            }
        }
    }
    let max: i64 = tx
        .query_row("SELECT MAX(seq) FROM readings", [], |r| r.get(0))
        .unwrap();
    (tx, max)
}

fn measure(
    store: Store,
    slots: usize,
    now: chrono::DateTime<Utc>,
    new_readings: usize,
    n: &mut u64,
    start: chrono::DateTime<Utc>,
) {
    let engine = Arc::new(Engine::new(RuleSet::bundled().unwrap()));
    let mut ev = Evaluator::new(
        store,
        engine,
        EvaluatorConfig::default(),
        Arc::new(Default::default()),
    );
    let t = Instant::now();
    let report = ev.catch_up().unwrap();
    let cold = t.elapsed();
    assert_eq!(report.readings, new_readings);
    // As many again, the windows held.
    let before = ev.window_stats();
    let (tx, _) = insert(
        ev.store(),
        n,
        slots + NEW_SLOTS,
        slots + 2 * NEW_SLOTS,
        start,
    );
    tx.commit().unwrap();
    let t = Instant::now();
    let report = ev.catch_up().unwrap();
    let took = t.elapsed();
    assert_eq!(report.readings, new_readings);
    let after = ev.window_stats();
    let hits = after.hits - before.hits;
    let asked = hits + after.fallbacks - before.fallbacks;
    let t = Instant::now();
    ev.tick_missing(now + TimeDelta::hours(STEP_HOURS * 2 * NEW_SLOTS as i64))
        .unwrap();
    let tick = t.elapsed();
    let per = took.as_secs_f64() * 1e6 / new_readings as f64;
    let path = ev.store().path().to_path_buf();
    let conn = rpm_gateway::open_read_only(&path).unwrap();
    let t = Instant::now();
    let r = rpm_gateway::what_if(
        &conn,
        &Engine::new(RuleSet::bundled().unwrap()),
        &rpm_gateway::WhatIfQuery {
            since: Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap(),
            until: now + TimeDelta::days(4),
            patient: None,
        },
    )
    .unwrap();
    let what_if = t.elapsed();
    assert_eq!(
        r.readings as usize,
        slots * PATIENTS * PER_SLOT + 2 * new_readings
    );
    let per_cold = cold.as_secs_f64() * 1e6 / new_readings as f64;
    println!(
        "| {} | {} days | {new_readings} + {new_readings} | {per_cold:.0} / {per:.0} | {:.0} | {:.1} % ({} readings held) | {:.1} | {:.1} |",
        slots * PATIENTS * PER_SLOT,
        slots as i64 * STEP_HOURS / 24,
        1e6 / per,
        hits as f64 * 100.0 / asked.max(1) as f64,
        after.held,
        tick.as_secs_f64() * 1e3,
        what_if.as_secs_f64()
    );
}
