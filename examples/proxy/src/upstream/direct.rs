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
use axum::http::uri::{Authority, PathAndQuery, Scheme, Uri};
use axum::http::{Request, Response, Version};
use bytes::Bytes;
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

/// Headers that describe the client's connection to the proxy, not the proxy's to the upstream.
/// (Names, not strings: removing by a string parses it on every request.)
const HOP_BY_HOP: [header::HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HeaderName::from_static("keep-alive"),
    header::HeaderName::from_static("proxy-connection"),
];

/// Sends requests to BASE_URL over pooled connections.
#[derive(Clone)]
pub struct Direct {
    client: Client<HttpsConnector<HttpConnector>, reqwest::Body>,
    scheme: Scheme,
    authority: Authority,
    /// BASE_URL's path (`/v1beta`), put before each request's path; empty for none.
    prefix: String,
    /// CUSTOM_HEADERS, and `accept: */*` as reqwest sent it.
    headers: HeaderMap,
    time_out: Duration,
}

impl fmt::Debug for Direct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // CUSTOM_HEADERS may hold credentials: only their names.
        f.debug_struct("Direct")
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .field("prefix", &self.prefix)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("time_out", &self.time_out)
            .finish_non_exhaustive()
    }
}

impl Direct {
    /// The client for `options`; an error names the setting at fault.
    pub fn new(options: &Options) -> Result<Direct, String> {
        let (scheme, authority, prefix) = parse_base(&options.base_url)?;
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
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        let mut headers = options.headers.clone();
        if !headers.contains_key(header::ACCEPT) {
            headers.insert(header::ACCEPT, header::HeaderValue::from_static("*/*"));
        }
        Ok(Direct {
            client,
            scheme,
            authority,
            prefix,
            headers,
            time_out: options.time_out,
        })
    }

    /// Sends `req` to BASE_URL: only its path and query are used, so an absolute-form request
    /// (`POST http://elsewhere/...`) can never carry a pool key to another host.
    pub fn send(&self, req: Request<reqwest::Body>) -> ResponseFuture {
        let (mut parts, body) = req.into_parts();
        let uri = match self.target(&parts.uri) {
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
        headers.remove(header::HOST);
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
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
                self.client.request(Request::from_parts(parts, body)),
            ),
            time_out: self.time_out,
        }
    }

    /// BASE_URL joined with the request's path and query.
    fn target(&self, uri: &Uri) -> Result<Uri, axum::http::Error> {
        let pq = match uri.path_and_query() {
            Some(pq) if self.prefix.is_empty() => pq.clone(),
            Some(pq) => PathAndQuery::from_maybe_shared(Bytes::from(format!(
                "{}{}",
                self.prefix,
                pq.as_str()
            )))?,
            None if self.prefix.is_empty() => PathAndQuery::from_static("/"),
            None => PathAndQuery::from_maybe_shared(Bytes::from(self.prefix.clone()))?,
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

/// BASE_URL as scheme, authority and path prefix.
fn parse_base(base: &str) -> Result<(Scheme, Authority, String), String> {
    let invalid = || format!("BASE_URL: expected http(s)://host[:port][/path], not {base:?}");
    let uri: Uri = base.trim_end_matches('/').parse().map_err(|_| invalid())?;
    let parts = uri.into_parts();
    let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
        return Err(invalid());
    };
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(invalid());
    }
    let prefix = parts
        .path_and_query
        .map(|pq| pq.path().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    Ok((scheme, authority, prefix))
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

    fn direct(base: &str) -> Direct {
        let mut headers = HeaderMap::new();
        headers.insert("x-custom", header::HeaderValue::from_static("1"));
        Direct::new(&Options {
            time_out: Duration::from_secs(5),
            headers,
            base_url: base.to_owned(),
        })
        .unwrap()
    }

    #[test]
    fn pins_requests_to_the_base_url() {
        let with_prefix = direct("http://127.0.0.1:9/prefix/");
        let target = |d: &Direct, uri: &str| d.target(&uri.parse().unwrap()).unwrap().to_string();
        assert_eq!(
            target(&with_prefix, "/models/m:generateContent?alt=sse"),
            "http://127.0.0.1:9/prefix/models/m:generateContent?alt=sse"
        );
        // Absolute-form requests go to the base too.
        assert_eq!(
            target(&with_prefix, "http://other.example/x?y=1"),
            "http://127.0.0.1:9/prefix/x?y=1"
        );
        let bare = direct("https://generativelanguage.googleapis.com");
        assert_eq!(
            target(&bare, "/v1beta/models"),
            "https://generativelanguage.googleapis.com/v1beta/models"
        );
    }

    #[test]
    fn refuses_a_base_url_that_is_not_http() {
        for bad in ["ftp://x", "/relative", "127.0.0.1:9", ""] {
            let err = parse_base(bad).unwrap_err();
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
