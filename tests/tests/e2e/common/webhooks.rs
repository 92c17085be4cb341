//! Delivery test helpers: alert events written into the store as the rule
//! evaluator would (same transaction API), the gateway's own
//! `webhook-receiver` as a separate process, and an independent Python
//! receiver that verifies with the `standardwebhooks` package.

use chrono::{Duration as CDuration, Utc};
use rpm_gateway::webhooks::{
    enqueue, event_id, AlertData, Event, EventType, EvidenceReading, RuleRef, EVENT_SCHEMA,
};
use rpm_gateway::{PatientChange, Store};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use super::{listening, serve, tail, wait_until, PortHold, TestCa, BIN};

/// The Standard Webhooks test-vector secret.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A second secret (rotation).
pub fn new_secret() -> String {
    rpm_gateway::webhooks::Secret::generate()
}

/// An `alert.fired` event for `patient`, numbered `n`.
pub fn alert(patient: &str, n: u32, severity: &str) -> Event<AlertData> {
    let alert_id = format!("al-{patient}-{n}");
    let now = Utc::now();
    Event {
        schema: EVENT_SCHEMA.into(),
        id: event_id(&[&alert_id, "fired", "0"]),
        event_type: EventType::AlertFired,
        timestamp: now,
        data: AlertData {
            alert_id: alert_id.clone(),
            patient_id: patient.into(),
            care_team: None,
            care_plans: vec!["hypertension".into()],
            rule: RuleRef {
                id: "htn.crisis".into(),
                version: 1,
                pack: "hypertension".into(),
            },
            severity: severity.into(),
            status: "firing".into(),
            message: format!("Systolic {} mm[Hg] at or above 180", 180 + n),
            limits: serde_json::json!({"systolic_max": 180}),
            evidence: vec![EvidenceReading {
                reading_id: format!("r-{patient}-{n}"),
                metric: "systolic".into(),
                value: 180.0 + n as f64,
                unit: "mm[Hg]".into(),
                loinc: "8480-6".into(),
                measured_at: now - CDuration::seconds(5),
            }],
            late: false,
            flapping: false,
            fired_at: now,
            measured_at: Some(now - CDuration::seconds(5)),
            acknowledged_by: None,
            ack_note: None,
            resolved_at: None,
            link: format!("/api/v1/alerts/{alert_id}"),
        },
    }
}

/// Commits events into the outbox of the store at `db` (another connection
/// than the gateway's, as the rule evaluator or the API would).
pub fn enqueue_events(db: &Path, events: &[Event<AlertData>]) {
    let mut store = Store::open(db).unwrap();
    let tx = store.transaction().unwrap();
    for e in events {
        enqueue(
            &tx,
            e,
            Some(&e.data.alert_id),
            Some(&e.data.patient_id),
            Some(&e.data.severity),
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// Puts a patient in a care team.
pub fn set_team(db: &Path, patient: &str, team: &str) {
    let mut store = Store::open(db).unwrap();
    store
        .upsert_patient(
            patient,
            "cli",
            &PatientChange {
                care_team: Some(Some(team.into())),
                ..Default::default()
            },
        )
        .unwrap();
}

/// A gateway config: store, no MQTT source, fast delivery settings for
/// tests, plus `extra` (e.g. `[[webhooks]]`).
pub fn config(extra: &str) -> String {
    format!(
        "[store]\npath = \"{{db}}\"\n\n[delivery]\npoll_interval = \"50ms\"\nretry_schedule = [\"200ms\", \"400ms\", \"800ms\"]\njitter = 0.1\nmax_attempts = 50\nbreaker_threshold = 3\nbreaker_cooldown = \"300ms\"\nbreaker_max_cooldown = \"1s\"\n# Receivers run on this machine.\nallow_private_network = true\n{extra}\n"
    )
}

/// A `[[webhooks]]` entry.
pub fn webhook(id: &str, url: &str, secret: &str, filter: &str) -> String {
    format!("\n[[webhooks]]\nid = \"{id}\"\nurl = \"{url}\"\nsecret = \"{secret}\"\n{filter}\n")
}

/// The gateway's own `webhook-receiver`, as a separate process, JSON lines
/// on stdout into a file. It listens on port 0 the first time and names the
/// port on stderr; started again, it comes back on that port (the gateway
/// knows its URL), held for it while it is down.
pub struct Receiver {
    /// 0 until first started.
    pub port: u16,
    /// The port, kept while the receiver is down.
    hold: Option<PortHold>,
    out: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
}

impl Receiver {
    /// Not started.
    pub fn new(dir: &Path, name: &str, args: &[&str]) -> Receiver {
        Receiver {
            port: 0,
            hold: None,
            out: dir.join(format!("receiver-{name}.jsonl")),
            log: dir.join(format!("receiver-{name}.log")),
            child: None,
            args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Down, on a port of its own: started once to learn its port, and
    /// stopped (the port stays held until [`Receiver::start`]).
    pub fn down(dir: &Path, name: &str, args: &[&str]) -> Receiver {
        let mut r = Receiver::new(dir, name, args);
        r.start();
        r.stop();
        r
    }

    pub fn url(&self) -> String {
        assert_ne!(self.port, 0, "start the receiver first: it picks its port");
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Starts it (again), appending to the same output.
    pub fn start(&mut self) {
        let spawn = |port: u16| {
            let open = |p: &Path| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .unwrap()
            };
            Command::new(BIN)
                .arg("webhook-receiver")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--json")
                .args(&self.args)
                .stdout(open(&self.out))
                .stderr(open(&self.log))
                .spawn()
                .unwrap()
        };
        if self.port != 0 {
            let (_, child) = serve(
                "webhook-receiver",
                Some((self.port, self.hold.take())),
                spawn,
                listening,
                || tail(&self.log),
            );
            self.child = Some(child);
            return;
        }
        let before = announced(&self.log).len();
        let mut child = spawn(0);
        let log = &self.log;
        let mut port = None;
        wait_until(
            "the receiver to name its port",
            Duration::from_secs(10),
            || {
                port = announced(log).get(before).copied();
                port.is_some() || child.try_wait().unwrap().is_some()
            },
        );
        self.port = port.unwrap_or_else(|| panic!("webhook-receiver exited: {}", tail(log)));
        self.child = Some(child);
    }

    /// Stops it; its port stays ours for [`Receiver::start`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            self.hold = PortHold::on(self.port).ok();
        }
    }

    pub fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Accepted (verified, answered 200) deliveries, in order, duplicates included.
    pub fn accepted(&self) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["responded"] == 200)
            .collect()
    }

    /// Distinct accepted webhook ids.
    pub fn distinct(&self) -> usize {
        let mut ids: Vec<_> = self
            .accepted()
            .iter()
            .map(|l| l["webhook_id"].as_str().unwrap_or("").to_string())
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    }

    /// Requests that arrived (before any delay or failure), by webhook id.
    pub fn arrivals(&self, id: &str) -> usize {
        self.lines()
            .iter()
            .filter(|l| l["arrived"] == true && l["webhook_id"] == id)
            .count()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Ports named by `... listening on 127.0.0.1:PORT` lines in a log, in order.
fn announced(log: &Path) -> Vec<u16> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once("listening on ")?
                .1
                .trim()
                .parse::<SocketAddr>()
                .ok()
        })
        .map(|a| a.port())
        .collect()
}

/// The independent receiver (tests/python/receiver.py): `standardwebhooks`
/// verification and JSON Schema validation.
pub struct PyReceiver {
    pub port: u16,
    out: PathBuf,
    child: Child,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl PyReceiver {
    /// `secrets`: (path, secret) pairs.
    pub fn start(dir: &Path, secrets: &[(&str, &str)]) -> PyReceiver {
        PyReceiver::start_tls(dir, secrets, None)
    }

    /// The same over HTTPS with the test CA's server certificate.
    pub fn start_tls(dir: &Path, secrets: &[(&str, &str)], tls: Option<&TestCa>) -> PyReceiver {
        let ok = Command::new("python3")
            .args(["-c", "import standardwebhooks, jsonschema"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "python3 with the `standardwebhooks` and `jsonschema` packages is needed: run scripts/test (it pip-installs them)"
        );
        let out = dir.join("py-receiver.jsonl");
        let log = dir.join("py-receiver.log");
        let mut cmd = Command::new("python3");
        cmd.arg(repo().join("tests/python/receiver.py"))
            .args(["--port", "0"])
            .arg("--schema")
            .arg(repo().join("gateway/schema/webhook-event.v1.json"))
            .arg("--out")
            .arg(&out)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("py-receiver.err")).unwrap());
        for (p, s) in secrets {
            cmd.arg("--secret").arg(format!("{p}={s}"));
        }
        if let Some(ca) = tls {
            cmd.arg("--cert").arg(&ca.cert).arg("--key").arg(&ca.key);
        }
        let mut child = cmd.spawn().unwrap();
        let mut port = None;
        wait_until(
            "the python receiver to name its port",
            Duration::from_secs(20),
            || {
                port = announced(&log).first().copied();
                port.is_some() || child.try_wait().unwrap().is_some()
            },
        );
        let port = port.unwrap_or_else(|| {
            panic!(
                "python receiver exited: {}",
                tail(&dir.join("py-receiver.err"))
            )
        });
        PyReceiver { port, out, child }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for PyReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
