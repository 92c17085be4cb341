//! The worklist's cost: a care team of 5 000 patients with a year of
//! readings: `cargo bench -p rpm-gateway --bench worklist [PATIENTS] [DAYS]`.
//!
//! Builds a store the way the gateway fills it (readings in commit order,
//! patient after patient; open alerts for one patient in ten, an overdue
//! follow-up for one in twenty), lets the risk stage take it all in (data
//! days, tiers), then times the worklist's first page (50 rows) 200 times,
//! a page deep in the list, and the same first page with no team filter.
//! Plain `main` (no criterion). Output: a Markdown table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alerting_rules::RuleSet;
use chrono::{TimeDelta, Utc};
use rpm_gateway::care::risk::RiskStage;
use rpm_gateway::care::worklist::{self, parse_cursor_key};
use rpm_gateway::care::CareConfig;
use rpm_gateway::{PatientChange, Store};
use rusqlite::params;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let patients = args.first().copied().unwrap_or(5000);
    let days = args.get(1).copied().unwrap_or(365);
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
    let enrolled = (now - TimeDelta::days(days as i64 + 1)).timestamp_millis();
    store
        .conn()
        .execute("UPDATE patients SET enrolled_at = ?1", [enrolled])
        .unwrap();
    let mut readings = 0u64;
    for chunk in (0..patients).collect::<Vec<_>>().chunks(250) {
        let tx = store.transaction().unwrap();
        {
            let mut q = tx
                .prepare(
                    "INSERT INTO readings (reading_id, group_id, patient_id, device_id, metric, value, unit, loinc,
                         measured_at, received_at, committed_at, source)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'mm[Hg]', ?7, ?8, ?8, ?8, 'mqtt')",
                )
                .unwrap();
            for &p in chunk {
                let pid = format!("p{p:05}");
                // One patient in 25 went silent a week ago; others measure
                // on most days, morning and evening.
                let silent_days = if p % 25 == 0 { 7 } else { 0 };
                for d in (silent_days..days).rev() {
                    if (d * 7 + p) % 10 < 3 {
                        continue;
                    }
                    for (slot, hour) in [(0, 7), (1, 19)] {
                        let t = (now - TimeDelta::days(d as i64) - TimeDelta::hours(24 - hour))
                            .timestamp_millis();
                        let group = format!("g{p}-{d}-{slot}");
                        for (metric, value, loinc) in
                            [("systolic", 128.0, "8480-6"), ("diastolic", 82.0, "8462-4")]
                        {
                            readings += 1;
                            q.execute(params![
                                format!("r{readings}"),
                                group,
                                pid,
                                format!("cuff-{p}"),
                                metric,
                                value,
                                loinc,
                                t
                            ])
                            .unwrap();
                        }
                    }
                }
            }
        }
        tx.commit().unwrap();
    }
    let load = t0.elapsed();
    // Alerts and follow-ups.
    {
        let tx = store.transaction().unwrap();
        for p in (0..patients).filter(|p| p % 10 == 3) {
            let sev = ["warning", "urgent", "critical", "warning"][(p / 10) % 4];
            let id = format!("al{p}");
            let at = (now - TimeDelta::hours((p % 200) as i64)).timestamp_millis();
            tx.execute(
                "INSERT INTO alerts (alert_id, patient_id, rule_id, rule_version, pack, severity, status, message, fired_at, updated_at)
                 VALUES (?1, ?2, 'htn.crisis', 1, 'hypertension', ?3, 'firing', 'm', ?4, ?4)",
                params![id, format!("p{p:05}"), sev, at],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO alert_history (alert_id, at, kind, notified) VALUES (?1, ?2, 'fired', 1)",
                params![id, at],
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
    // The risk stage takes everything in.
    let mut care = CareConfig::default();
    care.risk.batch = 1000;
    let mut stage =
        RiskStage::open(&path, Arc::new(RuleSet::bundled().unwrap()), care.clone()).unwrap();
    let t1 = Instant::now();
    let mut steps = 0;
    loop {
        let r = stage.step(now).unwrap();
        steps += 1;
        if r.recomputed == 0 && r.consumed == 0 {
            break;
        }
    }
    let catch_up = t1.elapsed();
    let t2 = Instant::now();
    let mut all = 0;
    {
        // A full recompute of every patient (the hourly sweep, all at once).
        let later = now + TimeDelta::hours(2);
        loop {
            let r = stage.step(later).unwrap();
            all += r.recomputed;
            if r.recomputed == 0 {
                break;
            }
        }
    }
    let sweep = t2.elapsed();
    drop(stage);

    let store = Store::open(&path).unwrap();
    let conn = store.conn();
    let teams = vec!["north".to_string()];
    let cfg = &care.worklist;
    let time = |f: &mut dyn FnMut()| {
        let mut v: Vec<Duration> = (0..200)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect();
        v.sort();
        (v[v.len() / 2], v[v.len() * 99 / 100], v[v.len() - 1])
    };
    let first = time(&mut || {
        let p = worklist::page(conn, cfg, Some(&teams), Utc::now(), None, 51).unwrap();
        assert_eq!(p.len(), 51);
    });
    // The cursor of the 40th page.
    let mut after = None;
    for _ in 0..40 {
        let p = worklist::page(conn, cfg, Some(&teams), Utc::now(), after.clone(), 50).unwrap();
        after = p.last().and_then(|i| parse_cursor_key(&i.cursor_key()));
    }
    let deep = time(&mut || {
        worklist::page(conn, cfg, Some(&teams), Utc::now(), after.clone(), 51).unwrap();
    });
    let unscoped = time(&mut || {
        worklist::page(conn, cfg, None, Utc::now(), None, 51).unwrap();
    });
    let top = worklist::page(conn, cfg, Some(&teams), Utc::now(), None, 3).unwrap();
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    println!(
        "store: {patients} patients, {readings} readings over {days} days, built in {:.0} s; risk stage catch-up {:.1} s ({steps} steps), recompute of all {all} patients {:.1} s",
        load.as_secs_f64(),
        catch_up.as_secs_f64(),
        sweep.as_secs_f64()
    );
    println!("| query (200 runs) | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|");
    for (name, (p50, p99, max)) in [
        ("first page (50), care_team", first),
        ("41st page (50), care_team", deep),
        ("first page (50), no team filter", unscoped),
    ] {
        println!("| {name} | {} | {} | {} |", ms(p50), ms(p99), ms(max));
    }
    for i in top {
        println!("top: {} {} {:?}", i.patient_id, i.rank.score, i.reasons);
    }
}
