//! Tower middleware that spreads Gemini (and OpenAI-compatible) API traffic over a pool of API
//! keys, survives quota errors, and accounts for every request.
//!
//! Each layer is its own [`Service`](tower_service::Service) wrapper and works alone; together
//! they form a pipeline, outermost first:
//!
//! ```text
//! client ─▶ NormalizeUrl     (optional, server side) fixes common client path mistakes
//!           │                 (`/v1/v1/chat/completions`, a missing `/v1beta`) before routing
//!           StreamOptimizer  (optional, off by default) re-emits long text deltas of any
//!           │                 event stream as small, evenly timed pieces
//!           PseudoStream     answers a streaming request at once with SSE, keeps it alive,
//!           │                 asks the stack below for the non-streaming answer, replays it
//!           Usage            times the exchange, taps the answer for tokens, one record each
//!           ParamFilter      JSON bodies: drops nulls, coerces, drops configured fields,
//!           │                 names every bad field in one 400
//!           OpenAi           (optional) serves OpenAI's chat and embeddings routes from the
//!           │                 Gemini stack below
//!           ForwardHeaders   (gateways) only the headers Gemini reads go on: no cookies,
//!           │                 forwarding headers or client User-Agent
//!           Retry            buffers the body once, re-drives the stack per attempt
//!           KeyRotation      picks a key per attempt, injects it, reports the outcome
//!           Decode           (client side) asks for gzip, decodes compressed answers
//!           upstream         your HTTP client (client side) or your own service (server side)
//! ```
//!
//! The modules: [`stream::pseudo`], [`stream::optimizer`] and [`sse`] (SSE writing and
//! decoding), [`usage`], [`filter`], [`client::forward_headers`], [`retry`], [`keys`],
//! [`decode`], [`normalize_url`], [`auth`] (client tokens, in front of it all),
//! [`whole_answer`] (non-streamed answers sent whole, below `Usage`); `openai` (feature
//! `openai`) puts an OpenAI face on the stack (between `ParamFilter` and `ForwardHeaders`).
//!
//! Every decision about what a response means comes from one [`classify::Classifier`]; the
//! retry layer, the key pool, tower-http's `TraceLayer` and tower's retry policy all read the
//! same [`classify::FailureClass`].
//!
//! [`stack::GeminiStack`] stacks the layers you pick in this order, each slot optional; a stack
//! built by hand in another order logs a warning when a layer sees that it is below one it
//! belongs above (`docs/architecture.md` has what breaks for each swap).
//!
//! # Server side: layers around axum routes
//!
//! ```
//! use axum::{routing::post, Router};
//! use gemini_balance::{keys::KeyPool, retry::RetryLayer, stack::GeminiStack};
//! use gemini_balance::filter::ParamFilterLayer;
//! use gemini_balance::stream::{optimizer::StreamOptimizerLayer, pseudo::PseudoStreamLayer};
//! use gemini_balance::{store::MemoryStore, usage::UsageLayer};
//!
//! # fn build() -> Result<Router, Box<dyn std::error::Error>> {
//! let pool = KeyPool::builder()
//!     .keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv"])
//!     .build()?;
//! let app = Router::new()
//!     // The handler forwards the request's own `Uri` and reads `Extension<ext::RequestInfo>`,
//!     // never axum's `Path` (captured before the layers rewrite the request).
//!     .route(
//!         "/v1beta/models/{action}",
//!         // The layers on the `POST` handler only: other paths and methods (a scanner's
//!         // `GET /wp-login.php`) get axum's 404 / 405 without leasing a key or writing a
//!         // usage record (`Router::layer` would wrap the fallback too).
//!         post(|| async { "your handler sees the pool's key" }).route_layer(
//!             GeminiStack::new()
//!                 .optimizer(StreamOptimizerLayer::default()) // off unless given parameters
//!                 .pseudo_stream(PseudoStreamLayer::new())
//!                 .usage(UsageLayer::new(MemoryStore::new()))
//!                 .filter(ParamFilterLayer::new())
//!                 .retry(RetryLayer::new())
//!                 .keys(pool),
//!         ),
//!     );
//! # Ok(app)
//! # }
//! ```
//!
//! # Client side: layers around an HTTP client
//!
//! With the `reqwest` feature, [`client::ReqwestService`] makes a `reqwest::Client` a tower
//! service of `http::Request`s, so the same layers wrap your outgoing calls
//! (`GeminiStack::new().retry(..).keys(pool).decode(DecodeLayer::new())`; see `README.md`);
//! with `upstream`, `client::Upstream` is the bundled proxy's own upstream (hyper, timeouts,
//! per-key outbound proxies), and [`client::GatewayErrorsLayer`] answers transport failures as
//! `502`/`504`, so a stack serves an axum route as it is.
//! With the `middleware` feature, the same pool, classifier and usage store plug into a
//! `reqwest_middleware::ClientWithMiddleware` ([`client::middleware`]). The body-agnostic layers
//! (`KeyRotation`, `Retry`, `Usage`) also wrap a tonic `Channel` or server. `docs/client.md` and
//! the examples `client`, `embed_axum` and `tonic` show each.
//!
//! # Feature flags
//!
//! The layers, the key pool, the classifier and [`store::MemoryStore`] are always built.
//!
//! - `openai` (default): [`openai`], OpenAI ↔ Gemini conversion and the OpenAI-compatible face.
//! - `grpc` (default): gRPC calls understood by the layers: `grpc-status` in headers and
//!   trailers classified with its details ([`classify::Classifier::classify_grpc`]), a gRPC
//!   answer when no key is usable, the status in usage records. Without it a gRPC call is judged
//!   as plain HTTP (a failed call counts as a success), and `KeyRotation` warns once.
//! - `upstream`: [`client::Upstream`](client::upstream), the upstream service over hyper's pooled
//!   client, with connect, first-byte and idle timeouts and outbound proxies chosen per key
//!   (brings in `reqwest` for the proxied routes).
//! - `sqlite` (default): [`store::SqliteStore`], usage log, key state and settings in an
//!   embedded SQLite database (compiled in; no system library needed).
//! - `postgres`, `mysql`: `store::SqlStore`, the same on PostgreSQL or MySQL/MariaDB (sqlx), so
//!   that several instances share one database (`docs/scale-out.md`).
//! - `metrics`: `metrics`, Prometheus metrics: a layer that counts and times requests
//!   (the gateway's own overhead apart from the upstream's time), tokens, keys by state and the
//!   store's queue, in the text exposition format (`prometheus-client`).
//! - `reqwest`: [`client::ReqwestService`], the tower adapter around `reqwest::Client`.
//! - `middleware`: [`client::middleware`], key rotation, classified retries and usage as
//!   reqwest-middleware middleware, and a reqwest-retry `RetryableStrategy`. Implies `reqwest`;
//!   `reqwest-middleware` is its former name, still accepted.
//!
//! [`prelude`] imports the common types at once.
#![cfg_attr(docsrs, feature(doc_cfg))]
// Input never panics the library: no `unwrap()` outside tests.
#![warn(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api_error;
pub mod auth;
pub mod body;
mod buffer;
pub mod classify;
pub mod client;
pub mod decode;
pub mod ext;
pub mod filter;
mod fingerprint;
pub mod keys;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod normalize_url;
#[cfg(feature = "openai")]
#[cfg_attr(docsrs, doc(cfg(feature = "openai")))]
pub mod openai;
mod order;
pub mod prelude;
pub mod quota;
mod read_then_call;
pub mod redact;
pub mod retry;
#[cfg(feature = "openai")]
#[cfg_attr(docsrs, doc(cfg(feature = "openai")))]
pub mod rules;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod sql_error;
pub mod sse;
pub mod stack;
pub mod store;
pub mod stream;
pub mod usage;
pub mod whole_answer;

/// Alias for a type-erased error type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(all(doctest, feature = "reqwest"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../docs/architecture.md")]
pub struct ArchitectureDoctests;
