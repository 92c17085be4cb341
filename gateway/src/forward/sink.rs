//! One write request to InfluxDB, through the `influxdb2` crate, classified
//! into what the forwarder does next.
//!
//! What the crate gives and what it does not (checked in its 0.5.2 source):
//! it builds `POST /api/v2/write?bucket&org&precision=ns` with
//! `Authorization: Token …`; any status but 204 comes back as
//! `RequestError::Http { status, text }` — the status and body, but **not
//! the response headers**, so a `Retry-After` on 429/503 cannot be honoured:
//! the forwarder backs off on its own schedule instead. It has no timeout
//! (we wrap each call in one) and compresses only on its streaming `write`
//! path, so with `gzip = true` a batch goes through that path as one
//! pre-encoded chunk, and through `write_line_protocol` otherwise.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use influxdb2::api::write::TimestampPrecision;
use influxdb2::models::WriteDataPoint;
use influxdb2::RequestError;

use super::config::{check_url, InfluxConfig};

/// What became of a write.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteError {
    /// The server refused the data (400, 413, 422): find the bad point and
    /// quarantine it. `message` is the server's (it may quote a line).
    Rejected {
        /// HTTP status
        status: u16,
        /// the server's message
        message: String,
    },
    /// The sink refuses us, not a point (the hub answers 401/403/404 or
    /// another 4xx): hold the batch, report it, try again every
    /// `max_backoff`; never skipped, never quarantined.
    Refused {
        /// HTTP status
        status: u16,
        /// the sink's message (no reading data)
        message: String,
    },
    /// Try again later: the server is away, slow, overloaded, or refuses us
    /// (401, 403, 404: configuration, not data — never quarantined).
    Retry {
        /// metric label: unreachable, timeout, server_error, throttled,
        /// unauthorized, not_found, http_<status>
        kind: String,
        /// HTTP status, if there was a response
        status: Option<u16>,
        /// the server's message or the transport error (may quote data: debug logs only)
        message: String,
    },
}

/// Building the client failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The URL is not usable (config validation should have caught it).
    #[error("forward.influxdb.url: {0}")]
    Url(String),
    /// The token could not be read.
    #[error("forward.influxdb: {0}")]
    Token(String),
    /// The HTTP client could not be built.
    #[error("forward.influxdb: cannot build the HTTP client: {0}")]
    Client(String),
}

/// The InfluxDB 2 write endpoint.
pub struct InfluxSink {
    client: influxdb2::Client,
    org: String,
    bucket: String,
    gzip: bool,
    timeout: Duration,
}

/// A pre-encoded batch handed to the crate's streaming write path.
struct Encoded(Bytes);

impl WriteDataPoint for Encoded {
    fn write_data_point_to<W: io::Write>(&self, mut w: W) -> io::Result<()> {
        w.write_all(&self.0)
    }
}

impl InfluxSink {
    /// A client for `cfg` (token from config, env or file).
    pub fn new(cfg: &InfluxConfig) -> Result<InfluxSink, SinkError> {
        // The crate panics on a URL it cannot parse: check first.
        check_url(&cfg.url).map_err(SinkError::Url)?;
        let token = cfg.token().map_err(SinkError::Token)?;
        let client = influxdb2::ClientBuilder::new(cfg.url.as_str(), cfg.org.as_str(), token)
            .gzip(cfg.gzip)
            .build()
            .map_err(|e| SinkError::Client(e.to_string()))?;
        Ok(InfluxSink {
            client,
            org: cfg.org.clone(),
            bucket: cfg.bucket.clone(),
            gzip: cfg.gzip,
            timeout: cfg.timeout,
        })
    }

    /// Writes `body` (line protocol, `\n`-terminated lines).
    pub async fn write(&self, body: Bytes) -> Result<(), WriteError> {
        let request = async {
            if self.gzip {
                let points = futures_util::stream::iter([Encoded(body)]);
                self.client
                    .write_with_precision(&self.bucket, points, TimestampPrecision::Nanoseconds)
                    .await
            } else {
                self.client
                    .write_line_protocol(&self.org, &self.bucket, body)
                    .await
            }
        };
        match tokio::time::timeout(self.timeout, request).await {
            Err(_) => Err(WriteError::Retry {
                kind: "timeout".into(),
                status: None,
                message: format!("no answer within {:?}", self.timeout),
            }),
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(classify(e)),
        }
    }
}

/// Maps the crate's error to what the forwarder does next.
pub fn classify(e: RequestError) -> WriteError {
    match e {
        RequestError::Http { status, text } => classify_status(status.as_u16(), &text),
        RequestError::ReqwestProcessing { source } => WriteError::Retry {
            kind: if source.is_timeout() {
                "timeout"
            } else {
                "unreachable"
            }
            .into(),
            status: source.status().map(|s| s.as_u16()),
            message: source.to_string(),
        },
        other => WriteError::Retry {
            kind: "unreachable".into(),
            status: None,
            message: other.to_string(),
        },
    }
}

/// Status and body of a non-204 answer to what to do next.
pub fn classify_status(status: u16, body: &str) -> WriteError {
    let message = server_message(body);
    let retry = |kind: &str| WriteError::Retry {
        kind: kind.into(),
        status: Some(status),
        message: message.clone(),
    };
    let lower = message.to_ascii_lowercase();
    match status {
        // InfluxDB 3 (and proxies) answer a missing bucket or database with
        // 400: configuration, not data — quarantining every point would be wrong.
        400 if lower.contains("not found")
            && ["bucket", "database", "namespace", "org"]
                .iter()
                .any(|w| lower.contains(w)) =>
        {
            retry("not_found")
        }
        400 | 413 | 422 => WriteError::Rejected { status, message },
        401 | 403 => retry("unauthorized"),
        404 => retry("not_found"),
        429 => retry("throttled"),
        500..=599 => retry("server_error"),
        // Redirects and anything unexpected: not the data's fault.
        s => retry(&format!("http_{s}")),
    }
}

/// The `message` of InfluxDB's JSON error body (`{"code":"invalid",
/// "message":"…"}`), else the body itself, cut to 1000 characters.
pub fn server_message(body: &str) -> String {
    let text = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| body.trim().to_string());
    text.chars().take(1000).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let body = r#"{"code":"invalid","message":"unable to parse 'x y': bad"}"#;
        assert_eq!(
            classify_status(400, body),
            WriteError::Rejected {
                status: 400,
                message: "unable to parse 'x y': bad".into()
            }
        );
        match classify_status(
            400,
            r#"{"code":"not found","message":"database not found: rpm"}"#,
        ) {
            WriteError::Retry { kind, .. } => assert_eq!(kind, "not_found"),
            other => panic!("{other:?}"),
        }
        for (s, kind) in [
            (401, "unauthorized"),
            (404, "not_found"),
            (429, "throttled"),
            (503, "server_error"),
            (307, "http_307"),
        ] {
            match classify_status(s, "x") {
                WriteError::Retry { kind: k, .. } => assert_eq!(k, kind),
                other => panic!("{s}: {other:?}"),
            }
        }
    }
}
