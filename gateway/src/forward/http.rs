//! What one forwarding request comes to, and the HTTP steps every
//! forwarding link shares: InfluxDB's writes ([`super::sink`]), the hub's
//! readings ([`super::upstream`]), the box's share pull and quarantine push
//! ([`super::hub`]).
//!
//! Each link decides what an answer *means* (its own `classify_status`);
//! here is only what is the same for all: a 2xx is done, no answer at all
//! is retried, and a body is gzip-compressed when the link asks for it.

use std::io::Write;

use bytes::Bytes;

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

/// Sends `req`: done on a 2xx answer, else what `classify` makes of the
/// status and body; no answer at all is [`transport_error`].
pub async fn send(
    req: reqwest::RequestBuilder,
    classify: fn(u16, &str) -> WriteError,
) -> Result<(), WriteError> {
    let resp = req.send().await.map_err(transport_error)?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    Err(classify(status.as_u16(), &text))
}

/// A request that got no answer: retried (`timeout` or `unreachable`).
/// The URL is left out of the message: it may name an org and a bucket.
pub fn transport_error(e: reqwest::Error) -> WriteError {
    WriteError::Retry {
        kind: no_answer_kind(&e).into(),
        status: None,
        message: e.without_url().to_string(),
    }
}

/// The metric label of a request that got no answer: `timeout` when the
/// client gave up waiting, else `unreachable` (connect, TLS, reset).
pub fn no_answer_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else {
        "unreachable"
    }
}

/// `req` with `body` (the hub's NDJSON, InfluxDB's line protocol),
/// gzip-compressed when `gzip`.
pub fn with_body(
    req: reqwest::RequestBuilder,
    body: Bytes,
    gzip: bool,
) -> Result<reqwest::RequestBuilder, WriteError> {
    if !gzip {
        return Ok(req.body(body));
    }
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    let bytes = gz
        .write_all(&body)
        .and_then(|()| gz.finish())
        .map_err(|e| WriteError::Retry {
            kind: "encode".into(),
            status: None,
            message: e.to_string(),
        })?;
    Ok(req
        .header(reqwest::header::CONTENT_ENCODING, "gzip")
        .body(bytes))
}
