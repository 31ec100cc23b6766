//! Gemini answers → OpenAI answers: `chat.completion`, `chat.completion.chunk`s, embeddings.

use std::borrow::Cow;

use serde_json::{json, Map, Value};

use super::search_links::{add_search_links, SearchLinksStream};

/// Settings for converting answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseOptions {
    /// Put thought parts in `reasoning_content` (`SHOW_THINKING_PROCESS`); otherwise they are
    /// left out.
    pub show_thinking: bool,
    /// Append the web sources of a grounded answer to its `content` (`SHOW_SEARCH_LINK`, for a
    /// search the request switched on; see [`add_search_links`]).
    pub search_links: bool,
}

/// Gemini's `finishReason` as OpenAI's `finish_reason`.
pub fn finish_reason(gemini: &str, has_tool_calls: bool) -> &'static str {
    match gemini {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if has_tool_calls => "tool_calls",
        _ => "stop",
    }
}

/// Gemini's `usageMetadata` as OpenAI's `usage` (completion tokens include thoughts, as OpenAI
/// counts reasoning tokens).
pub fn openai_usage_from_gemini(meta: &Value) -> Value {
    let n = |field: &str| meta.get(field).and_then(Value::as_u64).unwrap_or(0);
    let thoughts = n("thoughtsTokenCount");
    let completion = n("candidatesTokenCount").saturating_add(thoughts);
    let prompt = n("promptTokenCount").saturating_add(n("toolUsePromptTokenCount"));
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": n("totalTokenCount").max(prompt.saturating_add(completion)),
        "prompt_tokens_details": { "cached_tokens": n("cachedContentTokenCount") },
        "completion_tokens_details": { "reasoning_tokens": thoughts },
    })
}

/// What one candidate's parts say, split the OpenAI way.
struct Message {
    content: String,
    reasoning: String,
    tool_calls: Vec<Value>,
}

fn split_parts(candidate: &Value, opts: &ResponseOptions, first_tool_index: usize) -> Message {
    let mut message = Message {
        content: String::new(),
        reasoning: String::new(),
        tool_calls: Vec::new(),
    };
    let parts = candidate
        .pointer("/content/parts")
        .and_then(Value::as_array);
    for part in parts.into_iter().flatten() {
        if let Some(call) = part.get("functionCall") {
            let arguments = call.get("args").cloned().unwrap_or_else(|| json!({}));
            message.tool_calls.push(json!({
                "index": first_tool_index + message.tool_calls.len(),
                "id": call.get("id").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| format!("call_{}", random_id(24))),
                "type": "function",
                "function": {
                    "name": call.get("name").and_then(Value::as_str).unwrap_or(""),
                    "arguments": arguments.to_string(),
                },
            }));
        } else if let Some(text) = part.get("text").and_then(Value::as_str) {
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                if opts.show_thinking {
                    message.reasoning.push_str(text);
                }
            } else {
                message.content.push_str(text);
            }
        } else if let Some(data) = part.get("inlineData") {
            let mime = data
                .get("mimeType")
                .and_then(Value::as_str)
                .unwrap_or("image/png");
            let bytes = data.get("data").and_then(Value::as_str).unwrap_or("");
            message
                .content
                .push_str(&format!("\n\n![image](data:{mime};base64,{bytes})\n\n"));
        } else if let Some(code) = part.get("executableCode") {
            let language = code
                .get("language")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_ascii_lowercase();
            let code = code.get("code").and_then(Value::as_str).unwrap_or("");
            message
                .content
                .push_str(&format!("\n```{language}\n{code}\n```\n"));
        } else if let Some(result) = part.get("codeExecutionResult") {
            let output = result.get("output").and_then(Value::as_str).unwrap_or("");
            message.content.push_str(&format!("\n```\n{output}\n```\n"));
        }
    }
    message
}

/// A random id suffix (`[a-z0-9]`).
pub(crate) fn random_id(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| CHARS[fastrand::usize(..CHARS.len())] as char)
        .collect()
}

/// A Gemini `GenerateContentResponse` as an OpenAI `chat.completion`.
///
/// One choice per candidate; text parts joined into `content`, thoughts into
/// `reasoning_content` (when shown), `functionCall` parts into `tool_calls` (text kept);
/// `finish_reason` mapped (`stop`, `length`, `tool_calls`, `content_filter`); `usage` with
/// reasoning and cached token details. Images (`inlineData`) become markdown images with a
/// `data:` URL in `content` (as Gemini-Balance wrote them without an image host); with
/// [`ResponseOptions::search_links`], the web sources of a grounded answer follow its text. A
/// prompt blocked before any candidate gives one choice with `finish_reason: "content_filter"`
/// and no content.
///
/// ```
/// use serde_json::json;
/// use gemini_balance::openai::{gemini_response_to_openai, ResponseOptions};
///
/// let gemini = json!({
///     "candidates": [{"content": {"role": "model", "parts": [
///         {"text": "Let me think", "thought": true}, {"text": "Hello"}, {"text": " world"}]},
///         "finishReason": "STOP"}],
///     "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "thoughtsTokenCount": 5, "totalTokenCount": 10}
/// });
/// let opts = ResponseOptions { show_thinking: true, ..Default::default() };
/// let openai = gemini_response_to_openai(&gemini, "gemini-2.5-flash", "chatcmpl-1", 0, &opts);
/// assert_eq!(openai["choices"][0]["message"]["content"], "Hello world");
/// assert_eq!(openai["choices"][0]["message"]["reasoning_content"], "Let me think");
/// assert_eq!(openai["choices"][0]["finish_reason"], "stop");
/// assert_eq!(openai["usage"]["completion_tokens_details"]["reasoning_tokens"], 5);
/// ```
pub fn gemini_response_to_openai(
    gemini: &Value,
    model: &str,
    id: &str,
    created: u64,
    opts: &ResponseOptions,
) -> Value {
    let gemini = if opts.search_links {
        let mut with_links = gemini.clone();
        add_search_links(&mut with_links);
        Cow::Owned(with_links)
    } else {
        Cow::Borrowed(gemini)
    };
    let candidates = gemini
        .get("candidates")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut choices: Vec<Value> = candidates
        .iter()
        .enumerate()
        .map(|(i, candidate)| {
            let message = split_parts(candidate, opts, 0);
            let reason = candidate
                .get("finishReason")
                .and_then(Value::as_str)
                .unwrap_or("STOP");
            let has_tools = !message.tool_calls.is_empty();
            let mut msg = json!({
                "role": "assistant",
                "content": if message.content.is_empty() && has_tools { Value::Null } else { json!(message.content) },
            });
            if !message.reasoning.is_empty() {
                msg["reasoning_content"] = json!(message.reasoning);
            }
            if has_tools {
                msg["tool_calls"] = Value::Array(
                    message
                        .tool_calls
                        .into_iter()
                        .map(|mut call| {
                            if let Value::Object(map) = &mut call {
                                map.remove("index");
                            }
                            call
                        })
                        .collect(),
                );
            }
            json!({
                "index": candidate.get("index").and_then(Value::as_u64).unwrap_or(i as u64),
                "message": msg,
                "logprobs": null,
                "finish_reason": finish_reason(reason, has_tools),
            })
        })
        .collect();
    if choices.is_empty() && gemini.pointer("/promptFeedback/blockReason").is_some() {
        choices.push(json!({
            "index": 0,
            "message": { "role": "assistant", "content": null },
            "logprobs": null,
            "finish_reason": "content_filter",
        }));
    }
    let mut out = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
    });
    if let Some(meta) = gemini.get("usageMetadata") {
        out["usage"] = openai_usage_from_gemini(meta);
    }
    out
}

/// Turns a real Gemini stream into OpenAI `chat.completion.chunk`s, one Gemini chunk at a time.
///
/// ```
/// use serde_json::json;
/// use gemini_balance::openai::{OpenAiStream, ResponseOptions};
///
/// let mut stream = OpenAiStream::new("gemini-2.5-flash", "chatcmpl-1", 0, ResponseOptions::default(), true);
/// let a = stream.chunk(&json!({"candidates": [{"content": {"parts": [{"text": "Hel"}]}}]}));
/// let b = stream.chunk(&json!({"candidates": [{"content": {"parts": [{"text": "lo"}]}, "finishReason": "STOP"}],
///                              "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 2, "totalTokenCount": 3}}));
/// let end = stream.finish();
/// assert_eq!(a[0]["choices"][0]["delta"], json!({"role": "assistant", "content": "Hel"}));
/// assert_eq!(b[0]["choices"][0]["finish_reason"], "stop");
/// assert_eq!(end[0]["usage"]["total_tokens"], 3); // asked for with include_usage
/// ```
#[derive(Debug, Clone)]
pub struct OpenAiStream {
    model: String,
    id: String,
    created: u64,
    opts: ResponseOptions,
    include_usage: bool,
    role_sent: Vec<bool>,
    tool_calls_sent: Vec<usize>,
    usage: Option<Value>,
    links: Option<SearchLinksStream>,
}

impl OpenAiStream {
    /// A converter for one response.
    pub fn new(
        model: &str,
        id: &str,
        created: u64,
        opts: ResponseOptions,
        include_usage: bool,
    ) -> Self {
        OpenAiStream {
            model: model.to_owned(),
            id: id.to_owned(),
            created,
            include_usage,
            role_sent: Vec::new(),
            tool_calls_sent: Vec::new(),
            usage: None,
            links: opts.search_links.then(SearchLinksStream::new),
            opts,
        }
    }

    fn envelope(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// The OpenAI chunks for one Gemini chunk (none when it carries nothing to say). With
    /// [`ResponseOptions::search_links`], the sources come with the candidate's last chunk.
    pub fn chunk(&mut self, gemini: &Value) -> Vec<Value> {
        if let Some(links) = &mut self.links {
            let mut with_links = gemini.clone();
            if links.chunk(&mut with_links) {
                return self.convert(&with_links);
            }
        }
        self.convert(gemini)
    }

    fn convert(&mut self, gemini: &Value) -> Vec<Value> {
        if let Some(meta) = gemini.get("usageMetadata") {
            self.usage = Some(openai_usage_from_gemini(meta));
        }
        let candidates = gemini.get("candidates").and_then(Value::as_array);
        let mut choices = Vec::new();
        for (i, candidate) in candidates.into_iter().flatten().enumerate() {
            let index = candidate
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(i as u64) as usize;
            if self.role_sent.len() <= index {
                self.role_sent.resize(index + 1, false);
                self.tool_calls_sent.resize(index + 1, 0);
            }
            let message = split_parts(candidate, &self.opts, self.tool_calls_sent[index]);
            let mut delta = Map::new();
            if !self.role_sent[index] {
                delta.insert("role".to_owned(), json!("assistant"));
                self.role_sent[index] = true;
            }
            if !message.content.is_empty() {
                delta.insert("content".to_owned(), json!(message.content));
            }
            if !message.reasoning.is_empty() {
                delta.insert("reasoning_content".to_owned(), json!(message.reasoning));
            }
            self.tool_calls_sent[index] += message.tool_calls.len();
            if !message.tool_calls.is_empty() {
                delta.insert("tool_calls".to_owned(), Value::Array(message.tool_calls));
            }
            let finish = candidate
                .get("finishReason")
                .and_then(Value::as_str)
                .map(|r| finish_reason(r, self.tool_calls_sent[index] > 0));
            if delta.is_empty() && finish.is_none() {
                continue;
            }
            choices.push(json!({
                "index": index,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish,
            }));
        }
        if choices.is_empty() {
            return Vec::new();
        }
        vec![self.envelope(Value::Array(choices))]
    }

    /// The closing chunks: search sources not shown yet (sent after the candidate's last
    /// chunk), then the usage chunk when the client asked for it (`choices: []`).
    /// `data: [DONE]` follows them on the wire.
    pub fn finish(&mut self) -> Vec<Value> {
        let mut chunks = match self.links.as_mut().and_then(SearchLinksStream::finish) {
            Some(extra) => self.convert(&extra),
            None => Vec::new(),
        };
        if self.include_usage {
            let mut chunk = self.envelope(json!([]));
            chunk["usage"] = self.usage.take().unwrap_or_else(
                || json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}),
            );
            chunks.push(chunk);
        }
        chunks
    }
}

/// A Gemini `batchEmbedContents` answer as an OpenAI embeddings answer.
pub fn gemini_embeddings_to_openai(gemini: &Value, model: &str) -> Value {
    let data: Vec<Value> = gemini
        .get("embeddings")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, e)| {
            json!({
                "object": "embedding",
                "index": i,
                "embedding": e.get("values").cloned().unwrap_or_else(|| json!([])),
            })
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": 0, "total_tokens": 0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_and_finish_reasons() {
        let gemini = json!({"candidates": [{"content": {"parts": [
            {"text": "Checking."},
            {"functionCall": {"name": "weather", "args": {"city": "Paris"}}}
        ]}, "finishReason": "STOP"}]});
        let out = gemini_response_to_openai(&gemini, "m", "id", 1, &ResponseOptions::default());
        let message = &out["choices"][0]["message"];
        assert_eq!(message["content"], "Checking.");
        assert_eq!(message["tool_calls"][0]["function"]["name"], "weather");
        assert_eq!(
            message["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert!(message["tool_calls"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("call_"));
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");

        for (gemini, expected) in [
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("STOP", "stop"),
            ("OTHER", "stop"),
        ] {
            assert_eq!(finish_reason(gemini, false), expected);
        }
    }

    #[test]
    fn thoughts_are_hidden_unless_shown() {
        let gemini = json!({"candidates": [{"content": {"parts": [
            {"text": "hmm", "thought": true}, {"text": "answer"}]}}]});
        let hidden = gemini_response_to_openai(&gemini, "m", "id", 1, &ResponseOptions::default());
        assert_eq!(hidden["choices"][0]["message"]["content"], "answer");
        assert!(hidden["choices"][0]["message"]
            .get("reasoning_content")
            .is_none());
    }

    #[test]
    fn blocked_prompt_is_a_content_filter_choice() {
        let gemini = json!({"promptFeedback": {"blockReason": "SAFETY"}});
        let out = gemini_response_to_openai(&gemini, "m", "id", 1, &ResponseOptions::default());
        assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
    }

    #[test]
    fn streamed_tool_calls_are_indexed_across_chunks() {
        let mut s = OpenAiStream::new("m", "id", 0, ResponseOptions::default(), false);
        let a = s.chunk(&json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "a", "args": {}}}]}}]}));
        let b = s.chunk(&json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "b", "args": {}}}]}, "finishReason": "STOP"}]}));
        assert_eq!(a[0]["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
        assert_eq!(b[0]["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
        assert_eq!(b[0]["choices"][0]["finish_reason"], "tool_calls");
        assert!(b[0]["choices"][0]["delta"].get("role").is_none());
        assert!(s.finish().is_empty(), "no usage chunk unless asked");
        assert!(s.chunk(&json!({"candidates": []})).is_empty());
    }

    #[test]
    fn embeddings_answer() {
        let out = gemini_embeddings_to_openai(
            &json!({"embeddings": [{"values": [0.1]}, {"values": [0.2]}]}),
            "e",
        );
        assert_eq!(out["data"][1]["index"], 1);
        assert_eq!(out["data"][1]["embedding"], json!([0.2]));
    }
}
