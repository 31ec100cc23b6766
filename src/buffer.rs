//! Bounded reading of request bodies, for the layers that must see a JSON body whole (model
//! rules, pseudo streaming, parameter filter, OpenAI conversion, retry), read once per request,
//! and fixing the framing headers after a rewrite.
//!
//! The first layer that needs the body whole reads it ([`ReadBody`]) and hands it inward as
//! bytes, with a [`Buffered`] extension holding the same bytes (and their parse, when it made
//! one). A layer below finds the extension and uses it instead of reading and parsing again. A
//! layer that replaces the body replaces the extension with it ([`Buffered::rewritten`]). The
//! body itself is still polled (one frame of the same bytes, no copy), and the extension is
//! used only when that frame is the very allocation it holds: a layer of yours that swapped the
//! body, even for one of the same length, is read and parsed afresh, never sent as the old one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{header, request::Parts, HeaderMap, HeaderValue, Request};
use http_body::Body;
use pin_project_lite::pin_project;
use serde_json::Value;

/// Why a body could not be collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CollectError {
    /// It is larger than the limit.
    TooLarge,
    /// Reading it failed.
    Read,
}

pin_project! {
    /// Reads a whole body of at most `limit` bytes: the crate's one bounded body reader
    /// (request bodies through [`ReadBody`], answers, and error prefixes through
    /// [`ReadPrefix`]). A body of one frame is not copied.
    pub(crate) struct CollectLimited<B> {
        #[pin]
        body: B,
        first: Option<Bytes>,
        more: Option<BytesMut>,
        limit: usize,
        // On `TooLarge`, keep the first `limit` bytes (for `held`).
        keep_prefix: bool,
    }
}

impl<B> CollectLimited<B> {
    pub(crate) fn new(body: B, limit: usize) -> Self {
        CollectLimited {
            body,
            first: None,
            more: None,
            limit,
            keep_prefix: false,
        }
    }

    /// The bytes read so far (after `TooLarge` in prefix mode: the first `limit` bytes).
    fn held(self: Pin<&mut Self>) -> Bytes {
        let this = self.project();
        match (this.first.take(), this.more.take()) {
            (_, Some(buf)) => buf.freeze(),
            (Some(first), None) => first,
            (None, None) => Bytes::new(),
        }
    }
}

/// Appends `data` to what is held, without copying a first frame.
fn hold(first: &mut Option<Bytes>, more: &mut Option<BytesMut>, data: Bytes) {
    match (first.take(), more.as_mut()) {
        (None, None) => *first = Some(data),
        (Some(head), None) => {
            let mut buf = BytesMut::with_capacity(head.len() + data.len());
            buf.extend_from_slice(&head);
            buf.extend_from_slice(&data);
            *more = Some(buf);
        }
        (_, Some(buf)) => buf.extend_from_slice(&data),
    }
}

impl<B> Future for CollectLimited<B>
where
    B: Body<Data = Bytes>,
{
    type Output = Result<Bytes, CollectError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match ready!(this.body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers: not part of a JSON body
                    };
                    if data.is_empty() {
                        continue;
                    }
                    let held = this.first.as_ref().map_or(0, Bytes::len)
                        + this.more.as_ref().map_or(0, BytesMut::len);
                    if held + data.len() > *this.limit {
                        if *this.keep_prefix {
                            let room = *this.limit - held;
                            hold(this.first, this.more, data.slice(..room));
                        }
                        return Poll::Ready(Err(CollectError::TooLarge));
                    }
                    hold(this.first, this.more, data);
                }
                Some(Err(_)) => return Poll::Ready(Err(CollectError::Read)),
                None => {
                    let held = match (this.first.take(), this.more.take()) {
                        (_, Some(buf)) => buf.freeze(),
                        (Some(first), None) => first,
                        (None, None) => Bytes::new(),
                    };
                    return Poll::Ready(Ok(held));
                }
            }
        }
    }
}

/// Counts, in tests, how often a request body is read whole and parsed as JSON, so that a test
/// can check that a request through the whole stack is read and parsed at most once.
pub(crate) mod counts {
    #[cfg(test)]
    thread_local! {
        static COLLECTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        static PARSES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// A request body is being read whole.
    #[inline]
    pub(crate) fn collect() {
        #[cfg(test)]
        COLLECTS.with(|c| c.set(c.get() + 1));
    }

    /// A request body is being parsed as JSON (a `Value` built, or a scan through serde).
    #[inline]
    pub(crate) fn parse() {
        #[cfg(test)]
        PARSES.with(|c| c.set(c.get() + 1));
    }

    /// This thread's counts since the last call: (reads, parses).
    #[cfg(test)]
    pub(crate) fn take() -> (usize, usize) {
        (
            COLLECTS.with(|c| c.replace(0)),
            PARSES.with(|c| c.replace(0)),
        )
    }
}

pin_project! {
    /// The first `limit` bytes of a body, all of it when shorter, and whether it was cut (the
    /// rest is left unread). A read error ends it with the bytes read so far.
    pub(crate) struct ReadPrefix<B> {
        #[pin]
        collect: CollectLimited<B>,
    }
}

/// A body was longer than the prefix read of it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Cut;

impl<B> ReadPrefix<B> {
    pub(crate) fn new(body: B, limit: usize) -> Self {
        let mut collect = CollectLimited::new(body, limit);
        collect.keep_prefix = true;
        ReadPrefix { collect }
    }
}

impl<B> Future for ReadPrefix<B>
where
    B: Body<Data = Bytes>,
{
    type Output = (Bytes, Option<Cut>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut collect = self.project().collect;
        Poll::Ready(match ready!(collect.as_mut().poll(cx)) {
            Ok(bytes) => (bytes, None),
            Err(CollectError::TooLarge) => (collect.held(), Some(Cut)),
            Err(CollectError::Read) => (collect.held(), None),
        })
    }
}

/// A request body read whole by a layer: its bytes and, when a layer parsed exactly these
/// bytes, the parse. Travels as a request extension next to a body built from the same bytes.
#[derive(Clone)]
pub(crate) struct Buffered {
    bytes: Bytes,
    json: Option<Arc<Value>>,
}

impl std::fmt::Debug for Buffered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffered")
            .field("len", &self.bytes.len())
            .field("parsed", &self.json.is_some())
            .finish()
    }
}

impl Buffered {
    /// Bytes as they came (no parse yet).
    pub(crate) fn new(bytes: Bytes) -> Self {
        Buffered { bytes, json: None }
    }

    /// A body that replaces the request's: `bytes`, and `json` when they are its serialization.
    /// Fixes the framing headers in `headers`.
    pub(crate) fn rewritten(headers: &mut HeaderMap, bytes: Bytes, json: Option<Value>) -> Self {
        set_body_length(headers, bytes.len());
        Buffered {
            bytes,
            json: json.map(Arc::new),
        }
    }

    pub(crate) fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The parse a layer above left, owned (copied only if something else still shares it).
    pub(crate) fn take_json(&mut self) -> Option<Value> {
        self.json.take().map(Arc::unwrap_or_clone)
    }

    /// Leaves `json`, the parse of these very bytes (unchanged), for the layers below.
    pub(crate) fn with_json(mut self, json: Value) -> Self {
        self.json = Some(Arc::new(json));
        self
    }

    /// Only the bytes: what a layer below needs that sends them on and reads nothing.
    pub(crate) fn without_json(mut self) -> Self {
        self.json = None;
        self
    }

    /// The request again, with a body of these bytes and this as its extension.
    pub(crate) fn into_request<B: From<Bytes>>(self, mut parts: Parts) -> Request<B> {
        let body = B::from(self.bytes.clone());
        parts.extensions.insert(self);
        Request::from_parts(parts, body)
    }
}

/// Parses a request body as JSON (counted in tests).
pub(crate) fn parse_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    counts::parse();
    serde_json::from_slice(bytes)
}

pin_project! {
    /// A request body, whole and at most `limit` bytes: the one a layer above read (see
    /// [`Buffered`]), or read now.
    #[project = ReadBodyProj]
    pub(crate) enum ReadBody<B> {
        Reading { #[pin] collect: CollectLimited<B>, reuse: Option<Buffered> },
        Ready { result: Option<Result<Buffered, CollectError>> },
    }
}

impl<B: Body> ReadBody<B> {
    /// Reads `body` (at most `limit` bytes) and takes `parts`' [`Buffered`] extension, with its
    /// parse, when the body turns out to be the very bytes it holds. A declared
    /// `Content-Length` over `limit` fails at once.
    pub(crate) fn new(parts: &mut Parts, body: B, limit: usize) -> Self {
        let reuse = parts.extensions.remove::<Buffered>();
        if declared_length(&parts.headers).is_some_and(|len| len > limit as u64) {
            return ReadBody::Ready {
                result: Some(Err(CollectError::TooLarge)),
            };
        }
        ReadBody::Reading {
            collect: CollectLimited::new(body, limit),
            reuse,
        }
    }
}

impl<B> Future for ReadBody<B>
where
    B: Body<Data = Bytes>,
{
    type Output = Result<Buffered, CollectError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ReadBodyProj::Reading { collect, reuse } => {
                let bytes = ready!(collect.poll(cx))?;
                Poll::Ready(Ok(match reuse.take() {
                    // The same allocation, so the same bytes: their parse holds too.
                    Some(buffered)
                        if buffered.bytes().as_ptr() == bytes.as_ptr()
                            && buffered.len() == bytes.len() =>
                    {
                        buffered
                    }
                    _ => {
                        counts::collect();
                        Buffered::new(bytes)
                    }
                }))
            }
            ReadBodyProj::Ready { result } => match result.take() {
                Some(result) => Poll::Ready(result),
                None => Poll::Pending, // polled after completion
            },
        }
    }
}

/// The `Content-Length` the client declared, if it is a number.
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// After a body (request or answer) was replaced by `len` bytes held whole: the right
/// `Content-Length`, no `Transfer-Encoding`.
///
/// Every layer of this crate that replaces a body fixes the headers with this.
pub fn set_body_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

/// `true` when a `Content-Type` (if any) says JSON: `application/json`, `…+json`, `text/json`.
/// A request without `Content-Type` counts as JSON (SDKs and curl users often omit it).
pub(crate) fn is_json_or_unlabelled(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::Full;
    use std::collections::VecDeque;
    use std::convert::Infallible;

    /// A body of the given frames, one per poll.
    struct Frames(VecDeque<Bytes>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn frames(parts: &[&'static [u8]]) -> Frames {
        Frames(parts.iter().map(|p| Bytes::from_static(p)).collect())
    }

    #[tokio::test]
    async fn collects_within_the_limit_and_refuses_beyond() {
        let one = CollectLimited::new(Full::new(Bytes::from_static(b"{\"a\":1}")), 7).await;
        assert_eq!(one, Ok(Bytes::from_static(b"{\"a\":1}")));
        let two = CollectLimited::new(frames(&[b"{\"a\"", b"", b":1}"]), 7).await;
        assert_eq!(two, Ok(Bytes::from_static(b"{\"a\":1}")));
        let over = CollectLimited::new(frames(&[b"{\"a\"", b":1}"]), 6).await;
        assert_eq!(over, Err(CollectError::TooLarge));
        let empty = CollectLimited::new(frames(&[]), 0).await;
        assert_eq!(empty, Ok(Bytes::new()));
    }

    #[tokio::test]
    async fn a_prefix_is_cut_at_the_limit() {
        let whole = ReadPrefix::new(frames(&[b"abc", b"def"]), 6).await;
        assert_eq!(whole, (Bytes::from_static(b"abcdef"), None));
        let cut = ReadPrefix::new(frames(&[b"abc", b"defgh", b"ij"]), 5).await;
        assert_eq!(cut, (Bytes::from_static(b"abcde"), Some(Cut)));
        let one = ReadPrefix::new(Full::new(Bytes::from_static(b"abcdefgh")), 3).await;
        assert_eq!(one, (Bytes::from_static(b"abc"), Some(Cut)));
    }

    #[tokio::test]
    async fn a_body_read_above_is_not_read_again() {
        let (parts, _) = Request::new(()).into_parts();
        let bytes = Bytes::from_static(b"{\"a\":1}");
        let req: Request<Full<Bytes>> = Buffered::new(bytes.clone()).into_request(parts);
        let (mut parts, body) = req.into_parts();
        counts::take();
        let read = ReadBody::new(&mut parts, body, 100).await.unwrap();
        assert_eq!(read.bytes(), &bytes);
        assert_eq!(counts::take(), (0, 0));
        // A body swapped by a layer that did not know of the extension is read.
        let req: Request<Full<Bytes>> = Buffered::new(bytes.clone()).into_request(parts);
        let (mut parts, _) = req.into_parts();
        let other = Full::new(Bytes::from_static(b"{\"b\":22}"));
        let read = ReadBody::new(&mut parts, other, 100).await.unwrap();
        assert_eq!(read.bytes(), &Bytes::from_static(b"{\"b\":22}"));
        assert_eq!(counts::take(), (1, 0));
        // Even one of the same length: its own bytes, not the extension's.
        let parsed = Buffered::new(bytes.clone());
        let req: Request<Full<Bytes>> = parsed.into_request(parts);
        let (mut parts, _) = req.into_parts();
        let same_length = Full::new(Bytes::from_static(b"{\"a\":2}"));
        let read = ReadBody::new(&mut parts, same_length, 100).await.unwrap();
        assert_eq!(read.bytes(), &Bytes::from_static(b"{\"a\":2}"));
        assert_eq!(counts::take(), (1, 0));
        // The limit of the layer below still holds.
        let req: Request<Full<Bytes>> = Buffered::new(bytes).into_request(parts);
        let (mut parts, body) = req.into_parts();
        let read = ReadBody::new(&mut parts, body, 3).await;
        assert_eq!(read.err(), Some(CollectError::TooLarge));
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(is_json_or_unlabelled(&h));
        for (value, json) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/vnd.api+json", true),
            ("multipart/form-data; boundary=x", false),
            ("text/plain", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json_or_unlabelled(&h), json, "{value}");
        }
    }
}
