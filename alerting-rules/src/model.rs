//! What the gateway hands the engine: the patient and the new readings.

use chrono::{DateTime, Utc};
use device_profiles::Metric;
use serde::{Deserialize, Serialize};

use crate::overrides::Overrides;
use crate::reading_id::ReadingId;

/// The patient being evaluated. No demographics: the engine needs none, and
/// keeping PHI out of alert state keeps it out of logs and webhooks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Patient {
    /// Stable pseudonymous id.
    pub id: String,
    /// Care plans (`heart-failure`, `hypertension`, `diabetes`, `copd`).
    pub care_plans: Vec<String>,
    /// Per-patient rule overrides set by clinicians.
    #[serde(default)]
    pub overrides: Overrides,
    /// When monitoring started: the silence of a patient who never sent a
    /// reading is counted from here, so "no data at all" fails loud.
    #[serde(default)]
    pub enrolled_at: Option<DateTime<Utc>>,
}

/// One new reading, in its metric's canonical unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewReading {
    /// Stable reading id (the gateway's idempotency key).
    pub id: String,
    /// Metric.
    pub metric: Metric,
    /// Value in `metric.canonical_unit()`.
    pub value: f64,
    /// When it was measured (UTC).
    pub measured_at: DateTime<Utc>,
    /// When the gateway received it.
    pub received_at: DateTime<Utc>,
}

/// A reading cited as evidence in an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Reading id.
    pub reading_id: ReadingId,
    /// Metric.
    pub metric: Metric,
    /// Value in the canonical unit.
    pub value: f64,
    /// When it was measured.
    pub measured_at: DateTime<Utc>,
}
