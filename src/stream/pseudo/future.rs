//! Response future of [`PseudoStream`](super::PseudoStream).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{request::Parts, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::PseudoStreamBody;
use super::layer::{openai_rewrite, stream_response, Config};
use crate::api_error::{error_response, ApiFlavor};
use crate::buffer::{Buffered, CollectError};
use crate::read_then_call::{Decide, ReadThenCall, Step};

pin_project! {
    /// Response future of [`PseudoStream`](super::PseudoStream).
    ///
    /// A faked stream resolves at once (Gemini) or as soon as the request body is read
    /// (OpenAI, whose `"stream": true` is in the body); the upstream call then runs inside the
    /// response body.
    pub struct ResponseFuture<S, ReqBody, B>
    where
        S: Service<Request<ReqBody>, Response = Response<B>>,
    {
        #[pin]
        inner: ReadThenCall<S, ReqBody, Faking<B>, Response<PseudoStreamBody<B>>>,
    }
}

/// On an OpenAI chat body: fake its stream, or forward it.
pub(crate) struct Faking<B> {
    config: Arc<Config>,
    _answer: PhantomData<fn() -> B>,
}

impl<S, ReqBody, B> Decide<S, ReqBody> for Faking<B>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: fmt::Display + 'static,
    ReqBody: From<Bytes>,
{
    type Response = Response<PseudoStreamBody<B>>;

    fn unreadable(self, error: CollectError) -> Self::Response {
        match error {
            CollectError::TooLarge => {
                let limit = self.config.max_request_bytes;
                local(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the request body is larger than the limit of {limit} bytes"),
                )
            }
            CollectError::Read => local(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            ),
        }
    }

    fn decide(
        self,
        mut parts: Parts,
        body: Buffered,
        inner: &mut S,
    ) -> Step<Request<ReqBody>, Self::Response> {
        match openai_rewrite(&mut parts, body, &self.config) {
            (body, Some((ctx, handoff))) => {
                let future = inner.call(body.into_request(parts));
                Step::Answer(stream_response(future, ctx, &self.config, handoff))
            }
            (body, None) => Step::Forward(body.into_request(parts)),
        }
    }

    fn forwarded(response: Response<B>) -> Self::Response {
        response.map(PseudoStreamBody::inner)
    }
}

impl<S, ReqBody, B> fmt::Debug for ResponseFuture<S, ReqBody, B>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, ReqBody, B> ResponseFuture<S, ReqBody, B>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: fmt::Display + 'static,
    ReqBody: http_body::Body + From<Bytes>,
{
    pub(super) fn passthrough(future: S::Future) -> Self {
        ResponseFuture {
            inner: ReadThenCall::called(future),
        }
    }

    pub(super) fn ready(response: Response<PseudoStreamBody<B>>) -> Self {
        ResponseFuture {
            inner: ReadThenCall::answered(response),
        }
    }

    pub(super) fn reading(req: Request<ReqBody>, service: S, config: Arc<Config>) -> Self {
        let limit = config.max_request_bytes;
        let faking = Faking {
            config,
            _answer: PhantomData,
        };
        ResponseFuture {
            inner: ReadThenCall::read(req, limit, service, faking),
        }
    }
}

fn local<B>(status: StatusCode, message: &str) -> Response<PseudoStreamBody<B>> {
    error_response(ApiFlavor::OpenAi, status, message).map(PseudoStreamBody::full)
}

impl<S, ReqBody, B> Future for ResponseFuture<S, ReqBody, B>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: fmt::Display + 'static,
    ReqBody: http_body::Body<Data = Bytes> + From<Bytes>,
{
    type Output = Result<Response<PseudoStreamBody<B>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
