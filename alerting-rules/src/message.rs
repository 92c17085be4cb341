//! Message templates: `"Systolic {value} {unit} above {limit} {unit}"`.
//!
//! Templates are parsed and their placeholders checked at load time, so a
//! typo such as `{vaule}` is a load error with a line number, never a
//! message that reaches a clinician with a hole in it.
//!
//! Placeholders (values are shown in the unit the rule author wrote):
//!
//! | placeholder | meaning |
//! |---|---|
//! | `{value}` | the observed quantity of the primary leaf: the latest reading (threshold), the change (delta), the mean or median (average), the rate per day (slope), the silence (missing) |
//! | `{unit}` | unit of `{value}` and `{limit}` |
//! | `{limit}` | the effective limit (after per-patient overrides) |
//! | `{op}` | the comparison (`>`, `>=`, `<`, `<=`) |
//! | `{metric}` | metric name (`systolic`) |
//! | `{window}` | the window (`7d`) or `last 14` |
//! | `{count}` | number of readings used |
//! | `{baseline}` | the baseline value of a delta rule |
//! | `{details}` | one clause per leaf, e.g. `systolic 185 mm[Hg] > 180 mm[Hg]; diastolic 95 mm[Hg] (ok)` |
//! | `{severity}`, `{rule}` | the rule's severity and id |
//! | `{NAME.value}` etc. | the same fields for the leaf called NAME in an `all`/`any` rule |
//!
//! The primary leaf is the first breaching leaf (the first leaf when none
//! breaches). Write `{{` and `}}` for literal braces.

use std::collections::BTreeMap;

/// A parsed message template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Placeholder(String),
}

/// Fields a placeholder may name, per leaf.
pub const LEAF_FIELDS: &[&str] = &[
    "value", "unit", "limit", "op", "metric", "window", "count", "baseline",
];
/// Fields that are not per leaf.
pub const RULE_FIELDS: &[&str] = &["details", "severity", "rule"];

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{` without `}` or a stray `}`.
    #[error("unbalanced brace at character {0} (write {{{{ or }}}} for a literal brace)")]
    Unbalanced(usize),
    /// A name that is not a placeholder of this rule.
    #[error("unknown placeholder `{{{name}}}`; known: {known}")]
    Unknown {
        /// the name
        name: String,
        /// what would have been accepted
        known: String,
    },
}

impl Template {
    /// Parses `text` and checks every placeholder against `leaf_names` (the
    /// names of the rule's leaves; empty string for a single-leaf rule).
    pub fn parse(text: &str, leaf_names: &[String]) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '}')) => break,
                            Some((_, '{')) | None => return Err(TemplateError::Unbalanced(i)),
                            Some((_, c)) => name.push(c),
                        }
                    }
                    let name = name.trim().to_string();
                    if !is_known(&name, leaf_names) {
                        return Err(TemplateError::Unknown {
                            name,
                            known: known_list(leaf_names),
                        });
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Placeholder(name));
                }
                '}' => return Err(TemplateError::Unbalanced(i)),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(Template {
            text: text.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Fills the placeholders; a value missing from `values` renders as `?`
    /// (for example `{baseline}` of a rule whose baseline had no data).
    pub fn render(&self, values: &BTreeMap<String, String>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(s) => out.push_str(s),
                Part::Placeholder(name) => {
                    out.push_str(values.get(name).map_or("?", String::as_str))
                }
            }
        }
        out
    }
}

fn is_known(name: &str, leaf_names: &[String]) -> bool {
    if RULE_FIELDS.contains(&name) || LEAF_FIELDS.contains(&name) {
        return true;
    }
    match name.rsplit_once('.') {
        Some((leaf, field)) => {
            !leaf.is_empty() && leaf_names.iter().any(|l| l == leaf) && LEAF_FIELDS.contains(&field)
        }
        None => false,
    }
}

fn known_list(leaf_names: &[String]) -> String {
    let mut v: Vec<String> = RULE_FIELDS
        .iter()
        .chain(LEAF_FIELDS)
        .map(|s| format!("{{{s}}}"))
        .collect();
    for l in leaf_names.iter().filter(|l| !l.is_empty()) {
        v.push(format!("{{{l}.value}}"));
    }
    v.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_renders_and_checks() {
        let t = Template::parse(
            "Systolic {value} {unit} above {limit} {{x}}",
            &[String::new()],
        )
        .unwrap();
        let mut v = BTreeMap::new();
        v.insert("value".to_string(), "185".to_string());
        v.insert("unit".to_string(), "mm[Hg]".to_string());
        assert_eq!(t.render(&v), "Systolic 185 mm[Hg] above ? {x}");
        assert!(matches!(
            Template::parse("{vaule}", &[]),
            Err(TemplateError::Unknown { .. })
        ));
        assert!(matches!(
            Template::parse("{value", &[]),
            Err(TemplateError::Unbalanced(0))
        ));
        assert!(matches!(
            Template::parse("a } b", &[]),
            Err(TemplateError::Unbalanced(2))
        ));
        let names = vec!["weight".to_string(), "spo2".to_string()];
        assert!(Template::parse("{weight.value} {spo2.limit}", &names).is_ok());
        assert!(Template::parse("{pulse.value}", &names).is_err());
    }
}
