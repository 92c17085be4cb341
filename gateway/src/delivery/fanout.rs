//! Fan-out: each outbox event becomes one `deliveries` row per enabled
//! endpoint whose filter matches, committed in one transaction with the
//! durable cursor `delivery.fanout`. A crash before the commit redoes the
//! batch; the unique (event, endpoint) key makes that harmless.

use rusqlite::Transaction;
use std::collections::BTreeSet;

use super::endpoints::{self, EndpointError};
use super::route::{matches, RouteInfo};
use crate::store::{cursor_in, now_ms, outbox, set_cursor, webhooks, Store};

/// The durable cursor over `outbox.seq`.
pub const CURSOR: &str = "delivery.fanout";

/// Fans out up to `batch` events. Returns the endpoints that got new
/// deliveries and how many were queued.
pub fn fanout(store: &mut Store, batch: usize) -> Result<(BTreeSet<String>, usize), EndpointError> {
    // A read first: the write lock is taken only when there is work, so
    // polling does not contend with the reading writer.
    let pending = outbox::has_events_after_cursor(store.conn(), CURSOR)?;
    if !pending {
        return Ok((BTreeSet::new(), 0));
    }
    let tx = store.transaction()?;
    let cursor = cursor_in(&tx, CURSOR)?.unwrap_or(0);
    let events = outbox::events_after(&tx, cursor, batch)?;
    let Some(last) = events.last().map(|e| e.seq) else {
        return Ok((BTreeSet::new(), 0));
    };
    let targets: Vec<_> = endpoints::list(&tx)?
        .into_iter()
        .filter(|e| e.enabled)
        .collect();
    let now = now_ms();
    let mut touched = BTreeSet::new();
    let mut queued = 0;
    for e in events {
        let info = route_info(
            &tx,
            &e.event_type,
            e.patient_id.as_deref(),
            e.severity,
            &e.payload,
        )?;
        for ep in &targets {
            if !matches(&ep.endpoint_id, &ep.filter, &info) {
                continue;
            }
            if webhooks::queue_delivery(&tx, e.seq, &ep.endpoint_id, now)? {
                queued += 1;
                touched.insert(ep.endpoint_id.clone());
            }
        }
    }
    set_cursor(&tx, CURSOR, last)?;
    tx.commit()?;
    Ok((touched, queued))
}

/// What routing needs: team and plans from `patients` (the event's own
/// copy when the patient is not in the table), the endpoint an operational
/// event is about.
fn route_info(
    tx: &Transaction<'_>,
    event_type: &str,
    patient_id: Option<&str>,
    severity: Option<String>,
    payload: &str,
) -> Result<RouteInfo, EndpointError> {
    let body: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    let data = &body["data"];
    let mut info = RouteInfo {
        event_type: event_type.to_string(),
        severity: severity.or_else(|| data["severity"].as_str().map(String::from)),
        care_team: data["care_team"].as_str().map(String::from),
        care_plans: data["care_plans"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        about_endpoint: data["endpoint_id"].as_str().map(String::from),
    };
    if let Some(p) = patient_id {
        if let Some(rec) = crate::store::patients::get(tx, p)? {
            info.care_team = rec.care_team;
            info.care_plans = rec.care_plans;
        }
    }
    Ok(info)
}
