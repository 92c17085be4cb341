//! Fuzz the JSON parser every payload decoder uses (`json::parse_payload`):
//! it accepts exactly what serde_json accepts, gives the same value, and
//! refuses an object with a duplicate key as `ambiguous_payload` (serde_json
//! would keep the last value silently).
#![no_main]

use device_profiles::json::parse_payload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let plain: Result<serde_json::Value, _> = serde_json::from_slice(data);
    match parse_payload(data) {
        Ok(v) => assert_eq!(Some(&v), plain.as_ref().ok(), "same value as serde_json"),
        Err(r) if r.code() == "ambiguous_payload" => {
            assert!(plain.is_ok(), "only valid JSON is ambiguous: {r}")
        }
        Err(r) => {
            assert_eq!(r.code(), "malformed_payload");
            assert!(plain.is_err(), "refused what serde_json accepts: {r}");
        }
    }
});
