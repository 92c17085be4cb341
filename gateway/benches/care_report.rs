//! The RPM program report over 10 000 patients and a month of readings:
//! `cargo bench -p rpm-gateway --bench care_report [PATIENTS]`.
//!
//! Each patient has a blood-pressure panel (systolic, diastolic, MAP,
//! pulse) on about 25 days of November 2026 at a time of day of their own,
//! a weight on every third day, one typed-in reading, and three care-time
//! entries (one of them corrected). Patients are spread over four care
//! teams in four time zones (Los Angeles, New York, UTC, Auckland); a third
//! have a monitoring start set in October (their period ending in November
//! reaches back into it), a tenth one in June with no data before November
//! (the search for the episode's first period with 2 data days scans their
//! history), the rest start on their first reading. Plain `main` (no
//! criterion): the store is built once, then the report is made three
//! times (the first on a cold page cache of the connection), and rendered
//! as JSON and CSV. Output: a Markdown table.

use std::time::Instant;

use chrono::{TimeDelta, TimeZone, Utc};
use rpm_gateway::care::report::{self, RpmQuery};
use rpm_gateway::care::CareConfig;
use rpm_gateway::{PatientChange, Store};
use rusqlite::params;

const TEAMS: [&str; 4] = ["west", "east", "central", "auckland"];

fn main() {
    let patients: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let mut store = Store::open(&path).unwrap();
    let t0 = Instant::now();
    let (readings, entries) = fill(&mut store, patients);
    let fill_s = t0.elapsed().as_secs_f64();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    drop(store);

    let care: CareConfig = toml::from_str(
        "time_zone = \"UTC\"\n[teams.west]\ntime_zone = \"America/Los_Angeles\"\n[teams.east]\ntime_zone = \"America/New_York\"\n[teams.auckland]\ntime_zone = \"Pacific/Auckland\"\n",
    )
    .unwrap();
    let q = RpmQuery {
        month: report::parse_month("2026-11").unwrap(),
        care_team: None,
        scope: None,
        now: Utc.with_ymd_and_hms(2026, 12, 5, 0, 0, 0).unwrap(),
    };
    println!("| patients | readings | care-time entries | store MB | fill s | report s (run 1, 2, 3) | patients/s | JSON s | CSV s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    // A fresh connection, as the CLI and the API's pool open them.
    let store = Store::open(&path).unwrap();
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let t = Instant::now();
        let r = report::rpm_report(store.conn(), &care, &q).unwrap();
        times.push(t.elapsed().as_secs_f64());
        last = Some(r);
    }
    let r = last.unwrap();
    assert_eq!(r.patients.len(), patients);
    let t = Instant::now();
    let json = serde_json::to_vec(&r).unwrap();
    let json_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let csv = report::to_csv(&r);
    let csv_s = t.elapsed().as_secs_f64();
    let best = times.iter().copied().fold(f64::MAX, f64::min);
    println!(
        "| {patients} | {readings} | {entries} | {:.0} | {fill_s:.1} | {:.2}, {:.2}, {:.2} | {:.0} | {json_s:.2} | {csv_s:.2} |",
        size as f64 / 1e6,
        times[0],
        times[1],
        times[2],
        patients as f64 / best,
    );
    let supported = |code: &str| {
        r.totals
            .iter()
            .find(|t| t.code.as_str() == code)
            .map_or(0, |t| t.patients)
    };
    eprintln!(
        "{} bytes of JSON, {} of CSV; patients with 99454: {}, 99445: {}, 99453: {}, 99457: {}",
        json.len(),
        csv.len(),
        supported("99454"),
        supported("99445"),
        supported("99453"),
        supported("99457"),
    );
}

/// A care-time row: (id suffix, activity, seconds, performed at, interactive, corrects).
type Entry = (&'static str, &'static str, i64, i64, bool, Option<String>);

/// Patients, readings and care time; returns (readings, entries).
fn fill(store: &mut Store, patients: usize) -> (usize, usize) {
    for p in 0..patients {
        let start = match p % 10 {
            0 => Some(chrono::NaiveDate::from_ymd_opt(2026, 6, 1).unwrap()),
            1 | 4 | 7 => Some(chrono::NaiveDate::from_ymd_opt(2026, 10, 20).unwrap()),
            _ => None,
        };
        store
            .upsert_patient(
                &format!("p{p:05}"),
                "cli",
                &PatientChange {
                    care_team: Some(Some(TEAMS[p % 4].to_string())),
                    monitoring_start: Some(start),
                    ..Default::default()
                },
            )
            .unwrap();
    }
    let month = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    let mut readings = 0;
    let mut entries = 0;
    let tx = store.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO readings (reading_id, group_id, patient_id, device_id, metric, value, unit, loinc,
                     measured_at, received_at, committed_at, source, annotations)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?9, 'mqtt', ?10)",
            )
            .unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for p in 0..patients {
            let patient = format!("p{p:05}");
            let minute = i64::try_from(rand() % 1440).unwrap();
            for day in 0..30i64 {
                if rand() % 6 == 0 {
                    continue;
                }
                let at = month + TimeDelta::days(day) + TimeDelta::minutes(minute);
                let ms = at.timestamp_millis();
                let group = format!("{patient}-bp-{day}");
                for (metric, value, unit, loinc) in [
                    ("systolic", 128.0, "mm[Hg]", "8480-6"),
                    ("diastolic", 82.0, "mm[Hg]", "8462-4"),
                    ("mean_arterial_pressure", 97.0, "mm[Hg]", "8478-0"),
                    ("pulse_rate", 70.0, "/min", "8867-4"),
                ] {
                    insert
                        .execute(params![
                            format!("{group}-{metric}"),
                            group,
                            patient,
                            format!("cuff-{p}"),
                            metric,
                            value,
                            unit,
                            loinc,
                            ms,
                            "{}"
                        ])
                        .unwrap();
                    readings += 1;
                }
                if day % 3 == 0 {
                    let ms = ms + 600_000;
                    insert
                        .execute(params![
                            format!("{patient}-w-{day}"),
                            format!("{patient}-w-{day}"),
                            patient,
                            format!("scale-{p}"),
                            "body_weight",
                            80.0,
                            "kg",
                            "29463-7",
                            ms,
                            "{}"
                        ])
                        .unwrap();
                    readings += 1;
                }
            }
            let ms = (month + TimeDelta::days(12) + TimeDelta::hours(3)).timestamp_millis();
            insert
                .execute(params![
                    format!("{patient}-manual"),
                    format!("{patient}-manual"),
                    patient,
                    format!("app-{p}"),
                    "body_weight",
                    80.5,
                    "kg",
                    "29463-7",
                    ms,
                    "{\"entry\":\"manual\"}"
                ])
                .unwrap();
            readings += 1;
        }
        let mut care = tx
            .prepare(
                "INSERT INTO care_time (entry_id, patient_id, activity, seconds, performed_at, interactive,
                     recorded_by, recorded_at, corrects, request_digest)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'bench', ?5, ?7, '')",
            )
            .unwrap();
        for p in 0..patients {
            let patient = format!("p{p:05}");
            let at =
                |d: i64| (month + TimeDelta::days(d) + TimeDelta::hours(17)).timestamp_millis();
            let rows: [Entry; 3] = [
                ("call", "patient_call", 12 * 60, at(4), true, None),
                ("review", "data_review", 10 * 60, at(9), false, None),
                (
                    "review-fix",
                    "data_review",
                    15 * 60,
                    at(9),
                    false,
                    Some(format!("{patient}-review")),
                ),
            ];
            for (id, activity, seconds, when, interactive, corrects) in rows {
                care.execute(params![
                    format!("{patient}-{id}"),
                    patient,
                    activity,
                    seconds,
                    when,
                    interactive,
                    corrects
                ])
                .unwrap();
                entries += 1;
            }
        }
    }
    tx.commit().unwrap();
    (readings, entries)
}
