//! `client::Upstream` under an axum route, with `GatewayErrorsLayer` on top: the library's
//! layers serve `Router::route_service` as they are (no `HandleErrorLayer`), a working upstream
//! answers through them (compressed answers decoded), and an unreachable or stalled one becomes
//! a 502 or 504 in the API's own error format.
//!
//! ```text
//! reqwest ─▶ axum Router ─▶ GatewayErrors ─▶ Retry ─▶ KeyRotation ─▶ Decode ─▶ Upstream ─▶ upstream
//! ```

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use gemini_balance::client::{upstream::Upstream, GatewayErrorsLayer};
use gemini_balance::decode::DecodeLayer;
use gemini_balance::keys::{KeyPool, KeyRotationLayer};
use gemini_balance::retry::RetryLayer;
use serde_json::Value;
use support::{prompt_body, test_key, Compression, Encoding, MockGemini};
use tower::ServiceBuilder;

/// The app a user writes: the library's stack as the service of the API routes.
async fn serve(base_url: &str, pool: &KeyPool, first_byte: Duration) -> SocketAddr {
    let upstream = Upstream::builder(base_url)
        .first_byte_timeout(first_byte)
        .build()
        .unwrap();
    let stack = ServiceBuilder::new()
        .layer(GatewayErrorsLayer::new())
        .layer(
            RetryLayer::new()
                .max_attempts(2)
                .base_delay(Duration::from_millis(1))
                .max_delay(Duration::from_millis(5)),
        )
        .layer(KeyRotationLayer::new(pool.clone()))
        .layer(DecodeLayer::new())
        .service(upstream);
    let app = Router::new().route_service("/v1beta/{*rest}", stack);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Posts `body` to `path` of the app; the status and the answer as JSON.
async fn post(addr: SocketAddr, path: &str, body: String) -> (u16, Value) {
    let res = support::client_builder()
        .build()
        .unwrap()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

const GENERATE: &str = "/v1beta/models/gemini-2.0-flash:generateContent";

fn pool(key: &str) -> KeyPool {
    KeyPool::builder().keys([key]).build().unwrap()
}

#[tokio::test]
async fn a_working_upstream_answers_through_the_axum_route() {
    let mock = MockGemini::start().await;
    mock.set_compression(Compression::Force(Encoding::ALL[0]));
    let key = test_key(1);
    let addr = serve(&mock.base_url(), &pool(&key), Duration::from_secs(30)).await;

    let (status, answer) = post(addr, GENERATE, prompt_body("hello")).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["candidates"][0]["content"].is_object(), "{answer}");
    // The pool's key went upstream (the client sent none), and the compressed answer was
    // decoded on its way to the client.
    assert_eq!(mock.requests(&key), 1);
    assert_eq!(mock.compressed_answers(), 1);
}

/// A loopback address where nothing listens.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_in_the_format_of_the_route() {
    let key = test_key(1);
    let pool = pool(&key);
    let addr = serve(&dead_address(), &pool, Duration::from_secs(30)).await;

    let (status, answer) = post(addr, GENERATE, prompt_body("hello")).await;
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["error"]["code"], 502, "{answer}");
    assert_eq!(answer["error"]["status"], "UNAVAILABLE", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("could not be reached"), "{message}");
    assert!(!message.contains(&key), "{message}");

    // An OpenAI route gets OpenAI's error shape.
    let chat = r#"{"model":"gemini-2.0-flash","messages":[{"role":"user","content":"hi"}]}"#;
    let (status, answer) = post(addr, "/v1beta/openai/chat/completions", chat.into()).await;
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["error"]["type"], "server_error", "{answer}");
    assert!(answer["error"]["status"].is_null(), "{answer}");

    // A connection the upstream refused is not the key's fault (below the key layer, a 502
    // answer would have counted against it).
    let key = &pool.snapshots()[0];
    assert_eq!(key.consecutive_failures, 0);
    assert_eq!(key.status, gemini_balance::keys::KeyStatus::Active);
}

/// An upstream that takes connections and never answers.
async fn stalled_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

#[tokio::test]
async fn a_stalled_upstream_is_a_504_in_geminis_format() {
    let addr = serve(
        &stalled_upstream().await,
        &pool(&test_key(1)),
        Duration::from_millis(200),
    )
    .await;

    let (status, answer) = post(addr, GENERATE, prompt_body("hello")).await;
    assert_eq!(status, 504, "{answer}");
    assert_eq!(answer["error"]["status"], "DEADLINE_EXCEEDED", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("timed out"), "{message}");
}
