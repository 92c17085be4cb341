//! Operational events: the dispatcher telling operators that delivery
//! itself is in trouble. They go through the same outbox (so they are
//! durable and signed like any event) and carry no PHI: an endpoint id, a
//! delivery id, an opaque event id, counts and statuses.
//!
//! They cannot loop: an operational event is never routed to the endpoint
//! it is about, a `delivery.failing` is raised once per outage (when the
//! breaker first opens), and a failed delivery *of an operational event*
//! raises nothing further.

use chrono::Utc;
use rusqlite::Transaction;

use crate::store::outbox::{enqueue, event_id, Event, EventType, OperationalData, EVENT_SCHEMA};
use crate::store::StoreError;

/// Writes an operational event in the caller's transaction. `id_parts`
/// identify the occurrence, so a redo after a crash is kept once.
pub fn raise(
    tx: &Transaction<'_>,
    kind: EventType,
    endpoint_id: &str,
    message: String,
    detail: serde_json::Value,
    id_parts: &[&str],
) -> Result<(), StoreError> {
    let mut parts = vec![kind.name(), endpoint_id];
    parts.extend_from_slice(id_parts);
    let ev = Event {
        schema: EVENT_SCHEMA.into(),
        id: event_id(&parts),
        event_type: kind,
        timestamp: Utc::now(),
        data: OperationalData {
            endpoint_id: Some(endpoint_id.to_string()),
            message,
            detail,
        },
    };
    enqueue(tx, &ev, None, None, None)?;
    tracing::warn!(
        endpoint = endpoint_id,
        event = kind.name(),
        "operational event raised"
    );
    Ok(())
}
