//! Why bytes did not decode: which characteristic, at which byte, and what.
//!
//! Decoding runs on bytes from radios we do not control, so every failure is
//! an expected, typed outcome (style.md §9: hot-path failures get concrete
//! enums) that the gateway turns into a quarantine record with
//! [`Reject::InvalidGatt`].

use std::fmt;

use crate::reject::Reject;

/// The characteristic (or declarative vendor layout) being decoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Characteristic {
    /// Date Time 0x2A08.
    DateTime,
    /// Current Time 0x2A2B.
    CurrentTime,
    /// Blood Pressure Measurement 0x2A35.
    BloodPressureMeasurement,
    /// Intermediate Cuff Pressure 0x2A36.
    IntermediateCuffPressure,
    /// Weight Measurement 0x2A9D.
    WeightMeasurement,
    /// Body Composition Measurement 0x2A9C.
    BodyCompositionMeasurement,
    /// Glucose Measurement 0x2A18.
    GlucoseMeasurement,
    /// Glucose Measurement Context 0x2A34.
    GlucoseMeasurementContext,
    /// Temperature Measurement 0x2A1C.
    TemperatureMeasurement,
    /// PLX Spot-Check Measurement 0x2A5E.
    PlxSpotCheckMeasurement,
    /// PLX Continuous Measurement 0x2A5F.
    PlxContinuousMeasurement,
    /// Heart Rate Measurement 0x2A37.
    HeartRateMeasurement,
    /// Record Access Control Point 0x2A52.
    RecordAccessControlPoint,
    /// A 16-bit UUID this module has no decoder for.
    Unknown(u16),
    /// A declarative vendor layout (see [`super::layout`]), by name.
    Layout(String),
}

impl Characteristic {
    /// Every characteristic with a decoder, in UUID order of the table in
    /// domain.md §0.
    pub const KNOWN: [Characteristic; 13] = [
        Characteristic::DateTime,
        Characteristic::CurrentTime,
        Characteristic::BloodPressureMeasurement,
        Characteristic::IntermediateCuffPressure,
        Characteristic::WeightMeasurement,
        Characteristic::BodyCompositionMeasurement,
        Characteristic::GlucoseMeasurement,
        Characteristic::GlucoseMeasurementContext,
        Characteristic::TemperatureMeasurement,
        Characteristic::PlxSpotCheckMeasurement,
        Characteristic::PlxContinuousMeasurement,
        Characteristic::HeartRateMeasurement,
        Characteristic::RecordAccessControlPoint,
    ];

    /// The characteristic with this 16-bit UUID ([`Characteristic::Unknown`]
    /// when there is no decoder for it).
    pub fn from_uuid(uuid: u16) -> Characteristic {
        Characteristic::KNOWN
            .into_iter()
            .find(|c| c.uuid() == Some(uuid))
            .unwrap_or(Characteristic::Unknown(uuid))
    }

    /// The assigned 16-bit UUID; `None` for a vendor layout.
    pub const fn uuid(&self) -> Option<u16> {
        Some(match self {
            Characteristic::DateTime => 0x2A08,
            Characteristic::CurrentTime => 0x2A2B,
            Characteristic::BloodPressureMeasurement => 0x2A35,
            Characteristic::IntermediateCuffPressure => 0x2A36,
            Characteristic::WeightMeasurement => 0x2A9D,
            Characteristic::BodyCompositionMeasurement => 0x2A9C,
            Characteristic::GlucoseMeasurement => 0x2A18,
            Characteristic::GlucoseMeasurementContext => 0x2A34,
            Characteristic::TemperatureMeasurement => 0x2A1C,
            Characteristic::PlxSpotCheckMeasurement => 0x2A5E,
            Characteristic::PlxContinuousMeasurement => 0x2A5F,
            Characteristic::HeartRateMeasurement => 0x2A37,
            Characteristic::RecordAccessControlPoint => 0x2A52,
            Characteristic::Unknown(u) => *u,
            Characteristic::Layout(_) => return None,
        })
    }

    /// The Bluetooth SIG name (or the layout's name).
    pub fn name(&self) -> &str {
        match self {
            Characteristic::DateTime => "Date Time",
            Characteristic::CurrentTime => "Current Time",
            Characteristic::BloodPressureMeasurement => "Blood Pressure Measurement",
            Characteristic::IntermediateCuffPressure => "Intermediate Cuff Pressure",
            Characteristic::WeightMeasurement => "Weight Measurement",
            Characteristic::BodyCompositionMeasurement => "Body Composition Measurement",
            Characteristic::GlucoseMeasurement => "Glucose Measurement",
            Characteristic::GlucoseMeasurementContext => "Glucose Measurement Context",
            Characteristic::TemperatureMeasurement => "Temperature Measurement",
            Characteristic::PlxSpotCheckMeasurement => "PLX Spot-Check Measurement",
            Characteristic::PlxContinuousMeasurement => "PLX Continuous Measurement",
            Characteristic::HeartRateMeasurement => "Heart Rate Measurement",
            Characteristic::RecordAccessControlPoint => "Record Access Control Point",
            Characteristic::Unknown(_) => "unknown characteristic",
            Characteristic::Layout(name) => name,
        }
    }

    /// Short stable identifier, as stored in quarantine: `0x2A35`, or
    /// `layout:<name>`.
    pub fn id(&self) -> String {
        match (self, self.uuid()) {
            (Characteristic::Layout(name), _) => format!("layout:{name}"),
            (_, Some(uuid)) => format!("0x{uuid:04X}"),
            (_, None) => self.name().to_string(),
        }
    }
}

impl fmt::Display for Characteristic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Characteristic::Layout(name) => write!(f, "vendor layout `{name}`"),
            other => write!(f, "{} ({})", other.id(), other.name()),
        }
    }
}

/// What was wrong with the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GattErrorKind {
    /// The value ends inside a field the flags announce.
    #[error("{field} needs {needed} byte(s) but only {available} remain")]
    Truncated {
        /// the field being read
        field: &'static str,
        /// bytes the field needs
        needed: usize,
        /// bytes that were left
        available: usize,
    },
    /// Bytes remain after the last field the flags announce: the flags and
    /// the length disagree, so neither can be trusted.
    #[error("{count} byte(s) left over after the last field")]
    TrailingBytes {
        /// number of extra bytes
        count: usize,
    },
    /// Reserved-for-future-use bits are set in a field where they would
    /// change the layout of what follows.
    #[error("reserved bits {bits:#06x} set in {field}")]
    ReservedBits {
        /// the flags field
        field: &'static str,
        /// the offending bits
        bits: u32,
    },
    /// A field holds a value outside its defined range.
    #[error("{field} = {value} is out of range ({expected})")]
    OutOfRange {
        /// the field
        field: &'static str,
        /// the value read
        value: i64,
        /// what the specification allows
        expected: &'static str,
    },
    /// Fields contradict each other.
    #[error("{field}: {detail}")]
    Inconsistent {
        /// the field
        field: &'static str,
        /// what contradicts what
        detail: &'static str,
    },
    /// No decoder exists for this UUID.
    #[error("no decoder for characteristic 0x{0:04X}")]
    UnknownCharacteristic(u16),
    /// A vendor layout's condition (e.g. "stabilized") does not hold: the
    /// bytes are well-formed but are not a finished measurement. The gateway
    /// normally ignores these (see [`GattError::is_condition_not_met`]).
    #[error("condition `{condition}` does not hold")]
    ConditionNotMet {
        /// name of the condition in the layout file
        condition: String,
    },
}

/// A characteristic value that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{characteristic}, byte {offset}: {kind}")]
#[non_exhaustive]
pub struct GattError {
    /// What was being decoded.
    pub characteristic: Characteristic,
    /// Byte offset (0-based) where the problem was found.
    pub offset: usize,
    /// What was wrong.
    pub kind: GattErrorKind,
}

impl GattError {
    /// A new error.
    pub fn new(characteristic: Characteristic, offset: usize, kind: GattErrorKind) -> Self {
        GattError {
            characteristic,
            offset,
            kind,
        }
    }

    /// True when a vendor layout's condition failed (an unstabilised or
    /// removed-weight advertisement): not malformed, just not a measurement,
    /// so it should be skipped rather than quarantined.
    pub fn is_condition_not_met(&self) -> bool {
        matches!(self.kind, GattErrorKind::ConditionNotMet { .. })
    }
}

impl From<GattError> for Reject {
    fn from(e: GattError) -> Self {
        Reject::InvalidGatt {
            characteristic: e.characteristic.id(),
            detail: format!("byte {}: {}", e.offset, e.kind),
        }
    }
}

/// An error without its characteristic yet: the reader does not know what it
/// reads; each decoder attaches the characteristic once, at its boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault {
    pub(crate) offset: usize,
    pub(crate) kind: GattErrorKind,
}

impl Fault {
    pub(crate) fn new(offset: usize, kind: GattErrorKind) -> Self {
        Fault { offset, kind }
    }

    pub(crate) fn at(self, characteristic: Characteristic) -> GattError {
        GattError::new(characteristic, self.offset, self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_round_trip_and_reject_code() {
        for c in Characteristic::KNOWN {
            let uuid = c.uuid().unwrap_or_default();
            assert_eq!(Characteristic::from_uuid(uuid), c);
        }
        assert_eq!(
            Characteristic::from_uuid(0x1234),
            Characteristic::Unknown(0x1234)
        );
        let e = GattError::new(
            Characteristic::BloodPressureMeasurement,
            3,
            GattErrorKind::Truncated {
                field: "diastolic",
                needed: 2,
                available: 1,
            },
        );
        let r = Reject::from(e);
        assert_eq!(r.code(), "invalid_gatt");
        assert!(r.to_string().contains("0x2A35"), "{r}");
        assert!(r.to_string().contains("byte 3"), "{r}");
    }
}
