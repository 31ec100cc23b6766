//! Tower middleware that spreads Gemini (and OpenAI-compatible) API traffic over a pool of API
//! keys, survives quota errors, and accounts for every request.
//!
//! Each layer is its own [`Service`](tower_service::Service) wrapper and works alone; together
//! they form a pipeline, outermost first:
//!
//! ```text
//! client ─▶ Retry          buffers the body once, re-drives the stack per attempt
//!           KeyRotation    picks a key per attempt, injects it, reports the outcome
//!           upstream       your HTTP client (client side) or your own service (server side)
//! ```
//!
//! Every decision about what a response means comes from one [`classify::Classifier`]; the
//! retry layer, the key pool, tower-http's `TraceLayer` and tower's retry policy all read the
//! same [`classify::FailureClass`].
//!
//! # Server side: layers around an axum `Router`
//!
//! ```
//! use axum::{routing::post, Router};
//! use gemini_balance::{keys::{KeyPool, KeyRotationLayer}, retry::RetryLayer};
//! use tower::ServiceBuilder;
//!
//! # fn build() -> Result<Router, Box<dyn std::error::Error>> {
//! let pool = KeyPool::builder()
//!     .keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv"])
//!     .build()?;
//! let app = Router::new()
//!     .route("/v1beta/models/{action}", post(|| async { "your handler sees the pool's key" }))
//!     .layer(
//!         ServiceBuilder::new()
//!             .layer(RetryLayer::new())
//!             .layer(KeyRotationLayer::new(pool)),
//!     );
//! # Ok(app)
//! # }
//! ```
//!
//! # Client side: layers around an HTTP client
//!
//! With the `reqwest` feature, [`client::ReqwestService`] makes a `reqwest::Client` a tower
//! service of `http::Request`s, so the same layers wrap your outgoing calls (see `README.md`).
//!
//! # Feature flags
//!
//! - `reqwest`: [`client::ReqwestService`], the tower adapter around `reqwest::Client`.
//! - `sqlite` (default): [`store::SqliteStore`], usage log, key state and settings in an
//!   embedded SQLite database (compiled in; no system library needed).
#![cfg_attr(docsrs, feature(doc_cfg))]
// Input never panics the library: no `unwrap()` outside tests.
#![warn(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api_error;
pub mod body;
pub mod classify;
#[cfg(feature = "reqwest")]
pub mod client;
pub mod ext;
pub mod keys;
pub mod redact;
pub mod retry;
pub mod store;
pub mod usage;

/// Alias for a type-erased error type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[cfg(all(doctest, feature = "reqwest"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
