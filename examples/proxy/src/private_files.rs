//! The proxy's files are its owner's alone: `data/` is 0700, the database (with its `-wal` and
//! `-shm`) and the secrets file 0600. The database holds usage by client and key, error logs
//! (with request bodies when asked) and key states; the secrets file holds credentials.
//!
//! New files and directories get their mode explicitly, whatever the umask. The database file
//! is created here, before SQLite opens it, because SQLite gives its `-wal` and `-shm` files
//! exactly the mode of the database. Files an older version left open to other users are made
//! private at start, with a log line each. Elsewhere than on Unix this does nothing.

use std::path::Path;

/// Makes `dir` (created if missing) and the database `db` in it private before the store
/// opens it, and `others` (files in it that exist, e.g. the secrets file).
#[cfg(unix)]
pub fn prepare(dir: &Path, db: &Path, others: &[&Path]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;

    let failed = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
    prepare_dirs(dir, db)?;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(db);
    match created {
        Ok(_) => set_mode(db, 0o600)?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => make_private(db, 0o600)?,
        Err(e) => return Err(failed(db, e)),
    }
    let companions = ["-wal", "-shm"].map(|suffix| {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    });
    for path in companions
        .iter()
        .map(|p| p.as_path())
        .chain(others.iter().copied())
    {
        if path.exists() {
            make_private(path, 0o600)?;
        }
    }
    Ok(())
}

/// Makes `dir` (created if missing) private, and creates the directory of the database `db`
/// in it (private) if missing: where the proxy's files go, before any of them is written.
#[cfg(unix)]
pub fn prepare_dirs(dir: &Path, db: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;

    let failed = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
    if dir.exists() {
        make_private(dir, 0o700)?;
    } else {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| failed(dir, e))?;
        set_mode(dir, 0o700)?;
    }
    // A database under a subdirectory of `dir` (SQLITE_DATABASE=a/b): private too.
    if let Some(parent) = db.parent().filter(|p| !p.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| failed(parent, e))?;
    }
    Ok(())
}

/// Elsewhere than on Unix file modes do not apply.
#[cfg(not(unix))]
pub fn prepare(dir: &Path, db: &Path, _others: &[&Path]) -> Result<(), String> {
    prepare_dirs(dir, db)
}

/// Elsewhere than on Unix file modes do not apply.
#[cfg(not(unix))]
pub fn prepare_dirs(dir: &Path, db: &Path) -> Result<(), String> {
    for d in [Some(dir), db.parent()].into_iter().flatten() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    Ok(())
}

/// Takes the group's and others' access away from `path`, saying so in the log.
#[cfg(unix)]
fn make_private(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;

    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let was = meta.permissions().mode() & 0o777;
    if was & 0o077 == 0 {
        return Ok(());
    }
    set_mode(path, mode)?;
    tracing::warn!(
        path = %path.display(),
        was = %format!("{was:o}"),
        now = %format!("{mode:o}"),
        "made a data file private (other users could read it)"
    );
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;

    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("{}: cannot make it private ({e})", path.display()))
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_and_old_files_end_up_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        let db = dir.join("proxy.db");
        prepare(&dir, &db, &[]).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&db), 0o600);

        // Left open by an older version: fixed.
        let wal = dir.join("proxy.db-wal");
        let secrets = dir.join("proxy.secrets.json");
        for path in [&db, &wal, &secrets] {
            std::fs::write(path, "").unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&dir, &db, &[&secrets]).unwrap();
        assert_eq!(mode(&dir), 0o700);
        for path in [&db, &wal, &secrets] {
            assert_eq!(mode(path), 0o600, "{}", path.display());
        }

        // A database in a subdirectory.
        let nested = dir.join("sub").join("proxy.db");
        prepare(&dir, &nested, &[]).unwrap();
        assert_eq!(mode(nested.parent().unwrap()) & 0o077, 0);
        assert_eq!(mode(&nested), 0o600);
    }
}
