//! Persisting what the engine decided, inside the caller's transaction.
//!
//! For every transition: the new `alert_state`, the `alerts` row (insert on
//! fire, update, resolve), an `alert_history` row with the evidence, and —
//! only when the transition notifies — an outbox event. The caller commits
//! these together with the watermark and the cursor, so a crash leaves
//! either all of them or none.
//!
//! Ids are stable: an alert id derives from (patient, rule, trigger), where
//! the trigger is the measurement (`group_id`) that fired it; an event id
//! derives from (alert id, event type, position in the alert's history).
//! Re-running a batch after a crash therefore produces the same ids, and
//! the outbox's unique `event_id` would keep an event once even if a bug let
//! a batch run twice.

use std::collections::BTreeMap;

use alerting_rules::{AlertState, Evidence, Overrides, Patient, Transition, TransitionKind};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, Transaction};
use sha2::{Digest, Sha256};

use crate::store::alerts::{self, AlertContent, AlertRecord, NewAlert, NewHistory};
use crate::store::outbox::{
    self, AlertData, Event, EventType, EvidenceReading, RuleRef, EVENT_SCHEMA,
};
use crate::store::{patients, StoreError};

/// An alert transition as the stages after the rules see it (the care
/// loop opens, joins and closes follow-up tasks from it).
pub struct AlertChange<'a> {
    /// The alert as it now stands.
    pub alert: &'a AlertRecord,
    /// The patient's care plans.
    pub care_plans: &'a [String],
    /// The patient's care team.
    pub care_team: Option<&'a str>,
    /// The transition notified (fire or update).
    pub notified: bool,
    /// It resolved the alert (by itself: the evaluator's resolve).
    pub resolved: bool,
    /// When (the evaluation's clock).
    pub at: DateTime<Utc>,
}

/// Work an alert transition drives inside the evaluator's transaction,
/// handed to the evaluator at wiring (the rules know nothing of who does
/// it): a notified alert and its follow-up task commit together.
pub trait AlertHook: Send + Sync {
    /// Called for every notified or resolving transition.
    fn on_alert(&self, tx: &Transaction<'_>, change: &AlertChange<'_>) -> Result<(), StoreError>;
}

/// A patient as the evaluator holds it during a transaction.
#[derive(Clone)]
pub(crate) struct PatientCtx {
    /// The engine's view (plans, overrides, enrolment).
    pub patient: Patient,
    /// Care team, for event routing.
    pub care_team: Option<String>,
    /// States by rule id.
    pub states: BTreeMap<String, AlertState>,
    /// As stored: state JSON and open alert id, by rule id.
    stored: BTreeMap<String, (String, Option<String>)>,
    /// Newest measured time evaluated.
    pub watermark: Option<DateTime<Utc>>,
    stored_watermark: Option<DateTime<Utc>>,
    /// When the patient's last reading was taken in, on the rule clock
    /// (missing-data rules wait for this input to settle).
    pub input_at: Option<DateTime<Utc>>,
    stored_input_at: Option<DateTime<Utc>>,
    /// What else an alert transition drives in the same transaction (the
    /// care loop's follow-up tasks); `None`: nothing.
    pub follow_up: Option<std::sync::Arc<dyn AlertHook>>,
}

fn enc<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Encode(e.to_string()))
}

/// Loads a patient's record, states and watermark. A patient the store
/// does not know (a device assigned to an id nobody enrolled) is evaluated
/// with no care plans: with a plans file that is the `always` packs.
pub(crate) fn load_patient(conn: &Connection, patient_id: &str) -> Result<PatientCtx, StoreError> {
    let record = patients::get(conn, patient_id)?;
    let (care_plans, overrides, care_team, enrolled_at) = match record {
        Some(r) => {
            let overrides: Overrides = serde_json::from_value(r.overrides).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "stored overrides do not parse; using the defaults");
                Overrides::default()
            });
            (r.care_plans, overrides, r.care_team, Some(r.enrolled_at))
        }
        None => (Vec::new(), Overrides::default(), None, None),
    };
    let mut states = BTreeMap::new();
    let mut stored = BTreeMap::new();
    {
        for row in alerts::states(conn, patient_id)? {
            let (rule, json, alert_id) = (row.rule_id, row.state, row.alert_id);
            match serde_json::from_str::<AlertState>(&json) {
                Ok(s) => {
                    states.insert(rule.clone(), s);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "stored alert state does not parse; starting afresh");
                }
            }
            stored.insert(rule, (json, alert_id));
        }
    }
    let (watermark, input_at) = alerts::watermark(conn, patient_id)?;
    let watermark = alerts::ms(watermark);
    let input_at = alerts::ms(input_at);
    Ok(PatientCtx {
        patient: Patient {
            id: patient_id.to_string(),
            care_plans,
            overrides,
            enrolled_at,
        },
        care_team,
        states,
        stored,
        watermark,
        stored_watermark: watermark,
        input_at,
        stored_input_at: input_at,
        follow_up: None,
    })
}

/// Writes the watermark and the input time if they moved.
pub(crate) fn save_watermark(tx: &Transaction<'_>, ctx: &mut PatientCtx) -> Result<(), StoreError> {
    let Some(w) = ctx.watermark else {
        return Ok(());
    };
    if Some(w) != ctx.stored_watermark || ctx.input_at != ctx.stored_input_at {
        alerts::save_watermark(
            tx,
            &ctx.patient.id,
            w.timestamp_millis(),
            ctx.input_at.map(|t| t.timestamp_millis()),
        )?;
        ctx.stored_watermark = Some(w);
        ctx.stored_input_at = ctx.input_at;
    }
    Ok(())
}

/// The time of the alert's newest history row: a transition or an action
/// on it is never stamped earlier (times within one alert never go back,
/// whatever the clocks did).
pub(crate) fn not_before_history(
    conn: &Connection,
    alert_id: &str,
    at: DateTime<Utc>,
) -> Result<DateTime<Utc>, StoreError> {
    let last = alerts::last_history_at(conn, alert_id)?;
    Ok(alerts::ms(last).map_or(at, |l| l.max(at)))
}

/// An evidence reading as receivers get it: with unit and LOINC.
pub(crate) fn evidence(e: &[Evidence]) -> Vec<EvidenceReading> {
    e.iter()
        .map(|e| EvidenceReading {
            reading_id: e.reading_id.to_string(),
            metric: e.metric.name().to_string(),
            value: e.value,
            unit: e.metric.canonical_unit().to_string(),
            loinc: e.metric.loinc().to_string(),
            measured_at: e.measured_at,
        })
        .collect()
}

fn alert_id(patient: &str, rule: &str, trigger: &str, n: u32) -> String {
    let mut h = Sha256::new();
    for p in [patient, rule, trigger, &n.to_string()] {
        h.update(p.as_bytes());
        h.update([0x1f]);
    }
    format!("alt_{}", &hex::encode(h.finalize())[..24])
}

/// What one transition produced (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Applied {
    /// The transition kind.
    pub kind: TransitionKind,
    /// An outbox event was written.
    pub notified: bool,
}

/// Drops what [`apply`] will not read of `t`, given the state before it:
/// leaves, evidence and limits go only into an alert row or a history row,
/// and a change-nothing transition writes one only when it turns flapping
/// on or off. Most evaluations change nothing, and a batch holds its
/// transitions until it commits (up to 20 evidence readings for each rule
/// of each reading). Returns whether `t` now carries only the rule's next
/// state: [`apply`] then saves that state and writes nothing else.
pub(crate) fn shed(t: &mut Transition, prev: Option<&AlertState>) -> bool {
    let flapping_changes = prev.is_some_and(|s| s.flapping) != t.flapping;
    let state_only = t.kind == TransitionKind::NoChange && !flapping_changes;
    if state_only {
        t.leaves = Vec::new();
        t.evidence = Vec::new();
        t.limits = BTreeMap::new();
    }
    state_only
}

/// Persists one transition. `trigger` identifies what caused it (the
/// measurement's `group_id`, or `missing@<ms>` for the timer).
pub(crate) fn apply(
    tx: &Transaction<'_>,
    ctx: &mut PatientCtx,
    mut t: Transition,
    trigger: &str,
) -> Result<Applied, StoreError> {
    let rule = t.rule_id.clone();
    let prev_flapping = ctx.states.get(&rule).is_some_and(|s| s.flapping);
    let mut open_id = ctx.stored.get(&rule).and_then(|(_, a)| a.clone());
    if let (Some(id), false) = (&open_id, t.kind == TransitionKind::Fire) {
        // An acknowledgement (wall clock) or an earlier transition may be
        // stamped later than this evaluation's clock: never go back.
        t.at = not_before_history(tx, id, t.at)?;
    }
    let at = t.at.timestamp_millis();
    let mut event = None;
    let mut history_kind = None;
    match t.kind {
        TransitionKind::Fire => {
            let id = insert_alert(tx, &ctx.patient.id, &t, trigger)?;
            open_id = Some(id);
            history_kind = Some("fired");
            event = Some(EventType::AlertFired);
        }
        TransitionKind::Update => {
            let id = match open_id.clone() {
                Some(id) if alerts::get(tx, &id)?.is_some_and(|a| a.status != "resolved") => {
                    let (limits, evidence) = encoded(&t)?;
                    alerts::update(tx, &id, &content(&t, &limits, &evidence), at)?;
                    id
                }
                // The state says open but the row is gone (a manual
                // resolve raced an old state): open a fresh alert.
                _ => insert_alert(tx, &ctx.patient.id, &t, trigger)?,
            };
            open_id = Some(id);
            history_kind = Some("updated");
            event = Some(EventType::AlertUpdated);
        }
        TransitionKind::Resolve => {
            if let Some(id) = &open_id {
                alerts::resolve_by_rule(tx, id, at, t.flapping)?;
                history_kind = Some("resolved");
                event = Some(EventType::AlertResolved);
            }
        }
        TransitionKind::NoChange => {
            if let Some(id) = open_id.as_ref().filter(|_| prev_flapping != t.flapping) {
                alerts::set_flapping(tx, id, t.flapping, at)?;
                history_kind = Some("note");
            }
        }
    }
    let notified = t.notify && event.is_some();
    if let (Some(kind), Some(id)) = (history_kind, open_id.as_deref()) {
        // Built only for a history row: most evaluations change nothing.
        let detail = serde_json::json!({
            "note": t.note,
            "message": t.message,
            "rule_version": t.rule_version,
            "measured_at": t.measured_at,
            "evidence": evidence(&t.evidence),
            "limits": t.limits,
            "leaves": t.leaves,
            "late": t.late,
            "flapping": t.flapping,
        });
        let n = history_len(tx, id)?;
        insert_history(tx, id, at, kind, notified, None, &detail)?;
        if let (true, Some(ev)) = (notified, event) {
            if let Some(alert) = alerts::get(tx, id)? {
                emit(tx, &alert, ctx, ev, t.at, n)?;
            }
        }
    }
    let resolved = t.kind == TransitionKind::Resolve;
    if let (Some(care), Some(id)) = (ctx.follow_up.clone(), open_id.as_deref()) {
        if notified || resolved {
            if let Some(alert) = alerts::get(tx, id)? {
                care.on_alert(
                    tx,
                    &AlertChange {
                        alert: &alert,
                        care_plans: &ctx.patient.care_plans,
                        care_team: ctx.care_team.as_deref(),
                        notified,
                        resolved,
                        at: t.at,
                    },
                )?;
            }
        }
    }
    if resolved {
        open_id = None;
    }
    save_state(tx, ctx, &rule, &t.state, open_id)?;
    ctx.states.insert(rule, t.state);
    Ok(Applied {
        kind: t.kind,
        notified,
    })
}

fn insert_alert(
    tx: &Transaction<'_>,
    patient: &str,
    t: &Transition,
    trigger: &str,
) -> Result<String, StoreError> {
    let at = t.at.timestamp_millis();
    // One open alert per (patient, rule): an open row the state no longer
    // knows about (unreadable state) is closed rather than left dangling.
    alerts::close_open(tx, patient, &t.rule_id, at)?;
    let mut n = 0;
    let id = loop {
        let id = alert_id(patient, &t.rule_id, trigger, n);
        if !alerts::exists(tx, &id)? {
            break id;
        }
        n += 1;
    };
    let (limits, evidence) = encoded(t)?;
    alerts::insert(
        tx,
        &NewAlert {
            alert_id: &id,
            patient_id: patient,
            rule_id: &t.rule_id,
            pack: &t.pack,
            content: content(t, &limits, &evidence),
            fired_at: at,
            measured_at: t.measured_at.map(|m| m.timestamp_millis()),
            // A re-fire during a snooze set on an earlier alert is silent: show why.
            snooze_until: t
                .state
                .snooze_until
                .filter(|s| *s > t.at)
                .map(|s| s.timestamp_millis()),
        },
    )?;
    Ok(id)
}

/// A transition's limits and evidence, as stored (JSON).
fn encoded(t: &Transition) -> Result<(String, String), StoreError> {
    Ok((enc(&t.limits)?, enc(&evidence(&t.evidence))?))
}

/// What `t` says of its alert, with its encoded limits and evidence.
fn content<'a>(t: &'a Transition, limits: &'a str, evidence: &'a str) -> AlertContent<'a> {
    AlertContent {
        rule_version: t.rule_version,
        severity: t.severity.name(),
        message: &t.message,
        limits,
        evidence,
        late: t.late,
        flapping: t.flapping,
    }
}

fn save_state(
    tx: &Transaction<'_>,
    ctx: &mut PatientCtx,
    rule: &str,
    state: &AlertState,
    alert_id: Option<String>,
) -> Result<(), StoreError> {
    let json = enc(state)?;
    let unchanged = match ctx.stored.get(rule) {
        Some((j, a)) => *j == json && *a == alert_id,
        // Never stored and still pristine: nothing worth a row.
        None => alert_id.is_none() && *state == AlertState::new(rule, state.rule_version),
    };
    if unchanged {
        return Ok(());
    }
    alerts::save_state(
        tx,
        &ctx.patient.id,
        rule,
        &json,
        alert_id.as_deref(),
        crate::store::now_ms(),
    )?;
    ctx.stored.insert(rule.to_string(), (json, alert_id));
    Ok(())
}

/// Number of history rows of an alert: the position of the next one, used
/// in event ids.
pub(crate) fn history_len(conn: &Connection, alert_id: &str) -> Result<i64, StoreError> {
    alerts::history_len(conn, alert_id)
}

/// Appends a history row.
pub(crate) fn insert_history(
    tx: &Transaction<'_>,
    alert_id: &str,
    at: i64,
    kind: &str,
    notified: bool,
    actor: Option<&str>,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    alerts::append_history(
        tx,
        &NewHistory {
            alert_id,
            at,
            kind,
            notified,
            actor,
            detail: &enc(detail)?,
        },
    )
}

/// The routing context of an event: care team and plans.
pub(crate) trait Routing {
    fn care_team(&self) -> Option<String>;
    fn care_plans(&self) -> Vec<String>;
}

impl Routing for PatientCtx {
    fn care_team(&self) -> Option<String> {
        self.care_team.clone()
    }
    fn care_plans(&self) -> Vec<String> {
        self.patient.care_plans.clone()
    }
}

impl Routing for Option<patients::PatientRecord> {
    fn care_team(&self) -> Option<String> {
        self.as_ref().and_then(|p| p.care_team.clone())
    }
    fn care_plans(&self) -> Vec<String> {
        self.as_ref()
            .map(|p| p.care_plans.clone())
            .unwrap_or_default()
    }
}

/// Writes the outbox event for `alert` as it now stands. `n` is the alert's
/// history position of this transition (stable across a re-run).
pub(crate) fn emit(
    tx: &Transaction<'_>,
    alert: &AlertRecord,
    routing: &dyn Routing,
    event_type: EventType,
    at: DateTime<Utc>,
    n: i64,
) -> Result<(), StoreError> {
    let evidence: Vec<EvidenceReading> =
        serde_json::from_value(alert.evidence.clone()).unwrap_or_default();
    let data = AlertData {
        alert_id: alert.alert_id.clone(),
        patient_id: alert.patient_id.clone(),
        care_team: routing.care_team(),
        care_plans: routing.care_plans(),
        rule: RuleRef {
            id: alert.rule_id.clone(),
            version: alert.rule_version,
            pack: alert.pack.clone(),
        },
        severity: alert.severity.clone(),
        status: alert.status.clone(),
        message: alert.message.clone(),
        limits: alert.limits.clone(),
        evidence,
        late: alert.late,
        flapping: alert.flapping,
        fired_at: alert.fired_at,
        measured_at: alert.measured_at,
        acknowledged_by: alert.acknowledged_by.clone(),
        ack_note: alert.ack_note.clone(),
        resolved_at: alert.resolved_at,
        link: format!("/api/v1/alerts/{}", alert.alert_id),
    };
    let event = Event {
        schema: EVENT_SCHEMA.to_string(),
        id: outbox::event_id(&[&alert.alert_id, event_type.name(), &n.to_string()]),
        event_type,
        timestamp: at,
        data,
    };
    outbox::enqueue(
        tx,
        &event,
        Some(&alert.alert_id),
        Some(&alert.patient_id),
        Some(&alert.severity),
    )?;
    Ok(())
}
