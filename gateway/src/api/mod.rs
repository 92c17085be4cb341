//! The HTTP API: JSON under `/api/v1`, FHIR R4 under `/fhir`, and
//! `/healthz`, `/readyz`, `/metrics`.
//!
//! Every `/api` and `/fhir` route needs a bearer token ([`auth`]) and is
//! audited ([`audit`]); health and metrics are open and carry no PHI.
//! Reads use the API's own store connections ([`db`]); pushed readings go
//! through the shared pipeline and writer ([`ingest`]), answered only once
//! committed. Errors are RFC 9457 problem details ([`problem`]), FHIR
//! errors OperationOutcomes. `gateway/openapi.yaml` documents every route,
//! and a test holds it to [`route_list`].

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod boxes;
pub mod care_time;
pub mod config;
pub mod db;
pub mod degraded;
pub mod devices;
pub mod edge;
pub mod fhir;
pub mod fhir_devices;
pub mod fhir_tasks;
pub mod health;
pub mod ingest;
pub mod integrations;
pub mod limits;
pub mod listener;
pub mod page;
pub mod patients;
pub mod problem;
pub mod quarantine;
pub mod readings;
pub mod reports;
pub mod responses;
pub mod risk;
pub mod server;
pub mod tasks;
#[cfg(test)]
mod tests;
pub mod upstream;
pub mod webhooks;
pub mod worklist;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::store::{StoreError, Writer};
use crate::tls::TlsError;
use config::ApiConfig;
use problem::{ApiError, Problem, PROBLEM_JSON};

/// What every handler shares.
pub struct ApiState {
    /// `[api]`.
    pub cfg: ApiConfig,
    /// Store connections of the API.
    pub db: Arc<db::Db>,
    /// The audit writer.
    pub audit: audit::AuditLog,
    /// The shared ingest writer (HTTP ingest).
    pub writer: Writer,
    /// The shared decode/normalize pipeline.
    pub pipeline: Arc<Pipeline>,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
    /// Rate limits.
    pub limits: Arc<limits::Limits>,
    /// Whether an MQTT source is configured (readiness).
    pub mqtt_configured: bool,
    /// Whether a BLE source is configured (readiness).
    pub ble_configured: bool,
    /// The BLE source's adapter (`hci0` when unset), for the console's
    /// scan and pairing.
    #[cfg_attr(not(feature = "ble"), allow(dead_code))]
    pub ble_adapter: Option<String>,
    /// The rule set care plans and overrides are checked against.
    pub rules: Option<Arc<alerting_rules::RuleSet>>,
    /// Webhook URLs allowed (`delivery.allow_http`, `delivery.allow_private_network`).
    pub url_policy: crate::delivery::endpoints::UrlPolicy,
    /// `rules.clock`: care actions are stamped on the clock the deadlines
    /// are counted on.
    pub clock: crate::config::RulesClock,
    /// `[care]`: the care teams' time zones (the RPM report).
    pub care: Arc<crate::care::CareConfig>,
    /// `[console]`: whether the web console is served, its sessions.
    pub console: Arc<crate::console::ConsoleConfig>,
    /// `[integrations]`: vendor clouds, with their secrets.
    pub integrations: Arc<integrations::Integrations>,
    /// `[fhir]`: which data is test data (the FHIR resources' labels).
    pub fhir: Arc<crate::fhir::FhirConfig>,
}

impl ApiState {
    /// Now for a care action: the wall clock, or on the data clock
    /// (`rules.clock = "data"`: replays, demos, tests) the newest measured
    /// time in the store, the clock the follow-up deadlines run on.
    pub fn now(
        &self,
        conn: &rusqlite::Connection,
    ) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
        if self.clock == crate::config::RulesClock::Data {
            if let (_, Some(ms)) = crate::store::queries::newest_after(conn, 0)? {
                if let Some(t) = chrono::DateTime::from_timestamp_millis(ms) {
                    return Ok(t);
                }
            }
        }
        Ok(chrono::Utc::now())
    }

    /// Base URL for absolute links: `api.public_url`, or scheme and Host of
    /// the request.
    pub fn base_url(&self, headers: &HeaderMap) -> String {
        if let Some(u) = &self.cfg.public_url {
            return u.clone();
        }
        let scheme = if self.cfg.tls() { "https" } else { "http" };
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.len() <= 255
                    && h.chars().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')
                    })
            })
            .map(str::to_string)
            .unwrap_or_else(|| self.cfg.listen.to_string());
        format!("{scheme}://{host}")
    }
}

/// A router that remembers its routes (for the OpenAPI check).
struct Routes {
    router: Router<Arc<ApiState>>,
    list: Vec<(String, String)>,
}

impl Routes {
    fn new() -> Self {
        Routes {
            router: Router::new(),
            list: Vec::new(),
        }
    }

    fn add<H, T>(mut self, method: &str, path: &str, handler: H) -> Self
    where
        H: Handler<T, Arc<ApiState>>,
        T: 'static,
    {
        let filter = match method {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "PUT" => MethodFilter::PUT,
            "PATCH" => MethodFilter::PATCH,
            "DELETE" => MethodFilter::DELETE,
            other => unreachable!("method {other} is not used by the API"),
        };
        self.list.push((method.to_string(), path.to_string()));
        self.router = self.router.route(path, on(filter, handler));
        self
    }
}

/// A [`Routes`] table, one route a line: `METHOD "path" => handler,`.
macro_rules! routes {
    ($($method:ident $path:literal => $handler:expr,)*) => {
        Routes::new()$(.add(stringify!($method), $path, $handler))*
    };
}

/// Routes that need no token.
fn public_routes() -> Routes {
    routes! {
        GET    "/healthz"                                      => health::healthz,
        GET    "/readyz"                                       => health::readyz,
        GET    "/metrics"                                      => health::metrics,
        POST   "/api/v1/integrations/{name}"                   => integrations::push,
    }
}

/// Routes behind a bearer token.
fn guarded_routes() -> Routes {
    routes! {
        GET    "/api/v1/readings"                              => readings::list,
        POST   "/api/v1/readings"                              => ingest::push,
        POST   "/api/v1/responses"                             => responses::submit_plain,
        POST   "/api/v1/upstream/readings"                     => upstream::push,
        POST   "/api/v1/upstream/quarantine"                   => upstream::quarantine,
        GET    "/api/v1/upstream/share"                        => upstream::share,
        GET    "/api/v1/integrations"                          => integrations::list,
        GET    "/api/v1/boxes"                                 => boxes::list,
        GET    "/api/v1/quarantine"                            => quarantine::list,
        GET    "/api/v1/quarantine/{id}"                       => quarantine::get,
        POST   "/api/v1/quarantine/{id}/reprocess"             => quarantine::reprocess,
        GET    "/api/v1/alerts"                                => alerts::list,
        GET    "/api/v1/alerts/{alert_id}"                     => alerts::get,
        POST   "/api/v1/alerts/{alert_id}/acknowledge"         => alerts::acknowledge,
        POST   "/api/v1/alerts/{alert_id}/resolve"             => alerts::resolve,
        GET    "/api/v1/devices"                               => devices::list,
        POST   "/api/v1/devices"                               => devices::register,
        GET    "/api/v1/devices/{device_id}"                   => devices::get,
        PUT    "/api/v1/devices/{device_id}/patient"           => devices::assign,
        DELETE "/api/v1/devices/{device_id}/patient"           => devices::unassign,
        GET    "/api/v1/patients"                              => patients::list,
        GET    "/api/v1/patients/{patient_id}"                 => patients::get,
        PUT    "/api/v1/patients/{patient_id}"                 => patients::put,
        GET    "/api/v1/patients/{patient_id}/readings/latest" => readings::latest,
        GET    "/api/v1/patients/{patient_id}/care-time"       => care_time::list,
        POST   "/api/v1/patients/{patient_id}/care-time"       => care_time::log,
        GET    "/api/v1/patients/{patient_id}/risk"            => risk::get,
        GET    "/api/v1/worklist"                              => worklist::list,
        GET    "/api/v1/webhooks"                              => webhooks::list,
        POST   "/api/v1/webhooks"                              => webhooks::create,
        GET    "/api/v1/webhooks/{endpoint_id}"                => webhooks::get,
        PATCH  "/api/v1/webhooks/{endpoint_id}"                => webhooks::update,
        POST   "/api/v1/webhooks/{endpoint_id}/rotate-secret"  => webhooks::rotate_secret,
        POST   "/api/v1/webhooks/{endpoint_id}/retire-secrets" => webhooks::retire_secrets,
        POST   "/api/v1/webhooks/{endpoint_id}/disable"        => webhooks::disable,
        POST   "/api/v1/webhooks/{endpoint_id}/enable"         => webhooks::enable,
        POST   "/api/v1/webhooks/{endpoint_id}/redrive"        => webhooks::redrive_endpoint,
        GET    "/api/v1/webhooks/{endpoint_id}/deliveries"     => webhooks::deliveries,
        POST   "/api/v1/deliveries/{delivery_id}/redrive"      => webhooks::redrive_delivery,
        GET    "/api/v1/audit"                                 => audit::list,
        GET    "/api/v1/reports/alert-burden"                  => reports::alert_burden,
        GET    "/api/v1/tasks"                                 => tasks::list,
        GET    "/api/v1/tasks/{task_id}"                       => tasks::get,
        POST   "/api/v1/tasks/{task_id}/claim"                 => tasks::claim,
        POST   "/api/v1/tasks/{task_id}/release"               => tasks::release,
        POST   "/api/v1/tasks/{task_id}/complete"              => tasks::complete,
        GET    "/api/v1/reports/rpm"                           => reports::rpm,
        GET    "/fhir/Observation"                             => fhir::search,
        GET    "/fhir/Observation/{id}"                        => fhir::read,
        GET    "/fhir/Device"                                  => fhir_devices::search,
        GET    "/fhir/Device/{id}"                             => fhir_devices::read,
        GET    "/fhir/Questionnaire"                           => responses::questionnaires,
        GET    "/fhir/Questionnaire/{id}"                      => responses::questionnaire,
        GET    "/fhir/QuestionnaireResponse"                   => responses::search,
        POST   "/fhir/QuestionnaireResponse"                   => responses::submit_fhir,
        GET    "/fhir/QuestionnaireResponse/{id}"              => responses::read,
        GET    "/fhir/Task"                                    => fhir_tasks::search,
        GET    "/fhir/Task/{id}"                               => fhir_tasks::read,
        GET    "/fhir/RiskAssessment"                          => risk::search,
        GET    "/fhir/RiskAssessment/{id}"                     => risk::read,
    }
}

/// Every route as (method, path template), for the OpenAPI document check.
pub fn route_list() -> Vec<(String, String)> {
    let mut all = public_routes().list;
    all.extend(guarded_routes().list);
    all
}

/// The whole application.
pub fn router(state: Arc<ApiState>) -> Router {
    let guarded = guarded_routes()
        .router
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::guard));
    let mut app = public_routes().router.merge(guarded);
    if state.console.enabled {
        app = app.merge(crate::console::router(state.clone()));
    }
    app.fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.cfg.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), finish))
        .with_state(state)
}

/// Outermost middleware: the request deadline, headers that keep PHI out
/// of caches, and OperationOutcome instead of problem details under /fhir.
async fn finish(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let fhir = req.uri().path().starts_with("/fhir");
    let mut resp = match tokio::time::timeout(st.cfg.request_timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::Timeout.into_response(),
    };
    if fhir && is_problem(&resp) {
        resp = to_operation_outcome(resp).await;
    }
    let h = resp.headers_mut();
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn is_problem(resp: &Response) -> bool {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes())
}

async fn to_operation_outcome(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let detail = serde_json::from_slice::<Problem>(&bytes)
        .map(|p| p.detail)
        .unwrap_or_default();
    let oo = fhir::operation_outcome(parts.status.as_u16(), &detail);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(fhir::FHIR_JSON),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(
        parts,
        Body::from(serde_json::to_vec(&oo).unwrap_or_default()),
    )
}

/// API start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ApiStartError {
    /// The listen address is taken or not ours.
    #[error("api: cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's refusal (taken, not ours).
        source: std::io::Error,
    },
    /// The certificate or key is unusable.
    #[error("api: {0}")]
    Tls(#[from] TlsError),
    /// The store could not be opened.
    #[error("api: {0}")]
    Store(#[from] StoreError),
    /// An integration's secret cannot be read.
    #[error("api: {0}")]
    Integration(#[from] integrations::IntegrationError),
    /// `api.address_file` could not be written.
    #[error("api: cannot write the address file {}: {source}", path.display())]
    AddressFile {
        /// The file.
        path: std::path::PathBuf,
        /// The write or rename that failed.
        source: std::io::Error,
    },
}

/// A running API server.
pub struct ApiServer {
    /// The serving task; ends after `shutdown` and the drain.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the API (when `[api] enabled`) on `listener`, the degraded
/// server's (see [`listener`]), or binds `api.listen` when there is none; the
/// task ends after `shutdown` resolves and requests in flight are done.
pub async fn start(
    config: &Config,
    listener: Option<listener::Listener>,
    writer: Writer,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ApiServer, ApiStartError> {
    let cfg = config.api.clone();
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => Some(crate::tls::acceptor(c, k)?),
        _ => None,
    };
    let db = db::Db::open(config.store.path.clone(), cfg.read_connections)?;
    let audit = audit::AuditLog::start(&config.store.path)?;
    let rules = match crate::rules::load_rule_set(config.rules.dir.as_deref()) {
        Ok(r) => Some(Arc::new(r)),
        Err(e) => {
            tracing::warn!(error = %e, "api: rule set unavailable; care plans and overrides are not checked");
            None
        }
    };
    let state = Arc::new(ApiState {
        cfg: cfg.clone(),
        db,
        audit,
        writer,
        pipeline,
        metrics: metrics.clone(),
        limits: Arc::new(limits::Limits::new(&cfg)),
        mqtt_configured: config.sources.mqtt.is_some(),
        ble_configured: config.sources.ble.as_ref().is_some_and(|b| b.enabled),
        ble_adapter: config.sources.ble.as_ref().and_then(|b| b.adapter.clone()),
        rules,
        url_policy: config.delivery.url_policy(),
        clock: config.rules.clock,
        care: Arc::new(config.care.clone()),
        console: Arc::new(config.console.clone()),
        integrations: Arc::new(integrations::Integrations::load(&config.integrations)?),
        fhir: Arc::new(config.fhir.clone()),
    });
    let listener = match listener {
        Some(l) => l,
        None => listener::Listener::bind(&cfg).await?,
    };
    let local_addr = listener.addr();
    let listener = listener.into_tokio()?;
    tracing::info!(addr = %local_addr, tls = tls.is_some(), "api listening");
    if tls.is_none() && !local_addr.ip().is_loopback() {
        tracing::warn!(addr = %local_addr, "api listens beyond loopback without TLS: tokens and health data cross the network in clear; set api.tls_cert and api.tls_key");
    }
    // Anonymous refusals: one audit row per client address and window.
    {
        let (limits, audit) = (state.limits.clone(), state.audit.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(limits::AUDIT_WINDOW);
            tick.tick().await;
            loop {
                tick.tick().await;
                for (ip, n) in limits.take_refused() {
                    let _ = audit
                        .record(
                            "anonymous",
                            "auth.failed",
                            &format!("client {ip}: {n} request(s) refused without a valid token"),
                            None,
                            401,
                        )
                        .await;
                }
            }
        });
    }
    let app = router(state);
    let task = tokio::spawn(async move {
        server::serve(
            listener,
            app,
            tls,
            server::Bounds::from(&cfg),
            metrics,
            shutdown,
        )
        .await;
        listener::withdraw(&cfg);
        tracing::info!("api stopped");
    });
    Ok(ApiServer { task })
}
