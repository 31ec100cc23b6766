//! `gemini-balance-proxy import`: a Python Gemini-Balance server's stored state, brought into
//! this proxy's data (`docs/migrating.md`).
//!
//! The Python server keeps what its web UI changed (settings, and keys added there) only in its
//! database's `t_settings`, and its logs in `t_error_logs` and `t_request_log`. The import
//! reads them (a SQLite file, or MySQL: `source`) and brings over
//! - the settings whose Python value is not what `.env` and the environment give here, kept as
//!   an admin change is kept (`settings`);
//! - with `--logs`, the log rows, keys replaced by their ids and fingerprints, every known
//!   secret redacted (`logs`).
//!
//! Running it again brings over only what changed in the Python server since, and keeps what
//! was changed here since (the store remembers what it imported, `settings`); logs resume
//! after the store's import mark. `--logs-only` leaves the settings alone. `--dry-run` prints
//! the same report and writes nothing. A proxy running on the same data holds its lock
//! (`data_lock`): the import refuses to write beside it.
//!
//! The proxy runs the settings part once by itself, at its first start (`first_start`).

mod first_start;
mod logs;
#[cfg(feature = "mysql")]
mod mysql;
mod settings;
mod source;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gemini_balance::store::sqlite::{self, ImportMark, ImportedSettings, Retention};
use gemini_balance::store::{SqliteStore, TimeZone};
use rusqlite::{Connection, OpenFlags};

pub use self::first_start::{at_first_start, into_networked};
use self::source::{PythonDb, Spec};
use crate::config::Config;
use crate::data_lock::{self, DataLock, LockError};
use crate::secrets::SecretsFile;

/// `gemini-balance-proxy import --help`.
pub const HELP: &str = "\
Usage: gemini-balance-proxy import <SOURCE> [--dry-run] [--logs | --logs-only] [--time-zone <ZONE>]

Brings a Python Gemini-Balance server's stored state into this proxy's data: the settings
changed in its web UI (keys and tokens added there included) and, with --logs, its error and
request logs. Run it in the proxy's directory, with the proxy stopped: it reads .env and the
environment as the proxy does, and writes data/<SQLITE_DATABASE>.db (settings, logs) and
data/<SQLITE_DATABASE>.secrets.json (secret settings; the database never holds a secret).

A setting is brought over only where the Python server's value differs from what .env and the
environment give here. Running the import again brings over only what changed in the Python
server since the last import: a setting changed here since (in the admin or in .env) is kept,
and named as a conflict if it changed in the Python server too.

The proxy's first start brings the settings over by itself (IMPORT_PYTHON_DATABASE, on by
default): run this for the logs (--logs, or --logs-only to leave the settings alone), or for
what changed in the Python server since.

SOURCE:
  <FILE>       the Python server's SQLite database (its data/<SQLITE_DATABASE>, no extension)
  mysql        its MySQL database, from MYSQL_HOST, MYSQL_PORT, MYSQL_USER, MYSQL_PASSWORD,
               MYSQL_DATABASE and MYSQL_SOCKET in .env or the environment, as it connects
  mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE
               the same, as a URL (a password here is visible to other users of the machine)

Options:
  --dry-run           print what would change (secrets masked) and write nothing
  --logs              also import t_error_logs and t_request_log
  --logs-only         import only the logs (new rows since the last import): the settings
                      are neither compared nor changed
  --time-zone <ZONE>  the zone of the Python server's clock, in which its logs' times are
                      written (default: TZ if set, else Asia/Shanghai, its Docker image's)
  -h, --help          this text

Exit status:
  0  done (or nothing to do)
  1  failed (the source could not be read, the proxy is running, ...)
  2  the command line is wrong
  3  done, but some settings could not be brought over (listed): fix them by hand
";

/// The command line.
#[derive(Debug, PartialEq)]
struct Options {
    source: Spec,
    dry_run: bool,
    logs: bool,
    /// `--logs-only`: the settings are left alone.
    logs_only: bool,
    time_zone: Option<String>,
}

/// `None` for `--help`.
fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut source = None;
    let (mut dry_run, mut logs, mut logs_only, mut time_zone) = (false, false, false, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--dry-run" => dry_run = true,
            "--logs" => logs = true,
            "--logs-only" => (logs, logs_only) = (true, true),
            "--time-zone" => match args.next() {
                Some(zone) => time_zone = Some(zone.clone()),
                None => return Err("--time-zone needs a zone, such as Asia/Shanghai".to_owned()),
            },
            _ if arg.starts_with("--time-zone=") => {
                time_zone = Some(arg["--time-zone=".len()..].to_owned());
            }
            _ if arg.starts_with('-') && arg.len() > 1 => {
                return Err(format!("unknown option {arg:?}"));
            }
            _ if source.is_some() => return Err(format!("one SOURCE only (also got {arg:?})")),
            "mysql" => source = Some(Spec::MySqlSettings),
            _ if arg.starts_with("mysql://") => source = Some(Spec::MySqlUrl(arg.clone())),
            _ => source = Some(Spec::Sqlite(PathBuf::from(arg))),
        }
    }
    let source = source.ok_or("SOURCE is missing: the Python server's SQLite file, or mysql")?;
    Ok(Some(Options {
        source,
        dry_run,
        logs,
        logs_only,
        time_zone,
    }))
}

/// Runs `import` with its arguments; returns the exit status.
pub async fn main(args: &[String]) -> i32 {
    let options = match parse(args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{HELP}");
            return 0;
        }
        Err(e) => {
            eprintln!("gemini-balance-proxy import: {e}\n\n{HELP}");
            return 2;
        }
    };
    // The library's warnings (a store migration, an unreadable row) go to stderr; the report
    // is stdout.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .try_init();
    match run(&options).await {
        Ok(true) => 0,
        Ok(false) => 3,
        Err(e) => {
            eprintln!("gemini-balance-proxy import: {e}");
            1
        }
    }
}

/// This proxy's data: looked at (a dry run), or open for writing.
enum Target {
    /// A dry run: the database read-only if it exists, the secrets file as it is.
    Look(Option<Connection>),
    Write {
        store: SqliteStore,
        /// Held until the import is done.
        _lock: DataLock,
    },
}

impl Target {
    fn look(db: &Path) -> Result<Target, String> {
        if !db.exists() {
            return Ok(Target::Look(None));
        }
        Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map(|c| Target::Look(Some(c)))
            .map_err(|e| format!("{}: {e}", db.display()))
    }

    fn open(db: &Path, secrets: &SecretsFile, zone: &TimeZone) -> Result<Target, String> {
        let (store, lock) = open_store(db, secrets, zone)?;
        Ok(Target::Write { store, _lock: lock })
    }

    fn kept_settings(&self) -> Result<BTreeMap<String, String>, String> {
        let rows = match self {
            Target::Look(None) => Vec::new(),
            // A file the proxy has not set up yet (created, never opened) has no table.
            Target::Look(Some(conn)) if !has_settings_table(conn) => Vec::new(),
            Target::Look(Some(conn)) => {
                sqlite::import::kept_settings(conn).map_err(|e| e.to_string())?
            }
            Target::Write { store, .. } => return kept_settings(store),
        };
        Ok(rows.into_iter().map(|s| (s.name, s.value)).collect())
    }

    /// What was imported of `source`'s settings before (see `settings`).
    fn imported_settings(&self, source: &str) -> Result<ImportedSettings, String> {
        match self {
            Target::Look(None) => Ok(ImportedSettings::empty(source)),
            Target::Look(Some(conn)) => sqlite::import::imported_settings(conn, source),
            Target::Write { store, .. } => store.imported_settings(source),
        }
        .map_err(|e| e.to_string())
    }

    fn mark(&self, source: &str, table: &str) -> Result<Option<ImportMark>, String> {
        match self {
            Target::Look(None) => Ok(None),
            Target::Look(Some(conn)) => sqlite::import::import_mark(conn, source, table),
            Target::Write { store, .. } => store.import_mark(source, table),
        }
        .map_err(|e| e.to_string())
    }
}

/// The store's settings table, name → text.
fn kept_settings(store: &SqliteStore) -> Result<BTreeMap<String, String>, String> {
    let rows = store.settings().map_err(|e| e.to_string())?;
    Ok(rows.into_iter().map(|s| (s.name, s.value)).collect())
}

/// This proxy's store at `db`, open for the import, and the lock that keeps a proxy from
/// starting beside it.
fn open_store(
    db: &Path,
    secrets: &SecretsFile,
    zone: &TimeZone,
) -> Result<(SqliteStore, DataLock), String> {
    let dir = db.parent().unwrap_or(Path::new("data"));
    crate::private_files::prepare(Path::new("data"), db, &[secrets.path()])
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let lock_path = data_lock::path_of(db);
    let lock = DataLock::exclusive(&lock_path).map_err(|e| match e {
        LockError::Busy => format!(
            "a proxy (or another import) is running on {} ({} is locked): stop it first; \
             it reads its settings at start, so the import takes effect when it starts again",
            db.display(),
            lock_path.display()
        ),
        LockError::Failed(e) => e,
    })?;
    // Nothing is deleted while importing: the proxy's own retention (AUTO_DELETE_*) runs
    // when it starts, as the Python server's would have.
    let mut retention = Retention::default();
    retention.error_logs = None;
    retention.request_logs = None;
    retention.usage_minutes = Duration::from_secs(100 * 365 * 86_400);
    retention.usage_hours = retention.usage_minutes;
    let store = SqliteStore::builder(db)
        .cache_mib(8)
        .retention(retention)
        .time_zone(zone.clone())
        .open()
        .map_err(|e| format!("{}: {e}", db.display()))?;
    Ok((store, lock))
}

fn has_settings_table(conn: &Connection) -> bool {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'settings'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .is_ok_and(|n| n > 0)
}

/// `Ok(true)`: everything was brought over; `Ok(false)`: done, but some settings were not.
async fn run(options: &Options) -> Result<bool, String> {
    let (vars, skipped_lines) = crate::dotenv::load(std::env::vars().collect())?;
    if !skipped_lines.is_empty() {
        let lines: Vec<String> = skipped_lines.iter().map(ToString::to_string).collect();
        eprintln!(
            ".env: the statements on these lines could not be read and are skipped, as Gemini-Balance's python-dotenv skips them: {}",
            lines.join(", ")
        );
    }
    let config = Config::from_vars(&vars)
        .map_err(|e| format!("the settings of .env and the environment: {e}"))?;
    let base = &config.settings;
    let name = base.text("SQLITE_DATABASE");
    let db_path = PathBuf::from(format!("data/{name}.db"));
    let secrets = SecretsFile::new(format!("data/{name}.secrets.json"));
    let zone = options
        .logs
        .then(|| log_time_zone(options, &vars))
        .transpose()?;

    let mut db = PythonDb::open(&options.source, &vars).await?;
    println!("From: {}", db.shown);
    println!(
        "Into: {} and {}{}",
        db_path.display(),
        secrets.path().display(),
        if options.dry_run {
            " (dry run: nothing is written)"
        } else {
            ""
        }
    );
    let target = if options.dry_run {
        Target::look(&db_path)?
    } else {
        Target::open(&db_path, &secrets, &config.time_zone)?
    };

    // Settings.
    let identity = db.identity().await?;
    let rows = db.settings().await?;
    let kept_secrets = secrets.load()?;
    let plan = if options.logs_only {
        settings::Plan::default()
    } else {
        let last = target.imported_settings(&identity)?;
        settings::plan(&rows, base, &target.kept_settings()?, &kept_secrets, &last)
    };
    // Every secret known, to keep it out of the report (a non-secret value may quote one; URLs
    // are shown without their credentials, `settings::shown`) and out of the imported logs.
    let redactor =
        logs::Redactor::new(known_secrets(&mut db, &rows, &config, &kept_secrets, &vars).await?);
    if options.logs_only {
        println!("\nSettings: left alone (--logs-only)");
    } else {
        print_plan(&plan, options.dry_run, &redactor);
    }
    if let Target::Write { store, .. } = &target {
        apply(&plan, store, &secrets, &identity)?;
    }

    // Logs.
    let states = logs::states(&mut db, |table| target.mark(&identity, table)).await?;
    println!();
    match zone {
        None => {
            let pending: Vec<String> = states
                .iter()
                .filter(|s| s.pending > 0)
                .map(|s| format!("{} ({} rows)", s.table, s.pending))
                .collect();
            if pending.is_empty() {
                println!("Logs: nothing new to import");
            } else {
                println!("Logs: not imported; --logs imports {}", pending.join(", "));
            }
        }
        Some((zone, why)) => {
            println!("Logs (times read as {zone}: {why}):");
            for state in &states {
                let before = match &state.mark {
                    Some(mark) => format!(
                        "; {} rows imported before (up to id {})",
                        mark.rows, mark.last_id
                    ),
                    None => String::new(),
                };
                if !state.present {
                    println!("  {}: not in the source database", state.table);
                    continue;
                }
                match &target {
                    Target::Look(_) if state.pending == 0 => {
                        println!("  {}: nothing new to import{before}", state.table)
                    }
                    Target::Look(_) => println!(
                        "  {}: {} rows to import (up to id {}){before}",
                        state.table, state.pending, state.max_id
                    ),
                    Target::Write { store, .. } => {
                        let done =
                            logs::import_table(&mut db, store, &identity, state, &zone, &redactor)
                                .await?;
                        let skipped = match done.skipped {
                            0 => String::new(),
                            n => format!(" ({n} unreadable rows skipped)"),
                        };
                        println!(
                            "  {}: {} rows imported{skipped}{before}",
                            state.table, done.rows
                        );
                    }
                }
            }
        }
    }
    if let Target::Write { store, .. } = target {
        store.shutdown().map_err(|e| e.to_string())?;
    }
    println!();
    println!(
        "{}",
        match (options.dry_run, plan.is_incomplete()) {
            (false, _) if options.logs_only => "Done. The logs are in; settings were not touched.",
            (true, false) => "Dry run: nothing was written.",
            (true, true) =>
                "Dry run: nothing was written. Some settings cannot be brought over (see above).",
            (false, false) => "Done. Start the proxy: the imported settings apply from its start.",
            (false, true) =>
                "Done, but some settings were not brought over (see above): set them by hand.",
        }
    );
    Ok(!plan.is_incomplete())
}

/// Keeps the plan's changes as changes made through the admin API are kept, then remembers
/// the Python values looked at, as `source`'s (`settings`): after the changes, so that a run
/// that stops in between brings them over again.
fn apply(
    plan: &settings::Plan,
    store: &SqliteStore,
    secrets: &SecretsFile,
    source: &str,
) -> Result<(), String> {
    for change in &plan.changes {
        crate::state::keep(
            secrets,
            store,
            change.name,
            change.secret,
            change.keep.as_deref(),
        )
        .map_err(|e| format!("{}: {e}", change.name))?;
    }
    store
        .remember_imported_settings(source, plan.remember.clone())
        .map_err(|e| format!("remembering the imported settings: {e}"))
}

/// The zone the Python server's log times are read in, and why that one.
fn log_time_zone(
    options: &Options,
    vars: &HashMap<String, String>,
) -> Result<(TimeZone, &'static str), String> {
    let (name, why) = match (&options.time_zone, vars.get("TZ").filter(|t| !t.is_empty())) {
        (Some(zone), _) => (zone.as_str(), "--time-zone"),
        (None, Some(tz)) => (tz.trim_start_matches(':'), "TZ"),
        (None, None) => (
            "Asia/Shanghai",
            "the zone the Python server's Docker image sets; if it ran outside Docker, pass --time-zone with its machine's zone",
        ),
    };
    TimeZone::named(name).map(|zone| (zone, why)).map_err(|e| {
        format!("{why}: {e}; pass --time-zone with the zone of the Python server's clock")
    })
}

/// Every secret the import knows of, to redact from log text: the Python server's secret
/// settings, the keys and tokens its tables name, and this proxy's secrets.
async fn known_secrets(
    db: &mut PythonDb,
    rows: &[(String, String)],
    config: &Config,
    kept_secrets: &BTreeMap<String, String>,
    vars: &HashMap<String, String>,
) -> Result<Vec<String>, String> {
    let mut secrets = settings::secrets_of(rows);
    for (table, column) in [
        ("t_request_log", "api_key"),
        ("t_error_logs", "gemini_key"),
        ("t_file_records", "api_key"),
        ("t_file_records", "user_token"),
    ] {
        secrets.extend(db.distinct(table, column).await?);
    }
    for def in crate::settings::DEFS.iter().filter(|d| d.kind.is_secret()) {
        secrets.extend(settings::secret_parts(&crate::settings::to_text(
            config.settings.value(def.name),
        )));
    }
    for raw in kept_secrets.values() {
        secrets.extend(settings::secret_parts(raw));
    }
    if let Some(password) = crate::settings::lookup(vars, "MYSQL_PASSWORD") {
        secrets.push(password.clone());
    }
    Ok(secrets)
}

/// Prints the settings part of the report; every line passes through `redactor` (a value that
/// is not a secret setting may still hold a key or a password).
fn print_plan(plan: &settings::Plan, dry_run: bool, redactor: &logs::Redactor) {
    let say = |line: String| println!("{}", redactor.redact(&line));
    println!();
    say(format!("Settings (t_settings: {} rows):", plan.rows));
    let forgotten = if dry_run {
        "would be forgotten"
    } else {
        "forgotten"
    };
    for c in &plan.changes {
        let place = if c.secret { "secrets file" } else { "database" };
        say(match &c.keep {
            Some(_) => format!("  {}: {} → {} ({place})", c.name, c.old, c.new),
            None => format!(
                "  {}: {} → {} (the environment's value, as in the Python server: the kept change {forgotten})",
                c.name, c.old, c.new
            ),
        });
    }
    if plan.changes.is_empty() {
        say("  nothing to change".to_owned());
    }
    say(format!(
        "  {} settings already as in the Python server",
        plan.unchanged
    ));
    for line in plan.kept_lines() {
        say(line);
    }
    if !plan.not_acted_on.is_empty() {
        say(format!(
            "  kept, but not acted on by this version: {}",
            plan.not_acted_on.join(", ")
        ));
    }
    let mut left = Vec::new();
    for l in plan.refused.iter().chain(&plan.startup_only) {
        left.push(format!("  {}: {}", l.name, l.why));
    }
    for (names, why) in [
        (&plan.storage, "where the Python server kept its data"),
        (&plan.unknown, "Python settings this proxy does not have"),
        (
            &plan.not_python,
            "not settings of the Python server either (it ignores them)",
        ),
    ] {
        if !names.is_empty() {
            left.push(format!("  {}: {why}", names.join(", ")));
        }
    }
    if !left.is_empty() {
        say("Not brought over:".to_owned());
        for line in left {
            say(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_command_line() {
        let o = parse(&args(&["data/default_db", "--dry-run", "--logs"]))
            .unwrap()
            .unwrap();
        assert_eq!(o.source, Spec::Sqlite(PathBuf::from("data/default_db")));
        assert!(o.dry_run && o.logs && !o.logs_only && o.time_zone.is_none());
        let o = parse(&args(&["data/default_db", "--logs-only"]))
            .unwrap()
            .unwrap();
        assert!(o.logs && o.logs_only && !o.dry_run);
        let o = parse(&args(&["--time-zone", "UTC", "mysql"]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (o.source, o.time_zone.as_deref()),
            (Spec::MySqlSettings, Some("UTC"))
        );
        let o = parse(&args(&["mysql://root@db/gb", "--time-zone=Europe/Berlin"]))
            .unwrap()
            .unwrap();
        assert_eq!(o.source, Spec::MySqlUrl("mysql://root@db/gb".to_owned()));
        assert_eq!(o.time_zone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(parse(&args(&["x", "--help"])).unwrap(), None);
        for (bad, says) in [
            (&[][..], "SOURCE is missing"),
            (&["a", "b"][..], "one SOURCE"),
            (&["a", "--force"][..], "unknown option"),
            (&["a", "--time-zone"][..], "needs a zone"),
        ] {
            let err = parse(&args(bad)).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }
}
