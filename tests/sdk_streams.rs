//! Pseudo streams (and the optimizer) read by the official SDKs' stream readers: the openai
//! Python SDK (`chat.completions.create(stream=True)` and the accumulating
//! `chat.completions.stream()` helper) and google-genai (`models.generate_content_stream`).
//!
//! Needs a Python with `openai` and `google-genai` in `GEMINI_BALANCE_PYTHON` (`.ci/run` makes
//! one in `.venv`), so it is `#[ignore]`d: `cargo test --test sdk_streams -- --ignored` runs
//! it (as `.ci/run` does), and fails if that Python is missing.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use gemini_balance::stream::optimizer::{OptimizerParams, StreamOptimizerLayer};
use gemini_balance::stream::pseudo::{KeepAlive, PseudoStreamLayer};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tower::{service_fn, ServiceBuilder};

/// How long the fake upstream takes to answer a non-streaming request: long enough for
/// several keep-alives at the test's interval.
const ANSWER_DELAY: Duration = Duration::from_millis(700);
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(200);

fn json_response(status: StatusCode, body: Value) -> Response<Body> {
    let mut res = Response::new(Body::from(body.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn sse_response(events: &[Value], done: bool, crlf: bool) -> Response<Body> {
    let sep = if crlf { "\r\n\r\n" } else { "\n\n" };
    let mut text: String = events.iter().map(|e| format!("data: {e}{sep}")).collect();
    if done {
        text.push_str("data: [DONE]\n\n");
    }
    let mut res = Response::new(Body::from(text));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    res
}

const QUOTA_ERROR: &str = "Resource has been exhausted (e.g. check quota).";

fn openai_answer(model: &str) -> Response<Body> {
    let (message, finish, usage) = match model {
        "thinker" => (
            json!({"role": "assistant", "content": "The capital of France is Paris.",
                   "reasoning_content": "The user asks about France. Paris is its capital."}),
            "stop",
            json!({"prompt_tokens": 8, "completion_tokens": 7, "total_tokens": 40,
                   "completion_tokens_details": {"reasoning_tokens": 25}}),
        ),
        "tool-caller" => (
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\":\"CET\"}"}}
            ]}),
            "tool_calls",
            json!({"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}),
        ),
        _ => {
            return json_response(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": {"code": 429, "message": QUOTA_ERROR, "status": "RESOURCE_EXHAUSTED"}}),
            )
        }
    };
    json_response(
        StatusCode::OK,
        json!({
            "id": "chatcmpl-sdk", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage
        }),
    )
}

fn gemini_answer(model: &str) -> Response<Body> {
    let (parts, usage) = match model {
        "thinker" => (
            json!([{"text": "The user asks about France. Paris is its capital.", "thought": true},
                   {"text": "The capital of France is Paris."}]),
            json!({"promptTokenCount": 8, "candidatesTokenCount": 7, "thoughtsTokenCount": 25, "totalTokenCount": 40}),
        ),
        "tool-caller" => (
            json!([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"}]),
            json!({"promptTokenCount": 20, "candidatesTokenCount": 10, "totalTokenCount": 30}),
        ),
        _ => {
            return json_response(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": {"code": 429, "message": QUOTA_ERROR, "status": "RESOURCE_EXHAUSTED"}}),
            )
        }
    };
    json_response(
        StatusCode::OK,
        json!({
            "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage, "modelVersion": model, "responseId": "sdk"
        }),
    )
}

/// A real stream, for the model the pseudo layer leaves alone.
fn real_stream(openai: bool) -> Response<Body> {
    if openai {
        let chunk = |delta: Value, finish: Value| {
            json!({"id": "chatcmpl-real", "object": "chat.completion.chunk", "created": 1, "model": "real-streamer",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        sse_response(
            &[
                chunk(
                    json!({"role": "assistant", "content": "Streaming "}),
                    Value::Null,
                ),
                chunk(json!({"content": "for real."}), Value::Null),
                chunk(json!({}), json!("stop")),
                json!({"id": "chatcmpl-real", "object": "chat.completion.chunk", "created": 1, "model": "real-streamer",
                       "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}}),
            ],
            true,
            false,
        )
    } else {
        let chunk = |text: &str, last: bool| {
            let mut c = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}]});
            if last {
                c["candidates"][0]["finishReason"] = json!("STOP");
                c["usageMetadata"] =
                    json!({"promptTokenCount": 1, "candidatesTokenCount": 4, "totalTokenCount": 5});
            }
            c
        };
        sse_response(
            &[chunk("Streaming ", false), chunk("for real.", true)],
            false,
            true,
        )
    }
}

/// The fake inner stack: it must only ever be asked for non-streaming answers, except for
/// `real-streamer`.
async fn inner(req: Request<Body>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    if path.ends_with("/chat/completions") {
        let body: Value = serde_json::from_slice(&body).unwrap();
        let model = body["model"].as_str().unwrap_or_default().to_owned();
        if model == "real-streamer" {
            return Ok(real_stream(true));
        }
        if body.get("stream") != Some(&json!(false)) || body.get("stream_options").is_some() {
            return Ok(json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "asked to stream"}),
            ));
        }
        tokio::time::sleep(ANSWER_DELAY).await;
        return Ok(openai_answer(&model));
    }
    let model = gemini_balance::ext::model_from_path(&path)
        .unwrap_or_default()
        .to_owned();
    if model == "real-streamer" && path.contains("streamGenerateContent") {
        return Ok(real_stream(false));
    }
    if !path.ends_with(":generateContent") || query.is_some_and(|q| q.contains("alt=sse")) {
        return Ok(json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "asked to stream"}),
        ));
    }
    let _: Bytes = body;
    tokio::time::sleep(ANSWER_DELAY).await;
    Ok(gemini_answer(&model))
}

struct Server {
    url: String,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(pseudo: PseudoStreamLayer, optimizer: StreamOptimizerLayer) -> Server {
    let stack = ServiceBuilder::new()
        .layer(optimizer)
        .layer(
            pseudo
                .keep_alive_interval(KEEP_ALIVE_INTERVAL)
                .models(|model| model != "real-streamer"),
        )
        .service(service_fn(inner));
    let router = Router::new().fallback_service(stack);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Server { url, task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs GEMINI_BALANCE_PYTHON: a Python with openai and google-genai (bash .ci/run makes .venv); run with -- --ignored"]
async fn official_sdks_read_pseudo_streams() {
    let python = support::python::sdk_python("sdk_streams");
    let plain = serve(PseudoStreamLayer::new(), StreamOptimizerLayer::default()).await;
    let chunk = serve(
        PseudoStreamLayer::new().keep_alive(KeepAlive::EmptyChunk),
        StreamOptimizerLayer::default(),
    )
    .await;
    let optimized = serve(
        PseudoStreamLayer::new(),
        StreamOptimizerLayer::new(OptimizerParams::enabled()),
    )
    .await;
    let gemini_comment = serve(
        PseudoStreamLayer::new().keep_alive(KeepAlive::Comment),
        StreamOptimizerLayer::default(),
    )
    .await;
    let servers = json!({
        "plain": plain.url, "chunk": chunk.url, "optimized": optimized.url,
        "gemini_comment": gemini_comment.url,
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/check_streams.py");
    let command = python.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(command)
            .arg(script)
            .arg(servers.to_string())
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        output.status.success(),
        "the SDK script failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "bad report ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    eprintln!("SDK versions: {}", report["versions"]);

    for server in ["plain", "chunk", "optimized"] {
        // openai: content, reasoning, one role, the finish reason, usage.
        let got = &report["openai"][server]["thinker"];
        assert!(got.get("error").is_none(), "{server}: {got}");
        assert_eq!(
            got["content"], "The capital of France is Paris.",
            "{server}"
        );
        assert_eq!(
            got["reasoning"], "The user asks about France. Paris is its capital.",
            "{server}"
        );
        assert_eq!(got["roles"], json!(["assistant"]), "{server}");
        assert_eq!(got["finish_reasons"], json!(["stop"]), "{server}");
        assert_eq!(got["usage"]["total_tokens"], 40, "{server}");
        assert_eq!(
            got["usage"]["completion_tokens_details"]["reasoning_tokens"], 25,
            "{server}"
        );

        let got = &report["openai"][server]["tool-caller"];
        assert_eq!(
            got["tool_calls"],
            json!({
                "0": {"id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                "1": {"id": "call_2", "name": "get_time", "arguments": "{\"tz\":\"CET\"}"}
            }),
            "{server}"
        );
        assert_eq!(got["finish_reasons"], json!(["tool_calls"]), "{server}");
        assert_eq!(got["content"], "", "{server}");

        // A failure after the 200: the SDK raises an APIError carrying the upstream's message.
        let got = &report["openai"][server]["failing"];
        assert_eq!(got["error"]["type"], "APIError", "{server}: {got}");
        assert_eq!(got["error"]["message"], QUOTA_ERROR, "{server}");
        assert_eq!(got["error"]["body"]["type"], "rate_limit_error", "{server}");

        // The accumulating helper.
        let got = &report["openai_helper"][server]["thinker"];
        assert_eq!(
            got["content"], "The capital of France is Paris.",
            "{server}: {got}"
        );
        assert_eq!(got["finish_reason"], "stop", "{server}");
        let got = &report["openai_helper"][server]["tool-caller"];
        assert_eq!(
            got["tool_calls"],
            json!([
                ["get_weather", "{\"city\":\"Paris\"}"],
                ["get_time", "{\"tz\":\"CET\"}"]
            ]),
            "{server}: {got}"
        );
        assert_eq!(got["finish_reason"], "tool_calls", "{server}");

        // google-genai: thought and answer parts both arrive, with the usage.
        let got = &report["gemini"][server]["thinker"];
        assert!(got.get("error").is_none(), "{server}: {got}");
        assert_eq!(
            got["thoughts"], "The user asks about France. Paris is its capital.",
            "{server}"
        );
        assert_eq!(got["text"], "The capital of France is Paris.", "{server}");
        assert_eq!(got["finish_reasons"], json!(["STOP"]), "{server}");
        assert_eq!(got["usage"]["thoughts_token_count"], 25, "{server}");

        let got = &report["gemini"][server]["tool-caller"];
        assert_eq!(
            got["function_calls"],
            json!([{"name": "get_weather", "args": {"city": "Paris"}}]),
            "{server}: {got}"
        );

        let got = &report["gemini"][server]["failing"];
        assert_eq!(got["error"]["type"], "ClientError", "{server}: {got}");
        assert_eq!(got["error"]["code"], 429, "{server}");
        assert_eq!(got["error"]["status"], "RESOURCE_EXHAUSTED", "{server}");
        assert_eq!(got["error"]["message"], QUOTA_ERROR, "{server}");
    }

    // Keep-alive chunks show up as chunks, but carry nothing.
    let plain_chunks = report["gemini"]["plain"]["thinker"]["chunks"]
        .as_u64()
        .unwrap();
    let with_keep_alives = report["gemini"]["chunk"]["thinker"]["chunks"]
        .as_u64()
        .unwrap();
    assert_eq!(plain_chunks, 1);
    assert!(with_keep_alives >= 3, "{with_keep_alives}");

    // The optimizer's pieces: many chunks, same texts.
    assert!(
        report["openai"]["optimized"]["thinker"]["chunks"]
            .as_u64()
            .unwrap()
            > 20
    );
    assert!(
        report["gemini"]["optimized"]["thinker"]["chunks"]
            .as_u64()
            .unwrap()
            > 20
    );

    // A real stream passed through and smoothed.
    let got = &report["openai"]["optimized"]["real-streamer"];
    assert_eq!(got["content"], "Streaming for real.", "{got}");
    assert_eq!(got["finish_reasons"], json!(["stop"]));
    assert_eq!(got["usage"]["total_tokens"], 5);
    assert!(got["chunks"].as_u64().unwrap() > 10);
    let got = &report["gemini"]["optimized"]["real-streamer"];
    assert_eq!(got["text"], "Streaming for real.", "{got}");
    assert!(got["chunks"].as_u64().unwrap() > 10);

    // Why Gemini streams get blank-line keep-alives by default: google-genai's reader takes any
    // line not starting with `data: ` for raw JSON, so an SSE comment breaks it.
    let got = &report["gemini"]["gemini_comment"]["thinker"];
    assert_eq!(got["error"]["type"], "UnknownApiResponseError", "{got}");
}
