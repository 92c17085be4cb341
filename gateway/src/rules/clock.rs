//! The rule stage's "now": the wall clock, or the data.
//!
//! Missing-data rules judge silence: "no reading for 2 days" compares the
//! patient's newest reading with *now*. Live, now is the wall clock (minus
//! the gateway's own downtime, see [`super::missing`]). In an accelerated
//! replay (the demo, the scenario tests, a back-fill of recorded data) days
//! of readings arrive in seconds and the wall clock says nothing about how
//! long a patient was silent: every patient looks silent since the replayed
//! day, or none does. With `rules.clock = "data"` now is the newest
//! clock-corrected `measured_at` committed in the store: the replay's own
//! time, carried forward by everyone else's readings.
//!
//! The data clock never goes backwards (a reading measured earlier than
//! one already seen does not move it), and reads only the readings
//! committed since it last looked (`seq` is the commit order), so it costs
//! one scan of the store at start and an index range after that. After a
//! restart it resumes from the newest reading in the store. Gateway
//! downtime is meaningless on it (the replay's time does not pass while the
//! gateway is down), so it is ignored.

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use super::config::RulesClock;
use crate::store::alerts::ms;
use crate::store::StoreError;

/// Where the evaluator takes "now" from.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The wall clock (live monitoring).
    #[default]
    Wall,
    /// The newest measured-at committed (replays, demos, tests).
    Data(DataClock),
}

impl From<RulesClock> for Clock {
    fn from(c: RulesClock) -> Self {
        match c {
            RulesClock::Wall => Clock::Wall,
            RulesClock::Data => Clock::Data(DataClock::default()),
        }
    }
}

impl Clock {
    /// Now, or `None` when the data clock has not seen a reading yet
    /// (nothing to judge: nobody can have been silent in no time).
    pub fn now(&mut self, conn: &Connection) -> Result<Option<DateTime<Utc>>, StoreError> {
        match self {
            Clock::Wall => Ok(Some(Utc::now())),
            Clock::Data(d) => d.advance(conn),
        }
    }

    /// Whether the gateway's own downtime is subtracted from silences
    /// (only on the wall clock).
    pub fn counts_downtime(&self) -> bool {
        matches!(self, Clock::Wall)
    }

    /// Whether this is the data clock.
    pub fn is_data(&self) -> bool {
        matches!(self, Clock::Data(_))
    }
}

/// The newest measured-at committed, monotonic.
#[derive(Debug, Clone, Default)]
pub struct DataClock {
    /// Highest `seq` looked at.
    seen: i64,
    /// Newest measured-at seen (ms).
    latest: Option<i64>,
}

impl DataClock {
    /// Looks at the readings committed since the last call and returns the
    /// newest measured-at seen so far.
    pub fn advance(&mut self, conn: &Connection) -> Result<Option<DateTime<Utc>>, StoreError> {
        let (seq, newest) = crate::store::queries::newest_after(conn, self.seen)?;
        if let Some(s) = seq {
            self.seen = self.seen.max(s);
        }
        if let Some(n) = newest {
            self.latest = Some(self.latest.map_or(n, |l| l.max(n)));
        }
        Ok(self.current())
    }

    /// The newest measured-at seen so far, without looking at the store.
    pub fn current(&self) -> Option<DateTime<Utc>> {
        ms(self.latest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use chrono::{TimeDelta, TimeZone};
    use rusqlite::params;

    fn insert(store: &Store, n: i64, measured_at: DateTime<Utc>) {
        store
            .conn()
            .execute(
                "INSERT INTO readings (reading_id, group_id, patient_id, device_id, metric, value, unit, loinc,
                     measured_at, received_at, committed_at, source)
                 VALUES (?1, ?1, 'p1', 'dev', 'systolic', 120, 'mm[Hg]', '8480-6', ?2, ?2, ?2, 'mqtt')",
                params![format!("r{n}"), measured_at.timestamp_millis()],
            )
            .unwrap();
    }

    #[test]
    fn data_clock_follows_the_newest_reading_and_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let mut clock = Clock::from(RulesClock::Data);
        assert!(clock.is_data() && !clock.counts_downtime());
        assert_eq!(clock.now(store.conn()).unwrap(), None, "no data, no now");

        let t0 = Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0).unwrap();
        insert(&store, 1, t0);
        insert(&store, 2, t0 + TimeDelta::days(2));
        assert_eq!(
            clock.now(store.conn()).unwrap(),
            Some(t0 + TimeDelta::days(2))
        );
        // A back-filled reading (measured before the newest) commits later:
        // the clock stays where it was.
        insert(&store, 3, t0 + TimeDelta::days(1));
        assert_eq!(
            clock.now(store.conn()).unwrap(),
            Some(t0 + TimeDelta::days(2))
        );
        // Retention deleting everything does not move it back either.
        store.conn().execute("DELETE FROM readings", []).unwrap();
        assert_eq!(
            clock.now(store.conn()).unwrap(),
            Some(t0 + TimeDelta::days(2))
        );
        insert(&store, 4, t0 + TimeDelta::days(3));
        assert_eq!(
            clock.now(store.conn()).unwrap(),
            Some(t0 + TimeDelta::days(3))
        );

        // A restarted gateway resumes from the newest reading in the store.
        let mut again = Clock::from(RulesClock::Data);
        assert_eq!(
            again.now(store.conn()).unwrap(),
            Some(t0 + TimeDelta::days(3))
        );
    }

    #[test]
    fn wall_clock_is_the_time_of_day_and_counts_downtime() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let mut clock = Clock::from(RulesClock::Wall);
        assert!(clock.counts_downtime() && !clock.is_data());
        let before = Utc::now();
        let now = clock.now(store.conn()).unwrap().unwrap();
        assert!(now >= before && now <= Utc::now());
    }
}
