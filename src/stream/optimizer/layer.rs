//! [`StreamOptimizerLayer`] and the [`StreamOptimizer`] service.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::body::OptimizedBody;
use super::future::ResponseFuture;
use std::sync::Arc;

use super::params::OptimizerParams;

/// Applies [`StreamOptimizer`]. The default is off ([`OptimizerParams::default`]).
///
/// The parameters are fixed once the layer is built; to change them while serving, build a new
/// stack and swap it in (`docs/architecture.md`, "Changing settings while serving").
#[derive(Debug, Clone, Default)]
pub struct StreamOptimizerLayer {
    params: Arc<OptimizerParams>,
}

impl StreamOptimizerLayer {
    /// An optimizer with `params` (on when [`OptimizerParams::enabled`] is set).
    pub fn new(params: OptimizerParams) -> Self {
        StreamOptimizerLayer {
            params: Arc::new(params),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &OptimizerParams {
        &self.params
    }
}

impl<S> Layer<S> for StreamOptimizerLayer {
    type Service = StreamOptimizer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StreamOptimizer {
            inner,
            params: self.params.clone(),
        }
    }
}

/// Re-chunks successful `text/event-stream` responses while the optimizer is on; see the
/// [module docs](super).
#[derive(Debug, Clone)]
pub struct StreamOptimizer<S> {
    inner: S,
    params: Arc<OptimizerParams>,
}

impl<S> StreamOptimizer<S> {
    /// Wraps `inner`, re-chunking with `params`.
    pub fn new(inner: S, params: OptimizerParams) -> Self {
        StreamOptimizerLayer::new(params).layer(inner)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for StreamOptimizer<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<OptimizedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        ResponseFuture::new(self.inner.call(req), self.params.clone())
    }
}
