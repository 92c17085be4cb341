//! The vendor conformance check (`rpm-sim check`): decode a device's real
//! payload, or captured GATT bytes, with the gateway's own decoders and
//! canonical normalization (the `device-profiles` crate, byte for byte the
//! code the gateway runs), and say what the gateway would store — or the
//! exact reason it would refuse it.
//!
//! Only the device registry is left out: the check binds every reading to a
//! placeholder patient, since which patient a device belongs to is the
//! deployment's business, not the device's.

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use device_profiles::canonical::{content_digest, Context};
use device_profiles::gatt::{decode_characteristic, Layout};
use device_profiles::{
    canonicalize, ClockPolicy, DecodedMeasurement, Profile, ReadingGroup, Reject, Source,
};
use serde::Serialize;

/// Device id used when the input does not name one.
pub const DEVICE_UNDER_TEST: &str = "device-under-test";
/// Patient the readings are bound to in the check.
pub const CHECK_PATIENT: &str = "check-patient";
/// The gateway's default payload limit (`normalize.max_payload_bytes`).
pub const DEFAULT_MAX_PAYLOAD: usize = 256 * 1024;

/// Why a check could not even start (bad arguments or files), as opposed
/// to a payload the gateway refuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The profile file is not a valid profile.
    #[error(transparent)]
    Profile(#[from] device_profiles::FileError),
    /// The layout file is not a valid layout.
    #[error(transparent)]
    Layout(#[from] device_profiles::gatt::LayoutError),
    /// A file could not be read.
    #[error("cannot read {file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `--gatt` is not hex.
    #[error("`{0}` is not hex bytes (e.g. `1E 80 00 50 00`)")]
    Hex(String),
    /// `--characteristic` is not a 16-bit UUID.
    #[error("`{0}` is not a 16-bit characteristic UUID (e.g. 0x2A35)")]
    Uuid(String),
    /// The topic does not match the profile's pattern.
    #[error("topic `{topic}` does not match the profile's pattern `{pattern}`")]
    Topic {
        /// Given topic.
        topic: String,
        /// Profile pattern.
        pattern: String,
    },
}

/// The outcome of one measurement of the input.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum MeasurementOutcome {
    /// The gateway stores these readings.
    Accepted {
        /// The canonical readings.
        group: ReadingGroup,
    },
    /// The gateway quarantines this measurement.
    Refused {
        /// Stable reason code.
        reason: &'static str,
        /// Explanation.
        detail: String,
    },
}

/// What the gateway makes of one input.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// What was checked: `mqtt` or `gatt`.
    pub kind: &'static str,
    /// Profile, characteristic or layout used.
    pub decoder: String,
    /// MQTT topic the payload was decoded as received on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Device id found.
    pub device_id: Option<String>,
    /// The whole input was refused (nothing decoded), with the reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
    /// One outcome per measurement.
    pub measurements: Vec<MeasurementOutcome>,
    /// True when every measurement is accepted and there is at least one.
    pub accepted: bool,
}

/// A refusal of the whole input.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// Stable reason code.
    pub reason: &'static str,
    /// Explanation.
    pub detail: String,
}

impl From<&Reject> for Refusal {
    fn from(r: &Reject) -> Refusal {
        Refusal {
            reason: r.code(),
            detail: r.to_string(),
        }
    }
}

/// Settings shared by every check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Time of receipt the clock checks compare with.
    pub received_at: DateTime<Utc>,
    /// The gateway's clock policy.
    pub clock: ClockPolicy,
    /// Payload size limit.
    pub max_payload: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            received_at: Utc::now(),
            clock: ClockPolicy::default(),
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

/// Loads a profile: a file path, or the name of a bundled profile.
pub fn load_profile(arg: &str) -> Result<Profile, CheckError> {
    let path = Path::new(arg);
    if !path.exists() {
        if let Some(p) = device_profiles::profile::bundled().by_name(arg) {
            return Ok(p.clone());
        }
    }
    let text = std::fs::read_to_string(path).map_err(|source| CheckError::Io {
        file: arg.to_string(),
        source,
    })?;
    Ok(Profile::from_toml(&text, path)?)
}

/// A concrete topic for a profile's pattern: `{device_id}` becomes
/// [`DEVICE_UNDER_TEST`], `+` becomes `x`, a final `#` is dropped.
pub fn example_topic(p: &Profile) -> String {
    let text = p.topic.to_string();
    let levels: Vec<&str> = text
        .split('/')
        .filter(|l| *l != "#")
        .map(|l| match l {
            "{device_id}" => DEVICE_UNDER_TEST,
            "+" => "x",
            other => other,
        })
        .collect();
    if levels.is_empty() {
        "x".into()
    } else {
        levels.join("/")
    }
}

/// Parses hex bytes: spaces, `:`, `,`, `-` and `0x` prefixes allowed.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, CheckError> {
    let cleaned: String = s
        .split(|c: char| c.is_whitespace() || c == ':' || c == ',' || c == '-')
        .map(|t| t.trim_start_matches("0x").trim_start_matches("0X"))
        .collect();
    if cleaned.is_empty() || !cleaned.len().is_multiple_of(2) {
        return Err(CheckError::Hex(s.to_string()));
    }
    (0..cleaned.len())
        .step_by(2)
        .map(|i| {
            cleaned
                .get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or_else(|| CheckError::Hex(s.to_string()))
        })
        .collect()
}

/// Parses a 16-bit UUID: `0x2A35` or `2A35`.
pub fn parse_uuid(s: &str) -> Result<u16, CheckError> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u16::from_str_radix(t, 16).map_err(|_| CheckError::Uuid(s.to_string()))
}

fn canonical(
    m: &DecodedMeasurement,
    device_id: &str,
    source: Source,
    digest: &str,
    index: usize,
    o: &CheckOptions,
) -> MeasurementOutcome {
    let cx = Context {
        device_id: m.device_id.as_deref().unwrap_or(device_id),
        patient_id: CHECK_PATIENT,
        source,
        received_at: o.received_at,
        clock: &o.clock,
        content_digest: digest,
        index,
    };
    match canonicalize(m, &cx) {
        Ok(group) => MeasurementOutcome::Accepted { group },
        Err(r) => MeasurementOutcome::Refused {
            reason: r.code(),
            detail: r.to_string(),
        },
    }
}

fn finish(mut r: CheckReport) -> CheckReport {
    r.accepted = r.refused.is_none()
        && !r.measurements.is_empty()
        && r.measurements
            .iter()
            .all(|m| matches!(m, MeasurementOutcome::Accepted { .. }));
    r
}

/// Checks an MQTT payload against a profile, as received on `topic` (an
/// example topic of the profile when `None`).
pub fn check_mqtt(
    profile: &Profile,
    topic: Option<&str>,
    payload: &[u8],
    o: &CheckOptions,
) -> Result<CheckReport, CheckError> {
    let topic = topic.map_or_else(|| example_topic(profile), str::to_string);
    if profile.topic.matches(&topic).is_none() {
        return Err(CheckError::Topic {
            topic,
            pattern: profile.topic.to_string(),
        });
    }
    let mut r = CheckReport {
        kind: "mqtt",
        decoder: profile.name.clone(),
        topic: Some(topic.clone()),
        device_id: None,
        refused: None,
        measurements: Vec::new(),
        accepted: false,
    };
    // The same order as the gateway: size first, then the profile.
    let decoded = if payload.len() > o.max_payload {
        Err(Reject::PayloadTooLarge {
            size: payload.len(),
            limit: o.max_payload,
        })
    } else {
        profile.decode(&topic, payload)
    };
    match decoded {
        Err(reject) => r.refused = Some(Refusal::from(&reject)),
        Ok(msg) => {
            let digest = content_digest(payload);
            let device = msg.device_id.clone().unwrap_or_default();
            r.device_id = msg.device_id;
            for (i, m) in msg.measurements.into_iter().enumerate() {
                r.measurements.push(match m {
                    Ok(m) => canonical(&m, &device, Source::Mqtt, &digest, i, o),
                    Err(reject) => MeasurementOutcome::Refused {
                        reason: reject.code(),
                        detail: reject.to_string(),
                    },
                });
            }
            if r.measurements.is_empty() {
                r.refused = Some(Refusal::from(&Reject::Empty));
            }
        }
    }
    Ok(finish(r))
}

/// Checks a GATT characteristic value (`uuid`, bytes as captured).
pub fn check_gatt(uuid: u16, bytes: &[u8], o: &CheckOptions) -> CheckReport {
    let mut r = CheckReport {
        kind: "gatt",
        decoder: format!("0x{uuid:04X}"),
        topic: None,
        device_id: Some(DEVICE_UNDER_TEST.into()),
        refused: None,
        measurements: Vec::new(),
        accepted: false,
    };
    match decode_characteristic(uuid, bytes) {
        Err(e) => r.refused = Some(Refusal::from(&Reject::from(e))),
        Ok(d) => {
            r.decoder = format!("0x{uuid:04X} {:?}", d.characteristic());
            let digest = content_digest(bytes);
            let ms = d.to_measurements();
            if ms.is_empty() {
                r.refused = Some(Refusal {
                    reason: "not_clinical",
                    detail: format!(
                        "{:?} is not a measurement result (time, control point, glucose context or intermediate cuff pressure)",
                        d.characteristic()
                    ),
                });
            }
            for (i, m) in ms.iter().enumerate() {
                r.measurements
                    .push(canonical(m, DEVICE_UNDER_TEST, Source::Ble, &digest, i, o));
            }
        }
    }
    finish(r)
}

/// Checks bytes against a vendor byte layout (`device-profiles/profiles/ble/`).
pub fn check_layout(layout: &Layout, bytes: &[u8], o: &CheckOptions) -> CheckReport {
    let mut r = CheckReport {
        kind: "gatt",
        decoder: format!("layout {}", layout.name()),
        topic: None,
        device_id: Some(DEVICE_UNDER_TEST.into()),
        refused: None,
        measurements: Vec::new(),
        accepted: false,
    };
    match layout.decode(bytes) {
        Err(e) => r.refused = Some(Refusal::from(&Reject::from(e))),
        Ok(m) => r.measurements.push(canonical(
            &m,
            DEVICE_UNDER_TEST,
            Source::Ble,
            &content_digest(bytes),
            0,
            o,
        )),
    }
    finish(r)
}

impl CheckReport {
    /// The readable form printed by default.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = write!(s, "decoder  {}", self.decoder);
        if let Some(t) = &self.topic {
            let _ = write!(s, "\ntopic    {t}");
        }
        if let Some(d) = &self.device_id {
            let _ = write!(s, "\ndevice   {d}");
        }
        s.push('\n');
        if let Some(r) = &self.refused {
            let _ = writeln!(s, "\nREFUSED  {}: {}", r.reason, r.detail);
        }
        for (i, m) in self.measurements.iter().enumerate() {
            match m {
                MeasurementOutcome::Accepted { group } => {
                    let panel = group
                        .panel
                        .map(|p| format!(" (panel LOINC {})", p.loinc()))
                        .unwrap_or_default();
                    let _ = writeln!(s, "\nmeasurement {}: ACCEPTED{panel}", i + 1);
                    for r in &group.readings {
                        let _ = writeln!(
                            s,
                            "  {:<24} {:>9} {:<8} LOINC {:<8} measured {}",
                            r.metric.name(),
                            format_value(r.value),
                            r.unit,
                            r.loinc,
                            r.measured_at
                                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                        );
                    }
                    if let Some(r) = group.readings.first() {
                        let notes: Vec<String> = r
                            .annotations
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect();
                        if !notes.is_empty() {
                            let _ = writeln!(s, "  annotations: {}", notes.join(", "));
                        }
                        if let Some(seq) = r.sequence {
                            let _ = writeln!(s, "  sequence: {seq}");
                        }
                    }
                }
                MeasurementOutcome::Refused { reason, detail } => {
                    let _ = writeln!(s, "\nmeasurement {}: REFUSED {reason}: {detail}", i + 1);
                }
            }
        }
        let ok = self
            .measurements
            .iter()
            .filter(|m| matches!(m, MeasurementOutcome::Accepted { .. }))
            .count();
        let _ = writeln!(
            s,
            "\nresult: {} ({ok} accepted, {} refused)",
            if self.accepted { "ACCEPTED" } else { "REFUSED" },
            self.measurements.len() - ok + usize::from(self.refused.is_some())
        );
        s
    }
}

fn format_value(v: f64) -> String {
    let t = format!("{v:.3}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> CheckOptions {
        CheckOptions {
            received_at: "2026-01-31T08:00:00Z".parse().unwrap(),
            ..CheckOptions::default()
        }
    }

    #[test]
    fn a_good_cuff_payload_is_accepted() {
        let p = load_profile("acme-bp-cuff").unwrap();
        let r = check_mqtt(
            &p,
            None,
            br#"{"measured_at":"2026-01-31T07:42:10Z","sys":132,"dia":84,"pulse":71,"unit":"mmHg"}"#,
            &opts(),
        )
        .unwrap();
        assert!(r.accepted, "{}", r.render());
        assert_eq!(r.device_id.as_deref(), Some(DEVICE_UNDER_TEST));
        let text = r.render();
        assert!(
            text.contains("systolic") && text.contains("8480-6"),
            "{text}"
        );
    }

    #[test]
    fn refusals_carry_the_reason() {
        let p = load_profile("acme-bp-cuff").unwrap();
        let r = check_mqtt(&p, None, br#"{"sys":13"#, &opts()).unwrap();
        assert!(!r.accepted);
        assert_eq!(r.refused.as_ref().unwrap().reason, "malformed_payload");
        let r = check_mqtt(
            &p,
            None,
            br#"{"measured_at":"2026-01-31T07:42:10Z","sys":"NaN","dia":84,"unit":"mmHg"}"#,
            &opts(),
        )
        .unwrap();
        assert!(matches!(
            r.measurements[0],
            MeasurementOutcome::Refused {
                reason: "special_value",
                ..
            }
        ));
        assert!(check_mqtt(&p, Some("wrong/topic"), b"{}", &opts()).is_err());
    }

    #[test]
    fn gatt_bytes() {
        // Blood pressure, mmHg, 120/80/93 (SFLOAT), no time: accepted.
        let ok = parse_hex("00 78 00 50 00 5D 00").unwrap();
        let r = check_gatt(0x2A35, &ok, &opts());
        assert!(r.accepted, "{}", r.render());
        let r = check_gatt(0x2A35, &ok[..4], &opts());
        assert_eq!(r.refused.unwrap().reason, "invalid_gatt");
        assert_eq!(parse_uuid("0x2a35").unwrap(), 0x2A35);
        assert!(parse_hex("0x1").is_err());
        assert_eq!(parse_hex("0x1E,0x80").unwrap(), vec![0x1E, 0x80]);
    }
}
