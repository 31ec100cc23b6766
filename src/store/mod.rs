//! Where usage and key state go, and how they come back: the [`UsageSink`], [`KeyStateStore`]
//! and [`StatsStore`] traits, an in-memory [`MemoryStore`], and the SQLite store (the default;
//! feature `sqlite`, see [`sqlite`]).
//!
//! The request path only ever calls [`UsageSink::record`], which must not block: stores queue
//! the record and write it elsewhere (the SQLite store has a writer thread). Other stores (a
//! networked one, so several proxies share key state) implement the same traits.
//!
//! # Example
//!
//! ```
//! use std::time::SystemTime;
//! use gemini_balance::store::{MemoryStore, UsageSink};
//! use gemini_balance::usage::RequestRecord;
//!
//! let store = MemoryStore::new();
//! store.record(RequestRecord::new(1, SystemTime::now()));
//! assert_eq!(store.records().len(), 1);
//! ```

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod key_row;
pub mod logs;
mod memory;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod retention;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod rollup;
mod settings;
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "mysql"))))]
pub mod sql;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;
pub mod stats;
mod stats_store;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod time;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
mod time_zone;

use std::fmt;

pub use crate::usage::sink::{sink_fn, SinkFn, Tee, UsageSink};

pub use self::memory::MemoryStore;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub use self::retention::Retention;
pub use self::settings::{Setting, SettingsStore};
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "mysql"))))]
pub use self::sql::{Engine, SqlStore};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use self::sqlite::SqliteStore;
pub use self::stats::WriterCounters;
pub use self::stats_store::{StatsStore, StoreFuture, UsageBy};
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql")))
)]
pub use self::time_zone::{TimeZone, UnknownTimeZone};
use crate::keys::{KeyId, KeySnapshot};

/// Keeps key state (disabled reasons, failure counts, cooldowns) across restarts; totals as of
/// the key's last lasting change (successes alone are not saved).
///
/// The pool reports changes through [`KeyObserver`](crate::keys::KeyObserver); a store that
/// implements both persists them.
pub trait KeyStateStore: Send + Sync + 'static {
    /// Saves the state of one key (replacing what was stored). Must never block.
    fn save_key_state(&self, state: KeySnapshot);
    /// Forgets a key (it was removed from the pool).
    fn forget_key(&self, id: &KeyId);
    /// Everything stored, for [`KeyPool::restore`](crate::keys::KeyPool::restore) at startup.
    fn load_key_states(&self) -> Result<Vec<KeySnapshot>, StoreError>;
}

/// A store failed (opening, migrating, querying).
#[derive(Debug)]
pub struct StoreError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        StoreError {
            message: message.into(),
            source: None,
        }
    }

    /// An error with a message and a cause.
    pub fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A SQLite error as it is, for code that runs its own statements on the store's database
/// (`?` in a function returning `StoreError`); the store's own errors also say what was being
/// done.
#[cfg(feature = "sqlite")]
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::with_source("SQLite", e)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
