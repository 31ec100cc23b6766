//! [`OptimizedBody`]: an event stream with long text deltas re-emitted in small, timed pieces.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::params::OptimizerParams;
use super::rechunk::{rechunk, Piece};
use crate::sse::SseDecoder;

/// Events larger than this are passed on whole (a chunk this large carries an image, not text
/// to type out). When an event still unfinished grows past it, the rest of the stream is passed
/// on as it comes, unread.
pub const MAX_OPTIMIZED_EVENT_BYTES: usize = 1024 * 1024;

pin_project! {
    /// Response body of [`StreamOptimizer`](super::StreamOptimizer), also usable on its own
    /// around any event-stream body ([`OptimizedBody::new`]).
    ///
    /// Events pass through byte for byte unless they carry text to split; data is read from the
    /// inner body only when the pieces already read have gone out, so a slow reader slows the
    /// upstream instead of filling memory.
    pub struct OptimizedBody<B> {
        #[pin]
        inner: B,
        state: Option<Box<Rechunker>>,
    }
}

struct Rechunker {
    params: Arc<OptimizerParams>,
    decoder: SseDecoder,
    queue: VecDeque<Piece>,
    sleep: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    inner_done: bool,
    /// An event was too large: the rest of the stream passes through unread.
    bypass: bool,
    trailers: Option<HeaderMap>,
}

impl<B> fmt::Debug for OptimizedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OptimizedBody")
            .field("optimizing", &self.state.is_some())
            .finish_non_exhaustive()
    }
}

impl<B> OptimizedBody<B> {
    /// Re-chunks the event stream `inner` with `params` (passes it through untouched when
    /// they are not [enabled](OptimizerParams::enabled)).
    pub fn new(inner: B, params: OptimizerParams) -> Self {
        Self::with_shared(inner, Arc::new(params))
    }

    pub(super) fn with_shared(inner: B, params: Arc<OptimizerParams>) -> Self {
        OptimizedBody {
            inner,
            state: Some(Box::new(Rechunker {
                params,
                decoder: SseDecoder::with_max_event_bytes(MAX_OPTIMIZED_EVENT_BYTES),
                queue: VecDeque::new(),
                sleep: None,
                waiting: false,
                inner_done: false,
                bypass: false,
                trailers: None,
            })),
        }
    }

    /// Passes `inner` through untouched.
    pub fn passthrough(inner: B) -> Self {
        OptimizedBody { inner, state: None }
    }
}

impl<B> Body for OptimizedBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let Some(st) = this.state.as_mut() else {
            return inner.poll_frame(cx);
        };
        loop {
            if st.waiting {
                if let Some(sleep) = st.sleep.as_mut() {
                    ready!(sleep.as_mut().poll(cx));
                }
                st.waiting = false;
            }
            if let Some((bytes, delay)) = st.queue.pop_front() {
                if !delay.is_zero() {
                    st.wait(delay);
                }
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if let Some(block) = st.decoder.next_block() {
                let params = &st.params;
                let pieces = if params.enabled && block.len() <= MAX_OPTIMIZED_EVENT_BYTES {
                    rechunk(&block, params)
                } else {
                    None
                };
                match pieces {
                    Some(pieces) => st.queue.extend(pieces),
                    None => st.queue.push_back((block, Duration::ZERO)),
                }
                continue;
            }
            if st.decoder.is_over_limit() {
                st.bypass = true;
                let rest = st.decoder.take_rest();
                st.queue.push_back((rest, Duration::ZERO));
                continue;
            }
            if st.inner_done {
                let rest = st.decoder.take_rest();
                if !rest.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
                return Poll::Ready(st.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match ready!(inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if st.bypass => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(data) => st.decoder.push(&data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            st.trailers = Some(trailers);
                        }
                    }
                },
                Some(Err(err)) => return Poll::Ready(Some(Err(err))),
                None => {
                    st.inner_done = true;
                    st.decoder.finish();
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            None => self.inner.is_end_stream(),
            Some(st) => {
                st.inner_done
                    && st.queue.is_empty()
                    && st.decoder.pending() == 0
                    && st.trailers.is_none()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            None => self.inner.size_hint(),
            Some(_) => SizeHint::default(),
        }
    }
}

impl Rechunker {
    fn wait(&mut self, delay: Duration) {
        let deadline = Instant::now() + delay;
        match self.sleep.as_mut() {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.waiting = true;
    }
}
