//! Sources: where readings come from. Each acknowledges to its device or
//! broker only after a durable commit.
//!
//! - [`mqtt`] appends each message as received to the store's inbox
//!   ([`crate::store::inbox`]) and sends the PUBACK once the append is
//!   committed; the normalize stage ([`crate::pipeline::inbox`]) makes
//!   readings of it later, on the writer's thread.
//! - [`ble`] runs each value through the shared
//!   [`crate::pipeline::Pipeline`] and submits the result to the store
//!   writer; the record sequence advances only after the commit.
//! - HTTPS pushes are the API's ingest route (`crate::api`), answered 2xx
//!   after the same pipeline and commit.

pub mod ble;
pub mod mqtt;
