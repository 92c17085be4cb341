//! Test harness: a real Mosquitto on a free port, the real gateway binary,
//! real SQLite files. Like ripgrep's `Dir`/`TestCommand`: small helpers,
//! each test builds its world in a temp dir.
//!
//! # Ports
//!
//! Many tests run at once, each with its own servers, so no port is picked
//! by binding, dropping and binding again (another test may take it in
//! between). Instead:
//!
//! - In-process servers (the InfluxDB stand-in, `influx.rs`) bind
//!   `127.0.0.1:0` and serve on that very listener (mini-redis'
//!   `start_server`).
//! - The gateway's API listens on port 0 ([`API_LISTEN`]) and writes the
//!   port it got to `api.addr` ([`Gateway::api_port`] reads it); the
//!   gateway's `webhook-receiver` and the Python receiver listen on port 0
//!   and print the port (`webhooks.rs`).
//! - Mosquitto and VictoriaMetrics must be told a port ([`serve`]): a free
//!   one is held for them ([`PortHold`]) while they start, and should one
//!   fail to listen after all it is started again on another port.
//! - A server stopped to rehearse an outage comes back on its port (its
//!   clients are configured with it): the port is held while it is down.
#![allow(dead_code)]

pub mod api_client;
pub mod ble;
pub mod console;
pub mod http;
pub mod influx;
pub mod victoria;

use rusqlite::{Connection, OpenFlags};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod webhooks;

/// A loopback port kept ours while no server listens on it: a socket bound
/// to it with `SO_REUSEADDR`, not listening. A connection to the port is
/// refused, as with no server; the system hands the port to no one else
/// (binds to port 0 and outgoing connections skip it), while the server
/// told this port binds beside the hold (Mosquitto, VictoriaMetrics, tokio
/// and Python listeners all set `SO_REUSEADDR`).
pub struct PortHold {
    pub port: u16,
    _socket: socket2::Socket,
}

impl PortHold {
    /// A free port.
    pub fn any() -> PortHold {
        PortHold::on(0).expect("a free loopback port")
    }

    /// `port`, when nothing else has it.
    pub fn on(port: u16) -> std::io::Result<PortHold> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
        let port = socket.local_addr()?.as_socket().map_or(port, |a| a.port());
        Ok(PortHold {
            port,
            _socket: socket,
        })
    }
}

/// Whether something accepts connections on loopback `port`.
pub fn listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Starts a server that must be told its port: `spawn(port)` starts it,
/// `ready(port)` says when it serves, `log()` says why it did not. With
/// `port` None (a first start) it gets a free port, held until it listens,
/// and should it exit before (the port taken after all) it is started again
/// on another. With `Some((port, hold))` (a restart: its clients know the
/// port) it is started on that port again, held meanwhile, and retried
/// there. Returns the port and the process.
pub fn serve(
    what: &str,
    port: Option<(u16, Option<PortHold>)>,
    mut spawn: impl FnMut(u16) -> Child,
    mut ready: impl FnMut(u16) -> bool,
    log: impl Fn() -> String,
) -> (u16, Child) {
    let (fixed, mut hold) = match port {
        None => (None, Some(PortHold::any())),
        Some((p, hold)) => (Some(p), hold.or_else(|| PortHold::on(p).ok())),
    };
    for attempt in 1..=5 {
        let port = fixed.or(hold.as_ref().map(|h| h.port)).unwrap();
        let mut child = spawn(port);
        let deadline = Instant::now() + Duration::from_secs(20);
        let exited = loop {
            if ready(port) {
                return (port, child);
            }
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} not serving on port {port} after 20 s: {}", log());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        eprintln!(
            "{what} exited ({exited}) before serving on port {port}, attempt {attempt}: {}",
            log()
        );
        match fixed {
            None => hold = Some(PortHold::any()),
            Some(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
    panic!("{what} did not start: {}", log())
}

/// The tail of a log file, for failure messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// `[api]` keys for a port the system picks, named in `api.addr` beside the
/// config ([`Gateway::api_port`] reads it).
pub const API_LISTEN: &str = "listen = \"127.0.0.1:0\"\naddress_file = \"api.addr\"";

pub fn find(bin: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!("`{bin}` not found: run scripts/test (it installs mosquitto, mosquitto-clients and victoria-metrics from Debian)")
}

pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// A Mosquitto broker of our own, with persistence, on a free port.
pub struct Mosquitto {
    pub port: u16,
    /// The port, kept while the broker is stopped.
    hold: Option<PortHold>,
    dir: PathBuf,
    child: Option<Child>,
    /// Extra listener lines (TLS).
    listener_extra: String,
    /// CA for `mosquitto_pub` when the listener speaks TLS.
    cafile: Option<PathBuf>,
    /// `message_size_limit` (None: Mosquitto's default, the MQTT maximum).
    size_limit: Option<usize>,
}

/// A throw-away CA and a server certificate for `localhost`/127.0.0.1,
/// made with the `openssl` command line tool.
pub struct TestCa {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path) -> TestCa {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl not found: apt-get install openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=rpm-test-ca",
        ]);
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
        TestCa {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

impl Mosquitto {
    pub fn start(dir: &Path) -> Mosquitto {
        Mosquitto::launch(dir, String::new(), None, Some(1048576))
    }

    /// A broker with Mosquitto's default message size limit (256 MB, what
    /// MQTT allows), as most deployments run it.
    pub fn start_unlimited(dir: &Path) -> Mosquitto {
        Mosquitto::launch(dir, String::new(), None, None)
    }

    /// A broker whose only listener speaks TLS with `ca`'s server certificate.
    pub fn start_tls(dir: &Path, ca: &TestCa) -> Mosquitto {
        Mosquitto::launch(
            dir,
            format!(
                "cafile {}\ncertfile {}\nkeyfile {}\n",
                ca.ca.display(),
                ca.cert.display(),
                ca.key.display()
            ),
            Some(ca.ca.clone()),
            Some(1048576),
        )
    }

    fn launch(
        dir: &Path,
        listener_extra: String,
        cafile: Option<PathBuf>,
        size_limit: Option<usize>,
    ) -> Mosquitto {
        let mut m = Mosquitto {
            port: 0,
            hold: None,
            dir: dir.to_path_buf(),
            child: None,
            listener_extra,
            cafile,
            size_limit,
        };
        m.restart();
        m
    }

    /// Starts the broker: on a free port the first time, on its port again
    /// after [`Mosquitto::stop`].
    pub fn restart(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        let log = self.dir.join("mosquitto.log");
        let port = (self.port != 0).then(|| (self.port, self.hold.take()));
        let (port, child) = serve(
            "mosquitto",
            port,
            |port| {
                std::fs::write(
                    &conf,
                    format!(
                        "listener {port} 127.0.0.1\n{extra}allow_anonymous true\nuser {user}\npersistence true\npersistence_location {dir}/\n\
                         max_queued_messages 0\nmax_inflight_messages 20\n{limit}log_dest file {log}\n",
                        limit = self.size_limit.map(|n| format!("message_size_limit {n}\n")).unwrap_or_default(),
                        extra = self.listener_extra,
                        dir = self.dir.display(),
                        log = log.display(),
                        // As root, mosquitto would switch to the `mosquitto` user and
                        // fail to write its persistence file into our temp dir.
                        user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "root".into()),
                    ),
                )
                .unwrap();
                Command::new(find("mosquitto"))
                    .arg("-c")
                    .arg(&conf)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            },
            listening,
            || tail(&log),
        );
        self.port = port;
        self.child = Some(child);
    }

    /// Stops the broker (SIGTERM: it saves its persistent state); its port
    /// stays ours for [`Mosquitto::restart`].
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c);
            self.hold = PortHold::on(self.port).ok();
        }
    }

    /// Publishes one message with QoS 1 through `mosquitto_pub` (an independent client).
    pub fn publish(&self, topic: &str, payload: &[u8]) {
        self.mosquitto_pub(topic, "-s", payload);
    }

    /// Publishes one message as client `client_id` (clean session): a
    /// client with the gateway's id takes its connection over.
    pub fn publish_as(&self, client_id: &str, topic: &str, payload: &[u8]) {
        let mut child = Command::new(find("mosquitto_pub"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-i",
                client_id,
                "-q",
                "1",
                "-t",
                topic,
                "-s",
            ])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(payload).unwrap();
        assert!(child.wait().unwrap().success(), "mosquitto_pub failed");
    }

    /// Publishes each line as one message (QoS 1).
    pub fn publish_lines(&self, topic: &str, lines: &[String]) {
        self.mosquitto_pub(topic, "-l", lines.join("\n").as_bytes());
    }

    /// `mode`: `-s` (stdin is one message) or `-l` (one message per line).
    fn mosquitto_pub(&self, topic: &str, mode: &str, stdin: &[u8]) {
        let mut cmd = Command::new(find("mosquitto_pub"));
        if let Some(ca) = &self.cafile {
            cmd.arg("--cafile").arg(ca);
        }
        let mut child = cmd
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-q",
                "1",
                "-t",
                topic,
                mode,
            ])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        assert!(child.wait().unwrap().success(), "mosquitto_pub failed");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The gateway binary under test, with a config in a temp dir.
pub struct Gateway {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub db: PathBuf,
    child: Option<Child>,
}

pub const BIN: &str = env!("CARGO_BIN_EXE_rpm-gateway-under-test");

/// The simulator's command line (`rpm-sim`), built from the same library.
pub const SIM: &str = env!("CARGO_BIN_EXE_rpm-sim-under-test");

/// Runs `rpm-sim` with `args`; panics with its output when it fails.
pub fn rpm_sim(args: &[&str]) -> Output {
    let out = Command::new(SIM).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "rpm-sim {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Gateway {
    /// Writes a config for broker `port` with `devices` (id, patient) and `extra` TOML.
    pub fn new(dir: &Path, port: u16, devices: &[(&str, &str)], extra: &str) -> Gateway {
        let db = dir.join("rpm.db");
        let mut text = format!(
            "[store]\npath = \"{}\"\n\n[sources.mqtt]\nhost = \"127.0.0.1\"\nport = {port}\nclient_id = \"gw-test-{port}\"\nkeep_alive = \"5s\"\nreconnect_max_backoff = \"1s\"\n\n{extra}\n",
            db.display()
        );
        for (d, p) in devices {
            text.push_str(&format!("[[devices]]\nid = \"{d}\"\npatient = \"{p}\"\n"));
        }
        let config = dir.join("gateway.toml");
        std::fs::write(&config, text).unwrap();
        Gateway {
            dir: dir.to_path_buf(),
            config,
            db,
            child: None,
        }
    }

    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        let log = self.dir.join("gateway.log");
        let before = std::fs::read_to_string(&log)
            .map(|s| s.matches("mqtt connected").count())
            .unwrap_or(0);
        self.start_unready(env);
        // Ready once the broker session is up: the log says so.
        wait_until("gateway to connect", Duration::from_secs(20), || {
            std::fs::read_to_string(&log)
                .map(|s| s.matches("mqtt connected").count() > before)
                .unwrap_or(false)
        });
        std::thread::sleep(Duration::from_millis(300));
    }

    /// A gateway with exactly this config text (`{db}` stands for the store
    /// path): e.g. no MQTT source, for delivery tests.
    pub fn with_config(dir: &Path, text: &str) -> Gateway {
        let db = dir.join("rpm.db");
        let config = dir.join("gateway.toml");
        std::fs::write(&config, text.replace("{db}", &db.display().to_string())).unwrap();
        Gateway {
            dir: dir.to_path_buf(),
            config,
            db,
            child: None,
        }
    }

    /// A gateway with no source, on a store of its own (pre-filled by
    /// [`fill_store`]), with `extra` TOML (forwarding, retention).
    pub fn store_only(dir: &Path, extra: &str) -> Gateway {
        Gateway::with_config(dir, &format!("[store]\npath = \"{{db}}\"\n\n{extra}\n"))
    }

    /// Starts `run` and waits until the log shows `marker` once more than before.
    pub fn start_until(&mut self, marker: &str, env: &[(&str, &str)]) {
        let log = self.dir.join("gateway.log");
        let before = std::fs::read_to_string(&log)
            .map(|s| s.matches(marker).count())
            .unwrap_or(0);
        self.start_unready(env);
        wait_until(marker, Duration::from_secs(20), || {
            std::fs::read_to_string(&log)
                .map(|s| s.matches(marker).count() > before)
                .unwrap_or(false)
        });
    }

    /// Starts the process without waiting for its broker connection.
    pub fn start_unready(&mut self, env: &[(&str, &str)]) {
        // Left by a gateway killed before it could remove it.
        let _ = std::fs::remove_file(self.api_addr_file());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("gateway.log"))
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RPM_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
    }

    /// `address_file` of [`API_LISTEN`]: beside the config.
    fn api_addr_file(&self) -> PathBuf {
        self.config.with_file_name("api.addr")
    }

    /// The port the running gateway's API listens on (configured with
    /// [`API_LISTEN`]): waits for its address file.
    pub fn api_port(&mut self) -> u16 {
        let file = self.api_addr_file();
        let mut addr = None;
        wait_until("the API's address file", Duration::from_secs(20), || {
            addr = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok());
            addr.is_some() || !self.is_running()
        });
        addr.unwrap_or_else(|| panic!("the gateway exited:\n{}", self.log()))
            .port()
    }

    /// A downstream cursor (0 when absent).
    pub fn cursor(&self, name: &str) -> i64 {
        self.count(&format!(
            "SELECT COALESCE((SELECT position FROM cursors WHERE name = '{name}'), 0)"
        ))
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("gateway not running");
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        c.wait().unwrap()
    }

    /// Waits for the process to end by itself (fault injection aborts it).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("gateway not running");
        let start = Instant::now();
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            assert!(start.elapsed() < timeout, "gateway did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn db(&self) -> Connection {
        Connection::open_with_flags(&self.db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
    }

    pub fn count(&self, sql: &str) -> i64 {
        if !self.db.exists() {
            return 0;
        }
        self.db().query_row(sql, [], |r| r.get(0)).unwrap_or(0)
    }

    pub fn readings(&self) -> i64 {
        self.count("SELECT COUNT(*) FROM readings")
    }

    pub fn quarantined(&self, reason: &str) -> i64 {
        self.count(&format!(
            "SELECT COUNT(*) FROM quarantine WHERE reason = '{reason}'"
        ))
    }

    /// `(rule_id, status, late)` of a patient's alerts, by rule id.
    pub fn alerts_of(&self, patient: &str) -> Vec<(String, String, bool)> {
        if !self.db.exists() {
            return Vec::new();
        }
        let db = self.db();
        let mut q = db
            .prepare("SELECT rule_id, status, late FROM alerts WHERE patient_id = ?1 ORDER BY rule_id, fired_at")
            .unwrap();
        q.query_map([patient], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Alert event types (`alert.*`) of a patient in the outbox, in outbox order.
    pub fn events_of(&self, patient: &str) -> Vec<String> {
        let db = self.db();
        let mut q = db
            .prepare("SELECT event_type FROM outbox WHERE patient_id = ?1 AND event_type LIKE 'alert.%' ORDER BY seq")
            .unwrap();
        q.query_map([patient], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Whether rule evaluation has caught up with every committed reading.
    pub fn rules_caught_up(&self) -> bool {
        self.count("SELECT (SELECT COALESCE(MAX(seq), 0) FROM readings) = (SELECT COALESCE(MAX(position), -1) FROM cursors WHERE name = 'rules')") == 1
    }

    /// Sends a signal (`HUP`, `TERM`, ...) to the running gateway.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("gateway not running").id();
        Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default()
    }
}

/// Fills a store with `n` synthetic readings (`tests/src/bin/store-fill.rs`):
/// reading i has patient `p-{i%200}`, device `d-{i%1000}`, one of five
/// metrics, and a distinct measured-at per device and metric.
pub fn fill_store(db: &Path, n: u64) {
    succeeded(
        Command::new(env!("CARGO_BIN_EXE_rpm-store-fill"))
            .arg(db)
            .arg(n.to_string()),
    );
}

/// Runs `cmd` to its end and asserts it succeeded (else fails with its
/// standard error); returns what it printed.
pub fn succeeded(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// SIGTERM to a server of ours, and wait for it to exit (it saves its
/// state first).
pub fn terminate(mut c: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &c.id().to_string()])
        .status();
    let _ = c.wait();
}

/// Runs a Python `script` (an independent peer: a FHIR or SQLCipher
/// library) with `args`, its packages from `pythonpath`, `stdin` fed in.
pub fn python(script: &str, args: &[&str], pythonpath: &Path, stdin: &[u8]) -> Output {
    use std::io::Write as _;
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .env("PYTHONPATH", pythonpath)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).expect("python3 reads its input");
    }
    child.wait_with_output().expect("python3 ran")
}
