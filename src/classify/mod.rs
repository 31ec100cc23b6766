//! One place that decides what a response means.
//!
//! Every layer of this crate asks the same [`Classifier`]: given a status, headers and up to
//! [`Classifier::body_limit`] bytes of an error body (or a `grpc-status`, or a transport error),
//! it names a [`FailureClass`]. Each class answers, through [`FailureClass::action`], whether to
//! retry, on which key, and what happens to the key. `docs/classification.md` is the same table
//! in prose, and a table test holds the code to it.
//!
//! The classifier also drives tower-http's [`ClassifyResponse`](tower_http::classify::ClassifyResponse)
//! (so `TraceLayer` logs the same failures) and tower's retry
//! [`Policy`](tower::retry::Policy) (see [`ClassifiedPolicy`](crate::retry::ClassifiedPolicy)).
//!
//! # Example
//!
//! ```
//! use http::{HeaderMap, StatusCode};
//! use gemini_balance::classify::{Classifier, FailureClass, KeyEffect, RetryAdvice};
//!
//! let classifier = Classifier::new();
//! let body = br#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT",
//!   "details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
//! let class = classifier
//!     .classify(StatusCode::BAD_REQUEST, &HeaderMap::new(), body)
//!     .unwrap_err();
//! assert!(matches!(class, FailureClass::KeyRejected { .. }));
//! assert_eq!(class.action().retry, RetryAdvice::AnotherKey);
//! assert_eq!(class.action().key, KeyEffect::Disable);
//! ```

mod class;
mod gemini_error;
#[cfg(feature = "grpc")]
mod grpc;
#[cfg(feature = "grpc")]
pub(crate) mod grpc_details;
mod retry_after;
mod tower_http_adapter;
mod transport;

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};

pub use self::class::{
    Action, Cooldown, FailureClass, KeyEffect, Outcome, QuotaScope, RetryAdvice,
    DEFAULT_RATE_LIMIT_COOLDOWN,
};
pub(crate) use self::gemini_error::ErrorBody;
#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub use self::grpc::{grpc_status, GrpcEos};
pub(crate) use self::retry_after::{parse_retry_after, MAX_RETRY_AFTER};

/// Error-body reasons that mean the key itself is bad.
const KEY_REASONS: &[&str] = &[
    "API_KEY_INVALID",
    "API_KEY_EXPIRED",
    "API_KEY_SERVICE_BLOCKED",
    "API_KEY_HTTP_REFERRER_BLOCKED",
    "API_KEY_IP_ADDRESS_BLOCKED",
    "API_KEY_ANDROID_APP_BLOCKED",
    "API_KEY_IOS_APP_BLOCKED",
    "CONSUMER_SUSPENDED",
    "SERVICE_DISABLED",
    "BILLING_DISABLED",
];

/// Decides the [`FailureClass`] of a response, a gRPC status or a transport error.
///
/// Cheap to clone; configure with the builder methods.
#[derive(Debug, Clone)]
pub struct Classifier {
    body_limit: usize,
    max_retry_after: Duration,
}

impl Default for Classifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Classifier {
    /// A classifier with the defaults: reads up to 16 KiB of an error body, caps waits at 24 h.
    pub const fn new() -> Self {
        Classifier {
            body_limit: 16 * 1024,
            max_retry_after: MAX_RETRY_AFTER,
        }
    }

    /// How many bytes of an error body are read for classification (default 16 KiB).
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The longest `Retry-After` / `retryDelay` taken at its word (default 24 h).
    pub fn with_max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// Bytes of an error body that [`classify`](Self::classify) looks at.
    pub fn body_limit(&self) -> usize {
        self.body_limit
    }

    /// `true` when the status alone says success, so no body needs to be read.
    pub fn is_success(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        (status.is_success() || status.is_informational() || status.is_redirection())
            && grpc_code(headers).is_none_or(|code| code == 0)
    }

    /// Classifies a response from its status, headers and (a prefix of) its body.
    ///
    /// `body` may be empty; for success statuses it is not looked at.
    pub fn classify(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), FailureClass> {
        #[cfg(feature = "grpc")]
        if let Some(code) = grpc::header_code(headers) {
            return self.classify_grpc(code, headers);
        }
        if self.is_success(status, headers) {
            return Ok(());
        }
        let parsed = if body.is_empty() {
            None
        } else {
            ErrorBody::parse(
                &body[..body.len().min(self.body_limit)],
                self.max_retry_after,
            )
        };
        let header_wait = parse_retry_after(headers, self.max_retry_after, SystemTime::now());
        Err(self.classify_parts(status, parsed.as_ref(), header_wait))
    }

    /// The core table: status plus what the error body said.
    fn classify_parts(
        &self,
        status: StatusCode,
        body: Option<&ErrorBody>,
        header_wait: Option<Duration>,
    ) -> FailureClass {
        let rpc_status = body.and_then(|b| b.status.as_deref()).unwrap_or("");
        let key_reason = body.and_then(|b| {
            b.reasons
                .iter()
                .find(|r| KEY_REASONS.contains(&r.as_str()))
                .cloned()
        });
        let wait = body.and_then(|b| b.retry_delay).or(header_wait);

        if let Some(reason) = key_reason {
            if status.is_client_error() {
                return FailureClass::KeyRejected { status, reason };
            }
        }
        match status.as_u16() {
            429 => FailureClass::RateLimited {
                retry_after: wait,
                scope: body
                    .and_then(|b| b.quota_scope)
                    .unwrap_or(QuotaScope::Unknown),
            },
            401 => FailureClass::KeyRejected {
                status,
                reason: non_empty(rpc_status, "UNAUTHENTICATED"),
            },
            403 => FailureClass::KeyRejected {
                status,
                reason: non_empty(rpc_status, "PERMISSION_DENIED"),
            },
            400 if message_names_bad_key(body) => FailureClass::KeyRejected {
                status,
                reason: "API_KEY_INVALID".to_owned(),
            },
            408 => FailureClass::Timeout,
            503 => FailureClass::Overloaded { retry_after: wait },
            504 => FailureClass::Timeout,
            _ if rpc_status == "RESOURCE_EXHAUSTED" => FailureClass::RateLimited {
                retry_after: wait,
                scope: body
                    .and_then(|b| b.quota_scope)
                    .unwrap_or(QuotaScope::Unknown),
            },
            _ if status.is_server_error() && rpc_status == "UNAVAILABLE" => {
                FailureClass::Overloaded { retry_after: wait }
            }
            _ if status.is_server_error() && rpc_status == "DEADLINE_EXCEEDED" => {
                FailureClass::Timeout
            }
            _ if status.is_server_error() => FailureClass::ServerError { status },
            _ if status.is_client_error() => FailureClass::ClientError { status },
            // Any other non-success status (a 1xx/3xx that leaked through, or a non-standard code).
            _ => FailureClass::ServerError { status },
        }
    }

    /// Classifies a gRPC status code. `metadata` (the headers or trailers that carried it)
    /// supplies `grpc-message` and `grpc-status-details-bin` (the `google.rpc.Status` with
    /// Gemini's `ErrorInfo`, `RetryInfo` and `QuotaFailure`), and `retry-after` when present.
    #[cfg(feature = "grpc")]
    #[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
    pub fn classify_grpc(&self, code: u32, metadata: &HeaderMap) -> Result<(), FailureClass> {
        grpc::classify(code, metadata, self.max_retry_after)
    }

    /// Classifies an error returned instead of a response (connect refused, reset, timeout...).
    pub fn classify_error(&self, error: &(dyn std::error::Error + 'static)) -> FailureClass {
        transport::classify_error(error)
    }
}

/// The `grpc-status` of response headers or trailers. Without the `grpc` feature, `None`: gRPC
/// answers are then judged as plain HTTP (their 200 is a success).
pub(crate) fn grpc_code(headers: &HeaderMap) -> Option<u32> {
    #[cfg(feature = "grpc")]
    {
        grpc::header_code(headers)
    }
    #[cfg(not(feature = "grpc"))]
    {
        let _ = headers;
        None
    }
}

fn non_empty(value: &str, default: &str) -> String {
    if value.is_empty() {
        default.to_owned()
    } else {
        value.to_owned()
    }
}

/// Some Gemini 400s name a bad key only in the message ("API key not valid", "API key expired").
fn message_names_bad_key(body: Option<&ErrorBody>) -> bool {
    let Some(message) = body.and_then(|b| b.message.as_deref()) else {
        return false;
    };
    let lower = message.to_ascii_lowercase();
    lower.contains("api key not valid")
        || lower.contains("api key expired")
        || lower.contains("api_key_invalid")
}

/// Classifies a service error of any type, for layers whose `Error` is only known to be
/// `Display + 'static` (tower's `BoxError`, `io::Error`, `reqwest::Error`, timeouts...).
///
/// Known types are inspected (including their `source()` chain); anything else is judged by its
/// message.
pub fn classify_any_error<E>(error: &E) -> FailureClass
where
    E: std::fmt::Display + 'static,
{
    use std::any::Any;
    let any = error as &dyn Any;
    if let Some(e) = any.downcast_ref::<crate::BoxError>() {
        return transport::classify_error(e.as_ref());
    }
    if let Some(e) = any.downcast_ref::<Box<dyn std::error::Error + Send>>() {
        return transport::classify_error(e.as_ref());
    }
    if let Some(e) = any.downcast_ref::<std::io::Error>() {
        return transport::classify_error(e);
    }
    if let Some(e) = any.downcast_ref::<tower::timeout::error::Elapsed>() {
        return transport::classify_error(e);
    }
    if let Some(e) = any.downcast_ref::<FailureClass>() {
        return e.clone();
    }
    #[cfg(feature = "reqwest")]
    if let Some(e) = any.downcast_ref::<reqwest::Error>() {
        return transport::classify_error(e);
    }
    transport::classify_display(error)
}
