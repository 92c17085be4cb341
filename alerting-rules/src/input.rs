//! Replay input formats: CSV and JSON lines.
//!
//! Columns (CSV header names, JSON keys): `patient`, `care_plan`, `metric`,
//! `value`, `unit`, `measured_at`, optional `received_at`, optional
//! `reading_id`. Times are RFC 3339. `care_plan` may list several plans
//! separated by `;` or `|`. Units go through
//! `device_profiles::units::to_canonical`, so `lb`, `mmol/L`, `°F` and the
//! other device spellings work, and a missing unit is accepted only where
//! the gateway accepts it for readings. CSV fields are plain (no quoting).

use chrono::{DateTime, Utc};
use device_profiles::units::to_canonical;
use device_profiles::Metric;
use serde::Deserialize;

use crate::replay::ReplayReading;

/// A line of replay input that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct InputError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// All the problems of one input, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} bad line(s) in replay input:\n{}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct InputErrors(pub Vec<InputError>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    patient: String,
    #[serde(default)]
    care_plan: String,
    metric: String,
    value: f64,
    #[serde(default)]
    unit: Option<String>,
    measured_at: String,
    #[serde(default)]
    received_at: Option<String>,
    #[serde(default)]
    reading_id: Option<String>,
}

fn time(s: &str, field: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{field} `{s}`: {e} (expected RFC 3339, e.g. 2025-03-01T08:00:00Z)"))
}

fn convert(row: Row, line: usize) -> Result<ReplayReading, String> {
    let metric: Metric = row.metric.trim().parse().map_err(|e| format!("{e}"))?;
    if !row.value.is_finite() {
        return Err("value must be a finite number".to_string());
    }
    let value = to_canonical(metric, row.value, row.unit.as_deref()).map_err(|e| e.to_string())?;
    let measured_at = time(&row.measured_at, "measured_at")?;
    let received_at = match row
        .received_at
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(s) => Some(time(s, "received_at")?),
        None => None,
    };
    if row.patient.trim().is_empty() {
        return Err("patient is empty".to_string());
    }
    let care_plans = row
        .care_plan
        .split([';', '|'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    Ok(ReplayReading {
        patient: row.patient.trim().to_string(),
        care_plans,
        metric,
        value,
        measured_at,
        received_at,
        reading_id: row
            .reading_id
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("line-{line}")),
    })
}

/// Parses CSV with a header line. Blank lines and lines starting with `#`
/// are skipped.
pub fn parse_csv(text: &str) -> Result<Vec<ReplayReading>, InputErrors> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((_, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let columns: Vec<String> = header.split(',').map(|c| c.trim().to_string()).collect();
    let mut errs = Vec::new();
    for required in ["patient", "metric", "value", "measured_at"] {
        if !columns.iter().any(|c| c == required) {
            errs.push(InputError {
                line: 1,
                message: format!("missing column `{required}`"),
            });
        }
    }
    if !errs.is_empty() {
        return Err(InputErrors(errs));
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        let n = i + 1;
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != columns.len() {
            errs.push(InputError {
                line: n,
                message: format!("expected {} fields, found {}", columns.len(), fields.len()),
            });
            continue;
        }
        let mut obj = serde_json::Map::new();
        for (c, f) in columns.iter().zip(&fields) {
            if f.is_empty() {
                continue;
            }
            let v = if c == "value" {
                match f.parse::<f64>() {
                    Ok(x) => serde_json::Number::from_f64(x)
                        .map_or(serde_json::Value::Null, serde_json::Value::Number),
                    Err(_) => serde_json::Value::String((*f).to_string()),
                }
            } else {
                serde_json::Value::String((*f).to_string())
            };
            obj.insert(c.clone(), v);
        }
        match serde_json::from_value::<Row>(serde_json::Value::Object(obj)) {
            Ok(row) => match convert(row, n) {
                Ok(r) => out.push(r),
                Err(message) => errs.push(InputError { line: n, message }),
            },
            Err(e) => errs.push(InputError {
                line: n,
                message: e.to_string(),
            }),
        }
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(InputErrors(errs))
    }
}

/// Parses JSON lines: one object per line with the columns as keys
/// (`value` a number). Blank lines are skipped.
pub fn parse_json_lines(text: &str) -> Result<Vec<ReplayReading>, InputErrors> {
    let mut out = Vec::new();
    let mut errs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let n = i + 1;
        let de = &mut serde_json::Deserializer::from_str(line);
        match serde_path_to_error::deserialize::<_, Row>(de) {
            Ok(row) => match convert(row, n) {
                Ok(r) => out.push(r),
                Err(message) => errs.push(InputError { line: n, message }),
            },
            Err(e) => errs.push(InputError {
                line: n,
                message: format!("{}: {}", e.path(), e.inner()),
            }),
        }
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(InputErrors(errs))
    }
}
