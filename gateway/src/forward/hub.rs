//! A home box's two other links to the program hub, beside the readings
//! forwarder (`forward::upstream`): its **share** comes down, its
//! **quarantine** goes up. Same URL, token, TLS and health headers.
//!
//! **The share.** The hub is authoritative for patients, care plans,
//! overrides and device assignments. Every `share_interval` the box asks
//! `GET /api/v1/upstream/share` with the version it applied last
//! (`If-None-Match`; an unchanged share is a 304) and applies a new one to
//! its store in one transaction (`Store::apply_share`): a device the hub
//! assigned is assigned here too and its quarantined `unknown_device`
//! input re-processed, as any assignment. While the hub is away the box
//! asks again every `max_backoff` (so a reconnect brings the share within
//! that), and works from the copy in its store meanwhile.
//!
//! **The quarantine.** Input the box refused (with its raw bytes, reason,
//! device, source, time and connection facts) goes up as JSON lines to
//! `POST /api/v1/upstream/quarantine`, after its own durable cursor
//! (`forward.upstream.quarantine`, a quarantine row id), moved only after
//! the hub's 2xx; the hub keeps a record once per (box, row id), so a batch
//! sent again after a crash is harmless. At the hub, assigning the device
//! re-processes the record there from its raw bytes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::http::{transport_error, with_body, WriteError};
use super::upstream::{classify_status, HealthHeaders, UpstreamConfig, UpstreamError};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::store::quarantine::records_after;
use crate::store::share::{applied_version, Share};
use crate::store::{set_cursor, Store, StoreError};

/// The hub's route a box pulls its share from.
pub const SHARE_PATH: &str = "/api/v1/upstream/share";
/// The hub's route a box pushes its quarantine records to.
pub const QUARANTINE_PATH: &str = "/api/v1/upstream/quarantine";
/// The box's cursor over its quarantine rows.
pub const QUARANTINE_CURSOR: &str = "forward.upstream.quarantine";

/// The box's client for the hub (shared by the share and quarantine links).
pub struct HubLink {
    client: reqwest::Client,
    base: String,
    token: String,
    health: HealthHeaders,
    cfg: UpstreamConfig,
}

impl HubLink {
    /// A link for `cfg` (validated at config load).
    pub fn new(cfg: &UpstreamConfig, health: HealthHeaders) -> Result<HubLink, UpstreamError> {
        Ok(HubLink {
            client: super::upstream::client(cfg)?,
            base: cfg.url.trim_end_matches('/').to_string(),
            token: cfg.token().map_err(UpstreamError::Token)?,
            health,
            cfg: cfg.clone(),
        })
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.health.apply(
            self.client
                .get(format!("{}{path}", self.base))
                .bearer_auth(&self.token),
        )
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.health.apply(
            self.client
                .post(format!("{}{path}", self.base))
                .bearer_auth(&self.token)
                .header(reqwest::header::CONTENT_TYPE, super::upstream::MEDIA_TYPE),
        )
    }
}

/// The links' failures that stop them (the store; the hub's are retried).
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the hub link's store task failed: {0}")]
    Task(String),
}

/// Runs `f` on the store off the async threads.
async fn blocking<T: Send + 'static>(
    store: &mut Option<Store>,
    f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, HubError> {
    let mut s = store
        .take()
        .ok_or_else(|| HubError::Task("store connection lost".into()))?;
    let (s, r) = tokio::task::spawn_blocking(move || {
        let r = f(&mut s);
        (s, r)
    })
    .await
    .map_err(|e| HubError::Task(e.to_string()))?;
    *store = Some(s);
    Ok(r?)
}

/// Exponential backoff with jitter, from 200 ms up to `max`.
fn backoff(failures: u32, max: Duration) -> Duration {
    crate::backoff::delay(Duration::from_millis(200), max, failures.saturating_sub(1))
}

/// What one share pull did.
#[derive(Debug)]
enum Pulled {
    Unchanged,
    Applied,
}

async fn pull_once(
    link: &HubLink,
    store: &mut Option<Store>,
    pipeline: &Arc<Pipeline>,
) -> Result<Result<Pulled, WriteError>, HubError> {
    let version = blocking(store, |s| applied_version(s.conn())).await?;
    let mut req = link.get(SHARE_PATH);
    if let Some(v) = &version {
        req = req.header(reqwest::header::IF_NONE_MATCH, format!("\"{v}\""));
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Ok(Err(transport_error(e))),
    };
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(Ok(Pulled::Unchanged));
    }
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Ok(Err(classify_status(status.as_u16(), &text)));
    }
    let etag = resp
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_string()
        });
    let bytes = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return Ok(Err(WriteError::Retry {
                kind: "unreachable".into(),
                status: Some(status.as_u16()),
                message: e.to_string(),
            }))
        }
    };
    let share: Share = match serde_json::from_slice(&bytes) {
        Ok(s) => s,
        Err(e) => {
            return Ok(Err(WriteError::Retry {
                kind: "bad_share".into(),
                status: Some(status.as_u16()),
                message: format!("the hub's share is not readable: {e}"),
            }))
        }
    };
    let Some(etag) = etag else {
        return Ok(Err(WriteError::Retry {
            kind: "bad_share".into(),
            status: Some(status.as_u16()),
            message: "the hub's share has no ETag".into(),
        }));
    };
    let p = pipeline.clone();
    let done = blocking(store, move |s| {
        s.apply_share(&share, &etag, |q| p.reprocess(q))
    })
    .await?;
    tracing::info!(
        devices_changed = done.devices_changed,
        patients = done.patients,
        recovered = done.reprocessed.recovered,
        "applied the hub's share"
    );
    Ok(Ok(Pulled::Applied))
}

/// Pulls the share from the hub until `stop`.
pub async fn run_share(
    link: Arc<HubLink>,
    store: Store,
    pipeline: Arc<Pipeline>,
    stop: impl Future<Output = ()>,
) -> Result<(), HubError> {
    tokio::pin!(stop);
    let mut store = Some(store);
    let mut failures = 0u32;
    loop {
        let wait = match pull_once(&link, &mut store, &pipeline).await? {
            Ok(_) => {
                if failures > 0 {
                    tracing::info!("the hub's share is reachable again");
                }
                failures = 0;
                link.cfg.share_interval
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(error = ?e, "could not pull the share from the hub; working from the last copy");
                }
                failures = failures.saturating_add(1);
                match e {
                    WriteError::Refused { .. } => link.cfg.max_backoff,
                    _ => backoff(failures, link.cfg.max_backoff),
                }
                .min(link.cfg.share_interval)
            }
        };
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Pushes quarantine records to the hub until `stop`.
pub async fn run_quarantine(
    link: Arc<HubLink>,
    store: Store,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()>,
) -> Result<(), HubError> {
    tokio::pin!(stop);
    let mut store = Some(store);
    let mut failures = 0u32;
    let batch = link.cfg.batch_size.min(500);
    loop {
        let (records, last, cursor) = blocking(&mut store, move |s| {
            let cursor = s.cursor(QUARANTINE_CURSOR)?;
            let (r, last) = records_after(s.conn(), cursor, batch)?;
            Ok((r, last, cursor))
        })
        .await?;
        if last == cursor {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(link.cfg.flush_interval) => {}
            }
            continue;
        }
        let sent = if records.is_empty() {
            Ok(())
        } else {
            let mut body = String::new();
            for r in &records {
                if let Ok(line) = serde_json::to_string(r) {
                    body.push_str(&line);
                    body.push('\n');
                }
            }
            match with_body(link.post(QUARANTINE_PATH), body.into(), link.cfg.gzip) {
                Err(e) => Err(e),
                Ok(req) => match req.send().await {
                    Err(e) => Err(WriteError::Retry {
                        kind: "unreachable".into(),
                        status: None,
                        message: e.to_string(),
                    }),
                    Ok(resp) if resp.status().is_success() => Ok(()),
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let text = resp.text().await.unwrap_or_default();
                        Err(classify_status(status, &text))
                    }
                },
            }
        };
        match sent {
            Ok(()) => {
                blocking(&mut store, move |s| {
                    let tx = s.transaction()?;
                    set_cursor(&tx, QUARANTINE_CURSOR, last)?;
                    tx.commit()?;
                    Ok(())
                })
                .await?;
                if failures > 0 {
                    tracing::info!("quarantine records reach the hub again");
                }
                failures = 0;
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(error = ?e, "quarantine records not sent to the hub; retrying");
                }
                let kind = match &e {
                    WriteError::Refused { .. } => "refused",
                    _ => "quarantine",
                };
                metrics.forward_failure("upstream", kind);
                failures = failures.saturating_add(1);
                let wait = match e {
                    WriteError::Refused { .. } => link.cfg.max_backoff,
                    _ => backoff(failures, link.cfg.max_backoff),
                };
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_bound() {
        let max = Duration::from_secs(5);
        assert!(backoff(0, max) <= Duration::from_millis(200));
        assert!(backoff(30, max) <= max);
        assert!(backoff(30, max) >= max / 2);
    }
}
