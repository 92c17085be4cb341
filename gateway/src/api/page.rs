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
use crate::store::StoreError;

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

/// A cursor made of a time and an id (`<ms>.<id>`), optional.
pub fn decode_time_id(cursor: Option<&str>) -> Result<Option<(i64, String)>, ApiError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let key = decode_cursor(cursor)?;
    key.split_once('.')
        .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_string())))
        .map(Some)
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

/// Optional Unix milliseconds as a time.
pub fn time_opt(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.map(time)
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

/// Reads one page of a patient-scoped list with `read`, which gets the
/// connection and the token's care-team scope (a JSON array, `None`: every
/// patient) and selects `limit + 1` rows of the patient asked for, if any.
/// Asking for a patient the token may not see is a 404 like the patient's
/// own routes, not an empty page; the patient asked for is the one the
/// request is audited under.
pub async fn scoped<T, R>(
    db: &Arc<Db>,
    p: Principal,
    patient: Option<String>,
    limit: usize,
    read: R,
) -> Result<(Option<AuditPatient>, Json<Page<T>>), ApiError>
where
    T: Keyed + Send + 'static,
    R: FnOnce(&rusqlite::Connection, Option<String>) -> Result<Vec<T>, StoreError> + Send + 'static,
{
    let asked = patient.clone();
    let rows = db
        .run(move |s| {
            if let Some(pt) = &asked {
                p.check_patient(s.conn(), pt, "patient")?;
            }
            Ok(read(s.conn(), p.scope_json())?)
        })
        .await?;
    Ok((
        patient.map(AuditPatient),
        Json(Page::new(rows, limit, Keyed::key)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::listing::Filter;

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
