//! Follow-up tasks as FHIR R4 `Task`.
//!
//! A follow-up task maps onto Task as an EHR's worklist would read it:
//! `for` the patient, `focus` the Observation that opened it (the first
//! alert's newest evidence; the other evidence as `input`), `owner` the
//! care manager who claimed it, `status` `ready` → `in-progress` →
//! `completed`, `businessStatus` the outcome once done (or `overdue` /
//! `escalated-N` before), `priority` from the alert severity
//! (critical = stat, urgent = urgent, else routine) and
//! `restriction.period.end` the deadline.

use serde_json::{json, Value};

use super::instant;
use super::observation::cited_observations;
use crate::care::tasks::TaskView;
use crate::store::StoreError;

const OUTCOME_SYSTEM: &str = "https://rpm-gateway.dev/fhir/CodeSystem/task-outcome";
const STATUS_SYSTEM: &str = "https://rpm-gateway.dev/fhir/CodeSystem/task-business-status";

/// The Task resource of a follow-up task.
pub fn task(conn: &rusqlite::Connection, t: &TaskView) -> Result<Value, StoreError> {
    let observations = cited_observations(conn, &t.alert_ids)?;
    let status = match t.status.as_str() {
        "claimed" => "in-progress",
        "done" => "completed",
        _ => "ready",
    };
    let priority = match t.priority.as_str() {
        "critical" => "stat",
        "urgent" => "urgent",
        _ => "routine",
    };
    let mut r = json!({
        "resourceType": "Task",
        "id": t.task_id,
        "identifier": [{"system": "https://rpm-gateway.dev/fhir/task-id", "value": t.task_id}],
        "status": status,
        "intent": "order",
        "priority": priority,
        "code": {"text": format!("Follow up {} ({} pathway)", t.problem, t.pathway)},
        "description": format!("Follow up the patient's {} alerts", t.problem),
        "for": {"reference": format!("Patient/{}", t.patient_id)},
        "authoredOn": instant(t.opened_at),
        "restriction": {"period": {"end": instant(t.due_at)}},
    });
    if let Some(first) = observations.first() {
        r["focus"] = json!({"reference": format!("Observation/{first}")});
    }
    let inputs: Vec<Value> = observations
        .iter()
        .skip(1)
        .map(|o| {
            json!({
                "type": {"text": "evidence"},
                "valueReference": {"reference": format!("Observation/{o}")},
            })
        })
        .collect();
    if !inputs.is_empty() {
        r["input"] = Value::Array(inputs);
    }
    if let Some(owner) = &t.claimed_by {
        r["owner"] = json!({"display": owner});
    }
    if let Some(start) = t.claimed_at {
        let mut period = json!({"start": instant(start)});
        if let Some(end) = t.done_at {
            period["end"] = json!(instant(end));
        }
        r["executionPeriod"] = period;
    }
    let business = match (&t.outcome, t.escalation_tier, t.overdue) {
        (Some(o), _, _) => Some((OUTCOME_SYSTEM, o.clone())),
        (None, n, _) if n > 0 => Some((STATUS_SYSTEM, format!("escalated-{n}"))),
        (None, _, true) => Some((STATUS_SYSTEM, "overdue".to_string())),
        _ => None,
    };
    if let Some((system, code)) = business {
        r["businessStatus"] =
            json!({"coding": [{"system": system, "code": code}], "text": code.replace('_', " ")});
    }
    if let Some(note) = &t.note {
        r["note"] = json!([{"text": note}]);
    }
    Ok(r)
}
