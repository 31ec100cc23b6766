//! The key pool and [`KeyRotationLayer`]: one key per attempt, chosen per model, with every
//! outcome reported back.
//!
//! [`KeyPool`] holds the keys as secrets ([`ApiKey`] prints only `AIza…x4Fq`) and the state of
//! each: active, cooling down per model until an instant, or disabled with a reason; consecutive
//! failures; totals. [`KeyRotationLayer`] picks a key for each attempt, strips the client's own
//! credentials, injects the key, classifies the answer with the shared
//! [`Classifier`](crate::classify::Classifier) and reports it to the pool.
//!
//! What each failure does to a key is the table in `docs/classification.md`: a 429 cools the
//! key down for that model (until the daily reset for a per-day quota), a rejected key is
//! disabled at once, server errors and timeouts count towards `max_failures`, client errors
//! never count, and a success resets the count.
//!
//! The layer is body-agnostic, so it also wraps a tonic `Channel` or server: the key goes in
//! `x-goog-api-key` metadata, and a gRPC answer is judged by its `grpc-status` and the details
//! in `grpc-status-details-bin` (`RetryInfo`, `QuotaFailure`, `ErrorInfo`). It judges at the
//! response head, which is where a failed unary call's status is (a "trailers-only" answer); a
//! status that only arrives in the trailers of a streamed answer is not reported to the pool.
//! When no key is usable, a gRPC call is answered in gRPC (`RESOURCE_EXHAUSTED` with a
//! `RetryInfo`, or `UNAVAILABLE`). See `docs/client.md`.
//!
//! A key taken out stays out until something brings it back: [`probe::KeyProbe`] asks the
//! upstream one cheap question with a key and reports the answer, and re-checks the keys that
//! are out on an interval.
//!
//! # Example
//!
//! ```
//! use gemini_balance::keys::{KeyPool, KeyRotationLayer};
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = KeyPool::builder()
//!     .keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv", "AIzaSyB1234567890abcdefghijklmnopqrstuv"])
//!     .build()?;
//!
//! // Stands in for the upstream: it sees the pool's key, never the client's.
//! let upstream = service_fn(|req: Request<Full<Bytes>>| async move {
//!     assert!(req.headers().contains_key("x-goog-api-key"));
//!     assert!(!req.uri().query().unwrap_or("").contains("client-token"));
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("{}"))))
//! });
//!
//! let service = ServiceBuilder::new()
//!     .layer(KeyRotationLayer::new(pool.clone()))
//!     .service(upstream);
//!
//! let req = Request::post("/v1beta/models/gemini-2.0-flash:generateContent?key=client-token")
//!     .body(Full::new(Bytes::from("{}")))?;
//! let res = service.oneshot(req).await?;
//! assert!(res.status().is_success());
//! assert!(res.extensions().get::<gemini_balance::keys::KeyId>().is_some());
//! # Ok(())
//! # }
//! ```

mod api_key;
mod attempt;
mod daily_reset;
mod entry;
pub mod future;
mod layer;
mod pool;
pub mod probe;
pub mod shared;
mod status;

use std::fmt;

pub use self::api_key::{looks_like_gemini_key, ApiKey, InvalidKey};
pub(crate) use self::attempt::strip_client_credentials;
#[cfg(feature = "middleware")]
pub(crate) use self::attempt::{unreadable_error_answer, Attempt, UpstreamRequest, Verdict};
pub use self::daily_reset::next_daily_reset;
#[cfg(feature = "middleware")]
pub(crate) use self::layer::no_key_response;
pub use self::layer::{KeyPlacement, KeyRotation, KeyRotationLayer};
pub(crate) use self::pool::WeakKeyPool;
pub use self::pool::{KeyLease, KeyPool, KeyPoolBuilder, DEFAULT_MAX_FAILURES};
pub use self::status::{
    AddReport, DisabledReason, KeyObserver, KeySnapshot, KeyStatus, LastError, ModelCooldown,
    NoKey, Strategy,
};
pub use crate::fingerprint::{mask, KeyId};

/// A key list entry that could not be parsed; names the position, never the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidKeyAt {
    /// Zero-based position in the list.
    pub position: usize,
    /// What is wrong with it.
    pub error: InvalidKey,
}

impl fmt::Display for InvalidKeyAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key #{}: {}", self.position + 1, self.error)
    }
}

impl std::error::Error for InvalidKeyAt {}
