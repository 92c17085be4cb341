//! HTTP ingest: virtual devices (or their phone app / hub) push the same
//! payloads to the gateway's `POST /api/v1/readings`, in its two body forms:
//!
//! - `Content-Type: application/json`, the envelope
//!   `{"device_id": ..., "profile": ..., "payload": ...}`: the device id, the
//!   name of the device profile that decodes the payload, and the device's
//!   own JSON payload;
//! - `Content-Type: application/senml+json` with `?device_id=..&profile=..`
//!   and the payload bytes as the body, used for payloads that are not JSON
//!   (the malformed and truncated faults), so the gateway sees exactly the
//!   broken bytes a device would send.
//!
//! A bearer token authenticates the pusher. The gateway answers only after
//! the commit (2xx: durable, with an outcome per measurement; 503: retry).
//!
//! The client is deliberately minimal (plain HTTP/1.1 over a TCP stream, one
//! connection per request, no TLS): it has one job in tests and benchmarks,
//! and no dependency is worth that job. Put a TLS-terminating proxy in front
//! for `https://` targets.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::vendor::{Vendor, VendorAuth};
use super::{Transport, TransportError};
use crate::payload::{encode, Message};
use crate::plan::Outgoing;

/// HTTP transport failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The target is not an `http://host[:port]/path` URL.
    #[error("`{0}` is not an http://HOST[:PORT]/PATH URL (https is not supported by the simulator's minimal client)")]
    Url(String),
    /// Connecting, writing or reading failed.
    #[error("http i/o: {0}")]
    Io(#[from] std::io::Error),
    /// No complete answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The answer is not HTTP.
    #[error("malformed http response")]
    Response,
    /// The gateway refused the request itself (auth, route, method), so the
    /// reading was not taken.
    #[error("gateway answered {status}: {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Start of the response body.
        body: String,
    },
}

/// A parsed `http://` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// Port (80 by default).
    pub port: u16,
    /// Request path with query.
    pub path: String,
}

impl Target {
    /// Parses `http://host[:port][/path]`.
    pub fn parse(url: &str) -> Result<Target, HttpError> {
        let bad = || HttpError::Url(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Target {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

/// One request: query string, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Query string to append (`?device_id=..&profile=..`), or empty.
    pub query: String,
    /// Content type.
    pub content_type: &'static str,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Further headers (a vendor's authentication).
    pub headers: Vec<(String, String)>,
}

/// Percent-encodes a query value (unreserved characters kept).
fn encode_query(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The request for one message: the JSON envelope when the payload is
/// JSON, the raw bytes otherwise.
pub fn request(device_id: &str, m: &Message) -> Request {
    match serde_json::from_slice::<Value>(&m.payload) {
        Ok(payload) => Request {
            query: String::new(),
            content_type: "application/json",
            body: serde_json::to_vec(
                &json!({"device_id": device_id, "profile": m.profile, "payload": payload}),
            )
            .unwrap_or_default(),
            headers: Vec::new(),
        },
        Err(_) => Request {
            query: format!(
                "device_id={}&profile={}",
                encode_query(device_id),
                encode_query(m.profile)
            ),
            content_type: "application/senml+json",
            body: m.payload.clone(),
            headers: Vec::new(),
        },
    }
}

/// One HTTP pusher.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    target: Target,
    token: Option<String>,
    timeout: Duration,
    retries: u32,
    /// Answers by status code.
    statuses: std::collections::BTreeMap<u16, u64>,
    /// Playing a vendor cloud: its push format and authentication.
    vendor: Option<(Vendor, VendorAuth)>,
}

impl HttpTransport {
    /// A transport posting to `url` with an optional bearer `token`.
    pub fn new(url: &str, token: Option<String>) -> Result<HttpTransport, HttpError> {
        Ok(HttpTransport {
            target: Target::parse(url)?,
            token,
            timeout: Duration::from_secs(10),
            retries: 3,
            statuses: Default::default(),
            vendor: None,
        })
    }

    /// Pushes as `vendor`'s cloud (to its integration URL), authenticated
    /// with `auth`, instead of the ingest envelope.
    pub fn as_vendor(mut self, vendor: Vendor, auth: VendorAuth) -> Self {
        self.vendor = Some((vendor, auth));
        self
    }

    /// Answers received, by HTTP status.
    pub fn statuses(&self) -> &std::collections::BTreeMap<u16, u64> {
        &self.statuses
    }

    /// Posts one request; returns the status and the start of the answer.
    pub async fn post(&self, r: &Request) -> Result<(u16, String, Option<u64>), HttpError> {
        let bytes = &r.body;
        let t = &self.target;
        let path = match (r.query.is_empty(), t.path.contains('?')) {
            (true, _) => t.path.clone(),
            (false, false) => format!("{}?{}", t.path, r.query),
            (false, true) => format!("{}&{}", t.path, r.query),
        };
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            t.host,
            t.port,
            r.content_type,
            bytes.len()
        );
        if let Some(token) = &self.token {
            req.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (name, value) in &r.headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        let exchange = async {
            let mut s = TcpStream::connect((t.host.as_str(), t.port)).await?;
            s.write_all(req.as_bytes()).await?;
            s.write_all(bytes).await?;
            let mut answer = Vec::new();
            s.take(1 << 20).read_to_end(&mut answer).await?;
            Ok::<_, HttpError>(answer)
        };
        let answer = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout(self.timeout))??;
        let (status, body) = parse_response(&answer)?;
        let wait = retry_after(&String::from_utf8_lossy(&answer));
        Ok((status, body, wait))
    }
}

/// Most 429 answers taken (and waited out) for one request.
pub const MAX_RATE_LIMITED: u32 = 120;

/// Status code and (start of) body of a raw HTTP/1.1 response.
fn parse_response(raw: &[u8]) -> Result<(u16, String), HttpError> {
    let text = String::from_utf8_lossy(raw);
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or(HttpError::Response)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.chars().take(300).collect())
        .unwrap_or_default();
    Ok((status, body))
}

/// The `Retry-After` of a raw HTTP/1.1 response, in seconds (the
/// delta-seconds form; a date or no header is `None`).
fn retry_after(raw_head: &str) -> Option<u64> {
    raw_head
        .split("\r\n\r\n")
        .next()?
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, v)| v.trim().parse().ok())
}

impl Transport for HttpTransport {
    fn name(&self) -> &'static str {
        "http"
    }

    /// 2xx (stored, duplicate or quarantined: the gateway committed its
    /// decision) and 413 (refused as too large) count as delivered. Other
    /// 4xx are refusals of the request itself (token, route, body form).
    /// 5xx and I/O errors are retried; 429 (too many requests) is retried
    /// after the `Retry-After` the gateway asks for, as often as it asks
    /// (up to [`MAX_RATE_LIMITED`] times), since it refused nothing.
    async fn send(&mut self, o: &Outgoing) -> Result<(), TransportError> {
        let req = match &self.vendor {
            Some((vendor, auth)) => {
                let Some(body) = super::vendor::body(*vendor, &o.emission) else {
                    return Ok(());
                };
                Request {
                    query: String::new(),
                    content_type: "application/json",
                    headers: auth.headers(&body),
                    body,
                }
            }
            None => {
                let m = encode(&o.emission, o.format);
                let device_id = m
                    .topic
                    .rsplit('/')
                    .next()
                    .unwrap_or(&o.emission.device_id)
                    .to_string();
                request(&device_id, &m)
            }
        };
        let mut attempt = 0;
        let mut limited = 0;
        loop {
            let outcome = self.post(&req).await;
            if let Ok((status, _, _)) = &outcome {
                *self.statuses.entry(*status).or_default() += 1;
            }
            if let Ok((429, _, wait)) = &outcome {
                limited += 1;
                if limited <= MAX_RATE_LIMITED {
                    let wait = Duration::from_secs(wait.unwrap_or(1).clamp(1, 60));
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            attempt += 1;
            let outcome = outcome.map(|(status, body, _)| (status, body));
            let retry = match &outcome {
                Ok((status, _)) => *status >= 500,
                Err(_) => true,
            };
            if retry && attempt <= self.retries {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                continue;
            }
            return match outcome {
                Ok((s, _)) if (200..300).contains(&s) || s == 413 => Ok(()),
                Ok((status, body)) => Err(HttpError::Refused { status, body }.into()),
                Err(e) => Err(e.into()),
            };
        }
    }

    async fn close(self, _timeout: Duration) -> Result<(), TransportError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:8080/api/v1/readings").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8080, "/api/v1/readings")
        );
        assert_eq!(Target::parse("http://gw").unwrap().port, 80);
        assert!(Target::parse("https://gw/x").is_err());
        assert!(Target::parse("http://:80/x").is_err());
    }

    #[test]
    fn responses() {
        let (s, b) =
            parse_response(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((s, b.as_str()), (202, "{}"));
        assert!(parse_response(b"SSH-2.0").is_err());
    }

    /// A one-purpose HTTP/1.1 server on a free port: answers each request
    /// with the next status of `answers` and hands back what it received.
    async fn server(answers: Vec<u16>) -> (u16, tokio::task::JoinHandle<Vec<(String, Value)>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut got = Vec::new();
            for status in answers {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let n = s.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Content-Length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if body.len() >= len {
                            break (head.to_string(), body.to_string());
                        }
                    }
                };
                got.push((head, serde_json::from_str(&body).unwrap()));
                let answer = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                );
                s.write_all(answer.as_bytes()).await.unwrap();
            }
            got
        });
        (port, task)
    }

    fn outgoing() -> Outgoing {
        let s = crate::scenario::Scenario::bundled("fever").unwrap();
        s.plan().outgoing().remove(0)
    }

    #[tokio::test]
    async fn posts_the_body_with_the_token_and_retries_5xx() {
        let (port, srv) = server(vec![503, 202]).await;
        let mut t = HttpTransport::new(
            &format!("http://127.0.0.1:{port}/api/v1/readings"),
            Some("tok-123".into()),
        )
        .unwrap();
        let o = outgoing();
        t.send(&o).await.unwrap();
        let got = srv.await.unwrap();
        assert_eq!(got.len(), 2, "retried after 503");
        let (head, body) = &got[1];
        assert!(head.starts_with("POST /api/v1/readings HTTP/1.1"), "{head}");
        assert!(head.contains("Content-Type: application/json"), "{head}");
        assert!(head.contains("Authorization: Bearer tok-123"), "{head}");
        assert_eq!(body["device_id"], o.emission.device_id.as_str());
        let m = encode(&o.emission, o.format);
        assert_eq!(body["profile"], m.profile);
        assert_eq!(
            body["payload"],
            serde_json::from_slice::<Value>(&m.payload).unwrap()
        );
        assert_eq!(t.statuses().get(&202), Some(&1));
    }

    /// A gateway that limits the client's rate refused nothing: the
    /// request is sent again after the wait it asks for.
    #[tokio::test]
    async fn too_many_requests_waits_and_sends_again() {
        let (port, srv) = server(vec![429, 202]).await;
        let mut t = HttpTransport::new(&format!("http://127.0.0.1:{port}/r"), None).unwrap();
        let started = std::time::Instant::now();
        t.send(&outgoing()).await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(1), "waited");
        assert_eq!(srv.await.unwrap().len(), 2);
        assert_eq!(t.statuses().get(&429), Some(&1));
        assert_eq!(
            retry_after("HTTP/1.1 429 X\r\nretry-after: 7\r\n\r\n{}"),
            Some(7)
        );
        assert_eq!(retry_after("HTTP/1.1 429 X\r\n\r\nRetry-After: 7"), None);
    }

    #[tokio::test]
    async fn a_refused_request_is_an_error_but_a_refused_reading_is_delivered() {
        let (port, srv) = server(vec![401, 200]).await;
        let mut t = HttpTransport::new(&format!("http://127.0.0.1:{port}/r"), None).unwrap();
        let o = outgoing();
        let e = t.send(&o).await.unwrap_err();
        assert!(e.to_string().contains("401"), "{e}");
        t.send(&o).await.unwrap();
        srv.await.unwrap();
    }

    #[test]
    fn json_payloads_go_in_the_envelope_broken_ones_as_raw_bytes() {
        let m = Message {
            topic: "acme/bp/d1".into(),
            payload: br#"{"sys":120}"#.to_vec(),
            profile: "acme-bp-cuff",
        };
        let r = request("d1", &m);
        assert_eq!((r.query.as_str(), r.content_type), ("", "application/json"));
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["payload"]["sys"], 120);
        assert_eq!(v["device_id"], "d1");
        let broken = Message {
            payload: br#"{"sys":1"#.to_vec(),
            ..m
        };
        let r = request("d 1", &broken);
        assert_eq!(r.query, "device_id=d%201&profile=acme-bp-cuff");
        assert_eq!(r.body, br#"{"sys":1"#.to_vec());
    }
}
