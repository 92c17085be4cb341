//! `[forward.influxdb]` and `[retention]`: where readings are forwarded, and
//! how long the embedded store keeps them.
//!
//! Validated at config load like the rest of the file (file, line, field):
//! a bad URL, a missing token or CA file is an error there, never a failure
//! at the first write.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Environment variable read for the InfluxDB token when neither `token`,
/// `token_env` nor `token_file` is set.
pub const DEFAULT_TOKEN_ENV: &str = "RPM_INFLUXDB_TOKEN";

/// `[forward]`: sinks fed from the embedded store. All off by default: the
/// embedded store alone is a complete deployment.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// `[forward.influxdb]`; absent = no forwarding.
    pub influxdb: Option<InfluxConfig>,
    /// `[forward.upstream]`: this gateway is a home box sending its
    /// readings to the program hub; absent = it is not.
    pub upstream: Option<super::upstream::UpstreamConfig>,
    /// `[forward.fhir]`: push readings, alerts and tasks into the care
    /// team's FHIR server; absent = no push.
    pub fhir: Option<super::fhir::FhirPushConfig>,
}

/// `[forward.influxdb]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InfluxConfig {
    /// Base URL of the server, e.g. `https://influx.example.org:8086`.
    pub url: String,
    /// Organization (name or id).
    pub org: String,
    /// Bucket written to.
    pub bucket: String,
    /// The token itself (prefer `token_env` or `token_file`: config files get copied around).
    pub token: Option<String>,
    /// Environment variable holding the token (default `RPM_INFLUXDB_TOKEN`).
    pub token_env: Option<String>,
    /// File holding the token.
    pub token_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) to trust for the server, besides the
    /// system roots (an InfluxDB behind a private CA).
    pub ca_file: Option<PathBuf>,
    /// Points per write request (InfluxDB recommends about 5000 lines).
    pub batch_size: usize,
    /// How often to look for new readings when caught up. A full batch is
    /// sent at once; a partial one waits at most this long.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Gzip request bodies (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// Longest wait for one write request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest wait between retries while the server is away.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for InfluxConfig {
    fn default() -> Self {
        InfluxConfig {
            url: String::new(),
            org: String::new(),
            bucket: String::new(),
            token: None,
            token_env: None,
            token_file: None,
            ca_file: None,
            batch_size: 5000,
            flush_interval: Duration::from_secs(1),
            gzip: false,
            timeout: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl InfluxConfig {
    /// The token, from config, env or file (never logged). Empty = no
    /// `Authorization` header.
    pub fn token(&self) -> Result<String, String> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        let var = self.token_env.as_deref().unwrap_or(DEFAULT_TOKEN_ENV);
        if let Ok(t) = std::env::var(var) {
            return Ok(t);
        }
        match &self.token_file {
            Some(f) => std::fs::read_to_string(f)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| format!("cannot read token file {}: {e}", f.display())),
            None => Ok(String::new()),
        }
    }
}

/// `[retention]`: how long forwarded readings stay in the embedded store,
/// and when its disk counts as low.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Prune readings measured and stored longer ago than this, once every
    /// downstream consumer (forwarder, rule evaluator) is past them. Absent
    /// = keep everything.
    #[serde(with = "humantime_serde")]
    pub keep: Option<Duration>,
    /// How often retention and the disk check run.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The disk is low below this many free bytes (available to the gateway).
    pub min_free_bytes: u64,
    /// ... or below this share of the file system free, in percent.
    pub min_free_percent: f64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep: None,
            interval: Duration::from_secs(60),
            min_free_bytes: 512 * 1024 * 1024,
            min_free_percent: 5.0,
        }
    }
}

/// Checks the forwarding and retention sections; `err(table, key, message)`
/// records an error located in the file.
pub fn validate(
    forward: &ForwardConfig,
    retention: &RetentionConfig,
    err: &mut dyn FnMut(&str, &str, String),
) {
    if let Some(f) = &forward.influxdb {
        let t = "forward.influxdb";
        if let Err(e) = check_url(&f.url) {
            err(t, "url", e);
        }
        if f.org.trim().is_empty() {
            err(t, "org", "must not be empty".into());
        }
        if f.bucket.trim().is_empty() {
            err(t, "bucket", "must not be empty".into());
        }
        if f.batch_size == 0 || f.batch_size > 100_000 {
            err(t, "batch_size", "must be between 1 and 100000".into());
        }
        check_timing(t, f.timeout, f.flush_interval, f.max_backoff, err);
        for (key, file) in [("token_file", &f.token_file), ("ca_file", &f.ca_file)] {
            if let Some(p) = file {
                if !p.exists() {
                    err(t, key, format!("file {} does not exist", p.display()));
                }
            }
        }
        if f.token.is_some() && (f.token_env.is_some() || f.token_file.is_some()) {
            err(t, "token", "set one of token, token_env, token_file".into());
        }
    }
    if let Some(u) = &forward.upstream {
        super::upstream::validate(u, err);
    }
    if let Some(f) = &forward.fhir {
        super::fhir::config::validate(f, err);
    }
    if retention
        .keep
        .is_some_and(|k| k < Duration::from_secs(3600))
    {
        err("retention", "keep", "must be at least 1h".into());
    }
    if retention.interval < Duration::from_secs(1) {
        err("retention", "interval", "must be at least 1s".into());
    }
    if !(0.0..100.0).contains(&retention.min_free_percent) {
        err(
            "retention",
            "min_free_percent",
            "must be at least 0 and below 100".into(),
        );
    }
}

/// The timing limits every sink's section shares (`[forward.influxdb]`,
/// `[forward.fhir]`, `[upstream]`): a request timeout, the wait when caught
/// up, and the longest backoff.
pub(crate) fn check_timing(
    t: &str,
    timeout: Duration,
    flush_interval: Duration,
    max_backoff: Duration,
    err: &mut dyn FnMut(&str, &str, String),
) {
    if timeout < Duration::from_millis(100) {
        err(t, "timeout", "must be at least 100ms".into());
    }
    if flush_interval < Duration::from_millis(10) {
        err(t, "flush_interval", "must be at least 10ms".into());
    }
    if max_backoff < Duration::from_millis(100) {
        err(t, "max_backoff", "must be at least 100ms".into());
    }
}

/// A URL the sink accepts: http or https, with a host, nothing after the
/// path (`/api/v2/write` is appended to it: a server behind a reverse
/// proxy's path prefix works).
pub fn check_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("`{s}` is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("`{s}`: the scheme must be http or https"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{s}`: no host"));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!("`{s}`: no query or fragment expected"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        // Not echoed: it holds a secret.
        return Err("credentials do not belong in the URL; use token_env or token_file".into());
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_file_line_and_field() {
        use crate::config::Config;
        use std::path::Path;
        let text = "[forward.influxdb]\nurl = \"localhost:8086\"\norg = \"o\"\nbucket = \"\"\nbatch_size = 0\n\n[retention]\nkeep = \"10m\"\n";
        let e = Config::from_toml(text, Path::new("g.toml")).unwrap_err();
        let got: Vec<(usize, &str)> = e.0.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(
            got,
            [
                (2, "forward.influxdb.url"),
                (4, "forward.influxdb.bucket"),
                (5, "forward.influxdb.batch_size"),
                (8, "retention.keep"),
            ],
            "{e}"
        );
        let ok =
            "[forward.influxdb]\nurl = \"http://127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"\n";
        let c = Config::from_toml(ok, Path::new("g.toml")).unwrap();
        let f = c.forward.influxdb.unwrap();
        assert_eq!((f.batch_size, f.gzip), (5000, false));
        let e =
            Config::from_toml("[forward.influxdb]\nurls = 1\n", Path::new("g.toml")).unwrap_err();
        assert!(e.to_string().contains("unknown field `urls`"), "{e}");
    }

    #[test]
    fn urls() {
        assert!(check_url("http://127.0.0.1:8086").is_ok());
        assert!(check_url("https://influx.example.org").is_ok());
        for bad in [
            "",
            "localhost:8086",
            "/api",
            "ftp://x",
            "http://",
            "http://a?b=c",
            "http://u:p@h",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
