//! Gemini's successful answers, and the models the mock knows.
//!
//! Answers are deterministic: the text echoes the prompt (so a test can tell that a retried
//! request carried its body), and token counts are word counts. A request that declares
//! functions is answered with a call of one of them (see [`function_call`]), as a model that
//! decides to use a tool would.

use serde_json::{json, Value};

/// One model of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct ModelInfo {
    /// The id used in paths (`gemini-2.0-flash`).
    pub id: &'static str,
    /// `displayName`.
    pub display_name: &'static str,
    /// `inputTokenLimit`.
    pub input_token_limit: u32,
    /// `outputTokenLimit`.
    pub output_token_limit: u32,
    /// `supportedGenerationMethods`.
    pub methods: &'static [&'static str],
    /// A thinking model (reports `thoughtsTokenCount`).
    pub thinking: bool,
}

const GENERATE: &[&str] = &[
    "generateContent",
    "countTokens",
    "createCachedContent",
    "batchGenerateContent",
];
const EMBED: &[&str] = &["embedContent", "batchEmbedContents", "countTextTokens"];

/// The models the mock serves.
pub const MODELS: &[ModelInfo] = &[
    ModelInfo {
        id: "gemini-2.0-flash",
        display_name: "Gemini 2.0 Flash",
        input_token_limit: 1_048_576,
        output_token_limit: 8_192,
        methods: GENERATE,
        thinking: false,
    },
    ModelInfo {
        id: "gemini-2.5-flash",
        display_name: "Gemini 2.5 Flash",
        input_token_limit: 1_048_576,
        output_token_limit: 65_536,
        methods: GENERATE,
        thinking: true,
    },
    ModelInfo {
        id: "gemini-2.5-pro",
        display_name: "Gemini 2.5 Pro",
        input_token_limit: 1_048_576,
        output_token_limit: 65_536,
        methods: GENERATE,
        thinking: true,
    },
    ModelInfo {
        id: "text-embedding-004",
        display_name: "Text Embedding 004",
        input_token_limit: 2_048,
        output_token_limit: 1,
        methods: EMBED,
        thinking: false,
    },
];

/// Length of the embedding vectors.
pub const EMBEDDING_DIMENSIONS: usize = 8;

/// Number of events in a streamed answer.
pub const STREAM_EVENTS: usize = 3;

/// Completion tokens of every answer.
pub const CANDIDATE_TOKENS: u64 = 6;

/// The model with this id.
pub fn find_model(id: &str) -> Option<&'static ModelInfo> {
    MODELS.iter().find(|m| m.id == id)
}

impl ModelInfo {
    /// `true` when the model supports `method` (streaming counts as `generateContent`).
    pub fn supports(&self, method: &str) -> bool {
        let method = match method {
            "streamGenerateContent" => "generateContent",
            other => other,
        };
        self.methods.contains(&method)
    }

    /// The model as `GET models/{model}` describes it.
    pub fn json(&self) -> Value {
        let mut model = json!({
            "name": format!("models/{}", self.id),
            "version": "001",
            "displayName": self.display_name,
            "description": format!("{} (mock)", self.display_name),
            "inputTokenLimit": self.input_token_limit,
            "outputTokenLimit": self.output_token_limit,
            "supportedGenerationMethods": self.methods,
        });
        if self.methods.contains(&"generateContent") {
            model["temperature"] = json!(1.0);
            model["topP"] = json!(0.95);
            model["topK"] = json!(64);
            model["maxTemperature"] = json!(2.0);
        }
        if self.thinking {
            model["thinking"] = json!(true);
        }
        model
    }
}

/// `GET models`: the whole catalogue on one page.
pub fn model_list() -> Value {
    json!({ "models": listed_models(0) })
}

/// Models a list shows when Gemini pages it by default (`pageSize` absent or 0).
pub const DEFAULT_PAGE_SIZE: usize = 50;

/// The largest page Gemini gives (a larger `pageSize` is taken as this).
pub const MAX_PAGE_SIZE: usize = 1000;

/// The id of the `i`-th extra model a list may show (see [`listed_models`]).
pub fn extra_model_id(i: usize) -> String {
    format!("gemini-mock-listed-{i:03}")
}

/// Every model a list shows: the catalogue, then `extra` more that only lists know (Gemini
/// lists some 50 models, more than a first default page holds).
pub fn listed_models(extra: usize) -> Vec<Value> {
    let mut models: Vec<Value> = MODELS.iter().map(ModelInfo::json).collect();
    for i in 0..extra {
        let id = extra_model_id(i);
        models.push(json!({
            "name": format!("models/{id}"),
            "version": "001",
            "displayName": format!("Listed {i}"),
            "description": "Listed only (mock)",
            "inputTokenLimit": 8192,
            "outputTokenLimit": 1024,
            "supportedGenerationMethods": GENERATE,
        }));
    }
    models
}

/// The token of the page that starts at model `start`. Gemini's page tokens are base64, with
/// `+`, `/` and `=` in them: a client must percent-encode one in a query, where a `+` left as
/// it is reads as a space.
pub fn page_token(start: usize) -> String {
    format!("Cg+/{start:04}/mock==")
}

/// The start of the page a token names.
fn page_start(token: &str) -> Option<usize> {
    token
        .strip_prefix("Cg+/")?
        .strip_suffix("/mock==")?
        .parse()
        .ok()
}

/// One page of `models`, as Gemini pages them: `pageSize` (absent or 0: 50; above `max`: `max`)
/// models from `pageToken` (decoded) on, and a `nextPageToken` while more remain. With
/// `repeat`, a later page gives its own token again (a broken relay). `Err` names the argument
/// Gemini would refuse.
pub fn model_page(
    models: Vec<Value>,
    page_size: Option<&str>,
    page_token: Option<&str>,
    max: usize,
    repeat: bool,
) -> Result<Value, &'static str> {
    let size = match page_size {
        None => DEFAULT_PAGE_SIZE,
        Some(text) => match text.parse::<usize>() {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) => n.min(max),
            Err(_) => return Err("page size"),
        },
    };
    let start = match page_token {
        None | Some("") => 0,
        Some(token) => page_start(token)
            .filter(|&n| n < models.len())
            .ok_or("page token")?,
    };
    let end = (start + size).min(models.len());
    let mut page = json!({ "models": models[start..end].to_vec() });
    if end < models.len() {
        let next = if repeat && start > 0 { start } else { end };
        page["nextPageToken"] = json!(self::page_token(next));
    }
    Ok(page)
}

/// `GET openai/models`: the models in the shape of Gemini's OpenAI-compatible endpoint.
pub fn openai_model_list(extra: usize) -> Value {
    let data: Vec<Value> = listed_models(extra)
        .iter()
        .map(|m| {
            json!({
                "id": m["name"],
                "object": "model",
                "created": 0,
                "owned_by": "google",
            })
        })
        .collect();
    json!({ "object": "list", "data": data })
}

/// Every `text` part of a request's `contents` (or of `content`, for embeddings), joined by spaces.
pub fn prompt_text(request: &Value) -> String {
    let contents: Vec<&Value> = match (request.get("contents"), request.get("content")) {
        (Some(Value::Array(items)), _) => items.iter().collect(),
        (_, Some(content)) => vec![content],
        _ => Vec::new(),
    };
    contents
        .iter()
        .filter_map(|c| c.get("parts").and_then(Value::as_array))
        .flatten()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Tokens of a text: its words (at least 1).
pub fn count_tokens(text: &str) -> u64 {
    text.split_whitespace().count().max(1) as u64
}

fn usage(model: &ModelInfo, prompt: &str) -> Value {
    let prompt_tokens = count_tokens(prompt);
    let thoughts = if model.thinking { 12 } else { 0 };
    let mut usage = json!({
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": CANDIDATE_TOKENS,
        "totalTokenCount": prompt_tokens + CANDIDATE_TOKENS + thoughts,
        "promptTokensDetails": [{ "modality": "TEXT", "tokenCount": prompt_tokens }],
    });
    if model.thinking {
        usage["thoughtsTokenCount"] = json!(thoughts);
    }
    usage
}

/// The text the mock answers to `prompt`: `echo: <prompt>`.
pub fn answer_text(prompt: &str) -> String {
    format!("echo: {prompt}")
}

fn chunk(model: &ModelInfo, text: &str, last: bool, prompt: &str) -> Value {
    let mut candidate = json!({
        "content": { "parts": [{ "text": text }], "role": "model" },
        "index": 0,
    });
    let mut response = json!({
        "candidates": [],
        "modelVersion": model.id,
        "responseId": "mock-response-id",
    });
    if last {
        candidate["finishReason"] = json!("STOP");
        response["usageMetadata"] = usage(model, prompt);
    }
    response["candidates"] = json!([candidate]);
    response
}

/// The function call the mock answers a request with, if the request declares functions
/// (`tools[].functionDeclarations`, or `function_declarations`) and neither forbids calls
/// (`toolConfig.functionCallingConfig.mode` `NONE`) nor ends with a function's result (the
/// turn where a real model answers in text). The function is the first of
/// `allowedFunctionNames` that is declared, else the first declared. Its `args` fill each
/// property of the declared `parameters`: a string with the prompt, a number or an integer with
/// the prompt's token count, a boolean with `true`.
pub fn function_call(request: &Value) -> Option<Value> {
    let declarations: Vec<&Value> = request
        .get("tools")?
        .as_array()?
        .iter()
        .filter_map(|tool| {
            tool.get("functionDeclarations")
                .or_else(|| tool.get("function_declarations"))
        })
        .filter_map(Value::as_array)
        .flatten()
        .collect();
    let config = request
        .get("toolConfig")
        .and_then(|c| c.get("functionCallingConfig"));
    if config.and_then(|c| c.get("mode")).and_then(Value::as_str) == Some("NONE") {
        return None;
    }
    let last_turn_answers_a_call = request
        .get("contents")
        .and_then(Value::as_array)
        .and_then(|contents| contents.last())
        .and_then(|turn| turn.get("parts"))
        .and_then(Value::as_array)
        .is_some_and(|parts| parts.iter().any(|p| p.get("functionResponse").is_some()));
    if last_turn_answers_a_call {
        return None;
    }
    let name_of = |d: &Value| d.get("name").and_then(Value::as_str).map(str::to_owned);
    let allowed = config
        .and_then(|c| c.get("allowedFunctionNames"))
        .and_then(Value::as_array);
    let declaration = allowed
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|name| {
            declarations
                .iter()
                .find(|d| name_of(d).as_deref() == Some(name))
        })
        .or_else(|| declarations.first())?;
    let prompt = prompt_text(request);
    let mut args = serde_json::Map::new();
    let properties = declaration
        .pointer("/parameters/properties")
        .or_else(|| declaration.pointer("/parametersJsonSchema/properties"))
        .and_then(Value::as_object);
    for (property, schema) in properties.into_iter().flatten() {
        let kind = schema
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase();
        let value = match kind.as_str() {
            "string" => json!(prompt),
            "number" | "integer" => json!(count_tokens(&prompt)),
            "boolean" => json!(true),
            _ => continue,
        };
        args.insert(property.clone(), value);
    }
    Some(json!({ "name": name_of(declaration)?, "args": args }))
}

/// A `GenerateContentResponse` calling a function (`call` from [`function_call`]): one
/// `functionCall` part, `finishReason` `STOP` (Gemini has no finish reason of its own for calls).
pub fn function_call_content(model: &ModelInfo, call: &Value, prompt: &str) -> Value {
    let mut response = chunk(model, "", true, prompt);
    response["candidates"][0]["content"]["parts"] = json!([{ "functionCall": call }]);
    response
}

/// A `GenerateContentResponse` answering `prompt`.
pub fn generate_content(model: &ModelInfo, prompt: &str) -> Value {
    chunk(model, &answer_text(prompt), true, prompt)
}

/// The chunks of a streamed answer: [`STREAM_EVENTS`] pieces of the same text, `usageMetadata`
/// and `finishReason` on the last.
pub fn stream_chunks(model: &ModelInfo, prompt: &str) -> Vec<Value> {
    let text = answer_text(prompt);
    let step = text.len().div_ceil(STREAM_EVENTS).max(1);
    let mut pieces: Vec<String> = text
        .as_bytes()
        .chunks(step)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    pieces.resize(STREAM_EVENTS, String::new());
    let last = pieces.len() - 1;
    pieces
        .iter()
        .enumerate()
        .map(|(i, piece)| chunk(model, piece, i == last, prompt))
        .collect()
}

/// `:countTokens`.
pub fn count_tokens_reply(prompt: &str) -> Value {
    json!({
        "totalTokens": count_tokens(prompt),
        "promptTokensDetails": [{ "modality": "TEXT", "tokenCount": count_tokens(prompt) }],
    })
}

/// A deterministic embedding of `text`.
pub fn embedding(text: &str) -> Value {
    let seed = text
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
    let values: Vec<f64> = (0..EMBEDDING_DIMENSIONS)
        .map(|i| f64::from((seed >> (i * 3)) % 1000) / 1000.0 - 0.5)
        .collect();
    json!({ "values": values })
}

/// `:embedContent`.
pub fn embed_content(request: &Value) -> Value {
    json!({ "embedding": embedding(&prompt_text(request)) })
}

/// `:batchEmbedContents`: one embedding per entry of `requests`.
pub fn batch_embed_contents(request: &Value) -> Value {
    let embeddings: Vec<Value> = request
        .get("requests")
        .and_then(Value::as_array)
        .map(|items| items.iter().map(|r| embedding(&prompt_text(r))).collect())
        .unwrap_or_default();
    json!({ "embeddings": embeddings })
}

/// Models served but not listed (so that the model lists the tests compare stay as they are):
/// `gemini-2.0-flash-exp`, which answers with images when asked (`responseModalities` with
/// `IMAGE`) and, like the real one, refuses a `systemInstruction`; `gemini-3-pro-preview`,
/// which thinks by level and cannot stop thinking.
pub const UNLISTED_MODELS: &[ModelInfo] = &[
    ModelInfo {
        id: "gemini-2.0-flash-exp",
        display_name: "Gemini 2.0 Flash Experimental",
        input_token_limit: 1_048_576,
        output_token_limit: 8_192,
        methods: GENERATE,
        thinking: false,
    },
    ModelInfo {
        id: "gemini-3-pro-preview",
        display_name: "Gemini 3 Pro Preview",
        input_token_limit: 1_048_576,
        output_token_limit: 65_536,
        methods: GENERATE,
        thinking: true,
    },
];

/// The models that cannot turn thinking off, with their lowest thinking budget: Gemini refuses
/// a budget of 0 (or below the lowest) for them.
const ALWAYS_THINK: &[(&str, i64)] = &[("gemini-2.5-pro", 128), ("gemini-3-pro-preview", 1)];

/// The thinking levels of the models set by level (Gemini 3); other models refuse a level.
fn thinking_levels(model: &str) -> Option<&'static [&'static str]> {
    (model == "gemini-3-pro-preview").then_some(&["low", "high"])
}

/// The models that generate images.
const IMAGE_OUTPUT: &[&str] = &["gemini-2.0-flash-exp"];

/// The model with this id, listed or not.
pub fn find_served_model(id: &str) -> Option<&'static ModelInfo> {
    find_model(id).or_else(|| UNLISTED_MODELS.iter().find(|m| m.id == id))
}

/// The image an image model answers with: a 1×1 PNG, in base64.
pub const IMAGE_PNG_BASE64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

/// The web sources of an answer grounded by Google Search (title, URI), as Gemini gives them:
/// redirect links titled with the site's domain.
pub const SEARCH_SOURCES: &[(&str, &str)] = &[
    (
        "example.com",
        "https://vertexaisearch.cloud.google.com/grounding-api-redirect/mock-source-1",
    ),
    (
        "example.org",
        "https://vertexaisearch.cloud.google.com/grounding-api-redirect/mock-source-2",
    ),
];

/// The thought summary a thinking model gives when asked for its thoughts.
pub fn thought_text(prompt: &str) -> String {
    format!("thinking about: {prompt}")
}

fn generation_config(request: &Value) -> Option<&Value> {
    request
        .get("generationConfig")
        .or_else(|| request.get("generation_config"))
}

fn has_tool(request: &Value, names: &[&str]) -> bool {
    let tools: Vec<&Value> = match request.get("tools") {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(single) => vec![single],
        None => Vec::new(),
    };
    tools
        .iter()
        .any(|t| names.iter().any(|name| t.get(*name).is_some()))
}

const BUILTIN_TOOLS: &[&str] = &[
    "googleSearch",
    "google_search",
    "codeExecution",
    "code_execution",
    "urlContext",
    "url_context",
];

/// What Gemini refuses in a generation request, for `model`: a thinking config for a model
/// that does not think; a built-in tool next to function declarations or in JSON mode; a
/// system instruction for an image model.
pub fn refusal(model: &ModelInfo, request: &Value) -> Option<super::errors::GeminiError> {
    use super::errors;
    let config = generation_config(request);
    let thinking = config
        .and_then(|c| c.get("thinkingConfig").or_else(|| c.get("thinking_config")))
        .is_some_and(|t| !t.is_null());
    if thinking && !model.thinking {
        return Some(errors::thinking_not_supported());
    }
    if let Some(refusal) = thinking_refusal(model, config) {
        return Some(refusal);
    }
    let builtin = has_tool(request, BUILTIN_TOOLS);
    if builtin && has_tool(request, &["functionDeclarations", "function_declarations"]) {
        return Some(errors::tool_use_with_function_calling());
    }
    let json_mode = config
        .and_then(|c| {
            c.get("responseMimeType")
                .or_else(|| c.get("response_mime_type"))
        })
        .and_then(Value::as_str)
        == Some("application/json");
    if builtin && json_mode {
        return Some(errors::tool_use_with_json_mode());
    }
    let system = request
        .get("systemInstruction")
        .or_else(|| request.get("system_instruction"))
        .is_some_and(|s| !s.is_null());
    if system && IMAGE_OUTPUT.contains(&model.id) {
        return Some(errors::developer_instruction_not_enabled(model.id));
    }
    None
}

/// What Gemini refuses in a thinking config: a budget of 0 (or below the lowest) for a model
/// that cannot turn thinking off, a level for a model set by budget or one it does not have,
/// a budget and a level together.
fn thinking_refusal(
    model: &ModelInfo,
    config: Option<&Value>,
) -> Option<super::errors::GeminiError> {
    use super::errors;
    let thinking = config?
        .get("thinkingConfig")
        .or_else(|| config?.get("thinking_config"))?;
    let budget = thinking
        .get("thinkingBudget")
        .or_else(|| thinking.get("thinking_budget"))
        .and_then(Value::as_i64);
    let level = thinking
        .get("thinkingLevel")
        .or_else(|| thinking.get("thinking_level"))
        .and_then(Value::as_str);
    if budget.is_some() && level.is_some() {
        return Some(errors::thinking_budget_and_level());
    }
    if let Some(level) = level {
        let known = thinking_levels(model.id)
            .is_some_and(|levels| levels.iter().any(|l| l.eq_ignore_ascii_case(level)));
        if !known {
            return Some(errors::thinking_level_not_supported(level));
        }
    }
    let lowest = ALWAYS_THINK.iter().find(|(id, _)| *id == model.id);
    match (budget, lowest) {
        (Some(budget), Some((_, lowest))) if budget != -1 && budget < *lowest => {
            Some(errors::thinking_budget_invalid(budget, *lowest))
        }
        _ => None,
    }
}

/// The chunks of an answer (one for a whole answer) with what the request switched on: a
/// leading thought (a thinking model asked `includeThoughts`: its own chunk in a stream, the
/// first part of a whole answer), the search sources in the last chunk (`googleSearch`), an
/// image after the text of the last chunk (an image model asked for `IMAGE` output).
pub fn with_features(
    model: &ModelInfo,
    request: &Value,
    prompt: &str,
    stream: bool,
    chunks: &mut Vec<Value>,
) {
    let config = generation_config(request);
    let thoughts = model.thinking
        && config
            .and_then(|c| c.get("thinkingConfig").or_else(|| c.get("thinking_config")))
            .and_then(|t| {
                t.get("includeThoughts")
                    .or_else(|| t.get("include_thoughts"))
            })
            .and_then(Value::as_bool)
            == Some(true);
    let images = IMAGE_OUTPUT.contains(&model.id)
        && config
            .and_then(|c| {
                c.get("responseModalities")
                    .or_else(|| c.get("response_modalities"))
            })
            .and_then(Value::as_array)
            .is_some_and(|m| {
                m.iter()
                    .any(|v| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("image")))
            });
    let search = has_tool(request, &["googleSearch", "google_search"]);
    if let Some(last) = chunks.last_mut() {
        let candidate = &mut last["candidates"][0];
        if images {
            if let Some(parts) = candidate["content"]["parts"].as_array_mut() {
                parts.push(
                    json!({ "inlineData": { "mimeType": "image/png", "data": IMAGE_PNG_BASE64 } }),
                );
            }
        }
        if search {
            let chunks: Vec<Value> = SEARCH_SOURCES
                .iter()
                .map(|(title, uri)| json!({ "web": { "uri": uri, "title": title } }))
                .collect();
            candidate["groundingMetadata"] = json!({
                "searchEntryPoint": { "renderedContent": "<div>mock search</div>" },
                "groundingChunks": chunks,
                "groundingSupports": [{
                    "segment": { "startIndex": 0, "endIndex": 4, "text": "echo" },
                    "groundingChunkIndices": [0, 1]
                }],
                "webSearchQueries": [prompt],
            });
        }
    }
    if thoughts {
        let thought = json!({ "text": thought_text(prompt), "thought": true });
        if !stream {
            if let Some(parts) = chunks[0]["candidates"][0]["content"]["parts"].as_array_mut() {
                parts.insert(0, thought);
            }
        } else {
            let mut first = chunks[0].clone();
            first["candidates"][0] = json!({
                "content": { "parts": [thought], "role": "model" },
                "index": 0,
            });
            if let Some(map) = first.as_object_mut() {
                map.remove("usageMetadata");
            }
            chunks.insert(0, first);
        }
    }
}
