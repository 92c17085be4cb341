//! Gateway runs as the rules read them back: when the gateway was up.
//!
//! Each start adds a `runs` row that its heartbeat keeps current and a clean
//! stop closes (written by [`super::Store`]). Missing-data rules must not
//! take the gateway's own downtime for a patient's silence, so they read
//! the runs of a period and compute the gaps between them; the rows are
//! read here, the gaps are the rules' business.

use rusqlite::{params, Connection};

use super::StoreError;

/// One run of the gateway (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Started.
    pub started_at: i64,
    /// Last heartbeat.
    pub heartbeat_at: i64,
    /// Stopped cleanly (`None`: crashed, or still running).
    pub stopped_at: Option<i64>,
}

/// The runs from the last one started before `since` (ms) onwards, in order.
pub fn runs_since(conn: &Connection, since: i64) -> Result<Vec<Run>, StoreError> {
    let mut q = conn.prepare_cached(
        "SELECT started_at, heartbeat_at, stopped_at FROM runs
         WHERE run_id >= COALESCE((SELECT MAX(run_id) FROM runs WHERE started_at < ?1), 0)
         ORDER BY run_id",
    )?;
    let rows = q.query_map(params![since], |r| {
        Ok(Run {
            started_at: r.get(0)?,
            heartbeat_at: r.get(1)?,
            stopped_at: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
