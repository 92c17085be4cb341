//! Accelerated time: maps simulated instants to offsets from the start of a
//! run in wall time, so a transport knows when to publish each emission (a
//! week in a minute). Measured-at timestamps are never touched: only the
//! moment of sending is compressed.
//!
//! The mapping is pure (no wall clock inside): a transport takes its own
//! `Instant` at the start of the run and sleeps until
//! `t0 + schedule.wall_offset(send_at)`, which keeps tests free of real time.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// A speed factor that is not a positive finite number.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("speed factor must be a positive finite number, got {0}")]
pub struct BadSpeed(pub f64);

/// Linear map from simulated time to wall-clock offsets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    sim_start: DateTime<Utc>,
    speed: f64,
}

impl Schedule {
    /// `speed` simulated seconds pass per wall second (1.0 = real time,
    /// 10 080 = a week in a minute).
    pub fn new(sim_start: DateTime<Utc>, speed: f64) -> Result<Schedule, BadSpeed> {
        if speed.is_finite() && speed > 0.0 {
            Ok(Schedule { sim_start, speed })
        } else {
            Err(BadSpeed(speed))
        }
    }

    /// Real time (speed 1).
    pub fn real_time(sim_start: DateTime<Utc>) -> Schedule {
        Schedule {
            sim_start,
            speed: 1.0,
        }
    }

    /// The schedule that plays `sim_span` of simulated time in `wall` of
    /// wall time (`compress(start, 7 days, 2 min)`).
    pub fn compress(
        sim_start: DateTime<Utc>,
        sim_span: TimeDelta,
        wall: Duration,
    ) -> Result<Schedule, BadSpeed> {
        let sim_s = sim_span.num_milliseconds() as f64 / 1000.0;
        Schedule::new(sim_start, sim_s / wall.as_secs_f64())
    }

    /// Simulated start.
    pub fn sim_start(&self) -> DateTime<Utc> {
        self.sim_start
    }

    /// Simulated seconds per wall second.
    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// Wall-time offset from the run's start at which simulated instant
    /// `sim` is reached. Instants before the start map to zero (send at
    /// once), so the map is monotonic and never negative.
    pub fn wall_offset(&self, sim: DateTime<Utc>) -> Duration {
        let Some(nanos) = (sim - self.sim_start).num_nanoseconds() else {
            // Beyond ±292 years: saturate rather than overflow.
            return if sim > self.sim_start {
                Duration::MAX
            } else {
                Duration::ZERO
            };
        };
        if nanos <= 0 {
            return Duration::ZERO;
        }
        // Integer nanoseconds divided by speed: exact enough (sub-ns error)
        // and monotonic because the division is by a positive constant.
        Duration::try_from_secs_f64(nanos as f64 / 1e9 / self.speed).unwrap_or(Duration::MAX)
    }

    /// The simulated instant reached `wall` after the run's start.
    pub fn sim_at(&self, wall: Duration) -> DateTime<Utc> {
        let sim_ns = wall.as_secs_f64() * self.speed * 1e9;
        let delta = if sim_ns >= i64::MAX as f64 {
            TimeDelta::MAX
        } else {
            TimeDelta::nanoseconds(sim_ns.round() as i64)
        };
        self.sim_start
            .checked_add_signed(delta)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap()
    }

    #[test]
    fn a_week_in_a_minute() {
        let s = Schedule::compress(t0(), TimeDelta::days(7), Duration::from_secs(60)).unwrap();
        assert!((s.speed() - 10_080.0).abs() < 1e-9);
        let w = s.wall_offset(t0() + TimeDelta::days(7));
        assert!((w.as_secs_f64() - 60.0).abs() < 1e-6, "{w:?}");
        let one_day = s.wall_offset(t0() + TimeDelta::days(1));
        assert!((one_day.as_secs_f64() - 60.0 / 7.0).abs() < 1e-6);
        let back = s.sim_at(Duration::from_secs(30));
        assert!(
            (back - (t0() + TimeDelta::hours(84)))
                .num_milliseconds()
                .abs()
                <= 1
        );
    }

    #[test]
    fn monotonic_and_clamped() {
        let s = Schedule::new(t0(), 5_040.0).unwrap();
        assert_eq!(s.wall_offset(t0() - TimeDelta::hours(1)), Duration::ZERO);
        let mut prev = Duration::ZERO;
        for m in (0..20_000).step_by(7) {
            let w = s.wall_offset(t0() + TimeDelta::minutes(m));
            assert!(w >= prev);
            prev = w;
        }
    }

    #[test]
    fn rejects_bad_speeds() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Schedule::new(t0(), bad).is_err());
        }
        assert!(Schedule::compress(t0(), TimeDelta::days(1), Duration::ZERO).is_err());
    }
}
