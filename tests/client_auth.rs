//! `auth::ClientAuthLayer` in front of the example's axum app, over loopback HTTP against the
//! mock Gemini: only an allowed client token gets through, wherever the client put it; the
//! token never reaches the upstream; the usage record names the client by fingerprint; a
//! refusal is a `401` in the route's API format that costs no key and writes no record.

#[path = "../examples/embed_axum.rs"]
#[allow(dead_code)]
mod embed_axum;

use std::time::Duration;

use gemini_balance::auth::{ClientAuthLayer, ClientTokens};
use gemini_balance::keys::KeyPool;
use gemini_balance::store::MemoryStore;
use gemini_balance::stream::pseudo::PseudoStreamLayer;
use serde_json::Value;
use support::{prompt_body, test_keys, MockGemini};

const TOKEN: &str = "sk-client-token-0123456789";
const PATH: &str = "/v1beta/models/gemini-2.0-flash:generateContent";

struct Setup {
    mock: MockGemini,
    store: MemoryStore,
    url: String,
    client: reqwest::Client,
    _server: tokio::task::JoinHandle<()>,
}

async fn setup() -> Setup {
    let mock = MockGemini::start().await;
    let store = MemoryStore::new();
    let pool = KeyPool::builder().keys(test_keys(1)).build().unwrap();
    let client = support::client_builder().build().unwrap();
    let app = embed_axum::app(
        pool,
        store.clone(),
        PseudoStreamLayer::new(),
        embed_axum::Upstream::new(client.clone(), &mock.base_url()),
    )
    // Around the whole router: also an unknown path is refused before anything else.
    .layer(ClientAuthLayer::new(ClientTokens::new([
        TOKEN,
        "sk-other-token-0123456789",
    ])));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Setup {
        mock,
        store,
        url,
        client,
        _server: server,
    }
}

impl Setup {
    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(prompt_body("hello"))
    }

    async fn records_after_a_while(&self) -> usize {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.store.records().len()
    }
}

#[tokio::test]
async fn a_request_without_an_allowed_token_is_refused_in_its_api_format_and_costs_nothing() {
    let s = setup().await;
    let cases = [
        s.post(PATH),
        s.post(PATH)
            .header("x-goog-api-key", "sk-wrong-token-0123456789"),
        s.post(&format!("{PATH}?key=sk-client-token-012345678")),
    ];
    for req in cases {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401);
        let body: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        assert_eq!(body["error"]["code"], 401, "{body}");
        assert_eq!(body["error"]["status"], "UNAUTHENTICATED", "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client token"));
    }
    // OpenAI's path: OpenAI's error shape.
    let res = s
        .post("/v1/chat/completions")
        .bearer_auth("sk-wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert!(body["error"]["type"].is_string(), "{body}");
    assert!(body["error"].get("status").is_none(), "{body}");

    assert_eq!(s.mock.total(), 0, "a refused request reached the upstream");
    assert_eq!(
        s.records_after_a_while().await,
        0,
        "a refused request was recorded"
    );
}

#[tokio::test]
async fn an_allowed_token_gets_through_from_any_place_and_never_reaches_the_upstream() {
    let s = setup().await;
    let cases = [
        s.post(PATH).header("x-goog-api-key", TOKEN),
        s.post(PATH).bearer_auth(TOKEN),
        s.post(&format!("{PATH}?key={TOKEN}")),
    ];
    for req in cases {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(s.mock.total(), 3);
    assert!(
        !s.mock.saw_credential(TOKEN),
        "the client token reached the upstream"
    );
    assert!(
        s.mock.saw_credential(&test_keys(1)[0]),
        "the pool's key was not used"
    );
    let last = s.mock.last_request().unwrap();
    assert!(!format!("{last:?}").contains(TOKEN), "{last:?}");

    for _ in 0..100 {
        if s.store.records().len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let records = s.store.records();
    assert_eq!(records.len(), 3);
    for record in &records {
        let client = record.client.as_ref().expect("the record names the client");
        assert_eq!(client.mask(), "sk-c…6789");
        assert!(!format!("{record:?}").contains(TOKEN));
    }
}
