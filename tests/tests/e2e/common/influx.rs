//! A recording stand-in for the InfluxDB 2 write API: a real HTTP server on
//! a free port that records every request the forwarder sends and answers
//! the way InfluxDB 2 does (204; 400 `{"code":"invalid","message":…}`; 401;
//! 404 bucket not found; 429/503 with Retry-After). It covers what
//! VictoriaMetrics does not check: auth header, org/bucket/precision, gzip,
//! and whole-request 400s for one bad line.

use std::io::{BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use super::http::{read_message, Message};

/// A request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    /// Body as sent (compressed when gzip).
    pub raw: Vec<u8>,
    /// Body decompressed: line protocol.
    pub body: String,
    /// The status answered.
    pub status: u16,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn lines(&self) -> Vec<&str> {
        self.body.lines().collect()
    }
}

/// An answer: status, extra headers, body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn no_content() -> Answer {
        Answer {
            status: 204,
            headers: vec![],
            body: String::new(),
        }
    }
    /// InfluxDB 2's JSON error body.
    pub fn error(status: u16, code: &str, message: &str) -> Answer {
        Answer {
            status,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: serde_json::json!({"code": code, "message": message}).to_string(),
        }
    }
    pub fn retry_after(mut self, secs: u32) -> Answer {
        self.headers.push(("Retry-After".into(), secs.to_string()));
        self
    }
}

type Behaviour = Box<dyn FnMut(&Recorded) -> Answer + Send>;

pub struct InfluxRecorder {
    pub port: u16,
    scheme: &'static str,
    requests: Arc<Mutex<Vec<Recorded>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl InfluxRecorder {
    /// Starts answering 204 to everything.
    pub fn start() -> InfluxRecorder {
        Self::start_with(None)
    }

    /// [`InfluxRecorder::start`] over HTTPS, with `ca`'s server certificate
    /// (for `localhost`).
    pub fn start_tls(ca: &super::TestCa) -> InfluxRecorder {
        let pem = |p: &std::path::Path| std::fs::read(p).expect("read PEM");
        let certs = rustls_pemfile::certs(&mut &pem(&ca.cert)[..])
            .collect::<Result<Vec<_>, _>>()
            .expect("certificate");
        let key = rustls_pemfile::private_key(&mut &pem(&ca.key)[..])
            .expect("key")
            .expect("a key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
        Self::start_with(Some(Arc::new(config)))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> InfluxRecorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let behaviour: Arc<Mutex<Behaviour>> =
            Arc::new(Mutex::new(Box::new(|_: &Recorded| Answer::no_content())));
        let (reqs, beh) = (requests.clone(), behaviour.clone());
        let scheme = if tls.is_some() { "https" } else { "http" };
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (reqs, beh, tls) = (reqs.clone(), beh.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => serve(conn, reqs, beh),
                    Some(config) => {
                        let Ok(session) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        serve(rustls::StreamOwned::new(session, conn), reqs, beh)
                    }
                });
            }
        });
        InfluxRecorder {
            port,
            scheme,
            requests,
            behaviour,
        }
    }

    /// Its base URL (`https://localhost:…` over TLS: the name its
    /// certificate holds).
    pub fn url(&self) -> String {
        match self.scheme {
            "https" => format!("https://localhost:{}", self.port),
            _ => format!("http://127.0.0.1:{}", self.port),
        }
    }

    /// Changes how it answers from now on.
    pub fn answer(&self, f: impl FnMut(&Recorded) -> Answer + Send + 'static) {
        *self.behaviour.lock().unwrap() = Box::new(f);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// Lines of the requests answered 204, in order.
    pub fn accepted_lines(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| r.status == 204)
            .flat_map(|r| r.lines().into_iter().map(String::from).collect::<Vec<_>>())
            .collect()
    }
}

fn serve(conn: impl Read + Write, reqs: Arc<Mutex<Vec<Recorded>>>, beh: Arc<Mutex<Behaviour>>) {
    let mut r = BufReader::new(conn);
    while let Ok(Some(m)) = read_message(&mut r, false) {
        let mut rec = recorded(&m);
        let answer = (beh.lock().unwrap())(&rec);
        rec.status = answer.status;
        reqs.lock().unwrap().push(rec);
        let reason = match answer.status {
            204 => "No Content",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            429 => "Too Many Requests",
            503 => "Service Unavailable",
            _ => "Status",
        };
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", answer.status);
        for (k, v) in &answer.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if answer.status != 204 {
            head.push_str(&format!("Content-Length: {}\r\n", answer.body.len()));
        }
        head.push_str("\r\n");
        let out = r.get_mut();
        if out.write_all(head.as_bytes()).is_err()
            || (answer.status != 204 && out.write_all(answer.body.as_bytes()).is_err())
            || out.flush().is_err()
        {
            return;
        }
    }
}

fn recorded(m: &Message) -> Recorded {
    let mut parts = m.start.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default();
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let query = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let body = if m.header("content-encoding") == Some("gzip") {
        let mut s = String::new();
        flate2::read::GzDecoder::new(&m.body[..])
            .read_to_string(&mut s)
            .expect("gzip body");
        s
    } else {
        String::from_utf8_lossy(&m.body).into_owned()
    };
    Recorded {
        method,
        path: path.to_string(),
        query,
        headers: m.headers.clone(),
        raw: m.body.clone(),
        body,
        status: 0,
    }
}
