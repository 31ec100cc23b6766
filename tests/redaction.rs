//! Keys quoted by the upstream never reach the caller or a record, whatever the body: a JSON
//! error, a relay's HTML page in ISO-8859-1, an error event inside a 200 stream; Google keys
//! and keys of any other shape; plain or compressed.
//!
//! ```text
//! test ─▶ Usage ─▶ Retry ─▶ KeyRotation ─▶ Decode ─▶ ReqwestService ─▶ mock Gemini
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gemini_balance::client::ReqwestService;
use gemini_balance::decode::DecodeLayer;
use gemini_balance::keys::{KeyPool, KeyRotationLayer};
use gemini_balance::retry::RetryLayer;
use gemini_balance::store::MemoryStore;
use gemini_balance::usage::UsageLayer;
use http::{header, Request, Response};
use http_body_util::BodyExt;
use support::{prompt_body, test_key, Compression, Encoding, Fault, MockGemini};
use tower::{ServiceBuilder, ServiceExt};

/// A key of another shape than Google's (an OpenAI-compatible upstream's, say).
const OTHER_KEY: &str = "sk-mock-9f8e7d6c5b4a39281706f5e4d3c2b1a0";

fn keys() -> [String; 2] {
    [test_key(1), OTHER_KEY.to_owned()]
}

async fn call(
    mock: &MockGemini,
    key: &str,
    path: &str,
) -> (Response<axum::body::Body>, MemoryStore) {
    let pool = KeyPool::builder().keys([key]).build().unwrap();
    let store = MemoryStore::new();
    let upstream = ReqwestService::new(support::client_builder().build().unwrap())
        .base_url(&mock.base_url())
        .unwrap();
    let stack = ServiceBuilder::new()
        .map_response(|res: Response<_>| res.map(axum::body::Body::new))
        .layer(UsageLayer::shared(Arc::new(store.clone())))
        .layer(
            RetryLayer::new()
                .max_attempts(2)
                .base_delay(Duration::from_millis(1)),
        )
        .layer(KeyRotationLayer::new(pool))
        .layer(DecodeLayer::new())
        .service(upstream);
    let req = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(reqwest::Body::from(prompt_body("redact me")))
        .unwrap();
    (stack.oneshot(req).await.unwrap(), store)
}

fn assert_clean(what: &str, key: &str, bytes: &[u8]) {
    let lossy = String::from_utf8_lossy(bytes);
    assert!(!lossy.contains(key), "{what}: the key leaked: {lossy}");
}

fn assert_records_clean(what: &str, key: &str, store: &MemoryStore) {
    let records = store.records();
    assert!(!records.is_empty(), "{what}: no record");
    assert_clean(what, key, format!("{records:?}").as_bytes());
}

#[tokio::test]
async fn a_latin1_error_page_quoting_the_key_is_redacted_by_bytes() {
    for compression in [Compression::Off, Compression::Force(Encoding::Gzip)] {
        for key in keys() {
            let what = format!("{compression:?} {key}");
            let mock = MockGemini::start().await;
            mock.set_compression(compression.clone());
            mock.set_fault(&key, Fault::HtmlPageQuotingKey);
            let (res, store) = call(
                &mock,
                &key,
                "/v1beta/models/gemini-2.0-flash:generateContent",
            )
            .await;
            assert_eq!(res.status(), 500, "{what}");
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert_clean(&what, &key, &body);
            // The page is passed on in its own encoding, only the key replaced.
            assert!(
                body.windows(13).any(|w| w == b"Requ\xeate \xe9chou"),
                "{what}: {body:?}"
            );
            // ASCII stand-ins, so that the page still reads in its own encoding.
            let stand_in = format!(
                "{}{}{}",
                &key[..4],
                "*".repeat(key.len() - 8),
                &key[key.len() - 4..]
            );
            assert!(
                String::from_utf8_lossy(&body).contains(&stand_in),
                "{what}: {body:?}"
            );
            assert_records_clean(&what, &key, &store);
            let messages: Vec<_> = store.records()[0]
                .attempt_log
                .iter()
                .filter_map(|a| a.error_message.clone())
                .collect();
            assert_eq!(messages.len(), 2, "{what}");
        }
    }
}

#[tokio::test]
async fn a_json_error_quoting_a_key_of_any_shape_is_redacted() {
    for key in keys() {
        let mock = MockGemini::start().await;
        mock.set_fault(&key, Fault::Suspended);
        let (res, store) = call(
            &mock,
            &key,
            "/v1beta/models/gemini-2.0-flash:generateContent",
        )
        .await;
        assert_eq!(res.status(), 403, "{key}");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_clean(&key, &key, &body);
        assert_records_clean(&key, &key, &store);
    }
}

#[tokio::test]
async fn an_error_event_inside_a_stream_is_redacted() {
    for compression in [Compression::Off, Compression::Force(Encoding::Zstd)] {
        for key in keys() {
            let what = format!("{compression:?} {key}");
            let mock = MockGemini::start().await;
            mock.set_compression(compression.clone());
            mock.set_fault(&key, Fault::StreamErrorQuotingKey);
            let (res, store) = call(
                &mock,
                &key,
                "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            )
            .await;
            assert_eq!(res.status(), 200, "{what}");
            let body: Bytes = res.into_body().collect().await.unwrap().to_bytes();
            assert_clean(&what, &key, &body);
            let text = String::from_utf8(body.to_vec()).unwrap();
            assert!(
                text.contains("Internal error encountered for api_key:"),
                "{what}: the event itself is kept: {text}"
            );
            assert_records_clean(&what, &key, &store);
        }
    }
}

#[tokio::test]
async fn a_key_cut_at_the_error_body_cap_loses_its_start_too() {
    use gemini_balance::keys::future::MAX_ERROR_BODY;
    let key = test_key(3);
    for shown in [1usize, 4, 30, 38] {
        let pool = KeyPool::builder().keys([&key]).build().unwrap();
        // An error body whose key starts just before the cap and ends after it.
        let filler = MAX_ERROR_BODY - 5 - shown;
        let frames = vec![
            Bytes::from(vec![b'x'; filler]),
            Bytes::from(format!("key: {}", &key[..shown])),
            Bytes::from(format!("{} refused", &key[shown..])),
        ];
        let upstream = tower::service_fn(move |_req: Request<String>| {
            let body = Frames(frames.clone().into());
            async move {
                Ok::<_, std::convert::Infallible>(
                    Response::builder().status(500).body(body).unwrap(),
                )
            }
        });
        let res = ServiceBuilder::new()
            .layer(KeyRotationLayer::new(pool.clone()))
            .service(upstream)
            .oneshot(Request::new(String::new()))
            .await
            .unwrap();
        assert_eq!(res.status(), 500);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(text.len() <= MAX_ERROR_BODY, "{shown}: cut at the cap");
        assert!(
            !text.contains(&format!("key: {}", &key[..shown])),
            "{shown}: the start of the key leaked: {}",
            &text[text.len().saturating_sub(48)..]
        );
    }
}

/// A body of these frames, one after another.
struct Frames(std::collections::VecDeque<Bytes>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}
