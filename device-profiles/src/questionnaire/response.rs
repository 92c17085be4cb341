//! A questionnaire response: read (FHIR `QuestionnaireResponse` or the
//! plain JSON form), validated against its definition, scored.
//!
//! Everything a response can get wrong is a typed [`Reject`] (unknown
//! questionnaire, a version not loaded, an unknown linkId, an answer not
//! among the options, a required item unanswered, a bad time), so that it
//! is quarantined with its bytes like a bad reading.
//!
//! A response's identity is its `identifier` (system and value) where it
//! has one, else a digest of questionnaire, version, subject and authored
//! time: the same response sent twice, over any path, is stored once, and
//! its readings' ids derive from it.

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::load::QuestionnaireSet;
use super::model::{ItemKind, Questionnaire};
use super::scoring::{score, Score};
use crate::canonical::{stable_id, Reading, ReadingGroup, Source, ENTRY_ANNOTATION, MANUAL_ENTRY};
use crate::metric::Metric;
use crate::reject::Reject;

/// The device id of readings from a response that names no device (a
/// patient answering in an app or a portal).
pub const SELF_REPORT_DEVICE: &str = "self-report";

/// The two forms a response arrives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    /// A FHIR R4 `QuestionnaireResponse` (JSON).
    Fhir,
    /// The plain JSON form (see [`ResponseInput::from_plain`]).
    Plain,
}

/// One answer as sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A coded answer (`valueCoding`; in the plain form `{"code": ...}`).
    Coding {
        /// code system, if sent
        system: Option<String>,
        /// code
        code: String,
    },
    /// Yes/no.
    Boolean(bool),
    /// A whole number.
    Integer(i64),
    /// A number.
    Decimal(f64),
    /// Text (in the plain form also a choice item's code).
    Text(String),
}

/// Who answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// The patient, when the response names one.
    pub patient_id: Option<String>,
    /// The device (tablet, hub) it came through, when named.
    pub device_id: Option<String>,
}

/// A response as read, before validation.
#[derive(Debug, Clone)]
pub struct ResponseInput {
    /// Canonical URL of the questionnaire.
    pub questionnaire: String,
    /// Version, if the response names one.
    pub version: Option<String>,
    /// Business identifier (system, value).
    pub identifier: Option<(String, String)>,
    /// FHIR status (`completed`, `amended` are accepted).
    pub status: String,
    /// Who answered.
    pub subject: Subject,
    /// When it was answered, as sent.
    pub authored: String,
    /// Answers by linkId, in the order sent.
    pub answers: Vec<(String, Vec<Answer>)>,
}

fn malformed(detail: impl Into<String>) -> Reject {
    Reject::MalformedPayload {
        detail: detail.into(),
    }
}

fn shape(detail: impl Into<String>) -> Reject {
    Reject::SchemaMismatch {
        profile: "questionnaire-response".into(),
        detail: detail.into(),
    }
}

fn answer_of(v: &Value) -> Result<Answer, Reject> {
    if let Some(c) = v.get("valueCoding") {
        let code = c
            .get("code")
            .and_then(Value::as_str)
            .ok_or_else(|| shape("valueCoding without a code"))?;
        return Ok(Answer::Coding {
            system: c.get("system").and_then(Value::as_str).map(str::to_string),
            code: code.to_string(),
        });
    }
    if let Some(b) = v.get("valueBoolean").and_then(Value::as_bool) {
        return Ok(Answer::Boolean(b));
    }
    if let Some(i) = v.get("valueInteger").and_then(Value::as_i64) {
        return Ok(Answer::Integer(i));
    }
    if let Some(d) = v.get("valueDecimal").and_then(Value::as_f64) {
        return Ok(Answer::Decimal(d));
    }
    if let Some(s) = v.get("valueString").and_then(Value::as_str) {
        return Ok(Answer::Text(s.to_string()));
    }
    Err(shape(
        "an answer needs valueCoding, valueBoolean, valueInteger, valueDecimal or valueString",
    ))
}

fn collect_items(list: &[Value], out: &mut Vec<(String, Vec<Answer>)>) -> Result<(), Reject> {
    for it in list {
        let link_id = it
            .get("linkId")
            .and_then(Value::as_str)
            .ok_or_else(|| shape("an item without linkId"))?;
        let answers = match it.get("answer").and_then(Value::as_array) {
            Some(a) => a.iter().map(answer_of).collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        if let Some(children) = it.get("item").and_then(Value::as_array) {
            collect_items(children, out)?;
        }
        if !answers.is_empty() || it.get("item").is_none() {
            out.push((link_id.to_string(), answers));
        }
    }
    Ok(())
}

fn reference(v: &Value, key: &str, kind: &str) -> Option<String> {
    v.get(key)?
        .get("reference")?
        .as_str()?
        .strip_prefix(kind)?
        .strip_prefix('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl ResponseInput {
    /// Reads a response in `format`.
    pub fn parse(format: ResponseFormat, bytes: &[u8]) -> Result<ResponseInput, Reject> {
        match format {
            ResponseFormat::Fhir => Self::from_fhir(bytes),
            ResponseFormat::Plain => Self::from_plain(bytes),
        }
    }

    /// Reads a FHIR R4 `QuestionnaireResponse` (JSON). The patient is
    /// `subject` (`Patient/{id}`); the device it came through, if any, is
    /// `author` or `source` (`Device/{id}`).
    pub fn from_fhir(bytes: &[u8]) -> Result<ResponseInput, Reject> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        if v.get("resourceType").and_then(Value::as_str) != Some("QuestionnaireResponse") {
            return Err(shape("resourceType must be QuestionnaireResponse"));
        }
        let canonical = v
            .get("questionnaire")
            .and_then(Value::as_str)
            .ok_or_else(|| shape("questionnaire (canonical URL) is required"))?;
        let (url, version) = match canonical.split_once('|') {
            Some((u, ver)) => (u.to_string(), Some(ver.to_string())),
            None => (canonical.to_string(), None),
        };
        let identifier = v.get("identifier").and_then(|i| {
            Some((
                i.get("system")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                i.get("value")?.as_str()?.to_string(),
            ))
        });
        let mut answers = Vec::new();
        if let Some(items) = v.get("item").and_then(Value::as_array) {
            collect_items(items, &mut answers)?;
        }
        Ok(ResponseInput {
            questionnaire: url,
            version,
            identifier,
            status: v
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            subject: Subject {
                patient_id: reference(&v, "subject", "Patient"),
                device_id: reference(&v, "author", "Device")
                    .or_else(|| reference(&v, "source", "Device")),
            },
            authored: v
                .get("authored")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            answers,
        })
    }

    /// Reads the plain JSON form:
    /// `{"questionnaire": url, "version": v, "identifier": id, "patient_id": p,
    /// "device_id": d, "authored": t, "answers": {"linkId": value}}`, a value
    /// being a code (string) or `{"system", "code"}`, a boolean, a number
    /// or text.
    pub fn from_plain(bytes: &[u8]) -> Result<ResponseInput, Reject> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Plain {
            questionnaire: String,
            version: Option<String>,
            identifier: Option<String>,
            patient_id: Option<String>,
            device_id: Option<String>,
            authored: String,
            #[serde(default = "completed")]
            status: String,
            answers: Map<String, Value>,
        }
        fn completed() -> String {
            "completed".into()
        }
        let p: Plain = serde_json::from_slice(bytes).map_err(|e| {
            if e.is_data() {
                shape(e.to_string())
            } else {
                malformed(e.to_string())
            }
        })?;
        let answers = p
            .answers
            .into_iter()
            .map(|(link_id, v)| {
                let a = match v {
                    Value::Bool(b) => Answer::Boolean(b),
                    Value::Number(n) => match n.as_i64() {
                        Some(i) => Answer::Integer(i),
                        None => Answer::Decimal(n.as_f64().unwrap_or(f64::NAN)),
                    },
                    Value::String(s) => Answer::Text(s),
                    Value::Object(o) => Answer::Coding {
                        system: o.get("system").and_then(Value::as_str).map(str::to_string),
                        code: o
                            .get("code")
                            .and_then(Value::as_str)
                            .ok_or_else(|| {
                                shape(format!("answer `{link_id}`: an object needs a code"))
                            })?
                            .to_string(),
                    },
                    Value::Null | Value::Array(_) => {
                        return Err(shape(format!(
                            "answer `{link_id}`: a code, a boolean, a number or text"
                        )))
                    }
                };
                Ok((link_id, vec![a]))
            })
            .collect::<Result<Vec<_>, Reject>>()?;
        Ok(ResponseInput {
            questionnaire: p.questionnaire,
            version: p.version,
            identifier: p.identifier.map(|v| (String::new(), v)),
            status: p.status,
            subject: Subject {
                patient_id: p.patient_id.filter(|s| !s.is_empty()),
                device_id: p.device_id.filter(|s| !s.is_empty()),
            },
            authored: p.authored,
            answers,
        })
    }
}

/// A response validated and scored.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Stable identity (see the module's text).
    pub response_id: String,
    /// The definition it answers.
    pub questionnaire: Arc<Questionnaire>,
    /// Who answered.
    pub subject: Subject,
    /// When it was answered.
    pub authored: DateTime<Utc>,
    /// The scores (with `None` where too many items were unanswered).
    pub scores: Vec<Score>,
    /// What becomes readings: the scores that have a value and the single
    /// answers the definition marks.
    pub values: Vec<(Metric, f64)>,
    /// The response as a FHIR `QuestionnaireResponse` (without `subject`,
    /// which is known once the device is resolved to its patient).
    pub resource: Value,
}

/// Clock limits for `authored`, as for a device's measured-at.
#[derive(Debug, Clone, Copy)]
pub struct TimeLimits {
    /// Further ahead of receipt than this is refused.
    pub max_future: Duration,
    /// Further behind receipt than this is refused.
    pub max_age: Duration,
}

impl QuestionnaireSet {
    /// Validates and scores a response against its definition.
    pub fn accept(
        &self,
        input: &ResponseInput,
        received_at: DateTime<Utc>,
        limits: TimeLimits,
    ) -> Result<Accepted, Reject> {
        let q = self.find(&input.questionnaire, input.version.as_deref())?;
        if !matches!(input.status.as_str(), "completed" | "amended") {
            return Err(shape(format!(
                "status `{}`: only completed (or amended) responses are taken",
                input.status
            )));
        }
        if input.subject.patient_id.is_none() && input.subject.device_id.is_none() {
            return Err(shape("the response names neither a patient nor a device"));
        }
        let authored = parse_time(&input.authored)?;
        let ahead = authored - received_at;
        if ahead > limits.max_future {
            return Err(Reject::FutureTimestamp {
                seconds: ahead.num_seconds(),
                limit: limits.max_future.num_seconds(),
            });
        }
        let behind = received_at - authored;
        if behind > limits.max_age {
            return Err(Reject::AncientTimestamp {
                days: behind.num_days(),
                limit: limits.max_age.num_days(),
            });
        }
        let mut item_scores = BTreeMap::new();
        let mut out_items = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (link_id, answers) in &input.answers {
            let item = q.item(link_id).ok_or_else(|| Reject::UnknownItem {
                questionnaire: q.name.clone(),
                link_id: link_id.clone(),
            })?;
            let invalid = |detail: String| Reject::InvalidAnswer {
                link_id: link_id.clone(),
                detail,
            };
            if !seen.insert(link_id.as_str()) {
                return Err(invalid("answered twice".into()));
            }
            if item.kind == ItemKind::Display {
                return Err(invalid("a display item has no answer".into()));
            }
            let answer = match answers.as_slice() {
                [] => continue,
                [a] => a,
                _ => {
                    return Err(invalid(
                        "more than one answer to a single-answer item".into(),
                    ))
                }
            };
            let (fhir, value) = match (item.kind, answer) {
                (ItemKind::Choice, Answer::Coding { code, .. } | Answer::Text(code)) => {
                    let system = match answer {
                        Answer::Coding { system, .. } => system.as_deref(),
                        _ => None,
                    };
                    let o = item
                        .options
                        .iter()
                        .find(|o| {
                            &o.code == code
                                && (system.is_none()
                                    || o.system.is_none()
                                    || system == o.system.as_deref())
                        })
                        .ok_or_else(|| {
                            invalid(format!(
                                "`{code}` is not one of the options ({})",
                                item.options
                                    .iter()
                                    .map(|o| o.code.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        })?;
                    let mut c = json!({"code": o.code, "display": o.display});
                    if let Some(s) = &o.system {
                        c["system"] = json!(s);
                    }
                    (json!({"valueCoding": c}), o.ordinal)
                }
                (ItemKind::Boolean, Answer::Boolean(b)) => {
                    (json!({"valueBoolean": b}), Some(if *b { 1.0 } else { 0.0 }))
                }
                (ItemKind::Integer, Answer::Integer(i)) => {
                    let v = *i as f64;
                    check_bounds(item.min, item.max, v).map_err(invalid)?;
                    (json!({"valueInteger": i}), Some(v))
                }
                (ItemKind::Decimal, Answer::Integer(_) | Answer::Decimal(_)) => {
                    let v = match answer {
                        Answer::Integer(i) => *i as f64,
                        Answer::Decimal(d) => *d,
                        _ => f64::NAN,
                    };
                    if !v.is_finite() {
                        return Err(invalid("not a finite number".into()));
                    }
                    check_bounds(item.min, item.max, v).map_err(invalid)?;
                    (json!({"valueDecimal": v}), Some(v))
                }
                (ItemKind::Text, Answer::Text(s)) => (json!({"valueString": s}), None),
                (kind, a) => {
                    return Err(invalid(format!(
                        "a {} item cannot take {}",
                        kind_name(kind),
                        answer_name(a)
                    )))
                }
            };
            if let Some(v) = value {
                item_scores.insert(link_id.clone(), v);
            }
            let mut entry = json!({"linkId": link_id, "answer": [fhir]});
            if !item.text.is_empty() {
                entry["text"] = json!(item.text);
            }
            out_items.push((link_id.clone(), entry));
        }
        if let Some(missing) = q
            .items
            .iter()
            .find(|i| i.required && !out_items.iter().any(|(l, _)| *l == i.link_id))
        {
            return Err(Reject::MissingAnswer {
                link_id: missing.link_id.clone(),
            });
        }
        let scores = score(&q, &item_scores);
        let mut values: Vec<(Metric, f64)> = scores
            .iter()
            .filter_map(|s| s.value.map(|v| (s.metric, v)))
            .collect();
        for i in &q.items {
            if let (Some(m), Some(v)) = (i.reading, item_scores.get(&i.link_id)) {
                values.push((m, *v));
            }
        }
        for (metric, v) in &values {
            let (lo, hi) = metric.plausible_range();
            if !(lo..=hi).contains(v) {
                return Err(Reject::Implausible {
                    metric: *metric,
                    value: *v,
                    unit: metric.canonical_unit().ucum(),
                    low: lo,
                    high: hi,
                });
            }
        }
        let authored_text = authored.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let response_id = match &input.identifier {
            Some((system, value)) => stable_id(&["qr-identifier", system, value]),
            None => stable_id(&[
                "qr",
                &q.url,
                &q.version,
                input.subject.patient_id.as_deref().unwrap_or_default(),
                input.subject.device_id.as_deref().unwrap_or_default(),
                &authored_text,
            ]),
        };
        // Items in the definition's order, as FHIR expects.
        let ordered: Vec<Value> = q
            .items
            .iter()
            .filter_map(|i| {
                out_items
                    .iter()
                    .find(|(l, _)| *l == i.link_id)
                    .map(|(_, e)| e.clone())
            })
            .collect();
        let mut resource = json!({
            "resourceType": "QuestionnaireResponse",
            "id": response_id,
            "questionnaire": format!("{}|{}", q.url, q.version),
            "status": input.status,
            "authored": authored_text,
            "item": ordered,
        });
        if let Some((system, value)) = &input.identifier {
            let mut id = json!({"value": value});
            if !system.is_empty() {
                id["system"] = json!(system);
            }
            resource["identifier"] = id;
        }
        if let Some(d) = &input.subject.device_id {
            resource["author"] = json!({"reference": format!("Device/{d}")});
        }
        Ok(Accepted {
            response_id,
            questionnaire: q,
            subject: input.subject.clone(),
            authored,
            scores,
            values,
            resource,
        })
    }
}

fn check_bounds(min: Option<f64>, max: Option<f64>, v: f64) -> Result<(), String> {
    if min.is_some_and(|m| v < m) || max.is_some_and(|m| v > m) {
        return Err(format!(
            "{v} is outside {}..={}",
            min.map_or("".into(), |m| m.to_string()),
            max.map_or("".into(), |m| m.to_string())
        ));
    }
    Ok(())
}

fn kind_name(k: ItemKind) -> &'static str {
    match k {
        ItemKind::Choice => "choice",
        ItemKind::Boolean => "boolean",
        ItemKind::Integer => "integer",
        ItemKind::Decimal => "decimal",
        ItemKind::Text => "text",
        ItemKind::Display => "display",
    }
}

fn answer_name(a: &Answer) -> &'static str {
    match a {
        Answer::Coding { .. } => "a coding",
        Answer::Boolean(_) => "a boolean",
        Answer::Integer(_) => "an integer",
        Answer::Decimal(_) => "a decimal",
        Answer::Text(_) => "text",
    }
}

/// `authored` must be a full date-time with a zone: a date alone cannot
/// place a daily check-in in a day of the patient's.
fn parse_time(s: &str) -> Result<DateTime<Utc>, Reject> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Reject::InvalidTimestamp {
            detail: format!("authored `{s}`: {e} (a date-time with a zone is required)"),
        })
}

impl Accepted {
    /// The readings this response becomes, for `patient_id`: one group
    /// (id: the response id), measured at the authored time, annotated as
    /// typed in by a person (never device data in the RPM report) and with
    /// the questionnaire and response they come from.
    pub fn readings(
        &self,
        patient_id: &str,
        received_at: DateTime<Utc>,
        source: Source,
    ) -> ReadingGroup {
        let device_id = self
            .subject
            .device_id
            .clone()
            .unwrap_or_else(|| SELF_REPORT_DEVICE.to_string());
        let mut annotations = BTreeMap::new();
        annotations.insert(ENTRY_ANNOTATION.to_string(), MANUAL_ENTRY.to_string());
        annotations.insert(
            "questionnaire".to_string(),
            format!("{}|{}", self.questionnaire.url, self.questionnaire.version),
        );
        annotations.insert("response_id".to_string(), self.response_id.clone());
        let readings = self
            .values
            .iter()
            .map(|(metric, value)| Reading {
                reading_id: stable_id(&["qr-reading", &self.response_id, metric.name()]),
                group_id: self.response_id.clone(),
                patient_id: patient_id.to_string(),
                device_id: device_id.clone(),
                metric: *metric,
                value: *value,
                unit: metric.canonical_unit().ucum().to_string(),
                loinc: metric.loinc().to_string(),
                device_measured_at: Some(self.authored),
                measured_at: self.authored,
                received_at,
                source,
                sequence: None,
                annotations: annotations.clone(),
                content_digest: None,
            })
            .collect();
        ReadingGroup {
            group_id: self.response_id.clone(),
            panel: None,
            readings,
        }
    }
}
