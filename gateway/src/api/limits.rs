//! Limits at the API's edge: guessing tokens, flooding, hogging.
//!
//! - Authentication failures per client address: a token bucket
//!   (`api.auth_failure_burst`, refilled at `api.auth_failures_per_minute`).
//!   A client that empties it is answered 429 with `Retry-After`, for every
//!   request and before its token is even looked at, until the bucket
//!   allows again: guesses are not merely slowed, their outcome is hidden.
//! - Requests per token (`api.token_requests_per_second`, burst twice that):
//!   a runaway client, or a leaked token, cannot monopolize the store.
//! - Anonymous refusals are counted (`rpm_api_auth_failures_total`) and
//!   written to the audit log as one row per client address and minute
//!   with the count, not one row each: whoever can reach the port cannot
//!   grow the disk with bad requests.
//!
//! The client address is the TCP peer: behind a reverse proxy every client
//! shares the proxy's bucket (forwarded headers are not trusted).

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::config::ApiConfig;

/// The client's address, put on each request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// Addresses remembered at most (blocked ones, aggregated failures).
const MAX_TRACKED: usize = 10_000;
/// Aggregated anonymous refusals are written this often.
pub const AUDIT_WINDOW: Duration = Duration::from_secs(60);

/// The API's rate limits.
pub struct Limits {
    failures: Option<DefaultKeyedRateLimiter<IpAddr>>,
    tokens: Option<DefaultKeyedRateLimiter<String>>,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    refused: Mutex<HashMap<IpAddr, u64>>,
}

fn nz(n: u32) -> Option<NonZeroU32> {
    NonZeroU32::new(n)
}

impl Limits {
    /// From `[api]`; a rate of 0 turns a limit off.
    pub fn new(cfg: &ApiConfig) -> Limits {
        let failures = nz(cfg.auth_failures_per_minute).map(|rate| {
            let burst = nz(cfg.auth_failure_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
        });
        let tokens = nz(cfg.token_requests_per_second).map(|rate| {
            let burst = nz(cfg.token_requests_per_second.saturating_mul(2)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Limits {
            failures,
            tokens,
            blocked: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
        }
    }

    /// How long `ip` must still wait, if it is blocked.
    pub fn blocked(&self, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let map = self.blocked.lock().ok()?;
        map.get(&ip)
            .filter(|until| **until > now)
            .map(|until| *until - now)
    }

    /// Counts an authentication failure of `ip`; returns how long it must
    /// now wait when that emptied its bucket.
    pub fn failure(&self, ip: IpAddr) -> Option<Duration> {
        if let Ok(mut r) = self.refused.lock() {
            if r.len() < MAX_TRACKED || r.contains_key(&ip) {
                *r.entry(ip).or_default() += 1;
            }
        }
        let limiter = self.failures.as_ref()?;
        let not_until = limiter.check_key(&ip).err()?;
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        if let Ok(mut b) = self.blocked.lock() {
            if b.len() >= MAX_TRACKED {
                let now = Instant::now();
                b.retain(|_, until| *until > now);
                limiter.retain_recent();
            }
            if b.len() < MAX_TRACKED {
                b.insert(ip, Instant::now() + wait);
            }
        }
        Some(wait)
    }

    /// Whether `token_id` may make another request now; else how long to wait.
    pub fn token(&self, token_id: &str) -> Result<(), Duration> {
        match &self.tokens {
            None => Ok(()),
            Some(l) => l
                .check_key(&token_id.to_string())
                .map_err(|nu| nu.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// The refusals counted since the last call, by address.
    pub fn take_refused(&self) -> Vec<(IpAddr, u64)> {
        self.refused
            .lock()
            .map(|mut r| r.drain().collect())
            .unwrap_or_default()
    }
}

/// `Retry-After` seconds for a wait (at least 1).
pub fn retry_after(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(failures_per_minute: u32, burst: u32, token_rps: u32) -> ApiConfig {
        ApiConfig {
            auth_failures_per_minute: failures_per_minute,
            auth_failure_burst: burst,
            token_requests_per_second: token_rps,
            ..ApiConfig::default()
        }
    }

    /// A client's failed authentications are allowed up to the burst; the
    /// next one blocks it for a while, other clients are not affected, and
    /// every failure is counted for the aggregated audit row.
    #[test]
    fn failures_block_one_client_after_its_burst() {
        let l = Limits::new(&cfg(6, 3, 0));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.failure(a), None);
        }
        let wait = l.failure(a).expect("blocked after the burst");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        assert!(l.blocked(a).is_some());
        assert!(l.blocked(b).is_none());
        assert_eq!(l.failure(b), None);
        let mut refused = l.take_refused();
        refused.sort();
        assert_eq!(refused, vec![(a, 4), (b, 1)]);
        assert!(l.take_refused().is_empty(), "counted once");
    }

    /// A token may burst to twice its rate per second, then waits; a rate
    /// of 0 turns the limit off.
    #[test]
    fn tokens_burst_then_wait_and_zero_is_off() {
        let l = Limits::new(&cfg(0, 0, 2));
        assert!((0..4).all(|_| l.token("t1").is_ok()));
        let wait = l.token("t1").unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert!(l.token("t2").is_ok(), "per token");
        let off = Limits::new(&cfg(0, 0, 0));
        assert!((0..1000).all(|_| off.token("t").is_ok()));
        assert!((0..1000).all(|_| off.failure("192.0.2.9".parse().unwrap()).is_none()));
        assert_eq!(retry_after(Duration::from_millis(1)), 1);
        assert_eq!(retry_after(Duration::from_secs(2)), 2);
    }
}
