//! The request shapes the filter knows: per shape, which fields are required, which optional,
//! and their types.
//!
//! Only fields listed here are checked. Anything else passes through untouched (`toolConfig`
//! sub-fields nobody listed, `cachedContent`, fields Google or OpenAI add next month), and so do
//! free-form values ([`Ty::Opaque`]): JSON schemas, function arguments and results, labels.
//! Gemini accepts both `camelCase` and `snake_case` field names, so every Gemini field has both.

use http::Method;

/// The type a field must have.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ty {
    /// A string.
    Str,
    /// A number; a string holding a finite number is turned into that number.
    Num,
    /// An integer; `100.0` and `"100"` are turned into `100`.
    Int,
    /// `true` or `false`.
    Bool,
    /// An array of strings; a lone string `"x"` becomes `["x"]` (OpenAI `stop`, Gemini
    /// `stopSequences`).
    StrList,
    /// Any JSON, left exactly as sent (nulls inside included).
    Opaque,
    /// An object with known fields.
    Obj(&'static Obj),
    /// An array whose items have this type.
    Arr(&'static Ty),
    /// A string or an array of these items (OpenAI message `content`).
    StrOrArr(&'static Ty),
    /// A string or an object of this shape (OpenAI `tool_choice`).
    StrOrObj(&'static Obj),
}

/// Whether a field must be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Req {
    Optional,
    Required,
    /// Required, and an array that must not be empty.
    NonEmpty,
}

/// One known field.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    /// The other spelling (`snake_case` of a Gemini `camelCase` name).
    pub(crate) alias: Option<&'static str>,
    pub(crate) ty: Ty,
    pub(crate) req: Req,
}

/// An object shape.
#[derive(Debug)]
pub(crate) struct Obj {
    pub(crate) fields: &'static [Field],
    /// At least one of these fields must be present (empty: no such rule).
    pub(crate) any_of: &'static [&'static str],
    /// In arrays of these objects, items that are (or became) `{}` are removed (Gemini refuses
    /// an empty `Part`, and `{"text": null}` is one once its null is gone).
    pub(crate) drop_if_empty: bool,
}

const fn opt(name: &'static str, alias: &'static str, ty: Ty) -> Field {
    Field {
        name,
        alias: if alias.is_empty() { None } else { Some(alias) },
        ty,
        req: Req::Optional,
    }
}

const fn req(name: &'static str, alias: &'static str, ty: Ty) -> Field {
    Field {
        req: Req::Required,
        ..opt(name, alias, ty)
    }
}

const fn non_empty(name: &'static str, alias: &'static str, ty: Ty) -> Field {
    Field {
        req: Req::NonEmpty,
        ..opt(name, alias, ty)
    }
}

const fn obj(fields: &'static [Field]) -> Obj {
    Obj {
        fields,
        any_of: &[],
        drop_if_empty: false,
    }
}

use Ty::{Bool, Int, Num, Opaque, Str, StrList};

// ---------------------------------------------------------------------------------------------
// Gemini (https://ai.google.dev/api/generate-content)

const BLOB: Obj = obj(&[req("mimeType", "mime_type", Str), req("data", "", Str)]);
const FILE_DATA: Obj = obj(&[
    opt("mimeType", "mime_type", Str),
    req("fileUri", "file_uri", Str),
]);
const FUNCTION_CALL: Obj = obj(&[
    opt("id", "", Str),
    req("name", "", Str),
    opt("args", "", Opaque),
]);
const FUNCTION_RESPONSE: Obj = obj(&[
    opt("id", "", Str),
    req("name", "", Str),
    opt("response", "", Opaque),
    opt("willContinue", "will_continue", Bool),
]);
const EXECUTABLE_CODE: Obj = obj(&[opt("language", "", Str), req("code", "", Str)]);
const CODE_RESULT: Obj = obj(&[opt("outcome", "", Str), opt("output", "", Str)]);

const PART: Obj = Obj {
    fields: &[
        opt("text", "", Str),
        opt("thought", "", Bool),
        opt("thoughtSignature", "thought_signature", Str),
        opt("inlineData", "inline_data", Ty::Obj(&BLOB)),
        opt("fileData", "file_data", Ty::Obj(&FILE_DATA)),
        opt("functionCall", "function_call", Ty::Obj(&FUNCTION_CALL)),
        opt(
            "functionResponse",
            "function_response",
            Ty::Obj(&FUNCTION_RESPONSE),
        ),
        opt(
            "executableCode",
            "executable_code",
            Ty::Obj(&EXECUTABLE_CODE),
        ),
        opt(
            "codeExecutionResult",
            "code_execution_result",
            Ty::Obj(&CODE_RESULT),
        ),
    ],
    any_of: &[],
    drop_if_empty: true,
};

const CONTENT: Obj = obj(&[
    opt("role", "", Str),
    req("parts", "", Ty::Arr(&Ty::Obj(&PART))),
]);

const FUNCTION_DECLARATION: Obj = obj(&[
    req("name", "", Str),
    opt("description", "", Str),
    opt("parameters", "", Opaque),
    opt("parametersJsonSchema", "parameters_json_schema", Opaque),
    opt("response", "", Opaque),
    opt("responseJsonSchema", "response_json_schema", Opaque),
    opt("behavior", "", Str),
]);

const TOOL: Obj = obj(&[opt(
    "functionDeclarations",
    "function_declarations",
    Ty::Arr(&Ty::Obj(&FUNCTION_DECLARATION)),
)]);

const FUNCTION_CALLING_CONFIG: Obj = obj(&[
    opt("mode", "", Str),
    opt(
        "allowedFunctionNames",
        "allowed_function_names",
        Ty::Arr(&Str),
    ),
]);

const TOOL_CONFIG: Obj = obj(&[opt(
    "functionCallingConfig",
    "function_calling_config",
    Ty::Obj(&FUNCTION_CALLING_CONFIG),
)]);

const SAFETY_SETTING: Obj = obj(&[req("category", "", Str), req("threshold", "", Str)]);

const THINKING_CONFIG: Obj = obj(&[
    opt("includeThoughts", "include_thoughts", Bool),
    opt("thinkingBudget", "thinking_budget", Int),
    opt("thinkingLevel", "thinking_level", Str),
]);

const GENERATION_CONFIG: Obj = obj(&[
    opt("stopSequences", "stop_sequences", StrList),
    opt("responseMimeType", "response_mime_type", Str),
    opt("responseSchema", "response_schema", Opaque),
    opt("responseJsonSchema", "response_json_schema", Opaque),
    opt("responseModalities", "response_modalities", Ty::Arr(&Str)),
    opt("candidateCount", "candidate_count", Int),
    opt("maxOutputTokens", "max_output_tokens", Int),
    opt("temperature", "", Num),
    opt("topP", "top_p", Num),
    opt("topK", "top_k", Int),
    opt("seed", "", Int),
    opt("presencePenalty", "presence_penalty", Num),
    opt("frequencyPenalty", "frequency_penalty", Num),
    opt("responseLogprobs", "response_logprobs", Bool),
    opt("logprobs", "", Int),
    opt(
        "enableEnhancedCivicAnswers",
        "enable_enhanced_civic_answers",
        Bool,
    ),
    opt("speechConfig", "speech_config", Opaque),
    opt(
        "thinkingConfig",
        "thinking_config",
        Ty::Obj(&THINKING_CONFIG),
    ),
    opt("mediaResolution", "media_resolution", Str),
]);

const GENERATE_CONTENT_FIELDS: &[Field] = &[
    non_empty("contents", "", Ty::Arr(&Ty::Obj(&CONTENT))),
    opt("systemInstruction", "system_instruction", Ty::Obj(&CONTENT)),
    opt("tools", "", Ty::Arr(&Ty::Obj(&TOOL))),
    opt("toolConfig", "tool_config", Ty::Obj(&TOOL_CONFIG)),
    opt(
        "safetySettings",
        "safety_settings",
        Ty::Arr(&Ty::Obj(&SAFETY_SETTING)),
    ),
    opt(
        "generationConfig",
        "generation_config",
        Ty::Obj(&GENERATION_CONFIG),
    ),
    opt("cachedContent", "cached_content", Str),
    opt("model", "", Str),
];

pub(crate) const GENERATE_CONTENT: Obj = obj(GENERATE_CONTENT_FIELDS);

const COUNT_TOKENS: Obj = Obj {
    fields: &[
        opt("contents", "", Ty::Arr(&Ty::Obj(&CONTENT))),
        opt(
            "generateContentRequest",
            "generate_content_request",
            Ty::Obj(&GENERATE_CONTENT),
        ),
    ],
    any_of: &["contents", "generateContentRequest"],
    drop_if_empty: false,
};

const EMBED_FIELDS_TAIL: [Field; 4] = [
    opt("taskType", "task_type", Str),
    opt("title", "", Str),
    opt("outputDimensionality", "output_dimensionality", Int),
    req("content", "", Ty::Obj(&CONTENT)),
];

const EMBED_CONTENT: Obj = obj(&[
    opt("model", "", Str),
    EMBED_FIELDS_TAIL[0],
    EMBED_FIELDS_TAIL[1],
    EMBED_FIELDS_TAIL[2],
    EMBED_FIELDS_TAIL[3],
]);

const BATCH_ITEM: Obj = obj(&[
    req("model", "", Str),
    EMBED_FIELDS_TAIL[0],
    EMBED_FIELDS_TAIL[1],
    EMBED_FIELDS_TAIL[2],
    EMBED_FIELDS_TAIL[3],
]);

const BATCH_EMBED: Obj = obj(&[non_empty("requests", "", Ty::Arr(&Ty::Obj(&BATCH_ITEM)))]);

// ---------------------------------------------------------------------------------------------
// OpenAI (https://platform.openai.com/docs/api-reference/chat/create)

const IMAGE_URL: Obj = obj(&[req("url", "", Str), opt("detail", "", Str)]);
const INPUT_AUDIO: Obj = obj(&[req("data", "", Str), req("format", "", Str)]);

const CONTENT_PART: Obj = obj(&[
    req("type", "", Str),
    opt("text", "", Str),
    opt("image_url", "", Ty::Obj(&IMAGE_URL)),
    opt("input_audio", "", Ty::Obj(&INPUT_AUDIO)),
]);

const CALLED_FUNCTION: Obj = obj(&[req("name", "", Str), opt("arguments", "", Str)]);

const TOOL_CALL: Obj = obj(&[
    opt("id", "", Str),
    opt("type", "", Str),
    req("function", "", Ty::Obj(&CALLED_FUNCTION)),
]);

const MESSAGE: Obj = obj(&[
    req("role", "", Str),
    opt("content", "", Ty::StrOrArr(&Ty::Obj(&CONTENT_PART))),
    opt("name", "", Str),
    opt("tool_calls", "", Ty::Arr(&Ty::Obj(&TOOL_CALL))),
    opt("tool_call_id", "", Str),
    opt("reasoning_content", "", Str),
    opt("refusal", "", Str),
]);

const FUNCTION_DEF: Obj = obj(&[
    req("name", "", Str),
    opt("description", "", Str),
    opt("parameters", "", Opaque),
    opt("strict", "", Bool),
]);

const OPENAI_TOOL: Obj = obj(&[
    req("type", "", Str),
    opt("function", "", Ty::Obj(&FUNCTION_DEF)),
]);

const NAMED_FUNCTION: Obj = obj(&[req("name", "", Str)]);

const TOOL_CHOICE: Obj = obj(&[
    req("type", "", Str),
    opt("function", "", Ty::Obj(&NAMED_FUNCTION)),
]);

const RESPONSE_FORMAT: Obj = obj(&[req("type", "", Str), opt("json_schema", "", Opaque)]);

const STREAM_OPTIONS: Obj = obj(&[opt("include_usage", "", Bool)]);

const CHAT_COMPLETIONS: Obj = obj(&[
    req("model", "", Str),
    non_empty("messages", "", Ty::Arr(&Ty::Obj(&MESSAGE))),
    opt("temperature", "", Num),
    opt("top_p", "", Num),
    opt("top_k", "", Int),
    opt("n", "", Int),
    opt("stream", "", Bool),
    opt("stream_options", "", Ty::Obj(&STREAM_OPTIONS)),
    opt("stop", "", StrList),
    opt("max_tokens", "", Int),
    opt("max_completion_tokens", "", Int),
    opt("presence_penalty", "", Num),
    opt("frequency_penalty", "", Num),
    opt("logit_bias", "", Opaque),
    opt("logprobs", "", Bool),
    opt("top_logprobs", "", Int),
    opt("user", "", Str),
    opt("seed", "", Int),
    opt("tools", "", Ty::Arr(&Ty::Obj(&OPENAI_TOOL))),
    opt("tool_choice", "", Ty::StrOrObj(&TOOL_CHOICE)),
    opt("parallel_tool_calls", "", Bool),
    opt("response_format", "", Ty::Obj(&RESPONSE_FORMAT)),
    opt("reasoning_effort", "", Str),
    opt("modalities", "", Ty::Arr(&Str)),
]);

const EMBEDDINGS: Obj = obj(&[
    req("model", "", Str),
    req("input", "", Opaque),
    opt("encoding_format", "", Str),
    opt("dimensions", "", Int),
    opt("user", "", Str),
]);

/// A request shape the filter knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Shape {
    /// Gemini `models/{model}:generateContent`.
    GenerateContent,
    /// Gemini `models/{model}:streamGenerateContent` (same body as `generateContent`).
    StreamGenerateContent,
    /// Gemini `models/{model}:countTokens`.
    CountTokens,
    /// Gemini `models/{model}:embedContent`.
    EmbedContent,
    /// Gemini `models/{model}:batchEmbedContents`.
    BatchEmbedContents,
    /// OpenAI `POST …/chat/completions`.
    ChatCompletions,
    /// OpenAI `POST …/embeddings`.
    Embeddings,
}

impl Shape {
    /// The shape a request targets, from its method and path; `None` for anything the filter
    /// does not guard (those requests pass through untouched).
    ///
    /// ```
    /// use gemini_balance::filter::Shape;
    /// use http::Method;
    ///
    /// assert_eq!(
    ///     Shape::of(&Method::POST, "/v1beta/models/gemini-2.0-flash:streamGenerateContent"),
    ///     Some(Shape::StreamGenerateContent)
    /// );
    /// assert_eq!(Shape::of(&Method::POST, "/hf/v1/chat/completions"), Some(Shape::ChatCompletions));
    /// assert_eq!(Shape::of(&Method::GET, "/v1beta/models"), None);
    /// ```
    pub fn of(method: &Method, path: &str) -> Option<Shape> {
        if method != Method::POST {
            return None;
        }
        let path = path.trim_end_matches('/');
        if path.ends_with("/chat/completions") {
            return Some(Shape::ChatCompletions);
        }
        if path.ends_with("/embeddings") && !path.contains("/models/") {
            return Some(Shape::Embeddings);
        }
        let after_models = &path[path.rfind("/models/")? + "/models/".len()..];
        let method_name = match after_models.find(':') {
            Some(i) => &after_models[i + 1..],
            None => {
                let lower = after_models.to_ascii_lowercase();
                let i = lower.find("%3a")?;
                &after_models[i + 3..]
            }
        };
        match method_name {
            "generateContent" => Some(Shape::GenerateContent),
            "streamGenerateContent" => Some(Shape::StreamGenerateContent),
            "countTokens" => Some(Shape::CountTokens),
            "embedContent" => Some(Shape::EmbedContent),
            "batchEmbedContents" => Some(Shape::BatchEmbedContents),
            _ => None,
        }
    }

    /// The shape of a request's operation (`None` for operations the filter does not guard).
    pub(crate) fn of_operation(operation: crate::ext::Operation) -> Option<Shape> {
        use crate::ext::Operation;
        Some(match operation {
            Operation::GenerateContent => Shape::GenerateContent,
            Operation::StreamGenerateContent => Shape::StreamGenerateContent,
            Operation::CountTokens => Shape::CountTokens,
            Operation::EmbedContent => Shape::EmbedContent,
            Operation::BatchEmbedContents => Shape::BatchEmbedContents,
            Operation::ChatCompletions => Shape::ChatCompletions,
            Operation::Embeddings => Shape::Embeddings,
            _ => return None,
        })
    }

    /// `true` for OpenAI shapes (their errors use OpenAI's format).
    pub fn is_openai(self) -> bool {
        matches!(self, Shape::ChatCompletions | Shape::Embeddings)
    }

    /// A short name for logs and messages (`generateContent`, `chat/completions`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Shape::GenerateContent => "generateContent",
            Shape::StreamGenerateContent => "streamGenerateContent",
            Shape::CountTokens => "countTokens",
            Shape::EmbedContent => "embedContent",
            Shape::BatchEmbedContents => "batchEmbedContents",
            Shape::ChatCompletions => "chat/completions",
            Shape::Embeddings => "embeddings",
        }
    }

    pub(crate) fn schema(self) -> &'static Obj {
        match self {
            Shape::GenerateContent | Shape::StreamGenerateContent => &GENERATE_CONTENT,
            Shape::CountTokens => &COUNT_TOKENS,
            Shape::EmbedContent => &EMBED_CONTENT,
            Shape::BatchEmbedContents => &BATCH_EMBED,
            Shape::ChatCompletions => &CHAT_COMPLETIONS,
            Shape::Embeddings => &EMBEDDINGS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_shapes() {
        let post = Method::POST;
        let cases = [
            (
                "/v1beta/models/gemini-2.0-flash:generateContent",
                Some(Shape::GenerateContent),
            ),
            (
                "/gemini/v1beta/models/x%3AstreamGenerateContent",
                Some(Shape::StreamGenerateContent),
            ),
            ("/v1/models/x%3acountTokens", Some(Shape::CountTokens)),
            (
                "/v1beta/models/text-embedding-004:embedContent",
                Some(Shape::EmbedContent),
            ),
            (
                "/v1beta/models/text-embedding-004:batchEmbedContents",
                Some(Shape::BatchEmbedContents),
            ),
            ("/v1/chat/completions", Some(Shape::ChatCompletions)),
            ("/openai/v1/chat/completions/", Some(Shape::ChatCompletions)),
            ("/v1/embeddings", Some(Shape::Embeddings)),
            ("/v1beta/models/x:predict", None),
            ("/v1beta/models/x", None),
            ("/v1/images/generations", None),
        ];
        for (path, shape) in cases {
            assert_eq!(Shape::of(&post, path), shape, "{path}");
        }
        assert_eq!(Shape::of(&Method::GET, "/v1/chat/completions"), None);
    }
}
