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
    /// One arm per value of a column (see [`Filter::split`]).
    split: Option<(String, std::collections::BTreeSet<String>)>,
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

    /// `WHERE ...` (or nothing; a split's arms are not in it).
    pub fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// Reads the rows as one arm per value of `column` (this filter and
    /// `column = value` each), merged in the query's order. Where an index
    /// leads with this filter's equalities and `column`, then the order,
    /// each arm is a range read in order and SQLite merges the arms as it
    /// reads them: no sort however many rows match, and the limit (or a
    /// reader that stops) ends the read. No values: no rows; a value given
    /// twice is read once.
    pub fn split(&mut self, column: &str, values: Vec<String>) {
        self.split = Some((column.to_string(), values.into_iter().collect()));
    }

    /// `SELECT {head} {WHERE ...} ORDER BY {order}` and its parameters,
    /// or `None` when a split has no values (no rows).
    pub fn statement(
        &self,
        head: &str,
        order: &str,
    ) -> Option<(String, Vec<rusqlite::types::Value>)> {
        let Some((column, values)) = &self.split else {
            return Some((
                format!("SELECT {head} {} ORDER BY {order}", self.sql()),
                self.params.clone(),
            ));
        };
        if values.is_empty() {
            return None;
        }
        let mut params = self.params.clone();
        let arms: Vec<String> = values
            .iter()
            .map(|v| {
                params.push(v.clone().into());
                let mut clauses = self.clauses.clone();
                clauses.push(format!("{column} = ?{}", params.len()));
                format!("SELECT {head} WHERE {}", clauses.join(" AND "))
            })
            .collect();
        Some((
            format!("{} ORDER BY {order}", arms.join(" UNION ALL ")),
            params,
        ))
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
        let Some((sql, params)) = self.statement(head, order) else {
            return Ok(Vec::new());
        };
        let mut stmt = conn.prepare(&format!("{sql} LIMIT {limit}"))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(params.iter()), row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
