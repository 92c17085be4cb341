//! A VictoriaMetrics of our own: the one InfluxDB-v2-write-compatible server
//! CI can install from Debian (`victoria-metrics`). Started on a free
//! loopback port (held for it: `super::serve`) with a temp data dir; read
//! back through its export API.
//! What it does differently from InfluxDB: `../shared/tsdb.md` and docs/influxdb.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http::request;
use super::{serve, tail, PortHold};

/// One exported sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// `<measurement>_<field>`
    pub name: String,
    /// Tags.
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// Milliseconds (VictoriaMetrics truncates to them).
    pub ts_ms: i64,
}

pub struct VictoriaMetrics {
    pub port: u16,
    /// The port, kept while it is stopped.
    hold: Option<PortHold>,
    data: PathBuf,
    dedup: bool,
    child: Option<Child>,
}

impl VictoriaMetrics {
    /// Keeps every sample it is sent: a point written twice shows twice.
    pub fn start(dir: &Path) -> VictoriaMetrics {
        Self::start_with(dir, false)
    }

    /// With `-dedup.minScrapeInterval=1ms`: one sample per series and
    /// timestamp, as InfluxDB keeps one point per series and timestamp.
    pub fn start_dedup(dir: &Path) -> VictoriaMetrics {
        Self::start_with(dir, true)
    }

    fn start_with(dir: &Path, dedup: bool) -> VictoriaMetrics {
        let mut vm = VictoriaMetrics {
            port: 0,
            hold: None,
            data: dir.join("vm-data"),
            dedup,
            child: None,
        };
        vm.restart();
        vm
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts it: on a free port the first time, on its port again after
    /// [`VictoriaMetrics::stop`].
    pub fn restart(&mut self) {
        let log = self.data.with_file_name("vm.log");
        let port = (self.port != 0).then(|| (self.port, self.hold.take()));
        let (port, child) = serve(
            "victoria-metrics",
            port,
            |port| {
                let mut cmd = Command::new(super::find("victoria-metrics"));
                cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                    .arg(format!("-storageDataPath={}", self.data.display()))
                    .args([
                        "-retentionPeriod=100y",
                        "-search.latencyOffset=0",
                        "-search.disableCache",
                        "-loggerLevel=ERROR",
                    ])
                    .stdout(Stdio::null())
                    .stderr(
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&log)
                            .unwrap(),
                    );
                if self.dedup {
                    cmd.arg("-dedup.minScrapeInterval=1ms");
                }
                cmd.spawn().expect("start victoria-metrics")
            },
            |port| request(port, "GET", "/health", b"").is_ok_and(|(s, b)| s == 200 && b == b"OK"),
            || tail(&log),
        );
        self.port = port;
        self.child = Some(child);
    }

    /// SIGTERM and wait (it flushes its data); its port stays ours for
    /// [`VictoriaMetrics::restart`].
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            super::terminate(c);
            self.hold = PortHold::on(self.port).ok();
        }
    }

    /// Every sample of the `rpm_*` series, after a flush.
    pub fn export(&self) -> Vec<Sample> {
        let _ = request(self.port, "GET", "/internal/force_flush", b"");
        let (status, body) = request(
            self.port,
            "POST",
            "/api/v1/export",
            b"match[]=%7B__name__%3D~%22rpm_.*%22%7D",
        )
        .expect("export");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let mut out = Vec::new();
        for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            let mut labels: BTreeMap<String, String> = v["metric"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let name = labels.remove("__name__").unwrap_or_default();
            let values = v["values"].as_array().unwrap();
            let ts = v["timestamps"].as_array().unwrap();
            for (val, t) in values.iter().zip(ts) {
                out.push(Sample {
                    name: name.clone(),
                    labels: labels.clone(),
                    value: val.as_f64().unwrap_or(f64::NAN),
                    ts_ms: t.as_i64().unwrap(),
                });
            }
        }
        out
    }

    /// Samples of the `value` fields (`rpm_*_value`), waiting until there are
    /// at least `n` (new series take a moment to become visible) and then
    /// until the count is stable.
    pub fn values(&self, n: usize, timeout: Duration) -> Vec<Sample> {
        let start = Instant::now();
        let mut last: Option<Vec<Sample>> = None;
        loop {
            let v: Vec<Sample> = self
                .export()
                .into_iter()
                .filter(|s| s.name.ends_with("_value"))
                .collect();
            if v.len() >= n {
                if last.as_ref().is_some_and(|l| l.len() == v.len()) {
                    return v;
                }
                last = Some(v);
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
            assert!(
                start.elapsed() < timeout,
                "victoria-metrics has {} of {n} value samples after {timeout:?}",
                v.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
