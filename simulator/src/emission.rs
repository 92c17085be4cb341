//! What a virtual device emits: one measurement at one (simulated) time, in
//! the units the device itself would use. Transports encode it.

use chrono::{DateTime, Utc};
use device_profiles::{Metric, Unit};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The kinds of device in a home-monitoring kit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// Body-weight scale.
    Scale,
    /// Blood-pressure cuff.
    BpCuff,
    /// Blood-glucose meter.
    Glucometer,
    /// Pulse oximeter.
    PulseOximeter,
    /// Thermometer.
    Thermometer,
    /// A tablet on which the patient answers a daily symptom check-in (the
    /// heart-failure check-in, or the COPD diary for a COPD patient): its
    /// values are the answers' scores (unit `{score}`), published as a
    /// questionnaire response.
    Tablet,
}

/// A fault injected on purpose, to test the gateway's refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Bytes that are not valid JSON (single-quoted JSON, a real vendor bug).
    Malformed,
    /// The payload cut off mid-way (a dropped link, a full buffer).
    Truncated,
    /// A value replaced by NaN (the SFLOAT special value, or "NaN" in JSON).
    NanValue,
    /// A unit the gateway cannot know.
    UnknownUnit,
    /// Sent under a device id no patient has.
    UnknownDevice,
    /// A value far outside any physiology.
    Implausible,
    /// A payload larger than any device sends.
    Oversized,
    /// A check-in answer that is not one of the question's options (a
    /// tablet app out of step with the questionnaire).
    InvalidAnswer,
}

/// One measurement of one virtual device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Emission {
    /// True measurement time (simulated clock).
    pub at: DateTime<Utc>,
    /// The patient wearing the device (ground truth; not sent on the wire).
    pub patient_id: String,
    /// Device id as sent.
    pub device_id: String,
    /// Device kind.
    pub device: DeviceKind,
    /// Values in the unit the device sends.
    pub values: Vec<(Metric, f64, Unit)>,
    /// Qualifiers (irregular pulse, meal, ...).
    pub annotations: BTreeMap<String, String>,
    /// Device record sequence number.
    pub sequence: Option<u64>,
    /// Injected fault, if any.
    pub fault: Option<Fault>,
}
