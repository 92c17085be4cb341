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

// ---------------------------------------------------------------------
// MQTT and HTTP payload decoders (SenML, vendor JSON profiles) and the
// canonicalization every source shares.
// ---------------------------------------------------------------------

use chrono::{TimeZone, Utc};
use device_profiles::canonical::{content_digest, Context};
use device_profiles::{canonicalize, ClockPolicy, Profile, ProfileSet, Reject, Source};
use std::sync::OnceLock;

/// The bundled MQTT/HTTP profiles, loaded once.
pub fn profiles() -> &'static [Profile] {
    static SET: OnceLock<Vec<Profile>> = OnceLock::new();
    SET.get_or_init(|| {
        let set: ProfileSet = device_profiles::profile::bundled();
        set.iter().cloned().collect()
    })
}

/// A topic a device would publish on under `p` (`{device_id}` → `dev-1`).
pub fn topic_of(p: &Profile) -> String {
    p.topic
        .to_string()
        .split('/')
        .map(|l| match l {
            "{device_id}" => "dev-1",
            "+" | "#" => "x",
            other => other,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Decodes `payload` with `p` as the gateway does, then canonicalizes every
/// measurement, checking the invariants:
///
/// - every number a decoder hands on is finite (special values stay special);
/// - a canonical reading is finite and inside its metric's plausible range;
/// - a refusal names the true reason: `special_value` only for a special
///   value the input carried;
/// - decoding and canonicalization are deterministic (same input, same result).
pub fn check_payload(p: &Profile, payload: &[u8]) {
    let topic = topic_of(p);
    let first = p.decode(&topic, payload);
    let again = p.decode(&topic, payload);
    assert_eq!(
        format!("{first:?}"),
        format!("{again:?}"),
        "decoding is deterministic"
    );
    let Ok(message) = first else { return };
    let digest = content_digest(payload);
    for (index, m) in message.measurements.iter().enumerate() {
        let Ok(m) = m else { continue };
        check_measurement(m);
        let device = m
            .device_id
            .clone()
            .or_else(|| message.device_id.clone())
            .unwrap_or_default();
        check_canonical(m, &device, &digest, index);
    }
}

/// Canonicalizes `m` twice and checks the invariants of [`check_payload`].
pub fn check_canonical(m: &DecodedMeasurement, device: &str, digest: &str, index: usize) {
    let clock = ClockPolicy::default();
    let received_at = Utc
        .timestamp_opt(1_780_000_000, 0)
        .single()
        .unwrap_or_default();
    let cx = Context {
        device_id: device,
        patient_id: "p",
        source: Source::Mqtt,
        received_at,
        clock: &clock,
        content_digest: digest,
        index,
    };
    let first = canonicalize(m, &cx);
    assert_eq!(
        first,
        canonicalize(m, &cx),
        "canonicalization is deterministic"
    );
    match first {
        Ok(group) => {
            for r in &group.readings {
                let (low, high) = r.metric.plausible_range();
                assert!(
                    r.value.is_finite() && (low..=high).contains(&r.value),
                    "{r:?}"
                );
            }
        }
        Err(Reject::SpecialValue { metric, .. }) => {
            let special = m.components.iter().any(|c| {
                c.metric == metric
                    && match c.value {
                        RawValue::Special(_) => true,
                        RawValue::Number(n) => !n.is_finite(),
                    }
            });
            assert!(special, "special_value without a special value: {m:?}");
        }
        Err(_) => {}
    }
}
