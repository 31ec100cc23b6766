//! Usage recording: one [`RequestRecord`] per client request, with every upstream attempt and
//! the tokens the answer reported.
//!
//! [`UsageLayer`] times the exchange and taps the response body as it flows (JSON or SSE, Gemini
//! `usageMetadata` or OpenAI `usage`; bounded memory, no chunk held back). When the body ends,
//! or the client goes away (the record says which), it hands the record to a
//! [`UsageSink`](crate::store::UsageSink). Inner layers add what only they know through
//! request extensions: [`KeyRotation`](crate::keys::KeyRotation) logs every attempt (key,
//! status, failure class, latency, the upstream's error message, redacted) into an
//! [`AttemptLog`], [`Retry`](crate::retry::Retry) leaves the request body it buffered in a
//! [`RequestBodyCapture`] when asked to, and the OpenAI conversion leaves the upstream's token
//! count in an [`UpstreamUsage`] (an OpenAI stream shows it to the client only when asked).
//!
//! The record is what the client saw. A layer above that answers the client itself
//! ([`PseudoStream`](crate::stream::pseudo::PseudoStream), `openai::OpenAi`)
//! has the last word: `Usage` hands it the finished record, and it amends it (an error event
//! after a pseudo stream's `200`, a local `502` in place of an answer it could not convert)
//! before the record reaches the sink; a record is never lost on the way.
//!
//! The layer is body-agnostic (it works for gRPC too, recording the call's `grpc-status` from
//! the headers or trailers in [`RequestRecord::grpc_status`]); it reads response bodies only to
//! find token usage, and that part is **HTTP/JSON only**: tokens are read from JSON and SSE
//! answers, not from protobuf ones.
//!
//! # Example
//!
//! ```
//! use gemini_balance::keys::{KeyPool, KeyRotationLayer};
//! use gemini_balance::retry::RetryLayer;
//! use gemini_balance::store::MemoryStore;
//! use gemini_balance::usage::UsageLayer;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use bytes::Bytes;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemoryStore::new();
//! let pool = KeyPool::builder().keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv"]).build()?;
//! let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
//!     let body = r#"{"candidates":[],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":7,"totalTokenCount":12}}"#;
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
//! });
//! let service = ServiceBuilder::new()
//!     .layer(UsageLayer::new(store.clone()))
//!     .layer(RetryLayer::new())
//!     .layer(KeyRotationLayer::new(pool))
//!     .service(upstream);
//!
//! let req = Request::post("/v1beta/models/gemini-2.0-flash:generateContent")
//!     .body(Full::new(Bytes::from("{}")))?;
//! let res = service.oneshot(req).await?;
//! res.into_body().collect().await?; // the record is written when the body ends
//!
//! let record = &store.records()[0];
//! assert_eq!(record.model.as_deref(), Some("gemini-2.0-flash"));
//! assert_eq!((record.tokens.prompt, record.tokens.candidates), (5, 7));
//! assert_eq!(record.attempt_log.len(), 1);
//! # Ok(())
//! # }
//! ```

mod attempts;
mod body;
mod extract;
pub mod future;
mod handoff;
mod layer;
mod record;
pub(crate) mod sink;

pub use self::attempts::{AttemptLog, RequestBodyCapture, UpstreamUsage};
pub use self::body::UsageBody;
#[cfg(feature = "middleware")]
pub(crate) use self::body::{Head, Pending};
#[cfg(feature = "openai")]
pub(crate) use self::extract::gemini_usage_from;
pub use self::extract::{gemini_usage, usage_from_json, UsageTap};
#[cfg(feature = "middleware")]
pub(crate) use self::future::Unanswered;
pub(crate) use self::handoff::{HandoffGuard, RecordHandoff, Settled};
pub use self::layer::{Usage, UsageLayer};
pub use self::record::{
    AttemptRecord, ClientId, Completion, InvalidRequestId, RequestId, RequestRecord, TokenUsage,
};
