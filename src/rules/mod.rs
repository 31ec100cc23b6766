//! Gemini-Balance's model rules as one layer: model-name suffixes, blocked models, and what a
//! Gemini request gets by default.
//!
//! [`ModelRulesLayer`] takes the same [`ChatOptions`](crate::openai::ChatOptions) as the
//! OpenAI conversion ([`OpenAiLayer`](crate::openai::OpenAiLayer)), so a server that offers
//! both faces applies one set of rules to both. On each request it:
//!
//! - **refuses blocked models** ([`ModelRules::filtered_models`](crate::openai::ModelRules),
//!   `FILTERED_MODELS`) with a `400` in the route's error format ([`ApiFlavor`](crate::api_error::ApiFlavor))
//!   naming the model, before anything is sent inward (no key is used). The model is looked
//!   for wherever the upstream could read it: the [`ModelName`](crate::ext::ModelName)
//!   extension, the path (`…/models/{model}…`, `%`-escapes decoded) and, for a `POST` without a
//!   model in its path (OpenAI's routes, passed through to Gemini's OpenAI-compatible
//!   endpoint), every top-level `"model"` of its JSON body, whatever its `Content-Type` says.
//!   Suffixed names count as their base. It fails closed: such a body that is not a JSON
//!   object is refused (`415` when labelled as something else than JSON, else `400`);
//! - **understands suffixes** (`-search`, `-image`, `-non-thinking`, see
//!   [`ModelRules::resolve`](crate::openai::ModelRules::resolve)) on Gemini's own routes: a
//!   `POST` for `gemini-2.5-flash-search` goes to `gemini-2.5-flash`, with the Google Search
//!   tool (and the [`ShowSearchLinks`](crate::openai::ShowSearchLinks) mark when
//!   [`show_search_link`](crate::openai::ChatOptions::show_search_link) is on);
//! - gives **`generateContent` and `streamGenerateContent` bodies their defaults**, only where
//!   the client set nothing itself: built-in tools, a thinking config (only for models that
//!   think), image output for `-image`
//!   ([`ChatOptions::shape_gemini_request`](crate::openai::ChatOptions::shape_gemini_request)),
//!   and the default [safety settings](crate::openai::ChatOptions::safety_settings). A body
//!   that needs only the safety settings gets them without a parse when it does not mention
//!   them (they are spliced in before the closing brace).
//!   The `Content-Length` is set to the new body's;
//! - **rewrites model lists** (a successful `GET …/models`): blocked models hidden, and in
//!   Gemini's shape the derived variants (`X-search`, …) added after their base
//!   ([`ModelRules::expand_model_list`](crate::openai::ModelRules::expand_model_list)); in
//!   OpenAI's shape (`data`) blocked models hidden. A list that cannot be read is a `502`.
//!
//! A body is read (up to [`max_body_bytes`](ModelRulesLayer::max_body_bytes)) only when one
//! of these needs it; with no blocked models and no defaults the layer costs a path scan.
//!
//! **Where it goes**: outermost, above usage accounting and the pseudo stream, so that a
//! refused request uses no key and writes no usage record, usage records and key cooldowns
//! name the real model, and the search-links layer below sees the mark. The OpenAI conversion
//! applies the same rules as it converts: on a stack with [`OpenAiLayer`](crate::openai::OpenAiLayer),
//! this layer is not needed.
//!
//! **Changing the rules while serving**: the layer's rules are fixed once it is built. Build a
//! new stack with the new rules and swap it in (an `arc_swap::ArcSwap` of the service, as the
//! bundled proxy does for every setting): requests in flight finish with the stack they
//! started with, and nothing is ever half-applied.
//!
//! **HTTP/JSON only**: the body rules read JSON bodies; a gRPC request is only checked for a
//! blocked model (by its `ModelName` or path).
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use gemini_balance::openai::{ChatOptions, ModelRules};
//! use gemini_balance::rules::ModelRulesLayer;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use serde_json::{json, Value};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), gemini_balance::BoxError> {
//! // Stands in for Gemini: answers with the path and body it got.
//! let upstream = service_fn(|req: Request<Full<Bytes>>| async move {
//!     let path = req.uri().path().to_owned();
//!     let body: Value = serde_json::from_slice(&req.into_body().collect().await?.to_bytes())?;
//!     let seen = json!({"path": path, "body": body}).to_string();
//!     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Response::new(Full::new(Bytes::from(seen))))
//! });
//! let rules = ModelRulesLayer::new(ChatOptions {
//!     rules: ModelRules {
//!         search_models: vec!["gemini-2.5-flash".into()],
//!         filtered_models: vec!["gemini-2.5-pro".into()],
//!         ..Default::default()
//!     },
//!     safety_settings: Some(json!([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "OFF"}])),
//!     ..Default::default()
//! });
//! let service = ServiceBuilder::new().layer(rules).service(upstream);
//!
//! // A suffix model: the real model upstream, with the search tool and the safety settings.
//! let req = Request::post("/v1beta/models/gemini-2.5-flash-search:generateContent")
//!     .body(Full::new(Bytes::from(r#"{"contents":[{"parts":[{"text":"news?"}]}]}"#)))?;
//! let res = service.clone().oneshot(req).await?;
//! let seen: Value = serde_json::from_slice(&res.into_body().collect().await?.to_bytes())?;
//! assert_eq!(seen["path"], "/v1beta/models/gemini-2.5-flash:generateContent");
//! assert_eq!(seen["body"]["tools"], json!([{"googleSearch": {}}]));
//! assert_eq!(seen["body"]["safetySettings"][0]["threshold"], "OFF");
//!
//! // A blocked model: refused before anything is sent.
//! let req = Request::post("/v1beta/models/gemini-2.5-pro:generateContent")
//!     .body(Full::new(Bytes::from("{}")))?;
//! assert_eq!(service.oneshot(req).await?.status(), StatusCode::BAD_REQUEST);
//! # Ok(())
//! # }
//! ```

mod layer;

pub use self::layer::{ModelRulesLayer, ModelRulesService, ResponseFuture};
