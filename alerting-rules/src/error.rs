//! Load errors that point at the file, line and field, all at once.
//!
//! A program editing its packs should see every mistake of a rule set in one
//! run (the lesson of config validators that stop at the first error), each
//! with enough location to be fixed without guessing.

use std::fmt;
use std::ops::Range;

/// One problem in a rule or plan file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// File name (as given to the loader).
    pub file: String,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column (in characters); 0 when unknown.
    pub column: usize,
    /// Field path, e.g. `rule[2].threshold.limit` (empty for the whole file).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl LoadError {
    /// An error located by a byte span in `text`.
    pub fn at(
        file: &str,
        text: &str,
        span: Option<Range<usize>>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = span.map_or((0, 0), |s| line_col(text, s.start));
        LoadError {
            file: file.to_string(),
            line,
            column,
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for LoadError {}

/// The same place as the file-location error of every other file the
/// project loads (config, profiles, scenarios).
impl From<LoadError> for device_profiles::profile::FileError {
    fn from(e: LoadError) -> Self {
        device_profiles::profile::FileError {
            file: e.file.into(),
            line: e.line,
            column: e.column,
            field: e.field,
            message: e.message,
        }
    }
}

/// Every problem found while loading a rule set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors {
    /// The problems, in file and line order.
    pub errors: Vec<LoadError>,
}

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        writeln!(f, "{n} error{} in rule set:", if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

pub use device_profiles::profile::line_col;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns() {
        let t = "a\nbc\nd";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 2));
        assert_eq!(line_col(t, 5), (3, 1));
        assert_eq!(line_col(t, 99), (3, 2));
        let e = LoadError::at("x.toml", t, Some(3..4), "rule[0].id", "bad");
        assert_eq!(e.to_string(), "x.toml:2:2: rule[0].id: bad");
    }
}
