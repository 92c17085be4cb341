//! `[upstream_intake]`: the program hub watches its home boxes.
//!
//! Every push and pull of a box records its contact and health at the hub
//! (`store::boxes`, written by the API). This stage looks at the boxes on a
//! schedule: a box not heard from for longer than `silent_after` gets one
//! `box.silent` operational event, and its next contact one `box.back`
//! (written by the API with the contact). Both are delivered like any
//! operational event, to the webhook endpoints that ask for `box.*`.
//!
//! Driven from the store: the flag, the event and its id (numbered per box)
//! are one transaction, and the next check is due when the oldest contact
//! not yet reported silent turns `silent_after` old (or every
//! `check_interval`, whichever is sooner), so a restart neither repeats nor
//! loses an event. A silent box is an operational matter: whether its
//! patient's data is missing is the rules' business (missing-data rules),
//! and the two are reported apart.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::store::{boxes, now_ms, Store, StoreError};

/// `[upstream_intake]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeConfig {
    /// A box not heard from for this long is reported silent (`box.silent`).
    /// Boxes pull their share every minute or so, so an hour of silence is
    /// already a lost link; the default leaves room for a router restart or
    /// a night without Wi-Fi while still telling operators well before a
    /// day-long gap makes the patient's own missing-data rules fire.
    #[serde(with = "humantime_serde")]
    pub silent_after: Duration,
    /// Longest wait between two looks at the boxes.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            silent_after: Duration::from_secs(6 * 3600),
            check_interval: Duration::from_secs(60),
        }
    }
}

/// Checks `[upstream_intake]`; `err(table, key, message)` records an error.
pub fn validate(c: &IntakeConfig, err: &mut dyn FnMut(&str, &str, String)) {
    // Contacts are recorded to half a second (store::boxes).
    if c.silent_after < Duration::from_secs(2) {
        err(
            "upstream_intake",
            "silent_after",
            "must be at least 2s".into(),
        );
    }
    if c.check_interval < Duration::from_millis(50) {
        err(
            "upstream_intake",
            "check_interval",
            "must be at least 50ms".into(),
        );
    }
}

/// The box watch on its own store connection.
pub struct BoxWatch {
    store: Store,
    cfg: IntakeConfig,
    waker: Option<Arc<tokio::sync::Notify>>,
}

impl BoxWatch {
    /// A watch on the store at `path`.
    pub fn open(path: &Path, cfg: IntakeConfig) -> Result<BoxWatch, StoreError> {
        Ok(BoxWatch {
            store: Store::open(path)?,
            cfg,
            waker: None,
        })
    }

    /// Wakes the webhook dispatcher when an event was written.
    pub fn with_delivery_waker(mut self, waker: Arc<tokio::sync::Notify>) -> BoxWatch {
        self.waker = Some(waker);
        self
    }

    /// One look at `now` (ms): raises `box.silent` for every box due.
    /// Returns how many, and when the next box may fall silent.
    pub fn check(&mut self, now: i64) -> Result<(usize, Option<i64>), StoreError> {
        let after = i64::try_from(self.cfg.silent_after.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now.saturating_sub(after);
        let due = boxes::silent_due(self.store.conn(), cutoff)?;
        let mut raised = 0;
        for b in due {
            let tx = self.store.transaction()?;
            if boxes::mark_silent(&tx, &b.box_id, cutoff, self.cfg.silent_after.as_secs(), now)? {
                raised += 1;
            }
            tx.commit()?;
            tracing::warn!(box_id = %b.box_id, "home box silent: box.silent raised");
        }
        if raised > 0 {
            if let Some(w) = &self.waker {
                w.notify_one();
            }
        }
        let next = boxes::oldest_contact(self.store.conn())?.map(|t| t.saturating_add(after));
        Ok((raised, next))
    }
}

/// Runs the watch until `stop`.
pub async fn run(mut watch: BoxWatch, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let Ok((w, result)) = tokio::task::spawn_blocking(move || {
            let r = watch.check(now_ms());
            (watch, r)
        })
        .await
        else {
            tracing::error!("box watch: its store task failed; the watch stops");
            return;
        };
        watch = w;
        let wait = match result {
            Ok((_, Some(next))) => {
                let ms = next.saturating_sub(now_ms()).max(0) as u64 + 1;
                Duration::from_millis(ms).min(watch.cfg.check_interval)
            }
            Ok((_, None)) => watch.cfg.check_interval,
            Err(e) => {
                tracing::error!(error = %e, "box watch: the store failed; trying again");
                watch.cfg.check_interval
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
