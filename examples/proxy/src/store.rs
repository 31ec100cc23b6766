//! The proxy's store, chosen by `DATABASE_TYPE`: SQLite (`data/<SQLITE_DATABASE>.db`, the
//! default, for one instance), PostgreSQL (`POSTGRES_URL`, optionally `POSTGRES_SCHEMA`) or
//! MySQL/MariaDB (the Python server's `MYSQL_*` settings), so that several instances share one
//! database (docs/scale-out.md). The rest of the proxy holds it behind [`Store`].

use std::sync::Arc;

use gemini_balance::keys::KeyObserver;
use gemini_balance::quota::QuotaStore;
use gemini_balance::store::sqlite::DiskSpace;
use gemini_balance::store::{
    KeyStateStore, Retention, SettingsStore, SqliteStore, StatsStore, StoreError, TimeZone,
    UsageSink, WriterCounters,
};

use crate::settings::Settings;

/// What the proxy needs of a store: usage records, key state, statistics and logs for the
/// admin API, settings, client quotas, the writer's counters (for `/metrics`), the log
/// retention, and an orderly shutdown.
pub trait Store:
    UsageSink + KeyStateStore + KeyObserver + StatsStore + SettingsStore + QuotaStore + WriterCounters
{
    /// Replaces the log retention (AUTO_DELETE_* changed); returns once the store has it.
    fn set_retention(&self, retention: Retention) -> Result<(), StoreError>;
    /// Writes everything queued and closes the database.
    fn shutdown(&self) -> Result<(), StoreError>;
    /// Whether the database takes writes now (the readiness probe's check). Blocks.
    fn check_writable(&self) -> Result<(), StoreError>;
    /// The database's size and the space left beside it (a local file only). Blocks briefly.
    fn disk_space(&self) -> Option<DiskSpace> {
        None
    }
}

/// Free space under this is worth a warning: at full speed the store grows by gigabytes an
/// hour (`docs/performance.md`, "Store size").
const LOW_DISK: u64 = 1024 * 1024 * 1024;

/// Why the disk under the store is short, if it is: less than [`LOW_DISK`] free, or less
/// than the budget (DATABASE_MAX_SIZE_MB) still needs.
pub fn disk_warning(disk: &DiskSpace, max_bytes: Option<u64>) -> Option<String> {
    let free = disk.free_bytes?;
    let mb = |b: u64| b / (1024 * 1024);
    match max_bytes {
        Some(max) if free.saturating_add(disk.database_bytes) < max => Some(format!(
            "only {} MB free beside the {} MB database: the disk fills up before DATABASE_MAX_SIZE_MB ({} MB) is reached",
            mb(free),
            mb(disk.database_bytes),
            mb(max)
        )),
        Some(_) => None,
        None if free < LOW_DISK => Some(format!(
            "only {} MB free beside the {} MB database, and DATABASE_MAX_SIZE_MB is not set: the logs grow by ~350 bytes a request",
            mb(free),
            mb(disk.database_bytes)
        )),
        None => None,
    }
}

/// The store as the proxy's parts hold it.
pub type SharedStore = Arc<dyn Store>;

impl Store for SqliteStore {
    fn set_retention(&self, retention: Retention) -> Result<(), StoreError> {
        SqliteStore::set_retention(self, retention)
    }

    fn shutdown(&self) -> Result<(), StoreError> {
        SqliteStore::shutdown(self)
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        SqliteStore::check_writable(self)
    }

    fn disk_space(&self) -> Option<DiskSpace> {
        Some(SqliteStore::disk_space(self))
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
impl Store for gemini_balance::store::SqlStore {
    fn set_retention(&self, retention: Retention) -> Result<(), StoreError> {
        gemini_balance::store::SqlStore::set_retention(self, retention)
    }

    fn shutdown(&self) -> Result<(), StoreError> {
        gemini_balance::store::SqlStore::shutdown(self)
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        gemini_balance::store::SqlStore::check_writable(self)
    }
}

/// The database of `DATABASE_TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    MySql,
    Postgres,
}

impl Kind {
    pub fn of(settings: &Settings) -> Kind {
        match settings.text("DATABASE_TYPE") {
            "mysql" => Kind::MySql,
            "postgres" => Kind::Postgres,
            _ => Kind::Sqlite,
        }
    }
}

/// The networked database's URL for these settings (it may hold a password: never logged),
/// and how to name it in messages (without the password).
pub fn database_url(kind: Kind, settings: &Settings) -> Result<(String, String), String> {
    match kind {
        Kind::Sqlite => Err("SQLite has no URL".to_owned()),
        Kind::Postgres => {
            let url = settings.text("POSTGRES_URL").trim();
            if url.is_empty() {
                return Err(
                    "DATABASE_TYPE=postgres needs POSTGRES_URL (e.g. postgres://user:password@host:5432/gemini)"
                        .to_owned(),
                );
            }
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err("POSTGRES_URL: expected a postgres:// URL".to_owned());
            }
            Ok((url.to_owned(), shown(url)))
        }
        Kind::MySql => {
            let var = |name: &str| settings.text(name).trim().to_owned();
            mysql_url(
                &var("MYSQL_HOST"),
                &settings.int("MYSQL_PORT").to_string(),
                &var("MYSQL_USER"),
                settings.text("MYSQL_PASSWORD"),
                &var("MYSQL_DATABASE"),
                &var("MYSQL_SOCKET"),
            )
        }
    }
}

/// The Python server's MySQL connection (`app/database/connection.py`: `MYSQL_HOST`,
/// `MYSQL_PORT`, `MYSQL_USER`, `MYSQL_PASSWORD`, `MYSQL_DATABASE`, or `MYSQL_SOCKET` when set)
/// as a `mysql://` URL without TLS (as pymysql connects), and its name without the password.
pub fn mysql_url(
    host: &str,
    port: &str,
    user: &str,
    password: &str,
    database: &str,
    socket: &str,
) -> Result<(String, String), String> {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    if database.is_empty() {
        return Err("MYSQL_DATABASE is not set (.env or the environment)".to_owned());
    }
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let credentials = match password {
        "" => enc(user),
        password => format!("{}:{}", enc(user), enc(password)),
    };
    let (url, shown) = if socket.is_empty() {
        let host = if host.is_empty() { "localhost" } else { host };
        let port = match port {
            "" => 3306,
            port => port
                .parse::<u16>()
                .map_err(|_| format!("MYSQL_PORT: expected a port number, got {port:?}"))?,
        };
        (
            format!(
                "mysql://{credentials}@{}:{port}/{}?ssl-mode=disabled",
                enc_host(host),
                enc(database)
            ),
            format!("mysql://{user}@{host}:{port}/{database} (MySQL)"),
        )
    } else {
        (
            format!(
                "mysql://{credentials}@localhost/{}?ssl-mode=disabled&socket={}",
                enc(database),
                enc(socket)
            ),
            format!("mysql://{user}@/{database}?unix_socket={socket} (MySQL)"),
        )
    };
    Ok((url, shown))
}

/// A host as it goes in a URL (an IPv6 address in brackets).
fn enc_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// A URL without its password (in the user info or a `password=` parameter).
fn shown(url: &str) -> String {
    let (base, params) = match url.split_once('?') {
        Some((base, params)) => (base, Some(params)),
        None => (url, None),
    };
    let mut out = match (base.split_once("://"), base.rfind('@')) {
        (Some((scheme, _)), Some(at)) if at > scheme.len() + 3 => {
            let user = base[scheme.len() + 3..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{}", &base[at + 1..])
        }
        _ => base.to_owned(),
    };
    if let Some(params) = params {
        let params: Vec<String> = params
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _))
                    if name.to_ascii_lowercase().contains("password")
                        || name.eq_ignore_ascii_case("pwd")
                        || name.eq_ignore_ascii_case("pass") =>
                {
                    format!("{name}=…")
                }
                _ => param.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// Opens the networked store of `kind`; `shown` names it in messages.
#[allow(unused_variables)]
pub fn open_networked(
    kind: Kind,
    settings: &Settings,
    channel_capacity: usize,
    retention: Retention,
    time_zone: TimeZone,
) -> Result<(SharedStore, String), String> {
    let (url, shown) = database_url(kind, settings)?;
    let available = match kind {
        Kind::Postgres => cfg!(feature = "postgres"),
        Kind::MySql => cfg!(feature = "mysql"),
        Kind::Sqlite => true,
    };
    if !available {
        return Err(format!(
            "DATABASE_TYPE={}: this build has no support for it (cargo feature `{}`)",
            settings.text("DATABASE_TYPE"),
            settings.text("DATABASE_TYPE")
        ));
    }
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    {
        let mut builder = gemini_balance::store::SqlStore::builder(&url)
            .channel_capacity(channel_capacity)
            .retention(retention)
            .time_zone(time_zone);
        let schema = settings.text("POSTGRES_SCHEMA").trim();
        if kind == Kind::Postgres && !schema.is_empty() {
            builder = builder.schema(schema);
        }
        let store = builder.open().map_err(|e| format!("{shown}: {e}"))?;
        Ok((Arc::new(store), shown))
    }
    #[cfg(not(any(feature = "postgres", feature = "mysql")))]
    Err(format!("{shown}: this build has no networked store"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_urls_from_the_python_settings() {
        let (url, shown) = mysql_url("db", "3307", "gb", "p@ss:/w", "gemini", "").unwrap();
        assert_eq!(
            url,
            "mysql://gb:p%40ss%3A%2Fw@db:3307/gemini?ssl-mode=disabled"
        );
        assert_eq!(shown, "mysql://gb@db:3307/gemini (MySQL)");
        assert!(!shown.contains("p@ss"));
        let (url, _) = mysql_url("", "", "root", "", "gemini", "/run/mysqld.sock").unwrap();
        assert_eq!(
            url,
            "mysql://root@localhost/gemini?ssl-mode=disabled&socket=%2Frun%2Fmysqld%2Esock"
        );
        assert!(mysql_url("h", "x", "u", "", "d", "").is_err());
        assert!(mysql_url("h", "", "u", "", "", "").is_err());
    }

    #[test]
    fn urls_are_shown_without_passwords() {
        assert_eq!(
            shown("postgres://u:secret@h:5432/db"),
            "postgres://u@h:5432/db"
        );
        assert_eq!(shown("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            shown("postgres://u@h/db?sslmode=require&password=se@cret&sslpassword=x"),
            "postgres://u@h/db?sslmode=require&password=…&sslpassword=…"
        );
    }

    fn disk(database_mb: u64, free_mb: u64) -> DiskSpace {
        // Only a store makes one (its fields are set below).
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("disk.db")).unwrap();
        let mut disk = store.disk_space();
        store.shutdown().unwrap();
        disk.database_bytes = database_mb * 1024 * 1024;
        disk.free_bytes = Some(free_mb * 1024 * 1024);
        disk
    }

    #[test]
    fn a_short_disk_is_named_with_or_without_a_budget() {
        // No budget: under 1 GiB free is short.
        assert!(disk_warning(&disk(10, 500), None)
            .unwrap()
            .contains("DATABASE_MAX_SIZE_MB is not set"));
        assert_eq!(disk_warning(&disk(10, 5_000), None), None);
        // A budget the disk cannot hold.
        let mb = 1024 * 1024;
        assert!(disk_warning(&disk(100, 300), Some(1_000 * mb))
            .unwrap()
            .contains("before DATABASE_MAX_SIZE_MB (1000 MB)"));
        // One it can, even with little free.
        assert_eq!(disk_warning(&disk(900, 200), Some(1_000 * mb)), None);
    }
}
