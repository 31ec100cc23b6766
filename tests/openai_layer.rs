//! The OpenAI face over loopback: OpenAI requests in, Gemini (the mock) behind, OpenAI answers
//! out, through the real key rotation and retry layers.

use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::Router;
use gemini_balance::client::ReqwestService;
use gemini_balance::keys::{KeyPool, KeyRotationLayer};
use gemini_balance::openai::{ChatOptions, ModelRules, OpenAiLayer};
use gemini_balance::retry::RetryLayer;
use gemini_balance::sse::decode_all;
use http::{Request, StatusCode};
use serde_json::{json, Value};
use support::{test_key, test_keys, Fault, MockGemini};
use tower::ServiceBuilder;

struct Setup {
    mock: MockGemini,
    url: String,
    client: reqwest::Client,
    _server: tokio::task::JoinHandle<()>,
}

async fn setup(keys: u32) -> Setup {
    setup_with(
        keys,
        ChatOptions {
            show_thinking: true,
            ..ChatOptions::default()
        },
    )
    .await
}

async fn setup_with(keys: u32, options: ChatOptions) -> Setup {
    let mock = MockGemini::start().await;
    let pool = KeyPool::builder().keys(test_keys(keys)).build().unwrap();
    let upstream = ReqwestService::new(support::client_builder().build().unwrap())
        .base_url(&mock.base_url())
        .unwrap();
    let stack = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|err: reqwest::Error| async move {
            (StatusCode::BAD_GATEWAY, err.to_string())
        }))
        .map_request(|req: Request<axum::body::Body>| {
            req.map(|body| reqwest::Body::wrap_stream(body.into_data_stream()))
        })
        .layer(OpenAiLayer::new(options))
        .layer(RetryLayer::new().base_delay(Duration::from_millis(1)))
        .layer(KeyRotationLayer::new(pool))
        .service(upstream);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = Router::new().fallback_service(stack);
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Setup {
        mock,
        url,
        client: support::client_builder().build().unwrap(),
        _server: server,
    }
}

impl Setup {
    async fn post(&self, path: &str, body: Value) -> (StatusCode, String, Vec<u8>) {
        let res = self
            .client
            .post(format!("{}{path}", self.url))
            .header("authorization", "Bearer client-token")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = res.status();
        let content_type = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, content_type, res.bytes().await.unwrap().to_vec())
    }
}

#[tokio::test]
async fn chat_completion_from_gemini() {
    let s = setup(2).await;
    let (status, content_type, body) = s
        .post(
            "/v1/chat/completions",
            json!({"model": "gemini-2.5-flash", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "ping"}]}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/json"));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "gemini-2.5-flash");
    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(answer["choices"][0]["message"]["content"], "echo: ping");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        answer["usage"]["completion_tokens_details"]["reasoning_tokens"],
        12
    );
    // The mock saw a Gemini request with the pool's key, never the client's token.
    let last = s.mock.last_request().unwrap();
    assert_eq!(
        last.uri.path(),
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert!(!s.mock.saw_credential("client-token"));
}

#[tokio::test]
async fn streamed_chat_is_converted_event_by_event() {
    let s = setup(1).await;
    let (status, content_type, body) = s
        .post(
            "/hf/v1/chat/completions",
            json!({"model": "gemini-2.0-flash", "stream": true,
                   "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "stream this please"}]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/event-stream");
    let events = decode_all(&body);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| e.json().unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "echo: stream this please");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let ids: std::collections::HashSet<_> = chunks.iter().map(|c| c["id"].clone()).collect();
    assert_eq!(ids.len(), 1, "one id per response");
    let finish: Vec<_> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["stop"]);
    let usage = &chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        s.mock.last_request().unwrap().uri.path(),
        "/v1beta/models/gemini-2.0-flash:streamGenerateContent"
    );
}

#[tokio::test]
async fn embeddings_from_batch_embed_contents() {
    let s = setup(1).await;
    let (status, _, body) = s
        .post(
            "/v1/embeddings",
            json!({"model": "text-embedding-004", "input": ["one", "two"]}),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["object"], "list");
    assert_eq!(answer["data"].as_array().unwrap().len(), 2);
    assert!(answer["data"][1]["embedding"].as_array().unwrap().len() > 1);
}

#[tokio::test]
async fn errors_come_back_in_openai_shape() {
    let s = setup(1).await;
    // Bad input: named, and the upstream is not called.
    let (status, _, body) = s
        .post(
            "/v1/chat/completions",
            json!({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "x"}], "n": 0}),
        )
        .await;
    assert_eq!(status, 400);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["param"], "n");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(s.mock.total(), 0);

    // Not JSON.
    let res = s
        .client
        .post(format!("{}/v1/chat/completions", s.url))
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let error: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));

    // An upstream 429 keeps its status and becomes OpenAI's rate-limit error.
    s.mock.set_fault(&test_key(1), Fault::rate_limited("30s"));
    let (status, _, body) = s
        .post(
            "/v1/chat/completions",
            json!({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 429);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["type"], "rate_limit_error");
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("quota"));

    // Our own "no key" answer, too, is in OpenAI's shape.
    let (status, _, body) = s
        .post(
            "/v1/chat/completions",
            json!({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 429);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn filtered_models_are_refused_before_any_key_is_used() {
    let s = setup_with(
        1,
        ChatOptions {
            rules: ModelRules {
                search_models: vec!["gemini-2.5-pro".into()],
                filtered_models: vec!["gemini-2.5-pro".into(), "text-embedding-004".into()],
                ..ModelRules::default()
            },
            ..ChatOptions::default()
        },
    )
    .await;
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "x"}]}),
        ),
        // A derived model of a filtered one is filtered too.
        (
            "/v1/chat/completions",
            json!({"model": "gemini-2.5-pro-search", "messages": [{"role": "user", "content": "x"}]}),
        ),
        (
            "/v1/embeddings",
            json!({"model": "models/text-embedding-004", "input": "x"}),
        ),
    ] {
        let (status, _, answer) = s.post(path, body.clone()).await;
        assert_eq!(status, 400, "{body}");
        let error: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        assert_eq!(error["error"]["param"], "model", "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("not available"), "{message}");
    }
    assert_eq!(s.mock.total(), 0);
    let (status, _, _) = s
        .post(
            "/v1/chat/completions",
            json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn image_urls_need_a_fetcher() {
    let s = setup(1).await;
    let (status, _, body) = s
        .post(
            "/v1/chat/completions",
            json!({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}}]}]}),
        )
        .await;
    assert_eq!(status, 400);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("data: URL"));
    assert_eq!(s.mock.total(), 0);
}

struct FakeFetcher;

impl gemini_balance::openai::ImageFetcher for FakeFetcher {
    fn fetch<'a>(&'a self, url: &'a str) -> gemini_balance::openai::FetchFuture<'a> {
        Box::pin(async move {
            if url.ends_with("missing.png") {
                return Err("404 Not Found".to_owned());
            }
            Ok(gemini_balance::openai::FetchedImage {
                mime_type: "image/png".to_owned(),
                base64: "iVBORw0KGgo=".to_owned(),
            })
        })
    }
}

#[tokio::test]
async fn fetched_images_are_inlined() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;

    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let record = seen.clone();
    let upstream = tower::service_fn(move |req: Request<Full<Bytes>>| {
        let record = record.clone();
        async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            record
                .lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap());
            let answer = json!({"candidates": [{"content": {"parts": [{"text": "a cat"}]}, "finishReason": "STOP"}]});
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                answer.to_string(),
            ))))
        }
    });
    let service = ServiceBuilder::new()
        .layer(OpenAiLayer::new(ChatOptions::default()).image_fetcher(Arc::new(FakeFetcher)))
        .service(upstream);
    let ask = |url: &str| {
        Request::post("/v1/chat/completions")
            .body(Full::new(Bytes::from(
                json!({"model": "m", "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "what is it?"},
                    {"type": "image_url", "image_url": {"url": url}}]}]})
                .to_string(),
            )))
            .unwrap()
    };
    let res = service
        .clone()
        .oneshot(ask("https://example.invalid/cat.png"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let sent = seen.lock().unwrap()[0].clone();
    assert_eq!(
        sent["contents"][0]["parts"][1],
        json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}})
    );
    let res = service
        .oneshot(ask("https://example.invalid/missing.png"))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("404 Not Found"));
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "no upstream call for a failed fetch"
    );
}
