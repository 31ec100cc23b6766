//! Client-side adapters: the layers of this crate around an HTTP client.
//!
//! [`ReqwestService`] makes a `reqwest::Client` a tower `Service<http::Request<B>>`, so
//! `ServiceBuilder::new().layer(RetryLayer::new()).layer(KeyRotationLayer::new(pool)).service(..)`
//! calls Gemini with rotating keys and classified retries, with streaming response bodies passed
//! through as they arrive.
//!
//! # Example
//!
//! ```no_run
//! use bytes::Bytes;
//! use gemini_balance::{client::ReqwestService, keys::{KeyPool, KeyRotationLayer}, retry::RetryLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let pool = KeyPool::builder().keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv"]).build()?;
//! let gemini = ServiceBuilder::new()
//!     .layer(RetryLayer::new())
//!     .layer(KeyRotationLayer::new(pool))
//!     .service(ReqwestService::new(reqwest::Client::new())
//!         .base_url("https://generativelanguage.googleapis.com")?);
//!
//! let req = http::Request::post("/v1beta/models/gemini-2.0-flash:generateContent")
//!     .header("content-type", "application/json")
//!     .body(reqwest::Body::from(Bytes::from_static(br#"{"contents":[{"parts":[{"text":"hi"}]}]}"#)))?;
//! let res = gemini.oneshot(req).await?;
//! println!("{}", res.status());
//! # Ok(())
//! # }
//! ```

mod base_url;
#[cfg(feature = "reqwest-middleware")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest-middleware")))]
pub mod middleware;
mod reqwest_service;

pub use self::base_url::{remove_hop_by_hop, BaseUrl, InvalidBaseUrl};
#[cfg(feature = "reqwest-middleware")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest-middleware")))]
pub use self::middleware::{
    ClassifiedStrategy, KeyRotationMiddleware, RetryMiddleware, UsageMiddleware,
};
pub use self::reqwest_service::ReqwestService;
