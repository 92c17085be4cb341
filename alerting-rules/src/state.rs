//! Persistent alert state per (patient, rule), and acknowledgement.
//!
//! The engine is a pure function `(state, input) -> (transition, state')`;
//! the gateway stores the new state and any notification in its outbox in
//! one SQLite transaction, so a crash can neither lose an alert nor send
//! one twice. The state is small and serde-serializable (JSON column).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::model::Evidence;
use crate::overrides::EffectiveLimit;
use crate::rule::Severity;

/// Whether someone has taken the open alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// Open, nobody acknowledged it yet.
    Firing,
    /// Open and acknowledged.
    Acknowledged,
}

/// The open alert of a (patient, rule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAlert {
    /// Firing or acknowledged.
    pub status: AlertStatus,
    /// When it fired (processing time).
    pub since: DateTime<Utc>,
    /// Measured time of the reading that fired it.
    pub measured_at: Option<DateTime<Utc>>,
    /// Last time a notification went out for it.
    pub last_notified: Option<DateTime<Utc>>,
    /// Badness at the last notification (how far past the limit): an update
    /// is only material when the alert gets worse than this.
    pub peak_score: f64,
    /// Severity when it fired.
    pub severity: Severity,
    /// Evidence at the last notification.
    pub evidence: Vec<Evidence>,
    /// Effective limits at the last notification.
    pub limits: BTreeMap<String, EffectiveLimit>,
    /// Rendered message at the last notification.
    pub message: String,
    /// Who acknowledged it, and when.
    pub acknowledged_by: Option<String>,
    /// When it was acknowledged.
    pub acknowledged_at: Option<DateTime<Utc>>,
}

/// Everything the engine remembers about a (patient, rule). Kept after the
/// alert resolves: snooze and flap history must survive a resolve, or a
/// flapping rule would look new every time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    /// Rule id.
    pub rule_id: String,
    /// Version of the rule that last evaluated it.
    pub rule_version: u32,
    /// The open alert, if any.
    pub open: Option<OpenAlert>,
    /// Consecutive evaluations in which the clear test held.
    pub clear_streak: u32,
    /// Notifications are suppressed until then (set by acknowledge).
    pub snooze_until: Option<DateTime<Utc>>,
    /// Times of recent fire/resolve transitions, within the flap window.
    pub flap_changes: Vec<DateTime<Utc>>,
    /// Whether the alert is flapping (holds its firing state).
    pub flapping: bool,
}

impl AlertState {
    /// Fresh state for a rule that has never fired for the patient.
    pub fn new(rule_id: &str, rule_version: u32) -> Self {
        AlertState {
            rule_id: rule_id.to_string(),
            rule_version,
            ..Default::default()
        }
    }

    /// Whether notifications are suppressed at `now`.
    pub fn is_snoozed(&self, now: DateTime<Utc>) -> bool {
        self.snooze_until.is_some_and(|s| now < s)
    }
}

/// Why an acknowledgement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// There is nothing to acknowledge.
    #[error("rule `{0}` has no open alert for this patient")]
    NotOpen(String),
    /// A negative snooze.
    #[error("snooze must not be negative")]
    NegativeSnooze,
}

/// Acknowledges the open alert and optionally snoozes it: re-notifications
/// (and a re-fire after a resolve) are suppressed until `at + snooze`. The
/// gateway persists the returned state; acknowledging twice keeps the first
/// acknowledger and extends the snooze.
pub fn acknowledge(
    state: &AlertState,
    by: &str,
    at: DateTime<Utc>,
    snooze: Option<TimeDelta>,
) -> Result<AlertState, AckError> {
    let mut next = state.clone();
    let open = next
        .open
        .as_mut()
        .ok_or_else(|| AckError::NotOpen(state.rule_id.clone()))?;
    if snooze.is_some_and(|s| s < TimeDelta::zero()) {
        return Err(AckError::NegativeSnooze);
    }
    if open.status != AlertStatus::Acknowledged {
        open.status = AlertStatus::Acknowledged;
        open.acknowledged_by = Some(by.to_string());
        open.acknowledged_at = Some(at);
    }
    if let Some(s) = snooze {
        let until = at + s;
        next.snooze_until = Some(next.snooze_until.map_or(until, |u| u.max(until)));
    }
    Ok(next)
}
