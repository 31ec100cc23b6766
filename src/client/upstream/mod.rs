//! The upstream service: one base URL reached directly over hyper, or through outbound proxies
//! chosen per key.
//!
//! [`Upstream`] is the service at the bottom of a stack, below [`KeyRotationLayer`]. It pins
//! every request to its base URL (only the path and query are kept, so a client cannot steer a
//! pool key to another host), adds default headers the request does not carry, and bounds every
//! wait on the upstream:
//!
//! - **connect**: opening the connection (and its TLS);
//! - **first byte**: from sending the request to the response head;
//! - **idle**: the longest silence between two frames of the response body, so a stream that
//!   stalls fails instead of holding its client forever.
//!
//! A timeout is an [`std::io::ErrorKind::TimedOut`] error, which the
//! [classifier](crate::classify) reads as [`FailureClass::Timeout`](crate::classify::FailureClass::Timeout);
//! a refused or broken connection keeps its `source()` chain and is a
//! [`Transport`](crate::classify::FailureClass::Transport) failure. Put
//! [`GatewayErrorsLayer`](super::GatewayErrorsLayer) on top to answer them as 504 and 502.
//!
//! Without proxies, requests go over hyper-util's pooled client (HTTP/2 where the upstream offers
//! it, as Gemini does): no redirect, retry or URL re-parsing work per request. With
//! [`proxies`](Builder::proxies) (`http://`, `https://`, `socks5://`, `socks5h://`, credentials
//! in the URL), each proxy gets its own pooled `reqwest::Client`, and a request takes the proxy
//! of the key [`KeyRotationLayer`] chose ([`proxy_by_key`](Builder::proxy_by_key): a key keeps
//! its proxy across restarts and machines, see [`proxy_index`]) or the next one in turn.
//!
//! Answers come back as the upstream sent them, compressed or not: put
//! [`DecodeLayer`](crate::decode::DecodeLayer) above to ask for gzip and read plain bytes.
//!
//! TLS is rustls with *ring* and the platform's certificate verifier; nothing needs to be
//! installed as rustls' process-wide provider.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use gemini_balance::client::{GatewayErrorsLayer, upstream::Upstream};
//! use gemini_balance::decode::DecodeLayer;
//! use gemini_balance::keys::{KeyPool, KeyRotationLayer};
//! use gemini_balance::retry::RetryLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let pool = KeyPool::builder()
//!     .keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv", "AIzaSyB1234567890abcdefghijklmnopqrstuv"])
//!     .build()?;
//! let upstream = Upstream::builder("https://generativelanguage.googleapis.com/v1beta")
//!     .connect_timeout(Duration::from_secs(10))
//!     .first_byte_timeout(Duration::from_secs(300))
//!     .idle_timeout(Duration::from_secs(60))
//!     // Each key always leaves through the same proxy.
//!     .proxies(["socks5h://10.0.0.2:1080", "http://user:pass@10.0.0.3:3128"])
//!     .proxy_by_key(true)
//!     .build()?;
//! let gemini = ServiceBuilder::new()
//!     .layer(GatewayErrorsLayer::new()) // a timeout is a 504, a refused connection a 502
//!     .layer(RetryLayer::new())
//!     .layer(KeyRotationLayer::new(pool))
//!     .layer(DecodeLayer::new())
//!     .service(upstream);
//!
//! let req = http::Request::post("/models/gemini-2.5-flash:generateContent")
//!     .header("content-type", "application/json")
//!     .body(http_body_util::Full::new(bytes::Bytes::from_static(
//!         br#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
//!     )))?;
//! let res = gemini.oneshot(req).await?;
//! println!("{}", res.status());
//! # Ok(())
//! # }
//! ```
//!
//! [`KeyRotationLayer`]: crate::keys::KeyRotationLayer

mod direct;
mod proxied;

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderMap;
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tower_service::Service;

use self::direct::{Direct, DirectBody};
pub use self::proxied::{check_proxy_url, InvalidProxy};
use super::{BaseUrl, InvalidBaseUrl, ReqwestService};
use crate::keys::KeyId;
use crate::BoxError;

/// How long the upstream may take, per wait.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    idle: Duration,
}

/// The upstream sent nothing for a timeout. Travels as the payload of an
/// [`io::ErrorKind::TimedOut`] error, which is how the classifier recognises a timeout.
#[derive(Debug)]
struct Silent {
    waited: Duration,
    waiting_for: &'static str,
}

impl fmt::Display for Silent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out: the upstream sent nothing for {} s while waiting for {}",
            self.waited.as_secs_f32(),
            self.waiting_for
        )
    }
}

impl std::error::Error for Silent {}

fn timed_out(waited: Duration, waiting_for: &'static str) -> BoxError {
    Box::new(io::Error::new(
        io::ErrorKind::TimedOut,
        Silent {
            waited,
            waiting_for,
        },
    ))
}

/// An [`Upstream`] could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// The base URL is not `http(s)://host[:port][/path]`.
    BaseUrl(InvalidBaseUrl),
    /// A proxy cannot be used. The reason never repeats the URL, which may hold a password.
    Proxy {
        /// Which proxy, counting from 1, in the order given to [`Builder::proxies`].
        entry: usize,
        /// What was wrong.
        reason: String,
    },
    /// The TLS client could not be set up (the platform's certificate verifier).
    Tls(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::BaseUrl(e) => e.fmt(f),
            BuildError::Proxy { entry, reason } => write!(f, "proxy #{entry}: {reason}"),
            BuildError::Tls(e) => write!(f, "the TLS client could not be set up: {e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::BaseUrl(e) => Some(e),
            _ => None,
        }
    }
}

/// Builds an [`Upstream`]; see [`Upstream::builder`].
#[derive(Clone)]
pub struct Builder {
    base_url: String,
    headers: HeaderMap,
    timeouts: Timeouts,
    proxies: Vec<String>,
    by_key: bool,
    pools: (usize, fn() -> usize),
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Default headers and proxy URLs may hold credentials.
        f.debug_struct("Builder")
            .field("base_url", &self.base_url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeouts", &self.timeouts)
            .field("proxies", &self.proxies.len())
            .field("by_key", &self.by_key)
            .field("pools", &self.pools.0)
            .finish()
    }
}

fn one_pool() -> usize {
    0
}

impl Builder {
    /// Headers sent with every request that does not carry them itself (a `User-Agent`, an
    /// `x-goog-user-project`, a relay's own credential).
    pub fn default_headers(mut self, headers: HeaderMap) -> Self {
        self.headers = headers;
        self
    }

    /// The longest wait to open a connection, its TLS included (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.connect = timeout;
        self
    }

    /// The longest wait from sending a request to its response head (default 300 s: a
    /// non-streamed answer of a thinking model comes whole, after it is written).
    pub fn first_byte_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.first_byte = timeout;
        self
    }

    /// The longest silence between two frames of a response body (default 300 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.idle = timeout;
        self
    }

    /// Sends through these outbound proxies instead of connecting directly: `http://`,
    /// `https://`, `socks5://` (names resolved here) or `socks5h://` (by the proxy), with
    /// `user:password@` where the proxy wants credentials. None (the default): direct.
    pub fn proxies<I>(mut self, urls: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.proxies = urls.into_iter().map(Into::into).collect();
        self
    }

    /// With proxies: send each request through the proxy of its key (the [`KeyId`] that
    /// [`KeyRotationLayer`](crate::keys::KeyRotationLayer) put in its extensions), so the
    /// upstream sees each key from one address; otherwise (the default) the proxies take turns.
    pub fn proxy_by_key(mut self, by_key: bool) -> Self {
        self.by_key = by_key;
        self
    }

    /// `count` connection pools for the direct route instead of one; a request uses pool
    /// `pick() % count`. For thread-per-core servers: with `pick` returning the calling
    /// thread's index, a connection is used by the thread whose runtime drives it, with no
    /// wake-ups across threads.
    pub fn pools(mut self, count: usize, pick: fn() -> usize) -> Self {
        self.pools = (count.max(1), pick);
        self
    }

    /// The upstream; fails on a base URL or proxy URL that cannot be used.
    pub fn build(self) -> Result<Upstream, BuildError> {
        let base = BaseUrl::parse(&self.base_url).map_err(BuildError::BaseUrl)?;
        let tls = tls_config()?;
        let mut routes = Vec::with_capacity(self.proxies.len().max(1));
        if self.proxies.is_empty() {
            routes.push(Route::Direct(Box::new(Direct::new(
                base.clone(),
                &self.headers,
                self.timeouts,
                tls.clone(),
                self.pools,
            ))));
        }
        for (i, url) in self.proxies.iter().enumerate() {
            let client =
                proxied::client(url, &self.headers, self.timeouts, &tls).map_err(|reason| {
                    BuildError::Proxy {
                        entry: i + 1,
                        reason,
                    }
                })?;
            routes.push(Route::Proxied(ReqwestService::with_base(
                client,
                base.clone(),
            )));
        }
        Ok(Upstream {
            routes: routes.into(),
            by_key: self.by_key,
            first_byte: self.timeouts.first_byte,
            next: Arc::new(AtomicUsize::new(0)),
        })
    }
}

/// TLS for every route: *ring*, TLS 1.2 and 1.3, the platform's certificate verifier.
fn tls_config() -> Result<rustls::ClientConfig, BuildError> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let failed = |e: rustls::Error| BuildError::Tls(e.to_string());
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(failed)?
    .with_platform_verifier()
    .map_err(failed)?
    .with_no_client_auth())
}

/// One way to the upstream.
#[derive(Debug, Clone)]
enum Route {
    /// Straight to the base URL (boxed: the client is large, and built once).
    Direct(Box<Direct>),
    /// Through one proxy.
    Proxied(ReqwestService),
}

/// Sends each request to the base URL, directly or through the proxy chosen for it.
///
/// Cheap to clone: clones share the connection pools. Takes any request body
/// (`http_body::Body<Data = Bytes>`, axum's included) and never withholds readiness. See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct Upstream {
    routes: Arc<[Route]>,
    by_key: bool,
    first_byte: Duration,
    next: Arc<AtomicUsize>,
}

impl Upstream {
    /// A builder for requests to `base_url` (`http(s)://host[:port][/path]`; a request's path
    /// and query are put after it).
    pub fn builder(base_url: impl Into<String>) -> Builder {
        Builder {
            base_url: base_url.into(),
            headers: HeaderMap::new(),
            timeouts: Timeouts {
                connect: Duration::from_secs(10),
                first_byte: Duration::from_secs(300),
                idle: Duration::from_secs(300),
            },
            proxies: Vec::new(),
            by_key: false,
            pools: (1, one_pool),
        }
    }

    /// The route a request with this key id (if any) takes.
    fn pick(&self, key: Option<&KeyId>) -> usize {
        let n = self.routes.len();
        match (self.by_key, key) {
            _ if n <= 1 => 0,
            (true, Some(id)) => proxy_index(id, n),
            _ => self.next.fetch_add(1, Ordering::Relaxed) % n,
        }
    }
}

/// The proxy (of `count`) that [`Builder::proxy_by_key`] sends a key's requests through: a
/// digest of the key, so stable across restarts and machines (unlike a salted hash).
///
/// ```
/// use gemini_balance::client::upstream::proxy_index;
/// use gemini_balance::keys::KeyId;
///
/// let id = KeyId::of("AIzaSyA1234567890abcdefghijklmnopqrstuv");
/// assert_eq!(proxy_index(&id, 3), proxy_index(&id, 3));
/// assert!(proxy_index(&id, 3) < 3);
/// ```
pub fn proxy_index(id: &KeyId, count: usize) -> usize {
    // `count` fits in u64, and the remainder fits in usize.
    (id.digest() % count.max(1) as u64) as usize
}

impl<B> Service<Request<B>> for Upstream
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<UpstreamBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let route = match &self.routes[self.pick(req.extensions().get::<KeyId>())] {
            Route::Direct(direct) => RouteFuture::Direct {
                inner: direct.send(req.map(|b| b.map_err(Into::into).boxed_unsync())),
            },
            Route::Proxied(service) => RouteFuture::Proxied {
                inner: tokio::time::timeout(
                    self.first_byte,
                    service
                        .clone()
                        .call(req.map(|b| reqwest::Body::wrap(proxied::SyncBody::new(b)))),
                ),
                waited: self.first_byte,
            },
        };
        ResponseFuture { route }
    }
}

/// What a proxied route's reqwest service returns.
type ProxiedFuture = <ReqwestService as Service<Request<reqwest::Body>>>::Future;

pin_project! {
    /// The response future of [`Upstream`].
    pub struct ResponseFuture {
        #[pin]
        route: RouteFuture,
    }
}

pin_project! {
    #[project = RouteFutureProj]
    enum RouteFuture {
        Direct { #[pin] inner: direct::ResponseFuture },
        Proxied { #[pin] inner: tokio::time::Timeout<ProxiedFuture>, waited: Duration },
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<UpstreamBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let answer = match self.project().route.project() {
            RouteFutureProj::Direct { inner } => ready!(inner.poll(cx)).map(|res| {
                res.map(|body| UpstreamBody {
                    kind: Kind::Direct { body },
                })
            }),
            RouteFutureProj::Proxied { inner, waited } => match ready!(inner.poll(cx)) {
                Ok(Ok(res)) => Ok(res.map(|body| UpstreamBody {
                    kind: Kind::Proxied { body },
                })),
                Ok(Err(e)) => Err(Box::new(e) as BoxError),
                Err(_elapsed) => Err(timed_out(*waited, "the response head")),
            },
        };
        // The version is the upstream hop's: an HTTP/1.0 relay's answer would otherwise go to
        // an HTTP/1.1 client as `HTTP/1.0`, which ends its keep-alive connection.
        Poll::Ready(answer.map(|mut res| {
            *res.version_mut() = Version::HTTP_11;
            res
        }))
    }
}

pin_project! {
    /// The response body of [`Upstream`], as the upstream sent it (compressed or not). Fails
    /// with a timeout when the upstream stays silent between frames for the idle timeout.
    pub struct UpstreamBody {
        #[pin]
        kind: Kind,
    }
}

pin_project! {
    // An enum, not a box: nothing allocated per response or per frame.
    #[project = KindProj]
    enum Kind {
        Direct { #[pin] body: DirectBody },
        Proxied { body: reqwest::Body },
    }
}

impl fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Direct { body } => body.fmt(f),
            Kind::Proxied { body } => body.fmt(f),
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
        match self.project().kind.project() {
            KindProj::Direct { body } => body.poll_frame(cx),
            KindProj::Proxied { body } => Pin::new(body)
                .poll_frame(cx)
                .map_err(|e| -> BoxError { Box::new(e) }),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Direct { body } => body.is_end_stream(),
            Kind::Proxied { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Direct { body } => body.size_hint(),
            Kind::Proxied { body } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(proxies: &[&str], by_key: bool) -> Result<Upstream, BuildError> {
        Upstream::builder("http://127.0.0.1:9/v1beta")
            .proxies(proxies.iter().copied())
            .proxy_by_key(by_key)
            .build()
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
        assert_eq!(up.routes.len(), 4);
        assert_eq!(upstream(&[], true).unwrap().routes.len(), 1);
    }

    #[test]
    fn refuses_other_proxies_naming_the_entry_without_repeating_it() {
        for bad in [
            "127.0.0.1:3128",
            "ftp://secret-password@host:21",
            "socks4://127.0.0.1:1080",
            "http://",
            "http://[::1",
        ] {
            let err = upstream(&["http://127.0.0.1:1", bad], true).unwrap_err();
            assert!(
                matches!(&err, BuildError::Proxy { entry: 2, reason } if reason.starts_with("expected ")),
                "{bad}: {err}"
            );
            assert!(!err.to_string().contains("secret-password"), "{err}");
            let check = check_proxy_url(bad).unwrap_err();
            assert!(!check.to_string().contains("secret-password"), "{check}");
        }
    }

    #[test]
    fn refuses_a_base_url_that_is_not_http() {
        for bad in ["ftp://x", "/relative", "127.0.0.1:9", ""] {
            let err = Upstream::builder(bad).build().unwrap_err();
            assert!(matches!(err, BuildError::BaseUrl(_)), "{bad}: {err}");
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
    fn without_proxy_by_key_the_proxies_take_turns() {
        let up = upstream(&["http://127.0.0.1:1", "http://127.0.0.1:2"], false).unwrap();
        let id = KeyId::of("AIzaSyKey_000000000000000000000000000001");
        let picks: Vec<usize> = (0..4).map(|_| up.pick(Some(&id))).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
    }

    #[test]
    fn a_silent_upstream_is_a_timeout() {
        let err = timed_out(Duration::from_secs(3), "the response head");
        assert_eq!(
            crate::classify::classify_any_error(&err),
            crate::classify::FailureClass::Timeout
        );
        assert!(err.to_string().contains("nothing for 3 s"), "{err}");
    }
}
