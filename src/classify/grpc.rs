//! gRPC status codes (`grpc-status` in headers or trailers) mapped onto [`FailureClass`], with
//! the details of `grpc-status-details-bin` (`RetryInfo`, `QuotaFailure`, `ErrorInfo`) read as
//! for a JSON error body.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use tower_http::classify::ClassifyEos;

use super::class::{FailureClass, QuotaScope};
use super::grpc_details::error_body;
use super::retry_after::parse_retry_after;
use super::{message_names_bad_key, KEY_REASONS};

/// The `grpc-status` of response headers or trailers, when there is one.
///
/// ```
/// use http::HeaderMap;
/// let mut trailers = HeaderMap::new();
/// trailers.insert("grpc-status", "8".parse().unwrap());
/// assert_eq!(gemini_balance::classify::grpc_status(&trailers), Some(8));
/// ```
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    header_code(headers)
}

/// Reads `grpc-status` from a header map (response headers or trailers).
pub(crate) fn header_code(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub(crate) fn classify(
    code: u32,
    metadata: &HeaderMap,
    max_wait: Duration,
) -> Result<(), FailureClass> {
    if code == 0 {
        return Ok(());
    }
    // What `grpc-status-details-bin` says: the same details as Gemini's JSON error body.
    let details = error_body(code, metadata, max_wait);
    let wait = details
        .retry_delay
        .or_else(|| parse_retry_after(metadata, max_wait, SystemTime::now()));
    let key_reason = details
        .reasons
        .iter()
        .find(|r| KEY_REASONS.contains(&r.as_str()))
        .cloned();
    let class = match code {
        // INVALID_ARGUMENT, PERMISSION_DENIED about the key (API_KEY_INVALID, CONSUMER_SUSPENDED…)
        3 | 7 | 9 if key_reason.is_some() => FailureClass::KeyRejected {
            status: if code == 7 {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            },
            reason: key_reason.unwrap_or_default(),
        },
        3 if message_names_bad_key(Some(&details)) => FailureClass::KeyRejected {
            status: StatusCode::BAD_REQUEST,
            reason: "API_KEY_INVALID".to_owned(),
        },
        // RESOURCE_EXHAUSTED
        8 => FailureClass::RateLimited {
            retry_after: wait,
            scope: details.quota_scope.unwrap_or(QuotaScope::Unknown),
        },
        // UNAVAILABLE
        14 => FailureClass::Overloaded { retry_after: wait },
        // DEADLINE_EXCEEDED
        4 => FailureClass::Timeout,
        // UNAUTHENTICATED
        16 => FailureClass::KeyRejected {
            status: StatusCode::UNAUTHORIZED,
            reason: "UNAUTHENTICATED".to_owned(),
        },
        // PERMISSION_DENIED
        7 => FailureClass::KeyRejected {
            status: StatusCode::FORBIDDEN,
            reason: "PERMISSION_DENIED".to_owned(),
        },
        // UNKNOWN, INTERNAL, DATA_LOSS
        2 | 13 | 15 => FailureClass::ServerError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
        },
        // NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNIMPLEMENTED
        5 => FailureClass::ClientError {
            status: StatusCode::NOT_FOUND,
        },
        12 => FailureClass::ClientError {
            status: StatusCode::NOT_IMPLEMENTED,
        },
        // CANCELLED (the caller went away), INVALID_ARGUMENT and everything else
        _ => FailureClass::ClientError {
            status: StatusCode::BAD_REQUEST,
        },
    };
    Err(class)
}

/// Classifies the end of a gRPC stream from its trailers (for tower-http's `ClassifyEos`).
#[derive(Debug, Clone)]
pub struct GrpcEos {
    pub(crate) max_wait: Duration,
}

impl ClassifyEos for GrpcEos {
    type FailureClass = FailureClass;

    fn classify_eos(self, trailers: Option<&HeaderMap>) -> Result<(), Self::FailureClass> {
        match trailers.and_then(header_code) {
            Some(code) => classify(code, trailers.unwrap_or(&HeaderMap::new()), self.max_wait),
            // A gRPC stream that ends without a status is broken.
            None => Err(FailureClass::Transport {
                detail: "gRPC stream ended without grpc-status".to_owned(),
            }),
        }
    }

    fn classify_error<E>(self, error: &E) -> Self::FailureClass
    where
        E: std::fmt::Display + 'static,
    {
        super::transport::classify_display(error)
    }
}
