//! The gateway's records as entries of a FHIR transaction Bundle that can
//! be sent twice without creating anything twice.
//!
//! The EHR does not know our ids, and a re-send after a crash must not
//! duplicate a reading in a patient's chart. So nothing is addressed by
//! our id: every resource is created *conditionally* on its identifier
//! (`request.ifNoneExist`: an Observation on its reading identifier, a
//! Device on the device id, a Patient on the care team's patient
//! identifier), or, for Flags and Tasks whose state changes, *updated*
//! conditionally on it (`PUT Flag?identifier=…`: the first push creates,
//! later ones update). References between entries of one Bundle go through
//! `urn:uuid:` full URLs, which the server rewrites to whatever the
//! conditional create resolved to (the FHIR transaction rules), so an
//! Observation points at the Device the EHR already had. References to
//! records that are not in the Bundle (a Task's evidence Observations)
//! become logical references by identifier. A measurement whose device
//! clock the gateway corrected brings its coincident time stamp
//! Observation along (created on its identifier like the measurement), so
//! `derivedFrom` resolves in the EHR.
//!
//! A [`Unit`] is what is isolated when the server refuses something: one
//! Observation (one reading, or a blood-pressure panel), one Flag, one
//! Task, with the Devices and Patients it needs.

use serde_json::{json, Value};
use sha2::Digest;

use crate::fhir::{phd, PhdContext};
use crate::store::queries::StoredReading;
use device_profiles::Metric;

/// Identifier system of alerts pushed as Flags.
pub const ALERT_SYSTEM: &str = "https://rpm-gateway.dev/fhir/alert-id";
/// Identifier system of records the EHR only knows by reference.
const OTHER_SYSTEM: &str = "urn:rpm-gateway:";

/// What a unit carries, for quarantine and metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// An Observation of these readings (one, or a BP panel's components).
    Readings(Vec<StoredReading>),
    /// A measurement the device sent a special value for: its quarantine
    /// record's id and the device.
    Absent(i64, String),
    /// An alert's Flag.
    Alert(String),
    /// A follow-up task's Task.
    Task(String),
}

/// One record and what it needs, as Bundle entries.
#[derive(Debug, Clone)]
pub struct Unit {
    /// What it is.
    pub subject: Subject,
    /// The record's own entry.
    pub entry: Value,
    /// Entries it refers to, keyed (`Patient|id`) so a Bundle holds each once.
    pub needs: Vec<(String, Value)>,
}

/// A deterministic `urn:uuid:` for our record `kind/id`: the same record
/// gets the same placeholder in every Bundle.
pub fn urn(kind: &str, id: &str) -> String {
    let h = sha2::Sha256::digest(format!("{kind}/{id}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x50; // version 5 style: name-based
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// `identifier=system|value`, escaped for a search URL.
pub fn identifier_query(system: &str, value: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!("identifier={}|{}", enc(system), enc(value))
}

/// The identifier a resource is created or updated on: its first one (the
/// mappings in `crate::fhir` decide what that is; switching to another
/// identifier scheme happens there, not here).
pub fn first_identifier(o: &Value) -> Option<(String, String)> {
    let first = o.get("identifier")?.get(0)?;
    Some((
        first.get("system")?.as_str()?.to_string(),
        first.get("value")?.as_str()?.to_string(),
    ))
}

/// What rewriting references needs to know.
pub struct Refs<'a> {
    /// The identifier system the EHR knows patients by.
    pub patient_system: &'a str,
    /// The gateway and the registry's devices (PHD IG).
    pub phd: &'a PhdContext,
    /// What the record's device measured (its PhdDevice's specialisations).
    pub metrics: Vec<Metric>,
}

/// Turns `Observation/<our id>` into the identifier the EHR knows it by.
type ObservationIds<'a> = &'a dyn Fn(&str) -> Option<Value>;

fn create_entry(full_url: &str, resource: Value, if_none_exist: String) -> Value {
    entry(
        full_url,
        resource,
        |kind| json!({"method": "POST", "url": kind, "ifNoneExist": if_none_exist}),
    )
}

fn update_entry(full_url: &str, resource: Value, system: &str, value: &str) -> Value {
    entry(
        full_url,
        resource,
        |kind| json!({"method": "PUT", "url": format!("{kind}?{}", identifier_query(system, value))}),
    )
}

/// A transaction entry for `resource` without our id (the server keeps its
/// own), its request made from the resource type.
fn entry(full_url: &str, mut resource: Value, request: impl FnOnce(&str) -> Value) -> Value {
    let kind = resource["resourceType"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(map) = resource.as_object_mut() {
        map.remove("id");
    }
    json!({"fullUrl": full_url, "resource": resource, "request": request(&kind)})
}

/// The entry a `Device/<id>` reference needs: the gateway's PhgDevice or a
/// measuring device's PhdDevice (from the registry when it knows the
/// device), created on its identifier. `(key, placeholder, resource, ifNoneExist)`.
fn device_need(id: &str, refs: &Refs<'_>) -> (String, String, Value, String) {
    if let Some(g) = refs.phd.gateway.as_ref().filter(|g| g.resource_id() == id) {
        return (
            format!("Device|{id}"),
            urn("Device", id),
            crate::fhir::device::phg_device(g),
            identifier_query(phd::SYSTEM_ID_SYSTEM, &g.eui64()),
        );
    }
    let device_id = phd::device_id_of(id).unwrap_or_else(|| id.to_string());
    let resource = match refs.phd.devices.get(&device_id) {
        Some(d) => crate::fhir::device::phd_device(d, &refs.metrics, refs.phd),
        None => json!({
            "resourceType": "Device",
            "meta": {"profile": [phd::PROFILE_PHD_DEVICE]},
            "identifier": crate::fhir::device::phd_identifiers(&device_id),
            "status": "active",
        }),
    };
    (
        format!("Device|{id}"),
        urn("Device", id),
        resource,
        identifier_query(phd::DEVICE_ID_SYSTEM, &device_id),
    )
}

/// Rewrites the references of `resource` for the EHR: our Patients and
/// Devices to entries of the Bundle (added to `needs`, their own
/// references rewritten in turn), Observations to logical references by
/// identifier (`obs` gives it), anything else to a logical reference
/// under `urn:rpm-gateway:<type>`.
fn rewrite_refs(
    v: &mut Value,
    refs: &Refs<'_>,
    obs: ObservationIds<'_>,
    needs: &mut Vec<(String, Value)>,
) {
    match v {
        Value::Object(map) => {
            let target = map
                .get("reference")
                .and_then(Value::as_str)
                .and_then(|r| r.split_once('/'))
                .map(|(k, i)| (k.to_string(), i.to_string()));
            if let Some((kind, id)) = target {
                match kind.as_str() {
                    "Patient" => {
                        map.insert("reference".into(), urn("Patient", &id).into());
                        map.insert(
                            "identifier".into(),
                            json!({"system": refs.patient_system, "value": id}),
                        );
                        let key = format!("Patient|{id}");
                        if !needs.iter().any(|(k, _)| *k == key) {
                            let resource = json!({
                                "resourceType": "Patient",
                                "identifier": [{"system": refs.patient_system, "value": id}],
                            });
                            let q = identifier_query(refs.patient_system, &id);
                            needs.push((key, create_entry(&urn("Patient", &id), resource, q)));
                        }
                    }
                    "Device" => {
                        let (key, placeholder, mut resource, q) = device_need(&id, refs);
                        map.insert("reference".into(), placeholder.clone().into());
                        if !needs.iter().any(|(k, _)| *k == key) {
                            rewrite_refs(&mut resource, refs, obs, needs);
                            needs.push((key, create_entry(&placeholder, resource, q)));
                        }
                    }
                    _ => {
                        let identifier = match kind.as_str() {
                            "Observation" => obs(&id).unwrap_or_else(|| {
                                json!({"system": format!("{OTHER_SYSTEM}observation"), "value": id})
                            }),
                            k => json!({
                                "system": format!("{OTHER_SYSTEM}{}", k.to_ascii_lowercase()),
                                "value": id,
                            }),
                        };
                        map.remove("reference");
                        map.insert("type".into(), kind.clone().into());
                        map.insert("identifier".into(), identifier);
                    }
                }
                return;
            }
            for (_, child) in map.iter_mut() {
                rewrite_refs(child, refs, obs, needs);
            }
        }
        Value::Array(items) => {
            for child in items {
                rewrite_refs(child, refs, obs, needs);
            }
        }
        _ => {}
    }
}

/// The unit of one Observation (its readings as `fhir::observation` groups
/// them), created on the PHD IG's Observation identifier; `None` if the
/// mapping has no Observation for them.
pub fn observation_unit(
    readings: Vec<StoredReading>,
    phd_ctx: &PhdContext,
    patient_system: &str,
) -> Option<Unit> {
    let (id, mut o) = crate::fhir::observation::observation(&readings, phd_ctx)?;
    let identifier = phd::observation_identifier(&readings)?;
    let refs = Refs {
        patient_system,
        phd: phd_ctx,
        metrics: readings
            .iter()
            .filter_map(|r| r.metric.parse().ok())
            .collect(),
    };
    let mut needs = Vec::new();
    if let Some((coin_id, mut coin)) = readings
        .first()
        .and_then(|r| phd::coincident_observation(r, phd_ctx))
    {
        // The coincident time stamp travels with the measurement: the
        // EHR gets no reference to something it never received.
        let placeholder = urn("Observation", &coin_id);
        o["derivedFrom"] = json!([{"reference": placeholder}]);
        rewrite_refs(&mut coin, &refs, &|_| None, &mut needs);
        let key = format!("Observation|{coin_id}");
        let q = coin["identifier"][0]["value"]
            .as_str()
            .map(|v| format!("identifier={}", crate::fhir::urlencode(v)))
            .unwrap_or_default();
        needs.push((key, create_entry(&placeholder, coin, q)));
    }
    rewrite_refs(&mut o, &refs, &|_| None, &mut needs);
    let entry = create_entry(&urn("Observation", &id), o, identifier.if_none_exist());
    Some(Unit {
        subject: Subject::Readings(readings),
        entry,
        needs,
    })
}

/// The unit of a measurement the device sent a special value for (NaN,
/// NRes, ±INFINITY: `phd::absent_observation`, `dataAbsentReason` and no
/// value), created on its quarantine record's identifier; `None` when the
/// record is no special value or its device has no patient.
pub fn absent_unit(
    q: &crate::store::queries::QuarantineRow,
    phd_ctx: &PhdContext,
    patient_system: &str,
) -> Option<Unit> {
    let device_id = q.device_id.clone()?;
    let patient = phd_ctx.devices.get(&device_id)?.patient_id.clone()?;
    let (id, mut o) = phd::absent_observation(q, &patient, phd_ctx)?;
    let (system, value) = first_identifier(&o)?;
    let refs = Refs {
        patient_system,
        phd: phd_ctx,
        metrics: phd::special_value_of(q)
            .map(|(m, _)| m)
            .into_iter()
            .collect(),
    };
    let mut needs = Vec::new();
    rewrite_refs(&mut o, &refs, &|_| None, &mut needs);
    let entry = create_entry(
        &urn("Observation", &id),
        o,
        identifier_query(&system, &value),
    );
    Some(Unit {
        subject: Subject::Absent(q.id, device_id),
        entry,
        needs,
    })
}

/// The patients a unit concerns (the Patient entries it needs): whom the
/// push's audit rows name.
pub fn patients(unit: &Unit) -> impl Iterator<Item = &str> {
    unit.needs
        .iter()
        .filter_map(|(k, _)| k.strip_prefix("Patient|"))
}

/// The Flag of an alert: active while it is firing or acknowledged,
/// inactive once resolved; priority from its severity.
pub fn flag_unit(a: &crate::store::alerts::AlertRecord, patient_system: &str) -> Unit {
    use crate::fhir::instant;
    let status = if a.status == "resolved" {
        "inactive"
    } else {
        "active"
    };
    let (priority, priority_text) = match a.severity.as_str() {
        "critical" => ("PH", "High priority"),
        "urgent" => ("PM", "Medium priority"),
        "warning" => ("PL", "Low priority"),
        _ => ("PN", "No alarm"),
    };
    let mut period = json!({"start": instant(a.fired_at)});
    if let Some(end) = a.resolved_at {
        period["end"] = json!(instant(end));
    }
    let mut flag = json!({
        "resourceType": "Flag",
        "identifier": [{"system": ALERT_SYSTEM, "value": a.alert_id}],
        "status": status,
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/flag-category",
            "code": "clinical", "display": "Clinical",
        }]}],
        "code": {
            "coding": [{"system": "https://rpm-gateway.dev/fhir/CodeSystem/alert-rule", "code": a.rule_id}],
            "text": a.message,
        },
        "subject": {"reference": format!("Patient/{}", a.patient_id)},
        "period": period,
        "extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/flag-priority",
            "valueCodeableConcept": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/flag-priority-code",
                "code": priority, "display": priority_text,
            }], "text": a.severity},
        }],
    });
    let mut needs = Vec::new();
    let phd_ctx = PhdContext::default();
    let refs = Refs {
        patient_system,
        phd: &phd_ctx,
        metrics: Vec::new(),
    };
    rewrite_refs(&mut flag, &refs, &|_| None, &mut needs);
    Unit {
        subject: Subject::Alert(a.alert_id.clone()),
        entry: update_entry(&urn("Flag", &a.alert_id), flag, ALERT_SYSTEM, &a.alert_id),
        needs,
    }
}

/// The Task of a follow-up task (`fhir::task::task`), its evidence
/// Observations referenced by their identifiers.
pub fn task_unit(
    conn: &rusqlite::Connection,
    t: &crate::care::tasks::TaskView,
    patient_system: &str,
) -> Result<Unit, crate::store::StoreError> {
    let mut r = crate::fhir::task::task(conn, t)?;
    let (system, value) = first_identifier(&r).unwrap_or_else(|| {
        (
            "https://rpm-gateway.dev/fhir/task-id".into(),
            t.task_id.clone(),
        )
    });
    let obs = |id: &str| observation_identity(conn, id);
    let mut needs = Vec::new();
    let phd_ctx = PhdContext::default();
    let refs = Refs {
        patient_system,
        phd: &phd_ctx,
        metrics: Vec::new(),
    };
    rewrite_refs(&mut r, &refs, &obs, &mut needs);
    Ok(Unit {
        subject: Subject::Task(t.task_id.clone()),
        entry: update_entry(&urn("Task", &t.task_id), r, &system, &value),
        needs,
    })
}

/// The identifier the Observation with our id `id` was created on (the
/// PHD IG's), as a FHIR Identifier.
fn observation_identity(conn: &rusqlite::Connection, id: &str) -> Option<Value> {
    let rows = match id.strip_prefix("bp-") {
        Some(group) => crate::store::queries::blood_pressure_group(conn, group),
        None => crate::store::queries::single_reading(conn, id),
    }
    .ok()?;
    Some(phd::observation_identifier(&rows)?.to_fhir())
}

/// A transaction Bundle of `units`: each needed entry once, first; and
/// how many such entries precede the units' own.
pub fn transaction(units: &[&Unit]) -> (Value, usize) {
    let mut needs: Vec<&(String, Value)> = Vec::new();
    for u in units {
        for n in &u.needs {
            if !needs.iter().any(|m| m.0 == n.0) {
                needs.push(n);
            }
        }
    }
    let entries: Vec<Value> = needs
        .iter()
        .map(|n| n.1.clone())
        .chain(units.iter().map(|u| u.entry.clone()))
        .collect();
    let n = needs.len();
    (
        json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        n,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urns_are_stable_uuids() {
        let a = urn("Device", "bp-1");
        assert_eq!(a, urn("Device", "bp-1"));
        assert_ne!(a, urn("Patient", "bp-1"));
        let re = a.strip_prefix("urn:uuid:").unwrap();
        assert_eq!(re.len(), 36);
        assert!(re
            .chars()
            .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn a_corrected_clock_brings_its_coincident_time_stamp() {
        let at = |ms| chrono::TimeZone::timestamp_millis_opt(&chrono::Utc, ms).unwrap();
        let r = StoredReading {
            seq: 1,
            reading_id: "r1".into(),
            group_id: "g1".into(),
            patient_id: "p1".into(),
            device_id: "scale-1".into(),
            metric: "body_weight".into(),
            value: 70.5,
            unit: "kg".into(),
            loinc: "29463-7".into(),
            device_measured_at: Some(at(1_769_845_330_000)),
            measured_at: at(1_769_845_390_000),
            received_at: at(1_769_845_400_000),
            source: "ble".into(),
            sequence: None,
            annotations: json!({"clock_corrected": "device_offset", "clock_offset_s": "-60"}),
            panel: None,
            content_digest: None,
        };
        let u = observation_unit(vec![r.clone()], &PhdContext::default(), "urn:mrn").unwrap();
        let coin = &u
            .needs
            .iter()
            .find(|n| n.0 == "Observation|coin-g1")
            .unwrap()
            .1;
        let placeholder = urn("Observation", "coin-g1");
        assert_eq!(coin["fullUrl"], placeholder);
        assert_eq!(
            u.entry["resource"]["derivedFrom"][0]["reference"],
            placeholder
        );
        let value = coin["resource"]["identifier"][0]["value"].as_str().unwrap();
        assert_eq!(
            coin["request"]["ifNoneExist"],
            format!("identifier={}", crate::fhir::urlencode(value))
        );
        assert_eq!(
            coin["resource"]["subject"]["reference"],
            urn("Device", "scale-1")
        );
        assert!(u.needs.iter().any(|n| n.0 == "Device|scale-1"));
        // The same correction, the same entry: a Bundle holds it once.
        let (bundle, n) = transaction(&[&u, &u]);
        assert_eq!(n, u.needs.len());
        assert_eq!(bundle["entry"].as_array().unwrap().len(), n + 2);
        // Not corrected: nothing more.
        let mut plain = r;
        plain.annotations = json!({});
        let u = observation_unit(vec![plain], &PhdContext::default(), "urn:mrn").unwrap();
        assert!(u.needs.iter().all(|n| !n.0.starts_with("Observation|")));
        assert!(u.entry["resource"].get("derivedFrom").is_none());
        assert_eq!(patients(&u).collect::<Vec<_>>(), ["p1"]);
    }

    #[test]
    fn references_become_bundle_entries_or_identifiers() {
        let mut v = json!({
            "subject": {"reference": "Patient/p1"},
            "device": {"reference": "Device/d1"},
            "focus": {"reference": "Observation/r9"},
            "derivedFrom": [{"reference": "QuestionnaireResponse/q1"}],
            "performer": [{"reference": "Patient/p1"}],
        });
        let mut needs = Vec::new();
        let phd_ctx = PhdContext::default();
        let refs = Refs {
            patient_system: "urn:mrn",
            phd: &phd_ctx,
            metrics: Vec::new(),
        };
        rewrite_refs(&mut v, &refs, &|id| Some(json!({"value": id})), &mut needs);
        assert_eq!(v["subject"]["reference"], urn("Patient", "p1"));
        assert_eq!(v["device"]["reference"], urn("Device", "d1"));
        assert_eq!(v["focus"]["identifier"], json!({"value": "r9"}));
        assert_eq!(v["subject"]["identifier"]["system"], "urn:mrn");
        assert_eq!(v["focus"]["type"], "Observation");
        assert_eq!(
            v["derivedFrom"][0]["identifier"]["system"],
            "urn:rpm-gateway:questionnaireresponse"
        );
        let mut keys: Vec<&str> = needs.iter().map(|n| n.0.as_str()).collect();
        keys.sort();
        assert_eq!(keys, ["Device|d1", "Patient|p1"], "each once");
        let patient = needs.iter().find(|n| n.0 == "Patient|p1").unwrap();
        assert_eq!(
            patient.1["request"]["ifNoneExist"],
            "identifier=urn%3Amrn|p1"
        );
    }
}
