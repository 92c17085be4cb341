//! Bluetooth SIG GATT health characteristics: exact decoders and encoders,
//! and their conversion to the shared [`DecodedMeasurement`] model.
//!
//! Layouts follow `shared/domain.md` §1 (Bluetooth SIG GATT XML, cross-checked
//! with Nordic's parsers); all multi-byte fields are little-endian.
//!
//! Design rules, applied in every module:
//! - **Typed structs that re-encode byte for byte.** Optional fields are
//!   `Option`s and the flags are derived from them, so a struct cannot say
//!   "pulse rate present" without a pulse rate; IEEE 11073 numbers keep
//!   their raw bits ([`Sfloat`], [`Float`]). `decode(encode(x)) == x`.
//! - **Malformed input is a [`GattError`], never a panic.** Reads go through
//!   a checked cursor; truncation, a length that disagrees with the flags,
//!   trailing bytes, out-of-range fields and RFU flag bits that would change
//!   the layout are typed errors with the characteristic and byte offset.
//!   RFU bits in *status* words move no byte, so they are kept, not refused.
//! - **Special values are never numbers.** NaN, NRes, ±INFINITY and reserved
//!   values become [`RawValue::Special`]; the canonicaliser quarantines them.
//! - **One record, one measurement.** `to_measurements` returns the values of
//!   one characteristic value as one [`DecodedMeasurement`] (one reading
//!   group; the canonicaliser refuses it whole if one value is bad, which
//!   keeps a blood-pressure panel together). Records that must not become
//!   clinical data carry `not_clinical` with the reason.
//!
//! Entry points: [`decode_characteristic`] and [`Decoded::encode`] for any
//! supported UUID; the per-characteristic types for typed access; [`layout`]
//! for declarative vendor byte layouts.
//!
//! [`DecodedMeasurement`]: crate::decoded::DecodedMeasurement
//! [`RawValue::Special`]: crate::decoded::RawValue::Special

pub mod body_composition;
pub mod bpm;
pub mod datetime;
pub mod device;
pub mod error;
pub mod glucose;
pub mod heart_rate;
pub mod ieee11073;
pub mod layout;
pub mod plx;
pub mod racp;
mod reader;
pub mod temperature;
pub mod weight;

pub use body_composition::BodyCompositionMeasurement;
pub use bpm::{
    BloodPressureMeasurement, IntermediateCuffPressure, MeasurementStatus, PressureUnit,
};
pub use datetime::{CurrentTime, DateTime};
pub use error::{Characteristic, GattError, GattErrorKind};
pub use glucose::{merge_context, GlucoseMeasurement, GlucoseMeasurementContext};
pub use heart_rate::HeartRateMeasurement;
pub use ieee11073::{Decimal, EncodeError, Float, Ieee11073Value, Sfloat};
pub use layout::{Layout, LayoutError};
pub use plx::{PlxContinuous, PlxSpotCheck};
pub use racp::{Racp, RacpRequest, ResponseCode};
pub use temperature::TemperatureMeasurement;
pub use weight::{MeasurementSystem, WeightMeasurement};

use crate::decoded::DecodedMeasurement;

/// The names of the bits set in `bits`, from a `(bit, name)` table of a
/// status word, in table order.
pub(crate) fn bit_names<B>(table: &[(B, &'static str)], bits: B) -> Vec<&'static str>
where
    B: Copy + Default + PartialEq + std::ops::BitAnd<Output = B>,
{
    table
        .iter()
        .filter(|(b, _)| bits & *b != B::default())
        .map(|(_, n)| *n)
        .collect()
}

/// Assigned 16-bit UUIDs of the characteristics and services used here.
pub mod uuid {
    /// Date Time characteristic.
    pub const DATE_TIME: u16 = 0x2A08;
    /// Current Time characteristic.
    pub const CURRENT_TIME: u16 = 0x2A2B;
    /// Blood Pressure Measurement characteristic (indicate).
    pub const BLOOD_PRESSURE_MEASUREMENT: u16 = 0x2A35;
    /// Intermediate Cuff Pressure characteristic (notify).
    pub const INTERMEDIATE_CUFF_PRESSURE: u16 = 0x2A36;
    /// Weight Measurement characteristic (indicate).
    pub const WEIGHT_MEASUREMENT: u16 = 0x2A9D;
    /// Body Composition Measurement characteristic (indicate).
    pub const BODY_COMPOSITION_MEASUREMENT: u16 = 0x2A9C;
    /// Glucose Measurement characteristic (notify).
    pub const GLUCOSE_MEASUREMENT: u16 = 0x2A18;
    /// Glucose Measurement Context characteristic (notify).
    pub const GLUCOSE_MEASUREMENT_CONTEXT: u16 = 0x2A34;
    /// Temperature Measurement characteristic (indicate).
    pub const TEMPERATURE_MEASUREMENT: u16 = 0x2A1C;
    /// PLX Spot-Check Measurement characteristic (indicate).
    pub const PLX_SPOT_CHECK_MEASUREMENT: u16 = 0x2A5E;
    /// PLX Continuous Measurement characteristic (notify).
    pub const PLX_CONTINUOUS_MEASUREMENT: u16 = 0x2A5F;
    /// Heart Rate Measurement characteristic (notify).
    pub const HEART_RATE_MEASUREMENT: u16 = 0x2A37;
    /// Record Access Control Point characteristic (write + indicate).
    pub const RECORD_ACCESS_CONTROL_POINT: u16 = 0x2A52;

    /// Blood Pressure service.
    pub const SERVICE_BLOOD_PRESSURE: u16 = 0x1810;
    /// Weight Scale service.
    pub const SERVICE_WEIGHT_SCALE: u16 = 0x181D;
    /// Body Composition service.
    pub const SERVICE_BODY_COMPOSITION: u16 = 0x181B;
    /// Glucose service.
    pub const SERVICE_GLUCOSE: u16 = 0x1808;
    /// Health Thermometer service.
    pub const SERVICE_HEALTH_THERMOMETER: u16 = 0x1809;
    /// Heart Rate service.
    pub const SERVICE_HEART_RATE: u16 = 0x180D;
    /// Pulse Oximeter service.
    pub const SERVICE_PULSE_OXIMETER: u16 = 0x1822;
    /// Current Time service.
    pub const SERVICE_CURRENT_TIME: u16 = 0x1805;
}

/// A decoded value of any supported characteristic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decoded {
    /// 0x2A08
    DateTime(DateTime),
    /// 0x2A2B
    CurrentTime(CurrentTime),
    /// 0x2A35
    BloodPressure(BloodPressureMeasurement),
    /// 0x2A36
    IntermediateCuffPressure(IntermediateCuffPressure),
    /// 0x2A9D
    Weight(WeightMeasurement),
    /// 0x2A9C
    BodyComposition(BodyCompositionMeasurement),
    /// 0x2A18
    Glucose(GlucoseMeasurement),
    /// 0x2A34
    GlucoseContext(GlucoseMeasurementContext),
    /// 0x2A1C
    Temperature(TemperatureMeasurement),
    /// 0x2A5E
    PlxSpotCheck(PlxSpotCheck),
    /// 0x2A5F
    PlxContinuous(PlxContinuous),
    /// 0x2A37
    HeartRate(HeartRateMeasurement),
    /// 0x2A52
    Racp(Racp),
}

/// Decodes the value of the characteristic with 16-bit UUID `uuid`.
pub fn decode_characteristic(uuid: u16, bytes: &[u8]) -> Result<Decoded, GattError> {
    use self::uuid as u;
    Ok(match uuid {
        u::DATE_TIME => Decoded::DateTime(DateTime::decode(bytes)?),
        u::CURRENT_TIME => Decoded::CurrentTime(CurrentTime::decode(bytes)?),
        u::BLOOD_PRESSURE_MEASUREMENT => {
            Decoded::BloodPressure(BloodPressureMeasurement::decode(bytes)?)
        }
        u::INTERMEDIATE_CUFF_PRESSURE => {
            Decoded::IntermediateCuffPressure(IntermediateCuffPressure::decode(bytes)?)
        }
        u::WEIGHT_MEASUREMENT => Decoded::Weight(WeightMeasurement::decode(bytes)?),
        u::BODY_COMPOSITION_MEASUREMENT => {
            Decoded::BodyComposition(BodyCompositionMeasurement::decode(bytes)?)
        }
        u::GLUCOSE_MEASUREMENT => Decoded::Glucose(GlucoseMeasurement::decode(bytes)?),
        u::GLUCOSE_MEASUREMENT_CONTEXT => {
            Decoded::GlucoseContext(GlucoseMeasurementContext::decode(bytes)?)
        }
        u::TEMPERATURE_MEASUREMENT => Decoded::Temperature(TemperatureMeasurement::decode(bytes)?),
        u::PLX_SPOT_CHECK_MEASUREMENT => Decoded::PlxSpotCheck(PlxSpotCheck::decode(bytes)?),
        u::PLX_CONTINUOUS_MEASUREMENT => Decoded::PlxContinuous(PlxContinuous::decode(bytes)?),
        u::HEART_RATE_MEASUREMENT => Decoded::HeartRate(HeartRateMeasurement::decode(bytes)?),
        u::RECORD_ACCESS_CONTROL_POINT => Decoded::Racp(Racp::decode(bytes)?),
        other => {
            return Err(GattError::new(
                Characteristic::Unknown(other),
                0,
                GattErrorKind::UnknownCharacteristic(other),
            ))
        }
    })
}

/// Encodes a value, returning its characteristic UUID and bytes (for the
/// simulator's virtual devices and for tests).
pub fn encode_characteristic(value: &Decoded) -> (u16, Vec<u8>) {
    (value.uuid(), value.encode())
}

impl Decoded {
    /// Which characteristic this is.
    pub fn characteristic(&self) -> Characteristic {
        match self {
            Decoded::DateTime(_) => Characteristic::DateTime,
            Decoded::CurrentTime(_) => Characteristic::CurrentTime,
            Decoded::BloodPressure(_) => Characteristic::BloodPressureMeasurement,
            Decoded::IntermediateCuffPressure(_) => Characteristic::IntermediateCuffPressure,
            Decoded::Weight(_) => Characteristic::WeightMeasurement,
            Decoded::BodyComposition(_) => Characteristic::BodyCompositionMeasurement,
            Decoded::Glucose(_) => Characteristic::GlucoseMeasurement,
            Decoded::GlucoseContext(_) => Characteristic::GlucoseMeasurementContext,
            Decoded::Temperature(_) => Characteristic::TemperatureMeasurement,
            Decoded::PlxSpotCheck(_) => Characteristic::PlxSpotCheckMeasurement,
            Decoded::PlxContinuous(_) => Characteristic::PlxContinuousMeasurement,
            Decoded::HeartRate(_) => Characteristic::HeartRateMeasurement,
            Decoded::Racp(_) => Characteristic::RecordAccessControlPoint,
        }
    }

    /// The characteristic's 16-bit UUID.
    pub fn uuid(&self) -> u16 {
        self.characteristic().uuid().unwrap_or_default()
    }

    /// The wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Decoded::DateTime(v) => v.encode(),
            Decoded::CurrentTime(v) => v.encode(),
            Decoded::BloodPressure(v) => v.encode(),
            Decoded::IntermediateCuffPressure(v) => v.encode(),
            Decoded::Weight(v) => v.encode(),
            Decoded::BodyComposition(v) => v.encode(),
            Decoded::Glucose(v) => v.encode(),
            Decoded::GlucoseContext(v) => v.encode(),
            Decoded::Temperature(v) => v.encode(),
            Decoded::PlxSpotCheck(v) => v.encode(),
            Decoded::PlxContinuous(v) => v.encode(),
            Decoded::HeartRate(v) => v.encode(),
            Decoded::Racp(v) => v.encode(),
        }
    }

    /// True for characteristics that carry a measurement result (as opposed
    /// to time, control-point traffic, glucose context to be merged, or the
    /// intermediate cuff pressure streamed during inflation).
    pub fn is_result(&self) -> bool {
        matches!(
            self,
            Decoded::BloodPressure(_)
                | Decoded::Weight(_)
                | Decoded::BodyComposition(_)
                | Decoded::Glucose(_)
                | Decoded::Temperature(_)
                | Decoded::PlxSpotCheck(_)
                | Decoded::PlxContinuous(_)
                | Decoded::HeartRate(_)
        )
    }

    /// The measurements of a result characteristic; empty for the others
    /// (see [`Decoded::is_result`]). Glucose contexts are applied with
    /// [`merge_context`].
    pub fn to_measurements(&self) -> Vec<DecodedMeasurement> {
        match self {
            Decoded::BloodPressure(v) => v.to_measurements(),
            Decoded::Weight(v) => v.to_measurements(),
            Decoded::BodyComposition(v) => v.to_measurements(),
            Decoded::Glucose(v) => v.to_measurements(),
            Decoded::Temperature(v) => v.to_measurements(),
            Decoded::PlxSpotCheck(v) => v.to_measurements(),
            Decoded::PlxContinuous(v) => v.to_measurements(),
            Decoded::HeartRate(v) => v.to_measurements(),
            Decoded::DateTime(_)
            | Decoded::CurrentTime(_)
            | Decoded::IntermediateCuffPressure(_)
            | Decoded::GlucoseContext(_)
            | Decoded::Racp(_) => Vec::new(),
        }
    }
}

macro_rules! from_variant {
    ($($ty:ty => $variant:ident),* $(,)?) => {
        $(impl From<$ty> for Decoded {
            fn from(v: $ty) -> Self {
                Decoded::$variant(v)
            }
        })*
    };
}

from_variant!(
    DateTime => DateTime,
    CurrentTime => CurrentTime,
    BloodPressureMeasurement => BloodPressure,
    IntermediateCuffPressure => IntermediateCuffPressure,
    WeightMeasurement => Weight,
    BodyCompositionMeasurement => BodyComposition,
    GlucoseMeasurement => Glucose,
    GlucoseMeasurementContext => GlucoseContext,
    TemperatureMeasurement => Temperature,
    PlxSpotCheck => PlxSpotCheck,
    PlxContinuous => PlxContinuous,
    HeartRateMeasurement => HeartRate,
    Racp => Racp,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reject::Reject;

    #[test]
    fn dispatch_round_trips_and_unknown_uuid() {
        let d = decode_characteristic(0x2A37, &[0x00, 0x55]).unwrap();
        assert_eq!(d.characteristic(), Characteristic::HeartRateMeasurement);
        assert_eq!(encode_characteristic(&d), (0x2A37, vec![0x00, 0x55]));
        assert_eq!(d.to_measurements().len(), 1);
        let icp = decode_characteristic(0x2A36, &[0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert!(!icp.is_result());
        assert!(
            icp.to_measurements().is_empty(),
            "intermediate cuff pressure is never a result"
        );
        let e = decode_characteristic(0x1234, &[1]).unwrap_err();
        assert_eq!(e.kind, GattErrorKind::UnknownCharacteristic(0x1234));
        assert_eq!(Reject::from(e).code(), "invalid_gatt");
    }
}
