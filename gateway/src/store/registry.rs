//! The device registry: which patient each device's readings belong to.
//!
//! A device is bound to a patient (kit assignment). Readings of a device
//! that is not assigned are quarantined as `unknown_device`; assigning it
//! re-processes them in the same transaction, so none is lost and none is
//! processed twice.

use chrono::{DateTime, TimeZone, Utc};
use device_profiles::{ReadingGroup, Reject, Source};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

use super::{now_ms, ReadingInserts, Store, StoreError};

/// A device as the registry knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    pub device_id: String,
    /// Assigned patient, if any.
    pub patient_id: Option<String>,
    /// Who registered it (config, cli, api).
    pub origin: String,
    /// When it was last assigned.
    pub assigned_at: Option<DateTime<Utc>>,
    /// When a reading of it was last committed.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// When it was first registered.
    pub registered_at: Option<DateTime<Utc>>,
    /// Battery level reported by the device (BLE), percent.
    pub battery_pct: Option<i64>,
    /// `connected` | `disconnected` for connected sources (BLE), else None.
    pub connection: Option<String>,
    /// Source it was last seen on (mqtt, ble, http).
    pub source: Option<String>,
    /// Bluetooth: bonded with this gateway (`rpm-gateway ble pair`).
    pub bonded: bool,
    /// Device Information (Bluetooth service 0x180A), when read.
    #[serde(flatten)]
    pub information: DeviceInformation,
}

/// What a device says about itself (Bluetooth Device Information, 0x180A).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceInformation {
    /// Manufacturer name (0x2A29).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    /// Model number (0x2A24).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Serial number (0x2A25).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// Firmware revision (0x2A26).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
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
    pub device_id: Option<String>,
    /// Measurement index within the message (the first, for a row that
    /// stands for several).
    pub index: Option<usize>,
    /// Measurements the row stands for (refused alike).
    pub count: usize,
    /// Their positions, when the row kept them (see store/quarantine.rs).
    pub indexes: Option<Vec<usize>>,
    /// The reason code it was quarantined with.
    pub reason: String,
    /// Raw payload.
    pub payload: Vec<u8>,
    /// Original time of receipt.
    pub received_at: DateTime<Utc>,
    /// What the connection knew besides the bytes (JSON), if anything.
    pub facts: Option<String>,
}

/// Which measurements of its message a quarantined input stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// These positions.
    Some(Vec<usize>),
    /// Every measurement of the message (a whole-message refusal, or a row
    /// whose positions were too many to keep).
    All,
}

impl QuarantinedInput {
    /// The measurements to re-decode.
    pub fn targets(&self) -> Targets {
        match (self.index, &self.indexes) {
            (_, Some(list)) => Targets::Some(list.clone()),
            (Some(i), None) if self.count <= 1 => Targets::Some(vec![i]),
            _ => Targets::All,
        }
    }
}

/// What re-decoding a quarantined input gives: per measurement position,
/// its readings (or a validated questionnaire response) or why it is still
/// refused.
pub type Redecoded = Vec<(usize, Result<Recovered, Reject>)>;

/// What a quarantined input became on re-decoding.
#[derive(Debug, Clone)]
pub enum Recovered {
    /// A measurement's readings.
    Group(ReadingGroup),
    /// A questionnaire response, stored whole with its score readings.
    Response(
        std::sync::Arc<device_profiles::questionnaire::Accepted>,
        Source,
    ),
}

impl From<ReadingGroup> for Recovered {
    fn from(g: ReadingGroup) -> Self {
        Recovered::Group(g)
    }
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
        decode: impl Fn(&QuarantinedInput) -> Redecoded,
    ) -> Result<Reprocessed, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let result = assign_in(&tx, device_id, patient_id, origin, now_ms(), &decode)?;
        tx.commit()?;
        Ok(result)
    }

    /// Re-processes one quarantined input (a profile corrected, a device
    /// assigned since) in its own transaction: the same decode and insert as
    /// [`Store::assign_device`]. `None` when there is no such row.
    pub fn reprocess_quarantined(
        &mut self,
        id: i64,
        decode: impl Fn(&QuarantinedInput) -> Redecoded,
    ) -> Result<Option<ReprocessResult>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let status: Option<String> = tx
            .query_row("SELECT status FROM quarantine WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        let result = match status.as_deref() {
            None => return Ok(None),
            Some("open") => {
                let input = load_quarantined(&tx, "id = ?1", id)?;
                match input.first() {
                    Some(input) => {
                        let done = reprocess_one(&tx, input, now_ms(), &decode)?;
                        let reading_ids = done
                            .recovered
                            .iter()
                            .flat_map(|g| g.readings.iter().map(|r| r.reading_id.clone()))
                            .collect();
                        match done.first_refusal {
                            None => ReprocessResult::Recovered { reading_ids },
                            Some(reason) => ReprocessResult::StillRefused {
                                reason: reason.code(),
                                detail: reason.to_string(),
                                count: done.refused,
                                reading_ids,
                            },
                        }
                    }
                    None => return Ok(None),
                }
            }
            Some(other) => ReprocessResult::NotOpen {
                status: other.to_string(),
            },
        };
        tx.commit()?;
        Ok(Some(result))
    }

    /// Registers a device without assigning it. Returns false when it was
    /// already registered (nothing changes).
    pub fn register_device(&mut self, device_id: &str, origin: &str) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "INSERT INTO devices(device_id, origin, registered_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(device_id) DO NOTHING",
            params![device_id, origin, now_ms()],
        )?;
        Ok(n == 1)
    }

    /// Records a Bluetooth bond (or its removal) and the device's own
    /// information, registering the device if new (`origin`). Information
    /// not read (None) leaves what was known.
    pub fn set_bonded(
        &mut self,
        device_id: &str,
        bonded: bool,
        info: &DeviceInformation,
        origin: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO devices(device_id, origin, registered_at, source) VALUES (?1, ?2, ?3, 'ble')
             ON CONFLICT(device_id) DO NOTHING",
            params![device_id, origin, now_ms()],
        )?;
        self.conn.execute(
            "UPDATE devices SET bonded = ?2, manufacturer = COALESCE(?3, manufacturer), model = COALESCE(?4, model),
                 serial_number = COALESCE(?5, serial_number), firmware = COALESCE(?6, firmware)
             WHERE device_id = ?1",
            params![
                device_id,
                bonded,
                info.manufacturer,
                info.model,
                info.serial_number,
                info.firmware
            ],
        )?;
        Ok(())
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
        let mut q = self.conn.prepare(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY device_id"
        ))?;
        let rows = q.query_map([], device_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One device.
    pub fn device(&self, device_id: &str) -> Result<Option<Device>, StoreError> {
        device(&self.conn, device_id)
    }
}

/// One page of devices, by device id.
#[derive(Debug, Clone, Default)]
pub struct DevicePage {
    /// After this device id: the keyset cursor.
    pub after: Option<String>,
    /// Only assigned (`true`) or unassigned (`false`) devices.
    pub assigned: Option<bool>,
    /// Only this patient's devices.
    pub patient_id: Option<String>,
    /// Only devices of patients of these care teams (a JSON array: a
    /// care-team token's scope).
    pub scope_teams: Option<String>,
    /// Most rows.
    pub limit: usize,
}

/// The page of devices `q` selects.
pub fn devices_page(
    conn: &rusqlite::Connection,
    q: &DevicePage,
) -> Result<Vec<Device>, StoreError> {
    let mut f = super::listing::Filter::default();
    if let Some(c) = &q.after {
        f.add("device_id > ?", c.clone());
    }
    match q.assigned {
        Some(true) => f.add("patient_id IS NOT ?", rusqlite::types::Value::Null),
        Some(false) => f.add("patient_id IS ?", rusqlite::types::Value::Null),
        None => {}
    }
    if let Some(p) = &q.patient_id {
        f.add("patient_id = ?", p.clone());
    }
    f.scope("patient_id", q.scope_teams.clone());
    f.query(
        conn,
        &format!("{DEVICE_COLUMNS} FROM devices"),
        "device_id",
        q.limit,
        device_row,
    )
}

/// Columns read by [`device_row`], in its order.
pub const DEVICE_COLUMNS: &str =
    "device_id, patient_id, origin, assigned_at, last_seen_at, registered_at, battery_pct, connection, source, bonded, manufacturer, model, serial_number, firmware";

/// Maps a row selected with [`DEVICE_COLUMNS`].
pub fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        device_id: r.get(0)?,
        patient_id: r.get(1)?,
        origin: r.get(2)?,
        assigned_at: ms(r.get(3)?),
        last_seen_at: ms(r.get(4)?),
        registered_at: ms(r.get(5)?),
        battery_pct: r.get(6)?,
        connection: r.get(7)?,
        source: r.get(8)?,
        bonded: r.get::<_, i64>(9)? != 0,
        information: DeviceInformation {
            manufacturer: r.get(10)?,
            model: r.get(11)?,
            serial_number: r.get(12)?,
            firmware: r.get(13)?,
        },
    })
}

/// What re-processing one quarantined input did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReprocessResult {
    /// It became readings (already-stored ones are skipped).
    Recovered {
        /// ids of its readings
        reading_ids: Vec<String>,
    },
    /// Refused again; kept open with the new reason.
    StillRefused {
        /// reason code
        reason: &'static str,
        /// reason text
        detail: String,
        /// measurements still refused
        count: usize,
        /// readings of the measurements of this entry that were recovered
        /// (an entry standing for several measurements)
        #[serde(skip_serializing_if = "Vec::is_empty")]
        reading_ids: Vec<String>,
    },
    /// Not open any more (already re-processed or discarded).
    NotOpen {
        /// its status
        status: String,
    },
}

/// One device, on any connection (inside a transaction: pass `&tx`).
pub fn device(conn: &Connection, device_id: &str) -> Result<Option<Device>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE device_id = ?1"
        ))?
        .query_row([device_id], device_row)
        .optional()?)
}

/// [`Store::assign_device`] inside the caller's transaction.
pub fn assign_in(
    tx: &Transaction<'_>,
    device_id: &str,
    patient_id: &str,
    origin: &str,
    now: i64,
    decode: &impl Fn(&QuarantinedInput) -> Redecoded,
) -> Result<Reprocessed, StoreError> {
    tx.execute(
        "INSERT INTO devices(device_id, patient_id, origin, registered_at, assigned_at) VALUES (?1, ?2, ?3, ?4, ?4)
         ON CONFLICT(device_id) DO UPDATE SET patient_id = excluded.patient_id, assigned_at = excluded.assigned_at,
             origin = excluded.origin
         WHERE devices.patient_id IS NOT excluded.patient_id",
        params![device_id, patient_id, origin, now],
    )?;
    let waiting = load_quarantined(
        tx,
        "device_id = ?1 AND reason = 'unknown_device' AND status = 'open'",
        device_id,
    )?;
    let mut result = Reprocessed::default();
    for input in waiting {
        let done = reprocess_one(tx, &input, now, decode)?;
        result.recovered += done.recovered.len();
        result.still_refused += done.refused;
    }
    Ok(result)
}

/// Quarantined inputs matching `filter` (one `?1` parameter), in id order.
fn load_quarantined(
    tx: &Transaction<'_>,
    filter: &str,
    param: impl rusqlite::ToSql,
) -> Result<Vec<QuarantinedInput>, StoreError> {
    let mut q = tx.prepare(&format!(
        "SELECT id, source, origin, profile, device_id, measurement_index,
                COALESCE((SELECT p.payload FROM quarantine_payloads p WHERE p.digest = quarantine.payload_digest), payload),
                received_at, count, measurement_indexes, reason, facts
         FROM quarantine WHERE {filter} ORDER BY id"
    ))?;
    let rows = q.query_map([param], |r| {
        let count = r.get::<_, i64>(8)?.max(1) as usize;
        let indexes: Option<String> = r.get(9)?;
        Ok(QuarantinedInput {
            id: r.get(0)?,
            source: r.get(1)?,
            origin: r.get(2)?,
            profile: r.get(3)?,
            device_id: r.get(4)?,
            index: r.get::<_, Option<i64>>(5)?.map(|i| i as usize),
            count,
            indexes: indexes.and_then(|t| super::quarantine::parse_ranges(&t, count)),
            reason: r.get(10)?,
            payload: r.get(6)?,
            received_at: ms(Some(r.get(7)?)).unwrap_or_else(Utc::now),
            facts: r.get(11)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What re-processing one row did.
struct RowOutcome {
    /// Measurements that became readings.
    recovered: Vec<ReadingGroup>,
    /// Measurements still refused.
    refused: usize,
    /// The reason of the first of those.
    first_refusal: Option<Reject>,
}

/// Decodes one quarantined input again and, for each of its measurements
/// that now yields readings of an assigned device, stores them; the row is
/// closed when none is refused any more, and otherwise keeps the ones still
/// refused (count, positions, the first one's reason). The registry is read
/// inside the caller's write transaction, as at ingest.
fn reprocess_one(
    tx: &Transaction<'_>,
    input: &QuarantinedInput,
    now: i64,
    decode: &impl Fn(&QuarantinedInput) -> Redecoded,
) -> Result<RowOutcome, StoreError> {
    let all = input.targets() == Targets::All && input.index.is_some();
    let mut out = RowOutcome {
        recovered: Vec::new(),
        refused: 0,
        first_refusal: None,
    };
    let mut still: Vec<usize> = Vec::new();
    let mut inserts = ReadingInserts::new(tx)?;
    for (index, decoded) in decode(input) {
        let bound = match decoded {
            Ok(Recovered::Response(response, source)) => {
                let device = response.subject.device_id.clone();
                let named = response.subject.patient_id.clone();
                let of_device = match &device {
                    Some(d) => super::patient_of(tx, d)?,
                    None => None,
                };
                // As at ingest: a device answers for its own patient only.
                let patient = match (named, of_device) {
                    (Some(p), Some(q)) if p == q => Ok(p),
                    (Some(_), _) if device.is_some() => Err(Reject::PatientMismatch),
                    (Some(p), _) => match super::responses::patient_enrolled(tx, &p)? {
                        true => Ok(p),
                        false => Err(Reject::UnknownPatient),
                    },
                    (None, Some(q)) => Ok(q),
                    (None, None) => Err(Reject::UnknownDevice),
                };
                match patient {
                    Ok(patient_id) => {
                        let group = response.readings(&patient_id, input.received_at, source);
                        if super::responses::insert(
                            tx,
                            &response,
                            &patient_id,
                            input.received_at.timestamp_millis(),
                            now,
                            source.name(),
                        )? {
                            Ok((group, patient_id))
                        } else {
                            // Stored meanwhile (sent again): nothing to add.
                            out.recovered.push(group);
                            continue;
                        }
                    }
                    Err(r) => Err(r),
                }
            }
            Ok(Recovered::Group(mut group)) => {
                let device = group
                    .readings
                    .first()
                    .map(|r| r.device_id.clone())
                    .or_else(|| input.device_id.clone())
                    .unwrap_or_default();
                match super::patient_of(tx, &device)? {
                    Some(patient_id) => {
                        for r in &mut group.readings {
                            r.patient_id.clone_from(&patient_id);
                        }
                        Ok((group, patient_id))
                    }
                    None => Err(Reject::UnknownDevice),
                }
            }
            Err(reason) => Err(reason),
        };
        match bound {
            Ok((group, patient_id)) => {
                inserts.group(&group, &patient_id, now, i64::MAX / 4)?;
                out.recovered.push(group);
            }
            // Re-decoding every measurement of the message for a row that
            // lost its positions: the ones refused for another reason
            // belong to other rows.
            Err(reason) if all && reason.code() != input.reason => {}
            Err(reason) => {
                out.refused += 1;
                still.push(index);
                out.first_refusal.get_or_insert(reason);
            }
        }
    }
    match &out.first_refusal {
        None => {
            tx.execute(
                "UPDATE quarantine SET status = 'reprocessed', resolved_at = ?2 WHERE id = ?1",
                params![input.id, now],
            )?;
        }
        Some(reason) => {
            let ranges = (still.len() > 1).then(|| super::quarantine::ranges(&still));
            let ranges = ranges.filter(|r| r.len() <= super::quarantine::INDEX_TEXT_BUDGET);
            tx.execute(
                "UPDATE quarantine SET reason = ?2, detail = ?3, count = ?4, measurement_indexes = ?5,
                     measurement_index = COALESCE(?6, measurement_index)
                 WHERE id = ?1",
                params![
                    input.id,
                    reason.code(),
                    super::quarantine::truncate(&reason.to_string(), super::quarantine::DETAIL_LIMIT),
                    still.len() as i64,
                    ranges,
                    input.index.and(still.first().map(|&i| i as i64)),
                ],
            )?;
        }
    }
    Ok(out)
}
/// Whether one of the patient's devices is known offline (disconnected,
/// waiting to be paired, or battery empty).
pub fn patient_device_offline(
    conn: &rusqlite::Connection,
    patient_id: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM devices WHERE patient_id = ?1
               AND (connection IN ('disconnected', 'pairing_required') OR battery_pct = 0) LIMIT 1",
        )?
        .exists([patient_id])?)
}

/// This gateway's IEEE EUI-64 system id (16 hex digits), made once by the
/// store's migration: the identity of the gateway as a FHIR PhgDevice.
pub fn gateway_system_id(conn: &rusqlite::Connection) -> Result<String, StoreError> {
    Ok(conn.query_row(
        "SELECT system_id FROM gateway_identity WHERE id = 1",
        [],
        |r| r.get(0),
    )?)
}
