//! `rules::ModelRulesLayer`: what reaches the upstream (path, body, length, extensions) and what
//! is refused before anything does, on Gemini's own routes and OpenAI-shaped pass-through ones.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gemini_balance::api_error::ApiFlavor;
use gemini_balance::openai::{ChatOptions, ModelRules, ShowSearchLinks};
use gemini_balance::rules::ModelRulesLayer;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tower::util::BoxCloneSyncService;
use tower::{service_fn, Layer, ServiceExt};

/// What the upstream received.
#[derive(Debug, Clone)]
struct Seen {
    path_and_query: String,
    body: Bytes,
    content_length: Option<usize>,
    search_links: bool,
}

type Upstream = BoxCloneSyncService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;

fn upstream(seen: Arc<Mutex<Vec<Seen>>>) -> Upstream {
    BoxCloneSyncService::new(service_fn(move |req: Request<Full<Bytes>>| {
        let seen = seen.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            seen.lock().unwrap().push(Seen {
                path_and_query: parts.uri.path_and_query().unwrap().to_string(),
                body,
                content_length: parts
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .map(|v| v.to_str().unwrap().parse().unwrap()),
                search_links: parts.extensions.get::<ShowSearchLinks>().is_some(),
            });
            Ok(Response::new(Full::new(Bytes::from_static(b"{}"))))
        }
    }))
}

const SAFETY: &str = r#"[{"category":"HARM_CATEGORY_HARASSMENT","threshold":"OFF"}]"#;

fn options() -> ChatOptions {
    ChatOptions {
        rules: ModelRules {
            search_models: vec!["gemini-2.5-flash".into()],
            image_models: vec!["gemini-2.0-flash-exp".into()],
            thinking_models: vec!["gemini-2.5-pro".into()],
            filtered_models: vec!["gemini-1.5-pro".into()],
        },
        safety_settings: Some(serde_json::from_str(SAFETY).unwrap()),
        show_search_link: true,
        ..Default::default()
    }
}

/// Sends one request through the layer; returns the answer's status and body, and what the
/// upstream saw (if anything).
async fn send(
    layer: &ModelRulesLayer,
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    body: &str,
) -> (StatusCode, Value, Option<Seen>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let service = layer.layer(upstream(seen.clone()));
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_LENGTH, body.len());
    if let Some(content_type) = content_type {
        req = req.header(header::CONTENT_TYPE, content_type);
    }
    let mut req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    if uri.contains("/openai/") || uri.ends_with("/chat/completions") {
        req.extensions_mut().insert(ApiFlavor::OpenAi);
    }
    let res = service.oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let answer = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let seen = seen.lock().unwrap().pop();
    (status, answer, seen)
}

fn json_of(seen: &Seen) -> Value {
    serde_json::from_slice(&seen.body).unwrap()
}

#[tokio::test]
async fn a_suffix_model_goes_upstream_as_its_base_with_its_tools_and_mark() {
    let layer = ModelRulesLayer::new(options());
    let (status, _, seen) = send(
        &layer,
        Method::POST,
        "/v1beta/models/gemini-2.5-flash-search:streamGenerateContent?alt=sse",
        Some("application/json"),
        r#"{"contents":[{"parts":[{"text":"news?"}]}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen = seen.unwrap();
    assert_eq!(
        seen.path_and_query,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    let body = json_of(&seen);
    assert_eq!(body["tools"], json!([{"googleSearch": {}}]));
    assert_eq!(body["safetySettings"][0]["threshold"], "OFF");
    assert_eq!(body["contents"][0]["parts"][0]["text"], "news?");
    assert_eq!(seen.content_length, Some(seen.body.len()));
    assert!(seen.search_links);

    // Other methods of a suffix model: only the path changes.
    let (_, _, seen) = send(
        &layer,
        Method::POST,
        "/v1beta/models/gemini-2.5-pro-non-thinking%3AcountTokens",
        None,
        r#"{"contents":[]}"#,
    )
    .await;
    let seen = seen.unwrap();
    assert_eq!(
        seen.path_and_query,
        "/v1beta/models/gemini-2.5-pro%3AcountTokens"
    );
    assert_eq!(seen.body, r#"{"contents":[]}"#);
    assert!(!seen.search_links);
}

#[tokio::test]
async fn non_thinking_gets_the_lowest_thinking_the_model_takes() {
    let layer = ModelRulesLayer::new(options());
    let (_, _, seen) = send(
        &layer,
        Method::POST,
        "/v1beta/models/gemini-2.5-flash-non-thinking:generateContent",
        None,
        r#"{"contents":[{"parts":[{"text":"why"}]}]}"#,
    )
    .await;
    let seen = seen.unwrap();
    assert_eq!(
        seen.path_and_query,
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        json_of(&seen)["generationConfig"]["thinkingConfig"]["thinkingBudget"],
        0
    );
    // The client's own thinking config wins.
    let own = r#"{"contents":[],"generationConfig":{"thinkingConfig":{"thinkingBudget":512}}}"#;
    let (_, _, seen) = send(
        &layer,
        Method::POST,
        "/v1beta/models/gemini-2.5-flash-non-thinking:generateContent",
        None,
        own,
    )
    .await;
    assert_eq!(
        json_of(&seen.unwrap())["generationConfig"]["thinkingConfig"]["thinkingBudget"],
        512
    );
}

#[tokio::test]
async fn safety_settings_are_added_only_where_the_client_set_none() {
    let layer = ModelRulesLayer::new(options());
    let uri = "/v1beta/models/gemini-2.0-flash:generateContent";
    // Absent: added, whatever the label (curl -d sends a form label).
    for content_type in [
        None,
        Some("application/json"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let (_, _, seen) = send(
            &layer,
            Method::POST,
            uri,
            content_type,
            r#"{"contents":[{"parts":[{"text":"what are safetySettings?"}]}]}"#,
        )
        .await;
        let seen = seen.unwrap();
        let body = json_of(&seen);
        assert_eq!(
            body["safetySettings"],
            serde_json::from_str::<Value>(SAFETY).unwrap()
        );
        assert_eq!(
            body["contents"][0]["parts"][0]["text"],
            "what are safetySettings?"
        );
        assert_eq!(seen.content_length, Some(seen.body.len()));
    }
    // The client's own: kept, byte for byte.
    for own in [
        r#"{"contents":[],"safetySettings":[{"category":"X","threshold":"BLOCK_NONE"}]}"#,
        r#"{"contents":[],"safety_settings":[]}"#,
    ] {
        let (_, _, seen) = send(&layer, Method::POST, uri, None, own).await;
        assert_eq!(seen.unwrap().body, own);
    }
    // Not a generateContent, or not JSON: untouched.
    for (method, uri, body) in [
        (
            Method::POST,
            "/v1beta/models/gemini-2.0-flash:countTokens",
            r#"{"contents":[]}"#,
        ),
        (
            Method::POST,
            "/v1beta/models/text-embedding-004:embedContent",
            r#"{"content":{}}"#,
        ),
        (
            Method::POST,
            "/v1beta/models/gemini-2.0-flash:batchGenerateContent",
            r#"{"batch":{}}"#,
        ),
        (Method::POST, uri, "not json"),
        (Method::GET, "/v1beta/models/gemini-2.0-flash", ""),
    ] {
        let (_, _, seen) = send(&layer, method, uri, None, body).await;
        assert_eq!(seen.unwrap().body, body, "{uri}");
    }
}

#[tokio::test]
async fn without_defaults_a_body_passes_unread() {
    let layer = ModelRulesLayer::blocking(options().rules);
    let body = r#"{"contents":[]}"#;
    let (_, _, seen) = send(
        &layer,
        Method::POST,
        "/v1beta/models/gemini-2.0-flash:generateContent",
        None,
        body,
    )
    .await;
    assert_eq!(seen.unwrap().body, body);
}

#[tokio::test]
async fn blocked_models_are_refused_in_the_routes_format_before_anything_is_sent() {
    let layer = ModelRulesLayer::new(options());
    // Gemini's routes: the path's model, suffixes and escapes and all.
    for (method, uri) in [
        (
            Method::POST,
            "/v1beta/models/gemini-1.5-pro:generateContent",
        ),
        (
            Method::POST,
            "/v1/models/gemini-1.5-pro-non-thinking%3AstreamGenerateContent",
        ),
        (Method::GET, "/v1beta/models/gemini%2D1.5-pro"),
    ] {
        let (status, answer, seen) = send(&layer, method, uri, None, "{}").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(seen.is_none(), "{uri}");
        assert_eq!(answer["error"]["status"], "INVALID_ARGUMENT", "{uri}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("gemini-1.5-pro"), "{message}");
        assert!(message.contains("not available"), "{message}");
    }
    // OpenAI-shaped bodies passed through: every top-level model, whatever the label.
    for (content_type, body) in [
        (
            Some("text/plain"),
            r#"{"model":"gemini-1.5-pro","messages":[]}"#,
        ),
        (
            None,
            r#"{"model":"gemini-2.5-flash","model":"models/gemini-1.5-pro"}"#,
        ),
    ] {
        let (status, answer, seen) = send(
            &layer,
            Method::POST,
            "/openai/v1/chat/completions",
            content_type,
            body,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(seen.is_none());
        assert_eq!(answer["error"]["type"], "invalid_request_error");
        assert_eq!(answer["error"]["param"], "model");
    }
    // A body whose model cannot be read: refused, naming its label.
    let (status, answer, seen) = send(
        &layer,
        Method::POST,
        "/openai/v1/chat/completions",
        Some("text/plain"),
        "hello",
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(seen.is_none());
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("text/plain"));
    // Broken JSON: answered as the parameter filter would, saying where the parser stopped.
    let (status, answer, seen) = send(
        &layer,
        Method::POST,
        "/openai/v1/chat/completions",
        Some("application/json"),
        r#"{"model": "gemini-2.5-flash", "messages": ["#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(seen.is_none());
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("not valid JSON") && message.contains("column"),
        "{message}"
    );
    // Other models go on.
    let body = r#"{"model":"gemini-2.5-flash","messages":[]}"#;
    let (status, _, seen) = send(
        &layer,
        Method::POST,
        "/openai/v1/chat/completions",
        Some("application/json"),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.unwrap().body, body);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused() {
    let layer = ModelRulesLayer::new(options()).max_body_bytes(16);
    let (status, answer, seen) = send(
        &layer,
        Method::POST,
        "/v1beta/models/gemini-2.0-flash:generateContent",
        None,
        r#"{"contents":[{"parts":[{"text":"a longer prompt"}]}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(seen.is_none());
    assert_eq!(answer["error"]["code"], 413);
}

#[tokio::test]
async fn model_lists_hide_blocked_models_and_show_the_variants() {
    let lists = service_fn(|req: Request<Full<Bytes>>| async move {
        let body = match req.uri().path() {
            "/v1beta/models" => json!({"models": [
                {"name": "models/gemini-1.5-pro", "displayName": "Old"},
                {"name": "models/gemini-2.5-flash", "displayName": "Flash"},
            ], "nextPageToken": "abc"}),
            "/openai/v1/models" => json!({"object": "list", "data": [
                {"id": "gemini-1.5-pro"}, {"id": "gemini-2.5-flash"},
            ]}),
            _ => {
                let mut res = Response::new(Full::new(Bytes::from_static(b"{\"error\":{}}")));
                *res.status_mut() = StatusCode::NOT_FOUND;
                return Ok::<_, Infallible>(res);
            }
        };
        let mut res = Response::new(Full::new(Bytes::from(body.to_string())));
        res.headers_mut()
            .insert(header::CONTENT_LENGTH, body.to_string().len().into());
        Ok(res)
    });
    let service = ModelRulesLayer::new(options()).layer(lists);
    let get = |path: &'static str| {
        let service = service.clone();
        async move {
            let res = service
                .oneshot(Request::get(path).body(Full::default()).unwrap())
                .await
                .unwrap();
            let status = res.status();
            let length: Option<usize> = res
                .headers()
                .get(header::CONTENT_LENGTH)
                .map(|v| v.to_str().unwrap().parse().unwrap());
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            if status.is_success() {
                assert_eq!(length, Some(bytes.len()), "{path}");
            }
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let (status, list) = get("/v1beta/models").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["models/gemini-2.5-flash", "models/gemini-2.5-flash-search"]
    );
    assert_eq!(list["nextPageToken"], "abc", "paging is the client's");

    let (_, list) = get("/openai/v1/models").await;
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gemini-2.5-flash"]);

    // A failure passes through as it is.
    let (status, _) = get("/v1/models").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
