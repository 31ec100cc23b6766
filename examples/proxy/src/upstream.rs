//! The upstream service: Gemini reached directly, or through one of the outbound `PROXIES`.
//!
//! The direct route sends over hyper-util's pooled client (see [`direct`]); each proxy gets its
//! own pooled `reqwest::Client` (reqwest speaks HTTP, HTTPS and SOCKS proxies), built once, so
//! connections to a proxy are reused like direct ones. Which proxy a request takes is decided
//! per request:
//!
//! - `PROXIES_USE_CONSISTENCY_HASH_BY_API_KEY=true`: by the key the key-rotation layer chose
//!   (its [`KeyId`] travels in the request's extensions). The digest of the key's id is
//!   SHA-256 based, so a key keeps its proxy across restarts, unlike the Python server, whose
//!   `hash()` is salted per process and moves every key on each restart.
//! - otherwise round-robin over the proxies.
//!
//! Requests without a key id (none should reach here) take the round-robin path.
//!
//! Both kinds of route answer with an [`UpstreamBody`] and fail with a [`BoxError`] that keeps
//! the cause's `source()` chain, so the classifier tells a timeout (504) from a refused
//! connection (502) whichever route a request took.

mod direct;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::http::header::HeaderMap;
use axum::http::{Request, Response};
use bytes::Bytes;
use gemini_balance::client::ReqwestService;
use gemini_balance::keys::KeyId;
use gemini_balance::BoxError;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::Service;

use direct::{Direct, DirectBody};

/// The `User-Agent` of every upstream request (the client's own never goes upstream), unless
/// CUSTOM_HEADERS sets one.
pub const USER_AGENT: &str = concat!("gemini-balance-proxy/", env!("CARGO_PKG_VERSION"));

/// Proxy URL schemes accepted in `PROXIES`.
const SCHEMES: &[&str] = &["http", "https", "socks5", "socks5h"];

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

/// How a proxy is chosen for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spread {
    /// The key's stable id, modulo the number of proxies.
    ByKey,
    /// One after another.
    RoundRobin,
}

/// One way to the upstream.
#[derive(Debug, Clone)]
enum Route {
    /// No PROXIES: straight to BASE_URL (boxed: the client is large, and built once).
    Direct(Box<Direct>),
    /// Through one PROXIES entry.
    Proxied(ReqwestService),
}

/// Sends each request through its route: direct, or through one of the proxies.
#[derive(Clone, Debug)]
pub struct Upstream {
    routes: Arc<[Route]>,
    spread: Spread,
    next: Arc<AtomicUsize>,
}

impl Upstream {
    /// The direct route when `proxies` is empty, else one route per proxy, all sending to
    /// `options.base_url`. An entry that is not a proxy URL is an error naming PROXIES and its
    /// position (never its text, which may hold a password).
    pub fn build(options: &Options, proxies: &[String], by_key: bool) -> Result<Upstream, String> {
        let mut routes = Vec::with_capacity(proxies.len().max(1));
        if proxies.is_empty() {
            routes.push(Route::Direct(Box::new(Direct::new(options)?)));
        }
        for (i, url) in proxies.iter().enumerate() {
            let client = proxy_client(options, url)
                .map_err(|e| format!("PROXIES: entry #{}: {e}", i + 1))?;
            let service = ReqwestService::new(client)
                .base_url(&options.base_url)
                .map_err(|e| format!("BASE_URL: {e}"))?;
            routes.push(Route::Proxied(service));
        }
        Ok(Upstream {
            routes: routes.into(),
            spread: if by_key {
                Spread::ByKey
            } else {
                Spread::RoundRobin
            },
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// How many routes there are (1 when there are no proxies).
    #[cfg(test)]
    fn routes(&self) -> usize {
        self.routes.len()
    }

    /// The route a request with this key id (if any) takes.
    fn pick(&self, key: Option<&KeyId>) -> usize {
        let n = self.routes.len();
        match (self.spread, key) {
            _ if n <= 1 => 0,
            (Spread::ByKey, Some(id)) => route_of(id, n),
            _ => self.next.fetch_add(1, Ordering::Relaxed) % n,
        }
    }
}

/// The proxy of a key among `n`: stable across restarts and machines.
pub fn route_of(id: &KeyId, n: usize) -> usize {
    // `n` is a count of configured proxies: it fits in u64, and the remainder fits in usize.
    (id.digest() % n as u64) as usize
}

/// The pooled client of one `PROXIES` entry (also what the proxy checker sends with): TIME_OUT
/// to connect and per read, CUSTOM_HEADERS and our `User-Agent`. The error never repeats the URL.
pub fn proxy_client(options: &Options, url: &str) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .default_headers(options.headers.clone())
        .connect_timeout(options.time_out)
        .read_timeout(options.time_out)
        .pool_idle_timeout(Duration::from_secs(90))
        .proxy(parse_proxy(url).map_err(|e| format!("expected {e}"))?)
        .build()
        // reqwest's builder errors name what failed (TLS setup), not the proxy's URL.
        .map_err(|e| format!("the client could not be built ({e})"))
}

/// Checks a `PROXIES` entry the way [`Upstream::build`] reads it; the error says what was
/// expected (to follow the word "expected") and never repeats the URL.
pub fn check_proxy(url: &str) -> Result<(), String> {
    parse_proxy(url).map(drop)
}

/// A `PROXIES` entry as a reqwest proxy; the error says what was expected, never the URL.
fn parse_proxy(url: &str) -> Result<reqwest::Proxy, String> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some(s) if SCHEMES.contains(&s) => {}
        _ => {
            return Err(format!(
                "a proxy URL starting with {}",
                SCHEMES
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("a valid proxy URL ({e})"))
        .and_then(|u| match u.host_str() {
            Some(h) if !h.is_empty() => Ok(u),
            _ => Err("a proxy URL with a host".to_owned()),
        })?;
    reqwest::Proxy::all(parsed).map_err(|_| "a proxy URL this proxy can use".to_owned())
}

impl Service<Request<reqwest::Body>> for Upstream {
    type Response = Response<UpstreamBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<reqwest::Body>) -> Self::Future {
        match &self.routes[self.pick(req.extensions().get::<KeyId>())] {
            Route::Direct(direct) => ResponseFuture::Direct {
                inner: direct.send(req),
            },
            Route::Proxied(service) => ResponseFuture::Proxied {
                inner: service.clone().call(req),
            },
        }
    }
}

/// What a proxied route's reqwest service returns.
type ProxiedFuture = <ReqwestService as Service<Request<reqwest::Body>>>::Future;

pin_project! {
    /// The response of either kind of route.
    #[project = ResponseFutureProj]
    pub enum ResponseFuture {
        /// The direct route.
        Direct { #[pin] inner: direct::ResponseFuture },
        /// A route through a proxy.
        Proxied { inner: ProxiedFuture },
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<UpstreamBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let answer = match self.project() {
            ResponseFutureProj::Direct { inner } => {
                ready!(inner.poll(cx)).map(|res| res.map(|body| UpstreamBody::Direct { body }))
            }
            ResponseFutureProj::Proxied { inner } => match ready!(inner.as_mut().poll(cx)) {
                Ok(res) => Ok(res.map(|body| UpstreamBody::Proxied { body })),
                Err(e) => Err(Box::new(e) as BoxError),
            },
        };
        // The version is the upstream hop's: an HTTP/1.0 relay's answer would otherwise go to
        // an HTTP/1.1 client as `HTTP/1.0`, which ends its keep-alive connection.
        Poll::Ready(answer.map(|mut res| {
            *res.version_mut() = axum::http::Version::HTTP_11;
            res
        }))
    }
}

pin_project! {
    /// A response body of either kind of route (an enum, not a box: nothing allocated per
    /// response or per frame).
    #[project = UpstreamBodyProj]
    pub enum UpstreamBody {
        /// From the direct route.
        Direct { #[pin] body: DirectBody },
        /// From a route through a proxy.
        Proxied { body: reqwest::Body },
    }
}

impl fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamBody::Direct { body } => body.fmt(f),
            UpstreamBody::Proxied { body } => body.fmt(f),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            UpstreamBodyProj::Direct { body } => body.poll_frame(cx),
            UpstreamBodyProj::Proxied { body } => Pin::new(body)
                .poll_frame(cx)
                .map_err(|e| -> BoxError { Box::new(e) }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Direct { body } => body.is_end_stream(),
            UpstreamBody::Proxied { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Direct { body } => body.size_hint(),
            UpstreamBody::Proxied { body } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(proxies: &[&str], by_key: bool) -> Result<Upstream, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let proxies: Vec<String> = proxies.iter().map(|p| (*p).to_owned()).collect();
        let options = Options {
            time_out: Duration::from_secs(5),
            headers: HeaderMap::new(),
            base_url: "http://127.0.0.1:9/v1beta".to_owned(),
        };
        Upstream::build(&options, &proxies, by_key)
    }

    #[test]
    fn accepts_http_https_and_socks_urls() {
        let up = upstream(
            &[
                "http://127.0.0.1:3128",
                "https://user:pw@proxy.example:443",
                "socks5://127.0.0.1:1080",
                "SOCKS5H://user:pw@127.0.0.1:1080",
            ],
            true,
        )
        .unwrap();
        assert_eq!(up.routes(), 4);
        assert_eq!(upstream(&[], true).unwrap().routes(), 1);
    }

    #[test]
    fn refuses_other_entries_without_repeating_them() {
        for bad in [
            "127.0.0.1:3128",
            "ftp://secret-password@host:21",
            "socks4://127.0.0.1:1080",
            "http://",
            "http://[::1",
        ] {
            let err = upstream(&["http://127.0.0.1:1", bad], true).unwrap_err();
            assert!(err.starts_with("PROXIES: entry #2: "), "{bad}: {err}");
            assert!(!err.contains("secret-password"), "{err}");
        }
    }

    #[test]
    fn a_key_keeps_its_proxy_and_keys_spread() {
        let up = upstream(&["http://127.0.0.1:1", "http://127.0.0.1:2"], true).unwrap();
        let ids: Vec<KeyId> = (0..32)
            .map(|i| KeyId::of(&format!("AIzaSyKey_{i:033}")))
            .collect();
        for id in &ids {
            let first = up.pick(Some(id));
            assert_eq!(up.pick(Some(id)), first);
            // Stable across processes: the id is a digest of the key, not a salted hash.
            let rebuilt = KeyId::from_hex(&id.hex(), id.mask()).unwrap();
            assert_eq!(up.pick(Some(&rebuilt)), first);
        }
        let on_first = ids.iter().filter(|id| up.pick(Some(id)) == 0).count();
        assert!(on_first > 0 && on_first < ids.len(), "{on_first}");
    }

    #[test]
    fn without_consistency_the_proxies_take_turns() {
        let up = upstream(&["http://127.0.0.1:1", "http://127.0.0.1:2"], false).unwrap();
        let id = KeyId::of("AIzaSyKey_000000000000000000000000000001");
        let picks: Vec<usize> = (0..4).map(|_| up.pick(Some(&id))).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
    }
}
