//! Owner-only files: the store holds health data and secrets.
//!
//! The store file is created `0600` (its directory `0700`) whatever the
//! process umask, before SQLite opens it; SQLite gives the `-wal`, `-shm`
//! and `-journal` files it creates the mode of the database file, so they
//! are owner-only too. A store that other users can read or write is
//! refused with a message that says how to fix it: silently tightening it
//! would hide that the data was exposed, and opening it would keep it so.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of files the gateway creates.
pub const FILE_MODE: u32 = 0o600;
/// Mode of directories the gateway creates.
pub const DIR_MODE: u32 = 0o700;

/// Why a store file is not safe to use.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Group or others have access.
    #[error("store file {} is accessible by other users (mode {mode:04o}); it holds health data: `chmod 600 {}` (and its -wal and -shm files), then start again", path.display(), path.display())]
    Exposed {
        /// the file
        path: PathBuf,
        /// its permission bits
        mode: u32,
    },
    /// The store is in use and a maintenance command wants it alone, or
    /// the other way round.
    #[error("{}", busy_message(path, *exclusive))]
    Busy {
        /// the store
        path: PathBuf,
        /// whether the exclusive lock was asked for
        exclusive: bool,
    },
    /// The file or its directory could not be created or inspected.
    #[error("store file {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operation that failed.
        source: std::io::Error,
    },
}

fn busy_message(path: &Path, exclusive: bool) -> String {
    if exclusive {
        format!("the store {} is in use (the gateway, or another rpm-gateway command, has it open): stop the gateway first; this command replaces the store file", path.display())
    } else {
        format!("a store maintenance command (store encrypt, decrypt or rekey) is running on {}: start again when it has finished", path.display())
    }
}

/// How the store's lock is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Every connection the gateway opens: many at once.
    Shared,
    /// Maintenance that replaces the store file: alone.
    Exclusive,
}

/// A hold on the store's lock file, `<store>.lock` (an advisory `flock`,
/// released when dropped or when the process ends, however it ends).
#[derive(Debug)]
pub struct StoreLock {
    _file: std::fs::File,
}

/// The lock file of the store at `path`.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Takes the store's lock without waiting: [`FileError::Busy`] when a
/// holder of the other kind (or, for `Exclusive`, any holder) has it.
pub fn lock(path: &Path, mode: LockMode) -> Result<StoreLock, FileError> {
    use rustix::fs::{flock, FlockOperation};
    let lock = lock_path(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&lock)
        .map_err(|source| FileError::Io {
            path: lock.clone(),
            source,
        })?;
    let op = match mode {
        LockMode::Shared => FlockOperation::NonBlockingLockShared,
        LockMode::Exclusive => FlockOperation::NonBlockingLockExclusive,
    };
    match flock(&file, op) {
        Ok(()) => Ok(StoreLock { _file: file }),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(FileError::Busy {
            path: path.to_path_buf(),
            exclusive: mode == LockMode::Exclusive,
        }),
        Err(e) => Err(FileError::Io {
            path: lock,
            source: e.into(),
        }),
    }
}

/// Creates `path` (and missing directories) owner-only if it does not exist;
/// refuses it, its `-wal` and `-shm`, when others have access.
pub fn prepare(path: &Path) -> Result<(), FileError> {
    let io = |source| FileError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(io)?;
        }
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        // The umask may have taken bits away, never added: set exactly.
        Ok(f) => f
            .set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(io)?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        match std::fs::metadata(&p) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                return Err(FileError::Exposed {
                    path: p,
                    mode: m.permissions().mode() & 0o7777,
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
    }
    Ok(())
}

/// Writes `bytes` to a new owner-only file (key files, exports).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    f.set_permissions(Permissions::from_mode(FILE_MODE))?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Free space of a file system.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskSpace {
    /// Bytes available to the gateway (unprivileged).
    pub available: u64,
    /// Size of the file system.
    pub total: u64,
}

/// Free space of the file system holding `path` (`statvfs`).
pub fn disk_space(path: &Path) -> std::io::Result<DiskSpace> {
    let s = rustix::fs::statvfs(path)?;
    Ok(DiskSpace {
        available: s.f_bavail.saturating_mul(s.f_frsize),
        total: s.f_blocks.saturating_mul(s.f_frsize),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_owner_only_and_exposed_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a/b/s.db");
        prepare(&db).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&db), 0o600);
        assert_eq!(mode(db.parent().unwrap()), 0o700);
        prepare(&db).unwrap();
        std::fs::set_permissions(&db, Permissions::from_mode(0o640)).unwrap();
        let e = prepare(&db).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains("0640"), "{e}");
    }

    #[test]
    fn shared_holders_keep_maintenance_out_and_the_other_way_round() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let a = lock(&db, LockMode::Shared).unwrap();
        let b = lock(&db, LockMode::Shared).unwrap();
        let e = lock(&db, LockMode::Exclusive).unwrap_err().to_string();
        assert!(
            e.contains("in use") && e.contains("stop the gateway"),
            "{e}"
        );
        drop((a, b));
        let x = lock(&db, LockMode::Exclusive).unwrap();
        let e = lock(&db, LockMode::Shared).unwrap_err().to_string();
        assert!(e.contains("maintenance"), "{e}");
        drop(x);
        lock(&db, LockMode::Shared).unwrap();
        let mode = std::fs::metadata(lock_path(&db))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
