//! Where forwarding and the store's disk stand, read from the store and the
//! file system: for `rpm-gateway forward status` and the API (readiness and
//! operators' views). A running gateway's live view is in [`Metrics`]
//! (`store_disk_low()`, `forward_backlog()`); this works without one.
//!
//! [`Metrics`]: crate::metrics::Metrics

use serde::Serialize;

use super::forwarder::{CURSOR, REJECTED};
use super::retention::disk_space;

use crate::store::{Store, StoreError};

/// Forwarding and disk status. No PHI.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForwardStatus {
    /// `[forward.influxdb]` is configured.
    pub enabled: bool,
    /// The forwarder's cursor: readings up to this `seq` were accepted (or quarantined).
    pub cursor: i64,
    /// Newest reading's `seq`.
    pub newest_seq: i64,
    /// Readings after the cursor (not yet forwarded).
    pub backlog: i64,
    /// When the cursor last moved (Unix ms), if ever.
    pub cursor_updated_at: Option<i64>,
    /// Open quarantine rows the sink refused.
    pub rejected: i64,
    /// Free bytes on the store's file system, if readable.
    pub disk_free_bytes: Option<u64>,
    /// Below `retention.min_free_bytes` / `min_free_percent`.
    pub disk_low: bool,
    /// The home box's link to the program hub, when `[forward.upstream]`
    /// is configured.
    pub upstream: Option<UpstreamStatus>,
}

/// Where the upstream forwarder (home box → hub) stands. No PHI.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamStatus {
    /// Readings up to this `seq` were taken by the hub.
    pub cursor: i64,
    /// Readings after the cursor (not yet at the hub).
    pub backlog: i64,
    /// When the cursor last moved (Unix ms), if ever: the box's last
    /// successful contact with the hub.
    pub cursor_updated_at: Option<i64>,
    /// The hub's share applied last: its version and when (Unix ms).
    pub share_version: Option<String>,
    pub share_applied_at: Option<i64>,
    /// Quarantine rows up to this id were taken by the hub.
    pub quarantine_cursor: i64,
}

/// Reads the status of `store` under `[forward]` and `[retention]`.
pub fn status(
    store: &Store,
    forward: &super::config::ForwardConfig,
    retention: &super::config::RetentionConfig,
) -> Result<ForwardStatus, StoreError> {
    let conn = store.conn();
    let (cursor, updated) = crate::store::cursor_with_time(conn, CURSOR)?
        .map(|(c, u)| (c, Some(u)))
        .unwrap_or((0, None));
    let newest = crate::store::queries::newest_seq(conn)?;
    let backlog = crate::store::queries::count_after(conn, cursor)?;
    let rejected = crate::store::quarantine::count_open(conn, REJECTED)?;
    let dir = store
        .path()
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let disk = disk_space(dir).ok();
    let upstream = match forward.upstream {
        None => None,
        Some(_) => {
            let (cursor, updated) = crate::store::cursor_with_time(conn, super::upstream::CURSOR)?
                .map(|(c, u)| (c, Some(u)))
                .unwrap_or((0, None));
            let share = crate::store::share::applied(conn)?;
            Some(UpstreamStatus {
                cursor,
                backlog: crate::store::queries::count_after(conn, cursor)?,
                cursor_updated_at: updated,
                share_version: share.as_ref().map(|s| s.0.clone()),
                share_applied_at: share.map(|s| s.1),
                quarantine_cursor: store.cursor(super::hub::QUARANTINE_CURSOR)?,
            })
        }
    };
    Ok(ForwardStatus {
        enabled: forward.influxdb.is_some(),
        cursor,
        newest_seq: newest,
        backlog,
        cursor_updated_at: updated,
        rejected,
        disk_free_bytes: disk.map(|d| d.available),
        disk_low: disk.is_some_and(|d| retention.is_low(d)),
        upstream,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn backlog_of_a_fresh_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let c = Config::default();
        let s = status(&store, &c.forward, &c.retention).unwrap();
        assert_eq!(s.upstream, None);
        assert_eq!(
            (s.enabled, s.cursor, s.backlog, s.rejected),
            (false, 0, 0, 0)
        );
        assert!(s.disk_free_bytes.is_some());
    }
}
