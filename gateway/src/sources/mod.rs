//! Sources: where readings come from. Each source hands raw input to the
//! shared [`crate::pipeline::Pipeline`], submits the result to the store
//! writer, and acknowledges to its device or broker only after the commit.

pub mod ble;
pub mod mqtt;
