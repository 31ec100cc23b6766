//! Non-streamed answers are sent whole, with a `Content-Length`.
//!
//! Gemini sends a `generateContent` answer only once it is complete, but with chunked
//! framing; passed through as it came, the client gets the answer, then a separate
//! zero-length chunk that ends it: one more write for the proxy and one more read (and
//! wake-up) for the client per request. Collected first (it is all there already), it goes out
//! in one write with a `Content-Length`, and an upstream that breaks off mid-answer gets the
//! client a clear 502 instead of a truncated body.
//!
//! Streams are never held: [`WholeAnswerLayer`] passes `streamGenerateContent` (SSE or Gemini's
//! JSON-array stream) and answers to `HEAD` through, and an SSE answer (`text/event-stream`, as OpenAI-style
//! `"stream": true` chats get) passes through event by event here too. An
//! answer larger than [`LIMIT`] is passed on as it comes once the limit is reached, so memory
//! stays bounded.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{header, HeaderMap, Response, StatusCode};
use bytes::{Bytes, BytesMut};
use gemini_balance::api_error::{error_response, ApiFlavor};
use gemini_balance::body::set_body_length;
use gemini_balance::ext::{Operation, RequestInfo};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;

/// Largest answer collected before it is sent (answers with inline images can be megabytes).
pub const LIMIT: usize = 1024 * 1024;

/// `response` with its body collected and a `Content-Length`, unless it is an SSE stream, has
/// no body by its status (204, 304) or outgrows [`LIMIT`]; a body that fails while collected
/// becomes a 502 in `flavor`'s format. Not for answers to `HEAD` (their length is not their
/// body's).
pub async fn whole(flavor: ApiFlavor, response: Response<Body>) -> Response<Body> {
    let status = response.status();
    if is_event_stream(response.headers())
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return response;
    }
    let (mut parts, mut body) = response.into_parts();
    let mut chunks: VecDeque<Frame<Bytes>> = VecDeque::new();
    let mut len = 0usize;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                let data_len = frame.data_ref().map(Bytes::len);
                chunks.push_back(frame);
                match data_len {
                    Some(n) if len + n <= LIMIT => len += n,
                    // Too large to hold, or trailers: the rest passes through as it comes.
                    _ => {
                        let rest = Prefixed { chunks, rest: body };
                        return Response::from_parts(parts, Body::new(rest));
                    }
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the upstream answer broke off");
                let mut failed = error_response(
                    flavor,
                    StatusCode::BAD_GATEWAY,
                    "the upstream answer broke off before it was complete",
                )
                .map(Body::from);
                // The key and attempt count stay for the request's log line.
                *failed.extensions_mut() = parts.extensions;
                return failed;
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
    Response::from_parts(parts, Body::from(bytes))
}

/// Applies [`whole`] inside a stack, below the usage layer, so that the request's record says
/// what the client got (a `502` for an answer that broke off, not the upstream's `200`).
///
/// Streamed routes (`streamGenerateContent`, SSE answers) and answers to `HEAD` pass through.
#[derive(Debug, Clone, Copy, Default)]
pub struct WholeAnswerLayer;

impl<S> tower::Layer<S> for WholeAnswerLayer {
    type Service = WholeAnswer<S>;

    fn layer(&self, inner: S) -> WholeAnswer<S> {
        WholeAnswer { inner }
    }
}

/// See [`WholeAnswerLayer`].
#[derive(Debug, Clone)]
pub struct WholeAnswer<S> {
    inner: S,
}

type WholeFuture<E> = Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, E>> + Send>>;

impl<S, ReqBody> tower::Service<axum::http::Request<ReqBody>> for WholeAnswer<S>
where
    S: tower::Service<axum::http::Request<ReqBody>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = WholeAnswerFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<ReqBody>) -> Self::Future {
        // The handler attached the request's description once; read it, not the path.
        let info = RequestInfo::of(&req);
        let streamed = req.method() == axum::http::Method::HEAD
            || info.operation == Operation::StreamGenerateContent;
        let flavor = info.flavor;
        let future = self.inner.call(req);
        if streamed {
            return WholeAnswerFuture::Passing { future };
        }
        WholeAnswerFuture::Collecting {
            future: Box::pin(async move {
                let response = future.await?;
                Ok(whole(flavor, response).await)
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`WholeAnswer`]: the inner future as it is, or collecting its answer.
    #[project = WholeAnswerProj]
    pub enum WholeAnswerFuture<F, E> {
        /// A stream or an answer to `HEAD`.
        Passing { #[pin] future: F },
        /// A non-streamed answer, collected whole.
        Collecting { future: WholeFuture<E> },
    }
}

impl<F, E> std::future::Future for WholeAnswerFuture<F, E>
where
    F: std::future::Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            WholeAnswerProj::Passing { future } => future.poll(cx),
            WholeAnswerProj::Collecting { future } => future.as_mut().poll(cx),
        }
    }
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| gemini_balance::sse::is_event_stream(v.as_bytes()))
}

/// The frames already read, then the rest of the body.
struct Prefixed {
    chunks: VecDeque<Frame<Bytes>>,
    rest: Body,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Some(frame) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let held: u64 = self
            .chunks
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + held);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + held);
        }
        hint
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

    fn streamed(content_type: &str, pieces: Vec<Result<Bytes, std::io::Error>>) -> Response<Body> {
        Response::builder()
            .header(header::CONTENT_TYPE, content_type)
            .header(header::TRANSFER_ENCODING, "chunked")
            .body(Body::new(Pieces(pieces.into())))
            .unwrap()
    }

    async fn read(response: Response<Body>) -> Bytes {
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_json_answer_is_sent_whole_with_its_length() {
        let pieces = vec![
            Ok(Bytes::from_static(b"{\"a\"")),
            Ok(Bytes::from_static(b":1}")),
        ];
        let whole = whole(ApiFlavor::Gemini, streamed("application/json", pieces)).await;
        assert_eq!(whole.headers()[header::CONTENT_LENGTH], "7");
        assert!(!whole.headers().contains_key(header::TRANSFER_ENCODING));
        assert_eq!(http_body::Body::size_hint(whole.body()).exact(), Some(7));
        assert_eq!(read(whole).await, "{\"a\":1}");
    }

    #[tokio::test]
    async fn an_event_stream_is_not_held() {
        let pieces = vec![Ok(Bytes::from_static(b"data: 1\n\n"))];
        let out = whole(ApiFlavor::Gemini, streamed("text/event-stream", pieces)).await;
        assert!(!out.headers().contains_key(header::CONTENT_LENGTH));
        assert_eq!(http_body::Body::size_hint(out.body()).exact(), None);
        assert_eq!(read(out).await, "data: 1\n\n");
    }

    #[tokio::test]
    async fn a_large_answer_passes_on_once_past_the_limit() {
        let big = Bytes::from(vec![b'x'; LIMIT - 10]);
        let pieces = vec![
            Ok(big.clone()),
            Ok(Bytes::from_static(b"0123456789abc")),
            Ok(Bytes::from_static(b"tail")),
        ];
        let out = whole(ApiFlavor::Gemini, streamed("application/json", pieces)).await;
        assert!(!out.headers().contains_key(header::CONTENT_LENGTH));
        let body = read(out).await;
        assert_eq!(body.len(), LIMIT - 10 + 13 + 4);
        assert!(body.ends_with(b"0123456789abctail"));
    }

    #[tokio::test]
    async fn an_answer_without_a_body_keeps_its_headers() {
        let mut answer = streamed("application/json", vec![]);
        *answer.status_mut() = StatusCode::NO_CONTENT;
        let out = whole(ApiFlavor::Gemini, answer).await;
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
        answer
            .extensions_mut()
            .insert(gemini_balance::ext::Attempts(2));
        let out = whole(ApiFlavor::OpenAi, answer).await;
        assert_eq!(out.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            out.extensions().get::<gemini_balance::ext::Attempts>(),
            Some(&gemini_balance::ext::Attempts(2)),
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
