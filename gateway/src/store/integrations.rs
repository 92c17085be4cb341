//! Link health of vendor-cloud integrations: per integration and UTC day,
//! how many pushes were accepted, how many measurements they held, how many
//! pushes were refused and why (the last reason), and when.
//!
//! Counts per day rather than a row per push: a cloud posting every few
//! seconds must not grow the store, and "deliveries per day" is what an
//! operator compares when a vendor link degrades. Nothing clinical is kept
//! here (the pushes themselves are readings or quarantine entries).

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::StoreError;

/// What became of one push.
#[derive(Debug, Clone, Copy)]
pub enum Push<'a> {
    /// Committed, with this many measurements (of which some quarantined).
    Delivered {
        /// Measurements in the push.
        measurements: i64,
        /// Of which quarantined.
        quarantined: i64,
    },
    /// Refused whole (nothing stored), with a reason code.
    Refused(&'a str),
}

/// Counts one push at `at`.
pub fn record(
    conn: &Connection,
    name: &str,
    at: DateTime<Utc>,
    push: Push<'_>,
) -> Result<(), StoreError> {
    let day = at.format("%Y-%m-%d").to_string();
    let ms = at.timestamp_millis();
    match push {
        Push::Delivered {
            measurements,
            quarantined,
        } => conn.execute(
            "INSERT INTO integration_days (name, day, deliveries, measurements, quarantined, last_delivery_at)
             VALUES (?1, ?2, 1, ?3, ?4, ?5)
             ON CONFLICT (name, day) DO UPDATE SET deliveries = deliveries + 1,
               measurements = measurements + ?3, quarantined = quarantined + ?4,
               last_delivery_at = MAX(COALESCE(last_delivery_at, 0), ?5)",
            params![name, day, measurements, quarantined, ms],
        )?,
        Push::Refused(reason) => conn.execute(
            "INSERT INTO integration_days (name, day, refused, last_refused_at, last_refusal)
             VALUES (?1, ?2, 1, ?3, ?4)
             ON CONFLICT (name, day) DO UPDATE SET refused = refused + 1,
               last_refused_at = ?3, last_refusal = ?4",
            params![name, day, ms, reason],
        )?,
    };
    Ok(())
}

/// One day of one integration.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Day {
    /// UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Pushes accepted.
    pub deliveries: i64,
    /// Measurements in them.
    pub measurements: i64,
    /// Of which quarantined.
    pub quarantined: i64,
    /// Pushes refused.
    pub refused: i64,
}

/// An integration's health as stored.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Health {
    /// Last accepted push (Unix ms).
    pub last_delivery_at: Option<i64>,
    /// Last refused push (Unix ms).
    pub last_refused_at: Option<i64>,
    /// Reason code of the last refusal.
    pub last_refusal: Option<String>,
    /// The most recent days with traffic, newest first.
    pub days: Vec<Day>,
}

/// Health of `name` with up to `days` days of counts.
pub fn health(conn: &Connection, name: &str, days: usize) -> Result<Health, StoreError> {
    let last_delivery_at: Option<i64> = conn.query_row(
        "SELECT MAX(last_delivery_at) FROM integration_days WHERE name = ?1",
        [name],
        |r| r.get(0),
    )?;
    let refused: Option<(Option<i64>, Option<String>)> = conn
        .query_row(
            "SELECT last_refused_at, last_refusal FROM integration_days
             WHERE name = ?1 AND last_refused_at IS NOT NULL ORDER BY last_refused_at DESC LIMIT 1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (last_refused_at, last_refusal) = refused.unwrap_or_default();
    let mut q = conn.prepare_cached(
        "SELECT day, deliveries, measurements, quarantined, refused FROM integration_days
         WHERE name = ?1 ORDER BY day DESC LIMIT ?2",
    )?;
    let days = q
        .query_map(params![name, days as i64], |r| {
            Ok(Day {
                day: r.get(0)?,
                deliveries: r.get(1)?,
                measurements: r.get(2)?,
                quarantined: r.get(3)?,
                refused: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Health {
        last_delivery_at,
        last_refused_at,
        last_refusal,
        days,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_day_and_last_times() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("s.db")).unwrap();
        let c = store.conn();
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let ok = Push::Delivered {
            measurements: 2,
            quarantined: 1,
        };
        record(c, "tenovi", t("2026-01-30T23:59:00Z"), ok).unwrap();
        record(c, "tenovi", t("2026-01-31T08:00:00Z"), ok).unwrap();
        record(c, "tenovi", t("2026-01-31T09:00:00Z"), ok).unwrap();
        record(
            c,
            "tenovi",
            t("2026-01-31T10:00:00Z"),
            Push::Refused("unauthorized"),
        )
        .unwrap();
        record(c, "telli", t("2026-01-31T10:00:00Z"), ok).unwrap();
        let h = health(c, "tenovi", 7).unwrap();
        assert_eq!(
            h.last_delivery_at,
            Some(t("2026-01-31T09:00:00Z").timestamp_millis())
        );
        assert_eq!(h.last_refusal.as_deref(), Some("unauthorized"));
        assert_eq!(h.days.len(), 2);
        assert_eq!(
            h.days[0],
            Day {
                day: "2026-01-31".into(),
                deliveries: 2,
                measurements: 4,
                quarantined: 2,
                refused: 1
            }
        );
        assert!(health(c, "nobody", 7).unwrap().days.is_empty());
    }
}
