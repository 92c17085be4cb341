//! A patient's risk tier over HTTP: JSON and FHIR R4 `RiskAssessment`.
//!
//! - `GET /api/v1/patients/{patient_id}/risk`: the tier, the tier rule
//!   that gave it, its reasons (alert ids, task ids, counts), the activity
//!   summary and the history of changes, newest first;
//! - `GET /fhir/RiskAssessment?subject=Patient/{id}`: a `searchset` Bundle
//!   of the patient's assessments (one per tier change), newest first;
//! - `GET /fhir/RiskAssessment/{id}`: one assessment (`risk-<n>`).
//!
//! A RiskAssessment is `final`, its `occurrenceDateTime` the change, its
//! `method` the tier rule (id and version), `prediction.qualitativeRisk`
//! coded in HL7's risk-probability system (high → high, rising →
//! moderate, stable → low) beside the gateway's own tier code, and `basis`
//! the Observations the cited alerts were fired on. A care-team token sees
//! its own patients only (404 otherwise, as for the patient).

use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;

use super::audit::AuditPatient;
use super::auth::Principal;
use super::fhir::Fhir;
use super::page::{time, time_opt};
use super::problem::{ApiError, Json, Path, Query};
use super::ApiState;
use crate::store::outbox::TierRuleRef;
use crate::store::patients;
use crate::store::risk::{self, RiskChange};

/// The local code system of the gateway's tiers.
pub const TIER_SYSTEM: &str = "urn:rpm-gateway:risk-tier";
/// The local code system of tier rules (RiskAssessment.method).
pub const TIER_RULE_SYSTEM: &str = "urn:rpm-gateway:tier-rule";
const RISK_PROBABILITY: &str = "http://terminology.hl7.org/CodeSystem/risk-probability";
/// Changes shown with a patient's risk.
const HISTORY_LIMIT: usize = 50;

/// One tier change as the API shows it.
#[derive(Debug, Serialize)]
pub struct ChangeView {
    /// FHIR RiskAssessment id (`risk-<n>`).
    pub id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// From (None: first placement).
    pub from_tier: Option<String>,
    /// To.
    pub tier: String,
    /// The tier rule.
    pub rule: Option<TierRuleRef>,
    /// The reasons.
    pub reasons: Value,
    /// The `risk.changed` event id (None: none was sent).
    pub event_id: Option<String>,
}

/// `GET /api/v1/patients/{patient_id}/risk`.
#[derive(Debug, Serialize)]
pub struct RiskView {
    /// Patient.
    pub patient_id: String,
    /// `high` | `rising` | `stable` | `unknown`.
    pub tier: String,
    /// When the patient entered this tier.
    pub since: Option<DateTime<Utc>>,
    /// When it was last computed (None: not yet).
    pub computed_at: Option<DateTime<Utc>>,
    /// The tier rule that gave it.
    pub rule: Option<TierRuleRef>,
    /// Which conditions held, with their facts.
    pub reasons: Value,
    /// Newest reading seen.
    pub last_reading_at: Option<DateTime<Utc>>,
    /// Local days with data in the last 7 (at `computed_at`).
    pub data_days_7: i64,
    /// Local days with data in the last 30 (at `computed_at`).
    pub data_days_30: i64,
    /// Changes, newest first (at most 50).
    pub history: Vec<ChangeView>,
}

fn rule_ref(id: Option<String>, version: Option<u32>, pack: Option<String>) -> Option<TierRuleRef> {
    Some(TierRuleRef {
        id: id?,
        version: version?,
        pack: pack.unwrap_or_default(),
    })
}

fn reasons(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or(Value::Array(Vec::new()))
}

/// The FHIR id of a change.
pub fn assessment_id(c: &RiskChange) -> String {
    format!("risk-{}", c.id)
}

fn change_view(c: RiskChange) -> ChangeView {
    ChangeView {
        id: assessment_id(&c),
        at: time(c.at),
        reasons: reasons(&c.reasons),
        rule: rule_ref(c.rule_id, c.rule_version, c.pack),
        from_tier: c.from_tier,
        tier: c.tier,
        event_id: c.event_id,
    }
}

/// A patient's risk (a patient never computed is `unknown`).
pub fn view(conn: &rusqlite::Connection, patient_id: &str) -> Result<RiskView, ApiError> {
    let row = risk::get(conn, patient_id)?;
    let history = risk::history(conn, patient_id, HISTORY_LIMIT)?
        .into_iter()
        .map(change_view)
        .collect();
    Ok(match row {
        Some(r) => RiskView {
            patient_id: r.patient_id,
            tier: r.tier,
            since: Some(time(r.since)),
            computed_at: Some(time(r.computed_at)),
            rule: rule_ref(r.rule_id, r.rule_version, r.pack),
            reasons: reasons(&r.reasons),
            last_reading_at: time_opt(r.last_reading_at),
            data_days_7: r.data_days_7,
            data_days_30: r.data_days_30,
            history,
        },
        None => RiskView {
            patient_id: patient_id.to_string(),
            tier: "unknown".into(),
            since: None,
            computed_at: None,
            rule: None,
            reasons: json!([]),
            last_reading_at: None,
            data_days_7: 0,
            data_days_30: 0,
            history,
        },
    })
}

/// `GET /api/v1/patients/{patient_id}/risk`.
pub async fn get(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(patient_id): Path<String>,
) -> Result<(AuditPatient, Json<RiskView>), ApiError> {
    p.require_read()?;
    let id = patient_id.clone();
    let v = st
        .db
        .run(move |s| {
            p.check_patient(s.conn(), &id, "patient")?;
            patients::get(s.conn(), &id)?.ok_or(ApiError::NotFound("patient"))?;
            view(s.conn(), &id)
        })
        .await?;
    Ok((AuditPatient(patient_id), Json(v)))
}

fn qualitative(tier: &str) -> Value {
    let hl7 = match tier {
        "high" => Some(("high", "High likelihood")),
        "rising" => Some(("moderate", "Moderate likelihood")),
        "stable" => Some(("low", "Low likelihood")),
        _ => None,
    };
    let mut coding = Vec::new();
    if let Some((code, display)) = hl7 {
        coding.push(json!({"system": RISK_PROBABILITY, "code": code, "display": display}));
    }
    coding
        .push(json!({"system": TIER_SYSTEM, "code": tier, "display": format!("Risk tier {tier}")}));
    json!({"coding": coding, "text": tier})
}

/// The RiskAssessment of a change; `basis` lists Observation ids.
pub fn assessment(c: &RiskChange, basis: &[String]) -> Value {
    let mut r = json!({
        "resourceType": "RiskAssessment",
        "id": assessment_id(c),
        "identifier": [{"system": "urn:rpm-gateway:risk-change", "value": format!("{}.{}", c.patient_id, c.n)}],
        "status": "final",
        "subject": {"reference": format!("Patient/{}", c.patient_id)},
        "occurrenceDateTime": crate::store::outbox::rfc3339(time(c.at)),
        "prediction": [{
            "outcome": {"text": "Needs the care team's attention"},
            "qualitativeRisk": qualitative(&c.tier),
        }],
    });
    if let (Some(id), Some(v)) = (&c.rule_id, c.rule_version) {
        r["method"] = json!({
            "coding": [{"system": TIER_RULE_SYSTEM, "version": v.to_string(), "code": id}],
            "text": format!("tier rule {id} version {v}{}", c.pack.as_ref().map(|p| format!(" ({p})")).unwrap_or_default()),
        });
    }
    if !basis.is_empty() {
        r["basis"] = Value::Array(
            basis
                .iter()
                .map(|o| json!({"reference": format!("Observation/{o}")}))
                .collect(),
        );
    }
    let texts: Vec<String> = reasons(&c.reasons)
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["text"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if !texts.is_empty() {
        r["note"] = Value::Array(texts.iter().map(|t| json!({"text": t})).collect());
    }
    r
}

/// The alert ids a change's reasons cite.
fn cited_alerts(c: &RiskChange) -> Vec<String> {
    reasons(&c.reasons)
        .as_array()
        .map(|a| {
            a.iter()
                .flat_map(|r| {
                    r["alert_ids"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter_map(|v| v.as_str().map(String::from))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn with_basis(conn: &rusqlite::Connection, c: &RiskChange) -> Result<Value, ApiError> {
    let basis = crate::fhir::observation::cited_observations(conn, &cited_alerts(c))?;
    Ok(assessment(c, &basis))
}

/// `GET /fhir/RiskAssessment?subject=Patient/{id}`.
pub async fn search(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<(Option<AuditPatient>, Fhir), ApiError> {
    p.require_read()?;
    let mut patient: Option<String> = None;
    for (k, v) in &params {
        match k.as_str() {
            "subject" | "patient" => super::fhir::patient_param(&mut patient, k, v)?,
            "_format" if super::fhir::json_format(v) => {}
            other => {
                return Err(ApiError::BadRequest(format!(
                    "search parameter `{other}` is not supported (subject, patient)"
                )))
            }
        }
    }
    let Some(pt) = patient else {
        return Err(ApiError::BadRequest(
            "subject: name the patient (subject=Patient/{id})".into(),
        ));
    };
    let id = pt.clone();
    let resources = st
        .db
        .run(move |s| {
            // A patient the token may not see matches nothing, as in
            // Observation searches: nothing leaks, not even existence.
            if !p.sees(s.conn(), &id)? {
                return Ok(Vec::new());
            }
            risk::history(s.conn(), &id, HISTORY_LIMIT)?
                .iter()
                .map(|c| with_basis(s.conn(), c))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    let base = st.base_url(&headers);
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            json!({
                "fullUrl": format!("{base}/fhir/RiskAssessment/{}", r["id"].as_str().unwrap_or_default()),
                "resource": r,
                "search": {"mode": "match"},
            })
        })
        .collect();
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": crate::store::outbox::rfc3339(Utc::now()),
        "total": entries.len(),
        "link": [{"relation": "self", "url": format!("{base}/fhir/RiskAssessment?subject=Patient/{pt}")}],
        "entry": entries,
    });
    Ok((Some(AuditPatient(pt)), Fhir(bundle)))
}

/// `GET /fhir/RiskAssessment/{id}`.
pub async fn read(
    State(st): State<Arc<ApiState>>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<(AuditPatient, Fhir), ApiError> {
    p.require_read()?;
    let n: i64 = id
        .strip_prefix("risk-")
        .and_then(|n| n.parse().ok())
        .ok_or(ApiError::NotFound("RiskAssessment"))?;
    let (patient, r) = st
        .db
        .run(move |s| {
            let c = risk::change(s.conn(), n)?.ok_or(ApiError::NotFound("RiskAssessment"))?;
            p.check_patient(s.conn(), &c.patient_id, "RiskAssessment")?;
            Ok((c.patient_id.clone(), with_basis(s.conn(), &c)?))
        })
        .await?;
    Ok((AuditPatient(patient), Fhir(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assessments_code_tiers_and_cite_rule_and_evidence() {
        let c = RiskChange {
            id: 7,
            patient_id: "p1".into(),
            n: 1,
            at: 1_773_000_000_000,
            from_tier: Some("unknown".into()),
            tier: "rising".into(),
            rule_id: Some("tier.rising.trend".into()),
            rule_version: Some(1),
            pack: Some("risk-tiers".into()),
            reasons: r#"[{"condition":"alerts","text":"1 trend alert(s)","count":1,"alert_ids":["al1"]}]"#.into(),
            event_id: None,
        };
        assert_eq!(cited_alerts(&c), vec!["al1".to_string()]);
        let r = assessment(&c, &["bp-g1".to_string()]);
        assert_eq!(r["id"], "risk-7");
        assert_eq!(r["status"], "final");
        assert_eq!(
            r["prediction"][0]["qualitativeRisk"]["coding"][0]["code"],
            "moderate"
        );
        assert_eq!(
            r["prediction"][0]["qualitativeRisk"]["coding"][1]["code"],
            "rising"
        );
        assert_eq!(r["method"]["coding"][0]["code"], "tier.rising.trend");
        assert_eq!(r["basis"][0]["reference"], "Observation/bp-g1");
        let unknown = RiskChange {
            tier: "unknown".into(),
            rule_id: None,
            rule_version: None,
            ..c
        };
        let r = assessment(&unknown, &[]);
        assert!(r.get("method").is_none() && r.get("basis").is_none());
        assert_eq!(
            r["prediction"][0]["qualitativeRisk"]["coding"][0]["system"],
            TIER_SYSTEM
        );
    }
}
