//! Errors we answer ourselves, in the API's own error format.
//!
//! A Gemini client expects `{"error":{"code","message","status"}}`; an OpenAI client expects
//! `{"error":{"message","type","param","code"}}`. Layers that answer locally (no key available,
//! body too large) use [`ApiFlavor::of`] to pick the right one, so SDKs show a real message
//! instead of a parse failure.
//!
//! # Example
//!
//! ```
//! use gemini_balance::api_error::{ApiFlavor, error_response};
//! use http::StatusCode;
//!
//! let res = error_response(ApiFlavor::Gemini, StatusCode::PAYLOAD_TOO_LARGE, "request body is over 1 MiB");
//! assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
//! let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
//! assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
//! ```

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

pub use crate::ext::flavor::ApiFlavor;

/// The `google.rpc.Code` name Gemini uses for an HTTP status.
pub(crate) fn rpc_status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 411 | 413 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        408 | 504 => "DEADLINE_EXCEEDED",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        502 | 503 => "UNAVAILABLE",
        _ if status.is_client_error() => "FAILED_PRECONDITION",
        _ => "INTERNAL",
    }
}

pub(crate) fn openai_type_and_code(status: StatusCode) -> (&'static str, &'static str) {
    match status.as_u16() {
        401 => ("invalid_request_error", "invalid_api_key"),
        403 => ("invalid_request_error", "permission_denied"),
        404 => ("invalid_request_error", "not_found"),
        413 => ("invalid_request_error", "request_too_large"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        503 => ("server_error", "service_unavailable"),
        504 => ("server_error", "timeout"),
        _ if status.is_client_error() => ("invalid_request_error", "invalid_request"),
        _ => ("server_error", "internal_error"),
    }
}

/// The JSON error for `status` and `message` in the given flavor.
pub fn error_value(flavor: ApiFlavor, status: StatusCode, message: &str) -> Value {
    match flavor {
        ApiFlavor::Gemini => json!({
            "error": {
                "code": status.as_u16(),
                "message": message,
                "status": rpc_status_name(status),
            }
        }),
        ApiFlavor::OpenAi => openai_error_value(status, message, None),
    }
}

/// OpenAI's error JSON, naming the offending request field in `param` when there is one.
pub(crate) fn openai_error_value(status: StatusCode, message: &str, param: Option<&str>) -> Value {
    let (kind, code) = openai_type_and_code(status);
    json!({
        "error": {
            "message": message,
            "type": kind,
            "param": param,
            "code": code,
        }
    })
}

/// The JSON error body for `status` and `message` in the given flavor.
pub(crate) fn error_body(flavor: ApiFlavor, status: StatusCode, message: &str) -> Bytes {
    Bytes::from(error_value(flavor, status, message).to_string())
}

/// A complete JSON error response.
pub fn error_response(flavor: ApiFlavor, status: StatusCode, message: &str) -> Response<Bytes> {
    let body = error_body(flavor, status, message);
    let mut res = Response::new(body);
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavor_of_path() {
        let openai = [
            "/v1/chat/completions",
            "/hf/v1/chat/completions",
            "/openai/v1/models",
            "/hf/v1/models",
            "/v1/embeddings",
            "/v1/images/generations",
            "/v1/audio/speech",
            "/v1/completions",
            "/proxy/chat/completions?x=1",
        ];
        for path in openai {
            assert_eq!(ApiFlavor::of_path(path), ApiFlavor::OpenAi, "{path}");
        }
        let gemini = [
            "/v1beta/models/gemini-2.0-flash:generateContent",
            "/v1/models/gemini-2.0-flash%3AstreamGenerateContent",
            "/gemini/v1beta/models",
            "/v1/models",
            "/v1beta/models/text-embedding-004:embedContent",
            "/v1/chatcompletions",
            "",
            "/",
        ];
        for path in gemini {
            assert_eq!(ApiFlavor::of_path(path), ApiFlavor::Gemini, "{path}");
        }
    }
}
