//! Fuzz the 0x2A9C decoder: no panic; accepted bytes re-encode exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    device_profiles_fuzz::check_uuid(0x2A9C, data);
});
