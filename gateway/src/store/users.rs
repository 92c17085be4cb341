//! Console users, their sessions and their failed sign-ins.
//!
//! People sign in to the web console with a username and a password; the
//! password is kept as an Argon2id PHC string made by the console (this
//! module only stores it). A user's role and care teams mean exactly what
//! an API token's mean, so the console authorizes with the API's rules.
//! A session is 256 random bits in a cookie, stored as their SHA-256 (a
//! copy of the store signs nobody in), with the time it was last used (the
//! idle sign-out) and the CSRF token of its forms. Failed sign-ins are
//! counted per username, known or not, so that a lock-out says nothing
//! about which names exist.

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::tokens::Role;
use super::StoreError;

/// A console user as stored (never the password hash).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserRecord {
    /// Sign-in name; the audit log's actor is `user:NAME`.
    pub username: String,
    /// What the user may do (as for API tokens; never `ingest`).
    pub role: Role,
    /// Care teams (role `care_team`).
    pub care_teams: Vec<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Disabled, if so: the user cannot sign in and their sessions end.
    pub disabled_at: Option<DateTime<Utc>>,
}

/// User changes that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// Store trouble.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request does not make sense.
    #[error("{0}")]
    Invalid(String),
}

impl From<rusqlite::Error> for UserError {
    fn from(e: rusqlite::Error) -> Self {
        UserError::Store(e.into())
    }
}

fn t(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(|m| Utc.timestamp_millis_opt(m).single())
}

const COLUMNS: &str = "username, role, care_teams, created_at, disabled_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    let role: String = r.get(1)?;
    Ok(UserRecord {
        username: r.get(0)?,
        // An unknown role (a newer gateway wrote it) grants nothing beyond reading.
        role: role.parse().unwrap_or(Role::ReadOnly),
        care_teams: serde_json::from_str(&r.get::<_, String>(2)?).unwrap_or_default(),
        created_at: t(Some(r.get(3)?)).unwrap_or_default(),
        disabled_at: t(r.get(4)?),
    })
}

/// Checks a username: 1 to 64 of letters, digits, `.`, `_`, `-`, `@`.
pub fn check_username(name: &str) -> Result<(), UserError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err(UserError::Invalid(
            "a username is 1 to 64 letters, digits, `.`, `_`, `-` or `@`".into(),
        ));
    }
    Ok(())
}

/// Creates a user with a password hash made by the caller. A `care_team`
/// user needs at least one team; other roles take none; `ingest` is for
/// machines and has no console.
pub fn create(
    conn: &Connection,
    username: &str,
    role: Role,
    teams: &[String],
    password_hash: &str,
) -> Result<UserRecord, UserError> {
    check_username(username)?;
    match (role, teams.is_empty()) {
        (Role::Ingest, _) => {
            return Err(UserError::Invalid(
                "role ingest is for devices and has no console; use admin, read_only or care_team"
                    .into(),
            ))
        }
        (Role::CareTeam, true) => {
            return Err(UserError::Invalid(
                "a care_team user needs at least one --team".into(),
            ))
        }
        (Role::CareTeam, false) => {}
        (_, false) => {
            return Err(UserError::Invalid(format!(
                "--team applies to care_team users only, not {}",
                role.name()
            )))
        }
        (_, true) => {}
    }
    if teams.iter().any(|t| t.trim().is_empty()) {
        return Err(UserError::Invalid("a team name must not be empty".into()));
    }
    if get(conn, username)?.is_some() {
        return Err(UserError::Invalid(format!(
            "user `{username}` exists already"
        )));
    }
    conn.execute(
        "INSERT INTO console_users (username, password_hash, role, care_teams, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            username,
            password_hash,
            role.name(),
            serde_json::to_string(teams).map_err(|e| StoreError::Encode(e.to_string()))?,
            super::now_ms()
        ],
    )?;
    get(conn, username)?.ok_or_else(|| UserError::Invalid("user vanished".into()))
}

/// One user by name.
pub fn get(conn: &Connection, username: &str) -> Result<Option<UserRecord>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM console_users WHERE username = ?1"),
            [username],
            row,
        )
        .optional()?)
}

/// A user that may sign in, with their password hash.
pub fn credentials(
    conn: &Connection,
    username: &str,
) -> Result<Option<(UserRecord, String)>, StoreError> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {COLUMNS}, password_hash FROM console_users WHERE username = ?1 AND disabled_at IS NULL"
            ),
            [username],
            |r| Ok((row(r)?, r.get(5)?)),
        )
        .optional()?)
}

/// Every user, by name.
pub fn list(conn: &Connection) -> Result<Vec<UserRecord>, StoreError> {
    let mut q = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM console_users ORDER BY username"
    ))?;
    let rows = q.query_map([], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Disables a user and ends their sessions. False when there is no such
/// active user.
pub fn disable(conn: &Connection, username: &str) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE console_users SET disabled_at = ?2 WHERE username = ?1 AND disabled_at IS NULL",
        params![username, super::now_ms()],
    )?;
    conn.execute(
        "DELETE FROM console_sessions WHERE username = ?1",
        [username],
    )?;
    Ok(n == 1)
}

/// Sets a new password hash and ends the user's sessions (a changed
/// password signs every browser out). False when there is no such user.
pub fn set_password(
    conn: &Connection,
    username: &str,
    password_hash: &str,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE console_users SET password_hash = ?2 WHERE username = ?1",
        params![username, password_hash],
    )?;
    conn.execute(
        "DELETE FROM console_sessions WHERE username = ?1",
        [username],
    )?;
    conn.execute(
        "DELETE FROM console_login_failures WHERE username = ?1",
        [username],
    )?;
    Ok(n == 1)
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// SHA-256 (hex) of the cookie's secret.
    pub id_hash: String,
    /// Whose.
    pub username: String,
    /// Signed in at (ms).
    pub created_at: i64,
    /// Last request (ms): the idle sign-out counts from here.
    pub last_seen: i64,
    /// The CSRF token of the session's forms.
    pub csrf: String,
}

/// Records a new session.
pub fn session_create(conn: &Connection, s: &SessionRow) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO console_sessions (id_hash, username, created_at, last_seen, csrf) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![s.id_hash, s.username, s.created_at, s.last_seen, s.csrf],
    )?;
    Ok(())
}

/// A session with the user it belongs to, if both exist and the user is
/// not disabled.
pub fn session_get(
    conn: &Connection,
    id_hash: &str,
) -> Result<Option<(SessionRow, UserRecord)>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT s.id_hash, s.username, s.created_at, s.last_seen, s.csrf,
                    u.username, u.role, u.care_teams, u.created_at, u.disabled_at
             FROM console_sessions s JOIN console_users u ON u.username = s.username
             WHERE s.id_hash = ?1 AND u.disabled_at IS NULL",
        )?
        .query_row([id_hash], |r| {
            let role: String = r.get(6)?;
            Ok((
                SessionRow {
                    id_hash: r.get(0)?,
                    username: r.get(1)?,
                    created_at: r.get(2)?,
                    last_seen: r.get(3)?,
                    csrf: r.get(4)?,
                },
                UserRecord {
                    username: r.get(5)?,
                    role: role.parse().unwrap_or(Role::ReadOnly),
                    care_teams: serde_json::from_str(&r.get::<_, String>(7)?).unwrap_or_default(),
                    created_at: t(Some(r.get(8)?)).unwrap_or_default(),
                    disabled_at: t(r.get(9)?),
                },
            ))
        })
        .optional()?)
}

/// Notes a request of the session.
pub fn session_touch(conn: &Connection, id_hash: &str, now: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE console_sessions SET last_seen = ?2 WHERE id_hash = ?1")?
        .execute(params![id_hash, now])?;
    Ok(())
}

/// Ends a session.
pub fn session_delete(conn: &Connection, id_hash: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM console_sessions WHERE id_hash = ?1", [id_hash])?;
    Ok(())
}

/// Ends every session idle since `idle_before` or signed in before
/// `created_before`; returns how many.
pub fn session_prune(
    conn: &Connection,
    idle_before: i64,
    created_before: i64,
) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "DELETE FROM console_sessions WHERE last_seen < ?1 OR created_at < ?2",
        params![idle_before, created_before],
    )?)
}

/// Failed sign-ins of a username since its last success: (count, time of
/// the last one in ms).
pub fn failures(conn: &Connection, username: &str) -> Result<(u32, i64), StoreError> {
    Ok(conn
        .query_row(
            "SELECT failures, last_failure_at FROM console_login_failures WHERE username = ?1",
            [username],
            |r| Ok((r.get::<_, u32>(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, 0)))
}

/// Counts a failed sign-in; returns the new count.
pub fn record_failure(conn: &Connection, username: &str, now: i64) -> Result<u32, StoreError> {
    conn.execute(
        "INSERT INTO console_login_failures (username, failures, last_failure_at) VALUES (?1, 1, ?2)
         ON CONFLICT(username) DO UPDATE SET failures = failures + 1, last_failure_at = ?2",
        params![username, now],
    )?;
    Ok(failures(conn, username)?.0)
}

/// Forgets a username's failures (a successful sign-in).
pub fn clear_failures(conn: &Connection, username: &str) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM console_login_failures WHERE username = ?1",
        [username],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn users_sessions_and_failures_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let c = store.conn();
        let u = create(c, "nurse", Role::CareTeam, &["north".into()], "$argon2id$x").unwrap();
        assert_eq!(u.care_teams, vec!["north".to_string()]);
        assert!(create(c, "nurse", Role::Admin, &[], "h").is_err(), "taken");
        assert!(create(c, "x", Role::CareTeam, &[], "h").is_err());
        assert!(create(c, "x", Role::Ingest, &[], "h").is_err());
        assert!(create(c, "bad name", Role::Admin, &[], "h").is_err());
        let (_, hash) = credentials(c, "nurse").unwrap().unwrap();
        assert_eq!(hash, "$argon2id$x");
        let s = SessionRow {
            id_hash: "h1".into(),
            username: "nurse".into(),
            created_at: 10,
            last_seen: 10,
            csrf: "c".into(),
        };
        session_create(c, &s).unwrap();
        session_touch(c, "h1", 20).unwrap();
        let (got, user) = session_get(c, "h1").unwrap().unwrap();
        assert_eq!((got.last_seen, user.role), (20, Role::CareTeam));
        assert_eq!(record_failure(c, "nurse", 5).unwrap(), 1);
        assert_eq!(record_failure(c, "ghost", 6).unwrap(), 1);
        assert_eq!(record_failure(c, "nurse", 7).unwrap(), 2);
        assert_eq!(failures(c, "nurse").unwrap(), (2, 7));
        clear_failures(c, "nurse").unwrap();
        assert_eq!(failures(c, "nurse").unwrap(), (0, 0));
        assert!(disable(c, "nurse").unwrap());
        assert!(session_get(c, "h1").unwrap().is_none(), "sessions end");
        assert!(credentials(c, "nurse").unwrap().is_none());
        assert_eq!(session_prune(c, 0, 0).unwrap(), 0);
    }
}
