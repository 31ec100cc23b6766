//! Image URLs in OpenAI chat requests: fetched by the proxy (bounded, images only, no private
//! addresses unless allowed) and sent to Gemini as `inlineData`.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};
use support::{test_keys, MockGemini};

use common::{Proxy, TOKEN};

/// Not a real PNG beyond its signature, but the proxy only checks the content type.
const PICTURE: &[u8] = b"\x89PNG\r\n\x1a\n a picture of a cat";

/// One more byte than the proxy fetches.
const TOO_BIG: usize = 14 * 1024 * 1024 + 1;

/// A loopback web server with a few resources; counts every request it gets.
struct Images {
    base: String,
    hits: Arc<AtomicU64>,
}

impl Images {
    async fn start() -> Images {
        let hits = Arc::new(AtomicU64::new(0));
        let counted = hits.clone();
        let app = Router::new()
            .route(
                "/cat.png",
                get(|| async { ([(header::CONTENT_TYPE, "image/png")], PICTURE) }),
            )
            .route(
                "/moved",
                get(|| async {
                    (
                        axum::http::StatusCode::FOUND,
                        [(header::LOCATION, "/cat.png")],
                    )
                }),
            )
            .route(
                "/big.png",
                get(|| async {
                    // Streamed without a length, so the limit is enforced while reading.
                    Response::builder()
                        .header(header::CONTENT_TYPE, "image/png")
                        .body(Body::new(Zeros(TOO_BIG)))
                        .unwrap()
                }),
            )
            .route(
                "/page.html",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                        "<html>not an image</html>",
                    )
                        .into_response()
                }),
            )
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let counted = counted.clone();
                    async move {
                        counted.fetch_add(1, Ordering::SeqCst);
                        next.run(req).await
                    }
                },
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Images { base, hits }
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// `n` zero bytes in 64 KiB frames, with no length announced (sent chunked).
struct Zeros(usize);

impl http_body::Body for Zeros {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let left = &mut self.get_mut().0;
        if *left == 0 {
            return std::task::Poll::Ready(None);
        }
        let len = (*left).min(65_536);
        *left -= len;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from(vec![
            0u8;
            len
        ])))))
    }
}

fn env_file(mock: &MockGemini, allow_private: bool) -> String {
    format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={}/v1beta\n\
         IMAGE_FETCH_ALLOW_PRIVATE_NETWORKS={allow_private}\n",
        serde_json::to_string(&test_keys(1)).unwrap(),
        mock.base_url()
    )
}

/// Asks about the image at `url`; returns the status and the JSON answer.
async fn ask_about(proxy: &Proxy, url: &str) -> (u16, Value) {
    let client = support::client_builder().build().unwrap();
    let body = json!({
        "model": "gemini-2.0-flash",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is in this picture?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]}],
    });
    let res = client
        .post(format!("{}/v1/chat/completions", proxy.url))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (
        status,
        serde_json::from_slice(&res.bytes().await.unwrap()).unwrap(),
    )
}

/// The parts of the last request the mock received.
fn parts_sent_upstream(mock: &MockGemini) -> Value {
    let last = mock.last_request().unwrap();
    let body: Value = serde_json::from_slice(&last.body).unwrap();
    body["contents"][0]["parts"].clone()
}

#[tokio::test]
async fn a_fetched_image_reaches_gemini_as_inline_data() {
    let mock = MockGemini::start().await;
    let images = Images::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock, true)).await;

    for path in ["/cat.png", "/moved"] {
        let (status, answer) = ask_about(&proxy, &format!("{}{path}", images.base)).await;
        assert_eq!(status, 200, "{path}: {answer}");
        let parts = parts_sent_upstream(&mock);
        assert_eq!(parts[0]["text"], "what is in this picture?");
        let inline = &parts[1]["inlineData"];
        assert_eq!(inline["mimeType"], "image/png", "{path}");
        let data = base64::engine::general_purpose::STANDARD
            .decode(inline["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(data, PICTURE, "{path}");
    }
    proxy.stop();
}

#[tokio::test]
async fn oversized_and_non_image_answers_are_refused_with_a_400() {
    let mock = MockGemini::start().await;
    let images = Images::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock, true)).await;

    for (path, expected) in [
        ("/big.png", "larger than 14 MiB"),
        ("/page.html", "text/html, not an image"),
        ("/missing.png", "404"),
    ] {
        let url = format!("{}{path}", images.base);
        let (status, answer) = ask_about(&proxy, &url).await;
        assert_eq!(status, 400, "{path}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(&url), "{message}");
        assert!(message.contains(expected), "{message}");
        assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");
    }
    assert_eq!(mock.total(), 0, "nothing went upstream");
    proxy.stop();
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let mock = MockGemini::start().await;
    let images = Images::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock, false)).await;

    let port = images.base.rsplit(':').next().unwrap().to_owned();
    for url in [
        format!("{}/cat.png", images.base),
        format!("http://localhost:{port}/cat.png"),
        format!("http://[::ffff:127.0.0.1]:{port}/cat.png"),
    ] {
        let (status, answer) = ask_about(&proxy, &url).await;
        assert_eq!(status, 400, "{url}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("loopback"), "{message}");
    }
    assert_eq!(images.hits(), 0, "the image server was never contacted");
    assert_eq!(mock.total(), 0);
    proxy.stop();
}

#[tokio::test]
async fn a_data_url_whose_base64_is_broken_is_refused_naming_the_field() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock, false)).await;

    for data in ["!!!not base64!!!", "iVBORw0KGgo=A", "iVBO Rw0K", "%3D%3D"] {
        let (status, answer) = ask_about(&proxy, &format!("data:image/png;base64,{data}")).await;
        assert_eq!(status, 400, "{data}: {answer}");
        assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");
        assert_eq!(
            answer["error"]["param"], "messages[0].content[1].image_url.url",
            "{answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("not valid base64"), "{message}");
    }
    assert_eq!(mock.total(), 0, "nothing went upstream");

    // Valid base64 of either alphabet, padded or not, still goes through as inline data.
    let standard = base64::engine::general_purpose::STANDARD.encode(PICTURE);
    let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(PICTURE);
    for data in [standard, url_safe] {
        let (status, answer) = ask_about(&proxy, &format!("data:image/png;base64,{data}")).await;
        assert_eq!(status, 200, "{data}: {answer}");
        assert_eq!(parts_sent_upstream(&mock)[1]["inlineData"]["data"], data);
    }
    proxy.stop();
}
