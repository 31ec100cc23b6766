//! The one classifier drives tower-http's `TraceLayer` and tower's own retry, and they agree with
//! the key layer's body-aware verdict.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gemini_balance::classify::{Classifier, FailureClass};
use gemini_balance::keys::{KeyPool, KeyRotationLayer};
use gemini_balance::retry::ClassifiedPolicy;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_http::trace::TraceLayer;

const KEY: &str = "AIzaSyA1234567890abcdefghijklmnopqrstuv";

fn respond(status: u16, body: &'static str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *res.status_mut() = StatusCode::from_u16(status).expect("status");
    res
}

fn post() -> Request<Full<Bytes>> {
    Request::post("/v1beta/models/gemini-2.0-flash:generateContent")
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("request")
}

#[tokio::test]
async fn trace_layer_reports_the_classifier_failure_class() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    let trace = TraceLayer::new(Classifier::new().into_make_classifier()).on_failure(
        move |class: FailureClass, _latency: Duration, _span: &tracing::Span| {
            record.lock().expect("lock").push(class.name().to_owned());
        },
    );
    let upstream =
        service_fn(|_req: Request<Full<Bytes>>| async { Ok::<_, Infallible>(respond(429, "")) });
    let res = ServiceBuilder::new()
        .layer(trace)
        .service(upstream)
        .oneshot(post())
        .await
        .expect("response");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(*seen.lock().expect("lock"), ["rate_limited"]);
}

#[tokio::test]
async fn trace_layer_reuses_the_key_layers_body_aware_verdict() {
    // A 400 is a client error by status alone; the body says the key is invalid. TraceLayer above
    // KeyRotation must report what KeyRotation decided from the body.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = seen.clone();
    let pool = KeyPool::builder().keys([KEY]).build().expect("pool");
    let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(respond(
            400,
            r#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#,
        ))
    });
    let service = ServiceBuilder::new()
        .layer(
            TraceLayer::new(Classifier::new().into_make_classifier()).on_failure(
                move |class: FailureClass, _: Duration, _: &tracing::Span| {
                    record.lock().expect("lock").push(class.name().to_owned());
                },
            ),
        )
        .layer(KeyRotationLayer::new(pool.clone()))
        .service(upstream);
    let res = service.oneshot(post()).await.expect("response");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(*seen.lock().expect("lock"), ["key_rejected"]);
    assert!(matches!(
        pool.snapshots()[0].status,
        gemini_balance::keys::KeyStatus::Disabled(_)
    ));
}

#[tokio::test]
async fn tower_retry_with_the_classified_policy() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    // 503, 503, then 200.
    let flaky = service_fn(move |_req: Request<Full<Bytes>>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            Ok::<_, Infallible>(if n < 2 {
                respond(503, "")
            } else {
                respond(200, "{}")
            })
        }
    });
    let res = ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(ClassifiedPolicy::new(3)))
        .service(flaky)
        .oneshot(post())
        .await
        .expect("response");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // A client error is final: one call.
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let bad_request = service_fn(move |_req: Request<Full<Bytes>>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(respond(404, "")) }
    });
    let res = ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(ClassifiedPolicy::new(3)))
        .service(bad_request)
        .oneshot(post())
        .await
        .expect("response");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn tower_retry_stops_at_the_attempt_limit() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let always_500 = service_fn(move |_req: Request<Full<Bytes>>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(respond(500, "")) }
    });
    let res = ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(ClassifiedPolicy::new(2)))
        .service(always_500)
        .oneshot(post())
        .await
        .expect("response");
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn tower_retry_moves_past_broken_keys_without_spending_attempts() {
    const INVALID: &str = r#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#;
    let keys = [
        "AIzaSyA1234567890abcdefghijklmnopqrstuv",
        "AIzaSyB1234567890abcdefghijklmnopqrstuv",
        "AIzaSyC1234567890abcdefghijklmnopqrstuv",
    ];
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    // The first key is invalid, the second rate limited, the third good.
    let upstream = service_fn(move |req: Request<Full<Bytes>>| {
        counter.fetch_add(1, Ordering::SeqCst);
        let key = req.headers()["x-goog-api-key"].clone();
        async move {
            Ok::<_, Infallible>(if key == keys[0] {
                respond(400, INVALID)
            } else if key == keys[1] {
                respond(429, "")
            } else {
                respond(200, "{}")
            })
        }
    });
    for (failovers, status, expected_calls) in [(10, 200, 3), (0, 400, 1)] {
        calls.store(0, Ordering::SeqCst);
        let pool = KeyPool::builder().keys(keys).build().expect("pool");
        let res = ServiceBuilder::new()
            // One attempt: no real retry allowed.
            .layer(tower::retry::RetryLayer::new(
                ClassifiedPolicy::new(1).max_key_failovers(failovers),
            ))
            .layer(KeyRotationLayer::new(pool))
            .service(upstream.clone())
            .oneshot(post())
            .await
            .expect("response");
        assert_eq!(res.status().as_u16(), status, "{failovers} failovers");
        assert_eq!(calls.load(Ordering::SeqCst), expected_calls);
    }
}
