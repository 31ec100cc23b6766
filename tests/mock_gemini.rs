//! The mock Gemini of `tests/support` answers like Gemini: routes, auth, errors and faults.
//!
//! Other test files trust the mock; these tests are why they may.

use http::{Method, StatusCode};
use serde_json::Value;
use support::{prompt_body, test_key, Action, Fault, MockGemini, Route};

fn client() -> reqwest::Client {
    support::client_builder().build().unwrap()
}

async fn post(mock: &MockGemini, path: &str, key: Option<&str>, body: String) -> (u16, Value) {
    let mut req = client()
        .post(format!("{}{path}", mock.base_url()))
        .body(body);
    if let Some(key) = key {
        req = req.header("x-goog-api-key", key);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(mock: &MockGemini, path: &str, key: &str) -> (u16, Value) {
    let res = client()
        .get(format!("{}{path}", mock.base_url()))
        .header("x-goog-api-key", key)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, body_json(res).await)
}

async fn body_json(res: reqwest::Response) -> Value {
    serde_json::from_slice(&res.bytes().await.unwrap()).unwrap()
}

#[test]
fn test_keys_look_like_gemini_keys() {
    let key = gemini_balance::keys::ApiKey::new(&test_key(7)).unwrap();
    assert!(key.looks_like_gemini_key());
    assert_eq!(key.to_string(), "AIza…0007");
}

#[test]
fn parses_gemini_paths() {
    let call = |model: &str, action| Route::Call {
        version: "v1beta".into(),
        model: model.into(),
        action,
    };
    let cases = [
        (
            Method::POST,
            "/v1beta/models/gemini-2.0-flash:generateContent",
            call("gemini-2.0-flash", Action::Generate),
        ),
        (
            Method::POST,
            "/v1beta/models/gemini-2.5-pro%3AstreamGenerateContent",
            call("gemini-2.5-pro", Action::Stream),
        ),
        (
            Method::POST,
            "/v1beta/models/text-embedding-004%3abatchEmbedContents",
            call("text-embedding-004", Action::BatchEmbed),
        ),
        (
            Method::GET,
            "/v1/models",
            Route::ListModels {
                version: "v1".into(),
            },
        ),
        (
            Method::GET,
            "/v1/models/gemini-2.5-flash",
            Route::GetModel {
                version: "v1".into(),
                model: "gemini-2.5-flash".into(),
            },
        ),
        (Method::GET, "/v2/models", Route::Unknown),
        (
            Method::GET,
            "/v1beta/models/x:generateContent",
            Route::Unknown,
        ),
        (
            Method::POST,
            "/v1beta/tunedModels/x:generateContent",
            Route::Unknown,
        ),
    ];
    for (method, path, expected) in cases {
        assert_eq!(Route::parse(&method, path), expected, "{method} {path}");
    }
}

#[tokio::test]
async fn model_lists_are_paged_as_geminis_are() {
    let mock = MockGemini::start().await;
    mock.list_extra_models(60);
    let key = test_key(1);
    let names = |page: &Value| -> Vec<String> {
        page["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect()
    };
    // 64 models: a first page of 50 by default, the rest behind the next page token.
    let (status, first) = get(&mock, "/v1beta/models", &key).await;
    assert_eq!(status, 200);
    assert_eq!(names(&first).len(), 50);
    // The token is base64-like: it must be percent-encoded, as a `+` reads as a space.
    let token = first["nextPageToken"].as_str().unwrap().to_owned();
    assert!(token.contains(['+', '/', '=']), "{token}");
    let (status, _) = get(&mock, &format!("/v1beta/models?pageToken={token}"), &key).await;
    assert_eq!(status, 400);
    let encoded = token
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    let (_, second) = get(&mock, &format!("/v1beta/models?pageToken={encoded}"), &key).await;
    assert_eq!(names(&second).len(), 14);
    assert!(second.get("nextPageToken").is_none());
    // A broken relay: a later page gives its own token again; or later pages are refused.
    mock.repeat_page_tokens(true);
    let path = |size: usize, token: &str| {
        let token = token.replace('+', "%2B").replace('/', "%2F");
        format!("/v1beta/models?pageSize={size}&pageToken={token}")
    };
    let (_, page) = get(&mock, "/v1beta/models?pageSize=20", &key).await;
    let token = page["nextPageToken"].as_str().unwrap().to_owned();
    let (_, page) = get(&mock, &path(20, &token), &key).await;
    assert_eq!(page["nextPageToken"], token.as_str());
    mock.repeat_page_tokens(false);
    mock.refuse_page_tokens(true);
    let (status, _) = get(&mock, &path(20, &token), &key).await;
    assert_eq!(status, 400);
    mock.refuse_page_tokens(false);
    // pageSize up to 1000 gives them all at once; a larger one is taken as 1000.
    for size in ["1000", "5000"] {
        let (_, all) = get(&mock, &format!("/v1beta/models?pageSize={size}"), &key).await;
        assert_eq!(names(&all).len(), 64, "{size}");
        assert!(all.get("nextPageToken").is_none());
    }
    let (status, _) = get(&mock, "/v1beta/models?pageSize=-1", &key).await;
    assert_eq!(status, 400);
    let (status, _) = get(&mock, "/v1beta/models?pageToken=bogus", &key).await;
    assert_eq!(status, 400);
    // A relay that pages by less.
    mock.set_max_page_size(30);
    let (_, page) = get(&mock, "/v1beta/models?pageSize=1000", &key).await;
    assert_eq!(names(&page).len(), 30);
    assert!(page["nextPageToken"].is_string());
    // The OpenAI-compatible endpoint's list.
    let (status, list) = get(&mock, "/v1beta/openai/models", &key).await;
    assert_eq!(status, 200);
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"].as_array().unwrap().len(), 64);
    assert_eq!(list["data"][0]["id"], "models/gemini-2.0-flash");
}

/// Thinking settings as Gemini takes them: no budget of 0 for a model that cannot stop
/// thinking, levels for Gemini 3 only, not a budget and a level together.
#[tokio::test]
async fn refuses_the_thinking_settings_gemini_refuses() {
    let mock = MockGemini::start().await;
    let key = test_key(1);
    let cases = [
        ("gemini-2.5-flash", r#"{"thinkingBudget": 0}"#, 200),
        ("gemini-2.5-pro", r#"{"thinkingBudget": 0}"#, 400),
        ("gemini-2.5-pro", r#"{"thinkingBudget": 64}"#, 400),
        ("gemini-2.5-pro", r#"{"thinkingBudget": 128}"#, 200),
        ("gemini-2.5-pro", r#"{"thinkingBudget": -1}"#, 200),
        ("gemini-3-pro-preview", r#"{"thinkingBudget": 0}"#, 400),
        ("gemini-3-pro-preview", r#"{"thinkingLevel": "low"}"#, 200),
        (
            "gemini-3-pro-preview",
            r#"{"thinkingLevel": "minimal"}"#,
            400,
        ),
        (
            "gemini-3-pro-preview",
            r#"{"thinkingLevel": "low", "thinkingBudget": 1024}"#,
            400,
        ),
        ("gemini-2.5-flash", r#"{"thinkingLevel": "low"}"#, 400),
        ("gemini-2.0-flash", r#"{"thinkingBudget": 0}"#, 400),
    ];
    for (model, config, want) in cases {
        let body = format!(
            r#"{{"contents":[{{"parts":[{{"text":"x"}}]}}],"generationConfig":{{"thinkingConfig":{config}}}}}"#
        );
        let (status, answer) = post(
            &mock,
            &format!("/v1beta/models/{model}:generateContent"),
            Some(&key),
            body,
        )
        .await;
        assert_eq!(status, want, "{model} {config}: {answer}");
        if want == 400 {
            assert_eq!(answer["error"]["status"], "INVALID_ARGUMENT", "{answer}");
        }
    }
}

#[tokio::test]
async fn takes_the_key_from_header_query_or_bearer_and_refuses_none() {
    let mock = MockGemini::start().await;
    let url = format!(
        "{}/v1beta/models/gemini-2.0-flash:generateContent",
        mock.base_url()
    );
    let body = prompt_body("hello");
    let c = client();
    let by_header = c
        .post(&url)
        .header("x-goog-api-key", "k-header")
        .body(body.clone());
    let by_query = c.post(format!("{url}?key=k-query")).body(body.clone());
    let by_bearer = c.post(&url).bearer_auth("k-bearer").body(body.clone());
    for req in [by_header, by_query, by_bearer] {
        assert_eq!(req.send().await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(mock.requests("k-header"), 1);
    assert_eq!(mock.requests("k-query"), 1);
    assert_eq!(mock.requests("k-bearer"), 1);

    let res = c.post(&url).body(body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let error = body_json(res).await;
    assert_eq!(error["error"]["status"], "PERMISSION_DENIED");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Method doesn't allow unregistered callers"));
    assert_eq!(mock.unauthenticated(), 1);
    assert_eq!(mock.total(), 4);
    assert_eq!(mock.credentials_seen(), ["k-bearer", "k-header", "k-query"]);
    let last = mock.last_request().unwrap();
    assert_eq!(last.status, 403);
    assert_eq!(last.key, None);
}

#[tokio::test]
async fn answers_every_method_in_geminis_shape() {
    let mock = MockGemini::start().await;
    let key = test_key(1);

    let (status, res) = post(
        &mock,
        "/v1beta/models/gemini-2.5-flash:generateContent",
        Some(&key),
        prompt_body("two words"),
    )
    .await;
    assert_eq!(status, 200);
    let candidate = &res["candidates"][0];
    assert_eq!(candidate["content"]["role"], "model");
    assert_eq!(candidate["content"]["parts"][0]["text"], "echo: two words");
    assert_eq!(candidate["finishReason"], "STOP");
    let usage = &res["usageMetadata"];
    assert_eq!(usage["promptTokenCount"], 2);
    assert_eq!(usage["candidatesTokenCount"], 6);
    assert_eq!(usage["thoughtsTokenCount"], 12);
    assert_eq!(usage["totalTokenCount"], 20);
    assert_eq!(res["modelVersion"], "gemini-2.5-flash");

    let (status, res) = post(
        &mock,
        "/v1/models/gemini-2.0-flash%3AcountTokens",
        Some(&key),
        prompt_body("one two three"),
    )
    .await;
    assert_eq!((status, &res["totalTokens"]), (200, &Value::from(3)));

    let (status, res) = post(
        &mock,
        "/v1beta/models/text-embedding-004:embedContent",
        Some(&key),
        r#"{"content":{"parts":[{"text":"embed me"}]}}"#.to_owned(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(res["embedding"]["values"].as_array().unwrap().len(), 8);

    let (status, res) = post(
        &mock,
        "/v1beta/models/text-embedding-004:batchEmbedContents",
        Some(&key),
        r#"{"requests":[{"content":{"parts":[{"text":"a"}]}},{"content":{"parts":[{"text":"b"}]}}]}"#
            .to_owned(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(res["embeddings"].as_array().unwrap().len(), 2);

    let (status, res) = get(&mock, "/v1beta/models", &key).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = res["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for model in [
        "models/gemini-2.0-flash",
        "models/gemini-2.5-pro",
        "models/text-embedding-004",
    ] {
        assert!(names.contains(&model), "{names:?}");
    }
    assert!(res["models"][0]["supportedGenerationMethods"]
        .as_array()
        .unwrap()
        .contains(&Value::from("generateContent")));

    let (status, res) = get(&mock, "/v1beta/models/gemini-2.5-pro", &key).await;
    assert_eq!(
        (status, &res["inputTokenLimit"]),
        (200, &Value::from(1_048_576))
    );

    let (status, res) = post(
        &mock,
        "/v1beta/models/gemini-9-ultra:generateContent",
        Some(&key),
        prompt_body("hi"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(res["error"]["status"], "NOT_FOUND");
    assert_eq!(res["error"]["code"], 404);

    let (status, res) = post(
        &mock,
        "/v1beta/models/gemini-2.0-flash:generateContent",
        Some(&key),
        "{not json".to_owned(),
    )
    .await;
    assert_eq!(
        (status, &res["error"]["status"]),
        (400, &Value::from("INVALID_ARGUMENT"))
    );

    assert_eq!(mock.requests(&key), 8);
    assert_eq!(mock.status_count(&key, 200), 6);
    assert_eq!(mock.requests_for(&key, "text-embedding-004"), 2);
}

#[tokio::test]
async fn streams_server_sent_events() {
    let mock = MockGemini::start().await;
    let res = client()
        .post(format!(
            "{}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            mock.base_url()
        ))
        .header("x-goog-api-key", test_key(1))
        .body(prompt_body("stream this please"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let text = res.text().await.unwrap();
    let events: Vec<Value> = text
        .split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    assert_eq!(events.len(), support::replies::STREAM_EVENTS);
    let joined: String = events
        .iter()
        .map(|e| {
            e["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(joined, "echo: stream this please");
    assert!(events[0].get("usageMetadata").is_none());
    assert_eq!(events[2]["usageMetadata"]["promptTokenCount"], 3);
    assert_eq!(events[2]["candidates"][0]["finishReason"], "STOP");
}

#[tokio::test]
async fn calls_a_declared_function_until_its_result_comes_back() {
    let mock = MockGemini::start().await;
    let tools = serde_json::json!([{"functionDeclarations": [
        {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}},
        {"name": "get_weather", "parameters": {"type": "OBJECT", "properties": {
            "city": {"type": "STRING"}, "days": {"type": "integer"}, "metric": {"type": "boolean"},
            "extra": {"type": "object"}}}}
    ]}]);
    let ask = |body: Value| {
        let mock = &mock;
        async move {
            post(
                mock,
                "/v1beta/models/gemini-2.0-flash:generateContent",
                Some(&test_key(1)),
                body.to_string(),
            )
            .await
        }
    };
    let contents = serde_json::json!([{"role": "user", "parts": [{"text": "weather in Paris"}]}]);

    // The first declared function, its parameters filled from the prompt.
    let (status, answer) = ask(serde_json::json!({"contents": contents, "tools": tools})).await;
    assert_eq!(status, 200);
    let candidate = &answer["candidates"][0];
    assert_eq!(
        candidate["content"]["parts"],
        serde_json::json!([{"functionCall": {"name": "get_time", "args": {"tz": "weather in Paris"}}}])
    );
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(answer["usageMetadata"]["promptTokenCount"], 3);

    // `allowedFunctionNames` picks the function; each type gets a value.
    let config = serde_json::json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}});
    let (_, answer) =
        ask(serde_json::json!({"contents": contents, "tools": tools, "toolConfig": config})).await;
    assert_eq!(
        answer["candidates"][0]["content"]["parts"][0]["functionCall"],
        serde_json::json!({"name": "get_weather", "args": {"city": "weather in Paris", "days": 3, "metric": true}})
    );

    // Mode NONE, or the function's result as the last turn: text again.
    let none = serde_json::json!({"functionCallingConfig": {"mode": "NONE"}});
    let (_, answer) =
        ask(serde_json::json!({"contents": contents, "tools": tools, "toolConfig": none})).await;
    assert_eq!(
        answer["candidates"][0]["content"]["parts"][0]["text"],
        "echo: weather in Paris"
    );
    let answered = serde_json::json!([
        {"role": "user", "parts": [{"text": "weather in Paris"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"sky": "clear"}}}]}
    ]);
    let (_, answer) = ask(serde_json::json!({"contents": answered, "tools": tools})).await;
    assert_eq!(
        answer["candidates"][0]["content"]["parts"][0]["text"],
        "echo: weather in Paris"
    );

    // Streamed: the call comes whole, in one event, with the usage.
    let res = client()
        .post(format!(
            "{}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            mock.base_url()
        ))
        .header("x-goog-api-key", test_key(1))
        .body(serde_json::json!({"contents": contents, "tools": tools}).to_string())
        .send()
        .await
        .unwrap();
    let text = res.text().await.unwrap();
    let events: Vec<&str> = text.split("\r\n\r\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 1, "{text}");
    let event: Value = serde_json::from_str(events[0].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(
        event["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "get_time"
    );
    assert_eq!(event["candidates"][0]["finishReason"], "STOP");
    assert_eq!(event["usageMetadata"]["candidatesTokenCount"], 6);
}

#[tokio::test]
async fn faults_answer_as_gemini_fails() {
    let mock = MockGemini::start().await;
    let path = "/v1beta/models/gemini-2.0-flash:generateContent";
    let call = |key: String| {
        let mock = &mock;
        async move { post(mock, path, Some(&key), prompt_body("x")).await }
    };

    mock.set_fault(&test_key(1), Fault::InvalidKey);
    let (status, res) = call(test_key(1)).await;
    assert_eq!(status, 400);
    assert_eq!(res["error"]["details"][0]["reason"], "API_KEY_INVALID");

    mock.set_fault(&test_key(2), Fault::rate_limited("37s"));
    let (status, res) = call(test_key(2)).await;
    assert_eq!(status, 429);
    assert_eq!(res["error"]["status"], "RESOURCE_EXHAUSTED");
    let violation = &res["error"]["details"][0]["violations"][0];
    assert_eq!(
        violation["quotaId"],
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
    );
    assert_eq!(violation["quotaDimensions"]["model"], "gemini-2.0-flash");
    assert_eq!(res["error"]["details"][2]["retryDelay"], "37s");

    mock.set_fault(&test_key(3), Fault::daily_quota("20s"));
    let (_, res) = call(test_key(3)).await;
    assert_eq!(
        res["error"]["details"][0]["violations"][0]["quotaId"],
        "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
    );

    mock.set_fault(
        &test_key(4),
        Fault::rate_limited_for("gemini-2.0-flash", "5s"),
    );
    assert_eq!(call(test_key(4)).await.0, 429);
    let other = post(
        &mock,
        "/v1beta/models/gemini-2.5-flash:generateContent",
        Some(&test_key(4)),
        prompt_body("x"),
    )
    .await;
    assert_eq!(other.0, 200);

    mock.set_fault(&test_key(5), Fault::Flaky503);
    let statuses: Vec<u16> = [
        call(test_key(5)).await.0,
        call(test_key(5)).await.0,
        call(test_key(5)).await.0,
        call(test_key(5)).await.0,
    ]
    .into();
    assert_eq!(statuses, [503, 200, 503, 200]);
    assert_eq!(mock.status_count(&test_key(5), 503), 2);

    mock.set_fault(&test_key(6), Fault::ServerError);
    let (status, res) = call(test_key(6)).await;
    assert_eq!(
        (status, &res["error"]["status"]),
        (500, &Value::from("INTERNAL"))
    );

    mock.set_fault(&test_key(7), Fault::Suspended);
    let (status, res) = call(test_key(7)).await;
    assert_eq!(status, 403);
    assert_eq!(
        res["error"]["message"],
        format!(
            "Permission denied: Consumer 'api_key:{}' has been suspended.",
            test_key(7)
        )
    );
    assert_eq!(res["error"]["details"][0]["reason"], "CONSUMER_SUSPENDED");

    mock.set_fault(
        &test_key(8),
        Fault::Slow(std::time::Duration::from_millis(50)),
    );
    let started = std::time::Instant::now();
    assert_eq!(call(test_key(8)).await.0, 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(50));

    mock.set_fault(&test_key(1), Fault::Ok);
    assert_eq!(call(test_key(1)).await.0, 200);
}
