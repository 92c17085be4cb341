//! The canonical reading, and the one function that makes it from a decoded
//! measurement: units converted, LOINC attached, plausibility checked,
//! clock checked, a stable identity derived.
//!
//! This is pure (no store, no clock of its own) so that the gateway, the
//! simulator's `check` command and the tests all apply exactly the same rules.

use chrono::{DateTime, Duration, FixedOffset, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

use crate::decoded::{Annotations, DecodedMeasurement, DeviceTime, RawValue, SpecialValue};
use crate::metric::{Metric, Panel};
use crate::reject::Reject;
use crate::units::to_canonical;

/// The annotation that says how a measurement was entered.
pub const ENTRY_ANNOTATION: &str = "entry";

/// [`ENTRY_ANNOTATION`]'s value for a measurement a person typed in (into
/// an app, a vendor portal): it is stored and alerted on like any other,
/// but it is not automatically transmitted device data, so it never counts
/// as a device data day in the RPM program report.
pub const MANUAL_ENTRY: &str = "manual";

/// Where a reading came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An MQTT publish.
    Mqtt,
    /// A Bluetooth Low Energy device.
    Ble,
    /// An HTTP push to the ingest API.
    Http,
}

impl Source {
    /// Lower-case name (metrics label, store column).
    pub const fn name(self) -> &'static str {
        match self {
            Source::Mqtt => "mqtt",
            Source::Ble => "ble",
            Source::Http => "http",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mqtt" => Ok(Source::Mqtt),
            "ble" => Ok(Source::Ble),
            "http" => Ok(Source::Http),
            other => Err(format!("unknown source `{other}`")),
        }
    }
}

/// One canonical reading: one value of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Stable id: the same measurement re-sent gets the same id.
    pub reading_id: String,
    /// Id of the measurement this reading is a component of (shared by the
    /// systolic, diastolic, MAP and pulse of one cuff inflation).
    pub group_id: String,
    /// The patient the device is assigned to.
    pub patient_id: String,
    /// The device.
    pub device_id: String,
    /// What was measured.
    pub metric: Metric,
    /// Value in the metric's canonical unit.
    pub value: f64,
    /// UCUM code of the canonical unit.
    pub unit: String,
    /// LOINC code of the metric.
    pub loinc: String,
    /// Measurement time as the device stated it, read as UTC (None when the
    /// device gave none or gave a relative time).
    pub device_measured_at: Option<DateTime<Utc>>,
    /// Measurement time after clock correction: what rules and exports use.
    pub measured_at: DateTime<Utc>,
    /// When the gateway received it.
    pub received_at: DateTime<Utc>,
    /// Source kind.
    pub source: Source,
    /// Device record sequence number, where the device has one.
    pub sequence: Option<u64>,
    /// Qualifiers and flags (`time_missing`, `clock_corrected`, ...).
    pub annotations: Annotations,
    /// Digest of the input message, used to deduplicate redelivered input
    /// that carries no device time.
    pub content_digest: Option<String>,
}

impl Reading {
    /// Whether a person typed this in (annotation `entry = "manual"`).
    pub fn is_manual(&self) -> bool {
        self.annotations
            .get(ENTRY_ANNOTATION)
            .is_some_and(|v| v == MANUAL_ENTRY)
    }
}

/// The readings of one measurement, kept together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingGroup {
    /// Shared id.
    pub group_id: String,
    /// The panel, for multi-component measurements (blood pressure).
    pub panel: Option<Panel>,
    /// Components.
    pub readings: Vec<Reading>,
}

/// What to do with a timestamp the gateway does not believe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BadTimePolicy {
    /// Use the time of receipt instead, keep the device's time beside it, flag it.
    #[default]
    Correct,
    /// Quarantine the measurement.
    Quarantine,
}

/// How the gateway judges device clocks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockPolicy {
    /// A measured-at further ahead of receipt than this is wrong.
    pub max_future_skew: Duration,
    /// A measured-at further behind receipt than this is wrong (a device
    /// clock reset to 1970 or 2000); stored-memory uploads of days are fine.
    pub max_age: Duration,
    /// What to do with a wrong one.
    pub on_bad_time: BadTimePolicy,
    /// Offset applied to device-local wall times (BLE Date Time has no zone).
    pub local_offset: FixedOffset,
}

impl Default for ClockPolicy {
    fn default() -> Self {
        ClockPolicy {
            max_future_skew: Duration::minutes(5),
            max_age: Duration::days(365),
            on_bad_time: BadTimePolicy::Correct,
            local_offset: FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!()),
        }
    }
}

/// Everything besides the measurement that canonicalisation needs.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The device.
    pub device_id: &'a str,
    /// The patient it is assigned to.
    pub patient_id: &'a str,
    /// Source kind.
    pub source: Source,
    /// Time of receipt.
    pub received_at: DateTime<Utc>,
    /// Clock rules.
    pub clock: &'a ClockPolicy,
    /// Digest of the whole input message (see [`content_digest`]).
    pub content_digest: &'a str,
    /// Position of this measurement in its message (several measurements
    /// without times in one message must not collapse into one).
    pub index: usize,
}

/// A digest of an input message, hex.
pub fn content_digest(bytes: &[u8]) -> String {
    hex16(&Sha256::digest(bytes))
}

pub(crate) fn stable_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(b"rpm-reading-v1");
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex16(&h.finalize())
}

/// The first 16 bytes of a digest in lower-case hex, written into a buffer
/// in one pass: `hex::encode` pushes its digits a `char` at a time, and
/// every reading's ids made it a third of the cost of making them.
fn hex16(digest: &[u8]) -> String {
    let mut text = [0u8; 32];
    let bytes = digest.get(..16).unwrap_or(digest);
    let end = 2 * bytes.len();
    // Hex digits are ASCII: both steps succeed for any digest of 16 bytes
    // or fewer (SHA-256 gives 32).
    match hex::encode_to_slice(bytes, &mut text[..end]) {
        Ok(()) => std::str::from_utf8(&text[..end])
            .unwrap_or_default()
            .to_owned(),
        Err(_) => hex::encode(bytes),
    }
}

/// Makes the canonical readings of one decoded measurement, or says why not.
pub fn canonicalize(m: &DecodedMeasurement, cx: &Context<'_>) -> Result<ReadingGroup, Reject> {
    if let Some(detail) = &m.not_clinical {
        return Err(Reject::NotClinical {
            detail: detail.clone(),
        });
    }
    if m.components.is_empty() {
        return Err(Reject::Empty);
    }

    // Values first: a measurement with one bad component is refused whole,
    // so a panel is never stored with a component missing.
    let mut values = Vec::with_capacity(m.components.len());
    for c in &m.components {
        let raw = match c.value {
            RawValue::Number(v) if v.is_finite() => v,
            RawValue::Number(v) => {
                let value = if v.is_nan() {
                    SpecialValue::NaN
                } else if v > 0.0 {
                    SpecialValue::PositiveInfinity
                } else {
                    SpecialValue::NegativeInfinity
                };
                return Err(Reject::SpecialValue {
                    metric: c.metric,
                    value,
                });
            }
            RawValue::Special(value) => {
                return Err(Reject::SpecialValue {
                    metric: c.metric,
                    value,
                })
            }
        };
        let v = to_canonical(c.metric, raw, c.unit.as_deref())
            .map_err(|e| Reject::from_unit_error(e, c.metric))?;
        let (low, high) = c.metric.plausible_range();
        if !(low..=high).contains(&v) {
            return Err(Reject::Implausible {
                metric: c.metric,
                value: v,
                unit: c.metric.canonical_unit().ucum(),
                low,
                high,
            });
        }
        values.push((c.metric, v));
    }

    let mut annotations = m.annotations.clone();
    let (device_measured_at, measured_at, identity_time) =
        resolve_time(m.time, cx, &mut annotations)?;

    let seq = m.sequence.map(|s| s.to_string()).unwrap_or_default();
    // Identity: device time where the device stated one; otherwise the
    // message digest, its position and the time of receipt (redeliveries of
    // such input are caught by the store's digest window instead).
    let time_key = match &identity_time {
        Some(t) => t.to_rfc3339(),
        None => format!(
            "rx:{}:{}:{}",
            cx.content_digest,
            cx.index,
            cx.received_at.timestamp_millis()
        ),
    };
    let group_id = stable_id(&[cx.device_id, &time_key, &seq]);
    let panel = values.iter().find_map(|(metric, _)| metric.panel());
    let digest = identity_time
        .is_none()
        .then(|| format!("{}:{}", cx.content_digest, cx.index));

    let readings = values
        .into_iter()
        .map(|(metric, value)| Reading {
            reading_id: stable_id(&[cx.device_id, metric.name(), &time_key, &seq]),
            group_id: group_id.clone(),
            patient_id: cx.patient_id.to_string(),
            device_id: cx.device_id.to_string(),
            metric,
            value,
            unit: metric.canonical_unit().ucum().to_string(),
            loinc: metric.loinc().to_string(),
            device_measured_at,
            measured_at,
            received_at: cx.received_at,
            source: cx.source,
            sequence: m.sequence,
            annotations: annotations.clone(),
            content_digest: digest.clone(),
        })
        .collect();
    Ok(ReadingGroup {
        group_id,
        panel,
        readings,
    })
}

/// Returns (device time as UTC, corrected time, time that identifies the
/// measurement).
#[allow(clippy::type_complexity)]
fn resolve_time(
    time: Option<DeviceTime>,
    cx: &Context<'_>,
    annotations: &mut Annotations,
) -> Result<(Option<DateTime<Utc>>, DateTime<Utc>, Option<DateTime<Utc>>), Reject> {
    let device = match time {
        None => {
            annotations.insert("time_missing".into(), "true".into());
            return Ok((None, cx.received_at, None));
        }
        Some(DeviceTime::RelativeSeconds(s)) => {
            annotations.insert("time_relative".into(), "true".into());
            let t = cx
                .received_at
                .checked_add_signed(Duration::try_seconds(s).unwrap_or(Duration::MAX))
                .ok_or_else(|| Reject::InvalidTimestamp {
                    detail: format!("relative time {s} s"),
                })?;
            // A relative time is as good as the receipt time; judge it like any other.
            return judge(t, cx, annotations).map(|(measured, _)| (None, measured, None));
        }
        Some(DeviceTime::Utc(t)) => t,
        Some(DeviceTime::Local(naive)) => {
            match cx.clock.local_offset.from_local_datetime(&naive).single() {
                Some(t) => t.with_timezone(&Utc),
                None => {
                    return Err(Reject::InvalidTimestamp {
                        detail: format!("local time {naive}"),
                    })
                }
            }
        }
    };
    let (measured, _) = judge(device, cx, annotations)?;
    Ok((Some(device), measured, Some(device)))
}

fn judge(
    t: DateTime<Utc>,
    cx: &Context<'_>,
    annotations: &mut Annotations,
) -> Result<(DateTime<Utc>, bool), Reject> {
    let ahead = t - cx.received_at;
    let bad = if ahead > cx.clock.max_future_skew {
        Some(Reject::FutureTimestamp {
            seconds: ahead.num_seconds(),
            limit: cx.clock.max_future_skew.num_seconds(),
        })
    } else if -ahead > cx.clock.max_age {
        Some(Reject::AncientTimestamp {
            days: (-ahead).num_days(),
            limit: cx.clock.max_age.num_days(),
        })
    } else {
        None
    };
    match (bad, cx.clock.on_bad_time) {
        (None, _) => Ok((t, false)),
        (Some(reason), BadTimePolicy::Quarantine) => Err(reason),
        (Some(reason), BadTimePolicy::Correct) => {
            annotations.insert("clock_corrected".into(), reason.code().into());
            Ok((cx.received_at, true))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoded::Component;

    fn cx<'a>(clock: &'a ClockPolicy, now: DateTime<Utc>) -> Context<'a> {
        Context {
            device_id: "cuff-1",
            patient_id: "p1",
            source: Source::Mqtt,
            received_at: now,
            clock,
            content_digest: "d",
            index: 0,
        }
    }

    fn bp(time: Option<DeviceTime>) -> DecodedMeasurement {
        DecodedMeasurement {
            time,
            components: vec![
                Component::number(Metric::Systolic, 16.0, "kPa"),
                Component::number(Metric::Diastolic, 80.0, "mmHg"),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn bp_panel_shares_group_and_ids_are_stable() {
        let clock = ClockPolicy::default();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let t = DeviceTime::Utc(now - Duration::minutes(1));
        let a = canonicalize(&bp(Some(t)), &cx(&clock, now)).unwrap();
        let b = canonicalize(&bp(Some(t)), &cx(&clock, now + Duration::hours(1))).unwrap();
        assert_eq!(a.panel, Some(Panel::BloodPressure));
        assert_eq!(a.readings.len(), 2);
        assert_eq!(a.readings[0].group_id, a.readings[1].group_id);
        assert_ne!(a.readings[0].reading_id, a.readings[1].reading_id);
        assert_eq!(
            a.readings[0].reading_id, b.readings[0].reading_id,
            "re-sent reading keeps its id"
        );
        assert!((a.readings[0].value - 120.0098).abs() < 1e-3);
        assert_eq!(a.readings[0].unit, "mm[Hg]");
        assert_eq!(a.readings[0].loinc, "8480-6");
    }

    #[test]
    fn clock_policy() {
        let mut clock = ClockPolicy::default();
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let future = DeviceTime::Utc(now + Duration::hours(2));
        let g = canonicalize(&bp(Some(future)), &cx(&clock, now)).unwrap();
        assert_eq!(g.readings[0].measured_at, now);
        assert_eq!(
            g.readings[0].device_measured_at,
            Some(now + Duration::hours(2))
        );
        assert_eq!(
            g.readings[0].annotations["clock_corrected"],
            "future_timestamp"
        );
        clock.on_bad_time = BadTimePolicy::Quarantine;
        let old = DeviceTime::Utc(Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(
            canonicalize(&bp(Some(old)), &cx(&clock, now))
                .unwrap_err()
                .code(),
            "ancient_timestamp"
        );
        let g = canonicalize(&bp(None), &cx(&clock, now)).unwrap();
        assert_eq!(g.readings[0].measured_at, now);
        assert_eq!(g.readings[0].annotations["time_missing"], "true");
        assert!(g.readings[0].content_digest.is_some());
    }

    #[test]
    fn refusals() {
        let clock = ClockPolicy::default();
        let now = Utc::now();
        let mut m = bp(None);
        m.components[1].value = RawValue::Special(SpecialValue::NaN);
        assert_eq!(
            canonicalize(&m, &cx(&clock, now)).unwrap_err().code(),
            "special_value"
        );
        let mut m = bp(None);
        m.components[1].value = RawValue::Number(f64::NAN);
        assert_eq!(
            canonicalize(&m, &cx(&clock, now)).unwrap_err().code(),
            "special_value"
        );
        let mut m = bp(None);
        m.components[1].value = RawValue::Number(900.0);
        assert_eq!(
            canonicalize(&m, &cx(&clock, now)).unwrap_err().code(),
            "implausible_value"
        );
        let mut m = bp(None);
        m.components[1].unit = Some("furlongs".into());
        assert_eq!(
            canonicalize(&m, &cx(&clock, now)).unwrap_err().code(),
            "unknown_unit"
        );
        let m = DecodedMeasurement::default();
        assert_eq!(
            canonicalize(&m, &cx(&clock, now)).unwrap_err().code(),
            "empty_measurement"
        );
    }

    /// A relative time beyond what a duration can hold is refused, not a
    /// panic (found by the `canonicalize` fuzz target).
    #[test]
    fn an_enormous_relative_time_is_invalid() {
        let clock = ClockPolicy::default();
        let now = Utc::now();
        let m = DecodedMeasurement {
            time: Some(DeviceTime::RelativeSeconds(i64::MIN / 2)),
            components: vec![crate::decoded::Component {
                metric: Metric::Spo2,
                value: RawValue::Number(97.0),
                unit: Some("%".into()),
            }],
            ..Default::default()
        };
        let err = canonicalize(&m, &cx(&clock, now)).unwrap_err();
        assert_eq!(err.code(), "invalid_timestamp");
    }
}
