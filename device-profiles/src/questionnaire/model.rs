//! A loaded questionnaire, and how a FHIR `Questionnaire` becomes one.
//!
//! Only what scoring and validation need is modelled; the resource itself
//! is kept as loaded, so that `GET /fhir/Questionnaire` serves the file as
//! written (with its citations). Validation errors name the file, the line
//! and column of the item or extension at fault (JSON has no span-keeping
//! parser here, so the place is found by searching for the item's
//! `linkId` or the extension's value; the first match is reported).

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{
    MAX_VALUE_EXTENSION, MIN_VALUE_EXTENSION, ORDINAL_EXTENSION, READING_EXTENSION, SCORE_EXTENSION,
};
use crate::metric::Metric;
use crate::profile::{line_col, FileError};

/// A validated questionnaire definition.
#[derive(Debug, Clone)]
pub struct Questionnaire {
    /// Canonical URL: what a response's `questionnaire` names.
    pub url: String,
    /// Business version; a response for another version is refused.
    pub version: String,
    /// Computer-friendly name (used in messages and the API).
    pub name: String,
    /// Human title.
    pub title: String,
    /// The answerable items, groups flattened, in document order.
    pub items: Vec<Item>,
    /// The scores it yields.
    pub scores: Vec<ScoreDef>,
    /// Where it was loaded from.
    pub file: PathBuf,
    /// The resource as loaded.
    pub resource: Value,
}

/// The answer types supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// One of the answer options (`choice`, or R5's `coding`).
    Choice,
    /// Yes/no; scores 1/0.
    Boolean,
    /// A whole number; its value is its score.
    Integer,
    /// A number; its value is its score.
    Decimal,
    /// Free text (`string`, `text`): stored, never scored.
    Text,
    /// Instructions, not answerable.
    Display,
}

/// One question.
#[derive(Debug, Clone)]
pub struct Item {
    /// Identifier answers refer to.
    pub link_id: String,
    /// The question.
    pub text: String,
    /// Answer type.
    pub kind: ItemKind,
    /// A response without an answer to it is refused.
    pub required: bool,
    /// Answer options (choice items).
    pub options: Vec<AnswerOption>,
    /// Bounds of a numeric answer.
    pub min: Option<f64>,
    /// See `min`.
    pub max: Option<f64>,
    /// The reading the answer's score also becomes.
    pub reading: Option<Metric>,
}

/// One answer option of a choice item.
#[derive(Debug, Clone)]
pub struct AnswerOption {
    /// Code system, if the definition gives one.
    pub system: Option<String>,
    /// Code.
    pub code: String,
    /// Display text.
    pub display: String,
    /// Score (`ordinalValue`).
    pub ordinal: Option<f64>,
}

/// How a score combines its items' scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The sum; with missing answers (up to `max_missing`), prorated: the
    /// mean of the answered items times the number of items, rounded to
    /// the nearest whole number.
    Sum,
    /// The mean of the answered items.
    Mean,
    /// The highest item score (a zone: any red answer makes the day red).
    Max,
    /// The mean of the answered items, transformed to 0–100 over the
    /// items' range (as KCCQ-style scales are).
    Scaled,
    /// How many of the items have a score above 0.
    Count,
}

impl Method {
    fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "sum" => Method::Sum,
            "mean" => Method::Mean,
            "max" => Method::Max,
            "scaled" => Method::Scaled,
            "count" => Method::Count,
            _ => return None,
        })
    }
}

/// One score of a questionnaire (a total or a subscale).
#[derive(Debug, Clone)]
pub struct ScoreDef {
    /// The reading it becomes.
    pub metric: Metric,
    /// How items combine.
    pub method: Method,
    /// linkIds of the items it is computed from.
    pub items: Vec<String>,
    /// Most unanswered items that still give a score; with more there is
    /// no score (never a silent partial sum).
    pub max_missing: usize,
}

impl Questionnaire {
    /// The item with this linkId.
    pub fn item(&self, link_id: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.link_id == link_id)
    }

    /// Parses and validates a FHIR R4 `Questionnaire` in JSON.
    pub fn from_json(text: &str, file: &Path) -> Result<Questionnaire, FileError> {
        let resource: Value = serde_json::from_str(text).map_err(|e| FileError {
            file: file.to_path_buf(),
            line: e.line(),
            column: e.column(),
            field: "(document)".into(),
            message: e.to_string(),
        })?;
        let err = |needle: Option<&str>, field: &str, message: String| {
            let offset = needle.and_then(|n| find_json_string(text, n));
            let (line, column) = offset.map_or((0, 0), |o| line_col(text, o));
            FileError {
                file: file.to_path_buf(),
                line,
                column,
                field: field.to_string(),
                message,
            }
        };
        if resource.get("resourceType").and_then(Value::as_str) != Some("Questionnaire") {
            return Err(err(
                Some("resourceType"),
                "resourceType",
                "must be \"Questionnaire\"".into(),
            ));
        }
        let string = |key: &str| {
            resource
                .get(key)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let url = string("url").ok_or_else(|| {
            err(
                None,
                "url",
                "a canonical URL is required (responses name it)".into(),
            )
        })?;
        let version = string("version").ok_or_else(|| {
            err(
                Some("url"),
                "version",
                "a version is required (responses to another version are refused)".into(),
            )
        })?;
        let name = string("name").ok_or_else(|| err(Some("url"), "name", "is required".into()))?;
        let title = string("title").unwrap_or_else(|| name.clone());
        match resource.get("status").and_then(Value::as_str) {
            Some("draft" | "active" | "retired" | "unknown") => {}
            _ => {
                return Err(err(
                    Some("status"),
                    "status",
                    "must be draft, active, retired or unknown".into(),
                ))
            }
        }
        let mut items = Vec::new();
        let top = resource
            .get("item")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| err(None, "item", "at least one item is required".into()))?;
        flatten(top, "item", &mut items, &err)?;
        let mut seen = BTreeSet::new();
        for i in &items {
            if !seen.insert(i.link_id.as_str()) {
                return Err(err(
                    Some(&i.link_id),
                    "item.linkId",
                    format!("linkId `{}` is used twice", i.link_id),
                ));
            }
        }
        let mut scores = Vec::new();
        for (n, ext) in extensions(&resource, SCORE_EXTENSION).enumerate() {
            scores.push(score_def(ext, n, &items, &err)?);
        }
        let mut metrics = BTreeSet::new();
        let produced = scores
            .iter()
            .map(|s| s.metric)
            .chain(items.iter().filter_map(|i| i.reading));
        for m in produced {
            if !metrics.insert(m) {
                return Err(err(
                    Some(m.name()),
                    "extension",
                    format!("metric `{m}` is produced twice"),
                ));
            }
        }
        Ok(Questionnaire {
            url,
            version,
            name,
            title,
            items,
            scores,
            file: file.to_path_buf(),
            resource,
        })
    }
}

type ErrFn<'a> = dyn Fn(Option<&str>, &str, String) -> FileError + 'a;

fn extensions<'v>(v: &'v Value, url: &'static str) -> impl Iterator<Item = &'v Value> {
    v.get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |e| e.get("url").and_then(Value::as_str) == Some(url))
}

fn number(v: &Value) -> Option<f64> {
    v.get("valueDecimal")
        .or_else(|| v.get("valueInteger"))
        .and_then(Value::as_f64)
        .filter(|x| x.is_finite())
}

fn metric_of(code: Option<&str>, field: &str, err: &ErrFn<'_>) -> Result<Metric, FileError> {
    let code = code.ok_or_else(|| err(None, field, "needs a valueCode naming a metric".into()))?;
    let metric: Metric = code
        .parse()
        .map_err(|e: crate::metric::UnknownMetric| err(Some(code), field, e.to_string()))?;
    if !metric.is_reported() {
        return Err(err(
            Some(code),
            field,
            format!(
                "`{metric}` is a device measurement, not a questionnaire score (unit {{score}})"
            ),
        ));
    }
    Ok(metric)
}

fn flatten(
    list: &[Value],
    path: &str,
    out: &mut Vec<Item>,
    err: &ErrFn<'_>,
) -> Result<(), FileError> {
    for (n, v) in list.iter().enumerate() {
        let field = format!("{path}[{n}]");
        let link_id = v
            .get("linkId")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| err(None, &format!("{field}.linkId"), "is required".into()))?
            .to_string();
        let at = Some(link_id.as_str());
        let kind = match v.get("type").and_then(Value::as_str) {
            Some("group") => {
                let children = v
                    .get("item")
                    .and_then(Value::as_array)
                    .ok_or_else(|| err(at, &format!("{field}.item"), "a group needs items".into()))?;
                flatten(children, &format!("{field}.item"), out, err)?;
                continue;
            }
            Some("choice" | "coding") => ItemKind::Choice,
            Some("boolean") => ItemKind::Boolean,
            Some("integer") => ItemKind::Integer,
            Some("decimal") => ItemKind::Decimal,
            Some("string" | "text") => ItemKind::Text,
            Some("display") => ItemKind::Display,
            other => {
                return Err(err(
                    at,
                    &format!("{field}.type"),
                    format!(
                        "type {other:?} is not supported (choice, boolean, integer, decimal, string, text, display, group)"
                    ),
                ))
            }
        };
        if v.get("repeats").and_then(Value::as_bool) == Some(true) {
            return Err(err(
                at,
                &format!("{field}.repeats"),
                "repeating items are not supported".into(),
            ));
        }
        if v.get("enableWhen").is_some() {
            return Err(err(
                at,
                &format!("{field}.enableWhen"),
                "conditional items are not supported: a required item would be refused when hidden"
                    .into(),
            ));
        }
        let mut options = Vec::new();
        if let Some(list) = v.get("answerOption").and_then(Value::as_array) {
            for (k, o) in list.iter().enumerate() {
                let of = format!("{field}.answerOption[{k}]");
                let coding = o.get("valueCoding").ok_or_else(|| {
                    err(
                        at,
                        &of,
                        "answer options must be valueCoding (with a code)".into(),
                    )
                })?;
                let code = coding
                    .get("code")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        err(at, &format!("{of}.valueCoding.code"), "is required".into())
                    })?;
                let ordinal = match extensions(o, ORDINAL_EXTENSION).next() {
                    Some(e) => Some(number(e).ok_or_else(|| {
                        err(
                            Some(code),
                            &format!("{of}.extension"),
                            "ordinalValue needs a finite valueDecimal".into(),
                        )
                    })?),
                    None => None,
                };
                if options.iter().any(|p: &AnswerOption| p.code == code) {
                    return Err(err(
                        Some(code),
                        &of,
                        format!("code `{code}` is offered twice"),
                    ));
                }
                options.push(AnswerOption {
                    system: coding
                        .get("system")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    code: code.to_string(),
                    display: coding
                        .get("display")
                        .and_then(Value::as_str)
                        .unwrap_or(code)
                        .to_string(),
                    ordinal,
                });
            }
        }
        if kind == ItemKind::Choice && options.is_empty() {
            return Err(err(
                at,
                &format!("{field}.answerOption"),
                "a choice item needs answer options".into(),
            ));
        }
        let bound = |url: &'static str| extensions(v, url).next().and_then(number);
        let reading = match extensions(v, READING_EXTENSION).next() {
            Some(e) => Some(metric_of(
                e.get("valueCode").and_then(Value::as_str),
                &format!("{field}.extension"),
                err,
            )?),
            None => None,
        };
        let item = Item {
            text: v
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            required: v.get("required").and_then(Value::as_bool).unwrap_or(false),
            kind,
            options,
            min: bound(MIN_VALUE_EXTENSION),
            max: bound(MAX_VALUE_EXTENSION),
            reading,
            link_id,
        };
        if item.reading.is_some() && item.range().is_none() {
            return Err(err(
                Some(&item.link_id),
                &format!("{field}.extension"),
                "only a scored item (choice with ordinalValue on every option, boolean, bounded number) can become a reading".into(),
            ));
        }
        if item.kind == ItemKind::Display && item.required {
            return Err(err(
                Some(&item.link_id),
                &format!("{field}.required"),
                "a display item cannot be required".into(),
            ));
        }
        out.push(item);
    }
    Ok(())
}

impl Item {
    /// Lowest and highest score an answer can have; `None` for an item
    /// that is not scored (text, display, a choice without ordinals, an
    /// unbounded number).
    pub fn range(&self) -> Option<(f64, f64)> {
        match self.kind {
            ItemKind::Boolean => Some((0.0, 1.0)),
            ItemKind::Choice => {
                let ords: Option<Vec<f64>> = self.options.iter().map(|o| o.ordinal).collect();
                let ords = ords?;
                let lo = ords.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = ords.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                Some((lo, hi))
            }
            ItemKind::Integer | ItemKind::Decimal => Some((self.min?, self.max?)),
            ItemKind::Text | ItemKind::Display => None,
        }
    }
}

fn score_def(
    ext: &Value,
    n: usize,
    items: &[Item],
    err: &ErrFn<'_>,
) -> Result<ScoreDef, FileError> {
    let field = format!("extension[score {n}]");
    let parts: Vec<&Value> = ext
        .get("extension")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    fn part<'v, 'p>(
        parts: &'p [&'v Value],
        name: &'static str,
    ) -> impl Iterator<Item = &'v Value> + 'p {
        parts
            .iter()
            .copied()
            .filter(move |p| p.get("url").and_then(Value::as_str) == Some(name))
    }
    for p in &parts {
        let url = p.get("url").and_then(Value::as_str).unwrap_or_default();
        if !matches!(url, "metric" | "method" | "item" | "maxMissing" | "code") {
            return Err(err(
                Some(url),
                &field,
                format!("unknown part `{url}` (metric, method, item, maxMissing, code)"),
            ));
        }
    }
    let metric = metric_of(
        part(&parts, "metric")
            .next()
            .and_then(|p| p.get("valueCode"))
            .and_then(Value::as_str),
        &format!("{field}.metric"),
        err,
    )?;
    let at = Some(metric.name());
    let method_code = part(&parts, "method")
        .next()
        .and_then(|p| p.get("valueCode"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let method = Method::parse(method_code).ok_or_else(|| {
        err(
            Some(method_code).filter(|m| !m.is_empty()).or(at),
            &format!("{field}.method"),
            format!("method `{method_code}` is not one of sum, mean, max, scaled, count"),
        )
    })?;
    if let Some(coding) = part(&parts, "code")
        .next()
        .and_then(|p| p.get("valueCoding"))
    {
        let (system, code) = metric.coding();
        let given = (
            coding
                .get("system")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            coding
                .get("code")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        if given != (system, code) {
            return Err(err(
                Some(given.1),
                &format!("{field}.code"),
                format!(
                    "`{}|{}` is not the code of `{metric}` ({system}|{code})",
                    given.0, given.1
                ),
            ));
        }
    }
    let mut link_ids = Vec::new();
    for p in part(&parts, "item") {
        let id = p
            .get("valueString")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let item = items
            .iter()
            .find(|i| i.link_id == id)
            .ok_or_else(|| err(at, &format!("{field}.item"), format!("no item `{id}`")))?;
        if item.range().is_none() {
            return Err(err(
                Some(id),
                &format!("{field}.item"),
                format!("item `{id}` is not scored (needs ordinalValue on every option, boolean, or a bounded number)"),
            ));
        }
        if link_ids.iter().any(|l| l == id) {
            return Err(err(
                Some(id),
                &format!("{field}.item"),
                format!("item `{id}` is listed twice"),
            ));
        }
        link_ids.push(id.to_string());
    }
    if link_ids.is_empty() {
        return Err(err(
            at,
            &format!("{field}.item"),
            "a score needs at least one item".into(),
        ));
    }
    let max_missing = match part(&parts, "maxMissing").next() {
        Some(p) => p
            .get("valueInteger")
            .and_then(Value::as_u64)
            .and_then(|m| usize::try_from(m).ok())
            .ok_or_else(|| {
                err(
                    at,
                    &format!("{field}.maxMissing"),
                    "needs a valueInteger ≥ 0".into(),
                )
            })?,
        None => 0,
    };
    if max_missing >= link_ids.len() {
        return Err(err(
            at,
            &format!("{field}.maxMissing"),
            format!(
                "{max_missing} missing of {} items would allow a score from no answer",
                link_ids.len()
            ),
        ));
    }
    if method == Method::Scaled {
        let ranges: Vec<(f64, f64)> = link_ids
            .iter()
            .filter_map(|l| items.iter().find(|i| &i.link_id == l).and_then(Item::range))
            .collect();
        if ranges.windows(2).any(|w| w[0] != w[1]) || ranges.first().is_some_and(|r| r.0 >= r.1) {
            return Err(err(
                at,
                &format!("{field}.method"),
                "a scaled score needs items with one common range".into(),
            ));
        }
    }
    Ok(ScoreDef {
        metric,
        method,
        items: link_ids,
        max_missing,
    })
}

/// Byte offset of the JSON string `"needle"` in `text`.
fn find_json_string(text: &str, needle: &str) -> Option<usize> {
    let quoted = serde_json::to_string(needle).ok()?;
    text.find(&quoted)
}
