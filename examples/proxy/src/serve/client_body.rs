//! A request body read under two deadlines, so that a client cannot hold its request (and
//! connection) for ever: CLIENT_BODY_TIMEOUT on each wait for more of the body (a client that
//! stops half-way), and a minimum average rate, CLIENT_BODY_MIN_RATE bytes a second after a
//! first CLIENT_BODY_TIMEOUT (a client that trickles a byte now and then). The request is then
//! answered 408 (see `Answer` in the parent module), through a slot of [`BodyTimeouts`].

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gemini_balance::BoxError;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::connection::ConnState;

/// The deadlines a request body is read under (startup settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyDeadlines {
    /// CLIENT_BODY_TIMEOUT: the longest wait for more of the body; also the grace before the
    /// minimum rate applies.
    pub timeout: Duration,
    /// CLIENT_BODY_MIN_RATE: bytes a second the body must average after the first `timeout`
    /// (0: no minimum).
    pub min_rate: u64,
}

impl BodyDeadlines {
    /// When a body whose first wait began at `started`, and of which `received` bytes came,
    /// falls below the minimum rate; `None` without a minimum (or past any clock).
    fn too_slow_at(&self, started: Instant, received: u64) -> Option<Instant> {
        if self.min_rate == 0 {
            return None;
        }
        let earned = Duration::from_millis(received.saturating_mul(1000) / self.min_rate);
        started.checked_add(self.timeout.checked_add(earned)?)
    }
}

/// How a request body timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The client sent nothing for CLIENT_BODY_TIMEOUT.
    Stalled,
    /// The body came more slowly than CLIENT_BODY_MIN_RATE.
    TooSlow,
}

/// A request body timed out. Travels as the payload of an [`io::ErrorKind::TimedOut`] error.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimedOut {
    /// How.
    pub cut: Cut,
    /// The deadlines it was read under.
    pub deadlines: BodyDeadlines,
}

impl fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let timeout = self.deadlines.timeout.as_secs();
        match self.cut {
            Cut::Stalled => write!(
                f,
                "the client sent no request body data for {timeout} s (CLIENT_BODY_TIMEOUT)"
            ),
            Cut::TooSlow => write!(
                f,
                "the client sent its request body more slowly than {} bytes/s (CLIENT_BODY_MIN_RATE) after the first {timeout} s (CLIENT_BODY_TIMEOUT)",
                self.deadlines.min_rate
            ),
        }
    }
}

impl std::error::Error for BodyTimedOut {}

/// Where the requests of one connection record that their body timed out, for their answer
/// to become a 408: one slot per request with a body, held while its answer or its body lives,
/// so that timeouts on concurrent HTTP/2 streams do not overwrite each other. No allocation:
/// 32 slots in two words, as many as an HTTP/2 connection has streams (HTTP/1.1 has one
/// request at a time).
#[derive(Debug, Default)]
pub struct BodyTimeouts {
    /// Bit `i`: slot `i` is held by a request's answer; bit `32 + i`: by its body.
    held: AtomicU64,
    /// Bit `i`: slot `i`'s body stalled; bit `32 + i`: it came too slowly.
    timed_out: AtomicU64,
}

/// A request's slot in [`BodyTimeouts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutSlot(u32);

impl TimeoutSlot {
    /// Its bit in the low word: in `held` its answer's, in `timed_out` [`Cut::Stalled`].
    fn low(self) -> u64 {
        1 << self.0
    }

    /// Its bit in the high word: in `held` its body's, in `timed_out` [`Cut::TooSlow`].
    fn high(self) -> u64 {
        1 << (32 + self.0)
    }
}

impl BodyTimeouts {
    /// A free slot, now held by both the answer and the body of a new request; `None` if all
    /// are held (bodies kept past their answers): that request's timeout is then answered by
    /// whatever its handler makes of the body's error.
    pub fn claim(&self) -> Option<TimeoutSlot> {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            let free = !(held | (held >> 32)) as u32;
            if free == 0 {
                return None;
            }
            let slot = TimeoutSlot(free.trailing_zeros());
            let bits = slot.low() | slot.high();
            match self.held.compare_exchange_weak(
                held,
                held | bits,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    // Nobody else holds the slot: what a former holder recorded goes.
                    self.timed_out.fetch_and(!bits, Ordering::Relaxed);
                    return Some(slot);
                }
                Err(now) => held = now,
            }
        }
    }

    /// Records that the body of `slot`'s request timed out.
    fn record(&self, slot: TimeoutSlot, cut: Cut) {
        let bit = match cut {
            Cut::Stalled => slot.low(),
            Cut::TooSlow => slot.high(),
        };
        self.timed_out.fetch_or(bit, Ordering::Release);
    }

    /// Whether (and how) the body of `slot`'s request timed out.
    pub fn recorded(&self, slot: TimeoutSlot) -> Option<Cut> {
        let timed_out = self.timed_out.load(Ordering::Acquire);
        if timed_out & slot.low() != 0 {
            Some(Cut::Stalled)
        } else if timed_out & slot.high() != 0 {
            Some(Cut::TooSlow)
        } else {
            None
        }
    }

    /// The answer of `slot`'s request is done with it.
    pub fn release_answer(&self, slot: TimeoutSlot) {
        self.held.fetch_and(!slot.low(), Ordering::Relaxed);
    }

    /// The body of `slot`'s request is done with it.
    fn release_body(&self, slot: TimeoutSlot) {
        self.held.fetch_and(!slot.high(), Ordering::Relaxed);
    }
}

pin_project! {
    /// A request body read under [`BodyDeadlines`].
    pub struct ClientBody<B = Incoming> {
        #[pin]
        inner: B,
        // Armed at the first wait; most bodies arrive with the head and never wait.
        #[pin]
        timer: Option<Sleep>,
        deadlines: BodyDeadlines,
        // A frame came since the timer was armed: the next wait sets a new deadline.
        progressed: bool,
        // When the first wait began: the minimum rate counts from there.
        first_wait: Option<Instant>,
        // Data bytes received so far.
        received: u64,
        // What the armed timer cuts for.
        cut: Cut,
        conn: Arc<ConnState>,
        slot: Option<TimeoutSlot>,
    }

    impl<B> PinnedDrop for ClientBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(slot) = this.slot {
                this.conn.body_timeouts().release_body(slot);
            }
        }
    }
}

impl<B> ClientBody<B> {
    /// The body of a request of `conn`, which holds `slot` of its [`BodyTimeouts`].
    pub fn new(
        inner: B,
        deadlines: BodyDeadlines,
        conn: Arc<ConnState>,
        slot: Option<TimeoutSlot>,
    ) -> Self {
        ClientBody {
            inner,
            timer: None,
            deadlines,
            progressed: false,
            first_wait: None,
            received: 0,
            cut: Cut::Stalled,
            conn,
            slot,
        }
    }
}

impl<B> fmt::Debug for ClientBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBody")
            .field("deadlines", &self.deadlines)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl<B> Body for ClientBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.progressed = true;
            if let Some(Ok(frame)) = &frame {
                let len = frame.data_ref().map_or(0, Bytes::len);
                *this.received += len as u64;
            }
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        // Waiting: the deadline is set when a wait starts, not at each frame: the sooner of
        // the next CLIENT_BODY_TIMEOUT and the moment the body falls below the minimum rate.
        if *this.progressed || this.timer.is_none() {
            let now = Instant::now();
            let started = *this.first_wait.get_or_insert(now);
            let stalled = now + this.deadlines.timeout;
            let (deadline, cut) = match this.deadlines.too_slow_at(started, *this.received) {
                Some(too_slow) if too_slow < stalled => (too_slow, Cut::TooSlow),
                _ => (stalled, Cut::Stalled),
            };
            *this.cut = cut;
            match this.timer.as_mut().as_pin_mut() {
                Some(timer) => timer.reset(deadline),
                None => this.timer.set(Some(tokio::time::sleep_until(deadline))),
            }
            *this.progressed = false;
        }
        match this.timer.as_pin_mut() {
            Some(timer) => {
                ready!(timer.poll(cx));
                if let Some(slot) = *this.slot {
                    this.conn.body_timeouts().record(slot, *this.cut);
                }
                Poll::Ready(Some(Err(Box::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    BodyTimedOut {
                        cut: *this.cut,
                        deadlines: *this.deadlines,
                    },
                )))))
            }
            None => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
