//! What requests get by default and what answers get, through the proxy binary against the
//! mock Gemini (which refuses, as Gemini does, a thinking config for a model that does not
//! think, built-in tools next to functions or in JSON mode, and a system instruction for an
//! image model):
//! - a thinking config only for models that think, on every route; `THINKING_BUDGET_MAP` and
//!   `SHOW_THINKING_PROCESS` (thoughts in `reasoning_content`) on the OpenAI route and, with a
//!   budget map entry, on the native routes;
//! - `SHOW_SEARCH_LINK`: the sources of `-search` answers (and of OpenAI's `googleSearch`
//!   function, Cherry Studio's search switch), once, at the end, in streams and whole answers,
//!   on both routes; live through the admin API;
//! - code execution and URL context on the native routes too;
//! - `input_video` parts; images answered by `-image` models as markdown, and sent back.

mod common;

use common::{Proxy, TOKEN};
use reqwest::Client;
use serde_json::{json, Value};
use support::replies::{thought_text, IMAGE_PNG_BASE64, SEARCH_SOURCES};
use support::{test_keys, MockGemini};

const ADMIN: &str = "sk-model-features-admin";

fn env_file(mock: &MockGemini, extra: &str) -> String {
    format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nAUTH_TOKEN={ADMIN}\nBASE_URL={}/v1beta\n{extra}",
        serde_json::to_string(&test_keys(2)).unwrap(),
        mock.base_url()
    )
}

/// The sources block of the mock's search answers, as Gemini-Balance wrote it.
fn links_block() -> String {
    let mut block = String::from("\n\n---\n\n**【引用来源】**\n\n");
    for (title, uri) in SEARCH_SOURCES {
        block.push_str(&format!("\n- [{title}]({uri})"));
    }
    block
}

struct Client2 {
    client: Client,
    url: String,
}

impl Client2 {
    fn new(proxy: &Proxy) -> Client2 {
        Client2 {
            client: support::client_builder().build().unwrap(),
            url: proxy.url.clone(),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, bytes::Bytes) {
        let res = self
            .client
            .post(format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.bytes().await.unwrap())
    }

    /// A non-streamed OpenAI chat: status and answer.
    async fn chat(&self, body: Value) -> (u16, Value) {
        let (status, bytes) = self.post("/v1/chat/completions", &body).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// A streamed OpenAI chat: status and the chunks (without `[DONE]`).
    async fn chat_stream(&self, mut body: Value) -> (u16, Vec<Value>) {
        body["stream"] = json!(true);
        let (status, bytes) = self.post("/v1/chat/completions", &body).await;
        (status, events(&bytes))
    }

    /// A native generateContent: status and answer.
    async fn generate(&self, model: &str, body: Value) -> (u16, Value) {
        let path = format!("/v1beta/models/{model}:generateContent");
        let (status, bytes) = self.post(&path, &body).await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// A native stream (`alt=sse`): status and events.
    async fn stream(&self, model: &str, body: Value) -> (u16, Vec<Value>) {
        let path = format!("/v1beta/models/{model}:streamGenerateContent?alt=sse");
        let (status, bytes) = self.post(&path, &body).await;
        (status, events(&bytes))
    }

    async fn admin_put(&self, change: Value) {
        let res = self
            .client
            .put(format!("{}/api/config", self.url))
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("content-type", "application/json")
            .body(change.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }
}

fn events(bytes: &[u8]) -> Vec<Value> {
    gemini_balance::sse::decode_all(bytes)
        .iter()
        .filter(|e| !e.is_done())
        .map(|e| e.json().unwrap())
        .collect()
}

fn chat(model: &str, prompt: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": prompt}]})
}

fn prompt(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

/// The body the mock got last.
fn upstream(mock: &MockGemini) -> Value {
    serde_json::from_slice(&mock.last_request().unwrap().body).unwrap()
}

/// The text deltas of an OpenAI stream, joined, and the chunks that carried any.
fn streamed(chunks: &[Value], field: &str) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"][field].as_str())
        .collect()
}

/// The text of a Gemini answer (every non-thought text part) and its thoughts.
fn gemini_text(answers: &[Value]) -> (String, String) {
    let mut text = String::new();
    let mut thoughts = String::new();
    for answer in answers {
        for part in answer["candidates"][0]["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(t) = part["text"].as_str() else {
                continue;
            };
            if part["thought"] == true {
                thoughts.push_str(t);
            } else {
                text.push_str(t);
            }
        }
    }
    (text, thoughts)
}

/// `-non-thinking` and `reasoning_effort` `none`/`minimal` ask for the lowest thinking the
/// model takes: Gemini refuses a budget of 0 to the models that cannot stop thinking (2.5 Pro,
/// Gemini 3 Pro), and Gemini 3 models are set by level.
#[tokio::test]
async fn the_lowest_thinking_is_one_the_model_takes() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock, "")).await;
    let c = Client2::new(&proxy);
    let thinking = |mock: &MockGemini| upstream(mock)["generationConfig"]["thinkingConfig"].clone();
    let cases = [
        ("gemini-2.5-flash", json!({"thinkingBudget": 0})),
        (
            "gemini-2.5-pro",
            json!({"thinkingBudget": 128, "includeThoughts": true}),
        ),
        (
            "gemini-3-pro-preview",
            json!({"thinkingLevel": "low", "includeThoughts": true}),
        ),
    ];
    for (model, want) in &cases {
        let (status, answer) = c.chat(chat(&format!("{model}-non-thinking"), "why")).await;
        assert_eq!(status, 200, "{model}: {answer}");
        assert_eq!(thinking(&mock), *want, "{model}-non-thinking");
        for effort in ["none", "minimal"] {
            let mut body = chat(model, "why");
            body["reasoning_effort"] = json!(effort);
            let (status, answer) = c.chat(body).await;
            assert_eq!(status, 200, "{model} {effort}: {answer}");
            assert_eq!(thinking(&mock), *want, "{model} {effort}");
        }
        // Native routes: thoughts only with a budget map entry.
        let (status, answer) = c
            .generate(&format!("{model}-non-thinking"), prompt("why"))
            .await;
        assert_eq!(status, 200, "{model}: {answer}");
        let mut native = want.clone();
        native.as_object_mut().unwrap().remove("includeThoughts");
        assert_eq!(thinking(&mock), native, "native {model}-non-thinking");
    }
    proxy.stop();
}

#[tokio::test]
async fn a_thinking_config_reaches_only_models_that_think() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    // SHOW_THINKING_PROCESS is on by default.
    let env = env_file(
        &mock,
        "THINKING_BUDGET_MAP={\"gemini-2.5-flash\": -1}\nTHINKING_MODELS=[\"gemini-2.5-pro\"]\n",
    );
    let proxy = Proxy::start(dir.path(), &env).await;
    let c = Client2::new(&proxy);

    // gemini-2.0-flash does not think: Gemini would answer 400 to any thinking config.
    for model in ["gemini-2.0-flash", "gemini-2.0-flash-non-thinking"] {
        let (status, answer) = c.chat(chat(model, "hi there")).await;
        assert_eq!(status, 200, "{model}: {answer}");
        assert_eq!(answer["choices"][0]["message"]["content"], "echo: hi there");
        assert!(upstream(&mock)
            .pointer("/generationConfig/thinkingConfig")
            .is_none());
        let (status, chunks) = c.chat_stream(chat(model, "hi there")).await;
        assert_eq!(status, 200, "{model}");
        assert_eq!(streamed(&chunks, "content"), "echo: hi there");
        let (status, answer) = c.generate(model, prompt("hi there")).await;
        assert_eq!(status, 200, "{model}: {answer}");
        assert!(upstream(&mock)
            .pointer("/generationConfig/thinkingConfig")
            .is_none());
    }

    // A model that thinks is asked for its thoughts; they come back as reasoning_content.
    let (status, answer) = c.chat(chat("gemini-2.5-pro", "why")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        upstream(&mock)["generationConfig"]["thinkingConfig"],
        json!({"includeThoughts": true})
    );
    let message = &answer["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], thought_text("why"));
    assert_eq!(message["content"], "echo: why");
    let (_, chunks) = c.chat_stream(chat("gemini-2.5-flash", "why")).await;
    assert_eq!(
        upstream(&mock)["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": -1, "includeThoughts": true}),
        "THINKING_BUDGET_MAP"
    );
    assert_eq!(streamed(&chunks, "reasoning_content"), thought_text("why"));
    assert_eq!(streamed(&chunks, "content"), "echo: why");

    // Native routes: the budget map entry, with the thoughts; a -non-thinking variant; nothing
    // for a model without an entry.
    let (status, answer) = c.generate("gemini-2.5-flash", prompt("why")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        upstream(&mock)["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": -1, "includeThoughts": true})
    );
    assert_eq!(
        gemini_text(&[answer]),
        ("echo: why".to_owned(), thought_text("why"))
    );
    let (status, _) = c
        .generate("gemini-2.5-pro-non-thinking", prompt("why"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        upstream(&mock)["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 128})
    );
    let (status, _) = c.generate("gemini-2.5-pro", prompt("why")).await;
    assert_eq!(status, 200);
    assert!(upstream(&mock).get("generationConfig").is_none());
    // The client's own config is left as it is (a client that asks a 2.0 model gets Gemini's
    // answer to that).
    let mut own = prompt("why");
    own["generationConfig"] = json!({"thinkingConfig": {"thinkingBudget": 64}});
    let (status, _) = c.generate("gemini-2.5-flash", own).await;
    assert_eq!(status, 200);
    assert_eq!(
        upstream(&mock)["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 64})
    );

    // SHOW_THINKING_PROCESS off, live: no thoughts asked for, none shown.
    c.admin_put(json!({"SHOW_THINKING_PROCESS": false})).await;
    let (_, answer) = c.chat(chat("gemini-2.5-pro", "why")).await;
    assert!(upstream(&mock).get("generationConfig").is_none());
    assert!(answer["choices"][0]["message"]
        .get("reasoning_content")
        .is_none());
    proxy.stop();
}

#[tokio::test]
async fn search_answers_end_with_their_sources_once() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    // SHOW_SEARCH_LINK is on and gemini-2.5-flash has a -search variant by default.
    let proxy = Proxy::start(dir.path(), &env_file(&mock, "")).await;
    let c = Client2::new(&proxy);
    let block = links_block();

    // OpenAI, whole and streamed: the sources follow the answer.
    let (status, answer) = c.chat(chat("gemini-2.5-flash-search", "news")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(upstream(&mock)["tools"], json!([{"googleSearch": {}}]));
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        format!("echo: news{block}")
    );
    let (status, chunks) = c.chat_stream(chat("gemini-2.5-flash-search", "news")).await;
    assert_eq!(status, 200);
    assert_eq!(streamed(&chunks, "content"), format!("echo: news{block}"));
    let with_block: Vec<&Value> = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| t.contains("引用来源"))
        })
        .collect();
    assert_eq!(with_block.len(), 1, "once: {chunks:?}");
    assert_eq!(
        with_block[0]["choices"][0]["finish_reason"], "stop",
        "in the last chunk"
    );

    // Cherry Studio's search switch: a function named googleSearch.
    let mut cherry = chat("gemini-2.0-flash", "news");
    cherry["tools"] = json!([{"type": "function", "function": {"name": "googleSearch",
        "description": "search", "parameters": {"type": "object", "properties": {}}}}]);
    let (status, answer) = c.chat(cherry).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(upstream(&mock)["tools"], json!([{"googleSearch": {}}]));
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        format!("echo: news{block}")
    );

    // Native, whole, streamed (SSE and JSON array): a text part of its own at the end.
    let (status, answer) = c.generate("gemini-2.5-flash-search", prompt("news")).await;
    assert_eq!(status, 200, "{answer}");
    let parts = answer["candidates"][0]["content"]["parts"]
        .as_array()
        .unwrap();
    assert_eq!(parts.last().unwrap(), &json!({"text": block}));
    assert_eq!(
        gemini_text(std::slice::from_ref(&answer)).0,
        format!("echo: news{block}")
    );
    let (status, events) = c.stream("gemini-2.5-flash-search", prompt("news")).await;
    assert_eq!(status, 200);
    assert_eq!(gemini_text(&events).0, format!("echo: news{block}"));
    let carrying: Vec<usize> = (0..events.len())
        .filter(|i| events[*i].to_string().contains("引用来源"))
        .collect();
    assert_eq!(carrying, [events.len() - 1], "once, in the last event");
    let (status, bytes) = c
        .post(
            "/v1beta/models/gemini-2.5-flash-search:streamGenerateContent",
            &prompt("news"),
        )
        .await;
    assert_eq!(status, 200);
    let array: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(gemini_text(&array).0, format!("echo: news{block}"));

    // A client that asks Gemini for search itself reads groundingMetadata: its text is its own.
    let mut own = prompt("news");
    own["tools"] = json!([{"googleSearch": {}}]);
    let (status, answer) = c.generate("gemini-2.5-flash", own).await;
    assert_eq!(status, 200);
    assert_eq!(gemini_text(std::slice::from_ref(&answer)).0, "echo: news");
    assert!(answer["candidates"][0]["groundingMetadata"].is_object());

    // SHOW_SEARCH_LINK off, live.
    c.admin_put(json!({"SHOW_SEARCH_LINK": false})).await;
    let (_, answer) = c.chat(chat("gemini-2.5-flash-search", "news")).await;
    assert_eq!(answer["choices"][0]["message"]["content"], "echo: news");
    let (_, answer) = c.generate("gemini-2.5-flash-search", prompt("news")).await;
    assert_eq!(gemini_text(&[answer]).0, "echo: news");
    proxy.stop();
}

#[tokio::test]
async fn search_sources_survive_the_fake_stream() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(&mock, "FAKE_STREAM_ENABLED=true\n");
    let proxy = Proxy::start(dir.path(), &env).await;
    let c = Client2::new(&proxy);
    let (status, events) = c.stream("gemini-2.5-flash-search", prompt("news")).await;
    assert_eq!(status, 200);
    assert_eq!(
        gemini_text(&events).0,
        format!("echo: news{}", links_block())
    );
    let (status, chunks) = c.chat_stream(chat("gemini-2.5-flash-search", "news")).await;
    assert_eq!(status, 200);
    assert_eq!(
        streamed(&chunks, "content"),
        format!("echo: news{}", links_block())
    );
    proxy.stop();
}

/// The stream optimizer is outside the pseudo stream: a faked stream is smoothed like a real
/// one, one character per event for a short text.
#[tokio::test]
async fn a_fake_stream_is_smoothed_like_a_real_one() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(
        &mock,
        "FAKE_STREAM_ENABLED=true\nSTREAM_OPTIMIZER_ENABLED=true\nSTREAM_MIN_DELAY=0\n\
         STREAM_MAX_DELAY=0\n",
    );
    let proxy = Proxy::start(dir.path(), &env).await;
    let c = Client2::new(&proxy);
    let (status, events) = c.stream("gemini-2.0-flash", prompt("hello")).await;
    assert_eq!(status, 200);
    assert_eq!(gemini_text(&events).0, "echo: hello");
    let pieces: Vec<&str> = events
        .iter()
        .filter_map(|e| e["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .collect();
    assert_eq!(pieces.len(), "echo: hello".len(), "{pieces:?}");
    assert!(pieces.iter().all(|p| p.chars().count() == 1), "{pieces:?}");

    let (status, chunks) = c.chat_stream(chat("gemini-2.0-flash", "hello")).await;
    assert_eq!(status, 200);
    assert_eq!(streamed(&chunks, "content"), "echo: hello");
    let pieces = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["content"].is_string())
        .count();
    assert_eq!(pieces, "echo: hello".len(), "{chunks:?}");
    proxy.stop();
}

#[tokio::test]
async fn code_execution_and_url_context_on_the_native_routes_too() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(
        &mock,
        "TOOLS_CODE_EXECUTION_ENABLED=true\nURL_CONTEXT_ENABLED=true\nURL_CONTEXT_MODELS=[\"gemini-2.5-flash\"]\n",
    );
    let proxy = Proxy::start(dir.path(), &env).await;
    let c = Client2::new(&proxy);

    let (status, _) = c.generate("gemini-2.5-flash", prompt("run it")).await;
    assert_eq!(status, 200);
    assert_eq!(
        upstream(&mock)["tools"],
        json!([{"codeExecution": {}}, {"urlContext": {}}])
    );
    let (status, _) = c.stream("gemini-2.0-flash", prompt("run it")).await;
    assert_eq!(status, 200);
    assert_eq!(upstream(&mock)["tools"], json!([{"codeExecution": {}}]));
    // Not next to functions, nor in JSON mode (Gemini refuses both).
    let mut functions = prompt("weather");
    functions["tools"] = json!([{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}}]}]);
    let (status, answer) = c.generate("gemini-2.5-flash", functions.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(upstream(&mock)["tools"], functions["tools"]);
    let mut json_mode = prompt("data");
    json_mode["generationConfig"] = json!({"responseMimeType": "application/json"});
    let (status, answer) = c.generate("gemini-2.5-flash", json_mode).await;
    assert_eq!(status, 200, "{answer}");
    assert!(upstream(&mock).get("tools").is_none());
    // countTokens takes no tools.
    let (status, _) = c
        .post(
            "/v1beta/models/gemini-2.5-flash:countTokens",
            &prompt("one two"),
        )
        .await;
    assert_eq!(status, 200);
    assert!(upstream(&mock).get("tools").is_none());

    // The OpenAI route, as before.
    let (status, _) = c.chat(chat("gemini-2.5-flash", "run it")).await;
    assert_eq!(status, 200);
    assert_eq!(
        upstream(&mock)["tools"],
        json!([{"codeExecution": {}}, {"urlContext": {}}])
    );
    proxy.stop();
}

#[tokio::test]
async fn videos_go_up_and_images_come_back_as_markdown() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    // gemini-2.0-flash-exp has an -image variant by default.
    let proxy = Proxy::start(dir.path(), &env_file(&mock, "")).await;
    let c = Client2::new(&proxy);

    let video = json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what happens"},
        {"type": "input_video", "input_video": {"data": "AAAAGGZ0eXBtcDQy", "format": "mp4"}}
    ]}]});
    let (status, answer) = c.chat(video).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        upstream(&mock)["contents"][0]["parts"][1],
        json!({"inlineData": {"mimeType": "video/mp4", "data": "AAAAGGZ0eXBtcDQy"}})
    );
    let bad = json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
        {"type": "input_video", "input_video": {"data": "AAAA", "format": "mkv"}}]}]});
    let (status, error) = c.chat(bad).await;
    assert_eq!(status, 400);
    assert_eq!(
        error["error"]["param"],
        "messages[0].content[0].input_video.format"
    );

    // An -image model: the system message is not sent (image models refuse it); the image
    // comes back as a markdown data: URL, whole and streamed.
    let image_markdown = format!("\n\n![image](data:image/png;base64,{IMAGE_PNG_BASE64})\n\n");
    let draw = json!({"model": "gemini-2.0-flash-exp-image", "messages": [
        {"role": "system", "content": "You draw."},
        {"role": "user", "content": "a cat"}]});
    let (status, answer) = c.chat(draw.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(content, format!("echo: a cat{image_markdown}"));
    let (status, chunks) = c.chat_stream(draw).await;
    assert_eq!(status, 200);
    assert_eq!(
        streamed(&chunks, "content"),
        format!("echo: a cat{image_markdown}")
    );

    // The answer sent back in the history: its image goes back to the model as an image.
    let edit = json!({"model": "gemini-2.0-flash-exp-image", "messages": [
        {"role": "user", "content": "a cat"},
        {"role": "assistant", "content": content},
        {"role": "user", "content": "make it blue"}]});
    let (status, answer) = c.chat(edit).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        upstream(&mock)["contents"][1]["parts"],
        json!([{"text": "echo: a cat\n\n"},
               {"inlineData": {"mimeType": "image/png", "data": IMAGE_PNG_BASE64}}])
    );
    proxy.stop();
}
