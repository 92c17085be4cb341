//! Keyset pagination: a page of items and an opaque cursor for the next.
//!
//! Cursors name the last item's sort key (never an offset), so a page is
//! stable while new readings arrive, and deep pages cost no more than the
//! first. They are hex so clients treat them as opaque.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use std::sync::Arc;

use super::audit::AuditPatient;
use super::auth::Principal;
use super::config::ApiConfig;
use super::db::Db;
use super::problem::{ApiError, Json};
pub use crate::store::listing::Filter;

/// One page.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// From `rows` fetched with `limit + 1`: the extra row only says there
    /// is a next page.
    pub fn new(mut rows: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Page<T> {
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = if more {
            rows.last().map(|r| encode_cursor(&key(r)))
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

/// The page size asked for, checked against `api.max_page_size`.
pub fn limit(cfg: &ApiConfig, asked: Option<usize>) -> Result<usize, ApiError> {
    match asked {
        None => Ok(cfg.default_page_size),
        Some(0) => Err(ApiError::BadRequest("limit must be at least 1".into())),
        Some(n) if n > cfg.max_page_size => Err(ApiError::BadRequest(format!(
            "limit must be at most {}",
            cfg.max_page_size
        ))),
        Some(n) => Ok(n),
    }
}

/// Opaque form of a sort key.
pub fn encode_cursor(key: &str) -> String {
    hex::encode(key.as_bytes())
}

/// The sort key of a cursor.
pub fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    hex::decode(cursor)
        .ok()
        .filter(|b| b.len() <= 512)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))
}

/// A cursor made of two integers (time, sequence).
pub fn decode_pair(cursor: &str) -> Result<(i64, i64), ApiError> {
    let key = decode_cursor(cursor)?;
    key.split_once('.')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| ApiError::BadRequest("invalid cursor".into()))
}

/// Unix milliseconds as a time.
pub fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Parses an RFC 3339 time parameter to Unix milliseconds.
pub fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "{name}: `{value}` is not an RFC 3339 time like 2026-01-31T07:42:10Z"
            ))
        })
}

/// An item of a keyset-paged list.
pub trait Keyed {
    /// The item's sort key, which the cursor after it names.
    fn key(&self) -> String;
}

/// One list endpoint's query: `SELECT {head} {filter} ORDER BY {order}`,
/// fetched a page at a time. The list handlers differ only in their
/// filters; reading the page, and the care-team rules of patient-scoped
/// lists, live here once.
pub struct Listing {
    filter: Filter,
    head: String,
    order: &'static str,
    limit: usize,
}

impl Listing {
    /// `filter` holds the WHERE clauses built from the query parameters and
    /// the cursor; `head` is `columns FROM table ...`; `order` is the keyset
    /// order the cursor follows ([`Keyed::key`]).
    pub fn new(filter: Filter, head: String, order: &'static str, limit: usize) -> Listing {
        Listing {
            filter,
            head,
            order,
            limit,
        }
    }

    /// Reads one page.
    pub async fn page<T, R>(self, db: &Arc<Db>, row: R) -> Result<Page<T>, ApiError>
    where
        T: Keyed + Send + 'static,
        R: FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        self.page_checked(db, |_| Ok(()), row).await
    }

    /// Reads one page of a patient-scoped list: rows whose `patient_column`
    /// is a patient of the token's care teams, and only `patient`'s rows
    /// when one is asked for. Asking for a patient the token may not see is
    /// a 404 like the patient's own routes, not an empty page. The patient
    /// asked for is the one the request is audited under.
    pub async fn scoped_page<T, R>(
        mut self,
        db: &Arc<Db>,
        p: Principal,
        patient: Option<String>,
        patient_column: &str,
        row: R,
    ) -> Result<(Option<AuditPatient>, Json<Page<T>>), ApiError>
    where
        T: Keyed + Send + 'static,
        R: FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        if let Some(pt) = &patient {
            self.filter
                .add(&format!("{patient_column} = ?"), pt.clone());
        }
        self.filter.scope(patient_column, p.scope_json());
        let asked = patient.clone();
        let check = move |conn: &rusqlite::Connection| match &asked {
            Some(pt) => p.check_patient(conn, pt, "patient"),
            None => Ok(()),
        };
        let page = self.page_checked(db, check, row).await?;
        Ok((patient.map(AuditPatient), Json(page)))
    }

    /// Runs `check` and then the query, on one connection.
    async fn page_checked<T, C, R>(
        self,
        db: &Arc<Db>,
        check: C,
        row: R,
    ) -> Result<Page<T>, ApiError>
    where
        T: Keyed + Send + 'static,
        C: FnOnce(&rusqlite::Connection) -> Result<(), ApiError> + Send + 'static,
        R: FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T> + Send + 'static,
    {
        let Listing {
            filter,
            head,
            order,
            limit,
        } = self;
        let rows = db
            .run(move |s| {
                check(s.conn())?;
                Ok(filter.query(s.conn(), &head, order, limit + 1, row)?)
            })
            .await?;
        Ok(Page::new(rows, limit, T::key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_cursors() {
        let cfg = ApiConfig::default();
        assert_eq!(limit(&cfg, None).unwrap(), 100);
        assert!(limit(&cfg, Some(0)).is_err());
        assert!(limit(&cfg, Some(1001)).is_err());
        let p = Page::new(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(p.items, vec![1, 2]);
        assert_eq!(
            decode_cursor(p.next_cursor.as_deref().unwrap()).unwrap(),
            "2"
        );
        assert!(Page::new(vec![1, 2], 2, |n| n.to_string())
            .next_cursor
            .is_none());
        assert_eq!(decode_pair(&encode_cursor("5.7")).unwrap(), (5, 7));
        assert!(decode_pair(&encode_cursor("5")).is_err());
        assert!(decode_cursor("zz").is_err());
        let mut f = Filter::default();
        f.add("a = ?", 1);
        f.add2("(b, c) > (?a, ?b)", 2, 3);
        assert_eq!(f.sql(), "WHERE a = ?1 AND (b, c) > (?2, ?3)");
        assert!(parse_time("since", "2026-01-31T07:42:10+01:00").is_ok());
        assert!(parse_time("since", "2026-01-31").is_err());
    }
}
