//! Where usage and key state go: the [`UsageSink`] and [`KeyStateStore`] traits, an in-memory
//! [`MemoryStore`], and the SQLite store (the default; feature `sqlite`, see [`sqlite`]).
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

mod memory;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;
#[cfg(feature = "sqlite")]
mod time_zone;

use std::fmt;

pub use self::memory::MemoryStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use self::sqlite::SqliteStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use self::time_zone::{TimeZone, UnknownTimeZone};
use crate::keys::{KeyId, KeySnapshot};
use crate::usage::RequestRecord;

/// Receives one record per finished client request. Must never block the caller.
///
/// Besides the stores, a closure ([`sink_fn`]), an `Arc` or `Box` of a sink, and two sinks at
/// once ([`Tee`], [`UsageSink::tee`]) are sinks:
///
/// ```
/// use std::sync::Arc;
/// use std::time::SystemTime;
/// use gemini_balance::store::{sink_fn, MemoryStore, UsageSink};
/// use gemini_balance::usage::{RequestRecord, UsageLayer};
///
/// let store = MemoryStore::new();
/// let metrics = sink_fn(|record: RequestRecord| {
///     // e.g. count tokens for a metrics exporter
///     let _ = record.tokens.total;
/// });
/// // Both get every record.
/// let sink = Arc::new(store.clone()).tee(metrics);
/// sink.record(RequestRecord::new(1, SystemTime::now()));
/// assert_eq!(store.records().len(), 1);
/// let _layer = UsageLayer::new(sink);
/// ```
pub trait UsageSink: Send + Sync + 'static {
    /// Takes a record; when the store cannot keep up it drops the record and counts the drop.
    fn record(&self, record: RequestRecord);

    /// This sink and `other`: each record goes to both (this one first).
    fn tee<B: UsageSink>(self, other: B) -> Tee<Self, B>
    where
        Self: Sized,
    {
        Tee(self, other)
    }
}

impl<T: UsageSink + ?Sized> UsageSink for std::sync::Arc<T> {
    fn record(&self, record: RequestRecord) {
        (**self).record(record)
    }
}

impl<T: UsageSink + ?Sized> UsageSink for Box<T> {
    fn record(&self, record: RequestRecord) {
        (**self).record(record)
    }
}

/// A closure as a [`UsageSink`]; see [`sink_fn`].
#[derive(Clone, Copy)]
pub struct SinkFn<F>(F);

impl<F> fmt::Debug for SinkFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SinkFn")
    }
}

/// A [`UsageSink`] that calls `f` with each record. Like every sink it runs on the request
/// path: `f` must not block (hand the record to a channel for slow work).
pub fn sink_fn<F>(f: F) -> SinkFn<F>
where
    F: Fn(RequestRecord) + Send + Sync + 'static,
{
    SinkFn(f)
}

impl<F> UsageSink for SinkFn<F>
where
    F: Fn(RequestRecord) + Send + Sync + 'static,
{
    fn record(&self, record: RequestRecord) {
        (self.0)(record)
    }
}

/// Two sinks (or two [`KeyObserver`](crate::keys::KeyObserver)s) as one: each record or key
/// change goes to the first, then to the second. Nest them for more; see [`UsageSink::tee`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Tee<A, B>(pub A, pub B);

impl<A: UsageSink, B: UsageSink> UsageSink for Tee<A, B> {
    fn record(&self, record: RequestRecord) {
        self.0.record(record.clone());
        self.1.record(record);
    }
}

impl<A: crate::keys::KeyObserver, B: crate::keys::KeyObserver> crate::keys::KeyObserver
    for Tee<A, B>
{
    fn key_changed(&self, state: KeySnapshot) {
        self.0.key_changed(state.clone());
        self.1.key_changed(state);
    }

    fn key_removed(&self, id: &KeyId) {
        self.0.key_removed(id);
        self.1.key_removed(id);
    }
}

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
