//! Transport failures answered as `502 Bad Gateway` and `504 Gateway Timeout`, in the API's own
//! error format, so a stack has `Error = Infallible` and serves axum routes as it is.
//!
//! Every layer of this crate passes its inner service's error through (`Error = S::Error`),
//! so a stack over an HTTP client fails with the client's error when the upstream cannot be
//! reached. axum wants `Infallible`; [`GatewayErrorsLayer`] on top of the stack answers such an
//! error itself: a [timeout](crate::classify::FailureClass::Timeout) as `504`, anything else as
//! `502`, with a JSON body in Gemini's or OpenAI's error shape chosen by the request
//! ([`ApiFlavor::of`]), naming the failure class (never request data or a key). No
//! `HandleErrorLayer` is needed.
//!
//! Put it outermost, above [`RetryLayer`](crate::retry::RetryLayer) and
//! [`KeyRotationLayer`](crate::keys::KeyRotationLayer): below them, a refused connection
//! would look like a `502` from the upstream, which counts against the key.
//!
//! # Example
//!
//! ```no_run
//! use axum::Router;
//! use gemini_balance::client::{upstream::Upstream, GatewayErrorsLayer};
//! use gemini_balance::keys::{KeyPool, KeyRotationLayer};
//! use gemini_balance::retry::RetryLayer;
//! use tower::ServiceBuilder;
//!
//! # fn build() -> Result<Router, Box<dyn std::error::Error>> {
//! let pool = KeyPool::builder().keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv"]).build()?;
//! let gemini = ServiceBuilder::new()
//!     .layer(GatewayErrorsLayer::new())
//!     .layer(RetryLayer::new())
//!     .layer(KeyRotationLayer::new(pool))
//!     .service(Upstream::builder("https://generativelanguage.googleapis.com").build()?);
//! let app = Router::new().route_service("/v1beta/{*rest}", gemini);
//! # Ok(app)
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{header, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::api_error::{error_body, ApiFlavor};
use crate::body::ResponseBody;
use crate::classify::{classify_any_error, FailureClass};

/// Wraps a service so that its errors become `502`/`504` answers; see the
/// [module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct GatewayErrorsLayer {
    _priv: (),
}

impl GatewayErrorsLayer {
    /// The layer.
    pub fn new() -> Self {
        GatewayErrorsLayer { _priv: () }
    }
}

impl<S> Layer<S> for GatewayErrorsLayer {
    type Service = GatewayErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GatewayErrors::new(inner)
    }
}

/// A service whose errors are answered as `502`/`504` in the API's error format; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct GatewayErrors<S> {
    inner: S,
    /// The error `poll_ready` returned: the next call answers it.
    not_ready: Option<FailureClass>,
}

impl<S> GatewayErrors<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        GatewayErrors {
            inner,
            not_ready: None,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// The answer to a failure of `class`, in `flavor`'s format.
fn answer<B>(flavor: ApiFlavor, class: FailureClass) -> Response<ResponseBody<B>> {
    let status = match class {
        FailureClass::Timeout => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    let what = match class {
        FailureClass::Timeout => "the upstream did not answer in time",
        _ => "the upstream could not be reached",
    };
    tracing::warn!(class = %class, %status, "{what}");
    let body = error_body(flavor, status, &format!("{what}: {class}"));
    let mut res = Response::new(ResponseBody::full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.extensions_mut().insert(class);
    res
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GatewayErrors<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: std::fmt::Display + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.not_ready.is_none() {
            if let Err(e) = ready!(self.inner.poll_ready(cx)) {
                self.not_ready = Some(classify_any_error(&e));
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let flavor = ApiFlavor::of(&req);
        match self.not_ready.take() {
            Some(class) => ResponseFuture {
                kind: Kind::Failed {
                    class: Some(class),
                    flavor,
                },
            },
            None => ResponseFuture {
                kind: Kind::Inner {
                    future: self.inner.call(req),
                    flavor,
                },
            },
        }
    }
}

pin_project! {
    /// The response future of [`GatewayErrors`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Inner { #[pin] future: F, flavor: ApiFlavor },
        Failed { class: Option<FailureClass>, flavor: ApiFlavor },
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: std::fmt::Display + 'static,
{
    type Output = Result<Response<ResponseBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, flavor } => Poll::Ready(Ok(match ready!(future.poll(cx)) {
                Ok(res) => res.map(ResponseBody::inner),
                Err(e) => answer(*flavor, classify_any_error(&e)),
            })),
            KindProj::Failed { class, flavor } => {
                // Polled again after it answered: a transport failure all the same.
                let class = class.take().unwrap_or(FailureClass::Transport {
                    detail: "the response was polled again".to_owned(),
                });
                Poll::Ready(Ok(answer(*flavor, class)))
            }
        }
    }
}
