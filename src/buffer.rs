//! Bounded reading of request bodies, for the layers that must see a JSON body whole
//! (parameter filter, pseudo streaming), and fixing the framing headers after a rewrite.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue};
use http_body::Body;
use pin_project_lite::pin_project;

/// Why a body could not be collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CollectError {
    /// It is larger than the limit.
    TooLarge,
    /// Reading it failed.
    Read,
}

pin_project! {
    /// Reads a whole body of at most `limit` bytes. A body of one frame is not copied.
    pub(crate) struct CollectLimited<B> {
        #[pin]
        body: B,
        first: Option<Bytes>,
        more: Option<BytesMut>,
        limit: usize,
    }
}

impl<B> CollectLimited<B> {
    pub(crate) fn new(body: B, limit: usize) -> Self {
        CollectLimited {
            body,
            first: None,
            more: None,
            limit,
        }
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
                        return Poll::Ready(Err(CollectError::TooLarge));
                    }
                    match (this.first.take(), this.more.as_mut()) {
                        (None, None) => *this.first = Some(data),
                        (Some(first), None) => {
                            let mut buf = BytesMut::with_capacity(first.len() + data.len());
                            buf.extend_from_slice(&first);
                            buf.extend_from_slice(&data);
                            *this.more = Some(buf);
                        }
                        (_, Some(buf)) => buf.extend_from_slice(&data),
                    }
                }
                Some(Err(_)) => return Poll::Ready(Err(CollectError::Read)),
                None => {
                    let bytes = match (this.first.take(), this.more.take()) {
                        (_, Some(buf)) => buf.freeze(),
                        (Some(first), None) => first,
                        (None, None) => Bytes::new(),
                    };
                    return Poll::Ready(Ok(bytes));
                }
            }
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

/// After the body was replaced by `len` bytes: the right `Content-Length`, no
/// `Transfer-Encoding` (the new body is whole).
pub(crate) fn set_body_length(headers: &mut HeaderMap, len: usize) {
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
