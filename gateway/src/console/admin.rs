//! The admin's page: webhook endpoints with their delivery health (pending,
//! delivered, failed, dead; the last error) and re-drive, the API tokens
//! and console users (never a secret or a hash), and the audit log.
//!
//! Reads as the API allows them: webhook endpoints for the operator roles
//! (admin, read-only), tokens, users and the audit log for admins;
//! re-driving is the admin's, through the API's shared function.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::pages::{error_page, render, urlencode, when, when_opt, Layout};
use super::Signed;
use crate::api::auth::Principal;
use crate::api::ApiState;

struct EndpointRow {
    id: String,
    url: String,
    state: String,
    pending: i64,
    delivered: i64,
    retrying: i64,
    failed: i64,
    dead: i64,
    last_error: String,
    failing: bool,
}

struct TokenRow {
    id: String,
    name: String,
    role: String,
    teams: String,
    state: String,
    last_used: String,
}

struct UserRow {
    name: String,
    role: String,
    teams: String,
    state: String,
    created: String,
}

struct AuditRow {
    at: String,
    actor: String,
    action: String,
    resource: String,
    patient: String,
    outcome: i64,
}

#[derive(Template)]
#[template(path = "console/admin.html")]
struct AdminPage {
    layout: Layout,
    admin: bool,
    endpoints: Vec<EndpointRow>,
    tokens: Vec<TokenRow>,
    users: Vec<UserRow>,
    audit: Vec<AuditRow>,
    actor: String,
    patient: String,
    notice: String,
}

/// `GET /console/admin` parameters: audit log filters.
#[derive(Debug, Deserialize)]
pub struct AdminQuery {
    actor: Option<String>,
    patient: Option<String>,
    notice: Option<String>,
}

/// Audit rows shown.
const AUDIT_ROWS: usize = 200;

/// `GET /console/admin`.
pub async fn admin(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
    Query(q): Query<AdminQuery>,
) -> Response {
    if let Err(e) = p.require_operator_read() {
        return error_page(e, Some(&signed));
    }
    let admin = p.require_admin().is_ok();
    let actor = q.actor.clone().filter(|a| !a.trim().is_empty());
    let patient = q.patient.clone().filter(|a| !a.trim().is_empty());
    let loaded = st
        .db
        .run(move |s| {
            let conn = s.conn();
            let endpoints = crate::delivery::endpoints::list(conn)
                .map_err(crate::api::webhooks::endpoint_error)?;
            let mut counts: BTreeMap<(String, String), i64> = BTreeMap::new();
            for (e, status, n) in crate::store::webhooks::delivery_counts(conn)? {
                counts.insert((e, status), n);
            }
            let mut rows = Vec::new();
            for e in endpoints {
                let n = |st: &str| {
                    counts
                        .get(&(e.endpoint_id.clone(), st.to_string()))
                        .copied()
                        .unwrap_or(0)
                };
                let last_error = crate::store::webhooks::deliveries(
                    conn,
                    &crate::store::webhooks::DeliveryQuery {
                        endpoint_id: Some(&e.endpoint_id),
                        status: None,
                        before: None,
                        limit: 1,
                    },
                )?
                .into_iter()
                .next()
                .and_then(|d| d.last_error)
                .unwrap_or_default();
                rows.push(EndpointRow {
                    state: if e.enabled {
                        "enabled".into()
                    } else {
                        format!(
                            "disabled{}",
                            e.disabled_reason
                                .map(|r| format!(" ({r})"))
                                .unwrap_or_default()
                        )
                    },
                    pending: n("pending"),
                    delivered: n("delivered"),
                    retrying: n("retrying"),
                    failed: n("failed"),
                    dead: n("dead"),
                    failing: n("failed") + n("dead") > 0,
                    last_error,
                    url: e.url,
                    id: e.endpoint_id,
                });
            }
            let (tokens, users, audit) = if admin {
                let tokens = crate::store::tokens::list(conn)?
                    .into_iter()
                    .map(|t| TokenRow {
                        state: if t.revoked_at.is_some() {
                            "revoked".into()
                        } else {
                            "active".into()
                        },
                        last_used: when_opt(t.last_used_at),
                        teams: t.care_teams.join(", "),
                        role: t.role.name().into(),
                        name: t.name,
                        id: t.token_id,
                    })
                    .collect();
                let users = crate::store::users::list(conn)?
                    .into_iter()
                    .map(|u| UserRow {
                        state: if u.disabled_at.is_some() {
                            "disabled".into()
                        } else {
                            "active".into()
                        },
                        created: when(u.created_at),
                        teams: u.care_teams.join(", "),
                        role: u.role.name().into(),
                        name: u.username,
                    })
                    .collect();
                let audit = crate::store::audit::list(
                    conn,
                    i64::MAX,
                    &crate::store::audit::AuditFilter {
                        actor: actor.as_deref(),
                        patient_id: patient.as_deref(),
                    },
                    AUDIT_ROWS,
                )?
                .into_iter()
                .map(|r| AuditRow {
                    at: when(crate::api::page::time(r.entry.at)),
                    actor: r.entry.actor,
                    action: r.entry.action,
                    resource: r.entry.resource,
                    patient: r.entry.patient_id.unwrap_or_default(),
                    outcome: r.entry.outcome,
                })
                .collect();
                (tokens, users, audit)
            } else {
                (Vec::new(), Vec::new(), Vec::new())
            };
            Ok((rows, tokens, users, audit))
        })
        .await;
    let (endpoints, tokens, users, audit) = match loaded {
        Ok(x) => x,
        Err(e) => return error_page(e, Some(&signed)),
    };
    render(
        &AdminPage {
            layout: Layout::new("Admin — rpm-gateway", Some(&signed)),
            admin,
            endpoints,
            tokens,
            users,
            audit,
            actor: q.actor.unwrap_or_default(),
            patient: q.patient.unwrap_or_default(),
            notice: match q
                .notice
                .as_deref()
                .and_then(|n| n.strip_prefix("redriven:"))
            {
                Some(n) => format!("{n} deliveries queued again."),
                None => String::new(),
            },
        },
        StatusCode::OK,
    )
}

/// `POST /console/admin/webhooks/{endpoint_id}/redrive` (admin).
pub async fn redrive(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    match crate::api::webhooks::redrive_endpoint_as(&st, p, id).await {
        Ok(n) => Redirect::to(&format!(
            "/console/admin?notice={}",
            urlencode(&format!("redriven:{n}"))
        ))
        .into_response(),
        Err(e) => error_page(e, Some(&signed)),
    }
}
