//! The retry policy: what an attempt's result means, and when to try again.
//!
//! - 2xx: delivered.
//! - 5xx, 408, timeouts, connection and TLS errors: retry on the schedule.
//! - 429 and 503: retry after the receiver's `Retry-After` (seconds or an
//!   HTTP date, capped) when it sends one, else on the schedule.
//! - 410 Gone: the receiver says the endpoint is gone: disable it.
//! - any other status (3xx — redirects are not followed —, 4xx): the
//!   receiver refused this event; retrying would not change its mind, so
//!   the delivery is marked failed with the response (re-drivable by hand).
//!
//! The default schedule is Standard Webhooks': immediately, then 5 s, 5 min,
//! 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h after each failure, each with
//! ±20 % jitter so that endpoints recovering from an outage are not hit by
//! every gateway in the same second.

use chrono::{DateTime, Utc};
use std::time::Duration;

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// 2xx.
    Successful,
    /// Try again; `after` is the receiver's Retry-After, if it gave one.
    Retry {
        /// Delay the receiver asked for.
        after: Option<Duration>,
    },
    /// Don't retry: the receiver refused the event.
    DontRetry,
    /// 410 Gone: disable the endpoint.
    Disable,
}

impl AttemptOutcome {
    /// Classifies a response status (`None`: no response — timeout,
    /// connection refused, TLS failure) and its `Retry-After` header.
    pub fn classify(
        status: Option<u16>,
        retry_after: Option<&str>,
        now: DateTime<Utc>,
    ) -> AttemptOutcome {
        match status {
            None => AttemptOutcome::Retry { after: None },
            Some(s) if (200..300).contains(&s) => AttemptOutcome::Successful,
            Some(410) => AttemptOutcome::Disable,
            Some(429) | Some(503) => AttemptOutcome::Retry {
                after: retry_after.and_then(|h| parse_retry_after(h, now)),
            },
            Some(408) => AttemptOutcome::Retry { after: None },
            Some(s) if s >= 500 => AttemptOutcome::Retry { after: None },
            Some(_) => AttemptOutcome::DontRetry,
        }
    }

    /// Whether this result counts against the endpoint's health (circuit
    /// breaker). A 429 is the receiver pacing us, not failing; a 4xx refusal
    /// is about the event.
    pub fn is_endpoint_failure(&self, status: Option<u16>) -> bool {
        matches!(self, AttemptOutcome::Retry { .. }) && status != Some(429)
    }
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(h: &str, now: DateTime<Utc>) -> Option<Duration> {
    let h = h.trim();
    if let Ok(secs) = h.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let t = DateTime::parse_from_rfc2822(h).ok()?;
    let ms = (t.with_timezone(&Utc) - now).num_milliseconds().max(0);
    Some(Duration::from_millis(ms as u64))
}

/// The retry schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Delay after the 1st, 2nd, ... failure; the last repeats.
    pub delays: Vec<Duration>,
    /// ± fraction of random jitter (0.2 = ±20 %).
    pub jitter: f64,
    /// Attempts per round before dead-lettering.
    pub max_attempts: u32,
    /// Age (from creation or re-drive) after which a failing delivery is dead-lettered.
    pub max_age: Duration,
    /// Longest Retry-After honoured.
    pub max_retry_after: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        let h = 3600;
        Schedule {
            delays: [5, 300, 1800, 2 * h, 5 * h, 10 * h, 14 * h, 20 * h, 24 * h]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            jitter: 0.2,
            max_attempts: 10,
            max_age: Duration::from_secs(4 * 24 * h),
            max_retry_after: Duration::from_secs(h),
        }
    }
}

impl Schedule {
    /// When to try again after the `failed`-th failed attempt of a round
    /// (1-based) of a delivery that is `age` old; `None`: dead-letter it.
    pub fn next_delay(
        &self,
        failed: u32,
        age: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if failed >= self.max_attempts || age >= self.max_age {
            return None;
        }
        if let Some(ra) = retry_after {
            return Some(ra.min(self.max_retry_after));
        }
        let i = (failed as usize)
            .saturating_sub(1)
            .min(self.delays.len().saturating_sub(1));
        let base = self
            .delays
            .get(i)
            .copied()
            .unwrap_or(Duration::from_secs(5));
        let j = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + j * (fastrand::f64() * 2.0 - 1.0);
        Some(base.mul_f64(factor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        let now = Utc::now();
        let c = |s, ra| AttemptOutcome::classify(s, ra, now);
        assert_eq!(c(Some(200), None), AttemptOutcome::Successful);
        assert_eq!(c(Some(204), None), AttemptOutcome::Successful);
        assert_eq!(c(None, None), AttemptOutcome::Retry { after: None });
        assert_eq!(c(Some(500), None), AttemptOutcome::Retry { after: None });
        assert_eq!(c(Some(408), None), AttemptOutcome::Retry { after: None });
        assert_eq!(c(Some(410), None), AttemptOutcome::Disable);
        assert_eq!(c(Some(400), None), AttemptOutcome::DontRetry);
        assert_eq!(c(Some(404), None), AttemptOutcome::DontRetry);
        assert_eq!(c(Some(301), None), AttemptOutcome::DontRetry);
        assert_eq!(
            c(Some(429), Some("7")),
            AttemptOutcome::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        let date = (now + chrono::Duration::seconds(120)).to_rfc2822();
        let AttemptOutcome::Retry { after: Some(d) } = c(Some(503), Some(&date)) else {
            panic!()
        };
        assert!(d > Duration::from_secs(110) && d <= Duration::from_secs(120));
        assert_eq!(
            c(Some(503), Some("soon")),
            AttemptOutcome::Retry { after: None }
        );
        assert!(!c(Some(429), None).is_endpoint_failure(Some(429)));
        assert!(c(Some(502), None).is_endpoint_failure(Some(502)));
    }

    #[test]
    fn schedule_jitter_cap_and_dead_letter() {
        let s = Schedule::default();
        let d1 = s.next_delay(1, Duration::ZERO, None).unwrap();
        assert!(
            d1 >= Duration::from_secs(4) && d1 <= Duration::from_secs(6),
            "{d1:?}"
        );
        let d2 = s.next_delay(2, Duration::ZERO, None).unwrap();
        assert!(d2 >= Duration::from_secs(240) && d2 <= Duration::from_secs(360));
        let d9 = s.next_delay(9, Duration::ZERO, None).unwrap();
        assert!(d9 >= Duration::from_secs(19 * 3600));
        assert_eq!(s.next_delay(10, Duration::ZERO, None), None);
        assert_eq!(s.next_delay(1, Duration::from_secs(5 * 86400), None), None);
        assert_eq!(
            s.next_delay(1, Duration::ZERO, Some(Duration::from_secs(99999))),
            Some(Duration::from_secs(3600))
        );
    }
}
