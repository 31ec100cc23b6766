//! OpenAI `chat/completions` and `embeddings` requests → Gemini requests.

use std::collections::HashMap;
use std::fmt;

use serde_json::{json, Map, Value};

use super::models::{ModelRules, ResolvedModel};
use super::schema::{clean_schema, is_empty_object};

/// Settings that shape the converted request (the proxy's `.env` options).
#[derive(Debug, Clone, Default)]
pub struct ChatOptions {
    /// Model suffix rules.
    pub rules: ModelRules,
    /// Ask for thoughts to be returned (`SHOW_THINKING_PROCESS`).
    pub show_thinking: bool,
    /// Default thinking budgets per model (`THINKING_BUDGET_MAP`), used when the client set none.
    pub thinking_budgets: HashMap<String, i64>,
    /// Safety settings to apply (`SAFETY_SETTINGS`).
    pub safety_settings: Option<Value>,
    /// Add the code execution tool (`TOOLS_CODE_EXECUTION_ENABLED`).
    pub code_execution: bool,
    /// Models that get the URL context tool (`URL_CONTEXT_MODELS`, when enabled).
    pub url_context_models: Vec<String>,
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
/// are listed in [`GeminiChat::remote_images`] to be fetched); `tools` become
/// `functionDeclarations` with the schema cleaned; `tool_choice` becomes `toolConfig`;
/// `response_format` becomes `responseMimeType`/`responseSchema`; `max_tokens`/
/// `max_completion_tokens`, `stop`, `n`, `temperature`, `top_p`, `seed`, the penalties and
/// `reasoning_effort` go into `generationConfig`.
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
    let (contents, system) = convert_messages(messages, &mut remote_images)?;
    body.insert("contents".to_owned(), Value::Array(contents));
    if let Some(system) = system {
        if !model.image {
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
    if model.image {
        config.insert("responseModalities".to_owned(), json!(["TEXT", "IMAGE"]));
    }
    if let Some(thinking) = thinking_config(req, &model, opts)? {
        config.insert("thinkingConfig".to_owned(), thinking);
    }
    if !config.is_empty() {
        body.insert("generationConfig".to_owned(), Value::Object(config));
    }

    let declarations = function_declarations(req)?;
    let has_media = !remote_images.is_empty() || body_has_inline_data(&body);
    let mut tools = Vec::new();
    if !declarations.is_empty() {
        tools.push(json!({ "functionDeclarations": declarations }));
    } else {
        // Gemini refuses built-in tools next to function declarations.
        if model.search {
            tools.push(json!({ "googleSearch": {} }));
        }
        if opts.code_execution && !model.search && !model.image && !has_media {
            tools.push(json!({ "codeExecution": {} }));
        }
        if opts.url_context_models.contains(&model.upstream) {
            tools.push(json!({ "urlContext": {} }));
        }
    }
    if !tools.is_empty() {
        body.insert("tools".to_owned(), Value::Array(tools));
    }
    if let Some(choice) = tool_config(req)? {
        body.insert("toolConfig".to_owned(), choice);
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

/// Messages → (`contents`, `systemInstruction`).
fn convert_messages(
    messages: &[Value],
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
        let (gemini_role, parts) = match role {
            "system" | "developer" => {
                system_parts.extend(text_parts(content, &at("content"))?);
                continue;
            }
            "user" => (
                "user",
                content_parts(content, &at("content"), contents.len(), remote_images)?,
            ),
            "assistant" => {
                let mut parts = text_parts(content, &at("content"))?;
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
        match contents.last_mut() {
            Some(last) if last["role"] == gemini_role => {
                if let Some(existing) = last["parts"].as_array_mut() {
                    existing.extend(parts);
                }
            }
            _ => contents.push(json!({ "role": gemini_role, "parts": parts })),
        }
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

/// User content: text, images, audio.
fn content_parts(
    content: &Value,
    at: &str,
    content_index: usize,
    remote_images: &mut Vec<RemoteImage>,
) -> Result<Vec<Value>, ConvertError> {
    let Value::Array(items) = content else {
        return text_parts(content, at);
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
                    remote_images.push(RemoteImage {
                        pointer: format!("/contents/{content_index}/parts/{}", parts.len()),
                        url: url.to_owned(),
                    });
                    parts.push(json!({ "text": "" }));
                } else {
                    return Err(ConvertError::new(
                        format!("{here}.image_url.url"),
                        "must be a data: URL or an http(s) URL",
                    ));
                }
            }
            Some("input_audio") => {
                let data = item.pointer("/input_audio/data").and_then(Value::as_str);
                let format = item.pointer("/input_audio/format").and_then(Value::as_str);
                let (Some(data), Some(format)) = (data, format) else {
                    return Err(ConvertError::new(
                        format!("{here}.input_audio"),
                        "needs base64 `data` and a `format`",
                    ));
                };
                check_base64(data, &format!("{here}.input_audio.data"), "the audio data")?;
                let mime = match format {
                    "wav" => "audio/wav",
                    "mp3" => "audio/mp3",
                    "flac" => "audio/flac",
                    "ogg" => "audio/ogg",
                    "aac" => "audio/aac",
                    other => {
                        return Err(ConvertError::new(
                            format!("{here}.input_audio.format"),
                            format!("unsupported audio format {other:?}"),
                        ))
                    }
                };
                parts.push(json!({ "inlineData": { "mimeType": mime, "data": data } }));
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

fn thinking_config(
    req: &Value,
    model: &ResolvedModel,
    opts: &ChatOptions,
) -> Result<Option<Value>, ConvertError> {
    let pro = model.upstream.contains("2.5-pro");
    let budget = match req.get("reasoning_effort").and_then(Value::as_str) {
        Some("none") | Some("minimal") => Some(if pro { 128 } else { 0 }),
        Some("low") => Some(1024),
        Some("medium") => Some(8192),
        Some("high") => Some(24576),
        Some(other) => {
            return Err(ConvertError::new(
                "reasoning_effort",
                format!("unknown effort {other:?}: expected minimal, low, medium or high"),
            ))
        }
        None if model.non_thinking => Some(if pro { 128 } else { 0 }),
        None => opts
            .thinking_budgets
            .get(&model.upstream)
            .or_else(|| opts.thinking_budgets.get(&model.requested))
            .copied(),
    };
    let mut config = Map::new();
    if let Some(budget) = budget {
        config.insert("thinkingBudget".to_owned(), json!(budget));
    }
    if opts.show_thinking && budget != Some(0) {
        config.insert("includeThoughts".to_owned(), json!(true));
    }
    Ok((!config.is_empty()).then_some(Value::Object(config)))
}

fn function_declarations(req: &Value) -> Result<Vec<Value>, ConvertError> {
    let Some(tools) = req.get("tools").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let tools = tools
        .as_array()
        .ok_or_else(|| ConvertError::new("tools", "must be a list"))?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
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
    Ok(out)
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
