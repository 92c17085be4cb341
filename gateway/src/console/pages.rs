//! The console's pages: each handler reads through the API's store
//! functions with the signed-in user's [`Principal`], acts through the
//! API's shared actions (`acknowledge_as`, `complete_as`, ...), and renders
//! a template into a view made of ready-to-print strings (the templates
//! hold no logic beyond loops and conditions).
//!
//! A form that succeeds answers with a redirect to the page it changed
//! (post/redirect/get), so a reload never repeats an action; one that
//! fails shows the page again with the reason.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::{DateTime, TimeDelta, Utc};
use device_profiles::Metric;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::chart::{self, AlertAt, Chart, Limit};
use super::{auth, style_path, Signed};
use crate::api::alerts::{self as api_alerts, AlertDetail};
use crate::api::audit::AuditPatient;
use crate::api::auth::Principal;
use crate::api::problem::ApiError;
use crate::api::ApiState;
use crate::care::tasks::TaskView;
use crate::care::worklist as care_worklist;
use crate::store::users;

/// What every page's frame needs.
pub struct Layout {
    /// Page title.
    pub title: String,
    /// The stylesheet's URL.
    pub style: &'static str,
    /// The signed-in user (none on the sign-in page).
    pub user: Option<String>,
    /// The session's CSRF token.
    pub csrf: String,
    /// Whether the user may act on alerts and tasks.
    pub can_write: bool,
    /// Whether the user may read operational data (the admin page).
    pub operator: bool,
}

impl Layout {
    pub(super) fn new(title: impl Into<String>, signed: Option<&Signed>) -> Layout {
        Layout {
            title: title.into(),
            style: style_path(),
            user: signed.map(|s| s.user.username.clone()),
            csrf: signed.map(|s| s.csrf.clone()).unwrap_or_default(),
            operator: signed.is_some_and(|s| {
                matches!(
                    s.user.role,
                    crate::store::tokens::Role::Admin | crate::store::tokens::Role::ReadOnly
                )
            }),
            can_write: signed.is_some_and(|s| {
                matches!(
                    s.user.role,
                    crate::store::tokens::Role::Admin | crate::store::tokens::Role::CareTeam
                )
            }),
        }
    }
}

pub(super) fn render(t: &impl Template, status: StatusCode) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console: a page could not be rendered");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

pub(super) fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

pub(super) fn when_opt(t: Option<DateTime<Utc>>) -> String {
    t.map(when).unwrap_or_else(|| "—".into())
}

fn num(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    layout: Layout,
    status: u16,
    message: String,
}

/// An error as a page: the status the API would answer, and its message
/// (a 404 for another team's patient reads exactly as for a missing one).
pub fn error_page(e: ApiError, signed: Option<&Signed>) -> Response {
    let status = e.status();
    let message = match status {
        StatusCode::FORBIDDEN => "You may not do this.".to_string(),
        StatusCode::NOT_FOUND => format!("Not found: {e}."),
        _ => e.to_string(),
    };
    render(
        &ErrorPage {
            layout: Layout::new(format!("{} — rpm-gateway", status.as_u16()), signed),
            status: status.as_u16(),
            message,
        },
        status,
    )
}

/// Any other console path.
pub async fn not_found(Extension(signed): Extension<Signed>) -> Response {
    error_page(ApiError::NotFound("page"), Some(&signed))
}

// ---------------------------------------------------------------- sign-in

#[derive(Template)]
#[template(path = "console/signin.html")]
struct SigninPage {
    layout: Layout,
    notice: String,
    error: String,
    username: String,
}

/// `GET /console/signin` parameters.
#[derive(Debug, Deserialize)]
pub struct SigninQuery {
    reason: Option<String>,
}

/// `GET /console/signin`.
pub async fn signin_form(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<SigninQuery>,
) -> Response {
    let notice = match q.reason.as_deref() {
        Some("idle") => format!(
            "You were signed out after {} without activity. Sign in again to continue.",
            humantime::format_duration(st.console.idle_timeout)
        ),
        Some("expired") => "Your session reached its maximum length. Sign in again.".into(),
        Some("signedout") => "You are signed out.".into(),
        _ => String::new(),
    };
    render(
        &SigninPage {
            layout: Layout::new("Sign in — rpm-gateway", None),
            notice,
            error: String::new(),
            username: String::new(),
        },
        StatusCode::OK,
    )
}

/// `POST /console/signin` form.
#[derive(Debug, Deserialize)]
pub struct SigninForm {
    username: String,
    password: String,
}

enum SigninOutcome {
    Ok { secret: String },
    Wrong,
    Locked { minutes: i64 },
}

/// `POST /console/signin`: checks the lock-out, then the password; a
/// success starts a session and sets its cookie.
pub async fn signin(
    State(st): State<Arc<ApiState>>,
    client: Option<Extension<crate::api::limits::ClientAddr>>,
    headers: HeaderMap,
    Form(form): Form<SigninForm>,
) -> Response {
    if !super::same_origin(&st, &headers) {
        return error_page(ApiError::Forbidden, None);
    }
    // Failures count against the client address too, as the API's
    // authentication failures do: many usernames tried from one address
    // are slowed down as well.
    let ip = client.map(|c| c.0 .0);
    if let Some(wait) = ip.and_then(|ip| st.limits.blocked(ip)) {
        st.metrics.api_rate_limited("client");
        return error_page(
            ApiError::TooManyRequests(crate::api::limits::retry_after(wait)),
            None,
        );
    }
    let username = form.username.trim().to_string();
    let password = form.password;
    let lockout = auth::Lockout {
        after: st.console.lockout_after,
        base: st.console.lockout_base,
        max: st.console.lockout_max,
    };
    let (idle, lifetime) = (st.console.idle_timeout, st.console.session_lifetime);
    let name = username.clone();
    let outcome = st
        .db
        .run(move |s| {
            let now = crate::store::now_ms();
            let well_formed = users::check_username(&name).is_ok() && password.len() <= 1024;
            let audit = |conn: &rusqlite::Connection, action: &str, outcome: i64| {
                crate::store::audit::append(
                    conn,
                    &crate::store::audit::AuditEntry {
                        at: now,
                        actor: if well_formed {
                            format!("user:{name}")
                        } else {
                            "anonymous".into()
                        },
                        action: action.into(),
                        resource: "/console/signin".into(),
                        patient_id: None,
                        outcome,
                        detail: None,
                    },
                )
            };
            if !well_formed {
                audit(s.conn(), "console.signin.failed", 401)?;
                return Ok(SigninOutcome::Wrong);
            }
            let (failures, last) = users::failures(s.conn(), &name)?;
            if let Some(until) = lockout.locked_until(failures, last) {
                if until > now {
                    audit(s.conn(), "console.signin.locked", 429)?;
                    return Ok(SigninOutcome::Locked {
                        minutes: (until - now + 59_999) / 60_000,
                    });
                }
            }
            let creds = users::credentials(s.conn(), &name)?;
            if !auth::verify_password(&password, creds.as_ref().map(|c| c.1.as_str())) {
                let tx = s.transaction()?;
                users::record_failure(&tx, &name, now)?;
                audit(&tx, "console.signin.failed", 401)?;
                tx.commit()?;
                return Ok(SigninOutcome::Wrong);
            }
            let secret = auth::random_token().map_err(|_| ApiError::Internal)?;
            let csrf = auth::random_token().map_err(|_| ApiError::Internal)?;
            let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            let tx = s.transaction()?;
            users::clear_failures(&tx, &name)?;
            users::session_prune(&tx, now - ms(idle), now - ms(lifetime))?;
            users::session_create(
                &tx,
                &users::SessionRow {
                    id_hash: crate::store::tokens::hash(&secret),
                    username: name.clone(),
                    created_at: now,
                    last_seen: now,
                    csrf,
                },
            )?;
            audit(&tx, "console.signin", 303)?;
            tx.commit()?;
            Ok(SigninOutcome::Ok { secret })
        })
        .await;
    let page = |error: String, status| {
        render(
            &SigninPage {
                layout: Layout::new("Sign in — rpm-gateway", None),
                notice: String::new(),
                error,
                username: username.clone(),
            },
            status,
        )
    };
    match outcome {
        Ok(SigninOutcome::Ok { secret }) => {
            let mut resp = Redirect::to("/console/").into_response();
            resp.headers_mut()
                .insert(header::SET_COOKIE, super::set_cookie(&st, Some(&secret)));
            resp
        }
        Ok(SigninOutcome::Wrong) => {
            if let Some(ip) = ip {
                st.limits.failure(ip);
            }
            page(
                "Wrong username or password.".into(),
                StatusCode::UNAUTHORIZED,
            )
        }
        Ok(SigninOutcome::Locked { minutes }) => page(
            format!(
                "Too many failed sign-ins for this username. Try again in {minutes} minute(s)."
            ),
            StatusCode::TOO_MANY_REQUESTS,
        ),
        Err(e) => error_page(e, None),
    }
}

/// `POST /console/signout`.
pub async fn signout(State(st): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    if let Some(secret) = super::cookie(&headers) {
        let id = crate::store::tokens::hash(&secret);
        let _ = st
            .db
            .run(move |s| Ok(users::session_delete(s.conn(), &id)?))
            .await;
    }
    super::to_signin(&st, Some("signedout"))
}

// --------------------------------------------------------------- worklist

struct WorklistRow {
    patient_id: String,
    team: String,
    reasons: String,
    tier: String,
    severity: String,
    open_alerts: i64,
    follow_ups: String,
    last_reading: String,
    attention: bool,
}

#[derive(Template)]
#[template(path = "console/worklist.html")]
struct WorklistPage {
    layout: Layout,
    rows: Vec<WorklistRow>,
    next: String,
}

/// `GET /console/` parameters.
#[derive(Debug, Deserialize)]
pub struct WorklistQuery {
    after: Option<String>,
}

/// Rows per worklist page.
const WORKLIST_PAGE: usize = 100;

/// `GET /console/`: the worklist of the user's teams (admin and read-only:
/// every patient), most urgent first, one click to each patient.
pub async fn worklist(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
    Query(q): Query<WorklistQuery>,
) -> Response {
    let result = async {
        p.require_read()?;
        let after = match q.after.as_deref() {
            Some(c) => Some(
                care_worklist::parse_cursor_key(c)
                    .ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))?,
            ),
            None => None,
        };
        let teams = p.scope().map(<[String]>::to_vec);
        let cfg = st.care.worklist.clone();
        st.db
            .run(move |s| {
                Ok(care_worklist::page(
                    s.conn(),
                    &cfg,
                    teams.as_deref(),
                    Utc::now(),
                    after,
                    WORKLIST_PAGE + 1,
                )?)
            })
            .await
    }
    .await;
    let mut items = match result {
        Ok(i) => i,
        Err(e) => return error_page(e, Some(&signed)),
    };
    let next = if items.len() > WORKLIST_PAGE {
        items.truncate(WORKLIST_PAGE);
        items.last().map(|i| i.cursor_key()).unwrap_or_default()
    } else {
        String::new()
    };
    let rows = items
        .into_iter()
        .map(|i| WorklistRow {
            attention: i.overdue_follow_ups > 0
                || matches!(i.top_severity.as_deref(), Some("critical" | "urgent")),
            team: i.care_team.clone().unwrap_or_else(|| "—".into()),
            reasons: if i.reasons.is_empty() {
                "nothing pending".into()
            } else {
                i.reasons.join("; ")
            },
            tier: i.tier.clone(),
            severity: i.top_severity.clone().unwrap_or_else(|| "—".into()),
            open_alerts: i.open_alerts,
            follow_ups: if i.overdue_follow_ups > 0 {
                format!("{} ({} overdue)", i.open_follow_ups, i.overdue_follow_ups)
            } else {
                i.open_follow_ups.to_string()
            },
            last_reading: when_opt(i.last_reading_at),
            patient_id: i.patient_id,
        })
        .collect();
    render(
        &WorklistPage {
            layout: Layout::new("Worklist — rpm-gateway", Some(&signed)),
            rows,
            next,
        },
        StatusCode::OK,
    )
}

// ---------------------------------------------------------------- patient

struct LatestRow {
    metric: String,
    value: String,
    unit: String,
    loinc: String,
    at: String,
}

struct ValueRow {
    at: String,
    value: String,
}

struct ChartView {
    metric: String,
    title: String,
    unit: String,
    chart: Chart,
    rows: Vec<ValueRow>,
    more: usize,
}

struct DeviceRow {
    device_id: String,
    last_seen: String,
    battery: String,
    connection: String,
    source: String,
    bonded: bool,
}

struct AlertRow {
    alert_id: String,
    severity: String,
    status: String,
    message: String,
    fired_at: String,
}

struct TaskRow {
    task_id: String,
    problem: String,
    status: String,
    due: String,
    overdue: bool,
}

struct OverrideRow {
    rule: String,
    text: String,
}

#[derive(Template)]
#[template(path = "console/patient.html")]
struct PatientPage {
    layout: Layout,
    patient_id: String,
    team: String,
    plans: String,
    tier: String,
    data_days: String,
    care_minutes: String,
    days: i64,
    ranges: Vec<(i64, bool)>,
    latest: Vec<LatestRow>,
    charts: Vec<ChartView>,
    overrides: Vec<OverrideRow>,
    devices: Vec<DeviceRow>,
    alerts: Vec<AlertRow>,
    tasks: Vec<TaskRow>,
    activities: Vec<&'static str>,
    notice: String,
    form_id: String,
}

/// `GET /console/patients/{id}` parameters.
#[derive(Debug, Deserialize)]
pub struct PatientQuery {
    days: Option<i64>,
    notice: Option<String>,
}

/// Values listed under a chart (newest first); the chart draws them all.
const TABLE_ROWS: usize = 60;

/// `GET /console/patients/{patient_id}`: charts over 7, 30 or 90 days
/// with the patient's limit lines and alerts, latest values, care plans
/// and overrides, devices, open alerts and tasks, care time.
pub async fn patient(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
    axum::extract::Path(patient_id): axum::extract::Path<String>,
    Query(q): Query<PatientQuery>,
) -> Response {
    let days = q.days.filter(|d| [7, 30, 90].contains(d)).unwrap_or(7);
    let notice = match q.notice.as_deref() {
        Some("care-time") => "Care time logged.".to_string(),
        _ => String::new(),
    };
    match patient_view(&st, p, patient_id.clone(), days, Utc::now()).await {
        Ok(mut view) => {
            view.layout = Layout::new(
                format!("Patient {} — rpm-gateway", view.patient_id),
                Some(&signed),
            );
            view.notice = notice;
            let mut resp = render(&view, StatusCode::OK);
            resp.extensions_mut().insert(AuditPatient(patient_id));
            resp
        }
        Err(e) => error_page(e, Some(&signed)),
    }
}

/// Reads and draws everything the patient page shows (also what the
/// benchmark times).
async fn patient_view(
    st: &Arc<ApiState>,
    p: Principal,
    patient_id: String,
    days: i64,
    now: DateTime<Utc>,
) -> Result<PatientPage, ApiError> {
    p.require_read()?;
    let rules = st.rules.clone();
    let expected = st.care.worklist.expected_data_days;
    st.db
        .run(move |s| {
            let conn = s.conn();
            p.check_patient(conn, &patient_id, "patient")?;
            let rec = s
                .patient(&patient_id)?
                .ok_or(ApiError::NotFound("patient"))?;
            let conn = s.conn();
            let from = now - TimeDelta::days(days);
            // Latest values.
            let mut latest = Vec::new();
            let mut units: BTreeMap<&'static str, String> = BTreeMap::new();
            for m in Metric::ALL {
                if let Some(r) = crate::store::queries::latest_reading(conn, &patient_id, m.name())?
                {
                    units.insert(m.name(), r.unit.clone());
                    latest.push(LatestRow {
                        metric: m.display().to_string(),
                        value: num(r.value),
                        unit: r.unit,
                        loinc: r.loinc,
                        at: when(r.measured_at),
                    });
                }
            }
            // Alerts of the window (marks) and open ones (the list).
            let alerts = crate::store::alerts::page(
                conn,
                &crate::store::alerts::AlertPage {
                    status: None,
                    severity: None,
                    patient_id: Some(patient_id.clone()),
                    care_team: None,
                    scope_teams: None,
                    before: None,
                    limit: 500,
                },
            )?;
            // Limits: threshold and average tests of the patient's rules.
            let overrides: alerting_rules::Overrides =
                serde_json::from_value(rec.overrides.clone()).unwrap_or_default();
            let mut limits: BTreeMap<&'static str, Vec<Limit>> = BTreeMap::new();
            let mut rule_metric: BTreeMap<String, &'static str> = BTreeMap::new();
            if let Some(rules) = &rules {
                for rule in rules.rules_for(&rec.care_plans) {
                    if let Some(m) = rule.condition.metrics().first() {
                        rule_metric.insert(rule.id.clone(), m.name());
                    }
                    if overrides.is_disabled(&rule.id) {
                        continue;
                    }
                    let eff = alerting_rules::overrides::effective_limits(
                        rule,
                        overrides.0.get(&rule.id),
                    );
                    for leaf in rule.condition.leaves() {
                        let (alerting_rules::rule::LeafKind::Threshold { metric, .. }
                        | alerting_rules::rule::LeafKind::Average { metric, .. }) = &leaf.kind
                        else {
                            continue;
                        };
                        let key = alerting_rules::rule::param_key(&leaf.name, "limit");
                        if let Some(l) = eff.get(&key) {
                            limits.entry(metric.name()).or_default().push(Limit {
                                value: l.value,
                                label: format!(
                                    "{} {} {}{}",
                                    rule.id,
                                    key,
                                    l.display,
                                    if l.overridden {
                                        " (patient override)"
                                    } else {
                                        ""
                                    }
                                ),
                                overridden: l.overridden,
                            });
                        }
                    }
                }
            }
            // Charts.
            let mut charts = Vec::new();
            for m in Metric::ALL {
                // A metric never measured has no chart.
                let Some(unit) = units.get(m.name()).cloned() else {
                    continue;
                };
                let points: Vec<(DateTime<Utc>, f64)> = crate::store::queries::series(
                    conn,
                    &patient_id,
                    m.name(),
                    from.timestamp_millis(),
                    now.timestamp_millis() + 1,
                )?
                .into_iter()
                .filter_map(|(t, v)| Some((DateTime::from_timestamp_millis(t)?, v)))
                .collect();
                if points.is_empty() {
                    continue;
                }
                let marks: Vec<AlertAt> = alerts
                    .iter()
                    .filter(|a| rule_metric.get(&a.alert.rule_id) == Some(&m.name()))
                    .filter_map(|a| {
                        Some(AlertAt {
                            at: a.alert.measured_at?,
                            alert_id: a.alert.alert_id.clone(),
                            title: format!("{}: {}", a.alert.severity, a.alert.message),
                        })
                    })
                    .collect();
                let chart = chart::draw(
                    &points,
                    from,
                    now,
                    limits.get(m.name()).map(Vec::as_slice).unwrap_or(&[]),
                    &marks,
                );
                let rows = points
                    .iter()
                    .rev()
                    .take(TABLE_ROWS)
                    .map(|(t, v)| ValueRow {
                        at: when(*t),
                        value: num(*v),
                    })
                    .collect();
                charts.push(ChartView {
                    metric: m.name().to_string(),
                    title: m.display().to_string(),
                    unit,
                    chart,
                    rows,
                    more: points.len().saturating_sub(TABLE_ROWS),
                });
            }
            let devices = crate::store::registry::devices_page(
                conn,
                &crate::store::registry::DevicePage {
                    patient_id: Some(patient_id.clone()),
                    limit: 100,
                    ..Default::default()
                },
            )?
            .into_iter()
            .map(|d| DeviceRow {
                last_seen: when_opt(d.last_seen_at),
                battery: d
                    .battery_pct
                    .map(|b| format!("{b} %"))
                    .unwrap_or_else(|| "—".into()),
                connection: d.connection.unwrap_or_else(|| "—".into()),
                source: d.source.unwrap_or_else(|| "—".into()),
                bonded: d.bonded,
                device_id: d.device_id,
            })
            .collect();
            let tasks = crate::store::tasks::list(
                conn,
                &crate::store::tasks::TaskQuery {
                    scope_json: None,
                    care_team: None,
                    patient_id: Some(patient_id.clone()),
                    statuses: Vec::new(),
                    overdue: false,
                    after: None,
                    limit: 100,
                },
            )?
            .into_iter()
            .map(|t| crate::care::tasks::view(conn, t, false))
            .collect::<Result<Vec<TaskView>, _>>()?
            .into_iter()
            .map(|t| TaskRow {
                task_id: t.task_id,
                problem: t.problem,
                status: t.status,
                due: when(t.due_at),
                overdue: t.overdue,
            })
            .collect();
            let risk = crate::store::risk::get(conn, &patient_id)?;
            let minutes = crate::store::care_time::counted_between(
                conn,
                &patient_id,
                (now - TimeDelta::days(30)).timestamp_millis(),
                now.timestamp_millis() + 1,
            )?
            .iter()
            .map(|c| c.seconds)
            .sum::<i64>()
                / 60;
            Ok(PatientPage {
                layout: Layout::new("", None),
                team: rec.care_team.clone().unwrap_or_else(|| "—".into()),
                plans: if rec.care_plans.is_empty() {
                    "none".into()
                } else {
                    rec.care_plans.join(", ")
                },
                tier: risk
                    .as_ref()
                    .map(|r| r.tier.clone())
                    .unwrap_or_else(|| "unknown".into()),
                data_days: format!(
                    "{} of {expected} expected",
                    risk.as_ref().map(|r| r.data_days_30).unwrap_or(0)
                ),
                care_minutes: format!("{minutes} min in the last 30 days"),
                days,
                ranges: [7, 30, 90].into_iter().map(|d| (d, d == days)).collect(),
                latest,
                charts,
                overrides: overrides
                    .0
                    .iter()
                    .map(|(rule, o)| OverrideRow {
                        rule: rule.clone(),
                        text: if o.disabled {
                            "disabled".into()
                        } else {
                            o.limits
                                .iter()
                                .map(|(k, v)| format!("{k} = {v}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                    })
                    .collect(),
                devices,
                alerts: alerts
                    .iter()
                    .filter(|a| a.alert.status != "resolved")
                    .map(|a| AlertRow {
                        alert_id: a.alert.alert_id.clone(),
                        severity: a.alert.severity.clone(),
                        status: a.alert.status.clone(),
                        message: a.alert.message.clone(),
                        fired_at: when(a.alert.fired_at),
                    })
                    .collect(),
                tasks,
                activities: crate::care::time_log::ACTIVITIES.to_vec(),
                notice: String::new(),
                form_id: auth::random_token()
                    .map(|t| t[..32].to_string())
                    .map_err(|_| ApiError::Internal)?,
                patient_id: rec.patient_id,
            })
        })
        .await
}

/// `POST /console/patients/{id}/care-time` form.
#[derive(Debug, Deserialize)]
pub struct CareTimeForm {
    minutes: u32,
    activity: String,
    #[serde(default)]
    interactive: Option<String>,
    #[serde(default)]
    note: String,
    /// Makes a resubmitted form (back button, double click) log once.
    form_id: String,
}

/// `POST /console/patients/{patient_id}/care-time`.
pub async fn log_care_time(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
    axum::extract::Path(patient_id): axum::extract::Path<String>,
    Form(form): Form<CareTimeForm>,
) -> Response {
    let entry = crate::care::time_log::NewEntry {
        entry_id: None,
        minutes: Some(form.minutes),
        performed_at: None,
        started_at: None,
        ended_at: None,
        activity: form.activity,
        interactive: form.interactive.is_some(),
        note: Some(form.note).filter(|n| !n.trim().is_empty()),
        corrects: None,
    };
    let key = Some(format!("console-{}", form.form_id)).filter(|k| k.len() <= 100);
    match crate::api::care_time::log_as(&st, p, patient_id.clone(), entry, key).await {
        Ok(_) => Redirect::to(&format!(
            "/console/patients/{}?notice=care-time",
            urlencode(&patient_id)
        ))
        .into_response(),
        Err(e) => error_page(e, Some(&signed)),
    }
}

pub(super) fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

// ------------------------------------------------------------------ alert

struct EvidenceRow {
    metric: String,
    value: String,
    unit: String,
    loinc: String,
    at: String,
}

struct HistoryRow {
    at: String,
    kind: String,
    actor: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "console/alert.html")]
struct AlertPage {
    layout: Layout,
    alert_id: String,
    patient_id: String,
    rule: String,
    severity: String,
    status: String,
    message: String,
    fired_at: String,
    acknowledged: String,
    snoozed_until: String,
    resolved: String,
    evidence: Vec<EvidenceRow>,
    limits: Vec<(String, String)>,
    history: Vec<HistoryRow>,
    resolved_already: bool,
    error: String,
}

fn alert_page(d: AlertDetail, signed: &Signed, error: String) -> AlertPage {
    let a = d.alert;
    let evidence = a
        .evidence
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| EvidenceRow {
                    metric: r["metric"].as_str().unwrap_or_default().to_string(),
                    value: r["value"].as_f64().map(num).unwrap_or_default(),
                    unit: r["unit"].as_str().unwrap_or_default().to_string(),
                    loinc: r["loinc"].as_str().unwrap_or_default().to_string(),
                    at: r["measured_at"].as_str().unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let limits = a
        .limits
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let shown = match &v["display"] {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Null => v.to_string(),
                        other => other.to_string(),
                    };
                    let over = if v["overridden"].as_bool() == Some(true) {
                        " (patient override)"
                    } else {
                        ""
                    };
                    (k.clone(), format!("{shown}{over}"))
                })
                .collect()
        })
        .unwrap_or_default();
    AlertPage {
        layout: Layout::new(format!("Alert {} — rpm-gateway", a.alert_id), Some(signed)),
        rule: format!("{} v{} ({})", a.rule_id, a.rule_version, a.pack),
        severity: a.severity,
        resolved_already: a.status == "resolved",
        status: a.status,
        message: a.message,
        fired_at: when(a.fired_at),
        acknowledged: match (&a.acknowledged_by, a.acknowledged_at) {
            (Some(by), Some(at)) => format!(
                "{} by {}{}",
                when(at),
                by,
                a.ack_note
                    .as_ref()
                    .map(|n| format!(": {n}"))
                    .unwrap_or_default()
            ),
            _ => "—".into(),
        },
        snoozed_until: when_opt(a.snooze_until),
        resolved: match (a.resolved_at, &a.resolved_by) {
            (Some(at), Some(by)) => format!("{} by {by}", when(at)),
            (Some(at), None) => when(at),
            _ => "—".into(),
        },
        evidence,
        limits,
        history: d
            .history
            .into_iter()
            .map(|h| HistoryRow {
                at: when(h.at),
                kind: h.kind,
                actor: h.actor.unwrap_or_else(|| "gateway".into()),
                detail: match &h.detail {
                    serde_json::Value::Object(m) if m.is_empty() => String::new(),
                    v => v.to_string(),
                },
            })
            .collect(),
        alert_id: a.alert_id,
        patient_id: a.patient_id,
        error,
    }
}

/// `GET /console/alerts/{alert_id}`: evidence, limits, history, actions.
pub async fn alert(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
    axum::extract::Path(alert_id): axum::extract::Path<String>,
) -> Response {
    let loaded = async {
        p.require_read()?;
        st.db
            .run(move |s| api_alerts::load(s.conn(), &p, &alert_id))
            .await
    }
    .await;
    match loaded {
        Ok(d) => {
            let patient = d.alert.patient_id.clone();
            let mut resp = render(&alert_page(d, &signed, String::new()), StatusCode::OK);
            resp.extensions_mut().insert(AuditPatient(patient));
            resp
        }
        Err(e) => error_page(e, Some(&signed)),
    }
}

/// `POST /console/alerts/{id}/acknowledge` form.
#[derive(Debug, Deserialize)]
pub struct AckForm {
    #[serde(default)]
    note: String,
    #[serde(default)]
    snooze: String,
}

/// `POST /console/alerts/{id}/resolve` form.
#[derive(Debug, Deserialize)]
pub struct ResolveForm {
    #[serde(default)]
    note: String,
}

pub(super) fn nonempty(s: String) -> Option<String> {
    Some(s).filter(|s| !s.trim().is_empty())
}

/// After an action: back to the page (the audit names the patient), or
/// the page again with why it failed.
async fn after_alert_action(
    st: &Arc<ApiState>,
    signed: &Signed,
    p: Principal,
    alert_id: String,
    done: Result<AlertDetail, ApiError>,
) -> Response {
    match done {
        Ok(d) => {
            let mut resp =
                Redirect::to(&format!("/console/alerts/{}", urlencode(&alert_id))).into_response();
            resp.extensions_mut()
                .insert(AuditPatient(d.alert.patient_id));
            resp
        }
        Err(e @ (ApiError::BadRequest(_) | ApiError::Conflict(_))) => {
            let id = alert_id.clone();
            match st
                .db
                .run(move |s| api_alerts::load(s.conn(), &p, &id))
                .await
            {
                Ok(d) => render(&alert_page(d, signed, e.to_string()), e.status()),
                Err(e) => error_page(e, Some(signed)),
            }
        }
        Err(e) => error_page(e, Some(signed)),
    }
}

/// `POST /console/alerts/{alert_id}/acknowledge`.
pub async fn acknowledge(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
    axum::extract::Path(alert_id): axum::extract::Path<String>,
    Form(form): Form<AckForm>,
) -> Response {
    let done = api_alerts::acknowledge_as(
        &st,
        p.clone(),
        alert_id.clone(),
        nonempty(form.note),
        nonempty(form.snooze),
    )
    .await;
    after_alert_action(&st, &signed, p, alert_id, done).await
}

/// `POST /console/alerts/{alert_id}/resolve`.
pub async fn resolve(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
    axum::extract::Path(alert_id): axum::extract::Path<String>,
    Form(form): Form<ResolveForm>,
) -> Response {
    let done = api_alerts::resolve_as(&st, p.clone(), alert_id.clone(), nonempty(form.note)).await;
    after_alert_action(&st, &signed, p, alert_id, done).await
}

// ------------------------------------------------------------------- task

#[derive(Template)]
#[template(path = "console/task.html")]
struct TaskPage {
    layout: Layout,
    task_id: String,
    patient_id: String,
    problem: String,
    pathway: String,
    priority: String,
    status: String,
    opened: String,
    claim_due: String,
    due: String,
    overdue: bool,
    claimed: String,
    done: String,
    outcome: String,
    note: String,
    alert_ids: Vec<String>,
    outcomes: Vec<&'static str>,
    is_done: bool,
    is_claimed: bool,
    error: String,
}

fn task_page(t: TaskView, signed: &Signed, error: String) -> TaskPage {
    TaskPage {
        layout: Layout::new(format!("Task {} — rpm-gateway", t.task_id), Some(signed)),
        patient_id: t.patient_id,
        problem: t.problem,
        pathway: t.pathway,
        priority: t.priority,
        is_done: t.status == "done",
        is_claimed: t.status == "claimed",
        status: t.status,
        opened: when(t.opened_at),
        claim_due: when_opt(t.claim_due_at),
        due: when(t.due_at),
        overdue: t.overdue,
        claimed: match (&t.claimed_by, t.claimed_at) {
            (Some(by), Some(at)) => format!("{} by {by}", when(at)),
            _ => "—".into(),
        },
        done: match (&t.done_by, t.done_at) {
            (Some(by), Some(at)) => format!("{} by {by}", when(at)),
            _ => "—".into(),
        },
        outcome: t.outcome.unwrap_or_else(|| "—".into()),
        note: t.note.unwrap_or_default(),
        alert_ids: t.alert_ids,
        outcomes: crate::care::TaskOutcome::ALL
            .iter()
            .map(|o| o.name())
            .collect(),
        task_id: t.task_id,
        error,
    }
}

/// `GET /console/tasks/{task_id}`.
pub async fn task(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
    axum::extract::Path(task_id): axum::extract::Path<String>,
) -> Response {
    let loaded = async {
        p.require_read()?;
        st.db
            .run(move |s| crate::api::tasks::load(s.conn(), &p, &task_id))
            .await
    }
    .await;
    match loaded {
        Ok(t) => {
            let patient = t.patient_id.clone();
            let mut resp = render(&task_page(t, &signed, String::new()), StatusCode::OK);
            resp.extensions_mut().insert(AuditPatient(patient));
            resp
        }
        Err(e) => error_page(e, Some(&signed)),
    }
}

async fn after_task_action(
    st: &Arc<ApiState>,
    signed: &Signed,
    p: Principal,
    task_id: String,
    done: Result<TaskView, ApiError>,
) -> Response {
    match done {
        Ok(t) => {
            let mut resp =
                Redirect::to(&format!("/console/tasks/{}", urlencode(&task_id))).into_response();
            resp.extensions_mut().insert(AuditPatient(t.patient_id));
            resp
        }
        Err(e @ (ApiError::BadRequest(_) | ApiError::Conflict(_))) => {
            let id = task_id.clone();
            match st
                .db
                .run(move |s| crate::api::tasks::load(s.conn(), &p, &id))
                .await
            {
                Ok(t) => render(&task_page(t, signed, e.to_string()), e.status()),
                Err(e) => error_page(e, Some(signed)),
            }
        }
        Err(e) => error_page(e, Some(signed)),
    }
}

/// `POST /console/tasks/{task_id}/claim`: for the signed-in user.
pub async fn claim(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
    axum::extract::Path(task_id): axum::extract::Path<String>,
) -> Response {
    let done = crate::api::tasks::claim_as(&st, p.clone(), task_id.clone(), None).await;
    after_task_action(&st, &signed, p, task_id, done).await
}

/// `POST /console/tasks/{id}/complete` form.
#[derive(Debug, Deserialize)]
pub struct CompleteForm {
    outcome: String,
    #[serde(default)]
    note: String,
}

/// `POST /console/tasks/{task_id}/complete`.
pub async fn complete(
    State(st): State<Arc<ApiState>>,
    Extension(signed): Extension<Signed>,
    p: Principal,
    axum::extract::Path(task_id): axum::extract::Path<String>,
    Form(form): Form<CompleteForm>,
) -> Response {
    let done = crate::api::tasks::complete_as(
        &st,
        p.clone(),
        task_id.clone(),
        &form.outcome,
        nonempty(form.note),
    )
    .await;
    after_task_action(&st, &signed, p, task_id, done).await
}
