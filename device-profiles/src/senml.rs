//! SenML JSON (RFC 8428) payloads.
//!
//! Base fields (`bn`, `bt`, `bu`, `bv`) carry over to later records until
//! replaced (§4.1). A record's time is `bt + t`; a result below 2^28 is
//! relative to the time of receipt (§4.5.3). Records that resolve to the
//! same device and time form one measurement, so that a blood-pressure
//! pack becomes one panel.

use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

use crate::decoded::{Component, DecodedMeasurement, DeviceTime, RawValue};
use crate::json::{kind, parse_payload, raw_value};
use crate::metric::Metric;
use crate::reject::Reject;

/// Times below this are relative to now (RFC 8428 §4.5.3).
const RELATIVE_LIMIT: f64 = 268_435_456.0;

/// The optional `[senml]` table of a profile.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SenmlMapping {
    /// Record name → metric. A name not listed here that is itself a metric
    /// name (`systolic`, `body_weight`, ...) maps to that metric.
    #[serde(default)]
    pub names: BTreeMap<String, Metric>,
    /// Record name → annotation key, for string and boolean records.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Prefix removed from the base name to give the device id
    /// (e.g. `urn:dev:mac:`).
    #[serde(default)]
    pub device_id_prefix: Option<String>,
    /// Record name that carries the device's sequence number.
    #[serde(default)]
    pub sequence_name: Option<String>,
}

#[derive(Default, Clone)]
struct Base {
    name: String,
    time: f64,
    unit: Option<String>,
    value: f64,
}

struct Group {
    result: Result<DecodedMeasurement, Reject>,
}

impl SenmlMapping {
    fn metric_for(&self, name: &str) -> Option<Metric> {
        self.names.get(name).copied().or_else(|| name.parse().ok())
    }

    fn device_from_base(&self, base_name: &str) -> Option<String> {
        let id = match &self.device_id_prefix {
            Some(p) => base_name.strip_prefix(p.as_str()).unwrap_or(base_name),
            None => base_name,
        };
        let id = id.trim_end_matches([':', '/', '.']);
        (!id.is_empty()).then(|| id.to_string())
    }

    /// Decodes one SenML pack.
    pub fn decode(
        &self,
        profile: &str,
        payload: &[u8],
    ) -> Result<Vec<Result<DecodedMeasurement, Reject>>, Reject> {
        let schema = |detail: String| Reject::SchemaMismatch {
            profile: profile.to_string(),
            detail,
        };
        let doc = parse_payload(payload)?;
        let Value::Array(records) = doc else {
            return Err(schema(format!(
                "a SenML pack is an array, found {}",
                kind(&doc)
            )));
        };
        if records.is_empty() {
            return Err(Reject::Empty);
        }
        let mut base = Base::default();
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<(Option<String>, Option<u64>), usize> = HashMap::new();
        for (i, rec) in records.iter().enumerate() {
            let Value::Object(obj) = rec else {
                return Err(schema(format!(
                    "record {i} is {}, not an object",
                    kind(rec)
                )));
            };
            let num = |key: &str| -> Result<Option<f64>, Reject> {
                match obj.get(key) {
                    None => Ok(None),
                    Some(Value::Number(n)) => Ok(n.as_f64()),
                    Some(other) => Err(schema(format!(
                        "record {i}: `{key}` must be a number, found {}",
                        kind(other)
                    ))),
                }
            };
            let text = |key: &str| -> Result<Option<String>, Reject> {
                match obj.get(key) {
                    None => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(other) => Err(schema(format!(
                        "record {i}: `{key}` must be a string, found {}",
                        kind(other)
                    ))),
                }
            };
            if let Some(bn) = text("bn")? {
                base.name = bn;
            }
            if let Some(bt) = num("bt")? {
                base.time = bt;
            }
            if let Some(bu) = text("bu")? {
                base.unit = Some(bu);
            }
            if let Some(bv) = num("bv")? {
                base.value = bv;
            }
            let name = text("n")?.unwrap_or_default();
            let t = num("t")?;
            let has_time = t.is_some() || base.time != 0.0;
            let time = has_time.then(|| base.time + t.unwrap_or(0.0));
            let device = self.device_from_base(&base.name);

            // An index, not a scan: a pack of thousands of records with
            // distinct times would otherwise cost time quadratic in its size.
            let key = (device.clone(), time.map(|t| (t + 0.0).to_bits()));
            let group = match index.get(&key) {
                Some(&at) => &mut groups[at],
                None => {
                    let measurement = DecodedMeasurement {
                        device_id: device.clone(),
                        time: time.map(resolve_time).transpose().map_err(schema)?,
                        ..Default::default()
                    };
                    groups.push(Group {
                        result: Ok(measurement),
                    });
                    let last = groups.len() - 1;
                    index.insert(key, last);
                    &mut groups[last]
                }
            };
            let Ok(m) = &mut group.result else { continue };

            if self.sequence_name.as_deref() == Some(name.as_str()) {
                match num("v")? {
                    Some(v) if v >= 0.0 && v.fract() == 0.0 && v < 9.0e15 => {
                        m.sequence = Some(v as u64)
                    }
                    _ => {
                        group.result = Err(schema(format!(
                            "record {i}: sequence must be a non-negative integer"
                        )))
                    }
                }
                continue;
            }
            if let Some(key) = self.annotations.get(&name) {
                let v = obj
                    .get("vs")
                    .or_else(|| obj.get("vb"))
                    .or_else(|| obj.get("v"));
                if let Some(v) = v {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    m.annotations.insert(key.clone(), text);
                }
                continue;
            }
            let Some(metric) = self.metric_for(&name) else {
                group.result = Err(Reject::UnmappedField {
                    profile: profile.to_string(),
                    name: name.clone(),
                });
                continue;
            };
            let value = match obj.get("v") {
                Some(v) => match raw_value(v) {
                    Ok(RawValue::Number(x)) if (x + base.value).is_finite() => {
                        RawValue::Number(x + base.value)
                    }
                    // Both finite (JSON has no infinities), their sum not:
                    // not a special value the device sent.
                    Ok(RawValue::Number(_)) => {
                        group.result = Err(Reject::NumericOverflow {
                            metric,
                            detail: format!(
                                "record {i}: base value `bv` plus value `v` is not a finite number"
                            ),
                        });
                        continue;
                    }
                    Ok(special) => special,
                    Err(e) => {
                        group.result = Err(schema(format!("record {i} ({name}): {e}")));
                        continue;
                    }
                },
                None => {
                    group.result = Err(schema(format!(
                        "record {i} ({name}) has no numeric value `v`"
                    )));
                    continue;
                }
            };
            let unit = text("u")?.or_else(|| base.unit.clone());
            m.components.push(Component {
                metric,
                value,
                unit,
            });
        }
        Ok(groups.into_iter().map(|g| g.result).collect())
    }
}

fn resolve_time(t: f64) -> Result<DeviceTime, String> {
    if !t.is_finite() || t.abs() > 1.0e13 {
        return Err("time out of range".into());
    }
    if t < RELATIVE_LIMIT {
        return Ok(DeviceTime::RelativeSeconds(t.round() as i64));
    }
    let ms = (t * 1000.0).round() as i64;
    chrono::DateTime::from_timestamp_millis(ms)
        .map(DeviceTime::Utc)
        .ok_or_else(|| "time out of range".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bp_pack_is_one_measurement() {
        let m = SenmlMapping {
            device_id_prefix: Some("urn:dev:mac:".into()),
            ..Default::default()
        };
        let pack = br#"[{"bn":"urn:dev:mac:0024befffe804ff1:","bt":1.767225600e9,"bu":"mmHg","n":"systolic","v":128},
                        {"n":"diastolic","v":82},{"n":"pulse_rate","u":"/min","v":71},
                        {"n":"body_weight","u":"kg","v":80.2,"t":60}]"#;
        let out = m.decode("senml", pack).unwrap();
        assert_eq!(out.len(), 2);
        let bp = out[0].as_ref().unwrap();
        assert_eq!(bp.device_id.as_deref(), Some("0024befffe804ff1"));
        assert_eq!(bp.components.len(), 3);
        assert_eq!(bp.components[0].unit.as_deref(), Some("mmHg"));
        assert_eq!(bp.components[2].unit.as_deref(), Some("/min"));
        assert!(matches!(bp.time, Some(DeviceTime::Utc(t)) if t.timestamp() == 1_767_225_600));
    }

    #[test]
    fn relative_and_missing_times() {
        let m = SenmlMapping::default();
        let out = m.decode("s", br#"[{"n":"spo2","v":97,"t":-30}]"#).unwrap();
        assert_eq!(
            out[0].as_ref().unwrap().time,
            Some(DeviceTime::RelativeSeconds(-30))
        );
        let out = m.decode("s", br#"[{"n":"spo2","v":97}]"#).unwrap();
        assert_eq!(out[0].as_ref().unwrap().time, None);
    }

    #[test]
    fn refusals() {
        let m = SenmlMapping::default();
        assert_eq!(m.decode("s", b"{}").unwrap_err().code(), "schema_mismatch");
        assert_eq!(
            m.decode("s", b"[]").unwrap_err().code(),
            "empty_measurement"
        );
        assert_eq!(m.decode("s", b"[1]").unwrap_err().code(), "schema_mismatch");
        let out = m.decode("s", br#"[{"n":"mood","v":3}]"#).unwrap();
        assert_eq!(out[0].as_ref().unwrap_err().code(), "unmapped_field");
        let out = m.decode("s", br#"[{"n":"spo2","v":"high"}]"#).unwrap();
        assert_eq!(out[0].as_ref().unwrap_err().code(), "schema_mismatch");
    }

    /// Finite `bv` and `v` whose sum is not finite: the true reason, not
    /// `special_value` (the device sent no special value).
    #[test]
    fn base_value_overflow_is_not_a_special_value() {
        let m = SenmlMapping::default();
        let out = m
            .decode("s", br#"[{"bv":1.5e308,"n":"spo2","v":1.5e308}]"#)
            .unwrap();
        assert_eq!(out[0].as_ref().unwrap_err().code(), "numeric_overflow");
        let out = m
            .decode("s", br#"[{"bv":-1.5e308,"n":"spo2","v":-1.5e308}]"#)
            .unwrap();
        assert_eq!(out[0].as_ref().unwrap_err().code(), "numeric_overflow");
    }

    /// A record naming a key twice says two things: ambiguous.
    #[test]
    fn duplicate_keys_are_ambiguous() {
        let m = SenmlMapping::default();
        let err = m
            .decode("s", br#"[{"n":"spo2","v":97,"v":71}]"#)
            .unwrap_err();
        assert_eq!(err.code(), "ambiguous_payload");
        assert!(err.to_string().contains("`v`"), "{err}");
    }

    /// Thousands of records with distinct times decode in linear time.
    #[test]
    fn a_large_pack_decodes_quickly() {
        let m = SenmlMapping::default();
        let recs: Vec<String> = (0..20_000)
            .map(|i| format!(r#"{{"n":"spo2","v":97,"t":{}}}"#, 1_767_225_600 + i))
            .collect();
        let pack = format!("[{}]", recs.join(","));
        let started = std::time::Instant::now();
        let out = m.decode("s", pack.as_bytes()).unwrap();
        assert_eq!(out.len(), 20_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }
}
