//! Fuzz canonicalization directly: measurements built from bytes (metric,
//! value or special value, a unit from the known ones or arbitrary text,
//! time of each kind), so that unit conversion, plausibility and clock checks
//! see values no decoder would produce. Invariants: readings finite and
//! plausible or refused with the true reason; deterministic.
#![no_main]

use chrono::DateTime;
use device_profiles::{Component, DecodedMeasurement, DeviceTime, Metric, RawValue, SpecialValue};
use libfuzzer_sys::fuzz_target;

const UNITS: [&str; 16] = [
    "mmHg", "mm[Hg]", "kPa", "/min", "bpm", "kg", "[lb_av]", "lb", "g", "%", "mg/dL", "mmol/L",
    "Cel", "[degF]", "cm", "kg/m2",
];

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn u64(&mut self) -> Option<u64> {
        if self.0.len() < 8 {
            return None;
        }
        let (a, rest) = self.0.split_at(8);
        self.0 = rest;
        Some(u64::from_le_bytes(a.try_into().ok()?))
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let mut m = DecodedMeasurement::default();
    while let (Some(k), Some(bits)) = (b.u8(), b.u64()) {
        let metric = Metric::ALL[usize::from(k & 0x0f) % Metric::ALL.len()];
        let value = match k >> 4 {
            0 => RawValue::Special(SpecialValue::NaN),
            1 => RawValue::Special(SpecialValue::PositiveInfinity),
            2 => RawValue::Number(f64::from_bits(bits)),
            _ => RawValue::Number((bits % 100_000) as f64 / 10.0),
        };
        let u = b.u8().unwrap_or(0);
        let unit = match u {
            255 => None,
            254 => Some(String::from_utf8_lossy(b.0).into_owned()),
            _ => Some(UNITS[usize::from(u) % UNITS.len()].to_string()),
        };
        m.components.push(Component {
            metric,
            value,
            unit,
        });
        if m.components.len() >= 4 {
            break;
        }
    }
    let t = b.u64().unwrap_or(0) as i64;
    m.time = match t.rem_euclid(4) {
        0 => None,
        1 => DateTime::from_timestamp_millis(t / 4).map(DeviceTime::Utc),
        2 => DateTime::from_timestamp(t / 4 % 10_000_000_000, 0)
            .map(|d| DeviceTime::Local(d.naive_utc())),
        _ => Some(DeviceTime::RelativeSeconds(t / 4)),
    };
    m.sequence = b.u64();
    device_profiles_fuzz::check_canonical(&m, "dev-1", "d1g35t", 0);
});
