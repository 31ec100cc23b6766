//! [`PseudoStreamBody`]: the inner body passed through, or an event stream that owns the
//! upstream call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::events::StreamContext;
use crate::classify::{classify_any_error, FailureClass};
use crate::usage::{HandoffGuard, Settled};

/// The inner service's call, owned by a faked stream's body; its error already classified.
type UpstreamCall<B> = Pin<Box<dyn Future<Output = Result<Response<B>, FailureClass>> + Send>>;

/// Tells a `Usage` below how the client's stream ended.
fn settle(handoff: &mut Option<HandoffGuard>, failed: bool) {
    if let Some(mut guard) = handoff.take() {
        guard.settle(if failed {
            Settled::ErrorEvent {
                status: StatusCode::OK,
            }
        } else {
            Settled::AsRecorded
        });
    }
}

pin_project! {
    /// Response body of [`PseudoStream`](super::PseudoStream).
    ///
    /// For a faked stream it owns the upstream call (boxed, so that the inner service's future
    /// is not part of this type): dropping the body (the client went away) drops the call, and
    /// nothing keeps running in the background.
    pub struct PseudoStreamBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
        Sse { sse: Pin<Box<SseBody<B>>> },
    }
}

impl<B> fmt::Debug for PseudoStreamBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Full { .. } => "full",
            Kind::Sse { .. } => "pseudo stream",
        };
        f.debug_struct("PseudoStreamBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl<B> PseudoStreamBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        PseudoStreamBody {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn full(data: Bytes) -> Self {
        PseudoStreamBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    pub(crate) fn sse<F, E>(
        future: F,
        ctx: StreamContext,
        interval: Duration,
        max_answer: usize,
        handoff: Option<HandoffGuard>,
    ) -> Self
    where
        F: Future<Output = Result<Response<B>, E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        let future: UpstreamCall<B> =
            Box::pin(async move { future.await.map_err(|err| classify_any_error(&err)) });
        PseudoStreamBody {
            kind: Kind::Sse {
                sse: Box::pin(SseBody {
                    state: State::Waiting { future },
                    keep_alive: tokio::time::sleep(interval),
                    interval,
                    max_answer,
                    ctx,
                    handoff,
                }),
            },
        }
    }

    /// `true` when this body is a faked event stream.
    pub fn is_pseudo_stream(&self) -> bool {
        matches!(self.kind, Kind::Sse { .. })
    }
}

impl<B> Body for PseudoStreamBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Sse { sse } => sse
                .as_mut()
                .poll_next(cx)
                .map(|next| next.map(|data| Ok(Frame::data(data)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
            Kind::Sse { sse } => matches!(sse.state, State::Done),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Sse { .. } => SizeHint::default(),
        }
    }
}

pin_project! {
    /// The faked stream: keep-alives while the upstream call runs, then its answer as events.
    struct SseBody<B> {
        #[pin]
        state: State<B>,
        #[pin]
        keep_alive: Sleep,
        interval: Duration,
        max_answer: usize,
        ctx: StreamContext,
        // Tells a `Usage` below what the client saw (an error event after the `200`).
        handoff: Option<HandoffGuard>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<B> {
        /// The upstream call is running.
        Waiting { future: UpstreamCall<B> },
        /// The upstream answered; its body is being read.
        Reading { #[pin] body: B, status: StatusCode, buf: BytesMut },
        Done,
    }
}

impl<B> SseBody<B>
where
    B: Body<Data = Bytes>,
{
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { future } => match future.as_mut().poll(cx) {
                    Poll::Ready(Ok(res)) if crate::decode::is_encoded(res.headers()) => {
                        // No `DecodeLayer` below: compressed bytes cannot be replayed as events.
                        tracing::warn!("pseudo stream: the upstream answer is compressed");
                        let event = this.ctx.failure(
                            StatusCode::BAD_GATEWAY,
                            "the upstream answer was compressed and could not be read",
                        );
                        this.state.set(State::Done);
                        settle(this.handoff, true);
                        return Poll::Ready(Some(event));
                    }
                    Poll::Ready(Ok(res)) => {
                        let (parts, body) = res.into_parts();
                        this.state.set(State::Reading {
                            body,
                            status: parts.status,
                            buf: BytesMut::new(),
                        });
                        continue;
                    }
                    Poll::Ready(Err(class)) => {
                        let status = class.status().unwrap_or(StatusCode::BAD_GATEWAY);
                        tracing::warn!(class = %class, "pseudo stream: the upstream call failed");
                        let event = this
                            .ctx
                            .failure(status, &format!("the upstream request failed: {class}"));
                        this.state.set(State::Done);
                        settle(this.handoff, true);
                        return Poll::Ready(Some(event));
                    }
                    Poll::Pending => {}
                },
                StateProj::Reading { body, status, buf } => match body.poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            if buf.len() + data.len() > *this.max_answer {
                                let limit = *this.max_answer;
                                tracing::warn!(
                                    limit,
                                    "pseudo stream: the answer is over the limit"
                                );
                                let event = this.ctx.failure(
                                    StatusCode::BAD_GATEWAY,
                                    &format!("the upstream answer is larger than {limit} bytes"),
                                );
                                this.state.set(State::Done);
                                settle(this.handoff, true);
                                return Poll::Ready(Some(event));
                            }
                            buf.extend_from_slice(&data);
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(_))) => {
                        tracing::warn!("pseudo stream: the upstream answer was cut off");
                        let event = this
                            .ctx
                            .failure(StatusCode::BAD_GATEWAY, "the upstream answer was cut off");
                        this.state.set(State::Done);
                        settle(this.handoff, true);
                        return Poll::Ready(Some(event));
                    }
                    Poll::Ready(None) => {
                        let status = *status;
                        let answer = std::mem::take(buf);
                        let (events, failed) = if status.is_success() {
                            match this.ctx.answer(&answer) {
                                Ok(events) => (events, false),
                                Err(error) => {
                                    tracing::warn!(
                                        "pseudo stream: the upstream answer is malformed"
                                    );
                                    (error, true)
                                }
                            }
                        } else {
                            tracing::debug!(%status, "pseudo stream: the upstream answered a failure");
                            (this.ctx.upstream_error(status, &answer), true)
                        };
                        this.state.set(State::Done);
                        settle(this.handoff, failed);
                        return Poll::Ready(Some(events));
                    }
                    Poll::Pending => {}
                },
                StateProj::Done => return Poll::Ready(None),
            }
            // Nothing to send yet: a keep-alive when one is due.
            if this.keep_alive.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let next = Instant::now() + *this.interval;
            this.keep_alive.as_mut().reset(next);
            return Poll::Ready(Some(this.ctx.keep_alive()));
        }
    }
}
