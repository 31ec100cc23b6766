//! Holds the classifier to `docs/classification.md`: every row of its table is a case here, and
//! the Class, Retry, Wait and Key columns must match what the code decides.

use std::time::Duration;

use gemini_balance::classify::{
    Classifier, Cooldown, FailureClass, KeyEffect, RetryAdvice, DEFAULT_RATE_LIMIT_COOLDOWN,
};
use http::{HeaderMap, HeaderValue, StatusCode};

/// The `RetryLayer` default for the longest `Retry-After` it waits for.
const HONOURED_WAIT: Duration = Duration::from_secs(5);

enum Input {
    Http {
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        body: &'static str,
    },
    Error(Box<dyn std::error::Error + Send + Sync>),
    Local,
}

fn gemini_error(code: u16, status: &str, message: &str, details: &str) -> String {
    format!(
        r#"{{"error":{{"code":{code},"message":"{message}","status":"{status}","details":[{details}]}}}}"#
    )
}

fn error_info(reason: &str) -> String {
    format!(
        r#"{{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"{reason}","domain":"googleapis.com"}}"#
    )
}

fn quota(id: &str, delay: &str) -> String {
    format!(
        r#"{{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"{id}"}}]}},{{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"{delay}"}}"#
    )
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn case(id: u32) -> Input {
    let http = |status, headers, body| Input::Http {
        status,
        headers,
        body,
    };
    match id {
        1 => http(200, &[], r#"{"candidates":[]}"#),
        2 => http(
            429,
            &[],
            leak(gemini_error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota",
                &quota(
                    "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                    "37s",
                ),
            )),
        ),
        3 => http(
            429,
            &[],
            leak(gemini_error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota",
                &quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier", "20s"),
            )),
        ),
        4 => http(429, &[("retry-after", "12")], ""),
        5 => http(429, &[], ""),
        6 => http(
            400,
            &[],
            leak(gemini_error(
                400,
                "INVALID_ARGUMENT",
                "API key expired. Please renew the API key.",
                &error_info("API_KEY_INVALID"),
            )),
        ),
        7 => http(
            400,
            &[],
            r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}"#,
        ),
        8 => http(
            401,
            &[],
            r#"{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}"#,
        ),
        9 => http(
            403,
            &[],
            r#"{"error":{"code":403,"message":"The caller does not have permission","status":"PERMISSION_DENIED"}}"#,
        ),
        10 => http(
            403,
            &[],
            leak(gemini_error(
                403,
                "PERMISSION_DENIED",
                "Permission denied: Consumer has been suspended.",
                &error_info("CONSUMER_SUSPENDED"),
            )),
        ),
        11 => http(
            403,
            &[],
            leak(gemini_error(
                403,
                "PERMISSION_DENIED",
                "Generative Language API has not been used in project 1 before or it is disabled.",
                &error_info("SERVICE_DISABLED"),
            )),
        ),
        12 => http(
            400,
            &[],
            r#"{"error":{"code":400,"message":"Invalid JSON payload received. Unknown name \"foo\": Cannot find field.","status":"INVALID_ARGUMENT"}}"#,
        ),
        13 => http(
            400,
            &[],
            r#"{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}"#,
        ),
        14 => http(
            404,
            &[],
            r#"{"error":{"code":404,"message":"models/nope is not found for API version v1beta","status":"NOT_FOUND"}}"#,
        ),
        15 => http(413, &[], ""),
        16 => http(
            500,
            &[],
            r#"{"error":{"code":500,"message":"An internal error has occurred.","status":"INTERNAL"}}"#,
        ),
        17 => http(502, &[], ""),
        18 => http(
            503,
            &[],
            r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#,
        ),
        19 => http(
            503,
            &[("retry-after", "2")],
            r#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#,
        ),
        20 => http(
            503,
            &[("retry-after", "60")],
            r#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#,
        ),
        21 => http(
            504,
            &[],
            r#"{"error":{"code":504,"message":"Deadline expired before operation could complete.","status":"DEADLINE_EXCEEDED"}}"#,
        ),
        22 => http(408, &[], ""),
        23 => http(
            500,
            &[],
            r#"{"error":{"code":500,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#,
        ),
        24 => http(200, &[("grpc-status", "8")], ""),
        25 => http(200, &[("grpc-status", "14")], ""),
        26 => http(200, &[("grpc-status", "16")], ""),
        27 => http(200, &[("grpc-status", "3")], ""),
        28 => http(200, &[("grpc-status", "13")], ""),
        29 => Input::Error(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        ))),
        30 => Input::Error(Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut))),
        31 => Input::Local,
        // google.rpc.Status { code: 8, details: [QuotaFailure (per minute), RetryInfo 30s] }
        32 => http(
            200,
            &[
                ("grpc-status", "8"),
                ("grpc-status-details-bin", "CAgSBXF1b3RhGmcKK3R5cGUuZ29vZ2xlYXBpcy5jb20vZ29vZ2xlLnJwYy5RdW90YUZhaWx1cmUSOAo2KjRHZW5lcmF0ZVJlcXVlc3RzUGVyTWludXRlUGVyUHJvamVjdFBlck1vZGVsLUZyZWVUaWVyGjAKKHR5cGUuZ29vZ2xlYXBpcy5jb20vZ29vZ2xlLnJwYy5SZXRyeUluZm8SBAoCCB4"),
            ],
            "",
        ),
        // google.rpc.Status { code: 3, details: [ErrorInfo { reason: API_KEY_INVALID }] }
        33 => http(
            200,
            &[
                ("grpc-status", "3"),
                ("grpc-status-details-bin", "CAMSL0FQSSBrZXkgbm90IHZhbGlkLiBQbGVhc2UgcGFzcyBhIHZhbGlkIEFQSSBrZXkuGk0KKHR5cGUuZ29vZ2xlYXBpcy5jb20vZ29vZ2xlLnJwYy5FcnJvckluZm8SIQoPQVBJX0tFWV9JTlZBTElEEg5nb29nbGVhcGlzLmNvbQ"),
            ],
            "",
        ),
        _ => panic!("docs/classification.md has row {id}, which has no test case"),
    }
}

fn classify(input: Input) -> Result<(), FailureClass> {
    let classifier = Classifier::new();
    match input {
        Input::Http {
            status,
            headers,
            body,
        } => {
            let mut map = HeaderMap::new();
            for (name, value) in headers {
                map.insert(*name, HeaderValue::from_static(value));
            }
            let status = StatusCode::from_u16(status).expect("valid status");
            classifier.classify(status, &map, body.as_bytes())
        }
        Input::Error(err) => Err(classifier.classify_error(err.as_ref())),
        Input::Local => Err(FailureClass::Local {
            status: StatusCode::TOO_MANY_REQUESTS,
            reason: "no usable API key",
        }),
    }
}

/// The four decision columns, rendered the way the doc writes them.
fn columns(result: &Result<(), FailureClass>) -> [String; 4] {
    let class = match result {
        Ok(()) => return ["success", "no", "—", "reset failures"].map(String::from),
        Err(class) => class,
    };
    let action = class.action();
    let retry = match action.retry {
        RetryAdvice::Never => "no",
        RetryAdvice::SameKey => "same key",
        RetryAdvice::AnotherKey => "another key",
        _ => "?",
    };
    let wait = if !class.is_retryable() {
        "—".to_owned()
    } else if class.is_key_scoped() {
        "none".to_owned()
    } else {
        match class.retry_after() {
            Some(d) if d > HONOURED_WAIT => "too long: no retry".to_owned(),
            Some(d) => format!("retry-after {}s", d.as_secs()),
            None => "backoff".to_owned(),
        }
    };
    let key = match action.key {
        KeyEffect::Nothing => "nothing".to_owned(),
        KeyEffect::CountFailure => "count failure".to_owned(),
        KeyEffect::Disable => "disable".to_owned(),
        KeyEffect::CoolDown(Cooldown::For(d)) => format!("cool down {}s", d.as_secs()),
        KeyEffect::CoolDown(Cooldown::UntilDailyReset) => "cool down until daily reset".to_owned(),
        _ => "?".to_owned(),
    };
    [class.name().to_owned(), retry.to_owned(), wait, key]
}

fn doc_rows() -> Vec<(u32, [String; 4])> {
    let doc = include_str!("../docs/classification.md");
    doc.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            let id: u32 = cells.first()?.parse().ok()?;
            assert_eq!(
                cells.len(),
                7,
                "row {id} of docs/classification.md must have 7 columns"
            );
            Some((id, [3, 4, 5, 6].map(|i| cells[i].to_owned())))
        })
        .collect()
}

#[test]
fn every_row_of_the_documented_table_holds() {
    let rows = doc_rows();
    assert!(rows.len() >= 30, "the table lost rows: {}", rows.len());
    let mut failures = Vec::new();
    for (id, documented) in &rows {
        let actual = columns(&classify(case(*id)));
        if &actual != documented {
            failures.push(format!(
                "row {id}: doc says {documented:?}, code says {actual:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn rows_are_numbered_once_and_in_order() {
    let ids: Vec<u32> = doc_rows().into_iter().map(|(id, _)| id).collect();
    let expected: Vec<u32> = (1..=ids.len() as u32).collect();
    assert_eq!(ids, expected);
}

#[test]
fn the_default_cooldown_is_what_the_doc_says() {
    assert_eq!(DEFAULT_RATE_LIMIT_COOLDOWN, Duration::from_secs(60));
}
