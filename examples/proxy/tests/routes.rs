//! Every API route of the proxy binary, with every way of presenting the client token, against
//! the loopback mock Gemini: what the client gets, what the upstream received, and how the keys
//! were spread (a rejected key taken out while every client is still served).

#[path = "../../../tests/support/mod.rs"]
mod support;

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
