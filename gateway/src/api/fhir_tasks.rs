//! FHIR R4 `Task` for follow-up tasks: `GET /fhir/Task/{id}` and
//! `GET /fhir/Task?patient=`.
//!
//! A follow-up task maps onto Task as an EHR's worklist would read it:
//! `for` the patient, `focus` the Observation that opened it (the first
//! alert's newest evidence; the other evidence as `input`), `owner` the
//! care manager who claimed it, `status` `ready` → `in-progress` →
//! `completed`, `businessStatus` the outcome once done (or `overdue` /
//! `escalated-N` before), `priority` from the alert severity
//! (critical = stat, urgent = urgent, else routine) and
//! `restriction.period.end` the deadline. Care-team scoping is the API's.

use axum::extract::State;
use axum::http::HeaderMap;
use chrono::Utc;
use serde_json::{json, Value};
use std::sync::Arc;

use super::audit::AuditPatient;
use super::auth::Principal;
use super::fhir::{fhir_instant, observation_id, Fhir};
use super::problem::{ApiError, Path, Query};
use super::ApiState;
use crate::care::tasks::{view, TaskView};
use crate::store::outbox::EvidenceReading;
use crate::store::tasks::{self, TaskQuery};
use crate::store::StoreError;

const OUTCOME_SYSTEM: &str = "https://rpm-gateway.dev/fhir/CodeSystem/task-outcome";
const STATUS_SYSTEM: &str = "https://rpm-gateway.dev/fhir/CodeSystem/task-business-status";

/// The Observations (FHIR ids) cited by the task's alerts, first alert first.
fn evidence(conn: &rusqlite::Connection, t: &TaskView) -> Result<Vec<String>, StoreError> {
    let mut ids: Vec<String> = Vec::new();
    for alert_id in &t.alert_ids {
        let Some(alert) = crate::store::alerts::get(conn, alert_id)? else {
            continue;
        };
        let mut cited: Vec<EvidenceReading> =
            serde_json::from_value(alert.evidence.clone()).unwrap_or_default();
        // Newest first: the reading that tipped the rule.
        cited.sort_by_key(|e| std::cmp::Reverse(e.measured_at));
        for e in cited {
            if let Some(id) = observation_id(conn, &e.reading_id)? {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
    }
    Ok(ids)
}

/// The Task resource of a follow-up task.
pub fn task(conn: &rusqlite::Connection, t: &TaskView) -> Result<Value, StoreError> {
    let observations = evidence(conn, t)?;
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
        "authoredOn": fhir_instant(t.opened_at),
        "restriction": {"period": {"end": fhir_instant(t.due_at)}},
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
        let mut period = json!({"start": fhir_instant(start)});
        if let Some(end) = t.done_at {
            period["end"] = json!(fhir_instant(end));
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

/// `GET /fhir/Task/{id}`.
pub async fn read(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<(AuditPatient, Fhir), ApiError> {
    p.require_read()?;
    let (patient, r) = st
        .db
        .run(move |s| {
            let t = tasks::get(s.conn(), &id)?.ok_or(ApiError::NotFound("Task"))?;
            p.check_patient(s.conn(), &t.patient_id, "Task")?;
            let v = view(s.conn(), t, false)?;
            Ok((v.patient_id.clone(), task(s.conn(), &v)?))
        })
        .await?;
    Ok((AuditPatient(patient), Fhir(r)))
}

/// `GET /fhir/Task?patient=&status=&_count=`: soonest deadline first.
pub async fn search(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<(Option<AuditPatient>, Fhir), ApiError> {
    p.require_read()?;
    let mut q = TaskQuery {
        scope_json: p.scope_json(),
        statuses: vec!["open".into(), "claimed".into(), "done".into()],
        limit: st.cfg.default_page_size.min(100),
        ..TaskQuery::default()
    };
    for (k, v) in &params {
        match k.as_str() {
            "patient" | "subject" | "for" => super::fhir::patient_param(&mut q.patient_id, k, v)?,
            "status" => {
                q.statuses = v
                    .split(',')
                    .map(|s| match s.trim() {
                        "ready" => Ok("open".to_string()),
                        "in-progress" => Ok("claimed".to_string()),
                        "completed" => Ok("done".to_string()),
                        other => Err(ApiError::BadRequest(format!(
                            "status: `{other}` is not one of ready, in-progress, completed"
                        ))),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "_count" => q.limit = super::fhir::count_param(v, st.cfg.max_page_size)?,
            "_format" if super::fhir::json_format(v) => {}
            other => {
                return Err(ApiError::BadRequest(format!(
                    "search parameter `{other}` is not supported (patient, status, _count)"
                )))
            }
        }
    }
    let base = st.base_url(&headers);
    let patient = q.patient_id.clone();
    let entries = st
        .db
        .run(move |s| {
            let mut out = Vec::new();
            for t in tasks::list(s.conn(), &q)? {
                let v = view(s.conn(), t, false)?;
                out.push(json!({
                    "fullUrl": format!("{base}/fhir/Task/{}", v.task_id),
                    "resource": task(s.conn(), &v)?,
                    "search": {"mode": "match"},
                }));
            }
            Ok(out)
        })
        .await?;
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": fhir_instant(Utc::now()),
        "entry": entries,
    });
    Ok((patient.map(AuditPatient), Fhir(bundle)))
}
