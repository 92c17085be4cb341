//! One backoff for every retry loop: exponential from a first delay,
//! capped, with jitter.
//!
//! Why jitter: many home boxes lose the same broker, hub or Bluetooth stack
//! at the same moment (a power cut in a street, a hub restart). Retrying on
//! a fixed doubling schedule, they would come back in step and hit it
//! together at every doubling. Each delay is drawn between half and all of
//! its exponential step, so they spread out and never exceed the cap.
//!
//! [`delay`] is the pure policy, a function of the attempt; [`Backoff`] is
//! the small state of a loop that waits longer after each failure and
//! starts over after a success. (Webhook deliveries follow their own
//! published schedule: see [`crate::delivery::retry`].)

use std::time::Duration;

/// The delay before retry number `attempt` (0 for the first retry):
/// `first · 2^attempt`, at most `max`, of which a random half to all.
pub fn delay(first: Duration, max: Duration, attempt: u32) -> Duration {
    let step = step(first, max, attempt);
    let ms = u64::try_from(step.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(ms / 2 + fastrand::u64(0..=ms - ms / 2))
}

/// The exponential step of `attempt`, before jitter.
fn step(first: Duration, max: Duration, attempt: u32) -> Duration {
    first.saturating_mul(1u32 << attempt.min(16)).min(max)
}

/// A retry loop's backoff: each [`Backoff::next_delay`] waits longer, up to
/// the cap; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// From `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max: max.max(first),
            attempt: 0,
        }
    }

    /// The delay before the next try; the one after will be longer.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_within(self.max)
    }

    /// As [`Backoff::next_delay`], capped at `cap` this time (a device
    /// waiting to be paired is retried more often than a failing one).
    pub fn next_delay_within(&mut self, cap: Duration) -> Duration {
        let d = delay(self.first, self.max.min(cap), self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Starts over from the first delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_and_is_capped() {
        let first = Duration::from_millis(200);
        let max = Duration::from_secs(5);
        for attempt in 0..40 {
            let d = delay(first, max, attempt);
            let full = first.saturating_mul(1 << attempt.min(16)).min(max);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
    }

    #[test]
    fn a_loop_doubles_then_starts_over() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let caps: Vec<u64> = (0..6).map(|_| b.next_delay().as_millis() as u64).collect();
        for (d, cap) in caps.iter().zip([1000, 2000, 4000, 8000, 8000, 8000]) {
            assert!(*d >= cap / 2 && *d <= cap, "{caps:?}");
        }
        assert!(b.attempt > 0);
        assert!(b.next_delay_within(Duration::from_secs(2)) <= Duration::from_secs(2));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn odd_and_zero_steps() {
        assert_eq!(
            delay(Duration::ZERO, Duration::from_secs(1), 3),
            Duration::ZERO
        );
        let d = delay(Duration::from_millis(1), Duration::from_millis(1), 0);
        assert!(d <= Duration::from_millis(1));
    }
}
