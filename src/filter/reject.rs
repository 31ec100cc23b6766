//! The one 400 a refused request gets, in the API's own error format.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

use super::check::{Violation, ViolationKind};
use crate::api_error::{error_response, rpc_status_name, ApiFlavor};

/// The message naming every offending field.
pub(crate) fn message(violations: &[Violation], more: usize) -> String {
    let mut text = String::from("Invalid request: ");
    for (i, v) in violations.iter().enumerate() {
        if i > 0 {
            text.push_str("; ");
        }
        text.push_str(&v.to_string());
    }
    if more > 0 {
        text.push_str(&format!("; and {more} more"));
    }
    text.push('.');
    text
}

/// `400` with Gemini's `google.rpc.Status` (a `BadRequest` detail lists each field) or OpenAI's
/// error object (`param` is the first offending field).
pub(crate) fn rejection(
    flavor: ApiFlavor,
    violations: &[Violation],
    more: usize,
) -> Response<Bytes> {
    let status = StatusCode::BAD_REQUEST;
    let message = message(violations, more);
    let body = match flavor {
        ApiFlavor::OpenAi => {
            let first = violations.first();
            let code = match first.map(|v| v.kind) {
                Some(ViolationKind::Missing) => "missing_required_parameter",
                Some(ViolationKind::WrongType) => "invalid_type",
                _ => "invalid_value",
            };
            json!({
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": first.map_or(Value::Null, |v| Value::from(v.field.as_str())),
                    "code": code,
                }
            })
        }
        _ => {
            let field_violations: Vec<Value> = violations
                .iter()
                .map(|v| json!({ "field": v.field, "description": v.problem }))
                .collect();
            json!({
                "error": {
                    "code": status.as_u16(),
                    "message": message,
                    "status": rpc_status_name(status),
                    "details": [{
                        "@type": "type.googleapis.com/google.rpc.BadRequest",
                        "fieldViolations": field_violations,
                    }],
                }
            })
        }
    };
    let mut res = Response::new(Bytes::from(body.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    res
}

/// `400` for a body that is not JSON, saying where the parser stopped.
pub(crate) fn not_json(flavor: ApiFlavor, error: &serde_json::Error) -> Response<Bytes> {
    error_response(
        flavor,
        StatusCode::BAD_REQUEST,
        &format!("the request body is not valid JSON: {error}"),
    )
}
