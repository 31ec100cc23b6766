//! An upstream that compresses its answers, as Google's front ends and CDN relays do, behind
//! the whole client-side stack: every layer reads decoded bytes and the caller gets a body whose
//! headers describe it, for gzip, deflate, br and zstd.
//!
//! ```text
//! test ─▶ Usage ─▶ Retry ─▶ KeyRotation ─▶ Decode ─▶ ReqwestService ─▶ mock Gemini (compressing)
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use gemini_balance::client::ReqwestService;
use gemini_balance::decode::DecodeLayer;
use gemini_balance::keys::{KeyId, KeyPool, KeyRotationLayer, KeyStatus};
use gemini_balance::openai::{ChatOptions, OpenAiLayer};
use gemini_balance::retry::RetryLayer;
use gemini_balance::store::MemoryStore;
use gemini_balance::usage::UsageLayer;
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use support::{prompt_body, test_key, test_keys, Compression, Encoding, Fault, MockGemini};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

type Stack = BoxCloneSyncService<
    Request<reqwest::Body>,
    Response<axum::body::Body>,
    gemini_balance::BoxError,
>;

fn retry() -> RetryLayer {
    RetryLayer::new()
        .base_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(5))
}

fn upstream(mock: &MockGemini) -> ReqwestService {
    ReqwestService::new(support::client_builder().build().unwrap())
        .base_url(&mock.base_url())
        .unwrap()
}

/// Usage → Retry → KeyRotation → Decode → the mock.
fn stack(mock: &MockGemini, pool: &KeyPool, store: &MemoryStore) -> Stack {
    let service = ServiceBuilder::new()
        .map_response(|res: Response<_>| res.map(axum::body::Body::new))
        .layer(UsageLayer::shared(Arc::new(store.clone())))
        .layer(retry())
        .layer(KeyRotationLayer::new(pool.clone()))
        .layer(DecodeLayer::new())
        .map_err(gemini_balance::BoxError::from)
        .service(upstream(mock));
    BoxCloneSyncService::new(service)
}

fn post(path: &str, body: String) -> Request<reqwest::Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        // What the SDKs (httpx) ask for; the stack must not let it decide what it reads.
        .header(header::ACCEPT_ENCODING, "gzip, deflate, br, zstd")
        .body(reqwest::Body::from(body))
        .unwrap()
}

async fn body_of(res: Response<axum::body::Body>) -> Bytes {
    res.into_body().collect().await.unwrap().to_bytes()
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(bytes)))
}

/// Each coding a relay may force, and Google's own negotiated gzip.
fn modes() -> Vec<Compression> {
    let mut modes = vec![Compression::Negotiate];
    modes.extend(Encoding::ALL.map(Compression::Force));
    modes
}

#[tokio::test]
async fn answers_usage_and_errors_are_read_decoded_for_every_encoding() {
    for mode in modes() {
        let mock = MockGemini::start().await;
        mock.set_compression(mode.clone());
        let keys = test_keys(3);
        // The first key the pool picks is invalid, the second quota-limited with a RetryInfo.
        mock.set_fault(&keys[0], Fault::InvalidKey);
        mock.set_fault(
            &keys[1],
            Fault::RateLimited {
                retry_delay: "37s".into(),
                per_day: false,
            },
        );
        let pool = KeyPool::builder().keys(&keys).build().unwrap();
        let store = MemoryStore::new();
        let stack = stack(&mock, &pool, &store);

        let res = stack
            .clone()
            .oneshot(post(
                "/v1beta/models/gemini-2.0-flash:generateContent",
                prompt_body("squeeze"),
            ))
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{mode:?}");
        assert!(
            res.headers().get(header::CONTENT_ENCODING).is_none(),
            "{mode:?}: the body is handed on decoded"
        );
        let answer = json_of(&body_of(res).await);
        assert_eq!(
            answer["candidates"][0]["content"]["parts"][0]["text"], "echo: squeeze",
            "{mode:?}"
        );
        assert!(
            mock.compressed_answers() >= 3,
            "{mode:?}: the mock compressed"
        );

        // API_KEY_INVALID was read from the gzipped error: the key is disabled, not kept.
        let invalid = pool.snapshot(&KeyId::of(&keys[0])).unwrap();
        assert!(
            matches!(invalid.status, KeyStatus::Disabled(_)),
            "{mode:?}: {:?}",
            invalid.status
        );
        // RetryInfo 37s was read: the quota key cools for that long, not the 60 s default.
        let limited = pool.snapshot(&KeyId::of(&keys[1])).unwrap();
        let KeyStatus::CoolingDown(cooldowns) = &limited.status else {
            panic!("{mode:?}: {:?}", limited.status);
        };
        let left = cooldowns[0]
            .until
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        assert!(
            left > Duration::from_secs(30) && left <= Duration::from_secs(37),
            "{mode:?}: {left:?}"
        );

        // Tokens counted from the decoded answer; the attempts' errors are readable text.
        let records = store.records();
        assert_eq!(records.len(), 1, "{mode:?}");
        assert!(records[0].tokens.total > 0, "{mode:?}: {:?}", records[0]);
        let messages: Vec<String> = records[0]
            .attempt_log
            .iter()
            .filter_map(|a| a.error_message.clone())
            .collect();
        assert_eq!(messages.len(), 2, "{mode:?}: {messages:?}");
        assert!(
            messages[0].contains("API key not valid"),
            "{mode:?}: {messages:?}"
        );
        assert!(
            messages[1].contains("exceeded your current quota"),
            "{mode:?}: {messages:?}"
        );
    }
}

#[tokio::test]
async fn a_key_quoted_in_a_compressed_error_is_redacted() {
    for mode in modes() {
        let mock = MockGemini::start().await;
        mock.set_compression(mode.clone());
        let key = test_key(7);
        mock.set_fault(&key, Fault::Suspended);
        let pool = KeyPool::builder().keys([&key]).build().unwrap();
        let store = MemoryStore::new();
        let res = stack(&mock, &pool, &store)
            .oneshot(post(
                "/v1beta/models/gemini-2.0-flash:generateContent",
                prompt_body("hi"),
            ))
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{mode:?}");
        assert!(res.headers().get(header::CONTENT_ENCODING).is_none());
        let body = body_of(res).await;
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains(&key), "{mode:?}: the key leaked: {text}");
        let error = json_of(&body);
        assert_eq!(error["error"]["status"], "PERMISSION_DENIED", "{mode:?}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("AIza…0007"),
            "{mode:?}: {error}"
        );
        assert!(matches!(
            pool.snapshot(&KeyId::of(&key)).unwrap().status,
            KeyStatus::Disabled(_)
        ));
    }
}

#[tokio::test]
async fn a_compressed_stream_is_decoded_event_by_event() {
    for encoding in Encoding::ALL {
        let mock = MockGemini::start().await;
        mock.set_compression(Compression::Force(encoding));
        let gate = mock.gate_streams();
        let pool = KeyPool::builder().keys(test_keys(1)).build().unwrap();
        let store = MemoryStore::new();
        let res = stack(&mock, &pool, &store)
            .oneshot(post(
                "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
                prompt_body("one two three"),
            ))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers().get(header::CONTENT_ENCODING).is_none());
        let mut body = res.into_body();
        // The first event comes through while the mock holds the rest: decoding does not wait
        // for the end of the compressed stream.
        let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .unwrap_or_else(|_| panic!("{encoding:?}: the first event was held back"))
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        let first = String::from_utf8(first.to_vec()).unwrap();
        assert!(first.starts_with("data: {"), "{encoding:?}: {first:?}");
        gate.release(100);
        let rest = body.collect().await.unwrap().to_bytes();
        let all = format!("{first}{}", String::from_utf8(rest.to_vec()).unwrap());
        let text: String = all
            .split("\r\n\r\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|d| json_of(d.as_bytes()))
            .filter_map(|v| {
                v["candidates"][0]["content"]["parts"][0]["text"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert!(text.contains("one two three"), "{encoding:?}: {text:?}");
        let records = store.records();
        assert!(
            records[0].tokens.total > 0,
            "{encoding:?}: {:?}",
            records[0]
        );
        assert!(records[0].success);
    }
}

#[tokio::test]
async fn an_encoding_nobody_can_read_is_a_502_not_a_mislabelled_body() {
    let mock = MockGemini::start().await;
    mock.set_compression(Compression::Label("compress"));
    let keys = test_keys(2);
    let pool = KeyPool::builder().keys(&keys).build().unwrap();
    let res = stack(&mock, &pool, &MemoryStore::new())
        .oneshot(post(
            "/v1beta/models/gemini-2.0-flash:generateContent",
            prompt_body("hi"),
        ))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert!(res.headers().get(header::CONTENT_ENCODING).is_none());
    let error = json_of(&body_of(res).await);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("\"compress\""), "{message}");
    // Not the key's doing, and another attempt would only buy the same answer again.
    assert_eq!(mock.total(), 1, "one upstream call");
    for key in &keys {
        let snapshot = pool.snapshot(&KeyId::of(key)).unwrap();
        assert_eq!(snapshot.failures, 0, "{key}: {snapshot:?}");
        assert!(matches!(snapshot.status, KeyStatus::Active));
    }
}

#[tokio::test]
async fn other_spellings_of_a_coding_are_decoded() {
    for (encoding, label) in [
        (Encoding::Gzip, "x-gzip"),
        (Encoding::Gzip, "GZIP"),
        (Encoding::Brotli, " br "),
    ] {
        let mock = MockGemini::start().await;
        mock.set_compression(Compression::Spelled(encoding, label));
        let pool = KeyPool::builder().keys(test_keys(1)).build().unwrap();
        let res = stack(&mock, &pool, &MemoryStore::new())
            .oneshot(post(
                "/v1beta/models/gemini-2.0-flash:generateContent",
                prompt_body("spelled"),
            ))
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{label}");
        let answer = json_of(&body_of(res).await);
        assert_eq!(
            answer["candidates"][0]["content"]["parts"][0]["text"], "echo: spelled",
            "{label}"
        );
    }
}

#[tokio::test]
async fn without_decode_an_encoded_error_body_is_not_passed_on() {
    // A stack missing `DecodeLayer`, and a client that asks for gzip: the key layer cannot read
    // (or redact) the error, so it does not hand its bytes on.
    let mock = MockGemini::start().await;
    let key = test_key(9);
    mock.set_fault(&key, Fault::Suspended);
    let pool = KeyPool::builder().keys([&key]).build().unwrap();
    let service = ServiceBuilder::new()
        .layer(KeyRotationLayer::new(pool.clone()))
        .service(upstream(&mock));
    let res = service
        .oneshot(post(
            "/v1beta/models/gemini-2.0-flash:generateContent",
            prompt_body("hi"),
        ))
        .await
        .unwrap();
    assert_eq!(mock.compressed_answers(), 1);
    assert_eq!(res.status(), 403);
    assert!(res.headers().get(header::CONTENT_ENCODING).is_none());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let error = json_of(&body);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DecodeLayer"),
        "{error}"
    );
    // Classified by its status alone: a 403 is the key's.
    assert!(matches!(
        pool.snapshot(&KeyId::of(&key)).unwrap().status,
        KeyStatus::Disabled(_)
    ));
}

#[tokio::test]
async fn openai_chat_over_a_compressed_upstream() {
    for mode in modes() {
        let mock = MockGemini::start().await;
        mock.set_compression(mode.clone());
        let pool = KeyPool::builder().keys(test_keys(1)).build().unwrap();
        let store = MemoryStore::new();
        let service = ServiceBuilder::new()
            .map_response(|res: Response<_>| res.map(axum::body::Body::new))
            .layer(UsageLayer::shared(Arc::new(store.clone())))
            .layer(OpenAiLayer::new(ChatOptions::default()))
            .layer(retry())
            .layer(KeyRotationLayer::new(pool.clone()))
            .layer(DecodeLayer::new())
            .map_err(gemini_balance::BoxError::from)
            .service(upstream(&mock));
        let stack: Stack = BoxCloneSyncService::new(service);
        let chat = |stream: bool| {
            post(
                "/v1/chat/completions",
                json!({
                    "model": "gemini-2.0-flash",
                    "stream": stream,
                    "messages": [{"role": "user", "content": "zipped"}]
                })
                .to_string(),
            )
        };
        let res = stack.clone().oneshot(chat(false)).await.unwrap();
        assert_eq!(res.status(), 200, "{mode:?}");
        let answer = json_of(&body_of(res).await);
        assert_eq!(
            answer["choices"][0]["message"]["content"], "echo: zipped",
            "{mode:?}: {answer}"
        );
        let res = stack.clone().oneshot(chat(true)).await.unwrap();
        assert_eq!(res.status(), 200, "{mode:?}");
        let text = String::from_utf8(body_of(res).await.to_vec()).unwrap();
        let content: String = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| {
                json_of(d.as_bytes())["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(content, "echo: zipped", "{mode:?}: {text}");
        assert!(text.trim_end().ends_with("data: [DONE]"), "{mode:?}");
        assert!(mock.compressed_answers() >= 2, "{mode:?}");
    }
}

#[cfg(feature = "middleware")]
#[tokio::test]
async fn the_reqwest_middleware_path_does_not_pass_on_an_error_it_cannot_read() {
    use gemini_balance::client::middleware::KeyRotationMiddleware;
    let mock = MockGemini::start().await;
    mock.set_compression(Compression::Label("compress"));
    let key = test_key(5);
    mock.set_fault(&key, Fault::Suspended);
    let pool = KeyPool::builder().keys([&key]).build().unwrap();
    let client = reqwest_middleware::ClientBuilder::new(support::client_builder().build().unwrap())
        .with(KeyRotationMiddleware::new(pool.clone()))
        .build();
    let res = client
        .post(format!(
            "{}/v1beta/models/gemini-2.0-flash:generateContent",
            mock.base_url()
        ))
        .header(header::CONTENT_TYPE, "application/json")
        .body(prompt_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert!(res.headers().get(header::CONTENT_ENCODING).is_none());
    let text = res.text().await.unwrap();
    assert!(!text.contains(&key), "{text}");
    assert!(text.contains("could not be read"), "{text}");
}

#[cfg(feature = "middleware")]
#[tokio::test]
async fn the_reqwest_middleware_path_decodes_too() {
    use gemini_balance::client::middleware::KeyRotationMiddleware;
    for encoding in Encoding::ALL {
        let mock = MockGemini::start().await;
        mock.set_compression(Compression::Force(encoding));
        let keys = test_keys(2);
        mock.set_fault(&keys[0], Fault::Suspended);
        let pool = KeyPool::builder().keys(&keys).build().unwrap();
        let client =
            reqwest_middleware::ClientBuilder::new(support::client_builder().build().unwrap())
                .with(KeyRotationMiddleware::new(pool.clone()))
                .build();
        let url = format!(
            "{}/v1beta/models/gemini-2.0-flash:generateContent",
            mock.base_url()
        );
        // The suspended key's error is read, redacted and classified.
        let res = client
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(prompt_body("first"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{encoding:?}");
        assert!(res.headers().get(header::CONTENT_ENCODING).is_none());
        let text = res.text().await.unwrap();
        assert!(!text.contains(&keys[0]), "{encoding:?}: {text}");
        assert!(text.contains("AIza…0001"), "{encoding:?}: {text}");
        assert!(matches!(
            pool.snapshot(&KeyId::of(&keys[0])).unwrap().status,
            KeyStatus::Disabled(_)
        ));
        // The good key's answer arrives decoded.
        let res = client
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(prompt_body("second"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{encoding:?}");
        let answer: Value = json_of(&res.bytes().await.unwrap());
        assert_eq!(
            answer["candidates"][0]["content"]["parts"][0]["text"],
            "echo: second"
        );
        assert!(mock.compressed_answers() >= 2);
    }
}
