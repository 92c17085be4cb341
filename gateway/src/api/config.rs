//! `[api]`: the HTTP API (see `gateway/src/api/`).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `[api]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve the API.
    pub enabled: bool,
    /// Listen address. Loopback by default: expose it deliberately, with TLS.
    /// Port 0 lets the system pick a free port; `address_file` tells which.
    pub listen: SocketAddr,
    /// A file the gateway writes the address it listens on to, once it
    /// listens (`127.0.0.1:41234` and a newline; the degraded API too):
    /// how a supervisor, a script or a test finds the port chosen for
    /// `listen = "127.0.0.1:0"` without racing the start. Written whole (a
    /// temporary file renamed over it), owner-only (0600), removed when the
    /// API stops cleanly; a reader waits for it to appear. Relative to the
    /// config file's directory. Default: none.
    pub address_file: Option<PathBuf>,
    /// TLS certificate chain (PEM). With `tls_key`, the API speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Largest request body accepted (bytes); larger ones get 413.
    pub max_body_bytes: usize,
    /// Page size when a request names none.
    pub default_page_size: usize,
    /// Largest page size a request may ask for.
    pub max_page_size: usize,
    /// A request taking longer is answered 503 (and its work abandoned;
    /// writes are transactions, so nothing half-done remains).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Time allowed for a client to send its request headers (and TLS handshake).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Most connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections one client address may hold at once (of `max_connections`):
    /// a few idle clients cannot starve the others, nor `/healthz`.
    pub max_connections_per_client: usize,
    /// Authentication failures a client address may make per minute (its
    /// bucket refills at this rate); beyond, 429 with `Retry-After`. 0: no limit.
    pub auth_failures_per_minute: u32,
    /// Failures a client address may make at once before the rate applies.
    pub auth_failure_burst: u32,
    /// Requests per second one token may make (burst twice that); beyond,
    /// 429 with `Retry-After`. 0: no limit.
    pub token_requests_per_second: u32,
    /// Read connections to the store (each request holds one briefly).
    pub read_connections: usize,
    /// Base URL clients reach the API at (`https://rpm.example.org`), for
    /// links in responses (FHIR `fullUrl`, alert links). Default: from the
    /// request's Host header.
    pub public_url: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            address_file: None,
            tls_cert: None,
            tls_key: None,
            max_body_bytes: 1024 * 1024,
            default_page_size: 100,
            max_page_size: 1000,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_connections_per_client: 32,
            auth_failures_per_minute: 30,
            auth_failure_burst: 10,
            token_requests_per_second: 100,
            read_connections: 4,
            public_url: None,
        }
    }
}

impl ApiConfig {
    /// Validation problems as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            out.push(("tls_cert", "tls_cert and tls_key go together".into()));
        }
        for (key, p) in [("tls_cert", &self.tls_cert), ("tls_key", &self.tls_key)] {
            if let Some(p) = p {
                if !p.exists() {
                    out.push((key, format!("file {} does not exist", p.display())));
                }
            }
        }
        if self.max_body_bytes < 1024 {
            out.push(("max_body_bytes", "must be at least 1024".into()));
        }
        if self.max_page_size == 0 || self.default_page_size == 0 {
            out.push(("max_page_size", "page sizes must be greater than 0".into()));
        } else if self.default_page_size > self.max_page_size {
            out.push(("default_page_size", "must not exceed max_page_size".into()));
        }
        if self.request_timeout < Duration::from_millis(100) {
            out.push(("request_timeout", "must be at least 100ms".into()));
        }
        if self.header_timeout < Duration::from_millis(100) {
            out.push(("header_timeout", "must be at least 100ms".into()));
        }
        if self.max_connections == 0 {
            out.push(("max_connections", "must be greater than 0".into()));
        }
        if self.max_connections_per_client == 0 {
            out.push((
                "max_connections_per_client",
                "must be greater than 0".into(),
            ));
        }
        if self.read_connections == 0 || self.read_connections > 64 {
            out.push(("read_connections", "must be between 1 and 64".into()));
        }
        if let Some(u) = &self.public_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) || u.ends_with('/') {
                out.push((
                    "public_url",
                    "must be an http(s) URL without a trailing slash".into(),
                ));
            }
        }
        out
    }

    /// Whether HTTPS is configured.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }
}
