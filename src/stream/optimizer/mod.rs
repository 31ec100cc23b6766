//! The stream optimizer: long text deltas of real or pseudo streams re-emitted as small pieces
//! with small delays, so chat UIs show smooth typing (the Python server's `STREAM_OPTIMIZER_*`).
//!
//! [`StreamOptimizerLayer`] wraps successful `text/event-stream` responses, whether the
//! upstream streams for real or [`PseudoStreamLayer`](super::pseudo::PseudoStreamLayer) fakes
//! the stream (put the optimizer outside it). It is **off by default**; its
//! [`OptimizerParams`] are fixed once the layer is built (to change them while serving, build
//! a new stack and swap it in: `docs/architecture.md`, "Changing settings while serving").
//!
//! For each event with one Gemini candidate or one OpenAI choice carrying text (Gemini text
//! parts, thoughts included; OpenAI `reasoning_content` and `content`), the text of `L`
//! characters is re-emitted as pieces: one character per event when `L` is under the long-text
//! threshold, fixed-size pieces otherwise, with the delay of [`OptimizerParams::delay_for`]
//! between pieces. Each piece carries only its text; usage, tool calls, finish reasons and any
//! other part are sent once, on the last piece (the original event minus the text already
//! sent). The first piece goes out as soon as its event arrives: the first byte is never
//! delayed. Every other event (comments, keep-alives, errors, `[DONE]`, several candidates,
//! events over 1 MiB) passes through byte for byte.
//!
//! **HTTP/JSON only**: it rewrites `text/event-stream` answers; gRPC streams pass through.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use gemini_balance::stream::optimizer::{OptimizerParams, StreamOptimizerLayer};
//! use gemini_balance::sse::decode_all;
//! use http::{header, HeaderValue, Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
//!     let event = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hello\"}]},\"finishReason\":\"STOP\"}]}\r\n\r\n";
//!     let mut res = Response::new(Full::new(Bytes::from(event)));
//!     res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
//!     Ok::<_, std::convert::Infallible>(res)
//! });
//! let optimizer = StreamOptimizerLayer::new(OptimizerParams::enabled()); // the default is off
//! let service = ServiceBuilder::new().layer(optimizer).service(upstream);
//!
//! let started = tokio::time::Instant::now();
//! let res = service.oneshot(Request::new(Full::new(Bytes::new()))).await?;
//! let bytes = res.into_body().collect().await?.to_bytes();
//! let events = decode_all(&bytes);
//! assert_eq!(events.len(), 5); // "H", "e", "l", "l", "o"
//! let last: serde_json::Value = events[4].json()?;
//! assert_eq!(last["candidates"][0]["finishReason"], "STOP"); // only on the last piece
//! assert_eq!(started.elapsed(), Duration::from_millis(4 * 24));
//! # Ok(())
//! # }
//! ```

mod body;
pub mod future;
mod layer;
mod params;
mod rechunk;

pub use self::body::{OptimizedBody, MAX_OPTIMIZED_EVENT_BYTES};
pub use self::layer::{StreamOptimizer, StreamOptimizerLayer};
pub use self::params::OptimizerParams;
