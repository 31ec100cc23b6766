//! Pseudo ("fake") streaming: a streaming request answered at once with an event stream, kept
//! alive while the inner stack fetches the non-streaming answer, which is then replayed as the
//! events of the client's protocol.
//!
//! [`PseudoStreamLayer`] recognises a streaming request (Gemini
//! `models/{model}:streamGenerateContent?alt=sse`; OpenAI `…/chat/completions` with
//! `"stream": true`) and, when pseudo streaming is on for it ([`PseudoStreamLayer::enabled`],
//! then a per-model predicate):
//!
//! 1. answers at once with `200`, `content-type: text/event-stream`, `cache-control: no-cache`;
//! 2. sends the inner stack the equivalent non-streaming request (`:generateContent` without
//!    `alt=sse`; `"stream": false` without `stream_options`), marked with [`PseudoStreamed`] and
//!    described by its updated [`RequestInfo`](crate::ext::RequestInfo) (a handler below
//!    forwards the request's `Uri` or reads that, never axum's `Path`, which still names
//!    `streamGenerateContent`);
//! 3. while waiting, writes a [`KeepAlive`] every interval (default 5 s): an SSE comment on
//!    OpenAI routes, an empty line on Gemini routes (google-genai's stream reader fails on
//!    comment lines), or an empty chunk of the protocol without any `finish_reason`;
//! 4. then writes the whole answer: for Gemini, the `GenerateContentResponse` as one
//!    `data: {…}\r\n\r\n` event (every part kept: thoughts, answer, function calls); for OpenAI,
//!    `chat.completion.chunk`s (`role` first, `reasoning_content`, `content`, `tool_calls` with
//!    their `index`), a chunk with the `finish_reason`, the `usage` chunk when
//!    `stream_options.include_usage` asked for it, then `data: [DONE]`.
//!
//! A failure after the `200` went out (an error status from the inner stack, a service error, an
//! answer cut off or too large) becomes one error event in the protocol's own shape
//! (`data: {"error":{"code","message","status"}}` for Gemini, `data: {"error":{"message","type",
//! "param","code"}}` for OpenAI, which both official SDKs raise as API errors), then the stream
//! ends cleanly, without `[DONE]`. The upstream call runs inside the response body: a client
//! that disconnects drops it, which cancels the call.
//!
//! A [`Usage`](crate::usage::Usage) below hands its record to this layer, which amends it with
//! what the client saw (the client's route; after an error event: status `200`, completion
//! `error_event`, not a success) before it goes to the sink, so the record is the same wherever
//! `Usage` sits.
//!
//! Requests that are not streaming, Gemini streams without `alt=sse` (a streamed JSON array),
//! other routes and other methods pass through untouched. `docs/streaming.md` has the details.
//!
//! **HTTP/JSON only**: it recognises Gemini REST and OpenAI JSON requests and writes SSE; gRPC
//! calls pass through untouched.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use gemini_balance::stream::pseudo::PseudoStreamLayer;
//! use gemini_balance::sse::decode_all;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The inner stack only ever sees the non-streaming request, and takes 12 s to answer.
//! let upstream = service_fn(|req: Request<Full<Bytes>>| async move {
//!     assert_eq!(req.uri().path(), "/v1beta/models/gemini-2.5-flash:generateContent");
//!     tokio::time::sleep(Duration::from_secs(12)).await;
//!     let answer = r#"{"candidates":[{"content":{"role":"model","parts":[
//!         {"text":"Thinking…","thought":true},{"text":"Hello!"}]},"finishReason":"STOP"}]}"#;
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(answer))))
//! });
//! let service = ServiceBuilder::new()
//!     .layer(PseudoStreamLayer::new().keep_alive_interval(Duration::from_secs(5)))
//!     .service(upstream);
//!
//! let req = Request::post("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
//!     .body(Full::new(Bytes::from(r#"{"contents":[{"parts":[{"text":"Hi"}]}]}"#)))?;
//! let res = service.oneshot(req).await?; // at once
//! assert_eq!(res.headers()["content-type"], "text/event-stream");
//!
//! let bytes = res.into_body().collect().await?.to_bytes();
//! // Two keep-alives (t = 5 s, 10 s), then the answer with both parts.
//! assert!(bytes.starts_with(b"\r\n\r\ndata: {"));
//! let events = decode_all(&bytes);
//! assert_eq!(events.len(), 1);
//! let chunk: serde_json::Value = events[0].json()?;
//! assert_eq!(chunk["candidates"][0]["content"]["parts"][1]["text"], "Hello!");
//! # Ok(())
//! # }
//! ```

mod body;
mod events;
pub mod future;
mod layer;

pub use self::body::PseudoStreamBody;
pub use self::events::KeepAlive;
pub use self::layer::{
    PseudoStream, PseudoStreamLayer, DEFAULT_KEEP_ALIVE_INTERVAL, DEFAULT_MAX_ANSWER_BYTES,
    DEFAULT_MAX_REQUEST_BYTES, MIN_KEEP_ALIVE_INTERVAL,
};
pub use crate::ext::PseudoStreamed;
