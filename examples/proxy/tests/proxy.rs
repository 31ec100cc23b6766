//! The proxy binary end to end: started with a `.env` against the loopback mock Gemini, used
//! the Gemini way and the OpenAI way, stopped with SIGTERM, its SQLite database checked.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Proxy, TOKEN};

use gemini_balance::store::SqliteStore;
use serde_json::{json, Value};
use support::{prompt_body, test_key, test_keys, Fault, MockGemini};

fn env_file(mock: &MockGemini) -> String {
    let keys: Vec<String> = test_keys(2);
    format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={}/v1beta\nMAX_RETRIES=3\n",
        serde_json::to_string(&keys).unwrap(),
        mock.base_url()
    )
}

#[tokio::test]
async fn serves_both_apis_records_usage_and_keeps_key_state() {
    let mock = MockGemini::start().await;
    mock.set_fault(&test_key(1), Fault::InvalidKey);
    let dir = tempfile::tempdir().unwrap();
    let env = format!(
        "{}CUSTOM_HEADERS={{\"X-Custom-Tag\": \"gemini-balance\"}}\n",
        env_file(&mock)
    );
    let proxy = Proxy::start(dir.path(), &env).await;
    let client = support::client_builder().build().unwrap();

    // Gemini, with the token as ?key= and the `:` encoded as the google-genai SDK sends it.
    let res = client
        .post(format!(
            "{}/v1/models/gemini-2.0-flash%3AgenerateContent?key={TOKEN}",
            proxy.url
        ))
        .header("content-type", "application/json")
        .body(prompt_body("hello proxy"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let answer: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(
        answer["candidates"][0]["content"]["parts"][0]["text"],
        "echo: hello proxy"
    );

    // OpenAI, with the token as a Bearer.
    let res = client
        .post(format!("{}/v1/chat/completions", proxy.url))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(
            json!({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "hi openai"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let answer: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "echo: hi openai"
    );

    // A wrong token is refused in the route's format, and the upstream never hears of it.
    let res = client
        .post(format!("{}/v1/chat/completions", proxy.url))
        .header("authorization", "Bearer nope")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let error: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(!mock.saw_credential(TOKEN));
    assert!(!mock.saw_credential("nope"));

    // CUSTOM_HEADERS reach the upstream.
    let last = mock.last_request().unwrap();
    assert_eq!(last.headers["x-custom-tag"], "gemini-balance");

    proxy.stop();

    // Usage rows with token counts; the invalid key's state survived in the database.
    let db = dir.path().join("data/default_db.db");
    let store = SqliteStore::open(&db).unwrap();
    let summary = store.summary().unwrap();
    assert_eq!(summary.last_hour.calls, 2);
    assert_eq!(summary.last_hour.successes, 2);
    assert!(summary.last_hour.tokens.total > 0);
    assert!(
        summary.last_hour.failed_attempts >= 1,
        "the invalid key's attempt is counted"
    );
    let states = gemini_balance::store::KeyStateStore::load_key_states(&store).unwrap();
    let invalid = gemini_balance::keys::KeyId::of(&test_key(1));
    let state = states
        .iter()
        .find(|s| s.id == invalid)
        .expect("state of the invalid key");
    assert!(matches!(
        state.status,
        gemini_balance::keys::KeyStatus::Disabled(_)
    ));
    store.shutdown().unwrap();

    // No key in the database files.
    for entry in std::fs::read_dir(dir.path().join("data")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for key in test_keys(2) {
            assert!(
                !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                "a key is in the database"
            );
        }
        assert!(!bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()));
    }
}

#[tokio::test]
async fn a_restart_keeps_a_disabled_key_out() {
    let mock = MockGemini::start().await;
    mock.set_fault(&test_key(1), Fault::InvalidKey);
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(&mock);
    let ask = |url: String| async move {
        support::client_builder()
            .build()
            .unwrap()
            .post(format!(
                "{url}/v1beta/models/gemini-2.0-flash:generateContent"
            ))
            .header("x-goog-api-key", TOKEN)
            .header("content-type", "application/json")
            .body(prompt_body("x"))
            .send()
            .await
            .unwrap()
            .status()
    };
    let proxy = Proxy::start(dir.path(), &env).await;
    assert_eq!(ask(proxy.url.clone()).await, 200);
    proxy.stop();
    let before = mock.requests(&test_key(1));
    assert_eq!(before, 1);

    // After the restart the invalid key is still disabled: it is not tried again.
    let proxy = Proxy::start(dir.path(), &env).await;
    for _ in 0..4 {
        assert_eq!(ask(proxy.url.clone()).await, 200);
    }
    assert_eq!(mock.requests(&test_key(1)), before);
    proxy.stop();
}

#[test]
fn an_invalid_setting_stops_startup_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "MAX_RETRIES=lots\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gemini-balance-proxy"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("MAX_RETRIES"), "{stderr}");
}

#[tokio::test]
async fn model_names_lists_and_filters_on_the_gemini_routes() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = format!(
        "{}THINKING_MODELS=[\"gemini-2.5-flash\"]\nFILTERED_MODELS=[\"gemini-2.5-pro\"]\n",
        env_file(&mock)
    );
    let proxy = Proxy::start(dir.path(), &env).await;
    let client = support::client_builder().build().unwrap();
    let get = |path: &str, bearer: bool| {
        let req = client.get(format!("{}{path}", proxy.url));
        if bearer {
            req.header("authorization", format!("Bearer {TOKEN}"))
        } else {
            req.header("x-goog-api-key", TOKEN)
        }
    };

    // Gemini shape: the filtered model is gone; derived models follow their base.
    let list: Value = serde_json::from_slice(
        &get("/v1beta/models", false)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "models/gemini-2.0-flash",
            "models/gemini-2.5-flash",
            "models/gemini-2.5-flash-search",
            "models/gemini-2.5-flash-non-thinking",
            "models/text-embedding-004"
        ]
    );

    // `GET /v1/models`: OpenAI's shape for a Bearer client, Gemini's for a Gemini client.
    let openai: Value = serde_json::from_slice(
        &get("/v1/models", true)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(openai["object"], "list");
    assert!(openai["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "gemini-2.5-flash-search"));
    let gemini: Value = serde_json::from_slice(
        &get("/v1/models", false)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(gemini["models"].is_array());

    // A suffixed model reaches the upstream under its real name.
    let res = client
        .post(format!(
            "{}/v1beta/models/gemini-2.5-flash-search-non-thinking:generateContent",
            proxy.url
        ))
        .header("x-goog-api-key", TOKEN)
        .header("content-type", "application/json")
        .body(prompt_body("search this"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        mock.last_request().unwrap().uri.path(),
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );

    // A filtered model is refused without any upstream call.
    let before = mock.total();
    let res = client
        .post(format!(
            "{}/v1beta/models/gemini-2.5-pro:generateContent",
            proxy.url
        ))
        .header("x-goog-api-key", TOKEN)
        .body(prompt_body("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let error: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(error["error"]["status"], "INVALID_ARGUMENT");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("gemini-2.5-pro"));
    assert_eq!(mock.total(), before);
    proxy.stop();
}

#[tokio::test]
async fn the_periodic_recheck_brings_a_healed_key_back() {
    let mock = MockGemini::start().await;
    mock.set_fault(&test_key(1), Fault::InvalidKey);
    let dir = tempfile::tempdir().unwrap();
    // A re-check every 0.9 s.
    let env = format!(
        "{}CHECK_INTERVAL_HOURS=0.00025\nTEST_MODEL=gemini-2.0-flash\n",
        env_file(&mock)
    );
    let proxy = Proxy::start(dir.path(), &env).await;
    let client = support::client_builder().build().unwrap();
    let ask = || async {
        client
            .post(format!(
                "{}/v1beta/models/gemini-2.0-flash:generateContent",
                proxy.url
            ))
            .header("x-goog-api-key", TOKEN)
            .body(prompt_body("x"))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(ask().await, 200); // key 1 is refused and disabled; key 2 serves
    mock.set_fault(&test_key(1), Fault::Ok); // the key works again upstream
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while mock.status_count(&test_key(1), 200) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the re-check never probed the key"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Back in rotation: client requests reach key 1 again.
    let before = mock.requests(&test_key(1));
    for _ in 0..4 {
        assert_eq!(ask().await, 200);
    }
    assert!(mock.requests(&test_key(1)) >= before + 2);
    proxy.stop();
}

#[tokio::test]
async fn openai_passthrough_goes_to_the_upstreams_openai_endpoint_with_a_pool_key() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock)).await;
    let res = support::client_builder()
        .build()
        .unwrap()
        .post(format!("{}/openai/v1/chat/completions", proxy.url))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(
            json!({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "x"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    // The mock has no OpenAI endpoint: its 404 comes back as it is.
    assert_eq!(res.status(), 404);
    let last = mock.last_request().unwrap();
    assert_eq!(last.uri.path(), "/v1beta/openai/chat/completions");
    let sent = last.headers["authorization"].to_str().unwrap().to_owned();
    assert!(
        test_keys(2).iter().any(|k| sent == format!("Bearer {k}")),
        "a pool key as Bearer"
    );
    assert!(!mock.saw_credential(TOKEN));
    proxy.stop();
}

#[tokio::test]
async fn a_json_syntax_error_on_the_openai_passthrough_is_answered_in_openais_format() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock)).await;
    let client = support::client_builder().build().unwrap();
    for (route, body) in [
        (
            "chat/completions",
            r#"{"model": "gemini-2.0-flash", "messages": [{"role": "user""#,
        ),
        (
            "embeddings",
            r#"{"model": "text-embedding-004", "input": "x",}"#,
        ),
    ] {
        let res = client
            .post(format!("{}/openai/v1/{route}", proxy.url))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{route}");
        let error: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
        assert!(
            error["error"].get("status").is_none(),
            "not Gemini's: {error}"
        );
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("not valid JSON"), "{message}");
    }
    assert_eq!(mock.total(), 0, "the upstream never saw the broken bodies");
    proxy.stop();
}

// Multi-threaded: the clients' connections must answer the proxy's graceful shutdown while
// `stop` blocks this thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_requests_get_a_head_without_a_body_over_http2_too() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock)).await;
    for h2 in [false, true] {
        let builder = support::client_builder();
        let client = if h2 {
            builder.http2_prior_knowledge()
        } else {
            builder.http1_only()
        }
        .build()
        .unwrap();
        // Answered by the proxy, by the upstream (the mock answers HEAD as GET), or refused.
        for (path, status) in [
            ("/health".to_owned(), 200),
            (format!("/v1beta/models?key={TOKEN}"), 200),
            ("/v1/models".to_owned(), 401),
            ("/openai/v1/models".to_owned(), 401),
        ] {
            let res = client
                .head(format!("{}{path}", proxy.url))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), status, "h2 {h2}: {path}");
            // An HTTP/2 answer to HEAD that carries data is a protocol error to the client.
            let body = res
                .bytes()
                .await
                .unwrap_or_else(|e| panic!("h2 {h2}: {path}: {e:?}"));
            assert!(body.is_empty(), "h2 {h2}: {path}");
        }
    }
    proxy.stop();
    // The answers to HEAD that went through the stack are complete, not "client gone".
    let store = SqliteStore::open(dir.path().join("data/default_db.db")).unwrap();
    let rows = store
        .request_log(&gemini_balance::store::logs::RequestQuery::default())
        .unwrap()
        .entries;
    store.shutdown().unwrap();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for row in &rows {
        assert_eq!(row.status, 200, "{row:#?}");
        assert_eq!(row.completion, "complete", "{row:#?}");
        assert!(row.success, "{row:#?}");
    }
}
