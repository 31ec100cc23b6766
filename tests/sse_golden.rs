//! The exact bytes a pseudo stream writes for a non-streaming answer, for both protocols:
//! a thinking answer (thought and answer parts / `reasoning_content` and `content`) and a
//! function call. Keep-alives are not in these (the answer arrives before the first one).

use std::convert::Infallible;

use bytes::Bytes;
use gemini_balance::sse::decode_all;
use gemini_balance::stream::pseudo::PseudoStreamLayer;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::{service_fn, Layer, ServiceExt};

/// The bytes a client receives when the inner stack answers `answer` to a streaming request.
async fn stream_bytes(path: &str, request: &str, answer: &'static str) -> Bytes {
    let inner = service_fn(move |_req: Request<Full<Bytes>>| async move {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
            answer.as_bytes(),
        ))))
    });
    let service = PseudoStreamLayer::new().layer(inner);
    let req = Request::post(path)
        .body(Full::new(Bytes::from(request.to_owned())))
        .unwrap();
    let res = service.oneshot(req).await.unwrap();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    // Whatever the bytes, every event must parse: JSON data, or OpenAI's end marker.
    for event in decode_all(&bytes) {
        assert!(
            event.is_done() || event.json::<Value>().is_ok(),
            "{event:?}"
        );
    }
    bytes
}

fn assert_bytes(actual: &Bytes, expected: &str) {
    assert_eq!(
        String::from_utf8_lossy(actual),
        expected,
        "\n--- actual ---\n{}\n--- expected ---\n{expected}",
        String::from_utf8_lossy(actual)
    );
}

const GEMINI_STREAM: &str = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
const CHAT: &str = "/v1/chat/completions";

/// Gemini answers pretty-printed JSON; the event is the same object on one line, key order kept,
/// both parts kept.
#[tokio::test]
async fn gemini_thinking_answer() {
    const ANSWER: &str = r#"{
  "candidates": [
    {
      "content": {
        "parts": [
          {
            "text": "**Recalling geography**\n\nThe user asks for the capital of France.",
            "thought": true
          },
          {
            "text": "The capital of France is Paris."
          }
        ],
        "role": "model"
      },
      "finishReason": "STOP",
      "index": 0
    }
  ],
  "usageMetadata": {
    "promptTokenCount": 8,
    "candidatesTokenCount": 7,
    "totalTokenCount": 40,
    "promptTokensDetails": [ { "modality": "TEXT", "tokenCount": 8 } ],
    "thoughtsTokenCount": 25
  },
  "modelVersion": "gemini-2.5-flash",
  "responseId": "r-thinking"
}
"#;
    let bytes = stream_bytes(GEMINI_STREAM, "{}", ANSWER).await;
    assert_bytes(
        &bytes,
        concat!(
            r#"data: {"candidates":[{"content":{"parts":[{"text":"**Recalling geography**\n\nThe user asks for the capital of France.","thought":true},{"text":"The capital of France is Paris."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":7,"totalTokenCount":40,"promptTokensDetails":[{"modality":"TEXT","tokenCount":8}],"thoughtsTokenCount":25},"modelVersion":"gemini-2.5-flash","responseId":"r-thinking"}"#,
            "\r\n\r\n"
        ),
    );
}

#[tokio::test]
async fn gemini_function_call() {
    const ANSWER: &str = r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"get_weather","args":{"city":"Paris","unit":null}},"thoughtSignature":"c2lnbmF0dXJl"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":20,"candidatesTokenCount":5,"totalTokenCount":25},"modelVersion":"gemini-2.5-flash","responseId":"r-call"}"#;
    let bytes = stream_bytes(GEMINI_STREAM, "{}", ANSWER).await;
    assert_bytes(&bytes, &format!("data: {ANSWER}\r\n\r\n"));
}

#[tokio::test]
async fn openai_thinking_answer_with_usage() {
    const ANSWER: &str = r#"{"id":"chatcmpl-abc","object":"chat.completion","created":1700000000,"model":"gemini-2.5-flash","choices":[{"index":0,"message":{"role":"assistant","content":"Paris.","reasoning_content":"The capital of France is Paris."},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":2,"total_tokens":35,"completion_tokens_details":{"reasoning_tokens":25}}}"#;
    let request = r#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"Capital of France?"}],"stream":true,"stream_options":{"include_usage":true}}"#;
    let bytes = stream_bytes(CHAT, request, ANSWER).await;
    assert_bytes(
        &bytes,
        concat!(
            r#"data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"gemini-2.5-flash","choices":[{"index":0,"delta":{"role":"assistant","reasoning_content":"The capital of France is Paris."},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            "\n\n",
            r#"data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"gemini-2.5-flash","choices":[{"index":0,"delta":{"content":"Paris."},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            "\n\n",
            r#"data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"gemini-2.5-flash","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
            "\n\n",
            r#"data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":1700000000,"model":"gemini-2.5-flash","choices":[],"usage":{"completion_tokens":2,"completion_tokens_details":{"reasoning_tokens":25},"prompt_tokens":8,"total_tokens":35}}"#,
            "\n\n",
            "data: [DONE]\n\n",
        ),
    );
}

#[tokio::test]
async fn openai_function_call_without_usage() {
    const ANSWER: &str = r#"{"id":"chatcmpl-def","object":"chat.completion","created":1700000001,"model":"gemini-2.5-flash","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},{"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":20,"completion_tokens":5,"total_tokens":25}}"#;
    let request = r#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"Weather?"}],"stream":true}"#;
    let bytes = stream_bytes(CHAT, request, ANSWER).await;
    assert_bytes(
        &bytes,
        concat!(
            r#"data: {"id":"chatcmpl-def","object":"chat.completion.chunk","created":1700000001,"model":"gemini-2.5-flash","choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"arguments":"{\"city\":\"Paris\"}","name":"get_weather"}},{"index":1,"id":"call_2","type":"function","function":{"arguments":"{}","name":"get_time"}}]},"logprobs":null,"finish_reason":null}]}"#,
            "\n\n",
            r#"data: {"id":"chatcmpl-def","object":"chat.completion.chunk","created":1700000001,"model":"gemini-2.5-flash","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}"#,
            "\n\n",
            "data: [DONE]\n\n",
        ),
    );
}

/// The finish reason comes from the answer; when it has none, tool calls make it `tool_calls`.
#[tokio::test]
async fn openai_finish_reasons() {
    let cases = [
        (
            r#"{"choices":[{"message":{"content":"cut"},"finish_reason":"length"}]}"#,
            "length",
        ),
        (r#"{"choices":[{"message":{"content":"hi"}}]}"#, "stop"),
        (
            r#"{"choices":[{"message":{"tool_calls":[{"id":"c","function":{"name":"f","arguments":"{}"}}]}}]}"#,
            "tool_calls",
        ),
    ];
    let request = r#"{"model":"m","messages":[],"stream":true}"#;
    for (answer, reason) in cases {
        let bytes = stream_bytes(CHAT, request, answer).await;
        let events = decode_all(&bytes);
        assert!(events.last().unwrap().is_done());
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| e.json().unwrap())
            .collect();
        let reasons: Vec<&Value> = chunks
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .collect();
        let (last, before) = reasons.split_last().unwrap();
        assert_eq!(*last, reason, "{answer}");
        assert!(
            before.iter().all(|r| r.is_null()),
            "only the last chunk finishes: {answer}"
        );
        // Ids, model and created are filled in when the answer lacks them.
        assert!(chunks[0]["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(chunks[0]["model"], "m");
        assert!(chunks[0]["created"].as_u64().unwrap() > 1_600_000_000);
    }
}

/// The OpenAI face of a Gemini answer (`openai::gemini_response_to_openai`, as the proxy's
/// OpenAI routes build it) replays whole: thoughts, answer and function call.
#[tokio::test]
async fn an_openai_answer_converted_from_gemini_replays_whole() {
    let gemini = serde_json::json!({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "Thinking about the weather.", "thought": true},
                {"text": "Let me check."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
            ]},
            "finishReason": "STOP"
        }],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 7, "totalTokenCount": 22}
    });
    let options = gemini_balance::openai::ResponseOptions {
        show_thinking: true,
        ..Default::default()
    };
    let answer = gemini_balance::openai::gemini_response_to_openai(
        &gemini,
        "gemini-2.5-flash",
        "chatcmpl-x",
        1,
        &options,
    );
    let answer: &'static str = Box::leak(answer.to_string().into_boxed_str());
    let request = r#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"Weather?"}],"stream":true,"stream_options":{"include_usage":true}}"#;
    let bytes = stream_bytes(CHAT, request, answer).await;
    let events = decode_all(&bytes);
    assert!(events.last().unwrap().is_done());
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| e.json().unwrap())
        .collect();
    let delta_text = |field: &str| -> String {
        chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"][field].as_str())
            .collect()
    };
    assert_eq!(
        delta_text("reasoning_content"),
        "Thinking about the weather."
    );
    assert_eq!(delta_text("content"), "Let me check.");
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["index"], 0);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let reasons: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|r| !r.is_null())
        .collect();
    assert_eq!(reasons, [&Value::from("tool_calls")]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 10);
    assert_eq!(usage["total_tokens"], 22);
}
