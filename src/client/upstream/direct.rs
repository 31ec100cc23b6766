//! The direct route: the base URL over hyper-util's pooled client.
//!
//! reqwest is convenient, but each request through it re-parses the URI into a `Url` (with
//! IDNA), converts the request, merges its default headers and passes through its redirect and
//! timeout wrappers: about 15 µs of CPU per request that a gateway does not need, as it never
//! follows redirects and retries on its own. This route sends the request as it is: pinned to
//! the base URL, default headers added, a deadline on every wait, pooled keep-alive connections
//! (HTTP/2 where the upstream offers it through ALPN, as Gemini does).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, Timeout};

use super::{timed_out, Timeouts};
use crate::client::hop_by_hop::remove_hop_by_hop;
use crate::client::BaseUrl;
use crate::BoxError;

/// The request body as the pooled client sends it: whatever body the caller has, boxed once.
pub(super) type SendBody = UnsyncBoxBody<Bytes, BoxError>;

type Pool = Client<HttpsConnector<HttpConnector>, SendBody>;

/// Sends requests to the base URL over pooled connections.
#[derive(Clone)]
pub(super) struct Direct {
    /// One pool per thread when the builder asked for that (see `Builder::pools`).
    clients: Arc<[Pool]>,
    pick: fn() -> usize,
    base: BaseUrl,
    /// The default headers, and `accept: */*` as reqwest sends it.
    headers: HeaderMap,
    timeouts: Timeouts,
}

impl fmt::Debug for Direct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Default headers may hold credentials: only their names.
        f.debug_struct("Direct")
            .field("base", &self.base)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeouts", &self.timeouts)
            .field("pools", &self.clients.len())
            .finish_non_exhaustive()
    }
}

impl Direct {
    pub(super) fn new(
        base: BaseUrl,
        headers: &HeaderMap,
        timeouts: Timeouts,
        tls: rustls::ClientConfig,
        pools: (usize, fn() -> usize),
    ) -> Direct {
        let mut http = HttpConnector::new();
        // The https connector below handles `https://`; this one only opens the TCP stream.
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeouts.connect));
        // Each request and response is several small writes: no waiting for delayed ACKs.
        http.set_nodelay(true);
        // As reqwest has it: dead peers are noticed on idle pooled connections.
        http.set_keepalive(Some(Duration::from_secs(15)));
        http.set_keepalive_interval(Some(Duration::from_secs(15)));
        http.set_keepalive_retries(Some(3));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let clients = (0..pools.0.max(1))
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .build(https.clone())
            })
            .collect();
        let mut headers = headers.clone();
        if !headers.contains_key(header::ACCEPT) {
            headers.insert(header::ACCEPT, header::HeaderValue::from_static("*/*"));
        }
        Direct {
            clients,
            pick: pools.1,
            base,
            headers,
            timeouts,
        }
    }

    /// Sends `req` to the base URL: only its path and query are used, so an absolute-form
    /// request (`POST http://elsewhere/...`) can never carry a pool key to another host.
    pub(super) fn send(&self, req: Request<SendBody>) -> ResponseFuture {
        let (mut parts, body) = req.into_parts();
        parts.uri = match self.base.join(&parts.uri) {
            Ok(uri) => uri,
            Err(e) => {
                return ResponseFuture::Failed {
                    error: Some(Box::new(e)),
                }
            }
        };
        // A per-hop property: the client may speak HTTP/2 to us and the upstream HTTP/1.1
        // (hyper-util picks the upstream's version from the connection).
        parts.version = Version::HTTP_11;
        let headers = &mut parts.headers;
        remove_hop_by_hop(headers);
        // hyper sets the length from the body's exact size (a buffered body has one), so a
        // stale or chunked framing of the client's never reaches the upstream.
        headers.remove(header::CONTENT_LENGTH);
        // Like reqwest's default headers: added only where the request has none of its own.
        for (name, value) in &self.headers {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        let pool = &self.clients[(self.pick)() % self.clients.len()];
        ResponseFuture::Waiting {
            head: tokio::time::timeout(
                self.timeouts.first_byte,
                pool.request(Request::from_parts(parts, body)),
            ),
            timeouts: self.timeouts,
        }
    }
}

pin_project! {
    /// The response of the direct route, once its head arrives in time.
    #[project = ResponseFutureProj]
    pub(super) enum ResponseFuture {
        /// Connecting, sending, waiting for the response head.
        Waiting {
            #[pin]
            head: Timeout<hyper_util::client::legacy::ResponseFuture>,
            timeouts: Timeouts,
        },
        /// The request could not be sent.
        Failed { error: Option<BoxError> },
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<DirectBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Waiting { head, timeouts } => {
                let timeouts = *timeouts;
                Poll::Ready(match ready!(head.poll(cx)) {
                    Ok(Ok(res)) => Ok(res.map(|body| DirectBody::new(body, timeouts.idle))),
                    // The connect and transport errors keep their `source()` chain (hyper's,
                    // then io::Error), which the classifier reads.
                    Ok(Err(e)) => Err(Box::new(e)),
                    Err(_elapsed) => Err(timed_out(timeouts.first_byte, "the response head")),
                })
            }
            ResponseFutureProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "the upstream response was polled again".into()))),
        }
    }
}

pin_project! {
    /// A response body of the direct route: fails when the upstream sends nothing for the idle
    /// timeout between frames (a stream that stalls would otherwise hold its client forever).
    pub(super) struct DirectBody {
        #[pin]
        inner: Incoming,
        // Armed at the first wait; most bodies are read without one.
        #[pin]
        idle: Option<Sleep>,
        timeout: Duration,
        // A frame came since the timer was armed: the next wait starts a new timeout.
        progressed: bool,
    }
}

impl DirectBody {
    fn new(inner: Incoming, timeout: Duration) -> DirectBody {
        DirectBody {
            inner,
            idle: None,
            timeout,
            progressed: false,
        }
    }
}

impl fmt::Debug for DirectBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectBody")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Body for DirectBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.progressed = true;
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        // Waiting: the deadline is set when a wait starts, not at each frame (one clock read
        // and timer update per wait rather than per frame).
        if *this.progressed || this.idle.is_none() {
            let deadline = Instant::now() + *this.timeout;
            match this.idle.as_mut().as_pin_mut() {
                Some(idle) => idle.reset(deadline),
                None => this.idle.set(Some(tokio::time::sleep_until(deadline))),
            }
            *this.progressed = false;
        }
        match this.idle.as_pin_mut() {
            Some(idle) => {
                ready!(idle.poll(cx));
                Poll::Ready(Some(Err(timed_out(*this.timeout, "the response body"))))
            }
            None => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
