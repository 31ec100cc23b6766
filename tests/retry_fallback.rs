//! When no key is left to retry with, the client sees the upstream's last answer, not ours;
//! a final 429 or 503 says when to come back.

use std::convert::Infallible;

use bytes::Bytes;
use gemini_balance::keys::{KeyPool, KeyRotationLayer};
use gemini_balance::retry::{RetryLayer, ATTEMPTS_HEADER};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, ServiceBuilder, ServiceExt};

const INVALID: &str = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
const QUOTA: &str = r#"{"error":{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"30s"}]}}"#;

fn keys(n: usize) -> KeyPool {
    KeyPool::builder()
        .keys((0..n).map(|i| format!("AIzaSy{i:033}")))
        .build()
        .expect("pool")
}

fn post() -> Request<Full<Bytes>> {
    Request::post("/v1beta/models/gemini-2.0-flash:generateContent")
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("request")
}

fn answering(
    status: u16,
    body: &'static str,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |_req: Request<Full<Bytes>>| async move {
        let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *res.status_mut() = StatusCode::from_u16(status).expect("status");
        Ok::<_, Infallible>(res)
    })
}

#[tokio::test]
async fn every_key_invalid_gives_the_upstream_400() {
    let pool = keys(2);
    let service = ServiceBuilder::new()
        .layer(RetryLayer::new().max_attempts(3))
        .layer(KeyRotationLayer::new(pool.clone()))
        .service(answering(400, INVALID));
    let res = service.oneshot(post()).await.expect("response");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.headers()[ATTEMPTS_HEADER], "2");
    let body = res.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, INVALID.as_bytes());
    assert_eq!(pool.keys_to_probe().len(), 2, "both keys disabled");
}

#[tokio::test]
async fn the_only_key_rate_limited_gives_the_upstream_429_with_retry_after() {
    let pool = keys(1);
    let service = ServiceBuilder::new()
        .layer(RetryLayer::new().max_attempts(3))
        .layer(KeyRotationLayer::new(pool.clone()))
        .service(answering(429, QUOTA));
    let res = service.clone().oneshot(post()).await.expect("response");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()[ATTEMPTS_HEADER], "1");
    let retry_after: u64 = res.headers()[http::header::RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((29..=30).contains(&retry_after), "{retry_after}");
    let body = res.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, QUOTA.as_bytes());

    // The next request does not reach the upstream at all: our own 429, in Gemini's format.
    let res = service.oneshot(post()).await.expect("response");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()[ATTEMPTS_HEADER], "0");
    let body: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.expect("body").to_bytes())
            .expect("json");
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
}

const OVERLOADED_FOR_A_MINUTE: &str = r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"59.2s"}]}}"#;

#[tokio::test]
async fn a_503_asking_for_a_long_wait_in_its_body_says_it_in_retry_after() {
    let pool = keys(2);
    let service = ServiceBuilder::new()
        .layer(RetryLayer::new().max_attempts(3))
        .layer(KeyRotationLayer::new(pool))
        .service(answering(503, OVERLOADED_FOR_A_MINUTE));
    let res = service.oneshot(post()).await.expect("response");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()[ATTEMPTS_HEADER], "1", "too long to wait for");
    assert_eq!(res.headers()[http::header::RETRY_AFTER], "60", "rounded up");
    let body = res.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, OVERLOADED_FOR_A_MINUTE.as_bytes());
}
