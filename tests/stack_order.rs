//! The designed layer order, and what a misordered stack does.
//!
//! For each mistake the crate detects, a test builds the wrong stack, shows what breaks (the row
//! of "What breaks when two layers are swapped" in `docs/architecture.md`), and checks that the
//! warning is logged once for two requests; the designed order, built with `GeminiStack`, logs
//! nothing. Each mistake's warning is given once per process, so each is provoked by one test
//! only in this file.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gemini_balance::client::ForwardHeadersLayer;
use gemini_balance::decode::DecodeLayer;
use gemini_balance::filter::ParamFilterLayer;
use gemini_balance::keys::{KeyId, KeyPool, KeyRotationLayer, KeyStatus};
use gemini_balance::openai::{ChatOptions, OpenAiLayer};
use gemini_balance::retry::RetryLayer;
use gemini_balance::stack::GeminiStack;
use gemini_balance::store::MemoryStore;
use gemini_balance::stream::optimizer::StreamOptimizerLayer;
use gemini_balance::stream::pseudo::PseudoStreamLayer;
use gemini_balance::usage::UsageLayer;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

const INVALID: &str = "AIzaSyA1234567890abcdefghijklmnopqrstuv";
const GOOD: &str = "AIzaSyB1234567890abcdefghijklmnopqrstuv";
const QUOTA: &str = "AIzaSyC1234567890abcdefghijklmnopqrstuv";
const MODEL_PATH: &str = "/v1beta/models/gemini-2.0-flash:generateContent";
const STREAM_PATH: &str = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse";
const PROMPT: &str = r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#;
const ANSWER: &str = r#"{"candidates":[{"content":{"parts":[{"text":"hello"}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1,"totalTokenCount":2}}"#;
/// A body the filter refuses (`contents[0].parts` must be an array).
const REFUSED: &str = r#"{"contents":[{"parts":"hi"}]}"#;
const KEY_INVALID: &str = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#;

/// The misorder warnings logged on this thread (the target `gemini_balance::order`).
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    /// Captures this thread's warnings until the guard is dropped.
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let warnings = Warnings::default();
        let guard = tracing::subscriber::set_default(warnings.clone());
        (warnings, guard)
    }

    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn count(&self, needle: &str) -> usize {
        self.all().iter().filter(|w| w.contains(needle)).count()
    }
}

struct Message<'a>(&'a mut String);

impl Visit for Message<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

impl Subscriber for Warnings {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == "gemini_balance::order"
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = String::new();
        event.record(&mut Message(&mut message));
        self.0.lock().unwrap().push(message);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Gemini, answering by the key it is sent: `INVALID` is rejected, `GOOD` answers; the keys
/// seen (`None` for a request without one) are kept.
#[derive(Clone, Default)]
struct Upstream {
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl Upstream {
    fn seen(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().clone()
    }
}

impl Service<Request<Full<Bytes>>> for Upstream {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        let key = req
            .headers()
            .get("x-goog-api-key")
            .map(|v| v.to_str().unwrap().to_owned());
        self.seen.lock().unwrap().push(key.clone());
        let (status, body) = match key.as_deref() {
            Some(GOOD) => (200, ANSWER),
            Some(INVALID) => (400, KEY_INVALID),
            Some(QUOTA) => (
                429,
                r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#,
            ),
            _ => (
                403,
                r#"{"error":{"code":403,"message":"Method doesn't allow unregistered callers.","status":"PERMISSION_DENIED"}}"#,
            ),
        };
        let res = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        std::future::ready(Ok(res))
    }
}

/// The invalid key first (round robin starts there), then the good one.
fn pool() -> KeyPool {
    KeyPool::builder().keys([INVALID, GOOD]).build().unwrap()
}

fn post(path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// Sends `req` through `service`; the status and the whole body.
async fn send<S, R, B>(service: &S, req: Request<R>) -> (StatusCode, String)
where
    S: Service<Request<R>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let res = service.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_designed_order_serves_and_logs_no_warning() {
    let (warnings, _guard) = Warnings::capture();
    let store = MemoryStore::new();
    let upstream = Upstream::default();
    let stack = GeminiStack::new()
        .pseudo_stream(PseudoStreamLayer::new())
        .usage(UsageLayer::new(store.clone()))
        .filter(ParamFilterLayer::new())
        .forward_headers(ForwardHeadersLayer::default())
        .retry(RetryLayer::new())
        .keys(pool())
        .layer(upstream.clone());

    let (status, body) = send(&stack, post(MODEL_PATH, PROMPT)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("hello"));
    let (status, body) = send(&stack, post(STREAM_PATH, PROMPT)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("hello") && !body.contains("error"), "{body}");
    let (status, _) = send(&stack, post(MODEL_PATH, REFUSED)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // One record per request, the invalid key's failure inside the first one.
    let records = store.records();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0].attempt_log.len(), 2);
    assert_eq!(
        upstream.seen(),
        [Some(INVALID.into()), Some(GOOD.into()), Some(GOOD.into())]
    );
    assert_eq!(warnings.all(), Vec::<String>::new());
}

#[tokio::test]
async fn every_slot_filled_serves_an_openai_chat_with_retries_below_the_conversion() {
    let (warnings, _guard) = Warnings::capture();
    let store = MemoryStore::new();
    let upstream = Upstream::default();
    let stack = GeminiStack::new()
        .optimizer(StreamOptimizerLayer::default())
        .pseudo_stream(PseudoStreamLayer::new())
        .usage(UsageLayer::new(store.clone()))
        .filter(ParamFilterLayer::new())
        .openai(OpenAiLayer::new(ChatOptions::default()))
        .forward_headers(ForwardHeadersLayer::default())
        .retry(RetryLayer::new())
        .key_rotation(KeyRotationLayer::new(pool()))
        .decode(DecodeLayer::new())
        .layer(upstream.clone());
    let chat = r#"{"model":"gemini-2.0-flash","messages":[{"role":"user","content":"hi"}]}"#;
    let (status, body) = send(&stack, post("/v1/chat/completions", chat)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("chat.completion") && body.contains("hello"),
        "{body}"
    );
    // The converted request was retried on the next key.
    assert_eq!(upstream.seen(), [Some(INVALID.into()), Some(GOOD.into())]);
    assert_eq!(store.records().len(), 1);
    assert_eq!(warnings.all(), Vec::<String>::new());
}

#[tokio::test]
async fn retry_inside_key_rotation_sends_the_bad_keys_error_to_the_client() {
    let (warnings, _guard) = Warnings::capture();
    let upstream = Upstream::default();
    let wrong = ServiceBuilder::new()
        .layer(KeyRotationLayer::new(pool()))
        .layer(RetryLayer::new())
        .service(upstream.clone());
    let (status, _) = send(&wrong, post(MODEL_PATH, PROMPT)).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the good key is never tried"
    );
    assert!(upstream
        .seen()
        .iter()
        .all(|k| k.as_deref() == Some(INVALID)));

    // A rate-limited key is sent on every attempt.
    let upstream = Upstream::default();
    let pool = KeyPool::builder().keys([QUOTA, GOOD]).build().unwrap();
    let wrong = ServiceBuilder::new()
        .layer(KeyRotationLayer::new(pool))
        .layer(RetryLayer::new().without_budget())
        .service(upstream.clone());
    let (status, _) = send(&wrong, post(MODEL_PATH, PROMPT)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(upstream.seen(), vec![Some(QUOTA.to_owned()); 3]);
    assert_eq!(warnings.count("RetryLayer is inside KeyRotationLayer"), 1);
    assert_eq!(warnings.all().len(), 1);
}

#[tokio::test]
async fn usage_inside_retry_writes_one_record_per_attempt() {
    let (warnings, _guard) = Warnings::capture();
    let store = MemoryStore::new();
    let wrong = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(UsageLayer::new(store.clone()))
        .layer(KeyRotationLayer::new(pool()))
        .service(Upstream::default());
    let (status, _) = send(&wrong, post(MODEL_PATH, PROMPT)).await;
    assert_eq!(status, StatusCode::OK);
    let records = store.records();
    assert_eq!(records.len(), 2, "one request, two records");
    assert_eq!((records[0].status, records[1].status), (400, 200));
    send(&wrong, post(MODEL_PATH, PROMPT)).await;
    assert_eq!(warnings.count("UsageLayer is inside RetryLayer"), 1);
    assert_eq!(warnings.all().len(), 1);
}

#[tokio::test]
async fn usage_inside_key_rotation_misses_the_attempts() {
    let (warnings, _guard) = Warnings::capture();
    let store = MemoryStore::new();
    let wrong = ServiceBuilder::new()
        .layer(KeyRotationLayer::new(pool()))
        .layer(UsageLayer::new(store.clone()))
        .service(Upstream::default());
    send(&wrong, post(MODEL_PATH, PROMPT)).await;
    let records = store.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key, None, "the record does not know its key");
    assert!(records[0].attempt_log.is_empty());
    send(&wrong, post(MODEL_PATH, PROMPT)).await;
    assert_eq!(warnings.count("UsageLayer is inside KeyRotationLayer"), 1);
    assert_eq!(warnings.all().len(), 1);
}

#[tokio::test]
async fn pseudo_stream_inside_retry_hides_the_failure_from_the_retry_loop() {
    let (warnings, _guard) = Warnings::capture();
    let upstream = Upstream::default();
    let wrong = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(PseudoStreamLayer::new())
        .layer(KeyRotationLayer::new(pool()))
        .service(upstream.clone());
    let (status, body) = send(&wrong, post(STREAM_PATH, PROMPT)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("error") && !body.contains("hello"),
        "the invalid key's error is the stream's end: {body}"
    );
    assert_eq!(upstream.seen(), [Some(INVALID.into())], "never retried");
    send(&wrong, post(STREAM_PATH, PROMPT)).await;
    assert_eq!(warnings.count("PseudoStreamLayer is inside RetryLayer"), 1);
    assert_eq!(warnings.all().len(), 1);
}

#[tokio::test]
async fn pseudo_stream_inside_key_rotation_reports_the_invalid_key_successful() {
    let (warnings, _guard) = Warnings::capture();
    let pool = pool();
    let wrong = ServiceBuilder::new()
        .layer(KeyRotationLayer::new(pool.clone()))
        .layer(PseudoStreamLayer::new())
        .service(Upstream::default());
    let (status, body) = send(&wrong, post(STREAM_PATH, PROMPT)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("error"), "{body}");
    let invalid = pool.snapshot(&KeyId::of(INVALID)).unwrap();
    assert_eq!(invalid.status, KeyStatus::Active, "never disabled");
    assert_eq!(invalid.successes, 1);
    send(&wrong, post(STREAM_PATH, PROMPT)).await;
    assert_eq!(
        warnings.count("PseudoStreamLayer is inside KeyRotationLayer"),
        1
    );
    assert_eq!(warnings.all().len(), 1);
}

#[tokio::test]
async fn param_filter_inside_retry_is_reported() {
    let (warnings, _guard) = Warnings::capture();
    let upstream = Upstream::default();
    let wrong = ServiceBuilder::new()
        .layer(RetryLayer::new())
        .layer(ParamFilterLayer::new())
        .layer(KeyRotationLayer::new(pool()))
        .service(upstream.clone());
    let (status, _) = send(&wrong, post(MODEL_PATH, REFUSED)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(upstream.seen().is_empty());
    // Served (the filter runs once per attempt), and reported.
    assert_eq!(
        send(&wrong, post(MODEL_PATH, PROMPT)).await.0,
        StatusCode::OK
    );
    assert_eq!(warnings.count("ParamFilterLayer is inside RetryLayer"), 1);
    assert_eq!(warnings.all().len(), 1);
}

#[tokio::test]
async fn param_filter_inside_key_rotation_answers_no_key_instead_of_400() {
    let (warnings, _guard) = Warnings::capture();
    let bad_request = || post(MODEL_PATH, REFUSED);
    let pool = KeyPool::builder().keys([GOOD]).build().unwrap();
    pool.disable(&KeyId::of(GOOD));
    let right = GeminiStack::new()
        .filter(ParamFilterLayer::new())
        .key_rotation(KeyRotationLayer::new(pool.clone()))
        .layer(Upstream::default());
    assert_eq!(send(&right, bad_request()).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(warnings.all().len(), 0);

    let wrong = ServiceBuilder::new()
        .layer(KeyRotationLayer::new(pool.clone()))
        .layer(ParamFilterLayer::new())
        .service(Upstream::default());
    let (status, _) = send(&wrong, bad_request()).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the bad field is never named"
    );
    pool.reset_all();
    send(&wrong, bad_request()).await;
    send(&wrong, bad_request()).await;
    assert_eq!(
        warnings.count("ParamFilterLayer is inside KeyRotationLayer"),
        1
    );
    assert_eq!(warnings.all().len(), 1);
}

#[tokio::test]
async fn forward_headers_inside_key_rotation_removes_the_pool_key() {
    let (warnings, _guard) = Warnings::capture();
    let upstream = Upstream::default();
    let wrong = ServiceBuilder::new()
        .layer(KeyRotationLayer::new(pool()))
        .layer(ForwardHeadersLayer::default())
        .service(upstream.clone());
    let (status, _) = send(&wrong, post(MODEL_PATH, PROMPT)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(upstream.seen(), [None], "sent without a key");
    send(&wrong, post(MODEL_PATH, PROMPT)).await;
    assert_eq!(
        warnings.count("ForwardHeadersLayer is inside KeyRotationLayer"),
        1
    );
    assert_eq!(warnings.all().len(), 1);
}

// `Router::route_layer`, not `Router::layer`: only the API routes go through the stack.

/// An axum app as the docs build it: the stack around the API route with `route_layer`.
fn app(pool: &KeyPool, store: &MemoryStore, route_layer: bool) -> axum::Router {
    let stack = GeminiStack::new()
        .usage(UsageLayer::new(store.clone()))
        .retry(RetryLayer::new())
        .keys(pool.clone());
    let router = axum::Router::new().route(
        "/v1beta/models/{action}",
        axum::routing::post(|| async { "the handler" }),
    );
    if route_layer {
        router.route_layer(stack)
    } else {
        router.layer(stack)
    }
}

fn requests(pool: &KeyPool) -> u64 {
    pool.snapshots().iter().map(|k| k.requests).sum()
}

#[tokio::test]
async fn an_unknown_path_takes_no_key_and_writes_no_record_under_route_layer() {
    let pool = KeyPool::builder().keys([GOOD]).build().unwrap();
    let store = MemoryStore::new();
    let routes = app(&pool, &store, true);
    let scan = || {
        Request::get("/wp-login.php")
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let (status, _) = send(&routes, scan()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(requests(&pool), 0, "no key leased");
    assert!(store.records().is_empty(), "no usage record");

    // The API route still goes through the stack.
    let call = Request::post(MODEL_PATH)
        .body(axum::body::Body::from(PROMPT))
        .unwrap();
    let (status, body) = send(&routes, call).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "the handler"));
    assert_eq!(requests(&pool), 1);
    assert_eq!(store.records().len(), 1);

    // `Router::layer` also wraps the fallback: the scanner's 404 takes a key and a record.
    let pool = KeyPool::builder().keys([GOOD]).build().unwrap();
    let store = MemoryStore::new();
    let (status, _) = send(&app(&pool, &store, false), scan()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(requests(&pool), 1, "Router::layer leases a key for a 404");
    assert_eq!(store.records().len(), 1, "and writes a usage record");
}
