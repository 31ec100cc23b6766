//! Client-side pieces: what a request sent upstream looks like, and the layers of this crate
//! around an HTTP client.
//!
//! What goes upstream, for any gateway or client built from the layers:
//!
//! - [`HeaderAllowlist`] and [`ForwardHeadersLayer`]: only the headers the Gemini API reads go
//!   on (`content-type`, `accept`, `x-goog-api-client`, ...); the client's cookies, forwarding
//!   headers, `User-Agent` and anything unknown stay behind ([`forward_headers`]).
//! - [`check_path`]: the request paths that may be appended to a base URL; `..`, `%2F`, `\`
//!   and the like are refused before anything is sent ([`request_path`]).
//! - [`BaseUrl`]: every request pinned to one upstream, so a client cannot steer a pool key to
//!   another host; the hop-by-hop headers, which belong to the client's connection, are dropped.
//!
//! At the bottom of a stack, what reaches the upstream:
//!
//! - With the `upstream` feature, [`Upstream`]: the base URL over hyper's pooled client, with
//!   connect, first-byte and idle timeouts, and outbound HTTP or SOCKS proxies chosen per key
//!   ([`upstream`]).
//! - [`GatewayErrorsLayer`]: the stack's transport failures answered as `502`/`504` in the
//!   API's error format, so the stack is `Error = Infallible` and serves an axum route as it is
//!   ([`gateway_errors`]).
//!
//! With the `reqwest` feature, [`ReqwestService`] makes a `reqwest::Client` a tower
//! `Service<http::Request<B>>`, so `RetryLayer`, `KeyRotationLayer` and the rest wrap outgoing
//! calls, with streaming response bodies passed through as they arrive; with
//! the `middleware` feature, the same decisions plug into a `ClientWithMiddleware` ([`middleware`]).
//!
//! # Example
//!
//! A gateway's edge: refuse a path that would leave its route, keep only the headers Gemini
//! reads, and pin what is left to the upstream.
//!
//! ```
//! use gemini_balance::client::{check_path, BaseUrl, HeaderAllowlist};
//! use http::Request;
//!
//! let base = BaseUrl::parse("https://generativelanguage.googleapis.com/v1beta")?;
//! let allowlist = HeaderAllowlist::gemini();
//! let mut req = Request::post("/models/gemini-2.5-flash:generateContent")
//!     .header("content-type", "application/json")
//!     .header("cookie", "session=admin")
//!     .body(())?;
//! check_path(req.uri().path())?;
//! allowlist.retain(req.headers_mut());
//! *req.uri_mut() = base.join(req.uri())?;
//! assert_eq!(
//!     req.uri(),
//!     "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
//! );
//! assert!(req.headers().get("cookie").is_none());
//! assert!(check_path("/models/../tunedModels/x").is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod base_url;
pub mod forward_headers;
pub mod gateway_errors;
#[cfg(any(feature = "reqwest", feature = "upstream"))]
mod hop_by_hop;
#[cfg(feature = "middleware")]
#[cfg_attr(docsrs, doc(cfg(feature = "middleware")))]
pub mod middleware;
pub mod request_path;
#[cfg(feature = "reqwest")]
mod reqwest_service;
#[cfg(feature = "upstream")]
#[cfg_attr(docsrs, doc(cfg(feature = "upstream")))]
pub mod upstream;

pub use self::base_url::{BaseUrl, InvalidBaseUrl};
pub use self::forward_headers::{ForwardHeaders, ForwardHeadersLayer, HeaderAllowlist};
pub use self::gateway_errors::{GatewayErrors, GatewayErrorsLayer};
#[cfg(feature = "middleware")]
#[cfg_attr(docsrs, doc(cfg(feature = "middleware")))]
pub use self::middleware::{
    ClassifiedStrategy, KeyFailoverPolicy, KeyRotationMiddleware, RetryMiddleware, UsageMiddleware,
};
pub use self::request_path::{check_path, UnsafePath};
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub use self::reqwest_service::ReqwestService;
#[cfg(feature = "upstream")]
#[cfg_attr(docsrs, doc(cfg(feature = "upstream")))]
pub use self::upstream::Upstream;
