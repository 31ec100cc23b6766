//! [`WholeAnswerLayer`]: non-streamed answers are sent whole, with a `Content-Length`.
//!
//! Gemini sends a `generateContent` answer only once it is complete, but with chunked
//! framing; passed through as it came, the client gets the answer, then a separate
//! zero-length chunk that ends it: one more write for your server and one more read (and
//! wake-up) for the client per request. Collected first (it is all there already), it goes out
//! in one write with a `Content-Length`, and an upstream that breaks off mid-answer gets the
//! client a clear `502` in the route's API format instead of a truncated body.
//!
//! Streams are never held: `streamGenerateContent` (SSE or Gemini's JSON-array stream) and
//! answers to `HEAD` pass through, and so does any SSE answer (`text/event-stream`, as OpenAI's
//! `"stream": true` chats get). An answer larger than the limit ([`DEFAULT_LIMIT`], 1 MiB) is
//! passed on as it comes once the limit is reached, so memory stays bounded.
//!
//! Put it below [`UsageLayer`](crate::usage::UsageLayer), so that the usage record says what the
//! client got (the `502` of an answer that broke off, not the upstream's `200`).
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use gemini_balance::whole_answer::WholeAnswerLayer;
//! use http::{header, Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let upstream = tower::service_fn(|_req: Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(
//!         Response::builder()
//!             .header(header::CONTENT_TYPE, "application/json")
//!             // Gemini's answers come chunked; this one is a single piece.
//!             .header(header::TRANSFER_ENCODING, "chunked")
//!             .body(Full::new(Bytes::from_static(b"{\"a\":1}")))
//!             .unwrap(),
//!     )
//! });
//! let service = WholeAnswerLayer::new().layer(upstream);
//! let req = Request::post("/v1beta/models/gemini-2.5-flash:generateContent").body(()).unwrap();
//! let res = service.oneshot(req).await.unwrap();
//! assert_eq!(res.headers()[header::CONTENT_LENGTH], "7");
//! assert!(!res.headers().contains_key(header::TRANSFER_ENCODING));
//! assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "{\"a\":1}");
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::api_error::{error_response, ApiFlavor};
use crate::buffer::set_body_length;
use crate::ext::{Operation, RequestInfo};
use crate::BoxError;

/// Largest answer collected before it is sent (answers with inline images can be megabytes).
pub const DEFAULT_LIMIT: usize = 1024 * 1024;

/// Applies [`WholeAnswer`]; see the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct WholeAnswerLayer {
    limit: usize,
}

impl Default for WholeAnswerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl WholeAnswerLayer {
    /// Answers up to [`DEFAULT_LIMIT`] are collected.
    pub fn new() -> Self {
        WholeAnswerLayer {
            limit: DEFAULT_LIMIT,
        }
    }

    /// Answers up to `bytes` are collected; a larger one passes on as it comes.
    pub fn limit(mut self, bytes: usize) -> Self {
        self.limit = bytes;
        self
    }
}

impl<S> Layer<S> for WholeAnswerLayer {
    type Service = WholeAnswer<S>;

    fn layer(&self, inner: S) -> WholeAnswer<S> {
        WholeAnswer {
            inner,
            limit: self.limit,
        }
    }
}

/// Sends non-streamed answers whole; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct WholeAnswer<S> {
    inner: S,
    limit: usize,
}

impl<S, ReqBody, B> Service<Request<ReqBody>> for WholeAnswer<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<WholeBody<B>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, B, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let info = RequestInfo::of(&req);
        let streamed =
            req.method() == Method::HEAD || info.operation == Operation::StreamGenerateContent;
        let flavor = info.flavor;
        let limit = self.limit;
        let future = self.inner.call(req);
        if streamed {
            return ResponseFuture {
                state: State::Passing { future },
            };
        }
        ResponseFuture {
            state: State::Collecting {
                future: Box::pin(async move {
                    let response = future.await?;
                    Ok(whole(flavor, response, limit).await)
                }),
            },
        }
    }
}

type Collecting<B, E> = Pin<Box<dyn Future<Output = Result<Response<WholeBody<B>>, E>> + Send>>;

pin_project! {
    /// Response future of [`WholeAnswer`]: the inner future as it is, or collecting its answer.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        state: State<F, B, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B, E> {
        Passing { #[pin] future: F },
        Collecting { future: Collecting<B, E> },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<WholeBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Passing { future } => future
                .poll(cx)
                .map(|res| res.map(|res| res.map(|body| WholeBody::passing(body)))),
            StateProj::Collecting { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

/// `response` with its body collected and a `Content-Length`, unless it is an SSE stream, has
/// no body by its status (204, 304) or outgrows `limit`; a body that fails while collected
/// becomes a 502 in `flavor`'s format.
async fn whole<B>(flavor: ApiFlavor, response: Response<B>, limit: usize) -> Response<WholeBody<B>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let status = response.status();
    if is_event_stream(response.headers())
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return response.map(|body| WholeBody::passing(body));
    }
    let (mut parts, body) = response.into_parts();
    let mut body = Box::pin(body);
    let mut chunks: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut len = 0usize;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                let data_len = frame.data_ref().map(Bytes::len);
                chunks.push_back(frame);
                match data_len {
                    Some(n) if len + n <= limit => len += n,
                    // Too large to hold, or trailers: the rest passes through as it comes.
                    _ => {
                        return Response::from_parts(
                            parts,
                            WholeBody {
                                kind: Kind::Prefixed { chunks, rest: body },
                            },
                        );
                    }
                }
            }
            Some(Err(e)) => {
                let e: BoxError = e.into();
                tracing::warn!(error = %e, "the upstream answer broke off");
                let failed = error_response(
                    flavor,
                    StatusCode::BAD_GATEWAY,
                    "the upstream answer broke off before it was complete",
                );
                let (mut failed_parts, bytes) = failed.into_parts();
                // The key and attempt count stay for the request's log line.
                failed_parts.extensions = parts.extensions;
                return Response::from_parts(failed_parts, WholeBody::full(bytes));
            }
        }
    }
    let bytes = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks
            .pop_front()
            .and_then(|frame| frame.into_data().ok())
            .unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(len);
            for frame in chunks {
                if let Ok(data) = frame.into_data() {
                    all.extend_from_slice(&data);
                }
            }
            all.freeze()
        }
    };
    set_body_length(&mut parts.headers, bytes.len());
    Response::from_parts(parts, WholeBody::full(bytes))
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| crate::sse::is_event_stream(v.as_bytes()))
}

pin_project! {
    /// Response body of [`WholeAnswer`]: the answer whole, or passed on as it comes (a stream,
    /// or an answer past the limit after the part already read).
    pub struct WholeBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        // A stream, passed through untouched (no allocation on this path).
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
        // Frames already read, then the rest (boxed: it was polled through `BodyExt::frame`).
        Prefixed { chunks: VecDeque<Frame<Bytes>>, rest: Pin<Box<B>> },
    }
}

impl<B> WholeBody<B> {
    fn full(bytes: Bytes) -> Self {
        WholeBody {
            kind: Kind::Full {
                data: (!bytes.is_empty()).then_some(bytes),
            },
        }
    }

    fn passing(body: B) -> Self {
        WholeBody {
            kind: Kind::Inner { body },
        }
    }
}

impl<B> fmt::Debug for WholeBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WholeBody")
    }
}

impl<B> Body for WholeBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Prefixed { chunks, rest } => match chunks.pop_front() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None => rest.as_mut().poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
            Kind::Prefixed { chunks, rest } => chunks.is_empty() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Prefixed { chunks, rest } => {
                let held: u64 = chunks
                    .iter()
                    .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
                    .sum();
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + held);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + held);
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body of the given pieces, one frame each, of unknown length (as hyper's `Incoming`).
    struct Pieces(VecDeque<Result<Bytes, std::io::Error>>);

    impl http_body::Body for Pieces {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(self.0.pop_front().map(|r| r.map(Frame::data)))
        }
    }

    fn streamed(
        content_type: &str,
        pieces: Vec<Result<Bytes, std::io::Error>>,
    ) -> Response<Pieces> {
        Response::builder()
            .header(header::CONTENT_TYPE, content_type)
            .header(header::TRANSFER_ENCODING, "chunked")
            .body(Pieces(pieces.into()))
            .unwrap()
    }

    async fn read(response: Response<WholeBody<Pieces>>) -> Bytes {
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_json_answer_is_sent_whole_with_its_length() {
        let pieces = vec![
            Ok(Bytes::from_static(b"{\"a\"")),
            Ok(Bytes::from_static(b":1}")),
        ];
        let whole = whole(
            ApiFlavor::Gemini,
            streamed("application/json", pieces),
            DEFAULT_LIMIT,
        )
        .await;
        assert_eq!(whole.headers()[header::CONTENT_LENGTH], "7");
        assert!(!whole.headers().contains_key(header::TRANSFER_ENCODING));
        assert_eq!(http_body::Body::size_hint(whole.body()).exact(), Some(7));
        assert_eq!(read(whole).await, "{\"a\":1}");
    }

    #[tokio::test]
    async fn an_event_stream_is_not_held() {
        let pieces = vec![Ok(Bytes::from_static(b"data: 1\n\n"))];
        let out = whole(
            ApiFlavor::Gemini,
            streamed("text/event-stream", pieces),
            DEFAULT_LIMIT,
        )
        .await;
        assert!(!out.headers().contains_key(header::CONTENT_LENGTH));
        assert_eq!(http_body::Body::size_hint(out.body()).exact(), None);
        assert_eq!(read(out).await, "data: 1\n\n");
    }

    #[tokio::test]
    async fn a_large_answer_passes_on_once_past_the_limit() {
        let big = Bytes::from(vec![b'x'; DEFAULT_LIMIT - 10]);
        let pieces = vec![
            Ok(big.clone()),
            Ok(Bytes::from_static(b"0123456789abc")),
            Ok(Bytes::from_static(b"tail")),
        ];
        let out = whole(
            ApiFlavor::Gemini,
            streamed("application/json", pieces),
            DEFAULT_LIMIT,
        )
        .await;
        assert!(!out.headers().contains_key(header::CONTENT_LENGTH));
        let body = read(out).await;
        assert_eq!(body.len(), DEFAULT_LIMIT - 10 + 13 + 4);
        assert!(body.ends_with(b"0123456789abctail"));
    }

    #[tokio::test]
    async fn an_answer_without_a_body_keeps_its_headers() {
        let mut answer = streamed("application/json", vec![]);
        *answer.status_mut() = StatusCode::NO_CONTENT;
        let out = whole(ApiFlavor::Gemini, answer, DEFAULT_LIMIT).await;
        assert!(!out.headers().contains_key(header::CONTENT_LENGTH));
        assert_eq!(out.headers()[header::TRANSFER_ENCODING], "chunked");
    }

    #[tokio::test]
    async fn a_body_that_breaks_off_is_a_502_in_the_flavor_of_the_route() {
        let pieces = vec![
            Ok(Bytes::from_static(b"{\"candidates\":")),
            Err(std::io::Error::other("connection reset")),
        ];
        let mut answer = streamed("application/json", pieces);
        answer.extensions_mut().insert(crate::ext::Attempts(2));
        let out = whole(ApiFlavor::OpenAi, answer, DEFAULT_LIMIT).await;
        assert_eq!(out.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            out.extensions().get::<crate::ext::Attempts>(),
            Some(&crate::ext::Attempts(2)),
            "what the log line reports"
        );
        let body: serde_json::Value = serde_json::from_slice(&read(out).await).unwrap();
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("broke off"));
        assert!(
            body["error"]["type"].is_string(),
            "OpenAI's error shape: {body}"
        );
    }
}
