//! Clinician actions on an alert: acknowledge (optionally snoozing it) and
//! resolve by hand. Used by the CLI and the HTTP API.
//!
//! Each action writes, in one transaction, the `alerts` row, an
//! `alert_history` row with the actor, the engine's `alert_state` (so the
//! evaluator honours the acknowledgement and the snooze: they are
//! server-side, not a client's memory) and an outbox event
//! (`alert.acknowledged`, `alert.resolved`). Human actions are always
//! notified. The `*_in` variants take the caller's transaction (the API
//! writes its audit row in the same one); the others open and commit their
//! own.

use alerting_rules::{AckError, AlertState};
use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::Transaction;

use super::persist::{emit, history_len, insert_history, not_before_history};
use crate::store::alerts::{self, AlertRecord};
use crate::store::outbox::EventType;
use crate::store::{patients, StoreError};

/// Why an action was refused.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// No alert with this id.
    #[error("no alert `{0}`")]
    NotFound(String),
    /// The alert is already resolved.
    #[error("alert `{0}` is already resolved")]
    AlreadyResolved(String),
    /// `by` is empty.
    #[error("say who acts (`by` must not be empty)")]
    NoActor,
    /// A negative snooze.
    #[error("snooze must not be negative")]
    NegativeSnooze,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for LifecycleError {
    fn from(e: rusqlite::Error) -> Self {
        LifecycleError::Store(StoreError::Sqlite(e))
    }
}

fn open_alert(
    tx: &Transaction<'_>,
    alert_id: &str,
    by: &str,
) -> Result<AlertRecord, LifecycleError> {
    if by.trim().is_empty() {
        return Err(LifecycleError::NoActor);
    }
    let alert =
        alerts::get(tx, alert_id)?.ok_or_else(|| LifecycleError::NotFound(alert_id.to_string()))?;
    if alert.status == "resolved" {
        return Err(LifecycleError::AlreadyResolved(alert_id.to_string()));
    }
    Ok(alert)
}

fn load_state(tx: &Transaction<'_>, alert: &AlertRecord) -> Result<Option<AlertState>, StoreError> {
    let json = alerts::state(tx, &alert.patient_id, &alert.rule_id)?;
    Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
}

fn save_state(
    tx: &Transaction<'_>,
    alert: &AlertRecord,
    state: &AlertState,
    open: bool,
    now: i64,
) -> Result<(), StoreError> {
    let json = serde_json::to_string(state).map_err(|e| StoreError::Encode(e.to_string()))?;
    alerts::save_state(
        tx,
        &alert.patient_id,
        &alert.rule_id,
        &json,
        open.then_some(alert.alert_id.as_str()),
        now,
    )
}

/// Acknowledges an open alert inside `tx`, optionally snoozing its
/// notifications (re-notifications, and a re-fire after a resolve) until
/// `now + snooze`. Acknowledging again keeps the first acknowledger and
/// extends the snooze. Returns the alert as it now stands.
pub fn acknowledge_in(
    tx: &Transaction<'_>,
    alert_id: &str,
    by: &str,
    note: Option<&str>,
    snooze: Option<TimeDelta>,
    now: DateTime<Utc>,
) -> Result<AlertRecord, LifecycleError> {
    let alert = open_alert(tx, alert_id, by)?;
    if snooze.is_some_and(|s| s < TimeDelta::zero()) {
        return Err(LifecycleError::NegativeSnooze);
    }
    // Times within one alert never go back (the rules may run on the data
    // clock, or the wall clock may have been stepped back).
    let now = not_before_history(tx, alert_id, now)?;
    let at = now.timestamp_millis();
    // The engine's state: it carries the snooze the evaluator honours.
    let mut snooze_until = alert.snooze_until;
    if let Some(state) = load_state(tx, &alert)? {
        match alerting_rules::acknowledge(&state, by, now, snooze) {
            Ok(next) => {
                snooze_until = next.snooze_until;
                save_state(tx, &alert, &next, true, at)?;
            }
            Err(AckError::NegativeSnooze) => return Err(LifecycleError::NegativeSnooze),
            // The state has no open alert (it was lost): the row still gets
            // the acknowledgement.
            Err(AckError::NotOpen(_)) => {}
        }
    } else if let Some(s) = snooze {
        snooze_until = Some(now + s);
    }
    let first = alert.status != "acknowledged";
    alerts::acknowledge(
        tx,
        alert_id,
        &alerts::Acknowledgement {
            by,
            at,
            note,
            first,
            snooze_until: snooze_until.map(|s| s.timestamp_millis()),
        },
    )?;
    let n = history_len(tx, alert_id)?;
    let detail = serde_json::json!({ "note": note, "snooze_until": snooze_until });
    insert_history(tx, alert_id, at, "acknowledged", true, Some(by), &detail)?;
    let alert =
        alerts::get(tx, alert_id)?.ok_or_else(|| LifecycleError::NotFound(alert_id.into()))?;
    let routing = patients::get(tx, &alert.patient_id)?;
    emit(tx, &alert, &routing, EventType::AlertAcknowledged, now, n)?;
    Ok(alert)
}

/// Resolves an open alert by hand inside `tx`. The engine's state closes
/// too: if the condition still holds, the next evaluation opens a new alert
/// (notified unless snoozed).
pub fn resolve_in(
    tx: &Transaction<'_>,
    alert_id: &str,
    by: &str,
    note: Option<&str>,
    now: DateTime<Utc>,
) -> Result<AlertRecord, LifecycleError> {
    let alert = open_alert(tx, alert_id, by)?;
    let now = not_before_history(tx, alert_id, now)?;
    let at = now.timestamp_millis();
    if let Some(mut state) = load_state(tx, &alert)? {
        state.open = None;
        state.clear_streak = 0;
        save_state(tx, &alert, &state, false, at)?;
    }
    alerts::resolve_by(tx, alert_id, at, by)?;
    let n = history_len(tx, alert_id)?;
    let detail = serde_json::json!({ "note": note, "manual": true });
    insert_history(tx, alert_id, at, "resolved", true, Some(by), &detail)?;
    let alert =
        alerts::get(tx, alert_id)?.ok_or_else(|| LifecycleError::NotFound(alert_id.into()))?;
    let routing = patients::get(tx, &alert.patient_id)?;
    emit(tx, &alert, &routing, EventType::AlertResolved, now, n)?;
    Ok(alert)
}

/// [`acknowledge_in`] in its own transaction, at the current time.
#[cfg(test)]
pub fn acknowledge(
    store: &mut crate::store::Store,
    alert_id: &str,
    by: &str,
    note: Option<&str>,
    snooze: Option<TimeDelta>,
) -> Result<AlertRecord, LifecycleError> {
    let tx = store.transaction()?;
    let a = acknowledge_in(&tx, alert_id, by, note, snooze, Utc::now())?;
    tx.commit()?;
    Ok(a)
}

/// [`resolve_in`] in its own transaction, at the current time.
#[cfg(test)]
pub fn resolve(
    store: &mut crate::store::Store,
    alert_id: &str,
    by: &str,
    note: Option<&str>,
) -> Result<AlertRecord, LifecycleError> {
    let tx = store.transaction()?;
    let a = resolve_in(&tx, alert_id, by, note, Utc::now())?;
    tx.commit()?;
    Ok(a)
}
