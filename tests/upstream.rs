//! `client::Upstream` under an axum route, with `GatewayErrorsLayer` on top: the library's
//! layers serve `Router::route_service` as they are (no `HandleErrorLayer`), a working upstream
//! answers through them (compressed answers decoded), and an unreachable or stalled one becomes
//! a 502 or 504 in the API's own error format. Also: each key leaves through its own outbound
//! proxy (`proxy_by_key`), and a stream that stalls mid-body fails as a timeout.
//!
//! ```text
//! reqwest ─▶ axum Router ─▶ GatewayErrors ─▶ Retry ─▶ KeyRotation ─▶ Decode ─▶ Upstream ─▶ upstream
//! ```

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

/// A forward proxy that answers every request itself, as the upstream would, and counts the
/// requests of each key it carried.
struct ForwardProxy {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
}

impl ForwardProxy {
    async fn start() -> ForwardProxy {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let counted = seen.clone();
        let app = Router::new().fallback(move |req: http::Request<axum::body::Body>| {
            let counted = counted.clone();
            async move {
                // A forward proxy is asked for the absolute URI of the upstream.
                assert_eq!(req.uri().scheme_str(), Some("http"), "{}", req.uri());
                let key = req
                    .headers()
                    .get("x-goog-api-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                *counted.lock().unwrap().entry(key).or_insert(0) += 1;
                (
                    [("content-type", "application/json")],
                    r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"hi"}]},"finishReason":"STOP"}]}"#,
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        ForwardProxy { url, seen }
    }

    fn seen(&self) -> std::collections::HashMap<String, u64> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn each_key_leaves_through_its_own_proxy() {
    use gemini_balance::client::upstream::proxy_index;
    use gemini_balance::keys::KeyId;
    use tower::ServiceExt;

    let proxies = [ForwardProxy::start().await, ForwardProxy::start().await];
    // Two keys that `proxy_index` puts on different proxies.
    let first = test_key(1);
    let other = (2..100)
        .map(test_key)
        .find(|k| proxy_index(&KeyId::of(k), 2) != proxy_index(&KeyId::of(&first), 2))
        .unwrap();
    let upstream = Upstream::builder("http://gemini.invalid/v1beta")
        .proxies(proxies.iter().map(|p| p.url.clone()))
        .proxy_by_key(true)
        .build()
        .unwrap();
    // One pool per key over the one upstream: each request of a key goes through its proxy
    // (taking turns, the three calls of a key would use both).
    for key in [&first, &other] {
        let stack = ServiceBuilder::new()
            .layer(GatewayErrorsLayer::new())
            .layer(KeyRotationLayer::new(pool(key)))
            .service(upstream.clone());
        for i in 0..3 {
            let req = http::Request::post("/models/gemini-2.0-flash:generateContent")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(prompt_body(&format!("call {i}"))))
                .unwrap();
            let res = stack.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), 200);
        }
    }
    // Each proxy saw one key only, and both keys were used.
    for key in [&first, &other] {
        let proxy = &proxies[proxy_index(&KeyId::of(key), 2)];
        let seen = proxy.seen();
        assert_eq!(seen, [(key.clone(), 3)].into(), "{seen:?}");
    }
}

/// An upstream that sends a response head and the start of a body, then nothing.
async fn stalling_mid_body() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let _ = socket
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n6\r\ndata: \r\n",
                )
                .await;
            held.push(socket);
        }
    });
    url
}

#[tokio::test]
async fn a_stream_that_stalls_fails_as_a_timeout_after_the_idle_timeout() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let upstream = Upstream::builder(stalling_mid_body().await)
        .idle_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let req = http::Request::post("/v1beta/models/gemini-2.0-flash:streamGenerateContent")
        .body(axum::body::Body::from(prompt_body("hello")))
        .unwrap();
    let res = upstream.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = Box::pin(res.into_body());
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "data: ");
    let err = body.frame().await.unwrap().unwrap_err();
    assert_eq!(
        gemini_balance::classify::classify_any_error(&err),
        gemini_balance::classify::FailureClass::Timeout,
        "{err}"
    );
}
