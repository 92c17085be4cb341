//! The list endpoints' dynamic queries: WHERE clauses built from request
//! parameters, run with their parameters bound, never spliced.
//!
//! A list's filters are optional and combine freely, and a fixed statement
//! with `?n IS NULL OR ...` for each would keep SQLite from using the
//! indexes the keyset order needs; so the clauses present are joined into
//! one statement, numbered in order. The tables' owner modules build these
//! for their typed page functions (e.g. [`super::alerts::page`]).

use super::StoreError;

/// SQL parameters built alongside a dynamic WHERE clause.
#[derive(Default)]
pub struct Filter {
    clauses: Vec<String>,
    /// The parameters, in `?n` order.
    pub params: Vec<rusqlite::types::Value>,
}

impl Filter {
    /// Adds a clause whose single parameter is written `?` in `sql`.
    pub fn add(&mut self, sql: &str, value: impl Into<rusqlite::types::Value>) {
        self.params.push(value.into());
        let n = self.params.len();
        self.clauses.push(sql.replace('?', &format!("?{n}")));
    }

    /// Adds a clause with two parameters written `?a` and `?b`.
    pub fn add2(
        &mut self,
        sql: &str,
        a: impl Into<rusqlite::types::Value>,
        b: impl Into<rusqlite::types::Value>,
    ) {
        self.params.push(a.into());
        let na = self.params.len();
        self.params.push(b.into());
        let nb = self.params.len();
        self.clauses.push(
            sql.replace("?a", &format!("?{na}"))
                .replace("?b", &format!("?{nb}")),
        );
    }

    /// Limits `column` to the patients of a care-team scope (if any).
    pub fn scope(&mut self, column: &str, scope_json: Option<String>) {
        if let Some(teams) = scope_json {
            self.add(
                &format!("{column} IN (SELECT patient_id FROM patients WHERE care_team IN (SELECT value FROM json_each(?)))"),
                teams,
            );
        }
    }

    /// `WHERE ...` (or nothing).
    pub fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// Runs `SELECT {head} {WHERE ...} ORDER BY {order} LIMIT {limit}` with
    /// this filter's parameters and maps every row.
    pub fn query<T>(
        &self,
        conn: &rusqlite::Connection,
        head: &str,
        order: &str,
        limit: usize,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let sql = format!(
            "SELECT {head} {} ORDER BY {order} LIMIT {limit}",
            self.sql()
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(self.params.iter()), row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
