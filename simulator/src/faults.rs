//! Faults on demand: `rpm-sim run --faults malformed,truncated,nan,unknown-device`
//! adds one faulty message of each requested kind to a scenario, as
//! `[[events.fault]]` entries (what a scenario file can state), from devices
//! and at times derived from the seed. A correct gateway quarantines each
//! with the reason [`expected_reject`] names and stores nothing of it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::emission::{DeviceKind, Fault};
use crate::patient::TimeOfDay;
use crate::physiology::derive_seed;
use crate::scenario::{FaultEvent, Scenario};

/// Every fault kind.
pub const ALL: [Fault; 8] = [
    Fault::Malformed,
    Fault::Truncated,
    Fault::NanValue,
    Fault::UnknownUnit,
    Fault::UnknownDevice,
    Fault::Implausible,
    Fault::Oversized,
    Fault::InvalidAnswer,
];

/// Command-line name of a fault.
pub const fn name(f: Fault) -> &'static str {
    match f {
        Fault::Malformed => "malformed",
        Fault::Truncated => "truncated",
        Fault::NanValue => "nan",
        Fault::UnknownUnit => "unknown-unit",
        Fault::UnknownDevice => "unknown-device",
        Fault::Implausible => "implausible",
        Fault::Oversized => "oversized",
        Fault::InvalidAnswer => "invalid-answer",
    }
}

/// The quarantine reason code a correct gateway gives the fault.
pub const fn expected_reject(f: Fault) -> &'static str {
    match f {
        Fault::Malformed | Fault::Truncated => "malformed_payload",
        Fault::NanValue => "special_value",
        Fault::UnknownUnit => "unknown_unit",
        Fault::UnknownDevice => "unknown_device",
        Fault::Implausible => "implausible_value",
        Fault::Oversized => "payload_too_large",
        Fault::InvalidAnswer => "invalid_answer",
    }
}

/// Parses one fault name (`nan`, `nan_value`, `unknown-device`, ...).
pub fn parse(s: &str) -> Result<Fault, String> {
    let norm = s.trim().replace('_', "-");
    let norm = if norm == "nan-value" {
        "nan".into()
    } else {
        norm
    };
    ALL.into_iter()
        .find(|f| name(*f) == norm)
        .ok_or_else(|| format!("unknown fault `{s}` (known: {})", ALL.map(name).join(", ")))
}

/// Parses `malformed,nan,...` (or `all`).
pub fn parse_list(s: &str) -> Result<Vec<Fault>, String> {
    if s.trim() == "all" {
        return Ok(ALL.to_vec());
    }
    let mut v = Vec::new();
    for part in s.split(',').filter(|x| !x.trim().is_empty()) {
        let f = parse(part)?;
        if !v.contains(&f) {
            v.push(f);
        }
    }
    Ok(v)
}

/// Whether a device kind's payload carries a unit the fault can corrupt
/// (an oximeter's SpO2 and pulse are unitless in its profile).
fn can_carry(kind: DeviceKind, f: Fault) -> bool {
    match (kind, f) {
        // A check-in has answers, not measured values with units.
        (DeviceKind::Tablet, Fault::NanValue | Fault::UnknownUnit | Fault::Implausible) => false,
        (DeviceKind::Tablet, _) => true,
        (_, Fault::InvalidAnswer) => false,
        (DeviceKind::PulseOximeter, Fault::UnknownUnit) => false,
        _ => true,
    }
}

/// The scenario with one message of each fault in `faults`, each from a
/// device and at a time derived from `seed`.
pub fn inject(s: &Scenario, faults: &[Fault], seed: u64) -> Scenario {
    let mut out = s.clone();
    let devices: Vec<(&str, DeviceKind)> = s
        .patients
        .iter()
        .flat_map(|p| p.devices.iter().map(|d| (d.id.as_str(), d.kind)))
        .collect();
    for f in faults {
        let mut rng =
            ChaCha8Rng::seed_from_u64(derive_seed(seed, &[b"fault", name(*f).as_bytes()]));
        let fitting: Vec<&(&str, DeviceKind)> =
            devices.iter().filter(|(_, k)| can_carry(*k, *f)).collect();
        if fitting.is_empty() {
            continue;
        }
        let (device, _) = fitting[rng.random_range(0..fitting.len())];
        out.events.fault.push(FaultEvent {
            device: (*device).to_string(),
            day: rng.random_range(0..s.days),
            at: TimeOfDay::hm(rng.random_range(0..24), rng.random_range(0..60)).unwrap_or_default(),
            fault: *f,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emission::Emission;
    use crate::payload::{encode, WireFormat};
    use device_profiles::profile::{bundled_dir, ProfileSet};
    use device_profiles::{canonicalize, ClockPolicy, Source};

    #[test]
    fn names_round_trip() {
        for f in ALL {
            assert_eq!(parse(name(f)).unwrap(), f);
        }
        assert_eq!(parse("nan_value").unwrap(), Fault::NanValue);
        assert_eq!(parse("unknown_device").unwrap(), Fault::UnknownDevice);
        assert_eq!(parse_list("all").unwrap().len(), ALL.len());
        assert!(parse("gremlins").is_err());
    }

    /// What the gateway's own code (device-profiles) makes of a message:
    /// the reason code of its refusal, or "" when it is accepted.
    fn verdict(profiles: &ProfileSet, e: &Emission, format: WireFormat) -> String {
        let m = encode(e, format);
        if e.fault == Some(Fault::UnknownDevice) {
            // The registry refuses it; the payload itself is good.
            assert!(m.topic.contains(crate::payload::UNKNOWN_DEVICE_PREFIX));
            return "unknown_device".to_string();
        }
        if m.payload.len() > 256 * 1024 {
            return "payload_too_large".to_string();
        }
        let profile = profiles.for_topic(&m.topic).unwrap();
        match profile.decode(&m.topic, &m.payload) {
            Err(r) => r.code().to_string(),
            Ok(d) => {
                let meas = d.measurements.into_iter().next().unwrap();
                let r = meas.and_then(|meas| {
                    canonicalize(
                        &meas,
                        &device_profiles::canonical::Context {
                            device_id: "d",
                            patient_id: "p",
                            source: Source::Mqtt,
                            received_at: e.at,
                            clock: &ClockPolicy::default(),
                            content_digest: "x",
                            index: 0,
                        },
                    )
                });
                r.err().map(|r| r.code().to_string()).unwrap_or_default()
            }
        }
    }

    /// Every fault, from every device kind in every wire format, is refused
    /// with its expected reason (and the same message without the fault is
    /// accepted).
    #[test]
    fn every_fault_of_every_kind_and_format_is_refused_with_its_reason() {
        let profiles = ProfileSet::load_dir(&bundled_dir()).unwrap();
        for kind in crate::devices::KINDS {
            for format in [WireFormat::Vendor, WireFormat::Senml] {
                let mut e = crate::devices::sample(kind);
                assert_eq!(verdict(&profiles, &e, format), "", "{kind:?} {format:?}");
                for f in ALL.into_iter().filter(|f| can_carry(kind, *f)) {
                    e.fault = Some(f);
                    assert_eq!(
                        verdict(&profiles, &e, format),
                        expected_reject(f),
                        "{f:?} from a {kind:?} in {format:?}"
                    );
                }
            }
        }
    }

    /// Each injected fault, decoded and normalized with the gateway's own
    /// code (device-profiles), is refused with its expected reason.
    #[test]
    fn each_fault_is_refused_with_its_reason() {
        let profiles = ProfileSet::load_dir(&bundled_dir()).unwrap();
        let s = Scenario::bundled("demo").unwrap();
        let s = inject(&s, &ALL, 3);
        let plan = s.plan();
        let mut seen = Vec::new();
        for p in plan.readings.iter().filter(|p| p.is_fault()) {
            let f = p.emission.fault.unwrap();
            let reason = verdict(&profiles, &p.wire_emission(), p.format);
            assert_eq!(
                reason,
                expected_reject(f),
                "{f:?} from {}",
                p.emission.device_id
            );
            seen.push(f);
        }
        seen.sort_by_key(|f| name(*f));
        // Every fault some device of the scenario can carry (the demo has
        // no tablet, so no invalid check-in answer).
        let kinds: Vec<DeviceKind> = s
            .patients
            .iter()
            .flat_map(|p| p.devices.iter().map(|d| d.kind))
            .collect();
        let mut want: Vec<Fault> = ALL
            .into_iter()
            .filter(|f| kinds.iter().any(|k| can_carry(*k, *f)))
            .collect();
        want.sort_by_key(|f| name(*f));
        // demo.toml has its own malformed and unknown-device faults too.
        seen.dedup();
        assert_eq!(seen, want);
    }
}
