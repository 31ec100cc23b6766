//! What the mock does wrong for a given key.

use std::time::Duration;

/// How the mock answers requests made with one key. Set with
/// [`MockGemini::set_fault`](super::MockGemini::set_fault), at any time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answers normally.
    #[default]
    Ok,
    /// 400 `INVALID_ARGUMENT`, ErrorInfo reason `API_KEY_INVALID`.
    InvalidKey,
    /// 429 `RESOURCE_EXHAUSTED` for every model, with a `QuotaFailure` (per-minute or per-day
    /// quota id) and `RetryInfo { retryDelay }`.
    RateLimited {
        /// `RetryInfo.retryDelay`, in Gemini's form (`"37s"`).
        retry_delay: String,
        /// Name the per-day quota (`GenerateRequestsPerDayPerProjectPerModel-FreeTier`).
        per_day: bool,
    },
    /// Like a per-minute [`RateLimited`](Self::RateLimited), but only for requests for `model`;
    /// other models are served.
    RateLimitedForModel {
        /// The exhausted model, as in the path (`gemini-2.0-flash`).
        model: String,
        /// `RetryInfo.retryDelay`.
        retry_delay: String,
    },
    /// 503 `UNAVAILABLE` ("The model is overloaded.") on every other call with this key:
    /// the 1st fails, the 2nd is served, the 3rd fails, ...
    Flaky503,
    /// 500 `INTERNAL` every time.
    ServerError,
    /// Answers normally after sleeping this long.
    Slow(Duration),
    /// 403 `PERMISSION_DENIED` whose message quotes the key (`Consumer 'api_key:<key>' has been
    /// suspended.`), ErrorInfo reason `CONSUMER_SUSPENDED`.
    Suspended,
    /// 403 `PERMISSION_DENIED` with no reason about the key (what a request that is not the
    /// key's to make gets, such as one for a file of another project).
    PermissionDenied,
    /// 500 with a relay's HTML error page in ISO-8859-1 (not UTF-8) that quotes the key.
    HtmlPageQuotingKey,
    /// Streams (`alt=sse`) answer 200, send their first event, then an error event quoting the
    /// key, and end; other calls are served normally.
    StreamErrorQuotingKey,
    /// The answer breaks off: a stream after its first event, any other answer half-way
    /// through its body (the connection is cut, as when the upstream dies).
    BreaksOff,
}

impl Fault {
    /// A per-minute 429 with this `retryDelay` for every model.
    pub fn rate_limited(retry_delay: &str) -> Fault {
        Fault::RateLimited {
            retry_delay: retry_delay.to_owned(),
            per_day: false,
        }
    }

    /// A per-day 429 with this `retryDelay` for every model.
    pub fn daily_quota(retry_delay: &str) -> Fault {
        Fault::RateLimited {
            retry_delay: retry_delay.to_owned(),
            per_day: true,
        }
    }

    /// A per-minute 429 with this `retryDelay` for `model` only.
    pub fn rate_limited_for(model: &str, retry_delay: &str) -> Fault {
        Fault::RateLimitedForModel {
            model: model.to_owned(),
            retry_delay: retry_delay.to_owned(),
        }
    }
}
