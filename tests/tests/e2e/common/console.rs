//! The web console seen by a plain HTTP client: users made by the real
//! CLI, one request per connection with the headers a test needs (the
//! session cookie, a forged form), and signing in without a browser.

use super::http::{read_message, Message};
use super::{Gateway, BIN};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `rpm-gateway users add` with the password on standard input.
pub fn add_user(gw: &Gateway, name: &str, role: &str, teams: &[&str], password: &str) {
    let mut args = vec![
        "--config".to_string(),
        gw.config.display().to_string(),
        "users".into(),
        "add".into(),
        name.into(),
        "--role".into(),
        role.into(),
        "--password-stdin".into(),
    ];
    for t in teams {
        args.push("--team".into());
        args.push((*t).into());
    }
    let mut child = Command::new(BIN)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One request on a fresh connection with extra headers.
pub fn raw(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Message {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    read_message(&mut BufReader::new(s), true).unwrap().unwrap()
}

pub fn status(m: &Message) -> u16 {
    m.start
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Signs `user` in with a form post and returns the `Cookie` header value
/// of the session.
pub fn sign_in(port: u16, user: &str, password: &str) -> String {
    let form = format!("username={user}&password={}", password.replace(' ', "+"));
    let r = raw(port, "POST", "/console/signin", &[], &form);
    assert_eq!(status(&r), 303, "{}", String::from_utf8_lossy(&r.body));
    let set = r.header("set-cookie").unwrap_or_default();
    set.split(';').next().unwrap_or_default().to_string()
}
