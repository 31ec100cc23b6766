//! Response future of [`ParamFilter`](super::ParamFilter).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{request::Parts, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::layer::{decide, Config};
use super::schema::Shape;
use crate::api_error::{error_response, ApiFlavor};
use crate::body::ResponseBody;
use crate::buffer::{CollectError, CollectLimited};
use crate::classify::{FailureClass, Outcome};

pin_project! {
    /// Response future of [`ParamFilter`](super::ParamFilter): reads the body (guarded routes
    /// only), filters it, then drives the inner service, or answers a refusal itself.
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
        Collecting {
            #[pin]
            collect: CollectLimited<ReqBody>,
            parts: Option<Parts>,
            service: Option<S>,
            config: Arc<Config>,
            shape: Shape,
            flavor: ApiFlavor,
        },
        Inner {
            #[pin]
            future: S::Future,
        },
        Local {
            response: Option<Response<ResponseBody<B>>>,
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
    pub(super) fn inner(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Inner { future },
        }
    }

    pub(super) fn collecting(
        collect: CollectLimited<ReqBody>,
        parts: Parts,
        service: S,
        config: Arc<Config>,
        shape: Shape,
        flavor: ApiFlavor,
    ) -> Self {
        ResponseFuture {
            state: State::Collecting {
                collect,
                parts: Some(parts),
                service: Some(service),
                config,
                shape,
                flavor,
            },
        }
    }

    pub(super) fn too_large(flavor: ApiFlavor, limit: usize) -> Self {
        ResponseFuture {
            state: State::Local {
                response: Some(too_large(flavor, limit)),
            },
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
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { future } => {
                    let res = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(res.map(ResponseBody::inner)));
                }
                StateProj::Local { response } => {
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
                    shape,
                    flavor,
                } => {
                    let collected = ready!(collect.poll(cx));
                    let (Some(mut parts), Some(mut service)) = (parts.take(), service.take())
                    else {
                        return Poll::Pending; // polled after completion
                    };
                    let bytes = match collected {
                        Ok(bytes) => bytes,
                        Err(CollectError::TooLarge) => {
                            return Poll::Ready(Ok(too_large(*flavor, config.max_body_bytes)))
                        }
                        Err(CollectError::Read) => {
                            return Poll::Ready(Ok(local(
                                error_response(
                                    *flavor,
                                    StatusCode::BAD_REQUEST,
                                    "the request body could not be read",
                                ),
                                "unreadable request body",
                            )))
                        }
                    };
                    match decide(&mut parts, bytes, *shape, config, *flavor) {
                        Ok(bytes) => {
                            let future =
                                service.call(Request::from_parts(parts, ReqBody::from(bytes)));
                            this.state.set(State::Inner { future });
                        }
                        Err((refusal, reason)) => return Poll::Ready(Ok(local(*refusal, reason))),
                    }
                }
            }
        }
    }
}
