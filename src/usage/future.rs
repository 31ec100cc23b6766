//! Future types for [`Usage`](super::Usage).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::body::{Pending, UsageBody};
use super::record::Completion;

pin_project! {
    /// Response future of [`Usage`](super::Usage).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        pending: Unanswered,
    }
}

/// The record of a request not answered yet: dropped before the answer (the client went away,
/// or a layer above gave up on the call), it is written as such, not lost. Shared with the
/// reqwest-middleware `UsageMiddleware`.
pub(crate) struct Unanswered(Option<Pending>);

impl Unanswered {
    /// Guards `pending` until the answer comes.
    pub(crate) fn new(pending: Pending) -> Self {
        Unanswered(Some(pending))
    }

    /// The record, now that the answer (or an error) is in; `None` when already taken.
    pub(crate) fn take(&mut self) -> Option<Pending> {
        self.0.take()
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(pending) = self.0.take() {
            pending.finish(Completion::ClientGone, None, None, false);
        }
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
            pending: Unanswered::new(pending),
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
        let Some(pending) = this.pending.take() else {
            // Polled after completion: nothing more to record.
            return Poll::Ready(result.map(|res| res.map(UsageBody::untracked)));
        };
        Poll::Ready(match result {
            Ok(res) => Ok(pending.track(res)),
            Err(err) => {
                pending.no_response();
                Err(err)
            }
        })
    }
}
