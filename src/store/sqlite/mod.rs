//! [`SqliteStore`]: usage log, error log, key state and settings in one SQLite file (WAL).
//!
//! One writer thread owns the read-write connection and drains a bounded channel, writing
//! whatever is queued in one transaction per batch. The request path ([`UsageSink::record`],
//! [`KeyObserver`]) never waits: it does a non-blocking send, and when the channel is full
//! the record is dropped, counted ([`WriterStats::dropped`]) and logged (the first time, then
//! at most every ten seconds). [`SqliteStore::shutdown`] (or dropping the last handle) writes
//! everything queued and checkpoints the WAL.
//!
//! Nothing secret is written: keys and client tokens are stored as their id (a 64-bit SHA-256
//! digest in hex) and fingerprint (`AIza…x4Fq`); error messages and request bodies pass
//! through [`redact_keys`](crate::redact::redact_keys) first.
//!
//! Statistics and log pages come through [`StatsStore`] (async: the
//! queries run on Tokio's blocking pool) or the blocking shortcuts such as
//! [`SqliteStore::summary`], on the store's own read-only connection. Queries of your own run
//! there too ([`SqliteStore::read`], with `rusqlite` as a dependency of yours, version 0.43).
//! Schema, durability window and `sqlite3` examples: `docs/store.md`.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::SystemTime;
//! use gemini_balance::keys::KeyPool;
//! use gemini_balance::store::{KeyStateStore, SqliteStore, UsageSink};
//! use gemini_balance::usage::RequestRecord;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("usage.db");
//! let store = SqliteStore::open(&path)?;
//!
//! // Key state survives restarts: restore it, then let the pool report changes.
//! let pool = KeyPool::builder()
//!     .keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv"])
//!     .observer(Arc::new(store.clone()))
//!     .build()?;
//! pool.restore(&store.load_key_states()?);
//!
//! // The request path: a non-blocking send.
//! let mut record = RequestRecord::new(1, SystemTime::now());
//! record.status = 200;
//! record.success = true;
//! store.record(record);
//!
//! store.flush()?;
//! assert_eq!(store.summary()?.last_minute.calls, 1);
//! store.shutdown()?;
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "import")]
#[cfg_attr(docsrs, doc(cfg(feature = "import")))]
pub mod import;
mod key_state;
mod logs;
mod quota;
mod retention;
mod rollup;
mod schema;
mod snapshot;
mod stats;
#[cfg(test)]
mod tests;
use super::time;
mod writer;

use std::collections::VecDeque;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, OpenFlags};

#[cfg(feature = "import")]
#[cfg_attr(docsrs, doc(cfg(feature = "import")))]
pub use self::import::{ImportBatch, ImportMark, ImportedError, ImportedSettings};
pub use self::retention::Retention;
use self::retention::{Purge, Table};
pub use self::schema::SCHEMA_VERSION;
use self::stats::{Granularity, SeriesPoint, Summary, UsageRow, Window};
use self::writer::{Msg, Shared, Throttle, Writer};
use super::logs::LogDeletion;
pub use super::stats::WriterStats;
use super::stats_store::{StatsStore, StoreFuture, UsageBy};
pub use super::Setting;
use super::{KeyStateStore, SettingsStore, StoreError, TimeZone, UsageSink};
use crate::keys::{KeyId, KeyObserver, KeySnapshot};
use crate::usage::RequestRecord;

/// Wraps a rusqlite error with what was being done.
pub(crate) fn sql_error(what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let what = what.into();
    move |e| StoreError::with_source(what, e)
}

fn closed() -> StoreError {
    StoreError::new("the store is shut down")
}

/// What [`SqliteStore::disk_space`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiskSpace {
    /// The database file and its write-ahead log.
    pub database_bytes: u64,
    /// Space an unprivileged process can still use on the database's file system (`None`
    /// where it cannot be read).
    pub free_bytes: Option<u64>,
}

#[cfg(unix)]
fn free_bytes(dir: &Path) -> Option<u64> {
    let vfs = rustix::fs::statvfs(dir).ok()?;
    Some(vfs.f_bavail.saturating_mul(vfs.f_frsize))
}

#[cfg(not(unix))]
fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}

/// Options for [`SqliteStore`]; from [`SqliteStore::builder`].
#[derive(Debug, Clone)]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    channel_capacity: usize,
    batch_size: usize,
    gather: Duration,
    busy_timeout: Duration,
    cache_mib: u32,
    sync_every_commit: bool,
    retention: Retention,
    time_zone: TimeZone,
}

impl SqliteStoreBuilder {
    /// Records the channel holds before `record()` starts dropping. Default 16,384 (see
    /// `docs/performance.md` for the memory this bounds).
    pub fn channel_capacity(mut self, n: usize) -> Self {
        self.channel_capacity = n.max(1);
        self
    }

    /// Most records written per transaction. Default 1,024.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// After writing a batch that was not full, the writer lets records gather up to this
    /// long (or until a full batch, or half the channel, waits) before it writes again.
    /// Meanwhile `record()` only queues: it never has to wake the writer thread, which under
    /// load would otherwise cost a futex wake-up and two context switches per request; and
    /// the records gathered commit in one transaction, whose cost is mostly per transaction
    /// (at 2,000 records/s, a 50 ms gather costs the writer a third of the CPU per record of
    /// a 5 ms one: `docs/performance.md`). An idle writer still writes the first record at
    /// once; `flush()`, `shutdown()` and the admin writes end the wait at once. Default 50 ms:
    /// under steady traffic records reach the database (and readers) up to that much later,
    /// and a process crash can take that much more (`docs/store.md`, "Durability").
    /// `Duration::ZERO` writes as soon as records arrive.
    pub fn gather(mut self, delay: Duration) -> Self {
        self.gather = delay;
        self
    }

    /// How long a statement waits for a lock held by another connection (another process,
    /// or a `sqlite3` shell writing). Default 5 s.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// `true`: every commit is synced to disk (`PRAGMA synchronous=FULL`), so a power loss or
    /// OS crash loses nothing that was committed; each batch then waits for one `fsync`.
    /// Default `false` (`synchronous=NORMAL`): a process crash loses nothing committed, a
    /// power loss can lose the commits since the last checkpoint (see `docs/store.md`).
    pub fn sync_every_commit(mut self, yes: bool) -> Self {
        self.sync_every_commit = yes;
        self
    }

    /// SQLite's page cache for the writer connection, in MiB. Default 16.
    pub fn cache_mib(mut self, mib: u32) -> Self {
        self.cache_mib = mib;
        self
    }

    /// Retention of logs and rollups (default: [`Retention::default`]).
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// The zone of the calendar: where [`summary`](SqliteStore::summary)'s month begins and,
    /// with [`Retention::logs_at_midnight`], when the logs are purged. Default UTC.
    pub fn time_zone(mut self, time_zone: TimeZone) -> Self {
        self.time_zone = time_zone;
        self
    }

    /// Keeps error log rows for `days` (`None`: forever). Default 7 days.
    pub fn error_log_days(mut self, days: Option<u32>) -> Self {
        self.retention.error_logs = days.map(|d| Duration::from_secs(u64::from(d) * 86_400));
        self
    }

    /// Keeps request log rows for `days` (`None`: forever). Default `None`.
    pub fn request_log_days(mut self, days: Option<u32>) -> Self {
        self.retention.request_logs = days.map(|d| Duration::from_secs(u64::from(d) * 86_400));
        self
    }

    /// Opens the database (creating it, and its directory, or migrating it) and starts the
    /// writer thread.
    pub fn open(self) -> Result<SqliteStore, StoreError> {
        let path_text = self.path.display().to_string();
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::with_source(format!("creating the directory of {path_text}"), e)
            })?;
        }
        let mut conn =
            Connection::open(&self.path).map_err(sql_error(format!("opening {path_text}")))?;
        configure(&conn, self.busy_timeout)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sql_error("enabling WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path_text, mode, "SQLite refused WAL mode; readers will wait for writers");
        }
        let synchronous = if self.sync_every_commit {
            "FULL"
        } else {
            "NORMAL"
        };
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(sql_error(format!("setting synchronous={synchronous}")))?;
        conn.pragma_update(None, "cache_size", -(i64::from(self.cache_mib) * 1024))
            .map_err(sql_error("setting the cache size"))?;
        // A large purge grows the WAL; once checkpointed it is cut back to this (SQLite keeps
        // its largest size otherwise).
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
            .map_err(sql_error("setting the journal size limit"))?;
        schema::migrate(&mut conn)?;
        let reader = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(sql_error(format!("opening {path_text} for reading")))?;
        configure(&reader, self.busy_timeout)?;

        let (tx, rx) = mpsc::sync_channel(self.channel_capacity);
        let shared = Arc::new(Shared::default());
        let writer = Writer {
            conn,
            rx,
            shared: shared.clone(),
            batch_size: self.batch_size,
            gather: self.gather,
            gather_until: self.batch_size.min(self.channel_capacity / 2).max(1) as u64,
            retention: self.retention,
            next_retention: Instant::now(),
            next_log_purge: None,
            time_zone: self.time_zone.clone(),
            dirty: false,
            last_checkpoint: Instant::now(),
            jobs: VecDeque::new(),
            budget: None,
            next_budget_check: Instant::now(),
            known_keys: Default::default(),
            known_clients: Default::default(),
            error_log: Throttle::new(Duration::from_secs(10)),
        };
        let handle = std::thread::Builder::new()
            .name("gemini-balance-sqlite".to_owned())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::with_source("starting the writer thread", e))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                tx,
                shared,
                reader: Mutex::new(reader),
                writer_thread: handle.thread().clone(),
                writer: Mutex::new(Some(handle)),
                path: self.path,
                capacity: self.channel_capacity,
                drop_log: Throttle::new(DROP_LOG_INTERVAL),
                time_zone: self.time_zone,
            }),
        })
    }
}

fn configure(conn: &Connection, busy_timeout: Duration) -> Result<(), StoreError> {
    conn.busy_timeout(busy_timeout)
        .map_err(sql_error("setting the busy timeout"))?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}

/// How often a full channel is logged at most.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The SQLite store; cheap to clone (clones share the database and the writer).
///
/// See the [module documentation](self).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    reader: Mutex<Connection>,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The writer thread, unparked when a control message is sent (it may be gathering).
    writer_thread: Thread,
    path: PathBuf,
    capacity: usize,
    drop_log: Throttle,
    time_zone: TimeZone,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("writer", &self.writer_stats())
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating or migrating) the database at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        Self::builder(path).open()
    }

    /// Options for the database at `path`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.as_ref().to_owned(),
            channel_capacity: 16_384,
            batch_size: 1_024,
            gather: Duration::from_millis(50),
            busy_timeout: Duration::from_secs(5),
            cache_mib: 16,
            sync_every_commit: false,
            retention: Retention::default(),
            time_zone: TimeZone::utc(),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The bytes of the database (its file and write-ahead log) and the space left on its
    /// file system, for a warning before the disk fills up. Blocks briefly (`stat` calls).
    pub fn disk_space(&self) -> DiskSpace {
        let size = |suffix: &str| {
            let mut path = self.inner.path.clone().into_os_string();
            path.push(suffix);
            std::fs::metadata(path).map_or(0, |m| m.len())
        };
        let dir = match self.inner.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        DiskSpace {
            database_bytes: size("") + size("-wal"),
            free_bytes: free_bytes(dir),
        }
    }

    /// Records dropped so far because the channel was full or the store was shut down.
    pub fn dropped(&self) -> u64 {
        self.inner.shared.dropped.load(Ordering::Relaxed)
    }

    /// Records accepted and not yet committed.
    pub fn queued(&self) -> u64 {
        self.inner.shared.queued()
    }

    /// All of the writer's counters.
    pub fn writer_stats(&self) -> WriterStats {
        let s = &self.inner.shared;
        WriterStats {
            queued: self.queued(),
            capacity: self.inner.capacity as u64,
            dropped: s.dropped.load(Ordering::Relaxed),
            // Acquire: pairs with the writer's Release after its commit, so a read that starts
            // after this load sees every record counted here.
            written: s.written.load(Ordering::Acquire),
            lost: s.lost.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            running: !s.closed.load(Ordering::Relaxed),
        }
    }

    /// Blocks until everything sent before this call is committed. Not for the request path
    /// (from async code, run it with `tokio::task::spawn_blocking`).
    pub fn flush(&self) -> Result<(), StoreError> {
        if self.inner.shared.closed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let (reply, done) = mpsc::sync_channel(1);
        self.inner.send_control(Msg::Flush(reply))?;
        done.recv().map_err(|_| closed())
    }

    /// Whether the database takes writes now: the writer thread runs and answers, and takes
    /// SQLite's write lock (`BEGIN IMMEDIATE`, rolled back at once: nothing is written). For a
    /// readiness probe. It waits for what is queued before it, and for a lock another
    /// connection holds (up to the busy timeout): call it off the async runtime
    /// (`tokio::task::spawn_blocking`), under a time limit of your own.
    ///
    /// ```
    /// use std::time::Duration;
    /// use gemini_balance::store::SqliteStore;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("usage.db");
    /// let store = SqliteStore::builder(&path)
    ///     .busy_timeout(Duration::from_millis(50))
    ///     .open()?;
    /// store.check_writable()?;
    ///
    /// // Another connection holds the write lock: no write can be made meanwhile.
    /// let other = rusqlite::Connection::open(&path)?;
    /// other.execute_batch("BEGIN EXCLUSIVE")?;
    /// assert!(store.check_writable().is_err());
    /// other.execute_batch("ROLLBACK")?;
    /// store.check_writable()?;
    ///
    /// store.shutdown()?;
    /// assert!(store.check_writable().is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn check_writable(&self) -> Result<(), StoreError> {
        self.exec(|conn| {
            conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
                .map_err(sql_error("taking the write lock"))
        })
    }

    /// Writes everything queued, checkpoints the WAL into the database file and stops the
    /// writer. Records sent afterwards are dropped (and counted). Idempotent; later calls
    /// return once the first has finished. Dropping the last clone of the store does the same.
    pub fn shutdown(&self) -> Result<(), StoreError> {
        self.inner.shutdown()
    }

    /// Runs `f` on the writer's connection, after everything queued before is committed, and
    /// returns its result. Blocks; use it for rare writes (settings, admin deletions).
    fn exec<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.inner.shared.closed.load(Ordering::Relaxed) {
            return Err(closed());
        }
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Box::new(move |conn: &mut Connection| {
            let _ = reply.send(f(conn));
        });
        self.inner.send_control(Msg::Exec(job))?;
        answer.recv().map_err(|_| closed())?
    }

    /// Deletes rows older than `cutoff` from `tables`, in small steps between batches.
    fn purge(&self, tables: Vec<Table>, cutoff: SystemTime) -> Result<u64, StoreError> {
        if self.inner.shared.closed.load(Ordering::Relaxed) {
            return Err(closed());
        }
        let (reply, answer) = mpsc::sync_channel(1);
        let purge = Purge::new(tables, time::ms_of(cutoff), Some(reply));
        self.inner.send_control(Msg::Purge(Box::new(purge)))?;
        answer.recv().map_err(|_| closed())?
    }

    /// Replaces the retention while the store runs (an admin changed how long logs are kept).
    ///
    /// The error and request log purge then runs at once with the new limits, as at startup,
    /// and afterwards on its schedule; scheduled purges still queued under the old limits are
    /// dropped. Returns once the writer has the message, not when the purge is done (the rows
    /// go in the background, a few thousand at a time). Blocks while the writer's channel is
    /// full: from async code run it with `tokio::task::spawn_blocking`.
    ///
    /// ```
    /// use gemini_balance::store::sqlite::Retention;
    /// use gemini_balance::store::SqliteStore;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// let store = SqliteStore::open(dir.path().join("usage.db"))?;
    /// let mut retention = Retention::default();
    /// retention.error_logs = None; // keep error logs from now on
    /// store.set_retention(retention)?;
    /// # store.shutdown()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_retention(&self, retention: Retention) -> Result<(), StoreError> {
        if self.inner.shared.closed.load(Ordering::Relaxed) {
            return Err(closed());
        }
        self.inner.send_control(Msg::Retention(Box::new(retention)))
    }

    /// Runs `f` on the store's read-only connection, in one read transaction: everything `f`
    /// reads is one snapshot of the database, so the parts of an answer agree even while the
    /// writer commits. Readers do not wait for the writer (WAL), but this call blocks the
    /// thread: from async code use [`read_async`](Self::read_async).
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        snapshot::snapshot(&self.reader(), f)
    }

    /// [`read`](Self::read) on Tokio's blocking thread pool. Must be called within a Tokio
    /// runtime.
    pub async fn read_async<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read(f))
            .await
            .map_err(|e| StoreError::with_source("the query task failed", e))?
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.inner.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The zone of the store's calendar (see [`SqliteStoreBuilder::time_zone`]).
    pub fn time_zone(&self) -> &TimeZone {
        &self.inner.time_zone
    }

    /// The header figures now, the month in the store's [time zone](Self::time_zone), with the
    /// writer's counters. These are taken just before the windows are read, so every record
    /// they count as [`written`](WriterStats::written) is in the windows (records committed
    /// in between may be too). Blocks (see [`read`](Self::read)).
    pub fn summary(&self) -> Result<Summary, StoreError> {
        let time_zone = &self.inner.time_zone;
        let writer = self.writer_stats();
        let mut summary = self.read(|c| stats::summary(c, SystemTime::now(), time_zone))?;
        summary.writer = Some(writer);
        Ok(summary)
    }

    /// Usage per key ([`StatsStore::usage`]). Blocks (see [`read`](Self::read)).
    pub fn usage_by_key(&self, window: Window) -> Result<Vec<UsageRow>, StoreError> {
        self.read(|c| stats::by_key(c, window))
    }

    /// Usage per model ([`StatsStore::usage`]). Blocks (see [`read`](Self::read)).
    pub fn usage_by_model(&self, window: Window) -> Result<Vec<UsageRow>, StoreError> {
        self.read(|c| stats::by_model(c, window))
    }

    /// Usage per client ([`StatsStore::usage`]). Blocks (see [`read`](Self::read)).
    pub fn usage_by_client(&self, window: Window) -> Result<Vec<UsageRow>, StoreError> {
        self.read(|c| stats::by_client(c, window))
    }

    /// [`StatsStore::series`] over everything. Blocks (see [`read`](Self::read)).
    pub fn series(&self, granularity: Granularity) -> Result<Vec<SeriesPoint>, StoreError> {
        self.read(|c| stats::series(c, granularity, SystemTime::now(), None))
    }

    /// [`StatsStore::top_rate_limited_keys`]. Blocks (see [`read`](Self::read)).
    pub fn top_rate_limited_keys(
        &self,
        window: Window,
        limit: u32,
    ) -> Result<Vec<super::stats::RateLimitedKey>, StoreError> {
        self.read(|c| stats::top_rate_limited_keys(c, window, limit))
    }

    /// [`StatsStore::errors`]. Blocks (see [`read`](Self::read)).
    pub fn error_log(
        &self,
        query: &super::logs::ErrorQuery,
    ) -> Result<super::logs::ErrorPage, StoreError> {
        self.read(|c| logs::errors(c, query))
    }

    /// [`StatsStore::requests`]. Blocks (see [`read`](Self::read)).
    pub fn request_log(
        &self,
        query: &super::logs::RequestQuery,
    ) -> Result<super::logs::RequestPage, StoreError> {
        self.read(|c| logs::requests(c, query))
    }

    /// Every setting, by name. Blocks (see [`read`](Self::read)).
    pub fn settings(&self) -> Result<Vec<Setting>, StoreError> {
        self.read(settings)
    }

    /// Sets (inserts or replaces) a setting; committed when this returns.
    ///
    /// Settings are not a place for secrets: a value containing a Google API key is refused
    /// (keep keys in the environment or the `.env` file).
    pub fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        super::settings::refuse_secret(name, value)?;
        let (name, value) = (name.to_owned(), value.to_owned());
        self.exec(move |conn| {
            conn.execute(
                "INSERT INTO settings (name, value, updated_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value, \
                 updated_ms = excluded.updated_ms",
                rusqlite::params![name, value, time::ms_of(SystemTime::now())],
            )
            .map_err(sql_error(format!("saving setting {name}")))?;
            Ok(())
        })
    }

    /// Deletes a setting; `true` if it existed. The row's bytes are overwritten, not only
    /// unlinked (`secure_delete`): a value that should not have been kept here (a secret an
    /// older version stored) leaves no copy in the file.
    pub fn delete_setting(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        self.exec(move |conn| {
            conn.pragma_update(None, "secure_delete", true)
                .map_err(sql_error("enabling secure_delete"))?;
            let deleted = conn
                .execute("DELETE FROM settings WHERE name = ?1", [&name])
                .map(|n| n > 0)
                .map_err(sql_error(format!("deleting setting {name}")));
            let restored = conn
                .pragma_update(None, "secure_delete", false)
                .map_err(sql_error("disabling secure_delete"));
            let deleted = deleted?;
            restored?;
            if deleted {
                // The write-ahead log still holds the pages as they were before (the value in
                // clear): copy them into the database, whose page is now overwritten, and
                // empty the log. Best effort: a reader in progress keeps the frames it needs
                // until the next checkpoint.
                let busy: i64 = conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
                    .unwrap_or(1);
                if busy != 0 {
                    tracing::debug!(
                        "the write-ahead log could not be emptied at once after a secure delete"
                    );
                }
            }
            Ok(deleted)
        })
    }

    /// Deletes error log rows by id; returns how many existed.
    pub fn delete_error_logs(&self, ids: &[i64]) -> Result<u64, StoreError> {
        let ids = ids.to_vec();
        self.exec(move |conn| delete_by_ids(conn, &ids, &["DELETE FROM error_log WHERE id = ?1"]))
    }

    /// Deletes request log rows by id (and the attempt rows of those requests); returns how
    /// many request rows existed. The usage statistics (rollups) are not changed.
    pub fn delete_request_logs(&self, ids: &[i64]) -> Result<u64, StoreError> {
        let ids = ids.to_vec();
        self.exec(move |conn| {
            delete_by_ids(
                conn,
                &ids,
                &[
                    "DELETE FROM attempt_log WHERE request_id = \
                     (SELECT request_id FROM request_log WHERE id = ?1)",
                    "DELETE FROM request_log WHERE id = ?1",
                ],
            )
        })
    }

    /// Deletes error log rows older than `cutoff`, in small steps that leave room for new
    /// records between them; returns how many were deleted once done.
    pub fn delete_error_logs_before(&self, cutoff: SystemTime) -> Result<u64, StoreError> {
        self.purge(vec![Table::Errors], cutoff)
    }

    /// Deletes request log rows (and attempt rows) older than `cutoff`, in small steps;
    /// returns how many rows were deleted. The usage statistics (rollups) are not changed.
    pub fn delete_request_logs_before(&self, cutoff: SystemTime) -> Result<u64, StoreError> {
        self.purge(vec![Table::Requests, Table::Attempts], cutoff)
    }
}

/// Every row of the `settings` table, by name; unreadable rows are skipped (and logged). For a
/// connection of its own, such as a read-only look at a store that is not open (the import's
/// dry run).
pub(crate) fn settings(conn: &Connection) -> Result<Vec<Setting>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT name, value, updated_ms FROM settings ORDER BY name")
        .map_err(sql_error("reading settings"))?;
    let rows = stmt
        .query_map([], |row| {
            Ok(Setting {
                name: row.get(0)?,
                value: row.get(1)?,
                updated_ms: row.get(2)?,
            })
        })
        .map_err(sql_error("reading settings"))?;
    let mut settings = Vec::new();
    for row in rows {
        match row {
            Ok(setting) => settings.push(setting),
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable settings row"),
        }
    }
    Ok(settings)
}

/// Runs each statement for each id in one transaction; counts the last statement's changes.
fn delete_by_ids(conn: &mut Connection, ids: &[i64], sqls: &[&str]) -> Result<u64, StoreError> {
    let tx = conn
        .transaction()
        .map_err(sql_error("starting a deletion"))?;
    let mut deleted = 0;
    for (index, sql) in sqls.iter().enumerate() {
        let mut stmt = tx.prepare_cached(sql).map_err(sql_error("deleting rows"))?;
        for id in ids {
            let n = stmt.execute([id]).map_err(sql_error("deleting rows"))?;
            if index + 1 == sqls.len() {
                deleted += n as u64;
            }
        }
    }
    tx.commit().map_err(sql_error("committing a deletion"))?;
    Ok(deleted)
}

impl Inner {
    fn shutdown(&self) -> Result<(), StoreError> {
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let Some(handle) = writer.take() else {
            return Ok(());
        };
        let (reply, done) = mpsc::sync_channel(1);
        if self.send_control(Msg::Shutdown(reply)).is_ok() {
            let _ = done.recv();
        }
        self.shared.closed.store(true, Ordering::Relaxed);
        handle
            .join()
            .map_err(|_| StoreError::new("the SQLite writer thread panicked"))
    }

    /// Sends a message the writer must answer soon (flush, shutdown, an admin write, a
    /// purge): counted in `controls` and followed by an unpark, so a gathering writer stops
    /// waiting. Blocks while the channel is full.
    fn send_control(&self, msg: Msg) -> Result<(), StoreError> {
        self.shared.controls.fetch_add(1, Ordering::SeqCst);
        let sent = self.tx.send(msg).map_err(|_| closed());
        self.writer_thread.unpark();
        sent
    }

    fn note_drop(&self) {
        let total = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if self.drop_log.ready() {
            if self.shared.closed.load(Ordering::Relaxed) {
                tracing::warn!(
                    dropped_total = total,
                    "usage record dropped: the store is shut down"
                );
            } else {
                tracing::warn!(
                    dropped_total = total,
                    capacity = self.capacity,
                    "usage store queue full: dropping records (the database cannot keep up)"
                );
            }
        }
    }

    fn wake(&self) {
        // Full or closed is fine: the writer takes pending states with every batch.
        let _ = self.tx.try_send(Msg::Wake);
    }

    fn set_key(&self, id: KeyId, state: Option<KeySnapshot>) {
        let was_empty = {
            let mut pending = self
                .shared
                .pending_keys
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let was_empty = pending.is_empty();
            pending.insert(id, state);
            was_empty
        };
        if was_empty {
            self.wake();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "closing the usage store failed");
        }
    }
}

impl crate::store::WriterCounters for SqliteStore {
    fn writer_stats(&self) -> crate::store::stats::WriterStats {
        SqliteStore::writer_stats(self)
    }
}

impl UsageSink for SqliteStore {
    fn record(&self, record: RequestRecord) {
        let inner = &*self.inner;
        inner.shared.offered.fetch_add(1, Ordering::Relaxed);
        if inner.shared.closed.load(Ordering::Relaxed) {
            inner.note_drop();
            return;
        }
        if inner.tx.try_send(Msg::Record(Box::new(record))).is_err() {
            inner.note_drop();
        }
    }
}

impl KeyStateStore for SqliteStore {
    /// Queues the state (coalesced per key: only the latest is written); never blocks and
    /// never drops it, even when the record channel is full.
    fn save_key_state(&self, state: KeySnapshot) {
        self.inner.set_key(state.id.clone(), Some(state));
    }

    fn forget_key(&self, id: &KeyId) {
        self.inner.set_key(id.clone(), None);
    }

    /// Flushes pending states, then reads every stored state.
    fn load_key_states(&self) -> Result<Vec<KeySnapshot>, StoreError> {
        self.flush()?;
        self.read(key_state::load)
    }
}

impl SqliteStore {
    /// A blocking job on Tokio's blocking pool.
    fn blocking<T, F>(&self, f: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&SqliteStore) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&store))
                .await
                .map_err(|e| StoreError::with_source("the query task failed", e))?
        })
    }
}

/// Reads run on Tokio's blocking pool (the methods must be called within a Tokio runtime);
/// deletions go through the writer, a few thousand rows at a time for
/// [`LogDeletion::Before`].
impl StatsStore for SqliteStore {
    fn summary(&self) -> StoreFuture<'_, Summary> {
        self.blocking(SqliteStore::summary)
    }

    fn usage(&self, by: UsageBy, window: Window) -> StoreFuture<'_, Vec<UsageRow>> {
        Box::pin(self.read_async(move |c| match by {
            UsageBy::Key => stats::by_key(c, window),
            UsageBy::Model => stats::by_model(c, window),
            UsageBy::Client => stats::by_client(c, window),
        }))
    }

    fn models_of_key(&self, key: KeyId, window: Window) -> StoreFuture<'_, Vec<UsageRow>> {
        Box::pin(self.read_async(move |c| stats::models_of_key(c, &key.hex(), window)))
    }

    fn key_mask(&self, key: KeyId) -> StoreFuture<'_, Option<String>> {
        Box::pin(self.read_async(move |c| stats::key_mask(c, &key.hex())))
    }

    fn top_rate_limited_keys(
        &self,
        window: Window,
        limit: u32,
    ) -> StoreFuture<'_, Vec<super::stats::RateLimitedKey>> {
        Box::pin(self.read_async(move |c| stats::top_rate_limited_keys(c, window, limit)))
    }

    fn series(
        &self,
        granularity: Granularity,
        filter: Option<super::stats::Filter>,
    ) -> StoreFuture<'_, Vec<SeriesPoint>> {
        Box::pin(
            self.read_async(move |c| {
                stats::series(c, granularity, SystemTime::now(), filter.as_ref())
            }),
        )
    }

    fn errors(&self, query: super::logs::ErrorQuery) -> StoreFuture<'_, super::logs::ErrorPage> {
        Box::pin(self.read_async(move |c| logs::errors(c, &query)))
    }

    fn error(&self, id: i64) -> StoreFuture<'_, Option<super::logs::ErrorEntry>> {
        Box::pin(self.read_async(move |c| logs::error(c, id)))
    }

    fn requests(
        &self,
        query: super::logs::RequestQuery,
    ) -> StoreFuture<'_, super::logs::RequestPage> {
        Box::pin(self.read_async(move |c| logs::requests(c, &query)))
    }

    fn attempts(
        &self,
        request: crate::usage::RequestId,
    ) -> StoreFuture<'_, Vec<super::logs::AttemptEntry>> {
        Box::pin(self.read_async(move |c| logs::attempts(c, request)))
    }

    fn delete_errors(&self, which: LogDeletion) -> StoreFuture<'_, u64> {
        self.blocking(move |store| match which {
            LogDeletion::Ids(ids) => store.delete_error_logs(&ids),
            LogDeletion::Before(cutoff) => store.delete_error_logs_before(cutoff),
        })
    }

    fn delete_requests(&self, which: LogDeletion) -> StoreFuture<'_, u64> {
        self.blocking(move |store| match which {
            LogDeletion::Ids(ids) => store.delete_request_logs(&ids),
            LogDeletion::Before(cutoff) => store.delete_request_logs_before(cutoff),
        })
    }
}

impl KeyObserver for SqliteStore {
    fn key_changed(&self, state: KeySnapshot) {
        self.save_key_state(state);
    }

    fn key_removed(&self, id: &KeyId) {
        self.forget_key(id);
    }
}

impl SettingsStore for SqliteStore {
    fn settings(&self) -> Result<Vec<Setting>, StoreError> {
        SqliteStore::settings(self)
    }

    fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        SqliteStore::set_setting(self, name, value)
    }

    fn delete_setting(&self, name: &str) -> Result<bool, StoreError> {
        SqliteStore::delete_setting(self, name)
    }
}
