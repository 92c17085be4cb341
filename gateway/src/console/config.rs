//! `[console]`: the web console (see `gateway/src/console/`).
//!
//! The console shares the API's listener, so `[api]` decides where it
//! listens and whether it speaks TLS; this section decides whether it is
//! served and how long a sign-in lasts. The defaults follow HIPAA's
//! automatic logoff safeguard (45 CFR 164.312(a)(2)(iii)): a browser left
//! alone is signed out after 15 minutes.

use serde::Deserialize;
use std::time::Duration;

/// `[console]`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console under `/console/` (when the API is enabled).
    pub enabled: bool,
    /// A session with no request for this long is signed out.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in, however busy.
    #[serde(with = "humantime_serde")]
    pub session_lifetime: Duration,
    /// Failed sign-ins of one username before the lock-out starts.
    pub lockout_after: u32,
    /// The first lock-out; each further failure doubles it.
    #[serde(with = "humantime_serde")]
    pub lockout_base: Duration,
    /// The longest lock-out: the back-off never makes a lock permanent.
    #[serde(with = "humantime_serde")]
    pub lockout_max: Duration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            idle_timeout: Duration::from_secs(15 * 60),
            session_lifetime: Duration::from_secs(12 * 3600),
            lockout_after: 5,
            lockout_base: Duration::from_secs(60),
            lockout_max: Duration::from_secs(3600),
        }
    }
}

/// Checks `[console]`.
pub fn validate(cfg: &ConsoleConfig, err: &mut dyn FnMut(&str, &str, String)) {
    if cfg.idle_timeout < Duration::from_secs(1) {
        err("console", "idle_timeout", "must be at least 1s".into());
    }
    if cfg.session_lifetime < cfg.idle_timeout {
        err(
            "console",
            "session_lifetime",
            "must be at least idle_timeout".into(),
        );
    }
    if cfg.lockout_after == 0 {
        err("console", "lockout_after", "must be at least 1".into());
    }
    if cfg.lockout_base.is_zero() || cfg.lockout_max < cfg.lockout_base {
        err(
            "console",
            "lockout_base",
            "must be more than 0 and no more than lockout_max".into(),
        );
    }
}
