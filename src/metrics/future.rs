//! Future types for [`Metrics`](super::Metrics).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::body::{Measure, MetricsBody};

pin_project! {
    /// Response future of [`Metrics`](super::Metrics).
    pub struct ResponseFuture<F> {
        #[pin]
        pub(crate) inner: F,
        pub(crate) measure: Option<Measure>,
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
{
    type Output = Result<Response<MetricsBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        // Without a response the measure is dropped, which records it with `status="none"`.
        let measure = this.measure.take();
        Poll::Ready(result.map(|res| match measure {
            Some(measure) => measure.head(res),
            None => res.map(MetricsBody::untracked),
        }))
    }
}
