//! Response future of [`ParamFilter`](super::ParamFilter).

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{request::Parts, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::layer::{decide, Config};
use super::schema::Shape;
use crate::api_error::{error_response, ApiFlavor};
use crate::body::ResponseBody;
use crate::buffer::{Buffered, CollectError};
use crate::classify::{FailureClass, Outcome};
use crate::read_then_call::{Decide, ReadThenCall, Step};

pin_project! {
    /// Response future of [`ParamFilter`](super::ParamFilter): reads the body (guarded routes
    /// only), filters it, then drives the inner service, or answers a refusal itself.
    pub struct ResponseFuture<S, ReqBody, B>
    where
        S: Service<Request<ReqBody>, Response = Response<B>>,
    {
        #[pin]
        inner: ReadThenCall<S, ReqBody, Filtering<B>, Response<ResponseBody<B>>>,
    }
}

/// The filter's decision on a read body.
pub(crate) struct Filtering<B> {
    config: Arc<Config>,
    shape: Shape,
    flavor: ApiFlavor,
    _answer: PhantomData<fn() -> B>,
}

impl<S, ReqBody, B> Decide<S, ReqBody> for Filtering<B>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    ReqBody: From<Bytes>,
{
    type Response = Response<ResponseBody<B>>;

    fn unreadable(self, error: CollectError) -> Self::Response {
        match error {
            CollectError::TooLarge => too_large(self.flavor, self.config.max_body_bytes),
            CollectError::Read => local(
                error_response(
                    self.flavor,
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                ),
                "unreadable request body",
            ),
        }
    }

    fn decide(
        self,
        mut parts: Parts,
        body: Buffered,
        _: &mut S,
    ) -> Step<Request<ReqBody>, Self::Response> {
        match decide(&mut parts, body, self.shape, &self.config, self.flavor) {
            Ok(body) => Step::Forward(body.into_request(parts)),
            Err((refusal, reason)) => Step::Answer(local(*refusal, reason)),
        }
    }

    fn forwarded(response: Response<B>) -> Self::Response {
        response.map(ResponseBody::inner)
    }
}

impl<S, ReqBody, B> std::fmt::Debug for ResponseFuture<S, ReqBody, B>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, ReqBody, B> ResponseFuture<S, ReqBody, B>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    ReqBody: http_body::Body + From<Bytes>,
{
    pub(super) fn inner(future: S::Future) -> Self {
        ResponseFuture {
            inner: ReadThenCall::called(future),
        }
    }

    pub(super) fn reading(
        req: Request<ReqBody>,
        service: S,
        config: Arc<Config>,
        shape: Shape,
        flavor: ApiFlavor,
    ) -> Self {
        let limit = config.max_body_bytes;
        let filtering = Filtering {
            config,
            shape,
            flavor,
            _answer: PhantomData,
        };
        ResponseFuture {
            inner: ReadThenCall::read(req, limit, service, filtering),
        }
    }
}

fn local<B>(response: Response<Bytes>, reason: &'static str) -> Response<ResponseBody<B>> {
    let (mut parts, body) = response.into_parts();
    parts
        .extensions
        .insert(Outcome::Failure(FailureClass::Local {
            status: parts.status,
            reason,
        }));
    Response::from_parts(parts, ResponseBody::full(body))
}

fn too_large<B>(flavor: ApiFlavor, limit: usize) -> Response<ResponseBody<B>> {
    local(
        error_response(
            flavor,
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than the limit of {limit} bytes"),
        ),
        "request body too large",
    )
}

impl<S, ReqBody, B> Future for ResponseFuture<S, ReqBody, B>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    ReqBody: http_body::Body<Data = Bytes> + From<Bytes>,
{
    type Output = Result<Response<ResponseBody<B>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
