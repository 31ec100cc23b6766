//! The usage record is what the client saw, wherever `UsageLayer` sits around a layer that
//! answers the client itself: above `PseudoStreamLayer` it reads the client's event stream;
//! below it (the documented order) the pseudo stream hands it the outcome the client got. The
//! same for `OpenAiLayer`, which answers a local `502` when it cannot convert the answer. Both
//! placements give the same record for the same exchange, over loopback HTTP against the mock
//! Gemini.

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::Router;
use gemini_balance::client::ReqwestService;
use gemini_balance::keys::{KeyPool, KeyRotationLayer};
use gemini_balance::openai::{ChatOptions, OpenAiLayer};
use gemini_balance::retry::RetryLayer;
use gemini_balance::sse::decode_all;
use gemini_balance::store::MemoryStore;
use gemini_balance::stream::pseudo::PseudoStreamLayer;
use gemini_balance::usage::{Completion, RequestRecord, UsageLayer};
use http::{Request, StatusCode};
use serde_json::Value;
use support::{prompt_body, test_key, test_keys, Fault, MockGemini};
use tower::ServiceBuilder;

const FLASH: &str = "gemini-2.0-flash";
const STREAM: &str = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Placement {
    /// `Usage → PseudoStream → …`: the record reads the client's stream.
    Above,
    /// `PseudoStream → Usage → …` (the documented order): the pseudo stream settles the record.
    Below,
}

/// What can go wrong after the pseudo stream's `200`.
#[derive(Clone, Copy, Debug)]
enum Exchange {
    /// Served normally.
    Ok,
    /// The upstream answers `500` (every attempt).
    UpstreamError,
    /// The answer breaks off half-way through its body.
    CutOff,
    /// The answer is larger than the pseudo stream holds.
    TooLarge,
    /// The answer is not one JSON object: a handler below that forwarded the path axum routed
    /// (`:streamGenerateContent` without `alt=sse`) gets a JSON array.
    NotAnObject,
    /// The upstream cannot be reached.
    Unreachable,
    /// The upstream takes longer than the client waits: the client reads the `200` and leaves.
    ClientLeaves,
}

/// Serves one request through the stack with Usage at `placement`; returns the client's
/// events and the record.
async fn exchange(placement: Placement, exchange: Exchange) -> (Vec<Value>, RequestRecord) {
    let mock = MockGemini::start().await;
    let base = match exchange {
        Exchange::Unreachable => {
            // A port nobody listens on.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            drop(listener);
            url
        }
        _ => mock.base_url(),
    };
    match exchange {
        Exchange::UpstreamError => mock.set_fault(&test_key(1), Fault::ServerError),
        Exchange::CutOff => mock.set_fault(&test_key(1), Fault::BreaksOff),
        Exchange::ClientLeaves => {
            mock.set_fault(&test_key(1), Fault::Slow(Duration::from_secs(600)))
        }
        _ => {}
    }
    let store = MemoryStore::new();
    let pool = KeyPool::builder().keys(test_keys(1)).build().unwrap();
    let upstream = ReqwestService::new(support::client_builder().build().unwrap())
        .base_url(&base)
        .unwrap();
    let pseudo = match exchange {
        Exchange::TooLarge => PseudoStreamLayer::new().max_answer_bytes(64),
        // Keep-alives show the server that the client left.
        Exchange::ClientLeaves => {
            PseudoStreamLayer::new().keep_alive_interval(Duration::from_millis(100))
        }
        _ => PseudoStreamLayer::new(),
    };
    let usage = UsageLayer::new(store.clone());
    let not_an_object = matches!(exchange, Exchange::NotAnObject);
    let inner = ServiceBuilder::new()
        .map_request(move |mut req: Request<reqwest::Body>| {
            if not_an_object {
                let path = req
                    .uri()
                    .path()
                    .replace(":generateContent", ":streamGenerateContent");
                *req.uri_mut() = path.parse().unwrap();
            }
            req
        })
        .layer(
            RetryLayer::new()
                .base_delay(Duration::from_millis(1))
                .max_attempts(2),
        )
        .layer(KeyRotationLayer::new(pool))
        .service(upstream);
    let front = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|err: reqwest::Error| async move {
            (StatusCode::BAD_GATEWAY, err.to_string())
        }))
        .map_request(|req: Request<axum::body::Body>| {
            req.map(|body| reqwest::Body::wrap_stream(body.into_data_stream()))
        });
    let router = match placement {
        Placement::Above => {
            Router::new().fallback_service(front.layer(usage).layer(pseudo).service(inner))
        }
        Placement::Below => {
            Router::new().fallback_service(front.layer(pseudo).layer(usage).service(inner))
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let res = support::client_builder()
        .build()
        .unwrap()
        .post(format!("{url}{STREAM}"))
        .header("content-type", "application/json")
        .body(prompt_body("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{placement:?} {exchange:?}");
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    if matches!(exchange, Exchange::ClientLeaves) {
        drop(res);
        let record = one_record(&store).await;
        server.abort();
        return (Vec::new(), record);
    }
    let events = decode_all(&res.bytes().await.unwrap())
        .iter()
        .map(|e| e.json::<Value>().unwrap())
        .collect();
    let record = one_record(&store).await;
    server.abort();
    (events, record)
}

/// Records are written when the server finishes the body, just after the client has it.
async fn one_record(store: &MemoryStore) -> RequestRecord {
    for _ in 0..200 {
        let records = store.records();
        if !records.is_empty() {
            // A second record (a double commit) would come right after the first.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let records = store.records();
            assert_eq!(records.len(), 1, "{records:?}");
            return records[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no usage record");
}

/// The parts of a record that do not depend on timing or ids.
fn essentials(r: &RequestRecord) -> Value {
    serde_json::json!({
        "route": r.route,
        "protocol": r.protocol.as_str(),
        "model": r.model,
        "key": r.key.as_ref().map(|k| k.to_string()),
        "status": r.status,
        "success": r.success,
        "completion": r.completion.as_str(),
        "streamed": r.streamed,
        "attempts": r.attempts,
        "tokens": [r.tokens.prompt, r.tokens.candidates, r.tokens.total],
        "attempt_statuses": r.attempt_log.iter().map(|a| a.status).collect::<Vec<_>>(),
    })
}

fn is_error_event(events: &[Value]) -> bool {
    events.last().is_some_and(|e| e.get("error").is_some())
}

#[tokio::test]
async fn a_served_pseudo_stream_is_recorded_alike_in_both_placements() {
    let (events, above) = exchange(Placement::Above, Exchange::Ok).await;
    assert!(!is_error_event(&events), "{events:?}");
    let (_, below) = exchange(Placement::Below, Exchange::Ok).await;
    assert_eq!(essentials(&below), essentials(&above));
    assert!(below.success && below.streamed);
    assert_eq!(below.completion, Completion::Complete);
    assert!(below.tokens.total > 0);
    assert_eq!(below.route, STREAM.split('?').next().unwrap());
    assert_eq!(below.model.as_deref(), Some(FLASH));
}

#[tokio::test]
async fn an_error_event_after_the_200_is_a_failure_in_both_placements() {
    for case in [
        Exchange::UpstreamError,
        Exchange::CutOff,
        Exchange::TooLarge,
        Exchange::Unreachable,
    ] {
        let (events, above) = exchange(Placement::Above, case).await;
        assert!(is_error_event(&events), "{case:?}: {events:?}");
        let (events, below) = exchange(Placement::Below, case).await;
        assert!(is_error_event(&events), "{case:?}: {events:?}");
        assert_eq!(essentials(&below), essentials(&above), "{case:?}");
        // What the client saw: a `200`, then an error event.
        assert_eq!(below.status, 200, "{case:?}");
        assert!(!below.success, "{case:?}");
        assert_eq!(below.completion, Completion::ErrorEvent, "{case:?}");
        assert!(below.streamed, "{case:?}");
    }
}

#[tokio::test]
async fn a_client_that_leaves_during_the_wait_is_recorded_alike_in_both_placements() {
    let (_, above) = exchange(Placement::Above, Exchange::ClientLeaves).await;
    let (_, below) = exchange(Placement::Below, Exchange::ClientLeaves).await;
    assert_eq!(essentials(&below), essentials(&above));
    assert_eq!(below.status, 200);
    assert!(!below.success);
    assert_eq!(below.completion, Completion::ClientGone);
}

#[tokio::test]
async fn an_answer_that_is_not_an_object_is_a_failure_below_the_pseudo_stream() {
    // The trap of a handler that forwards axum's `Path`: the upstream streams a JSON array with
    // tokens in it, the client gets an error event. The record must not say success.
    let (events, below) = exchange(Placement::Below, Exchange::NotAnObject).await;
    assert!(is_error_event(&events), "{events:?}");
    assert!(!below.success, "{below:?}");
    assert_eq!(below.status, 200);
    assert_eq!(below.completion, Completion::ErrorEvent);
    let (_, above) = exchange(Placement::Above, Exchange::NotAnObject).await;
    assert_eq!(essentials(&below), essentials(&above));
    // The client's events carried no tokens.
    assert!(below.tokens.is_empty());
}

/// A non-streamed chat through `OpenAiLayer` with Usage at `placement`, the upstream doing
/// `fault`; returns the client's status and the record.
async fn openai_exchange(placement: Placement, fault: Fault) -> (StatusCode, RequestRecord) {
    let mock = MockGemini::start().await;
    mock.set_fault(&test_key(1), fault);
    let store = MemoryStore::new();
    let pool = KeyPool::builder().keys(test_keys(1)).build().unwrap();
    let upstream = ReqwestService::new(support::client_builder().build().unwrap())
        .base_url(&mock.base_url())
        .unwrap();
    let inner = ServiceBuilder::new()
        .layer(RetryLayer::new().base_delay(Duration::from_millis(1)))
        .layer(KeyRotationLayer::new(pool))
        .service(upstream);
    let front = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|err: reqwest::Error| async move {
            (StatusCode::BAD_GATEWAY, err.to_string())
        }))
        .map_request(|req: Request<axum::body::Body>| {
            req.map(|body| reqwest::Body::wrap_stream(body.into_data_stream()))
        });
    let usage = UsageLayer::new(store.clone());
    let openai = OpenAiLayer::new(ChatOptions::default());
    let router = match placement {
        Placement::Above => {
            Router::new().fallback_service(front.layer(usage).layer(openai).service(inner))
        }
        Placement::Below => {
            Router::new().fallback_service(front.layer(openai).layer(usage).service(inner))
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let body = serde_json::json!({
        "model": FLASH,
        "messages": [{"role": "user", "content": "hello"}],
    });
    let res = support::client_builder()
        .build()
        .unwrap()
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = res.status();
    res.bytes().await.unwrap();
    let record = one_record(&store).await;
    server.abort();
    (status, record)
}

#[tokio::test]
async fn a_converted_chat_is_recorded_alike_in_both_placements() {
    let (status, above) = openai_exchange(Placement::Above, Fault::Ok).await;
    assert_eq!(status, 200);
    let (_, below) = openai_exchange(Placement::Below, Fault::Ok).await;
    assert_eq!(essentials(&below), essentials(&above));
    assert!(below.success);
    assert_eq!(below.route, "/v1/chat/completions");
    assert!(below.tokens.total > 0);
}

#[tokio::test]
async fn an_answer_the_conversion_could_not_read_is_the_clients_502_in_both_placements() {
    // The answer breaks off half-way: the conversion answers 502 in its place.
    let (status, above) = openai_exchange(Placement::Above, Fault::BreaksOff).await;
    assert_eq!(status, 502);
    let (status, below) = openai_exchange(Placement::Below, Fault::BreaksOff).await;
    assert_eq!(status, 502);
    assert_eq!(essentials(&below), essentials(&above));
    assert_eq!(below.status, 502);
    assert!(!below.success);
    assert_eq!(below.completion, Completion::Complete);
}
