//! CORS: a chat front-end in a browser, on another origin, calls the API routes; the admin API
//! and the web admin stay closed to other origins. Over plain HTTP (preflights, the headers of
//! each answer, what a preflight does not cost), then in headless Chromium (a page served from
//! another loopback port calls `fetch` on the proxy, as a web chat UI does).

mod common;
mod webdriver;

use common::{free_port, Proxy, TOKEN};
use gemini_balance::store::logs::RequestQuery;
use gemini_balance::store::SqliteStore;
use serde_json::{json, Value};
use support::{test_keys, MockGemini};
use webdriver::{chromium, Browser, ChromeDriver};

const ADMIN: &str = "sk-cors-admin-token-0001";
const ORIGIN: &str = "http://chat.example.test:3000";

fn env_file(mock: &MockGemini, extra: &str) -> String {
    format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nAUTH_TOKEN={ADMIN}\nBASE_URL={}/v1beta\n{extra}",
        serde_json::to_string(&test_keys(2)).unwrap(),
        mock.base_url()
    )
}

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// A browser's preflight for a `POST` with a bearer token and a JSON body.
async fn preflight(client: &reqwest::Client, url: &str, origin: &str) -> reqwest::Response {
    client
        .request(reqwest::Method::OPTIONS, url)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

fn chat() -> String {
    json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hello there"}]})
        .to_string()
}

async fn change(client: &reqwest::Client, url: &str, changes: Value) {
    let res = client
        .put(format!("{url}/api/config"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(changes.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{changes}");
}

#[tokio::test]
async fn preflights_are_answered_on_the_api_routes_before_any_token_is_checked() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Ten failed authentications in a row, then a 429: preflights must not count.
    let env = env_file(
        &mock,
        "AUTH_FAILURE_BURST=10\nAUTH_FAILURE_REFILL_SECONDS=600\n",
    );
    let proxy = Proxy::start(dir.path(), &env).await;
    let client = support::client_builder().build().unwrap();
    let url = &proxy.url;

    let paths = [
        "/v1/chat/completions",
        "/hf/v1/chat/completions",
        "/v1/embeddings",
        "/v1/models",
        "/hf/v1/models",
        "/openai/v1/chat/completions",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        "/gemini/v1beta/models",
        "/health",
    ];
    // Twice over: more preflights than the bucket holds.
    for path in paths.iter().chain(&paths) {
        let res = preflight(&client, &format!("{url}{path}"), ORIGIN).await;
        assert!(res.status().is_success(), "{path}: {}", res.status());
        // Starlette's answer with allow_origins=["*"] and allow_credentials=True.
        assert_eq!(
            header(&res, "access-control-allow-origin").as_deref(),
            Some(ORIGIN),
            "{path}"
        );
        assert_eq!(
            header(&res, "access-control-allow-credentials").as_deref(),
            Some("true")
        );
        assert!(header(&res, "access-control-allow-methods")
            .unwrap()
            .contains("POST"));
        let headers = header(&res, "access-control-allow-headers")
            .unwrap()
            .to_lowercase();
        assert!(
            headers.contains("authorization") && headers.contains("content-type"),
            "{headers}"
        );
        assert_eq!(
            header(&res, "access-control-max-age").as_deref(),
            Some("600")
        );
        assert!(header(&res, "vary")
            .unwrap()
            .to_lowercase()
            .contains("origin"));
    }
    // No key, no upstream call, no failed authentication: the eighteen preflights left the
    // bucket of ten full, so a wrong token is a 401 (an empty bucket would make it a 429).
    assert_eq!(mock.total(), 0);
    let res = client
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth("sk-wrong-token")
        .header("origin", ORIGIN)
        .header("content-type", "application/json")
        .body(chat())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // The error is readable by the page too.
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some(ORIGIN)
    );

    // The request itself: answered, with the origin allowed.
    let res = client
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(TOKEN)
        .header("origin", ORIGIN)
        .header("content-type", "application/json")
        .body(chat())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some(ORIGIN)
    );
    assert_eq!(
        header(&res, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(
        header(&res, "access-control-expose-headers").as_deref(),
        Some("*,retry-after")
    );
    let answer: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(answer["object"], "chat.completion");

    // A client that is not a browser sends no Origin, and gets no CORS headers.
    let res = client
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(chat())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(header(&res, "access-control-allow-origin").is_none());
    // An OPTIONS that is no preflight is what it was: a method the route does not have.
    let res = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{url}/v1/chat/completions"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);

    // The admin API and the web admin give other origins nothing: no preflight answer, no
    // CORS header on what they serve, even to a request that authenticates.
    for path in ["/api/config", "/api/keys", "/login", "/keys"] {
        let res = preflight(&client, &format!("{url}{path}"), ORIGIN).await;
        assert!(
            header(&res, "access-control-allow-origin").is_none(),
            "{path}"
        );
        assert!(
            header(&res, "access-control-allow-credentials").is_none(),
            "{path}"
        );
        let res = client
            .get(format!("{url}{path}"))
            .bearer_auth(ADMIN)
            .header("origin", ORIGIN)
            .send()
            .await
            .unwrap();
        assert!(
            header(&res, "access-control-allow-origin").is_none(),
            "{path}"
        );
    }
    let res = client
        .get(format!("{url}/api/keys"))
        .bearer_auth(ADMIN)
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the admin API itself works");

    // Live changes: a list of origins, then CORS off.
    change(
        &client,
        url,
        json!({"CORS_ALLOWED_ORIGINS": ["https://chat.example.com"]}),
    )
    .await;
    let res = preflight(&client, &format!("{url}/v1/chat/completions"), ORIGIN).await;
    assert!(header(&res, "access-control-allow-origin").is_none());
    let res = preflight(
        &client,
        &format!("{url}/v1/chat/completions"),
        "https://chat.example.com",
    )
    .await;
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some("https://chat.example.com")
    );
    change(&client, url, json!({"CORS_ENABLED": false})).await;
    let res = preflight(
        &client,
        &format!("{url}/v1/chat/completions"),
        "https://chat.example.com",
    )
    .await;
    assert_eq!(res.status(), 405);
    assert!(header(&res, "access-control-allow-origin").is_none());
    // An origin that is not one is refused, naming the setting.
    let res = client
        .put(format!("{url}/api/config"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(json!({"CORS_ALLOWED_ORIGINS": ["chat.example.com/app"]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().await.unwrap().contains("CORS_ALLOWED_ORIGINS"));
    proxy.stop();

    // Only the two chat requests reached the usage log: no preflight did.
    let store = SqliteStore::open(dir.path().join("data/default_db.db")).unwrap();
    let rows = store.request_log(&RequestQuery::default()).unwrap().entries;
    store.shutdown().unwrap();
    assert_eq!(rows.len(), 2, "{rows:#?}");
}

/// Serves a blank page on another loopback port: the chat front-end's origin.
async fn front_end() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|| async {
        axum::response::Html("<!doctype html><title>chat</title><p id=ready>ready</p>")
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Runs `fetch(url, init)` in the page and waits for what it gave: `{status, body, origin}` or
/// `{error}` when the browser refused the answer.
async fn fetch(browser: &Browser, url: &str, init: Value) -> Value {
    browser
        .js(
            "window.result = null;
             fetch(arguments[0], arguments[1])
               .then(r => r.text().then(body => window.result = JSON.stringify(
                 {status: r.status, body, origin: r.headers.get('access-control-allow-origin')})))
               .catch(e => window.result = JSON.stringify({error: String(e)}));",
            json!([url, init]),
        )
        .await;
    let text = browser.wait_for("window.result", "the fetch to end").await;
    serde_json::from_str(text.as_str().unwrap()).unwrap()
}

// Multi-threaded: the browser is driven over HTTP while the page's server runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver (Debian: chromium chromium-driver; bash .ci/run installs them); run with -- --ignored"]
async fn a_web_chat_ui_on_another_origin_calls_the_api_in_a_browser() {
    let (chromium, chromedriver) = chromium();
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock, "")).await;
    let page = front_end().await;
    let driver = ChromeDriver::start(&chromedriver, free_port()).await;
    let browser = Browser::open(&driver, &chromium).await;
    browser.goto(&page).await;
    browser.find("#ready").await;
    let chat_url = format!("{}/v1/chat/completions", proxy.url);
    let ask = |stream: bool| {
        json!({
            "method": "POST",
            "headers": {"Authorization": format!("Bearer {TOKEN}"), "Content-Type": "application/json"},
            "body": json!({"model": "gemini-2.5-flash", "stream": stream,
                           "messages": [{"role": "user", "content": "hello from the page"}]}).to_string(),
        })
    };

    // A chat, whole and streamed.
    let got = fetch(&browser, &chat_url, ask(false)).await;
    assert_eq!(got["status"], 200, "{got}");
    assert_eq!(got["origin"], page.as_str(), "{got}");
    let answer: Value = serde_json::from_str(got["body"].as_str().unwrap()).unwrap();
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("hello from the page"), "{content}");
    let got = fetch(&browser, &chat_url, ask(true)).await;
    assert_eq!(got["status"], 200, "{got}");
    let body = got["body"].as_str().unwrap();
    assert!(body.contains("data: ") && body.contains("[DONE]"), "{body}");
    // The model list, as chat front-ends load it.
    let got = fetch(
        &browser,
        &format!("{}/v1/models", proxy.url),
        json!({"headers": {"Authorization": format!("Bearer {TOKEN}")}}),
    )
    .await;
    assert_eq!(got["status"], 200, "{got}");

    // The admin API is not readable from the page, with the admin's credentials or without.
    let got = fetch(
        &browser,
        &format!("{}/api/keys", proxy.url),
        json!({"credentials": "include"}),
    )
    .await;
    assert!(got["error"].is_string(), "{got}");
    let got = fetch(
        &browser,
        &format!("{}/api/keys", proxy.url),
        json!({"headers": {"Authorization": format!("Bearer {ADMIN}")}}),
    )
    .await;
    assert!(got["error"].is_string(), "{got}");

    // With CORS off, the browser keeps the answer from the page.
    let client = support::client_builder().build().unwrap();
    change(&client, &proxy.url, json!({"CORS_ENABLED": false})).await;
    let got = fetch(&browser, &chat_url, ask(false)).await;
    assert!(got["error"].is_string(), "{got}");
    browser.close().await;
    proxy.stop();
}
