//! OpenAI `chat/completions` and `embeddings` requests → Gemini requests.

use std::collections::HashMap;
use std::fmt;

use serde_json::{json, Map, Value};

use super::defaults::{answers_with_images, image_output, lowest_thinking, Thinking};
use super::models::{ModelRules, ResolvedModel};
use super::schema::{clean_schema, is_empty_object};

/// Settings that shape the converted request (the proxy's `.env` options), and the native
/// requests ([`ChatOptions::shape_gemini_request`]).
#[derive(Debug, Clone, Default)]
pub struct ChatOptions {
    /// Model suffix rules.
    pub rules: ModelRules,
    /// Ask the models that [think](ChatOptions::thinks) for their thoughts, and show them as
    /// `reasoning_content` (`SHOW_THINKING_PROCESS`).
    pub show_thinking: bool,
    /// Default thinking budgets per model (`THINKING_BUDGET_MAP`; -1: dynamic), used when the
    /// client set none. A model listed here counts as one that thinks.
    pub thinking_budgets: HashMap<String, i64>,
    /// Safety settings to apply (`SAFETY_SETTINGS`).
    pub safety_settings: Option<Value>,
    /// Add the code execution tool (`TOOLS_CODE_EXECUTION_ENABLED`).
    pub code_execution: bool,
    /// Models that get the URL context tool (`URL_CONTEXT_MODELS`, when enabled).
    pub url_context_models: Vec<String>,
    /// Append the sources of an answer grounded by a search that was switched on here (a
    /// `-search` model, or OpenAI's `googleSearch` function) to its text (`SHOW_SEARCH_LINK`;
    /// see [`add_search_links`](super::add_search_links)).
    pub show_search_link: bool,
}

/// A converted chat request.
#[derive(Debug, Clone, PartialEq)]
pub struct GeminiChat {
    /// The model, with its suffixes understood.
    pub model: ResolvedModel,
    /// The `generateContent` body.
    pub body: Value,
    /// The client asked for a stream.
    pub stream: bool,
    /// The client asked for a usage chunk at the end of the stream.
    pub include_usage: bool,
    /// The request has the Google Search tool that was switched on here: a `-search` model, or
    /// a function named `googleSearch` (how Cherry Studio asks for search).
    pub search: bool,
    /// Image parts given by `http(s)` URL: fetch each and replace the part at `pointer` with
    /// `{"inlineData": {...}}` (see [`RemoteImage`]).
    pub remote_images: Vec<RemoteImage>,
}

/// An image part that must be fetched before the request goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteImage {
    /// JSON pointer to the placeholder part in [`GeminiChat::body`].
    pub pointer: String,
    /// The image URL.
    pub url: String,
    /// What the part becomes when the image cannot be fetched: `None` refuses the request
    /// (an `image_url` part), `Some` keeps this text (a markdown image in a message's text,
    /// which was text before it was an image).
    pub fallback_text: Option<String>,
}

/// A request that cannot be converted; `param` names the offending field (OpenAI's `param`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertError {
    /// The field, as a path (`messages[2].content[0].image_url`).
    pub param: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConvertError {
    fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        ConvertError {
            param: param.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.param, self.message)
    }
}

impl std::error::Error for ConvertError {}

/// Converts an OpenAI `chat/completions` request body.
///
/// System and developer messages become `systemInstruction`; assistant `tool_calls` become
/// `functionCall` parts (with the text kept); `tool` messages become `functionResponse` parts
/// named after the call they answer; images given as data URLs become `inlineData` (http URLs
/// are listed in [`GeminiChat::remote_images`] to be fetched), and so do `input_audio` and
/// `input_video` parts; for a model that answers with images, markdown images in a string
/// content become image parts too (its earlier answers' images, sent back); `tools` become
/// `functionDeclarations` with the schema cleaned, except a function named `googleSearch`,
/// which becomes Gemini's Google Search tool (Cherry Studio's search switch); `tool_choice`
/// becomes `toolConfig`; `response_format` becomes `responseMimeType`/`responseSchema`;
/// `max_tokens`/`max_completion_tokens`, `stop`, `n`, `temperature`, `top_p`, `seed` and the
/// penalties go into `generationConfig`, and so does `reasoning_effort` as a thinking budget
/// for a model that [thinks](ChatOptions::thinks) (it is ignored for the others, which Gemini
/// would refuse it for). The defaults of [`ChatOptions`] are added as on the native routes
/// (built-in tools, a thinking config, safety settings).
///
/// ```
/// use serde_json::json;
/// use gemini_balance::openai::{chat_request_to_gemini, ChatOptions};
///
/// let req = json!({
///     "model": "gemini-2.5-flash",
///     "messages": [
///         {"role": "system", "content": "Be brief."},
///         {"role": "user", "content": "Hi"}
///     ],
///     "max_tokens": 100,
///     "stop": "END"
/// });
/// let chat = chat_request_to_gemini(&req, &ChatOptions::default()).unwrap();
/// assert_eq!(chat.model.upstream, "gemini-2.5-flash");
/// assert_eq!(chat.body["systemInstruction"]["parts"][0]["text"], "Be brief.");
/// assert_eq!(chat.body["contents"][0], json!({"role": "user", "parts": [{"text": "Hi"}]}));
/// assert_eq!(chat.body["generationConfig"]["maxOutputTokens"], 100);
/// assert_eq!(chat.body["generationConfig"]["stopSequences"], json!(["END"]));
/// ```
pub fn chat_request_to_gemini(req: &Value, opts: &ChatOptions) -> Result<GeminiChat, ConvertError> {
    let model_name = req
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| ConvertError::new("model", "a model name is required"))?;
    let model = opts.rules.resolve(model_name);
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ConvertError::new("messages", "a non-empty list of messages is required"))?;

    let mut body = Map::new();
    let mut remote_images = Vec::new();
    let (contents, system) =
        convert_messages(messages, answers_with_images(&model), &mut remote_images)?;
    body.insert("contents".to_owned(), Value::Array(contents));
    if let Some(system) = system {
        if !image_output(&model) {
            body.insert("systemInstruction".to_owned(), system);
        }
    }

    let mut config = Map::new();
    let num = |name: &str| req.get(name).filter(|v| !v.is_null());
    for (openai, gemini) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = num(openai) {
            if !v.is_number() {
                return Err(ConvertError::new(openai, "must be a number"));
            }
            config.insert(gemini.to_owned(), v.clone());
        }
    }
    if let Some(v) = num("max_completion_tokens").or_else(|| num("max_tokens")) {
        let n = v
            .as_u64()
            .ok_or_else(|| ConvertError::new("max_tokens", "must be a positive integer"))?;
        config.insert("maxOutputTokens".to_owned(), json!(n));
    }
    if let Some(n) = num("n") {
        let n = n
            .as_u64()
            .filter(|n| *n >= 1)
            .ok_or_else(|| ConvertError::new("n", "must be an integer of at least 1"))?;
        if n > 1 {
            config.insert("candidateCount".to_owned(), json!(n));
        }
    }
    match num("stop") {
        None => {}
        Some(Value::String(s)) => {
            config.insert("stopSequences".to_owned(), json!([s]));
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            config.insert("stopSequences".to_owned(), Value::Array(items.clone()));
        }
        Some(_) => {
            return Err(ConvertError::new(
                "stop",
                "must be a string or a list of strings",
            ))
        }
    }
    if num("logprobs").and_then(Value::as_bool) == Some(true) {
        config.insert("responseLogprobs".to_owned(), json!(true));
        if let Some(top) = num("top_logprobs") {
            config.insert("logprobs".to_owned(), top.clone());
        }
    }
    response_format(req, &mut config)?;
    if image_output(&model) {
        config.insert("responseModalities".to_owned(), json!(["TEXT", "IMAGE"]));
    }
    if let Some(thinking) = thinking_config(req, &model, opts)? {
        config.insert("thinkingConfig".to_owned(), thinking);
    }
    if !config.is_empty() {
        body.insert("generationConfig".to_owned(), Value::Object(config));
    }

    let (declarations, search_function) = function_declarations(req)?;
    // Checked whatever happens to it: a bad `tool_choice` is a 400 with or without functions.
    let choice = tool_config(req)?;
    let has_media = !remote_images.is_empty() || body_has_inline_data(&body);
    let json_mode = body
        .get("generationConfig")
        .and_then(|c| c.get("responseMimeType"))
        .and_then(Value::as_str)
        == Some("application/json");
    let mut tools = Vec::new();
    if !declarations.is_empty() {
        // Gemini refuses built-in tools next to function declarations: the functions win, a
        // `googleSearch` function among them included (as in Gemini-Balance).
        tools.push(json!({ "functionDeclarations": declarations }));
    } else if !json_mode {
        tools = opts.builtin_tools(&model, model.search || search_function, has_media);
    }
    // A choice among functions that all became Google Search has nothing left to choose.
    if let Some(choice) = choice.filter(|_| !declarations.is_empty() || !search_function) {
        body.insert("toolConfig".to_owned(), choice);
    }
    let search = tools.iter().any(|t| t.get("googleSearch").is_some());
    if !tools.is_empty() {
        body.insert("tools".to_owned(), Value::Array(tools));
    }
    if let Some(safety) = &opts.safety_settings {
        body.insert("safetySettings".to_owned(), safety.clone());
    }

    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = req
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(GeminiChat {
        model,
        body: Value::Object(body),
        stream,
        include_usage,
        search,
        remote_images,
    })
}

fn body_has_inline_data(body: &Map<String, Value>) -> bool {
    body.get("contents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("parts").and_then(Value::as_array))
        .flatten()
        .any(|p| p.get("inlineData").is_some())
}

/// An image to fetch, found in one message: the index of its placeholder among the message's
/// parts, the URL, the text to keep if it cannot be fetched.
type Pending = (usize, String, Option<String>);

/// Messages → (`contents`, `systemInstruction`). With `images_in_text` (a model that answers
/// with images), markdown images in string contents become image parts, so that the images of
/// earlier answers go back to the model (see [`markdown_images`]).
fn convert_messages(
    messages: &[Value],
    images_in_text: bool,
    remote_images: &mut Vec<RemoteImage>,
) -> Result<(Vec<Value>, Option<Value>), ConvertError> {
    let mut contents: Vec<Value> = Vec::new();
    let mut system_parts = Vec::new();
    // Function names by tool call id, to name the functionResponse of a tool message.
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| ConvertError::new(at("role"), "a role is required"))?;
        let content = message.get("content").unwrap_or(&Value::Null);
        let mut pending: Vec<Pending> = Vec::new();
        let (gemini_role, parts) = match role {
            "system" | "developer" => {
                system_parts.extend(text_parts(content, &at("content"))?);
                continue;
            }
            "user" => (
                "user",
                content_parts(content, &at("content"), images_in_text, &mut pending)?,
            ),
            "assistant" => {
                let mut parts = match content {
                    Value::String(text) if images_in_text => markdown_images(text, &mut pending),
                    _ => text_parts(content, &at("content"))?,
                };
                let calls = message.get("tool_calls").and_then(Value::as_array);
                for (j, call) in calls.into_iter().flatten().enumerate() {
                    let at = |field: &str| format!("messages[{i}].tool_calls[{j}].{field}");
                    let name = call
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            ConvertError::new(at("function.name"), "a function name is required")
                        })?;
                    let arguments = match call.pointer("/function/arguments") {
                        Some(Value::String(s)) if !s.trim().is_empty() => serde_json::from_str(s)
                            .map_err(|e| {
                            ConvertError::new(
                                at("function.arguments"),
                                format!("must be a JSON object ({e})"),
                            )
                        })?,
                        Some(Value::Object(o)) => Value::Object(o.clone()),
                        _ => json!({}),
                    };
                    if let Some(id) = call.get("id").and_then(Value::as_str) {
                        call_names.insert(id.to_owned(), name.to_owned());
                    }
                    parts.push(json!({ "functionCall": { "name": name, "args": arguments } }));
                }
                ("model", parts)
            }
            "tool" | "function" => {
                let name = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .and_then(|id| call_names.get(id).cloned())
                    .or_else(|| {
                        message
                            .get("name")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .ok_or_else(|| {
                        ConvertError::new(
                            at("tool_call_id"),
                            "must name a tool call of an earlier assistant message",
                        )
                    })?;
                let text: String = text_parts(content, &at("content"))?
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(o)) => Value::Object(o),
                    _ => json!({ "content": text }),
                };
                (
                    "user",
                    vec![json!({ "functionResponse": { "name": name, "response": response } })],
                )
            }
            other => {
                return Err(ConvertError::new(
                    at("role"),
                    format!(
                    "unknown role {other:?}: expected system, developer, user, assistant or tool"
                ),
                ))
            }
        };
        if parts.is_empty() {
            continue;
        }
        // Gemini wants turns; consecutive messages of one role (parallel tool results) merge.
        let (content_index, offset) = match contents.last_mut() {
            Some(last) if last["role"] == gemini_role => {
                let existing = last["parts"].as_array_mut();
                let offset = existing.as_ref().map_or(0, |e| e.len());
                if let Some(existing) = existing {
                    existing.extend(parts);
                }
                (contents.len() - 1, offset)
            }
            _ => {
                contents.push(json!({ "role": gemini_role, "parts": parts }));
                (contents.len() - 1, 0)
            }
        };
        remote_images.extend(
            pending
                .into_iter()
                .map(|(k, url, fallback_text)| RemoteImage {
                    pointer: format!("/contents/{content_index}/parts/{}", offset + k),
                    url,
                    fallback_text,
                }),
        );
    }
    if contents.is_empty() {
        return Err(ConvertError::new(
            "messages",
            "at least one user or assistant message is required",
        ));
    }
    let system = (!system_parts.is_empty()).then(|| json!({ "parts": system_parts }));
    Ok((contents, system))
}

/// Text-only content: a string, or a list of `text` parts.
fn text_parts(content: &Value, at: &str) -> Result<Vec<Value>, ConvertError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({ "text": s })]),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .filter_map(|(k, item)| match item.get("type").and_then(Value::as_str) {
                Some("text") => Some(
                    item.get("text")
                        .and_then(Value::as_str)
                        .map(|t| json!({ "text": t }))
                        .ok_or_else(|| {
                            ConvertError::new(format!("{at}[{k}].text"), "must be a string")
                        }),
                ),
                // Refusals and other non-text parts carry nothing to send back.
                _ => None,
            })
            .collect(),
        _ => Err(ConvertError::new(
            at,
            "must be a string or a list of content parts",
        )),
    }
}

/// User content: text, images, audio, video.
fn content_parts(
    content: &Value,
    at: &str,
    images_in_text: bool,
    pending: &mut Vec<Pending>,
) -> Result<Vec<Value>, ConvertError> {
    let Value::Array(items) = content else {
        return match content {
            Value::String(text) if images_in_text => Ok(markdown_images(text, pending)),
            _ => text_parts(content, at),
        };
    };
    let mut parts = Vec::with_capacity(items.len());
    for (k, item) in items.iter().enumerate() {
        let here = format!("{at}[{k}]");
        match item.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = item
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ConvertError::new(format!("{here}.text"), "must be a string"))?;
                parts.push(json!({ "text": text }));
            }
            Some("image_url") => {
                let url = item
                    .pointer("/image_url/url")
                    .or_else(|| item.get("image_url"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        ConvertError::new(format!("{here}.image_url.url"), "must be a URL")
                    })?;
                if let Some(data_url) = url.strip_prefix("data:") {
                    parts.push(inline_data_url(data_url, &format!("{here}.image_url.url"))?);
                } else if url.starts_with("http://") || url.starts_with("https://") {
                    pending.push((parts.len(), url.to_owned(), None));
                    parts.push(json!({ "text": "" }));
                } else {
                    return Err(ConvertError::new(
                        format!("{here}.image_url.url"),
                        "must be a data: URL or an http(s) URL",
                    ));
                }
            }
            Some(kind @ ("input_audio" | "input_video")) => {
                parts.push(media_part(item, kind, &here)?);
            }
            Some(other) => {
                return Err(ConvertError::new(
                    format!("{here}.type"),
                    format!("unsupported content part type {other:?}"),
                ))
            }
            None => {
                return Err(ConvertError::new(
                    format!("{here}.type"),
                    "a part type is required",
                ))
            }
        }
    }
    Ok(parts)
}

/// Audio formats of `input_audio`, and their MIME types.
const AUDIO_FORMATS: &[(&str, &str)] = &[
    ("wav", "audio/wav"),
    ("mp3", "audio/mp3"),
    ("flac", "audio/flac"),
    ("ogg", "audio/ogg"),
    ("aac", "audio/aac"),
];

/// Video formats of `input_video` (Gemini-Balance's `mp4`, `mov`, `avi`, `webm`, and the other
/// formats Gemini reads), and the MIME types Gemini documents for them.
const VIDEO_FORMATS: &[(&str, &str)] = &[
    ("mp4", "video/mp4"),
    ("mov", "video/mov"),
    ("avi", "video/avi"),
    ("webm", "video/webm"),
    ("mpeg", "video/mpeg"),
    ("mpg", "video/mpg"),
    ("wmv", "video/wmv"),
    ("flv", "video/x-flv"),
    ("3gpp", "video/3gpp"),
];

/// An `input_audio` or `input_video` part (`{"data": <base64>, "format": "mp4"}`) → an
/// `inlineData` part.
fn media_part(item: &Value, kind: &str, here: &str) -> Result<Value, ConvertError> {
    let (what, formats) = if kind == "input_video" {
        ("video", VIDEO_FORMATS)
    } else {
        ("audio", AUDIO_FORMATS)
    };
    let media = item.get(kind);
    let data = media.and_then(|m| m.get("data")).and_then(Value::as_str);
    let format = media.and_then(|m| m.get("format")).and_then(Value::as_str);
    let (Some(data), Some(format)) = (data, format) else {
        return Err(ConvertError::new(
            format!("{here}.{kind}"),
            "needs base64 `data` and a `format`",
        ));
    };
    let format = format.to_ascii_lowercase();
    let Some((_, mime)) = formats.iter().find(|(f, _)| *f == format) else {
        let known: Vec<&str> = formats.iter().map(|(f, _)| *f).collect();
        return Err(ConvertError::new(
            format!("{here}.{kind}.format"),
            format!(
                "unsupported {what} format {format:?}: expected one of {}",
                known.join(", ")
            ),
        ));
    };
    check_base64(
        data,
        &format!("{here}.{kind}.data"),
        &format!("the {what} data"),
    )?;
    Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }))
}

/// A string content with markdown images (`![alt](url)`) → text and image parts, in order, for
/// a model that answers with images: its earlier answers carried their images that way (as
/// `data:` URLs, see [`gemini_response_to_openai`](super::gemini_response_to_openai)), and the
/// model needs them back to edit them. A `data:` URL becomes `inlineData`; an `http(s)` URL is
/// fetched (listed in `pending`; the markdown stays as text if it cannot be fetched); anything
/// else, or a `data:` URL that is not base64, stays text. Gemini-Balance did this for the
/// first image only and dropped the text around it.
fn markdown_images(text: &str, pending: &mut Vec<Pending>) -> Vec<Value> {
    let mut parts = Vec::new();
    let mut run = String::new();
    let flush = |parts: &mut Vec<Value>, run: &mut String| {
        if !run.trim().is_empty() {
            parts.push(json!({ "text": run.as_str() }));
        }
        run.clear();
    };
    let mut rest = text;
    let mut images = 0;
    while let Some((start, end, url)) = next_markdown_image(rest) {
        let markdown = &rest[start..end];
        run.push_str(&rest[..start]);
        let inline = url
            .strip_prefix("data:")
            .and_then(|data_url| inline_data_url(data_url, "").ok());
        let remote = url.starts_with("http://") || url.starts_with("https://");
        if inline.is_some() || remote {
            images += 1;
            flush(&mut parts, &mut run);
            match inline {
                Some(part) => parts.push(part),
                None => {
                    pending.push((parts.len(), url.to_owned(), Some(markdown.to_owned())));
                    parts.push(json!({ "text": "" }));
                }
            }
        } else {
            run.push_str(markdown);
        }
        rest = &rest[end..];
    }
    if images == 0 {
        return if text.is_empty() {
            Vec::new()
        } else {
            vec![json!({ "text": text })]
        };
    }
    run.push_str(rest);
    flush(&mut parts, &mut run);
    parts
}

/// The first `![alt](url)` in `text` on one line: its start, its end, its URL.
fn next_markdown_image(text: &str) -> Option<(usize, usize, &str)> {
    let mut from = 0;
    while let Some(found) = text[from..].find("![") {
        let start = from + found;
        let line_end = text[start..].find('\n').map_or(text.len(), |n| start + n);
        let line = &text[start..line_end];
        if let Some(mid) = line.find("](") {
            if let Some(close) = line[mid + 2..].find(')') {
                let url = &line[mid + 2..mid + 2 + close];
                return Some((start, start + mid + 2 + close + 1, url.trim()));
            }
        }
        from = start + 2;
    }
    None
}

/// `data:image/png;base64,AAAA` (without `data:`) → an `inlineData` part.
fn inline_data_url(data_url: &str, at: &str) -> Result<Value, ConvertError> {
    let (meta, data) = data_url
        .split_once(',')
        .ok_or_else(|| ConvertError::new(at, "a data: URL needs a comma before its data"))?;
    let mime = meta
        .strip_suffix(";base64")
        .ok_or_else(|| ConvertError::new(at, "only base64 data: URLs are supported"))?;
    let mime = match mime {
        "" => "image/png",
        "image/jpg" => "image/jpeg",
        other => other,
    };
    check_base64(data, at, "the data: URL's data")?;
    Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }))
}

/// Refuses `data` that Gemini would not decode as `bytes`, so a broken image costs the client
/// a 400 naming the field rather than an upstream call (and a key's attempt) that fails.
///
/// Gemini reads `bytes` as proto3 JSON does: the standard or the URL-safe alphabet, padded or
/// not. Anything else (whitespace, `%`, a stray `=`, a length no encoding has) is refused.
fn check_base64(data: &str, at: &str, what: &str) -> Result<(), ConvertError> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    use base64::{alphabet, Engine};
    const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
    if data.is_empty() {
        return Err(ConvertError::new(at, format!("{what} is empty")));
    }
    let engine = if data.contains(['-', '_']) {
        &URL_SAFE
    } else {
        &STANDARD
    };
    match engine.decode(data) {
        Ok(_) => Ok(()),
        Err(e) => Err(ConvertError::new(
            at,
            format!("{what} is not valid base64 ({e})"),
        )),
    }
}

fn response_format(req: &Value, config: &mut Map<String, Value>) -> Result<(), ConvertError> {
    let Some(format) = req.get("response_format").filter(|v| !v.is_null()) else {
        return Ok(());
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => {}
        Some("json_object") => {
            config.insert("responseMimeType".to_owned(), json!("application/json"));
        }
        Some("json_schema") => {
            let schema = format.pointer("/json_schema/schema").ok_or_else(|| {
                ConvertError::new("response_format.json_schema.schema", "a schema is required")
            })?;
            config.insert("responseMimeType".to_owned(), json!("application/json"));
            config.insert("responseSchema".to_owned(), clean_schema(schema));
        }
        _ => {
            return Err(ConvertError::new(
                "response_format.type",
                "must be text, json_object or json_schema",
            ))
        }
    }
    Ok(())
}

/// The thinking config: the client's `reasoning_effort`, else the defaults
/// ([`ChatOptions::default_thinking`]). Only for a model that thinks: for one that does not,
/// `reasoning_effort` is ignored (Gemini would refuse any thinking config; Gemini-Balance
/// ignored `reasoning_effort` everywhere).
pub(super) fn thinking_config(
    req: &Value,
    model: &ResolvedModel,
    opts: &ChatOptions,
) -> Result<Option<Value>, ConvertError> {
    let effort = req.get("reasoning_effort").filter(|v| !v.is_null());
    let thinking = match effort.map(|e| e.as_str().ok_or(e)) {
        None => return Ok(opts.default_thinking(model, true)),
        Some(Ok("none" | "minimal")) => lowest_thinking(model),
        Some(Ok("low")) => Thinking::Budget(1024),
        Some(Ok("medium")) => Thinking::Budget(8192),
        Some(Ok("high")) => Thinking::Budget(24576),
        Some(Ok(other)) => {
            return Err(ConvertError::new(
                "reasoning_effort",
                format!("unknown effort {other:?}: expected none, minimal, low, medium or high"),
            ))
        }
        Some(Err(_)) => return Err(ConvertError::new("reasoning_effort", "must be a string")),
    };
    if !opts.thinks(model) {
        return Ok(None);
    }
    Ok(super::defaults::thinking_config(
        Some(thinking),
        opts.show_thinking && !thinking.is_off(),
    ))
}

/// The function tools as `functionDeclarations` (deduplicated by name, the first kept), and
/// whether one was named `googleSearch`: Cherry Studio's search switch, which becomes Gemini's
/// Google Search tool instead of a declaration (as in Gemini-Balance).
fn function_declarations(req: &Value) -> Result<(Vec<Value>, bool), ConvertError> {
    let Some(tools) = req.get("tools").filter(|v| !v.is_null()) else {
        return Ok((Vec::new(), false));
    };
    let tools = tools
        .as_array()
        .ok_or_else(|| ConvertError::new("tools", "must be a list"))?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    let mut google_search = false;
    for (i, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(ConvertError::new(
                format!("tools[{i}].type"),
                "only function tools are supported",
            ));
        }
        let function = tool
            .get("function")
            .ok_or_else(|| ConvertError::new(format!("tools[{i}].function"), "is required"))?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ConvertError::new(format!("tools[{i}].function.name"), "is required"))?;
        if name == "googleSearch" {
            google_search = true;
            continue;
        }
        if !seen.insert(name.to_owned()) {
            continue;
        }
        let mut declaration = json!({ "name": name });
        if let Some(description) = function.get("description").and_then(Value::as_str) {
            declaration["description"] = json!(description);
        }
        if let Some(parameters) = function.get("parameters").filter(|p| !p.is_null()) {
            if !is_empty_object(parameters) {
                declaration["parameters"] = clean_schema(parameters);
            }
        }
        out.push(declaration);
    }
    Ok((out, google_search))
}

fn tool_config(req: &Value) -> Result<Option<Value>, ConvertError> {
    let Some(choice) = req.get("tool_choice").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let config = match choice {
        Value::String(mode) => {
            let mode = match mode.as_str() {
                "none" => "NONE",
                "auto" => "AUTO",
                "required" => "ANY",
                other => {
                    return Err(ConvertError::new(
                        "tool_choice",
                        format!("unknown choice {other:?}: expected none, auto or required"),
                    ))
                }
            };
            json!({ "functionCallingConfig": { "mode": mode } })
        }
        Value::Object(_) => {
            let name = choice
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| ConvertError::new("tool_choice.function.name", "is required"))?;
            json!({ "functionCallingConfig": { "mode": "ANY", "allowedFunctionNames": [name] } })
        }
        _ => {
            return Err(ConvertError::new(
                "tool_choice",
                "must be a string or an object",
            ))
        }
    };
    Ok(Some(config))
}

/// A converted embeddings request.
#[derive(Debug, Clone, PartialEq)]
pub struct GeminiEmbeddings {
    /// The model.
    pub model: String,
    /// The `batchEmbedContents` body.
    pub body: Value,
}

/// Converts an OpenAI `embeddings` request into a Gemini `batchEmbedContents` body.
///
/// ```
/// use serde_json::json;
/// use gemini_balance::openai::embeddings_request_to_gemini;
///
/// let e = embeddings_request_to_gemini(&json!({"model": "text-embedding-004", "input": ["a", "b"]})).unwrap();
/// assert_eq!(e.body["requests"][1]["content"]["parts"][0]["text"], "b");
/// assert_eq!(e.body["requests"][0]["model"], "models/text-embedding-004");
/// ```
pub fn embeddings_request_to_gemini(req: &Value) -> Result<GeminiEmbeddings, ConvertError> {
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| ConvertError::new("model", "a model name is required"))?
        .trim_start_matches("models/")
        .to_owned();
    let inputs: Vec<&str> = match req.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().ok_or_else(|| {
                    ConvertError::new(
                        format!("input[{i}]"),
                        "must be a string (token arrays are not supported)",
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ConvertError::new(
                "input",
                "must be a string or a non-empty list of strings",
            ))
        }
    };
    let dimensions = req.get("dimensions").and_then(Value::as_u64);
    let requests: Vec<Value> = inputs
        .iter()
        .map(|text| {
            let mut request = json!({
                "model": format!("models/{model}"),
                "content": { "parts": [{ "text": text }] },
            });
            if let Some(d) = dimensions {
                request["outputDimensionality"] = json!(d);
            }
            request
        })
        .collect();
    Ok(GeminiEmbeddings {
        model,
        body: json!({ "requests": requests }),
    })
}
