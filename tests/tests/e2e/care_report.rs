//! The care-time log and the RPM program report end to end: the real
//! gateway with its API on a free port and a real SQLite file; readings
//! pushed through the real HTTP ingest (some typed in by hand, two devices
//! on one day, a patient in Auckland, one in Los Angeles across the end of
//! DST), care time logged through the API and the CLI, and the report read
//! through the API (JSON and CSV) and the CLI, compared with ground truth
//! written by hand. Care-team isolation holds on every new route.

use crate::common;

use chrono::DateTime;
use common::api_client::{self as http, Api};
use common::Gateway;
use serde_json::{json, Value};

struct World {
    _dir: tempfile::TempDir,
    gw: Gateway,
    api: Api,
    admin: String,
    west: String,
    east: String,
    read_only: String,
    ingest: String,
}

/// A gateway without MQTT: care teams `west` (Los Angeles) and `east`
/// (New York); November 2026 readings are accepted whenever the test runs.
fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[store]\npath = \"{{db}}\"\n\n[normalize]\nmax_age = \"36500days\"\n\n[care]\ntime_zone = \"UTC\"\n\n[care.teams.west]\ntime_zone = \"America/Los_Angeles\"\n\n[care.teams.east]\ntime_zone = \"America/New_York\"\n\n{}",
        http::api_config("")
    );
    let mut gw = Gateway::with_config(dir.path(), &text);
    gw.start_until("api listening", &[]);
    let port = gw.api_port();
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        cacert: None,
    };
    World {
        admin: http::token(&gw, "ops", "admin", &[]),
        west: http::token(&gw, "nurse-west", "care_team", &["west"]),
        east: http::token(&gw, "nurse-east", "care_team", &["east"]),
        read_only: http::token(&gw, "auditor", "read_only", &[]),
        ingest: http::token(&gw, "vendor-cloud", "ingest", &[]),
        _dir: dir,
        gw,
        api,
    }
}

fn epoch(t: &str) -> i64 {
    DateTime::parse_from_rfc3339(t).unwrap().timestamp()
}

/// A weight through the generic SenML profile; `manual` adds the `entry`
/// record a patient app sends for a typed-in value.
fn push_weight(w: &World, device: &str, at: &str, manual: bool) {
    let mut pack = vec![json!({"bt": epoch(at), "n": "body_weight", "u": "kg", "v": 81.5})];
    if manual {
        pack.push(json!({"n": "entry", "vs": "manual"}));
    }
    let r = w.api.send(
        "POST",
        "/api/v1/readings",
        &w.ingest,
        &json!({"device_id": device, "profile": "senml-generic", "payload": pack}),
    );
    r.expect(200);
    assert_eq!(
        r.json()["measurements"][0]["outcome"],
        "stored",
        "{}",
        r.text()
    );
}

/// A blood pressure through a vendor JSON profile.
fn push_bp(w: &World, device: &str, at: &str, manual: bool) {
    let mut payload = json!({"measured_at": at, "sys": 128, "dia": 82, "unit": "mmHg"});
    if manual {
        payload["entry"] = json!("manual");
    }
    let r = w.api.send(
        "POST",
        "/api/v1/readings",
        &w.ingest,
        &json!({"device_id": device, "profile": "acme-bp-cuff", "payload": payload}),
    );
    r.expect(200);
    assert_eq!(
        r.json()["measurements"][0]["outcome"],
        "stored",
        "{}",
        r.text()
    );
}

fn log_time(w: &World, token: &str, patient: &str, body: Value, key: Option<&str>) -> http::Resp {
    let b = serde_json::to_vec(&body).unwrap();
    let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
    w.api.request_with(
        "POST",
        &format!("/api/v1/patients/{patient}/care-time"),
        Some(token),
        &headers,
        Some(("application/json", &b)),
    )
}

/// Three patients, their devices and readings, and care time.
fn setup(w: &World) {
    for (patient, body) in [
        (
            "la-1",
            json!({"care_team": "west", "monitoring_start": "2026-10-03"}),
        ),
        (
            "akl-1",
            json!({"care_team": "west", "time_zone": "Pacific/Auckland"}),
        ),
        ("ny-1", json!({"care_team": "east"})),
    ] {
        w.api
            .send(
                "PUT",
                &format!("/api/v1/patients/{patient}"),
                &w.admin,
                &body,
            )
            .expect(201);
    }
    let r = w.api.send(
        "PUT",
        "/api/v1/patients/akl-1",
        &w.admin,
        &json!({"time_zone": "Mars/Olympus"}),
    );
    assert!(r.problem(422).contains("IANA"));
    for (device, patient) in [
        ("cuff-la", "la-1"),
        ("scale-la", "la-1"),
        ("cuff-akl", "akl-1"),
        ("app-akl", "akl-1"),
        ("scale-ny", "ny-1"),
    ] {
        w.api
            .send(
                "POST",
                "/api/v1/devices",
                &w.admin,
                &json!({"device_id": device, "patient_id": patient}),
            )
            .expect(201);
    }
    // Los Angeles: Oct 2 23:30 PDT (before the episode), Oct 3 on two
    // devices, Oct 10 typed in, Nov 1 23:45 PST (Nov 2 in UTC), Nov 2.
    push_bp(w, "cuff-la", "2026-10-03T06:30:00Z", false);
    push_bp(w, "cuff-la", "2026-10-03T16:00:00Z", false);
    push_weight(w, "scale-la", "2026-10-03T18:00:00Z", false);
    push_bp(w, "cuff-la", "2026-10-10T16:00:00Z", true);
    push_bp(w, "cuff-la", "2026-11-02T07:45:00Z", false);
    push_bp(w, "cuff-la", "2026-11-02T08:30:00Z", false);
    // Auckland (UTC+13): a typed-in value first, then Nov 1 01:30,
    // Nov 30 23:59 and Dec 1 00:30 local.
    push_weight(w, "app-akl", "2026-10-20T00:00:00Z", true);
    push_bp(w, "cuff-akl", "2026-10-31T12:30:00Z", false);
    push_bp(w, "cuff-akl", "2026-11-30T10:59:00Z", false);
    push_bp(w, "cuff-akl", "2026-11-30T11:30:00Z", false);
    // New York: a weight every day from Nov 1 to Nov 20, 10:00 EST, in one pack.
    let pack: Vec<Value> = (1..=20)
        .map(|d| {
            json!({"bt": epoch(&format!("2026-11-{d:02}T15:00:00Z")), "n": "body_weight", "u": "kg", "v": 90})
        })
        .collect();
    let r = w.api.send(
        "POST",
        "/api/v1/readings",
        &w.ingest,
        &json!({"device_id": "scale-ny", "profile": "senml-generic", "payload": pack}),
    );
    r.expect(200);
    assert_eq!(r.json()["measurements"].as_array().unwrap().len(), 20);

    // Care time. A call, retried with the same Idempotency-Key: once.
    let call = json!({"minutes": 12, "activity": "patient_call", "interactive": true, "performed_at": "2026-11-10T18:00:00Z"});
    let first = log_time(w, &w.west, "la-1", call.clone(), Some("call-1"));
    first.expect(201);
    let again = log_time(w, &w.west, "la-1", call, Some("call-1"));
    again.expect(200);
    assert_eq!(first.json()["entry_id"], again.json()["entry_id"]);
    let other = json!({"minutes": 13, "activity": "patient_call", "interactive": true, "performed_at": "2026-11-10T18:00:00Z"});
    log_time(w, &w.west, "la-1", other, Some("call-1")).problem(409);
    // A review logged as 10 minutes, corrected to 15 (start and stop).
    let review = json!({"entry_id": "la-review-1", "minutes": 10, "activity": "data_review", "performed_at": "2026-11-12T18:00:00Z"});
    log_time(w, &w.west, "la-1", review.clone(), None).expect(201);
    log_time(w, &w.west, "la-1", review, None).expect(200);
    let fix = json!({"corrects": "la-review-1", "started_at": "2026-11-12T18:00:00Z", "ended_at": "2026-11-12T18:15:00Z", "activity": "data_review", "note": "timer was off"});
    let fixed = log_time(w, &w.west, "la-1", fix.clone(), None);
    fixed.expect(201);
    assert_eq!(fixed.json()["minutes"], 15.0);
    let twice = json!({"corrects": "la-review-1", "minutes": 20, "activity": "data_review", "performed_at": "2026-11-12T18:00:00Z"});
    assert!(log_time(w, &w.west, "la-1", twice, None)
        .problem(409)
        .contains("already corrected"));
    // Oct 31 23:30 PDT: October's, not November's.
    log_time(
        w,
        &w.admin,
        "la-1",
        json!({"minutes": 10, "activity": "care_coordination", "performed_at": "2026-11-01T06:30:00Z"}),
        None,
    )
    .expect(201);
    // New York: 45 interactive minutes.
    log_time(
        w,
        &w.east,
        "ny-1",
        json!({"minutes": 45, "activity": "patient_call", "interactive": true, "performed_at": "2026-11-05T16:00:00Z"}),
        None,
    )
    .expect(201);
    // Auckland, from the CLI: 8 interactive minutes (Nov 15 local).
    let out = w.gw.cli(&[
        "care-time",
        "log",
        "--patient",
        "akl-1",
        "--minutes",
        "8",
        "--activity",
        "patient_call",
        "--interactive",
        "--at",
        "2026-11-15T01:00:00Z",
        "--note",
        "weekly call",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("logged ct-"));
}

/// The parts of a patient's report the ground truth states.
fn summary(p: &Value) -> Value {
    let codes = |c: &Value| -> Vec<String> {
        c.as_array()
            .unwrap()
            .iter()
            .map(|u| format!("{}x{}", u["code"].as_str().unwrap(), u["units"]))
            .collect()
    };
    json!({
        "time_zone": p["time_zone"],
        "monitoring_start": p["monitoring_start"],
        "monitoring_start_from": p["monitoring_start_from"],
        "periods": p["periods"].as_array().unwrap().iter().map(|x| json!([
            x["number"], x["start"], x["end"], x["data_days"], x["manual_only_days"], codes(&x["codes"])
        ])).collect::<Vec<_>>(),
        "month": [p["month"]["data_days"], p["month"]["care_minutes"], p["month"]["interactive_minutes"],
                  p["month"]["interactive_contacts"], codes(&p["month"]["codes"])],
        "warnings": p["warnings"].as_array().unwrap().iter().map(|w| w["code"].clone()).collect::<Vec<_>>(),
    })
}

fn ground_truth() -> Vec<(&'static str, Value)> {
    vec![
        (
            "akl-1",
            json!({
                "time_zone": "Pacific/Auckland",
                "monitoring_start": "2026-11-01",
                "monitoring_start_from": "first_reading",
                "periods": [[1, "2026-11-01", "2026-11-30", 2, 0, ["99453x1", "99445x1"]]],
                "month": [2, 8, 8, 1, []],
                "warnings": ["minutes_below_threshold"],
            }),
        ),
        (
            "la-1",
            json!({
                "time_zone": "America/Los_Angeles",
                "monitoring_start": "2026-10-03",
                "monitoring_start_from": "patient",
                "periods": [[1, "2026-10-03", "2026-11-01", 2, 1, ["99453x1", "99445x1"]]],
                "month": [2, 27, 12, 1, ["99457x1"]],
                "warnings": ["manual_readings_not_counted"],
            }),
        ),
        (
            "ny-1",
            json!({
                "time_zone": "America/New_York",
                "monitoring_start": "2026-11-01",
                "monitoring_start_from": "first_reading",
                "periods": [[1, "2026-11-01", "2026-11-30", 20, 0, ["99453x1", "99454x1"]]],
                "month": [20, 45, 45, 1, ["99457x1", "99458x1"]],
                "warnings": [],
            }),
        ),
    ]
}

const CSV: &[&str] = &[
    "2026-11,akl-1,west,Pacific/Auckland,device_period,1,2026-11-01,2026-11-30,true,2,0,,,,1,1,0,0,0,0,",
    "2026-11,akl-1,west,Pacific/Auckland,treatment_month,,2026-11-01,2026-11-30,true,2,,8,8,1,0,0,0,0,0,0,minutes_below_threshold",
    "2026-11,la-1,west,America/Los_Angeles,device_period,1,2026-10-03,2026-11-01,true,2,1,,,,1,1,0,0,0,0,",
    "2026-11,la-1,west,America/Los_Angeles,treatment_month,,2026-11-01,2026-11-30,true,2,,27,12,1,0,0,0,0,1,0,manual_readings_not_counted",
    "2026-11,ny-1,east,America/New_York,device_period,1,2026-11-01,2026-11-30,true,20,0,,,,1,0,1,0,0,0,",
    "2026-11,ny-1,east,America/New_York,treatment_month,,2026-11-01,2026-11-30,true,20,,45,45,1,0,0,0,0,1,1,",
];

#[test]
fn rpm_report_through_api_and_cli_matches_the_ground_truth() {
    let w = world();
    setup(&w);

    let r = w.api.get("/api/v1/reports/rpm?period=2026-11", &w.admin);
    r.expect(200);
    let report = r.json();
    assert_eq!(report["period"], "2026-11");
    assert!(report["notice"]
        .as_str()
        .unwrap()
        .contains("Not billing advice"));
    assert!(report["fee_schedule"]
        .as_str()
        .unwrap()
        .contains("90 FR 49266"));
    let patients = report["patients"].as_array().unwrap();
    let ids: Vec<&str> = patients
        .iter()
        .map(|p| p["patient_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["akl-1", "la-1", "ny-1"]);
    for ((id, want), p) in ground_truth().into_iter().zip(patients) {
        assert_eq!(summary(p), want, "{id}: {p:#}");
    }
    let totals: Vec<(String, u64, u64)> = report["totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["code"].as_str().unwrap().to_string(),
                t["patients"].as_u64().unwrap(),
                t["units"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64, u64)> = [
        ("99453", 3, 3),
        ("99445", 2, 2),
        ("99454", 1, 1),
        ("99470", 0, 0),
        ("99457", 2, 2),
        ("99458", 1, 1),
    ]
    .iter()
    .map(|&(c, p, u)| (c.to_string(), p, u))
    .collect();
    assert_eq!(totals, want);

    // CSV, asked for by Accept or by format: the same lines.
    let by_accept = w.api.request_with(
        "GET",
        "/api/v1/reports/rpm?period=2026-11",
        Some(&w.admin),
        &[("Accept", "text/csv")],
        None,
    );
    by_accept.expect(200);
    assert!(by_accept
        .header("content-type")
        .unwrap()
        .starts_with("text/csv"));
    let csv = by_accept.text();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("# Data-sufficiency report") && lines[0].contains("90 FR 49266"));
    assert_eq!(lines[1], rpm_gateway::care::report::CSV_HEADER);
    assert_eq!(&lines[2..], CSV, "{csv}");
    let by_param = w
        .api
        .get("/api/v1/reports/rpm?period=2026-11&format=csv", &w.admin);
    assert_eq!(by_param.text(), csv);

    // The CLI: the same CSV, the same JSON (but for when it was made).
    let out =
        w.gw.cli(&["report", "rpm", "--period", "2026-11", "--format", "csv"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), csv);
    let out =
        w.gw.cli(&["report", "rpm", "--period", "2026-11", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut api = report.clone();
    cli["generated_at"] = Value::Null;
    api["generated_at"] = Value::Null;
    assert_eq!(cli, api);
    let out = w.gw.cli(&[
        "report",
        "rpm",
        "--period",
        "2026-11",
        "--care-team",
        "east",
    ]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("ny-1") && !table.contains("la-1"), "{table}");
    assert!(table.contains("99457, 99458"), "{table}");

    // October: la-1's minute entry of Oct 31 (local); no period ends there.
    let oct = w
        .api
        .get("/api/v1/reports/rpm?period=2026-10", &w.admin)
        .json();
    let la = oct["patients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["patient_id"] == "la-1")
        .unwrap();
    assert_eq!(la["month"]["care_minutes"], 10);
    assert_eq!(la["periods"], json!([]));

    w.api
        .get("/api/v1/reports/rpm?period=2026-13", &w.admin)
        .problem(400);
    w.api.get("/api/v1/reports/rpm", &w.admin).problem(400);
    w.api
        .get("/api/v1/reports/rpm?period=2026-11&format=xml", &w.admin)
        .problem(400);
}

#[test]
fn care_time_and_the_report_are_care_team_isolated_and_audited() {
    let w = world();
    setup(&w);

    // A care team sees its own patients only; another team's is empty.
    let east = w
        .api
        .get("/api/v1/reports/rpm?period=2026-11", &w.east)
        .json();
    let ids: Vec<&str> = east["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["patient_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["ny-1"]);
    let other = w
        .api
        .get("/api/v1/reports/rpm?period=2026-11&care_team=west", &w.east)
        .json();
    assert_eq!(other["patients"], json!([]));
    assert!(other["totals"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["units"] == 0));
    let csv = w
        .api
        .get("/api/v1/reports/rpm?period=2026-11&format=csv", &w.east)
        .text();
    assert!(
        csv.contains("ny-1") && !csv.contains("la-1") && !csv.contains("akl-1"),
        "{csv}"
    );
    assert_eq!(
        w.api
            .get("/api/v1/reports/rpm?period=2026-11", &w.read_only)
            .json()["patients"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    w.api
        .get("/api/v1/reports/rpm?period=2026-11", &w.ingest)
        .problem(403);

    // Another team's patient is not found, for reading and for writing;
    // a patient that does not exist looks the same.
    w.api
        .get("/api/v1/patients/la-1/care-time", &w.east)
        .problem(404);
    w.api
        .get("/api/v1/patients/nobody/care-time", &w.admin)
        .problem(404);
    let call = json!({"minutes": 5, "activity": "patient_call", "interactive": true});
    log_time(&w, &w.east, "la-1", call.clone(), None).problem(404);
    log_time(&w, &w.east, "nobody", call.clone(), None).problem(404);
    log_time(&w, &w.read_only, "la-1", call.clone(), None).problem(403);
    log_time(&w, &w.ingest, "la-1", call, None).problem(403);
    let bad = json!({"minutes": 5, "activity": "golf"});
    assert!(log_time(&w, &w.west, "la-1", bad, None)
        .problem(400)
        .contains("activity"));
    let unknown = json!({"minutes": 5, "activity": "other", "corrects": "no-such-entry"});
    log_time(&w, &w.west, "la-1", unknown, None).problem(422);

    // The list: newest first, keyset-paged, the corrected entry marked.
    let page = w
        .api
        .get("/api/v1/patients/la-1/care-time?limit=2", &w.west);
    page.expect(200);
    let page = page.json();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    // The correction (recorded later, performed at the same time) first.
    assert_eq!(items[0]["corrects"], "la-review-1");
    assert_eq!(items[0]["counts"], true);
    assert_eq!(items[1]["entry_id"], "la-review-1");
    assert_eq!(items[1]["counts"], false);
    assert_eq!(items[1]["superseded_by"], items[0]["entry_id"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = w
        .api
        .get(
            &format!("/api/v1/patients/la-1/care-time?limit=2&cursor={cursor}"),
            &w.west,
        )
        .json();
    let rest: Vec<&Value> = rest["items"].as_array().unwrap().iter().collect();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0]["minutes"], 12.0);
    assert_eq!(rest[1]["performed_at"], "2026-11-01T06:30:00Z");
    assert!(rest.iter().all(|e| e["counts"] == true));

    // The CLI list.
    let out =
        w.gw.cli(&["care-time", "list", "--patient", "akl-1", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["recorded_by"], "cli");
    assert_eq!(lines[0]["note"], "weekly call");

    // Every write and read is in the audit log.
    let db = w.gw.db();
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        count("SELECT COUNT(*) FROM audit_log WHERE action = 'care_time.log'"),
        6,
        "one row per entry stored (retries store nothing)"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM audit_log WHERE action = 'care_time.log' AND actor = 'cli' AND patient_id = 'akl-1'"),
        1
    );
    assert!(count("SELECT COUNT(*) FROM audit_log WHERE action = 'POST /api/v1/patients/{patient_id}/care-time' AND patient_id = 'la-1' AND outcome = 404") >= 1);
    assert!(count("SELECT COUNT(*) FROM audit_log WHERE action = 'GET /api/v1/patients/{patient_id}/care-time' AND patient_id = 'la-1' AND outcome = 200") >= 2);
    assert!(count("SELECT COUNT(*) FROM audit_log WHERE action = 'GET /api/v1/reports/rpm'") >= 5);
    assert_eq!(count("SELECT COUNT(*) FROM audit_log WHERE action = 'care_time.list' AND patient_id = 'akl-1'"), 1);
    // Nothing was ever changed or deleted: a row per entry, superseded kept.
    assert_eq!(count("SELECT COUNT(*) FROM care_time"), 6);
}
