//! Whole-store encryption at rest: SQLCipher.
//!
//! The gateway links SQLCipher (rusqlite's bundled build, its OpenSSL
//! built from source for the crypto only) instead of plain SQLite. With
//! `[store] encryption = true`, every page of the database and of its WAL
//! is encrypted (AES-256-CBC, an HMAC-SHA512 per page, SQLCipher 4
//! defaults); the `-shm` index holds no content, and temporary tables and
//! sorts stay in memory (`SQLITE_TEMP_STORE=2` in SQLCipher's build).
//!
//! The key is the store key of [`secrets`](super::secrets) (environment,
//! systemd credential, `store.key_file` or `<store>.key`), through a
//! derivation of its own ([`secrets::cipher_key`]), handed to SQLCipher
//! as a raw key (`PRAGMA key = "x'…'"`): no passphrase stretching on each
//! of the gateway's connections, the key is already 256 random bits.
//!
//! [`connect`] is the one place the gateway opens a SQLite file: it applies
//! the key on every connection (writer, readers, API pool, CLI commands,
//! what-if) and tells a wrong key, a missing key and a plain store apart
//! with errors that say what to do. Whether a file is encrypted is read
//! from its first bytes: a plain SQLite file starts with its magic string,
//! an encrypted one with a random salt.
//!
//! Those bytes are read through a descriptor this process keeps open for
//! as long as the file exists ([`Format::of`]), never one opened and closed
//! per connection: closing *any* descriptor of a file drops every POSIX
//! lock the process holds on it, SQLite's included. Another process (a CLI
//! command, a backup, the `sqlite3` shell) would then take itself for the
//! store's last user and delete the WAL when it closes, and every commit
//! after that would go to an unlinked file, lost at the next crash.

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags};
use std::fs::File;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::files;
use super::secrets::{self, Key, KeySource, SecretsError};
use super::StoreError;

/// The first 16 bytes of a plain SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

static ENCRYPTION: OnceLock<bool> = OnceLock::new();

/// Sets whether this process's stores are encrypted (`[store] encryption`).
pub fn configure(encryption: bool) {
    let _ = ENCRYPTION.set(encryption);
}

/// Whether this process's stores are encrypted.
pub fn is_configured() -> bool {
    ENCRYPTION.get().copied().unwrap_or(false)
}

/// Why a store cannot be opened with the key it was given.
#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    /// The key does not decrypt the file.
    #[error("the store {} is encrypted and this key does not open it: the key comes from {key} (a wrong RPM_STORE_KEY, systemd credential or store.key_file?); `rpm-gateway store status` shows which key is used", path.display())]
    WrongKey {
        /// the store
        path: PathBuf,
        /// where the key came from
        key: KeySource,
    },
    /// An encrypted store, opened without encryption configured.
    #[error("the store {} is encrypted but encryption is off: set `encryption = true` under [store] and give its key (RPM_STORE_KEY, the systemd credential rpm-store-key, or store.key_file)", path.display())]
    EncryptedWithoutKey {
        /// the store
        path: PathBuf,
    },
    /// A plain store, opened with encryption configured.
    #[error("the store {} is not encrypted: stop the gateway and run `rpm-gateway store encrypt` (or set `encryption = false` under [store])", path.display())]
    NotEncrypted {
        /// the store
        path: PathBuf,
    },
    /// An encrypted store whose key file next to it is gone.
    #[error("the store {} is encrypted and its key file {} is missing: restore it, or give the key another way (RPM_STORE_KEY, the systemd credential rpm-store-key, store.key_file)", path.display(), key.display())]
    KeyMissing {
        /// the store
        path: PathBuf,
        /// the key file looked for
        key: PathBuf,
    },
    /// The store key could not be read.
    #[error(transparent)]
    Key(#[from] SecretsError),
}

/// What a store file is, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// No file, or an empty one: a new store.
    New,
    /// A plain SQLite database.
    Plain,
    /// Anything else: a SQLCipher database (or not a database at all).
    Encrypted,
}

/// A store file's descriptor, kept open while the file is the store.
struct Kept {
    path: PathBuf,
    dev: u64,
    ino: u64,
    file: File,
}

/// The descriptors [`Format::of`] reads through.
static KEPT: Mutex<Vec<Kept>> = Mutex::new(Vec::new());

impl Format {
    /// Reads the start of the file at `path`, through the descriptor kept
    /// for it (see the module's documentation).
    pub fn of(path: &Path) -> Result<Format, StoreError> {
        let io = |source| files::FileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Format::New),
            Err(e) => return Err(io(e).into()),
        };
        let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
        // Files gone (or replaced by a new one) are let go: no connection
        // of this process can use them any more.
        kept.retain(|k| {
            std::fs::metadata(&k.path).is_ok_and(|m| (m.dev(), m.ino()) == (k.dev, k.ino))
        });
        let i = match kept.iter().position(|k| k.path == path) {
            Some(i) => i,
            None => {
                let file = match File::open(path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Format::New),
                    Err(e) => return Err(io(e).into()),
                };
                kept.push(Kept {
                    path: path.to_path_buf(),
                    dev: meta.dev(),
                    ino: meta.ino(),
                    file,
                });
                kept.len() - 1
            }
        };
        let mut head = [0u8; 16];
        let mut len = 0;
        while len < head.len() {
            match kept[i].file.read_at(&mut head[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e).into()),
            }
        }
        Ok(match &head[..len] {
            [] => Format::New,
            h if h == SQLITE_MAGIC => Format::Plain,
            _ => Format::Encrypted,
        })
    }

    /// How it is named to users.
    pub fn name(self) -> &'static str {
        match self {
            Format::New => "new",
            Format::Plain => "plain",
            Format::Encrypted => "encrypted",
        }
    }
}

/// How a store file is opened.
#[derive(Clone)]
pub enum Keying {
    /// Plain SQLite.
    Plain,
    /// SQLCipher with this (derived) key.
    Encrypted {
        /// the SQLCipher key, derived from the store key
        key: Key,
        /// where the store key came from
        source: KeySource,
    },
}

impl std::fmt::Debug for Keying {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keying::Plain => write!(f, "Plain"),
            Keying::Encrypted { source, .. } => write!(f, "Encrypted(key from {source})"),
        }
    }
}

impl Keying {
    /// What this process is configured with for the store at `path`.
    pub fn configured(path: &Path) -> Result<Keying, StoreError> {
        if is_configured() {
            Keying::store_key(path)
        } else {
            Ok(Keying::Plain)
        }
    }

    /// Encrypted with the store key of this process for `path` (whatever
    /// the configuration says). A key file next to the store is created
    /// for a new or plain store, never for an encrypted one (it could not
    /// open it).
    pub fn store_key(path: &Path) -> Result<Keying, StoreError> {
        if let KeySource::NextToStore(key) = secrets::source_for(path) {
            if !key.exists() && Format::of(path)? == Format::Encrypted {
                return Err(CipherError::KeyMissing {
                    path: path.to_path_buf(),
                    key,
                }
                .into());
            }
        }
        let (key, source) = secrets::store_key(path, true).map_err(CipherError::from)?;
        Ok(Keying::Encrypted {
            key: secrets::cipher_key(&key),
            source,
        })
    }

    /// Encrypted with `key` (a store key, derived here).
    pub fn given(key: &Key) -> Keying {
        Keying::Encrypted {
            key: secrets::cipher_key(key),
            source: KeySource::Given,
        }
    }

    /// The value of `PRAGMA key` / `ATTACH … KEY` (empty: plain).
    pub(crate) fn pragma_value(&self) -> String {
        match self {
            Keying::Plain => String::new(),
            Keying::Encrypted { key, .. } => format!("x'{}'", hex::encode(key)),
        }
    }
}

/// Opens a connection to the store file at `path` with `keying`: the one
/// place the gateway opens SQLite. Refuses an encrypted file without a
/// key, a plain one with a key, and a key that does not open it.
pub fn connect(path: &Path, flags: OpenFlags, keying: &Keying) -> Result<Connection, StoreError> {
    let format = Format::of(path)?;
    match (keying, format) {
        (Keying::Plain, Format::Encrypted) => {
            return Err(CipherError::EncryptedWithoutKey {
                path: path.to_path_buf(),
            }
            .into())
        }
        (Keying::Encrypted { .. }, Format::Plain) => {
            return Err(CipherError::NotEncrypted {
                path: path.to_path_buf(),
            }
            .into())
        }
        _ => {}
    }
    let conn = Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if let Keying::Encrypted { source, .. } = keying {
        // SQLCipher's own log (stderr) would repeat, less clearly, what
        // the errors below say. Then the key, before SQLite reads anything.
        conn.execute_batch("PRAGMA cipher_log_level = NONE;")?;
        conn.execute_batch(&format!("PRAGMA key = \"{}\";", keying.pragma_value()))?;
        // SQLCipher reads nothing until asked: a wrong key shows here.
        match conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(_) => {}
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) => {
                return Err(CipherError::WrongKey {
                    path: path.to_path_buf(),
                    key: source.clone(),
                }
                .into())
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Plans that do not depend on bound values. Without this, SQLite marks
    // a statement whose plan could (a `LIMIT ?`, an equality it estimates
    // by the value, a partial index's condition) to be prepared again when
    // its bindings change, and rusqlite clears the bindings of every
    // statement it returns to its cache: each use of such a cached
    // statement parsed and planned its SQL again (a tenth of the risk
    // stage's and the rule stage's time in a drain).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

/// A read-only connection (what-if, `store query`), holding the store's
/// lock when it can be taken.
pub struct ReadOnly {
    conn: Connection,
    _lock: Option<files::StoreLock>,
}

impl std::ops::Deref for ReadOnly {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

/// Opens the store at `path` read-only with this process's keying.
pub fn open_read_only(path: &Path) -> Result<ReadOnly, StoreError> {
    // Reading an old file while maintenance replaces it is harmless; the
    // lock is taken when the file system allows it, only to be polite.
    let lock = match files::lock(path, files::LockMode::Shared) {
        Ok(l) => Some(l),
        Err(e @ files::FileError::Busy { .. }) => return Err(e.into()),
        Err(_) => None,
    };
    let conn = connect(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        &Keying::configured(path)?,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(ReadOnly { conn, _lock: lock })
}

/// The SQLCipher version linked in.
pub fn version() -> String {
    Connection::open_in_memory()
        .and_then(|c| c.query_row("PRAGMA cipher_version", [], |r| r.get::<_, String>(0)))
        .unwrap_or_else(|_| "unknown".into())
}
