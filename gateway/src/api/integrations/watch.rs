//! The integration watch: a vendor cloud that has delivered before but not
//! for its `stale_after` raises `integration.stale` once, and its next
//! accepted push `integration.back` once — operational webhook events,
//! opt-in in a route's `event_types` (`integration.*`) like `box.*`.
//!
//! Driven from the store alone (the last delivery in the link-health table,
//! the raised state beside it), each change written in one transaction with
//! its event, so a restart neither loses nor repeats one.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::config::IntegrationsConfig;
use crate::store::integrations::{watch, Change};
use crate::store::{now_ms, Store, StoreError};

/// The longest wait between two looks (shorter when an integration's
/// `stale_after` is: the watch looks at half the shortest, so a link is
/// reported at most half its `stale_after` late).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// The watch on its own store connection.
pub struct IntegrationWatch {
    store: Store,
    cfg: IntegrationsConfig,
    waker: Option<Arc<tokio::sync::Notify>>,
    interval: Duration,
}

impl IntegrationWatch {
    /// A watch of `cfg`'s integrations on the store at `path`.
    pub fn open(path: &Path, cfg: IntegrationsConfig) -> Result<IntegrationWatch, StoreError> {
        let interval = cfg
            .values()
            .map(|c| c.stale_after / 2)
            .fold(CHECK_INTERVAL, Duration::min);
        Ok(IntegrationWatch {
            store: Store::open(path)?,
            cfg,
            waker: None,
            interval,
        })
    }

    /// Wakes the webhook dispatcher when an event was written.
    pub fn with_delivery_waker(mut self, waker: Arc<tokio::sync::Notify>) -> IntegrationWatch {
        self.waker = Some(waker);
        self
    }

    /// One look at `now` (ms); returns how many events were written.
    pub fn check(&mut self, now: i64) -> Result<usize, StoreError> {
        let mut written = 0;
        for (name, c) in &self.cfg {
            let after = i64::try_from(c.stale_after.as_millis()).unwrap_or(i64::MAX);
            let tx = self.store.transaction()?;
            let change = watch(&tx, name, after, now)?;
            tx.commit()?;
            match change {
                Change::None => continue,
                Change::Stale => {
                    tracing::warn!(integration = %name, "vendor integration stale: integration.stale raised")
                }
                Change::Back => {
                    tracing::info!(integration = %name, "vendor integration delivers again: integration.back raised")
                }
            }
            written += 1;
        }
        if written > 0 {
            if let Some(w) = &self.waker {
                w.notify_one();
            }
        }
        Ok(written)
    }
}

/// Runs the watch until `stop`.
pub async fn run(mut watch: IntegrationWatch, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let Ok((w, result)) = tokio::task::spawn_blocking(move || {
            let r = watch.check(now_ms());
            (watch, r)
        })
        .await
        else {
            tracing::error!("integration watch: its store task failed; the watch stops");
            return;
        };
        watch = w;
        if let Err(e) = result {
            tracing::error!(error = %e, "integration watch: the store failed; trying again");
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(watch.interval) => {}
        }
    }
}
