//! The layers of this crate as [reqwest-middleware] middleware, for programs that already build
//! a `ClientWithMiddleware` (feature `middleware`).
//!
//! - [`KeyRotationMiddleware`]: a key per attempt from a [`KeyPool`](crate::keys::KeyPool),
//!   the outcome reported back (the same pool, cooldowns and counts as the tower layer).
//! - [`RetryMiddleware`]: the retry loop of [`RetryLayer`](crate::retry::RetryLayer), with its
//!   settings and budget, honouring short `Retry-After` / `RetryInfo` waits.
//! - [`ClassifiedStrategy`] and [`KeyFailoverPolicy`]: for those who keep reqwest-retry, a
//!   `RetryableStrategy` that answers from the one [`Classifier`](crate::classify::Classifier),
//!   and a `RetryPolicy` wrapper that moves to another key at once after a key's failure.
//! - [`UsageMiddleware`]: one usage record per call into the same
//!   [`UsageSink`](crate::store::UsageSink) as the tower [`UsageLayer`](crate::usage::UsageLayer).
//!
//! Order them as the tower layers: usage outermost, then retry, then key rotation. The model is
//! read from the Gemini path, or from a [`ModelName`](crate::ext::ModelName) request extension
//! (`RequestBuilder::with_extension`).
//!
//! [reqwest-middleware]: https://docs.rs/reqwest-middleware
//!
//! # Example
//!
//! ```no_run
//! use gemini_balance::client::{KeyRotationMiddleware, RetryMiddleware, UsageMiddleware};
//! use gemini_balance::keys::KeyPool;
//! use gemini_balance::store::MemoryStore;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let pool = KeyPool::builder()
//!     .keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv", "AIzaSyB1234567890abcdefghijklmnopqrstuv"])
//!     .build()?;
//! let store = MemoryStore::new();
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(UsageMiddleware::new(store.clone()))
//!     .with(RetryMiddleware::new())
//!     .with(KeyRotationMiddleware::new(pool.clone()))
//!     .build();
//!
//! let res = client
//!     .post("https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent")
//!     .header("content-type", "application/json")
//!     .body(r#"{"contents":[{"parts":[{"text":"Hello"}]}]}"#)
//!     .send()
//!     .await?;
//! println!("{}: {}", res.status(), res.text().await?);
//! println!("tokens: {:?}", store.records()[0].tokens);
//! # Ok(())
//! # }
//! ```

mod keys;
mod retry;
mod usage;

use bytes::Bytes;
use reqwest::{Request, Response, ResponseBuilderExt, Url};

pub use self::keys::KeyRotationMiddleware;
pub use self::retry::{ClassifiedStrategy, KeyFailoverPolicy, RetryMiddleware};
pub use self::usage::UsageMiddleware;
use crate::classify::{classify_any_error, FailureClass};
use crate::ext::RequestInfo;

/// The class of an error returned instead of a response (a reqwest error, or another
/// middleware's).
fn classify_error(err: &reqwest_middleware::Error) -> FailureClass {
    match err {
        reqwest_middleware::Error::Reqwest(err) => classify_any_error(err),
        reqwest_middleware::Error::Middleware(err) => match err.downcast_ref::<reqwest::Error>() {
            Some(err) => classify_any_error(err),
            None => crate::classify::Classifier::new().classify_error(err.as_ref()),
        },
    }
}

/// The request's description: the current [`RequestInfo`] in `extensions` (the model from a
/// [`ModelName`](crate::ext::ModelName) extension or the Gemini path, the flavour from an [`ApiFlavor`](crate::api_error::ApiFlavor) extension or the
/// path), else worked out and stored there, once for the whole chain.
fn request_info(req: &Request, extensions: &mut http::Extensions) -> RequestInfo {
    RequestInfo::attach_to(req.method(), req.url().path(), req.headers(), extensions)
}

/// Keeps the answer's URL when it is rebuilt from `http` parts.
fn with_url(parts: &mut http::response::Parts, url: Url) {
    if let Ok(carrier) = http::Response::builder().url(url).body(()) {
        parts.extensions.extend(carrier.into_parts().0.extensions);
    }
}

/// A local answer (no usable key) as a `reqwest::Response` for `url`.
fn local_response(local: http::Response<Bytes>, url: &Url) -> Response {
    let (mut parts, body) = local.into_parts();
    with_url(&mut parts, url.clone());
    Response::from(http::Response::from_parts(parts, reqwest::Body::from(body)))
}

/// The same answer with `body` (an error body read and redacted) in place of its stream.
fn rebuild(res: Response, body: Bytes) -> Response {
    let url = res.url().clone();
    let (mut parts, _rest) = http::Response::<reqwest::Body>::from(res).into_parts();
    with_url(&mut parts, url);
    crate::buffer::set_body_length(&mut parts.headers, body.len());
    Response::from(http::Response::from_parts(parts, reqwest::Body::from(body)))
}
