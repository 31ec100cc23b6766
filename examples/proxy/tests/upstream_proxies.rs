//! `PROXIES`: upstream calls go through outbound HTTP proxies, a key always through the same
//! one (across restarts too) when PROXIES_USE_CONSISTENCY_HASH_BY_API_KEY is on.

#[path = "../../../tests/support/mod.rs"]
mod support;

mod common;

use gemini_balance::keys::KeyId;
use support::{prompt_body, test_key, MockGemini};

use common::forward_proxy::ForwardProxy;
use common::{startup_error, Proxy, TOKEN};

fn env_file(mock: &MockGemini, keys: &[String], proxies: &[&ForwardProxy], by_key: bool) -> String {
    let proxies: Vec<&str> = proxies.iter().map(|p| p.url.as_str()).collect();
    format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={}/v1beta\nPROXIES={}\n\
         PROXIES_USE_CONSISTENCY_HASH_BY_API_KEY={by_key}\n",
        serde_json::to_string(keys).unwrap(),
        mock.base_url(),
        serde_json::to_string(&proxies).unwrap(),
    )
}

async fn ask(proxy: &Proxy, times: usize) {
    let client = support::client_builder().build().unwrap();
    for i in 0..times {
        let res = client
            .post(format!(
                "{}/v1beta/models/gemini-2.0-flash:generateContent",
                proxy.url
            ))
            .header("x-goog-api-key", TOKEN)
            .header("content-type", "application/json")
            .body(prompt_body(&format!("through a proxy {i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
}

/// Two test keys that the consistency hash puts on different proxies of two.
fn keys_on_both_proxies() -> (String, String) {
    let route = |key: &str| KeyId::of(key).digest() % 2;
    let first = test_key(1);
    let other = (2..100)
        .map(test_key)
        .find(|k| route(k) != route(&first))
        .unwrap();
    if route(&first) == 0 {
        (first, other)
    } else {
        (other, first)
    }
}

#[tokio::test]
async fn each_key_keeps_its_proxy_across_restarts() {
    let mock = MockGemini::start().await;
    let (a, b) = (ForwardProxy::start().await, ForwardProxy::start().await);
    // `on_a` hashes to PROXIES[0], `on_b` to PROXIES[1].
    let (on_a, on_b) = keys_on_both_proxies();
    let keys = [on_a.clone(), on_b.clone()];
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(&mock, &keys, &[&a, &b], true);

    let proxy = Proxy::start(dir.path(), &env).await;
    ask(&proxy, 6).await;
    proxy.stop();
    // Every call went through a proxy, and both keys were used.
    assert_eq!(mock.total(), 6);
    assert_eq!(a.total() + b.total(), 6);
    assert!(mock.requests(&on_a) > 0 && mock.requests(&on_b) > 0);
    assert_eq!(a.seen().keys().collect::<Vec<_>>(), [&on_a]);
    assert_eq!(b.seen().keys().collect::<Vec<_>>(), [&on_b]);

    // After a restart each key takes the same proxy again.
    let proxy = Proxy::start(dir.path(), &env).await;
    ask(&proxy, 6).await;
    proxy.stop();
    assert_eq!(a.total() + b.total(), 12);
    assert_eq!(a.seen().keys().collect::<Vec<_>>(), [&on_a]);
    assert_eq!(b.seen().keys().collect::<Vec<_>>(), [&on_b]);
    assert_eq!(a.seen()[&on_a], mock.requests(&on_a));
    assert_eq!(b.seen()[&on_b], mock.requests(&on_b));
}

#[tokio::test]
async fn without_the_consistency_hash_proxies_take_turns() {
    let mock = MockGemini::start().await;
    let (a, b) = (ForwardProxy::start().await, ForwardProxy::start().await);
    let key = test_key(1);
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(&mock, std::slice::from_ref(&key), &[&a, &b], false);
    let proxy = Proxy::start(dir.path(), &env).await;
    ask(&proxy, 4).await;
    proxy.stop();
    assert_eq!(a.seen()[&key], 2);
    assert_eq!(b.seen()[&key], 2);
    assert_eq!(mock.requests(&key), 4);
}

#[test]
fn an_invalid_proxy_stops_startup_naming_proxies() {
    let stderr =
        startup_error("PROXIES=[\"http://127.0.0.1:3128\", \"ftp://user:hunter2@host\"]\n");
    assert!(stderr.contains("PROXIES: entry #2"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// `PUT /api/config` with AUTH_TOKEN; returns the status and the JSON answer.
async fn put_config(proxy: &Proxy, change: serde_json::Value) -> (u16, serde_json::Value) {
    let res = support::client_builder()
        .build()
        .unwrap()
        .put(format!("{}/api/config", proxy.url))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(change.to_string())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (
        status,
        serde_json::from_slice(&res.bytes().await.unwrap()).unwrap(),
    )
}

const ADMIN: &str = "sk-admin-token-proxies";

#[tokio::test]
async fn proxies_change_while_running() {
    let mock = MockGemini::start().await;
    let a = ForwardProxy::start().await;
    let key = test_key(1);
    let dir = tempfile::tempdir().unwrap();
    let env = format!(
        "{}AUTH_TOKEN={ADMIN}\n",
        env_file(&mock, std::slice::from_ref(&key), &[], true)
    );
    let proxy = Proxy::start(dir.path(), &env).await;
    ask(&proxy, 1).await;
    assert_eq!(a.total(), 0, "no proxy configured: direct");

    let (status, answer) = put_config(&proxy, serde_json::json!({"PROXIES": [a.url]})).await;
    assert_eq!(status, 200, "{answer}");
    ask(&proxy, 2).await;
    assert_eq!(a.seen()[&key], 2);
    assert_eq!(mock.requests(&key), 3);

    // An invalid entry is refused, naming PROXIES, and nothing changes.
    let (status, answer) = put_config(
        &proxy,
        serde_json::json!({"PROXIES": [a.url, "gopher://user:hunter2@host"]}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("PROXIES"), "{message}");
    assert!(!answer.to_string().contains("hunter2"), "{answer}");
    ask(&proxy, 1).await;
    assert_eq!(a.seen()[&key], 3);
    proxy.stop();
}
