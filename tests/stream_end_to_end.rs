//! The shaping layers in the real stack over loopback: a reqwest client calls an axum server
//! whose fallback is `StreamOptimizer` → `PseudoStream` → `Usage` → `ParamFilter` → `Retry` →
//! `KeyRotation` → `ReqwestService`, which calls the mock Gemini of `tests/support`.
#![cfg(feature = "reqwest")]

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::Router;
use gemini_balance::client::ReqwestService;
use gemini_balance::filter::ParamFilterLayer;
use gemini_balance::keys::{KeyPool, KeyRotationLayer};
use gemini_balance::retry::RetryLayer;
use gemini_balance::sse::{decode_all, SseEvent};
use gemini_balance::store::MemoryStore;
use gemini_balance::stream::optimizer::{OptimizerParams, StreamOptimizerLayer};
use gemini_balance::stream::pseudo::PseudoStreamLayer;
use gemini_balance::usage::UsageLayer;
use http::{header, HeaderMap, Request, StatusCode};
use serde_json::{json, Value};
use support::{replies, test_keys, Fault, MockGemini};
use tokio::task::JoinHandle;
use tower::ServiceBuilder;

const FLASH: &str = "gemini-2.0-flash";

struct Served {
    url: String,
    task: JoinHandle<()>,
    mock: MockGemini,
    keys: Vec<String>,
    usage: MemoryStore,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(pseudo: PseudoStreamLayer, optimizer: StreamOptimizerLayer) -> Served {
    let mock = MockGemini::start().await;
    let keys = test_keys(2);
    let pool = KeyPool::builder().keys(&keys).build().unwrap();
    let client = support::client_builder().build().unwrap();
    let usage = MemoryStore::new();
    let stack = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|err: reqwest::Error| async move {
            (StatusCode::BAD_GATEWAY, err.to_string())
        }))
        .map_request(|req: Request<axum::body::Body>| {
            req.map(|body| reqwest::Body::wrap_stream(body.into_data_stream()))
        })
        .layer(optimizer)
        .layer(pseudo)
        .layer(UsageLayer::new(usage.clone()))
        .layer(ParamFilterLayer::new())
        .layer(
            RetryLayer::new()
                .base_delay(Duration::from_millis(1))
                .max_delay(Duration::from_millis(10)),
        )
        .layer(KeyRotationLayer::new(pool))
        .service(
            ReqwestService::new(client)
                .base_url(&mock.base_url())
                .unwrap(),
        );
    let router = Router::new().fallback_service(stack);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Served {
        url,
        task,
        mock,
        keys,
        usage,
    }
}

async fn stream(served: &Served, body: &Value) -> (StatusCode, HeaderMap, Vec<u8>) {
    let res = support::client_builder()
        .build()
        .unwrap()
        .post(format!(
            "{}/v1beta/models/{FLASH}:streamGenerateContent?alt=sse",
            served.url
        ))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    (status, headers, res.bytes().await.unwrap().to_vec())
}

fn text_of(events: &[SseEvent]) -> String {
    events
        .iter()
        .map(|e| e.json::<Value>().unwrap())
        .filter_map(|c| {
            c["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn a_pseudo_stream_rides_out_a_rate_limited_key_and_filtered_parameters() {
    let served = serve(
        PseudoStreamLayer::new().keep_alive_interval(Duration::from_millis(150)),
        StreamOptimizerLayer::default(),
    )
    .await;
    served
        .mock
        .set_fault(&served.keys[0], Fault::rate_limited("30s"));
    served
        .mock
        .set_fault(&served.keys[1], Fault::Slow(Duration::from_millis(500)));
    let request = json!({
        "contents": [{"role": "user", "parts": [{"text": "hello world"}]}],
        "generationConfig": {"temperature": null, "maxOutputTokens": 64.0}
    });
    let (status, headers, bytes) = stream(&served, &request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");

    // Keep-alives (blank lines) while the second key's slow answer was awaited, then the answer.
    let blank_lines = bytes.split(|b| *b == b'd').next().unwrap_or_default();
    assert!(
        blank_lines.len() >= 4 && blank_lines.chunks(2).all(|l| l == b"\r\n"),
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );
    let events = decode_all(&bytes);
    assert_eq!(events.len(), 1);
    assert_eq!(text_of(&events), replies::answer_text("hello world"));

    // The upstream was asked the non-streaming question, first with the rate-limited key,
    // then with the other; both times with the filtered body.
    assert_eq!(served.mock.status_count(&served.keys[0], 429), 1);
    assert_eq!(served.mock.status_count(&served.keys[1], 200), 1);
    let last = served.mock.last_request().unwrap();
    assert_eq!(
        last.uri.path(),
        "/v1beta/models/gemini-2.0-flash:generateContent"
    );
    assert_eq!(last.uri.query(), None);
    let filtered = json!({
        "contents": [{"role": "user", "parts": [{"text": "hello world"}]}],
        "generationConfig": {"maxOutputTokens": 64}
    });
    assert_eq!(last.body_len, serde_json::to_vec(&filtered).unwrap().len());

    // Usage recording, below the pseudo stream, saw the non-streaming answer and its tokens.
    let records = served.usage.records();
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert!(record.success);
    assert!(
        record.streamed,
        "the client got a stream, though the upstream answered JSON"
    );
    assert_eq!(record.attempts, 2);
    assert_eq!(record.attempt_log.len(), 2);
    assert_eq!(record.tokens.prompt, replies::count_tokens("hello world"));
    assert_eq!(record.tokens.candidates, replies::CANDIDATE_TOKENS);
}

#[tokio::test]
async fn an_invalid_streaming_request_gets_an_error_event_and_the_upstream_nothing() {
    let served = serve(PseudoStreamLayer::new(), StreamOptimizerLayer::default()).await;
    let (status, _, bytes) = stream(
        &served,
        &json!({"contents": [], "generationConfig": {"topK": "many"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the stream had started");
    let events = decode_all(&bytes);
    assert_eq!(events.len(), 1);
    let error: Value = events[0].json().unwrap();
    assert_eq!(error["error"]["code"], 400);
    assert_eq!(error["error"]["status"], "INVALID_ARGUMENT");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`contents` must not be empty"),
        "{message}"
    );
    assert!(
        message.contains("`generationConfig.topK` must be an integer"),
        "{message}"
    );
    assert_eq!(served.mock.total(), 0);
}

#[tokio::test]
async fn the_optimizer_smooths_a_real_upstream_stream() {
    let prompt = json!({"contents": [{"parts": [{"text": "hello world"}]}]});
    let expected = replies::answer_text("hello world");

    // Without the optimizer: the mock's own events, passed through.
    let plain = serve(
        PseudoStreamLayer::new().enabled(false),
        StreamOptimizerLayer::default(),
    )
    .await;
    let (_, _, bytes) = stream(&plain, &prompt).await;
    let events = decode_all(&bytes);
    assert_eq!(events.len(), replies::STREAM_EVENTS);
    assert_eq!(text_of(&events), expected);

    // With it: one character per event, the usage only on the very last one.
    let optimized = serve(
        PseudoStreamLayer::new().enabled(false),
        StreamOptimizerLayer::new(OptimizerParams::enabled()),
    )
    .await;
    let started = std::time::Instant::now();
    let (_, _, bytes) = stream(&optimized, &prompt).await;
    let events = decode_all(&bytes);
    assert_eq!(events.len(), expected.chars().count());
    assert_eq!(text_of(&events), expected);
    let chunks: Vec<Value> = events.iter().map(|e| e.json().unwrap()).collect();
    let with_usage: Vec<usize> = (0..chunks.len())
        .filter(|i| chunks[*i].get("usageMetadata").is_some())
        .collect();
    assert_eq!(with_usage, [chunks.len() - 1]);
    // Each of the 3 upstream events had one delay fewer than characters: 14 delays of 24 ms.
    assert!(started.elapsed() >= Duration::from_millis(14 * 24));
    // The real upstream call was a real stream.
    let last = optimized.mock.last_request().unwrap();
    assert_eq!(last.uri.query(), Some("alt=sse"));
}
