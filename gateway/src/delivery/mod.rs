//! Delivery: alerts reach care managers as signed webhooks.
//!
//! ```text
//! outbox ──► fanout ──► deliveries ──► dispatch (per-endpoint workers) ──► HTTPS POST
//!  (rules,    route by    one row per     retry policy, circuit breaker,     Standard Webhooks
//!   API)      filter      (event, endpoint) attempt log, dead letters        signatures
//! ```
//!
//! Everything is driven from the store: the fan-out follows the outbox after
//! the durable cursor `delivery.fanout` and inserts deliveries in the same
//! transaction as the cursor; a delivery is `pending` until an attempt's
//! outcome is committed, so an attempt in flight at a crash is simply
//! attempted again, with the same `webhook-id`.

pub mod endpoints;
pub mod route;
pub mod signing;
