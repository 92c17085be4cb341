//! Secrets kept in the store (webhook signing secrets) are sealed with a
//! key that lives outside the store file.
//!
//! A copy of the database (a backup, a file lifted from a box) then does
//! not hand out the secrets that sign alerts. The key comes from, in
//! order: the environment (`RPM_STORE_KEY`, 64 hex digits), a systemd
//! credential (`$CREDENTIALS_DIRECTORY/rpm-store-key`), `store.key_file`,
//! or else the file `<store>.key` next to the store, created owner-only
//! on first use (it protects copies of the store, not a stolen disk: put
//! the key elsewhere for that, or use full-disk encryption).
//!
//! Sealing is ChaCha20-Poly1305 (ring) with a random nonce, the owner's
//! id as associated data (a sealed secret moved to another endpoint does
//! not open). Stored as `enc1:<base64(nonce | ciphertext | tag)>`; a plain
//! `whsec_` value (written before sealing existed) is still read, and
//! sealed at the next start.
//!
//! The same key, through a derivation of its own ([`cipher_key`]), encrypts
//! the whole store when `[store] encryption` is on (see
//! [`cipher`](super::cipher)): one key, one place it comes from.

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf;
use rusqlite::Connection;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::files;

/// Prefix of sealed values.
pub const SEALED: &str = "enc1:";
/// Environment variable holding the key (hex).
pub const KEY_ENV: &str = "RPM_STORE_KEY";
/// systemd credential name.
pub const CREDENTIAL: &str = "rpm-store-key";

/// Key and sealing failures.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The key could not be read or made.
    #[error("store key {}: {message}", path.display())]
    Key {
        /// Where it was looked for.
        path: PathBuf,
        /// What is wrong with it (unreadable, wrong length, not hex).
        message: String,
    },
    /// A sealed value does not open with this key.
    #[error("a secret in the store does not open with this store key (wrong RPM_STORE_KEY, credential or store.key_file?)")]
    WrongKey,
    /// No randomness.
    #[error("no system randomness")]
    Random,
}

/// A store key: 32 bytes.
pub type Key = [u8; 32];

/// Where the store key of a process comes from (for messages: never the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `RPM_STORE_KEY`.
    Env,
    /// `$CREDENTIALS_DIRECTORY/rpm-store-key`.
    Credential(PathBuf),
    /// `store.key_file`.
    File(PathBuf),
    /// `<store>.key`, next to the store (created on first use).
    NextToStore(PathBuf),
    /// Given by the caller (a new key being put in place, tests).
    Given,
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Env => write!(f, "{KEY_ENV}"),
            KeySource::Credential(p) => write!(f, "the systemd credential {}", p.display()),
            KeySource::File(p) => write!(f, "store.key_file {}", p.display()),
            KeySource::NextToStore(p) => {
                write!(f, "the key file next to the store, {}", p.display())
            }
            KeySource::Given => write!(f, "the given key"),
        }
    }
}

static CONFIGURED: OnceLock<(Key, KeySource)> = OnceLock::new();
static FILE_KEYS: OnceLock<Mutex<HashMap<PathBuf, Key>>> = OnceLock::new();

fn parse(text: &str, path: &Path) -> Result<Key, SecretsError> {
    let bad = |message: &str| SecretsError::Key {
        path: path.to_path_buf(),
        message: message.into(),
    };
    let bytes = hex::decode(text.trim()).map_err(|_| bad("not hex"))?;
    bytes
        .try_into()
        .map_err(|_| bad("must be 32 bytes (64 hex digits)"))
}

/// Reads a key file: 64 hex digits, owner-only.
pub fn read_key_file(path: &Path) -> Result<Key, SecretsError> {
    let err = |message: String| SecretsError::Key {
        path: path.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(err(format!(
            "accessible by other users (mode {:04o}); chmod 600 it",
            meta.permissions().mode() & 0o7777
        )));
    }
    parse(
        &std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?,
        path,
    )
}

/// Sets the process's key from the environment, a systemd credential or
/// `key_file` (in that order); without any, each store uses `<store>.key`.
pub fn configure(key_file: Option<&Path>) -> Result<(), SecretsError> {
    let key = if let Ok(v) = std::env::var(KEY_ENV) {
        Some((parse(&v, Path::new(KEY_ENV))?, KeySource::Env))
    } else if let Some(p) = std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|d| PathBuf::from(d).join(CREDENTIAL))
        .filter(|p| p.exists())
    {
        let text = std::fs::read_to_string(&p).map_err(|e| SecretsError::Key {
            path: p.clone(),
            message: e.to_string(),
        })?;
        Some((parse(&text, &p)?, KeySource::Credential(p)))
    } else if let Some(p) = key_file {
        Some((read_key_file(p)?, KeySource::File(p.to_path_buf())))
    } else {
        None
    };
    if let Some(k) = key {
        let _ = CONFIGURED.set(k);
    }
    Ok(())
}

/// The file `<store>.key` next to the store at `db`.
pub fn key_file_next_to(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".key");
    PathBuf::from(p)
}

/// Where the key of the store at `db` comes from, without reading it.
pub fn source_for(db: &Path) -> KeySource {
    match CONFIGURED.get() {
        Some((_, source)) => source.clone(),
        None => KeySource::NextToStore(key_file_next_to(db)),
    }
}

/// The key of the store at `db`: the process's, or `<store>.key` (created
/// owner-only with a random key when `create` and it does not exist).
pub fn store_key(db: &Path, create: bool) -> Result<(Key, KeySource), SecretsError> {
    if let Some(k) = CONFIGURED.get() {
        return Ok(k.clone());
    }
    let path = key_file_next_to(db);
    let cache = FILE_KEYS.get_or_init(Default::default);
    let mut cache = cache.lock().map_err(|_| SecretsError::Random)?;
    if let Some(k) = cache.get(&path) {
        return Ok((*k, KeySource::NextToStore(path)));
    }
    if create && !path.exists() {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|_| SecretsError::Random)?;
        match files::write_private(&path, hex::encode(k).as_bytes()) {
            Ok(()) => {}
            // Another process made it meanwhile: read theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(SecretsError::Key {
                    path,
                    message: e.to_string(),
                })
            }
        }
    }
    let k = read_key_file(&path)?;
    cache.insert(path.clone(), k);
    Ok((k, KeySource::NextToStore(path)))
}

/// A new random key.
pub fn random_key() -> Result<Key, SecretsError> {
    let mut k = [0u8; 32];
    getrandom::fill(&mut k).map_err(|_| SecretsError::Random)?;
    Ok(k)
}

/// The key for the store `conn` is on.
fn key_for(conn: &Connection) -> Result<Key, SecretsError> {
    let db = conn.path().unwrap_or_default();
    Ok(store_key(Path::new(db), true)?.0)
}

struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// The key SQLCipher encrypts the store with, derived from the store key
/// (HKDF-SHA256) so that it is never the key that seals secrets.
pub fn cipher_key(key: &Key) -> Key {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"rpm-gateway").extract(key);
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit (255 * 32): cannot fail.
    if let Ok(okm) = prk.expand(&[b"store encryption (SQLCipher raw key) v1"], Len32) {
        let _ = okm.fill(&mut out);
    }
    out
}

fn aead(k: &Key) -> LessSafeKey {
    // 32 bytes is always a valid ChaCha20-Poly1305 key.
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, k).unwrap_or_else(|_| unreachable!()))
}

/// Seals `plain` for owner `aad` with the key of the store `conn` is on.
pub fn seal(conn: &Connection, aad: &str, plain: &str) -> Result<String, SecretsError> {
    seal_with(&key_for(conn)?, aad, plain)
}

/// Seals `plain` for owner `aad` with `key`.
pub fn seal_with(key: &Key, aad: &str, plain: &str) -> Result<String, SecretsError> {
    let key = aead(key);
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| SecretsError::Random)?;
    let mut buf = plain.as_bytes().to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad.as_bytes()),
        &mut buf,
    )
    .map_err(|_| SecretsError::Random)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    Ok(format!(
        "{SEALED}{}",
        base64::engine::general_purpose::STANDARD.encode(out)
    ))
}

/// Opens a stored value (a plain one is returned as it is).
pub fn open(conn: &Connection, aad: &str, stored: &str) -> Result<String, SecretsError> {
    if !stored.starts_with(SEALED) {
        return Ok(stored.to_string());
    }
    open_with(&key_for(conn)?, aad, stored)
}

/// Opens a stored value with `key` (a plain one is returned as it is).
pub fn open_with(key: &Key, aad: &str, stored: &str) -> Result<String, SecretsError> {
    let Some(b64) = stored.strip_prefix(SEALED) else {
        return Ok(stored.to_string());
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| SecretsError::WrongKey)?;
    if raw.len() < NONCE_LEN {
        return Err(SecretsError::WrongKey);
    }
    let (nonce, sealed) = raw.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SecretsError::WrongKey)?;
    let mut buf = sealed.to_vec();
    let plain = aead(key)
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_bytes()),
            &mut buf,
        )
        .map_err(|_| SecretsError::WrongKey)?;
    String::from_utf8(plain.to_vec()).map_err(|_| SecretsError::WrongKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_bound_to_owner_and_key_file_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("s.db")).unwrap();
        let c = store.conn();
        let s = seal(c, "north", "whsec_abc").unwrap();
        assert!(s.starts_with(SEALED) && !s.contains("abc"));
        assert_eq!(open(c, "north", &s).unwrap(), "whsec_abc");
        assert!(matches!(open(c, "south", &s), Err(SecretsError::WrongKey)));
        assert_eq!(open(c, "x", "whsec_plain").unwrap(), "whsec_plain");
        let key = dir.path().join("s.db.key");
        assert_eq!(
            std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    /// The derivation docs/security-at-rest.md gives for the `sqlcipher`
    /// shell (the vector is OpenSSL's `openssl kdf … HKDF`).
    #[test]
    fn cipher_key_is_hkdf_sha256_of_the_store_key() {
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = i as u8;
        }
        assert_eq!(
            hex::encode(cipher_key(&key)),
            "b816070af5f94413717049dfb27a2451bfa5d9c305e9619e57028b5b746c4c1d"
        );
    }
}
