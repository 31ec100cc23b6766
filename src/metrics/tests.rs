//! The layer, the sink and the collectors over a real stack (usage, retry, key rotation) and a
//! stand-in upstream.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, ServiceBuilder, ServiceExt};

use super::{MetricsLayer, MetricsRegistry, MetricsSink};
use crate::keys::{ApiKey, KeyPool, KeyRotationLayer};
use crate::retry::RetryLayer;
use crate::store::MemoryStore;
use crate::usage::UsageLayer;

const QUOTA_KEY: &str = "AIzaSyQUOTA7890abcdefghijklmnopqrstuv";
const GOOD_KEY: &str = "AIzaSyGOOD7890abcdefghijklmnopqrstuv";

/// The value of the sample `series` (name and labels as written) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

fn hex(key: &str) -> String {
    ApiKey::new(key).unwrap().id().hex()
}

/// An upstream that refuses `QUOTA_KEY` with a 429 and answers the rest, as a stream when the
/// path asks for one.
async fn upstream(req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let key = req
        .headers()
        .get("x-goog-api-key")
        .map(|v| v.to_str().unwrap().to_owned());
    if key.as_deref() == Some(QUOTA_KEY) {
        let body = r#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}"#;
        return Ok(Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap());
    }
    let usage =
        r#""usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":7,"totalTokenCount":12}"#;
    if req.uri().path().contains("stream") {
        return Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .body(Full::new(Bytes::from(format!("data: {{{usage}}}\n\n"))))
            .unwrap());
    }
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(format!("{{{usage}}}"))))
        .unwrap())
}

fn pool() -> KeyPool {
    KeyPool::builder()
        .keys([QUOTA_KEY, GOOD_KEY])
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_retried_request_is_counted_once_with_its_attempts_keys_and_tokens() {
    let pool = pool();
    let metrics = MetricsRegistry::builder().key_pool(pool.clone()).build();
    let store = MemoryStore::new();
    let service = ServiceBuilder::new()
        .layer(UsageLayer::new(MetricsSink::new(
            metrics.clone(),
            store.clone(),
        )))
        .layer(MetricsLayer::new(metrics.clone()))
        .layer(RetryLayer::new())
        .layer(KeyRotationLayer::new(pool))
        .service_fn(upstream);
    // Round robin: the first request starts on the quota key, gets its 429 and moves on.
    for _ in 0..2 {
        let req = Request::post("/v1beta/models/gemini-2.0-flash:generateContent")
            .body(Full::new(Bytes::from("{}")))
            .unwrap();
        let res = service.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
        res.into_body().collect().await.unwrap();
    }
    let text = metrics.encode();
    let v = |series: &str| value(&text, series);
    assert_eq!(
        v(
            r#"gemini_balance_requests_total{operation="generateContent",flavor="gemini",model="gemini-2.0-flash",status="200"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        v(r#"gemini_balance_upstream_attempts_total{class="ok"}"#),
        Some(2.0)
    );
    assert_eq!(
        v(r#"gemini_balance_upstream_attempts_total{class="rate_limited"}"#),
        Some(1.0)
    );
    assert_eq!(v("gemini_balance_retries_total"), Some(1.0));
    let quota = hex(QUOTA_KEY);
    let good = hex(GOOD_KEY);
    assert_eq!(
        v(&format!(
            r#"gemini_balance_key_requests_total{{key="{quota}"}}"#
        )),
        Some(1.0)
    );
    assert_eq!(
        v(&format!(
            r#"gemini_balance_key_requests_total{{key="{good}"}}"#
        )),
        Some(2.0)
    );
    assert_eq!(
        v(&format!(
            r#"gemini_balance_key_failures_total{{key="{quota}",class="rate_limited"}}"#
        )),
        Some(1.0)
    );
    assert_eq!(
        v(r#"gemini_balance_tokens_total{kind="prompt",model="gemini-2.0-flash"}"#),
        Some(10.0)
    );
    assert_eq!(
        v(r#"gemini_balance_tokens_total{kind="total",model="gemini-2.0-flash"}"#),
        Some(24.0)
    );
    // One observation per request in each histogram; no stream, so no first byte.
    for histogram in [
        "request_duration_seconds",
        "upstream_duration_seconds",
        "overhead_seconds",
    ] {
        assert_eq!(
            v(&format!(
                r#"gemini_balance_{histogram}_count{{flavor="gemini"}}"#
            )),
            Some(2.0),
            "{histogram}"
        );
    }
    assert_eq!(
        v(r#"gemini_balance_stream_first_byte_seconds_count{flavor="gemini"}"#),
        Some(0.0)
    );
    // The quota key cools down for the model.
    assert_eq!(v(r#"gemini_balance_keys{state="active"}"#), Some(1.0));
    assert_eq!(v(r#"gemini_balance_keys{state="cooling"}"#), Some(1.0));
    assert_eq!(
        v(r#"gemini_balance_key_cooldowns{model="gemini-2.0-flash"}"#),
        Some(1.0)
    );
    // No key, nor its fingerprint, in the scrape.
    for key in [QUOTA_KEY, GOOD_KEY] {
        let id = ApiKey::new(key).unwrap().id().clone();
        assert!(!text.contains(key) && !text.contains(id.mask()), "{text}");
    }
    assert_eq!(store.records().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_stream_is_open_until_its_body_ends_and_its_first_byte_is_timed() {
    let metrics = MetricsRegistry::new();
    let service = ServiceBuilder::new()
        .layer(MetricsLayer::new(metrics.clone()))
        .layer(KeyRotationLayer::new(
            KeyPool::builder().keys([GOOD_KEY]).build().unwrap(),
        ))
        .service_fn(upstream);
    let req = Request::post("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse")
        .body(Full::new(Bytes::from("{}")))
        .unwrap();
    let res = service.oneshot(req).await.unwrap();
    assert_eq!(
        value(&metrics.encode(), "gemini_balance_open_streams"),
        Some(1.0)
    );
    res.into_body().collect().await.unwrap();
    let text = metrics.encode();
    assert_eq!(value(&text, "gemini_balance_open_streams"), Some(0.0));
    assert_eq!(
        value(
            &text,
            r#"gemini_balance_stream_first_byte_seconds_count{flavor="gemini"}"#
        ),
        Some(1.0)
    );
    // A stream's duration is the upstream's generation: no overhead observed for it.
    assert_eq!(
        value(
            &text,
            r#"gemini_balance_overhead_seconds_count{flavor="gemini"}"#
        ),
        Some(0.0)
    );
    // Without a usage layer above, the layer's own attempt log is filled.
    assert_eq!(
        value(
            &text,
            r#"gemini_balance_upstream_attempts_total{class="ok"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn no_response_and_a_client_gone_are_still_counted() {
    let metrics = MetricsRegistry::new();
    let failing = ServiceBuilder::new()
        .layer(MetricsLayer::new(metrics.clone()))
        .service(service_fn(|_req: Request<Full<Bytes>>| async {
            Err::<Response<Full<Bytes>>, _>(std::io::Error::other("refused"))
        }));
    let req = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert!(failing.oneshot(req).await.is_err());
    let answering = ServiceBuilder::new()
        .layer(MetricsLayer::new(metrics.clone()))
        .service_fn(upstream);
    let req = Request::post("/v1beta/models/m:generateContent")
        .body(Full::new(Bytes::new()))
        .unwrap();
    // The body is dropped unread: the client went away.
    drop(answering.oneshot(req).await.unwrap());
    let text = metrics.encode();
    assert_eq!(
        value(
            &text,
            r#"gemini_balance_requests_total{operation="chat/completions",flavor="openai",model="none",status="none"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"gemini_balance_requests_total{operation="generateContent",flavor="gemini",model="m",status="200"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn connections_are_open_until_their_guard_drops() {
    let metrics = MetricsRegistry::new();
    let a = metrics.connection_opened();
    let _b = metrics.connection_opened();
    assert_eq!(
        value(&metrics.encode(), "gemini_balance_open_connections"),
        Some(2.0)
    );
    drop(a);
    assert_eq!(
        value(&metrics.encode(), "gemini_balance_open_connections"),
        Some(1.0)
    );
}
