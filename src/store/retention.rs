//! [`Retention`]: how long a store keeps its logs and usage rollups.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use gemini_balance::store::Retention;
//!
//! let retention = Retention::default();
//! assert_eq!(retention.error_logs, Some(Duration::from_secs(7 * 86_400)));
//! ```

use std::time::Duration;

/// How long rows are kept, and how deletion is paced.
///
/// The defaults follow the Python Gemini-Balance server where it has a setting: error logs are
/// deleted after 7 days, request logs are kept (its `AUTO_DELETE_REQUEST_LOGS_ENABLED` is off
/// by default; when turned on its default is 30 days). The usage rollups, which answer the
/// statistics, are small and kept much longer: per-minute rows 3 days, per-hour rows 400 days.
///
/// Start from the default and change fields:
///
/// ```
/// use std::time::Duration;
/// use gemini_balance::store::Retention;
///
/// let mut retention = Retention::default();
/// retention.request_logs = Some(Duration::from_secs(30 * 86_400));
/// retention.batch_rows = 500;
/// # #[cfg(feature = "sqlite")] {
/// # let dir = tempfile::tempdir().unwrap();
/// let store = gemini_balance::store::SqliteStore::builder(dir.path().join("usage.db"))
///     .retention(retention)
///     .open()
///     .unwrap();
/// # store.shutdown().unwrap();
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    /// Error log rows older than this are deleted; `None` keeps them. Default 7 days.
    pub error_logs: Option<Duration>,
    /// Request log rows (and their attempt rows) older than this are deleted; `None` keeps
    /// them. Default `None`.
    pub request_logs: Option<Duration>,
    /// Per-minute usage rows older than this are deleted. Default 3 days. Statistics whose
    /// window starts before it count the whole first hour (see `docs/store.md`).
    pub usage_minutes: Duration,
    /// Per-hour usage rows older than this are deleted. Default 400 days.
    pub usage_hours: Duration,
    /// How often the writer looks for old rows. Default one hour (also once at startup).
    pub interval: Duration,
    /// `true`: old error and request log rows are looked for once a day, at midnight in the
    /// store's time zone (`time_zone` of the store's builder) (and once at startup), as
    /// Gemini-Balance does; the rollups keep `interval`. Default `false`: everything every
    /// `interval`.
    pub logs_at_midnight: bool,
    /// Rows deleted per statement. Default 2,000 (a few milliseconds of write lock).
    pub batch_rows: u32,
    /// A size budget for the database (SQLite store; the SQL stores ignore it): while the
    /// pages in use hold more than this, the oldest raw log rows (requests with their
    /// attempts, and errors, oldest first by time) are deleted, a step at a time, down to 90%
    /// of it. The
    /// usage rollups, key state and settings are kept. The file does not shrink: SQLite reuses
    /// the freed pages, so it stays near the budget (plus its write-ahead log). Checked every
    /// few seconds. Default `None` (no budget).
    pub max_bytes: Option<u64>,
}

/// A day.
pub(crate) const DAY: Duration = Duration::from_secs(86_400);

impl Default for Retention {
    fn default() -> Self {
        Retention {
            error_logs: Some(7 * DAY),
            request_logs: None,
            usage_minutes: 3 * DAY,
            usage_hours: 400 * DAY,
            interval: Duration::from_secs(3600),
            logs_at_midnight: false,
            batch_rows: 2_000,
            max_bytes: None,
        }
    }
}
