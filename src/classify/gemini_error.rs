//! Reading the parts of Gemini's JSON error body that matter for classification.
//!
//! ```json
//! {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "...",
//!   "details": [
//!     {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
//!      "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
//!     {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}
//! ```

use std::time::Duration;

use serde_json::Value;

use super::class::QuotaScope;
use super::retry_after::parse_retry_delay;

/// What a Gemini (google.rpc.Status) error body says, reduced to what classification needs.
///
/// OpenAI-style bodies (`{"error": {"type": ..., "code": ...}}`) parse too: their `code` string
/// lands in [`status`](Self::status) when it is a string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    /// `error.status`, such as `RESOURCE_EXHAUSTED` or `INVALID_ARGUMENT`.
    pub status: Option<String>,
    /// `error.message`.
    pub message: Option<String>,
    /// Every `ErrorInfo.reason` in `error.details`, such as `API_KEY_INVALID`.
    pub reasons: Vec<String>,
    /// `RetryInfo.retryDelay`, parsed.
    pub retry_delay: Option<Duration>,
    /// The scope of the quota named in `QuotaFailure.violations[].quotaId`.
    pub quota_scope: Option<QuotaScope>,
}

impl ErrorBody {
    /// Parses a body; returns `None` when it is not a JSON object with an `error` object.
    pub fn parse(body: &[u8], max_delay: Duration) -> Option<ErrorBody> {
        let value: Value = serde_json::from_slice(body).ok()?;
        // Streaming endpoints sometimes wrap the error in a one-element array.
        let value = match value {
            Value::Array(mut items) if items.len() == 1 => items.remove(0),
            other => other,
        };
        let error = value.get("error")?.as_object()?;
        let mut out = ErrorBody {
            status: error
                .get("status")
                .or_else(|| error.get("code").filter(|c| c.is_string()))
                .and_then(Value::as_str)
                .map(str::to_owned),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned),
            ..ErrorBody::default()
        };
        let details = error.get("details").and_then(Value::as_array);
        for detail in details.into_iter().flatten() {
            let kind = detail.get("@type").and_then(Value::as_str).unwrap_or("");
            if let Some(reason) = detail.get("reason").and_then(Value::as_str) {
                out.reasons.push(reason.to_owned());
            }
            if kind.ends_with("google.rpc.RetryInfo") {
                if let Some(delay) = detail.get("retryDelay").and_then(Value::as_str) {
                    out.retry_delay = parse_retry_delay(delay, max_delay);
                }
            }
            if kind.ends_with("google.rpc.QuotaFailure") {
                let violations = detail.get("violations").and_then(Value::as_array);
                for violation in violations.into_iter().flatten() {
                    let id = violation
                        .get("quotaId")
                        .or_else(|| violation.get("quotaMetric"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let scope = quota_scope(id);
                    // A per-day violation dominates: it outlasts any per-minute one.
                    if out.quota_scope != Some(QuotaScope::PerDay) && scope != QuotaScope::Unknown {
                        out.quota_scope = Some(scope);
                    }
                }
            }
        }
        Some(out)
    }
}

/// Tells a per-day quota from a per-minute one by its id, e.g.
/// `GenerateRequestsPerDayPerProjectPerModel-FreeTier` → [`QuotaScope::PerDay`].
pub(crate) fn quota_scope(quota_id: &str) -> QuotaScope {
    if quota_id.contains("PerDay") || quota_id.contains("per_day") {
        QuotaScope::PerDay
    } else if quota_id.contains("PerMinute") || quota_id.contains("per_minute") {
        QuotaScope::PerMinute
    } else {
        QuotaScope::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_quota_error() {
        let body = br#"{"error":{"code":429,"message":"You exceeded your current quota","status":"RESOURCE_EXHAUSTED",
          "details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[
             {"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests",
              "quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier"},
             {"quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]},
            {"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}"#;
        let parsed = ErrorBody::parse(body, Duration::from_secs(3600)).unwrap();
        assert_eq!(parsed.status.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(parsed.retry_delay, Some(Duration::from_secs(37)));
        assert_eq!(parsed.quota_scope, Some(QuotaScope::PerDay));
    }

    #[test]
    fn not_json_is_none() {
        assert_eq!(ErrorBody::parse(b"<html>", Duration::from_secs(1)), None);
        assert_eq!(ErrorBody::parse(b"{\"x\":1}", Duration::from_secs(1)), None);
    }

    #[test]
    fn array_wrapped_error() {
        let body = br#"[{"error":{"code":503,"status":"UNAVAILABLE","message":"The model is overloaded."}}]"#;
        let parsed = ErrorBody::parse(body, Duration::from_secs(1)).unwrap();
        assert_eq!(parsed.status.as_deref(), Some("UNAVAILABLE"));
    }
}
