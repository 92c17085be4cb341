//! Inputs of missing-data evaluation: the gateway's own downtime and
//! whether a patient's device is known offline.
//!
//! **Downtime** comes from the `runs` table: every run records its start
//! and a heartbeat every 15 s (and its clean stop). The gap between the end
//! of one run (its stop, or its last heartbeat after a crash) and the start
//! of the next is time the gateway was not watching; the engine subtracts
//! it from a patient's silence. So an outage never raises a false "no data"
//! alert (readings queued at the broker arrive after restart), and never
//! hides a real one: the silence outside the outage keeps counting, the
//! alert is only delayed by the outage.
//!
//! **Device offline**: a patient with a device the gateway knows to be
//! disconnected (`devices.connection = 'disconnected'`, reported by
//! connected sources such as BLE) or with a flat battery (`battery_pct = 0`)
//! has missed-readings transitions recorded but not notified: the device
//! problem is the actionable fact, and paging the care team for the silence
//! it causes is noise. Once the device is back, the next evaluation
//! notifies if the silence persists. MQTT devices have no connection state
//! (`NULL`) and are never considered offline.

use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::Connection;

use crate::store::alerts::ms;
use crate::store::{patients, registry, runs, StoreError};

/// An interval `(from, to)` during which the gateway was down.
pub type Downtime = (DateTime<Utc>, DateTime<Utc>);

/// How far back downtime matters: the longest rule window (90 days).
pub const DOWNTIME_HORIZON: TimeDelta = TimeDelta::days(91);

/// Intervals `(from, to)` during which the gateway was down, within
/// [`DOWNTIME_HORIZON`] of `now`. Reads only the runs of that period.
pub fn gateway_downtime(
    conn: &Connection,
    now: DateTime<Utc>,
) -> Result<Vec<Downtime>, StoreError> {
    let since = (now - DOWNTIME_HORIZON).timestamp_millis();
    let runs = runs::runs_since(conn, since)?;
    let mut out = Vec::new();
    for pair in runs.windows(2) {
        let (heartbeat, stopped) = (pair[0].heartbeat_at, pair[0].stopped_at);
        let next_start = pair[1].started_at;
        let end = stopped.unwrap_or(heartbeat).max(heartbeat);
        if let (Some(a), Some(b)) = (ms(Some(end)), ms(Some(next_start))) {
            if a < b {
                out.push((a, b));
            }
        }
    }
    Ok(out)
}

/// Whether one of the patient's devices is known offline (disconnected,
/// waiting to be paired, or battery empty).
pub fn device_offline(conn: &Connection, patient_id: &str) -> Result<bool, StoreError> {
    registry::patient_device_offline(conn, patient_id)
}

/// The patients the timer watches, after `after` in id order: everyone
/// enrolled, and everyone ever evaluated (a device assigned to a patient
/// nobody enrolled still gets the `always` packs, adherence included).
pub fn watched_patients(
    conn: &Connection,
    after: &str,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    patients::enrolled_or_evaluated(conn, after, limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use chrono::TimeZone;
    use rusqlite::params;

    #[test]
    fn downtime_is_the_gap_between_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let h = 3_600_000i64;
        let base = 1_800_000_000_000i64;
        // Run 1 stopped cleanly, run 2 crashed (last heartbeat), run 3 is now.
        for (s, hb, st) in [
            (base, base + h, Some(base + h)),
            (base + 2 * h, base + 3 * h, None),
            (base + 5 * h, base + 6 * h, None),
        ] {
            store
                .conn()
                .execute(
                    "INSERT INTO runs(started_at, heartbeat_at, stopped_at) VALUES (?1, ?2, ?3)",
                    params![s, hb, st],
                )
                .unwrap();
        }
        let t = |ms: i64| Utc.timestamp_millis_opt(ms).unwrap();
        let d = gateway_downtime(store.conn(), t(base + 6 * h)).unwrap();
        assert_eq!(
            d,
            vec![
                (t(base + h), t(base + 2 * h)),
                (t(base + 3 * h), t(base + 5 * h))
            ]
        );
    }
}
