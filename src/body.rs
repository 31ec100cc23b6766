//! The response body of this crate's layers: the inner body, or bytes we hold ourselves.
//!
//! Layers that answer locally (a 413, a 503 "no key") or that had to read an error body to
//! classify and redact it hand back a [`ResponseBody`]; everything else flows through untouched,
//! frame by frame.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pub use crate::buffer::set_body_length;

pin_project! {
    /// A body that is either the inner service's body or bytes held by a layer.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Redacting { #[pin] body: crate::redact::RedactBody<B> },
        Full { data: Option<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    /// The inner body, passed through unchanged.
    pub fn inner(body: B) -> Self {
        ResponseBody {
            kind: Kind::Inner { body },
        }
    }

    /// The inner body, passed through with every form of a secret overwritten as it streams
    /// (see [`RedactBody`](crate::redact::RedactBody)).
    pub fn redacting(body: B, forms: crate::redact::SecretForms) -> Self {
        ResponseBody {
            kind: Kind::Redacting {
                body: crate::redact::RedactBody::new(body, forms),
            },
        }
    }

    /// Bytes we already hold (a local answer, or an error body read in full).
    pub fn full(data: Bytes) -> Self {
        ResponseBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }
}

/// Bytes we hold (a request body [`Retry`](crate::retry::Retry) can rebuild for each attempt).
impl<B> From<Bytes> for ResponseBody<B> {
    fn from(data: Bytes) -> Self {
        ResponseBody::full(data)
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Redacting { body } => body.poll_frame(cx),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Redacting { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Redacting { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// Error bodies are read this far (the one bounded reader, in `buffer`).
pub(crate) use crate::buffer::ReadPrefix;
