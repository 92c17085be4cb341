//! Fuzz the declarative vendor layouts shipped in profiles/ble/ on
//! arbitrary bytes: errors, never panics; numbers are finite.
#![no_main]

use std::sync::OnceLock;

use device_profiles::gatt::Layout;
use libfuzzer_sys::fuzz_target;

fn layouts() -> &'static [Layout] {
    static LAYOUTS: OnceLock<Vec<Layout>> = OnceLock::new();
    LAYOUTS.get_or_init(|| {
        [
            include_str!("../../profiles/ble/xiaomi-scale-v1.toml"),
            include_str!("../../profiles/ble/xiaomi-scale-v2.toml"),
        ]
        .iter()
        .map(|t| Layout::from_toml_str(t).expect("shipped layouts are valid"))
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    for layout in layouts() {
        if let Ok(m) = layout.decode(data) {
            device_profiles_fuzz::check_measurement(&m);
        }
    }
    // The TOML parser and validator must not panic on arbitrary text either.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(layout) = Layout::from_toml_str(text) {
            let zeros = vec![0u8; layout.length()];
            let _ = layout.decode(&zeros);
        }
    }
});
