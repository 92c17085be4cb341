//! BLE harness: the gateway library's BLE source on the virtual transport,
//! with a real store file (a runtime of its own, stopped and drained at the
//! end); and, for the BlueZ tests, a private dbus-daemon and the emulator.

use rpm_e2e::virtual_transport::{virtual_radio, VirtualRadio};
use rpm_gateway::ble::BleSource;
use rpm_gateway::{Config, Metrics, Pipeline, Store, Writer, WriterConfig};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The BLE source over a virtual radio, writing to a temp store.
pub struct VirtualGateway {
    pub radio: VirtualRadio,
    pub db: PathBuf,
    pipeline: Arc<Pipeline>,
    rt: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl VirtualGateway {
    /// `devices`: (address, patient) assigned in config; `extra`: more TOML
    /// inside `[sources.ble]`.
    pub fn start(devices: &[(&str, &str)], extra: &str) -> VirtualGateway {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("rpm.db");
        let mut text = format!(
            "[store]\npath = \"{}\"\n\n[sources.ble]\nreconnect_min_backoff = \"50ms\"\nreconnect_max_backoff = \"1s\"\n{extra}\n",
            db.display()
        );
        for (d, p) in devices {
            text.push_str(&format!("[[devices]]\nid = \"{d}\"\npatient = \"{p}\"\n"));
        }
        let config = Config::from_toml(&text, Path::new("")).unwrap();
        let metrics = Arc::new(Metrics::default());
        let pipeline = Arc::new(rpm_gateway::pipeline(&config, metrics.clone()).unwrap());
        let mut store = Store::open(&db).unwrap();
        rpm_gateway::apply_config_devices(&mut store, &config, &pipeline).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (writer, writer_thread) = Writer::start(store, WriterConfig::default(), metrics, None);
        let (transport, radio) = virtual_radio();
        let ble = config.sources.ble.clone().unwrap();
        let source = BleSource::new(
            ble,
            config.ble_profiles().unwrap(),
            Arc::new(transport),
            pipeline.clone(),
            writer,
            Some(db.clone()),
            chrono::FixedOffset::east_opt(0).unwrap(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(source.run(async move {
            let _ = stopped.await;
        }));
        VirtualGateway {
            radio,
            db,
            pipeline,
            rt: Some(rt),
            stop: Some(stop),
            task: Some(task),
            writer_thread: Some(writer_thread),
            _dir: dir,
        }
    }

    pub fn conn(&self) -> Connection {
        Connection::open_with_flags(&self.db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
    }

    pub fn count(&self, metric: &str, device: &str) -> i64 {
        self.conn()
            .query_row(
                "SELECT COUNT(*) FROM readings WHERE metric = ?1 AND device_id = ?2",
                [metric, device],
                |r| r.get(0),
            )
            .unwrap_or(0)
    }

    pub fn query(&self, sql: &str, device: &str) -> Vec<(i64, String)> {
        let c = self.conn();
        let mut q = c.prepare(sql).unwrap();
        q.query_map([device], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    pub fn quarantine_reasons(&self) -> Vec<String> {
        let c = self.conn();
        let mut q = c
            .prepare("SELECT reason FROM quarantine WHERE status = 'open' ORDER BY id")
            .unwrap();
        q.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// Assigns a device as the CLI does; returns the recovered count.
    pub fn assign(&self, device: &str, patient: &str) -> usize {
        let mut store = Store::open(&self.db).unwrap();
        store
            .assign_device(device, patient, "cli", |q| self.pipeline.reprocess(q))
            .unwrap()
            .recovered
    }

    /// Stops the source and drains the writer.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let (Some(rt), Some(stop), Some(task)) =
            (self.rt.take(), self.stop.take(), self.task.take())
        {
            let _ = stop.send(());
            let _ = rt.block_on(task);
            drop(rt);
        }
        if let Some(t) = self.writer_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for VirtualGateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The BlueZ emulator binary on a private dbus-daemon (started here, so
/// that it is killed with the test), reporting its events line by line.
pub struct BluezEmulator {
    pub bus: rpm_simulator::bluez::PrivateBus,
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub const EMULATOR_BIN: &str = env!("CARGO_BIN_EXE_rpm-bluez-emulator-under-test");

impl BluezEmulator {
    /// Starts a private bus in `dir` and the emulator with `devices`
    /// (`KIND,ADDRESS[,N]`); returns once it owns org.bluez.
    pub fn start(dir: &Path, devices: &[&str]) -> BluezEmulator {
        Self::start_with(dir, &[], devices)
    }

    /// [`BluezEmulator::start`] with behaviour flags (`--hang-up-when-sent`, ...).
    pub fn start_with(dir: &Path, flags: &[&str], devices: &[&str]) -> BluezEmulator {
        let bus_dir = dir.join("bus");
        std::fs::create_dir_all(&bus_dir).unwrap();
        let bus = rpm_simulator::bluez::PrivateBus::start(&bus_dir)
            .expect("dbus-daemon: run scripts/test (it installs the Debian package dbus-daemon)");
        let mut cmd = std::process::Command::new(EMULATOR_BIN);
        cmd.args(flags);
        for d in devices {
            cmd.arg("--device").arg(d);
        }
        let mut child = cmd
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let out = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let e = BluezEmulator {
            bus,
            child,
            stdin,
            lines,
        };
        e.wait_for("READY", 1);
        e
    }

    /// Sends a command line (`disconnect ADDR`, `add-glucose ADDR 140`, ...).
    pub fn send(&mut self, command: &str) {
        use std::io::Write;
        let s = self.stdin.as_mut().unwrap();
        writeln!(s, "{command}").unwrap();
        s.flush().unwrap();
    }

    /// Event lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// How many event lines equal `line`.
    pub fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|l| *l == line).count()
    }

    /// Waits until `line` was reported at least `n` times.
    pub fn wait_for(&self, line: &str, n: usize) {
        super::wait_until(
            &format!("emulator line `{line}` x{n}"),
            std::time::Duration::from_secs(40),
            || self.count(line) >= n,
        );
    }
}

impl Drop for BluezEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
