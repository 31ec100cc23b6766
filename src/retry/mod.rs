//! One retry loop for the whole stack.
//!
//! [`RetryLayer`] buffers the request body once (bounded: over the limit the client gets a 413 in
//! the API's own error format), then re-drives the inner stack for each attempt, so each retry
//! passes through [`KeyRotation`](crate::keys::KeyRotation) again and gets another key when the
//! [`FailureClass`](crate::classify::FailureClass) says so.
//!
//! - A rate-limited or rejected key says nothing about the request and costs no time: the next
//!   attempt uses another key at once, and that *key failover* spends neither an attempt of
//!   [`max_attempts`](RetryLayer::max_attempts) nor the retry budget. Each key gets one such
//!   chance per request, and [`max_key_failovers`](RetryLayer::max_key_failovers) caps them.
//! - Real retries (5xx, overload, timeouts, transport errors) count towards `max_attempts` and
//!   wait: exponential backoff with full jitter and a cap. A short `Retry-After` / `RetryInfo`
//!   on a failure that is not the key's (503 overloaded) is honoured; a long one ends the
//!   retries and the client sees the upstream's answer.
//! - A retry budget ([`TpsBudget`](tower::retry::budget::TpsBudget)) keeps a dying upstream
//!   from being hit with a multiple of its traffic.
//! - Once the response head goes back to the client nothing is retried; a client that goes
//!   away drops the future and ends the loop.
//! - When attempts run out, the client gets the last upstream status and body unchanged, plus
//!   an [`ATTEMPTS_HEADER`] with the number of upstream attempts (key failovers included). When
//!   no key is left to retry with, the client also gets the last upstream answer (not a generic
//!   "no key"), with a `Retry-After` saying when a key is back if the upstream gave none. A
//!   final 429 or 503 whose delay is known (`RetryInfo`) always carries it as `Retry-After`.
//!
//! Each attempt's request body is rebuilt from the buffered bytes with `From<Bytes>` (axum's,
//! reqwest's, `Full<Bytes>`, ...); for a body without it, give [`RetryLayer::replay_with`] its
//! constructor: around a tonic `Channel`, `RetryLayer::new().replay_with(tonic::body::Body::new)`
//! (see [`MakeBody`]).
//!
//! The names [`Retry`] and [`RetryLayer`] are also tower's (`tower::retry`), on purpose: this is
//! the same idea, specialised (tower's takes a `Policy` and clones requests; this one buffers
//! the body and asks the classifier). The two cannot be mixed up silently: tower has no prelude,
//! `RetryLayer::new` takes a policy there and nothing here, and glob-importing both is an
//! ambiguity error. To keep tower's loop, give it this crate's decisions with
//! [`ClassifiedPolicy`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use gemini_balance::keys::{KeyPool, KeyRotationLayer};
//! use gemini_balance::retry::RetryLayer;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = KeyPool::builder()
//!     .keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv", "AIzaSyB1234567890abcdefghijklmnopqrstuv"])
//!     .build()?;
//! let bad = "AIzaSyA1234567890abcdefghijklmnopqrstuv";
//!
//! // The first key is rate limited; the retry moves to the second.
//! let upstream = service_fn(move |req: Request<Full<Bytes>>| async move {
//!     let status = if req.headers()["x-goog-api-key"] == bad {
//!         StatusCode::TOO_MANY_REQUESTS
//!     } else {
//!         StatusCode::OK
//!     };
//!     let mut res = Response::new(Full::new(Bytes::from("{}")));
//!     *res.status_mut() = status;
//!     Ok::<_, std::convert::Infallible>(res)
//! });
//!
//! let service = ServiceBuilder::new()
//!     .layer(RetryLayer::new().max_attempts(3).base_delay(Duration::from_millis(10)))
//!     .layer(KeyRotationLayer::new(pool))
//!     .service(upstream);
//!
//! for _ in 0..2 {
//!     let req = Request::post("/v1beta/models/gemini-2.0-flash:generateContent")
//!         .body(Full::new(Bytes::from("{}")))?;
//!     let res = service.clone().oneshot(req).await?;
//!     assert_eq!(res.status(), StatusCode::OK);
//! }
//! # Ok(())
//! # }
//! ```

mod backoff;
mod decision;
mod engine;
pub mod future;
mod layer;
mod make_body;
mod policy;

pub use self::backoff::Backoff;
#[cfg(feature = "middleware")]
pub(crate) use self::decision::Config;
pub use self::decision::DEFAULT_MAX_KEY_FAILOVERS;
#[cfg(feature = "middleware")]
pub(crate) use self::engine::{Answer, Engine};
pub use self::layer::{Retry, RetryLayer, ATTEMPTS_HEADER, DEFAULT_MAX_BODY_BYTES};
pub use self::make_body::{FromBytes, MakeBody};
pub use self::policy::ClassifiedPolicy;
