//! Upstream answers in plain bytes: [`DecodeLayer`] asks the upstream for an encoding it can
//! read and decodes what comes back.
//!
//! Google's front ends, and the CDN relays that many deployments put in front of Gemini,
//! compress answers when the request accepts it: an SDK behind a proxy asks for `gzip`, and the
//! answer comes back gzipped. Every layer that reads an answer (the classifier and the
//! redaction of error bodies, the usage tap, the OpenAI conversion, the pseudo stream's replay)
//! must read the decoded bytes, and the client must get a body whose headers describe it. Put
//! [`DecodeLayer`] innermost, directly around the upstream service, and all of that holds:
//!
//! - the request goes out with `Accept-Encoding: gzip` (or what [`DecodeLayer::accept`] says),
//!   whatever the client asked for;
//! - an answer encoded with `gzip`, `deflate`, `br` or `zstd` is decoded as it streams (event
//!   by event for a flushed SSE stream), and loses its `Content-Encoding` and
//!   `Content-Length`; any of the four is decoded even when it was not asked for, as relays
//!   sometimes send them regardless;
//! - an answer in any other encoding cannot be read, so it is not passed on as if it could:
//!   the client gets a `502` in the API's own error format naming the encoding.
//!
//! Decoding is done by tower-http's `Decompression`. The layers above it still guard against a
//! stack without it: an encoded error body is not read or passed on (`Content-Encoding` set).
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use gemini_balance::decode::DecodeLayer;
//! use http::{header, Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use std::io::Write;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // An upstream that gzips its answer when asked to, as Google's front ends do.
//! let upstream = service_fn(|req: Request<Full<Bytes>>| async move {
//!     assert_eq!(req.headers()[header::ACCEPT_ENCODING], "gzip");
//!     let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
//!     gz.write_all(br#"{"candidates":[]}"#)?;
//!     let res = Response::builder()
//!         .header(header::CONTENT_ENCODING, "gzip")
//!         .body(Full::new(Bytes::from(gz.finish()?)))?;
//!     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(res)
//! });
//! let stack = ServiceBuilder::new().layer(DecodeLayer::new()).service(upstream);
//! let res = stack.oneshot(Request::new(Full::new(Bytes::new()))).await?;
//! assert!(res.headers().get(header::CONTENT_ENCODING).is_none());
//! let body = res.into_body().collect().await?.to_bytes();
//! assert_eq!(body, r#"{"candidates":[]}"#);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_http::decompression::{Decompression, DecompressionBody};
use tower_layer::Layer;
use tower_service::Service;

use crate::api_error::{error_response, ApiFlavor};
use crate::body::ResponseBody;
use crate::classify::{FailureClass, Outcome};
use crate::BoxError;

/// The body of a [`Decode`] answer: the upstream's body, decoded; or our own `502` when the
/// answer's encoding could not be read.
pub type DecodedBody<B> = ResponseBody<DecompressionBody<B>>;

/// The encodings [`Decode`] can read, in the spelling of `Content-Encoding`.
pub const DECODABLE: &[&str] = &["gzip", "deflate", "br", "zstd"];

/// `true` when `headers` say the body is encoded (a `Content-Encoding` other than `identity`):
/// its bytes are not the answer's text and cannot be parsed, searched or redacted as such.
pub(crate) fn is_encoded(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|value| !is_identity(value))
}

fn is_identity(value: &HeaderValue) -> bool {
    value.as_bytes().split(|b| *b == b',').all(|coding| {
        let coding = coding.trim_ascii();
        coding.is_empty() || coding.eq_ignore_ascii_case(b"identity")
    })
}

/// Applies [`Decode`]: answers in plain bytes. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct DecodeLayer {
    accept: HeaderValue,
}

impl Default for DecodeLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl DecodeLayer {
    /// Asks the upstream for `gzip`, the encoding every Google front end and CDN relay speaks.
    pub fn new() -> Self {
        DecodeLayer {
            accept: HeaderValue::from_static("gzip"),
        }
    }

    /// The `Accept-Encoding` the upstream is asked for, e.g. `identity` to be sent plain bytes
    /// (less CPU, more bandwidth) or `gzip, br, zstd`. Whatever is asked, any of [`DECODABLE`]
    /// that comes back is decoded.
    pub fn accept(mut self, accept_encoding: HeaderValue) -> Self {
        self.accept = accept_encoding;
        self
    }
}

impl<S> Layer<S> for DecodeLayer {
    type Service = Decode<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Decode {
            inner: Decompression::new(Spelled { inner }),
            accept: self.accept.clone(),
        }
    }
}

/// Asks for an encoding it can read and decodes the answer; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Decode<S> {
    inner: Decompression<Spelled<S>>,
    accept: HeaderValue,
}

/// The inner service, with the `Content-Encoding` of its answers in the one spelling
/// tower-http matches (`x-gzip` and `GZIP` are `gzip`, as RFC 9110 says).
#[derive(Debug, Clone)]
struct Spelled<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Spelled<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = SpelledFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        SpelledFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// The inner service's response future, its answer's `Content-Encoding` spelled as
    /// tower-http matches it (part of [`Decode`]'s [`ResponseFuture`]).
    pub struct SpelledFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F> std::fmt::Debug for SpelledFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpelledFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for SpelledFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut res = ready!(self.project().inner.poll(cx))?;
        if let Some(coding) = res.headers().get(header::CONTENT_ENCODING) {
            let coding = coding.as_bytes().trim_ascii();
            let canonical = if coding.eq_ignore_ascii_case(b"x-gzip") {
                Some("gzip")
            } else {
                DECODABLE
                    .iter()
                    .find(|known| coding.eq_ignore_ascii_case(known.as_bytes()))
                    .copied()
            };
            if let Some(canonical) = canonical.filter(|c| c.as_bytes() != coding) {
                res.headers_mut().insert(
                    header::CONTENT_ENCODING,
                    HeaderValue::from_static(canonical),
                );
            }
        }
        Poll::Ready(Ok(res))
    }
}

impl<S> Decode<S> {
    /// Wraps `inner`, asking for `gzip`.
    pub fn new(inner: S) -> Self {
        DecodeLayer::new().layer(inner)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner.get_ref().inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner.get_mut().inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner.into_inner().inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Decode<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<DecodedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<SpelledFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // Ours, not the client's: the client reads what we hand on, not what the upstream sent.
        req.headers_mut()
            .insert(header::ACCEPT_ENCODING, self.accept.clone());
        let flavor = crate::ext::RequestInfo::attach(&mut req).flavor;
        ResponseFuture {
            inner: self.inner.call(req),
            flavor,
        }
    }
}

pin_project! {
    /// Response future of [`Decode`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: tower_http::decompression::ResponseFuture<F>,
        flavor: ApiFlavor,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<DecodedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        // What tower-http decoded has lost its `Content-Encoding`; what is left it could not read.
        let Some(coding) = res.headers().get(header::CONTENT_ENCODING).cloned() else {
            return Poll::Ready(Ok(res.map(ResponseBody::inner)));
        };
        if is_identity(&coding) {
            res.headers_mut().remove(header::CONTENT_ENCODING);
            return Poll::Ready(Ok(res.map(ResponseBody::inner)));
        }
        let shown = String::from_utf8_lossy(coding.as_bytes());
        let shown: String = shown.chars().take(64).collect();
        tracing::warn!(
            status = res.status().as_u16(),
            content_encoding = %shown,
            "the upstream answered in an encoding that cannot be read; answering 502"
        );
        let message = format!(
            "the upstream answered (status {}) in an encoding this server cannot read: {shown:?} \
             (readable: {})",
            res.status().as_u16(),
            DECODABLE.join(", ")
        );
        let local = error_response(*this.flavor, StatusCode::BAD_GATEWAY, &message);
        let (mut parts, body) = local.into_parts();
        parts.extensions = std::mem::take(res.extensions_mut());
        // Ours, not the upstream's: the key layer neither charges the key nor retries it (the
        // answer was a whole, billed generation that another attempt would only repeat).
        parts
            .extensions
            .insert(Outcome::Failure(FailureClass::Local {
                status: StatusCode::BAD_GATEWAY,
                reason: "upstream answer in an encoding that cannot be read",
            }));
        Poll::Ready(Ok(Response::from_parts(parts, ResponseBody::full(body))))
    }
}

/// Decodes `res` as [`Decode`] would (any of [`DECODABLE`]; other encodings stay as they are,
/// still labelled), for code outside a tower stack, such as a reqwest-middleware `Middleware`.
pub fn decode_response<B>(res: Response<B>) -> Response<DecompressionBody<B>>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let mut res = Some(res);
    let mut decompression = Decompression::new(tower::service_fn(move |_: Request<()>| {
        std::future::ready(res.take().ok_or(()))
    }));
    let mut future = std::pin::pin!(decompression.call(Request::new(())));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        // The inner future is ready at once, and Decompression's own adds no wait.
        Poll::Ready(Ok(decoded)) => decoded,
        Poll::Ready(Err(())) | Poll::Pending => unreachable!("a ready future answered once"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_missing_encodings_are_plain() {
        let mut headers = HeaderMap::new();
        assert!(!is_encoded(&headers));
        for plain in ["identity", "IDENTITY", " identity , identity", ""] {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(plain));
            assert!(!is_encoded(&headers), "{plain:?}");
        }
        for encoded in ["gzip", "br", "identity, gzip", "x-gzip", "compress"] {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoded));
            assert!(is_encoded(&headers), "{encoded:?}");
        }
    }
}
