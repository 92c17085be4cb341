//! The care loop: what happens after an alert, until someone has followed
//! up and the program can show it.
//!
//! Alerts ([`crate::rules`]) say that a patient needs attention; this module
//! makes sure somebody gives it, in time, and keeps the record:
//!
//! - [`config`]: `[care]`, the care teams' time zones and working calendars
//!   and where the follow-up policy lives;
//! - [`risk`]: every enrolled patient's risk tier (high, rising, stable,
//!   unknown) from the tier rules, with reasons, history and `risk.changed`
//!   events;
//! - [`worklist`]: a care team's patients ranked by who needs attention
//!   now, each row saying why.
//!
//! Everything here is driven from the store, like alerts: a task, an
//! escalation or a tier change is written in one transaction with the
//! outbox event that reports it, so `kill -9` at any point loses nothing
//! and repeats nothing.

pub mod config;
pub mod risk;
pub mod worklist;

pub use config::{CareConfig, TeamConfig};
