//! Silence arithmetic for missing-data rules.
//!
//! A deadman that counts the gateway's own outage as patient silence pages a
//! nurse for the gateway's fault (Kapacitor #939/#1339). Subtracting the
//! outage fixes that without hiding a real silence: the alert still fires,
//! only as much later as the gateway was down, because the silence outside
//! the outage keeps counting.

use chrono::{DateTime, TimeDelta, Utc};

/// The silence since `last_seen`, not counting the parts of `downtime`
/// intervals (`(from, to)`, gateway down) that fall inside it. Overlapping
/// and unordered intervals are fine; reversed ones are ignored.
pub fn silence(
    now: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    downtime: &[(DateTime<Utc>, DateTime<Utc>)],
) -> TimeDelta {
    if now <= last_seen {
        return TimeDelta::zero();
    }
    let mut clipped: Vec<(DateTime<Utc>, DateTime<Utc>)> = downtime
        .iter()
        .map(|&(a, b)| (a.max(last_seen), b.min(now)))
        .filter(|(a, b)| a < b)
        .collect();
    clipped.sort();
    let mut down = TimeDelta::zero();
    let mut cur: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    for (a, b) in clipped {
        cur = match cur {
            Some((ca, cb)) if a <= cb => Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                down += cb - ca;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((ca, cb)) = cur {
        down += cb - ca;
    }
    (now - last_seen) - down
}

/// Whether a silence since `last_seen` has reached `after` at `now`, given
/// the gateway's downtime. The function the spec calls
/// `evaluate_missing(now, last_seen, gateway_downtime)`, before rule and
/// state handling (see [`crate::engine::Engine::evaluate_missing`]).
pub fn is_missing(
    now: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    after: TimeDelta,
    downtime: &[(DateTime<Utc>, DateTime<Utc>)],
) -> bool {
    silence(now, last_seen, downtime) >= after
}
