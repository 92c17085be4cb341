//! One write request to InfluxDB 2 (`POST /api/v2/write?org&bucket&precision=ns`,
//! `Authorization: Token …`, line protocol), classified into what the
//! forwarder does next.
//!
//! The request is made with the same HTTP client as every other outbound
//! call (reqwest over rustls, the system's roots plus `ca_file`). A batch is
//! one body handed over without a copy: the client writes it to the socket
//! as it is (vectored writes), so a 5 000-point batch is held once, not
//! twice, while it is in flight. With `gzip = true` the body is compressed
//! (`Content-Encoding: gzip`, as InfluxDB recommends for large batches).

use std::time::Duration;

use bytes::Bytes;

use super::config::{check_url, InfluxConfig};
use super::http::{send, with_body, WriteError};

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
    client: reqwest::Client,
    /// `{url}/api/v2/write?org&bucket&precision=ns`
    endpoint: url::Url,
    /// `Authorization` value (`Token …`), if a token is set; marked
    /// sensitive, never logged.
    auth: Option<reqwest::header::HeaderValue>,
    gzip: bool,
    timeout: Duration,
}

impl InfluxSink {
    /// A client for `cfg` (token from config, env or file).
    pub fn new(cfg: &InfluxConfig) -> Result<InfluxSink, SinkError> {
        let url = check_url(&cfg.url).map_err(SinkError::Url)?;
        let token = cfg.token().map_err(SinkError::Token)?;
        let tls = crate::tls::client_tls_config(&crate::tls::TlsSettings {
            ca_file: cfg.ca_file.clone(),
            ..Default::default()
        })
        .map_err(|e| SinkError::Client(e.to_string()))?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rpm-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SinkError::Client(e.to_string()))?;
        Ok(InfluxSink {
            client,
            endpoint: write_endpoint(url, &cfg.org, &cfg.bucket),
            auth: auth_header(&token)?,
            gzip: cfg.gzip,
            timeout: cfg.timeout,
        })
    }

    /// Writes `body` (line protocol, `\n`-terminated lines).
    pub async fn write(&self, body: Bytes) -> Result<(), WriteError> {
        let mut req = self
            .client
            .post(self.endpoint.clone())
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8");
        if let Some(auth) = &self.auth {
            req = req.header(reqwest::header::AUTHORIZATION, auth.clone());
        }
        let request = send(with_body(req, body, self.gzip)?, classify_status);
        match tokio::time::timeout(self.timeout, request).await {
            Err(_) => Err(WriteError::Retry {
                kind: "timeout".into(),
                status: None,
                message: format!("no answer within {:?}", self.timeout),
            }),
            Ok(result) => result,
        }
    }
}

/// `Token …` for a non-empty token, marked sensitive (left out of the
/// client's debug output).
fn auth_header(token: &str) -> Result<Option<reqwest::header::HeaderValue>, SinkError> {
    if token.is_empty() {
        return Ok(None);
    }
    let mut value =
        reqwest::header::HeaderValue::from_str(&format!("Token {token}")).map_err(|_| {
            SinkError::Token("the token holds a character an HTTP header cannot carry".into())
        })?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// `{url}/api/v2/write?org=…&bucket=…&precision=ns`, the names
/// percent-encoded.
fn write_endpoint(mut url: url::Url, org: &str, bucket: &str) -> url::Url {
    let path = format!("{}/api/v2/write", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.query_pairs_mut()
        .append_pair("org", org)
        .append_pair("bucket", bucket)
        .append_pair("precision", "ns");
    url
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
    fn the_token_header_is_sensitive_and_refuses_a_line_break() {
        assert_eq!(auth_header("").ok(), Some(None));
        let value = auth_header("s3cr3t").ok().flatten();
        assert_eq!(value.as_ref().map(|v| v.is_sensitive()), Some(true));
        assert_eq!(
            value.as_ref().map(|v| v.as_bytes()),
            Some(&b"Token s3cr3t"[..])
        );
        let err = auth_header("s3c\nr3t").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("forward.influxdb: the token holds a character an HTTP header cannot carry")
        );
    }

    #[test]
    fn the_write_endpoint_keeps_a_path_prefix_and_encodes_names() {
        let url = |s: &str| url::Url::parse(s).expect("url");
        assert_eq!(
            write_endpoint(url("http://influx:8086"), "my org", "rpm&co").as_str(),
            "http://influx:8086/api/v2/write?org=my+org&bucket=rpm%26co&precision=ns"
        );
        assert_eq!(
            write_endpoint(url("https://proxy.example/influx/"), "o", "b").as_str(),
            "https://proxy.example/influx/api/v2/write?org=o&bucket=b&precision=ns"
        );
    }

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
