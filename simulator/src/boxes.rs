//! `rpm-sim boxes`: many home boxes against one program hub.
//!
//! A faithful lightweight emulation of a box's upstream client (see the
//! gateway's `forward::upstream` and `forward::hub`): each box pulls its
//! share (`GET /api/v1/upstream/share`, then again with `If-None-Match`,
//! which must be a 304), and sends the readings it collected while offline
//! as canonical readings, JSON lines in batches, to
//! `POST /api/v1/upstream/readings`, with its health headers (backlog,
//! clock, version), and retries a batch until the hub answers 2xx. What it
//! does not emulate is a box's own store: the readings are generated, not
//! read back, so a box emulation is a few kilobytes and a thousand of them
//! run in one process. Every box starts at once (a program's boxes
//! reconnecting after a hub outage); `concurrency` bounds the requests in
//! flight, as the hub's per-client connection limit would.
//!
//! Reading ids are derived from (device, metric, device time, sequence), as
//! a box's are, so a batch sent again after a lost answer is kept once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::transport::http::Target;

/// One box: its name, token and devices (the first a cuff, the second, if
/// any, a scale).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxSpec {
    /// The box's name at the hub (its token's name).
    pub name: String,
    /// Its hub-issued ingest token.
    pub token: String,
    /// The devices its token names.
    pub devices: Vec<String>,
}

/// Parses a tokens file: one box a line, `NAME TOKEN DEVICE[,DEVICE...]`.
pub fn parse_boxes(text: &str) -> Result<Vec<BoxSpec>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split_whitespace();
        match (f.next(), f.next(), f.next()) {
            (Some(name), Some(token), Some(devices)) => out.push(BoxSpec {
                name: name.into(),
                token: token.into(),
                devices: devices.split(',').map(String::from).collect(),
            }),
            _ => {
                return Err(format!(
                    "line {}: expected NAME TOKEN DEVICE[,DEVICE]",
                    n + 1
                ))
            }
        }
    }
    Ok(out)
}

/// What to play.
#[derive(Debug, Clone)]
pub struct BoxesPlan {
    /// The hub's API base (`http://host:port`).
    pub hub: String,
    /// How long the boxes were offline: their readings span this, up to now.
    pub offline: Duration,
    /// Measurements per device per day (a BP measurement is 3 readings).
    pub per_day: u32,
    /// Readings per request.
    pub batch: usize,
    /// Requests in flight at once, over all boxes.
    pub concurrency: usize,
    /// Every this many boxes (by position in the file, from the first), the
    /// last BP measurement is a hypertensive crisis (185/95 mm[Hg]): alerts
    /// for the hub to raise and deliver. 0: none.
    pub crisis_every: usize,
}

/// What a run measured.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct BoxesReport {
    /// Boxes played.
    pub boxes: usize,
    /// Readings the hub took (2xx).
    pub readings_sent: u64,
    /// Of those, new at the hub.
    pub stored: u64,
    /// Of those, already at the hub (a replay).
    pub duplicates: u64,
    /// HTTP requests, retries included.
    pub requests: u64,
    /// Requests sent again (429, 5xx, transport errors).
    pub retries: u64,
    /// Second share pulls answered 304, as they should be.
    pub shares_304: u64,
    /// Wall time of the run.
    pub elapsed_s: f64,
    /// `readings_sent / elapsed_s`.
    pub readings_per_s: f64,
    /// Request latency, median.
    pub request_p50_ms: f64,
    /// Request latency, 99th percentile.
    pub request_p99_ms: f64,
    /// Time until the last box had all its readings at the hub.
    pub last_box_done_s: f64,
}

/// The box's readings: `per_day` measurements a day per device over the
/// offline span, ending now, as canonical-reading JSON lines.
pub fn readings(b: &BoxSpec, plan: &BoxesPlan, crisis: bool, now_ms: i64) -> Vec<String> {
    let span = plan.offline.as_millis() as i64;
    let n = (u64::from(plan.per_day) * plan.offline.as_secs() / 86_400).max(1) as i64;
    let step = span / n;
    let mut out = Vec::new();
    for (d, device) in b.devices.iter().enumerate() {
        for i in 0..n {
            let t = now_ms - span + i * step + (d as i64) * 1000;
            let at = chrono::DateTime::from_timestamp_millis(t).unwrap_or_default();
            let group = format!("{device}-{t}");
            let high = crisis && i == n - 1;
            let (sys, dia) = match high {
                true => (185.0, 95.0),
                false => (128.0 + (i % 9) as f64, 82.0 + (i % 5) as f64),
            };
            let metrics: &[(&str, f64, &str, &str)] = if d == 0 {
                &[
                    ("systolic", sys, "mm[Hg]", "8480-6"),
                    ("diastolic", dia, "mm[Hg]", "8462-4"),
                    ("pulse_rate", 70.0 + (i % 7) as f64, "/min", "8867-4"),
                ]
            } else {
                &[(
                    "body_weight",
                    80.0 + (i % 10) as f64 / 10.0,
                    "kg",
                    "29463-7",
                )]
            };
            for (metric, value, unit, loinc) in metrics {
                let id = reading_id(device, metric, t, i);
                out.push(
                    json!({
                        "reading_id": id, "group_id": group,
                        "panel": if d == 0 { Some("blood_pressure") } else { None },
                        "patient_id": "", "device_id": device, "metric": metric,
                        "value": value, "unit": unit, "loinc": loinc,
                        "device_measured_at": at, "measured_at": at, "received_at": at,
                        "source": "ble", "sequence": i, "annotations": {}, "content_digest": null
                    })
                    .to_string(),
                );
            }
        }
    }
    out
}

/// A stable id from what identifies a reading (FNV-1a, 128 bits as two
/// 64-bit halves: ids, not security).
fn reading_id(device: &str, metric: &str, t: i64, seq: i64) -> String {
    let key = format!("{device}|{metric}|{t}|{seq}");
    let h = |seed: u64| {
        key.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
        })
    };
    format!(
        "sim-{:016x}{:016x}",
        h(0xcbf2_9ce4_8422_2325),
        h(0x8422_2325_cbf2_9ce4)
    )
}

/// One raw HTTP/1.1 exchange: status, headers (lower-case names), body.
async fn exchange(
    target: &Target,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<(String, String)>, String)> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nContent-Length: {}\r\nConnection: close\r\n",
        target.host,
        target.port,
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect((target.host.as_str(), target.port)).await?;
    s.write_all(req.as_bytes()).await?;
    s.write_all(body).await?;
    let mut raw = Vec::new();
    s.take(1 << 22).read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers, body.to_string()))
}

/// What one request got: status, headers, body, latency, retries.
type Answer = (u16, Vec<(String, String)>, String, f64, u32);

/// One request, retried (transport errors, 429, 5xx) until answered.
async fn send(
    gate: Arc<tokio::sync::Semaphore>,
    target: Target,
    name: String,
    method: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
) -> Result<Answer, String> {
    let mut attempt = 0u32;
    loop {
        let permit = gate.acquire().await.map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let out = exchange(&target, method, path, &headers, &body).await;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        drop(permit);
        match out {
            Ok((s, h, text)) if s != 0 && s != 429 && s < 500 => {
                return Ok((s, h, text, ms, attempt))
            }
            Ok((s, _, text)) if attempt > 50 => return Err(format!("{name}: {s} {text}")),
            Err(e) if attempt > 50 => return Err(format!("{name}: {e}")),
            _ => {}
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt.min(20)))).await;
    }
}

#[derive(Default)]
struct BoxResult {
    sent: u64,
    stored: u64,
    duplicates: u64,
    requests: u64,
    retries: u64,
    shares_304: u64,
    latencies_ms: Vec<f64>,
    done_s: f64,
}

async fn play_box(
    index: usize,
    b: BoxSpec,
    plan: Arc<BoxesPlan>,
    target: Target,
    gate: Arc<tokio::sync::Semaphore>,
    start: Instant,
) -> Result<BoxResult, String> {
    let crisis = plan.crisis_every > 0 && index.is_multiple_of(plan.crisis_every);
    let lines = readings(&b, &plan, crisis, chrono::Utc::now().timestamp_millis());
    let mut r = BoxResult::default();
    let auth = format!("Bearer {}", b.token);
    let health = |backlog: usize| {
        vec![
            ("Authorization", auth.clone()),
            ("RPM-Box-Backlog", backlog.to_string()),
            (
                "RPM-Box-Clock",
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
            ("RPM-Box-Version", "sim".to_string()),
        ]
    };
    let name = b.name.clone();
    let send = |method: &'static str,
                path: &'static str,
                headers: Vec<(&'static str, String)>,
                body: Vec<u8>| {
        send(
            gate.clone(),
            target.clone(),
            name.clone(),
            method,
            path,
            headers,
            body,
        )
    };
    // The share, then again: unchanged, a 304.
    let (s, h, _, ms, a) = send(
        "GET",
        "/api/v1/upstream/share",
        health(lines.len()),
        Vec::new(),
    )
    .await?;
    r.requests += 1 + u64::from(a);
    r.retries += u64::from(a);
    r.latencies_ms.push(ms);
    if s != 200 {
        return Err(format!("{}: share answered {s}", b.name));
    }
    let etag = h
        .iter()
        .find(|(k, _)| k == "etag")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut hs = health(lines.len());
    hs.push(("If-None-Match", etag));
    let (s, _, _, ms, a) = send("GET", "/api/v1/upstream/share", hs, Vec::new()).await?;
    r.requests += 1 + u64::from(a);
    r.latencies_ms.push(ms);
    if s == 304 {
        r.shares_304 += 1;
    }
    // The backlog, in batches, each until taken.
    let mut left = lines.len();
    for chunk in lines.chunks(plan.batch.max(1)) {
        let body = chunk.join("\n").into_bytes();
        let mut hs = health(left);
        hs.push(("Content-Type", "application/x-ndjson".into()));
        let (s, _, text, ms, a) = send("POST", "/api/v1/upstream/readings", hs, body).await?;
        r.requests += 1 + u64::from(a);
        r.retries += u64::from(a);
        r.latencies_ms.push(ms);
        if !(200..300).contains(&s) {
            return Err(format!("{}: readings answered {s}: {text}", b.name));
        }
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        r.stored += v["stored"].as_u64().unwrap_or(0);
        r.duplicates += v["duplicates"].as_u64().unwrap_or(0);
        r.sent += chunk.len() as u64;
        left -= chunk.len();
    }
    r.done_s = start.elapsed().as_secs_f64();
    Ok(r)
}

/// Plays every box against the hub at once; returns what was measured.
pub async fn run(boxes: Vec<BoxSpec>, plan: BoxesPlan) -> Result<BoxesReport, String> {
    let target = Target::parse(&plan.hub).map_err(|e| e.to_string())?;
    let plan = Arc::new(plan);
    let gate = Arc::new(tokio::sync::Semaphore::new(plan.concurrency.max(1)));
    let start = Instant::now();
    let n = boxes.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, b) in boxes.into_iter().enumerate() {
        tasks.spawn(play_box(
            i,
            b,
            plan.clone(),
            target.clone(),
            gate.clone(),
            start,
        ));
    }
    let mut report = BoxesReport {
        boxes: n,
        ..Default::default()
    };
    let mut lat = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let r = done.map_err(|e| e.to_string())??;
        report.readings_sent += r.sent;
        report.stored += r.stored;
        report.duplicates += r.duplicates;
        report.requests += r.requests;
        report.retries += r.retries;
        report.shares_304 += r.shares_304;
        report.last_box_done_s = report.last_box_done_s.max(r.done_s);
        lat.extend(r.latencies_ms);
    }
    report.elapsed_s = start.elapsed().as_secs_f64();
    report.readings_per_s = report.readings_sent as f64 / report.elapsed_s.max(1e-9);
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    report.request_p50_ms = pct(0.5);
    report.request_p99_ms = pct(0.99);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_file_and_readings() {
        let b = parse_boxes("# boxes\nbox-1 tok cuff-1,scale-1\n").unwrap();
        assert_eq!(b[0].devices, ["cuff-1", "scale-1"]);
        assert!(parse_boxes("box-1 tok\n").is_err());
        let plan = BoxesPlan {
            hub: "http://127.0.0.1:1".into(),
            offline: Duration::from_secs(86_400),
            per_day: 4,
            batch: 100,
            concurrency: 1,
            crisis_every: 0,
        };
        let lines = readings(&b[0], &plan, false, 1_800_000_000_000);
        // 4 BP measurements (3 readings each) and 4 weights.
        assert_eq!(lines.len(), 16);
        let again = readings(&b[0], &plan, false, 1_800_000_000_000);
        assert_eq!(lines, again, "stable ids: a replay is deduplicated");
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(v["metric"], "systolic");
        let high = readings(&b[0], &plan, true, 1_800_000_000_000);
        let last_bp: serde_json::Value = serde_json::from_str(&high[9]).unwrap();
        assert_eq!(last_bp["value"], 185.0);
    }
}
