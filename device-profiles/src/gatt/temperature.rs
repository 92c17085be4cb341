//! Temperature Measurement 0x2A1C (domain.md §1.8).
//!
//! The temperature is a 32-bit IEEE 11073 FLOAT (not an SFLOAT). Flags bits
//! 3-7 are RFU and rejected: each defined bit adds a field. Temperature Type
//! values outside 1..=9 are reserved and kept as sent (they describe the
//! site, they do not move bytes).

use super::bpm::stamped;
use super::datetime::DateTime;
use super::error::{Characteristic, Fault, GattError};
use super::ieee11073::Float;
use super::reader::{reject_reserved, Put, Reader};
use crate::decoded::{Annotations, Component, DecodedMeasurement};
use crate::metric::Metric;

/// Temperature unit (flags bit 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TemperatureUnit {
    /// Degrees Celsius.
    #[default]
    Celsius,
    /// Degrees Fahrenheit.
    Fahrenheit,
}

impl TemperatureUnit {
    /// UCUM code.
    pub const fn ucum(self) -> &'static str {
        match self {
            TemperatureUnit::Celsius => "Cel",
            TemperatureUnit::Fahrenheit => "[degF]",
        }
    }
}

/// Name of a Temperature Type (0x2A1D) value, the measurement site.
pub fn temperature_type_name(t: u8) -> String {
    match t {
        1 => "armpit",
        2 => "body",
        3 => "ear",
        4 => "finger",
        5 => "gastrointestinal_tract",
        6 => "mouth",
        7 => "rectum",
        8 => "toe",
        9 => "tympanum",
        n => return format!("reserved({n})"),
    }
    .into()
}

/// Temperature Measurement 0x2A1C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TemperatureMeasurement {
    /// Unit (flags bit 0).
    pub unit: TemperatureUnit,
    /// The temperature.
    pub value: Float,
    /// Time Stamp (flags bit 1).
    pub timestamp: Option<DateTime>,
    /// Temperature Type, the site (flags bit 2).
    pub temperature_type: Option<u8>,
}

impl TemperatureMeasurement {
    /// Decodes a 0x2A1C value.
    pub fn decode(bytes: &[u8]) -> Result<Self, GattError> {
        Self::decode_inner(bytes).map_err(|f| f.at(Characteristic::TemperatureMeasurement))
    }

    fn decode_inner(bytes: &[u8]) -> Result<Self, Fault> {
        let mut r = Reader::new(bytes);
        let flags = r.u8("flags")?;
        reject_reserved(flags.into(), 0xF8, 0, "flags")?;
        let value = r.float("temperature")?;
        let timestamp = (flags & 0x02 != 0)
            .then(|| DateTime::read(&mut r))
            .transpose()?;
        let temperature_type = (flags & 0x04 != 0)
            .then(|| r.u8("temperature type"))
            .transpose()?;
        r.finish()?;
        let unit = if flags & 0x01 != 0 {
            TemperatureUnit::Fahrenheit
        } else {
            TemperatureUnit::Celsius
        };
        Ok(TemperatureMeasurement {
            unit,
            value,
            timestamp,
            temperature_type,
        })
    }

    /// The flags this value encodes to.
    pub fn flags(&self) -> u8 {
        u8::from(self.unit == TemperatureUnit::Fahrenheit)
            | u8::from(self.timestamp.is_some()) << 1
            | u8::from(self.temperature_type.is_some()) << 2
    }

    /// Encodes; flags follow from the fields.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13);
        out.put_u8(self.flags());
        out.put_float(self.value);
        if let Some(t) = &self.timestamp {
            t.write(&mut out);
        }
        if let Some(t) = self.temperature_type {
            out.put_u8(t);
        }
        out
    }

    /// One [`Metric::BodyTemperature`] measurement, the site as annotation
    /// `site`.
    pub fn to_measurements(&self) -> Vec<DecodedMeasurement> {
        let mut annotations = Annotations::new();
        if let Some(t) = self.temperature_type {
            annotations.insert("site".into(), temperature_type_name(t));
        }
        let component = Component {
            metric: Metric::BodyTemperature,
            value: self.value.to_raw_value(),
            unit: Some(self.unit.ucum().into()),
        };
        stamped(self.timestamp, None, vec![component], annotations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoded::RawValue;

    #[test]
    fn nordic_vector() {
        let bytes = hex::decode("06B00E00FEDC070C050B321B04").unwrap();
        let m = TemperatureMeasurement::decode(&bytes).unwrap();
        assert_eq!(m.unit, TemperatureUnit::Celsius);
        assert_eq!(m.value.to_f64(), Some(37.6));
        assert_eq!(m.temperature_type, Some(4));
        assert_eq!(m.encode(), bytes);
        let d = &m.to_measurements()[0];
        assert_eq!(d.components[0].value, RawValue::Number(37.6));
        assert_eq!(d.components[0].unit.as_deref(), Some("Cel"));
        assert_eq!(d.annotations["site"], "finger");
        assert!(d.time.is_some());
    }

    #[test]
    fn malformed() {
        assert!(TemperatureMeasurement::decode(&[0x08, 0, 0, 0, 0]).is_err());
        assert_eq!(
            TemperatureMeasurement::decode(&[0x04, 0, 0, 0, 0])
                .unwrap_err()
                .offset,
            5
        );
        assert_eq!(
            TemperatureMeasurement::decode(&[0x00, 0, 0, 0])
                .unwrap_err()
                .offset,
            1
        );
    }
}
