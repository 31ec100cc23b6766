//! The upstream service, from the settings: the library's [`Upstream`] to BASE_URL, directly
//! or through the outbound `PROXIES`.
//!
//! TIME_OUT bounds every wait on the upstream (connecting, the response head, each silence
//! between body frames); CUSTOM_HEADERS and our `User-Agent` go with every request. With
//! `PROXIES_USE_CONSISTENCY_HASH_BY_API_KEY=true` a key keeps its proxy across restarts (the
//! library's `proxy_index`: a digest of the key, unlike the Python server's `hash()`, which is
//! salted per process and moves every key on each restart); otherwise the proxies take turns.
//! The direct route keeps one connection pool per serving thread (`crate::serve::shard()`).

use std::fmt;
use std::time::Duration;

use axum::http::header::HeaderMap;
use gemini_balance::client::upstream::{check_proxy_url, BuildError, Builder};
pub use gemini_balance::client::Upstream;

/// The `User-Agent` of every upstream request (the client's own never goes upstream), unless
/// CUSTOM_HEADERS sets one.
pub const USER_AGENT: &str = concat!("gemini-balance-proxy/", env!("CARGO_PKG_VERSION"));

/// What every route is built with.
#[derive(Clone)]
pub struct Options {
    /// TIME_OUT: to connect, and the longest the upstream may stay silent (before the response
    /// head, and between body frames).
    pub time_out: Duration,
    /// CUSTOM_HEADERS and our `User-Agent`: sent with every request that does not carry the
    /// header itself (the stacks' `ForwardHeaders` has removed the client's own by then).
    pub headers: HeaderMap,
    /// BASE_URL: where every request goes (`http(s)://host[:port][/path]`).
    pub base_url: String,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // CUSTOM_HEADERS may hold credentials: only their names.
        f.debug_struct("Options")
            .field("time_out", &self.time_out)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl Options {
    /// The library's builder with these options (and no proxies yet).
    pub fn builder(&self) -> Builder {
        Upstream::builder(self.base_url.as_str())
            .default_headers(self.headers.clone())
            .connect_timeout(self.time_out)
            .first_byte_timeout(self.time_out)
            .idle_timeout(self.time_out)
            .pools(crate::serve::serving_threads() + 1, crate::serve::shard)
    }
}

/// The direct route when `proxies` is empty, else one route per proxy. An entry that is not a
/// proxy URL is an error naming PROXIES and its position (never its text, which may hold a
/// password).
pub fn build(options: &Options, proxies: &[String], by_key: bool) -> Result<Upstream, String> {
    options
        .builder()
        .proxies(proxies.iter().cloned())
        .proxy_by_key(by_key)
        .build()
        .map_err(|e| match e {
            BuildError::BaseUrl(e) => format!("BASE_URL: {e}"),
            BuildError::Proxy { entry, reason } => format!("PROXIES: entry #{entry}: {reason}"),
            other => other.to_string(),
        })
}

/// Checks a `PROXIES` entry the way [`build`] reads it; the error says what was expected (to
/// follow the word "expected") and never repeats the URL.
pub fn check_proxy(url: &str) -> Result<(), String> {
    check_proxy_url(url).map_err(|e| e.expected().to_owned())
}
