//! The scenario's care team (`[[care]]`): at each action's simulated
//! moment it finds the patient's open follow-up task through the gateway's
//! HTTP API and claims or completes it, as a care manager would from the
//! worklist. Patients it leaves alone are the "nobody acts" case: their
//! tasks go overdue and escalate.
//!
//! The actions run beside the readings on the same schedule, so a gateway
//! on the data clock (`rules.clock = "data"`) stamps them at about their
//! simulated time. Ground truth (`[[expect_task]]`) keeps its moments hours
//! away from any deadline, so the gateway's commit latency, a few simulated
//! minutes at high speed, cannot change an outcome.

use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::scenario::{CareVerb, Scenario};
use crate::schedule::Schedule;
use crate::transport::http::Target;

/// Where the care team reaches the gateway.
#[derive(Debug, Clone)]
pub struct CareApi {
    /// `http://HOST:PORT` of the gateway's API.
    pub base: Target,
    /// A bearer token allowed to act on the patients' tasks.
    pub token: String,
}

/// What one action did.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Acted {
    /// Patient.
    pub patient: String,
    /// `claim` or `complete`.
    pub action: String,
    /// The task acted on, when one was found.
    pub task_id: Option<String>,
    /// The API's answer (0: no task found in time, or no answer).
    pub status: u16,
}

/// How long an action waits for the patient's task to appear (the alert
/// that opens it may still be on its way through the gateway).
const FIND_TIMEOUT: Duration = Duration::from_secs(10);

async fn exchange(api: &CareApi, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let t = &api.base;
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{bytes}",
        t.host,
        t.port,
        api.token,
        bytes.len()
    );
    let go = async {
        let mut s = TcpStream::connect((t.host.as_str(), t.port)).await?;
        s.write_all(req.as_bytes()).await?;
        let mut answer = Vec::new();
        s.take(4 << 20).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let Ok(Ok(raw)) = tokio::time::timeout(Duration::from_secs(10), go).await else {
        return (0, Value::Null);
    };
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

async fn open_task(api: &CareApi, patient: &str) -> Option<String> {
    let deadline = tokio::time::Instant::now() + FIND_TIMEOUT;
    loop {
        let path = format!("/api/v1/tasks?patient={patient}&limit=1");
        let (status, body) = exchange(api, "GET", &path, None).await;
        if status == 200 {
            if let Some(id) = body["items"][0]["task_id"].as_str() {
                return Some(id.to_string());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Plays the scenario's care actions on `schedule` (started at `t0`).
pub async fn act(
    s: &Scenario,
    schedule: &Schedule,
    api: &CareApi,
    t0: tokio::time::Instant,
) -> Vec<Acted> {
    let mut actions = s.care.clone();
    actions.sort_by_key(|c| (c.day, c.at));
    let mut done = Vec::new();
    for c in actions {
        let when = s.moment(c.day, c.at);
        tokio::time::sleep_until(t0 + schedule.wall_offset(when)).await;
        let task_id = open_task(api, &c.patient).await;
        let (action, status) = match (&task_id, c.action) {
            (None, CareVerb::Claim) => ("claim", 0),
            (None, CareVerb::Complete) => ("complete", 0),
            (Some(id), CareVerb::Claim) => {
                let path = format!("/api/v1/tasks/{id}/claim");
                let (st, _) = exchange(api, "POST", &path, Some(&json!({"assignee": c.by}))).await;
                ("claim", st)
            }
            (Some(id), CareVerb::Complete) => {
                let path = format!("/api/v1/tasks/{id}/complete");
                let body = json!({
                    "outcome": c.outcome.clone().unwrap_or_default(),
                    "note": format!("scenario care team: {}", c.by),
                });
                let (st, _) = exchange(api, "POST", &path, Some(&body)).await;
                ("complete", st)
            }
        };
        done.push(Acted {
            patient: c.patient.clone(),
            action: action.to_string(),
            task_id,
            status,
        });
    }
    done
}
