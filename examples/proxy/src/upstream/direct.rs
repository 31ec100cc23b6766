//! The direct route: Gemini over hyper-util's pooled client.
//!
//! reqwest is convenient, but each request through it re-parses the URI into a `Url` (with
//! IDNA), converts the request, merges its default headers and passes through its redirect,
//! retry and timeout wrappers: about 15 µs of CPU per request that the proxy does not need, as
//! it never follows redirects and retries on its own. This route sends the request as it is,
//! keeping what the proxy relies on: the request pinned to BASE_URL, CUSTOM_HEADERS, TIME_OUT
//! for connecting and for every wait on the upstream, pooled keep-alive connections (HTTP/2
//! where the upstream offers it through ALPN, as Gemini does).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::http::header::{self, HeaderMap};
use axum::http::{Request, Response, Version};
use bytes::Bytes;
use gemini_balance::client::{remove_hop_by_hop, BaseUrl};
use gemini_balance::BoxError;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, Timeout};

use super::Options;

/// Sends requests to BASE_URL over pooled connections.
#[derive(Clone)]
pub struct Direct {
    /// One pool per serving thread (`crate::serve::shard()`), so that a connection's task runs
    /// on the thread whose requests use it.
    clients: std::sync::Arc<[Client<HttpsConnector<HttpConnector>, reqwest::Body>]>,
    base: BaseUrl,
    /// CUSTOM_HEADERS, and `accept: */*` as reqwest sent it.
    headers: HeaderMap,
    time_out: Duration,
}

impl fmt::Debug for Direct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // CUSTOM_HEADERS may hold credentials: only their names.
        f.debug_struct("Direct")
            .field("base", &self.base)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("time_out", &self.time_out)
            .finish_non_exhaustive()
    }
}

impl Direct {
    /// The client for `options`; an error names the setting at fault.
    pub fn new(options: &Options) -> Result<Direct, String> {
        let base = BaseUrl::parse(&options.base_url).map_err(|e| format!("BASE_URL: {e}"))?;
        let mut http = HttpConnector::new();
        // The https connector below handles `https://`; this one only opens the TCP stream.
        http.enforce_http(false);
        http.set_connect_timeout(Some(options.time_out));
        // Each request and response is several small writes: no waiting for delayed ACKs.
        http.set_nodelay(true);
        // As reqwest had it: dead peers are noticed on idle pooled connections.
        http.set_keepalive(Some(Duration::from_secs(15)));
        http.set_keepalive_interval(Some(Duration::from_secs(15)));
        http.set_keepalive_retries(Some(3));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config()?)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let clients = (0..=crate::serve::serving_threads())
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .build(https.clone())
            })
            .collect();
        let mut headers = options.headers.clone();
        if !headers.contains_key(header::ACCEPT) {
            headers.insert(header::ACCEPT, header::HeaderValue::from_static("*/*"));
        }
        Ok(Direct {
            clients,
            base,
            headers,
            time_out: options.time_out,
        })
    }

    /// Sends `req` to BASE_URL: only its path and query are used, so an absolute-form request
    /// (`POST http://elsewhere/...`) can never carry a pool key to another host.
    pub fn send(&self, req: Request<reqwest::Body>) -> ResponseFuture {
        let (mut parts, body) = req.into_parts();
        let uri = match self.base.join(&parts.uri) {
            Ok(uri) => uri,
            Err(e) => {
                return ResponseFuture::Failed {
                    error: Some(Box::new(e)),
                }
            }
        };
        parts.uri = uri;
        // A per-hop property: the client may speak HTTP/2 to the proxy and the upstream
        // HTTP/1.1 (hyper-util picks the upstream's version from the connection).
        parts.version = Version::HTTP_11;
        let headers = &mut parts.headers;
        remove_hop_by_hop(headers);
        // The body is complete by now (the retry layer buffers it): hyper sets the length from
        // the body itself, so a stale or chunked framing of the client's never reaches Gemini.
        headers.remove(header::CONTENT_LENGTH);
        // Like reqwest's default headers: added only where the request has none of its own.
        for (name, value) in &self.headers {
            if !headers.contains_key(name) {
                headers.insert(name.clone(), value.clone());
            }
        }
        ResponseFuture::Waiting {
            head: tokio::time::timeout(
                self.time_out,
                self.clients[crate::serve::shard() % self.clients.len()]
                    .request(Request::from_parts(parts, body)),
            ),
            time_out: self.time_out,
        }
    }
}

/// TLS as reqwest had it: ring, TLS 1.2 and 1.3, the platform's certificate verifier.
fn tls_config() -> Result<rustls::ClientConfig, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let failed = |e: rustls::Error| format!("the TLS client could not be set up: {e}");
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(failed)?
        .with_platform_verifier()
        .map_err(failed)?
        .with_no_client_auth(),
    )
}

/// The upstream sent nothing for TIME_OUT. Travels as the payload of an
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
            "timed out: the upstream sent nothing for {} s (TIME_OUT) while the proxy waited for {}",
            self.waited.as_secs(),
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

pin_project! {
    /// The response of the direct route, once its head arrives within TIME_OUT.
    #[project = ResponseFutureProj]
    pub enum ResponseFuture {
        /// Connecting, sending, waiting for the response head.
        Waiting {
            #[pin]
            head: Timeout<hyper_util::client::legacy::ResponseFuture>,
            time_out: Duration,
        },
        /// The request could not be sent.
        Failed { error: Option<BoxError> },
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<DirectBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Waiting { head, time_out } => {
                let time_out = *time_out;
                Poll::Ready(match ready!(head.poll(cx)) {
                    Ok(Ok(res)) => Ok(res.map(|body| DirectBody::new(body, time_out))),
                    // The connect and transport errors keep their `source()` chain (hyper's,
                    // then io::Error), which the classifier reads.
                    Ok(Err(e)) => Err(Box::new(e)),
                    Err(_elapsed) => Err(timed_out(time_out, "the response head")),
                })
            }
            ResponseFutureProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "the upstream response was polled again".into()))),
        }
    }
}

pin_project! {
    /// A response body of the direct route: fails when the upstream sends nothing for
    /// TIME_OUT between frames (a stream that stalls would otherwise hold its client forever).
    pub struct DirectBody {
        #[pin]
        inner: Incoming,
        // Armed at the first wait; most bodies are read without one.
        #[pin]
        idle: Option<Sleep>,
        time_out: Duration,
        // A frame came since the timer was armed: the next wait starts a new TIME_OUT.
        progressed: bool,
    }
}

impl DirectBody {
    fn new(inner: Incoming, time_out: Duration) -> DirectBody {
        DirectBody {
            inner,
            idle: None,
            time_out,
            progressed: false,
        }
    }
}

impl fmt::Debug for DirectBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectBody")
            .field("time_out", &self.time_out)
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
            let deadline = Instant::now() + *this.time_out;
            match this.idle.as_mut().as_pin_mut() {
                Some(idle) => idle.reset(deadline),
                None => this.idle.set(Some(tokio::time::sleep_until(deadline))),
            }
            *this.progressed = false;
        }
        match this.idle.as_pin_mut() {
            Some(idle) => {
                ready!(idle.poll(cx));
                Poll::Ready(Some(Err(timed_out(*this.time_out, "the response body"))))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_base_url_that_is_not_http_naming_the_setting() {
        for bad in ["ftp://x", "/relative", "127.0.0.1:9", ""] {
            let err = Direct::new(&Options {
                time_out: Duration::from_secs(5),
                headers: HeaderMap::new(),
                base_url: bad.to_owned(),
            })
            .unwrap_err();
            assert!(err.starts_with("BASE_URL: "), "{bad}: {err}");
        }
    }

    #[test]
    fn a_silent_upstream_is_a_timeout() {
        let err = timed_out(Duration::from_secs(3), "the response head");
        assert_eq!(
            gemini_balance::classify::classify_any_error(&err),
            gemini_balance::classify::FailureClass::Timeout
        );
        assert!(err.to_string().contains("3 s (TIME_OUT)"), "{err}");
    }
}
