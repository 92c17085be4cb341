//! Fuzz every decoder; the first byte picks the characteristic, so one
//! corpus explores all of them (and unknown UUIDs must be a clean error).
#![no_main]

use libfuzzer_sys::fuzz_target;

const UUIDS: [u16; 14] = [
    0x2A08, 0x2A2B, 0x2A35, 0x2A36, 0x2A9D, 0x2A9C, 0x2A18, 0x2A34, 0x2A1C, 0x2A5E, 0x2A5F, 0x2A37,
    0x2A52, 0x1234,
];

fuzz_target!(|data: &[u8]| {
    if let Some((pick, rest)) = data.split_first() {
        let uuid = UUIDS[usize::from(*pick) % UUIDS.len()];
        device_profiles_fuzz::check_uuid(uuid, rest);
    }
});
