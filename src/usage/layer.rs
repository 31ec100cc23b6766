//! [`UsageLayer`] and the [`Usage`] service.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::body::{Head, Pending};
use super::future::ResponseFuture;
use super::handoff::RecordHandoff;
use super::record::ClientId;
#[cfg(doc)]
use super::record::RequestRecord;
use super::sink::UsageSink;
use crate::ext::RequestInfo;
use crate::order::{self, Misorder};

/// Applies [`Usage`]: one [`RequestRecord`] per request, handed to a
/// [`UsageSink`] after the response has ended. Cloning the layer shares its sink.
#[derive(Clone)]
pub struct UsageLayer {
    sink: Arc<dyn UsageSink>,
    record_request_body: bool,
}

impl std::fmt::Debug for UsageLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageLayer")
            .field("record_request_body", &self.record_request_body)
            .finish_non_exhaustive()
    }
}

impl UsageLayer {
    /// Records into `sink`.
    pub fn new(sink: impl UsageSink) -> Self {
        Self::shared(Arc::new(sink))
    }

    /// Records into a sink shared with other parts of the program.
    pub fn shared(sink: Arc<dyn UsageSink>) -> Self {
        UsageLayer {
            sink,
            record_request_body: false,
        }
    }

    /// Keeps the request body of failed requests in their record (off by default, as
    /// `ERROR_LOG_RECORD_REQUEST_BODY`). The body comes from [`Retry`](crate::retry::Retry),
    /// which buffers it anyway; without a `Retry` below, nothing is kept.
    pub fn record_request_body(mut self, on: bool) -> Self {
        self.record_request_body = on;
        self
    }
}

impl<S> Layer<S> for UsageLayer {
    type Service = Usage<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Usage {
            inner,
            sink: self.sink.clone(),
            record_request_body: self.record_request_body,
        }
    }
}

/// Records one [`RequestRecord`] per request; see the [module docs](super).
#[derive(Clone)]
pub struct Usage<S> {
    inner: S,
    sink: Arc<dyn UsageSink>,
    record_request_body: bool,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Usage<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Usage")
            .field("inner", &self.inner)
            .field("record_request_body", &self.record_request_body)
            .finish_non_exhaustive()
    }
}

impl<S> Usage<S> {
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Usage<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body<Data = bytes::Bytes>,
{
    type Response = Response<super::UsageBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        order::check_above_retry(
            req.extensions(),
            Misorder::UsageInsideRetry,
            Misorder::UsageInsideKeyRotation,
        );
        let info = RequestInfo::attach(&mut req);
        let pending = Pending::start(
            self.sink.clone(),
            Head {
                flavor: info.flavor,
                path: req.uri().path(),
                model: info.model_name(),
                client: req.extensions().get::<ClientId>().cloned(),
                // Under a pseudo-stream layer the inner answer is JSON, but the client gets a stream.
                streamed: info.pseudo_streamed,
                bodiless: req.method() == http::Method::HEAD,
                // Put there by a pseudo stream above, which has the last word on the record.
                handoff: req.extensions().get::<RecordHandoff>().cloned(),
            },
            self.record_request_body,
        );
        pending.insert_slots(req.extensions_mut());
        ResponseFuture::new(self.inner.call(req), pending)
    }
}
