//! BLE input for the shared pipeline: GATT characteristic values (decoded by
//! the built-in SIG decoders) and vendor byte layouts (proprietary
//! characteristics, advertisement service or manufacturer data).
//!
//! The quarantine keeps the bytes with a profile string (`gatt:2a35`,
//! `layout:xiaomi-scale-v1`) so that an input quarantined because its device
//! was not yet assigned is decoded again on assignment.

use chrono::Duration;
use device_profiles::gatt::device::DeviceProfileSet;
use device_profiles::gatt::{decode_characteristic, Decoded, GlucoseMeasurementContext, Layout};
use device_profiles::{DecodedMeasurement, Reject, Source};
use std::sync::OnceLock;

use super::Pipeline;
use crate::store::registry::QuarantinedInput;
use crate::store::Item;

/// One BLE input.
#[derive(Debug, Clone, Copy)]
pub enum BleInput<'a> {
    /// A SIG characteristic value; for a Glucose Measurement, its Glucose
    /// Measurement Context (same sequence number) when one was sent.
    Sig {
        /// 16-bit characteristic UUID
        uuid: u16,
        /// the value
        bytes: &'a [u8],
        /// 0x2A34 value joined to a 0x2A18 record
        context: Option<&'a [u8]>,
    },
    /// Bytes described by a vendor layout.
    Layout {
        /// the layout
        layout: &'a Layout,
        /// where the bytes came from (`adv/181d`, `fff1`), for the origin
        key: &'a str,
        /// the bytes
        bytes: &'a [u8],
    },
}

impl BleInput<'_> {
    /// (origin key, profile string, bytes kept for quarantine).
    pub(crate) fn origin(&self) -> (String, String, &[u8]) {
        match self {
            BleInput::Sig { uuid, bytes, .. } => {
                (format!("{uuid:04x}"), format!("gatt:{uuid:04x}"), bytes)
            }
            BleInput::Layout { layout, key, bytes } => (
                (*key).to_string(),
                format!("layout:{}", layout.name()),
                bytes,
            ),
        }
    }
}

/// Layouts used to re-decode quarantined BLE input (set once at start).
static LAYOUTS: OnceLock<DeviceProfileSet> = OnceLock::new();

/// Makes the loaded BLE profiles' layouts available to re-processing.
pub fn set_profiles(set: DeviceProfileSet) {
    let _ = LAYOUTS.set(set);
}

/// Decodes one input: `Ok(None)` when it carries no result (time, control
/// point traffic, a scale still settling).
pub(crate) fn decode(input: &BleInput<'_>) -> Result<Option<DecodedMeasurement>, Reject> {
    match input {
        BleInput::Sig {
            uuid,
            bytes,
            context,
        } => {
            let decoded = decode_characteristic(*uuid, bytes).map_err(Reject::from)?;
            if !decoded.is_result() {
                return Ok(None);
            }
            let mut measurements = decoded.to_measurements();
            if let (Decoded::Glucose(_), Some(ctx)) = (&decoded, context) {
                // A context that does not decode is not a reason to lose the
                // glucose value: the record is stored without it, flagged.
                match GlucoseMeasurementContext::decode(ctx) {
                    Ok(c) => {
                        if !device_profiles::gatt::merge_context(&mut measurements, &c) {
                            for m in &mut measurements {
                                m.annotations
                                    .insert("context".into(), "sequence_mismatch".into());
                            }
                        }
                    }
                    Err(_) => {
                        for m in &mut measurements {
                            m.annotations.insert("context".into(), "invalid".into());
                        }
                    }
                }
            }
            // One characteristic value is one measurement (gatt/mod.rs).
            Ok(measurements.into_iter().next())
        }
        BleInput::Layout { layout, bytes, .. } => layout.decode_ready(bytes).map_err(Reject::from),
    }
}

/// Re-decodes a quarantined BLE input with its original time of receipt.
pub(crate) fn reprocess(
    p: &Pipeline,
    q: &QuarantinedInput,
) -> Result<device_profiles::ReadingGroup, Reject> {
    let profile = q.profile.as_deref().unwrap_or_default();
    let no_profile = || Reject::NoProfile {
        topic: q.origin.clone(),
    };
    let m = if let Some(hex) = profile.strip_prefix("gatt:") {
        let uuid = u16::from_str_radix(hex, 16).map_err(|_| no_profile())?;
        decode(&BleInput::Sig {
            uuid,
            bytes: &q.payload,
            context: None,
        })?
    } else if let Some(name) = profile.strip_prefix("layout:") {
        let layouts = LAYOUTS.get_or_init(DeviceProfileSet::bundled);
        let layout = layouts.layout(name).ok_or_else(no_profile)?;
        decode(&BleInput::Layout {
            layout,
            key: "",
            bytes: &q.payload,
        })?
    } else {
        return Err(no_profile());
    };
    let m = m.ok_or(Reject::Empty)?;
    let device = q.device_id.clone().unwrap_or_default();
    p.normalizer.canonical(
        &m,
        &device,
        Source::Ble,
        q.received_at,
        &device_profiles::canonical::content_digest(&q.payload),
        q.index.unwrap_or(0),
    )
}

/// Applies an estimated device clock offset (device clock minus gateway
/// clock) to the readings of `items`: the device's own time stays in
/// `device_measured_at`, `measured_at` becomes the corrected time, and the
/// readings are flagged `clock_offset_s` / `clock_corrected = device_offset`.
/// The reading ids do not change (they derive from the device time).
/// With `estimated`, the offset was inferred from the records themselves
/// (flag `clock_offset_estimated`), not read from the device.
pub fn apply_clock_offset(items: &mut [Item], offset: Duration, estimated: bool) {
    for item in items {
        let Item::Reading { group, .. } = item else {
            continue;
        };
        for r in &mut group.readings {
            let Some(device) = r.device_measured_at else {
                continue;
            };
            if let Some(t) = device.checked_sub_signed(offset) {
                r.measured_at = t.min(r.received_at);
                r.annotations
                    .insert("clock_offset_s".into(), offset.num_seconds().to_string());
                r.annotations
                    .insert("clock_corrected".into(), "device_offset".into());
                if estimated {
                    r.annotations
                        .insert("clock_offset_estimated".into(), "true".into());
                }
            }
        }
    }
}
