//! The proxy binary with broken keys in its pool, against the loopback mock Gemini: while a good
//! key exists no client is failed with a key's error, whatever the order of the keys; the 429 a
//! client does get says when to come back; `/health` counts a key cooling down for one model as
//! active.

mod common;

use common::{Proxy, TOKEN};
use serde_json::{json, Value};
use support::{permutations, prompt_body, test_key, test_keys, Fault, MockGemini};

const FLASH: &str = "gemini-2.0-flash";

fn env_file(mock: &MockGemini, keys: &[String], max_retries: u32) -> String {
    format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={}/v1beta\nMAX_RETRIES={max_retries}\n",
        serde_json::to_string(keys).unwrap(),
        mock.base_url()
    )
}

#[derive(Debug, Clone, Copy)]
enum Route {
    Gemini,
    OpenAi,
}

/// One request on `route`; returns the status, the `Retry-After` and the body.
async fn call(proxy: &Proxy, route: Route) -> (u16, Option<String>, String) {
    let client = support::client_builder().build().unwrap();
    let req = match route {
        Route::Gemini => client
            .post(format!(
                "{}/v1beta/models/{FLASH}:generateContent",
                proxy.url
            ))
            .header("x-goog-api-key", TOKEN)
            .body(prompt_body("hello")),
        Route::OpenAi => client
            .post(format!("{}/v1/chat/completions", proxy.url))
            .bearer_auth(TOKEN)
            .body(
                json!({"model": FLASH, "messages": [{"role": "user", "content": "hello"}]})
                    .to_string(),
            ),
    };
    let res = req
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, res.text().await.unwrap())
}

#[tokio::test]
async fn every_key_order_is_served_with_the_default_max_retries() {
    let mock = MockGemini::start().await;
    let keys = test_keys(4);
    let (bad, quota, denied, good) = (&keys[0], &keys[1], &keys[2], &keys[3]);
    mock.set_fault(bad, Fault::InvalidKey);
    mock.set_fault(quota, Fault::rate_limited("37s"));
    mock.set_fault(denied, Fault::Suspended);
    let orders = permutations(&keys);
    assert_eq!(orders.len(), 24);
    for route in [Route::Gemini, Route::OpenAi] {
        for order in &orders {
            mock.reset_counters();
            // A fresh pool (and database) per order.
            let dir = tempfile::tempdir().unwrap();
            let proxy = Proxy::start(dir.path(), &env_file(&mock, order, 3)).await;
            // Round robin: four requests start at each position of the order once.
            for _ in 0..4 {
                let (status, _, body) = call(&proxy, route).await;
                assert_eq!(status, 200, "{route:?} {order:?}: {body}");
            }
            for key in [bad, quota, denied] {
                assert_eq!(mock.requests(key), 1, "{route:?} {order:?}: {key}");
            }
            assert_eq!(mock.requests(good), 4, "{route:?} {order:?}");
            drop(proxy);
        }
    }
}

#[tokio::test]
async fn the_429_that_discovers_the_quota_says_when_to_come_back() {
    let mock = MockGemini::start().await;
    let key = test_key(1);
    mock.set_fault(&key, Fault::rate_limited("37s"));
    for route in [Route::Gemini, Route::OpenAi] {
        let dir = tempfile::tempdir().unwrap();
        let proxy = Proxy::start(dir.path(), &env_file(&mock, std::slice::from_ref(&key), 1)).await;
        mock.reset_counters();
        let (status, retry_after, body) = call(&proxy, route).await;
        assert_eq!(status, 429, "{route:?}: {body}");
        assert_eq!(
            mock.requests(&key),
            1,
            "{route:?}: the quota was met upstream"
        );
        let secs: u64 = retry_after
            .unwrap_or_else(|| panic!("{route:?}: no Retry-After"))
            .parse()
            .unwrap();
        assert!((36..=37).contains(&secs), "{route:?}: {secs}");
    }
}

#[tokio::test]
async fn health_counts_a_key_cooling_for_one_model_as_active() {
    let mock = MockGemini::start().await;
    let keys = test_keys(3);
    mock.set_fault(&keys[0], Fault::rate_limited_for(FLASH, "37s"));
    mock.set_fault(&keys[2], Fault::InvalidKey);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock, &keys, 3)).await;
    for _ in 0..3 {
        assert_eq!(call(&proxy, Route::Gemini).await.0, 200);
    }
    assert_eq!(mock.status_count(&keys[0], 429), 1);
    assert_eq!(mock.status_count(&keys[2], 400), 1);
    let health = support::client_builder()
        .build()
        .unwrap()
        .get(format!("{}/health", proxy.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let health: Value = serde_json::from_slice(&health).unwrap();
    assert_eq!(
        health["keys"],
        json!({
            "total": 3,
            "active": 2,
            "cooling_down": 0,
            "disabled": 1,
            "cooling_for_some_models": 1,
        }),
        "{health}"
    );
}
