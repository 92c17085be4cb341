//! Load errors that point at the file, line and field, all at once.
//!
//! A program editing its packs should see every mistake of a rule set in one
//! run (the lesson of config validators that stop at the first error), each
//! with enough location to be fixed without guessing.

use std::fmt;

/// One problem in a rule or plan file: the project's one file-location
/// error, shared with the config, device profiles and scenarios.
pub use device_profiles::profile::FileError;

/// Every problem found while loading a rule set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors {
    /// The problems, in file and line order.
    pub errors: Vec<FileError>,
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
        let e = FileError::spanned("x.toml", t, Some(3..4), "rule[0].id", "bad");
        assert_eq!(e.to_string(), "x.toml:2:2: field `rule[0].id`: bad");
    }
}
