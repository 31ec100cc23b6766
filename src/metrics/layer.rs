//! [`MetricsLayer`] and the [`Metrics`] service.

use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::body::{Measure, MetricsBody};
use super::future::ResponseFuture;
use super::MetricsRegistry;
use crate::ext::RequestInfo;
use crate::usage::AttemptLog;

/// Applies [`Metrics`]: each request counted and timed into a [`MetricsRegistry`]. Cloning the
/// layer shares the registry.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: MetricsRegistry,
}

impl MetricsLayer {
    /// Records into `metrics`.
    pub fn new(metrics: MetricsRegistry) -> Self {
        MetricsLayer { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// Counts and times each request; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
    metrics: MetricsRegistry,
}

impl<S> Metrics<S> {
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Metrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<MetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let info = RequestInfo::attach(&mut req);
        // The usage layer's attempt log when one is above; else one of ours, which
        // `KeyRotation` fills the same way.
        let log = match req.extensions().get::<AttemptLog>() {
            Some(log) => log.clone(),
            None => {
                let log = AttemptLog::default();
                req.extensions_mut().insert(log.clone());
                log
            }
        };
        let measure = Measure {
            metrics: self.metrics.inner.clone(),
            flavor: info.flavor,
            operation: info.operation.as_str(),
            model: info.model,
            stream: info.stream,
            log,
            started: Instant::now(),
            status: 0,
            first_byte: None,
            open_stream: false,
            done: false,
        };
        ResponseFuture {
            inner: self.inner.call(req),
            measure: Some(measure),
        }
    }
}
