//! The stateful handlers in process: the real router over a real SQLite
//! file in a temporary directory, driven request by request with
//! `tower::ServiceExt::oneshot`.
//!
//! The end-to-end tests cover these routes through the real binary; here
//! each change is checked where it lands, cheaply enough to cover the
//! refusals too: the status, what the store holds afterwards (nothing, when
//! refused) and the audit rows (the guard's, and the change's own when it
//! writes one).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{audit::AuditLog, db::Db, limits::Limits, router, ApiState};
use crate::config::Config;
use crate::delivery::endpoints::UrlPolicy;
use crate::metrics::Metrics;
use crate::store::alerts::{AlertContent, NewAlert};
use crate::store::audit::{AuditFilter, StoredAuditEntry};
use crate::store::patients::PatientChange;
use crate::store::tokens::{self, Role};
use crate::store::{Store, Writer, WriterConfig};

/// A gateway's API without a listener: the router, its store file, and one
/// token per role.
struct Api {
    _dir: tempfile::TempDir,
    path: PathBuf,
    router: Router,
    admin: String,
    reader: String,
    /// A care-team token of team `north`.
    north: String,
}

fn token(store: &Store, name: &str, role: Role, teams: &[&str]) -> String {
    let teams: Vec<String> = teams.iter().map(|t| t.to_string()).collect();
    tokens::create(store.conn(), name, role, &teams)
        .expect("token")
        .secret
}

fn api() -> Api {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rpm.db");
    let config = Config::from_toml(
        &format!("[store]\npath = \"{}\"\n", path.display()),
        Path::new("test.toml"),
    )
    .expect("config");
    let metrics = Arc::new(Metrics::default());
    let pipeline = Arc::new(crate::runtime::pipeline(&config, metrics.clone()).expect("pipeline"));
    let store = Store::open(&path).expect("store");
    let admin = token(&store, "admin", Role::Admin, &[]);
    let reader = token(&store, "reader", Role::ReadOnly, &[]);
    let north = token(&store, "north", Role::CareTeam, &["north"]);
    let mut store = store;
    for (id, team) in [("p-north", "north"), ("p-south", "south")] {
        store
            .upsert_patient(
                id,
                "cli",
                &PatientChange {
                    care_team: Some(Some(team.to_string())),
                    ..PatientChange::default()
                },
            )
            .expect("patient");
    }
    let (writer, _thread) = Writer::start(store, WriterConfig::default(), metrics.clone(), None);
    let cfg = config.api.clone();
    let state = Arc::new(ApiState {
        cfg: cfg.clone(),
        db: Db::open(path.clone(), 2).expect("db"),
        audit: AuditLog::start(&path).expect("audit"),
        writer,
        pipeline,
        metrics,
        limits: Arc::new(Limits::new(&cfg)),
        mqtt_configured: false,
        ble_configured: false,
        ble_adapter: None,
        rules: Some(Arc::new(
            crate::rules::load_rule_set(None).expect("bundled rules"),
        )),
        // No name is resolved in these tests; a receiver on this host is fine.
        url_policy: UrlPolicy {
            allow_http: true,
            allow_private_network: true,
        },
        clock: config.rules.clock,
        care: Arc::new(config.care.clone()),
        console: Arc::new(config.console.clone()),
        integrations: Arc::new(
            crate::api::integrations::Integrations::load(&config.integrations)
                .expect("integrations"),
        ),
        fhir: Arc::new(config.fhir.clone()),
    });
    Api {
        _dir: dir,
        path,
        router: router(state),
        admin,
        reader,
        north,
    }
}

impl Api {
    /// One request; the answer's status and JSON body (`Null` when empty).
    async fn call(
        &self,
        token: &str,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).expect("request"))
            .await
            .expect("infallible");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v)
    }

    fn store(&self) -> Store {
        Store::open(&self.path).expect("store")
    }

    /// Every audit row, oldest first.
    fn audit(&self) -> Vec<StoredAuditEntry> {
        let mut rows =
            crate::store::audit::list(self.store().conn(), i64::MAX, &AuditFilter::default(), 1000)
                .expect("audit");
        rows.reverse();
        rows
    }

    /// The audit rows of `action`, as (actor's token name known to the
    /// test is not stored: the actor is the token id) resource, patient,
    /// outcome.
    fn audited(&self, action: &str) -> Vec<(String, Option<String>, i64)> {
        self.audit()
            .into_iter()
            .filter(|r| r.entry.action == action)
            .map(|r| (r.entry.resource, r.entry.patient_id, r.entry.outcome))
            .collect()
    }

    /// A firing alert of `patient`.
    fn fire(&self, alert_id: &str, patient: &str) {
        crate::store::alerts::insert(
            self.store().conn(),
            &NewAlert {
                alert_id,
                patient_id: patient,
                rule_id: "htn.crisis",
                pack: "hypertension",
                content: AlertContent {
                    rule_version: 1,
                    severity: "critical",
                    message: "blood pressure 190/120",
                    limits: "{}",
                    evidence: "[]",
                    late: false,
                    flapping: false,
                },
                fired_at: 1_000,
                measured_at: Some(1_000),
                snooze_until: None,
            },
        )
        .expect("alert");
    }
}

fn alert_status(a: &Api, id: &str) -> String {
    crate::store::alerts::get(a.store().conn(), id)
        .expect("get")
        .expect("alert")
        .status
}

#[tokio::test]
async fn acknowledge_and_resolve_change_the_alert_and_are_audited() {
    let a = api();
    a.fire("al-1", "p-north");
    let (s, v) = a
        .call(
            &a.admin,
            "POST",
            "/api/v1/alerts/al-1/acknowledge",
            Some(json!({"note": "called the patient", "snooze": "30m"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "acknowledged");
    assert_eq!(v["ack_note"], "called the patient");
    let stored = crate::store::alerts::get(a.store().conn(), "al-1")
        .expect("get")
        .expect("alert");
    assert_eq!(stored.status, "acknowledged");
    assert!(stored.snooze_until.is_some());
    let kinds: Vec<String> = crate::store::alerts::history(a.store().conn(), "al-1")
        .expect("history")
        .into_iter()
        .map(|h| h.kind)
        .collect();
    assert_eq!(kinds, ["acknowledged"]);
    // The change's own row (in its transaction) and the guard's.
    assert_eq!(
        a.audited("alert.acknowledge"),
        [("al-1".to_string(), Some("p-north".to_string()), 200)]
    );
    assert_eq!(
        a.audited("POST /api/v1/alerts/{alert_id}/acknowledge"),
        [(
            "/api/v1/alerts/al-1/acknowledge".to_string(),
            Some("p-north".to_string()),
            200
        )]
    );

    // A care team of the patient may resolve it; once only.
    let (s, v) = a
        .call(&a.north, "POST", "/api/v1/alerts/al-1/resolve", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(alert_status(&a, "al-1"), "resolved");
    let (s, _) = a
        .call(&a.admin, "POST", "/api/v1/alerts/al-1/resolve", None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(
        a.audited("alert.resolve"),
        [("al-1".to_string(), Some("p-north".to_string()), 200)],
        "the refused resolve changed nothing, so it has no change row"
    );
    let outcomes: Vec<i64> = a
        .audited("POST /api/v1/alerts/{alert_id}/resolve")
        .into_iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(outcomes, [200, 409]);
}

#[tokio::test]
async fn alert_actions_are_refused_beyond_the_token() {
    let a = api();
    a.fire("al-s", "p-south");
    // Another team's patient is not there for a care-team token.
    let (s, _) = a
        .call(&a.north, "POST", "/api/v1/alerts/al-s/acknowledge", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A read-only token reads but does not act.
    let (s, _) = a
        .call(&a.reader, "POST", "/api/v1/alerts/al-s/resolve", None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = a
        .call(&a.admin, "POST", "/api/v1/alerts/nope/acknowledge", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = a
        .call(
            &a.admin,
            "POST",
            "/api/v1/alerts/al-s/acknowledge",
            Some(json!({"snooze": "8d"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(alert_status(&a, "al-s"), "firing");
    assert!(a.audited("alert.acknowledge").is_empty());
    assert!(a.audited("alert.resolve").is_empty());
    // Every refusal is audited by the guard, under the alert's patient
    // when the handler got that far, with its status.
    let outcomes: Vec<i64> = a.audit().into_iter().map(|r| r.entry.outcome).collect();
    assert_eq!(outcomes, [404, 403, 404, 400]);
}

#[tokio::test]
async fn assign_and_unassign_a_device() {
    let a = api();
    let (s, v) = a
        .call(
            &a.admin,
            "PUT",
            "/api/v1/devices/cuff-1/patient",
            Some(json!({"patient_id": "p-north"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d = a
        .store()
        .device("cuff-1")
        .expect("device")
        .expect("registered");
    assert_eq!(d.patient_id.as_deref(), Some("p-north"));
    assert_eq!(
        a.audited("PUT /api/v1/devices/{device_id}/patient"),
        [(
            "/api/v1/devices/cuff-1/patient".to_string(),
            Some("p-north".to_string()),
            200
        )]
    );

    let (s, v) = a
        .call(&a.admin, "DELETE", "/api/v1/devices/cuff-1/patient", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d = a
        .store()
        .device("cuff-1")
        .expect("device")
        .expect("registered");
    assert_eq!(d.patient_id, None);
    // Audited under the patient it was assigned to.
    assert_eq!(
        a.audited("DELETE /api/v1/devices/{device_id}/patient"),
        [(
            "/api/v1/devices/cuff-1/patient".to_string(),
            Some("p-north".to_string()),
            200
        )]
    );

    // Refusals change nothing.
    let (s, _) = a
        .call(&a.admin, "DELETE", "/api/v1/devices/nope/patient", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = a
        .call(
            &a.north,
            "PUT",
            "/api/v1/devices/cuff-1/patient",
            Some(json!({"patient_id": "p-north"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = a
        .call(
            &a.admin,
            "PUT",
            "/api/v1/devices/cuff-1/patient",
            Some(json!({"patient_id": "p-north", "extra": 1})),
        )
        .await;
    assert!(s.is_client_error(), "{s}");
    let d = a
        .store()
        .device("cuff-1")
        .expect("device")
        .expect("registered");
    assert_eq!(d.patient_id, None);
}

#[tokio::test]
async fn put_enrols_then_changes_a_patient() {
    let a = api();
    let (s, v) = a
        .call(
            &a.admin,
            "PUT",
            "/api/v1/patients/p-new",
            Some(json!({"care_plans": ["hypertension"], "care_team": "north"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let rec = a.store().patient("p-new").expect("get").expect("enrolled");
    assert_eq!(rec.care_plans, ["hypertension"]);
    assert_eq!(rec.care_team.as_deref(), Some("north"));

    let (s, v) = a
        .call(
            &a.admin,
            "PUT",
            "/api/v1/patients/p-new",
            Some(json!({"care_team": null})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rec = a.store().patient("p-new").expect("get").expect("enrolled");
    assert_eq!(rec.care_team, None);
    assert_eq!(rec.care_plans, ["hypertension"], "fields not given stay");

    // An unknown care plan is refused and stores nothing.
    let (s, _) = a
        .call(
            &a.admin,
            "PUT",
            "/api/v1/patients/p-other",
            Some(json!({"care_plans": ["no-such-plan"]})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(a.store().patient("p-other").expect("get").is_none());
    // Only an admin enrols.
    let (s, _) = a
        .call(&a.north, "PUT", "/api/v1/patients/p-north", Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let rows: Vec<(Option<String>, i64)> = a
        .audited("PUT /api/v1/patients/{patient_id}")
        .into_iter()
        .map(|(_, p, o)| (p, o))
        .collect();
    assert_eq!(
        rows,
        [
            (Some("p-new".to_string()), 201),
            (Some("p-new".to_string()), 200),
            (Some("p-other".to_string()), 422),
            (Some("p-north".to_string()), 403),
        ]
    );
}

#[tokio::test]
async fn create_and_rotate_a_webhook_endpoint() {
    let a = api();
    let (s, v) = a
        .call(
            &a.admin,
            "POST",
            "/api/v1/webhooks",
            Some(json!({"endpoint_id": "ops", "url": "http://127.0.0.1:9/hook"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let first = v["secret"].as_str().expect("the new secret").to_string();
    assert!(first.starts_with("whsec_"), "{first}");
    let row = crate::store::webhooks::endpoint(a.store().conn(), "ops")
        .expect("get")
        .expect("stored");
    assert_eq!(row.url, "http://127.0.0.1:9/hook");
    assert_eq!(row.origin, "api");

    let (s, _) = a
        .call(
            &a.admin,
            "POST",
            "/api/v1/webhooks",
            Some(json!({"endpoint_id": "ops", "url": "http://127.0.0.1:9/other"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    let (s, v) = a
        .call(&a.admin, "POST", "/api/v1/webhooks/ops/rotate-secret", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let second = v["secret"].as_str().expect("the new secret").to_string();
    assert_ne!(first, second);
    let row = crate::store::webhooks::endpoint(a.store().conn(), "ops")
        .expect("get")
        .expect("stored");
    assert_eq!(
        row.url, "http://127.0.0.1:9/hook",
        "the refused create changed nothing"
    );
    // Both sign until the rotation ends (the store keeps them sealed).
    let secrets: Vec<Value> = serde_json::from_str(&row.secrets).expect("secrets");
    assert_eq!(secrets.len(), 2);

    let (s, _) = a
        .call(
            &a.reader,
            "POST",
            "/api/v1/webhooks/ops/rotate-secret",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = a
        .call(
            &a.admin,
            "POST",
            "/api/v1/webhooks/nope/rotate-secret",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let created: Vec<i64> = a
        .audited("POST /api/v1/webhooks")
        .into_iter()
        .map(|r| r.2)
        .collect();
    assert_eq!(created, [201, 409]);
    let rotated: Vec<(String, i64)> = a
        .audited("POST /api/v1/webhooks/{endpoint_id}/rotate-secret")
        .into_iter()
        .map(|(r, _, o)| (r, o))
        .collect();
    assert_eq!(
        rotated,
        [
            ("/api/v1/webhooks/ops/rotate-secret".to_string(), 200),
            ("/api/v1/webhooks/ops/rotate-secret".to_string(), 403),
            ("/api/v1/webhooks/nope/rotate-secret".to_string(), 404),
        ]
    );
    // No secret is ever written to the audit log.
    assert!(a
        .audit()
        .iter()
        .all(|r| !r.entry.resource.contains("whsec_")
            && !r.entry.detail.as_deref().unwrap_or("").contains("whsec_")));
}
