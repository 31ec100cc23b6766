//! Response future of [`PseudoStream`](super::PseudoStream).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{request::Parts, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::PseudoStreamBody;
use super::layer::{openai_rewrite, stream_response, Config};
use crate::api_error::{error_response, ApiFlavor};
use crate::buffer::{CollectError, CollectLimited};

type Answer<S, ReqBody, B> =
    Response<PseudoStreamBody<<S as Service<Request<ReqBody>>>::Future, B>>;

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
        state: State<S, ReqBody, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, B>
    where
        S: Service<Request<ReqBody>, Response = Response<B>>,
    {
        Passthrough {
            #[pin]
            future: S::Future,
        },
        Collecting {
            #[pin]
            collect: CollectLimited<ReqBody>,
            parts: Option<Parts>,
            service: Option<S>,
            config: Arc<Config>,
        },
        Ready {
            response: Option<Answer<S, ReqBody, B>>,
        },
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
{
    pub(super) fn passthrough(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Passthrough { future },
        }
    }

    pub(super) fn ready(response: Answer<S, ReqBody, B>) -> Self {
        ResponseFuture {
            state: State::Ready {
                response: Some(response),
            },
        }
    }

    pub(super) fn collecting(
        collect: CollectLimited<ReqBody>,
        parts: Parts,
        service: S,
        config: Arc<Config>,
    ) -> Self {
        ResponseFuture {
            state: State::Collecting {
                collect,
                parts: Some(parts),
                service: Some(service),
                config,
            },
        }
    }
}

fn local<F, B>(status: StatusCode, message: &str) -> Response<PseudoStreamBody<F, B>> {
    error_response(ApiFlavor::OpenAi, status, message).map(PseudoStreamBody::full)
}

impl<S, ReqBody, B> Future for ResponseFuture<S, ReqBody, B>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    ReqBody: http_body::Body<Data = Bytes> + From<Bytes>,
{
    type Output = Result<Answer<S, ReqBody, B>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Passthrough { future } => {
                    let res = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(res.map(PseudoStreamBody::inner)));
                }
                StateProj::Ready { response } => {
                    return match response.take() {
                        Some(res) => Poll::Ready(Ok(res)),
                        None => Poll::Pending, // polled after completion
                    };
                }
                StateProj::Collecting {
                    collect,
                    parts,
                    service,
                    config,
                } => {
                    let collected = ready!(collect.poll(cx));
                    let (Some(mut parts), Some(mut service)) = (parts.take(), service.take())
                    else {
                        return Poll::Pending; // polled after completion
                    };
                    let bytes = match collected {
                        Ok(bytes) => bytes,
                        Err(CollectError::TooLarge) => {
                            let limit = config.max_request_bytes;
                            return Poll::Ready(Ok(local(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                &format!(
                                    "the request body is larger than the limit of {limit} bytes"
                                ),
                            )));
                        }
                        Err(CollectError::Read) => {
                            return Poll::Ready(Ok(local(
                                StatusCode::BAD_REQUEST,
                                "the request body could not be read",
                            )));
                        }
                    };
                    match openai_rewrite(&mut parts, &bytes, config) {
                        Some((body, ctx, handoff)) => {
                            let future =
                                service.call(Request::from_parts(parts, ReqBody::from(body)));
                            return Poll::Ready(Ok(stream_response(future, ctx, config, handoff)));
                        }
                        None => {
                            let future =
                                service.call(Request::from_parts(parts, ReqBody::from(bytes)));
                            this.state.set(State::Passthrough { future });
                        }
                    }
                }
            }
        }
    }
}
