//! Vendor JSON payloads, mapped to metrics by field paths.
//!
//! Paths are dotted with array indices (`device.serial`, `readings[0].sys`).
//! When `records` names an array, each element is one measurement and the
//! `time`, `sequence`, `values` and `annotations` paths are relative to the
//! element; `device_id` is always read from the document root.
//!
//! Vendor clouds send one shape for every kind of measurement and say which
//! kind it is in a field (Tenovi's `metric`, Telli's `readingType`): `select`
//! names that field and a value mapping's `when` the kind it applies to, so
//! such a format stays data rather than code. A record of a kind no mapping
//! names is refused (quarantined with the reason), never guessed at.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::Value;
use std::fmt;

use crate::decoded::{Component, DecodedMeasurement, DeviceTime, RawValue, SpecialValue};
use crate::metric::Metric;
use crate::reject::Reject;
use crate::units::UnitName;

/// The `[json]` table of a profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonMapping {
    /// Path to an array of records; absent = the document is one record.
    pub records: Option<FieldPath>,
    /// Path (from the root) of the device id, for `device_id_from = "payload"`.
    pub device_id: Option<FieldPath>,
    /// Path of the measurement time.
    pub time: Option<FieldPath>,
    /// How the time is written.
    #[serde(default)]
    pub time_format: TimeFormat,
    /// Path of the field giving the device's UTC offset in hours (Tenovi's
    /// `timezone_offset`): a `local` time without an offset is placed with it.
    pub time_offset: Option<FieldPath>,
    /// Path of the device's record sequence number.
    pub sequence: Option<FieldPath>,
    /// Path of the field that says which kind of measurement a record is;
    /// value mappings with `when` apply only to records of that kind.
    pub select: Option<FieldPath>,
    /// Values may be written as numeric strings (`"120"`), as some vendor
    /// clouds do.
    #[serde(default)]
    pub numeric_strings: bool,
    /// Values: at least one.
    pub values: Vec<ValueMap>,
    /// Annotations (qualifiers) copied from fields.
    #[serde(default)]
    pub annotations: Vec<AnnotationMap>,
}

/// How a time field is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// RFC 3339 with an offset (`2026-01-31T08:15:00Z`).
    #[default]
    Rfc3339,
    /// Unix seconds (integer or fractional number).
    UnixS,
    /// Unix milliseconds (number).
    UnixMs,
    /// Device-local wall time without an offset (`2026-01-31T08:15:00`).
    Local,
}

/// One value mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawValueMap")]
pub struct ValueMap {
    /// Metric the field measures.
    pub metric: Metric,
    /// Where the value is.
    pub path: FieldPath,
    /// Where the unit comes from.
    pub unit: UnitSource,
    /// A missing field is not an error (the record simply lacks that value).
    pub optional: bool,
    /// Applies only to records whose `select` field has this value.
    pub when: Option<String>,
}

/// Where a value's unit comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum UnitSource {
    /// A unit fixed by the profile.
    Fixed(String),
    /// A field of the payload.
    Path(FieldPath),
    /// None: only valid for metrics whose unit is implied (%, /min, kg/m2).
    Implied,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValueMap {
    metric: Metric,
    path: FieldPath,
    unit: Option<UnitName>,
    unit_path: Option<FieldPath>,
    #[serde(default)]
    optional: bool,
    when: Option<String>,
}

impl TryFrom<RawValueMap> for ValueMap {
    type Error = String;
    fn try_from(r: RawValueMap) -> Result<Self, String> {
        let unit = match (r.unit, r.unit_path) {
            (Some(_), Some(_)) => return Err("give `unit` or `unit_path`, not both".into()),
            (Some(UnitName(u, parsed)), None) => {
                if parsed.convert(1.0, r.metric.canonical_unit()).is_none() {
                    return Err(format!("unit `{u}` cannot measure {}", r.metric));
                }
                UnitSource::Fixed(u)
            }
            (None, Some(p)) => UnitSource::Path(p),
            (None, None) => {
                if crate::units::to_canonical(r.metric, 1.0, None).is_err() {
                    return Err(format!("{} needs `unit` or `unit_path`", r.metric));
                }
                UnitSource::Implied
            }
        };
        Ok(ValueMap {
            metric: r.metric,
            path: r.path,
            unit,
            optional: r.optional,
            when: r.when,
        })
    }
}

/// One annotation mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationMap {
    /// Annotation key (`irregular_pulse`, `meal`, ...).
    pub name: String,
    /// Field to copy.
    pub path: FieldPath,
    /// The field is a flag written as 0/1 (or a boolean): copied as
    /// `true`/`false`, the way other profiles' flags read.
    #[serde(default)]
    pub flag: bool,
}

/// A parsed field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    segments: Vec<Segment>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl FieldPath {
    /// Looks the path up in a JSON value.
    pub fn get<'v>(&self, mut v: &'v Value) -> Option<&'v Value> {
        for s in &self.segments {
            v = match s {
                Segment::Key(k) => v.get(k)?,
                Segment::Index(i) => v.get(i)?,
            };
        }
        Some(v)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for FieldPath {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let mut segments = Vec::new();
        for (i, part) in text.split('.').enumerate() {
            let (key, mut rest) = match part.find('[') {
                Some(at) => (&part[..at], &part[at..]),
                None => (part, ""),
            };
            if key.is_empty() && (i > 0 || rest.is_empty()) {
                return Err(format!("path `{text}` has an empty segment"));
            }
            if !key.is_empty() {
                segments.push(Segment::Key(key.to_string()));
            }
            while !rest.is_empty() {
                let close = rest
                    .find(']')
                    .ok_or_else(|| format!("path `{text}`: `[` without `]`"))?;
                let idx = rest[1..close].parse::<usize>().map_err(|_| {
                    format!("path `{text}`: `{}` is not an array index", &rest[1..close])
                })?;
                segments.push(Segment::Index(idx));
                rest = &rest[close + 1..];
                if !rest.is_empty() && !rest.starts_with('[') {
                    return Err(format!("path `{text}`: unexpected `{rest}`"));
                }
            }
        }
        if segments.is_empty() {
            return Err("path is empty".into());
        }
        Ok(FieldPath { segments, text })
    }
}

impl<'de> Deserialize<'de> for FieldPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        FieldPath::try_from(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Reads a JSON value as a device value: numbers, and the strings devices
/// use for special values. Anything else is a schema error.
pub fn raw_value(v: &Value) -> Result<RawValue, String> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .map(RawValue::Number)
            .ok_or_else(|| format!("number {n} out of range")),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "nan" => Ok(RawValue::Special(SpecialValue::NaN)),
            "inf" | "+inf" | "infinity" | "+infinity" => {
                Ok(RawValue::Special(SpecialValue::PositiveInfinity))
            }
            "-inf" | "-infinity" => Ok(RawValue::Special(SpecialValue::NegativeInfinity)),
            _ => Err(format!("expected a number, found the string {v}")),
        },
        other => Err(format!("expected a number, found {}", kind(other))),
    }
}

/// A JSON value's kind, for messages (never the value itself).
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses a payload as JSON, refusing with `malformed_payload`, or with
/// `ambiguous_payload` when an object names the same key twice (serde_json
/// would silently keep the last one; other parsers keep the first).
pub fn parse_payload(payload: &[u8]) -> Result<Value, Reject> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let parsed = StrictValue::deserialize(&mut de).and_then(|StrictValue(v)| {
        de.end()?;
        Ok(v)
    });
    parsed.map_err(|e| {
        let detail = e.to_string();
        match detail.strip_prefix(DUPLICATE_KEY) {
            // Ambiguous only if it is JSON at all: a document broken further
            // on is malformed, whatever came before the break.
            Some(rest) => match serde_json::from_slice::<serde::de::IgnoredAny>(payload) {
                Ok(_) => Reject::AmbiguousPayload {
                    detail: format!("duplicate key{rest}"),
                },
                Err(e) => Reject::MalformedPayload {
                    detail: e.to_string(),
                },
            },
            None => Reject::MalformedPayload { detail },
        }
    })
}

/// Marks the parse error of a duplicate key (see [`parse_payload`]).
const DUPLICATE_KEY: &str = "\u{0}duplicate key";

/// A JSON value whose objects have unique keys.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictValue(v) = map.next_value()?;
            if out.contains_key(&key) {
                let shown: String = key.chars().take(64).collect();
                return Err(serde::de::Error::custom(format!(
                    "{DUPLICATE_KEY} `{shown}` in an object"
                )));
            }
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// A scalar as annotation text.
fn annotation_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl JsonMapping {
    /// The device id of a payload that parses, whatever its records hold.
    pub fn device_id_of(&self, payload: &[u8]) -> Option<String> {
        let doc = parse_payload(payload).ok()?;
        match self.device_id.as_ref()?.get(&doc)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Decodes one payload into measurements.
    pub fn decode(
        &self,
        profile: &str,
        payload: &[u8],
    ) -> Result<Vec<Result<DecodedMeasurement, Reject>>, Reject> {
        let doc = parse_payload(payload)?;
        let schema = |detail: String| Reject::SchemaMismatch {
            profile: profile.to_string(),
            detail,
        };
        let device_id = match &self.device_id {
            None => None,
            Some(p) => match p.get(&doc) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(other) => {
                    return Err(schema(format!(
                        "`{p}` must be a non-empty string, found {}",
                        kind(other)
                    )))
                }
                None => return Err(schema(format!("`{p}` (device id) is missing"))),
            },
        };
        let records: Vec<&Value> = match &self.records {
            None => vec![&doc],
            Some(p) => match p.get(&doc) {
                Some(Value::Array(items)) => items.iter().collect(),
                Some(other) => {
                    return Err(schema(format!(
                        "`{p}` must be an array, found {}",
                        kind(other)
                    )))
                }
                None => return Err(schema(format!("`{p}` (records) is missing"))),
            },
        };
        Ok(records
            .into_iter()
            .map(|r| {
                let mut m = self.decode_record(r).map_err(schema)?;
                m.device_id = device_id.clone();
                Ok(m)
            })
            .collect())
    }

    fn decode_record(&self, r: &Value) -> Result<DecodedMeasurement, String> {
        let mut m = DecodedMeasurement::default();
        if let Some(p) = &self.time {
            match p.get(r) {
                None | Some(Value::Null) => {}
                Some(v) => {
                    let time =
                        parse_time(v, self.time_format).map_err(|e| format!("`{p}`: {e}"))?;
                    m.time = Some(self.place(time, r)?);
                }
            }
        }
        if let Some(p) = &self.sequence {
            match p.get(r) {
                None | Some(Value::Null) => {}
                Some(v) => {
                    m.sequence = Some(v.as_u64().ok_or_else(|| {
                        format!(
                            "`{p}` (sequence) must be a non-negative integer, found {}",
                            kind(v)
                        )
                    })?)
                }
            }
        }
        let kind_of_record = match &self.select {
            None => None,
            Some(p) => match p.get(r) {
                Some(Value::String(s)) => Some(s.as_str()),
                Some(other) => {
                    return Err(format!("`{p}` must be a string, found {}", kind(other)))
                }
                None => return Err(format!("`{p}` (kind of measurement) is missing")),
            },
        };
        if let (Some(k), Some(p)) = (kind_of_record, &self.select) {
            if !self.values.iter().any(|m| m.when.as_deref() == Some(k)) {
                let shown: String = k.chars().take(64).collect();
                return Err(format!(
                    "`{p}` = `{shown}` is not a kind of measurement this profile reads"
                ));
            }
        }
        for map in &self.values {
            if map.when.is_some() && map.when.as_deref() != kind_of_record {
                continue;
            }
            let Some(v) = map.path.get(r).filter(|v| !v.is_null()) else {
                if map.optional {
                    continue;
                }
                return Err(format!("`{}` ({}) is missing", map.path, map.metric));
            };
            let value = match v {
                Value::String(s) if self.numeric_strings => match s.trim().parse::<f64>() {
                    Ok(n) if n.is_finite() => RawValue::Number(n),
                    _ => raw_value(v).map_err(|e| format!("`{}`: {e}", map.path))?,
                },
                _ => raw_value(v).map_err(|e| format!("`{}`: {e}", map.path))?,
            };
            let unit = match &map.unit {
                UnitSource::Fixed(u) => Some(u.clone()),
                UnitSource::Implied => None,
                UnitSource::Path(p) => match p.get(r) {
                    Some(Value::String(u)) => Some(u.clone()),
                    None | Some(Value::Null) => None,
                    Some(other) => {
                        return Err(format!(
                            "`{p}` (unit) must be a string, found {}",
                            kind(other)
                        ))
                    }
                },
            };
            m.components.push(Component {
                metric: map.metric,
                value,
                unit,
            });
        }
        for a in &self.annotations {
            if let Some(v) = a.path.get(r).filter(|v| !v.is_null()) {
                let text = match (a.flag, v) {
                    (true, Value::Bool(b)) => b.to_string(),
                    (true, Value::Number(n)) if n.as_f64() == Some(0.0) => "false".into(),
                    (true, Value::Number(n)) if n.as_f64() == Some(1.0) => "true".into(),
                    (true, other) => {
                        return Err(format!(
                            "`{}` ({}) must be 0, 1 or a boolean, found {}",
                            a.path,
                            a.name,
                            kind(other)
                        ))
                    }
                    (false, v) => annotation_text(v),
                };
                m.annotations.insert(a.name.clone(), text);
            }
        }
        Ok(m)
    }

    /// Places a device-local time with the record's `time_offset` (hours
    /// east of UTC), when the profile names one and the record has it.
    fn place(&self, time: DeviceTime, r: &Value) -> Result<DeviceTime, String> {
        let (DeviceTime::Local(local), Some(p)) = (&time, &self.time_offset) else {
            return Ok(time);
        };
        let hours = match p.get(r) {
            None | Some(Value::Null) => return Ok(time),
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            Some(other) => {
                return Err(format!(
                    "`{p}` (UTC offset) must be a number of hours, found {}",
                    kind(other)
                ))
            }
        }
        .filter(|h| h.is_finite() && h.abs() <= 14.0)
        .ok_or_else(|| format!("`{p}` (UTC offset) must be hours between -14 and 14"))?;
        let secs = (hours * 3600.0).round() as i32;
        let offset = chrono::FixedOffset::east_opt(secs)
            .ok_or_else(|| format!("`{p}` (UTC offset) out of range"))?;
        offset
            .from_local_datetime(local)
            .single()
            .map(|t| DeviceTime::Utc(t.with_timezone(&Utc)))
            .ok_or_else(|| format!("`{p}`: the local time does not exist at that offset"))
    }
}

/// A number written as a string (`"1767225600000"`), as some vendor clouds
/// send epoch times.
fn numeric_string(s: &str) -> Option<serde_json::Number> {
    let t = s.trim();
    if t.is_empty()
        || !t
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return None;
    }
    t.parse::<i64>()
        .map(serde_json::Number::from)
        .ok()
        .or_else(|| t.parse::<f64>().ok().and_then(serde_json::Number::from_f64))
}

/// Parses a time field.
pub fn parse_time(v: &Value, format: TimeFormat) -> Result<DeviceTime, String> {
    let out_of_range = || "time out of range".to_string();
    // Epoch times sent as strings of digits read as the numbers they are.
    let converted;
    let v = match (format, v) {
        (TimeFormat::UnixS | TimeFormat::UnixMs, Value::String(s)) => match numeric_string(s) {
            Some(n) => {
                converted = Value::Number(n);
                &converted
            }
            None => v,
        },
        _ => v,
    };
    match (format, v) {
        (TimeFormat::Rfc3339, Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| DeviceTime::Utc(t.with_timezone(&Utc)))
            .map_err(|e| format!("not an RFC 3339 time with offset: {e}")),
        // A local time that does state its offset is not ambiguous.
        (TimeFormat::Local, Value::String(s)) if DateTime::parse_from_rfc3339(s).is_ok() => {
            DateTime::parse_from_rfc3339(s)
                .map(|t| DeviceTime::Utc(t.with_timezone(&Utc)))
                .map_err(|e| e.to_string())
        }
        (TimeFormat::Local, Value::String(s)) => {
            NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
                .map(DeviceTime::Local)
                .map_err(|e| format!("not a local time YYYY-MM-DDTHH:MM:SS: {e}"))
        }
        (TimeFormat::UnixS, Value::Number(n)) => {
            let secs = n
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(out_of_range)?;
            let ms = (secs * 1000.0).round();
            if ms.abs() > 1e15 {
                return Err(out_of_range());
            }
            Utc.timestamp_millis_opt(ms as i64)
                .single()
                .map(DeviceTime::Utc)
                .ok_or_else(out_of_range)
        }
        (TimeFormat::UnixMs, Value::Number(n)) => {
            let ms = n.as_i64().ok_or_else(out_of_range)?;
            Utc.timestamp_millis_opt(ms)
                .single()
                .map(DeviceTime::Utc)
                .ok_or_else(out_of_range)
        }
        (_, other) => Err(format!(
            "expected a time as {format:?}, found {}",
            kind(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(toml_text: &str) -> JsonMapping {
        toml::from_str(toml_text).unwrap()
    }

    /// Two values for one key, at any depth: the payload is ambiguous;
    /// everything else parses exactly as serde_json parses it.
    #[test]
    fn duplicate_keys_are_ambiguous() {
        for text in [
            r#"{"v": 70, "v": 71}"#,
            r#"{"readings": [{"sys": 120, "dia": 80, "sys": 180}]}"#,
        ] {
            let err = parse_payload(text.as_bytes()).unwrap_err();
            assert_eq!(err.code(), "ambiguous_payload", "{text}");
        }
        let err = parse_payload(br#"{"v": 70"#).unwrap_err();
        assert_eq!(err.code(), "malformed_payload");
        let err = parse_payload(br#"{"v": 70} x"#).unwrap_err();
        assert_eq!(err.code(), "malformed_payload");
        // A duplicate key before a syntax error: malformed, not ambiguous.
        let err = parse_payload(br#"{"v": 70, "v": 71, x}"#).unwrap_err();
        assert_eq!(err.code(), "malformed_payload");
        let text =
            r#"{"a": [1, -2, 3.5, 1e300, "s", null, true, {"b": {}}], "c": 18446744073709551615}"#;
        let plain: Value = serde_json::from_str(text).unwrap();
        assert_eq!(parse_payload(text.as_bytes()).unwrap(), plain);
    }

    #[test]
    fn paths() {
        let p = FieldPath::try_from("a.b[1].c".to_string()).unwrap();
        let v: Value = serde_json::json!({"a": {"b": [0, {"c": 7}]}});
        assert_eq!(p.get(&v), Some(&Value::from(7)));
        assert!(FieldPath::try_from("a..b".to_string()).is_err());
        assert!(FieldPath::try_from("a[x]".to_string()).is_err());
        assert!(FieldPath::try_from("a[1".to_string()).is_err());
    }

    #[test]
    fn records_and_units() {
        let m = mapping(
            r#"
            records = "readings"
            time = "ts"
            time_format = "unix_s"
            [[values]]
            metric = "body_weight"
            path = "w"
            unit_path = "u"
            "#,
        );
        let out = m
            .decode("p", br#"{"readings":[{"ts":1767225600,"w":176.4,"u":"lb"},{"ts":1767312000,"w":"NaN","u":"lb"},{"w":80}]}"#)
            .unwrap();
        assert_eq!(out.len(), 3);
        let first = out[0].as_ref().unwrap();
        assert_eq!(first.components[0].unit.as_deref(), Some("lb"));
        assert!(matches!(first.time, Some(DeviceTime::Utc(_))));
        assert_eq!(
            out[1].as_ref().unwrap().components[0].value,
            RawValue::Special(SpecialValue::NaN)
        );
        assert_eq!(out[2].as_ref().unwrap().components[0].unit, None);
    }

    #[test]
    fn schema_errors() {
        let m = mapping("[[values]]\nmetric = \"spo2\"\npath = \"s\"\n");
        assert_eq!(
            m.decode("p", b"{\"s\": true}").unwrap()[0]
                .as_ref()
                .unwrap_err()
                .code(),
            "schema_mismatch"
        );
        assert_eq!(
            m.decode("p", b"{}").unwrap()[0]
                .as_ref()
                .unwrap_err()
                .code(),
            "schema_mismatch"
        );
        assert_eq!(m.decode("p", b"{").unwrap_err().code(), "malformed_payload");
    }

    #[test]
    fn value_map_validation() {
        let e =
            toml::from_str::<JsonMapping>("[[values]]\nmetric = \"body_weight\"\npath = \"w\"\n")
                .unwrap_err();
        assert!(e.to_string().contains("needs `unit`"), "{e}");
        let e = toml::from_str::<JsonMapping>(
            "[[values]]\nmetric = \"systolic\"\npath = \"s\"\nunit = \"kg\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot measure"), "{e}");
    }
}
