//! The official SDKs against the proxy binary: google-genai (generate, stream, function call,
//! count tokens, embed, list and get models, a `-search` model's sources; with the SDK's
//! default API version and with `v1beta`) and openai (chat completions with and without stream,
//! with tools, with `stream_options.include_usage`, a thinking model's `reasoning_content`,
//! search sources and Cherry Studio's `googleSearch` function; embeddings; models; a bad
//! token), driven by
//! `tests/sdk/drive_proxy.py` against the binary started with a `.env` in front of the loopback
//! mock Gemini.
//!
//! Needs a Python with `openai` and `google-genai` in `GEMINI_BALANCE_PYTHON` (`.ci/run` makes
//! one in `.venv`), so it is `#[ignore]`d: `cargo test -p gemini-balance-proxy --test
//! sdk_clients -- --ignored` runs it (as `.ci/run` does), and fails if that Python is missing.

mod common;

use std::process::Command;

use common::{Proxy, TOKEN};
use serde_json::{json, Value};
use support::{test_keys, Compression, Encoding, MockGemini};

/// Variables that would send the SDKs' HTTP clients through a proxy.
const PROXY_VARIABLES: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// The mock's embedding of `text`, as a list of numbers.
fn embedding(text: &str) -> Value {
    support::replies::embedding(text)["values"].clone()
}

/// Asserts that `got` and `want` are lists of the same numbers (to 1e-9: they went through
/// Python floats and back).
fn assert_numbers(got: &Value, want: &Value, what: &str) {
    let got = got
        .as_array()
        .unwrap_or_else(|| panic!("{what}: not a list: {got}"));
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: {got:?}");
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
        assert!((g - w).abs() < 1e-9, "{what}: {g} != {w}");
    }
}

/// The sources block of the mock's search answers, as Gemini-Balance wrote it.
fn search_links() -> String {
    let mut block = String::from("\n\n---\n\n**【引用来源】**\n\n");
    for (title, uri) in support::replies::SEARCH_SOURCES {
        block.push_str(&format!("\n- [{title}]({uri})"));
    }
    block
}

/// No `error` entry in a scenario's report.
fn ok<'a>(report: &'a Value, path: &str) -> &'a Value {
    let got = report
        .pointer(path)
        .unwrap_or_else(|| panic!("{path} missing from the report"));
    assert!(got.get("error").is_none(), "{path}: {got:#}");
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs GEMINI_BALANCE_PYTHON: a Python with openai and google-genai (bash .ci/run makes .venv); run with -- --ignored"]
async fn official_sdks_work_against_the_proxy() {
    let python = support::python::sdk_python("sdk_clients");
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={}/v1beta\n",
        serde_json::to_string(&test_keys(3)).unwrap(),
        mock.base_url()
    );
    let proxy = Proxy::start(dir.path(), &env).await;

    // As Google's front ends answer (gzip, as the SDKs ask), then as relays that force another
    // coding whatever is asked: every scenario reads decoded answers.
    let mut compressed = 0;
    for compression in [
        Compression::Negotiate,
        Compression::Force(Encoding::Brotli),
        Compression::Force(Encoding::Zstd),
        Compression::Force(Encoding::Deflate),
    ] {
        mock.set_compression(compression.clone());
        eprintln!("upstream compression: {compression:?}");
        run_and_check(&python, &proxy.url).await;
        assert!(
            mock.compressed_answers() > compressed,
            "{compression:?}: the mock compressed its answers"
        );
        compressed = mock.compressed_answers();
    }

    // The client token never went upstream; the pool's keys did.
    assert!(!mock.saw_credential(TOKEN));
    assert!(!mock.saw_credential("not-a-token"));
    assert!(test_keys(3).iter().any(|k| mock.requests(k) > 0));
    proxy.stop();
}

/// Runs every SDK scenario against the proxy at `url` and checks the report.
async fn run_and_check(python: &str, url: &str) {
    let args = json!({"url": url, "token": TOKEN});
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/sdk/drive_proxy.py"
    );
    let command = python.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(command);
        command.arg(script).arg(args.to_string());
        for name in PROXY_VARIABLES {
            command.env_remove(name);
        }
        command
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env_remove("GOOGLE_GENAI_API_VERSION")
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
    assert_eq!(
        report["outside_connections"],
        json!([]),
        "an SDK tried to leave the machine"
    );

    // google-genai, with its default API version (the proxy's /v1 mount) and with v1beta.
    assert_eq!(report["genai"]["default"]["api_version"], "v1");
    assert_eq!(report["genai"]["v1beta"]["api_version"], "v1beta");
    for version in ["default", "v1beta"] {
        let at = |scenario: &str| format!("/genai/{version}/{scenario}");

        let got = ok(&report, &at("generate"));
        assert_eq!(got["text"], "echo: hello from genai", "{version}");
        assert_eq!(got["finish_reason"], "STOP", "{version}");
        assert_eq!(got["model_version"], "gemini-2.0-flash", "{version}");
        assert_eq!(got["usage"]["prompt_token_count"], 3, "{version}");
        assert_eq!(got["usage"]["candidates_token_count"], 6, "{version}");
        assert_eq!(got["usage"]["total_token_count"], 9, "{version}");

        let got = ok(&report, &at("stream"));
        assert_eq!(got["text"], "echo: stream from genai please", "{version}");
        assert_eq!(
            got["chunks"],
            support::replies::STREAM_EVENTS,
            "{version}: one chunk per upstream event"
        );
        assert_eq!(got["finish_reasons"], json!(["STOP"]), "{version}");
        assert_eq!(got["usage"]["prompt_token_count"], 4, "{version}");
        assert_eq!(got["usage"]["total_token_count"], 10, "{version}");

        let got = ok(&report, &at("tools"));
        assert_eq!(
            got["function_calls"],
            json!([{"name": "get_weather", "args": {"city": "weather in Paris"}}]),
            "{version}"
        );

        // A -search model: the sources after the text (SHOW_SEARCH_LINK, on by default); the
        // grounding metadata is still there for clients that read it.
        let got = ok(&report, &at("search"));
        let answer = format!("echo: news today{}", search_links());
        assert_eq!(got["text"], answer, "{version}");
        assert_eq!(got["streamed"], answer, "{version}");
        assert_eq!(
            got["grounding_chunks"],
            support::replies::SEARCH_SOURCES.len(),
            "{version}"
        );

        let got = ok(&report, &at("count_tokens"));
        assert_eq!(got["total_tokens"], 5, "{version}");

        let got = ok(&report, &at("embed"));
        let embeddings = got["embeddings"].as_array().unwrap();
        assert_eq!(embeddings.len(), 2, "{version}");
        assert_numbers(&embeddings[0], &embedding("first text"), version);
        assert_numbers(&embeddings[1], &embedding("the second text"), version);

        let got = ok(&report, &at("models"));
        let names: Vec<&str> = got["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        for model in ["models/gemini-2.0-flash", "models/text-embedding-004"] {
            assert!(names.contains(&model), "{version}: {names:?}");
        }
        assert_eq!(
            got["get"],
            json!({"name": "models/gemini-2.5-flash", "display_name": "Gemini 2.5 Flash",
                   "input_token_limit": 1_048_576, "output_token_limit": 65_536}),
            "{version}"
        );
    }
    let got = &report["genai"]["bad_token"];
    assert_eq!(got["error"]["type"], "ClientError", "{got}");
    assert_eq!(got["error"]["code"], 401, "{got}");

    // openai: a plain completion.
    let got = ok(&report, "/openai/chat");
    assert_eq!(got["content"], "echo: hello from openai");
    assert_eq!(got["role"], "assistant");
    assert_eq!(got["finish_reason"], "stop");
    assert_eq!(got["object"], "chat.completion");
    assert_eq!(got["model"], "gemini-2.0-flash");
    assert_eq!(got["usage"]["prompt_tokens"], 3, "{}", got["usage"]);
    assert_eq!(got["usage"]["completion_tokens"], 6);
    assert_eq!(got["usage"]["total_tokens"], 9);

    // Streams: the text, one role, one finish reason; usage only when asked, as the last chunk
    // with no choices.
    for (scenario, with_usage) in [("stream", false), ("stream_usage", true)] {
        let got = ok(&report, &format!("/openai/{scenario}"));
        assert_eq!(
            got["content"], "echo: stream from openai please",
            "{scenario}"
        );
        assert_eq!(got["roles"], json!(["assistant"]), "{scenario}");
        assert_eq!(got["finish_reasons"], json!(["stop"]), "{scenario}");
        if with_usage {
            let chunks = got["usage_chunks"].as_array().unwrap();
            assert_eq!(chunks.len(), 1, "{scenario}: {got}");
            assert_eq!(chunks[0]["choices"], 0, "{scenario}");
            let usage = &chunks[0]["usage"];
            assert_eq!(usage["prompt_tokens"], 4, "{scenario}: {usage}");
            assert_eq!(usage["completion_tokens"], 6, "{scenario}");
            assert_eq!(usage["total_tokens"], 10, "{scenario}");
            assert_eq!(got["usage_is_last"], true, "{scenario}");
        } else {
            assert_eq!(got["usage_chunks"], json!([]), "{scenario}");
        }
    }

    // Tools: the call with its arguments, then the answer once the result is sent back.
    let got = ok(&report, "/openai/tools");
    assert_eq!(got["finish_reason"], "tool_calls", "{got}");
    let calls = got["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{got}");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["name"], "get_weather");
    assert_eq!(
        calls[0]["arguments"],
        json!({"city": "What is the weather in Paris?"})
    );
    assert!(
        calls[0]["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{got}"
    );
    assert_eq!(
        got["after_result"],
        json!({"content": "echo: What is the weather in Paris?", "finish_reason": "stop", "tool_calls": 0})
    );

    let got = ok(&report, "/openai/tools_stream");
    assert_eq!(got["finish_reasons"], json!(["tool_calls"]), "{got}");
    let call = &got["tool_calls"]["0"];
    assert_eq!(call["name"], "get_weather", "{got}");
    let arguments: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "weather in Rome"}));
    assert!(call["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(got["tool_calls"].as_object().unwrap().len(), 1);
    assert_eq!(got["usage_is_last"], true, "{got}");
    assert_eq!(got["usage_chunks"][0]["usage"]["total_tokens"], 9);

    // A model that thinks: its thoughts in reasoning_content (SHOW_THINKING_PROCESS, on by
    // default), whole and streamed; the plain chat above (gemini-2.0-flash, which does not
    // think) got no thinking config, which Gemini would have refused.
    let got = ok(&report, "/openai/reasoning");
    let thought = support::replies::thought_text("why is the sky blue");
    assert_eq!(got["content"], "echo: why is the sky blue");
    assert_eq!(got["reasoning_content"], thought.as_str(), "{got}");
    assert_eq!(
        got["streamed"],
        json!({"content": "echo: why is the sky blue", "reasoning_content": thought})
    );

    // Search: the sources after the answer, once, whole and streamed; Cherry Studio's search
    // switch (a function named googleSearch) searches instead of calling a function.
    let got = ok(&report, "/openai/search");
    let answer = format!("echo: news today{}", search_links());
    assert_eq!(got["content"], answer.as_str());
    assert_eq!(got["streamed"], answer.as_str());
    assert_eq!(got["finish_reasons"], json!(["stop"]));
    assert_eq!(
        got["cherry"],
        json!({"content": answer, "tool_calls": 0}),
        "{got}"
    );

    // Embeddings: one vector per input, in order, the upstream's numbers.
    let got = ok(&report, "/openai/embeddings");
    assert_eq!(got["object"], "list");
    let data = got["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, text) in ["first text", "the second text"].iter().enumerate() {
        assert_eq!(data[i]["index"], i);
        assert_numbers(&data[i]["embedding"], &embedding(text), text);
    }

    let got = ok(&report, "/openai/models");
    let ids = got["ids"].as_array().unwrap();
    for model in ["gemini-2.0-flash", "gemini-2.5-flash", "text-embedding-004"] {
        assert!(ids.contains(&json!(model)), "{ids:?}");
    }

    let got = &report["openai"]["bad_token"];
    assert_eq!(got["error"]["type"], "AuthenticationError", "{got}");
    assert_eq!(got["error"]["status"], 401);
}
