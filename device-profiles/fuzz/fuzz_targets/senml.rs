//! Fuzz the SenML decoder (the `senml-generic` profile) as the MQTT source
//! and the HTTP ingest route feed it. Two inputs from one corpus: the bytes
//! as a pack, and (first byte odd) numbers read from the bytes placed in a
//! pack as `bv`, `v` and `t`, which reaches the arithmetic (base value plus
//! value overflowing, times out of range) that random text rarely does.
//! Invariants: see `check_payload` (finite numbers, plausible readings or
//! the true reason, determinism).
#![no_main]

use libfuzzer_sys::fuzz_target;

fn senml() -> &'static device_profiles::Profile {
    device_profiles_fuzz::profiles()
        .iter()
        .find(|p| p.name == "senml-generic")
        .expect("the bundled senml-generic profile")
}

fn number(bytes: &[u8]) -> Option<f64> {
    let arr: [u8; 8] = bytes.try_into().ok()?;
    Some(f64::from_le_bytes(arr)).filter(|f| f.is_finite())
}

fuzz_target!(|data: &[u8]| {
    device_profiles_fuzz::check_payload(senml(), data);
    if let Some((pick, rest)) = data.split_first() {
        if pick % 2 == 1 {
            let mut nums = rest.chunks(8).filter_map(number);
            let (Some(bv), Some(v)) = (nums.next(), nums.next()) else {
                return;
            };
            let t = nums.next().unwrap_or(0.0);
            let name = device_profiles::Metric::ALL
                [usize::from(*pick / 2) % device_profiles::Metric::ALL.len()]
            .name();
            // serde_json prints finite f64 exactly, so the pack says what we mean.
            let pack = serde_json::json!([{"bv": bv, "n": name, "v": v, "t": t}]);
            device_profiles_fuzz::check_payload(senml(), pack.to_string().as_bytes());
        }
    }
});
