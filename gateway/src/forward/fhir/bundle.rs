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
//! become logical references by identifier.
//!
//! A [`Unit`] is what is isolated when the server refuses something: one
//! Observation (one reading, or a blood-pressure panel), one Flag, one
//! Task, with the Devices and Patients it needs.

use serde_json::{json, Value};
use sha2::Digest;

use crate::store::queries::StoredReading;

/// Identifier system of devices (until the PHD device mapping gives one).
pub const DEVICE_SYSTEM: &str = "urn:rpm-gateway:device";
/// Identifier system of alerts pushed as Flags.
pub const ALERT_SYSTEM: &str = "https://rpm-gateway.dev/fhir/alert-id";
/// Identifier system of records the EHR only knows by reference.
const OTHER_SYSTEM: &str = "urn:rpm-gateway:";

/// What a unit carries, for quarantine and metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum Subject {
    /// An Observation of these readings (one, or a BP panel's components).
    Readings(Vec<StoredReading>),
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

/// The Device entry of a device we only know by id.
fn device_entry(device_id: &str) -> Value {
    let resource = json!({
        "resourceType": "Device",
        "identifier": [{"system": DEVICE_SYSTEM, "value": device_id}],
        "status": "active",
    });
    create_entry(&urn("Device", device_id), resource, DEVICE_SYSTEM, device_id)
}

/// The Patient entry: created only if the EHR has no patient with this
/// identifier (it normally has: then it is only looked up).
fn patient_entry(system: &str, patient_id: &str) -> Value {
    let resource = json!({
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": patient_id}],
    });
    create_entry(&urn("Patient", patient_id), resource, system, patient_id)
}

fn create_entry(full_url: &str, resource: Value, system: &str, value: &str) -> Value {
    let kind = resource["resourceType"].as_str().unwrap_or_default().to_string();
    json!({
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": kind, "ifNoneExist": identifier_query(system, value)},
    })
}

fn update_entry(full_url: &str, resource: Value, system: &str, value: &str) -> Value {
    let kind = resource["resourceType"].as_str().unwrap_or_default().to_string();
    json!({
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "PUT", "url": format!("{kind}?{}", identifier_query(system, value))},
    })
}

/// Rewrites the references of `resource` for the EHR: our Patients and
/// Devices to entries of the Bundle (added to `needs`), Observations to
/// logical references by identifier (`obs` gives it), anything else to
/// a logical reference under `urn:rpm-gateway:<type>`.
fn rewrite_refs(
    v: &mut Value,
    patient_system: &str,
    obs: &dyn Fn(&str) -> Option<(String, String)>,
    needs: &mut Vec<(String, Value)>,
) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("reference").cloned().as_ref() {
                if let Some((kind, id)) = r.split_once('/') {
                    match kind {
                        "Patient" => {
                            map.insert("reference".into(), urn("Patient", id).into());
                            push_need(needs, format!("Patient|{id}"), || {
                                patient_entry(patient_system, id)
                            });
                        }
                        "Device" => {
                            map.insert("reference".into(), urn("Device", id).into());
                            push_need(needs, format!("Device|{id}"), || device_entry(id));
                        }
                        _ => {
                            let (system, value) = match kind {
                                "Observation" => obs(id).unwrap_or_else(|| {
                                    (format!("{OTHER_SYSTEM}observation"), id.to_string())
                                }),
                                k => (
                                    format!("{OTHER_SYSTEM}{}", k.to_ascii_lowercase()),
                                    id.to_string(),
                                ),
                            };
                            map.remove("reference");
                            map.insert("type".into(), kind.into());
                            map.insert(
                                "identifier".into(),
                                json!({"system": system, "value": value}),
                            );
                        }
                    }
                    return;
                }
            }
            for (_, child) in map.iter_mut() {
                rewrite_refs(child, patient_system, obs, needs);
            }
        }
        Value::Array(items) => {
            for child in items {
                rewrite_refs(child, patient_system, obs, needs);
            }
        }
        _ => {}
    }
}

fn push_need(needs: &mut Vec<(String, Value)>, key: String, entry: impl FnOnce() -> Value) {
    if !needs.iter().any(|(k, _)| *k == key) {
        needs.push((key, entry()));
    }
}

/// The unit of one Observation (its readings as `fhir::observation` groups
/// them), or `None` if the mapping has no Observation for them.
pub fn observation_unit(readings: Vec<StoredReading>, patient_system: &str) -> Option<Unit> {
    let (id, mut o) = crate::fhir::observation::observation(&readings)?;
    let (system, value) = first_identifier(&o)?;
    if let Some(map) = o.as_object_mut() {
        map.remove("id");
    }
    let mut needs = Vec::new();
    rewrite_refs(&mut o, patient_system, &|_| None, &mut needs);
    let entry = create_entry(&urn("Observation", &id), o, &system, &value);
    Some(Unit {
        subject: Subject::Readings(readings),
        entry,
        needs,
    })
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
    rewrite_refs(&mut flag, patient_system, &|_| None, &mut needs);
    Unit {
        subject: Subject::Alert(a.alert_id.clone()),
        entry: update_entry(
            &urn("Flag", &a.alert_id),
            flag,
            ALERT_SYSTEM,
            &a.alert_id,
        ),
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
    if let Some(map) = r.as_object_mut() {
        map.remove("id");
    }
    let (system, value) = first_identifier(&r)
        .unwrap_or_else(|| ("https://rpm-gateway.dev/fhir/task-id".into(), t.task_id.clone()));
    let obs = |id: &str| observation_identity(conn, id);
    let mut needs = Vec::new();
    rewrite_refs(&mut r, patient_system, &obs, &mut needs);
    Ok(Unit {
        subject: Subject::Task(t.task_id.clone()),
        entry: update_entry(&urn("Task", &t.task_id), r, &system, &value),
        needs,
    })
}

/// The identifier the Observation with our id `id` was created on.
fn observation_identity(conn: &rusqlite::Connection, id: &str) -> Option<(String, String)> {
    let cols = crate::store::queries::READING_COLUMNS;
    let rows: Vec<StoredReading> = match id.strip_prefix("bp-") {
        Some(group) => conn
            .prepare(&format!(
                "SELECT {cols} FROM readings WHERE group_id = ?1 ORDER BY seq"
            ))
            .ok()?
            .query_map([group], crate::store::queries::reading_row)
            .ok()?
            .filter_map(Result::ok)
            .filter(|r| crate::fhir::observation::is_bp(&r.metric))
            .collect(),
        None => conn
            .prepare(&format!(
                "SELECT {cols} FROM readings WHERE reading_id = ?1"
            ))
            .ok()?
            .query_map([id], crate::store::queries::reading_row)
            .ok()?
            .filter_map(Result::ok)
            .collect(),
    };
    let (_, o) = crate::fhir::observation::observation(&rows)?;
    first_identifier(&o)
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
        assert!(re.chars().all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
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
        rewrite_refs(
            &mut v,
            "urn:mrn",
            &|id| Some(("urn:rpm-gateway:reading".into(), id.into())),
            &mut needs,
        );
        assert_eq!(v["subject"]["reference"], urn("Patient", "p1"));
        assert_eq!(v["device"]["reference"], urn("Device", "d1"));
        assert_eq!(v["focus"]["identifier"]["value"], "r9");
        assert_eq!(v["focus"]["type"], "Observation");
        assert_eq!(v["derivedFrom"][0]["identifier"]["system"], "urn:rpm-gateway:questionnaireresponse");
        let keys: Vec<&str> = needs.iter().map(|n| n.0.as_str()).collect();
        assert_eq!(keys, ["Patient|p1", "Device|d1"]);
        assert_eq!(
            needs[0].1["request"]["ifNoneExist"],
            "identifier=urn%3Amrn|p1"
        );
    }
}
