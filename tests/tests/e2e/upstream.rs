//! Home box → program hub end to end: two real gateway processes, each
//! with its own SQLite store. The box takes readings from a real Mosquitto
//! and forwards them (`[forward.upstream]`) to the hub's real HTTP API
//! (`POST /api/v1/upstream/readings`) with a hub-issued ingest token.
//! Every reading arrives exactly once (same reading ids on both sides)
//! through a hub outage and a box crash between the hub's commit and the
//! box's cursor; a box token cannot push for another box's device.

use crate::common;

use common::api_client::Api;
use common::{wait_until, Gateway, Mosquitto, PortHold};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);
const CURSOR: &str = "forward.upstream";

/// A hub: no sources, the API on `port`, the box's devices registered.
fn hub(dir: &Path, port: u16) -> Gateway {
    Gateway::with_config(
        dir,
        &format!(
            "[store]\npath = \"{{db}}\"\n\n[api]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\naddress_file = \"api.addr\"\nmax_body_bytes = 65536\n\n\
             [[devices]]\nid = \"scale-1\"\npatient = \"p1\"\n\n[[devices]]\nid = \"scale-2\"\npatient = \"p2\"\n"
        ),
    )
}

/// A hub-issued token for a box, limited to `devices`.
fn box_token(hub: &Gateway, name: &str, devices: &[&str]) -> String {
    let mut args = vec!["tokens", "create", name, "--role", "ingest"];
    for d in devices {
        args.extend(["--device", d]);
    }
    let out = hub.cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn upstream_section(port: u16, token: &str) -> String {
    format!(
        "[forward.upstream]\nurl = \"http://127.0.0.1:{port}\"\nallow_http = true\ntoken = \"{token}\"\nbatch_size = 10\nflush_interval = \"100ms\"\nmax_backoff = \"500ms\"\ntimeout = \"5s\"\n"
    )
}

fn reading_ids(gw: &Gateway) -> BTreeSet<String> {
    let db = gw.db();
    let mut q = db.prepare("SELECT reading_id FROM readings").unwrap();
    q.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// `n` scale messages starting at `from` (one weight reading each).
fn weights(from: u64, n: u64) -> Vec<String> {
    (from..from + n)
        .map(|i| {
            format!(
                r#"{{"readings":[{{"ts":{},"weight":{},"unit":"kg","seq":{i}}}]}}"#,
                1_769_845_200 + i * 60,
                80.0 + i as f64 / 10.0
            )
        })
        .collect()
}

/// Waits until the hub holds exactly the box's readings and the box's
/// cursor is at its newest reading.
fn converged(boxgw: &Gateway, hubgw: &Gateway, n: i64) {
    wait_until(&format!("{n} readings at the box"), T, || {
        boxgw.readings() == n
    });
    wait_until(&format!("{n} readings at the hub"), T, || {
        hubgw.readings() == n
    });
    let newest = boxgw.count("SELECT MAX(seq) FROM readings");
    wait_until("the box's cursor at its newest reading", T, || {
        boxgw.cursor(CURSOR) == newest
    });
    assert_eq!(reading_ids(hubgw), reading_ids(boxgw));
}

#[test]
fn readings_reach_the_hub_once_through_an_outage_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (hub_dir, box_dir) = (dir.path().join("hub"), dir.path().join("box"));
    std::fs::create_dir_all(&hub_dir).unwrap();
    std::fs::create_dir_all(&box_dir).unwrap();
    // The hub's port is held for the whole test: it comes back on it.
    let hold = PortHold::any();
    let port = hold.port;
    let mut hubgw = hub(&hub_dir, port);
    let token = box_token(&hubgw, "box-1", &["scale-1"]);
    hubgw.start_unready(&[]);
    assert_eq!(hubgw.api_port(), port);

    let broker = Mosquitto::start(&box_dir);
    let mut boxgw = Gateway::new(
        &box_dir,
        broker.port,
        &[("scale-1", "p1")],
        &upstream_section(port, &token),
    );
    boxgw.start();
    broker.publish_lines("acme/scale/scale-1", &weights(0, 25));
    converged(&boxgw, &hubgw, 25);

    // The hub is away: the box keeps storing, and catches up once it is back.
    assert_eq!(hubgw.stop().code(), Some(0));
    broker.publish_lines("acme/scale/scale-1", &weights(25, 25));
    wait_until("50 readings at the box", T, || boxgw.readings() == 50);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        hubgw.readings(),
        25,
        "nothing can arrive while the hub is down"
    );
    assert!(boxgw.log().contains("upstream write failed"));
    hubgw.start_unready(&[]);
    assert_eq!(hubgw.api_port(), port);
    converged(&boxgw, &hubgw, 50);

    // The box dies after the hub committed a batch, before its cursor
    // moved: the batch is sent again and the hub keeps it once.
    assert_eq!(boxgw.stop().code(), Some(0));
    boxgw.start_with_env(&[("RPM_FAULT_INJECT", "abort-after-forward")]);
    broker.publish_lines("acme/scale/scale-1", &weights(50, 25));
    let status = boxgw.wait_exit(T);
    assert!(!status.success(), "the fault point aborts the box");
    let hub_before = hubgw.readings();
    assert!(
        hub_before > 50,
        "the hub committed the batch before the crash"
    );
    boxgw.start();
    converged(&boxgw, &hubgw, 75);
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        cacert: None,
    };
    let metrics = api.request("GET", "/metrics", None, None).text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rpm_readings_duplicate_total{source=\"upstream\"}")),
        "the re-sent batch was counted as duplicates at the hub:\n{metrics}"
    );

    // Stored at the hub as canonical readings: source kept, box named.
    assert_eq!(
        hubgw.count(
            "SELECT COUNT(*) FROM readings WHERE source = 'mqtt' AND patient_id = 'p1' \
             AND json_extract(annotations, '$.via') = 'upstream:box-1'"
        ),
        75
    );
    let columns =
        "reading_id, group_id, panel, device_id, metric, value, unit, loinc, device_measured_at, \
                   measured_at, received_at, source, sequence, content_digest";
    let rows = |gw: &Gateway| -> Vec<String> {
        let db = gw.db();
        let mut q = db
            .prepare(&format!(
                "SELECT json_array({columns}) FROM readings ORDER BY reading_id"
            ))
            .unwrap();
        q.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(rows(&hubgw), rows(&boxgw), "every column arrives as stored");
    // The box's operator sees the link caught up.
    let out = boxgw.cli(&["forward", "status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["upstream"]["backlog"], 0, "{status}");
    assert!(status["upstream"]["cursor_updated_at"].is_i64(), "{status}");
    drop(hold);
}

#[test]
fn a_box_token_pushes_only_for_its_own_devices() {
    let dir = tempfile::tempdir().unwrap();
    let hold = PortHold::any();
    let port = hold.port;
    let mut hubgw = hub(dir.path(), port);
    let token = box_token(&hubgw, "box-1", &["scale-1"]);
    let any_device = box_token(&hubgw, "unscoped", &[]);
    hubgw.start_unready(&[]);
    hubgw.api_port();
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        cacert: None,
    };
    let line = |device: &str, id: &str| {
        format!(
            r#"{{"reading_id":"{id}","group_id":"g-{id}","panel":null,"patient_id":"p","device_id":"{device}","metric":"body_weight","value":80.5,"unit":"kg","loinc":"29463-7","device_measured_at":null,"measured_at":"2026-01-31T07:00:00Z","received_at":"2026-01-31T07:00:01Z","source":"mqtt","sequence":null,"annotations":{{}},"content_digest":null}}"#
        )
    };
    let push = |token: &str, body: String| {
        api.request(
            "POST",
            "/api/v1/upstream/readings",
            Some(token),
            Some(("application/x-ndjson", body.as_bytes())),
        )
    };
    // One reading for another box's device refuses the whole batch.
    let mixed = format!("{}\n{}\n", line("scale-1", "r1"), line("scale-2", "r2"));
    push(&token, mixed).problem(403);
    // An ingest token that names no device is not a box's token.
    push(&any_device, format!("{}\n", line("scale-1", "r1"))).problem(403);
    assert_eq!(hubgw.readings(), 0, "nothing stored");
    // Its own device: stored, and a re-send is a duplicate.
    let own = format!("{}\n", line("scale-1", "r1"));
    let r = push(&token, own.clone());
    r.expect(200);
    assert_eq!(r.json()["stored"], 1);
    let r = push(&token, own);
    r.expect(200);
    assert_eq!(r.json()["duplicates"], 1);
    assert_eq!(hubgw.readings(), 1);
    // Quarantine records: only for its own devices too.
    let record = |device: &str| {
        format!(
            r#"{{"id":1,"received_at":"2026-01-31T07:00:01Z","source":"mqtt","origin":"acme/scale/{device}","profile":null,"device_id":"{device}","measurement_index":0,"count":1,"measurement_indexes":null,"reason":"unknown_device","detail":"not assigned","status":"open","payload":"e30=","facts":null}}"#
        )
    };
    let push_q = |token: &str, body: String| {
        api.request(
            "POST",
            "/api/v1/upstream/quarantine",
            Some(token),
            Some(("application/x-ndjson", body.as_bytes())),
        )
    };
    push_q(&token, format!("{}\n", record("scale-2"))).problem(403);
    let r = push_q(&token, format!("{}\n", record("scale-1")));
    r.expect(200);
    assert_eq!(r.json()["stored"], 1);
    assert_eq!(
        push_q(&token, format!("{}\n", record("scale-1"))).json()["duplicates"],
        1
    );
    // Its share names only its devices, and an unchanged share is a 304.
    let share = api.request("GET", "/api/v1/upstream/share", Some(&token), None);
    share.expect(200);
    assert_eq!(
        share.json(),
        serde_json::json!({"devices": [{"device_id": "scale-1", "patient_id": "p1"}], "patients": []})
    );
    let etag = share.header("etag").unwrap().to_string();
    api.request_with(
        "GET",
        "/api/v1/upstream/share",
        Some(&token),
        &[("If-None-Match", &etag)],
        None,
    )
    .expect(304);
    api.request("GET", "/api/v1/upstream/share", Some(&any_device), None)
        .problem(403);
    // The refusals and the pushes are in the audit log.
    assert!(
        hubgw.count(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'POST /api/v1/upstream/readings' AND outcome = 403"
        ) >= 2
    );
    drop(hold);
}

/// A hub that refuses the box's batch (a device the token does not name)
/// does not make the box skip it: the box holds it, says so on `/readyz`
/// and in its metrics, and sends it once the hub accepts it.
#[test]
fn a_refused_batch_is_held_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (hub_dir, box_dir) = (dir.path().join("hub"), dir.path().join("box"));
    std::fs::create_dir_all(&hub_dir).unwrap();
    std::fs::create_dir_all(&box_dir).unwrap();
    let hold = PortHold::any();
    let port = hold.port;
    let mut hubgw = hub(&hub_dir, port);
    let token = box_token(&hubgw, "box-2", &["scale-1"]);
    hubgw.start_unready(&[]);
    hubgw.api_port();
    let broker = Mosquitto::start(&box_dir);
    let mut boxgw = Gateway::new(
        &box_dir,
        broker.port,
        &[("scale-2", "p2")],
        &format!(
            "{}\n{}",
            upstream_section(port, &token),
            common::api_client::api_config("")
        ),
    );
    boxgw.start();
    let box_api = Api {
        base: format!("http://127.0.0.1:{}", boxgw.api_port()),
        cacert: None,
    };
    broker.publish_lines("acme/scale/scale-2", &weights(0, 3));
    wait_until("3 readings at the box", T, || boxgw.readings() == 3);
    wait_until("the box to report the refusal", T, || {
        box_api.request("GET", "/readyz", None, None).status == 503
    });
    let ready = box_api.request("GET", "/readyz", None, None).json();
    assert_eq!(ready["upstream"]["refused"], true, "{ready}");
    let metrics = box_api.request("GET", "/metrics", None, None).text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("rpm_upstream_refused") && l.ends_with(" 1")),
        "{metrics}"
    );
    assert_eq!(boxgw.cursor(CURSOR), 0, "nothing skipped");
    assert_eq!(hubgw.readings(), 0);
    // The hub's operator issues the box a token naming its device.
    let fixed = box_token(&hubgw, "box-2b", &["scale-2"]);
    assert_eq!(boxgw.stop().code(), Some(0));
    let text = std::fs::read_to_string(&boxgw.config)
        .unwrap()
        .replace(&token, &fixed);
    std::fs::write(&boxgw.config, text).unwrap();
    boxgw.start();
    converged(&boxgw, &hubgw, 3);
    drop(hold);
}

/// A hub for the share tests: the API, a fast box watch, patient `p1`
/// enrolled with a plan and a team, `extra` TOML (devices).
fn share_hub(dir: &Path, port: u16, extra: &str) -> Gateway {
    Gateway::with_config(
        dir,
        &format!(
            "[store]\npath = \"{{db}}\"\n\n[api]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\naddress_file = \"api.addr\"\nmax_body_bytes = 262144\n\n\
             [upstream_intake]\nsilent_after = \"2s\"\ncheck_interval = \"100ms\"\n\n\
             [[patients]]\nid = \"p1\"\ncare_plans = [\"hypertension\"]\ncare_team = \"north\"\n\n{extra}"
        ),
    )
}

fn outbox(gw: &Gateway, kind: &str) -> i64 {
    gw.count(&format!(
        "SELECT COUNT(*) FROM outbox WHERE event_type = '{kind}'"
    ))
}

/// The hub owns assignments: a box's readings of a device nobody assigned
/// are quarantined at the box, and the quarantine records go up to the
/// hub; assigning the device **at the hub** re-processes them there, and
/// the box's next share pull assigns it at the box too (which re-processes
/// its own quarantine: the same reading ids, kept once at the hub). Local
/// edits of what the hub owns are refused at the box. The hub keeps the
/// box's health, and raises `box.silent` once when it goes quiet and
/// `box.back` once when it returns.
#[test]
fn an_assignment_at_the_hub_takes_effect_at_the_box_and_box_health_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (hub_dir, box_dir) = (dir.path().join("hub"), dir.path().join("box"));
    std::fs::create_dir_all(&hub_dir).unwrap();
    std::fs::create_dir_all(&box_dir).unwrap();
    let hold = PortHold::any();
    let port = hold.port;
    let mut hubgw = share_hub(&hub_dir, port, "");
    let token = box_token(&hubgw, "box-1", &["scale-1"]);
    let hub_admin = common::api_client::token(&hubgw, "ops", "admin", &[]);
    let hub_team = common::api_client::token(&hubgw, "nurse", "care_team", &["north"]);
    let other_team = common::api_client::token(&hubgw, "other", "care_team", &["south"]);
    hubgw.start_unready(&[]);
    assert_eq!(hubgw.api_port(), port);
    let hub_api = Api {
        base: format!("http://127.0.0.1:{port}"),
        cacert: None,
    };

    let broker = Mosquitto::start(&box_dir);
    let mut boxgw = Gateway::new(
        &box_dir,
        broker.port,
        &[],
        &format!(
            "{}share_interval = \"200ms\"\n\n{}",
            upstream_section(port, &token),
            common::api_client::api_config("")
        ),
    );
    let box_admin = common::api_client::token(&boxgw, "installer", "admin", &[]);
    boxgw.start();
    let box_api = Api {
        base: format!("http://127.0.0.1:{}", boxgw.api_port()),
        cacert: None,
    };

    // Nobody has assigned scale-1: quarantined at the box, and sent up.
    broker.publish_lines("acme/scale/scale-1", &weights(0, 3));
    wait_until("3 records quarantined at the box", T, || {
        boxgw.quarantined("unknown_device") == 3
    });
    wait_until("the box's quarantine at the hub", T, || {
        hubgw.count(
            "SELECT COUNT(*) FROM quarantine WHERE reason = 'unknown_device' AND device_id = 'scale-1' \
             AND status = 'open' AND json_extract(facts, '$.via') = 'upstream:box-1'",
        ) == 3
    });
    assert_eq!(hubgw.readings(), 0);

    // The hub assigns the device: its copy of the box's quarantine becomes
    // readings at the hub, decoded there from the raw bytes.
    let out = hubgw.cli(&["devices", "assign", "scale-1", "p1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("re-processed 3"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(hubgw.readings(), 3);
    // The box takes the assignment from its share and re-processes its own
    // quarantine; the readings it then sends up are kept once.
    converged(&boxgw, &hubgw, 3);
    assert_eq!(
        boxgw.count(
            "SELECT COUNT(*) FROM devices WHERE device_id = 'scale-1' AND patient_id = 'p1' AND origin = 'hub'"
        ),
        1
    );
    let p = boxgw.count(
        "SELECT COUNT(*) FROM patients WHERE patient_id = 'p1' AND origin = 'hub' AND care_team = 'north' \
         AND care_plans = '[\"hypertension\"]'",
    );
    assert_eq!(p, 1, "the patient's plans and team came with the share");
    // What the hub owns is changed at the hub, not at the box.
    box_api
        .request(
            "PUT",
            "/api/v1/devices/scale-1/patient",
            Some(&box_admin),
            Some(("application/json", br#"{"patient_id":"p9"}"#)),
        )
        .problem(409);
    box_api
        .request(
            "PUT",
            "/api/v1/patients/p1",
            Some(&box_admin),
            Some(("application/json", br#"{"care_plans":[]}"#)),
        )
        .problem(409);
    let out = boxgw.cli(&["devices", "unassign", "scale-1"]);
    assert!(!out.status.success());

    // New readings flow as usual.
    broker.publish_lines("acme/scale/scale-1", &weights(3, 2));
    converged(&boxgw, &hubgw, 5);
    assert_eq!(
        hubgw.count(
            "SELECT COUNT(*) FROM readings WHERE json_extract(annotations, '$.via') = 'upstream:box-1'"
        ),
        5,
        "readings re-processed at the hub from the box's quarantine say where they came from"
    );

    // Box health at the hub: API (operators only) and CLI.
    wait_until("the box reports an empty backlog", T, || {
        hubgw.count("SELECT COALESCE((SELECT backlog FROM boxes WHERE box_id = 'box-1'), -1)") == 0
    });
    let boxes = hub_api
        .request("GET", "/api/v1/boxes", Some(&hub_admin), None)
        .json();
    let b = &boxes["items"][0];
    assert_eq!(b["box_id"], "box-1", "{boxes}");
    assert_eq!(b["silent"], false);
    assert!(b["clock_offset_ms"].as_i64().unwrap().abs() < 5_000, "{b}");
    assert_eq!(b["version"], env!("CARGO_PKG_VERSION"));
    assert!(b["last_pull_at"].is_string() && b["last_push_at"].is_string());
    assert_eq!(b["ble_state"], serde_json::Value::Null, "no BLE source");
    // A care team sees its patients' boxes, and no other.
    let seen = hub_api
        .request("GET", "/api/v1/boxes", Some(&hub_team), None)
        .json();
    assert_eq!(seen["items"].as_array().unwrap().len(), 1, "{seen}");
    let seen = hub_api
        .request("GET", "/api/v1/boxes", Some(&other_team), None)
        .json();
    assert_eq!(seen["items"], serde_json::json!([]), "{seen}");
    let out = hubgw.cli(&["boxes", "--json"]);
    assert!(out.status.success());
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["box_id"], "box-1");
    // The installer's page of the hub's console lists the box.
    common::console::add_user(&hubgw, "installer", "admin", &[], "installer password 1");
    let port = hubgw.api_port();
    let session = common::console::sign_in(port, "installer", "installer password 1");
    let page = common::console::raw(port, "GET", "/console/devices", &[("Cookie", &session)], "");
    assert_eq!(common::console::status(&page), 200);
    let html = String::from_utf8_lossy(&page.body);
    assert!(
        html.contains("Home boxes") && html.contains("box-1"),
        "{html}"
    );
    assert!(html.contains("in contact"), "{html}");

    // The box goes quiet: box.silent once; it returns: box.back once.
    assert_eq!(outbox(&hubgw, "box.silent"), 0);
    assert_eq!(boxgw.stop().code(), Some(0));
    wait_until("box.silent at the hub", T, || {
        outbox(&hubgw, "box.silent") == 1
    });
    let silent = hubgw.count("SELECT silent FROM boxes WHERE box_id = 'box-1'");
    assert_eq!(silent, 1);
    // Several more looks of the watch raise nothing more.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(outbox(&hubgw, "box.silent"), 1);
    boxgw.start();
    wait_until("box.back at the hub", T, || outbox(&hubgw, "box.back") == 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        (outbox(&hubgw, "box.silent"), outbox(&hubgw, "box.back")),
        (1, 1)
    );
    let payload: String = hubgw
        .db()
        .query_row(
            "SELECT payload FROM outbox WHERE event_type = 'box.silent'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let ev: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(ev["data"]["detail"]["box_id"], "box-1", "{ev}");
    drop(hold);
}

/// `n` scale messages, one an hour, the first `days_ago` days before now.
fn backdated_weights(from: u64, n: u64, days_ago: u64) -> Vec<String> {
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - days_ago * 86_400;
    (from..from + n)
        .map(|i| {
            format!(
                r#"{{"readings":[{{"ts":{},"weight":{},"unit":"kg","seq":{}}}]}}"#,
                start + (i - from) * 3600,
                70.0 + (i % 50) as f64 / 10.0,
                10_000 + i
            )
        })
        .collect()
}

/// Readings from MQTT and from Bluetooth (the real btleplug path against
/// the BlueZ emulator) at the box reach the hub exactly once through a hub
/// `kill -9`, a box `kill -9` and a week offline (readings with device
/// times spread over the past week, published while the hub is away).
#[test]
fn mqtt_and_ble_readings_reach_the_hub_once_through_kills_and_a_week_offline() {
    const CUFF: &str = "AA:00:00:00:00:01";
    let dir = tempfile::tempdir().unwrap();
    let (hub_dir, box_dir) = (dir.path().join("hub"), dir.path().join("box"));
    std::fs::create_dir_all(&hub_dir).unwrap();
    std::fs::create_dir_all(&box_dir).unwrap();
    let hold = PortHold::any();
    let port = hold.port;
    let mut hubgw = share_hub(
        &hub_dir,
        port,
        &format!(
            "[[devices]]\nid = \"scale-1\"\npatient = \"p1\"\n\n[[devices]]\nid = \"{CUFF}\"\npatient = \"p1\"\n"
        ),
    );
    let token = box_token(&hubgw, "box-7", &["scale-1", CUFF]);
    hubgw.start_unready(&[]);
    assert_eq!(hubgw.api_port(), port);

    let broker = Mosquitto::start(&box_dir);
    let emu = common::ble::BluezEmulator::start(&box_dir, &[&format!("bp,{CUFF},2")]);
    let bus = emu.bus.address.clone();
    let env = [("DBUS_SYSTEM_BUS_ADDRESS", bus.as_str())];
    // The box is configured with no device at all: the hub's share assigns them.
    let mut boxgw = Gateway::new(
        &box_dir,
        broker.port,
        &[],
        &format!(
            "{}share_interval = \"200ms\"\n\n[sources.ble]\nreconnect_min_backoff = \"200ms\"\nreconnect_max_backoff = \"2s\"\n",
            upstream_section(port, &token)
        ),
    );
    boxgw.start_with_env(&env);
    broker.publish_lines("acme/scale/scale-1", &weights(0, 10));
    // 2 BP measurements over Bluetooth, 10 weights over MQTT.
    let ble = |gw: &Gateway| {
        gw.count(&format!(
            "SELECT COUNT(*) FROM readings WHERE source = 'ble' AND device_id = '{CUFF}' AND metric = 'systolic'"
        ))
    };
    wait_until("2 BP measurements at the box", T, || ble(&boxgw) == 2);
    let first = boxgw.readings();
    assert_eq!(
        boxgw.count("SELECT COUNT(*) FROM readings WHERE device_id = 'scale-1'"),
        10
    );
    converged(&boxgw, &hubgw, first);
    assert_eq!(ble(&hubgw), 2);
    wait_until("the box's BLE state at the hub", T, || {
        hubgw.count("SELECT COUNT(*) FROM boxes WHERE box_id = 'box-7' AND ble_state = 'available'")
            == 1
    });

    // The hub dies hard; the box goes on for a week of readings.
    hubgw.kill9();
    broker.publish_lines("acme/scale/scale-1", &backdated_weights(100, 84, 7));
    wait_until("half a week at the box", T, || {
        boxgw.readings() == first + 84
    });
    // The box dies hard too, and comes back; the rest of the week.
    boxgw.kill9();
    boxgw.start_with_env(&env);
    broker.publish_lines("acme/scale/scale-1", &backdated_weights(200, 84, 3));
    wait_until("a week at the box", T, || boxgw.readings() == first + 168);
    assert_eq!(hubgw.readings(), first, "nothing reached the dead hub");
    // The hub returns: the week drains, each reading once.
    hubgw.start_unready(&[]);
    assert_eq!(hubgw.api_port(), port);
    converged(&boxgw, &hubgw, first + 168);
    let oldest = hubgw.count("SELECT MIN(measured_at) FROM readings WHERE device_id = 'scale-1'");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        now_ms - oldest >= 6 * 86_400_000,
        "a week of readings kept their device times"
    );
    wait_until("the box reports an empty backlog", T, || {
        hubgw.count("SELECT COALESCE((SELECT backlog FROM boxes WHERE box_id = 'box-7'), -1)") == 0
    });
    drop(emu);
    drop(hold);
}

/// `rpm-sim boxes` plays boxes against a real hub: every box's day arrives
/// once, each second share pull is a 304, and the hub knows every box.
#[test]
fn rpm_sim_boxes_play_many_boxes_against_a_hub() {
    let dir = tempfile::tempdir().unwrap();
    let hold = PortHold::any();
    let port = hold.port;
    let mut devices = String::new();
    let mut lines = String::new();
    let mut hubgw = share_hub(dir.path(), port, "");
    for i in 0..5 {
        devices.push_str(&format!(
            "[[devices]]\nid = \"cuff-{i}\"\npatient = \"p{i}\"\n\n[[devices]]\nid = \"scale-{i}\"\npatient = \"p{i}\"\n\n"
        ));
    }
    let text = std::fs::read_to_string(&hubgw.config).unwrap() + &devices;
    std::fs::write(&hubgw.config, text).unwrap();
    for i in 0..5 {
        let cuff = format!("cuff-{i}");
        let scale = format!("scale-{i}");
        let t = box_token(&hubgw, &format!("box-{i}"), &[&cuff, &scale]);
        lines.push_str(&format!("box-{i} {t} {cuff},{scale}\n"));
    }
    let tokens = dir.path().join("boxes.txt");
    std::fs::write(&tokens, lines).unwrap();
    hubgw.start_unready(&[]);
    assert_eq!(hubgw.api_port(), port);
    let hub = format!("http://127.0.0.1:{port}");
    let args = [
        "boxes",
        "--hub",
        &hub,
        "--tokens",
        tokens.to_str().unwrap(),
        "--offline",
        "24h",
        "--per-day",
        "4",
        "--batch",
        "5",
        "--json",
    ];
    let run =
        || -> serde_json::Value { serde_json::from_slice(&common::rpm_sim(&args).stdout).unwrap() };
    let first = run();
    // 5 boxes × (4 BP measurements × 3 readings + 4 weights).
    assert_eq!(first["readings_sent"], 80, "{first}");
    assert_eq!(first["stored"], 80);
    assert_eq!(first["shares_304"], 5);
    assert_eq!(hubgw.readings(), 80);
    assert_eq!(
        hubgw.count("SELECT COUNT(*) FROM boxes WHERE version = 'sim'"),
        5
    );
    drop(hold);
}
