//! Webhook endpoints, their deliveries and delivery attempts as stored.
//!
//! The delivery component decides what to send where and when (routing,
//! signing, the SSRF guard, back-off); the rows it reads and writes are
//! owned here, as typed functions over a `&Connection` (a `Transaction`
//! derefs to one) so that callers choose the transaction.

use rusqlite::{Connection, OptionalExtension};

use super::StoreError;

/// The status of one delivery (`pending`, `failed`, `dead`, `delivered`),
/// `None` when there is no such delivery.
pub fn delivery_status(conn: &Connection, delivery_id: i64) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT status FROM deliveries WHERE delivery_id = ?1",
            [delivery_id],
            |r| r.get(0),
        )
        .optional()?)
}
