//! Declarative MQTT device profiles.
//!
//! A profile file (TOML) says, without code, which topics a device publishes
//! on, where its device id is, what the payload format is, and how payload
//! fields map to metrics and units. Files are validated when loaded; a broken
//! file is refused with its path, line, column and the field at fault.
//!
//! ```toml
//! name = "acme-scale"
//! description = "ACME WS-200 scale (vendor JSON)"
//! topic = "acme/{device_id}/weight"
//! format = "json"
//!
//! [json]
//! time = "ts"
//! time_format = "unix_s"
//!
//! [[json.values]]
//! metric = "body_weight"
//! path = "weight"
//! unit_path = "unit"
//! ```

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::decoded::DecodedMeasurement;
use crate::json::JsonMapping;
use crate::reject::Reject;
use crate::senml::SenmlMapping;

/// A profile file as written (validated further by [`Profile::from_toml`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    #[serde(default)]
    description: String,
    topic: TopicPattern,
    #[serde(default)]
    device_id_from: DeviceIdFrom,
    format: FormatKind,
    #[serde(default)]
    manual_entry: bool,
    senml: Option<SenmlMapping>,
    json: Option<JsonMapping>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FormatKind {
    Senml,
    Json,
    FhirQuestionnaireResponse,
    QuestionnaireResponse,
}

/// A loaded, validated profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Unique profile name.
    pub name: String,
    /// What device this describes.
    pub description: String,
    /// Topic pattern: MQTT levels, `+` and a final `#` as in a subscription,
    /// and one `{device_id}` level that names the device.
    pub topic: TopicPattern,
    /// Where the device id comes from.
    pub device_id_from: DeviceIdFrom,
    /// Payload format and its mapping.
    pub format: Format,
    /// Every measurement of this profile was typed in by a person (an app
    /// or portal that relays manual entries): each is annotated
    /// `entry = "manual"` and never counts as automatically transmitted
    /// device data.
    pub manual_entry: bool,
    /// Where the profile was loaded from.
    pub file: PathBuf,
}

/// Where a profile finds the device id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceIdFrom {
    /// The `{device_id}` level of the topic.
    #[default]
    Topic,
    /// The payload (SenML base name, or the JSON mapping's `device_id` path).
    Payload,
}

/// Payload format with its mapping.
// A profile is loaded once and held for the process: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Format {
    /// SenML JSON (RFC 8428); the `[senml]` table is optional.
    Senml(SenmlMapping),
    /// Vendor JSON mapped by field paths (`[json]`).
    Json(JsonMapping),
    /// Questionnaire responses from a tablet or hub (`fhir_questionnaire_response`:
    /// a FHIR `QuestionnaireResponse`; `questionnaire_response`: the plain
    /// JSON form of the API). They are validated and scored by their
    /// questionnaire (see [`crate::questionnaire`]), not decoded here.
    QuestionnaireResponse(crate::questionnaire::response::ResponseFormat),
}

/// A validated MQTT topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    levels: Vec<Level>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Plus,
    Hash,
    DeviceId,
}

impl TopicPattern {
    /// The MQTT subscription filter for this pattern (`{device_id}` → `+`).
    pub fn filter(&self) -> String {
        self.levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Plus | Level::DeviceId => "+",
                Level::Hash => "#",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Matches a concrete topic; on a match returns the `{device_id}` level
    /// (if the pattern has one).
    pub fn matches<'t>(&self, topic: &'t str) -> Option<Option<&'t str>> {
        let mut device = None;
        let mut parts = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Hash => return Some(device),
                _ => {
                    let part = parts.next()?;
                    match level {
                        Level::Literal(s) if s != part => return None,
                        Level::DeviceId if part.is_empty() => return None,
                        Level::DeviceId => device = Some(part),
                        _ => {}
                    }
                }
            }
        }
        parts.next().is_none().then_some(device)
    }

    /// Whether the pattern has a `{device_id}` level.
    pub fn has_device_level(&self) -> bool {
        self.levels.contains(&Level::DeviceId)
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl TryFrom<String> for TopicPattern {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        if text.is_empty() {
            return Err("topic pattern is empty".into());
        }
        let raw: Vec<&str> = text.split('/').collect();
        let mut levels = Vec::with_capacity(raw.len());
        for (i, part) in raw.iter().enumerate() {
            let level = match *part {
                "+" => Level::Plus,
                "#" if i + 1 == raw.len() => Level::Hash,
                "#" => return Err("`#` is only allowed as the last level".into()),
                "{device_id}" if levels.contains(&Level::DeviceId) => {
                    return Err("`{device_id}` may appear only once".into())
                }
                "{device_id}" => Level::DeviceId,
                p if p.contains(['+', '#', '{', '}']) => {
                    return Err(format!(
                        "level `{p}` mixes wildcards or braces with text; use a whole level"
                    ))
                }
                p => Level::Literal(p.to_string()),
            };
            levels.push(level);
        }
        Ok(TopicPattern { levels, text })
    }
}

impl<'de> Deserialize<'de> for TopicPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TopicPattern::try_from(s).map_err(serde::de::Error::custom)
    }
}

/// What a profile made of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedMessage {
    /// Device id from the topic or the payload.
    pub device_id: Option<String>,
    /// Each measurement, or the reason it was refused.
    pub measurements: Vec<Result<DecodedMeasurement, Reject>>,
}

impl Profile {
    /// Decodes a payload received on `topic` (which must match
    /// [`Profile::topic`]).
    pub fn decode(&self, topic: &str, payload: &[u8]) -> Result<DecodedMessage, Reject> {
        let from_topic = self.topic.matches(topic).flatten().map(str::to_string);
        let mut measurements = match &self.format {
            Format::Senml(senml) => senml.decode(&self.name, payload)?,
            Format::Json(json) => json.decode(&self.name, payload)?,
            Format::QuestionnaireResponse(_) => return Err(Reject::SchemaMismatch {
                profile: self.name.clone(),
                detail:
                    "questionnaire responses are read by their questionnaire, not as measurements"
                        .into(),
            }),
        };
        if self.manual_entry {
            for m in measurements.iter_mut().flatten() {
                m.annotations.insert(
                    crate::canonical::ENTRY_ANNOTATION.into(),
                    crate::canonical::MANUAL_ENTRY.into(),
                );
            }
        }
        let device_id = match self.device_id_from {
            DeviceIdFrom::Topic => {
                // The topic names the device: it wins over anything in the payload.
                for m in measurements.iter_mut().flatten() {
                    m.device_id.clone_from(&from_topic);
                }
                from_topic
            }
            DeviceIdFrom::Payload => measurements
                .iter()
                .find_map(|m| m.as_ref().ok().and_then(|m| m.device_id.clone()))
                .or_else(|| match &self.format {
                    // Every record refused: the device still said who it is,
                    // so its refusals are filed under it.
                    Format::Json(json) => json.device_id_of(payload),
                    _ => None,
                }),
        };
        if device_id.is_none() {
            return Err(Reject::SchemaMismatch {
                profile: self.name.clone(),
                detail: "no device id in topic or payload".into(),
            });
        }
        Ok(DecodedMessage {
            device_id,
            measurements,
        })
    }

    /// Parses and validates one profile from TOML text; `file` is used in errors.
    pub fn from_toml(text: &str, file: &Path) -> Result<Profile, FileError> {
        let raw: RawProfile = parse_toml(text, file)?;
        let err = |key: &str, field: &str, message: &str| {
            FileError::at(file, text, locate(text, key), field, message.to_string())
        };
        let format = match (raw.format, raw.senml, raw.json) {
            (
                FormatKind::FhirQuestionnaireResponse | FormatKind::QuestionnaireResponse,
                None,
                None,
            ) => {
                use crate::questionnaire::response::ResponseFormat;
                Format::QuestionnaireResponse(match raw.format {
                    FormatKind::FhirQuestionnaireResponse => ResponseFormat::Fhir,
                    _ => ResponseFormat::Plain,
                })
            }
            (FormatKind::FhirQuestionnaireResponse | FormatKind::QuestionnaireResponse, _, _) => {
                return Err(err(
                    "format",
                    "format",
                    "questionnaire responses take no [senml] or [json] table",
                ))
            }
            (FormatKind::Senml, senml, None) => Format::Senml(senml.unwrap_or_default()),
            (FormatKind::Json, None, Some(json)) => Format::Json(json),
            (FormatKind::Json, _, None) => {
                return Err(err(
                    "format",
                    "json",
                    "format = \"json\" needs a [json] table",
                ))
            }
            (FormatKind::Senml, _, Some(_)) => {
                return Err(err(
                    "format",
                    "json",
                    "a [json] table does not apply to format = \"senml\"",
                ))
            }
            (FormatKind::Json, Some(_), Some(_)) => {
                return Err(err(
                    "format",
                    "senml",
                    "a [senml] table does not apply to format = \"json\"",
                ))
            }
        };
        if raw.device_id_from == DeviceIdFrom::Topic && !raw.topic.has_device_level() {
            return Err(err(
                "topic",
                "topic",
                "device_id_from = \"topic\" (the default) needs a `{device_id}` level in the topic",
            ));
        }
        if let Format::Json(json) = &format {
            if json.select.is_none() && json.values.iter().any(|v| v.when.is_some()) {
                return Err(err(
                    "json",
                    "json.select",
                    "a value's `when` needs `json.select` (the field naming the kind of measurement)",
                ));
            }
        }
        if let (DeviceIdFrom::Payload, Format::Json(json)) = (raw.device_id_from, &format) {
            if json.device_id.is_none() {
                return Err(err(
                    "device_id_from",
                    "json.device_id",
                    "device_id_from = \"payload\" needs `json.device_id`",
                ));
            }
        }
        Ok(Profile {
            name: raw.name,
            description: raw.description,
            topic: raw.topic,
            device_id_from: raw.device_id_from,
            format,
            manual_entry: raw.manual_entry,
            file: file.to_path_buf(),
        })
    }
}

/// A file the project loads (config, profile, scenario, rule pack) that
/// could not be loaded, with the place and field at fault: one type for
/// every such file, so that every error reads the same and a rule pack's
/// errors join the config's as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FileError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// Dotted path of the field at fault (`json.values[1].unit`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// `file:line:column: field `f`: message`, without the parts that are not
/// known (line 0: the whole file; no field).
impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": field `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl FileError {
    /// An error about the whole file (no line, no field), such as one that
    /// cannot be read.
    pub fn whole(
        file: impl Into<PathBuf>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        FileError {
            file: file.into(),
            line: 0,
            column: 0,
            field: field.into(),
            message: message.into(),
        }
    }

    /// An error at a byte span of `text` (`None`: the whole file).
    pub fn spanned(
        file: impl Into<PathBuf>,
        text: &str,
        span: Option<std::ops::Range<usize>>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = span.map_or((0, 0), |s| line_col(text, s.start));
        FileError {
            line,
            column,
            ..FileError::whole(file, field, message)
        }
    }

    /// An error at field `path` of `text` (see [`locate`]; dotted, with
    /// array indices), reported as `field`.
    pub fn located(
        file: &Path,
        text: &str,
        path: &str,
        field: impl Into<String>,
        message: String,
    ) -> Self {
        Self::at(file, text, locate(text, path), &field.into(), message)
    }

    fn at(file: &Path, text: &str, offset: Option<usize>, field: &str, message: String) -> Self {
        let (line, column) = offset.map(|o| line_col(text, o)).unwrap_or((0, 0));
        FileError {
            file: file.to_path_buf(),
            line,
            column,
            field: field.into(),
            message,
        }
    }
}

/// Deserializes TOML with errors that carry file, line, column and field
/// path. Shared by every TOML file the project loads.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, file: &Path) -> Result<T, FileError> {
    let de = toml::de::Deserializer::parse(text)
        .map_err(|e| toml_error(file, text, e, String::new()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        toml_error(file, text, e.into_inner(), field)
    })
}

fn toml_error(file: &Path, text: &str, e: toml::de::Error, field: String) -> FileError {
    let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
    let field = if field.is_empty() || field == "." {
        "(document)".to_string()
    } else {
        field
    };
    FileError {
        file: file.to_path_buf(),
        line,
        column,
        field,
        message: e.message().trim().to_string(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where a field is written in a TOML document, for errors found after
/// parsing (validation of meaning). `path` is dotted, with array indices:
/// `sources.mqtt.client_id`, `webhooks[1].url`, `patients[0]`. The byte
/// offset of the key, or, when the key itself is absent (a missing field),
/// of the line of the nearest enclosing table or array element that is
/// there. Uses the
/// parser's own positions (`toml::Spanned`), so any TOML layout (inline
/// tables, dotted keys, comments) is located alike.
pub fn locate(text: &str, path: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let line_start = |at: usize| text[..at].rfind('\n').map_or(0, |i| i + 1);
    let mut here: &DeValue<'_>;
    let mut table = root.get_ref();
    let mut found = None;
    let mut segments = path.split('.').peekable();
    while let Some(seg) = segments.next() {
        let (key, indices) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg, ""),
        };
        let Some((k, v)) = table.get_key_value(key) else {
            return found.map(line_start);
        };
        found = Some(k.span().start);
        here = v.get_ref();
        for ix in indices.split('[').filter(|s| !s.is_empty()) {
            let n: usize = ix.trim_end_matches(']').parse().ok()?;
            let DeValue::Array(items) = here else {
                return found.map(line_start);
            };
            let Some(item) = items.get(n) else {
                return found.map(line_start);
            };
            found = Some(item.span().start);
            here = item.get_ref();
        }
        if segments.peek().is_some() {
            let DeValue::Table(t) = here else {
                return found.map(line_start);
            };
            table = t;
        }
    }
    found
}

/// All loaded profiles, matched against topics.
#[derive(Debug, Clone, Default)]
pub struct ProfileSet {
    profiles: Vec<Profile>,
}

impl ProfileSet {
    /// Loads every `*.toml` directly in `dir`, in file-name order. Returns
    /// every broken file's error, not only the first.
    pub fn load_dir(dir: &Path) -> Result<ProfileSet, Vec<FileError>> {
        let mut set = ProfileSet::default();
        set.add_dir(dir)?;
        Ok(set)
    }

    /// Adds every `*.toml` directly in `dir`.
    pub fn add_dir(&mut self, dir: &Path) -> Result<(), Vec<FileError>> {
        let io_err = |e: std::io::Error| {
            vec![FileError {
                file: dir.to_path_buf(),
                line: 0,
                column: 0,
                field: "(file)".into(),
                message: e.to_string(),
            }]
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io_err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let mut errors = Vec::new();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => match Profile::from_toml(&text, &file) {
                    Ok(p) => {
                        if let Err(e) = self.push(p) {
                            errors.push(e);
                        }
                    }
                    Err(e) => errors.push(e),
                },
                Err(e) => errors.push(FileError {
                    file: file.clone(),
                    line: 0,
                    column: 0,
                    field: "(file)".into(),
                    message: e.to_string(),
                }),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Adds one profile; refuses a duplicate name or an identical topic filter.
    pub fn push(&mut self, p: Profile) -> Result<(), FileError> {
        let clash = self
            .profiles
            .iter()
            .find(|q| q.name == p.name || q.topic.filter() == p.topic.filter());
        if let Some(q) = clash {
            let what = if q.name == p.name { "name" } else { "topic" };
            return Err(FileError {
                file: p.file.clone(),
                line: 0,
                column: 0,
                field: what.into(),
                message: format!(
                    "same {what} as profile `{}` in {}",
                    q.name,
                    q.file.display()
                ),
            });
        }
        self.profiles.push(p);
        Ok(())
    }

    /// The first profile whose topic pattern matches `topic`.
    pub fn for_topic(&self, topic: &str) -> Option<&Profile> {
        self.profiles
            .iter()
            .find(|p| p.topic.matches(topic).is_some())
    }

    /// A profile by name.
    pub fn by_name(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// The subscription filters of all profiles (deduplicated).
    pub fn filters(&self) -> Vec<String> {
        let mut f: Vec<String> = self.profiles.iter().map(|p| p.topic.filter()).collect();
        f.dedup();
        f
    }

    /// All profiles.
    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.iter()
    }

    /// Number of profiles.
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }
}

/// The directory of profiles shipped with this crate.
pub fn bundled_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns() {
        let p = TopicPattern::try_from("acme/{device_id}/bp".to_string()).unwrap();
        assert_eq!(p.filter(), "acme/+/bp");
        assert_eq!(p.matches("acme/cuff-1/bp"), Some(Some("cuff-1")));
        assert_eq!(p.matches("acme/cuff-1/bp/x"), None);
        assert_eq!(p.matches("acme//bp"), None);
        let h = TopicPattern::try_from("rpm/#".to_string()).unwrap();
        assert_eq!(h.matches("rpm/a/b"), Some(None));
        assert!(TopicPattern::try_from("a/#/b".to_string()).is_err());
        assert!(TopicPattern::try_from("a/dev{device_id}".to_string()).is_err());
    }

    #[test]
    fn broken_profile_names_file_line_and_field() {
        let text = "name = \"x\"\ntopic = \"a/{device_id}\"\nformat = \"json\"\n[json]\n[[json.values]]\nmetric = \"systolic\"\npath = \"sys\"\nunit = \"furlong\"\n";
        let e = Profile::from_toml(text, Path::new("x.toml")).unwrap_err();
        assert_eq!(e.line, 8, "{e}");
        assert!(e.field.contains("unit"), "{e}");
        assert!(e.to_string().starts_with("x.toml:8:"), "{e}");

        let text =
            "name = \"x\"\ntopic = \"a/{device_id}\"\nformat = \"json\"\ncolour = 3\n[json]\n";
        let e = Profile::from_toml(text, Path::new("y.toml")).unwrap_err();
        assert!(e.message.contains("colour"), "{e}");

        let text = "name = \"x\"\ntopic = \"a/b\"\nformat = \"json\"\n[json]\n[[json.values]]\nmetric = \"spo2\"\npath = \"s\"\n";
        let e = Profile::from_toml(text, Path::new("z.toml")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (2, "topic"), "{e}");
    }

    #[test]
    fn bundled_profiles_load() {
        let set = ProfileSet::load_dir(&bundled_dir()).unwrap();
        assert!(set.len() >= 5);
    }

    /// Manual entry is said by the payload (the generic SenML `entry`
    /// record, a vendor JSON field mapped to the `entry` annotation) or
    /// by a profile that only relays typed-in values.
    #[test]
    fn manual_entries_are_annotated() {
        let set = bundled();
        let entry = |profile: &str, topic: &str, payload: &str| {
            let m = set
                .by_name(profile)
                .unwrap()
                .decode(topic, payload.as_bytes())
                .unwrap();
            m.measurements[0]
                .as_ref()
                .unwrap()
                .annotations
                .get("entry")
                .cloned()
        };
        let senml = r#"[{"bt":1790000000,"n":"body_weight","u":"kg","v":81.5},{"n":"entry","vs":"manual"}]"#;
        assert_eq!(
            entry("senml-generic", "rpm/senml/scale-1", senml).as_deref(),
            Some("manual")
        );
        let device = r#"[{"bt":1790000000,"n":"body_weight","u":"kg","v":81.5}]"#;
        assert_eq!(entry("senml-generic", "rpm/senml/scale-1", device), None);
        let typed = r#"{"measured_at":"2026-11-02T08:00:00Z","sys":132,"dia":84,"unit":"mmHg","entry":"manual"}"#;
        assert_eq!(
            entry("acme-bp-cuff", "acme/bp/cuff-1", typed).as_deref(),
            Some("manual")
        );

        let text = "name = \"portal\"\ntopic = \"portal/{device_id}\"\nformat = \"senml\"\nmanual_entry = true\n";
        let p = Profile::from_toml(text, Path::new("portal.toml")).unwrap();
        assert!(p.manual_entry);
        let m = p.decode("portal/app-1", device.as_bytes()).unwrap();
        assert_eq!(
            m.measurements[0].as_ref().unwrap().annotations["entry"],
            "manual"
        );
    }
}

/// The profiles shipped with this crate, compiled into the binary so that a
/// deployed gateway needs no files to understand the bundled devices.
pub fn bundled() -> ProfileSet {
    const FILES: &[(&str, &str)] = &[
        (
            "acme-bp-cuff.toml",
            include_str!("../profiles/acme-bp-cuff.toml"),
        ),
        (
            "acme-glucometer.toml",
            include_str!("../profiles/acme-glucometer.toml"),
        ),
        (
            "acme-oximeter.toml",
            include_str!("../profiles/acme-oximeter.toml"),
        ),
        (
            "acme-scale.toml",
            include_str!("../profiles/acme-scale.toml"),
        ),
        ("tenovi.toml", include_str!("../profiles/tenovi.toml")),
        ("telli.toml", include_str!("../profiles/telli.toml")),
        (
            "senml-generic.toml",
            include_str!("../profiles/senml-generic.toml"),
        ),
        (
            "questionnaire-response.toml",
            include_str!("../profiles/questionnaire-response.toml"),
        ),
        (
            "questionnaire-answers.toml",
            include_str!("../profiles/questionnaire-answers.toml"),
        ),
    ];
    let mut set = ProfileSet::default();
    for (name, text) in FILES {
        // Bundled files are checked by the test below; a broken one is a
        // build defect, skipped here rather than taking the gateway down.
        if let Ok(p) = Profile::from_toml(text, &Path::new("(bundled)").join(name)) {
            let _ = set.push(p);
        }
    }
    set
}

#[cfg(test)]
mod bundled_tests {
    #[test]
    fn every_bundled_file_is_compiled_in() {
        let on_disk = super::ProfileSet::load_dir(&super::bundled_dir()).unwrap();
        assert_eq!(super::bundled().len(), on_disk.len());
    }
}

#[cfg(test)]
mod locate_tests {
    use super::{line_col, locate};

    #[test]
    fn keys_tables_and_array_elements_are_found_by_the_parser() {
        let text = "top = 1\n[sources.mqtt]\nhost = \"h\"\n  client_id = \"é\"\n\n[[webhooks]]\nid = \"a\"\n\n[[webhooks]]\nid = \"b\"\nurl = \"u\"\nfilter = { care_teams = [\"x\"] }\n";
        let at = |p: &str| locate(text, p).map(|o| line_col(text, o));
        assert_eq!(at("top"), Some((1, 1)));
        assert_eq!(at("sources.mqtt.client_id"), Some((4, 3)));
        // A missing key: its table.
        assert_eq!(at("sources.mqtt.port").map(|p| p.0), Some(2));
        assert_eq!(at("webhooks[1].url"), Some((11, 1)));
        assert_eq!(at("webhooks[1].filter.care_teams"), Some((12, 12)));
        // A missing key of an array element: that element.
        assert_eq!(at("webhooks[1].secret").map(|p| p.0), Some(9));
        assert_eq!(at("webhooks[0].url").map(|p| p.0), Some(6));
        assert_eq!(at("nothing.here"), None);
        assert_eq!(line_col("aé\nb", 3), (1, 3));
    }
}

/// The cellular vendor clouds' push formats, on vectors written from their
/// published field lists.
#[cfg(test)]
mod vendor_cloud_tests {
    use crate::decoded::{DeviceTime, RawValue};
    use crate::metric::Metric;

    fn decode(profile: &str, payload: &str) -> super::DecodedMessage {
        super::bundled()
            .by_name(profile)
            .unwrap()
            .decode(&format!("vendor/{profile}/http"), payload.as_bytes())
            .unwrap()
    }

    fn utc(text: &str) -> DeviceTime {
        DeviceTime::Utc(chrono::DateTime::parse_from_rfc3339(text).unwrap().into())
    }

    #[test]
    fn tenovi_blood_pressure_with_offset_and_hub() {
        let m = decode(
            "tenovi",
            r#"{"metric":"blood_pressure","device_name":"Tenovi BPM","hwi_device_id":"HWI-1001","patient_id":"p-17","hardware_uuid":"GW-7F3A","sensor_code":"BPM-L","value_1":"132","value_2":84,"created":"2026-01-31T12:42:15Z","timestamp":"2026-01-31T07:42:10","timezone_offset":-5,"estimated_timestamp":false}"#,
        );
        assert_eq!(m.device_id.as_deref(), Some("HWI-1001"));
        let r = m.measurements[0].as_ref().unwrap();
        assert_eq!(r.time, Some(utc("2026-01-31T12:42:10Z")));
        let got: Vec<(Metric, RawValue)> =
            r.components.iter().map(|c| (c.metric, c.value)).collect();
        assert_eq!(
            got,
            vec![
                (Metric::Systolic, RawValue::Number(132.0)),
                (Metric::Diastolic, RawValue::Number(84.0))
            ]
        );
        assert_eq!(r.annotations["vendor_hub"], "GW-7F3A");
        assert_eq!(r.annotations["time_estimated"], "false");
    }

    #[test]
    fn tenovi_other_metrics_and_refusals() {
        let one = |metric: &str, v1: &str, v2: &str| {
            decode(
                "tenovi",
                &format!(r#"{{"metric":"{metric}","hwi_device_id":"HWI-9","hardware_uuid":"GW-1","value_1":{v1},"value_2":{v2},"timestamp":"2026-01-31T07:42:10Z","timezone_offset":-5}}"#),
            )
            .measurements
            .remove(0)
        };
        let w = one("weight", "176.4", "null").unwrap();
        assert_eq!(w.components[0].metric, Metric::BodyWeight);
        assert_eq!(w.components[0].unit.as_deref(), Some("lb"));
        // A time with its own offset is taken as it is.
        assert_eq!(w.time, Some(utc("2026-01-31T07:42:10Z")));
        let g = one("glucose", "\"104\"", "null").unwrap();
        assert_eq!(g.components[0].metric, Metric::BloodGlucose);
        let o = one("spO2", "97", "66").unwrap();
        assert_eq!(o.components.len(), 2);
        assert_eq!(o.components[0].metric, Metric::Spo2);
        let p = one("pulse", "71", "null").unwrap();
        assert_eq!(p.components[0].metric, Metric::PulseRate);
        // Unknown kinds and missing or non-numeric values are refused.
        assert_eq!(
            one("peak_flow", "300", "null").unwrap_err().code(),
            "schema_mismatch"
        );
        assert_eq!(
            one("blood_pressure", "120", "null").unwrap_err().code(),
            "schema_mismatch"
        );
        assert_eq!(
            one("weight", "\"heavy\"", "null").unwrap_err().code(),
            "schema_mismatch"
        );
        // Without the device id the message is refused whole (the hub id never stands in).
        let set = super::bundled();
        let e = set
            .by_name("tenovi")
            .unwrap()
            .decode(
                "vendor/tenovi/http",
                br#"{"metric":"pulse","hardware_uuid":"GW-1","value_1":70,"timestamp":"2026-01-31T07:42:10Z"}"#,
            )
            .unwrap_err();
        assert_eq!(e.code(), "schema_mismatch");
    }

    #[test]
    fn telli_readings() {
        let m = decode(
            "telli",
            r#"{"deviceId":"TL-88001","readingType":"blood_pressure","time":"1769845330000","data":{"systolic":128,"diastolic":79,"pulse":66,"arrhythmia":1}}"#,
        );
        assert_eq!(m.device_id.as_deref(), Some("TL-88001"));
        let r = m.measurements[0].as_ref().unwrap();
        assert_eq!(r.time, Some(utc("2026-01-31T07:42:10Z")));
        assert_eq!(r.components.len(), 3);
        assert_eq!(r.components[2].metric, Metric::PulseRate);
        assert_eq!(r.annotations["irregular_pulse"], "true");
        let w = decode(
            "telli",
            r#"{"deviceId":"TL-88002","readingType":"weight","time":"1769845330000","data":{"weight":176.4,"unit":"lbs"}}"#,
        );
        let w = w.measurements[0].as_ref().unwrap();
        assert_eq!(w.components[0].unit.as_deref(), Some("lbs"));
        let bad = decode(
            "telli",
            r#"{"deviceId":"TL-88002","readingType":"ecg","time":"1769845330000","data":{}}"#,
        );
        assert!(bad.measurements[0].is_err());
        let bad_time = decode(
            "telli",
            r#"{"deviceId":"TL-88002","readingType":"weight","time":"yesterday","data":{"weight":80,"unit":"kg"}}"#,
        );
        assert!(bad_time.measurements[0].is_err());
    }

    #[test]
    fn when_needs_select() {
        let text = "name = \"x\"\ntopic = \"a/{device_id}\"\nformat = \"json\"\n[json]\n[[json.values]]\nmetric = \"spo2\"\npath = \"s\"\nwhen = \"o\"\n";
        let e = super::Profile::from_toml(text, std::path::Path::new("x.toml")).unwrap_err();
        assert_eq!(e.field, "json.select", "{e}");
    }
}
