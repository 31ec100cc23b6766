//! Response future of [`StreamOptimizer`](super::StreamOptimizer).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{header, HeaderMap, Response};
use pin_project_lite::pin_project;

use super::body::OptimizedBody;
use std::sync::Arc;

use super::params::OptimizerParams;

pin_project! {
    /// Response future of [`StreamOptimizer`](super::StreamOptimizer).
    pub struct ResponseFuture<F> {
        #[pin]
        future: F,
        params: Arc<OptimizerParams>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(future: F, params: Arc<OptimizerParams>) -> Self {
        ResponseFuture { future, params }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<OptimizedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.future.poll(cx))?;
        let optimize =
            res.status().is_success() && is_event_stream(res.headers()) && this.params.enabled;
        let params = this.params.clone();
        Poll::Ready(Ok(res.map(|body| {
            if optimize {
                OptimizedBody::with_shared(body, params)
            } else {
                OptimizedBody::passthrough(body)
            }
        })))
    }
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| crate::sse::is_event_stream(v.as_bytes()))
}
