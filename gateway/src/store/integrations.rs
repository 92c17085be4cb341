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

use super::outbox::{self, Event, EventType, OperationalData, EVENT_SCHEMA};
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

/// Last accepted push of `name` (Unix ms).
pub fn last_delivery(conn: &Connection, name: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn.query_row(
        "SELECT MAX(last_delivery_at) FROM integration_days WHERE name = ?1",
        [name],
        |r| r.get(0),
    )?)
}

fn t(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// What [`watch`] did for one integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing to say.
    None,
    /// `integration.stale` written.
    Stale,
    /// `integration.back` written.
    Back,
}

/// Looks at `name` at `now` (ms), in one transaction: an integration that
/// delivered once but not for `stale_after_ms` raises `integration.stale`
/// once; a stale one that delivered since raises `integration.back` once.
/// One that never delivered is not stale (it is being set up).
pub fn watch(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    stale_after_ms: i64,
    now: i64,
) -> Result<Change, StoreError> {
    let Some(last) = last_delivery(tx, name)? else {
        return Ok(Change::None);
    };
    let (stale, since, events): (bool, Option<i64>, i64) = tx
        .query_row(
            "SELECT stale, stale_since, events FROM integration_state WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?
        .unwrap_or((false, None, 0));
    let n = events + 1;
    let (kind, stale_now, message, detail, severity) =
        if !stale && now.saturating_sub(last) > stale_after_ms {
            (
                EventType::IntegrationStale,
                true,
                format!(
                    "integration {name} has delivered nothing for more than {} s",
                    stale_after_ms / 1000
                ),
                serde_json::json!({
                    "integration": name,
                    "last_delivery_at": outbox::rfc3339(t(last)),
                    "stale_after_seconds": stale_after_ms / 1000,
                }),
                "warning",
            )
        } else if stale && since.is_some_and(|s| last > s) {
            (
                EventType::IntegrationBack,
                false,
                format!("integration {name} delivers again"),
                serde_json::json!({
                    "integration": name,
                    "stale_since": since.map(|s| outbox::rfc3339(t(s))),
                    "delivered_at": outbox::rfc3339(t(last)),
                }),
                "info",
            )
        } else {
            return Ok(Change::None);
        };
    tx.execute(
        "INSERT INTO integration_state (name, stale, stale_since, events) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE SET stale = ?2, stale_since = ?3, events = ?4",
        params![name, stale_now, stale_now.then_some(last), n],
    )?;
    let event = Event {
        schema: EVENT_SCHEMA.into(),
        id: outbox::event_id(&[kind.name(), name, &n.to_string()]),
        event_type: kind,
        timestamp: t(now),
        data: OperationalData {
            endpoint_id: None,
            message,
            detail,
        },
    };
    outbox::enqueue(tx, &event, None, None, Some(severity))?;
    Ok(if stale_now {
        Change::Stale
    } else {
        Change::Back
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

    #[test]
    fn stale_once_and_back_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = crate::store::Store::open(&dir.path().join("s.db")).unwrap();
        let hour = 3_600_000;
        let at = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap();
        let ok = Push::Delivered {
            measurements: 1,
            quarantined: 0,
        };
        let look = |store: &mut crate::store::Store, now: i64| {
            let tx = store.transaction().unwrap();
            let c = watch(&tx, "telli", 24 * hour, now).unwrap();
            tx.commit().unwrap();
            c
        };
        let t0 = 1_790_000_000_000;
        assert_eq!(
            look(&mut store, t0),
            Change::None,
            "never delivered: not stale"
        );
        record(store.conn(), "telli", at(t0), ok).unwrap();
        assert_eq!(look(&mut store, t0 + 23 * hour), Change::None);
        assert_eq!(look(&mut store, t0 + 25 * hour), Change::Stale);
        assert_eq!(look(&mut store, t0 + 26 * hour), Change::None, "once");
        record(store.conn(), "telli", at(t0 + 27 * hour), ok).unwrap();
        assert_eq!(look(&mut store, t0 + 27 * hour + 1), Change::Back);
        assert_eq!(look(&mut store, t0 + 28 * hour), Change::None);
        assert_eq!(look(&mut store, t0 + 52 * hour), Change::Stale, "again");
        let n: i64 = store
            .conn()
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE event_type LIKE 'integration.%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 3);
    }
}
