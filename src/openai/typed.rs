//! The common chat, converted without a `serde_json::Value` tree: a request of text messages
//! and sampling settings, and an answer whose parts are all text (and thoughts), are read into
//! borrowing structs and written out in one pass each.
//!
//! These are fast paths beside the general conversion
//! ([`chat_request_to_gemini`](super::chat_request_to_gemini),
//! [`gemini_response_to_openai`](super::gemini_response_to_openai)), not second
//! implementations of it: anything they do not read exactly as the general path would (a field
//! they do not know, a part other than text, a value of an unexpected type, a `null` where the
//! general path reads something, duplicate keys) makes them give up, and the general path
//! converts the request or answer. The differential tests below hold them to the general
//! path's output.

use std::borrow::Cow;

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use super::defaults::{answers_with_images, image_output};
use super::models::ResolvedModel;
use super::request::{thinking_config, ChatOptions};
use super::response::{finish_reason, ResponseOptions};
use crate::usage::TokenUsage;

// ---------------------------------------------------------------------------------------------
// Objects only.

/// A struct read from a JSON object only. serde's derived structs also take a JSON array (their
/// fields in order), which the general path reads as no object at all: `[["user","Hi"]]` as
/// `messages` would be a message here and an error there.
struct Obj<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjVisitor(PhantomData)).map(Obj)
    }
}

// ---------------------------------------------------------------------------------------------
// Requests.

/// An OpenAI chat request of text messages and the sampling settings Gemini takes as they are.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    messages: Vec<Obj<TextMessage<'a>>>,
    // `Option`: `null` is as good as absent, as in the general path.
    temperature: Option<Number>,
    top_p: Option<Number>,
    seed: Option<Number>,
    presence_penalty: Option<Number>,
    frequency_penalty: Option<Number>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    n: Option<u64>,
    stream: Option<bool>,
    stream_options: Option<Obj<StreamOptions>>,
}

/// Only `include_usage`: a value this path would skip unread (any other key) could be JSON the
/// general path refuses (a lone surrogate, invalid UTF-8).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextMessage<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    content: Cow<'a, str>,
}

/// The `generateContent` body, as the general path builds it (keys in any order).
#[derive(Serialize)]
struct GeminiBody<'a> {
    contents: Vec<Turn<'a>>,
    #[serde(rename = "systemInstruction", skip_serializing_if = "Option::is_none")]
    system_instruction: Option<TextParts<'a>>,
    #[serde(rename = "generationConfig", skip_serializing_if = "Option::is_none")]
    generation_config: Option<GenerationConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
}

#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    parts: Vec<TextPart<'a>>,
}

#[derive(Serialize)]
struct TextParts<'a> {
    parts: Vec<TextPart<'a>>,
}

#[derive(Serialize)]
struct TextPart<'a> {
    text: &'a str,
}

#[derive(Serialize, Default)]
struct GenerationConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<Number>,
    #[serde(rename = "topP", skip_serializing_if = "Option::is_none")]
    top_p: Option<Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<Number>,
    #[serde(rename = "presencePenalty", skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<Number>,
    #[serde(rename = "frequencyPenalty", skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<Number>,
    #[serde(rename = "maxOutputTokens", skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(rename = "candidateCount", skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u64>,
    #[serde(rename = "responseModalities", skip_serializing_if = "Option::is_none")]
    response_modalities: Option<[&'static str; 2]>,
    #[serde(rename = "thinkingConfig", skip_serializing_if = "Option::is_none")]
    thinking_config: Option<Value>,
}

/// A text chat converted: what [`GeminiChat`](super::GeminiChat) holds, the body as bytes.
pub(crate) struct TextChat {
    pub(crate) model: ResolvedModel,
    pub(crate) body: Vec<u8>,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) search: bool,
}

/// A chat request of text messages as a Gemini `generateContent` body, with `safety_json`
/// (the options' safety settings, serialized once) spliced in; `None` when the request is not
/// of that shape or is refused (use [`chat_request_to_gemini`](super::chat_request_to_gemini),
/// which also says why).
pub(crate) fn text_chat_to_gemini(
    req: &[u8],
    opts: &ChatOptions,
    safety_json: Option<&str>,
) -> Option<TextChat> {
    crate::buffer::counts::parse(); // the body's one parse, in place of the general path's
    let Obj(req): Obj<TextRequest<'_>> = serde_json::from_slice(req).ok()?;
    if req.model.trim().is_empty() || req.n == Some(0) {
        return None;
    }
    let model = opts.rules.resolve(&req.model);
    if answers_with_images(&model) {
        return None; // markdown images in text become image parts
    }
    let mut contents: Vec<Turn<'_>> = Vec::new();
    let mut system = Vec::new();
    for Obj(message) in &req.messages {
        let role = match &*message.role {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "model",
            _ => return None,
        };
        if message.content.is_empty() {
            continue;
        }
        let part = TextPart {
            text: &message.content,
        };
        match contents.last_mut() {
            _ if role == "system" => system.push(part),
            Some(last) if last.role == role => last.parts.push(part),
            _ => contents.push(Turn {
                role,
                parts: vec![part],
            }),
        }
    }
    if contents.is_empty() {
        return None;
    }
    let mut config = GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        max_output_tokens: req.max_completion_tokens.or(req.max_tokens),
        candidate_count: req.n.filter(|n| *n > 1),
        ..GenerationConfig::default()
    };
    if image_output(&model) {
        config.response_modalities = Some(["TEXT", "IMAGE"]);
    }
    config.thinking_config = thinking_config(&Value::Null, &model, opts).ok()?;
    let has_config = config.temperature.is_some()
        || config.top_p.is_some()
        || config.seed.is_some()
        || config.presence_penalty.is_some()
        || config.frequency_penalty.is_some()
        || config.max_output_tokens.is_some()
        || config.candidate_count.is_some()
        || config.response_modalities.is_some()
        || config.thinking_config.is_some();
    let tools = opts.builtin_tools(&model, model.search, false);
    let search = tools.iter().any(|t| t.get("googleSearch").is_some());
    let body = GeminiBody {
        contents,
        system_instruction: (!system.is_empty() && !image_output(&model))
            .then_some(TextParts { parts: system }),
        generation_config: has_config.then_some(config),
        tools,
    };
    let mut bytes = serde_json::to_vec(&body).ok()?;
    if let Some(safety) = safety_json {
        // `{...}` → `{...,"safetySettings":[...]}`: the body has `contents`, so it is not empty.
        bytes.pop();
        bytes.extend_from_slice(b",\"safetySettings\":");
        bytes.extend_from_slice(safety.as_bytes());
        bytes.push(b'}');
    }
    let stream = req.stream.unwrap_or(false);
    let include_usage = req
        .stream_options
        .and_then(|Obj(o)| o.include_usage)
        .unwrap_or(false);
    Some(TextChat {
        model,
        body: bytes,
        stream,
        include_usage,
        search,
    })
}

// ---------------------------------------------------------------------------------------------
// Answers.

/// A Gemini `GenerateContentResponse` of text parts.
#[derive(Deserialize)]
struct Answer<'a> {
    // `Vec` (not `Option`): `null` is refused, as the general path reads it as no candidates
    // and the two would still agree, but a refusal keeps the cases few.
    #[serde(borrow, default)]
    candidates: Vec<Obj<Candidate<'a>>>,
    /// Missing: `None`; anything but an object: refused (the general path would answer a
    /// usage of zeros for it).
    #[serde(rename = "usageMetadata", default, deserialize_with = "usage_object")]
    usage: Option<TokenUsage>,
    #[serde(rename = "promptFeedback", default)]
    prompt_feedback: Option<Obj<PromptFeedback>>,
}

#[derive(Deserialize)]
struct PromptFeedback {
    /// Present (whatever its value), as the general path asks.
    #[serde(rename = "blockReason", default, deserialize_with = "present")]
    blocked: bool,
}

#[derive(Deserialize)]
struct Candidate<'a> {
    #[serde(borrow, default)]
    content: Option<Obj<Content<'a>>>,
    #[serde(rename = "finishReason", borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    index: Option<u64>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow, default)]
    parts: Option<Vec<Obj<Part<'a>>>>,
}

/// A text or thought part; any other field (a function call, inline data, code) is refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    thought: Option<bool>,
    /// Gemini's signature of a thought; not converted.
    #[serde(rename = "thoughtSignature", default)]
    _signature: Option<IgnoredAny>,
}

fn usage_object<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TokenUsage>, D::Error> {
    match crate::usage::gemini_usage_from(d)? {
        Some(usage) => Ok(Some(usage)),
        None => Err(D::Error::custom("usageMetadata is not an object")),
    }
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u64,
    message: Message<'a>,
    logprobs: (),
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    /// `None` only for a blocked prompt's choice.
    content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "str::is_empty")]
    reasoning_content: Cow<'a, str>,
}

/// OpenAI's `usage`, as [`openai_usage_from_gemini`](super::openai_usage_from_gemini) builds it.
#[derive(Serialize)]
pub(crate) struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: CachedTokens,
    completion_tokens_details: ReasoningTokens,
}

#[derive(Serialize)]
struct CachedTokens {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct ReasoningTokens {
    reasoning_tokens: u64,
}

impl Usage {
    /// Completion tokens include thoughts; the total is at least prompt + completion.
    pub(crate) fn from_gemini(usage: &TokenUsage) -> Self {
        let completion = usage.candidates.saturating_add(usage.thoughts);
        let prompt = usage.prompt.saturating_add(usage.tool_use_prompt);
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: usage.total.max(prompt.saturating_add(completion)),
            prompt_tokens_details: CachedTokens {
                cached_tokens: usage.cached,
            },
            completion_tokens_details: ReasoningTokens {
                reasoning_tokens: usage.thoughts,
            },
        }
    }
}

/// Appends `text` to `to`, borrowing while there is only one piece.
fn append<'a>(to: &mut Cow<'a, str>, text: Cow<'a, str>) {
    if to.is_empty() {
        *to = text;
    } else if !text.is_empty() {
        to.to_mut().push_str(&text);
    }
}

/// A successful Gemini answer of text parts as an OpenAI `chat.completion` body, and the
/// answer's token usage; `None` when the answer is not of that shape (use
/// [`gemini_response_to_openai`](super::gemini_response_to_openai)). Not for
/// [`ResponseOptions::search_links`], which edits the answer first.
pub(crate) fn text_answer_to_openai(
    gemini: &[u8],
    model: &str,
    id: &str,
    created: u64,
    opts: &ResponseOptions,
) -> Option<(Vec<u8>, Option<TokenUsage>)> {
    if opts.search_links {
        return None;
    }
    // Values this path skips unread (safety ratings, grounding, signatures) are not checked by
    // serde: invalid UTF-8 there would be answered here and refused by the general path.
    // (A lone `\u` surrogate or deep nesting in a skipped value is still taken: leniency the
    // general path does not have, for upstream answers only.)
    std::str::from_utf8(gemini).ok()?;
    let Obj(answer): Obj<Answer<'_>> = serde_json::from_slice(gemini).ok()?;
    let mut choices = Vec::with_capacity(answer.candidates.len());
    for (i, Obj(candidate)) in answer.candidates.into_iter().enumerate() {
        let mut content = Cow::Borrowed("");
        let mut reasoning = Cow::Borrowed("");
        let parts = candidate
            .content
            .and_then(|Obj(c)| c.parts)
            .unwrap_or_default();
        for Obj(part) in parts {
            let Some(text) = part.text else { continue };
            if part.thought == Some(true) {
                if opts.show_thinking {
                    append(&mut reasoning, text);
                }
            } else {
                append(&mut content, text);
            }
        }
        let reason = candidate.finish_reason.as_deref().unwrap_or("STOP");
        choices.push(Choice {
            index: candidate.index.unwrap_or(i as u64),
            message: Message {
                role: "assistant",
                content: Some(content),
                reasoning_content: reasoning,
            },
            logprobs: (),
            finish_reason: finish_reason(reason, false),
        });
    }
    if choices.is_empty() && answer.prompt_feedback.is_some_and(|Obj(f)| f.blocked) {
        choices.push(Choice {
            index: 0,
            message: Message {
                role: "assistant",
                content: None,
                reasoning_content: Cow::Borrowed(""),
            },
            logprobs: (),
            finish_reason: "content_filter",
        });
    }
    let completion = Completion {
        id,
        object: "chat.completion",
        created,
        model,
        choices,
        usage: answer.usage.as_ref().map(Usage::from_gemini),
    };
    let body = serde_json::to_vec(&completion).ok()?;
    Some((body, answer.usage))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::gemini_response_to_openai;
    use crate::usage::gemini_usage;
    use serde_json::{json, Value};

    fn options() -> Vec<ChatOptions> {
        use crate::openai::ModelRules;
        let safety = json!([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"},
                            {"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}]);
        let rules = ModelRules {
            search_models: vec!["gemini-2.5-flash".into()],
            image_models: vec!["gemini-2.0-flash-exp".into()],
            thinking_models: vec!["gemini-2.0-flash-thinking".into()],
            filtered_models: vec!["gemini-1.0-pro".into()],
        };
        vec![
            ChatOptions::default(),
            ChatOptions {
                rules: rules.clone(),
                show_thinking: true,
                thinking_budgets: [("gemini-2.5-pro".to_owned(), 1024)].into(),
                safety_settings: Some(safety.clone()),
                code_execution: true,
                url_context_models: vec!["gemini-2.5-flash".into()],
                show_search_link: true,
            },
            ChatOptions {
                rules,
                safety_settings: Some(safety),
                ..ChatOptions::default()
            },
        ]
    }

    /// The fast path's body (when it takes the request) is the general path's.
    fn same_request(req: &str, opts: &ChatOptions) -> bool {
        let safety = opts.safety_settings.as_ref().map(Value::to_string);
        let Some(fast) = text_chat_to_gemini(req.as_bytes(), opts, safety.as_deref()) else {
            return false;
        };
        let parsed: Value = serde_json::from_str(req).unwrap();
        let general = crate::openai::chat_request_to_gemini(&parsed, opts).unwrap_or_else(|e| {
            panic!("the general path refuses what the fast path took: {e}: {req}")
        });
        let body: Value = serde_json::from_slice(&fast.body).unwrap();
        assert_eq!(body, general.body, "{req}");
        assert_eq!(fast.model, general.model, "{req}");
        assert_eq!(fast.stream, general.stream, "{req}");
        assert_eq!(fast.include_usage, general.include_usage, "{req}");
        assert_eq!(fast.search, general.search, "{req}");
        assert!(general.remote_images.is_empty());
        true
    }

    #[test]
    fn text_requests_match_the_general_path() {
        let taken = [
            r#"{"model":"gemini-2.0-flash","messages":[{"role":"user","content":"Hi"}]}"#,
            r#"{"model":"gemini-2.0-flash","messages":[{"role":"user","content":"Hi"}],"temperature":0.7,"max_tokens":256,"top_p":0.95}"#,
            r#"{"model":" models/gemini-2.5-pro ","messages":[{"role":"system","content":"Be brief."},{"role":"developer","content":""},{"role":"user","content":"a\"\u00e9"},{"role":"user","content":"b"},{"role":"assistant","content":"c"},{"role":"assistant","content":""},{"role":"system","content":"late"},{"role":"user","content":"d"}],"seed":7,"presence_penalty":-1,"frequency_penalty":0.5,"max_completion_tokens":10,"max_tokens":null,"n":2,"stream":true,"stream_options":{"include_usage":true}}"#,
            r#"{"model":"gemini-2.5-flash-search","messages":[{"role":"user","content":"news"}],"n":1,"stream":false,"stream_options":null,"temperature":null}"#,
            r#"{"model":"gemini-2.5-flash-non-thinking","messages":[{"role":"user","content":"x"}],"stream_options":{}}"#,
            r#"{"model":"gemini-2.0-flash-thinking","messages":[{"role":"assistant","content":"first"},{"role":"user","content":"x"}]}"#,
            r#"{"model":"gemini-3-pro-preview","messages":[{"role":"user","content":"x"}],"temperature":1}"#,
        ];
        for opts in options() {
            for req in taken {
                assert!(same_request(req, &opts), "not taken: {req}");
            }
        }
    }

    #[test]
    fn other_requests_are_left_to_the_general_path() {
        let left = [
            // Fields and contents of other kinds.
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":"END"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"user":"me"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x","name":"me"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}"#,
            r#"{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[]}]}"#,
            r#"{"model":"m","messages":[{"role":"tool","content":"x","tool_call_id":"a"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"low"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}"#,
            // Values the general path reads leniently or refuses.
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"0.7"}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"model":"n"}"#,
            r#"{"model":"  ","messages":[{"role":"user","content":"x"}]}"#,
            r#"{"model":"m","messages":[]}"#,
            r#"{"model":"m","messages":[{"role":"system","content":"only"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":""}]}"#,
            r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#,
            r#"{"model":"m","messages":null}"#,
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            r#"[]"#,
            r#"not json"#,
            // Arrays where objects belong (serde's derived structs would take them in order).
            r#"{"model":"gemini-2.0-flash","messages":[["user","Hi"]]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"Hi"}],"stream":true,"stream_options":[true]}"#,
            r#"["gemini-2.0-flash",[["user","Hi"]],null,null,null,null,null,null,null,null,null,null]"#,
            // Values that would be skipped unread.
            r#"{"model":"m","messages":[{"role":"user","content":"Hi"}],"stream_options":{"x":"\ud800"}}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"Hi"}],"stream_options":{"include_obfuscation":true}}"#,
            // A model that answers with images reads markdown images in text.
            r#"{"model":"gemini-2.0-flash-exp-image","messages":[{"role":"user","content":"x"}]}"#,
        ];
        for opts in options() {
            for req in left {
                assert!(
                    text_chat_to_gemini(req.as_bytes(), &opts, None).is_none(),
                    "{req}"
                );
            }
        }
    }

    /// Generated text chats: every mix of roles and settings the fast path takes.
    #[test]
    fn generated_requests_match_the_general_path() {
        let mut rng = fastrand::Rng::with_seed(21);
        let models = [
            "gemini-2.0-flash",
            "gemini-2.5-flash",
            "gemini-2.5-flash-search",
            "gemini-2.5-pro",
            "gemini-2.5-flash-non-thinking",
            "gemini-1.0-pro",
        ];
        let roles = ["system", "developer", "user", "assistant"];
        let texts = ["", "Hello", "é\u{1F600}", "a\"b\\c\n", " "];
        let all = options();
        for _ in 0..2_000 {
            let mut messages: Vec<Value> = (0..rng.usize(0..5))
                .map(|_| json!({"role": roles[rng.usize(..4)], "content": texts[rng.usize(..texts.len())]}))
                .collect();
            messages.push(json!({"role": "user", "content": "last"}));
            let mut req = json!({"model": models[rng.usize(..models.len())], "messages": messages});
            for (name, value) in [
                ("temperature", json!(0.5)),
                ("top_p", json!(1)),
                ("seed", json!(-3)),
                ("presence_penalty", json!(0.1)),
                ("frequency_penalty", json!(null)),
                ("max_tokens", json!(100)),
                ("max_completion_tokens", json!(50)),
                ("n", json!(rng.u64(1..3))),
                ("stream", json!(rng.bool())),
                ("stream_options", json!({"include_usage": rng.bool()})),
            ] {
                if rng.bool() {
                    req[name] = value;
                }
            }
            let text = req.to_string();
            for opts in &all {
                assert!(same_request(&text, opts), "not taken: {text}");
            }
        }
    }

    /// The fast path's answer (when it takes the answer) is the general path's, and its usage
    /// is the usage layer's reading of `usageMetadata`.
    fn same(gemini: &str, opts: &ResponseOptions) -> bool {
        let Some((fast, usage)) = text_answer_to_openai(gemini.as_bytes(), "m", "id-1", 7, opts)
        else {
            return false;
        };
        let parsed: Value = serde_json::from_str(gemini).unwrap();
        let general = gemini_response_to_openai(&parsed, "m", "id-1", 7, opts);
        let fast: Value = serde_json::from_slice(&fast).unwrap();
        assert_eq!(fast, general, "{gemini}");
        assert_eq!(
            usage,
            parsed.get("usageMetadata").and_then(gemini_usage),
            "{gemini}"
        );
        true
    }

    #[test]
    fn text_answers_match_the_general_path() {
        let taken = [
            r#"{"candidates":[{"content":{"parts":[{"text":"Hello"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"totalTokenCount":5},"modelVersion":"x","responseId":"r"}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"a\"\u00e9\n"},{"text":" b"},{"text":"t","thought":true,"thoughtSignature":"c2ln"}]},"finishReason":"MAX_TOKENS"}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"x"}]},"finishReason":"SAFETY","index":3},{"content":{"parts":[]}}]}"#,
            r#"{"candidates":[{"content":null,"finishReason":null,"index":null}]}"#,
            r#"{"candidates":[{"content":{"parts":null}},{"content":{}},{}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":null},{"thought":true},{"text":"y","thought":null}]}}]}"#,
            r#"{"candidates":[],"promptFeedback":{"blockReason":"SAFETY"}}"#,
            r#"{"promptFeedback":{"blockReason":null}}"#,
            r#"{"promptFeedback":null,"usageMetadata":{}}"#,
            r#"{"promptFeedback":{}}"#,
            r#"{}"#,
            r#"{"usageMetadata":{"promptTokenCount":1.5,"candidatesTokenCount":-1,"thoughtsTokenCount":4,"cachedContentTokenCount":2,"toolUsePromptTokenCount":6,"totalTokenCount":"9","promptTokensDetails":[{"modality":"TEXT","tokenCount":1}]}}"#,
            r#"{"usageMetadata":{"promptTokenCount":18446744073709551615,"candidatesTokenCount":1}}"#,
            r#"{"usageMetadata":{"totalTokenCount":100,"promptTokenCount":1,"promptTokenCount":2}}"#,
        ];
        for opts in [
            ResponseOptions::default(),
            ResponseOptions {
                show_thinking: true,
                ..ResponseOptions::default()
            },
        ] {
            for gemini in taken {
                assert!(same(gemini, &opts), "not taken: {gemini}");
            }
        }
    }

    #[test]
    fn other_answers_are_left_to_the_general_path() {
        let left = [
            r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}}}]}}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"x","functionCall":null}]}}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"AA=="}}]}}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"executableCode":{"code":"1"}}]}}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":5}]}}]}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"x","thought":"yes"}]}}]}"#,
            r#"{"candidates":[{"index":-1}]}"#,
            r#"{"candidates":[{"finishReason":1}]}"#,
            r#"{"candidates":null}"#,
            r#"{"candidates":[],"candidates":[]}"#,
            r#"{"usageMetadata":null}"#,
            r#"{"usageMetadata":[1]}"#,
            r#"[{"candidates":[]}]"#,
            r#"not json"#,
            // Arrays where objects belong.
            r#"{"candidates":[[{"parts":[{"text":"hi"}]},"MAX_TOKENS",5]]}"#,
            r#"{"candidates":[{"content":{"parts":[["hi"]]}}]}"#,
            r#"{"candidates":[{"content":[[{"text":"hi"}]]}]}"#,
            r#"{"promptFeedback":["X"]}"#,
        ];
        for gemini in left {
            assert!(
                text_answer_to_openai(gemini.as_bytes(), "m", "id", 0, &ResponseOptions::default())
                    .is_none(),
                "{gemini}"
            );
        }
        // Invalid UTF-8 in a value this path would skip unread (the general path refuses it).
        let invalid: &[u8] =
            b"{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"hi\"}]}}],\"modelVersion\":\"\xff\"}";
        assert!(
            text_answer_to_openai(invalid, "m", "id", 0, &ResponseOptions::default()).is_none()
        );
        assert!(serde_json::from_slice::<Value>(invalid).is_err());
        let links = ResponseOptions {
            search_links: true,
            ..ResponseOptions::default()
        };
        assert!(text_answer_to_openai(b"{}", "m", "id", 0, &links).is_none());
        // What the general path makes of them is its own tests' business; the fast path only
        // must not answer in its place. A sanity check that they are answers it can convert:
        let v: Value =
            json!({"candidates":[{"content":{"parts":[{"text":"x","functionCall":null}]}}]});
        let general = gemini_response_to_openai(&v, "m", "id", 0, &ResponseOptions::default());
        assert!(general["choices"][0]["message"]["tool_calls"].is_array());
    }

    /// Generated answers: every mix of part kinds the fast path takes, both options.
    #[test]
    fn generated_answers_match_the_general_path() {
        let mut rng = fastrand::Rng::with_seed(21);
        let texts = ["", "Hello", "é\u{1F600}", "a\"b\\c\n", " ", "\u{0000}x"];
        for _ in 0..2_000 {
            let candidates: Vec<Value> = (0..rng.usize(0..3))
                .map(|_| {
                    let parts: Vec<Value> = (0..rng.usize(0..4))
                        .map(|_| {
                            let mut part = json!({"text": texts[rng.usize(..texts.len())]});
                            match rng.u8(0..4) {
                                0 => part["thought"] = json!(true),
                                1 => part["thought"] = json!(false),
                                2 => part["thoughtSignature"] = json!("c2ln"),
                                _ => {}
                            }
                            part
                        })
                        .collect();
                    let mut c = json!({"content": {"parts": parts, "role": "model"}});
                    if rng.bool() {
                        c["finishReason"] =
                            json!(["STOP", "MAX_TOKENS", "SAFETY", "OTHER"][rng.usize(..4)]);
                    }
                    if rng.bool() {
                        c["index"] = json!(rng.u64(0..3));
                    }
                    c
                })
                .collect();
            let mut answer = json!({"candidates": candidates});
            if rng.bool() {
                answer["usageMetadata"] = json!({
                    "promptTokenCount": rng.u64(0..100),
                    "candidatesTokenCount": rng.u64(0..100),
                    "thoughtsTokenCount": rng.u64(0..100),
                    "totalTokenCount": rng.u64(0..400),
                });
            }
            if rng.bool() {
                answer["promptFeedback"] = json!({"blockReason": "OTHER"});
            }
            let text = answer.to_string();
            for show_thinking in [false, true] {
                let opts = ResponseOptions {
                    show_thinking,
                    ..ResponseOptions::default()
                };
                assert!(same(&text, &opts), "not taken: {text}");
            }
        }
    }
}
