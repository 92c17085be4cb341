//! Fuzz the vendor JSON profiles shipped in `profiles/` (field paths, time
//! formats, units), as the MQTT source and the HTTP ingest route feed them:
//! the first byte picks the profile. Invariants: see `check_payload`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((pick, rest)) = data.split_first() {
        let all = device_profiles_fuzz::profiles();
        if all.is_empty() {
            return;
        }
        let p = &all[usize::from(*pick) % all.len()];
        device_profiles_fuzz::check_payload(p, rest);
    }
});
