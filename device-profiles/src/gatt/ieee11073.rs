//! IEEE 11073-20601 SFLOAT (16-bit) and FLOAT (32-bit), domain.md §2.
//!
//! Both are decimal floats: `mantissa × 10^exponent`, the exponent in the
//! high bits and the mantissa in the low bits, each two's complement. The
//! types here keep the raw bits, so re-encoding a decoded value gives back
//! the very same bytes, and expose the value as an exact [`Decimal`]: a
//! reading of 10.1 is `101 × 10^-1`, and unit conversions by powers of ten
//! (kg/L → mg/dL is ×10^5) are done on the exponent, so that they add no
//! rounding error of their own.
//!
//! Special values: IEEE 11073 defines five reserved mantissas (NaN, NRes,
//! ±INFINITY, reserved) with exponent 0. Like Antidote and Nordic we treat
//! those mantissas as special *whatever the exponent*: they are outside the
//! valid mantissa range (±2045 / ±8388605) anyway, and a special value must
//! never become a number (domain.md §5.1: a cuff's NaN decoded as 2047 mmHg).
//!
//! The exponent is plain two's complement: there is no bias. `0A 70` is
//! 10 × 10^7, not 1.0 (domain.md §2 "Bug warning").

use std::fmt;

use crate::decoded::{RawValue, SpecialValue};

/// An exact decimal number: `mantissa × 10^exponent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    /// Signed mantissa.
    pub mantissa: i32,
    /// Power of ten.
    pub exponent: i8,
}

impl Decimal {
    /// The nearest `f64` (correctly rounded, so `101e-1` gives exactly the
    /// `f64` literal `10.1`).
    pub fn to_f64(self) -> f64 {
        decimal_to_f64(i128::from(self.mantissa), i64::from(self.exponent))
    }

    /// The nearest `f64` to `self × 10^pow10`: an exact change of unit by a
    /// power of ten (kg/L → mg/dL is `pow10 = 5`).
    pub fn to_f64_scaled(self, pow10: i32) -> f64 {
        decimal_to_f64(
            i128::from(self.mantissa),
            i64::from(self.exponent) + i64::from(pow10),
        )
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_f64())
    }
}

/// Exact powers of ten that an `f64` holds without rounding.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The `f64` nearest to `mantissa × 10^exponent`.
///
/// When both the mantissa and the power of ten are exact in an `f64`, one
/// IEEE multiplication or division is correctly rounded; otherwise the
/// standard library's (correctly rounding) decimal parser does the work.
pub(crate) fn decimal_to_f64(mantissa: i128, exponent: i64) -> f64 {
    if mantissa == 0 {
        return 0.0;
    }
    if mantissa.unsigned_abs() < (1u128 << 53) {
        let m = mantissa as f64;
        let pow = usize::try_from(exponent.unsigned_abs())
            .ok()
            .and_then(|i| POW10.get(i));
        if let Some(p) = pow {
            return if exponent >= 0 { m * p } else { m / p };
        }
    }
    // "<int>e<int>" always parses; a non-finite result (absurd exponents in a
    // vendor layout) is caught by the callers that wrap values and by the
    // canonicaliser, which never stores a non-finite number.
    format!("{mantissa}e{exponent}")
        .parse::<f64>()
        .unwrap_or(f64::NAN)
}

/// A decoded IEEE 11073 number: either a value or a special value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ieee11073Value {
    /// A finite number.
    Number(Decimal),
    /// NaN, NRes, ±INFINITY or reserved: not a number.
    Special(SpecialValue),
}

/// Why a number cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// NaN or an infinity was given as a number; encode the special value
    /// itself ([`Sfloat::from_special`]) so the intent is explicit.
    #[error("{0} is not a finite number (use the special value explicitly)")]
    NotFinite(String),
    /// The value does not fit the format at the requested precision without
    /// rounding it (too many significant digits, or too large).
    #[error("{value} cannot be represented exactly as {format}")]
    NotRepresentable {
        /// the value as given
        value: String,
        /// "SFLOAT" or "FLOAT"
        format: &'static str,
    },
}

/// Parameters of one of the two formats.
struct Format {
    name: &'static str,
    mantissa_bits: u32,
    exponent_bits: u32,
    /// Largest valid mantissa magnitude (the next values are special).
    mantissa_max: i128,
}

const SFLOAT: Format = Format {
    name: "SFLOAT",
    mantissa_bits: 12,
    exponent_bits: 4,
    mantissa_max: 2045,
};
const FLOAT: Format = Format {
    name: "FLOAT",
    mantissa_bits: 24,
    exponent_bits: 8,
    mantissa_max: 8_388_605,
};

impl Format {
    fn exponent_range(&self) -> (i64, i64) {
        let half = 1i64 << (self.exponent_bits - 1);
        (-half, half - 1)
    }

    fn mantissa_mask(&self) -> u32 {
        (1u32 << self.mantissa_bits) - 1
    }

    fn special(&self, raw: u32) -> Option<SpecialValue> {
        let half = 1u32 << (self.mantissa_bits - 1);
        let m = raw & self.mantissa_mask();
        match m {
            _ if m == half - 1 => Some(SpecialValue::NaN),
            _ if m == half => Some(SpecialValue::NRes),
            _ if m == half - 2 => Some(SpecialValue::PositiveInfinity),
            _ if m == half + 2 => Some(SpecialValue::NegativeInfinity),
            _ if m == half + 1 => Some(SpecialValue::Reserved),
            _ => None,
        }
    }

    fn special_raw(&self, s: SpecialValue) -> u32 {
        let half = 1u32 << (self.mantissa_bits - 1);
        match s {
            SpecialValue::NaN => half - 1,
            SpecialValue::NRes => half,
            SpecialValue::PositiveInfinity => half - 2,
            SpecialValue::NegativeInfinity => half + 2,
            SpecialValue::Reserved => half + 1,
        }
    }

    fn value(&self, raw: u32) -> Ieee11073Value {
        if let Some(s) = self.special(raw) {
            return Ieee11073Value::Special(s);
        }
        let total = self.mantissa_bits + self.exponent_bits;
        let mantissa = sign_extend(raw & self.mantissa_mask(), self.mantissa_bits);
        let exponent = sign_extend(raw >> self.mantissa_bits, total - self.mantissa_bits);
        Ieee11073Value::Number(Decimal {
            mantissa,
            exponent: exponent as i8,
        })
    }

    /// Finds `(m, e)` with `m × 10^e == mantissa × 10^exponent` inside the
    /// format's ranges, without rounding.
    fn encode_decimal(&self, mantissa: i128, exponent: i64) -> Result<u32, EncodeError> {
        let not_representable = || EncodeError::NotRepresentable {
            value: format!("{mantissa}e{exponent}"),
            format: self.name,
        };
        let (emin, emax) = self.exponent_range();
        let (mut m, mut e) = (mantissa, exponent);
        if m == 0 {
            e = 0;
        }
        // Each loop either ends or changes `m` by a factor of ten, so they
        // run at most ~40 times whatever the input.
        while m.abs() > self.mantissa_max || e < emin {
            if m % 10 != 0 || e >= emax {
                return Err(not_representable());
            }
            m /= 10;
            e += 1;
        }
        while e > emax {
            m *= 10;
            e -= 1;
            if m.abs() > self.mantissa_max {
                return Err(not_representable());
            }
        }
        let m_bits = (m as i32 as u32) & self.mantissa_mask();
        let e_bits = (e as i32 as u32) & ((1u32 << self.exponent_bits) - 1);
        Ok((e_bits << self.mantissa_bits) | m_bits)
    }

    fn encode_f64(&self, value: f64, decimals: u8) -> Result<u32, EncodeError> {
        if !value.is_finite() {
            return Err(EncodeError::NotFinite(value.to_string()));
        }
        // Rust formats the exact binary value, rounded to `decimals` places:
        // the decimal the caller means, without the error of `value * 10^d`.
        let text = format!("{value:.*}", usize::from(decimals));
        let digits: String = text.chars().filter(|c| c.is_ascii_digit()).collect();
        let magnitude: i128 = digits.parse().map_err(|_| EncodeError::NotRepresentable {
            value: text.clone(),
            format: self.name,
        })?;
        let mantissa = if text.starts_with('-') {
            -magnitude
        } else {
            magnitude
        };
        self.encode_decimal(mantissa, -i64::from(decimals))
    }
}

fn sign_extend(v: u32, bits: u32) -> i32 {
    let shift = 32 - bits;
    ((v << shift) as i32) >> shift
}

macro_rules! ieee_number {
    ($name:ident, $raw:ty, $bytes:literal, $fmt:ident, $nan:literal, $nres:literal, $pinf:literal, $ninf:literal, $rfu:literal) => {
        impl $name {
            /// NaN (not a number).
            pub const NAN: $name = $name($nan);
            /// NRes (not at this resolution).
            pub const NRES: $name = $name($nres);
            /// +INFINITY.
            pub const POSITIVE_INFINITY: $name = $name($pinf);
            /// -INFINITY.
            pub const NEGATIVE_INFINITY: $name = $name($ninf);
            /// Reserved for future use.
            pub const RESERVED: $name = $name($rfu);

            /// From the raw bits (as read little-endian from the wire).
            pub const fn from_raw(raw: $raw) -> Self {
                $name(raw)
            }

            /// The raw bits.
            pub const fn raw(self) -> $raw {
                self.0
            }

            /// From wire bytes (little-endian).
            pub const fn from_le_bytes(bytes: [u8; $bytes]) -> Self {
                $name(<$raw>::from_le_bytes(bytes))
            }

            /// Wire bytes (little-endian).
            pub const fn to_le_bytes(self) -> [u8; $bytes] {
                self.0.to_le_bytes()
            }

            /// The value or the special value.
            pub fn value(self) -> Ieee11073Value {
                $fmt.value(u32::from(self.0))
            }

            /// The special value, if this is one.
            pub fn special(self) -> Option<SpecialValue> {
                $fmt.special(u32::from(self.0))
            }

            /// The exact decimal, unless this is a special value.
            pub fn decimal(self) -> Option<Decimal> {
                match self.value() {
                    Ieee11073Value::Number(d) => Some(d),
                    Ieee11073Value::Special(_) => None,
                }
            }

            /// The nearest `f64`, unless this is a special value (which is
            /// never turned into a number).
            pub fn to_f64(self) -> Option<f64> {
                self.decimal().map(Decimal::to_f64)
            }

            /// As the shared model's value.
            pub fn to_raw_value(self) -> RawValue {
                self.to_raw_value_scaled(0)
            }

            /// As the shared model's value after an exact change of unit by
            /// `10^pow10`; special values stay special.
            pub fn to_raw_value_scaled(self, pow10: i32) -> RawValue {
                match self.value() {
                    Ieee11073Value::Number(d) => RawValue::Number(d.to_f64_scaled(pow10)),
                    Ieee11073Value::Special(s) => RawValue::Special(s),
                }
            }

            /// The canonical encoding of a special value (exponent 0).
            pub fn from_special(special: SpecialValue) -> Self {
                $name($fmt.special_raw(special) as $raw)
            }

            /// Encodes `mantissa × 10^exponent` exactly: the mantissa keeps
            /// its precision (98.0 as `980e-1` stays `980e-1`) unless it must
            /// lose trailing zeros to fit; a value that would need rounding
            /// is an error, never silently changed.
            pub fn from_decimal(mantissa: i64, exponent: i32) -> Result<Self, EncodeError> {
                $fmt.encode_decimal(i128::from(mantissa), i64::from(exponent))
                    .map(|r| $name(r as $raw))
            }

            /// Encodes `value` rounded to `decimals` digits after the decimal
            /// point (the device's precision): `from_f64(37.6, 1)` is
            /// `376e-1`. Errors when the result does not fit without
            /// further rounding, or when `value` is not finite.
            pub fn from_f64(value: f64, decimals: u8) -> Result<Self, EncodeError> {
                $fmt.encode_f64(value, decimals).map(|r| $name(r as $raw))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.value() {
                    Ieee11073Value::Number(d) => write!(f, "{d}"),
                    Ieee11073Value::Special(s) => write!(f, "{s}"),
                }
            }
        }

        impl From<SpecialValue> for $name {
            fn from(s: SpecialValue) -> Self {
                $name::from_special(s)
            }
        }
    };
}

/// IEEE 11073 16-bit SFLOAT: 4-bit exponent, 12-bit mantissa. Equality is
/// bitwise: the same number has several encodings (100 is `64 00` and
/// `E8 F3`), so compare [`Sfloat::to_f64`] when comparing values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sfloat(u16);

/// IEEE 11073 32-bit FLOAT: 8-bit exponent, 24-bit mantissa. Equality is
/// bitwise, as for [`Sfloat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Float(u32);

ieee_number!(Sfloat, u16, 2, SFLOAT, 0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801);
ieee_number!(
    Float,
    u32,
    4,
    FLOAT,
    0x007F_FFFF,
    0x0080_0000,
    0x007F_FFFE,
    0x0080_0002,
    0x0080_0001
);

#[cfg(test)]
mod tests {
    use super::*;

    fn sf(b: [u8; 2]) -> Sfloat {
        Sfloat::from_le_bytes(b)
    }

    #[test]
    fn sfloat_decodes() {
        assert_eq!(
            sf([0x65, 0xF0]).decimal(),
            Some(Decimal {
                mantissa: 101,
                exponent: -1
            })
        );
        assert_eq!(sf([0x65, 0xF0]).to_f64(), Some(10.1));
        assert_eq!(
            sf([0x0A, 0x70]).to_f64(),
            Some(100_000_000.0),
            "no exponent bias"
        );
        assert_eq!(sf([0x0A, 0xF0]).to_f64(), Some(1.0));
        assert_eq!(
            sf([0xFF, 0x0F]).to_f64(),
            Some(-1.0),
            "mantissa is two's complement"
        );
        assert_eq!(sf([0x03, 0x08]).to_f64(), Some(-2045.0));
        assert_eq!(sf([0xFD, 0x07]).to_f64(), Some(2045.0));
        assert_eq!(
            sf([0x5A, 0xB0]).to_raw_value_scaled(5),
            RawValue::Number(90.0)
        );
    }

    #[test]
    fn sfloat_specials_never_become_numbers() {
        let cases = [
            (0x07FF, SpecialValue::NaN),
            (0x0800, SpecialValue::NRes),
            (0x07FE, SpecialValue::PositiveInfinity),
            (0x0802, SpecialValue::NegativeInfinity),
            (0x0801, SpecialValue::Reserved),
        ];
        for (raw, s) in cases {
            for exp in 0..16u16 {
                let v = Sfloat::from_raw(raw | (exp << 12));
                assert_eq!(v.special(), Some(s), "{raw:#x} exp {exp}");
                assert_eq!(v.to_f64(), None);
                assert_eq!(v.to_raw_value(), RawValue::Special(s));
            }
            assert_eq!(Sfloat::from_special(s).raw(), raw);
        }
    }

    #[test]
    fn float_decodes() {
        let v = Float::from_le_bytes([0x87, 0xD6, 0x12, 0xFE]);
        assert_eq!(v.to_f64(), Some(12345.67));
        assert_eq!(
            Float::from_le_bytes([0xB0, 0x0E, 0x00, 0xFE]).to_f64(),
            Some(37.6)
        );
        assert_eq!(
            Float::from_le_bytes([0xFF, 0xFF, 0x7F, 0x00]).special(),
            Some(SpecialValue::NaN)
        );
        assert_eq!(
            Float::from_le_bytes([0x00, 0x00, 0x80, 0x00]).special(),
            Some(SpecialValue::NRes)
        );
        assert_eq!(
            Float::from_le_bytes([0x02, 0x00, 0x80, 0x00]).special(),
            Some(SpecialValue::NegativeInfinity)
        );
        assert_eq!(
            Float::from_le_bytes([0xFF, 0xFF, 0xFF, 0x7F]).to_f64(),
            Some(-1e127)
        );
        assert_eq!(
            Float::from_le_bytes([0x01, 0x00, 0x00, 0x80]).to_f64(),
            Some(1e-128)
        );
    }

    #[test]
    fn encodes_exactly() {
        assert_eq!(Sfloat::from_f64(10.1, 1).map(Sfloat::raw), Ok(0xF065));
        assert_eq!(
            Sfloat::from_f64(98.0, 1).map(|s| s.decimal()),
            Ok(Some(Decimal {
                mantissa: 980,
                exponent: -1
            }))
        );
        assert_eq!(Sfloat::from_f64(120.0, 0).map(Sfloat::raw), Ok(0x0078));
        // 147.0 at one decimal is 1470e-1: fits. 2046 does not, 2050 does as 205e1.
        assert_eq!(
            Sfloat::from_f64(147.0, 1)
                .and_then(|s| s.to_f64().ok_or(EncodeError::NotFinite(String::new()))),
            Ok(147.0)
        );
        assert!(Sfloat::from_f64(2046.0, 0).is_err());
        assert_eq!(
            Sfloat::from_f64(2050.0, 0).map(|s| s.decimal()),
            Ok(Some(Decimal {
                mantissa: 205,
                exponent: 1
            }))
        );
        assert!(Sfloat::from_f64(204.57, 2).is_err(), "would need rounding");
        assert!(Sfloat::from_f64(f64::NAN, 1).is_err());
        assert_eq!(Sfloat::from_decimal(90, -5).map(Sfloat::raw), Ok(0xB05A));
        assert_eq!(Sfloat::from_decimal(0, -100).map(Sfloat::raw), Ok(0));
        assert_eq!(
            Sfloat::from_decimal(1, 9).map(|s| s.to_f64()),
            Ok(Some(1e9))
        );
        assert!(Sfloat::from_decimal(1, 12).is_err());
        assert!(Sfloat::from_decimal(i64::MAX, i32::MIN).is_err());
        assert_eq!(
            Float::from_f64(12345.67, 2).map(Float::raw),
            Ok(0xFE12_D687)
        );
        assert_eq!(
            Float::from_f64(-37.25, 2).map(|f| f.to_f64()),
            Ok(Some(-37.25))
        );
    }
}
