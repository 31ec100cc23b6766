//! `ParamFilterLayer` as a client sees it: a table of request bodies, each with the body the
//! upstream receives or the 400 the client gets instead (and then the upstream sees nothing).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gemini_balance::ext::ModelName;
use gemini_balance::filter::{DropRule, ParamFilterLayer, Shape};
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tower::util::BoxCloneSyncService;
use tower::{service_fn, Layer, ServiceExt};

/// What the upstream received.
#[derive(Debug, Clone)]
struct Seen {
    body: Bytes,
    headers: HeaderMap,
    model: Option<String>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn upstream(
    log: Log,
) -> BoxCloneSyncService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible> {
    BoxCloneSyncService::new(service_fn(move |req: Request<Full<Bytes>>| {
        let log = log.clone();
        async move {
            let model = req
                .extensions()
                .get::<ModelName>()
                .map(|m| m.as_str().to_owned());
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            log.lock().unwrap().push(Seen {
                body,
                headers: parts.headers,
                model,
            });
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
        }
    }))
}

/// The outcome of one request.
#[derive(Debug)]
enum Outcome {
    /// The upstream was called with this body.
    Forwarded(Seen),
    /// The client got this status and JSON error, and the upstream was not called.
    Refused(StatusCode, Value),
}

async fn send_with(
    layer: ParamFilterLayer,
    path: &str,
    body: &str,
    content_type: Option<&str>,
) -> Outcome {
    let log = Log::default();
    let service = layer.layer(upstream(log.clone()));
    let mut req = Request::post(path);
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let req = req
        .header(header::CONTENT_LENGTH, body.len())
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let res = service.oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let seen = log.lock().unwrap().clone();
    if status == StatusCode::OK {
        assert_eq!(seen.len(), 1, "the upstream is called once");
        Outcome::Forwarded(seen.into_iter().next().unwrap())
    } else {
        assert!(
            seen.is_empty(),
            "the upstream is not called for a refused request"
        );
        Outcome::Refused(status, serde_json::from_slice(&bytes).unwrap())
    }
}

async fn send(path: &str, body: &str) -> Outcome {
    send_with(
        ParamFilterLayer::new(),
        path,
        body,
        Some("application/json"),
    )
    .await
}

/// (what, route, body sent, the body the upstream sees or the fields the 400 names)
type Case = (
    &'static str,
    &'static str,
    Value,
    Result<Value, Vec<&'static str>>,
);

const GENERATE: &str = "/v1beta/models/gemini-2.5-flash:generateContent";
const CHAT: &str = "/v1/chat/completions";

/// A forwarded request: the upstream saw `expected` (as JSON) with a right `Content-Length`.
fn assert_forwarded(outcome: Outcome, expected: &Value, case: &str) -> Seen {
    let Outcome::Forwarded(seen) = outcome else {
        panic!("{case}: expected the request to be forwarded, got {outcome:?}");
    };
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(&body, expected, "{case}");
    assert_eq!(
        seen.headers[header::CONTENT_LENGTH],
        seen.body.len().to_string(),
        "{case}: Content-Length matches the forwarded body"
    );
    seen
}

/// A refused request: 400 naming exactly these fields.
fn assert_refused(outcome: Outcome, fields: &[&str], case: &str) -> Value {
    let Outcome::Refused(status, error) = outcome else {
        panic!("{case}: expected a 400, got {outcome:?}");
    };
    assert_eq!(status, StatusCode::BAD_REQUEST, "{case}");
    let message = error["error"]["message"].as_str().unwrap();
    for field in fields {
        assert!(
            message.contains(&format!("`{field}`")),
            "{case}: {message:?} names `{field}`"
        );
    }
    assert_eq!(
        message.matches('`').count(),
        2 * fields.len() + extra_backticks(message),
        "{case}: {message:?} names exactly {fields:?}"
    );
    error
}

/// Backticks in a message that are not around an offending field (`needs one of `a` or `b``).
fn extra_backticks(message: &str) -> usize {
    message
        .split("needs one of ")
        .skip(1)
        .map(|rest| rest.split(';').next().unwrap_or("").matches('`').count())
        .sum()
}

#[tokio::test]
async fn gemini_table() {
    let cases: Vec<Case> = vec![
        (
            "nulls at several depths are dropped",
            GENERATE,
            json!({
                "contents": [{"role": "user", "parts": [{"text": "hi"}, {"text": null}]}],
                "systemInstruction": null,
                "tools": null,
                "generationConfig": {
                    "temperature": null,
                    "stopSequences": null,
                    "thinkingConfig": {"thinkingBudget": null, "includeThoughts": true}
                }
            }),
            Ok(json!({
                "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                "generationConfig": {"thinkingConfig": {"includeThoughts": true}}
            })),
        ),
        (
            "lossless coercions",
            GENERATE,
            json!({
                "contents": [{"parts": [{"text": "hi"}]}],
                "generationConfig": {
                    "temperature": "0.7", "topP": "1", "maxOutputTokens": 100.0,
                    "topK": "40", "candidateCount": "1.0", "stopSequences": "END"
                }
            }),
            Ok(json!({
                "contents": [{"parts": [{"text": "hi"}]}],
                "generationConfig": {
                    "temperature": 0.7, "topP": 1, "maxOutputTokens": 100,
                    "topK": 40, "candidateCount": 1, "stopSequences": ["END"]
                }
            })),
        ),
        (
            "snake_case spellings are checked too",
            GENERATE,
            json!({
                "contents": [{"parts": [{"text": "hi"}]}],
                "generation_config": {"temperature": null, "max_output_tokens": "5"},
                "system_instruction": {"parts": [{"text": "be brief"}]}
            }),
            Ok(json!({
                "contents": [{"parts": [{"text": "hi"}]}],
                "generation_config": {"max_output_tokens": 5},
                "system_instruction": {"parts": [{"text": "be brief"}]}
            })),
        ),
        (
            "unknown fields and free-form values pass through untouched",
            GENERATE,
            json!({
                "contents": [
                    {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"x": null}}}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"r": null}}}]}
                ],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY"}, "retrievalConfig": {"latLng": null}},
                "cachedContent": "cachedContents/abc",
                "labels": {"team": "x"},
                "futureField": {"inner": null},
                "tools": [{"googleSearch": {}}, {"functionDeclarations": [{"name": "f", "parameters": {"type": "object", "default": null}}]}],
                "generationConfig": {"seed": 7, "responseSchema": {"nullable": null}, "imageConfig": {"aspectRatio": "1:1"}}
            }),
            Ok(json!({
                "contents": [
                    {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"x": null}}}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"r": null}}}]}
                ],
                "toolConfig": {"functionCallingConfig": {"mode": "ANY"}, "retrievalConfig": {"latLng": null}},
                "cachedContent": "cachedContents/abc",
                "labels": {"team": "x"},
                "futureField": {"inner": null},
                "tools": [{"googleSearch": {}}, {"functionDeclarations": [{"name": "f", "parameters": {"type": "object", "default": null}}]}],
                "generationConfig": {"seed": 7, "responseSchema": {"nullable": null}, "imageConfig": {"aspectRatio": "1:1"}}
            })),
        ),
        (
            "missing contents",
            GENERATE,
            json!({"generationConfig": {"temperature": 0.2}}),
            Err(vec!["contents"]),
        ),
        (
            "null contents counts as missing",
            GENERATE,
            json!({"contents": null}),
            Err(vec!["contents"]),
        ),
        (
            "every wrong type is named at once",
            GENERATE,
            json!({
                "contents": [{"parts": "hello"}, {"role": 1, "parts": [{"text": 5}]}],
                "generationConfig": {"temperature": true, "maxOutputTokens": 0.5, "stopSequences": ["a", 1]},
                "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH"}]
            }),
            Err(vec![
                "contents[0].parts",
                "contents[1].role",
                "contents[1].parts[0].text",
                "safetySettings[0].threshold",
                "generationConfig.stopSequences[1]",
                "generationConfig.maxOutputTokens",
                "generationConfig.temperature",
            ]),
        ),
        (
            "empty contents",
            GENERATE,
            json!({"contents": []}),
            Err(vec!["contents"]),
        ),
        (
            "inline data needs its mime type",
            GENERATE,
            json!({"contents": [{"parts": [{"inlineData": {"data": "AAAA"}}]}]}),
            Err(vec!["contents[0].parts[0].inlineData.mimeType"]),
        ),
        (
            "countTokens needs contents or generateContentRequest",
            "/v1beta/models/gemini-2.5-flash:countTokens",
            json!({"contents": null}),
            Err(vec![]),
        ),
        (
            "countTokens with a wrapped request",
            "/v1beta/models/gemini-2.5-flash:countTokens",
            json!({"generateContentRequest": {"model": "models/gemini-2.5-flash", "contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"temperature": null}}}),
            Ok(
                json!({"generateContentRequest": {"model": "models/gemini-2.5-flash", "contents": [{"parts": [{"text": "x"}]}], "generationConfig": {}}}),
            ),
        ),
        (
            "embedContent",
            "/v1beta/models/text-embedding-004:embedContent",
            json!({"content": {"parts": [{"text": "x"}]}, "taskType": null, "outputDimensionality": "8"}),
            Ok(json!({"content": {"parts": [{"text": "x"}]}, "outputDimensionality": 8})),
        ),
        (
            "batchEmbedContents needs a model per request",
            "/v1beta/models/text-embedding-004:batchEmbedContents",
            json!({"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}}, {"content": {"parts": [{"text": "b"}]}}]}),
            Err(vec!["requests[1].model"]),
        ),
        (
            "the body must be an object",
            GENERATE,
            json!([1, 2]),
            Err(vec![]),
        ),
    ];
    for (case, path, body, expected) in cases {
        let outcome = send(path, &body.to_string()).await;
        match expected {
            Ok(forwarded) => {
                assert_forwarded(outcome, &forwarded, case);
            }
            Err(fields) => {
                let error = assert_refused(outcome, &fields, case);
                // Gemini's own format: status, and one field violation per offending field.
                assert_eq!(error["error"]["code"], 400, "{case}");
                assert_eq!(error["error"]["status"], "INVALID_ARGUMENT", "{case}");
                let detail = &error["error"]["details"][0];
                assert_eq!(detail["@type"], "type.googleapis.com/google.rpc.BadRequest");
                let listed: Vec<&str> = detail["fieldViolations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v["field"].as_str().unwrap())
                    .collect();
                let expected_fields: Vec<&str> = if fields.is_empty() { vec![""] } else { fields };
                assert_eq!(listed, expected_fields, "{case}");
            }
        }
    }
}

#[tokio::test]
async fn openai_table() {
    let cases: Vec<Case> = vec![
        (
            "nulls an SDK sends are dropped",
            CHAT,
            json!({
                "model": "gemini-2.5-flash",
                "messages": [{"role": "user", "content": "hi", "name": null}],
                "temperature": null, "stop": null, "tools": null, "stream_options": null,
                "response_format": {"type": "json_schema", "json_schema": {"schema": {"default": null}}}
            }),
            Ok(json!({
                "model": "gemini-2.5-flash",
                "messages": [{"role": "user", "content": "hi"}],
                "response_format": {"type": "json_schema", "json_schema": {"schema": {"default": null}}}
            })),
        ),
        (
            "coercions",
            CHAT,
            json!({
                "model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "stop": "END", "max_tokens": 100.0, "temperature": "0.5", "n": "1", "seed": 42.0
            }),
            Ok(json!({
                "model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "stop": ["END"], "max_tokens": 100, "temperature": 0.5, "n": 1, "seed": 42
            })),
        ),
        (
            "unknown fields pass through",
            CHAT,
            json!({
                "model": "m", "messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "c1", "content": "ok"}],
                "metadata": {"k": null}, "extra_body": {"google": {"thinking_config": {"include_thoughts": true}}},
                "tool_choice": "auto", "logit_bias": {"50256": -100}
            }),
            Ok(json!({
                "model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, {"role": "tool", "tool_call_id": "c1", "content": "ok"}],
                "metadata": {"k": null}, "extra_body": {"google": {"thinking_config": {"include_thoughts": true}}},
                "tool_choice": "auto", "logit_bias": {"50256": -100}
            })),
        ),
        (
            "missing model and messages",
            CHAT,
            json!({"temperature": 1}),
            Err(vec!["model", "messages"]),
        ),
        (
            "wrong types in messages and options",
            CHAT,
            json!({
                "model": "m",
                "messages": [{"content": "no role"}, {"role": "user", "content": 7}],
                "temperature": "warm", "stream": "yes", "tools": [{"type": "function", "function": {"description": "no name"}}]
            }),
            Err(vec![
                "messages[0].role",
                "messages[1].content",
                "temperature",
                "stream",
                "tools[0].function.name",
            ]),
        ),
        (
            "embeddings need an input",
            "/v1/embeddings",
            json!({"model": "text-embedding-004", "input": null, "dimensions": "8"}),
            Err(vec!["input"]),
        ),
        (
            "embeddings",
            "/v1/embeddings",
            json!({"model": "text-embedding-004", "input": ["a", "b"], "dimensions": "8", "user": null}),
            Ok(json!({"model": "text-embedding-004", "input": ["a", "b"], "dimensions": 8})),
        ),
    ];
    for (case, path, body, expected) in cases {
        let outcome = send(path, &body.to_string()).await;
        match expected {
            Ok(forwarded) => {
                assert_forwarded(outcome, &forwarded, case);
            }
            Err(fields) => {
                let error = assert_refused(outcome, &fields, case);
                // OpenAI's own format, `param` naming the first offending field.
                let error = &error["error"];
                assert_eq!(error["type"], "invalid_request_error", "{case}");
                assert_eq!(error["param"], fields[0], "{case}");
                assert!(error["code"].is_string(), "{case}");
                assert_eq!(error.as_object().unwrap().len(), 4, "{case}");
            }
        }
    }
}

#[tokio::test]
async fn error_codes_name_the_first_problem() {
    let missing = send(CHAT, r#"{"messages":[{"role":"user","content":"x"}]}"#).await;
    let error = assert_refused(missing, &["model"], "missing");
    assert_eq!(error["error"]["code"], "missing_required_parameter");
    let wrong = send(
        CHAT,
        r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":true}"#,
    )
    .await;
    let error = assert_refused(wrong, &["n"], "wrong");
    assert_eq!(error["error"]["code"], "invalid_type");
    assert_eq!(
        error["error"]["message"],
        "Invalid request: `n` must be an integer, not a boolean (true)."
    );
}

#[tokio::test]
async fn an_unchanged_body_is_forwarded_byte_for_byte() {
    let body =
        "{ \"contents\" : [ {\"parts\":[{\"text\":\"hi\"}]} ],\n \"zeta\": 1, \"alpha\": 2 }";
    let Outcome::Forwarded(seen) = send(GENERATE, body).await else {
        panic!("forwarded");
    };
    assert_eq!(seen.body, body.as_bytes());
    assert_eq!(seen.headers[header::CONTENT_LENGTH], body.len().to_string());
}

#[tokio::test]
async fn what_it_does_not_guard_passes_untouched() {
    let with_nulls =
        r#"{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"temperature":null}}"#;
    let cases = [
        (
            "not JSON",
            GENERATE,
            "temperature=null&x",
            Some("application/json"),
        ),
        (
            "a route it does not know",
            "/v1beta/models/gemini-2.5-flash:predict",
            with_nulls,
            Some("application/json"),
        ),
        (
            "another content type",
            GENERATE,
            with_nulls,
            Some("multipart/form-data; boundary=x"),
        ),
        ("an empty body", GENERATE, "", None),
    ];
    for (case, path, body, content_type) in cases {
        let Outcome::Forwarded(seen) =
            send_with(ParamFilterLayer::new(), path, body, content_type).await
        else {
            panic!("{case}: forwarded");
        };
        assert_eq!(seen.body, body.as_bytes(), "{case}");
    }
    // Without a content type, JSON is still filtered.
    let outcome = send_with(ParamFilterLayer::new(), GENERATE, with_nulls, None).await;
    assert_forwarded(
        outcome,
        &json!({"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{}}),
        "no content type",
    );
    // GET requests are never read.
    let log = Log::default();
    let service = ParamFilterLayer::new().layer(upstream(log.clone()));
    let req = Request::builder()
        .method(Method::GET)
        .uri("/v1beta/models")
        .body(Full::new(Bytes::from_static(b"{\"x\":null}")))
        .unwrap();
    assert_eq!(service.oneshot(req).await.unwrap().status(), StatusCode::OK);
    assert_eq!(&log.lock().unwrap()[0].body[..], b"{\"x\":null}");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_refused_in_openai_format_on_openai_routes() {
    for path in [
        CHAT,
        "/openai/chat/completions",
        "/hf/v1/embeddings",
        "/openai/v1/embeddings",
    ] {
        for (body, content_type) in [
            (r#"{"model": "m", "messages": ["#, Some("application/json")),
            ("model=m", None),
            ("", Some("application/json")),
        ] {
            let Outcome::Refused(status, error) =
                send_with(ParamFilterLayer::new(), path, body, content_type).await
            else {
                panic!("{path} {body:?}: refused");
            };
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body:?}");
            assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
            let message = error["error"]["message"].as_str().unwrap();
            assert!(
                message.starts_with("the request body is not valid JSON: "),
                "{message}"
            );
            assert!(message.contains("line 1 column"), "{message}");
        }
    }
}

#[tokio::test]
async fn drop_rules_apply_per_model_and_per_route() {
    let layer = || {
        ParamFilterLayer::new()
            .drop(
                DropRule::new(["generationConfig.thinkingConfig", "tools.codeExecution"])
                    .model("gemini-2.0-*"),
            )
            .drop(DropRule::new(["user", "frequency_penalty"]).shape(Shape::ChatCompletions))
            .drop(DropRule::new(["frequency_penalty"]).model("gemma-3"))
    };
    let gemini = json!({
        "contents": [{"parts": [{"text": "hi"}]}],
        "generationConfig": {"thinking_config": {"thinkingBudget": 0}, "temperature": 1},
        "tools": [{"codeExecution": {}}, {"googleSearch": {}}]
    });
    let old = send_with(
        layer(),
        "/v1beta/models/gemini-2.0-flash:generateContent",
        &gemini.to_string(),
        None,
    )
    .await;
    assert_forwarded(
        old,
        &json!({
            "contents": [{"parts": [{"text": "hi"}]}],
            "generationConfig": {"temperature": 1},
            "tools": [{}, {"googleSearch": {}}]
        }),
        "gemini-2.0 drops thinkingConfig (snake_case too) and code execution",
    );
    let new = send_with(
        layer(),
        "/v1beta/models/gemini-2.5-flash:generateContent",
        &gemini.to_string(),
        None,
    )
    .await;
    assert_forwarded(new, &gemini, "gemini-2.5 keeps them");

    let chat = json!({"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "x"}], "user": "u1", "frequency_penalty": 0.1, "seed": 1});
    let out = send_with(layer(), CHAT, &chat.to_string(), None).await;
    let seen = assert_forwarded(
        out,
        &json!({"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "x"}], "seed": 1}),
        "chat/completions drops user and frequency_penalty",
    );
    // The body's model is passed on for per-model key cooldowns.
    assert_eq!(seen.model.as_deref(), Some("gemini-2.5-pro"));

    // A dropped field is dropped before it is checked: a bad value there is no error.
    let bad = json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"thinkingConfig": "nonsense"}});
    let out = send_with(
        layer(),
        "/v1beta/models/gemini-2.0-flash:generateContent",
        &bad.to_string(),
        None,
    )
    .await;
    assert_forwarded(
        out,
        &json!({"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {}}),
        "dropped first",
    );
}

#[tokio::test]
async fn bodies_over_the_limit_get_a_413() {
    let body = json!({"contents": [{"parts": [{"text": "x".repeat(2000)}]}]}).to_string();
    let outcome = send_with(
        ParamFilterLayer::new().max_body_bytes(1024),
        GENERATE,
        &body,
        None,
    )
    .await;
    let Outcome::Refused(status, error) = outcome else {
        panic!("refused");
    };
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error["error"]["status"], "INVALID_ARGUMENT");
}
