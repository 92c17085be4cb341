//! What a decoder produces: measurements as the device stated them, before
//! any unit conversion, registry lookup or clock correction.
//!
//! Decoders (MQTT payload profiles, BLE GATT characteristics) stay small and
//! honest by producing this one shape; everything clinical happens once, in
//! [`crate::canonical`].

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

use crate::metric::Metric;

/// Free-form qualifiers of a measurement (irregular pulse, meal context,
/// body movement, ...). Sorted so that serialisation is stable.
pub type Annotations = BTreeMap<String, String>;

/// The IEEE 11073 special values: none of them is a number and none is ever
/// stored as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecialValue {
    /// Not a number (0x07FF / 0x007FFFFF).
    NaN,
    /// Not at this resolution (0x0800 / 0x00800000).
    NRes,
    /// +INFINITY (0x07FE / 0x007FFFFE).
    PositiveInfinity,
    /// -INFINITY (0x0802 / 0x00800002).
    NegativeInfinity,
    /// Reserved for future use (0x0801 / 0x00800001).
    Reserved,
}

impl fmt::Display for SpecialValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpecialValue::NaN => "NaN",
            SpecialValue::NRes => "NRes",
            SpecialValue::PositiveInfinity => "+INFINITY",
            SpecialValue::NegativeInfinity => "-INFINITY",
            SpecialValue::Reserved => "reserved value",
        })
    }
}

/// A value as the device sent it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawValue {
    /// A finite number (decoders must not put NaN or infinities here; the
    /// canonicaliser checks again).
    Number(f64),
    /// A special value that stands for "no value".
    Special(SpecialValue),
}

/// One measured quantity of a measurement (one component of a panel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    /// What was measured.
    pub metric: Metric,
    /// The value, in `unit`.
    pub value: RawValue,
    /// The unit exactly as the device or profile stated it; `None` if the
    /// payload gave none.
    pub unit: Option<String>,
}

impl Component {
    /// A numeric component.
    pub fn number(metric: Metric, value: f64, unit: impl Into<String>) -> Self {
        Component {
            metric,
            value: RawValue::Number(value),
            unit: Some(unit.into()),
        }
    }
}

/// When the device says the measurement was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceTime {
    /// An absolute instant (RFC 3339 with offset, Unix time).
    Utc(DateTime<Utc>),
    /// Device-local wall time without a zone (BLE Date Time); the gateway
    /// applies the configured offset.
    Local(NaiveDateTime),
    /// Seconds relative to the moment of receipt (SenML relative time).
    RelativeSeconds(i64),
}

/// One measurement as decoded: the components taken together at one time.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DecodedMeasurement {
    /// The device id, when the payload itself names the device (SenML base
    /// name, a vendor JSON field); otherwise the source knows it.
    pub device_id: Option<String>,
    /// Measurement time as the device stated it.
    pub time: Option<DeviceTime>,
    /// The device's own record sequence number, where it has one.
    pub sequence: Option<u64>,
    /// The measured quantities.
    pub components: Vec<Component>,
    /// Qualifiers.
    pub annotations: Annotations,
    /// Set by a decoder when the record must not become clinical data
    /// (control solution, demonstration data, device fault): the reason.
    pub not_clinical: Option<String>,
}
