//! Store maintenance that replaces the store file: encrypt a plain store,
//! decrypt one (support), and rekey (a new store key).
//!
//! Each writes a complete copy next to the store (`<store>.rewrite`, owner
//! only) with SQLCipher's `sqlcipher_export`, under the new key or none;
//! a rekey also re-seals the webhook secrets of the copy with the new key
//! (they are sealed with the store key, see [`secrets`]). The copy is then
//! checked (every table holds as many rows as the store, SQLite's
//! `quick_check` reads every page back, which checks every page's HMAC
//! for an encrypted one), synced, and renamed over the store: until the
//! rename the store is the old one with its old key, after it the new one
//! with its new key, everything opening with that key. The old `-wal` and
//! `-shm` go before the rename (SQLite would apply an old WAL to the new
//! file). Nothing of the old file is kept under its name; its blocks are
//! freed, not overwritten (see docs/security-at-rest.md).
//!
//! The gateway must not be running: these take the store's lock
//! exclusively and refuse while anything of the gateway has it open.

use rusqlite::{params, Connection, OpenFlags};
use std::path::{Path, PathBuf};

use super::cipher::{self, Format, Keying};
use super::files::{self, LockMode};
use super::secrets::{self, Key, KeySource};
use super::StoreError;

/// Why maintenance did not happen. The store is untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// `store encrypt` with encryption off in the configuration.
    #[error("encryption is off: set `encryption = true` under [store] first (the store is encrypted with the store key of the configuration, and the gateway then opens it with that key)")]
    EncryptionOff,
    /// `store decrypt` with encryption on in the configuration.
    #[error("encryption is on: set `encryption = false` under [store] first (the key is still read from the same place to open the encrypted store)")]
    EncryptionOn,
    /// Nothing to work on.
    #[error("there is no store at {}: a new store is created when the gateway starts (encrypted when `encryption = true`)", .0.display())]
    NoStore(PathBuf),
    /// The store is already in the wanted form.
    #[error("the store {} is already {}", .0.display(), .1)]
    Already(PathBuf, &'static str),
    /// Rekey to the key in use.
    #[error("the new key is the key in use: nothing to do")]
    SameKey,
    /// A sealed webhook secret does not open with the current key: a rekey
    /// would lose it.
    #[error("a secret of webhook endpoint `{0}` does not open with the current store key; a rekey would lose it: replace it first (`rpm-gateway webhooks rotate-secret {0}`, then `retire-secret {0}`)")]
    SecretUnopenable(String),
    /// The copy does not hold what the store holds.
    #[error(
        "the copy of table `{table}` holds {copied} row(s), the store {rows}: nothing was replaced"
    )]
    Lost {
        /// The table whose copy came out short, named so that the
        /// operator can look at it before retrying.
        table: String,
        /// Rows the store holds.
        rows: i64,
        /// Rows the copy holds.
        copied: i64,
    },
    /// SQLite's check of the copy failed.
    #[error("the copy does not pass SQLite's check ({0}): nothing was replaced")]
    Check(String),
    /// The copy could not be written, synced or put in place.
    #[error("{}: {source}", path.display())]
    Io {
        /// The copy, or the store it was to replace.
        path: PathBuf,
        /// The operating system's refusal (a full disk, permissions).
        source: std::io::Error,
    },
}

/// What a rewrite produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rewritten {
    /// Tables copied.
    pub tables: usize,
    /// Readings in the new file (as many as in the old one).
    pub readings: i64,
    /// Rows of all tables.
    pub rows: i64,
    /// Webhook endpoints whose secrets were re-sealed (rekey).
    pub resealed: usize,
    /// Size of the new file.
    pub bytes: u64,
}

/// The copy written next to the store.
fn rewrite_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".rewrite");
    PathBuf::from(p)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| {
        MaintenanceError::Io {
            path: path.to_path_buf(),
            source,
        }
        .into()
    }
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

/// The store at `path` in its current form, or an error when it is not
/// there or already `wanted`.
fn existing(path: &Path, wanted: Format) -> Result<Format, StoreError> {
    let format = Format::of(path)?;
    if format == Format::New {
        return Err(MaintenanceError::NoStore(path.to_path_buf()).into());
    }
    if format == wanted {
        return Err(MaintenanceError::Already(path.to_path_buf(), wanted.name()).into());
    }
    Ok(format)
}

/// Encrypts a plain store with this process's store key
/// (`encryption = true` in the configuration).
pub fn encrypt(path: &Path) -> Result<Rewritten, StoreError> {
    if !cipher::is_configured() {
        return Err(MaintenanceError::EncryptionOff.into());
    }
    let _lock = files::lock(path, LockMode::Exclusive)?;
    existing(path, Format::Encrypted)?;
    let to = Keying::store_key(path)?;
    rewrite(path, &Keying::Plain, &to, None)
}

/// Decrypts an encrypted store (`encryption = false` in the
/// configuration; the store key still comes from the same place).
pub fn decrypt(path: &Path) -> Result<Rewritten, StoreError> {
    if cipher::is_configured() {
        return Err(MaintenanceError::EncryptionOn.into());
    }
    let _lock = files::lock(path, LockMode::Exclusive)?;
    existing(path, Format::Plain)?;
    let from = Keying::store_key(path)?;
    rewrite(path, &from, &Keying::Plain, None)
}

/// What a rekey did.
#[derive(Debug, Clone)]
pub struct Rekeyed {
    /// The new store.
    pub rewritten: Rewritten,
    /// Whether the new key was made (and written to its file) here.
    pub key_made: bool,
}

/// Puts the store under the key in `new_key_file` (a new random key is
/// written there, owner-only, when the file does not exist): an encrypted
/// store is re-encrypted with it, and the sealed webhook secrets are
/// sealed again with it (a plain store only has those re-sealed). The
/// configuration must then give the new key. A key made here is removed
/// again when the rekey does not happen.
pub fn rekey(path: &Path, new_key_file: &Path) -> Result<Rekeyed, StoreError> {
    let _lock = files::lock(path, LockMode::Exclusive)?;
    if Format::of(path)? == Format::New {
        return Err(MaintenanceError::NoStore(path.to_path_buf()).into());
    }
    let from = Keying::configured(path)?;
    let (old_key, _) = secrets::store_key(path, false).map_err(cipher::CipherError::from)?;
    let (new_key, key_made) = if new_key_file.exists() {
        let key = secrets::read_key_file(new_key_file).map_err(cipher::CipherError::from)?;
        (key, false)
    } else {
        let key = secrets::random_key().map_err(cipher::CipherError::from)?;
        files::write_private(new_key_file, hex::encode(key).as_bytes())
            .map_err(io(new_key_file))?;
        (key, true)
    };
    let result = if old_key == new_key {
        Err(MaintenanceError::SameKey.into())
    } else {
        let to = match from {
            Keying::Plain => Keying::Plain,
            Keying::Encrypted { .. } => Keying::given(&new_key),
        };
        rewrite(path, &from, &to, Some((&old_key, &new_key)))
    };
    match result {
        Ok(rewritten) => Ok(Rekeyed {
            rewritten,
            key_made,
        }),
        Err(e) => {
            if key_made {
                let _ = std::fs::remove_file(new_key_file);
            }
            Err(e)
        }
    }
}

/// Writes the copy, checks it, and puts it in place of the store.
fn rewrite(
    path: &Path,
    from: &Keying,
    to: &Keying,
    reseal: Option<(&Key, &Key)>,
) -> Result<Rewritten, StoreError> {
    let tmp = rewrite_path(path);
    // What a crash left behind is an unfinished copy: never the store.
    remove_if_present(&tmp)?;
    remove_if_present(&sibling(&tmp, "-journal"))?;
    let src = cipher::connect(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        from,
    )?;
    src.busy_timeout(std::time::Duration::from_secs(10))?;
    let result = copy(&src, &tmp, to, reseal).and_then(|r| {
        check(&tmp, to)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io(&tmp))?;
        Ok(r)
    });
    let mut r = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            let _ = std::fs::remove_file(sibling(&tmp, "-journal"));
            return Err(e);
        }
    };
    // Everything of the old file into it, then closed: its WAL is empty
    // and, as the last connection, SQLite removes it.
    src.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    })?;
    src.close().map_err(|(_, e)| StoreError::Sqlite(e))?;
    for suffix in ["-wal", "-shm", "-journal"] {
        remove_if_present(&sibling(path, suffix))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    r.bytes = std::fs::metadata(path).map_err(io(path))?.len();
    Ok(r)
}

/// `sqlcipher_export` of the open store into a new file at `tmp`.
fn copy(
    src: &Connection,
    tmp: &Path,
    to: &Keying,
    reseal: Option<(&Key, &Key)>,
) -> Result<Rewritten, StoreError> {
    files::prepare(tmp)?;
    let name = tmp.to_str().ok_or_else(|| {
        io(tmp)(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the store path is not UTF-8",
        ))
    })?;
    src.execute(
        "ATTACH DATABASE ?1 AS rewrite KEY ?2",
        params![name, to.pragma_value()],
    )?;
    let r = (|| {
        src.query_row("SELECT sqlcipher_export('rewrite')", [], |_| Ok(()))?;
        let version: i64 = src.query_row("PRAGMA main.user_version", [], |r| r.get(0))?;
        src.execute_batch(&format!("PRAGMA rewrite.user_version = {version};"))?;
        let resealed = match reseal {
            Some((old, new)) => reseal_secrets(src, old, new)?,
            None => 0,
        };
        let tables: Vec<String> = src
            .prepare("SELECT name FROM main.sqlite_schema WHERE type = 'table' ORDER BY name")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut out = Rewritten {
            tables: tables.len(),
            readings: 0,
            rows: 0,
            resealed,
            bytes: 0,
        };
        for t in &tables {
            let q = t.replace('"', "\"\"");
            let rows: i64 =
                src.query_row(&format!("SELECT count(*) FROM main.\"{q}\""), [], |r| {
                    r.get(0)
                })?;
            let copied: i64 =
                src.query_row(&format!("SELECT count(*) FROM rewrite.\"{q}\""), [], |r| {
                    r.get(0)
                })?;
            if rows != copied {
                return Err(MaintenanceError::Lost {
                    table: t.clone(),
                    rows,
                    copied,
                }
                .into());
            }
            out.rows += rows;
            if t == "readings" {
                out.readings = rows;
            }
        }
        Ok(out)
    })();
    src.execute_batch("DETACH DATABASE rewrite;")?;
    r
}

/// Seals the webhook secrets of the copy with `new` (from the store's,
/// sealed with `old`, or plain). Returns how many endpoints.
fn reseal_secrets(src: &Connection, old: &Key, new: &Key) -> Result<usize, StoreError> {
    let rows: Vec<(String, String)> = src
        .prepare("SELECT endpoint_id, secrets FROM main.webhook_endpoints")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut update =
        src.prepare("UPDATE rewrite.webhook_endpoints SET secrets = ?2 WHERE endpoint_id = ?1")?;
    for (id, text) in &rows {
        let list: Vec<String> = serde_json::from_str(text)
            .map_err(|_| MaintenanceError::SecretUnopenable(id.clone()))?;
        let sealed = list
            .iter()
            .map(|s| -> Result<String, StoreError> {
                let plain = secrets::open_with(old, id, s)
                    .map_err(|_| MaintenanceError::SecretUnopenable(id.clone()))?;
                Ok(secrets::seal_with(new, id, &plain).map_err(cipher::CipherError::from)?)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let json = serde_json::to_string(&sealed).map_err(|e| StoreError::Encode(e.to_string()))?;
        update.execute(params![id, json])?;
    }
    Ok(rows.len())
}

/// Opens the copy as the gateway will, and has SQLite read every page.
fn check(tmp: &Path, to: &Keying) -> Result<(), StoreError> {
    let conn = cipher::connect(
        tmp,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        to,
    )?;
    let verdict: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        return Err(MaintenanceError::Check(verdict).into());
    }
    Ok(())
}

/// What `store status` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// The store file.
    pub path: PathBuf,
    /// `new`, `plain` or `encrypted`.
    pub format: &'static str,
    /// Size of the file (without its WAL).
    pub bytes: u64,
    /// `[store] encryption`.
    pub encryption: bool,
    /// Where the store key comes from (never the key).
    pub key_source: String,
    /// Whether the key is next to the store (it then protects copies of
    /// the file, not a stolen disk).
    pub key_next_to_store: bool,
    /// Whether the gateway can open the store as configured.
    pub opens: bool,
    /// Why not.
    pub error: Option<String>,
    /// The SQLCipher version linked in.
    pub sqlcipher: String,
}

/// The store's form and whether this configuration opens it. Opens
/// nothing for writing and creates nothing.
pub fn status(path: &Path) -> Result<Status, StoreError> {
    let format = Format::of(path)?;
    let source = secrets::source_for(path);
    let opened = match format {
        Format::New => Ok(()),
        _ => Keying::configured(path).and_then(|k| {
            cipher::connect(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                &k,
            )
            .map(drop)
        }),
    };
    Ok(Status {
        path: path.to_path_buf(),
        format: format.name(),
        bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        encryption: cipher::is_configured(),
        key_next_to_store: matches!(source, KeySource::NextToStore(_)),
        key_source: source.to_string(),
        opens: opened.is_ok(),
        error: opened.err().map(|e| e.to_string()),
        sqlcipher: cipher::version(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn fill(store: &Store, n: i64) {
        store
            .conn()
            .execute_batch("CREATE TABLE IF NOT EXISTS probe(id INTEGER PRIMARY KEY, v TEXT);")
            .unwrap();
        for i in 0..n {
            store
                .conn()
                .execute(
                    "INSERT INTO probe(v) VALUES (?1)",
                    [format!("patient-zebra-{i}")],
                )
                .unwrap();
        }
    }

    fn count(path: &Path, keying: &Keying) -> i64 {
        let c = cipher::connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY, keying).unwrap();
        c.query_row("SELECT count(*) FROM probe", [], |r| r.get(0))
            .unwrap()
    }

    fn contains(path: &Path, needle: &[u8]) -> bool {
        let bytes = std::fs::read(path).unwrap_or_default();
        bytes.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn plain_to_encrypted_to_rekeyed_keeps_every_row_and_refuses_old_keys() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let k1 = secrets::random_key().unwrap();
        let k2 = secrets::random_key().unwrap();
        {
            let store = Store::open_with(&db, &Keying::Plain).unwrap();
            fill(&store, 500);
        }
        assert!(contains(&db, b"patient-zebra-499"));
        let r = rewrite(&db, &Keying::Plain, &Keying::given(&k1), None).unwrap();
        assert_eq!(Format::of(&db).unwrap(), Format::Encrypted);
        assert!(r.rows >= 500 && r.bytes > 0, "{r:?}");
        assert!(!contains(&db, b"patient-zebra"));
        assert!(!sibling(&db, "-wal").exists() && !rewrite_path(&db).exists());
        assert_eq!(count(&db, &Keying::given(&k1)), 500);

        // The store as the gateway opens it: writes go to an encrypted WAL.
        {
            let store = Store::open_with(&db, &Keying::given(&k1)).unwrap();
            fill(&store, 10);
            assert!(sibling(&db, "-wal").exists());
            assert!(!contains(&sibling(&db, "-wal"), b"patient-zebra"));
            let e = Store::open_with(&db, &Keying::given(&k2))
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("does not open it"), "{e}");
            let e = Store::open_with(&db, &Keying::Plain)
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains("is encrypted but encryption is off"), "{e}");
        }
        rewrite(
            &db,
            &Keying::given(&k1),
            &Keying::given(&k2),
            Some((&k1, &k2)),
        )
        .unwrap();
        assert_eq!(count(&db, &Keying::given(&k2)), 510);
        assert!(matches!(
            cipher::connect(&db, OpenFlags::SQLITE_OPEN_READ_ONLY, &Keying::given(&k1)),
            Err(StoreError::Cipher(cipher::CipherError::WrongKey { .. }))
        ));

        rewrite(&db, &Keying::given(&k2), &Keying::Plain, None).unwrap();
        assert_eq!(Format::of(&db).unwrap(), Format::Plain);
        assert_eq!(count(&db, &Keying::Plain), 510);
        let e = Store::open_with(&db, &Keying::given(&k2))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("store encrypt"), "{e}");
    }

    #[test]
    fn rekey_reseals_webhook_secrets_with_the_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let k1 = secrets::random_key().unwrap();
        let k2 = secrets::random_key().unwrap();
        {
            let store = Store::open_with(&db, &Keying::given(&k1)).unwrap();
            let sealed = secrets::seal_with(&k1, "north", "whsec_north").unwrap();
            store
                .conn()
                .execute(
                    "INSERT INTO webhook_endpoints(endpoint_id, url, secrets, origin, created_at, updated_at)
                     VALUES ('north', 'https://example.org/h', ?1, 'cli', 0, 0)",
                    [serde_json::to_string(&[sealed, "whsec_plain".to_string()]).unwrap()],
                )
                .unwrap();
        }
        let r = rewrite(
            &db,
            &Keying::given(&k1),
            &Keying::given(&k2),
            Some((&k1, &k2)),
        )
        .unwrap();
        assert_eq!(r.resealed, 1);
        let c =
            cipher::connect(&db, OpenFlags::SQLITE_OPEN_READ_ONLY, &Keying::given(&k2)).unwrap();
        let text: String = c
            .query_row(
                "SELECT secrets FROM webhook_endpoints WHERE endpoint_id = 'north'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let list: Vec<String> = serde_json::from_str(&text).unwrap();
        let opened: Vec<String> = list
            .iter()
            .map(|s| secrets::open_with(&k2, "north", s).unwrap())
            .collect();
        assert_eq!(opened, ["whsec_north", "whsec_plain"]);
        assert!(list.iter().all(|s| s.starts_with(secrets::SEALED)));
        assert!(secrets::open_with(&k1, "north", &list[0]).is_err());

        // A secret the current key does not open stops the rekey; the
        // store is left as it was.
        let k3 = secrets::random_key().unwrap();
        let e = rewrite(
            &db,
            &Keying::given(&k2),
            &Keying::given(&k3),
            Some((&k1, &k3)),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("webhook endpoint `north`"), "{e}");
        assert!(!rewrite_path(&db).exists());
        drop(c);
        cipher::connect(&db, OpenFlags::SQLITE_OPEN_READ_ONLY, &Keying::given(&k2)).unwrap();
    }

    #[test]
    fn maintenance_waits_for_no_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let store = Store::open_with(&db, &Keying::Plain).unwrap();
        let new_key = dir.path().join("new.key");
        let e = rekey(&db, &new_key).unwrap_err().to_string();
        assert!(
            e.contains("in use") && e.contains("stop the gateway"),
            "{e}"
        );
        assert!(!new_key.exists());
        drop(store);
        let lock = files::lock(&db, LockMode::Exclusive).unwrap();
        let e = Store::open_with(&db, &Keying::Plain)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("maintenance"), "{e}");
        drop(lock);
    }
}
