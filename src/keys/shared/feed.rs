//! The transport between instances: [`KeyStateFeed`], and [`MemoryFeed`] for one process.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::event::SharedEvent;

/// Events the database feeds (and [`MemoryFeed`] by default) return per read at most.
pub(crate) const READ_BATCH: usize = 1000;

/// One stored event and its place in the feed's total order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    /// Increasing position (a database sequence); may have gaps.
    pub seq: u64,
    /// The event.
    pub event: SharedEvent,
}

/// A transport failed (connection lost, query refused). The key pool keeps serving from its
/// local state; the reader retries with backoff.
#[derive(Debug)]
pub struct FeedError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// Retrying cannot help (a refused statement, not a lost connection).
    permanent: bool,
}

impl FeedError {
    /// An error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        FeedError {
            message: message.into(),
            source: None,
            permanent: false,
        }
    }

    /// An error with a message and a cause.
    pub fn with_source(
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        FeedError {
            message: message.into(),
            source: Some(source.into()),
            permanent: false,
        }
    }

    /// Marks the error as one a retry cannot help.
    #[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
    pub(crate) fn permanent(mut self, permanent: bool) -> Self {
        self.permanent = permanent;
        self
    }

    #[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
    pub(crate) fn is_permanent(&self) -> bool {
        self.permanent
    }
}

impl fmt::Display for FeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for FeedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Carries [`SharedEvent`]s between instances: an append-only log every instance writes to and
/// reads from, in one order.
///
/// [`publish`](Self::publish) is called on the request path and must never wait (queue the
/// event; a transport that cannot keep up counts what it drops). The reading side is driven by
/// [`SharedKeys`](super::SharedKeys)' background task.
pub trait KeyStateFeed: Send + Sync + 'static {
    /// Hands an event over for storage. Never blocks.
    fn publish(&self, event: SharedEvent);

    /// Events stored after `seq`, in order (at most a transport-chosen batch: the reader reads
    /// again after the last one until a read returns nothing).
    fn read_after(
        &self,
        seq: u64,
    ) -> impl Future<Output = Result<Vec<FeedEntry>, FeedError>> + Send;

    /// Resolves when new events may be there: a notification, or the end of the poll interval.
    fn changed(&self) -> impl Future<Output = ()> + Send;

    /// Deletes events that no longer matter (superseded, or cooldowns that ended).
    fn delete(&self, seqs: Vec<u64>) -> impl Future<Output = Result<(), FeedError>> + Send;

    /// Resolves once every event published so far is stored (for a clean shutdown; the caller
    /// bounds the wait). The default: at once (a transport that stores while publishing).
    fn flush(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}

/// A feed inside one process: for tests, and for several pools in one program.
///
/// [`set_available(false)`](Self::set_available) makes it behave like a database that is
/// down: reads fail, and published events wait in an outbox until it is back. Like the
/// database feeds, a read returns at most 1,000 events ([`read_batch`](Self::read_batch)).
///
/// ```
/// use gemini_balance::keys::shared::{KeyStateFeed, MemoryFeed};
///
/// let feed = MemoryFeed::new();
/// assert!(feed.entries().is_empty());
/// ```
#[derive(Clone)]
pub struct MemoryFeed {
    inner: Arc<MemoryInner>,
    batch: usize,
}

impl Default for MemoryFeed {
    fn default() -> Self {
        MemoryFeed {
            inner: Arc::default(),
            batch: READ_BATCH,
        }
    }
}

#[derive(Default)]
struct MemoryInner {
    log: Mutex<MemoryLog>,
    notify: Notify,
    down: AtomicBool,
}

#[derive(Default)]
struct MemoryLog {
    next: u64,
    entries: Vec<FeedEntry>,
    outbox: Vec<SharedEvent>,
}

impl fmt::Debug for MemoryFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryFeed")
            .field("entries", &self.log().entries.len())
            .field("available", &!self.inner.down.load(Ordering::Relaxed))
            .finish()
    }
}

impl MemoryFeed {
    /// An empty feed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns at most `batch` events per read (default 1,000, as the database feeds; at least
    /// one), to exercise a reader's batching with fewer events.
    pub fn read_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    fn log(&self) -> std::sync::MutexGuard<'_, MemoryLog> {
        self.inner.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every stored event, in order.
    pub fn entries(&self) -> Vec<FeedEntry> {
        self.log().entries.clone()
    }

    /// Takes the feed down (reads fail, publishes wait) or brings it back (the waiting events
    /// are stored, in order).
    pub fn set_available(&self, available: bool) {
        self.inner.down.store(!available, Ordering::SeqCst);
        if available {
            let mut log = self.log();
            let waiting = std::mem::take(&mut log.outbox);
            for event in waiting {
                log.append(event);
            }
            drop(log);
            self.inner.notify.notify_waiters();
        }
    }
}

impl MemoryLog {
    fn append(&mut self, event: SharedEvent) {
        self.next += 1;
        self.entries.push(FeedEntry {
            seq: self.next,
            event,
        });
    }
}

impl KeyStateFeed for MemoryFeed {
    fn publish(&self, event: SharedEvent) {
        let mut log = self.log();
        if self.inner.down.load(Ordering::SeqCst) {
            log.outbox.push(event);
            return;
        }
        log.append(event);
        drop(log);
        self.inner.notify.notify_waiters();
    }

    async fn read_after(&self, seq: u64) -> Result<Vec<FeedEntry>, FeedError> {
        if self.inner.down.load(Ordering::SeqCst) {
            return Err(FeedError::new("the memory feed is down"));
        }
        Ok(self
            .log()
            .entries
            .iter()
            .filter(|e| e.seq > seq)
            .take(self.batch)
            .cloned()
            .collect())
    }

    async fn changed(&self) {
        // Bounded, like a poll: a notification sent between a read and this wait is not lost
        // for longer than this.
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(250),
            self.inner.notify.notified(),
        )
        .await;
    }

    async fn delete(&self, seqs: Vec<u64>) -> Result<(), FeedError> {
        if self.inner.down.load(Ordering::SeqCst) {
            return Err(FeedError::new("the memory feed is down"));
        }
        self.log().entries.retain(|e| !seqs.contains(&e.seq));
        Ok(())
    }
}
