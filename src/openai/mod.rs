//! OpenAI ↔ Gemini conversion, as pure functions over `serde_json::Value`.
//!
//! The proxy's OpenAI-compatible routes are these functions around the Gemini pipeline; they
//! live in the library so that anyone can offer an OpenAI face to Gemini. Requests:
//! [`chat_request_to_gemini`], [`embeddings_request_to_gemini`]. Answers:
//! [`gemini_response_to_openai`], [`OpenAiStream`] (a real stream, chunk by chunk),
//! [`gemini_embeddings_to_openai`], [`openai_model_list`]. Model names with Gemini-Balance's
//! `-search` / `-image` / `-non-thinking` suffixes: [`ModelRules`]. What a request gets by
//! default (built-in tools, a thinking config only for models that think, see
//! [`model_thinks`]), on the OpenAI route and the native one:
//! [`ChatOptions::shape_gemini_request`]. Search sources appended to grounded answers
//! (`SHOW_SEARCH_LINK`): [`SearchLinksLayer`]. [`OpenAiLayer`] puts them
//! together: an OpenAI-compatible face (`chat/completions`, `embeddings`) on a Gemini stack.
//! The same rules on stacks that pass requests on unconverted (Gemini's own routes, Gemini's
//! OpenAI-compatible endpoint): [`ModelRulesLayer`](crate::rules::ModelRulesLayer).
//! Image URLs in chat messages, fetched without reaching private addresses (feature
//! `reqwest`): [`images::UrlFetcher`].
//!
//! **HTTP/JSON only**: these convert JSON bodies; nothing here applies to gRPC.
//!
//! # Example
//!
//! ```
//! use serde_json::json;
//! use gemini_balance::openai::{chat_request_to_gemini, gemini_response_to_openai, ChatOptions, ResponseOptions};
//!
//! let chat = chat_request_to_gemini(&json!({
//!     "model": "gemini-2.5-flash",
//!     "messages": [{"role": "user", "content": "Hi"}],
//! }), &ChatOptions::default()).unwrap();
//! // ... send chat.body to models/{chat.model.upstream}:generateContent ...
//! let gemini = json!({"candidates": [{"content": {"parts": [{"text": "Hello!"}]}, "finishReason": "STOP"}]});
//! let answer = gemini_response_to_openai(&gemini, &chat.model.requested, "chatcmpl-1", 0, &ResponseOptions::default());
//! assert_eq!(answer["choices"][0]["message"]["content"], "Hello!");
//! ```

mod body;
mod defaults;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod images;
mod layer;
mod models;
mod request;
mod response;
mod schema;
mod search_links;
mod typed;

pub use self::body::OpenAiBody;
pub use self::defaults::model_thinks;
pub use self::layer::{
    gemini_error_to_openai, FetchFuture, FetchedImage, ImageFetcher, OpenAi, OpenAiLayer,
};
pub(crate) use self::models::{default_safety_settings, splice_default_safety_settings};
pub use self::models::{openai_model_list, ModelRules, ResolvedModel};
pub use self::request::{
    chat_request_to_gemini, embeddings_request_to_gemini, ChatOptions, ConvertError, GeminiChat,
    GeminiEmbeddings, RemoteImage,
};
pub use self::response::{
    finish_reason, gemini_embeddings_to_openai, gemini_response_to_openai,
    openai_usage_from_gemini, OpenAiStream, ResponseOptions,
};
pub use self::schema::clean_schema;
pub use self::search_links::{
    add_search_links, ResponseFuture as SearchLinksFuture, SearchLinks, SearchLinksBody,
    SearchLinksLayer, SearchLinksStream, ShowSearchLinks,
};
