//! [`QuotaLayer`]: refuses a request over its identity's quota before the inner service runs.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::Quotas;
use crate::api_error::{error_response, ApiFlavor};
use crate::body::ResponseBody;
use crate::fingerprint::ClientId;

/// Finds the identity a request's quota is counted under; `None`: no quota applies.
///
/// Closures `Fn(&Request<B>) -> Option<String>` are identities; [`ByClient`] is the client
/// token's id.
pub trait Identify<B> {
    /// The identity of `req`.
    fn identify(&self, req: &Request<B>) -> Option<String>;
}

impl<B, F> Identify<B> for F
where
    F: Fn(&Request<B>) -> Option<String>,
{
    fn identify(&self, req: &Request<B>) -> Option<String> {
        self(req)
    }
}

/// The identity of a request is its client token's id ([`ClientId`], which
/// [`ClientAuthLayer`](crate::auth::ClientAuthLayer) adds), as 16 hex digits.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByClient;

impl<B> Identify<B> for ByClient {
    fn identify(&self, req: &Request<B>) -> Option<String> {
        req.extensions().get::<ClientId>().map(ClientId::hex)
    }
}

/// Applies [`Quota`]; see the [module docs](super). Clones share the same [`Quotas`].
#[derive(Debug, Clone)]
pub struct QuotaLayer<I = ByClient> {
    quotas: Quotas,
    identify: I,
}

impl QuotaLayer {
    /// Counts requests by client token ([`ByClient`]).
    pub fn new(quotas: Quotas) -> Self {
        QuotaLayer {
            quotas,
            identify: ByClient,
        }
    }
}

impl<I> QuotaLayer<I> {
    /// Counts requests by the identity `identify` finds (a closure
    /// `Fn(&Request<B>) -> Option<String>`, or an [`Identify`]).
    pub fn identify<J>(self, identify: J) -> QuotaLayer<J> {
        QuotaLayer {
            quotas: self.quotas,
            identify,
        }
    }
}

impl<S, I: Clone> Layer<S> for QuotaLayer<I> {
    type Service = Quota<S, I>;

    fn layer(&self, inner: S) -> Self::Service {
        Quota {
            inner,
            quotas: self.quotas.clone(),
            identify: self.identify.clone(),
        }
    }
}

/// Refuses a request over its quota with a `429`; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct Quota<S, I = ByClient> {
    inner: S,
    quotas: Quotas,
    identify: I,
}

impl<S, I, ReqBody, ResBody> Service<Request<ReqBody>> for Quota<S, I>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    I: Identify<ReqBody>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if let Some(id) = self.identify.identify(&req) {
            if let Err(refusal) = self.quotas.admit(&id) {
                tracing::debug!(identity = %id, limit = ?refusal.kind, "quota: request refused");
                let mut res = error_response(
                    ApiFlavor::of(&req),
                    StatusCode::TOO_MANY_REQUESTS,
                    &refusal.to_string(),
                );
                res.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(refusal.retry_after_secs()),
                );
                return ResponseFuture {
                    state: State::Refused { res: Some(res) },
                };
            }
        }
        ResponseFuture {
            state: State::Inner {
                future: self.inner.call(req),
            },
        }
    }
}

pin_project! {
    /// Response future of [`Quota`]: the inner service's, or the `429` it answered itself.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] future: F },
        Refused { res: Option<Response<Bytes>> },
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future
                .poll(cx)
                .map(|res| res.map(|res| res.map(ResponseBody::inner))),
            StateProj::Refused { res } => {
                match res.take().map(|res| res.map(ResponseBody::full)) {
                    Some(res) => Poll::Ready(Ok(res)),
                    // Polled again after it was ready: an empty 429, never a panic.
                    None => {
                        let mut res = Response::new(ResponseBody::full(Bytes::new()));
                        *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                        Poll::Ready(Ok(res))
                    }
                }
            }
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}
