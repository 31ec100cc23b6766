//! What goes upstream, through the binary against the loopback mock Gemini (which records every
//! request with its headers):
//!
//! - only the headers the Gemini API reads, `CUSTOM_HEADERS` and the proxy's own `User-Agent`,
//!   on every route, direct and through `PROXIES`: never the client's cookies, proxy
//!   credentials, CSRF token, forwarding headers, `User-Agent` or unknown headers;
//! - no path that leaves its route (`..`, `%2e%2e`, `%2F`, `%5C`, `\`, `//`, `%00`, ...): a
//!   400 in the route's error format, before the token is checked, with nothing sent upstream
//!   and nothing recorded;
//! - no method a route lacks: a 405 with `Allow`, nothing sent upstream;
//! - and the forms clients do send (`%3A`, dotted model names, HEAD) still served.

mod common;

use gemini_balance::store::SqliteStore;
use serde_json::{json, Value};
use support::{prompt_body, test_keys, MockGemini};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::forward_proxy::ForwardProxy;
use common::{Proxy, TOKEN};

/// What a browser session, a reverse proxy in front of the proxy, and odd clients add to a
/// request; none of it may reach Google.
const HOSTILE: &[(&str, &str)] = &[
    ("cookie", "gb_admin_session=0123456789abcdef; theme=dark"),
    ("proxy-authorization", "Basic dXNlcjpodW50ZXIy"),
    ("x-csrf-token", "csrf-0123456789"),
    ("x-forwarded-for", "203.0.113.7"),
    ("x-forwarded-host", "gateway.example"),
    ("x-real-ip", "203.0.113.7"),
    ("forwarded", "for=203.0.113.7;proto=https"),
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) client-browser",
    ),
    ("x-goog-user-project", "someone-elses-project"),
    ("x-http-method-override", "DELETE"),
    ("x-stainless-os", "Linux"),
    ("openai-organization", "org-client"),
    ("x-evil", "1"),
];

/// The google-genai SDK's telemetry header, which Gemini reads and which goes on.
const API_CLIENT: &str = "google-genai-sdk/1.20.0 gl-python/3.12.3";

fn env_file(mock: &MockGemini, custom_headers: &Value, proxies: &[&ForwardProxy]) -> String {
    let proxies: Vec<&str> = proxies.iter().map(|p| p.url.as_str()).collect();
    format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={}/v1beta\nCUSTOM_HEADERS={custom_headers}\n\
         PROXIES={}\n",
        serde_json::to_string(&test_keys(2)).unwrap(),
        mock.base_url(),
        serde_json::to_string(&proxies).unwrap(),
    )
}

/// Sends a request on each kind of route with the hostile headers and checks what the mock
/// received each time; `user_agent` is the one the upstream must see.
async fn only_the_allowlist_goes_upstream(proxy: &Proxy, mock: &MockGemini, user_agent: &str) {
    let client = support::client_builder().build().unwrap();
    let hostile = |mut req: reqwest::RequestBuilder| {
        for (name, value) in HOSTILE {
            req = req.header(*name, *value);
        }
        req.header("x-goog-api-client", API_CLIENT)
    };
    let chat =
        json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]});
    let requests = [
        (
            "Gemini generateContent (dotted model, `%3A`)",
            client
                .post(format!(
                    "{}/v1beta/models/gemini-2.5-flash%3AgenerateContent\
                     ?%24userProject=client-project&access_token=ya29.client\
                     &%24httpMethod=DELETE&%24ct=text%2Fplain&%24fields=candidates&alt=json",
                    proxy.url
                ))
                .header("x-goog-api-key", TOKEN)
                .header("content-type", "application/json")
                .header("x-server-timeout", "60")
                .header("x-goog-fieldmask", "candidates,usageMetadata")
                .header("accept", "application/json")
                .body(prompt_body("hello")),
            true,
        ),
        (
            "Gemini model list",
            client
                .get(format!("{}/v1beta/models", proxy.url))
                .header("x-goog-api-key", TOKEN),
            false,
        ),
        (
            "OpenAI chat, converted",
            client
                .post(format!("{}/v1/chat/completions", proxy.url))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(chat.to_string()),
            true,
        ),
        // The mock has no OpenAI-compatible endpoint: it records the request and answers 404.
        (
            "OpenAI chat, passed through",
            client
                .post(format!("{}/openai/v1/chat/completions", proxy.url))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(chat.to_string()),
            true,
        ),
    ];
    for (what, req, has_body) in requests {
        let before = mock.total();
        let res = hostile(req).send().await.unwrap();
        assert!(
            res.status() != 400 && res.status() != 405,
            "{what}: {}",
            res.status()
        );
        assert_eq!(mock.total(), before + 1, "{what}: one upstream request");
        let seen = mock.last_request().unwrap().headers;
        for (name, _) in HOSTILE {
            if *name != "user-agent" {
                assert!(
                    !seen.contains_key(*name),
                    "{what}: {name} reached the upstream"
                );
            }
        }
        assert_eq!(seen["user-agent"], user_agent, "{what}");
        assert_eq!(
            seen["x-custom-tag"], "gemini-balance",
            "{what}: CUSTOM_HEADERS"
        );
        assert_eq!(seen["x-goog-api-client"], API_CLIENT, "{what}");
        assert_eq!(
            seen["accept-encoding"], "gzip",
            "{what}: the decode layer's"
        );
        if has_body {
            assert!(
                seen["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("application/json"),
                "{what}"
            );
        }
        if what.starts_with("Gemini generateContent") {
            assert_eq!(seen["x-server-timeout"], "60", "{what}");
            // A field mask could hide the usage from the record: dropped, as are the query
            // parameters Google reads as the dropped headers.
            assert!(!seen.contains_key("x-goog-fieldmask"), "{what}");
            let uri = mock.last_request().unwrap().uri;
            assert_eq!(uri.query(), Some("alt=json"), "{what}: {uri}");
            assert_eq!(seen["accept"], "application/json", "{what}");
        }
        // Only the pool key, in the place its route takes it.
        assert!(!mock.saw_credential(TOKEN), "{what}: the client token");
    }
}

#[tokio::test]
async fn only_the_headers_gemini_reads_go_upstream_direct_and_through_proxies() {
    let mock = MockGemini::start().await;

    // Direct, with the proxy's own User-Agent.
    let dir = tempfile::tempdir().unwrap();
    let custom = json!({"X-Custom-Tag": "gemini-balance"});
    let proxy = Proxy::start(dir.path(), &env_file(&mock, &custom, &[])).await;
    only_the_allowlist_goes_upstream(&proxy, &mock, "gemini-balance-proxy/0.1.0").await;
    proxy.stop();

    // Through PROXIES, with the User-Agent CUSTOM_HEADERS sets.
    let forward = ForwardProxy::start().await;
    let dir = tempfile::tempdir().unwrap();
    let custom = json!({"X-Custom-Tag": "gemini-balance", "User-Agent": "my-gateway/2.0"});
    let proxy = Proxy::start(dir.path(), &env_file(&mock, &custom, &[&forward])).await;
    only_the_allowlist_goes_upstream(&proxy, &mock, "my-gateway/2.0").await;
    assert_eq!(forward.total(), 4, "every request went through the proxy");
    proxy.stop();
}

/// An answer as the client got it.
struct Raw {
    status: u16,
    allow: Option<String>,
    body: Value,
}

/// Sends `method target` exactly as written (an HTTP client library would resolve the dot
/// segments before sending), with the client token unless `token` is false.
async fn raw(proxy: &Proxy, method: &str, target: &str, token: bool) -> Raw {
    let addr = proxy.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = if token {
        format!("x-goog-api-key: {TOKEN}\r\nauthorization: Bearer {TOKEN}\r\n")
    } else {
        String::new()
    };
    let body = r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#;
    let request = format!(
        "{method} {target} HTTP/1.1\r\nhost: {addr}\r\n{auth}content-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let allow = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("allow"))
        .map(|(_, v)| v.trim().to_owned());
    let body = serde_json::from_str(body).unwrap_or(Value::Null);
    Raw {
        status,
        allow,
        body,
    }
}

/// `body` is the route's error format: Gemini's `google.rpc.Status`, or OpenAI's.
fn assert_format(body: &Value, openai: bool, code: u16, what: &str) {
    let error = &body["error"];
    assert!(error["message"].is_string(), "{what}: {body}");
    if openai {
        assert_eq!(error["type"], "invalid_request_error", "{what}: {body}");
    } else {
        assert_eq!(error["code"], code, "{what}: {body}");
        assert!(error["status"].is_string(), "{what}: {body}");
    }
}

#[tokio::test]
async fn paths_that_leave_their_route_are_refused_before_anything_else() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock, &json!({}), &[])).await;

    // (method, target, OpenAI's error format, what the message names)
    let refused = [
        ("DELETE", "/v1beta/models/../tunedModels/x", false, "`..`"),
        ("GET", "/v1beta/models/../../v1beta/files", false, "`..`"),
        (
            "POST",
            "/v1beta/models/./gemini-2.5-flash:generateContent",
            false,
            "`.`",
        ),
        ("GET", "/gemini/v1beta/models/..", false, "`..`"),
        (
            "DELETE",
            "/v1beta/models/%2e%2e/tunedModels/x",
            false,
            "%2e",
        ),
        ("GET", "/v1beta/models/.%2E/tunedModels/x", false, "%2E"),
        (
            "POST",
            "/v1beta/models/x%2F..%2FtunedModels%2Fy:generateContent",
            false,
            "%2F",
        ),
        ("GET", "/v1/models/x%2f..%2ftunedModels", false, "%2f"),
        ("GET", "/v1beta/models/x%5c..%5ctunedModels", false, "%5c"),
        ("GET", "/v1beta/models/x%5C..%5CtunedModels", false, "%5C"),
        ("GET", "/v1beta/models/x\\..\\tunedModels", false, "'\\\\'"),
        ("GET", "/v1beta/models//tunedModels/x", false, "`//`"),
        ("GET", "/v1beta/models/gemini-2.5-flash%00", false, "%00"),
        ("GET", "/v1beta/models/%252e%252e/tunedModels", false, "%25"),
        (
            "POST",
            "/v1beta/models/gemini-2%2e5-flash:generateContent",
            false,
            "%2e",
        ),
        (
            "POST",
            "/openai/v1/../v1beta/models/x:generateContent",
            true,
            "`..`",
        ),
        ("POST", "/openai/v1/chat%2Fcompletions", true, "%2F"),
    ];
    for (method, target, openai, names) in refused {
        let what = format!("{method} {target}");
        let answer = raw(&proxy, method, target, true).await;
        assert_eq!(answer.status, 400, "{what}: {}", answer.body);
        assert_format(&answer.body, openai, 400, &what);
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{what}: {message}");
    }
    // Refused before the token is checked: without one it is the same 400, not a 401.
    let answer = raw(&proxy, "DELETE", "/v1beta/models/../tunedModels/x", false).await;
    assert_eq!(answer.status, 400, "{}", answer.body);

    assert_eq!(mock.total(), 0, "nothing reached the upstream");
    proxy.stop();
    let store = SqliteStore::open(dir.path().join("data/default_db.db")).unwrap();
    assert_eq!(store.summary().unwrap().last_hour.calls, 0, "no usage row");
    store.shutdown().unwrap();
}

#[tokio::test]
async fn each_route_takes_only_its_methods() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock, &json!({}), &[])).await;

    // (method, target, OpenAI's error format, Allow)
    let refused = [
        (
            "DELETE",
            "/v1beta/models/gemini-2.5-flash",
            false,
            "GET, HEAD",
        ),
        (
            "PATCH",
            "/gemini/v1beta/models/gemini-2.5-flash",
            false,
            "GET, HEAD",
        ),
        ("POST", "/v1beta/models", false, "GET, HEAD"),
        ("PUT", "/v1/models", false, "GET, HEAD"),
        (
            "GET",
            "/v1beta/models/gemini-2.5-flash:generateContent",
            false,
            "POST",
        ),
        (
            "DELETE",
            "/v1/models/gemini-2.5-flash%3AgenerateContent",
            false,
            "POST",
        ),
        (
            "HEAD",
            "/v1beta/models/gemini-2.5-flash:countTokens",
            false,
            "POST",
        ),
        (
            "OPTIONS",
            "/v1beta/models/gemini-2.5-flash:generateContent",
            false,
            "POST",
        ),
        ("GET", "/v1/chat/completions", true, "POST"),
        ("OPTIONS", "/hf/v1/chat/completions", true, "POST"),
        ("DELETE", "/v1/embeddings", true, "POST"),
        ("PUT", "/openai/v1/chat/completions", true, "POST"),
        ("POST", "/openai/v1/models", true, "GET, HEAD"),
        (
            "DELETE",
            "/openai/v1/models/gemini-2.5-flash",
            true,
            "GET, HEAD",
        ),
        ("POST", "/health", false, "GET, HEAD"),
    ];
    for (method, target, openai, allow) in refused {
        let what = format!("{method} {target}");
        let answer = raw(&proxy, method, target, true).await;
        assert_eq!(answer.status, 405, "{what}: {}", answer.body);
        assert_eq!(answer.allow.as_deref(), Some(allow), "{what}");
        if method != "HEAD" {
            assert_format(&answer.body, openai, 405, &what);
        }
    }
    // Routes of the upstream's OpenAI endpoint that are not passed through are not found.
    let answer = raw(&proxy, "GET", "/openai/v1/files", true).await;
    assert_eq!(answer.status, 404, "{}", answer.body);
    assert_format(&answer.body, true, 404, "GET /openai/v1/files");
    assert_eq!(mock.total(), 0, "nothing reached the upstream");

    // What the routes have is served: `%3A`, dotted model names, GET and HEAD of a model.
    let client = support::client_builder().build().unwrap();
    let res = client
        .post(format!(
            "{}/v1/models/gemini-2.5-flash%3AgenerateContent",
            proxy.url
        ))
        .header("x-goog-api-key", TOKEN)
        .header("content-type", "application/json")
        .body(prompt_body("still served"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        mock.last_request().unwrap().uri.path(),
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let res = client
            .request(
                method.clone(),
                format!("{}/v1beta/models/gemini-2.5-flash", proxy.url),
            )
            .header("x-goog-api-key", TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{method}");
        assert_eq!(mock.last_request().unwrap().method, method);
    }
    proxy.stop();
}
