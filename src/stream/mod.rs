//! Streaming: pseudo streaming and the stream optimizer, both built on [`crate::sse`].
//!
//! - [`pseudo`]: [`PseudoStreamLayer`](pseudo::PseudoStreamLayer), which answers a streaming
//!   request at once and replays the non-streaming answer as events.
//! - [`optimizer`]: [`StreamOptimizerLayer`](optimizer::StreamOptimizerLayer), which re-emits
//!   long text deltas of real or pseudo streams as small, evenly timed pieces.
//!
//! `docs/streaming.md` describes both layers in full.
//!
//! # Example
//!
//! The optimizer goes outside the pseudo-stream layer, so that it smooths faked streams too:
//!
//! ```
//! use bytes::Bytes;
//! use gemini_balance::stream::optimizer::{OptimizerParams, StreamOptimizerLayer};
//! use gemini_balance::stream::pseudo::PseudoStreamLayer;
//! use gemini_balance::sse::decode_all;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
//!     let answer = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m",
//!         "choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}]}"#;
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(answer))))
//! });
//! let service = ServiceBuilder::new()
//!     .layer(StreamOptimizerLayer::new(OptimizerParams::enabled()))
//!     .layer(PseudoStreamLayer::new())
//!     .service(upstream);
//!
//! let req = Request::post("/v1/chat/completions").body(Full::new(Bytes::from(
//!     r#"{"model":"m","messages":[{"role":"user","content":"Hello"}],"stream":true}"#,
//! )))?;
//! let bytes = service.oneshot(req).await?.into_body().collect().await?.to_bytes();
//! let events = decode_all(&bytes);
//! // "H", "i", "!" one by one, the chunk with the finish reason, then [DONE].
//! assert_eq!(events.len(), 5);
//! assert!(events[4].is_done());
//! # Ok(())
//! # }
//! ```

pub mod optimizer;
pub mod pseudo;
