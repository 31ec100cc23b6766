//! [`StatsStore`]: usage statistics and logs from any store, for an admin API or a dashboard.
//!
//! The methods return boxed futures ([`StoreFuture`]), so the trait is object safe (an admin
//! holds an `Arc<dyn StatsStore>`) and a networked database can answer without blocking. The
//! SQLite store runs its reads on Tokio's blocking pool; [`MemoryStore`](super::MemoryStore)
//! answers from the records it keeps.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, SystemTime};
//! use gemini_balance::store::stats::Window;
//! use gemini_balance::store::{MemoryStore, StatsStore, UsageBy, UsageSink};
//! use gemini_balance::usage::RequestRecord;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let mut record = RequestRecord::new(7, SystemTime::now());
//! record.model = Some("gemini-2.0-flash".into());
//! record.success = true;
//! record.tokens.total = 42;
//! store.record(record);
//!
//! // What an admin API holds: any store.
//! let stats: Arc<dyn StatsStore> = Arc::new(store);
//! let rows = stats.usage(UsageBy::Model, Window::last(Duration::from_secs(3_600))).await?;
//! assert_eq!(rows[0].id, "gemini-2.0-flash");
//! assert_eq!(rows[0].counts.tokens.total, 42);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;

use super::logs::{
    AttemptEntry, ErrorEntry, ErrorPage, ErrorQuery, LogDeletion, RequestPage, RequestQuery,
};
use super::stats::{Filter, Granularity, RateLimitedKey, SeriesPoint, Summary, UsageRow, Window};
use super::StoreError;
use crate::fingerprint::KeyId;
use crate::usage::RequestId;

/// The future a [`StatsStore`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What usage rows are per (see [`StatsStore::usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UsageBy {
    /// Per key: the key of the request's final attempt for calls, each attempt's key for
    /// attempts.
    Key,
    /// Per model.
    Model,
    /// Per client token.
    Client,
}

/// Usage statistics, the error log and the request log of a store.
///
/// Windows are in milliseconds since the epoch; a store may round them out to its buckets
/// (the SQLite store: to whole minutes, and to whole hours past its per-minute retention).
/// Rate limits are what the classifier called `rate_limited`, whatever the status.
pub trait StatsStore: Send + Sync + 'static {
    /// The header figures now: the last minute, hour, day and the calendar month (in the
    /// store's time zone), from one consistent view where the store has one.
    fn summary(&self) -> StoreFuture<'_, Summary>;

    /// Usage per key, model or client over `window`, most calls first.
    fn usage(&self, by: UsageBy, window: Window) -> StoreFuture<'_, Vec<UsageRow>>;

    /// Usage of one key per model over `window`, most calls first.
    fn models_of_key(&self, key: KeyId, window: Window) -> StoreFuture<'_, Vec<UsageRow>>;

    /// The fingerprint (`AIza…x4Fq`) of a key the store has seen, also after it left the pool.
    fn key_mask(&self, key: KeyId) -> StoreFuture<'_, Option<String>>;

    /// The keys with the most rate-limited attempts over `window` (keys with none left out).
    fn top_rate_limited_keys(
        &self,
        window: Window,
        limit: u32,
    ) -> StoreFuture<'_, Vec<RateLimitedKey>>;

    /// A time series ending with the bucket that holds now (60 minutes or 24 hours, oldest
    /// first, empty buckets included), over everything or one key, model or client.
    fn series(
        &self,
        granularity: Granularity,
        filter: Option<Filter>,
    ) -> StoreFuture<'_, Vec<SeriesPoint>>;

    /// A page of the error log (failed upstream attempts), newest first.
    fn errors(&self, query: ErrorQuery) -> StoreFuture<'_, ErrorPage>;

    /// One error log row, with its request body if one was recorded.
    fn error(&self, id: i64) -> StoreFuture<'_, Option<ErrorEntry>>;

    /// A page of the request log, newest first.
    fn requests(&self, query: RequestQuery) -> StoreFuture<'_, RequestPage>;

    /// The upstream attempts of one request, in order (empty for an unknown request).
    fn attempts(&self, request: RequestId) -> StoreFuture<'_, Vec<AttemptEntry>>;

    /// Deletes error log rows; returns how many were deleted.
    fn delete_errors(&self, which: LogDeletion) -> StoreFuture<'_, u64>;

    /// Deletes request log rows and their attempts; returns how many rows were deleted (by
    /// ids: requests; the SQLite store counts attempt rows too when deleting by age). The
    /// SQLite store's statistics are not changed (they come from its rollups).
    fn delete_requests(&self, which: LogDeletion) -> StoreFuture<'_, u64>;
}
