//! [`Limits`]: what one identity may use, and [`Refusal`]: why a request was refused.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Window;

/// What one identity may use; `None` is no limit. The requests of a minute are counted when
/// they are let in; tokens when their answer's usage is known, so a window's tokens can
/// overshoot its limit by the answers in flight when it filled.
///
/// ```
/// use gemini_balance::quota::Limits;
///
/// let limits: Limits = serde_json::from_str(r#"{"requests_per_minute": 60, "tokens_per_day": 1000000}"#)?;
/// assert_eq!(limits.requests_per_minute, Some(60));
/// assert_eq!(limits.tokens_per_month, None);
/// assert!(!limits.is_unlimited());
/// assert!(serde_json::from_str::<Limits>(r#"{"requests_per_hour": 1}"#).is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Requests let in per minute.
    pub requests_per_minute: Option<u64>,
    /// Tokens (the usage's total) per minute.
    pub tokens_per_minute: Option<u64>,
    /// Tokens per day (UTC).
    pub tokens_per_day: Option<u64>,
    /// Tokens per calendar month (UTC): the monthly budget.
    pub tokens_per_month: Option<u64>,
}

impl Limits {
    /// No limit at all.
    pub fn is_unlimited(&self) -> bool {
        *self == Limits::default()
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LimitKind {
    /// [`Limits::requests_per_minute`].
    RequestsPerMinute,
    /// [`Limits::tokens_per_minute`].
    TokensPerMinute,
    /// [`Limits::tokens_per_day`].
    TokensPerDay,
    /// [`Limits::tokens_per_month`].
    TokensPerMonth,
}

impl LimitKind {
    /// The window the limit counts in.
    pub fn window(self) -> Window {
        match self {
            LimitKind::RequestsPerMinute | LimitKind::TokensPerMinute => Window::Minute,
            LimitKind::TokensPerDay => Window::Day,
            LimitKind::TokensPerMonth => Window::Month,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            LimitKind::RequestsPerMinute => "requests per minute",
            LimitKind::TokensPerMinute => "tokens per minute",
            LimitKind::TokensPerDay => "tokens per day (UTC)",
            LimitKind::TokensPerMonth => "tokens per month (UTC)",
        }
    }
}

/// A request refused by its quota: which limit, and when the window that is full frees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The limit reached.
    pub kind: LimitKind,
    /// Its value.
    pub limit: u64,
    /// How long until its window ends (whole seconds, at least one).
    pub retry_after: Duration,
}

impl Refusal {
    /// [`retry_after`](Self::retry_after) in whole seconds, rounded up (`Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        d.as_secs() + u64::from(d.subsec_nanos() > 0)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "quota exceeded: this client may use {} {}; retry in {} s",
            self.limit,
            self.kind.describe(),
            self.retry_after_secs()
        )
    }
}
