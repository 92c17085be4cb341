//! The sent-report: what a transport actually published, so an end-to-end
//! test can check that every reading arrived exactly once (duplicates
//! deduplicated, faults quarantined, nothing lost).
//!
//! The transport calls [`SentReport::record`] after each successful publish
//! (and [`SentReport::record_failure`] when a publish failed for good); the
//! test then compares the gateway's store with [`SentReport::expected`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use device_profiles::{Metric, Unit};
use serde::{Deserialize, Serialize};

use crate::emission::{DeviceKind, Fault};
use crate::plan::{EmissionId, Outgoing, Plan};

/// What was sent of one reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentRecord {
    /// Reading identity.
    pub id: EmissionId,
    /// Patient (ground truth).
    pub patient_id: String,
    /// Device id of the reading (before any `UnknownDevice` rewrite).
    pub device_id: String,
    /// Device kind.
    pub device: DeviceKind,
    /// Device sequence number.
    pub sequence: Option<u64>,
    /// True measured-at time.
    pub measured_at: DateTime<Utc>,
    /// Timestamp in the payload (device clock).
    pub device_time: DateTime<Utc>,
    /// Injected fault.
    pub fault: Option<Fault>,
    /// Values as the device sent them (metric, value, unit).
    #[serde(default)]
    pub values: Vec<(Metric, f64, Unit)>,
    /// Successful publishes of this reading.
    pub publishes: u32,
}

/// Per-device tallies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCounts {
    /// Distinct readings published at least once, faults included.
    pub readings: u64,
    /// Distinct valid (non-fault) readings: what the gateway should store.
    pub valid: u64,
    /// Distinct faulty readings: what the gateway should quarantine.
    pub faults: u64,
    /// Publishes, duplicates included.
    pub publishes: u64,
    /// Publishes that failed for good.
    pub failures: u64,
}

/// Record of a run's publishes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SentReport {
    records: BTreeMap<EmissionId, SentRecord>,
    failures: BTreeMap<EmissionId, Failed>,
}

/// Publishes of one reading that failed for good.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    /// Device id of the reading.
    pub device_id: String,
    /// One reason per failed publish.
    pub reasons: Vec<String>,
}

impl SentReport {
    /// An empty report.
    pub fn new() -> SentReport {
        SentReport::default()
    }

    /// Records one successful publish.
    pub fn record(&mut self, o: &Outgoing) {
        let r = self.records.entry(o.id).or_insert_with(|| SentRecord {
            id: o.id,
            patient_id: o.emission.patient_id.clone(),
            device_id: o.emission.device_id.clone(),
            device: o.emission.device,
            sequence: o.emission.sequence,
            measured_at: o.measured_at,
            device_time: o.emission.at,
            fault: o.emission.fault,
            values: o.emission.values.clone(),
            publishes: 0,
        });
        r.publishes += 1;
    }

    /// Records a publish that failed for good (after the transport's own
    /// retries), with the reason.
    pub fn record_failure(&mut self, o: &Outgoing, reason: impl Into<String>) {
        let f = self.failures.entry(o.id).or_insert_with(|| Failed {
            device_id: o.emission.device_id.clone(),
            reasons: Vec::new(),
        });
        f.reasons.push(reason.into());
    }

    /// Every reading published at least once, by id.
    pub fn records(&self) -> impl Iterator<Item = &SentRecord> {
        self.records.values()
    }

    /// The record of one reading.
    pub fn get(&self, id: EmissionId) -> Option<&SentRecord> {
        self.records.get(&id)
    }

    /// Total successful publishes, duplicates included.
    pub fn publishes(&self) -> u64 {
        self.records.values().map(|r| u64::from(r.publishes)).sum()
    }

    /// Readings the gateway should have stored, exactly once each: published,
    /// and not faulty.
    pub fn expected(&self) -> impl Iterator<Item = &SentRecord> {
        self.records.values().filter(|r| r.fault.is_none())
    }

    /// Readings the gateway should have quarantined.
    pub fn faulty(&self) -> impl Iterator<Item = &SentRecord> {
        self.records.values().filter(|r| r.fault.is_some())
    }

    /// Tallies per device id.
    pub fn per_device(&self) -> BTreeMap<String, DeviceCounts> {
        let mut out: BTreeMap<String, DeviceCounts> = BTreeMap::new();
        for r in self.records.values() {
            let c = out.entry(r.device_id.clone()).or_default();
            c.readings += 1;
            c.publishes += u64::from(r.publishes);
            if r.fault.is_some() {
                c.faults += 1;
            } else {
                c.valid += 1;
            }
        }
        for f in self.failures.values() {
            out.entry(f.device_id.clone()).or_default().failures += f.reasons.len() as u64;
        }
        out
    }

    /// Planned publishes that were never made: (id, copy). Empty after a
    /// complete run.
    pub fn missing(&self, plan: &Plan) -> Vec<(EmissionId, u32)> {
        let mut out = Vec::new();
        for p in &plan.readings {
            let done = self.records.get(&p.id).map_or(0, |r| r.publishes);
            for copy in done..p.sends.len() as u32 {
                out.push((p.id, copy));
            }
        }
        out
    }

    /// Failed publishes, by id.
    pub fn failures(&self) -> &BTreeMap<EmissionId, Failed> {
        &self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emission::Emission;
    use crate::payload::WireFormat;
    use crate::plan::Planned;
    use chrono::TimeZone;

    fn planned(id: u64, device: &str, sends: usize, fault: Option<Fault>) -> Planned {
        let at = Utc.with_ymd_and_hms(2026, 3, 2, 7, 0, 0).unwrap()
            + chrono::TimeDelta::minutes(id as i64);
        Planned {
            id: EmissionId(id),
            emission: Emission {
                at,
                patient_id: "p".into(),
                device_id: device.into(),
                device: DeviceKind::Scale,
                values: vec![(Metric::BodyWeight, 80.0, Unit::Kg)],
                annotations: Default::default(),
                sequence: Some(id),
                fault,
            },
            format: WireFormat::Vendor,
            quirks: vec![],
            sends: (0..sends)
                .map(|i| at + chrono::TimeDelta::seconds(i as i64))
                .collect(),
        }
    }

    #[test]
    fn counts_duplicates_faults_and_missing() {
        let plan = Plan {
            start: Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2026, 3, 3, 0, 0, 0).unwrap(),
            readings: vec![
                planned(0, "a", 2, None),
                planned(1, "a", 1, Some(Fault::Malformed)),
                planned(2, "b", 1, None),
            ],
        };
        let mut r = SentReport::new();
        let out = plan.outgoing();
        assert_eq!(out.len(), 4);
        for o in &out[..3] {
            r.record(o);
        }
        r.record_failure(&out[3], "broker gone");
        assert_eq!(r.publishes(), 3);
        assert_eq!(r.expected().count(), 1);
        assert_eq!(r.faulty().count(), 1);
        let a = r.per_device()["a"];
        assert_eq!((a.readings, a.valid, a.faults, a.publishes), (2, 1, 1, 3));
        assert_eq!(r.missing(&plan), vec![(EmissionId(2), 0)]);
        assert_eq!(r.per_device()["b"].failures, 1);
    }
}
