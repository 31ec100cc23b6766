//! What gets recorded: one [`RequestRecord`] per client request, with its attempts.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use crate::api_error::ApiFlavor;
pub use crate::fingerprint::ClientId;
use crate::fingerprint::KeyId;

/// Token counts of one answer.
///
/// Filled from Gemini's `usageMetadata` (`promptTokenCount`, `candidatesTokenCount`,
/// `thoughtsTokenCount`, `cachedContentTokenCount`, `toolUsePromptTokenCount`,
/// `totalTokenCount`) or OpenAI's `usage` (`prompt_tokens`, `completion_tokens`,
/// `completion_tokens_details.reasoning_tokens`, `prompt_tokens_details.cached_tokens`,
/// `total_tokens`). OpenAI's `completion_tokens` include reasoning tokens; here `candidates`
/// excludes them, as in Gemini, so the two protocols add up the same way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TokenUsage {
    /// Prompt (input) tokens, cached ones included.
    pub prompt: u64,
    /// Answer (output) tokens, thoughts excluded.
    pub candidates: u64,
    /// Thinking tokens.
    pub thoughts: u64,
    /// Prompt tokens served from the context cache.
    pub cached: u64,
    /// Prompt tokens of tool results (Gemini's `toolUsePromptTokenCount`).
    pub tool_use_prompt: u64,
    /// Total as reported by the upstream.
    pub total: u64,
}

impl TokenUsage {
    /// `true` when no count is set.
    pub fn is_empty(&self) -> bool {
        *self == TokenUsage::default()
    }
}

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Completion {
    /// The whole body was delivered.
    Complete,
    /// The client went away before the end of the body.
    ClientGone,
    /// The body failed while streaming (the upstream broke off).
    BodyError,
    /// The inner service failed without a response (the upstream could not be reached).
    NoResponse,
    /// The body was delivered whole, but the stream carried an error event: it failed after
    /// its `200` (the upstream broke off or refused mid-stream, or a pseudo stream's answer
    /// failed).
    ErrorEvent,
}

impl Completion {
    /// `complete`, `client_gone`, `body_error`, `no_response` or `error_event`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Completion::Complete => "complete",
            Completion::ClientGone => "client_gone",
            Completion::BodyError => "body_error",
            Completion::NoResponse => "no_response",
            Completion::ErrorEvent => "error_event",
        }
    }
}

/// The id of one client request: links its record, its attempts and its error log rows.
///
/// Shown everywhere (logs, the admin API's JSON, its URLs) as 16 lowercase hex digits; parsed
/// from the same form. Ids from [`RequestId::next`] grow with time: the milliseconds since
/// 1970 above 20 bits of a counter that starts at random, so they are unique within a process
/// up to a million requests per millisecond, and a store's index on them grows at its end.
///
/// ```
/// use gemini_balance::usage::RequestId;
///
/// let id: RequestId = "0000018c2b3e4f51".parse()?;
/// assert_eq!(id.to_string(), "0000018c2b3e4f51");
/// assert_eq!(serde_json::to_string(&id)?, r#""0000018c2b3e4f51""#);
/// assert!("not hex".parse::<RequestId>().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RequestId(u64);

impl RequestId {
    /// A new id for a request that arrived at `at` (time-ordered, unique in this process).
    pub fn next(at: SystemTime) -> RequestId {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: std::sync::OnceLock<AtomicU64> = std::sync::OnceLock::new();
        let counter = COUNTER.get_or_init(|| AtomicU64::new(fastrand::u64(..)));
        RequestId::at(at, counter.fetch_add(1, Ordering::Relaxed))
    }

    /// The id made of `at`'s millisecond and the low 20 bits of `serial` (an importer's ids,
    /// stable across runs).
    pub fn at(at: SystemTime, serial: u64) -> RequestId {
        let ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        // 43 bits of milliseconds last until the year 2248; the id stays below 2^63, so a
        // database keeps it as a signed 64-bit integer.
        RequestId(((ms & ((1 << 43) - 1)) << 20) | (serial & 0xF_FFFF))
    }

    /// The id as a number (what a database column holds).
    pub fn get(self) -> u64 {
        self.0
    }

    /// The millisecond since 1970 an id from [`next`](Self::next) or [`at`](Self::at) was made for.
    pub fn millis(self) -> u64 {
        self.0 >> 20
    }
}

impl From<u64> for RequestId {
    fn from(id: u64) -> Self {
        RequestId(id)
    }
}

impl From<RequestId> for u64 {
    fn from(id: RequestId) -> Self {
        id.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({:016x})", self.0)
    }
}

/// Not a request id: it takes exactly 16 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRequestId;

impl fmt::Display for InvalidRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a request id (16 hex digits)")
    }
}

impl std::error::Error for InvalidRequestId {}

impl FromStr for RequestId {
    type Err = InvalidRequestId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(InvalidRequestId);
        }
        u64::from_str_radix(s, 16)
            .map(RequestId)
            .map_err(|_| InvalidRequestId)
    }
}

impl serde::Serialize for RequestId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RequestId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One upstream attempt, as seen by [`KeyRotation`](crate::keys::KeyRotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// When the attempt started.
    pub at: SystemTime,
    /// The key used.
    pub key: KeyId,
    /// The model, when known.
    pub model: Option<String>,
    /// The upstream status; `None` for a transport error.
    pub status: Option<u16>,
    /// The failure class name (`rate_limited`, ...), `None` on success.
    pub class: Option<&'static str>,
    /// Until the response head (or the error).
    pub latency: Duration,
    /// The upstream's error message, redacted of keys and truncated; only for failures.
    pub error_message: Option<String>,
}

impl AttemptRecord {
    /// `true` when the attempt failed.
    pub fn failed(&self) -> bool {
        self.class.is_some()
    }
}

/// One client request, written once its response has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestRecord {
    /// An id linking the request to its attempts and errors (time-ordered, unique per process).
    pub id: RequestId,
    /// When the request arrived.
    pub at: SystemTime,
    /// Gemini or OpenAI.
    pub protocol: ApiFlavor,
    /// The request path (no query string: it may hold a token).
    pub route: String,
    /// The model, when known: the request's [`ModelName`](crate::ext::ModelName) or path, else
    /// the `ModelName` an inner layer put on the response (one that read it from the request
    /// body, as the OpenAI conversion does).
    pub model: Option<String>,
    /// The key that served the final attempt.
    pub key: Option<KeyId>,
    /// The client token's id.
    pub client: Option<ClientId>,
    /// The status the client got (0 when the inner service failed without a response).
    pub status: u16,
    /// The gRPC status of a gRPC call (`grpc-status` of the headers or trailers), else `None`.
    pub grpc_status: Option<u32>,
    /// `true` when the classifier called the answer a success (the
    /// [`Classifier`](crate::classify::Classifier)'s reading of the status and headers the
    /// client got, and the [`Outcome`](crate::classify::Outcome) `KeyRotation` left on it),
    /// its body completed, and a gRPC call ended with `grpc-status: 0`. A quota error under a
    /// `200` (a gRPC `RESOURCE_EXHAUSTED`) is no success, whatever the status says.
    pub success: bool,
    /// Upstream attempts made, moves to another key after a key's failure included (so it can
    /// exceed the retry layer's `max_attempts`, which does not count those).
    pub attempts: u32,
    /// From the request's arrival to the end of the response body.
    pub latency: Duration,
    /// From the request's arrival to the first body byte.
    pub time_to_first_byte: Option<Duration>,
    /// Tokens, when the answer reported them.
    pub tokens: TokenUsage,
    /// `true` for an SSE (streamed) response.
    pub streamed: bool,
    /// How the response ended.
    pub completion: Completion,
    /// Every upstream attempt, failed ones included.
    pub attempt_log: Vec<AttemptRecord>,
    /// The request body, only when configured (`ERROR_LOG_RECORD_REQUEST_BODY`) and only for
    /// failed requests.
    pub request_body: Option<String>,
}

impl RequestRecord {
    /// A record with the given id and arrival time and everything else empty.
    pub fn new(id: impl Into<RequestId>, at: SystemTime) -> Self {
        RequestRecord {
            id: id.into(),
            at,
            protocol: ApiFlavor::Gemini,
            route: String::new(),
            model: None,
            key: None,
            client: None,
            status: 0,
            grpc_status: None,
            success: false,
            attempts: 0,
            latency: Duration::ZERO,
            time_to_first_byte: None,
            tokens: TokenUsage::default(),
            streamed: false,
            completion: Completion::Complete,
            attempt_log: Vec::new(),
            request_body: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RequestId;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn request_ids_are_unique_and_follow_time() {
        let at = UNIX_EPOCH + Duration::from_millis(1_790_000_000_123);
        let mut ids: Vec<RequestId> = (0..100_000).map(|_| RequestId::next(at)).collect();
        assert!(ids.iter().all(|id| id.millis() == 1_790_000_000_123));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 100_000);
        let later = RequestId::next(at + Duration::from_millis(1));
        assert!(ids.iter().all(|id| *id < later));
        // Stored as an SQLite INTEGER (i64): never negative.
        assert!(i64::try_from(later.get()).is_ok());
    }

    #[test]
    fn request_ids_read_back_as_shown() {
        let id = RequestId::from(0x0123_4567_89ab_cdef);
        assert_eq!(id.to_string(), "0123456789abcdef");
        assert_eq!("0123456789ABCDEF".parse::<RequestId>(), Ok(id));
        assert_eq!(
            serde_json::from_str::<RequestId>(r#""0123456789abcdef""#).ok(),
            Some(id)
        );
        for bad in [
            "",
            "123",
            "0123456789abcdefa",
            "+123456789abcdef",
            "0123456789abcdeg",
        ] {
            assert!(bad.parse::<RequestId>().is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<RequestId>("12").is_err());
    }
}
