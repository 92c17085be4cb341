//! `[store]`: where the store lives, how the writer batches, and how the
//! store's secrets and pages are keyed; and the checks on them.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// SQLite file; created on first start.
    pub path: PathBuf,
    /// Most items in one transaction.
    pub max_batch_items: usize,
    /// Bounded queue of batches waiting for the writer.
    pub queue: usize,
    /// Input without a device time, received again with the same bytes
    /// within this window, is a redelivery, not a new reading.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Key sealing the secrets kept in the store (64 hex digits, owner-only
    /// file). `RPM_STORE_KEY` or the systemd credential `rpm-store-key`
    /// take precedence; without any, `<path>.key` is created next to the store.
    pub key_file: Option<PathBuf>,
    /// Encrypt the whole store (database and WAL) with SQLCipher, under
    /// the store key (see `key_file`). Off by default: a key created next
    /// to the store would protect copies of the file, not a stolen disk;
    /// give the key from elsewhere and turn this on (an existing plain
    /// store: `rpm-gateway store encrypt`). See docs/security-at-rest.md.
    pub encryption: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("rpm-gateway.db"),
            max_batch_items: 4096,
            queue: 4096,
            dedup_window: Duration::from_secs(24 * 3600),
            key_file: None,
            encryption: false,
        }
    }
}

/// The checks of `[store]`.
pub fn validate(s: &StoreConfig, err: &mut dyn FnMut(&str, &str, String)) {
    if s.max_batch_items == 0 || s.queue == 0 {
        err(
            "store",
            "max_batch_items",
            "batch size and queue must be greater than 0".into(),
        );
    }
}
