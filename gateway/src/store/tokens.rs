//! API tokens: bearer credentials of the HTTP API, created and revoked with
//! the CLI (`rpm-gateway tokens ...`).
//!
//! Only a SHA-256 of a token is stored: a copy of the store does not hand
//! out credentials. The token itself is shown once, at creation. A token is
//! 32 random bytes, so a plain hash (no salt, no stretching) is enough: it
//! cannot be guessed from its hash, and a lookup by hash takes constant work.

use chrono::{DateTime, TimeZone, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{now_ms, StoreError};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, every patient.
    Admin,
    /// Reads everything, changes nothing.
    ReadOnly,
    /// Reads and acknowledges only the patients of its care teams.
    CareTeam,
    /// Pushes readings (`POST /api/v1/readings`) and nothing else: for
    /// devices and vendor clouds.
    Ingest,
}

impl Role {
    /// Stored name.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read_only",
            Role::CareTeam => "care_team",
            Role::Ingest => "ingest",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "read_only" | "read-only" => Ok(Role::ReadOnly),
            "care_team" | "care-team" => Ok(Role::CareTeam),
            "ingest" => Ok(Role::Ingest),
            other => Err(format!(
                "unknown role `{other}` (admin, read_only, care_team, ingest)"
            )),
        }
    }
}

/// A token as stored (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenRecord {
    /// Public id (`tok_...`), used in the audit log and to revoke it.
    pub token_id: String,
    /// A name for humans.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Care teams (role `care_team`).
    pub care_teams: Vec<String>,
    /// The only devices it may push for (role `ingest`; empty: any).
    pub devices: Vec<String>,
    /// The only profiles (vendors' formats) it may push with (role `ingest`; empty: any).
    pub profiles: Vec<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Revoked, if it is.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Last request made with it (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A created token: the record and the secret, shown once.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// What is stored.
    pub record: TokenRecord,
    /// The bearer token.
    pub secret: String,
}

/// Token creation failures.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Store trouble.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The system has no randomness to offer.
    #[error("no system randomness: {0}")]
    Random(String),
    /// The request does not make sense.
    #[error("{0}")]
    Invalid(String),
}

impl From<rusqlite::Error> for TokenError {
    fn from(e: rusqlite::Error) -> Self {
        TokenError::Store(e.into())
    }
}

/// Hex SHA-256 of a token, as stored.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_hex(bytes: usize) -> Result<String, TokenError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

fn t(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(|m| Utc.timestamp_millis_opt(m).single())
}

const COLUMNS: &str =
    "token_id, name, role, care_teams, created_at, revoked_at, last_used_at, devices, profiles";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    let role: String = r.get(2)?;
    Ok(TokenRecord {
        token_id: r.get(0)?,
        name: r.get(1)?,
        // An unknown role (a newer gateway wrote it) grants nothing beyond reading.
        role: role.parse().unwrap_or(Role::ReadOnly),
        care_teams: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
        created_at: t(Some(r.get(4)?)).unwrap_or_default(),
        revoked_at: t(r.get(5)?),
        last_used_at: t(r.get(6)?),
        devices: serde_json::from_str(&r.get::<_, String>(7)?).unwrap_or_default(),
        profiles: serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or_default(),
    })
}

/// Creates a token. A `care_team` token needs at least one team; other
/// roles take none.
#[cfg(test)]
pub fn create(
    conn: &Connection,
    name: &str,
    role: Role,
    teams: &[String],
) -> Result<NewToken, TokenError> {
    create_scoped(conn, name, role, teams, &IngestScope::default())
}

/// What an ingest token may push: these devices, with these profiles
/// (empty: any). A vendor cloud's token names its devices or its profile.
#[derive(Debug, Clone, Default)]
pub struct IngestScope {
    pub devices: Vec<String>,
    /// Profile names.
    pub profiles: Vec<String>,
}

/// [`create`], with an ingest scope (role `ingest` only).
pub fn create_scoped(
    conn: &Connection,
    name: &str,
    role: Role,
    teams: &[String],
    scope: &IngestScope,
) -> Result<NewToken, TokenError> {
    if role != Role::Ingest && !(scope.devices.is_empty() && scope.profiles.is_empty()) {
        return Err(TokenError::Invalid(
            "--device and --profile apply to ingest tokens only".into(),
        ));
    }
    if scope
        .devices
        .iter()
        .chain(&scope.profiles)
        .any(|d| d.trim().is_empty())
    {
        return Err(TokenError::Invalid(
            "a device or profile must not be empty".into(),
        ));
    }
    if name.trim().is_empty() {
        return Err(TokenError::Invalid("a token needs a name".into()));
    }
    match (role, teams.is_empty()) {
        (Role::CareTeam, true) => {
            return Err(TokenError::Invalid(
                "a care_team token needs at least one --team".into(),
            ))
        }
        (Role::CareTeam, false) => {}
        (_, false) => {
            return Err(TokenError::Invalid(format!(
                "--team applies to care_team tokens only, not {}",
                role.name()
            )))
        }
        (_, true) => {}
    }
    if teams.iter().any(|t| t.trim().is_empty()) {
        return Err(TokenError::Invalid("a team name must not be empty".into()));
    }
    let token_id = format!("tok_{}", random_hex(8)?);
    let secret = format!("rpmgw_{}", random_hex(32)?);
    let now = now_ms();
    conn.execute(
        "INSERT INTO api_tokens (token_id, name, token_hash, role, care_teams, created_at, devices, profiles) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            token_id,
            name,
            hash(&secret),
            role.name(),
            serde_json::to_string(teams).map_err(|e| StoreError::Encode(e.to_string()))?,
            now,
            serde_json::to_string(&scope.devices).map_err(|e| StoreError::Encode(e.to_string()))?,
            serde_json::to_string(&scope.profiles)
                .map_err(|e| StoreError::Encode(e.to_string()))?
        ],
    )?;
    let record =
        get(conn, &token_id)?.ok_or_else(|| StoreError::Encode("token vanished".into()))?;
    Ok(NewToken { record, secret })
}

/// One token by id.
pub fn get(conn: &Connection, token_id: &str) -> Result<Option<TokenRecord>, StoreError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM api_tokens WHERE token_id = ?1"),
            [token_id],
            row,
        )
        .optional()?)
}

/// Every token, oldest first.
pub fn list(conn: &Connection) -> Result<Vec<TokenRecord>, StoreError> {
    let mut q = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM api_tokens ORDER BY created_at, token_id"
    ))?;
    let rows = q.query_map([], row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Revokes a token. False when there is no such token or it was revoked already.
pub fn revoke(conn: &Connection, token_id: &str) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE api_tokens SET revoked_at = ?2 WHERE token_id = ?1 AND revoked_at IS NULL",
        params![token_id, now_ms()],
    )?;
    Ok(n == 1)
}

/// The live (not revoked) token with this secret, if any. Notes its use at
/// most once a minute, so that reads do not turn into writes.
pub fn authenticate(conn: &Connection, secret: &str) -> Result<Option<TokenRecord>, StoreError> {
    let found = conn
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM api_tokens WHERE token_hash = ?1 AND revoked_at IS NULL"
            ),
            [hash(secret)],
            row,
        )
        .optional()?;
    if let Some(tok) = &found {
        let now = now_ms();
        let stale = tok
            .last_used_at
            .is_none_or(|t| now - t.timestamp_millis() > 60_000);
        if stale {
            // Best effort: a busy store must not fail the request.
            let _ = conn.execute(
                "UPDATE api_tokens SET last_used_at = ?2 WHERE token_id = ?1",
                params![tok.token_id, now],
            );
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn created_token_authenticates_until_revoked_and_only_its_hash_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let c = store.conn();
        let t = create(c, "nurse", Role::CareTeam, &["north".into()]).unwrap();
        assert!(t.secret.starts_with("rpmgw_"));
        let stored: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM api_tokens WHERE token_hash = ?1",
                [&t.secret],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, 0, "the secret itself is never stored");
        let who = authenticate(c, &t.secret).unwrap().unwrap();
        assert_eq!(who.role, Role::CareTeam);
        assert_eq!(who.care_teams, vec!["north".to_string()]);
        assert!(authenticate(c, "rpmgw_nope").unwrap().is_none());
        assert!(revoke(c, &t.record.token_id).unwrap());
        assert!(!revoke(c, &t.record.token_id).unwrap());
        assert!(authenticate(c, &t.secret).unwrap().is_none());
        assert!(create(c, "x", Role::CareTeam, &[]).is_err());
        assert!(create(c, "x", Role::Admin, &["north".into()]).is_err());
        assert_eq!(list(c).unwrap().len(), 1);
    }
}
