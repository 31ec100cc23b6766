//! One lock file per database, `data/<SQLITE_DATABASE>.lock`: a running proxy holds it shared,
//! `import` takes it exclusively. So an import never writes beside a running proxy, which read
//! its settings at start (it would go on with the old ones) and whose admin changes could cross
//! the import's; and a proxy does not start while an import is under way. Several proxies on
//! the same data still start, as before.
//!
//! Advisory locks (`flock` on Unix, `LockFileEx` on Windows): the system releases them when the
//! process ends, however it ends, so a crashed proxy leaves no stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct DataLock {
    _file: File,
}

/// Why a lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it in a way that excludes ours.
    Busy,
    /// The lock file could not be opened or locked.
    Failed(String),
}

/// The lock file of the database at `db` (`data/x.db` → `data/x.lock`).
pub fn path_of(db: &Path) -> PathBuf {
    db.with_extension("lock")
}

impl DataLock {
    /// Shared: any number of proxies, but no import.
    pub fn shared(path: &Path) -> Result<DataLock, LockError> {
        let file = open(path)?;
        match file.try_lock_shared() {
            Ok(()) => Ok(DataLock { _file: file }),
            Err(e) => Err(refused(path, e)),
        }
    }

    /// Exclusive: no proxy and no other import.
    pub fn exclusive(path: &Path) -> Result<DataLock, LockError> {
        let file = open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(DataLock { _file: file }),
            Err(e) => Err(refused(path, e)),
        }
    }
}

fn open(path: &Path) -> Result<File, LockError> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .map_err(|e| LockError::Failed(format!("{}: {e}", path.display())))
}

fn refused(path: &Path, e: TryLockError) -> LockError {
    match e {
        TryLockError::WouldBlock => LockError::Busy,
        TryLockError::Error(e) => LockError::Failed(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_share_and_an_import_excludes() {
        let dir = std::env::temp_dir().join(format!("gb-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = path_of(&dir.join("default_db.db"));
        assert!(path.ends_with("default_db.lock"));
        let first = DataLock::shared(&path).unwrap();
        let second = DataLock::shared(&path).unwrap();
        assert!(matches!(DataLock::exclusive(&path), Err(LockError::Busy)));
        drop((first, second));
        let import = DataLock::exclusive(&path).unwrap();
        assert!(matches!(DataLock::shared(&path), Err(LockError::Busy)));
        drop(import);
        DataLock::shared(&path).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
