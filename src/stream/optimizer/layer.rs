//! [`StreamOptimizerLayer`] and the [`StreamOptimizer`] service.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::body::OptimizedBody;
use super::future::ResponseFuture;
use super::params::{OptimizerHandle, OptimizerParams};

/// Applies [`StreamOptimizer`]. Cloning the layer shares its [`OptimizerHandle`].
#[derive(Debug, Clone, Default)]
pub struct StreamOptimizerLayer {
    handle: OptimizerHandle,
}

impl StreamOptimizerLayer {
    /// An optimizer driven by `handle` (keep a clone to change its parameters while serving).
    pub fn new(handle: OptimizerHandle) -> Self {
        StreamOptimizerLayer { handle }
    }

    /// An optimizer with fixed starting parameters.
    pub fn with_params(params: OptimizerParams) -> Self {
        Self::new(OptimizerHandle::new(params))
    }

    /// The handle that changes the parameters.
    pub fn handle(&self) -> &OptimizerHandle {
        &self.handle
    }
}

impl<S> Layer<S> for StreamOptimizerLayer {
    type Service = StreamOptimizer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StreamOptimizer {
            inner,
            handle: self.handle.clone(),
        }
    }
}

/// Re-chunks successful `text/event-stream` responses while the optimizer is on; see the
/// [module docs](super).
#[derive(Debug, Clone)]
pub struct StreamOptimizer<S> {
    inner: S,
    handle: OptimizerHandle,
}

impl<S> StreamOptimizer<S> {
    /// Wraps `inner`, driven by `handle`.
    pub fn new(inner: S, handle: OptimizerHandle) -> Self {
        StreamOptimizerLayer::new(handle).layer(inner)
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
        ResponseFuture::new(self.inner.call(req), self.handle.clone())
    }
}
