//! `[sources.ble]`: the adapter, which devices, reconnection and clock
//! handling, and the checks on them.

use device_profiles::gatt::device::DeviceProfileSet;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[sources.ble]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BleConfig {
    /// Off without removing the table.
    pub enabled: bool,
    /// Adapter name (`hci0`); default: the first one BlueZ reports.
    pub adapter: Option<String>,
    /// Also connect to devices advertising these services (16-bit hex like
    /// `"fff0"` or 128-bit), beyond the SIG health services and profiles.
    pub scan_services: Vec<String>,
    /// Directories of BLE device profiles and byte layouts (relative to
    /// the config file), in addition to the bundled ones.
    pub profile_dirs: Vec<PathBuf>,
    /// Address → profile overrides (a device whose advertisement matches
    /// nothing, or matches the wrong profile).
    pub devices: Vec<BleDeviceOverride>,
    /// Most devices connected at once.
    pub max_connections: usize,
    /// First wait before reconnecting to a device that failed.
    #[serde(with = "humantime_serde")]
    pub reconnect_min_backoff: Duration,
    /// Longest wait between attempts (device or adapter).
    #[serde(with = "humantime_serde")]
    pub reconnect_max_backoff: Duration,
    /// Longest time for connect + discovery.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Write the Current Time characteristic on connect where it is writable.
    pub set_device_clock: bool,
    /// A device clock (read from Current Time) off by more than this has
    /// its readings' times corrected, flagged, with the device time kept.
    #[serde(with = "humantime_serde")]
    pub clock_offset_threshold: Duration,
}

impl Default for BleConfig {
    fn default() -> Self {
        BleConfig {
            enabled: true,
            adapter: None,
            scan_services: Vec::new(),
            profile_dirs: Vec::new(),
            devices: Vec::new(),
            max_connections: 4,
            reconnect_min_backoff: Duration::from_secs(1),
            reconnect_max_backoff: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            set_device_clock: true,
            clock_offset_threshold: Duration::from_secs(120),
        }
    }
}

/// `[[sources.ble.devices]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BleDeviceOverride {
    /// Bluetooth address `AA:BB:CC:DD:EE:FF`.
    pub address: String,
    /// Profile name (bundled or from `profile_dirs`); absent = the SIG
    /// characteristics the device offers.
    pub profile: Option<String>,
}

/// The checks of `[sources.ble]`; `profiles` is the device profile set it
/// names profiles from (or why it could not be loaded).
pub fn validate(
    b: &BleConfig,
    profiles: Result<DeviceProfileSet, Vec<String>>,
    err: &mut dyn FnMut(&str, &str, String),
) {
    let t = "sources.ble";
    if b.max_connections == 0 {
        err(t, "max_connections", "must be greater than 0".into());
    }
    if b.reconnect_min_backoff.is_zero() || b.reconnect_min_backoff > b.reconnect_max_backoff {
        err(
            t,
            "reconnect_min_backoff",
            "must be greater than 0 and at most reconnect_max_backoff".into(),
        );
    }
    if b.connect_timeout < Duration::from_secs(1) {
        err(t, "connect_timeout", "must be at least 1s".into());
    }
    if let Some(a) = &b.adapter {
        if !a.starts_with("hci") || a[3..].parse::<u16>().is_err() {
            err(
                t,
                "adapter",
                format!("`{a}` is not an adapter name like hci0"),
            );
        }
    }
    for s in &b.scan_services {
        if device_profiles::gatt::device::BleUuid::parse(s).is_none() {
            err(t, "scan_services", format!("`{s}` is not a UUID"));
        }
    }
    match profiles {
        Ok(set) => {
            for d in &b.devices {
                if device_profiles::gatt::device::normalize_address(&d.address).is_none() {
                    err(
                        t,
                        "devices",
                        format!("`{}` is not a Bluetooth address", d.address),
                    );
                }
                if let Some(p) = &d.profile {
                    if set.by_name(p).is_none() {
                        err(t, "devices", format!("profile `{p}` is not known"));
                    }
                }
            }
        }
        Err(problems) => {
            for p in problems {
                err(t, "profile_dirs", p);
            }
        }
    }
}
