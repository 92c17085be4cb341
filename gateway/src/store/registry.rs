//! The device registry: which patient each device's readings belong to.
//!
//! A device is bound to a patient (kit assignment). Readings of a device
//! that is not assigned are quarantined as `unknown_device`; assigning it
//! re-processes them in the same transaction, so none is lost and none is
//! processed twice.

use chrono::{DateTime, TimeZone, Utc};
use device_profiles::{ReadingGroup, Reject};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{insert_group, now_ms, Store, StoreError};

/// A device as the registry knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    /// Device id.
    pub device_id: String,
    /// Assigned patient, if any.
    pub patient_id: Option<String>,
    /// Who registered it (config, cli, api).
    pub origin: String,
    /// When it was last assigned.
    pub assigned_at: Option<DateTime<Utc>>,
    /// When a reading of it was last committed.
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// A quarantined input handed back for re-processing.
#[derive(Debug, Clone)]
pub struct QuarantinedInput {
    /// Row id.
    pub id: i64,
    /// Source kind name.
    pub source: String,
    /// Topic or other origin.
    pub origin: String,
    /// Profile that decoded it.
    pub profile: Option<String>,
    /// Device id.
    pub device_id: Option<String>,
    /// Measurement index within the message.
    pub index: Option<usize>,
    /// Raw payload.
    pub payload: Vec<u8>,
    /// Original time of receipt.
    pub received_at: DateTime<Utc>,
}

/// Result of an assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Reprocessed {
    /// Quarantined measurements that became readings.
    pub recovered: usize,
    /// Those that failed again (kept in quarantine with the new reason).
    pub still_refused: usize,
}

fn ms(t: Option<i64>) -> Option<DateTime<Utc>> {
    t.and_then(|t| Utc.timestamp_millis_opt(t).single())
}

impl Store {
    /// Assigns `device_id` to `patient_id` (registering the device if new) and
    /// re-processes its quarantined `unknown_device` input with `decode`,
    /// all in one transaction.
    pub fn assign_device(
        &mut self,
        device_id: &str,
        patient_id: &str,
        origin: &str,
        decode: impl Fn(&QuarantinedInput) -> Result<ReadingGroup, Reject>,
    ) -> Result<Reprocessed, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = now_ms();
        tx.execute(
            "INSERT INTO devices(device_id, patient_id, origin, registered_at, assigned_at) VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT(device_id) DO UPDATE SET patient_id = excluded.patient_id, assigned_at = excluded.assigned_at,
                 origin = excluded.origin
             WHERE devices.patient_id IS NOT excluded.patient_id",
            params![device_id, patient_id, origin, now],
        )?;
        let waiting: Vec<QuarantinedInput> = {
            let mut q = tx.prepare(
                "SELECT id, source, origin, profile, device_id, measurement_index, payload, received_at
                 FROM quarantine WHERE device_id = ?1 AND reason = 'unknown_device' AND status = 'open' ORDER BY id",
            )?;
            let rows = q.query_map([device_id], |r| {
                Ok(QuarantinedInput {
                    id: r.get(0)?,
                    source: r.get(1)?,
                    origin: r.get(2)?,
                    profile: r.get(3)?,
                    device_id: r.get(4)?,
                    index: r.get::<_, Option<i64>>(5)?.map(|i| i as usize),
                    payload: r.get(6)?,
                    received_at: ms(Some(r.get(7)?)).unwrap_or_else(Utc::now),
                })
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let mut result = Reprocessed::default();
        for input in waiting {
            match decode(&input) {
                Ok(mut group) => {
                    for r in &mut group.readings {
                        r.patient_id = patient_id.to_string();
                    }
                    insert_group(&tx, &group, patient_id, now, i64::MAX / 4)?;
                    tx.execute(
                        "UPDATE quarantine SET status = 'reprocessed', resolved_at = ?2 WHERE id = ?1",
                        params![input.id, now],
                    )?;
                    result.recovered += 1;
                }
                Err(reason) => {
                    tx.execute(
                        "UPDATE quarantine SET reason = ?2, detail = ?3 WHERE id = ?1",
                        params![input.id, reason.code(), reason.to_string()],
                    )?;
                    result.still_refused += 1;
                }
            }
        }
        tx.commit()?;
        Ok(result)
    }

    /// Unassigns a device: its later readings are quarantined until assigned again.
    pub fn unassign_device(&mut self, device_id: &str) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE devices SET patient_id = NULL, assigned_at = NULL WHERE device_id = ?1",
            [device_id],
        )?;
        Ok(n == 1)
    }

    /// All devices, by id.
    pub fn devices(&self) -> Result<Vec<Device>, StoreError> {
        let mut q = self.conn.prepare(
            "SELECT device_id, patient_id, origin, assigned_at, last_seen_at FROM devices ORDER BY device_id",
        )?;
        let rows = q.query_map([], device_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One device.
    pub fn device(&self, device_id: &str) -> Result<Option<Device>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT device_id, patient_id, origin, assigned_at, last_seen_at FROM devices WHERE device_id = ?1",
                [device_id],
                device_row,
            )
            .optional()?)
    }
}

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        device_id: r.get(0)?,
        patient_id: r.get(1)?,
        origin: r.get(2)?,
        assigned_at: ms(r.get(3)?),
        last_seen_at: ms(r.get(4)?),
    })
}
