//! The secrets file: where runtime changes to secret settings (API_KEYS, ALLOWED_TOKENS,
//! AUTH_TOKEN, PROXIES, CUSTOM_HEADERS, …) are kept, because the database never holds a secret.
//!
//! A JSON object of setting name → text value (the `.env` form), next to the database, readable
//! by its owner only (mode 0600), replaced atomically (write, sync, rename) so a crash leaves the
//! old or the new file, never half of one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The secrets file of one proxy.
#[derive(Debug, Clone)]
pub struct SecretsFile {
    path: PathBuf,
}

impl SecretsFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SecretsFile { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored values; empty when there is no file yet.
    pub fn load(&self) -> Result<BTreeMap<String, String>, String> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        };
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "{}: not a JSON object of setting names to text ({e}); fix or delete the file",
                self.path.display()
            )
        })
    }

    /// Stores `value` for `name` (`None` forgets it), keeping the other entries.
    pub fn store(&self, name: &str, value: Option<&str>) -> Result<(), String> {
        let mut values = self.load()?;
        match value {
            Some(v) => values.insert(name.to_owned(), v.to_owned()),
            None => values.remove(name),
        };
        let text = serde_json::to_string_pretty(&values)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        // One temporary file per process: instances sharing a data directory (several proxies
        // on one networked store) never write into each other's half-written file.
        let tmp = self
            .path
            .with_extension(format!("json.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp)?;
            // A temporary file left by a crash keeps its mode when reopened: set it again.
            #[cfg(unix)]
            file.set_permissions(
                <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
            )?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

/// Moves the settings an older version kept in the database's settings table that are secrets
/// now (CUSTOM_HEADERS) into the secrets file; returns their names. A value already in the file
/// wins. The row is deleted once the file has the value (so a crash in between loses nothing),
/// and, on SQLite, its bytes with it (see `SqliteStore::delete_setting`).
pub fn adopt_from_database(
    file: &SecretsFile,
    store: &dyn gemini_balance::store::SettingsStore,
    is_secret: impl Fn(&str) -> bool,
) -> Result<Vec<String>, String> {
    let failed = |e: gemini_balance::store::StoreError| format!("the settings table: {e}");
    let mut moved = Vec::new();
    for row in store.settings().map_err(failed)? {
        if !is_secret(&row.name) {
            continue;
        }
        if !file.load()?.contains_key(&row.name) {
            file.store(&row.name, Some(&row.value))?;
        }
        store.delete_setting(&row.name).map_err(failed)?;
        moved.push(row.name);
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_replaces_and_forgets() {
        let dir = std::env::temp_dir().join(format!("gb-secrets-{}", std::process::id()));
        let file = SecretsFile::new(dir.join("proxy.secrets.json"));
        assert!(file.load().unwrap().is_empty());
        file.store("API_KEYS", Some(r#"["k1"]"#)).unwrap();
        file.store("AUTH_TOKEN", Some("t")).unwrap();
        file.store("API_KEYS", Some(r#"["k2"]"#)).unwrap();
        let values = file.load().unwrap();
        assert_eq!(values["API_KEYS"], r#"["k2"]"#);
        assert_eq!(values["AUTH_TOKEN"], "t");
        file.store("AUTH_TOKEN", None).unwrap();
        assert_eq!(file.load().unwrap().len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(file.path(), "nonsense").unwrap();
        assert!(file.load().unwrap_err().contains("fix or delete"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
