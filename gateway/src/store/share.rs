//! A home box's share of the program hub: its devices, their assignments,
//! those patients with their care plans, overrides, team and clock.
//!
//! The hub is authoritative for these. It computes a box's share from its
//! own registry ([`share_for`]: the devices the box's token names that the
//! hub has registered, and the patients they are assigned to) and the box
//! applies it to its own store **in one transaction** ([`Store::apply_share`]):
//! assignments are set (re-processing the device's quarantined
//! `unknown_device` input, as any assignment), devices the hub has left
//! unassigned are unassigned, patients are written, and every row the share
//! wrote is marked `origin = 'hub'` so that local edits of it are refused
//! (the API and the CLI check [`is_hub_owned_device`] and
//! [`is_hub_owned_patient`]). The version applied (the hub's ETag) is kept
//! with it, so that a box asks for its share with `If-None-Match` and an
//! unchanged share costs a 304, also after a restart. What the box applied
//! last stays in its store: it keeps working from it while offline.

use chrono::NaiveDate;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::patients::{self, PatientChange};
use super::registry::{assign_in, QuarantinedInput, Redecoded, Reprocessed};
use super::{now_ms, Store, StoreError};

/// The origin of rows the hub's share wrote.
pub const HUB_ORIGIN: &str = "hub";

/// One device of a share: its patient at the hub (`None`: unassigned there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedDevice {
    pub device_id: String,
    pub patient_id: Option<String>,
}

/// One patient of a share, as the hub keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedPatient {
    pub patient_id: String,
    pub care_plans: Vec<String>,
    /// `alerting_rules::Overrides` as JSON (validated at the hub).
    pub overrides: serde_json::Value,
    pub care_team: Option<String>,
    pub time_zone: Option<String>,
    pub monitoring_start: Option<NaiveDate>,
}

/// A box's share (the body of `GET /api/v1/upstream/share`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Share {
    pub devices: Vec<SharedDevice>,
    pub patients: Vec<SharedPatient>,
}

/// The share of a box whose token names `devices`: those the hub has
/// registered (a device the hub does not know is left to the box), by id,
/// and the patients they are assigned to, by id.
pub fn share_for(conn: &Connection, devices: &[String]) -> Result<Share, StoreError> {
    let names = serde_json::to_string(devices).map_err(|e| StoreError::Encode(e.to_string()))?;
    let mut q = conn.prepare(
        "SELECT device_id, patient_id FROM devices
         WHERE device_id IN (SELECT value FROM json_each(?1)) ORDER BY device_id",
    )?;
    let shared: Vec<SharedDevice> = q
        .query_map([&names], |r| {
            Ok(SharedDevice {
                device_id: r.get(0)?,
                patient_id: r.get(1)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut ids: Vec<&str> = shared
        .iter()
        .filter_map(|d| d.patient_id.as_deref())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut patients = Vec::with_capacity(ids.len());
    for id in ids {
        // A device may be assigned to a patient not enrolled at the hub:
        // the box gets the assignment, and no patient row.
        if let Some(p) = patients::get(conn, id)? {
            patients.push(SharedPatient {
                patient_id: p.patient_id,
                care_plans: p.care_plans,
                overrides: p.overrides,
                care_team: p.care_team,
                time_zone: p.time_zone,
                monitoring_start: p.monitoring_start,
            });
        }
    }
    Ok(Share {
        devices: shared,
        patients,
    })
}

/// What applying a share changed at the box.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ShareApplied {
    /// Devices whose assignment changed (assigned, moved or unassigned).
    pub devices_changed: usize,
    /// Patients written.
    pub patients: usize,
    /// Quarantined input re-processed by the new assignments.
    pub reprocessed: Reprocessed,
}

/// The version of the share a box applied last, if any.
pub fn applied_version(conn: &Connection) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT version FROM hub_share WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()?)
}

/// When the box applied its share last (Unix ms) and its version.
pub fn applied(conn: &Connection) -> Result<Option<(String, i64)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT version, applied_at FROM hub_share WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Whether the hub's share owns this device (local edits are refused).
pub fn is_hub_owned_device(conn: &Connection, device_id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT origin = ?2 FROM devices WHERE device_id = ?1",
            params![device_id, HUB_ORIGIN],
            |r| r.get::<_, bool>(0),
        )
        .optional()?
        .unwrap_or(false))
}

/// Whether the hub's share owns this patient (local edits are refused).
pub fn is_hub_owned_patient(conn: &Connection, patient_id: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT origin = ?2 FROM patients WHERE patient_id = ?1",
            params![patient_id, HUB_ORIGIN],
            |r| r.get::<_, bool>(0),
        )
        .optional()?
        .unwrap_or(false))
}

impl Store {
    /// Applies the hub's `share` (version `version`) in one transaction;
    /// `decode` re-processes quarantined input of newly assigned devices.
    pub fn apply_share(
        &mut self,
        share: &Share,
        version: &str,
        decode: impl Fn(&QuarantinedInput) -> Redecoded,
    ) -> Result<ShareApplied, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = now_ms();
        let mut out = ShareApplied::default();
        // Patients first: an assignment's re-processed readings are rated
        // against the patient's plans as they now are.
        for p in &share.patients {
            let change = PatientChange {
                care_plans: Some(p.care_plans.clone()),
                overrides: Some(p.overrides.clone()),
                care_team: Some(p.care_team.clone()),
                time_zone: Some(p.time_zone.clone()),
                monitoring_start: Some(p.monitoring_start),
            };
            let before = patients::get(&tx, &p.patient_id)?;
            let unchanged = before.as_ref().is_some_and(|b| {
                b.origin == HUB_ORIGIN
                    && b.care_plans == p.care_plans
                    && b.overrides == p.overrides
                    && b.care_team == p.care_team
                    && b.time_zone == p.time_zone
                    && b.monitoring_start == p.monitoring_start
            });
            if unchanged {
                continue;
            }
            patients::upsert(&tx, &p.patient_id, HUB_ORIGIN, &change)?;
            tx.execute(
                "UPDATE patients SET origin = ?2 WHERE patient_id = ?1",
                params![p.patient_id, HUB_ORIGIN],
            )?;
            out.patients += 1;
        }
        for d in &share.devices {
            let current: Option<Option<String>> = tx
                .query_row(
                    "SELECT patient_id FROM devices WHERE device_id = ?1",
                    [&d.device_id],
                    |r| r.get(0),
                )
                .optional()?;
            match &d.patient_id {
                Some(patient) => {
                    if current.as_ref() != Some(&Some(patient.clone())) {
                        let r = assign_in(&tx, &d.device_id, patient, HUB_ORIGIN, now, &decode)?;
                        out.reprocessed.recovered += r.recovered;
                        out.reprocessed.still_refused += r.still_refused;
                        out.devices_changed += 1;
                    }
                }
                None => {
                    if current.as_ref().is_some_and(|p| p.is_some()) {
                        out.devices_changed += 1;
                    }
                    tx.execute(
                        "INSERT INTO devices(device_id, origin, registered_at) VALUES (?1, ?2, ?3)
                         ON CONFLICT(device_id) DO UPDATE SET patient_id = NULL, assigned_at = NULL",
                        params![d.device_id, HUB_ORIGIN, now],
                    )?;
                }
            }
            tx.execute(
                "UPDATE devices SET origin = ?2 WHERE device_id = ?1",
                params![d.device_id, HUB_ORIGIN],
            )?;
        }
        tx.execute(
            "INSERT INTO hub_share (id, version, applied_at, devices, patients) VALUES (1, ?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET version = excluded.version, applied_at = excluded.applied_at,
                 devices = excluded.devices, patients = excluded.patients",
            params![
                version,
                now,
                share.devices.len() as i64,
                share.patients.len() as i64
            ],
        )?;
        tx.commit()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::open;

    #[test]
    fn a_share_is_computed_at_the_hub_and_applied_at_the_box() {
        let (_d, mut hub) = open();
        hub.assign_device("cuff-1", "p1", "cli", |_| Vec::new())
            .unwrap();
        hub.register_device("scale-1", "cli").unwrap();
        hub.assign_device("other-9", "p9", "cli", |_| Vec::new())
            .unwrap();
        hub.upsert_patient(
            "p1",
            "cli",
            &PatientChange {
                care_plans: Some(vec!["hypertension".into()]),
                care_team: Some(Some("north".into())),
                ..Default::default()
            },
        )
        .unwrap();
        let names = ["cuff-1", "scale-1", "unknown-7"].map(String::from);
        let share = share_for(hub.conn(), &names).unwrap();
        assert_eq!(share.devices.len(), 2, "only devices the hub knows");
        assert_eq!(share.patients.len(), 1);
        assert_eq!(share.patients[0].care_plans, ["hypertension"]);

        let (_e, mut boxs) = open();
        boxs.assign_device("scale-1", "p-local", "config", |_| Vec::new())
            .unwrap();
        let done = boxs.apply_share(&share, "v1", |_| Vec::new()).unwrap();
        assert_eq!(done.devices_changed, 2);
        assert_eq!(done.patients, 1);
        assert_eq!(
            boxs.device("cuff-1")
                .unwrap()
                .unwrap()
                .patient_id
                .as_deref(),
            Some("p1")
        );
        assert_eq!(boxs.device("scale-1").unwrap().unwrap().patient_id, None);
        assert!(is_hub_owned_device(boxs.conn(), "cuff-1").unwrap());
        assert!(is_hub_owned_patient(boxs.conn(), "p1").unwrap());
        assert!(!is_hub_owned_patient(boxs.conn(), "p-local").unwrap());
        assert_eq!(applied_version(boxs.conn()).unwrap().as_deref(), Some("v1"));
        let p = boxs.patient("p1").unwrap().unwrap();
        assert_eq!(p.care_team.as_deref(), Some("north"));
        // The same share again changes nothing.
        let again = boxs.apply_share(&share, "v1", |_| Vec::new()).unwrap();
        assert_eq!(again, ShareApplied::default());
    }
}
