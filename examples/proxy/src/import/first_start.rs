//! The import at the proxy's first start: a user who stops the Python server and starts this
//! proxy on the same `.env` and the same database keeps the settings, keys and tokens changed
//! in the Python web UI without running `import` first.
//!
//! - **First start** means no database of this proxy (`data/<SQLITE_DATABASE>.db`, or one that
//!   was created and never written) and no secrets file yet. A proxy that ever ran here has
//!   both, so nothing is imported twice, and a change made through the admin API since is
//!   never overwritten by the Python server's older value.
//! - **With `DATABASE_TYPE=mysql` or `postgres`** the proxy's store is that database: the
//!   settings are imported into it ([`into_networked`], once the store is open) when it holds
//!   no setting yet and this instance has no secrets file; secrets (keys, tokens) go to this
//!   instance's secrets file, as always. The logs stay in the Python server's tables (the log
//!   import writes into SQLite only), and a start cut short is not resumed (the next start finds
//!   the settings it had written, or imports again).
//! - **The source** is where the Python server keeps its data with the same `.env`: the SQLite
//!   file `data/<SQLITE_DATABASE>` (no extension) when there is one. With neither, there is nothing
//!   to import; a database without `t_settings` is not the Python server's, and is left alone.
//! - **Settings only**, as `import` without `--logs` brings them: the logs can be millions of
//!   rows (the Python server keeps request logs forever by default), which would hold the
//!   first start for minutes while clients wait; the startup log says how many there are and
//!   the command that brings them over.
//! - A source that is there but **cannot be read** stops startup, naming
//!   `IMPORT_PYTHON_DATABASE`: starting without it would serve without the keys added in the
//!   Python UI and, the database then existing, never import them.
//! - An import **cut short** (a crash, a full disk) leaves `data/<SQLITE_DATABASE>.import-pending`
//!   behind, and the next start runs it again (the import changes nothing the second time).
//!
//! `IMPORT_PYTHON_DATABASE=false` turns it off.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::source::{PythonDb, Spec};
use super::{apply, kept_settings, logs, open_store, settings};
use crate::config::Config;
use crate::secrets::SecretsFile;
use crate::settings::Settings;
use crate::store::Store;
use gemini_balance::store::sqlite::ImportedSettings;

/// The setting that turns the import at first start off.
const SWITCH: &str = "IMPORT_PYTHON_DATABASE";

/// Where the Python server's data is, for this `.env`.
struct Source {
    spec: Spec,
    /// The `import` command's SOURCE argument for it.
    argument: String,
    /// How to name it before it is opened (no password).
    shown: String,
}

/// Runs the import if this is the proxy's first start and the Python server's database is
/// there; an `Err` stops startup.
pub async fn at_first_start(vars: &HashMap<String, String>, config: &Config) -> Result<(), String> {
    let base = &config.settings;
    if base.text("DATABASE_TYPE") != "sqlite" {
        // The store is the networked database itself (docs/scale-out.md): imported into once
        // it is open, by `into_networked`.
        return Ok(());
    }
    let name = base.text("SQLITE_DATABASE");
    let db_path = PathBuf::from(format!("data/{name}.db"));
    let secrets = SecretsFile::new(format!("data/{name}.secrets.json"));
    let pending = db_path.with_extension("import-pending");
    let resumed = pending.exists();
    if !resumed && !is_new(&db_path, secrets.path()) {
        return Ok(());
    }
    let Some(source) = source(base) else {
        if resumed {
            tracing::warn!(
                file = %pending.display(),
                "an import at first start was cut short, and the Python server's database is not there any more: nothing imported"
            );
        }
        return Ok(());
    };
    if !base.bool(SWITCH) {
        tracing::info!(
            from = %source.shown,
            "{SWITCH}=false: the Python server's settings and keys are not imported at this first start; \
             `gemini-balance-proxy import {}` brings them over (with the proxy stopped)",
            source.argument
        );
        // The user decided: an earlier import cut short is not run again either.
        let _ = std::fs::remove_file(&pending);
        return Ok(());
    }
    let stop = |e: String| {
        format!(
            "{SWITCH}: this is the first start here (no {} yet), and the Python server's database could not be imported: {e}. \
             Start again once it can be read, or set {SWITCH}=false to start without the settings and keys kept there \
             (`gemini-balance-proxy import {}` can bring them over later)",
            db_path.display(),
            source.argument
        )
    };
    let mut db = PythonDb::connect(&source.spec, vars).await.map_err(stop)?;
    if !db.has_table("t_settings").await.map_err(stop)? {
        tracing::warn!(
            from = %db.shown,
            "no t_settings table: not a Gemini-Balance database; nothing imported at first start"
        );
        return Ok(());
    }
    import(&mut db, config, &db_path, &secrets, &pending, &source)
        .await
        .map_err(stop)
}

/// No database with anything in it, and no secrets file: nothing this proxy ever kept here.
fn is_new(db: &Path, secrets: &Path) -> bool {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let db_unused = match std::fs::metadata(db) {
        Ok(meta) => meta.len() == 0 && !Path::new(&wal).exists(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    db_unused && !secrets.exists()
}

/// The Python server's database for these settings, as its `app/database/connection.py`
/// chooses it.
fn source(base: &Settings) -> Option<Source> {
    if base.text("DATABASE_TYPE") == "mysql" {
        let (host, socket) = (base.text("MYSQL_HOST"), base.text("MYSQL_SOCKET"));
        if host.trim().is_empty() && socket.trim().is_empty() {
            tracing::warn!(
                "DATABASE_TYPE=mysql, but neither MYSQL_HOST nor MYSQL_SOCKET is set: no Python server's database to import at first start"
            );
            return None;
        }
        let shown = match socket.trim() {
            "" => format!("MySQL at {}:{}", host.trim(), base.int("MYSQL_PORT")),
            socket => format!("MySQL at {socket}"),
        };
        return Some(Source {
            spec: Spec::MySqlSettings,
            argument: "mysql".to_owned(),
            shown: format!("{shown}, database {}", base.text("MYSQL_DATABASE")),
        });
    }
    let path = PathBuf::from(format!("data/{}", base.text("SQLITE_DATABASE")));
    path.is_file().then(|| Source {
        spec: Spec::Sqlite(path.clone()),
        argument: path.display().to_string(),
        shown: format!("{} (SQLite)", path.display()),
    })
}

/// The import itself, under the data lock; `pending` exists until it is done.
async fn import(
    db: &mut PythonDb,
    config: &Config,
    db_path: &Path,
    secrets: &SecretsFile,
    pending: &Path,
    source: &Source,
) -> Result<(), String> {
    crate::private_files::prepare_dirs(Path::new("data"), db_path)?;
    mark_pending(pending, &db.shown)?;
    let (store, lock) = open_store(db_path, secrets, &config.time_zone)?;
    let rows = db.settings().await?;
    let identity = db.identity().await?;
    // Nothing imported before, unless an import cut short is run again.
    let last = store
        .imported_settings(&identity)
        .map_err(|e| e.to_string())?;
    let plan = settings::plan(
        &rows,
        &config.settings,
        &kept_settings(&store)?,
        &secrets.load()?,
        &last,
    );
    // Remembered, so that a later `import` keeps what is changed here from now on.
    apply(&plan, &store, secrets, &identity)?;
    let states = logs::states(db, |table| {
        store
            .import_mark(&identity, table)
            .map_err(|e| e.to_string())
    })
    .await?;
    store.shutdown().map_err(|e| e.to_string())?;
    drop(lock);
    std::fs::remove_file(pending).map_err(|e| format!("{}: {e}", pending.display()))?;

    report(&plan, &db.shown, &source.argument);
    let waiting: Vec<String> = states
        .iter()
        .filter(|s| s.pending > 0)
        .map(|s| format!("{} ({} rows)", s.table, s.pending))
        .collect();
    if !waiting.is_empty() {
        tracing::info!(
            "the Python server's logs are not imported at first start: {}; \
             `gemini-balance-proxy import {} --logs`, with the proxy stopped, brings them over",
            waiting.join(", "),
            source.argument
        );
    }
    Ok(())
}

/// At the first start on a networked store (`DATABASE_TYPE=mysql` or `postgres`): the Python
/// server's settings changed in its web UI, into `store` (and secrets into `secrets`), when the
/// store holds no setting yet and this instance has no secrets file. Blocks briefly (the
/// store's settings); an `Err` stops startup, as on SQLite.
pub async fn into_networked(
    vars: &HashMap<String, String>,
    base: &Settings,
    store: &dyn Store,
    secrets: &SecretsFile,
) -> Result<(), String> {
    let kept = store.settings().map_err(|e| e.to_string())?;
    if !kept.is_empty() || secrets.path().exists() {
        return Ok(());
    }
    let Some(source) = source(base) else {
        return Ok(());
    };
    if !base.bool(SWITCH) {
        tracing::info!(
            from = %source.shown,
            "{SWITCH}=false: the Python server's settings and keys are not imported at this first start"
        );
        return Ok(());
    }
    let stop = |e: String| {
        format!(
            "{SWITCH}: this is the first start on this database (no setting kept in it, no {} yet), and the Python \
             server's settings could not be imported: {e}. Start again once they can be read, or set {SWITCH}=false \
             to start without the settings and keys kept there",
            secrets.path().display()
        )
    };
    let mut db = PythonDb::connect(&source.spec, vars).await.map_err(stop)?;
    if !db.has_table("t_settings").await.map_err(stop)? {
        tracing::warn!(
            from = %db.shown,
            "no t_settings table: not a Gemini-Balance database; nothing imported at first start"
        );
        return Ok(());
    }
    let rows = db.settings().await.map_err(stop)?;
    let identity = db.identity().await.map_err(stop)?;
    let plan = settings::plan(
        &rows,
        base,
        &BTreeMap::new(),
        &secrets.load().map_err(stop)?,
        &ImportedSettings::empty(&identity),
    );
    for change in &plan.changes {
        crate::state::keep(
            secrets,
            store,
            change.name,
            change.secret,
            change.keep.as_deref(),
        )
        .map_err(|e| stop(format!("{}: {e}", change.name)))?;
    }
    report(&plan, &db.shown, &source.argument);
    tracing::info!(
        from = %db.shown,
        "the Python server's logs stay in its own tables: importing them into a networked store is not supported"
    );
    Ok(())
}

/// What the import at first start brought over, and what it did not, in the startup log.
fn report(plan: &settings::Plan, shown: &str, argument: &str) {
    let names = |secret: bool| {
        plan.changes
            .iter()
            .filter(|c| c.secret == secret && c.keep.is_some())
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if plan.changes.is_empty() {
        tracing::info!(
            from = %shown,
            "first start: the Python server's settings are those of .env and the environment; nothing to import"
        );
    } else {
        tracing::info!(
            from = %shown,
            database = %names(false),
            secrets_file = %names(true),
            "first start: imported the settings changed in the Python server's web UI; they apply from now on, as changes made through the admin API"
        );
    }
    if !plan.not_acted_on.is_empty() {
        tracing::info!(
            settings = %plan.not_acted_on.join(", "),
            "imported, but not acted on by this version"
        );
    }
    if plan.is_incomplete() {
        let listed = |left: &[settings::Left]| {
            if left.is_empty() {
                return "none".to_owned();
            }
            left.iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        tracing::warn!(
            refused = %listed(&plan.refused),
            read_at_start_only = %listed(&plan.startup_only),
            "some settings of the Python server were not brought over: values this proxy refuses, and settings it reads \
             from .env only (set them there); `gemini-balance-proxy import {} --dry-run` says why for each",
            argument
        );
    }
}

/// Notes that an import is under way: a start that finds this file runs it again.
fn mark_pending(path: &Path, from: &str) -> Result<(), String> {
    use std::io::Write;

    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut file| {
            writeln!(
                file,
                "The proxy's first start was importing the Python server's settings from {from} and did not finish; the next start runs the import again."
            )?;
            file.sync_all()
        })
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_means_nothing_kept_yet() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("default_db.db");
        let secrets = dir.path().join("default_db.secrets.json");
        assert!(is_new(&db, &secrets));
        // Created and never written (a start that failed right after): still new.
        std::fs::write(&db, "").unwrap();
        assert!(is_new(&db, &secrets));
        // Written only to its write-ahead log: not new.
        std::fs::write(dir.path().join("default_db.db-wal"), "x").unwrap();
        assert!(!is_new(&db, &secrets));
        std::fs::remove_file(dir.path().join("default_db.db-wal")).unwrap();
        std::fs::write(&db, "SQLite format 3\0").unwrap();
        assert!(!is_new(&db, &secrets));
        std::fs::remove_file(&db).unwrap();
        // Only the secrets file (keys added through the admin API, database deleted): not new.
        std::fs::write(&secrets, "{}").unwrap();
        assert!(!is_new(&db, &secrets));
    }
}
