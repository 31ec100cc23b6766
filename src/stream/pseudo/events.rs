//! What a pseudo stream writes: keep-alives, the answer replayed as events of the client's
//! protocol, and error events.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::api_error::{error_value, openai_type_and_code, rpc_status_name, ApiFlavor};
use crate::sse::{blank_line, comment, data_event, LineEnding};

/// What to write while the answer is being waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeepAlive {
    /// An SSE comment, `: keep-alive`: skipped by standard SSE parsers and the openai SDKs.
    /// The default on OpenAI routes.
    Comment,
    /// An empty line: dispatches nothing in any parser, including google-genai's stream reader,
    /// which rejects comment lines. The default on Gemini routes.
    BlankLine,
    /// An empty chunk of the client's protocol, for clients that need data frames to stay
    /// alive: Gemini `{"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},"index":0}]}`,
    /// or an OpenAI `chat.completion.chunk` with an empty `content` delta. It never carries a
    /// `finish_reason` and never has an empty `choices` (which strict clients take as the final
    /// usage chunk).
    EmptyChunk,
}

/// Per-stream facts needed to write events.
#[derive(Debug)]
pub(crate) struct StreamContext {
    pub(crate) flavor: ApiFlavor,
    pub(crate) keep_alive: KeepAlive,
    /// The model the client asked for (OpenAI: the body's `model`).
    pub(crate) model: Option<Box<str>>,
    /// OpenAI `stream_options.include_usage`.
    pub(crate) include_usage: bool,
    /// The OpenAI chunk id, once a keep-alive chunk needed one (the answer reuses it).
    pub(crate) stream_id: Option<Box<str>>,
    pub(crate) created: u64,
}

impl StreamContext {
    pub(crate) fn new(flavor: ApiFlavor, keep_alive: KeepAlive) -> Self {
        StreamContext {
            flavor,
            keep_alive,
            model: None,
            include_usage: false,
            stream_id: None,
            created: 0,
        }
    }

    fn ending(&self) -> LineEnding {
        match self.flavor {
            ApiFlavor::OpenAi => LineEnding::Lf,
            _ => LineEnding::CrLf,
        }
    }

    /// One keep-alive.
    pub(crate) fn keep_alive(&mut self) -> Bytes {
        let ending = self.ending();
        match self.keep_alive {
            KeepAlive::Comment => comment("keep-alive", ending),
            KeepAlive::BlankLine => blank_line(ending),
            KeepAlive::EmptyChunk => match self.flavor {
                ApiFlavor::OpenAi => {
                    let id = self.stream_id().to_owned();
                    let chunk = json!({
                        "id": id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model.as_deref().unwrap_or_default(),
                        "choices": [{
                            "index": 0,
                            "delta": { "content": "" },
                            "logprobs": null,
                            "finish_reason": null,
                        }],
                    });
                    data_event(&chunk.to_string(), ending)
                }
                _ => data_event(GEMINI_EMPTY_CHUNK, ending),
            },
        }
    }

    fn stream_id(&mut self) -> &str {
        if self.created == 0 {
            self.created = unix_now();
        }
        self.stream_id
            .get_or_insert_with(|| new_completion_id().into_boxed_str())
    }

    /// The events replaying a successful non-streaming answer, or `Err` with an error event when
    /// the answer is not what the protocol promises.
    pub(crate) fn answer(&mut self, body: &[u8]) -> Result<Bytes, Bytes> {
        match self.flavor {
            ApiFlavor::OpenAi => self.openai_answer(body),
            _ => gemini_answer(body).ok_or_else(|| {
                self.failure(
                    StatusCode::BAD_GATEWAY,
                    "the upstream answer is not a JSON object",
                )
            }),
        }
    }

    /// An error event for an upstream answer with a failure status.
    pub(crate) fn upstream_error(&self, status: StatusCode, body: &[u8]) -> Bytes {
        let status = if status.is_success() {
            StatusCode::BAD_GATEWAY
        } else {
            status
        };
        let upstream: Option<Map<String, Value>> = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| match v {
                // Gemini sometimes wraps its error in an array.
                Value::Array(mut items) if items.len() == 1 => items.pop(),
                other => Some(other),
            })
            .and_then(|v| match v {
                Value::Object(mut map) => match map.remove("error") {
                    Some(Value::Object(error)) => Some(error),
                    _ => None,
                },
                _ => None,
            });
        let ending = self.ending();
        let error = match (self.flavor, upstream) {
            (ApiFlavor::OpenAi, Some(mut error)) => {
                let message = error
                    .remove("message")
                    .filter(Value::is_string)
                    .unwrap_or_else(|| Value::from(default_message(status)));
                let (kind, code) = openai_type_and_code(status);
                let kind = error
                    .remove("type")
                    .filter(Value::is_string)
                    .unwrap_or_else(|| Value::from(kind));
                let code = match error.remove("code") {
                    Some(code @ Value::String(_)) => code,
                    _ => Value::from(code),
                };
                let param = error.remove("param").unwrap_or(Value::Null);
                json!({ "error": { "message": message, "type": kind, "param": param, "code": code } })
            }
            (ApiFlavor::OpenAi, None) => openai_error(status, &default_message(status)),
            (_, Some(mut error)) => {
                if !error.get("code").is_some_and(Value::is_u64) {
                    error.insert("code".into(), Value::from(status.as_u16()));
                }
                if !error.get("message").is_some_and(Value::is_string) {
                    error.insert("message".into(), Value::from(default_message(status)));
                }
                if !error.get("status").is_some_and(Value::is_string) {
                    error.insert("status".into(), Value::from(rpc_status_name(status)));
                }
                json!({ "error": error })
            }
            (_, None) => gemini_error(status, &default_message(status)),
        };
        data_event(&error.to_string(), ending)
    }

    /// An error event for a failure of our own (transport error, answer too large, ...).
    pub(crate) fn failure(&self, status: StatusCode, message: &str) -> Bytes {
        let error = match self.flavor {
            ApiFlavor::OpenAi => openai_error(status, message),
            _ => gemini_error(status, message),
        };
        data_event(&error.to_string(), self.ending())
    }

    fn openai_answer(&mut self, body: &[u8]) -> Result<Bytes, Bytes> {
        let Ok(Value::Object(answer)) = serde_json::from_slice::<Value>(body) else {
            return Err(self.failure(
                StatusCode::BAD_GATEWAY,
                "the upstream answer is not a JSON object",
            ));
        };
        let Some(Value::Array(choices)) = answer.get("choices") else {
            return Err(self.failure(
                StatusCode::BAD_GATEWAY,
                "the upstream answer is not a chat completion (no `choices`)",
            ));
        };
        let id = match (&self.stream_id, answer.get("id").and_then(Value::as_str)) {
            (Some(ours), _) => ours.to_string(),
            (None, Some(theirs)) => theirs.to_owned(),
            (None, None) => self.stream_id().to_owned(),
        };
        let created = match (self.created, answer.get("created").and_then(Value::as_u64)) {
            (0, Some(theirs)) => theirs,
            (0, None) => unix_now(),
            (ours, _) => ours,
        };
        let model = answer
            .get("model")
            .and_then(Value::as_str)
            .or(self.model.as_deref())
            .unwrap_or_default();
        let head = ChunkHead {
            id: &id,
            object: "chat.completion.chunk",
            created,
            model,
            system_fingerprint: answer.get("system_fingerprint").filter(|v| !v.is_null()),
        };
        let usage_field = self.include_usage.then_some(&Value::Null);
        let mut out = BytesMut::new();
        let mut push = |chunk: &Chunk<'_>| {
            if let Ok(text) = serde_json::to_string(chunk) {
                out.extend_from_slice(&data_event(&text, LineEnding::Lf));
            }
        };

        for (position, choice) in choices.iter().enumerate() {
            let index = choice
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            let message = choice.get("message");
            let field = |name: &str| message.and_then(|m| m.get(name));
            let text =
                |name: &str| field(name).filter(|v| v.as_str().is_some_and(|s| !s.is_empty()));
            let tool_calls: Vec<ToolCallDelta<'_>> = field("tool_calls")
                .and_then(Value::as_array)
                .map(|calls| {
                    calls
                        .iter()
                        .enumerate()
                        .map(|(i, call)| ToolCallDelta {
                            index: call
                                .get("index")
                                .and_then(Value::as_u64)
                                .unwrap_or(i as u64),
                            id: call.get("id"),
                            kind: call
                                .get("type")
                                .and_then(Value::as_str)
                                .unwrap_or("function"),
                            function: call.get("function"),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let logprobs = choice.get("logprobs").filter(|v| !v.is_null());

            let mut deltas: Vec<Delta<'_>> = Vec::new();
            if let Some(reasoning) = text("reasoning_content") {
                deltas.push(Delta {
                    reasoning_content: Some(reasoning),
                    ..Delta::default()
                });
            }
            if let Some(content) = text("content") {
                deltas.push(Delta {
                    content: Some(content),
                    ..Delta::default()
                });
            }
            if let Some(refusal) = text("refusal") {
                deltas.push(Delta {
                    refusal: Some(refusal),
                    ..Delta::default()
                });
            }
            if !tool_calls.is_empty() {
                deltas.push(Delta {
                    tool_calls: Some(tool_calls),
                    ..Delta::default()
                });
            }
            if deltas.is_empty() {
                deltas.push(Delta {
                    content: Some(&EMPTY_STRING),
                    ..Delta::default()
                });
            }
            let has_tool_calls = deltas.iter().any(|d| d.tool_calls.is_some());
            for (i, mut delta) in deltas.into_iter().enumerate() {
                if i == 0 {
                    delta.role = Some("assistant");
                }
                push(&Chunk {
                    head: &head,
                    choices: vec![ChoiceDelta {
                        index,
                        delta,
                        logprobs: if i == 0 { logprobs } else { None },
                        finish_reason: None,
                    }],
                    usage: usage_field,
                });
            }
            let finish = match choice.get("finish_reason") {
                Some(Value::String(reason)) => reason.clone(),
                _ if has_tool_calls => "tool_calls".to_owned(),
                _ => "stop".to_owned(),
            };
            push(&Chunk {
                head: &head,
                choices: vec![ChoiceDelta {
                    index,
                    delta: Delta::default(),
                    logprobs: None,
                    finish_reason: Some(&finish),
                }],
                usage: usage_field,
            });
        }
        if self.include_usage {
            push(&Chunk {
                head: &head,
                choices: Vec::new(),
                usage: Some(answer.get("usage").unwrap_or(&Value::Null)),
            });
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        Ok(out.freeze())
    }
}

static EMPTY_STRING: Value = Value::String(String::new());

const GEMINI_EMPTY_CHUNK: &str =
    r#"{"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},"index":0}]}"#;

#[derive(Serialize)]
struct ChunkHead<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_fingerprint: Option<&'a Value>,
}

#[derive(Serialize)]
struct Chunk<'a> {
    #[serde(flatten)]
    head: &'a ChunkHead<'a>,
    choices: Vec<ChoiceDelta<'a>>,
    /// `None`: no `usage` key; `Some(null)`: `"usage": null` (OpenAI sends it on every chunk
    /// when usage was asked for); `Some(usage)`: the usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a Value>,
}

#[derive(Serialize)]
struct ChoiceDelta<'a> {
    index: u64,
    delta: Delta<'a>,
    logprobs: Option<&'a Value>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refusal: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    function: Option<&'a Value>,
}

/// A Gemini answer as one `alt=sse` event: the JSON object, compacted onto one line with its
/// keys in their order. `None` when it is not a JSON object.
fn gemini_answer(body: &[u8]) -> Option<Bytes> {
    let trimmed = body.trim_ascii_start();
    if !trimmed.starts_with(b"{") {
        return None;
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(trimmed).ok()?;
    let compact = compact_json(trimmed);
    let mut out = BytesMut::with_capacity(compact.len() + 10);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&compact);
    out.extend_from_slice(b"\r\n\r\n");
    Some(out.freeze())
}

/// Removes the whitespace between the tokens of valid JSON (strings are kept exactly), so the
/// object fits on one `data:` line.
fn compact_json(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
    out
}

fn gemini_error(status: StatusCode, message: &str) -> Value {
    error_value(ApiFlavor::Gemini, status, message)
}

fn openai_error(status: StatusCode, message: &str) -> Value {
    error_value(ApiFlavor::OpenAi, status, message)
}

fn default_message(status: StatusCode) -> String {
    format!(
        "the upstream answered {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_owned()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `chatcmpl-` and 24 random alphanumerics.
fn new_completion_id() -> String {
    let mut id = String::with_capacity(33);
    id.push_str("chatcmpl-");
    id.extend(std::iter::repeat_with(fastrand::alphanumeric).take(24));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacting_keeps_strings_and_order() {
        let pretty = b"{\n  \"b\": \"x y\\\" \\\\\",\n  \"a\": [1, 2]\n}\n";
        assert_eq!(
            compact_json(pretty),
            br#"{"b":"x y\" \\","a":[1,2]}"#.to_vec()
        );
    }
}
