//! [`ReplayBody`]: a request body `Retry` can rebuild, around any body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// A request body that [`Retry`](super::Retry) can rebuild for each attempt: the caller's
    /// body on the way in, the bytes `Retry` buffered on the way out (`From<Bytes>`).
    ///
    /// `Retry` needs `From<Bytes>` of its request body; axum's and reqwest's bodies have it,
    /// tonic's does not. Map the requests into a `ReplayBody` above `Retry`, and back into the
    /// inner service's body type below it:
    ///
    /// ```
    /// use bytes::Bytes;
    /// use gemini_balance::retry::{ReplayBody, RetryLayer};
    /// use gemini_balance::BoxError;
    /// use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
    /// use tower::{ServiceBuilder, ServiceExt};
    ///
    /// // A body type without `From<Bytes>`, as tonic's.
    /// type Opaque = UnsyncBoxBody<Bytes, BoxError>;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// // Stands in for a tonic `Channel`: echoes the request body.
    /// let channel = tower::service_fn(|req: http::Request<Opaque>| async move {
    ///     let body = req.into_body().collect().await?.to_bytes();
    ///     Ok::<_, BoxError>(http::Response::new(Full::new(body)))
    /// });
    /// let stack = ServiceBuilder::new()
    ///     .map_request(|req: http::Request<Opaque>| req.map(ReplayBody::new))
    ///     .layer(RetryLayer::new())
    ///     .map_request(|req: http::Request<ReplayBody<Opaque>>| req.map(|b| b.boxed_unsync()))
    ///     .service(channel);
    ///
    /// let body: Opaque = Full::new(Bytes::from("hi")).map_err(|e| match e {}).boxed_unsync();
    /// let res = stack.oneshot(http::Request::new(body)).await?;
    /// assert_eq!(res.into_body().collect().await?.to_bytes(), "hi");
    /// # Ok(())
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct ReplayBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Buffered { data: Option<Bytes> },
    }
}

impl<B> ReplayBody<B> {
    /// Wraps the caller's body.
    pub fn new(body: B) -> Self {
        ReplayBody {
            kind: Kind::Inner { body },
        }
    }
}

impl<B> From<Bytes> for ReplayBody<B> {
    fn from(data: Bytes) -> Self {
        ReplayBody {
            kind: Kind::Buffered {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Buffered { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Buffered { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Buffered { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
