//! Optional-parameter filtering for JSON request bodies.
//!
//! [`ParamFilterLayer`] reads the body of the requests it knows (Gemini `generateContent`,
//! `streamGenerateContent`, `countTokens`, `embedContent`, `batchEmbedContents`; OpenAI
//! `chat/completions` and `embeddings`) and, before anything reaches the upstream:
//!
//! - drops `null` members at every level of the known structure, so an SDK sending
//!   `"temperature": null` or `"stop": null` never causes an upstream 400 (free-form values,
//!   such as function arguments and JSON schemas, are left exactly as sent);
//! - coerces values where it is lossless and expected: `"0.7"` → `0.7` for numbers, `100.0` or
//!   `"100"` → `100` for integers, a lone `stop` / `stopSequences` string → `["…"]`;
//! - removes fields the target does not accept only where a [`DropRule`] says so (per model,
//!   per route); **every other unknown field passes through untouched** (`toolConfig`,
//!   `cachedContent`, `seed`, ...);
//! - refuses invalid input with **one** 400 in the API's own error format, naming every
//!   offending field and why (Gemini: `google.rpc.Status` with a `BadRequest` detail per field;
//!   OpenAI: `{"error":{"message","type","param","code"}}`). The upstream is not called.
//!
//! Bodies labelled as something else than JSON, routes it does not know and non-`POST`
//! requests pass through untouched and unread. A body labelled JSON (or unlabelled) that does
//! not parse goes on to the upstream on Gemini routes (Gemini answers the syntax error in its
//! own format), and is refused with a 400 in OpenAI's format on OpenAI routes (whose upstream
//! is Gemini too, and would answer in Gemini's). A body that needs no change is forwarded byte for byte; a rewritten one
//! gets a corrected `Content-Length`. On OpenAI routes the body's `model` is also put in the
//! request extensions as [`ModelName`](crate::ext::ModelName) (unless one is there), so key
//! cooldowns are tracked per model. The shapes, coercions and error format are described in
//! `docs/filter.md`.
//!
//! **HTTP/JSON only**: the layer reads JSON request bodies; gRPC (protobuf) calls and any other
//! content pass through unread.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use gemini_balance::filter::{DropRule, ParamFilterLayer};
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The upstream echoes the body it received.
//! let upstream = service_fn(|req: Request<Full<Bytes>>| async move {
//!     let body = req.into_body().collect().await?.to_bytes();
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::new(body)))
//! });
//! let service = ServiceBuilder::new()
//!     .layer(ParamFilterLayer::new().drop(DropRule::new(["generationConfig.frequencyPenalty"]).model("gemma-*")))
//!     .service(upstream);
//!
//! let req = Request::post("/v1beta/models/gemma-3-27b-it:generateContent").body(Full::new(Bytes::from(
//!     r#"{"contents":[{"parts":[{"text":"hi"}]}],
//!         "generationConfig":{"temperature":null,"maxOutputTokens":100.0,"frequencyPenalty":0.5},
//!         "toolConfig":{"functionCallingConfig":{"mode":"AUTO"}}}"#,
//! )))?;
//! let res = service.clone().oneshot(req).await?;
//! let seen: serde_json::Value = serde_json::from_slice(&res.into_body().collect().await?.to_bytes())?;
//! assert_eq!(seen["generationConfig"], serde_json::json!({"maxOutputTokens": 100}));
//! assert_eq!(seen["toolConfig"]["functionCallingConfig"]["mode"], "AUTO"); // forwarded as sent
//!
//! // Invalid input: one 400 naming every bad field, and the upstream is not called.
//! let req = Request::post("/v1/chat/completions").body(Full::new(Bytes::from(
//!     r#"{"model":"gemini-2.0-flash","temperature":"warm","n":1.5}"#,
//! )))?;
//! let res = service.oneshot(req).await?;
//! assert_eq!(res.status(), StatusCode::BAD_REQUEST);
//! let error: serde_json::Value = serde_json::from_slice(&res.into_body().collect().await?.to_bytes())?;
//! let message = error["error"]["message"].as_str().unwrap_or_default();
//! assert!(message.contains("`messages` is required"));
//! assert!(message.contains("`temperature` must be a number"));
//! assert!(message.contains("`n` must be an integer, not 1.5"));
//! # Ok(())
//! # }
//! ```

mod check;
mod drop_list;
mod first_pass;
pub mod future;
mod layer;
mod reject;
#[cfg(feature = "openai")]
pub(crate) use self::reject::not_json;
mod schema;

pub use self::check::{filter_body, Filtered, Violation, ViolationKind};
pub use self::drop_list::{DropList, DropRule};
pub use self::layer::{ParamFilter, ParamFilterLayer, DEFAULT_MAX_BODY_BYTES};
pub use self::schema::Shape;

/// Whether [`ParamFilterLayer`] reads a body with these headers: no `Content-Type`, or one that
/// says JSON (`application/json`, `…+json`, `text/json`). Other bodies pass through unread, so
/// a service that must see every body the filter does not (the proxy's default safety
/// settings) asks here rather than repeating the rule.
pub fn reads_body(headers: &http::HeaderMap) -> bool {
    crate::buffer::is_json_or_unlabelled(headers)
}
