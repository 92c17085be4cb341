//! Fuzz IEEE 11073 SFLOAT/FLOAT: decoding any bits gives a finite number or
//! a special value, and re-encoding the decoded decimal gives the same value.
#![no_main]

use device_profiles::gatt::{Float, Ieee11073Value, Sfloat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(b) = data.get(..2).and_then(|b| <[u8; 2]>::try_from(b).ok()) {
        let s = Sfloat::from_le_bytes(b);
        match s.value() {
            Ieee11073Value::Number(d) => {
                assert!(d.to_f64().is_finite());
                let again = Sfloat::from_decimal(d.mantissa.into(), d.exponent.into())
                    .expect("a decoded value re-encodes");
                assert_eq!(again.to_f64(), s.to_f64());
            }
            Ieee11073Value::Special(sp) => assert_eq!(Sfloat::from_special(sp).special(), Some(sp)),
        }
    }
    if let Some(b) = data.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
        let f = Float::from_le_bytes(b);
        match f.value() {
            Ieee11073Value::Number(d) => {
                assert!(d.to_f64().is_finite());
                let again = Float::from_decimal(d.mantissa.into(), d.exponent.into())
                    .expect("a decoded value re-encodes");
                assert_eq!(again.to_f64(), f.to_f64());
            }
            Ieee11073Value::Special(sp) => assert_eq!(Float::from_special(sp).special(), Some(sp)),
        }
    }
});
