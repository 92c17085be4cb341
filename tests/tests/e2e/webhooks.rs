//! Webhook delivery end to end: the real gateway binary, real HTTP
//! receivers (the gateway's own `webhook-receiver` in a separate process and
//! an independent Python receiver verifying with `standardwebhooks`), real
//! SQLite files, alert events committed into the outbox by another
//! connection as the rule evaluator does.

use crate::common;

use common::webhooks::*;
use common::{wait_until, Gateway};
use std::collections::HashMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn start(gw: &mut Gateway) {
    gw.start_until("webhook dispatcher started", &[]);
}

#[test]
fn signed_deliveries_verify_with_standardwebhooks_route_by_team_and_match_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let rotated = new_secret();
    let py = PyReceiver::start(
        dir.path(),
        &[("/north", SECRET), ("/all", SECRET), ("/ops", SECRET)],
    );
    let text = config(&format!(
        "{}{}{}{}",
        webhook(
            "north",
            &py.url("/north"),
            SECRET,
            "[webhooks.filter]\ncare_teams = [\"north\"]"
        ),
        webhook("all", &py.url("/all"), SECRET, ""),
        // Operational events, validated against the schema too: `broken`
        // refuses connections, its breaker opens, `ops` hears about it.
        webhook(
            "ops",
            &py.url("/ops"),
            SECRET,
            "[webhooks.filter]\nevent_types = [\"delivery.*\", \"endpoint.*\"]"
        ),
        webhook("broken", "http://127.0.0.1:1/hook", SECRET, "")
    ));
    let mut gw = Gateway::with_config(dir.path(), &text);
    gw.start_until("webhook dispatcher started", &[]);
    // A rotation at run time: the receiver still knows only the old secret;
    // the second signature keeps it verifying.
    let out = gw.cli(&["webhooks", "rotate-secret", "all", "--secret", &rotated]);
    assert!(out.status.success(), "{out:?}");
    set_team(&gw.db, "p-north", "north");
    set_team(&gw.db, "p-south", "south");
    let mut events = Vec::new();
    for n in 0..3 {
        events.push(alert("p-north", n, "critical"));
        events.push(alert("p-south", n, "urgent"));
    }
    enqueue_events(&gw.db, &events);
    let alerts = || -> Vec<serde_json::Value> {
        py.lines()
            .into_iter()
            .filter(|l| l["path"] != "/ops")
            .collect()
    };
    wait_until("6 + 3 deliveries", T, || alerts().len() >= 9);
    wait_until("delivery.failing about `broken`", T, || {
        py.lines().iter().any(|l| l["path"] == "/ops")
    });
    std::thread::sleep(Duration::from_millis(300));
    let lines = alerts();
    assert_eq!(lines.len(), 9, "{lines:#?}");
    let ops: Vec<_> = py
        .lines()
        .into_iter()
        .filter(|l| l["path"] == "/ops")
        .collect();
    assert_eq!(ops.len(), 1, "{ops:#?}");
    assert_eq!(ops[0]["event"]["type"], "delivery.failing");
    assert_eq!(ops[0]["event"]["data"]["endpoint_id"], "broken");
    for l in lines.iter().chain(&ops) {
        assert_eq!(l["verified"], true, "standardwebhooks refused: {l}");
        assert_eq!(l["schema_errors"], serde_json::json!([]), "schema: {l}");
        assert_eq!(l["webhook_id"], l["event"]["id"]);
    }
    let north: Vec<_> = lines.iter().filter(|l| l["path"] == "/north").collect();
    assert_eq!(north.len(), 3);
    assert!(north
        .iter()
        .all(|l| l["event"]["data"]["patient_id"] == "p-north"));
    assert!(lines
        .iter()
        .filter(|l| l["path"] == "/all")
        .all(|l| l["signatures"] == 2));
    // Every attempt is logged.
    assert_eq!(
        gw.count("SELECT COUNT(*) FROM deliveries WHERE status = 'delivered'"),
        10
    );
    assert_eq!(
        gw.count("SELECT COUNT(*) FROM delivery_attempts WHERE http_status = 200"),
        10
    );
    assert_eq!(gw.stop().code(), Some(0));
}

#[test]
fn receiver_down_then_back_gets_everything_in_order_per_patient() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::down(dir.path(), "r", &["--secret", SECRET]);
    let text = config(&webhook("r", &rx.url(), SECRET, ""));
    let mut gw = Gateway::with_config(dir.path(), &text);
    start(&mut gw);
    let patients = ["patient-a1", "patient-a2", "patient-a3"];
    let mut events = Vec::new();
    for n in 0..8 {
        for p in patients {
            events.push(alert(p, n, "urgent"));
        }
    }
    // Committed in two transactions while the receiver is down.
    enqueue_events(&gw.db, &events[..12]);
    std::thread::sleep(Duration::from_millis(800));
    enqueue_events(&gw.db, &events[12..]);
    wait_until("the breaker to open", T, || {
        gw.count("SELECT COUNT(*) FROM outbox WHERE event_type = 'delivery.failing'") == 1
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        gw.count("SELECT COUNT(*) FROM outbox WHERE event_type = 'delivery.failing'"),
        1,
        "one delivery.failing per outage"
    );
    rx.start();
    wait_until("all 24 delivered", T, || rx.distinct() == 24);
    // Per patient, in outbox order.
    let mut next: HashMap<String, u32> = HashMap::new();
    for l in rx.accepted() {
        if l["duplicate"] == true {
            continue;
        }
        let data = &l["event"]["data"];
        let p = data["patient_id"].as_str().unwrap().to_string();
        let n: u32 = data["alert_id"]
            .as_str()
            .unwrap()
            .rsplit('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let want = next.entry(p.clone()).or_insert(0);
        assert_eq!(n, *want, "patient {p} out of order");
        *want += 1;
    }
    // The receiver answers before the gateway records the delivery.
    wait_until("every delivery recorded as delivered", T, || {
        gw.count("SELECT COUNT(*) FROM deliveries WHERE status != 'delivered'") == 0
    });
    assert!(gw.count("SELECT COUNT(*) FROM delivery_attempts WHERE http_status IS NULL") >= 3);
    assert!(
        !gw.log().contains("patient-a"),
        "no patient id in info logs"
    );
    assert_eq!(gw.stop().code(), Some(0));
}

fn attempts_of(gw: &Gateway, endpoint: &str) -> Vec<(i64, Option<i64>, Option<String>)> {
    let db = gw.db();
    let mut q = db
        .prepare(
            "SELECT a.at, a.http_status, a.error FROM delivery_attempts a JOIN deliveries d USING (delivery_id)
             WHERE d.endpoint_id = ?1 ORDER BY a.id",
        )
        .unwrap();
    q.query_map([endpoint], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn status_of(gw: &Gateway, endpoint: &str) -> String {
    gw.db()
        .query_row(
            "SELECT status FROM deliveries WHERE endpoint_id = ?1",
            [endpoint],
            |r| r.get(0),
        )
        .unwrap_or_default()
}

#[test]
fn status_codes_500_429_410_400_and_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let s = ["--secret", SECRET];
    let mut flaky = Receiver::new(
        dir.path(),
        "flaky",
        &[&s[..], &["--fail-first", "2"]].concat(),
    );
    let mut limited = Receiver::new(
        dir.path(),
        "limited",
        &[
            &s[..],
            &[
                "--fail-first",
                "1",
                "--fail-status",
                "429",
                "--retry-after",
                "2",
            ],
        ]
        .concat(),
    );
    let mut gone = Receiver::new(
        dir.path(),
        "gone",
        &[&s[..], &["--fail-first", "99", "--fail-status", "410"]].concat(),
    );
    let mut refused = Receiver::new(
        dir.path(),
        "refused",
        &[&s[..], &["--fail-first", "99", "--fail-status", "400"]].concat(),
    );
    let mut slow = Receiver::new(dir.path(), "slow", &[&s[..], &["--delay", "3s"]].concat());
    for r in [&mut flaky, &mut limited, &mut gone, &mut refused, &mut slow] {
        r.start();
    }
    let mut text = String::new();
    for (id, r) in [
        ("flaky", &flaky),
        ("limited", &limited),
        ("gone", &gone),
        ("refused", &refused),
        ("slow", &slow),
    ] {
        text.push_str(&webhook(id, &r.url(), SECRET, ""));
    }
    let text = config(&text)
        .replace("max_attempts = 50", "max_attempts = 3")
        .replace("[delivery]\n", "[delivery]\ntimeout = \"1s\"\n");
    let mut gw = Gateway::with_config(dir.path(), &text);
    start(&mut gw);
    enqueue_events(&gw.db, &[alert("p1", 0, "critical")]);

    wait_until("flaky delivered", T, || {
        status_of(&gw, "flaky") == "delivered"
    });
    let a = attempts_of(&gw, "flaky");
    assert_eq!(
        a.iter().map(|x| x.1).collect::<Vec<_>>(),
        vec![Some(500), Some(500), Some(200)]
    );

    wait_until("429 then delivered", T, || {
        status_of(&gw, "limited") == "delivered"
    });
    let a = attempts_of(&gw, "limited");
    assert_eq!(a[0].1, Some(429));
    assert!(a[1].0 - a[0].0 >= 1900, "Retry-After: 2 honoured: {a:?}");

    wait_until("410 disables", T, || {
        gw.count(
            "SELECT COUNT(*) FROM webhook_endpoints WHERE endpoint_id = 'gone' AND enabled = 0",
        ) == 1
    });
    assert_eq!(status_of(&gw, "gone"), "pending", "kept for a re-enable");
    assert_eq!(
        gw.count("SELECT COUNT(*) FROM outbox WHERE event_type = 'endpoint.disabled'"),
        1
    );

    wait_until("400 fails without retry", T, || {
        status_of(&gw, "refused") == "failed"
    });
    let a = attempts_of(&gw, "refused");
    assert_eq!(a.len(), 1);
    assert!(
        a[0].2.as_deref().unwrap().contains("rehearsed failure"),
        "{a:?}"
    );

    wait_until("timeouts dead-lettered", T, || {
        status_of(&gw, "slow") == "dead"
    });
    let a = attempts_of(&gw, "slow");
    assert_eq!(a.len(), 3);
    assert!(
        a.iter()
            .all(|x| x.1.is_none() && x.2.as_deref().unwrap().starts_with("timeout")),
        "{a:?}"
    );
    assert_eq!(
        gw.count("SELECT COUNT(*) FROM outbox WHERE event_type = 'delivery.dead_lettered'"),
        1
    );
    assert_eq!(flaky.distinct() + limited.distinct(), 2);
    assert_eq!(gw.stop().code(), Some(0));
}

#[test]
fn kill9_mid_delivery_redelivers_with_the_same_webhook_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(dir.path(), "r", &["--secret", SECRET, "--delay", "2s"]);
    rx.start();
    let mut gw = Gateway::with_config(dir.path(), &config(&webhook("r", &rx.url(), SECRET, "")));
    start(&mut gw);
    let ev = alert("p1", 0, "critical");
    let id = ev.id.clone();
    enqueue_events(&gw.db, &[ev, alert("p1", 1, "critical")]);
    wait_until("the first attempt in flight", T, || rx.arrivals(&id) == 1);
    gw.kill9();
    assert_eq!(gw.count("SELECT COUNT(*) FROM delivery_attempts"), 0);
    std::thread::sleep(Duration::from_millis(2500));
    start(&mut gw);
    wait_until("both delivered", T, || {
        gw.count("SELECT COUNT(*) FROM deliveries WHERE status = 'delivered'") == 2
    });
    assert!(rx.arrivals(&id) >= 2, "the cut attempt was made again");
    let ids: Vec<_> = rx
        .accepted()
        .iter()
        .map(|l| l["webhook_id"].clone())
        .collect();
    assert!(
        ids.contains(&serde_json::json!(id)),
        "same webhook-id: {ids:?}"
    );
    assert_eq!(rx.distinct(), 2);
    assert_eq!(gw.stop().code(), Some(0));
}

#[test]
fn dead_letters_are_listed_and_redriven_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::down(dir.path(), "r", &["--secret", SECRET, "--fail-for", "4s"]);
    let text = config(&webhook("r", &rx.url(), SECRET, ""))
        .replace("max_attempts = 50", "max_attempts = 2");
    let mut gw = Gateway::with_config(dir.path(), &text);
    start(&mut gw);
    rx.start();
    let ev = alert("p1", 0, "warning");
    enqueue_events(&gw.db, std::slice::from_ref(&ev));
    wait_until("dead-lettered", T, || {
        gw.count("SELECT COUNT(*) FROM deliveries WHERE status = 'dead'") == 1
    });
    let out = gw.cli(&["webhooks", "dead", "--json"]);
    assert!(out.status.success());
    let dead: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(dead["event_id"], ev.id.as_str());
    assert_eq!(dead["attempts"], 2);
    let out = gw.cli(&["webhooks", "attempts", &dead["delivery_id"].to_string()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    std::thread::sleep(Duration::from_secs(4));
    let out = gw.cli(&["webhooks", "redrive", "--all"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("re-driven 1"),
        "{out:?}"
    );
    wait_until("delivered after re-drive", T, || rx.distinct() == 1);
    assert_eq!(rx.accepted()[0]["webhook_id"], ev.id.as_str());
    wait_until("the attempt recorded", T, || {
        gw.count("SELECT COUNT(*) FROM deliveries WHERE status = 'delivered'") == 1
    });
    assert_eq!(
        gw.count("SELECT attempts FROM deliveries"),
        3,
        "the attempt log continues across rounds"
    );
    let out = gw.cli(&["webhooks", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("enabled"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("whsec_"));
    assert_eq!(gw.stop().code(), Some(0));
}

#[test]
fn https_to_a_receiver_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::TestCa::new(dir.path());
    let py = PyReceiver::start_tls(dir.path(), &[("/tls", SECRET)], Some(&ca));
    let url = format!("https://localhost:{}/tls", py.port);
    let text = config(&webhook("tls", &url, SECRET, "")).replace(
        "[delivery]\n",
        &format!("[delivery]\nca_file = \"{}\"\n", ca.ca.display()),
    );
    let mut gw = Gateway::with_config(dir.path(), &text);
    start(&mut gw);
    enqueue_events(&gw.db, &[alert("p1", 0, "urgent")]);
    wait_until("delivered over TLS", T, || py.lines().len() == 1);
    assert_eq!(py.lines()[0]["verified"], true);
    assert_eq!(gw.stop().code(), Some(0));
}

#[test]
fn endpoints_added_at_run_time_with_the_cli_receive_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::with_config(dir.path(), &config(""));
    start(&mut gw);
    let out = gw.cli(&["webhooks", "add", "x", "http://example.org/hook"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("url"),
        "{out:?}"
    );
    let mut rx = Receiver::new(dir.path(), "r", &["--secret", SECRET]);
    rx.start();
    let url = rx.url();
    let out = gw.cli(&[
        "webhooks",
        "add",
        "late",
        &url,
        "--secret",
        SECRET,
        "--severity",
        "critical",
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = gw.cli(&["webhooks", "list", "--json"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("\"late\"") && !listed.contains("whsec_"),
        "{listed}"
    );
    enqueue_events(
        &gw.db,
        &[alert("p1", 0, "warning"), alert("p1", 1, "critical")],
    );
    wait_until("the critical one delivered", T, || rx.distinct() == 1);
    assert_eq!(rx.accepted()[0]["event"]["data"]["severity"], "critical");
    assert!(gw.cli(&["webhooks", "disable", "late"]).status.success());
    enqueue_events(&gw.db, &[alert("p1", 2, "critical")]);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(rx.distinct(), 1, "a disabled endpoint receives nothing");
    let out = gw.cli(&["webhooks", "deliveries", "late", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    assert_eq!(gw.stop().code(), Some(0));
}

#[test]
fn a_slow_endpoint_does_not_delay_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut slow = Receiver::new(dir.path(), "slow", &["--secret", SECRET, "--delay", "10s"]);
    let mut fast = Receiver::new(dir.path(), "fast", &["--secret", SECRET]);
    slow.start();
    fast.start();
    let text = config(&format!(
        "{}{}",
        webhook("slow", &slow.url(), SECRET, ""),
        webhook("fast", &fast.url(), SECRET, "")
    ));
    let mut gw = Gateway::with_config(dir.path(), &text);
    start(&mut gw);
    let events: Vec<_> = (0..6)
        .map(|n| alert(&format!("p{n}"), 0, "urgent"))
        .collect();
    enqueue_events(&gw.db, &events);
    wait_until("the fast endpoint has everything", T, || {
        fast.distinct() == 6
    });
    assert_eq!(
        slow.distinct(),
        0,
        "the slow one is still answering its first"
    );
    // Bounded per-endpoint concurrency (4 by default): the other two wait in the store.
    let arrived = || -> usize { events.iter().map(|e| slow.arrivals(&e.id)).sum() };
    wait_until("4 in flight to the slow one", T, || arrived() == 4);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(arrived(), 4);
    gw.kill9();
}

/// The other direction: deliveries signed by the `standardwebhooks` package
/// are accepted by our receiver (`signing::verify`), tampered ones refused.
#[test]
fn our_receiver_verifies_what_standardwebhooks_signs() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(dir.path(), "r", &["--secret", SECRET]);
    rx.start();
    let body = serde_json::to_string(&alert("p1", 0, "critical")).unwrap();
    let script = r#"
import sys, datetime, urllib.request, urllib.error
from standardwebhooks.webhooks import Webhook
url, secret, body, tamper = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
now = datetime.datetime.now(tz=datetime.timezone.utc)
sig = Webhook(secret).sign("msg_py_1", now, body)
data = (body + " ") if tamper else body
req = urllib.request.Request(url, data=data.encode(), method="POST", headers={
    "webhook-id": "msg_py_1", "webhook-timestamp": str(int(now.timestamp())),
    "webhook-signature": sig, "content-type": "application/json"})
try:
    print(urllib.request.urlopen(req).status)
except urllib.error.HTTPError as e:
    print(e.code)
"#;
    let post = |tamper: &str| {
        let out = std::process::Command::new("python3")
            .args(["-c", script, &rx.url(), SECRET, &body, tamper])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(post("1"), "401");
    assert_eq!(post("0"), "200");
    assert_eq!(post("0"), "200", "a duplicate is acknowledged again");
    let accepted = rx.accepted();
    assert_eq!(accepted.len(), 2);
    assert_eq!(accepted[1]["duplicate"], true);
    assert_eq!(accepted[0]["event"]["data"]["patient_id"], "p1");
}

/// The whole chain: a blood pressure reading over real Mosquitto → the rule
/// evaluator fires a hypertensive-crisis alert → the outbox → a signed
/// webhook that the independent `standardwebhooks` receiver verifies and
/// the JSON Schema accepts.
#[test]
fn an_mqtt_reading_fires_an_alert_that_reaches_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::Mosquitto::start(dir.path());
    let py = PyReceiver::start(dir.path(), &[("/north", SECRET)]);
    let extra = format!(
        "[rules]\n\n[[patients]]\nid = \"p-htn\"\ncare_plans = [\"hypertension\"]\ncare_team = \"north\"\n\n[delivery]\npoll_interval = \"50ms\"\nallow_private_network = true\n{}",
        webhook(
            "north",
            &py.url("/north"),
            SECRET,
            "[webhooks.filter]\ncare_teams = [\"north\"]"
        )
    );
    let mut gw = Gateway::new(dir.path(), broker.port, &[("cuff-htn", "p-htn")], &extra);
    gw.start();
    let at = chrono::Utc::now() - chrono::TimeDelta::seconds(30);
    broker.publish(
        "acme/bp/cuff-htn",
        format!(
            r#"{{"measured_at":"{}","sys":185,"dia":95,"pulse":70,"unit":"mmHg"}}"#,
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
        .as_bytes(),
    );
    wait_until("the alert at the receiver", T, || {
        py.lines()
            .iter()
            .any(|l| l["event"]["type"] == "alert.fired")
    });
    let l = py
        .lines()
        .into_iter()
        .find(|l| l["event"]["type"] == "alert.fired")
        .unwrap();
    assert_eq!(l["verified"], true);
    assert_eq!(l["schema_errors"], serde_json::json!([]), "{l}");
    let data = &l["event"]["data"];
    assert_eq!(data["patient_id"], "p-htn");
    assert!(data["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["loinc"] == "8480-6" && r["value"] == 185.0));
    assert_eq!(gw.stop().code(), Some(0));
}

/// The SSRF guard: loopback, private, link-local, multicast and unspecified
/// destinations are refused at creation (literal IPv4 and IPv6, IPv4-mapped
/// IPv6, a DNS name resolving to 127.0.0.1) and again at connect time for
/// endpoints already stored; an endpoint allowed explicitly is delivered
/// to; a redirect is neither followed nor its body kept.
#[test]
fn ssrf_guard_refuses_internal_destinations_unless_allowed() {
    use common::api_client::{self as http, Api};
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(dir.path(), "internal", &["--secret", SECRET]);
    rx.start();
    let mut moved = Receiver::new(
        dir.path(),
        "moved",
        &[
            "--secret",
            SECRET,
            "--fail-status",
            "302",
            "--fail-for",
            "1h",
        ],
    );
    moved.start();
    // No delivery.allow_private_network here: the guard is on.
    let text = format!(
        "[store]\npath = \"{{db}}\"\n\n[delivery]\npoll_interval = \"50ms\"\nretry_schedule = [\"200ms\"]\nmax_attempts = 50\n\n{}",
        http::api_config("")
    );
    let mut gw = Gateway::with_config(dir.path(), &text);
    start(&mut gw);
    let port = gw.api_port();
    wait_until("the API", T, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        cacert: None,
    };
    let admin = http::token(&gw, "ops", "admin", &[]);
    let p = rx.port;
    for (url, class) in [
        (format!("http://127.0.0.1:{p}/hook"), "loopback"),
        (format!("http://localhost:{p}/hook"), "loopback"),
        (format!("http://[::1]:{p}/hook"), "loopback"),
        (format!("http://[::ffff:127.0.0.1]:{p}/hook"), "loopback"),
        (
            "https://169.254.169.254/latest/meta-data".into(),
            "link-local",
        ),
        ("https://[fe80::1]/hook".into(), "link-local"),
        ("https://10.1.2.3/hook".into(), "private"),
        ("https://192.168.1.20/hook".into(), "private"),
        ("https://[fd12::1]/hook".into(), "private"),
        ("https://224.0.0.251/hook".into(), "multicast"),
        ("https://[ff02::1]/hook".into(), "multicast"),
        ("https://0.0.0.0/hook".into(), "unspecified"),
        ("https://[::]/hook".into(), "unspecified"),
    ] {
        let detail = api
            .send(
                "POST",
                "/api/v1/webhooks",
                &admin,
                &json!({"endpoint_id": "x", "url": url}),
            )
            .problem(422);
        assert!(
            detail.contains(&format!("is a {class} address")) && detail.contains("SSRF"),
            "{url}: {detail}"
        );
    }
    let out = gw.cli(&[
        "webhooks",
        "add",
        "c",
        &format!("http://localhost:{p}/hook"),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback address"));

    // Allowed explicitly, per endpoint.
    for (id, url) in [("lan", rx.url()), ("moved", moved.url())] {
        api.send(
            "POST",
            "/api/v1/webhooks",
            &admin,
            &json!({"endpoint_id": id, "url": url, "secret": SECRET, "allow_private_network": true}),
        )
        .expect(201);
    }
    // Lifting the allowance again is refused while the URL is internal.
    api.send(
        "PATCH",
        "/api/v1/webhooks/lan",
        &admin,
        &json!({"allow_private_network": false}),
    )
    .problem(422);
    // Endpoints already stored whose names now resolve inside (rebinding),
    // or stored before the guard: refused at connect time.
    {
        let c = rusqlite::Connection::open(&gw.db).unwrap();
        for (id, url) in [
            ("rebound", format!("http://localhost:{p}/hook")),
            ("mapped", format!("http://[::ffff:127.0.0.1]:{p}/hook")),
        ] {
            c.execute(
                "INSERT INTO webhook_endpoints (endpoint_id, url, secrets, origin, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'api', 0, 0)",
                rusqlite::params![id, url, format!("[\"{SECRET}\"]")],
            )
            .unwrap();
        }
    }
    let ev = alert("p-1", 0, "urgent");
    enqueue_events(&gw.db, std::slice::from_ref(&ev));
    let refused = |id: &str| {
        attempts_of(&gw, id)
            .iter()
            .any(|(_, s, e)| s.is_none() && e.as_deref().is_some_and(|e| e.contains("SSRF guard")))
    };
    wait_until("delivery and refusals", T, || {
        rx.distinct() == 1
            && refused("rebound")
            && refused("mapped")
            && !attempts_of(&gw, "moved").is_empty()
    });
    assert_eq!(
        rx.arrivals(&ev.id),
        1,
        "only the allowed endpoint was reached"
    );
    let (_, status, error) = attempts_of(&gw, "moved").remove(0);
    assert_eq!(status, Some(302));
    assert_eq!(error.as_deref(), Some("HTTP 302: redirect not followed"));
    let log = api.get("/api/v1/webhooks/moved/deliveries", &admin);
    log.expect(200);
    assert!(!log.text().contains("rehearsed"), "{}", log.text());
}

/// Webhook secrets are sealed in the store with a key kept outside it:
/// neither the database nor its WAL holds a secret's bytes, deliveries
/// still verify; with a wrong key nothing is sent unsigned and the error
/// says why.
#[test]
fn webhook_secrets_are_sealed_with_a_key_outside_the_store() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut rx = Receiver::new(dir.path(), "r", &["--secret", SECRET]);
    rx.start();
    let mut gw = Gateway::with_config(dir.path(), &config(""));
    let out = gw.cli(&["webhooks", "add", "north", &rx.url(), "--secret", SECRET]);
    assert!(out.status.success(), "{out:?}");
    start(&mut gw);
    let first = alert("p-1", 0, "urgent");
    enqueue_events(&gw.db, std::slice::from_ref(&first));
    wait_until("the delivery", T, || rx.distinct() == 1);
    let needle = SECRET.trim_start_matches("whsec_").as_bytes();
    for f in ["rpm.db", "rpm.db-wal"] {
        let bytes = std::fs::read(dir.path().join(f)).unwrap_or_default();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the secret is in {f}"
        );
    }
    let stored: String = gw
        .db()
        .query_row(
            "SELECT secrets FROM webhook_endpoints WHERE endpoint_id = 'north'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(stored.contains("enc1:"), "{stored}");
    let key = dir.path().join("rpm.db.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(gw.stop().code(), Some(0));

    // The wrong key: refused, clearly, and nothing leaves unsigned.
    gw.start_until(
        "webhook dispatcher started",
        &[("RPM_STORE_KEY", &"ab".repeat(32))],
    );
    let second = alert("p-1", 1, "urgent");
    enqueue_events(&gw.db, std::slice::from_ref(&second));
    wait_until("the refused attempt", T, || {
        attempts_of(&gw, "north")
            .iter()
            .any(|(_, _, e)| e.as_deref().is_some_and(|e| e.contains("store key")))
    });
    assert_eq!(rx.arrivals(&second.id), 0);
    assert!(gw.log().contains("does not open with this store key"));
}
