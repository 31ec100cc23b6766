//! [`SqlStore`]: usage log, error log, key state and settings in PostgreSQL (feature
//! `postgres`) or MySQL/MariaDB (feature `mysql`), so several proxies share one database.
//!
//! The store owns a thread with a small Tokio runtime: its writer task drains a bounded
//! channel and writes batches with multi-row statements, one transaction per batch (the raw
//! rows, the per-minute and per-hour rollups, fingerprints, key states). The request path
//! ([`UsageSink::record`], [`KeyObserver`]) never waits: it does a non-blocking send, and when
//! the channel is full the record is dropped and counted ([`WriterStats::dropped`]). While the
//! database is unreachable the writer keeps its batch and retries with backoff (100 ms to 5 s);
//! requests keep being served, records queue and then drop (counted). When the database
//! refuses a batch (a constraint, a type), the batch is split until the refused records are
//! alone: only those are counted as [`lost`](WriterStats::lost). [`SqlStore::shutdown`]
//! writes what is queued (giving up, and counting, after the shutdown timeout).
//!
//! Durability: a record is in the database once its batch commits, at most the gather delay
//! (default 50 ms) plus the write time after `record()` under steady traffic; a crash of the
//! process loses what was queued then. A crash of the PostgreSQL server can take the commits
//! of its last ~600 ms unless [`SqlStoreBuilder::sync_every_commit`] is set; on MySQL the
//! server's `innodb_flush_log_at_trx_commit` decides.
//!
//! Nothing secret is written: keys and client tokens are stored as their id (16 hex digits)
//! and fingerprint (`AIza…x4Fq`); error messages and request bodies pass through
//! [`redact_keys`](crate::redact::redact_keys) first; settings holding a key are refused.
//! The tables are the SQLite store's (`docs/store.md`); statistics come from the rollups.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::SystemTime;
//! use gemini_balance::keys::KeyPool;
//! use gemini_balance::store::{KeyStateStore, SqlStore, UsageSink};
//! use gemini_balance::usage::RequestRecord;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqlStore::connect("postgres://postgres@127.0.0.1:5432/gemini")?;
//! let pool = KeyPool::builder()
//!     .keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv"])
//!     .observer(Arc::new(store.clone()))
//!     .build()?;
//! pool.restore(&store.load_key_states()?);
//!
//! let mut record = RequestRecord::new(1, SystemTime::now());
//! record.success = true;
//! store.record(record); // never waits
//! store.flush()?;
//! store.shutdown()?;
//! # Ok(())
//! # }
//! ```

mod dialect;
mod queries;
mod quota;
mod schema;
mod writer;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use sqlx_core::any::{AnyConnectOptions, AnyPool, AnyPoolOptions};
use sqlx_core::executor::Executor;
use tokio::sync::{mpsc, oneshot};

pub use self::dialect::Engine;
pub use self::schema::SCHEMA_VERSION;
use self::writer::{Control, Msg, Reply, Writer};
use super::logs::{
    AttemptEntry, ErrorEntry, ErrorPage, ErrorQuery, LogDeletion, RequestPage, RequestQuery,
};
use super::stats::{
    Filter, Granularity, RateLimitedKey, SeriesPoint, Summary, UsageRow, Window, WriterStats,
};
use super::stats_store::{StatsStore, StoreFuture, UsageBy};
use super::{KeyStateStore, Retention, Setting, SettingsStore, StoreError, TimeZone, UsageSink};
use crate::keys::{KeyId, KeyObserver, KeySnapshot};
use crate::usage::{RequestId, RequestRecord};

/// Wraps a sqlx error with what was being done.
pub(crate) fn sql_error(what: impl Into<String>) -> impl FnOnce(sqlx_core::Error) -> StoreError {
    let what = what.into();
    move |e| StoreError::with_source(what, e)
}

fn closed() -> StoreError {
    StoreError::new("the store is shut down")
}

/// Options for [`SqlStore`]; from [`SqlStore::builder`].
#[derive(Clone)]
pub struct SqlStoreBuilder {
    url: String,
    schema: Option<String>,
    channel_capacity: usize,
    batch_size: usize,
    gather: Duration,
    max_connections: u32,
    sync_every_commit: bool,
    connect_timeout: Duration,
    shutdown_timeout: Duration,
    retention: Retention,
    time_zone: TimeZone,
}

/// The URL without its password.
impl fmt::Debug for SqlStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStoreBuilder")
            .field("url", &redacted_url(&self.url))
            .field("schema", &self.schema)
            .field("channel_capacity", &self.channel_capacity)
            .field("batch_size", &self.batch_size)
            .field("gather", &self.gather)
            .field("max_connections", &self.max_connections)
            .field("sync_every_commit", &self.sync_every_commit)
            .field("connect_timeout", &self.connect_timeout)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("retention", &self.retention)
            .field("time_zone", &self.time_zone)
            .finish()
    }
}

impl SqlStoreBuilder {
    /// PostgreSQL: the schema the tables live in (created if missing; the connections' own
    /// `search_path` otherwise). Ignored on MySQL, where the URL's database is the place.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Records the channel holds before `record()` starts dropping. Default 16,384.
    pub fn channel_capacity(mut self, n: usize) -> Self {
        self.channel_capacity = n.max(1);
        self
    }

    /// Most records written per transaction. Default 1,024.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// After a batch that was not full, how long records gather before the next write.
    /// Default 50 ms (the durability window grows by as much); `Duration::ZERO` writes as
    /// soon as records arrive.
    pub fn gather(mut self, delay: Duration) -> Self {
        self.gather = delay;
        self
    }

    /// Connections to the database at most (writer, statistics, admin writes). Default 4.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(2);
        self
    }

    /// PostgreSQL: `true` makes every commit wait until the server has flushed it to disk
    /// (`synchronous_commit = on`), so a crash of the database server loses no committed batch.
    /// Default `false` (`synchronous_commit = off` for the store's sessions): a commit returns
    /// before the flush, which the server does within three `wal_writer_delay`s (600 ms by
    /// default), so a server crash can take the batches of that last moment; the database
    /// stays consistent either way (as SQLite's `synchronous=NORMAL`, the SQLite store's
    /// default). On MySQL the server's own `innodb_flush_log_at_trx_commit` decides; this
    /// option changes nothing there.
    pub fn sync_every_commit(mut self, yes: bool) -> Self {
        self.sync_every_commit = yes;
        self
    }

    /// How long opening waits for the first connection, and a statement for a free
    /// connection. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long [`shutdown`](SqlStore::shutdown) keeps retrying when the database is away
    /// before it counts what is queued as lost. Default 10 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Retention of logs and rollups (default: [`Retention::default`]).
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// The zone of the calendar (where the summary's month begins). Default UTC.
    pub fn time_zone(mut self, time_zone: TimeZone) -> Self {
        self.time_zone = time_zone;
        self
    }

    /// Connects, creates or migrates the schema (refusing a newer one) and starts the writer.
    /// Blocks until then; fails when the database cannot be reached within the connect
    /// timeout.
    pub fn open(self) -> Result<SqlStore, StoreError> {
        let engine = Engine::of_url(&self.url).ok_or_else(|| {
            StoreError::new(format!(
                "not a database URL this build supports ({}): expected postgres:// or mysql://",
                redacted_url(&self.url)
            ))
        })?;
        install_drivers();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("gemini-balance-sql")
            .build()
            .map_err(|e| StoreError::with_source("starting the store's runtime", e))?;
        let handle = runtime.handle().clone();
        let (ready, opened) = std::sync::mpsc::sync_channel(1);
        let (tx, rx) = mpsc::channel(self.channel_capacity);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let (retention, retention_rx) = tokio::sync::watch::channel(self.retention.clone());
        let builder = self.clone();
        let wake = tx.downgrade();
        let writer_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("gemini-balance-sql".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let pool = match connect(&builder, engine).await {
                        Ok(pool) => pool,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(pool.clone()));
                    let retention = tokio::spawn(queries::retention_task(
                        pool.clone(),
                        engine,
                        retention_rx,
                        builder.time_zone.clone(),
                    ));
                    Writer {
                        pool: pool.clone(),
                        engine,
                        rx,
                        control: control_rx,
                        wake,
                        shared: writer_shared,
                        batch_size: builder.batch_size,
                        gather: builder.gather,
                        shutdown_timeout: builder.shutdown_timeout,
                        known_keys: Default::default(),
                        known_clients: Default::default(),
                        last_error_log: None,
                        controls: VecDeque::new(),
                        mark: writer::WriterMark::new(),
                    }
                    .run()
                    .await;
                    retention.abort();
                    pool.close().await;
                });
            })
            .map_err(|e| StoreError::with_source("starting the store's thread", e))?;
        let pool = opened
            .recv()
            .map_err(|_| StoreError::new("the store's thread ended while connecting"))??;
        Ok(SqlStore {
            inner: Arc::new(Inner {
                engine,
                url: self.url,
                schema: self.schema,
                pool,
                handle,
                tx,
                control: control_tx,
                shared,
                thread: Mutex::new(Some(thread)),
                capacity: self.channel_capacity,
                time_zone: self.time_zone,
                retention,
            }),
        })
    }
}

fn install_drivers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        sqlx_core::any::driver::install_drivers(&[
            #[cfg(feature = "postgres")]
            sqlx_postgres::any::DRIVER,
            #[cfg(feature = "mysql")]
            sqlx_mysql::any::DRIVER,
        ])
        .ok();
    });
}

/// The URL without its password (in the user info or a `password=` parameter), for messages.
fn redacted_url(url: &str) -> String {
    let (base, params) = match url.split_once('?') {
        Some((base, params)) => (base, Some(params)),
        None => (url, None),
    };
    let mut out = match (base.split_once("://"), base.rfind('@')) {
        (Some((scheme, _)), Some(at)) if at > scheme.len() + 3 => {
            let user_info = &base[scheme.len() + 3..at];
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:…@{}", &base[at + 1..])
        }
        _ => base.to_owned(),
    };
    if let Some(params) = params {
        let shown: Vec<String> = params
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if secret_param(name) => format!("{name}=…"),
                _ => param.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&shown.join("&"));
    }
    out
}

/// A URL parameter that carries a password (`password`, `sslpassword`, `pwd`, …).
fn secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("password") || name == "pwd" || name == "pass"
}

async fn connect(builder: &SqlStoreBuilder, engine: Engine) -> Result<AnyPool, StoreError> {
    let options: AnyConnectOptions = builder
        .url
        .parse()
        .map_err(|e| StoreError::with_source("reading the database URL", e))?;
    let mut pool_options = AnyPoolOptions::new()
        .max_connections(builder.max_connections)
        .min_connections(1)
        .acquire_timeout(builder.connect_timeout);
    // Statements every new connection runs first (PostgreSQL session settings).
    let mut session: Vec<String> = Vec::new();
    if engine == Engine::Postgres && !builder.sync_every_commit {
        session.push("SET synchronous_commit TO off".to_owned());
    }
    if let (Engine::Postgres, Some(schema)) = (engine, &builder.schema) {
        let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
        // Created once with a connection of its own, then every connection uses it.
        let create = format!("CREATE SCHEMA IF NOT EXISTS {quoted}");
        let bootstrap = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(builder.connect_timeout)
            .connect_with(options.clone())
            .await
            .map_err(sql_error(format!(
                "connecting to {}",
                redacted_url(&builder.url)
            )))?;
        // Instances starting together race on `IF NOT EXISTS` (a unique violation on
        // pg_namespace, or the schema existing after all): the loser's next try finds it.
        let mut tries = 0;
        loop {
            match bootstrap.execute(create.as_str()).await {
                Ok(_) => break,
                Err(sqlx_core::Error::Database(db))
                    if tries < 3 && matches!(db.code().as_deref(), Some("23505" | "42P06")) =>
                {
                    tries += 1;
                }
                Err(e) => return Err(sql_error("creating the schema")(e)),
            }
        }
        bootstrap.close().await;
        session.push(format!("SET search_path TO {quoted}"));
    }
    if !session.is_empty() {
        pool_options = pool_options.after_connect(move |conn, _meta| {
            let session = session.clone();
            Box::pin(async move {
                for set in &session {
                    conn.execute(set.as_str()).await?;
                }
                Ok(())
            })
        });
    }
    let pool = pool_options
        .connect_with(options)
        .await
        .map_err(sql_error(format!(
            "connecting to {}",
            redacted_url(&builder.url)
        )))?;
    schema::migrate(&pool, engine).await?;
    Ok(pool)
}

/// The store; cheap to clone (clones share the connections and the writer).
///
/// See the [module documentation](self).
#[derive(Clone)]
pub struct SqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    url: String,
    schema: Option<String>,
    pool: AnyPool,
    handle: tokio::runtime::Handle,
    tx: mpsc::Sender<Msg>,
    control: mpsc::UnboundedSender<Control>,
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    capacity: usize,
    time_zone: TimeZone,
    retention: tokio::sync::watch::Sender<Retention>,
}

/// Counters and pending key states shared by the handle and the writer.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub offered: AtomicU64,
    pub dropped: AtomicU64,
    pub written: AtomicU64,
    pub lost: AtomicU64,
    pub batches: AtomicU64,
    pub closed: AtomicBool,
    /// The writer is retrying a batch (the database is away).
    pub retrying: AtomicBool,
    pub pending_keys: Mutex<HashMap<KeyId, Option<KeySnapshot>>>,
    last_drop_log: Mutex<Option<std::time::Instant>>,
}

impl Shared {
    fn queued(&self) -> u64 {
        self.offered
            .load(Ordering::Relaxed)
            .saturating_sub(self.dropped.load(Ordering::Relaxed))
            .saturating_sub(self.written.load(Ordering::Relaxed))
            .saturating_sub(self.lost.load(Ordering::Relaxed))
    }

    pub(crate) fn take_pending_keys(&self) -> HashMap<KeyId, Option<KeySnapshot>> {
        std::mem::take(&mut *self.pending_keys.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn restore_pending_keys(&self, states: HashMap<KeyId, Option<KeySnapshot>>) {
        let mut pending = self.pending_keys.lock().unwrap_or_else(|e| e.into_inner());
        for (id, state) in states {
            pending.entry(id).or_insert(state);
        }
    }
}

impl fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("engine", &self.inner.engine)
            .field("url", &redacted_url(&self.inner.url))
            .field("writer", &self.writer_stats())
            .finish()
    }
}

impl SqlStore {
    /// Connects to `url` (`postgres://…` or `mysql://…`) with default options.
    pub fn connect(url: &str) -> Result<SqlStore, StoreError> {
        Self::builder(url).open()
    }

    /// Options for the database at `url`.
    pub fn builder(url: &str) -> SqlStoreBuilder {
        SqlStoreBuilder {
            url: url.to_owned(),
            schema: None,
            channel_capacity: 16_384,
            batch_size: 1_024,
            gather: Duration::from_millis(50),
            max_connections: 4,
            sync_every_commit: false,
            connect_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
            retention: Retention::default(),
            time_zone: TimeZone::utc(),
        }
    }

    /// The engine (from the URL).
    pub fn engine(&self) -> Engine {
        self.inner.engine
    }

    /// The URL the store connected to (it may hold a password: do not log it), for a
    /// component that opens connections of its own to the same database (such as a
    /// key-state feed), with [`schema`](Self::schema).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The PostgreSQL schema given to the builder, if any.
    pub fn schema(&self) -> Option<&str> {
        self.inner.schema.as_deref()
    }

    /// All of the writer's counters.
    pub fn writer_stats(&self) -> WriterStats {
        let s = &self.inner.shared;
        WriterStats {
            queued: s.queued(),
            capacity: self.inner.capacity as u64,
            dropped: s.dropped.load(Ordering::Relaxed),
            written: s.written.load(Ordering::Acquire),
            lost: s.lost.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            running: !s.closed.load(Ordering::Relaxed),
        }
    }

    /// Records dropped so far because the channel was full or the store was shut down.
    pub fn dropped(&self) -> u64 {
        self.inner.shared.dropped.load(Ordering::Relaxed)
    }

    /// `true` while the writer retries a batch because the database cannot be reached.
    pub fn is_retrying(&self) -> bool {
        self.inner.shared.retrying.load(Ordering::Relaxed)
    }

    /// Blocks until everything sent before this call is written (or counted as lost). While
    /// the database is away this waits for it. Not for the request path (from async code,
    /// use [`flush_async`](Self::flush_async)).
    pub fn flush(&self) -> Result<(), StoreError> {
        let (reply, done) = std::sync::mpsc::sync_channel(1);
        if self.inner.shared.closed.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.inner
            .control
            .send(Control::Flush(Reply::Blocking(reply)))
            .map_err(|_| closed())?;
        done.recv().map_err(|_| closed())
    }

    /// [`flush`](Self::flush) without blocking the thread.
    pub async fn flush_async(&self) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        if self.inner.shared.closed.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.inner
            .control
            .send(Control::Flush(Reply::Async(reply)))
            .map_err(|_| closed())?;
        done.await.map_err(|_| closed())
    }

    /// Whether the database takes writes now: the writer runs, and a statement that writes
    /// nothing but needs write access (an `UPDATE` of no row of the settings table) succeeds
    /// on a pooled connection (a read-only replica or a lost connection fails it). For a
    /// readiness probe. Blocks while the database answers: call it off the async runtime
    /// (`tokio::task::spawn_blocking`), under a time limit of your own.
    pub fn check_writable(&self) -> Result<(), StoreError> {
        if self.inner.shared.closed.load(Ordering::Relaxed) {
            return Err(closed());
        }
        let pool = self.pool();
        self.block(async move {
            sqlx_core::query::query("UPDATE settings SET value = value WHERE 1 = 0")
                .execute(&pool)
                .await
                .map_err(sql_error("writing to the database"))?;
            Ok(())
        })
    }

    /// Writes everything queued (retrying up to the shutdown timeout while the database is
    /// away), closes the connections and stops the thread. Records sent afterwards are dropped
    /// (and counted). Idempotent. Dropping the last clone does the same.
    pub fn shutdown(&self) -> Result<(), StoreError> {
        self.inner.shutdown()
    }

    /// Replaces the retention while the store runs; the purge runs at once with it, then on
    /// its schedule (in the background: this returns at once).
    pub fn set_retention(&self, retention: Retention) -> Result<(), StoreError> {
        self.inner.retention.send(retention).map_err(|_| closed())
    }

    /// Runs `f` on the store's runtime and waits for it (blocking the calling thread).
    fn block<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.inner.handle.spawn(async move {
            let _ = reply.send(f.await);
        });
        answer.recv().map_err(|_| closed())?
    }

    /// Runs `f` on the store's runtime; the future answers from any runtime.
    fn run<T, F>(&self, f: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let task = self.inner.handle.spawn(f);
        Box::pin(async move {
            task.await
                .map_err(|e| StoreError::with_source("the query task failed", e))?
        })
    }

    fn pool(&self) -> AnyPool {
        self.inner.pool.clone()
    }

    /// The header figures now, with the writer's counters.
    pub async fn summary(&self) -> Result<Summary, StoreError> {
        StatsStore::summary(self).await
    }
}

impl Inner {
    fn shutdown(&self) -> Result<(), StoreError> {
        let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(());
        };
        let (reply, done) = std::sync::mpsc::sync_channel(1);
        if self
            .control
            .send(Control::Shutdown(Reply::Blocking(reply)))
            .is_ok()
        {
            let _ = done.recv();
        }
        self.shared.closed.store(true, Ordering::Relaxed);
        thread
            .join()
            .map_err(|_| StoreError::new("the SQL store's thread panicked"))
    }

    fn note_drop(&self) {
        let total = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = match self.shared.last_drop_log.try_lock() {
            Ok(last) => last,
            Err(_) => return,
        };
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
            *last = Some(std::time::Instant::now());
            tracing::warn!(
                dropped_total = total,
                capacity = self.capacity,
                engine = self.engine.name(),
                "usage store queue full or closed: dropping records"
            );
        }
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
            let _ = self.tx.try_send(Msg::Wake);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "closing the SQL store failed");
        }
    }
}

impl crate::store::WriterCounters for SqlStore {
    fn writer_stats(&self) -> crate::store::stats::WriterStats {
        SqlStore::writer_stats(self)
    }
}

impl UsageSink for SqlStore {
    fn record(&self, record: RequestRecord) {
        let inner = &*self.inner;
        inner.shared.offered.fetch_add(1, Ordering::Relaxed);
        if inner.shared.closed.load(Ordering::Relaxed)
            || inner.tx.try_send(Msg::Record(Box::new(record))).is_err()
        {
            inner.note_drop();
        }
    }
}

impl KeyStateStore for SqlStore {
    /// Queues the state (coalesced per key); never blocks, never dropped.
    fn save_key_state(&self, state: KeySnapshot) {
        self.inner.set_key(state.id.clone(), Some(state));
    }

    fn forget_key(&self, id: &KeyId) {
        self.inner.set_key(id.clone(), None);
    }

    /// Flushes pending states, then reads every stored state. Blocks.
    fn load_key_states(&self) -> Result<Vec<KeySnapshot>, StoreError> {
        self.flush()?;
        let (pool, engine) = (self.pool(), self.inner.engine);
        self.block(async move { queries::key_states(&pool, engine).await })
    }
}

impl KeyObserver for SqlStore {
    fn key_changed(&self, state: KeySnapshot) {
        self.save_key_state(state);
    }

    fn key_removed(&self, id: &KeyId) {
        self.forget_key(id);
    }
}

impl SettingsStore for SqlStore {
    fn settings(&self) -> Result<Vec<Setting>, StoreError> {
        let (pool, engine) = (self.pool(), self.inner.engine);
        self.block(async move { queries::settings(&pool, engine).await })
    }

    fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        super::settings::refuse_secret(name, value)?;
        let (pool, engine) = (self.pool(), self.inner.engine);
        let (name, value) = (name.to_owned(), value.to_owned());
        self.block(async move { queries::set_setting(&pool, engine, &name, &value).await })
    }

    fn delete_setting(&self, name: &str) -> Result<bool, StoreError> {
        let (pool, engine) = (self.pool(), self.inner.engine);
        let name = name.to_owned();
        self.block(async move { queries::delete_setting(&pool, engine, &name).await })
    }
}

/// Every query runs on the store's runtime, over its connection pool.
impl StatsStore for SqlStore {
    fn summary(&self) -> StoreFuture<'_, Summary> {
        let (pool, engine, tz) = (self.pool(), self.inner.engine, self.inner.time_zone.clone());
        let writer = self.writer_stats();
        self.run(async move {
            let mut summary = queries::summary(&pool, engine, SystemTime::now(), &tz).await?;
            summary.writer = Some(writer);
            Ok(summary)
        })
    }

    fn usage(&self, by: UsageBy, window: Window) -> StoreFuture<'_, Vec<UsageRow>> {
        let (pool, engine) = (self.pool(), self.inner.engine);
        self.run(async move { queries::usage(&pool, engine, by, window).await })
    }

    fn models_of_key(&self, key: KeyId, window: Window) -> StoreFuture<'_, Vec<UsageRow>> {
        let (pool, engine) = (self.pool(), self.inner.engine);
        self.run(async move { queries::models_of_key(&pool, engine, &key.hex(), window).await })
    }

    fn key_mask(&self, key: KeyId) -> StoreFuture<'_, Option<String>> {
        let (pool, engine) = (self.pool(), self.inner.engine);
        self.run(async move { queries::key_mask(&pool, engine, &key.hex()).await })
    }

    fn top_rate_limited_keys(
        &self,
        window: Window,
        limit: u32,
    ) -> StoreFuture<'_, Vec<RateLimitedKey>> {
        let (pool, engine) = (self.pool(), self.inner.engine);
        self.run(async move { queries::top_rate_limited_keys(&pool, engine, window, limit).await })
    }

    fn series(
        &self,
        granularity: Granularity,
        filter: Option<Filter>,
    ) -> StoreFuture<'_, Vec<SeriesPoint>> {
        let (pool, engine) = (self.pool(), self.inner.engine);
        self.run(async move {
            queries::series(
                &pool,
                engine,
                granularity,
                SystemTime::now(),
                filter.as_ref(),
            )
            .await
        })
    }

    fn errors(&self, query: ErrorQuery) -> StoreFuture<'_, ErrorPage> {
        let (pool, engine) = (self.pool(), self.inner.engine);
        self.run(async move { queries::errors(&pool, engine, &query).await })
    }

    fn error(&self, id: i64) -> StoreFuture<'_, Option<ErrorEntry>> {
        let (pool, engine) = (self.pool(), self.inner.engine);
        self.run(async move { queries::error(&pool, engine, id).await })
    }

    fn requests(&self, query: RequestQuery) -> StoreFuture<'_, RequestPage> {
        let (pool, engine) = (self.pool(), self.inner.engine);
        self.run(async move { queries::requests(&pool, engine, &query).await })
    }

    fn attempts(&self, request: RequestId) -> StoreFuture<'_, Vec<AttemptEntry>> {
        let (pool, engine) = (self.pool(), self.inner.engine);
        self.run(async move { queries::attempts(&pool, engine, request).await })
    }

    fn delete_errors(&self, which: LogDeletion) -> StoreFuture<'_, u64> {
        let (pool, engine) = (self.pool(), self.inner.engine);
        self.run(async move { queries::delete_errors(&pool, engine, which).await })
    }

    fn delete_requests(&self, which: LogDeletion) -> StoreFuture<'_, u64> {
        let (pool, engine) = (self.pool(), self.inner.engine);
        self.run(async move { queries::delete_requests(&pool, engine, which).await })
    }
}

#[cfg(test)]
mod tests {
    use super::redacted_url;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redacted_url("postgres://u:secret@h:5432/db"),
            "postgres://u:…@h:5432/db"
        );
        assert_eq!(redacted_url("mysql://root@h/db"), "mysql://root:…@h/db");
        assert_eq!(redacted_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redacted_url("postgres://u@h/db?sslmode=require&password=se@cret&PWD=x"),
            "postgres://u:…@h/db?sslmode=require&password=…&PWD=…"
        );
        assert_eq!(
            redacted_url("mysql://h/db?sslpassword=secret"),
            "mysql://h/db?sslpassword=…"
        );
    }

    #[test]
    fn the_builder_shows_no_password() {
        let builder = super::SqlStore::builder("postgres://u:secret1@h/db?password=secret2")
            .schema("s")
            .batch_size(7);
        let shown = format!("{builder:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("batch_size: 7"), "{shown}");
        assert!(shown.contains("postgres://u:…@h/db?password=…"), "{shown}");
    }
}
