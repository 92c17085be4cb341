//! The MQTT session under harder conditions: MQTT 5 with a session expiry,
//! TLS with a private CA, and a store commit that fails.

use crate::common;

use common::{wait_until, Gateway, Mosquitto, TestCa};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn reading(seq: u32) -> String {
    format!(
        r#"[{{"bn":"urn:dev:mac:0024befffe804ff1:","bt":{},"n":"spo2","u":"%","v":{}}}]"#,
        1769845200 + seq * 60,
        90 + seq % 10
    )
}

const TOPIC: &str = "rpm/senml/0024befffe804ff1";
const DEVICE: (&str, &str) = ("0024befffe804ff1", "p1");

/// MQTT 5: clean start off with an explicit session expiry keeps the queue
/// while the gateway is down (without the expiry a v5 broker would drop it).
#[test]
fn mqtt5_session_survives_gateway_downtime() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let mut gw = Gateway::new(
        dir.path(),
        broker.port,
        &[DEVICE],
        "protocol = \"5\"\nsession_expiry = \"1h\"\n",
    );
    gw.start();
    assert!(gw.log().contains("\"5\""), "{}", gw.log());
    broker.publish(TOPIC, reading(1).as_bytes());
    wait_until("first reading", T, || gw.readings() == 1);
    assert_eq!(gw.stop().code(), Some(0));

    // Published while the gateway is away: queued in the v5 session.
    for seq in 2..=4 {
        broker.publish(TOPIC, reading(seq).as_bytes());
    }
    gw.start();
    wait_until("queued readings", T, || gw.readings() == 4);
    // A redelivered or re-sent reading is still stored once.
    broker.publish(TOPIC, reading(3).as_bytes());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(gw.readings(), 4);
}

/// TLS to the broker with a private CA (`ca_file`), server name checked.
fn tls_with_a_private_ca(protocol: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let broker = Mosquitto::start_tls(dir.path(), &ca);
    let mut gw = Gateway::new(
        dir.path(),
        broker.port,
        &[DEVICE],
        &format!(
            "protocol = \"{protocol}\"\n[sources.mqtt.tls]\nca_file = \"{}\"\nserver_name = \"localhost\"\n",
            ca.ca.display()
        ),
    );
    gw.start();
    broker.publish(TOPIC, reading(7).as_bytes());
    wait_until("reading over TLS", T, || gw.readings() == 1);
}

#[test]
fn tls_with_a_private_ca_mqtt311() {
    tls_with_a_private_ca("3.1.1");
}

#[test]
fn tls_with_a_private_ca_mqtt5() {
    tls_with_a_private_ca("5");
}

/// Without the private CA the gateway refuses the broker's certificate and
/// stores nothing, but keeps running (and retrying).
#[test]
fn tls_refuses_an_unknown_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let broker = Mosquitto::start_tls(dir.path(), &ca);
    let mut gw = Gateway::new(
        dir.path(),
        broker.port,
        &[DEVICE],
        "[sources.mqtt.tls]\nserver_name = \"localhost\"\n",
    );
    gw.start_unready(&[]);
    wait_until("a TLS failure in the log", T, || {
        gw.log().contains("mqtt connection lost")
    });
    assert!(gw.is_running());
    assert!(!gw.log().contains("mqtt connected"));
    drop(broker);
}

/// A session the broker kept may lack the gateway's subscriptions (it was
/// killed between CONNACK and SUBACK, or a profile was added since): the
/// gateway subscribes on every connect, not only when there is no session.
#[test]
fn a_kept_session_without_subscriptions_is_subscribed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    // The gateway's persistent session, with an unrelated subscription only.
    let status = std::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-c", "-i", &format!("gw-test-{}", broker.port)])
        .args(["-q", "1", "-t", "unrelated/topic", "-E"])
        .status()
        .unwrap();
    assert!(status.success());
    let mut gw = Gateway::new(dir.path(), broker.port, &[DEVICE], "");
    gw.start();
    wait_until("the subscription", T, || {
        gw.log().contains("mqtt subscribed")
    });
    broker.publish(TOPIC, reading(3).as_bytes());
    wait_until("the reading", T, || gw.readings() == 1);
    assert_eq!(gw.stop().code(), Some(0));
}

/// A failed commit is not acknowledged, and the source reconnects at once so
/// the broker redelivers it: the reading is stored, once.
fn a_failed_commit_is_redelivered_after_a_reconnect(protocol: &str) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let mut gw = Gateway::new(
        dir.path(),
        broker.port,
        &[DEVICE],
        &format!("protocol = \"{protocol}\"\n"),
    );
    gw.start_with_env(&[("RPM_FAULT_INJECT", "fail-first-commit")]);
    broker.publish(TOPIC, reading(5).as_bytes());
    wait_until("the redelivered reading", T, || gw.readings() == 1);
    let log = gw.log();
    assert!(
        log.contains("fault injection: failing this commit"),
        "{log}"
    );
    assert!(log.contains("reconnecting"), "{log}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(gw.readings(), 1);
    assert_eq!(gw.count("SELECT COUNT(*) FROM quarantine"), 0);
}

#[test]
fn a_failed_commit_is_redelivered_after_a_reconnect_mqtt311() {
    a_failed_commit_is_redelivered_after_a_reconnect("3.1.1");
}

#[test]
fn a_failed_commit_is_redelivered_after_a_reconnect_mqtt5() {
    a_failed_commit_is_redelivered_after_a_reconnect("5");
}

/// A large backlog queued for the gateway's session while it was down
/// drains completely, and the gateway still stops promptly on SIGTERM.
///
/// Regression: Mosquitto flushes a queued backlog far beyond the in-flight
/// window; the source's hand-over queue to the acker filled up while the
/// acker waited for the event loop to take its acks, and the two waited on
/// each other for ever (about 8 800 of 20 000 stored, SIGTERM ignored).
fn backlog_drains(protocol: &str) {
    const DEVICES: usize = 40;
    const PER_DEVICE: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let ids: Vec<String> = (0..DEVICES).map(|d| format!("backlog-{d}")).collect();
    let devices: Vec<(&str, &str)> = ids.iter().map(|d| (d.as_str(), "p-backlog")).collect();
    let mut gw = Gateway::new(
        dir.path(),
        broker.port,
        &devices,
        &format!("protocol = \"{protocol}\"\n"),
    );
    // First start creates the persistent session (and its subscriptions).
    gw.start();
    assert_eq!(gw.stop().code(), Some(0));

    std::thread::scope(|s| {
        for id in &ids {
            let broker = &broker;
            s.spawn(move || {
                let lines: Vec<String> = (0..PER_DEVICE)
                    .map(|i| {
                        format!(
                            r#"[{{"bt":{},"n":"body_weight","u":"kg","v":{}.{}}}]"#,
                            1769845200 + i * 60,
                            60 + i % 40,
                            i % 10
                        )
                    })
                    .collect();
                broker.publish_lines(&format!("rpm/senml/{id}"), &lines);
            });
        }
    });

    let total = (DEVICES * PER_DEVICE) as i64;
    gw.start();
    wait_until(
        "the whole backlog committed",
        Duration::from_secs(180),
        || gw.readings() == total,
    );
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(T).code(), Some(0), "{}", gw.log());
    assert_eq!(gw.count("SELECT COUNT(*) FROM quarantine"), 0);
}

#[test]
fn a_queued_backlog_drains_completely_mqtt311() {
    backlog_drains("3.1.1");
}

#[test]
fn a_queued_backlog_drains_completely_mqtt5() {
    backlog_drains("5");
}
