//! `[forward.upstream]`: a home box sends its readings to the program hub.
//!
//! The same binary runs at a patient's home and at the program: the box
//! keeps its own store (the system of record while it is offline) and
//! follows it with a forwarder on its own cursor (`forward.upstream`), as
//! the InfluxDB forwarder does; the hub takes the readings in through its
//! API (`POST /api/v1/upstream/readings`, see `api::upstream`) with a
//! hub-issued ingest token naming the box's devices. HTTPS to the hub's API
//! rather than MQTT: one credential per box, the TLS the operator already
//! runs for the API, friendly to proxies and firewalls, and the hub knows
//! which box sent what.
//!
//! The wire form is [`UpstreamReading`], one JSON object per line
//! (`application/x-ndjson`), gzip-compressed by default: every column that
//! makes a canonical reading, so the hub stores it as is (no decoding, no
//! normalization again) and keeps it once by `reading_id`. The cursor moves
//! only after a 2xx, which the hub sends only once the batch is committed.
//! 408, 429, 5xx and transport errors are retried with backoff through
//! outages of any length; any other 4xx is a refusal ([`WriteError::Refused`]):
//! the batch is held (nothing skipped), the refusal is logged, counted and
//! reported on `/readyz`, and tried again every `max_backoff`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::forwarder::{Encoded, Sink};
use super::http::{send, with_body, WriteError};
use crate::metrics::Metrics;
use crate::store::queries::StoredReading;
use crate::store::{Store, StoreError};

/// The hub's intake route, under the hub's API base URL.
pub const PATH: &str = "/api/v1/upstream/readings";
/// The box's cursor in the `cursors` table.
pub const CURSOR: &str = "forward.upstream";
/// Media type of the request body: one JSON reading per line.
pub const MEDIA_TYPE: &str = "application/x-ndjson";
/// Header: readings at the box the hub has not taken yet.
pub const HEADER_BACKLOG: &str = "rpm-box-backlog";
/// Header: the box's clock when it sent the request (RFC 3339).
pub const HEADER_CLOCK: &str = "rpm-box-clock";
/// Header: the box's BLE adapter, `available` | `unavailable` (sent only
/// when the box has a BLE source).
pub const HEADER_BLE: &str = "rpm-box-ble";
/// Header: the box's gateway version.
pub const HEADER_VERSION: &str = "rpm-box-version";

/// `[forward.upstream]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// The hub's API base URL, e.g. `https://hub.example.org:8443`.
    pub url: String,
    /// Accept an `http://` URL (tests only: the token and PHI travel in clear).
    pub allow_http: bool,
    /// The hub-issued ingest token itself (prefer `token_file`).
    pub token: Option<String>,
    /// File holding the token.
    pub token_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) to trust for the hub, besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Readings per request.
    pub batch_size: usize,
    /// How often to look for new readings when caught up.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Gzip request bodies (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// Longest wait for one request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest wait between retries while the hub is away (and between
    /// attempts while it refuses a batch).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How often the box asks the hub for its share (devices, assignments,
    /// patients); while the hub is away, it asks again every `max_backoff`.
    #[serde(with = "humantime_serde")]
    pub share_interval: Duration,
    /// Pull the share from the hub (the hub owns patients and assignments).
    pub share: bool,
    /// Send quarantine records up to the hub.
    pub quarantine: bool,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            url: String::new(),
            allow_http: false,
            token: None,
            token_file: None,
            ca_file: None,
            batch_size: 500,
            flush_interval: Duration::from_secs(1),
            gzip: true,
            timeout: Duration::from_secs(30),
            max_backoff: Duration::from_secs(60),
            share_interval: Duration::from_secs(60),
            share: true,
            quarantine: true,
        }
    }
}

impl UpstreamConfig {
    /// The token, from config or file (never logged).
    pub fn token(&self) -> Result<String, String> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        match &self.token_file {
            Some(f) => std::fs::read_to_string(f)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("cannot read token file {}: {e}", f.display())),
            None => Err("no token: set token or token_file".into()),
        }
    }
}

/// Checks `[forward.upstream]`; `err(table, key, message)` records an error.
pub fn validate(c: &UpstreamConfig, err: &mut dyn FnMut(&str, &str, String)) {
    let t = "forward.upstream";
    match super::config::check_url(&c.url) {
        Err(e) => err(t, "url", e),
        Ok(u) if u.scheme() == "http" && !c.allow_http => err(
            t,
            "url",
            "must be https:// (allow_http = true is for tests only)".into(),
        ),
        Ok(_) => {}
    }
    match (&c.token, &c.token_file) {
        (None, None) => err(t, "token", "set token or token_file".into()),
        (Some(_), Some(_)) => err(t, "token", "set one of token, token_file".into()),
        (Some(tok), None) if tok.trim().is_empty() => err(t, "token", "must not be empty".into()),
        _ => {}
    }
    for (key, file) in [("token_file", &c.token_file), ("ca_file", &c.ca_file)] {
        if let Some(p) = file {
            if !p.exists() {
                err(t, key, format!("file {} does not exist", p.display()));
            }
        }
    }
    if c.batch_size == 0 || c.batch_size > 10_000 {
        err(t, "batch_size", "must be between 1 and 10000".into());
    }
    crate::forward::config::check_timing(t, c.timeout, c.flush_interval, c.max_backoff, err);
    if c.share_interval < Duration::from_millis(100) {
        err(t, "share_interval", "must be at least 100ms".into());
    }
}

/// One canonical reading on the wire: every column that makes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamReading {
    /// Stable id: the hub keeps a reading once by it.
    pub reading_id: String,
    /// Measurement id.
    pub group_id: String,
    /// Panel (`blood_pressure`), if any.
    pub panel: Option<String>,
    /// The patient at the box.
    pub patient_id: String,
    /// The device.
    pub device_id: String,
    /// Metric name.
    pub metric: String,
    /// Value in `unit`.
    pub value: f64,
    /// UCUM unit.
    pub unit: String,
    /// LOINC code.
    pub loinc: String,
    /// Device's own time.
    pub device_measured_at: Option<DateTime<Utc>>,
    /// Corrected time.
    pub measured_at: DateTime<Utc>,
    /// Receipt time at the box.
    pub received_at: DateTime<Utc>,
    /// Source kind at the box (`mqtt`, `ble`, `http`).
    pub source: String,
    /// Device sequence number.
    pub sequence: Option<i64>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Input digest (readings without device time).
    pub content_digest: Option<String>,
}

impl From<&StoredReading> for UpstreamReading {
    fn from(r: &StoredReading) -> Self {
        let annotations = match &r.annotations {
            serde_json::Value::Object(m) => m
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        UpstreamReading {
            reading_id: r.reading_id.clone(),
            group_id: r.group_id.clone(),
            panel: r.panel.clone(),
            patient_id: r.patient_id.clone(),
            device_id: r.device_id.clone(),
            metric: r.metric.clone(),
            value: r.value,
            unit: r.unit.clone(),
            loinc: r.loinc.clone(),
            device_measured_at: r.device_measured_at,
            measured_at: r.measured_at,
            received_at: r.received_at,
            source: r.source.clone(),
            sequence: r.sequence,
            annotations,
            content_digest: r.content_digest.clone(),
        }
    }
}

/// Building the upstream client failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The token could not be read.
    #[error("forward.upstream: {0}")]
    Token(String),
    /// TLS or the HTTP client could not be set up.
    #[error("forward.upstream: cannot build the HTTP client: {0}")]
    Client(String),
}

/// What the box tells the hub about itself with every request.
#[derive(Clone)]
pub struct HealthHeaders {
    /// The backlog gauge (`rpm_upstream_backlog`) and the BLE adapter state.
    pub metrics: Arc<Metrics>,
    /// Whether the box has a BLE source.
    pub ble: bool,
}

impl HealthHeaders {
    /// `req` with the box's health headers.
    pub fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let mut req = req
            .header(
                HEADER_CLOCK,
                Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            )
            .header(HEADER_VERSION, env!("CARGO_PKG_VERSION"));
        if let Some(b) = self.metrics.sink_backlog("upstream") {
            req = req.header(HEADER_BACKLOG, b.to_string());
        }
        if self.ble {
            let state = match self.metrics.ble_adapter_available() {
                true => "available",
                false => "unavailable",
            };
            req = req.header(HEADER_BLE, state);
        }
        req
    }
}

/// The HTTP client for the hub (TLS with `ca_file`, no redirects).
pub fn client(cfg: &UpstreamConfig) -> Result<reqwest::Client, UpstreamError> {
    let tls = crate::tls::client_tls_config(&crate::tls::TlsSettings {
        ca_file: cfg.ca_file.clone(),
        ..Default::default()
    })
    .map_err(|e| UpstreamError::Client(e.to_string()))?;
    reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .connect_timeout(cfg.timeout)
        .timeout(cfg.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("rpm-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| UpstreamError::Client(e.to_string()))
}

/// The hub's intake, as a forwarder sink.
pub struct UpstreamSink {
    client: reqwest::Client,
    endpoint: String,
    token: String,
    gzip: bool,
    health: HealthHeaders,
}

impl UpstreamSink {
    /// A client for `cfg` (validated at config load).
    pub fn new(cfg: &UpstreamConfig, health: HealthHeaders) -> Result<UpstreamSink, UpstreamError> {
        let token = cfg.token().map_err(UpstreamError::Token)?;
        Ok(UpstreamSink {
            client: client(cfg)?,
            endpoint: format!("{}{PATH}", cfg.url.trim_end_matches('/')),
            token,
            gzip: cfg.gzip,
            health,
        })
    }

    async fn post(&self, body: Bytes) -> Result<(), WriteError> {
        let req = self.health.apply(
            self.client
                .post(&self.endpoint)
                .bearer_auth(&self.token)
                .header(reqwest::header::CONTENT_TYPE, MEDIA_TYPE),
        );
        send(with_body(req, body, self.gzip)?, classify_status).await
    }
}

/// A non-2xx answer of the hub to what the forwarder does next.
pub fn classify_status(status: u16, body: &str) -> WriteError {
    // The hub answers problem documents: their title names no reading.
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let title = v.get("title")?.as_str()?.to_string();
            Some(match v.get("detail").and_then(|d| d.as_str()) {
                Some(d) => format!("{title}: {d}"),
                None => title,
            })
        })
        .unwrap_or_else(|| body.trim().chars().take(200).collect());
    let retry = |kind: &str| WriteError::Retry {
        kind: kind.into(),
        status: Some(status),
        message: message.clone(),
    };
    match status {
        408 => retry("timeout"),
        429 => retry("throttled"),
        400..=499 => WriteError::Refused { status, message },
        500..=599 => retry("server_error"),
        s => retry(&format!("http_{s}")),
    }
}

impl Sink for UpstreamSink {
    const NAME: &'static str = "upstream";
    const CURSOR: &'static str = CURSOR;
    fn read(
        &self,
        store: &Store,
        after: i64,
        limit: usize,
        batch: &mut Encoded,
    ) -> Result<(), StoreError> {
        store.each_reading_after(after, limit, |r| {
            batch.add(r.seq, |out| {
                let line = serde_json::to_string(&UpstreamReading::from(&r))
                    .map_err(|e| format!("not sent: {e}"))?;
                out.push_str(&line);
                out.push('\n');
                Ok(())
            })
        })
    }
    fn write(
        &self,
        body: Bytes,
    ) -> impl std::future::Future<Output = Result<(), WriteError>> + Send {
        self.post(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    #[test]
    fn config_is_validated() {
        let e = Config::from_toml(
            "[forward.upstream]\nurl = \"http://hub:8443\"\nbatch_size = 0\n",
            Path::new("g.toml"),
        )
        .unwrap_err();
        let got: Vec<&str> = e.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            got,
            [
                "forward.upstream.url",
                "forward.upstream.token",
                "forward.upstream.batch_size"
            ],
            "{e}"
        );
        let c = Config::from_toml(
            "[forward.upstream]\nurl = \"http://127.0.0.1:1\"\nallow_http = true\ntoken = \"t\"\n",
            Path::new("g.toml"),
        )
        .unwrap();
        let u = c.forward.upstream.unwrap();
        assert_eq!((u.batch_size, u.gzip), (500, true));
    }

    #[test]
    fn statuses() {
        let problem = r#"{"type":"about:blank","title":"Forbidden","status":403}"#;
        assert_eq!(
            classify_status(403, problem),
            WriteError::Refused {
                status: 403,
                message: "Forbidden".into()
            }
        );
        for (s, kind) in [(408, "timeout"), (429, "throttled"), (503, "server_error")] {
            match classify_status(s, "") {
                WriteError::Retry { kind: k, .. } => assert_eq!(k, kind),
                other => panic!("{s}: {other:?}"),
            }
        }
        assert!(matches!(
            classify_status(413, ""),
            WriteError::Refused { status: 413, .. }
        ));
    }

    #[test]
    fn wire_form_keeps_every_column() {
        let mut r = crate::forward::line::tests::reading("cuff-1", "p-1", 120.0);
        r.panel = Some("blood_pressure".into());
        r.content_digest = Some("d".into());
        r.sequence = Some(7);
        r.annotations = serde_json::json!({"ihb": "true"});
        let w = UpstreamReading::from(&r);
        let back: UpstreamReading =
            serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
        assert_eq!(back, w);
        assert_eq!(back.panel.as_deref(), Some("blood_pressure"));
        assert_eq!(
            back.annotations.get("ihb").map(String::as_str),
            Some("true")
        );
    }
}
