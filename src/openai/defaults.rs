//! What a Gemini request gets that it did not ask for, as Gemini-Balance gave it: the built-in
//! tools (Google Search for `-search` models, code execution, URL context) and a thinking
//! config (a `-non-thinking` budget, `THINKING_BUDGET_MAP`, `includeThoughts`).
//!
//! A thinking config goes only to a model that thinks ([`ChatOptions::thinks`]): Gemini answers
//! `400 INVALID_ARGUMENT` ("thinking_config is not supported") to any `thinkingConfig` sent to
//! one that does not, such as `gemini-2.0-flash`, so a default must never add one there.
//!
//! Built-in tools are left out of requests that declare functions or continue a function call
//! (Gemini refuses the mix) and of JSON-mode requests (`responseMimeType: application/json`,
//! which Gemini refuses next to tools); the client's own tools are never removed.
//!
//! # Example
//!
//! ```
//! use serde_json::json;
//! use gemini_balance::openai::{ChatOptions, ModelRules};
//!
//! let opts = ChatOptions {
//!     rules: ModelRules { search_models: vec!["gemini-2.5-flash".into()], ..Default::default() },
//!     show_thinking: true,
//!     thinking_budgets: [("gemini-2.5-flash".to_owned(), -1)].into(),
//!     ..Default::default()
//! };
//! let model = opts.rules.resolve("gemini-2.5-flash-search");
//! let mut body = json!({"contents": [{"parts": [{"text": "news?"}]}]});
//! opts.shape_gemini_request(&model, &mut body);
//! assert_eq!(body["tools"], json!([{"googleSearch": {}}]));
//! assert_eq!(body["generationConfig"]["thinkingConfig"],
//!            json!({"thinkingBudget": -1, "includeThoughts": true}));
//!
//! // gemini-2.0-flash does not think: no thinking config, whatever the settings.
//! let mut body = json!({"contents": [{"parts": [{"text": "hi"}]}]});
//! opts.shape_gemini_request(&opts.rules.resolve("gemini-2.0-flash-non-thinking"), &mut body);
//! assert!(body.get("generationConfig").is_none());
//! ```

use serde_json::{json, Map, Value};

use super::models::ResolvedModel;
use super::request::ChatOptions;

/// Whether a Gemini model thinks, by its name: the Gemini 2.5 models and every later version
/// (`gemini-2.5-flash`, `gemini-2.5-flash-lite`, `gemini-2.5-pro`, `gemini-3-pro-preview`,
/// `gemini-3.1-…`), and the `gemini-flash-latest`-style aliases (which name 2.5 or later
/// models), except the ones that do not take a thinking config: speech (`-tts`), 2.x image
/// generation (`gemini-2.5-flash-image`), embedding, and Live API (`-live`, `native-audio`)
/// models. Gemini 2.0 and 1.x models, Gemma and anything else not named `gemini-…` do not.
///
/// Models this rule does not know can be declared in `THINKING_MODELS` or `THINKING_BUDGET_MAP`
/// ([`ChatOptions::thinks`]).
///
/// ```
/// use gemini_balance::openai::model_thinks;
///
/// for thinks in ["gemini-2.5-flash", "models/gemini-2.5-pro", "gemini-2.5-flash-lite",
///                "gemini-3-pro-preview", "gemini-flash-latest"] {
///     assert!(model_thinks(thinks), "{thinks}");
/// }
/// for not in ["gemini-2.0-flash", "gemini-1.5-pro", "gemini-2.5-flash-image-preview",
///             "gemini-2.5-flash-preview-tts", "gemini-embedding-001", "text-embedding-004",
///             "gemma-3-27b-it", "gemini-exp-1206"] {
///     assert!(!model_thinks(not), "{not}");
/// }
/// ```
pub fn model_thinks(model: &str) -> bool {
    let name = model
        .trim()
        .trim_start_matches("models/")
        .to_ascii_lowercase();
    let Some(rest) = name.strip_prefix("gemini-") else {
        return false;
    };
    let excluded = ["tts", "embedding", "native-audio", "-live"]
        .iter()
        .any(|word| rest.contains(word));
    if excluded {
        return false;
    }
    if ["flash-latest", "flash-lite-latest", "pro-latest"].contains(&rest) {
        return true;
    }
    let version = rest.split('-').next().unwrap_or("");
    let (major, minor) = version.split_once('.').unwrap_or((version, "0"));
    let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
        return false;
    };
    match major {
        0 | 1 => false,
        // 2.5 image generation does not think; 3's image models do.
        2 => minor >= 5 && !rest.contains("image"),
        _ => true,
    }
}

impl ChatOptions {
    /// Whether `model` thinks: by its name ([`model_thinks`]), or declared so in
    /// `THINKING_MODELS` ([`ModelRules::thinking_models`](super::ModelRules)) or
    /// `THINKING_BUDGET_MAP` ([`ChatOptions::thinking_budgets`]). Only a model that thinks gets
    /// a thinking config by default, or from OpenAI's `reasoning_effort`.
    pub fn thinks(&self, model: &ResolvedModel) -> bool {
        model_thinks(&model.upstream)
            || self.rules.thinking_models.contains(&model.upstream)
            || self.thinking_budgets.contains_key(&model.upstream)
            || self.thinking_budgets.contains_key(&model.requested)
    }

    /// The thinking config a request that set none gets, `None` when it gets none. Only for a
    /// model that [thinks](Self::thinks): `-non-thinking` → the lowest setting the model takes
    /// (budget 0; 128 for 2.5 Pro and `thinkingLevel: "low"` for Gemini 3 models, which cannot
    /// all turn thinking off); else the model's `THINKING_BUDGET_MAP` entry
    /// (looked up by the real model, then by the requested name). `includeThoughts` is asked
    /// for with `SHOW_THINKING_PROCESS` unless the budget is 0: on the OpenAI route for every
    /// model that thinks (the thoughts go to `reasoning_content`, which clients show apart);
    /// on the native routes, as Gemini-Balance did, only with a budget map entry, since native
    /// clients read thought parts in their answer.
    pub(super) fn default_thinking(&self, model: &ResolvedModel, openai: bool) -> Option<Value> {
        if !self.thinks(model) {
            return None;
        }
        let (thinking, from_map) = if model.non_thinking {
            (Some(lowest_thinking(model)), false)
        } else {
            let budget = self
                .thinking_budgets
                .get(&model.upstream)
                .or_else(|| self.thinking_budgets.get(&model.requested))
                .copied();
            (budget.map(Thinking::Budget), budget.is_some())
        };
        let thoughts =
            self.show_thinking && !thinking.is_some_and(Thinking::is_off) && (openai || from_map);
        thinking_config(thinking, thoughts)
    }

    /// The built-in tools a request gets: Google Search when asked for (a `-search` model, or
    /// OpenAI's `googleSearch` function), code execution with `TOOLS_CODE_EXECUTION_ENABLED`
    /// (not for `-search`, `-thinking`/`-non-thinking` or image models, nor next to media, as
    /// Gemini-Balance did), URL context for `URL_CONTEXT_MODELS`. The caller leaves them out of
    /// function-calling and JSON-mode requests.
    pub(super) fn builtin_tools(
        &self,
        model: &ResolvedModel,
        google_search: bool,
        has_media: bool,
    ) -> Vec<Value> {
        let mut tools = Vec::new();
        if google_search {
            tools.push(json!({ "googleSearch": {} }));
        }
        let code_execution = self.code_execution
            && !model.search
            && !model.requested.contains("-thinking")
            && !answers_with_images(model)
            && !has_media;
        if code_execution {
            tools.push(json!({ "codeExecution": {} }));
        }
        if self.url_context_models.contains(&model.upstream) {
            tools.push(json!({ "urlContext": {} }));
        }
        tools
    }

    /// Whether [`shape_gemini_request`](Self::shape_gemini_request) may change a
    /// `generateContent` body for `model`: when it cannot, a caller can forward the body
    /// without parsing it.
    pub fn shapes_gemini_request(&self, model: &ResolvedModel) -> bool {
        model.search
            || image_output(model)
            || !self.builtin_tools(model, false, false).is_empty()
            || self.default_thinking(model, false).is_some()
    }

    /// Shapes a Gemini-native `generateContent` (or `streamGenerateContent`) body as
    /// Gemini-Balance did, adding only what the client did not set itself:
    ///
    /// - the built-in tools ([`ChatOptions::code_execution`], URL context, Google Search for
    ///   `-search`), unless the body declares functions, has a function call in its contents,
    ///   or asks for JSON (`responseMimeType: application/json`); a tool the client already
    ///   has is not added twice;
    /// - `-image` (and models named `…-image-generation`): text and image output, and no
    ///   `systemInstruction` (image models refuse it);
    /// - a thinking config, when the body has none, for a model that [thinks](Self::thinks):
    ///   the lowest budget for `-non-thinking`, else the model's `THINKING_BUDGET_MAP` entry,
    ///   with `includeThoughts` under `SHOW_THINKING_PROCESS`.
    ///
    /// Safety settings are added apart ([`ModelRules`](super::ModelRules) adds them).
    pub fn shape_gemini_request(&self, model: &ResolvedModel, body: &mut Value) {
        let Value::Object(map) = body else {
            return;
        };
        let json_mode = ["generationConfig", "generation_config"]
            .iter()
            .any(|config| {
                ["responseMimeType", "response_mime_type"]
                    .iter()
                    .any(|field| {
                        map.get(*config)
                            .and_then(|c| c.get(*field))
                            .and_then(Value::as_str)
                            == Some("application/json")
                    })
            });
        let tools_of_client: Vec<&Value> = map
            .get("tools")
            .map(|t| match t {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            })
            .unwrap_or_default();
        let declares = |names: &[&str]| {
            tools_of_client
                .iter()
                .any(|t| names.iter().any(|n| t.get(*n).is_some()))
        };
        let declares_functions = declares(&["functionDeclarations", "function_declarations"]);
        let parts = || {
            map.get("contents")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("parts").and_then(Value::as_array))
                .flatten()
        };
        let calls_functions =
            parts().any(|p| p.get("functionCall").is_some() || p.get("function_call").is_some());
        let has_media =
            parts().any(|p| p.get("inlineData").is_some() || p.get("inline_data").is_some());
        if !json_mode && !declares_functions && !calls_functions {
            let added: Vec<Value> = self
                .builtin_tools(model, model.search, has_media)
                .into_iter()
                .filter(|tool| {
                    let (camel, snake) = match tool.as_object().and_then(|t| t.keys().next()) {
                        Some(k) if k == "googleSearch" => ("googleSearch", "google_search"),
                        Some(k) if k == "codeExecution" => ("codeExecution", "code_execution"),
                        _ => ("urlContext", "url_context"),
                    };
                    !declares(&[camel, snake])
                })
                .collect();
            if !added.is_empty() {
                let tools = match map.remove("tools") {
                    Some(Value::Array(items)) => items,
                    Some(single) if !single.is_null() => vec![single],
                    _ => Vec::new(),
                };
                map.insert(
                    "tools".to_owned(),
                    Value::Array(tools.into_iter().chain(added).collect()),
                );
            }
        }
        let has_thinking = ["generationConfig", "generation_config"]
            .iter()
            .any(|config| {
                map.get(*config).is_some_and(|c| {
                    c.get("thinkingConfig").is_some() || c.get("thinking_config").is_some()
                })
            });
        let thinking = (!has_thinking)
            .then(|| self.default_thinking(model, false))
            .flatten();
        let image = image_output(model);
        if image || thinking.is_some() {
            let key = if map.contains_key("generation_config") {
                "generation_config"
            } else {
                "generationConfig"
            };
            let config = map.entry(key).or_insert_with(|| json!({}));
            if let Value::Object(config) = config {
                if image {
                    config.remove("response_modalities");
                    config.insert("responseModalities".to_owned(), json!(["TEXT", "IMAGE"]));
                }
                if let Some(thinking) = thinking {
                    config.insert("thinkingConfig".to_owned(), thinking);
                }
            }
        }
        if image {
            map.remove("systemInstruction");
            map.remove("system_instruction");
        }
    }
}

/// Whether the request asks for image output (text and image modalities, no system
/// instruction): an `-image` variant, or a model whose name ends in `-image-generation`
/// (`gemini-2.0-flash-preview-image-generation`), as Gemini-Balance had it.
pub(super) fn image_output(model: &ResolvedModel) -> bool {
    model.image || model.upstream.ends_with("-image-generation")
}

/// Whether the model answers with images: an `-image` variant, or a model named so
/// (`gemini-2.5-flash-image-preview`).
pub(super) fn answers_with_images(model: &ResolvedModel) -> bool {
    model.image || model.upstream.contains("-image")
}

/// How much a model thinks: a budget of tokens (Gemini 2.5; `-1` dynamic, `0` off), or a
/// level (Gemini 3, `thinkingLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Thinking {
    Budget(i64),
    Level(&'static str),
}

impl Thinking {
    /// Whether thinking is off (no thoughts to show then).
    pub(super) fn is_off(self) -> bool {
        self == Thinking::Budget(0)
    }
}

/// The lowest thinking a model takes (`-non-thinking`, `reasoning_effort` `none`/`minimal`):
/// a budget of 0 turns thinking off where the model allows it (2.5 Flash, 2.5 Flash-Lite);
/// 2.5 Pro cannot turn it off and takes 128 at least; Gemini 3 models are set by level, and
/// Gemini 3 Pro cannot turn thinking off either: `low` (a level every Gemini 3 model takes;
/// Gemini refuses a budget of 0 for the models that always think).
pub(super) fn lowest_thinking(model: &ResolvedModel) -> Thinking {
    let name = model
        .upstream
        .trim()
        .trim_start_matches("models/")
        .to_ascii_lowercase();
    let major = name
        .strip_prefix("gemini-")
        .and_then(|rest| rest.split(['-', '.']).next())
        .and_then(|major| major.parse::<u32>().ok());
    if major.is_some_and(|major| major >= 3) {
        Thinking::Level("low")
    } else if name.contains("2.5-pro") || name == "gemini-pro-latest" {
        // `gemini-pro-latest` names 2.5 Pro or a later Pro: none turns thinking off, and
        // every one takes a budget of 128 (a level would be refused by 2.5 Pro).
        Thinking::Budget(128)
    } else {
        Thinking::Budget(0)
    }
}

/// `{thinkingBudget | thinkingLevel, includeThoughts}`, `None` when both are absent.
pub(super) fn thinking_config(thinking: Option<Thinking>, include_thoughts: bool) -> Option<Value> {
    let mut config = Map::new();
    match thinking {
        Some(Thinking::Budget(budget)) => {
            config.insert("thinkingBudget".to_owned(), json!(budget));
        }
        Some(Thinking::Level(level)) => {
            config.insert("thinkingLevel".to_owned(), json!(level));
        }
        None => {}
    }
    if include_thoughts {
        config.insert("includeThoughts".to_owned(), json!(true));
    }
    (!config.is_empty()).then_some(Value::Object(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::ModelRules;

    fn options() -> ChatOptions {
        ChatOptions {
            rules: ModelRules {
                search_models: vec!["gemini-2.5-flash".into()],
                image_models: vec!["gemini-2.0-flash-exp".into()],
                thinking_models: vec!["my-thinker".into()],
                filtered_models: vec![],
            },
            show_thinking: true,
            thinking_budgets: [("gemini-2.5-flash".to_owned(), 2048)].into(),
            code_execution: true,
            url_context_models: vec!["gemini-2.5-flash".into()],
            ..Default::default()
        }
    }

    fn shaped(model: &str, mut body: Value) -> Value {
        let opts = options();
        opts.shape_gemini_request(&opts.rules.resolve(model), &mut body);
        body
    }

    #[test]
    fn thinking_only_for_models_that_think() {
        let prompt = json!({"contents": [{"parts": [{"text": "x"}]}]});
        let thinking = |model: &str| {
            shaped(model, prompt.clone())["generationConfig"]["thinkingConfig"].clone()
        };
        // A budget map entry: its budget, and the thoughts shown.
        assert_eq!(
            thinking("gemini-2.5-flash"),
            json!({"thinkingBudget": 2048, "includeThoughts": true})
        );
        // A thinking model without an entry: nothing on the native routes.
        assert_eq!(thinking("gemini-2.5-pro"), Value::Null);
        assert_eq!(
            thinking("gemini-2.5-pro-non-thinking"),
            json!({"thinkingBudget": 128})
        );
        assert_eq!(
            thinking("gemini-2.5-flash-non-thinking"),
            json!({"thinkingBudget": 0})
        );
        assert_eq!(
            thinking("gemini-2.5-flash-lite-non-thinking"),
            json!({"thinkingBudget": 0})
        );
        // Gemini 3: by level, the lowest every one of them takes; thinking stays on, so the
        // thoughts are shown with SHOW_THINKING_PROCESS (on the native routes only with a
        // budget map entry).
        for model in [
            "gemini-3-pro-preview",
            "gemini-3-flash-preview",
            "gemini-3.1-pro",
        ] {
            assert_eq!(
                thinking(&format!("{model}-non-thinking")),
                json!({"thinkingLevel": "low"}),
                "{model}"
            );
        }
        assert_eq!(
            thinking("gemini-pro-latest-non-thinking"),
            json!({"thinkingBudget": 128})
        );
        // Declared in THINKING_MODELS: thinks although its name says nothing.
        assert_eq!(
            thinking("my-thinker-non-thinking"),
            json!({"thinkingBudget": 0})
        );
        // Models that do not think get nothing, -non-thinking or not.
        for model in [
            "gemini-2.0-flash",
            "gemini-2.0-flash-non-thinking",
            "text-embedding-004",
        ] {
            assert!(
                shaped(model, prompt.clone())
                    .pointer("/generationConfig/thinkingConfig")
                    .is_none(),
                "{model}"
            );
        }
        // The client's own config wins, in either spelling.
        let own = json!({"generation_config": {"thinking_config": {"thinking_budget": 5}}});
        assert_eq!(
            shaped("gemini-2.5-flash", own.clone())["generation_config"],
            own["generation_config"]
        );
    }

    #[test]
    fn builtin_tools_as_gemini_balance_added_them() {
        let prompt = json!({"contents": [{"parts": [{"text": "x"}]}]});
        assert_eq!(
            shaped("gemini-2.5-flash", prompt.clone())["tools"],
            json!([{"codeExecution": {}}, {"urlContext": {}}])
        );
        // -search: the search tool, no code execution.
        assert_eq!(
            shaped("gemini-2.5-flash-search", prompt.clone())["tools"],
            json!([{"googleSearch": {}}, {"urlContext": {}}])
        );
        // No code execution for -non-thinking, nor next to media.
        assert_eq!(
            shaped("gemini-2.5-flash-non-thinking", prompt.clone())["tools"],
            json!([{"urlContext": {}}])
        );
        let media = json!({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": "AA=="}}]}]});
        assert_eq!(shaped("gemini-2.0-flash", media)["tools"], Value::Null);
        // The client's tools are kept, and not repeated.
        let own = json!({"contents": [], "tools": [{"code_execution": {}}]});
        assert_eq!(
            shaped("gemini-2.5-flash", own)["tools"],
            json!([{"code_execution": {}}, {"urlContext": {}}])
        );
        // Functions, a function call in the contents, or JSON mode: nothing added.
        for body in [
            json!({"contents": [], "tools": [{"functionDeclarations": [{"name": "f"}]}]}),
            json!({"contents": [{"role": "model", "parts": [{"functionCall": {"name": "f"}}]}]}),
            json!({"contents": [], "generationConfig": {"responseMimeType": "application/json"}}),
        ] {
            let out = shaped("gemini-2.5-flash-search", body.clone());
            assert_eq!(out["tools"], body["tools"], "{body}");
        }
    }

    #[test]
    fn image_variants_answer_with_images() {
        let body = json!({"systemInstruction": {"parts": [{"text": "s"}]},
            "generationConfig": {"temperature": 0.1}});
        let out = shaped("gemini-2.0-flash-exp-image", body);
        assert!(out.get("systemInstruction").is_none());
        assert_eq!(
            out["generationConfig"],
            json!({"temperature": 0.1, "responseModalities": ["TEXT", "IMAGE"]})
        );
        assert!(
            out.get("tools").is_none(),
            "no code execution for image models"
        );
        // A model named so asks for images too, as in Gemini-Balance.
        let body = json!({"systemInstruction": {"parts": [{"text": "s"}]}, "contents": []});
        let out = shaped("gemini-2.0-flash-preview-image-generation", body);
        assert!(out.get("systemInstruction").is_none());
        assert_eq!(
            out["generationConfig"]["responseModalities"],
            json!(["TEXT", "IMAGE"])
        );
    }

    #[test]
    fn nothing_to_shape_is_known_without_a_body() {
        let opts = ChatOptions::default();
        assert!(!opts.shapes_gemini_request(&opts.rules.resolve("gemini-2.5-flash")));
        let opts = options();
        assert!(
            opts.shapes_gemini_request(&opts.rules.resolve("gemini-2.0-flash")),
            "code execution"
        );
        let opts = ChatOptions {
            thinking_budgets: [("gemini-2.5-pro".to_owned(), 10)].into(),
            ..Default::default()
        };
        assert!(opts.shapes_gemini_request(&opts.rules.resolve("gemini-2.5-pro")));
        assert!(!opts.shapes_gemini_request(&opts.rules.resolve("gemini-2.5-flash")));
    }
}
