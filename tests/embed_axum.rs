//! `examples/embed_axum.rs` itself, end to end: its app (compiled here from the example's own
//! file) over loopback HTTP in front of the mock Gemini. The handler must forward the request
//! the layers hand it (query included, a pseudo stream's rewrite included), and only the API
//! route may go through the layers.

#[path = "../examples/embed_axum.rs"]
#[allow(dead_code)]
mod embed_axum;

use std::time::Duration;

use gemini_balance::keys::KeyPool;
use gemini_balance::sse::decode_all;
use gemini_balance::store::MemoryStore;
use gemini_balance::stream::pseudo::PseudoStreamLayer;
use gemini_balance::usage::{Completion, RequestRecord};
use serde_json::Value;
use support::{prompt_body, replies, test_keys, MockGemini};

const FLASH: &str = "gemini-2.0-flash";

struct Setup {
    mock: MockGemini,
    store: MemoryStore,
    pool: KeyPool,
    url: String,
    client: reqwest::Client,
    _server: tokio::task::JoinHandle<()>,
}

async fn setup(pseudo: bool) -> Setup {
    let mock = MockGemini::start().await;
    let base = mock.base_url();
    setup_with(mock, pseudo, &base).await
}

async fn setup_with(mock: MockGemini, pseudo: bool, base: &str) -> Setup {
    let store = MemoryStore::new();
    let pool = KeyPool::builder().keys(test_keys(1)).build().unwrap();
    let client = support::client_builder().build().unwrap();
    let app = embed_axum::app(
        pool.clone(),
        store.clone(),
        PseudoStreamLayer::new().enabled(pseudo),
        embed_axum::Upstream::new(client.clone(), base),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Setup {
        mock,
        store,
        pool,
        url,
        client,
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
    async fn record(&self) -> RequestRecord {
        for _ in 0..200 {
            let records = self.store.records();
            if !records.is_empty() {
                // A second record (a double commit) would come right after the first.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let records = self.store.records();
                assert_eq!(records.len(), 1, "{records:?}");
                return records[0].clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no usage record");
    }

    /// The pool's (requests, successes, failures) for its one key.
    fn pool_counts(&self) -> (u64, u64, u64) {
        let key = &self.pool.snapshots()[0];
        (key.requests, key.successes, key.failures)
    }
}

/// The `usageMetadata` of the last event of an SSE body.
fn last_usage(events: &[Value]) -> &Value {
    &events.last().expect("an event")["usageMetadata"]
}

fn event_json(body: &[u8]) -> Vec<Value> {
    decode_all(body)
        .iter()
        .map(|e| e.json::<Value>().expect("a JSON event"))
        .collect()
}

fn text_of(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|e| e["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .collect()
}

#[tokio::test]
async fn a_plain_call_is_served_and_recorded() {
    let s = setup(false).await;
    let res = s
        .post(
            &format!("/v1beta/models/{FLASH}:generateContent"),
            prompt_body("hello"),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(
        body["candidates"][0]["content"]["parts"][0]["text"],
        replies::answer_text("hello")
    );

    let r = s.record().await;
    assert!(r.success);
    assert_eq!(r.model.as_deref(), Some(FLASH));
    assert_eq!(
        r.tokens.total,
        body["usageMetadata"]["totalTokenCount"].as_u64().unwrap()
    );
    assert_eq!(s.pool_counts(), (1, 1, 0));
}

#[tokio::test]
async fn a_real_stream_keeps_its_query_and_answers_sse() {
    let s = setup(false).await;
    let res = s
        .post(
            &format!("/v1beta/models/{FLASH}:streamGenerateContent?alt=sse"),
            prompt_body("stream me"),
        )
        .await;
    assert_eq!(res.status(), 200);
    // Without `?alt=sse` upstream, Gemini streams a JSON array (`application/json`).
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let events = event_json(&res.bytes().await.unwrap());
    assert!(events.len() > 1, "{events:?}");
    assert_eq!(text_of(&events), replies::answer_text("stream me"));

    let seen = s.mock.last_request().unwrap();
    assert_eq!(seen.uri.query(), Some("alt=sse"));
    let r = s.record().await;
    assert!(r.success && r.streamed);
    assert_eq!(
        r.tokens.total,
        last_usage(&events)["totalTokenCount"].as_u64().unwrap()
    );
    assert_eq!(s.pool_counts(), (1, 1, 0));
}

#[tokio::test]
async fn a_pseudo_stream_goes_upstream_as_generate_content() {
    let s = setup(true).await;
    let res = s
        .post(
            &format!("/v1beta/models/{FLASH}:streamGenerateContent?alt=sse"),
            prompt_body("fake it"),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let events = event_json(&res.bytes().await.unwrap());
    // The whole answer in one event, not an error event.
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].get("error").is_none(), "{events:?}");
    assert_eq!(text_of(&events), replies::answer_text("fake it"));

    // The handler forwarded the rewritten request, not the path axum routed.
    let seen = s.mock.last_request().unwrap();
    assert_eq!(
        seen.uri.path(),
        format!("/v1beta/models/{FLASH}:generateContent")
    );
    assert_eq!(seen.uri.query(), None);

    let r = s.record().await;
    assert!(r.success, "{r:?}");
    assert!(r.streamed);
    assert_eq!(r.status, 200);
    assert_eq!(r.completion, Completion::Complete);
    assert_eq!(
        r.tokens.total,
        last_usage(&events)["totalTokenCount"].as_u64().unwrap()
    );
    assert_eq!(s.pool_counts(), (1, 1, 0));
}

#[tokio::test]
async fn an_unknown_route_does_not_reach_the_layers() {
    let s = setup(true).await;
    let res = s
        .client
        .get(format!("{}/wp-login.php", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = s.post("/v1beta/cachedContents", prompt_body("x")).await;
    assert_eq!(res.status(), 404);
    // The API path with the wrong method: axum's 405, outside the layers.
    let res = s
        .client
        .get(format!("{}/v1beta/models/{FLASH}:generateContent", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);

    // `/stats` is served, and says nothing happened.
    let stats = s
        .client
        .get(format!("{}/stats", s.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let stats: Value = serde_json::from_slice(&stats).unwrap();
    assert_eq!(stats["requests"], 0);
    assert_eq!(s.mock.total(), 0);
    assert!(s.store.records().is_empty());
    assert_eq!(s.pool_counts(), (0, 0, 0));
}

#[tokio::test]
async fn an_unreachable_upstream_is_not_the_keys_fault() {
    // A port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let s = setup_with(MockGemini::start().await, false, &base).await;
    for _ in 0..4 {
        let res = s
            .post(
                &format!("/v1beta/models/{FLASH}:generateContent"),
                prompt_body("x"),
            )
            .await;
        assert_eq!(res.status(), 502);
        let body: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        assert_eq!(body["error"]["code"], 502, "{body}");
    }
    // Four outages, more than the pool's 3 failures allowed: the key is still usable.
    let key = &s.pool.snapshots()[0];
    assert_eq!(key.failures, 0, "{key:?}");
    assert!(s.pool.keys_to_probe().is_empty(), "{key:?}");
}
