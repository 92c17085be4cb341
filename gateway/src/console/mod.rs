//! The web console: the care team's and the installer's pages, served by
//! the API's listener under `/console/`.
//!
//! Care managers would rather look than read, and a home box may be
//! offline, so the console is server-rendered HTML compiled into the
//! binary (askama templates, `gateway/templates/console/`), with charts as
//! inline SVG and one embedded stylesheet: no JavaScript, no build step,
//! nothing fetched at run time. It adds no rules of its own: a signed-in
//! user becomes the same [`Principal`] an API token does (role and care
//! teams), and the pages call the API's store functions and shared actions,
//! so the console shows and allows exactly what the API would (another
//! team's patient is the same 404).
//!
//! Security: sessions in an `HttpOnly; SameSite=Strict` cookie (`Secure`
//! with TLS), ended after `idle_timeout` without a request (checked on the
//! server) and after `session_lifetime`; a CSRF token in every form,
//! compared in constant time, and a POST from another origin refused; a
//! strict Content-Security-Policy with no script at all; every request
//! audited as `user:NAME` like a token's. Sign-in failures lock a username
//! out with exponential back-off ([`auth::Lockout`]).

mod admin;
pub mod auth;
#[cfg(feature = "ble")]
mod ble;
pub mod chart;
pub mod config;
mod devices;
mod pages;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

use crate::api::audit::AuditPatient;
use crate::api::auth::Principal;
use crate::api::problem::ApiError;
use crate::api::ApiState;
use crate::store::tokens::hash;
use crate::store::users::{self, UserRecord};
pub use config::ConsoleConfig;

/// The session cookie's name.
pub const COOKIE: &str = "rpm_console";

/// The stylesheet, embedded; served under a name with its hash so that it
/// can be cached for a year and still change with a release.
const STYLE: &str = include_str!("../../templates/console/console.css");

fn style_path() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let h = hex::encode(Sha256::digest(STYLE.as_bytes()));
        format!("/console/static/console-{}.css", &h[..12])
    })
}

/// The signed-in user of a request, for the pages.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The user.
    pub user: UserRecord,
    /// The session's CSRF token (every form carries it).
    pub csrf: String,
}

/// The console's routes (to be merged into the API's router).
pub fn router(state: Arc<ApiState>) -> Router<Arc<ApiState>> {
    let signed_in = Router::new()
        .route("/console/", get(pages::worklist))
        .route("/console/patients/{patient_id}", get(pages::patient))
        .route(
            "/console/patients/{patient_id}/care-time",
            post(pages::log_care_time),
        )
        .route("/console/alerts/{alert_id}", get(pages::alert))
        .route(
            "/console/alerts/{alert_id}/acknowledge",
            post(pages::acknowledge),
        )
        .route("/console/alerts/{alert_id}/resolve", post(pages::resolve))
        .route("/console/tasks/{task_id}", get(pages::task))
        .route("/console/tasks/{task_id}/claim", post(pages::claim))
        .route("/console/tasks/{task_id}/complete", post(pages::complete))
        .route("/console/devices", get(devices::devices))
        .route("/console/devices/assign", post(devices::assign))
        .route(
            "/console/devices/{device_id}/unassign",
            post(devices::unassign),
        )
        .route("/console/quarantine/{id}", get(devices::quarantine_entry))
        .route(
            "/console/quarantine/{id}/reprocess",
            post(devices::reprocess),
        )
        .route("/console/admin", get(admin::admin))
        .route(
            "/console/admin/webhooks/{endpoint_id}/redrive",
            post(admin::redrive),
        )
        .route("/console/signout", post(pages::signout));
    #[cfg(feature = "ble")]
    let signed_in = signed_in
        .route("/console/ble", get(ble::page))
        .route("/console/ble/scan", post(ble::scan))
        .route("/console/ble/pair", post(ble::pair));
    let signed_in = signed_in
        .route("/console/{*rest}", get(pages::not_found))
        .route_layer(middleware::from_fn_with_state(state.clone(), session));
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route(
            "/console/signin",
            get(pages::signin_form).post(pages::signin),
        )
        .route(style_path(), get(style))
        .merge(signed_in)
        .route_layer(middleware::from_fn_with_state(state, headers))
}

/// The stylesheet (immutable under its hashed name).
async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        STYLE,
    )
        .into_response()
}

/// Security headers on every console response.
async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        // Not `no-referrer`: with it browsers send `Origin: null` on the
        // console's own form posts, and the origin check could not tell
        // them from a forged one. Other sites still get no referrer.
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The session cookie's value, if the request has one.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `Set-Cookie` for a new session (`Some`) or one that ends (`None`).
pub fn set_cookie(st: &ApiState, secret: Option<&str>) -> HeaderValue {
    let secure = if st.cfg.tls() { "; Secure" } else { "" };
    let text = match secret {
        Some(s) => format!("{COOKIE}={s}; Path=/console; HttpOnly; SameSite=Strict{secure}"),
        None => format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The sign-in page, saying why when a session ended.
fn to_signin(st: &ApiState, reason: Option<&str>) -> Response {
    let to = match reason {
        Some(r) => format!("/console/signin?reason={r}"),
        None => "/console/signin".to_string(),
    };
    let mut resp = Redirect::to(&to).into_response();
    if reason.is_some() {
        resp.headers_mut()
            .insert(header::SET_COOKIE, set_cookie(st, None));
    }
    resp
}

/// A POST must come from a page of this console: refused when the
/// browser says it comes from another origin.
pub fn same_origin(st: &ApiState, headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        None => true,
        Some(origin) => {
            let base = st.base_url(headers);
            let base = base.trim_end_matches('/');
            origin == base || base.starts_with(&format!("{origin}/"))
        }
    }
}

/// The user a console principal acts as.
pub fn principal(u: &UserRecord) -> Principal {
    Principal {
        token_id: format!("user:{}", u.username),
        name: u.username.clone(),
        role: u.role,
        teams: u.care_teams.clone(),
        devices: Vec::new(),
        profiles: Vec::new(),
    }
}

/// Middleware of every signed-in page: finds the session (or sends the
/// browser to sign in, saying why when it ended), checks a POST's origin
/// and CSRF token, then audits the request as the user, as the API's
/// guard does for tokens.
async fn session(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let Some(secret) = cookie(req.headers()) else {
        return to_signin(&st, None);
    };
    let id_hash = hash(&secret);
    let (idle, lifetime) = (st.console.idle_timeout, st.console.session_lifetime);
    let found = st
        .db
        .run(move |s| {
            let now = crate::store::now_ms();
            let Some((sess, user)) = users::session_get(s.conn(), &id_hash)? else {
                return Ok(Err(None));
            };
            if let Some(why) = auth::expired(sess.created_at, sess.last_seen, now, idle, lifetime) {
                let tx = s.transaction()?;
                users::session_delete(&tx, &id_hash)?;
                crate::store::audit::append(
                    &tx,
                    &crate::store::audit::AuditEntry {
                        at: now,
                        actor: format!("user:{}", user.username),
                        action: format!("console.signout.{}", why.reason()),
                        resource: "/console".into(),
                        patient_id: None,
                        outcome: 303,
                        detail: None,
                    },
                )?;
                tx.commit()?;
                return Ok(Err(Some(why)));
            }
            // Best effort: a store busy with a long write must not fail
            // the page (the session then counts idle from its previous
            // request, which errs on the safe side).
            if let Err(e) = users::session_touch(s.conn(), &id_hash, now) {
                tracing::warn!(error = %e, "console: session activity not recorded");
            }
            Ok(Ok((sess, user)))
        })
        .await;
    let (sess, user) = match found {
        Ok(Ok(found)) => found,
        Ok(Err(why)) => return to_signin(&st, Some(why.map_or("signedout", |w| w.reason()))),
        Err(e) => return pages::error_page(e, None),
    };
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let resource = req.uri().path().to_string();
    let named_patient = req
        .uri()
        .path()
        .strip_prefix("/console/patients/")
        .map(|r| r.split('/').next().unwrap_or_default().to_string());
    let signed = Signed {
        user: user.clone(),
        csrf: sess.csrf.clone(),
    };
    let p = principal(&user);
    let actor = p.token_id.clone();
    let mut req = req;
    if method == Method::POST {
        if !same_origin(&st, req.headers()) {
            return refused(&st, &actor, &method, &route, &resource, named_patient).await;
        }
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, st.cfg.max_body_bytes).await else {
            return pages::error_page(ApiError::TooLarge, Some(&signed));
        };
        let presented = url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if !auth::same_token(&presented, &sess.csrf) {
            return refused(&st, &actor, &method, &route, &resource, named_patient).await;
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(p);
    req.extensions_mut().insert(signed);
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
        .record(
            &actor,
            &format!("{method} {route}"),
            &resource,
            patient,
            status,
        )
        .await
    {
        Ok(()) => response,
        Err(_) if method == Method::GET => pages::error_page(
            ApiError::Unavailable("the audit log cannot be written; retry shortly".into()),
            None,
        ),
        Err(_) => response,
    }
}

/// A POST without its CSRF token, or from another origin: 403, audited.
async fn refused(
    st: &ApiState,
    actor: &str,
    method: &Method,
    route: &str,
    resource: &str,
    patient: Option<String>,
) -> Response {
    let _ = st
        .audit
        .record(actor, &format!("{method} {route}"), resource, patient, 403)
        .await;
    st.metrics.api_request(method.as_str(), route, 403);
    let mut resp = pages::error_page(ApiError::Forbidden, None);
    *resp.status_mut() = StatusCode::FORBIDDEN;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_session_cookie_is_taken() {
        let mut h = HeaderMap::new();
        let id = "ab".repeat(32);
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={id}; x=y")).unwrap(),
        );
        assert_eq!(cookie(&h), Some(id));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("rpm_console=not-hex"),
        );
        assert_eq!(cookie(&h), None);
        h.insert(header::COOKIE, HeaderValue::from_static("rpm_console_x=ab"));
        assert_eq!(cookie(&h), None);
        assert_eq!(cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn the_stylesheet_is_served_under_its_hash() {
        let p = style_path();
        assert!(p.starts_with("/console/static/console-") && p.ends_with(".css"));
        assert_eq!(p.len(), "/console/static/console-".len() + 12 + 4);
    }
}
