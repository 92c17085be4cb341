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
