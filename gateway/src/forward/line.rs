//! InfluxDB line protocol for stored readings.
//!
//! The schema (documented in docs/influxdb.md):
//!
//! ```text
//! rpm_<family>,device_id=…,metric=…,patient_id=…,source=…,unit=… value=<float>[,<annotation>="…"] <measured_at ns>
//! ```
//!
//! * one measurement per metric family (`rpm_blood_pressure`, `rpm_oximetry`,
//!   ...), the metric itself a tag, so a BP panel's components share a
//!   timestamp without overwriting each other;
//! * `value` is always a float field and annotations are always string
//!   fields: a field's type never changes within a measurement, which real
//!   InfluxDB enforces by rejecting the whole write;
//! * the timestamp is the corrected measured-at in nanoseconds.
//!
//! A point's identity is (measurement, tag set, timestamp): writing the same
//! reading again overwrites it with identical values. That is what makes
//! re-sending a batch after a crash or a lost response harmless.

use std::fmt::Write as _;

use crate::store::queries::PointRef;

/// Why a reading cannot be written as line protocol (it is quarantined).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// Line protocol has no escape for line breaks in keys, tags or fields.
    #[error("`{0}` contains a line break, which line protocol cannot carry")]
    LineBreak(&'static str),
    /// Line protocol has no escape for a backslash in a tag value: InfluxDB
    /// keeps backslashes as they are, so one at the end of the value or
    /// before a comma, equals sign or space would swallow the separator.
    #[error("`{0}` has a backslash at its end or before a comma, equals sign or space, which a line protocol tag cannot carry")]
    TagBackslash(&'static str),
    /// NaN and infinities are not line protocol numbers.
    #[error("the value is not a finite number")]
    NotFinite,
    /// Outside the nanosecond range of a signed 64-bit timestamp (1677–2262).
    #[error("the timestamp is outside the range of nanosecond timestamps")]
    TimeRange,
}

/// The measurement (metric family) a metric is written to.
pub fn measurement(metric: &str) -> &'static str {
    match metric {
        "systolic" | "diastolic" | "mean_arterial_pressure" | "pulse_rate" => "rpm_blood_pressure",
        "spo2" | "oximetry_pulse_rate" => "rpm_oximetry",
        "body_weight" | "body_height" | "bmi" | "body_fat" => "rpm_body_composition",
        "blood_glucose" => "rpm_glucose",
        "body_temperature" => "rpm_temperature",
        "heart_rate" | "respiratory_rate" => "rpm_vitals",
        // Questionnaire scores and answers (unit `{score}`).
        m if m
            .parse::<device_profiles::Metric>()
            .is_ok_and(|m| m.is_reported()) =>
        {
            "rpm_patient_reported"
        }
        _ => "rpm_other",
    }
}

/// The field key of an annotation: its name with anything but ASCII letters,
/// digits, `_`, `-` and `.` replaced by `_`, prefixed with `annotation_` when
/// it would collide with `value` or start with InfluxDB's reserved `_`.
pub fn annotation_key(name: &str) -> String {
    let key: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if key == "value" || key.starts_with('_') || key.is_empty() {
        format!("annotation_{key}")
    } else {
        key
    }
}

/// Appends the reading as one line (with a trailing `\n`) to `out`. On
/// error `out` is left as it was.
pub fn encode(r: &PointRef<'_>, out: &mut String) -> Result<(), EncodeError> {
    if !r.value.is_finite() {
        return Err(EncodeError::NotFinite);
    }
    let ts = r
        .measured_at
        .checked_mul(1_000_000)
        .ok_or(EncodeError::TimeRange)?;
    let start = out.len();
    let result = write_line(r, ts, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn write_line(r: &PointRef<'_>, ts: i64, out: &mut String) -> Result<(), EncodeError> {
    escape(measurement(r.metric), Kind::Measurement, out);
    // Tags sorted by key, as InfluxDB prefers; an empty tag is left out
    // (line protocol has no empty tag values; absent means empty).
    for (key, value) in [
        ("device_id", r.device_id),
        ("metric", r.metric),
        ("patient_id", r.patient_id),
        ("source", r.source),
        ("unit", r.unit),
    ] {
        if value.is_empty() {
            continue;
        }
        out.push(',');
        out.push_str(key);
        out.push('=');
        push_tag(value, key, out)?;
    }
    out.push_str(" value=");
    push_float(r.value, out);
    // Most readings have none: `{}` is not parsed.
    if r.annotations != "{}" {
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r.annotations).unwrap_or_default();
        for (name, v) in &map {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            check(&text, "annotation")?;
            out.push(',');
            escape(&annotation_key(name), Kind::Key, out);
            out.push_str("=\"");
            escape(&text, Kind::StringField, out);
            out.push('"');
        }
    }
    out.push(' ');
    out.push_str(itoa::Buffer::new().format(ts));
    out.push('\n');
    Ok(())
}

/// Appends a finite `v` as `Display` writes it: the shortest digits that
/// read back as `v`, never an exponent, no `.0` (without an `i` suffix
/// line protocol reads it as a float). Ryu finds the same shortest digits
/// several times faster (where the exact value lies halfway between two
/// shortest texts, ryu's last digit is even and `Display`'s rounded up:
/// both read back as `v`); its rare exponent form (below 1e-5, from 1e16)
/// is left to `Display`.
///
/// Whole numbers (most readings: 120 mm[Hg], 72 /min, 98 %) are written as
/// integers, which is the same text: the shortest-digits search took about
/// a tenth of the forwarder's time through a backlog. Up to 1e15 every whole
/// double is an exact `i64`; `-0` keeps its sign through the float path.
fn push_float(v: f64, out: &mut String) {
    if v.fract() == 0.0 && v.abs() < 1e15 && !(v == 0.0 && v.is_sign_negative()) {
        out.push_str(itoa::Buffer::new().format(v as i64));
        return;
    }
    let mut buf = ryu::Buffer::new();
    let text = buf.format_finite(v);
    if text.contains('e') {
        let _ = write!(out, "{v}");
    } else {
        out.push_str(text.strip_suffix(".0").unwrap_or(text));
    }
}

/// Appends a tag value: most have none of the characters a tag value
/// needs looked at (line breaks, backslashes, separators) and are copied
/// in one pass; the rest are checked and escaped.
fn push_tag(value: &str, key: &'static str, out: &mut String) -> Result<(), EncodeError> {
    if !value
        .bytes()
        .any(|b| matches!(b, b'\n' | b'\r' | b'\\' | b',' | b'=' | b' '))
    {
        out.push_str(value);
        return Ok(());
    }
    check(value, key)?;
    check_tag(value, key)?;
    escape(value, Kind::Key, out);
    Ok(())
}

fn check(s: &str, what: &'static str) -> Result<(), EncodeError> {
    if s.bytes().any(|b| b == b'\n' || b == b'\r') {
        Err(EncodeError::LineBreak(what))
    } else {
        Ok(())
    }
}

/// A tag value's backslashes are written as they are (InfluxDB's parser
/// unescapes only `\,`, `\=` and `\ ` in tags): refuses the values whose
/// backslash would then escape the character after it.
fn check_tag(s: &str, what: &'static str) -> Result<(), EncodeError> {
    let bytes = s.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\\' && matches!(bytes.get(i + 1), None | Some(b',' | b'=' | b' ')) {
            return Err(EncodeError::TagBackslash(what));
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    /// Commas and spaces.
    Measurement,
    /// Tag keys, tag values, field keys: commas, equals signs, spaces
    /// (never backslashes: InfluxDB does not unescape them there).
    Key,
    /// String field values: double quotes and backslashes.
    StringField,
}

/// Escapes `s` for its place in a line, as InfluxDB's line protocol
/// reference says: backslashes are doubled in string field values only (a
/// tag value that a backslash would break is refused by [`check_tag`]; the
/// measurement and field keys are the gateway's own, without backslashes).
fn escape(s: &str, kind: Kind, out: &mut String) {
    // Every special character is ASCII: most values have none and are
    // copied whole.
    let special = |c: u8| match kind {
        Kind::Measurement => matches!(c, b',' | b' '),
        Kind::Key => matches!(c, b',' | b'=' | b' '),
        Kind::StringField => matches!(c, b'"' | b'\\'),
    };
    let mut rest = s;
    while let Some(i) = rest.bytes().position(special) {
        out.push_str(&rest[..i]);
        out.push('\\');
        out.push_str(&rest[i..i + 1]);
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::queries::StoredReading;
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    /// [`encode`] of an owned reading, through its borrowed point.
    fn encode_stored(r: &StoredReading, out: &mut String) -> Result<(), EncodeError> {
        let annotations = r.annotations.to_string();
        let point = PointRef {
            seq: r.seq,
            patient_id: &r.patient_id,
            device_id: &r.device_id,
            metric: &r.metric,
            value: r.value,
            unit: &r.unit,
            measured_at: r.measured_at.timestamp_millis(),
            source: &r.source,
            annotations: &annotations,
        };
        encode(&point, out)
    }

    pub fn reading(device: &str, patient: &str, value: f64) -> StoredReading {
        StoredReading {
            seq: 1,
            reading_id: "r1".into(),
            group_id: "g1".into(),
            patient_id: patient.into(),
            device_id: device.into(),
            metric: "systolic".into(),
            value,
            unit: "mm[Hg]".into(),
            loinc: "8480-6".into(),
            device_measured_at: None,
            measured_at: Utc.timestamp_millis_opt(1_769_845_330_123).unwrap(),
            received_at: Utc.timestamp_millis_opt(1_769_845_331_000).unwrap(),
            source: "mqtt".into(),
            sequence: None,
            annotations: serde_json::json!({}),
            panel: None,
            content_digest: None,
        }
    }

    #[test]
    fn schema() {
        let mut r = reading("cuff 1", "p,1", 120.0);
        r.annotations = serde_json::json!({"ihb": "true", "value": "x", "note": "say \"hi\""});
        let mut out = String::new();
        encode_stored(&r, &mut out).unwrap();
        assert_eq!(
            out,
            "rpm_blood_pressure,device_id=cuff\\ 1,metric=systolic,patient_id=p\\,1,source=mqtt,unit=mm[Hg] \
             value=120,ihb=\"true\",note=\"say \\\"hi\\\"\",annotation_value=\"x\" 1769845330123000000\n"
        );
    }

    #[test]
    fn questionnaire_scores_have_a_measurement_of_their_own() {
        assert_eq!(measurement("phq9_total"), "rpm_patient_reported");
        assert_eq!(measurement("hf_symptom_zone"), "rpm_patient_reported");
        assert_eq!(measurement("spo2"), "rpm_oximetry");
        assert_eq!(measurement("something_else"), "rpm_other");
    }

    #[test]
    fn unencodable_readings_are_errors_and_leave_the_buffer() {
        let mut out = String::from("before\n");
        assert_eq!(
            encode_stored(&reading("d\n", "p", 1.0), &mut out),
            Err(EncodeError::LineBreak("device_id"))
        );
        assert_eq!(
            encode_stored(&reading("d", "p", f64::NAN), &mut out),
            Err(EncodeError::NotFinite)
        );
        assert_eq!(out, "before\n");
    }

    /// Stored annotations that are not a JSON object add no fields.
    #[test]
    fn annotations_that_are_not_an_object_add_no_fields() {
        let r = reading("d", "p", 1.0);
        let mut borrowed_out = String::new();
        encode_stored(&r, &mut borrowed_out).unwrap();
        for text in ["[]", "null", "not json"] {
            let mut out = String::new();
            let ann = text.to_string();
            let mut v = PointRef {
                seq: 1,
                patient_id: "p",
                device_id: "d",
                metric: "systolic",
                value: 1.0,
                unit: "mm[Hg]",
                measured_at: 1_769_845_330_123,
                source: "mqtt",
                annotations: &ann,
            };
            encode(&v, &mut out).unwrap();
            assert_eq!(out, borrowed_out, "{text}");
            v.measured_at = i64::MAX / 1000;
            assert_eq!(encode(&v, &mut out), Err(EncodeError::TimeRange));
        }
    }

    /// Splits `s` at unescaped `sep`s (outside double quotes when `quotes`).
    fn split(s: &str, sep: char, quotes: bool) -> Vec<String> {
        let mut parts = vec![String::new()];
        let mut chars = s.chars();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            if c == '\\' {
                let last = parts.last_mut().unwrap();
                last.push(c);
                if let Some(n) = chars.next() {
                    last.push(n);
                }
            } else if quotes && c == '"' {
                quoted = !quoted;
                parts.last_mut().unwrap().push(c);
            } else if c == sep && !quoted {
                parts.push(String::new());
            } else {
                parts.last_mut().unwrap().push(c);
            }
        }
        parts
    }

    /// InfluxDB's unescaping: in tags and keys only `\,`, `\=` and `\ `
    /// lose their backslash; in string fields `\"` and `\\`.
    fn unescape(s: &str, specials: &[char]) -> String {
        let mut out = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match chars.peek() {
                Some(&n) if c == '\\' && specials.contains(&n) => {
                    out.push(n);
                    chars.next();
                }
                _ => out.push(c),
            }
        }
        out
    }

    const TAG: &[char] = &[',', '=', ' '];
    const STRING: &[char] = &['"', '\\'];

    #[test]
    fn tag_backslashes_are_kept_as_influxdb_reads_them() {
        let mut out = String::new();
        encode_stored(&reading("cuff\\1", "p\\\\2", 1.0), &mut out).unwrap();
        assert!(
            out.contains("device_id=cuff\\1,") && out.contains("patient_id=p\\\\2,"),
            "{out}"
        );
        for bad in ["p\\", "p\\,1", "p\\ 1", "p\\=1"] {
            assert_eq!(
                encode_stored(&reading("d", bad, 1.0), &mut out),
                Err(EncodeError::TagBackslash("patient_id")),
                "{bad}"
            );
        }
    }

    fn any_text() -> impl Strategy<Value = String> {
        // Printable text heavy in the characters line protocol treats specially.
        proptest::string::string_regex("[a-z0-9 ,=\"\\\\_é\\[\\]{}]{1,12}").unwrap()
    }

    proptest! {
        /// A value is written as `Display` writes it, whatever its size
        /// (any bit pattern of a finite double, and readings' sizes): as
        /// many digits, reading back as the same double, and the same text
        /// but where the exact value is a tie between two last digits.
        #[test]
        fn values_are_written_as_display_writes_them(bits in any::<u64>(), small in -1e4f64..1e4) {
            for v in [f64::from_bits(bits), small, small / 7.0, small * 1e-9, small * 1e15, small.round(), small.round() * 1e11, -0.0, 0.0] {
                if v.is_finite() {
                    let mut out = String::new();
                    push_float(v, &mut out);
                    let display = v.to_string();
                    prop_assert_eq!(out.parse::<f64>().ok(), Some(v));
                    prop_assert_eq!(out.len(), display.len());
                    prop_assert_eq!(&out[..out.len() - 1], &display[..display.len() - 1]);
                }
            }
        }

        /// Whatever the ids and annotations hold, the line splits back into
        /// exactly the tags and fields that went in (a reference parser
        /// following the line protocol escaping rules).
        #[test]
        fn escaping_round_trips(device in any_text(), patient in any_text(), name in any_text(), note in any_text(), value in -1e9f64..1e9) {
            let mut r = reading(&device, &patient, value);
            r.annotations = serde_json::json!({ name.clone(): note.clone() });
            let mut line = String::new();
            let tag_backslash = |t: &str| t.contains("\\,") || t.contains("\\=") || t.contains("\\ ") || t.ends_with('\\');
            if tag_backslash(&device) || tag_backslash(&patient) {
                prop_assert!(matches!(encode_stored(&r, &mut line), Err(EncodeError::TagBackslash(_))));
                return Ok(());
            }
            encode_stored(&r, &mut line).unwrap();
            let line = line.strip_suffix('\n').unwrap();
            prop_assert!(!line.contains('\n'));
            // Quotes are literal in the series section, string delimiters
            // in the field section.
            let series_end = split(line, ' ', false)[0].len();
            let mut sections = vec![line[..series_end].to_string()];
            sections.extend(split(&line[series_end + 1..], ' ', true));
            prop_assert_eq!(sections.len(), 3, "{}", line);
            let series = split(&sections[0], ',', false);
            prop_assert_eq!(&series[0], "rpm_blood_pressure");
            let tags: Vec<(String, String)> = series[1..].iter().map(|t| {
                let kv = split(t, '=', false);
                assert_eq!(kv.len(), 2, "{t}");
                (unescape(&kv[0], TAG), unescape(&kv[1], TAG))
            }).collect();
            prop_assert_eq!(&tags[0], &("device_id".to_string(), device));
            prop_assert_eq!(&tags[2], &("patient_id".to_string(), patient));
            let fields = split(&sections[1], ',', true);
            prop_assert_eq!(fields.len(), 2);
            let v = split(&fields[0], '=', true);
            prop_assert_eq!(v[1].parse::<f64>().unwrap(), value);
            let a = split(&fields[1], '=', true);
            prop_assert_eq!(a.len(), 2, "{}", &fields[1]);
            prop_assert_eq!(unescape(&a[0], TAG), annotation_key(&name));
            let quoted = a[1].strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap();
            prop_assert_eq!(unescape(quoted, STRING), note);
            prop_assert_eq!(&sections[2], "1769845330123000000");
        }
    }
}
