//! FHIR R4 `Task` for follow-up tasks: `GET /fhir/Task/{id}` and
//! `GET /fhir/Task?patient=`; the mapping is [`crate::fhir::task`].
//! Care-team scoping is the API's.

use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::json;
use std::sync::Arc;

use super::audit::AuditPatient;
use super::auth::Principal;
use super::fhir::Fhir;
use super::problem::{ApiError, Path, Query};
use super::ApiState;
use crate::care::tasks::view;
use crate::fhir::task::task;
use crate::store::tasks::{self, TaskQuery};

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
    Ok((
        patient.map(AuditPatient),
        Fhir(super::fhir::searchset(Vec::new(), entries)),
    ))
}
