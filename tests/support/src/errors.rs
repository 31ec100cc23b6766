//! Gemini's error answers (`google.rpc.Status` JSON), as the real API sends them.
//!
//! Usable without the server too: `errors::invalid_key().response::<Full<Bytes>>()` gives a
//! ready `http::Response` for a `tower::service_fn` upstream.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Value};

/// One error answer: its status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct GeminiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The JSON body, `{"error":{"code","message","status",...}}`.
    pub body: Value,
}

impl GeminiError {
    fn new(status: StatusCode, message: &str, rpc_status: &str, details: Option<Value>) -> Self {
        let mut error = json!({
            "code": status.as_u16(),
            "message": message,
            "status": rpc_status,
        });
        if let Some(details) = details {
            error["details"] = details;
        }
        GeminiError {
            status,
            body: json!({ "error": error }),
        }
    }

    /// The body as bytes.
    pub fn bytes(&self) -> Bytes {
        Bytes::from(self.body.to_string())
    }

    /// A complete response with Gemini's content type.
    pub fn response<B: From<Bytes>>(&self) -> Response<B> {
        let mut res = Response::new(B::from(self.bytes()));
        *res.status_mut() = self.status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=UTF-8"),
        );
        res
    }
}

/// 400 for a `pageSize` or `pageToken` Gemini cannot read.
pub fn invalid_page(what: &str) -> GeminiError {
    GeminiError::new(
        StatusCode::BAD_REQUEST,
        &format!("Invalid {what}."),
        "INVALID_ARGUMENT",
        None,
    )
}

/// 403 for a request that carries no key at all.
pub fn unregistered_caller() -> GeminiError {
    GeminiError::new(
        StatusCode::FORBIDDEN,
        "Method doesn't allow unregistered callers (callers without established identity). \
         Please use API Key or other form of API consumer identity to call this API.",
        "PERMISSION_DENIED",
        None,
    )
}

/// 400 `API_KEY_INVALID`.
pub fn invalid_key() -> GeminiError {
    GeminiError::new(
        StatusCode::BAD_REQUEST,
        "API key not valid. Please pass a valid API key.",
        "INVALID_ARGUMENT",
        Some(json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": { "service": "generativelanguage.googleapis.com" }
        }])),
    )
}

/// 429 `RESOURCE_EXHAUSTED` for `model`: a `QuotaFailure` naming the per-minute (or per-day)
/// free-tier quota, a `Help` link, and `RetryInfo { retryDelay }`.
pub fn rate_limited(model: &str, retry_delay: &str, per_day: bool) -> GeminiError {
    let (quota_id, metric) = if per_day {
        (
            "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
            "generativelanguage.googleapis.com/generate_content_free_tier_requests",
        )
    } else {
        (
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "generativelanguage.googleapis.com/generate_content_free_tier_requests",
        )
    };
    GeminiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "You exceeded your current quota, please check your plan and billing details. For more \
         information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
        "RESOURCE_EXHAUSTED",
        Some(json!([
            {
                "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                "violations": [{
                    "quotaMetric": metric,
                    "quotaId": quota_id,
                    "quotaDimensions": { "model": model, "location": "global" },
                    "quotaValue": if per_day { "200" } else { "15" }
                }]
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [{
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits"
                }]
            },
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": retry_delay
            }
        ])),
    )
}

/// 503 `UNAVAILABLE`: the model is overloaded.
pub fn overloaded() -> GeminiError {
    GeminiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The model is overloaded. Please try again later.",
        "UNAVAILABLE",
        None,
    )
}

/// 500 `INTERNAL`.
pub fn internal() -> GeminiError {
    GeminiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "An internal error has occurred. Please retry or report in \
         https://developers.generativeai.google/guide/troubleshooting",
        "INTERNAL",
        None,
    )
}

/// 403 `PERMISSION_DENIED` for a suspended key; the message quotes the key, as Gemini's does.
pub fn suspended(key: &str) -> GeminiError {
    GeminiError::new(
        StatusCode::FORBIDDEN,
        &format!("Permission denied: Consumer 'api_key:{key}' has been suspended."),
        "PERMISSION_DENIED",
        Some(json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "CONSUMER_SUSPENDED",
            "domain": "googleapis.com",
            "metadata": {
                "consumer": "projects/000000000000",
                "service": "generativelanguage.googleapis.com"
            }
        }])),
    )
}

/// 404 `NOT_FOUND` for a model that does not exist or does not support `method`.
pub fn model_not_found(version: &str, model: &str, method: &str) -> GeminiError {
    GeminiError::new(
        StatusCode::NOT_FOUND,
        &format!(
            "models/{model} is not found for API version {version}, or is not supported for \
             {method}. Call ListModels to see the list of available models and their supported \
             methods."
        ),
        "NOT_FOUND",
        None,
    )
}

/// 404 `NOT_FOUND` for a path the API does not have.
pub fn path_not_found(path: &str) -> GeminiError {
    GeminiError::new(
        StatusCode::NOT_FOUND,
        &format!("The requested URL {path} was not found on this server."),
        "NOT_FOUND",
        None,
    )
}

/// 400 `INVALID_ARGUMENT` for a body that is not JSON.
pub fn invalid_json() -> GeminiError {
    GeminiError::new(
        StatusCode::BAD_REQUEST,
        "Invalid JSON payload received. Unexpected token.",
        "INVALID_ARGUMENT",
        Some(json!([{
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{ "description": "Invalid JSON payload received. Unexpected token." }]
        }])),
    )
}

/// 400 `INVALID_ARGUMENT` for a generation request without `contents`.
pub fn no_contents() -> GeminiError {
    GeminiError::new(
        StatusCode::BAD_REQUEST,
        "* GenerateContentRequest.contents: contents is not specified\n",
        "INVALID_ARGUMENT",
        None,
    )
}

/// A relay's 500 error page in ISO-8859-1 (`\xe9` is "é"), quoting the key it was sent.
pub fn html_page_quoting(key: &str) -> Response<Bytes> {
    let mut page = b"<html><head><title>Erreur 500</title></head><body><h1>Requ\xeate \xe9chou\xe9e</h1><p>upstream refused key=".to_vec();
    page.extend_from_slice(key.as_bytes());
    page.extend_from_slice(b" (r\xe9essayez)</p></body></html>");
    let mut res = Response::new(Bytes::from(page));
    *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=ISO-8859-1"),
    );
    res
}

/// The error event Gemini sends inside a stream that fails after its 200, quoting the key.
pub fn stream_error_quoting(key: &str) -> Value {
    json!({ "error": {
        "code": 500,
        "message": format!("Internal error encountered for api_key:{key}."),
        "status": "INTERNAL",
    }})
}

/// 403 `PERMISSION_DENIED` without an `ErrorInfo` naming the key.
pub fn permission_denied() -> GeminiError {
    GeminiError::new(
        StatusCode::FORBIDDEN,
        "You do not have permission to access the File abc123 or it may not exist.",
        "PERMISSION_DENIED",
        None,
    )
}

/// 400 `INVALID_ARGUMENT` for a `thinkingConfig` sent to a model that does not think
/// (`gemini-2.0-flash`), as Gemini words it.
pub fn thinking_not_supported() -> GeminiError {
    GeminiError::new(
        StatusCode::BAD_REQUEST,
        "thinking_config is not supported.",
        "INVALID_ARGUMENT",
        None,
    )
}

/// 400 `INVALID_ARGUMENT` for a thinking budget a model that cannot turn thinking off does not
/// take (`0` for `gemini-2.5-pro`), as Gemini words it.
pub fn thinking_budget_invalid(budget: i64, lowest: i64) -> GeminiError {
    let message = if budget == 0 {
        "Budget 0 is invalid. This model only works in thinking mode.".to_owned()
    } else {
        format!(
            "The thinking budget {budget} is invalid. Please choose a value of at least {lowest}."
        )
    };
    GeminiError::new(StatusCode::BAD_REQUEST, &message, "INVALID_ARGUMENT", None)
}

/// 400 `INVALID_ARGUMENT` for a `thinkingLevel` the model does not take (every level, for a
/// model set by budget).
pub fn thinking_level_not_supported(level: &str) -> GeminiError {
    GeminiError::new(
        StatusCode::BAD_REQUEST,
        &format!("Thinking level {level} is not supported for this model."),
        "INVALID_ARGUMENT",
        None,
    )
}

/// 400 `INVALID_ARGUMENT` for a thinking config with both a budget and a level.
pub fn thinking_budget_and_level() -> GeminiError {
    GeminiError::new(
        StatusCode::BAD_REQUEST,
        "You can only set only one of thinking budget and thinking level.",
        "INVALID_ARGUMENT",
        None,
    )
}

/// 400 `INVALID_ARGUMENT` for a built-in tool (Google Search, code execution, URL context)
/// next to function declarations.
pub fn tool_use_with_function_calling() -> GeminiError {
    GeminiError::new(
        StatusCode::BAD_REQUEST,
        "Tool use with function calling is unsupported",
        "INVALID_ARGUMENT",
        None,
    )
}

/// 400 `INVALID_ARGUMENT` for a built-in tool in a JSON-mode request.
pub fn tool_use_with_json_mode() -> GeminiError {
    GeminiError::new(
        StatusCode::BAD_REQUEST,
        "Tool use with a response mime type: 'application/json' is unsupported",
        "INVALID_ARGUMENT",
        None,
    )
}

/// 400 `INVALID_ARGUMENT` for a `systemInstruction` sent to an image-generating model.
pub fn developer_instruction_not_enabled(model: &str) -> GeminiError {
    GeminiError::new(
        StatusCode::BAD_REQUEST,
        &format!("Developer instruction is not enabled for models/{model}"),
        "INVALID_ARGUMENT",
        None,
    )
}
