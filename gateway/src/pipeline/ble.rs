//! BLE input for the shared pipeline: GATT characteristic values (decoded by
//! the built-in SIG decoders) and vendor byte layouts (proprietary
//! characteristics, advertisement service or manufacturer data).
//!
//! The quarantine keeps the bytes with a profile string (`gatt:2a35`,
//! `layout:xiaomi-scale-v1`) so that an input quarantined because its device
//! was not yet assigned is decoded again on assignment. The bytes alone are
//! not enough: a glucose record's context arrived in another value, and the
//! connection may have corrected a wrong device clock. Those facts
//! ([`BleFacts`]) are kept with the input, and re-processing applies them,
//! so that assigning a device later yields exactly the readings it would
//! have yielded had it been assigned at the time.

use chrono::Duration;
use device_profiles::gatt::device::DeviceProfileSet;
use device_profiles::gatt::{decode_characteristic, Decoded, GlucoseMeasurementContext, Layout};
use device_profiles::{DecodedMeasurement, Reject, Source};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::OnceLock;

use super::Pipeline;
use crate::store::registry::QuarantinedInput;
use crate::store::{Item, RawInput};

/// What a BLE connection knew about an input besides its bytes; kept (as
/// JSON) with the input when it is quarantined.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BleFacts {
    /// The Glucose Measurement Context (0x2A34) joined to a glucose
    /// record, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Device clock minus gateway clock applied to the connection's
    /// readings, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
    /// How that offset was known: `current_time` (read from the device) or
    /// `estimated` (inferred from a burst of records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_basis: Option<String>,
    /// When the link was made (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_at_ms: Option<i64>,
}

impl BleFacts {
    fn parse(text: Option<&str>) -> BleFacts {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }

    /// The raw input with `self` merged into its facts (fields set here win).
    fn merge_into(&self, raw: &RawInput) -> RawInput {
        let mut f = BleFacts::parse(raw.facts.as_deref());
        if self.context.is_some() {
            f.context.clone_from(&self.context);
        }
        if self.clock_offset_ms.is_some() {
            f.clock_offset_ms = self.clock_offset_ms;
            f.clock_basis.clone_from(&self.clock_basis);
        }
        if self.connected_at_ms.is_some() {
            f.connected_at_ms = self.connected_at_ms;
        }
        RawInput {
            facts: serde_json::to_string(&f).ok(),
            ..raw.clone()
        }
    }
}

/// Records `facts` with every item's input (what a quarantine row keeps).
pub fn stamp_facts(items: &mut [Item], facts: &BleFacts) {
    for item in items {
        let raw = match item {
            Item::Reading { raw, .. }
            | Item::Quarantine { raw, .. }
            | Item::Response { raw, .. } => raw,
        };
        *raw = Arc::new(facts.merge_into(raw));
    }
}

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
        layout: &'a Layout,
        /// where the bytes came from (`adv/181d`, `fff1`), for the origin
        key: &'a str,
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
    let facts = BleFacts::parse(q.facts.as_deref());
    let context = facts.context.as_deref().and_then(|h| hex::decode(h).ok());
    let m = if let Some(hex) = profile.strip_prefix("gatt:") {
        let uuid = u16::from_str_radix(hex, 16).map_err(|_| no_profile())?;
        decode(&BleInput::Sig {
            uuid,
            bytes: &q.payload,
            context: context.as_deref(),
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
    let mut group = p.normalizer.canonical(
        &m,
        &device,
        Source::Ble,
        q.received_at,
        &device_profiles::canonical::content_digest(&q.payload),
        q.index.unwrap_or(0),
    )?;
    if let Some(ms) = facts.clock_offset_ms {
        let estimated = facts.clock_basis.as_deref() == Some("estimated");
        apply_clock_offset_group(&mut group, Duration::milliseconds(ms), estimated);
    }
    Ok(group)
}

/// Applies an estimated device clock offset (device clock minus gateway
/// clock) to the readings of `items`: the device's own time stays in
/// `device_measured_at`, `measured_at` becomes the corrected time, and the
/// readings are flagged `clock_offset_s` / `clock_corrected = device_offset`.
/// The reading ids do not change (they derive from the device time).
/// With `estimated`, the offset was inferred from the records themselves
/// (flag `clock_offset_estimated`), not read from the device.
pub fn apply_clock_offset(items: &mut [Item], offset: Duration, estimated: bool) {
    for item in items.iter_mut() {
        if let Item::Reading { group, .. } = item {
            apply_clock_offset_group(group, offset, estimated);
        }
    }
    // Kept with the input, should it be quarantined (device not assigned).
    stamp_facts(
        items,
        &BleFacts {
            clock_offset_ms: Some(offset.num_milliseconds()),
            clock_basis: Some(
                if estimated {
                    "estimated"
                } else {
                    "current_time"
                }
                .into(),
            ),
            ..BleFacts::default()
        },
    );
}

/// [`apply_clock_offset`] on one measurement's readings.
pub fn apply_clock_offset_group(
    group: &mut device_profiles::ReadingGroup,
    offset: Duration,
    estimated: bool,
) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_accumulate_on_the_input() {
        let raw = Arc::new(RawInput::new(
            Source::Ble,
            "AA/2a18",
            Some("gatt:2a18".into()),
            &[1, 2, 3],
            chrono::Utc::now(),
        ));
        let mut items = vec![Item::Quarantine {
            raw,
            index: None,
            device_id: None,
            reason: Reject::Empty,
        }];
        stamp_facts(
            &mut items,
            &BleFacts {
                context: Some("0a0b".into()),
                ..BleFacts::default()
            },
        );
        apply_clock_offset(&mut items, Duration::seconds(-90), true);
        stamp_facts(
            &mut items,
            &BleFacts {
                connected_at_ms: Some(7),
                ..BleFacts::default()
            },
        );
        let Item::Quarantine { raw, .. } = &items[0] else {
            unreachable!()
        };
        let f = BleFacts::parse(raw.facts.as_deref());
        assert_eq!(
            f,
            BleFacts {
                context: Some("0a0b".into()),
                clock_offset_ms: Some(-90_000),
                clock_basis: Some("estimated".into()),
                connected_at_ms: Some(7),
            }
        );
        assert_eq!(&*raw.payload, &[1, 2, 3], "the bytes are kept as received");
    }
}
