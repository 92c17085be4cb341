//! The care loop: what happens after an alert, until someone has followed
//! up and the program can show it.
//!
//! Alerts ([`crate::rules`]) say that a patient needs attention; this module
//! makes sure somebody gives it, in time, and keeps the record:
//!
//! - [`config`]: `[care]`, the care teams' time zones and working calendars
//!   and where the follow-up policy lives;
//! - [`policy`]: the follow-up policy file beside the rule packs: which
//!   alerts open tasks, their deadlines, the escalation tiers;
//! - [`calendar`]: deadlines in working time, DST-correct;
//! - [`tasks`]: follow-up tasks, opened by notified alerts (in the rule
//!   evaluator's transaction), claimed and completed by care managers;
//! - [`escalation`]: the stage that notices missed deadlines and escalates;
//! - [`time_log`]: the care-time log (minutes per patient, append-only,
//!   corrections supersede);
//! - [`report`]: the RPM program report (data days per 30-day period,
//!   care minutes per month, the CPT codes they support).
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

pub mod calendar;
pub mod config;
pub mod escalation;
pub mod policy;
pub mod report;
pub mod risk;
pub mod tasks;
pub mod time_log;
pub mod worklist;

pub use config::{CareConfig, TeamConfig};
pub use policy::Policy;
pub use tasks::{FollowUp, TaskError, TaskOutcome};

#[cfg(test)]
mod tests;
