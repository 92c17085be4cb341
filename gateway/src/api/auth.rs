//! Authentication and authorization: bearer tokens with a role.
//!
//! - No token, an unknown one, a revoked one: 401, all with the same body;
//!   counted in metrics and audited in aggregate, and limited per client
//!   address and per token ([`super::limits`]): 429 with `Retry-After`.
//! - A role that may not do this kind of request: 403.
//! - A care-team token asking for a patient outside its teams: 404, exactly
//!   as for a patient that does not exist, so nothing about other teams'
//!   patients leaks (not even that they exist).

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rusqlite::Connection;
use std::sync::Arc;

use super::audit::AuditPatient;
use super::limits::{retry_after, ClientAddr};
use super::problem::ApiError;
use super::ApiState;
use crate::store::tokens::{self, Role, TokenRecord};

/// Who is calling: the token's id, role and teams.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Token id (the audit log's actor).
    pub token_id: String,
    /// Token name (who acted, as shown on an acknowledged alert).
    pub name: String,
    /// Role.
    pub role: Role,
    /// Care teams (role `care_team`).
    pub teams: Vec<String>,
    /// Devices an ingest token may push for (empty: any).
    pub devices: Vec<String>,
    /// Profiles an ingest token may push with (empty: any).
    pub profiles: Vec<String>,
}

impl From<TokenRecord> for Principal {
    fn from(t: TokenRecord) -> Self {
        Principal {
            token_id: t.token_id,
            name: t.name,
            role: t.role,
            teams: t.care_teams,
            devices: t.devices,
            profiles: t.profiles,
        }
    }
}

impl Principal {
    /// May read patient data (every role but `ingest`).
    pub fn require_read(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin | Role::ReadOnly | Role::CareTeam => Ok(()),
            Role::Ingest => Err(ApiError::Forbidden),
        }
    }

    /// May read operational data that is not scoped by patient (quarantine,
    /// webhooks, audit): admin and read-only.
    pub fn require_operator_read(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin | Role::ReadOnly => Ok(()),
            _ => Err(ApiError::Forbidden),
        }
    }

    /// May change configuration and registry: admin only.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            _ => Err(ApiError::Forbidden),
        }
    }

    /// May act on alerts (acknowledge, resolve): admin and care teams (of
    /// the alert's patient, checked by the handler).
    pub fn require_clinical_write(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin | Role::CareTeam => Ok(()),
            _ => Err(ApiError::Forbidden),
        }
    }

    /// May push readings: admin and ingest.
    pub fn require_ingest(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin | Role::Ingest => Ok(()),
            _ => Err(ApiError::Forbidden),
        }
    }

    /// 403 unless this token may push with `profile` for every device of
    /// `devices` (`None`: a device the input did not name).
    pub fn check_ingest_scope<'a>(
        &self,
        profile: &str,
        mut devices: impl Iterator<Item = Option<&'a str>>,
    ) -> Result<(), ApiError> {
        if !self.profiles.is_empty() && !self.profiles.iter().any(|p| p == profile) {
            return Err(ApiError::Forbidden);
        }
        if !self.devices.is_empty()
            && !devices.all(|d| d.is_some_and(|d| self.devices.iter().any(|x| x == d)))
        {
            return Err(ApiError::Forbidden);
        }
        Ok(())
    }

    /// The care teams this token is limited to; `None` = every patient.
    pub fn scope(&self) -> Option<&[String]> {
        (self.role == Role::CareTeam).then_some(self.teams.as_slice())
    }

    /// The scope as a JSON array for SQL (`json_each`), `None` = unscoped.
    pub fn scope_json(&self) -> Option<String> {
        self.scope()
            .map(|t| serde_json::to_string(t).unwrap_or_else(|_| "[]".into()))
    }

    /// Whether this token may see `patient_id`.
    pub fn sees(&self, conn: &Connection, patient_id: &str) -> Result<bool, ApiError> {
        let Some(teams) = self.scope_json() else {
            return Ok(true);
        };
        Ok(crate::store::patients::in_care_teams(
            conn, patient_id, &teams,
        )?)
    }

    /// 404 unless this token may see `patient_id`.
    pub fn check_patient(
        &self,
        conn: &Connection,
        patient_id: &str,
        what: &'static str,
    ) -> Result<(), ApiError> {
        if self.sees(conn, patient_id)? {
            Ok(())
        } else {
            Err(ApiError::NotFound(what))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}

fn bearer(req: &Request) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty() && token.len() <= 256).then(|| token.to_string())
}

/// Middleware of every `/api` and `/fhir` route: authenticates the bearer
/// token, runs the request, then writes the audit record (who, what route,
/// which patient, outcome) before the response leaves. A read whose audit
/// record cannot be written is not answered (503): nothing is disclosed
/// without a trace.
pub async fn guard(State(st): State<Arc<ApiState>>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let resource = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let action = format!("{method} {route}");
    // The patient a request names (path or query), recorded even when the
    // request is refused: attempts matter as much as reads.
    let named_patient = {
        let (mut parts, body) = req.into_parts();
        let from_path = RawPathParams::from_request_parts(&mut parts, &st)
            .await
            .ok()
            .and_then(|p| {
                p.iter()
                    .find(|(k, _)| *k == "patient_id")
                    .map(|(_, v)| v.to_string())
            });
        let from_query = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .ok()
            .and_then(|q| {
                q.0.into_iter()
                    .find(|(k, _)| k == "patient" || k == "subject")
                    .map(|(_, v)| v.trim_start_matches("Patient/").to_string())
            });
        req = Request::from_parts(parts, body);
        from_path.or(from_query)
    };
    let client = req.extensions().get::<ClientAddr>().map(|c| c.0);
    if let Some(wait) = client.and_then(|ip| st.limits.blocked(ip)) {
        st.metrics.api_rate_limited("client");
        st.metrics.api_request(method.as_str(), &route, 429);
        return ApiError::TooManyRequests(retry_after(wait)).into_response();
    }
    let presented = bearer(&req);
    let had_token = presented.is_some();
    let principal = match presented {
        None => None,
        Some(token) => match st
            .db
            .run(move |s| Ok(tokens::authenticate(s.conn(), &token)?))
            .await
        {
            Ok(p) => p.map(Principal::from),
            Err(e) => return e.into_response(),
        },
    };
    let Some(principal) = principal else {
        // Counted, and audited in aggregate (see `limits`): not a row each.
        st.metrics
            .api_auth_failure(if had_token { "invalid" } else { "missing" });
        if let Some(wait) = client.and_then(|ip| st.limits.failure(ip)) {
            st.metrics.api_rate_limited("client");
            st.metrics.api_request(method.as_str(), &route, 429);
            return ApiError::TooManyRequests(retry_after(wait)).into_response();
        }
        st.metrics.api_request(method.as_str(), &route, 401);
        return ApiError::Unauthorized.into_response();
    };
    let actor = principal.token_id.clone();
    if let Err(wait) = st.limits.token(&actor) {
        st.metrics.api_rate_limited("token");
        st.metrics.api_request(method.as_str(), &route, 429);
        let _ = st
            .audit
            .record(&actor, &action, &resource, named_patient, 429)
            .await;
        return ApiError::TooManyRequests(retry_after(wait)).into_response();
    }
    req.extensions_mut().insert(principal);
    let response = next.run(req).await;
    let status = response.status().as_u16();
    st.metrics.api_request(method.as_str(), &route, status);
    let patient = response
        .extensions()
        .get::<AuditPatient>()
        .map(|p| p.0.clone())
        .or(named_patient);
    match st
        .audit
        .record(&actor, &action, &resource, patient, status)
        .await
    {
        Ok(()) => response,
        Err(_) if method == Method::GET || method == Method::HEAD => {
            ApiError::Unavailable("the audit log cannot be written; retry shortly".into())
                .into_response()
        }
        Err(_) => response,
    }
}
