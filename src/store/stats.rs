//! Usage statistics as every store answers them: the query and result types of
//! [`StatsStore`](super::StatsStore) (windows, counters, per key / model / client rows, time
//! series).
//!
//! All are `Serialize`, so an admin API can return them as JSON. "Calls" are client requests;
//! "attempts" are upstream attempts (a request retried on another key makes two).
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use gemini_balance::store::stats::Window;
//!
//! let now = SystemTime::now();
//! let day = Window::ending(now, Duration::from_secs(86_400));
//! assert_eq!(day.to_ms - day.from_ms, 86_400_000);
//! assert!(day.contains(now));
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// `t` in milliseconds since the epoch (negative before it).
pub(crate) fn ms_of(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// A time range `[from_ms, to_ms)`, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Start (inclusive).
    pub from_ms: i64,
    /// End (exclusive).
    pub to_ms: i64,
}

impl Window {
    /// The `span` ending now.
    pub fn last(span: Duration) -> Window {
        Window::ending(SystemTime::now(), span)
    }

    /// The `span` ending at `end`.
    pub fn ending(end: SystemTime, span: Duration) -> Window {
        let to_ms = ms_of(end).saturating_add(1);
        Window {
            from_ms: to_ms.saturating_sub(i64::try_from(span.as_millis()).unwrap_or(i64::MAX)),
            to_ms,
        }
    }

    /// From `from` to `to`.
    pub fn between(from: SystemTime, to: SystemTime) -> Window {
        Window {
            from_ms: ms_of(from),
            to_ms: ms_of(to),
        }
    }

    /// `true` when `t` falls in the window.
    pub fn contains(&self, t: SystemTime) -> bool {
        let ms = ms_of(t);
        self.from_ms <= ms && ms < self.to_ms
    }
}

/// Token sums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Tokens {
    /// Prompt tokens.
    pub prompt: u64,
    /// Answer tokens (thoughts excluded).
    pub candidates: u64,
    /// Thinking tokens.
    pub thoughts: u64,
    /// Prompt tokens served from the cache.
    pub cached: u64,
    /// Prompt tokens of tool results.
    pub tool_use_prompt: u64,
    /// Totals as reported by the upstream.
    pub total: u64,
}

/// Counters over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Counts {
    /// Client requests.
    pub calls: u64,
    /// Requests that succeeded ([`RequestRecord::success`](crate::usage::RequestRecord::success)).
    pub successes: u64,
    /// The other requests.
    pub failures: u64,
    /// Tokens of those requests.
    pub tokens: Tokens,
    /// Sum of request latencies (divide by `calls` for the mean).
    pub latency_ms_sum: u64,
    /// Upstream attempts.
    pub attempts: u64,
    /// Failed upstream attempts.
    pub failed_attempts: u64,
    /// Upstream attempts the classifier called rate limited (`rate_limited`: a 429, a gRPC
    /// `RESOURCE_EXHAUSTED`, a quota error under another status).
    pub rate_limited_attempts: u64,
}

impl Counts {
    /// The 13 rollup counters, in the order every store selects them (see the rollup
    /// tables' columns), from `n(0)` to `n(12)`.
    #[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
    pub(crate) fn from_columns(n: impl Fn(usize) -> u64) -> Counts {
        Counts {
            calls: n(0),
            successes: n(1),
            failures: n(2),
            tokens: Tokens {
                prompt: n(3),
                candidates: n(4),
                thoughts: n(5),
                cached: n(6),
                tool_use_prompt: n(7),
                total: n(8),
            },
            latency_ms_sum: n(9),
            attempts: n(10),
            failed_attempts: n(11),
            rate_limited_attempts: n(12),
        }
    }

    /// Adds `o` to these counters.
    pub(crate) fn add(&mut self, o: &Counts) {
        self.calls += o.calls;
        self.successes += o.successes;
        self.failures += o.failures;
        self.tokens.prompt += o.tokens.prompt;
        self.tokens.candidates += o.tokens.candidates;
        self.tokens.thoughts += o.tokens.thoughts;
        self.tokens.cached += o.tokens.cached;
        self.tokens.tool_use_prompt += o.tokens.tool_use_prompt;
        self.tokens.total += o.tokens.total;
        self.latency_ms_sum += o.latency_ms_sum;
        self.attempts += o.attempts;
        self.failed_attempts += o.failed_attempts;
        self.rate_limited_attempts += o.rate_limited_attempts;
    }
}

/// The header figures: the last minute, hour, day and the calendar month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// When the figures were taken.
    pub now_ms: i64,
    /// The last 60 seconds (from the raw log).
    pub last_minute: Counts,
    /// The last hour.
    pub last_hour: Counts,
    /// The last 24 hours.
    pub last_day: Counts,
    /// Since the start of the calendar month.
    pub this_month: Counts,
    /// When the calendar month started (local midnight of the 1st in the store's time zone).
    pub month_start_ms: i64,
    /// The store's time zone (an IANA name such as `Europe/Berlin`, or `UTC`): where the month
    /// begins.
    pub time_zone: String,
    /// The writer's counters, when the summary comes from a running store; taken just before
    /// the windows were read, so every record counted as written is in them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer: Option<WriterStats>,
}

/// Usage of one key, model or client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct UsageRow {
    /// The key's or client's id (16 hex digits) or the model name; empty for requests that
    /// had none (no key was available, no model in the path, no client token).
    pub id: String,
    /// The fingerprint of a key or client (`AIza…x4Fq`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    /// The counters.
    #[serde(flatten)]
    pub counts: Counts,
}

/// One bucket of a time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SeriesPoint {
    /// Start of the bucket, in milliseconds since the Unix epoch.
    pub start_ms: i64,
    /// The counters.
    #[serde(flatten)]
    pub counts: Counts,
}

/// Bucket size of a time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Granularity {
    /// 60 one-minute buckets: the last hour.
    Minute,
    /// 24 one-hour buckets: the last day.
    Hour,
}

/// Restricts a time series to one key, model or client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Filter {
    /// A key, by its id (16 hex digits).
    Key(String),
    /// A model.
    Model(String),
    /// A client, by its id (16 hex digits).
    Client(String),
}

/// A key with rate-limited attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RateLimitedKey {
    /// The key's id (16 hex digits).
    pub key_id: String,
    /// Its fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
    /// Attempts the classifier called rate limited.
    pub rate_limited: u64,
    /// All attempts with the key.
    pub attempts: u64,
}

/// The counters of a store that writes in the background (the SQLite store's writer thread):
/// how full its queue is and what happened to every record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WriterStats {
    /// Records accepted and not yet committed (in the channel or in the batch being written).
    pub queued: u64,
    /// The channel's capacity.
    pub capacity: u64,
    /// Records dropped because the channel was full (or the store was shut down).
    pub dropped: u64,
    /// Records committed.
    pub written: u64,
    /// Records accepted but lost because their transaction failed (disk full, I/O error; on
    /// a SQL store: a record the database refuses, or the database away past the shutdown
    /// timeout).
    pub lost: u64,
    /// Transactions committed.
    pub batches: u64,
    /// `false` once the store is shut down.
    pub running: bool,
}

/// A store whose writer counts what it does ([`WriterStats`]): the same question asked of any
/// store (the SQLite and SQL stores answer it), for a metrics exporter or a health page that
/// should not care which store it watches.
pub trait WriterCounters: Send + Sync + 'static {
    /// The writer's counters now (a few atomic loads: cheap enough for every scrape).
    fn writer_stats(&self) -> WriterStats;
}

impl<T: WriterCounters + ?Sized> WriterCounters for std::sync::Arc<T> {
    fn writer_stats(&self) -> WriterStats {
        (**self).writer_stats()
    }
}
