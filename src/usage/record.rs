//! What gets recorded: one [`RequestRecord`] per client request, with its attempts.

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
    pub id: u64,
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
    /// `true` for a 2xx that completed (and, for gRPC, ended with `grpc-status: 0`).
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
    pub fn new(id: u64, at: SystemTime) -> Self {
        RequestRecord {
            id,
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
