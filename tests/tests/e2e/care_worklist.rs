//! Risk tiers and the worklist end to end: the real gateway binary with
//! its HTTP API, readings pushed through HTTP ingest that fire real alerts,
//! the risk stage placing patients, `risk.changed` webhooks verified and
//! schema-checked by the independent Python receiver, the worklist's order
//! and reasons against hand-written ground truth, FHIR RiskAssessments
//! validated with `fhir.resources`, and care-team isolation.

use crate::common;

use chrono::{Duration as Days, SecondsFormat, Utc};
use common::api_client::{self as http, Api};
use common::webhooks::{config, webhook, PyReceiver, SECRET};
use common::{wait_until, Gateway};
use serde_json::{json, Value};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

const VALIDATE_RISK: &str = r#"
import json, sys
from fhir.resources import __fhir_version__
from fhir.resources.bundle import Bundle
from fhir.resources.riskassessment import RiskAssessment
assert __fhir_version__ == "4.0.1", __fhir_version__
doc = json.load(sys.stdin)
bundle = Bundle.parse_obj(doc)
assert bundle.type == "searchset"
out = []
for e in doc.get("entry", []):
    r = RiskAssessment.parse_obj(e["resource"])
    q = r.prediction[0].qualitativeRisk
    out.append({
        "id": r.id,
        "status": r.status,
        "subject": r.subject.reference,
        "occurrence": r.occurrenceDateTime.isoformat(),
        "risk": [c.code for c in q.coding],
        "systems": [c.system for c in q.coding],
        "method": r.method.coding[0].code if r.method else None,
        "method_version": r.method.coding[0].version if r.method else None,
        "basis": [b.reference for b in (r.basis or [])],
    })
print(json.dumps(out))
"#;

/// A BP measurement `days_ago` days before now (at least a few minutes ago).
fn bp(days_ago: i64, sys: u32) -> Value {
    let t = Utc::now() - Days::days(days_ago) - Days::minutes(5);
    json!({"measured_at": t.to_rfc3339_opts(SecondsFormat::Secs, true), "sys": sys, "dia": 84, "map": 100, "pulse": 71, "unit": "mmHg"})
}

fn push(api: &Api, token: &str, device: &str, payload: Value) {
    api.send(
        "POST",
        "/api/v1/readings",
        token,
        &json!({"device_id": device, "profile": "acme-bp-cuff", "payload": payload}),
    )
    .expect(200);
}

fn tier_of(api: &Api, token: &str, patient: &str) -> Value {
    let r = api.get(&format!("/api/v1/patients/{patient}/risk"), token);
    r.expect(200);
    r.json()
}

#[test]
fn tiers_change_with_alerts_reach_webhooks_and_rank_the_worklist_per_team() {
    let dir = tempfile::tempdir().unwrap();
    let py = PyReceiver::start(dir.path(), &[("/north-risk", SECRET), ("/alerts", SECRET)]);
    let text = format!(
        "{}{}",
        config(&format!(
            "{}{}\n[care.risk]\npoll_interval = \"100ms\"\n",
            webhook(
                "north-risk",
                &py.url("/north-risk"),
                SECRET,
                "[webhooks.filter]\ncare_teams = [\"north\"]\nevent_types = [\"risk.changed\"]"
            ),
            webhook("alerts", &py.url("/alerts"), SECRET, ""),
        )),
        http::api_config("")
    );
    let mut gw = Gateway::with_config(dir.path(), &text);
    gw.start_until("risk tiers started", &[]);
    let api = Api {
        base: format!("http://127.0.0.1:{}", gw.api_port()),
        cacert: None,
    };
    let admin = http::token(&gw, "ops", "admin", &[]);
    let north = http::token(&gw, "nurse-north", "care_team", &["north"]);
    let south = http::token(&gw, "nurse-south", "care_team", &["south"]);
    let ingest = http::token(&gw, "vendor", "ingest", &[]);
    for (patient, team) in [
        ("n1", "north"),
        ("n2", "north"),
        ("n3", "north"),
        ("s1", "south"),
    ] {
        api.send(
            "PUT",
            &format!("/api/v1/patients/{patient}"),
            &admin,
            &json!({"care_plans": ["hypertension"], "care_team": team}),
        )
        .expect(201);
        api.send(
            "POST",
            "/api/v1/devices",
            &admin,
            &json!({"device_id": format!("cuff-{patient}"), "patient_id": patient}),
        )
        .expect(201);
    }
    // First placement: everyone unknown (no data), no event.
    wait_until("every patient placed", T, || {
        ["n1", "n2", "n3", "s1"]
            .iter()
            .all(|p| !tier_of(&api, &admin, p)["computed_at"].is_null())
    });
    for p in ["n1", "n2", "n3", "s1"] {
        assert_eq!(tier_of(&api, &admin, p)["tier"], "unknown");
    }

    // n1 and s1: a hypertensive crisis (critical alert). n2: normal
    // readings on four days. n3: nothing.
    push(&api, &ingest, "cuff-n1", bp(0, 185));
    push(&api, &ingest, "cuff-s1", bp(0, 190));
    for d in [3, 2, 1, 0] {
        push(&api, &ingest, "cuff-n2", bp(d, 118));
    }
    wait_until("n1 high, n2 stable, s1 high", T, || {
        tier_of(&api, &admin, "n1")["tier"] == "high"
            && tier_of(&api, &admin, "n2")["tier"] == "stable"
            && tier_of(&api, &admin, "s1")["tier"] == "high"
    });
    let n1 = tier_of(&api, &north, "n1");
    assert_eq!(n1["rule"]["id"], "tier.high.critical-alert", "{n1}");
    let alert_id = n1["reasons"][0]["alert_ids"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(alert_id.starts_with("alt_"), "{n1}");
    assert_eq!(n1["history"][0]["from_tier"], "unknown");
    assert_eq!(n1["history"][0]["tier"], "high");
    let n2 = tier_of(&api, &north, "n2");
    assert_eq!(n2["rule"]["id"], "tier.stable.measured");
    assert_eq!(n2["reasons"][0]["count"], 4, "{n2}");
    assert_eq!(tier_of(&api, &admin, "n3")["tier"], "unknown");

    // risk.changed: the north endpoint gets n1 and n2, never s1; verified
    // by standardwebhooks and valid against the event schema.
    wait_until("two risk.changed deliveries", T, || {
        py.lines()
            .iter()
            .filter(|l| l["path"] == "/north-risk")
            .count()
            >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    let risk: Vec<Value> = py
        .lines()
        .into_iter()
        .filter(|l| l["path"] == "/north-risk")
        .collect();
    assert_eq!(risk.len(), 2, "{risk:#?}");
    for l in &risk {
        assert_eq!(l["verified"], true, "{l}");
        assert_eq!(l["schema_errors"], json!([]), "{l}");
        assert_eq!(l["event"]["type"], "risk.changed");
        assert_eq!(l["event"]["data"]["previous_tier"], "unknown");
        assert_eq!(l["event"]["data"]["care_team"], "north");
    }
    let mut got: Vec<(String, String)> = risk
        .iter()
        .map(|l| {
            (
                l["event"]["data"]["patient_id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                l["event"]["data"]["tier"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![("n1".into(), "high".into()), ("n2".into(), "stable".into())]
    );
    let n1_event = risk
        .iter()
        .find(|l| l["event"]["data"]["patient_id"] == "n1")
        .unwrap();
    assert_eq!(
        n1_event["event"]["data"]["reasons"][0]["alert_ids"][0],
        alert_id.as_str()
    );
    // The default filter (no event types) stays alert events only.
    assert!(py
        .lines()
        .iter()
        .filter(|l| l["path"] == "/alerts")
        .all(|l| l["event"]["type"].as_str().unwrap().starts_with("alert.")));

    // The worklist, hand-ranked: n1 (open critical alert, high), n3
    // (unknown, no data: under-measured), n2 (stable, measured).
    let page = api.get("/api/v1/worklist?care_team=north", &north);
    page.expect(200);
    let items = page.json()["items"].as_array().unwrap().clone();
    let order: Vec<&str> = items
        .iter()
        .map(|i| i["patient_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, vec!["n1", "n3", "n2"], "{items:#?}");
    let reasons = |i: usize| -> Vec<String> {
        items[i]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        reasons(0)[0].starts_with("1 open critical alert(s) of 1 open"),
        "{:?}",
        reasons(0)
    );
    assert!(
        reasons(0)[1].starts_with("risk tier high"),
        "{:?}",
        reasons(0)
    );
    assert_eq!(items[0]["rank"]["score"], 4300);
    assert!(
        reasons(1)[0].starts_with("risk tier unknown"),
        "{:?}",
        reasons(1)
    );
    assert!(
        reasons(1)[1].starts_with("under-measured: data on 0 day(s)"),
        "{:?}",
        reasons(1)
    );
    assert_eq!(reasons(2), vec!["nothing open: stable and measured"]);
    // Keyset pages of 2 give the same order.
    let p1 = api.get("/api/v1/worklist?care_team=north&limit=2", &north);
    let v1 = p1.json();
    assert_eq!(v1["items"].as_array().unwrap().len(), 2);
    let cursor = v1["next_cursor"].as_str().unwrap();
    let v2 = api
        .get(
            &format!("/api/v1/worklist?care_team=north&limit=2&cursor={cursor}"),
            &north,
        )
        .json();
    assert_eq!(v2["items"][0]["patient_id"], "n2");
    assert!(v2["next_cursor"].is_null());
    // The CLI says the same.
    let out = gw.cli(&["worklist", "--care-team", "north", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let cli: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["patient_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(cli, vec!["n1", "n3", "n2"]);
    let out = gw.cli(&["risk", "show", "--patient", "n1"]);
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(shown.starts_with("n1: high since"), "{shown}");
    assert!(shown.contains(&alert_id), "{shown}");

    // FHIR RiskAssessment, validated by fhir.resources.
    let b = api.get("/fhir/RiskAssessment?subject=Patient/n1", &north);
    b.expect(200);
    let checked: Value = serde_json::from_str(&http::python_fhir(VALIDATE_RISK, &b.body)).unwrap();
    let list = checked.as_array().unwrap();
    assert_eq!(list.len(), 2, "{checked}");
    let newest = &list[0];
    assert_eq!(newest["status"], "final");
    assert_eq!(newest["subject"], "Patient/n1");
    assert_eq!(newest["risk"], json!(["high", "high"]));
    assert_eq!(
        newest["systems"][0],
        "http://terminology.hl7.org/CodeSystem/risk-probability"
    );
    assert_eq!(newest["method"], "tier.high.critical-alert");
    assert_eq!(newest["method_version"], "1");
    let basis = newest["basis"].as_array().unwrap();
    assert_eq!(basis.len(), 1, "{newest}");
    let obs = basis[0].as_str().unwrap();
    assert!(obs.starts_with("Observation/bp-"), "{obs}");
    // The basis resolves to the Observation the alert fired on.
    api.get(&format!("/fhir/{obs}"), &north).expect(200);
    let id = newest["id"].as_str().unwrap();
    let one = api.get(&format!("/fhir/RiskAssessment/{id}"), &north);
    one.expect(200);
    let out = http::python_fhir(
        "import sys\nfrom fhir.resources.riskassessment import RiskAssessment\nr = RiskAssessment.parse_raw(sys.stdin.read())\nprint(r.status, r.prediction[0].qualitativeRisk.coding[1].code)",
        &one.body,
    );
    assert_eq!(out.trim(), "final high");

    // The other team sees none of it: API and FHIR.
    api.get("/api/v1/patients/n1/risk", &south).problem(404);
    let theirs = api.get("/api/v1/worklist?care_team=north", &south).json();
    assert_eq!(theirs["items"], json!([]));
    let own = api.get("/api/v1/worklist", &south).json();
    let own: Vec<&str> = own["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["patient_id"].as_str().unwrap())
        .collect();
    assert_eq!(own, vec!["s1"]);
    let fb = api.get("/fhir/RiskAssessment?subject=Patient/n1", &south);
    fb.expect(200);
    assert!(fb.json()["entry"].as_array().unwrap().is_empty());
    api.get(&format!("/fhir/RiskAssessment/{id}"), &south)
        .expect(404);
    // Every read was audited, refusals too.
    assert!(
        gw.count("SELECT COUNT(*) FROM audit_log WHERE action = 'GET /api/v1/patients/{patient_id}/risk' AND outcome = 404 AND patient_id = 'n1'")
            >= 1
    );
    assert!(gw.count("SELECT COUNT(*) FROM audit_log WHERE action = 'GET /fhir/RiskAssessment/{id}' AND patient_id = 'n1'") >= 1);
    assert!(
        gw.count("SELECT COUNT(*) FROM audit_log WHERE action = 'risk.show' AND actor = 'cli'")
            == 1
    );
    assert_eq!(gw.stop().code(), Some(0));
}

/// A crash just before or just after the risk stage commits a tier change
/// loses no change and sends none twice.
#[test]
fn a_crash_around_the_risk_commit_neither_loses_nor_repeats_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[store]\npath = \"{{db}}\"\n\n[care.risk]\npoll_interval = \"100ms\"\n{}",
        http::api_config("")
    );
    let mut gw = Gateway::with_config(dir.path(), &text);
    let start = |gw: &mut Gateway, fault: Option<&str>| -> Api {
        let env: Vec<(&str, &str)> = fault.map(|f| ("RPM_FAULT_INJECT", f)).into_iter().collect();
        gw.start_until("risk tiers started", &env);
        Api {
            base: format!("http://127.0.0.1:{}", gw.api_port()),
            cacert: None,
        }
    };
    let api = start(&mut gw, None);
    let admin = http::token(&gw, "ops", "admin", &[]);
    let ingest = http::token(&gw, "vendor", "ingest", &[]);
    for p in ["k1", "k2"] {
        api.send(
            "PUT",
            &format!("/api/v1/patients/{p}"),
            &admin,
            &json!({"care_plans": ["hypertension"], "care_team": "north"}),
        )
        .expect(201);
        api.send(
            "POST",
            "/api/v1/devices",
            &admin,
            &json!({"device_id": format!("cuff-{p}"), "patient_id": p}),
        )
        .expect(201);
    }
    wait_until("both placed", T, || {
        gw.count("SELECT COUNT(*) FROM risk_tiers") == 2
    });
    assert_eq!(gw.stop().code(), Some(0));
    let events = |gw: &Gateway, p: &str| {
        gw.count(&format!(
            "SELECT COUNT(*) FROM outbox WHERE event_type = 'risk.changed' AND patient_id = '{p}'"
        ))
    };
    for (fault, p) in [
        ("abort-before-risk-commit", "k1"),
        ("abort-after-risk-commit", "k2"),
    ] {
        let api = start(&mut gw, Some(fault));
        // The reading is committed before its alert can fire and the tier
        // change follow, but the crash may beat the HTTP answer.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            push(&api, &ingest, &format!("cuff-{p}"), bp(0, 186))
        }));
        let status = gw.wait_exit(T);
        assert!(
            !status.success(),
            "{fault}: the gateway should have aborted"
        );
        let api = start(&mut gw, None);
        wait_until(&format!("{p} high after {fault}"), T, || {
            tier_of(&api, &admin, p)["tier"] == "high"
        });
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(events(&gw, p), 1, "{fault}");
        assert_eq!(
            gw.count(&format!(
                "SELECT COUNT(*) FROM risk_history WHERE patient_id = '{p}'"
            )),
            2,
            "{fault}"
        );
        assert_eq!(gw.stop().code(), Some(0));
    }
}
