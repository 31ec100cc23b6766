//! [`ReadThenCall`]: the one future of the layers that read a request body whole before they
//! decide (model rules, pseudo streaming, parameter filter): read it (or take the one a layer
//! above read, see [`crate::buffer`]), let the layer decide, then call the inner service with
//! the request it decided on, or hand out the layer's own answer.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{request::Parts, Request};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::buffer::{Buffered, CollectError, ReadBody};

/// What a layer does once it has the body.
pub(crate) enum Step<Req, Res> {
    /// Call the inner service with this request.
    Forward(Req),
    /// Answer with this (a refusal, or an answer that owns the inner call).
    Answer(Res),
}

/// The layer's part of [`ReadThenCall`].
pub(crate) trait Decide<S, ReqBody>: Sized
where
    S: Service<Request<ReqBody>>,
{
    /// What the layer's future resolves to.
    type Response;

    /// The body could not be read whole: too large, or reading it failed.
    fn unreadable(self, error: CollectError) -> Self::Response;

    /// With the body in hand. `inner` is the ready inner service: call it here only to answer
    /// with a response that owns the call (a pseudo stream); otherwise forward the request.
    fn decide(
        self,
        parts: Parts,
        body: Buffered,
        inner: &mut S,
    ) -> Step<Request<ReqBody>, Self::Response>;

    /// The inner service's answer, as the layer hands it out.
    fn forwarded(response: S::Response) -> Self::Response;
}

pin_project! {
    /// Reads the request body, lets `D` decide, then calls the inner service or answers.
    ///
    /// `R` is what it resolves to (`D`'s [`Decide::Response`]).
    pub(crate) struct ReadThenCall<S, ReqBody, D, R>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody, D, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, D, R>
    where
        S: Service<Request<ReqBody>>,
    {
        Reading {
            #[pin]
            read: ReadBody<ReqBody>,
            parts: Option<Parts>,
            service: Option<S>,
            decide: Option<D>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
        Answered {
            response: Option<R>,
        },
    }
}

impl<S, ReqBody, D, R> ReadThenCall<S, ReqBody, D, R>
where
    S: Service<Request<ReqBody>>,
{
    /// Reads `req`'s body (at most `limit` bytes), then lets `decide` decide.
    pub(crate) fn read(req: Request<ReqBody>, limit: usize, service: S, decide: D) -> Self
    where
        ReqBody: http_body::Body,
    {
        let (mut parts, body) = req.into_parts();
        let read = ReadBody::new(&mut parts, body, limit);
        ReadThenCall {
            state: State::Reading {
                read,
                parts: Some(parts),
                service: Some(service),
                decide: Some(decide),
            },
        }
    }

    /// Already forwarded, without reading the body.
    pub(crate) fn called(future: S::Future) -> Self {
        ReadThenCall {
            state: State::Calling { future },
        }
    }

    /// Answered already.
    pub(crate) fn answered(response: R) -> Self {
        ReadThenCall {
            state: State::Answered {
                response: Some(response),
            },
        }
    }
}

impl<S, ReqBody, D, R> Future for ReadThenCall<S, ReqBody, D, R>
where
    S: Service<Request<ReqBody>>,
    D: Decide<S, ReqBody, Response = R>,
    ReqBody: http_body::Body<Data = Bytes>,
{
    type Output = Result<R, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let res = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(D::forwarded(res)));
                }
                StateProj::Answered { response } => {
                    return match response.take() {
                        Some(res) => Poll::Ready(Ok(res)),
                        None => Poll::Pending, // polled after completion
                    };
                }
                StateProj::Reading {
                    read,
                    parts,
                    service,
                    decide,
                } => {
                    let read = ready!(read.poll(cx));
                    let (Some(parts), Some(mut service), Some(decide)) =
                        (parts.take(), service.take(), decide.take())
                    else {
                        return Poll::Pending; // polled after completion
                    };
                    let step = match read {
                        Ok(body) => decide.decide(parts, body, &mut service),
                        Err(error) => Step::Answer(decide.unreadable(error)),
                    };
                    match step {
                        Step::Forward(req) => {
                            let future = service.call(req);
                            this.state.set(State::Calling { future });
                        }
                        Step::Answer(res) => return Poll::Ready(Ok(res)),
                    }
                }
            }
        }
    }
}
