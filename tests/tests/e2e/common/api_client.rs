//! HTTP client helpers for the API tests (`api.rs`): requests go through `curl`, an
//! independent client (the same one the walkthrough of docs/api.md uses), over
//! plain HTTP or HTTPS with a test CA.

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Gateway, API_LISTEN};

/// One response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the status, and for errors a problem-details body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
        self
    }

    /// Asserts an RFC 9457 problem with this status; returns its detail.
    #[track_caller]
    pub fn problem(&self, status: u16) -> String {
        self.expect(status);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.text()
        );
        let p = self.json();
        assert_eq!(p["status"], status);
        assert!(p["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:rpm-gateway:problem:"));
        p["detail"].as_str().unwrap().to_string()
    }
}

/// A client of one gateway API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub cacert: Option<PathBuf>,
}

impl Api {
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &[u8])>,
    ) -> Resp {
        self.request_with(method, path, token, &[], body)
    }

    /// [`Api::request`] with more headers (`Accept`, `Idempotency-Key`).
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<(&str, &[u8])>,
    ) -> Resp {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "-i",
            "-X",
            method,
            "-H",
            "Expect:",
            "--max-time",
            "30",
        ]);
        if let Some(ca) = &self.cacert {
            cmd.arg("--cacert").arg(ca);
        }
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        for (k, v) in headers {
            cmd.args(["-H", &format!("{k}: {v}")]);
        }
        if let Some((ct, _)) = body {
            cmd.args(["-H", &format!("Content-Type: {ct}"), "--data-binary", "@-"]);
        }
        cmd.arg(format!("{}{}", self.base, path));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .expect("curl is needed (scripts/test installs it)");
        {
            let mut stdin = child.stdin.take().unwrap();
            if let Some((_, b)) = body {
                stdin.write_all(b).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "curl {method} {path} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse(&out.stdout)
    }

    pub fn get(&self, path: &str, token: &str) -> Resp {
        self.request("GET", path, Some(token), None)
    }

    pub fn send(&self, method: &str, path: &str, token: &str, body: &Value) -> Resp {
        let b = serde_json::to_vec(body).unwrap();
        self.request(method, path, Some(token), Some(("application/json", &b)))
    }
}

fn parse(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end in curl output");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("no status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body,
    }
}

/// `[api]` config for a test gateway, on a port the system picks.
pub fn api_config(extra: &str) -> String {
    format!(
        "[api]\nenabled = true\n{API_LISTEN}\nmax_body_bytes = 8192\ndefault_page_size = 20\nmax_page_size = 50\n{extra}\n"
    )
}

/// Starts the gateway; returns its API's port.
pub fn start_with_api(gw: &mut Gateway) -> u16 {
    gw.start();
    gw.api_port()
}

/// Creates a token with the CLI; returns the secret.
pub fn token(gw: &Gateway, name: &str, role: &str, teams: &[&str]) -> String {
    let mut args = vec!["tokens", "create", name, "--role", role];
    for t in teams {
        args.push("--team");
        args.push(t);
    }
    let out = gw.cli(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs a Python snippet with the independent FHIR R4 library
/// (`fhir.resources` 6.2, FHIR 4.0.1) that `scripts/test` installs under
/// `target/pydeps/fhir-r4`; `stdin` is handed to it.
pub fn python_fhir(script: &str, stdin: &[u8]) -> String {
    let deps = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pydeps/fhir-r4");
    assert!(
        deps.exists(),
        "{} missing: run scripts/test (it pip-installs fhir.resources 6.2 there)",
        deps.display()
    );
    let out = super::python(script, &[], &deps, stdin);
    assert!(
        out.status.success(),
        "FHIR validation failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
