//! Future types for [`Usage`](super::Usage).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{header, Response};
use http_body::Body;
use pin_project_lite::pin_project;

use super::body::{Pending, Tracker, UsageBody};
use super::extract::UsageTap;
use super::record::Completion;
use crate::ext::Attempts;
use crate::keys::KeyId;

pin_project! {
    /// Response future of [`Usage`](super::Usage).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, pending: Pending) -> Self {
        ResponseFuture {
            inner,
            pending: Some(pending),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = bytes::Bytes>,
{
    type Output = Result<Response<UsageBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(mut pending) = this.pending.take() else {
            // Polled after completion: nothing more to record.
            return Poll::Ready(result.map(|res| res.map(UsageBody::untracked)));
        };
        let res = match result {
            Ok(res) => res,
            Err(err) => {
                pending.finish(Completion::NoResponse, None, None, false);
                return Poll::Ready(Err(err));
            }
        };
        let record = &mut pending.record;
        record.status = res.status().as_u16();
        record.key = res.extensions().get::<KeyId>().cloned();
        record.attempts = res
            .extensions()
            .get::<Attempts>()
            .map_or(pending.log.len() as u32, |a| a.0);
        let tap = UsageTap::for_content_type(
            res.headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        let streamed = tap.is_stream();
        let (parts, body) = res.into_parts();
        let tracker = Tracker::new(pending, tap, streamed);
        let body = UsageBody::tracked(body, tracker);
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}
