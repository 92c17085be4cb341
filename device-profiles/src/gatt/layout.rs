//! Declarative vendor byte layouts: proprietary characteristics and
//! advertisement service data described in TOML, so that supporting a new
//! broadcast-only scale is a reviewed data file, not new decoder code.
//!
//! ```toml
//! name = "xiaomi-scale-v1"
//! length = 10                      # exact length of the value
//!
//! [[require]]                      # every one must hold, else ConditionNotMet
//! name = "stabilized"
//! offset = 0
//! mask = 0x20
//! value = 0x20
//!
//! [[field]]
//! name = "weight_kg"
//! offset = 1
//! type = "u16"                     # u8 u16 u24 u32 i8 i16 i32 sfloat float
//! endian = "little"                # default little
//! scale = 0.005                    # multiplier, applied as an exact decimal
//! unit = "kg"                      # any spelling units.rs knows
//! metric = "body_weight"           # or: annotation = "impedance_ohm"
//! when = { offset = 0, mask = 0x01, value = 0x00 }   # optional
//!
//! [timestamp]                      # optional
//! offset = 3
//! format = "date_time"             # Date Time 0x2A08 (device-local), or "unix_seconds" (u32 LE, UTC)
//! ```
//!
//! Parsing is strict (`deny_unknown_fields`: a misspelt key is an error, not
//! a silently ignored line) and validation reports every problem at once
//! (style.md §3): offsets inside the declared length, known metric, known
//! unit that can measure that metric, finite non-zero scale.
//!
//! The scale is applied as a decimal: `0.005` is read back from its shortest
//! decimal form as `5 × 10^-3` and multiplied with the raw integer exactly,
//! so 17310 × 0.005 is exactly the `f64` nearest 86.55, not 86.55000000000001.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use super::datetime::DateTime;
use super::error::{Characteristic, Fault, GattError, GattErrorKind};
use super::ieee11073::{decimal_to_f64, Float, Ieee11073Value, Sfloat};
use super::reader::Reader;
use crate::decoded::{Component, DecodedMeasurement, DeviceTime, RawValue, SpecialValue};
use crate::metric::Metric;
use crate::units::Unit;

/// Largest value a layout may describe (a GATT attribute value is at most
/// 512 bytes).
pub const MAX_LENGTH: usize = 512;

/// The integer or IEEE 11073 type of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// unsigned 8-bit
    U8,
    /// unsigned 16-bit
    U16,
    /// unsigned 24-bit
    U24,
    /// unsigned 32-bit
    U32,
    /// signed 8-bit
    I8,
    /// signed 16-bit
    I16,
    /// signed 32-bit
    I32,
    /// IEEE 11073 SFLOAT (special values stay special)
    Sfloat,
    /// IEEE 11073 FLOAT (special values stay special)
    Float,
}

impl FieldType {
    /// Width in bytes.
    pub const fn width(self) -> usize {
        match self {
            FieldType::U8 | FieldType::I8 => 1,
            FieldType::U16 | FieldType::I16 | FieldType::Sfloat => 2,
            FieldType::U24 => 3,
            FieldType::U32 | FieldType::I32 | FieldType::Float => 4,
        }
    }

    const fn is_integer(self) -> bool {
        !matches!(self, FieldType::Sfloat | FieldType::Float)
    }
}

/// Byte order of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endian {
    /// Least significant byte first (GATT's order).
    #[default]
    Little,
    /// Most significant byte first.
    Big,
}

/// A bit test on one byte: `bytes[offset] & mask == value`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Name used in errors ("stabilized", "weight not removed").
    #[serde(default)]
    pub name: Option<String>,
    /// Byte offset.
    pub offset: usize,
    /// Bits to test.
    pub mask: u8,
    /// Required value of those bits.
    pub value: u8,
}

impl Condition {
    fn holds(&self, bytes: &[u8]) -> bool {
        bytes
            .get(self.offset)
            .is_some_and(|b| b & self.mask == self.value)
    }

    fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            format!(
                "byte {} & {:#04x} == {:#04x}",
                self.offset, self.mask, self.value
            )
        })
    }
}

/// One field as written in the TOML file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Name (unique in the layout).
    pub name: String,
    /// Byte offset.
    pub offset: usize,
    /// Type.
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// Byte order.
    #[serde(default)]
    pub endian: Endian,
    /// Multiplier from raw to `unit` (default 1).
    #[serde(default)]
    pub scale: Option<f64>,
    /// Unit of the scaled value (required with `metric`).
    #[serde(default)]
    pub unit: Option<String>,
    /// Metric the value is a component of.
    #[serde(default)]
    pub metric: Option<String>,
    /// Or: annotation key the value is stored under.
    #[serde(default)]
    pub annotation: Option<String>,
    /// Raw integer that means "no value" (e.g. 0xFFFF): becomes a special
    /// value (NaN), which the canonicaliser quarantines.
    #[serde(default)]
    pub unavailable: Option<i64>,
    /// Only read the field when this holds (unit switches).
    #[serde(default)]
    pub when: Option<Condition>,
}

/// Timestamp encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    /// Date Time 0x2A08, 7 bytes, device-local wall time.
    DateTime,
    /// Seconds since 1970-01-01T00:00:00Z, u32 little-endian.
    UnixSeconds,
}

impl TimestampFormat {
    const fn width(self) -> usize {
        match self {
            TimestampFormat::DateTime => DateTime::LEN,
            TimestampFormat::UnixSeconds => 4,
        }
    }
}

/// Where the measurement time is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampSpec {
    /// Byte offset.
    pub offset: usize,
    /// Encoding.
    pub format: TimestampFormat,
}

/// A layout file as written, before validation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutSpec {
    /// Layout name (used in errors, quarantine and the `layout` annotation).
    pub name: String,
    /// Free text: device models, source of the reverse engineering.
    #[serde(default)]
    pub description: Option<String>,
    /// The 16-bit service or characteristic UUID the bytes arrive under
    /// (informational; the BLE source uses it to pick the layout).
    #[serde(default)]
    pub uuid: Option<u16>,
    /// Exact length of the value in bytes.
    pub length: usize,
    /// Conditions that must all hold for the bytes to be a measurement.
    #[serde(default)]
    pub require: Vec<Condition>,
    /// Fields.
    #[serde(default, rename = "field")]
    pub fields: Vec<FieldSpec>,
    /// Measurement time.
    #[serde(default)]
    pub timestamp: Option<TimestampSpec>,
}

/// Why a layout file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The file could not be read.
    #[error("cannot read layout {path}: {message}")]
    Io {
        /// file
        path: String,
        /// OS error
        message: String,
    },
    /// Not valid TOML, or not the expected keys.
    #[error("layout {source_name} is not valid: {message}")]
    Parse {
        /// file, or `<string>` for text parsed from memory
        source_name: String,
        /// parser message (with line and key)
        message: String,
    },
    /// Parsed, but inconsistent; every problem is listed.
    #[error("layout `{layout}` has {} problem(s): {}", problems.len(), problems.join("; "))]
    Invalid {
        /// layout name
        layout: String,
        /// problems found
        problems: Vec<String>,
    },
}

/// What a field produces.
#[derive(Debug, Clone, PartialEq)]
enum Target {
    Metric { metric: Metric, unit: Unit },
    Annotation(String),
}

/// A validated field.
#[derive(Debug, Clone, PartialEq)]
struct Field {
    name: String,
    offset: usize,
    ty: FieldType,
    endian: Endian,
    /// scale = mantissa × 10^exponent
    scale: (i128, i64),
    target: Target,
    unavailable: Option<i64>,
    when: Option<Condition>,
}

/// A validated layout, ready to decode.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    name: String,
    description: Option<String>,
    uuid: Option<u16>,
    length: usize,
    require: Vec<Condition>,
    fields: Vec<Field>,
    timestamp: Option<TimestampSpec>,
}

/// `value` as an exact decimal `(mantissa, exponent)`, from its shortest
/// round-trip representation.
fn decimal_of(value: f64) -> Option<(i128, i64)> {
    if !value.is_finite() {
        return None;
    }
    let text = format!("{value}");
    let (negative, text) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text.as_str()),
    };
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = format!("{int}{frac}");
    let significant = digits.trim_start_matches('0');
    if significant.len() > 30 {
        return None; // keeps mantissa × raw far inside i128
    }
    let mut m: i128 = if significant.is_empty() {
        0
    } else {
        significant.parse().ok()?
    };
    let mut e = -i64::try_from(frac.len()).ok()?;
    while m != 0 && m % 10 == 0 {
        m /= 10;
        e += 1;
    }
    Some((if negative { -m } else { m }, e))
}

impl Layout {
    /// Parses and validates TOML text.
    pub fn from_toml_str(text: &str) -> Result<Self, LayoutError> {
        Self::parse(text, "<string>")
    }

    /// Reads, parses and validates a layout file.
    pub fn load(path: &Path) -> Result<Self, LayoutError> {
        let text = std::fs::read_to_string(path).map_err(|e| LayoutError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Loads every `*.toml` file of a directory, sorted by file name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Self>, LayoutError> {
        let io = |e: std::io::Error| LayoutError::Io {
            path: dir.display().to_string(),
            message: e.to_string(),
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "toml") {
                paths.push(path);
            }
        }
        paths.sort();
        paths.iter().map(|p| Self::load(p)).collect()
    }

    fn parse(text: &str, source_name: &str) -> Result<Self, LayoutError> {
        let spec: LayoutSpec = toml::from_str(text).map_err(|e| LayoutError::Parse {
            source_name: source_name.into(),
            message: e.to_string(),
        })?;
        Self::from_spec(spec)
    }

    /// Validates a parsed spec, listing every problem.
    pub fn from_spec(spec: LayoutSpec) -> Result<Self, LayoutError> {
        let mut problems = Vec::new();
        if spec.name.trim().is_empty() {
            problems.push("name is empty".to_string());
        }
        if spec.length == 0 || spec.length > MAX_LENGTH {
            problems.push(format!("length {} is not in 1..={MAX_LENGTH}", spec.length));
        }
        let len = spec.length;
        let check_condition = |c: &Condition, what: &str, problems: &mut Vec<String>| {
            if c.offset >= len {
                problems.push(format!(
                    "{what}: offset {} is outside the length {len}",
                    c.offset
                ));
            }
            if c.value & !c.mask != 0 {
                problems.push(format!(
                    "{what}: value {:#04x} has bits outside mask {:#04x}",
                    c.value, c.mask
                ));
            }
        };
        for c in &spec.require {
            check_condition(c, &format!("condition `{}`", c.label()), &mut problems);
        }
        let mut names = BTreeSet::new();
        let mut fields = Vec::new();
        for f in &spec.fields {
            let what = format!("field `{}`", f.name);
            if !names.insert(f.name.clone()) {
                problems.push(format!("{what}: duplicate name"));
            }
            if f.offset
                .checked_add(f.ty.width())
                .is_none_or(|end| end > len)
            {
                problems.push(format!(
                    "{what}: bytes {}..{} are outside the length {len}",
                    f.offset,
                    f.offset.saturating_add(f.ty.width())
                ));
            }
            if let Some(c) = &f.when {
                check_condition(c, &format!("{what} `when`"), &mut problems);
            }
            if f.unavailable.is_some() && !f.ty.is_integer() {
                problems.push(format!("{what}: `unavailable` applies to integer types only (IEEE 11073 has its own special values)"));
            }
            let scale = match f.scale.map_or(Some((1, 0)), decimal_of) {
                Some((0, _)) | None => {
                    problems.push(format!(
                        "{what}: scale must be a finite, non-zero number with at most 30 digits"
                    ));
                    (1, 0)
                }
                Some(s) => s,
            };
            let target = match (&f.metric, &f.annotation) {
                (Some(m), None) => {
                    let metric = m
                        .parse::<Metric>()
                        .map_err(|e| problems.push(format!("{what}: {e}")))
                        .ok();
                    let unit = match &f.unit {
                        Some(u) => u
                            .parse::<Unit>()
                            .map_err(|e| problems.push(format!("{what}: {e}")))
                            .ok(),
                        None => {
                            problems.push(format!("{what}: a metric field needs a unit"));
                            None
                        }
                    };
                    match (metric, unit) {
                        (Some(metric), Some(unit)) => {
                            if unit.dimension() != metric.canonical_unit().dimension() {
                                problems
                                    .push(format!("{what}: unit `{unit}` cannot measure {metric}"));
                            }
                            Some(Target::Metric { metric, unit })
                        }
                        _ => None,
                    }
                }
                (None, Some(key)) if !key.trim().is_empty() => {
                    if let Some(u) = &f.unit {
                        problems.push(format!(
                            "{what}: an annotation field takes no unit (`{u}`): put it in the key"
                        ));
                    }
                    Some(Target::Annotation(key.clone()))
                }
                _ => {
                    problems.push(format!(
                        "{what}: give exactly one of `metric` and `annotation`"
                    ));
                    None
                }
            };
            if let Some(target) = target {
                fields.push(Field {
                    name: f.name.clone(),
                    offset: f.offset,
                    ty: f.ty,
                    endian: f.endian,
                    scale,
                    target,
                    unavailable: f.unavailable,
                    when: f.when.clone(),
                });
            }
        }
        if !spec.fields.iter().any(|f| f.metric.is_some()) {
            problems.push("no field has a metric: the layout would never produce a reading".into());
        }
        if let Some(t) = spec.timestamp {
            if t.offset
                .checked_add(t.format.width())
                .is_none_or(|end| end > len)
            {
                problems.push(format!(
                    "timestamp at {} is outside the length {len}",
                    t.offset
                ));
            }
        }
        if !problems.is_empty() {
            return Err(LayoutError::Invalid {
                layout: spec.name,
                problems,
            });
        }
        Ok(Layout {
            name: spec.name,
            description: spec.description,
            uuid: spec.uuid,
            length: spec.length,
            require: spec.require,
            fields,
            timestamp: spec.timestamp,
        })
    }

    /// The layout's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The description, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The UUID the bytes arrive under, if declared.
    pub fn uuid(&self) -> Option<u16> {
        self.uuid
    }

    /// The exact length of a value.
    pub fn length(&self) -> usize {
        self.length
    }

    /// Decodes one value into a measurement. A value whose `require`
    /// conditions do not hold (a scale still settling) is an error of kind
    /// [`GattErrorKind::ConditionNotMet`]; use [`Layout::decode_ready`] to
    /// get `Ok(None)` for those instead.
    pub fn decode(&self, bytes: &[u8]) -> Result<DecodedMeasurement, GattError> {
        self.decode_inner(bytes)
            .map_err(|f| f.at(Characteristic::Layout(self.name.clone())))
    }

    /// Like [`Layout::decode`], but a failed condition is `Ok(None)`: the
    /// advertisement is well-formed, just not a finished measurement.
    pub fn decode_ready(&self, bytes: &[u8]) -> Result<Option<DecodedMeasurement>, GattError> {
        match self.decode(bytes) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.is_condition_not_met() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn decode_inner(&self, bytes: &[u8]) -> Result<DecodedMeasurement, Fault> {
        if bytes.len() < self.length {
            return Err(Fault::new(
                bytes.len(),
                GattErrorKind::Truncated {
                    field: "layout",
                    needed: self.length,
                    available: bytes.len(),
                },
            ));
        }
        if bytes.len() > self.length {
            return Err(Fault::new(
                self.length,
                GattErrorKind::TrailingBytes {
                    count: bytes.len() - self.length,
                },
            ));
        }
        for c in &self.require {
            if !c.holds(bytes) {
                return Err(Fault::new(
                    c.offset,
                    GattErrorKind::ConditionNotMet {
                        condition: c.label(),
                    },
                ));
            }
        }
        let mut m = DecodedMeasurement::default();
        m.annotations.insert("layout".into(), self.name.clone());
        for f in &self.fields {
            if f.when.as_ref().is_some_and(|c| !c.holds(bytes)) {
                continue;
            }
            let value = read_field(bytes, f)?;
            match &f.target {
                Target::Metric { metric, unit } => m.components.push(Component {
                    metric: *metric,
                    value,
                    unit: Some(unit.ucum().into()),
                }),
                Target::Annotation(key) => {
                    let text = match value {
                        RawValue::Number(v) => v.to_string(),
                        RawValue::Special(s) => s.to_string(),
                    };
                    m.annotations.insert(key.clone(), text);
                }
            }
        }
        if let Some(t) = self.timestamp {
            let mut r = Reader::new(bytes.get(t.offset..).unwrap_or_default());
            let at = |f: Fault| Fault::new(f.offset + t.offset, f.kind);
            m.time = match t.format {
                TimestampFormat::DateTime => DateTime::read(&mut r).map_err(at)?.to_device_time(),
                TimestampFormat::UnixSeconds => {
                    let secs = r
                        .array::<4>("timestamp")
                        .map_err(at)
                        .map(u32::from_le_bytes)?;
                    chrono::DateTime::from_timestamp(i64::from(secs), 0).map(DeviceTime::Utc)
                }
            };
        }
        Ok(m)
    }
}

fn read_field(bytes: &[u8], f: &Field) -> Result<RawValue, Fault> {
    let width = f.ty.width();
    let mut r = Reader::new(bytes.get(f.offset..).unwrap_or_default());
    let raw = r
        .take(width, "layout field")
        .map_err(|e| Fault::new(e.offset + f.offset, e.kind))?;
    // Normalise to little-endian, then to a u32 zero-extended.
    let mut le = [0u8; 4];
    for (i, b) in raw.iter().enumerate() {
        let slot = match f.endian {
            Endian::Little => i,
            Endian::Big => width - 1 - i,
        };
        if let Some(s) = le.get_mut(slot) {
            *s = *b;
        }
    }
    let u = u32::from_le_bytes(le);
    let (mantissa, exponent): (i128, i64) = match f.ty {
        FieldType::U8 | FieldType::U16 | FieldType::U24 | FieldType::U32 => (i128::from(u), 0),
        FieldType::I8 => (i128::from(u as u8 as i8), 0),
        FieldType::I16 => (i128::from(u as u16 as i16), 0),
        FieldType::I32 => (i128::from(u as i32), 0),
        FieldType::Sfloat => match Sfloat::from_raw(u as u16).value() {
            Ieee11073Value::Number(d) => (d.mantissa.into(), d.exponent.into()),
            Ieee11073Value::Special(s) => return Ok(RawValue::Special(s)),
        },
        FieldType::Float => match Float::from_raw(u).value() {
            Ieee11073Value::Number(d) => (d.mantissa.into(), d.exponent.into()),
            Ieee11073Value::Special(s) => return Ok(RawValue::Special(s)),
        },
    };
    if f.unavailable.is_some_and(|n| i128::from(n) == mantissa) && f.ty.is_integer() {
        return Ok(RawValue::Special(SpecialValue::NaN));
    }
    let (sm, se) = f.scale;
    let value = mantissa
        .checked_mul(sm)
        .map(|m| decimal_to_f64(m, exponent + se));
    match value {
        Some(v) if v.is_finite() => Ok(RawValue::Number(v)),
        // Only reachable with absurd scales on FLOAT exponents; never a number.
        _ => Ok(RawValue::Special(SpecialValue::NaN)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = include_str!("../../profiles/ble/xiaomi-scale-v1.toml");
    const V2: &str = include_str!("../../profiles/ble/xiaomi-scale-v2.toml");

    #[test]
    fn xiaomi_v1_sample() {
        let layout = Layout::from_toml_str(V1).unwrap();
        let bytes = hex::decode("229E43E507040B101301").unwrap();
        let m = layout.decode(&bytes).unwrap();
        assert_eq!(
            m.components,
            vec![Component::number(Metric::BodyWeight, 86.55, "kg")]
        );
        let t = chrono::NaiveDate::from_ymd_opt(2021, 4, 11).and_then(|d| d.and_hms_opt(16, 19, 1));
        assert_eq!(m.time, t.map(DeviceTime::Local));
        assert_eq!(m.annotations["layout"], "xiaomi-scale-v1");
        // Pounds: bit 0 set, raw/100.
        let mut lb = bytes.clone();
        lb[0] = 0x23;
        assert_eq!(
            layout.decode(&lb).unwrap().components,
            vec![Component::number(Metric::BodyWeight, 173.1, "[lb_av]")]
        );
        // Not stabilized, or weight removed: not a measurement.
        let mut unstable = bytes.clone();
        unstable[0] = 0x02;
        assert!(layout.decode(&unstable).unwrap_err().is_condition_not_met());
        assert_eq!(layout.decode_ready(&unstable), Ok(None));
        let mut removed = bytes.clone();
        removed[0] = 0xA2;
        assert!(layout.decode(&removed).unwrap_err().is_condition_not_met());
        assert!(layout.decode(&bytes[..9]).is_err());
    }

    #[test]
    fn xiaomi_v2_sample() {
        let layout = Layout::from_toml_str(V2).unwrap();
        let bytes = hex::decode("0226B20705040F0201AC018642").unwrap();
        let m = layout.decode(&bytes).unwrap();
        assert_eq!(
            m.components,
            vec![Component::number(Metric::BodyWeight, 85.15, "kg")]
        );
        assert_eq!(m.annotations["impedance_ohm"], "428");
        let t = chrono::NaiveDate::from_ymd_opt(1970, 5, 4).and_then(|d| d.and_hms_opt(15, 2, 1));
        assert_eq!(
            m.time,
            t.map(DeviceTime::Local),
            "clock never set: the canonicaliser judges it"
        );
    }

    #[test]
    fn validation_lists_every_problem() {
        let text = r#"
            name = "bad"
            length = 4
            [[require]]
            offset = 9
            mask = 0x01
            value = 0x03
            [[field]]
            name = "w"
            offset = 3
            type = "u16"
            unit = "furlong"
            metric = "weight"
            [timestamp]
            offset = 0
            format = "date_time"
        "#;
        let Err(LayoutError::Invalid { problems, .. }) = Layout::from_toml_str(text) else {
            panic!("expected Invalid");
        };
        let all = problems.join("\n");
        for needle in [
            "offset 9",
            "outside mask",
            "bytes 3..5",
            "unknown metric",
            "unknown unit",
            "timestamp",
        ] {
            assert!(all.contains(needle), "{needle} missing in:\n{all}");
        }
        let typo = "name = \"x\"\nlength = 2\nlenght = 3\n";
        assert!(matches!(
            Layout::from_toml_str(typo),
            Err(LayoutError::Parse { .. })
        ));
        let wrong_unit = "name = \"x\"\nlength = 2\n[[field]]\nname = \"w\"\noffset = 0\ntype = \"u16\"\nunit = \"mmHg\"\nmetric = \"body_weight\"\n";
        let err = Layout::from_toml_str(wrong_unit).unwrap_err().to_string();
        assert!(err.contains("cannot measure"), "{err}");
    }

    #[test]
    fn types_endianness_scale_and_unavailable() {
        let text = r#"
            name = "t"
            length = 11
            [[field]]
            name = "temp"
            offset = 0
            type = "i16"
            endian = "big"
            scale = 0.01
            unit = "Cel"
            metric = "body_temperature"
            [[field]]
            name = "spo2"
            offset = 2
            type = "sfloat"
            unit = "%"
            metric = "spo2"
            [[field]]
            name = "hr"
            offset = 4
            type = "u8"
            unavailable = 255
            unit = "/min"
            metric = "heart_rate"
            [[field]]
            name = "steps"
            offset = 5
            type = "u24"
            annotation = "steps"
            [timestamp]
            offset = 7
            format = "unix_seconds"
        "#;
        let layout = Layout::from_toml_str(text).unwrap();
        let bytes = [
            0x0E, 0xB0, 0x62, 0x00, 0xFF, 0x01, 0x02, 0x03, 0x00, 0x00, 0x00, 0x00,
        ];
        assert!(layout.decode(&bytes).is_err(), "one byte too many");
        let m = layout.decode(&bytes[..11]).unwrap();
        assert_eq!(m.components[0].value, RawValue::Number(37.6));
        assert_eq!(m.components[1].value, RawValue::Number(98.0));
        assert_eq!(m.components[2].value, RawValue::Special(SpecialValue::NaN));
        assert_eq!(m.annotations["steps"], "197121");
        assert!(matches!(m.time, Some(DeviceTime::Utc(_))));
    }

    #[test]
    fn exact_decimal_scale() {
        assert_eq!(decimal_of(0.005), Some((5, -3)));
        assert_eq!(decimal_of(1000.0), Some((1, 3)));
        assert_eq!(decimal_of(-0.25), Some((-25, -2)));
        assert_eq!(decimal_of(f64::NAN), None);
        assert_eq!(decimal_of(1e300), None);
    }
}
