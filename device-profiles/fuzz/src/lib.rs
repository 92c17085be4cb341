//! Shared checks for the GATT fuzz targets: decoding must never panic, and
//! whatever decodes must re-encode to the same bytes and convert to
//! measurements whose numbers are finite.

use device_profiles::decoded::{DecodedMeasurement, RawValue};
use device_profiles::gatt::{self, Decoded};

/// Decodes `data` as the characteristic `uuid` and checks the invariants.
pub fn check_uuid(uuid: u16, data: &[u8]) {
    if let Ok(decoded) = gatt::decode_characteristic(uuid, data) {
        check_decoded(&decoded, data);
    }
}

/// Invariants of a successfully decoded value.
pub fn check_decoded(decoded: &Decoded, data: &[u8]) {
    assert_eq!(
        decoded.encode(),
        data,
        "accepted bytes must re-encode exactly"
    );
    for m in decoded.to_measurements() {
        check_measurement(&m);
    }
}

/// Numbers in a measurement are finite (special values stay special).
pub fn check_measurement(m: &DecodedMeasurement) {
    for c in &m.components {
        if let RawValue::Number(n) = c.value {
            assert!(n.is_finite(), "{c:?}");
        }
    }
}
