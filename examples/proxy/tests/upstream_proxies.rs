//! `PROXIES`: upstream calls go through outbound HTTP proxies, a key always through the same
//! one (across restarts too) when PROXIES_USE_CONSISTENCY_HASH_BY_API_KEY is on.

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

/// `POST /api/proxies/check` with AUTH_TOKEN; returns the status and the answer's text.
async fn check(proxy: &Proxy, body: serde_json::Value) -> (u16, String) {
    let res = support::client_builder()
        .build()
        .unwrap()
        .post(format!("{}/api/proxies/check", proxy.url))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// A loopback address where nothing listens.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// A forward proxy that wants credentials it never accepts: `407` to everything.
async fn demanding_proxy() -> String {
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            [("proxy-authenticate", "Basic realm=\"x\"")],
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A proxy that takes connections and never answers.
async fn silent_proxy() -> String {
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
async fn proxies_are_checked_through_to_base_url_without_showing_credentials() {
    let mock = MockGemini::start().await;
    let alive = ForwardProxy::start().await;
    let key = test_key(1);
    // The credentials are for the test: the forward proxy takes any.
    let with_password = alive.url.replace("http://", "http://checker:s3cret-pass@");
    let dead = format!("http://someone:hunter2@{}", dead_address());
    let demanding = demanding_proxy().await;
    let silent = silent_proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("proxy.log");
    let env = format!(
        "API_KEYS=[\"{key}\"]\nALLOWED_TOKENS=[\"{TOKEN}\"]\nAUTH_TOKEN={ADMIN}\nBASE_URL={}/v1beta\n\
         PROXIES={}\nTIME_OUT=2\nLOG_LEVEL=info\n",
        mock.base_url(),
        serde_json::to_string(&[&with_password, &dead, &demanding, &silent]).unwrap(),
    );
    let proxy = Proxy::start_logging(dir.path(), &env, Some(&log)).await;

    // Every entry, in PROXIES' order: the live one reaches the mock (which answers a key-less
    // request 403, as Gemini does: an answer from the upstream, so the proxy works); the dead
    // one is refused; the demanding one answers 407; the silent one times out after TIME_OUT.
    let started = std::time::Instant::now();
    let (status, text) = check(&proxy, serde_json::json!({"all": true})).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "the checks run at once"
    );
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        answer["target"],
        format!("{}/v1beta/models", mock.base_url())
    );
    let results = answer["results"].as_array().unwrap();
    let summary: Vec<_> = results
        .iter()
        .map(|r| {
            (
                r["entry"].clone(),
                r["ok"].clone(),
                r["status"].clone(),
                r["cached"].clone(),
            )
        })
        .collect();
    use serde_json::json;
    assert_eq!(
        summary,
        [
            (json!(1), json!(true), json!(403), json!(false)),
            (json!(2), json!(false), json!(null), json!(false)),
            (json!(3), json!(false), json!(407), json!(false)),
            (json!(4), json!(false), json!(null), json!(false)),
        ],
        "{text}"
    );
    let alive_addr = alive.url.trim_start_matches("http://");
    assert_eq!(results[0]["proxy"], format!("http://…@{alive_addr}"));
    assert!(
        results[1]["message"]
            .as_str()
            .unwrap()
            .contains("no answer through the proxy"),
        "{text}"
    );
    assert!(
        results[2]["message"].as_str().unwrap().contains("407"),
        "{text}"
    );
    assert!(
        results[3]["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{text}"
    );
    // The check went through the proxy, to BASE_URL, and carried no key.
    assert_eq!(alive.seen().get("-"), Some(&1), "{:?}", alive.seen());
    assert_eq!(mock.unauthenticated(), 1);
    assert_eq!(mock.requests(&key), 0);

    // Within 10 s the result is reused unless a fresh one is asked for.
    let (_, text) = check(&proxy, serde_json::json!({"entry": 1})).await;
    let again: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (
            again["results"][0]["entry"].clone(),
            again["results"][0]["cached"].clone()
        ),
        (json!(1), json!(true))
    );
    assert_eq!(alive.total(), 1);
    let (_, text) = check(&proxy, serde_json::json!({"entry": 1, "use_cache": false})).await;
    assert!(text.contains("\"cached\":false"), "{text}");
    assert_eq!(alive.total(), 2);

    // A proxy not saved yet (typed on the config page) is checked the same way.
    let (status, text) = check(&proxy, serde_json::json!({"proxies": [alive.url]})).await;
    assert_eq!(status, 200, "{text}");
    let typed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(typed["results"][0]["entry"], serde_json::Value::Null);
    assert_eq!(typed["results"][0]["ok"], true);
    assert_eq!(typed["results"][0]["proxy"], alive.url);

    // Bad requests are 400s (404 for an entry PROXIES does not have), naming what is wrong.
    for (body, expected, says) in [
        (json!({}), 400, "all"),
        (json!({"all": true, "entry": 1}), 400, "all"),
        (json!({"entry": 5}), 404, "entry #5"),
        (json!({"entry": 0}), 404, "entry #0"),
        (json!({"proxies": []}), 400, "proxies"),
        (
            json!({"proxies": ["ftp://x:hunter2@host"]}),
            400,
            "proxies: entry #1",
        ),
        (
            json!({"all": true, "max_concurrent": 11}),
            400,
            "max_concurrent",
        ),
        (json!({"all": "yes"}), 400, "request body"),
        // A list to check is at most 50 long; nothing of a longer one is checked.
        (
            json!({"proxies": vec![format!("http://x:hunter2@{}", dead_address()); 51]}),
            400,
            "at most 50 URLs per check, got 51",
        ),
    ] {
        let (status, text) = check(&proxy, body.clone()).await;
        assert_eq!(status, expected, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
    // 50 are checked, each answered.
    let dead = format!("http://{}", dead_address());
    let (status, text) = check(&proxy, json!({"proxies": vec![dead; 50]})).await;
    assert_eq!(status, 200, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 50);
    assert!(results.iter().all(|r| r["ok"] == false), "{text}");
    proxy.stop();

    // No answer above and no log line holds a proxy's password.
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("proxy check"), "the checks are logged");
    for secret in ["hunter2", "s3cret-pass", "checker:"] {
        assert!(!log.contains(secret), "the log holds {secret}");
    }
}
