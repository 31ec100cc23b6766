//! The usage layer over loopback: one record per request with tokens, attempts and how the
//! response ended, for Gemini and OpenAI, JSON and SSE.

use std::convert::Infallible;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::Router;
use bytes::Bytes;
use gemini_balance::client::ReqwestService;
use gemini_balance::keys::{KeyId, KeyPool, KeyRotationLayer};
use gemini_balance::retry::RetryLayer;
use gemini_balance::store::MemoryStore;
use gemini_balance::usage::{ClientId, Completion, RequestRecord, UsageLayer};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use support::{prompt_body, replies, test_key, test_keys, Fault, MockGemini};
use tower::{service_fn, ServiceBuilder, ServiceExt};

const FLASH: &str = "gemini-2.0-flash";
const THINKING: &str = "gemini-2.5-flash";

struct Setup {
    mock: MockGemini,
    store: MemoryStore,
    pool: KeyPool,
    url: String,
    client: reqwest::Client,
    _server: tokio::task::JoinHandle<()>,
}

async fn setup(keys: u32, record_bodies: bool) -> Setup {
    let mock = MockGemini::start().await;
    let store = MemoryStore::new();
    let pool = KeyPool::builder().keys(test_keys(keys)).build().unwrap();
    let upstream = ReqwestService::new(support::client_builder().build().unwrap())
        .base_url(&mock.base_url())
        .unwrap();
    let stack = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|err: reqwest::Error| async move {
            (StatusCode::BAD_GATEWAY, err.to_string())
        }))
        .map_request(|mut req: Request<axum::body::Body>| {
            // What an authenticating front layer does: name the client by its token's id.
            req.extensions_mut().insert(ClientId::of("sk-client-one"));
            req.map(|body| reqwest::Body::wrap_stream(body.into_data_stream()))
        })
        .layer(UsageLayer::new(store.clone()).record_request_body(record_bodies))
        .layer(RetryLayer::new().base_delay(Duration::from_millis(1)))
        .layer(KeyRotationLayer::new(pool.clone()))
        .service(upstream);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = Router::new().fallback_service(stack);
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Setup {
        mock,
        store,
        pool,
        url,
        client: support::client_builder().build().unwrap(),
        _server: server,
    }
}

impl Setup {
    async fn post(&self, path: &str, body: String) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Records are written when the server finishes the body, just after the client has it.
    async fn records(&self, n: usize) -> Vec<RequestRecord> {
        for _ in 0..200 {
            let records = self.store.records();
            if records.len() >= n {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} records, got {:?}", self.store.records());
    }
}

fn id(n: u32) -> KeyId {
    KeyId::of(&test_key(n))
}

#[tokio::test]
async fn gemini_json_answer_is_recorded_with_its_tokens() {
    let s = setup(2, false).await;
    let prompt = "how many tokens is this";
    let res = s
        .post(
            &format!("/v1beta/models/{THINKING}:generateContent"),
            prompt_body(prompt),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    let expected = &body["usageMetadata"];

    let r = &s.records(1).await[0];
    assert_eq!(r.model.as_deref(), Some(THINKING));
    assert_eq!(
        r.route,
        format!("/v1beta/models/{THINKING}:generateContent")
    );
    assert_eq!(r.status, 200);
    assert!(r.success);
    assert_eq!(r.completion, Completion::Complete);
    assert!(!r.streamed);
    assert_eq!(r.attempts, 1);
    assert_eq!(r.key, Some(id(1)));
    assert_eq!(r.client, Some(ClientId::of("sk-client-one")));
    assert_eq!(
        r.tokens.prompt,
        expected["promptTokenCount"].as_u64().unwrap()
    );
    assert_eq!(
        r.tokens.candidates,
        expected["candidatesTokenCount"].as_u64().unwrap()
    );
    assert_eq!(r.tokens.thoughts, 12);
    assert_eq!(
        r.tokens.total,
        expected["totalTokenCount"].as_u64().unwrap()
    );
    assert!(r.tokens.prompt > 0);
    assert!(r.time_to_first_byte.is_some());
    assert!(r.latency >= r.time_to_first_byte.unwrap());
    assert_eq!(r.attempt_log.len(), 1);
    assert_eq!(r.attempt_log[0].status, Some(200));
    assert!(r.request_body.is_none());
}

#[tokio::test]
async fn gemini_sse_stream_takes_usage_from_the_last_event() {
    let s = setup(1, false).await;
    let res = s
        .post(
            &format!("/v1beta/models/{FLASH}:streamGenerateContent?alt=sse"),
            prompt_body("stream me"),
        )
        .await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let last_event = text
        .split("\r\n\r\n")
        .filter(|e| e.starts_with("data: "))
        .last()
        .unwrap();
    let last: serde_json::Value = serde_json::from_str(&last_event["data: ".len()..]).unwrap();

    let r = &s.records(1).await[0];
    assert!(r.streamed);
    assert!(r.success);
    assert_eq!(r.completion, Completion::Complete);
    assert_eq!(
        r.tokens.total,
        last["usageMetadata"]["totalTokenCount"].as_u64().unwrap()
    );
    assert!(r.tokens.total > 0);
}

#[tokio::test]
async fn a_stream_cut_by_the_client_is_recorded_as_incomplete() {
    let s = setup(1, false).await;
    let _gate = s.mock.gate_streams(); // the mock holds the stream after its first event
    let mut res = s
        .post(
            &format!("/v1beta/models/{FLASH}:streamGenerateContent?alt=sse"),
            prompt_body("cut me off"),
        )
        .await;
    let first = res.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(res); // the client goes away mid-stream

    let r = &s.records(1).await[0];
    assert_eq!(r.completion, Completion::ClientGone);
    assert!(!r.success, "an incomplete stream is not a success");
    assert!(r.streamed);
    assert_eq!(r.status, 200);
    assert!(r.time_to_first_byte.is_some());
}

#[tokio::test]
async fn failed_attempts_hidden_by_a_retry_are_in_the_record() {
    let s = setup(2, false).await;
    s.mock.set_fault(&test_key(1), Fault::InvalidKey);
    let res = s
        .post(
            &format!("/v1beta/models/{FLASH}:generateContent"),
            prompt_body("retry me"),
        )
        .await;
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap();

    let r = &s.records(1).await[0];
    assert!(r.success);
    assert_eq!(r.attempts, 2);
    assert_eq!(r.key, Some(id(2)));
    let [first, second] = &r.attempt_log[..] else {
        panic!("{:?}", r.attempt_log)
    };
    assert_eq!(first.key, id(1));
    assert_eq!(first.status, Some(400));
    assert_eq!(first.class, Some("key_rejected"));
    assert_eq!(
        first.error_message.as_deref(),
        Some("API key not valid. Please pass a valid API key.")
    );
    assert_eq!(second.key, id(2));
    assert_eq!(second.status, Some(200));
    assert_eq!(second.class, None);
    assert!(second.error_message.is_none());
    // The pool saw the same thing.
    assert!(s.pool.keys_to_probe().contains(&id(1)));
}

#[tokio::test]
async fn request_bodies_are_kept_only_when_asked_and_only_for_failures() {
    let s = setup(1, true).await;
    // A success keeps no body.
    s.post(
        &format!("/v1beta/models/{FLASH}:generateContent"),
        prompt_body("fine"),
    )
    .await
    .bytes()
    .await
    .unwrap();
    s.mock.set_fault(&test_key(1), Fault::ServerError);
    let res = s
        .post(
            &format!("/v1beta/models/{FLASH}:generateContent"),
            prompt_body("this one fails"),
        )
        .await;
    assert_eq!(res.status(), 500);
    res.bytes().await.unwrap();

    let records = s.records(2).await;
    assert!(records[0].success);
    assert!(records[0].request_body.is_none());
    assert!(!records[1].success);
    assert_eq!(records[1].request_body, Some(prompt_body("this one fails")));
    assert!(records[1]
        .attempt_log
        .iter()
        .all(|a| a.class == Some("server_error")));

    // Off by default.
    let s = setup(1, false).await;
    s.mock.set_fault(&test_key(1), Fault::ServerError);
    s.post(
        &format!("/v1beta/models/{FLASH}:generateContent"),
        prompt_body("no body kept"),
    )
    .await
    .bytes()
    .await
    .unwrap();
    assert!(s.records(1).await[0].request_body.is_none());
}

#[tokio::test]
async fn an_unreachable_upstream_is_recorded_without_a_response() {
    let store = MemoryStore::new();
    let pool = KeyPool::builder().keys(test_keys(1)).build().unwrap();
    // Nothing listens on port 9 of loopback.
    let upstream = ReqwestService::new(support::client_builder().build().unwrap())
        .base_url("http://127.0.0.1:9")
        .unwrap();
    let stack = ServiceBuilder::new()
        .layer(UsageLayer::new(store.clone()))
        .layer(RetryLayer::new().max_attempts(1))
        .layer(KeyRotationLayer::new(pool))
        .service(upstream);
    let req = Request::post(format!("/v1beta/models/{FLASH}:generateContent"))
        .body(reqwest::Body::from(prompt_body("anyone?")))
        .unwrap();
    assert!(stack.oneshot(req).await.is_err());
    let r = &store.records()[0];
    assert_eq!(r.completion, Completion::NoResponse);
    assert_eq!(r.status, 0);
    assert_eq!(r.attempt_log.len(), 1);
    assert_eq!(r.attempt_log[0].class, Some("transport"));
    assert_eq!(r.attempt_log[0].status, None);
}

fn openai_upstream(
    content_type: &'static str,
    body: &'static str,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |_req: Request<Full<Bytes>>| async move {
        let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        res.headers_mut()
            .insert("content-type", content_type.parse().unwrap());
        Ok::<_, Infallible>(res)
    })
}

async fn record_openai(content_type: &'static str, body: &'static str) -> RequestRecord {
    let store = MemoryStore::new();
    let stack = ServiceBuilder::new()
        .layer(UsageLayer::new(store.clone()))
        .service(openai_upstream(content_type, body));
    let req = Request::post("/v1/chat/completions")
        .extension(gemini_balance::ext::ModelName::new("gpt-4o-mini"))
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let res = stack.oneshot(req).await.unwrap();
    res.into_body().collect().await.unwrap();
    store.records().remove(0)
}

#[tokio::test]
async fn openai_json_usage_with_reasoning_and_cached_tokens() {
    let r = record_openai(
        "application/json",
        r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":25,"total_tokens":36,"prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":20}}}"#,
    )
    .await;
    assert_eq!(r.protocol, gemini_balance::api_error::ApiFlavor::OpenAi);
    assert_eq!(r.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(
        (
            r.tokens.prompt,
            r.tokens.candidates,
            r.tokens.thoughts,
            r.tokens.cached,
            r.tokens.total
        ),
        (11, 5, 20, 3, 36)
    );
    assert!(!r.streamed);
}

#[tokio::test]
async fn openai_sse_usage_chunk_before_done() {
    let r = record_openai(
        "text/event-stream",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n\
         data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
         data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2,\"total_tokens\":6}}\n\n\
         data: [DONE]\n\n",
    )
    .await;
    assert!(r.streamed);
    assert!(r.success);
    assert_eq!(
        (r.tokens.prompt, r.tokens.candidates, r.tokens.total),
        (4, 2, 6)
    );
}

#[test]
fn the_mock_reports_usage_as_the_tests_expect() {
    // Guards the assumptions above about the mock's answers.
    let model = replies::find_model(THINKING).unwrap();
    let answer = replies::generate_content(model, "x");
    assert!(answer["usageMetadata"]["thoughtsTokenCount"].as_u64() == Some(12));
}

/// The record of a chat through the OpenAI conversion, usage outermost as in the bundled
/// proxy, streamed or not, with or without `stream_options.include_usage`.
async fn record_converted_chat(stream: bool, include_usage: bool) -> RequestRecord {
    use gemini_balance::openai::{ChatOptions, OpenAiLayer};
    let mock = MockGemini::start().await;
    let store = MemoryStore::new();
    let pool = KeyPool::builder().keys(test_keys(1)).build().unwrap();
    let upstream = ReqwestService::new(support::client_builder().build().unwrap())
        .base_url(&mock.base_url())
        .unwrap();
    let stack = ServiceBuilder::new()
        .layer(UsageLayer::new(store.clone()))
        .layer(OpenAiLayer::new(ChatOptions::default()))
        .layer(RetryLayer::new().base_delay(Duration::from_millis(1)))
        .layer(KeyRotationLayer::new(pool))
        .service(upstream);
    let mut body = serde_json::json!({
        "model": FLASH,
        "stream": stream,
        "messages": [{"role": "user", "content": "count me"}],
    });
    if include_usage {
        body["stream_options"] = serde_json::json!({"include_usage": true});
    }
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(reqwest::Body::from(body.to_string()))
        .unwrap();
    let res = stack.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();
    store.records().remove(0)
}

#[tokio::test]
async fn openai_chats_over_the_conversion_record_the_model_of_their_body() {
    for (stream, include_usage) in [(false, false), (true, false), (true, true)] {
        let r = record_converted_chat(stream, include_usage).await;
        assert_eq!(r.model.as_deref(), Some(FLASH), "stream {stream}");
        assert_eq!(r.protocol, gemini_balance::api_error::ApiFlavor::OpenAi);
        assert!(r.success, "{r:?}");
    }
}

#[tokio::test]
async fn openai_chats_over_the_conversion_record_the_upstreams_tokens() {
    // What the mock reports for the prompt: its whole answer's and its stream's last event's.
    let model = replies::find_model(FLASH).unwrap();
    let whole = gemini_balance::usage::gemini_usage(
        &replies::generate_content(model, "count me")["usageMetadata"],
    )
    .unwrap();
    let streamed = replies::stream_chunks(model, "count me")
        .iter()
        .rev()
        .find_map(|c| gemini_balance::usage::gemini_usage(&c["usageMetadata"]))
        .unwrap();
    assert!(whole.total > 0 && streamed.total > 0);
    for (stream, include_usage, expected) in [
        (false, false, whole),
        // The client did not ask for the usage chunk: the upstream reported it all the same.
        (true, false, streamed),
        (true, true, streamed),
    ] {
        let r = record_converted_chat(stream, include_usage).await;
        assert_eq!(
            r.tokens, expected,
            "stream {stream}, include_usage {include_usage}"
        );
    }
}

/// Success is the classifier's verdict, not the status: a `200` that an inner layer classed as
/// a failure is recorded as failed, and one without a verdict is judged by the classifier's
/// reading of its status.
#[tokio::test]
async fn success_follows_the_classifier_not_the_status() {
    use gemini_balance::classify::{FailureClass, Outcome, QuotaScope};
    async fn record_of(outcome: Option<Outcome>, status: StatusCode) -> RequestRecord {
        let store = MemoryStore::new();
        let service = ServiceBuilder::new()
            .layer(UsageLayer::new(store.clone()))
            .service(service_fn(move |_req: Request<Full<Bytes>>| {
                let outcome = outcome.clone();
                async move {
                    let mut res = Response::new(Full::new(Bytes::from_static(b"{}")));
                    *res.status_mut() = status;
                    if let Some(outcome) = outcome {
                        res.extensions_mut().insert(outcome);
                    }
                    Ok::<_, Infallible>(res)
                }
            }));
        let req = Request::post(format!("/v1beta/models/{FLASH}:generateContent"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = service.oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
        store.records().remove(0)
    }
    let quota = Outcome::Failure(FailureClass::RateLimited {
        retry_after: None,
        scope: QuotaScope::Unknown,
    });
    let failed = record_of(Some(quota), StatusCode::OK).await;
    assert_eq!(failed.status, 200);
    assert!(!failed.success, "classed rate limited under a 200");
    assert!(
        record_of(Some(Outcome::Success), StatusCode::OK)
            .await
            .success
    );
    assert!(record_of(None, StatusCode::OK).await.success);
    assert!(!record_of(None, StatusCode::TOO_MANY_REQUESTS).await.success);
}

/// An OpenAI chat through `OpenAiLayer`: the record has the upstream's token counts, which the
/// conversion hands up (the usage layer does not read the converted answer for them).
#[tokio::test]
async fn openai_chat_records_the_upstreams_counts() {
    use gemini_balance::openai::{ChatOptions, OpenAiLayer};
    let mock = MockGemini::start().await;
    let store = MemoryStore::new();
    let pool = KeyPool::builder().keys(test_keys(1)).build().unwrap();
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
        .layer(UsageLayer::new(store.clone()))
        .layer(OpenAiLayer::new(ChatOptions::default()))
        .layer(RetryLayer::new().base_delay(Duration::from_millis(1)))
        .layer(KeyRotationLayer::new(pool))
        .service(upstream);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = Router::new().fallback_service(stack);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let res = support::client_builder()
        .build()
        .unwrap()
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({
                "model": THINKING,
                "messages": [{"role": "user", "content": "Hi"}],
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let answer: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    let usage = &answer["usage"];
    let mut records = store.records();
    for _ in 0..200 {
        if !records.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        records = store.records();
    }
    let r = &records[0];
    assert!(r.success);
    assert!(r.tokens.total > 0, "{r:#?}");
    assert_eq!(r.tokens.total, usage["total_tokens"].as_u64().unwrap());
    assert_eq!(r.tokens.prompt, usage["prompt_tokens"].as_u64().unwrap());
    assert_eq!(
        r.tokens.thoughts,
        usage["completion_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap()
    );
    assert_eq!(
        r.tokens.candidates + r.tokens.thoughts,
        usage["completion_tokens"].as_u64().unwrap()
    );
}
