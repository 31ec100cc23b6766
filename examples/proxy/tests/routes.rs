//! Every API route of the proxy binary, with every way of presenting the client token, against
//! the loopback mock Gemini: what the client gets, what the upstream received, and how the keys
//! were spread (a rejected key taken out while every client is still served).

mod common;

use std::collections::BTreeMap;

use common::Proxy;
use serde_json::{json, Value};
use support::{prompt_body, test_key, test_keys, Fault, MockGemini};

const TOKEN: &str = "sk-routes-token-0001";

/// The three ways SDKs present a token.
#[derive(Debug, Clone, Copy)]
enum Auth {
    Bearer,
    GoogHeader,
    Query,
}

const AUTHS: [Auth; 3] = [Auth::Bearer, Auth::GoogHeader, Auth::Query];

fn request(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    auth: Auth,
    body: Option<Value>,
) -> reqwest::RequestBuilder {
    let url = match auth {
        Auth::Query if url.contains('?') => format!("{url}&key={TOKEN}"),
        Auth::Query => format!("{url}?key={TOKEN}"),
        _ => url.to_owned(),
    };
    let mut req = client.request(method.parse().unwrap(), url);
    req = match auth {
        Auth::Bearer => req.header("authorization", format!("Bearer {TOKEN}")),
        Auth::GoogHeader => req.header("x-goog-api-key", TOKEN),
        Auth::Query => req,
    };
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    req
}

/// Checks what the mock received last: the path below BASE_URL, a pool key, no client token.
fn upstream_saw(mock: &MockGemini, path: &str) {
    let last = mock.last_request().expect("the upstream was called");
    assert_eq!(last.uri.path(), path);
    let key = last.key.expect("a pool key was sent");
    assert!(key.starts_with("AIzaSyMock"), "{key}");
    assert!(
        !mock.saw_credential(TOKEN),
        "the client token reached the upstream"
    );
    assert!(
        !last.uri.query().unwrap_or("").contains("key="),
        "the key travels in a header, not the URL"
    );
}

#[tokio::test]
async fn every_route_with_every_token_placement() {
    let mock = MockGemini::start().await;
    // Key 2 is rejected by the upstream: it is taken out at its first use, and the request
    // that met it is served by another key.
    mock.set_fault(&test_key(2), Fault::InvalidKey);
    let dir = tempfile::tempdir().unwrap();
    let env = format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={}/v1beta\n",
        serde_json::to_string(&test_keys(3)).unwrap(),
        mock.base_url()
    );
    let proxy = Proxy::start(dir.path(), &env).await;
    let client = support::client_builder().build().unwrap();
    let model = "gemini-2.5-flash";
    let mut served = 0;

    for (i, mount) in ["/v1beta", "/gemini/v1beta", "/v1"].iter().enumerate() {
        let auth = AUTHS[i % 3];
        let base = format!("{}{mount}/models", proxy.url);
        // The `:` as is, and as the google-genai SDK sends it (`%3A`).
        let colon = if i == 2 { "%3A" } else { ":" };

        let res = request(&client, "GET", &base, auth, None)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{mount} list with {auth:?}");
        let list: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        let shape_is_openai = list["object"] == "list";
        assert_eq!(
            shape_is_openai,
            *mount == "/v1" && matches!(auth, Auth::Bearer),
            "{mount} {auth:?}: {list}"
        );
        upstream_saw(&mock, "/v1beta/models");

        let res = request(&client, "GET", &format!("{base}/{model}"), auth, None)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let one: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        assert_eq!(one["name"], format!("models/{model}"));

        let res = request(
            &client,
            "POST",
            &format!("{base}/{model}{colon}generateContent"),
            auth,
            Some(serde_json::from_str(&prompt_body("route test")).unwrap()),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 200, "{mount} generate with {auth:?}");
        let answer: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        assert_eq!(
            answer["candidates"][0]["content"]["parts"][0]["text"],
            "echo: route test"
        );
        upstream_saw(&mock, &format!("/v1beta/models/{model}:generateContent"));
        served += 1;

        let res = request(
            &client,
            "POST",
            &format!("{base}/{model}{colon}streamGenerateContent?alt=sse"),
            auth,
            Some(serde_json::from_str(&prompt_body("stream test")).unwrap()),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let text = res.text().await.unwrap();
        let events: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert!(events.len() >= 2, "{text}");
        assert!(events.last().unwrap()["usageMetadata"]["totalTokenCount"]
            .as_u64()
            .is_some());
        upstream_saw(
            &mock,
            &format!("/v1beta/models/{model}:streamGenerateContent"),
        );
        served += 1;

        let res = request(
            &client,
            "POST",
            &format!("{base}/{model}{colon}countTokens"),
            auth,
            Some(serde_json::from_str(&prompt_body("count these words")).unwrap()),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 200);
        let count: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        assert!(count["totalTokens"].as_u64().unwrap() > 0, "{count}");
        upstream_saw(&mock, &format!("/v1beta/models/{model}:countTokens"));
        served += 1;

        let embed_model = "text-embedding-004";
        let res = request(
            &client,
            "POST",
            &format!("{base}/{embed_model}{colon}embedContent"),
            auth,
            Some(json!({"content": {"parts": [{"text": "embed me"}]}})),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 200);
        let embedded: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        assert!(!embedded["embedding"]["values"]
            .as_array()
            .unwrap()
            .is_empty());
        upstream_saw(&mock, &format!("/v1beta/models/{embed_model}:embedContent"));
        served += 1;

        let res = request(
            &client,
            "POST",
            &format!("{base}/{embed_model}{colon}batchEmbedContents"),
            auth,
            Some(json!({"requests": [
                {"model": format!("models/{embed_model}"), "content": {"parts": [{"text": "one"}]}},
                {"model": format!("models/{embed_model}"), "content": {"parts": [{"text": "two"}]}},
            ]})),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 200);
        let batch: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        assert_eq!(batch["embeddings"].as_array().unwrap().len(), 2);
        upstream_saw(
            &mock,
            &format!("/v1beta/models/{embed_model}:batchEmbedContents"),
        );
        served += 1;
    }

    for (i, prefix) in ["/v1", "/hf/v1"].iter().enumerate() {
        let auth = AUTHS[i];
        let res = request(
            &client,
            "POST",
            &format!("{}{prefix}/chat/completions", proxy.url),
            auth,
            Some(json!({"model": model, "messages": [{"role": "user", "content": "chat test"}]})),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 200, "{prefix} chat with {auth:?}");
        let chat: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        assert_eq!(chat["choices"][0]["message"]["content"], "echo: chat test");
        assert_eq!(chat["choices"][0]["finish_reason"], "stop");
        upstream_saw(&mock, &format!("/v1beta/models/{model}:generateContent"));
        served += 1;

        let res = request(
            &client,
            "POST",
            &format!("{}{prefix}/chat/completions", proxy.url),
            auth,
            Some(json!({"model": model, "stream": true,
                        "stream_options": {"include_usage": true},
                        "messages": [{"role": "user", "content": "chat stream"}]})),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 200);
        let text = res.text().await.unwrap();
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        let chunks: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "echo: chat stream");
        assert!(
            chunks.last().unwrap()["usage"]["total_tokens"]
                .as_u64()
                .unwrap()
                > 0
        );
        upstream_saw(
            &mock,
            &format!("/v1beta/models/{model}:streamGenerateContent"),
        );
        served += 1;

        let res = request(
            &client,
            "POST",
            &format!("{}{prefix}/embeddings", proxy.url),
            auth,
            Some(json!({"model": "text-embedding-004", "input": ["a", "b"]})),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 200);
        let embeddings: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        assert_eq!(embeddings["data"].as_array().unwrap().len(), 2);
        served += 1;
    }

    // Key rotation across requests: the two good keys share the load; the rejected key was
    // tried once and never again.
    let mut by_key = BTreeMap::new();
    for key in test_keys(3) {
        by_key.insert(key.clone(), mock.requests(&key));
    }
    assert_eq!(by_key[&test_key(2)], 1, "{by_key:?}");
    let good = by_key[&test_key(1)] + by_key[&test_key(3)];
    assert!(good >= served, "{by_key:?}");
    assert!(
        by_key[&test_key(1)].abs_diff(by_key[&test_key(3)]) <= 2,
        "round robin spreads requests: {by_key:?}"
    );
    let health: Value = serde_json::from_slice(
        &client
            .get(format!("{}/health", proxy.url))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(health["keys"]["disabled"], 1);
    assert_eq!(health["keys"]["active"], 2);

    // Without a token (or with a wrong one) every route is refused in its own API's format.
    let res = client
        .post(format!(
            "{}/v1beta/models/{model}:generateContent",
            proxy.url
        ))
        .body(prompt_body("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    let res = client
        .post(format!("{}/hf/v1/chat/completions", proxy.url))
        .bearer_auth("sk-wrong")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert!(body["error"]["message"].is_string());
    assert!(
        body["error"]["type"].is_string(),
        "OpenAI's error shape: {body}"
    );
}

#[tokio::test]
async fn safety_settings_are_added_only_when_the_client_sent_none() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={}/v1beta\nSEARCH_MODELS=[\"gemini-2.5-flash\"]\n",
        serde_json::to_string(&test_keys(1)).unwrap(),
        mock.base_url()
    );
    let proxy = Proxy::start(dir.path(), &env).await;
    let client = support::client_builder().build().unwrap();
    let mock = &mock;
    let (client, url) = (&client, &proxy.url);
    let sent = |body: Value, model: &'static str| async move {
        let res = request(
            client,
            "POST",
            &format!("{url}/v1beta/models/{model}:generateContent"),
            Auth::GoogHeader,
            Some(body),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 200);
        let last = mock.last_request().unwrap();
        serde_json::from_slice::<Value>(&last.body).unwrap()
    };
    let prompt = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                        "generationConfig": {"temperature": 0.3}});

    // None sent: the defaults (every category off), and the rest of the body untouched.
    let upstream = sent(prompt.clone(), "gemini-2.5-flash").await;
    assert_eq!(upstream["safetySettings"].as_array().unwrap().len(), 5);
    assert_eq!(upstream["contents"], prompt["contents"]);
    assert_eq!(upstream["generationConfig"], json!({"temperature": 0.3}));

    // The client's own are kept as sent.
    let mut own = prompt.clone();
    own["safetySettings"] =
        json!([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_LOW_AND_ABOVE"}]);
    let upstream = sent(own.clone(), "gemini-2.5-flash").await;
    assert_eq!(upstream["safetySettings"], own["safetySettings"]);

    // A derived model: the search tool and the defaults, under the real model's name.
    let upstream = sent(prompt.clone(), "gemini-2.5-flash-search").await;
    assert_eq!(upstream["safetySettings"].as_array().unwrap().len(), 5);
    assert!(
        upstream["tools"].to_string().contains("google_search")
            || upstream["tools"].to_string().contains("googleSearch"),
        "{upstream}"
    );
    assert_eq!(
        mock.last_request().unwrap().uri.path(),
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
}

#[tokio::test]
async fn a_gemini_route_answers_in_geminis_format_whatever_its_tail() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={}/v1beta\n",
        serde_json::to_string(&test_keys(1)).unwrap(),
        mock.base_url()
    );
    let proxy = Proxy::start(dir.path(), &env).await;
    let client = support::client_builder().build().unwrap();
    // `/embeddings` and `/chat/completions` in a path make it look like OpenAI's; the mount
    // says it is Gemini's.
    for path in [
        "/v1/models/gemini-2.0-flash:generateContent/embeddings",
        "/v1beta/models/gemini-2.0-flash/chat/completions",
    ] {
        let res = client
            .post(format!("{}{path}", proxy.url))
            .header("x-goog-api-key", "not-a-token")
            .body(prompt_body("x"))
            .send()
            .await
            .unwrap();
        // 401 (no valid token) today; a path check before it may answer 400 or 404 instead.
        let status = res.status().as_u16();
        assert!((400..500).contains(&status), "{path}: {status}");
        let error: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        assert_eq!(error["error"]["code"], status, "{path}: {error}");
        assert!(error["error"]["status"].is_string(), "{path}: {error}");
    }
    assert_eq!(mock.total(), 0);
    proxy.stop();
}

/// `GET {path}` with `auth`, as JSON.
async fn get_json(client: &reqwest::Client, url: &str, auth: Auth) -> (u16, Value) {
    let res = request(client, "GET", url, auth, None)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = res.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The ids of an OpenAI model list.
fn openai_ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap_or_else(|| panic!("not an OpenAI list: {list}"))
        .iter()
        .map(|m| {
            m["id"]
                .as_str()
                .unwrap()
                .trim_start_matches("models/")
                .to_owned()
        })
        .collect()
}

/// The ids of a Gemini model list.
fn gemini_ids(list: &Value) -> Vec<String> {
    list["models"]
        .as_array()
        .unwrap_or_else(|| panic!("not a Gemini list: {list}"))
        .iter()
        .map(|m| {
            m["name"]
                .as_str()
                .unwrap()
                .trim_start_matches("models/")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn model_lists_hold_every_model_in_every_shape() {
    let mock = MockGemini::start().await;
    // 64 models: more than Gemini's default page of 50.
    mock.list_extra_models(60);
    let dir = tempfile::tempdir().unwrap();
    let env = format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={}/v1beta\n\
         THINKING_MODELS=[\"gemini-2.5-flash\"]\nFILTERED_MODELS=[\"gemini-mock-listed-007\"]\n",
        serde_json::to_string(&test_keys(2)).unwrap(),
        mock.base_url()
    );
    let proxy = Proxy::start(dir.path(), &env).await;
    let client = support::client_builder().build().unwrap();
    let url = &proxy.url;
    let last = support::replies::extra_model_id(59);
    let filtered = support::replies::extra_model_id(7);
    // 64 models, one filtered, three derived (`-search` of 2.5 Flash and Pro, the default
    // SEARCH_MODELS, and `-non-thinking` of 2.5 Flash).
    let expected = 64 - 1 + 3;

    for pages in [None, Some(30)] {
        if let Some(size) = pages {
            // A relay that pages by less than asked: OpenAI's shape still gets every page.
            mock.set_max_page_size(size);
        }
        for (path, auth) in [
            ("/hf/v1/models", Auth::Bearer),
            ("/v1/models", Auth::Bearer),
            ("/hf/v1/models", Auth::GoogHeader),
        ] {
            let (status, list) = get_json(&client, &format!("{url}{path}"), auth).await;
            assert_eq!(status, 200, "{path} {auth:?} {pages:?}: {list}");
            assert_eq!(list["object"], "list", "{path}");
            let ids = openai_ids(&list);
            assert_eq!(ids.len(), expected, "{path} {auth:?} {pages:?}: {ids:?}");
            assert!(ids.contains(&last), "{path}");
            assert!(ids.contains(&"gemini-2.5-flash-non-thinking".to_owned()));
            assert!(!ids.contains(&filtered), "{path}");
            assert!(list.get("nextPageToken").is_none());
        }
    }
    // Each page was asked for with pageSize=1000, and a page token after the first.
    let asked: Vec<String> = mock
        .recent_requests()
        .iter()
        .filter(|r| r.uri.path() == "/v1beta/models")
        .map(|r| r.uri.query().unwrap_or("").to_owned())
        .collect();
    assert!(
        asked.iter().all(|q| q.contains("pageSize=1000")),
        "{asked:?}"
    );
    assert!(asked.iter().any(|q| q.contains("pageToken=")), "{asked:?}");

    // Gemini's shape: one page of up to 1000, or the client's own paging.
    mock.set_max_page_size(0);
    let (status, list) = get_json(&client, &format!("{url}/v1beta/models"), Auth::GoogHeader).await;
    assert_eq!(status, 200);
    assert_eq!(gemini_ids(&list).len(), expected);
    assert!(list.get("nextPageToken").is_none());
    let (_, first) = get_json(
        &client,
        &format!("{url}/v1beta/models?pageSize=20"),
        Auth::GoogHeader,
    )
    .await;
    // The first 20: the filtered model is among them, and the three derived ones.
    assert_eq!(gemini_ids(&first).len(), 20 - 1 + 3, "{first}");
    // Gemini's page tokens are base64: escaped in the query.
    let token = first["nextPageToken"]
        .as_str()
        .unwrap()
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let (_, second) = get_json(
        &client,
        &format!("{url}/gemini/v1beta/models?pageSize=50&pageToken={token}"),
        Auth::Query,
    )
    .await;
    // The 44 models left.
    assert_eq!(gemini_ids(&second).len(), 44, "{second}");
    assert!(gemini_ids(&second).contains(&last));

    // The upstream's OpenAI-compatible list, passed through without the filtered model.
    let (status, list) = get_json(&client, &format!("{url}/openai/v1/models"), Auth::Bearer).await;
    assert_eq!(status, 200, "{list}");
    let ids = openai_ids(&list);
    assert_eq!(ids.len(), 63, "{ids:?}");
    assert!(!ids.contains(&filtered));
    proxy.stop();
}

/// OpenAI's shape follows the pages of a model list: each token escaped (Gemini's are base64,
/// with `+`, `/` and `=`), a token given again not followed twice, and a later page that fails
/// costs only the models behind it.
#[tokio::test]
async fn model_list_pages_are_followed_with_care() {
    let mock = MockGemini::start().await;
    // 4 + 56 = 60 models, in pages of 20.
    mock.list_extra_models(56);
    mock.set_max_page_size(20);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("proxy.log");
    let env = format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={}/v1beta\n\
         SEARCH_MODELS=[]\nLOG_LEVEL=info\n",
        serde_json::to_string(&test_keys(2)).unwrap(),
        mock.base_url()
    );
    let proxy = Proxy::start_logging(dir.path(), &env, Some(&log)).await;
    let client = support::client_builder().build().unwrap();
    let list = |client: &reqwest::Client| {
        let url = format!("{}/v1/models", proxy.url);
        let client = client.clone();
        async move {
            let (status, list) = get_json(&client, &url, Auth::Bearer).await;
            assert_eq!(status, 200, "{list}");
            openai_ids(&list)
        }
    };
    let unique = |ids: &[String]| ids.iter().collect::<std::collections::BTreeSet<_>>().len();

    // Every page, each model once.
    let ids = list(&client).await;
    assert_eq!(ids.len(), 60, "{ids:?}");
    assert_eq!(unique(&ids), 60);
    assert!(ids.contains(&support::replies::extra_model_id(55)));

    // A relay that gives the second page's token again: the second page is read once.
    mock.repeat_page_tokens(true);
    let ids = list(&client).await;
    assert_eq!(ids.len(), 40, "{ids:?}");
    assert_eq!(unique(&ids), 40);
    mock.repeat_page_tokens(false);

    // Later pages refused: the first page, not the failure.
    mock.refuse_page_tokens(true);
    let ids = list(&client).await;
    assert_eq!(ids.len(), 20, "{ids:?}");
    proxy.stop();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("gave a page token again"), "{log}");
    assert!(
        log.contains("a later page of the upstream's model list failed"),
        "{log}"
    );
}

#[tokio::test]
async fn filtered_models_are_refused_on_every_route_before_any_key_is_used() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={}/v1beta\n\
         SEARCH_MODELS=[\"gemini-2.5-pro\"]\n\
         FILTERED_MODELS=[\"gemini-2.5-pro\",\"text-embedding-004\"]\n",
        serde_json::to_string(&test_keys(2)).unwrap(),
        mock.base_url()
    );
    let proxy = Proxy::start(dir.path(), &env).await;
    let client = support::client_builder().build().unwrap();
    let url = &proxy.url;
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "x"}]});
    let embed = json!({"model": "text-embedding-004", "input": "x"});
    let gemini_embed = json!({"requests": [{"model": "models/text-embedding-004",
        "content": {"parts": [{"text": "x"}]}}]});
    let cases: Vec<(&str, String, Option<Value>, bool)> = vec![
        (
            "POST",
            "/v1/chat/completions".into(),
            Some(chat("gemini-2.5-pro")),
            true,
        ),
        (
            "POST",
            "/hf/v1/chat/completions".into(),
            Some(chat("gemini-2.5-pro-search")),
            true,
        ),
        ("POST", "/v1/embeddings".into(), Some(embed.clone()), true),
        (
            "POST",
            "/hf/v1/embeddings".into(),
            Some(embed.clone()),
            true,
        ),
        (
            "POST",
            "/openai/v1/chat/completions".into(),
            Some(chat("gemini-2.5-pro")),
            true,
        ),
        (
            "POST",
            "/openai/v1/embeddings".into(),
            Some(embed.clone()),
            true,
        ),
        ("GET", "/openai/v1/models/gemini-2.5-pro".into(), None, true),
        (
            "POST",
            "/v1beta/models/gemini-2.5-pro:generateContent".into(),
            Some(serde_json::from_str(&prompt_body("x")).unwrap()),
            false,
        ),
        (
            "POST",
            "/v1/models/text-embedding-004:batchEmbedContents".into(),
            Some(gemini_embed),
            false,
        ),
    ];
    for (method, path, body, openai) in cases {
        let res = request(&client, method, &format!("{url}{path}"), Auth::Bearer, body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{method} {path}");
        let error: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("not available"), "{path}: {error}");
        // The route's own error format.
        assert_eq!(
            error["error"]["type"].is_string(),
            openai,
            "{path}: {error}"
        );
        assert_eq!(
            error["error"]["status"].is_string(),
            !openai,
            "{path}: {error}"
        );
    }
    assert_eq!(mock.total(), 0, "no upstream call, no key used");

    // Hidden from every list.
    for (path, auth) in [
        ("/v1/models", Auth::Bearer),
        ("/hf/v1/models", Auth::Bearer),
        ("/openai/v1/models", Auth::Bearer),
    ] {
        let (status, list) = get_json(&client, &format!("{url}{path}"), auth).await;
        assert_eq!(status, 200, "{path}");
        let ids = openai_ids(&list);
        assert!(
            ids.contains(&"gemini-2.5-flash".to_owned()),
            "{path}: {ids:?}"
        );
        assert!(
            !ids.iter()
                .any(|id| id.starts_with("gemini-2.5-pro") || id == "text-embedding-004"),
            "{path}: {ids:?}"
        );
    }
    let (_, list) = get_json(&client, &format!("{url}/v1beta/models"), Auth::GoogHeader).await;
    let ids = gemini_ids(&list);
    assert!(
        !ids.iter().any(|id| id.starts_with("gemini-2.5-pro")),
        "{ids:?}"
    );

    // Other models are served on the same routes.
    for (path, body) in [
        ("/v1/chat/completions", chat("gemini-2.5-flash")),
        ("/openai/v1/chat/completions", chat("gemini-2.5-flash")),
    ] {
        let res = request(
            &client,
            "POST",
            &format!("{url}{path}"),
            Auth::Bearer,
            Some(body),
        )
        .send()
        .await
        .unwrap();
        // The mock has no OpenAI chat endpoint: its 404 comes back as it is.
        let want = if path.starts_with("/openai") {
            404
        } else {
            200
        };
        assert_eq!(res.status(), want, "{path}");
    }
    proxy.stop();
}

/// On `/openai/v1` the body goes to Google as it is: a filtered model cannot hide where the
/// parameter filter does not look (a body not labelled JSON, `images/generations`, a second
/// `model`, an escaped path), and a body whose model cannot be read is refused.
#[tokio::test]
async fn filtered_models_cannot_hide_from_the_passthrough() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={}/v1beta\n\
         FILTERED_MODELS=[\"gemini-2.5-pro\"]\n",
        serde_json::to_string(&test_keys(2)).unwrap(),
        mock.base_url()
    );
    let proxy = Proxy::start(dir.path(), &env).await;
    let client = support::client_builder().build().unwrap();
    let url = &proxy.url;
    let send = |path: &str, content_type: Option<&str>, body: &str| {
        let mut req = client
            .post(format!("{url}{path}"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(body.to_owned());
        if let Some(content_type) = content_type {
            req = req.header("content-type", content_type);
        }
        req.send()
    };
    let chat = r#"{"model":"gemini-2.5-pro","messages":[{"role":"user","content":"x"}]}"#;
    let cases = [
        (
            "/openai/v1/chat/completions",
            Some("text/plain"),
            chat.to_owned(),
        ),
        (
            "/openai/v1/chat/completions",
            Some("application/x-www-form-urlencoded"),
            chat.to_owned(),
        ),
        (
            "/openai/v1/images/generations",
            Some("application/json"),
            r#"{"model":"gemini-2.5-pro","prompt":"a cat"}"#.to_owned(),
        ),
        // Which `model` Google reads is its business: both are checked.
        (
            "/openai/v1/chat/completions",
            Some("application/json"),
            r#"{"model":"gemini-2.5-pro","model":"gemini-2.5-flash","messages":[{"role":"user","content":"x"}]}"#.to_owned(),
        ),
        (
            "/openai/v1/embeddings",
            None,
            r#"{"model":"models/gemini-2.5-pro","input":"x"}"#.to_owned(),
        ),
    ];
    for (path, content_type, body) in &cases {
        let res = send(path, *content_type, body).await.unwrap();
        assert_eq!(res.status(), 400, "{path} {content_type:?} {body}");
        let error: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("gemini-2.5-pro is not available"),
            "{path}: {error}"
        );
        assert_eq!(error["error"]["param"], "model", "{error}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    }
    // A path's model escaped: refused too (the proxy takes no escape but `%3A` in a path; the
    // library's layer would decode it).
    let res = request(
        &client,
        "GET",
        &format!("{url}/openai/v1/models/gemini%2D2.5-pro"),
        Auth::Bearer,
        None,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 400);
    // A body whose model cannot be read: refused, naming its label.
    let res = send("/openai/v1/chat/completions", Some("text/plain"), "hello")
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    let error: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("text/plain"), "{error}");
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    assert_eq!(mock.total(), 0, "no upstream call, no key used");

    // Another model in a body labelled otherwise goes on, with a pool key.
    let res = send(
        "/openai/v1/chat/completions",
        Some("text/plain"),
        r#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"x"}]}"#,
    )
    .await
    .unwrap();
    // The mock has no OpenAI chat endpoint: its 404 comes back as it is.
    assert_eq!(res.status(), 404);
    upstream_saw(&mock, "/v1beta/openai/chat/completions");
    proxy.stop();
}

#[tokio::test]
async fn url_normalisation_fixes_client_paths_while_it_is_on() {
    const ADMIN: &str = "sk-routes-admin-0001";
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nAUTH_TOKEN={ADMIN}\nBASE_URL={}/v1beta\n\
         URL_NORMALIZATION_ENABLED=true\n",
        serde_json::to_string(&test_keys(2)).unwrap(),
        mock.base_url()
    );
    let proxy = Proxy::start(dir.path(), &env).await;
    let client = support::client_builder().build().unwrap();
    let url = &proxy.url;
    let chat = json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "x"}]});
    let count = serde_json::from_str::<Value>(&prompt_body("count these words")).unwrap();
    // (path sent, body, what the upstream is asked for)
    let cases: Vec<(&str, &str, Option<Value>, &str)> = vec![
        (
            "POST",
            "/v1/v1/chat/completions",
            Some(chat.clone()),
            "/v1beta/models/gemini-2.5-flash:generateContent",
        ),
        (
            "POST",
            "/chat/completions",
            Some(chat.clone()),
            "/v1beta/models/gemini-2.5-flash:generateContent",
        ),
        (
            "POST",
            "/hf/v1/v1/chat/completions",
            Some(chat.clone()),
            "/v1beta/models/gemini-2.5-flash:generateContent",
        ),
        // The method of the path is kept (Gemini-Balance made this a generateContent).
        (
            "POST",
            "/models/gemini-2.5-flash:countTokens",
            Some(count.clone()),
            "/v1beta/models/gemini-2.5-flash:countTokens",
        ),
        (
            "POST",
            "/v1/v1beta/models/gemini-2.5-flash%3AcountTokens",
            Some(count),
            "/v1beta/models/gemini-2.5-flash:countTokens",
        ),
        (
            "GET",
            "/v1beta/openai/models",
            None,
            "/v1beta/openai/models",
        ),
    ];
    for (method, path, body, upstream) in &cases {
        let res = request(
            &client,
            method,
            &format!("{url}{path}"),
            Auth::Bearer,
            body.clone(),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 200, "{method} {path}");
        let answer: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        if path.contains("chat") {
            assert_eq!(answer["object"], "chat.completion", "{path}: {answer}");
        }
        upstream_saw(&mock, upstream);
    }
    // Never into or out of the admin API: `/api/...` is served (or refused) as sent.
    let before = mock.total();
    let res = request(
        &client,
        "POST",
        &format!("{url}/api/v1/chat/completions"),
        Auth::Bearer,
        Some(chat.clone()),
    )
    .send()
    .await
    .unwrap();
    assert_ne!(res.status(), 200);
    assert_eq!(mock.total(), before);

    // Live: switched off, the same paths are 404s again.
    let res = client
        .put(format!("{url}/api/config"))
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "application/json")
        .body(json!({"URL_NORMALIZATION_ENABLED": false}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for (method, path, body, _) in &cases {
        let res = request(
            &client,
            method,
            &format!("{url}{path}"),
            Auth::Bearer,
            body.clone(),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(res.status(), 404, "{method} {path}");
    }
    assert_eq!(mock.total(), before);
    proxy.stop();
}
