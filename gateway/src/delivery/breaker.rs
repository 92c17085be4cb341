//! A circuit breaker per endpoint: an endpoint that keeps failing is paused
//! instead of being hammered (and instead of burning every delivery's retry
//! budget while it is down), then probed with one delivery at a time.
//!
//! Closed → (N consecutive failures) → Open for a cool-down → Half-open: one
//! probe; success closes it, failure re-opens it with a doubled cool-down
//! (capped). Only the first opening of an episode is reported (one
//! `delivery.failing` event per outage, not one per probe).

use std::time::{Duration, Instant};

/// Breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Deliveries flow.
    Closed,
    /// Paused until the instant.
    Open(Instant),
    /// One probe allowed.
    HalfOpen,
}

/// What a result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerChange {
    /// Nothing to report.
    None,
    /// The endpoint just started failing (report it).
    Opened,
    /// The endpoint recovered after having been opened.
    Recovered,
}

/// One endpoint's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    base_cooldown: Duration,
    max_cooldown: Duration,
    cooldown: Duration,
    failures: u32,
    state: State,
    tripped: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cooldown: Duration, max_cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            base_cooldown: cooldown,
            max_cooldown: max_cooldown.max(cooldown),
            cooldown,
            failures: 0,
            state: State::Closed,
            tripped: false,
        }
    }

    /// Current state (an expired Open reads as HalfOpen).
    pub fn state(&mut self, now: Instant) -> State {
        if let State::Open(until) = self.state {
            if now >= until {
                self.state = State::HalfOpen;
            }
        }
        self.state
    }

    /// How many attempts may be in flight now, given the configured limit.
    pub fn allowance(&mut self, now: Instant, limit: usize) -> usize {
        match self.state(now) {
            State::Closed => limit,
            State::HalfOpen => 1,
            State::Open(_) => 0,
        }
    }

    /// A delivery succeeded (or the receiver answered in a way that shows it is up).
    pub fn success(&mut self) -> BreakerChange {
        self.failures = 0;
        self.cooldown = self.base_cooldown;
        self.state = State::Closed;
        if std::mem::take(&mut self.tripped) {
            BreakerChange::Recovered
        } else {
            BreakerChange::None
        }
    }

    /// A delivery failed in a way that says the endpoint is unwell.
    pub fn failure(&mut self, now: Instant) -> BreakerChange {
        self.failures += 1;
        match self.state(now) {
            State::HalfOpen => {
                self.cooldown = (self.cooldown * 2).min(self.max_cooldown);
                self.state = State::Open(now + self.cooldown);
                BreakerChange::None
            }
            State::Closed if self.failures >= self.threshold => {
                self.state = State::Open(now + self.cooldown);
                self.tripped = true;
                BreakerChange::Opened
            }
            _ => BreakerChange::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_probes_and_recovers() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, Duration::from_secs(10), Duration::from_secs(15));
        assert_eq!(b.failure(t0), BreakerChange::None);
        assert_eq!(b.failure(t0), BreakerChange::None);
        assert_eq!(b.failure(t0), BreakerChange::Opened);
        assert_eq!(b.allowance(t0, 4), 0);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.allowance(t1, 4), 1);
        assert_eq!(b.failure(t1), BreakerChange::None);
        assert_eq!(
            b.state(t1 + Duration::from_secs(14)),
            State::Open(t1 + Duration::from_secs(15))
        );
        assert_eq!(b.allowance(t1 + Duration::from_secs(15), 4), 1);
        assert_eq!(b.success(), BreakerChange::Recovered);
        assert_eq!(b.allowance(t1, 4), 4);
        assert_eq!(b.success(), BreakerChange::None);
    }
}
