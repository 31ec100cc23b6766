//! One client connection's lifetime: what is in progress on it, when it has waited too long
//! for a request or for the client to take its answer, and how it ends on shutdown.
//!
//! hyper's own `header_read_timeout` is not used: it runs from the moment hyper waits for a
//! request head, so on a kept-alive HTTP/1.1 connection it is the idle timeout too (the two
//! cannot differ); it does not cover the protocol sniff of hyper-util's auto builder (a
//! connection that sends nothing, or part of the HTTP/2 preface, never reaches it) nor HTTP/2;
//! and it boxes a new timer for every request. Here one timer per connection covers every
//! protocol and phase, and is only reset when it fires.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use super::client_body::BodyTimeouts;

/// What the requests of one connection share with its watchdog ([`Watched`]). Everything of a
/// connection runs on one serving thread: the atomics are never contended.
#[derive(Debug)]
pub struct ConnState {
    opened: Instant,
    /// Requests whose response has not been sent in full (HTTP/2: open streams), plus one while
    /// the socket takes no more of what hyper writes: hyper drops a response body once its last
    /// frame is queued, not once it is written, and the rest must not be cut as idle.
    in_flight: AtomicUsize,
    /// Requests received so far.
    received: AtomicU64,
    /// Milliseconds after `opened` when `in_flight` last fell to 0.
    idle_since_ms: AtomicU64,
    /// Sends waiting on the client: a write the socket does not take (at most one), and HTTP/2
    /// response frames hyper holds until the client's flow-control window lets them through.
    waiting_sends: AtomicUsize,
    /// Bumped each time such a wait ends: the client took something.
    send_progress: AtomicU64,
    /// Where its requests record that their body timed out.
    body_timeouts: BodyTimeouts,
}

impl ConnState {
    /// A connection accepted now.
    pub fn new() -> Self {
        ConnState {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            received: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            waiting_sends: AtomicUsize::new(0),
            send_progress: AtomicU64::new(0),
            body_timeouts: BodyTimeouts::default(),
        }
    }

    /// A request head arrived: counts it in progress until the returned guard is dropped (with
    /// the response body, once hyper has taken all of it).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.received.fetch_add(1, Ordering::Relaxed);
        InFlight { conn: self.clone() }
    }

    /// Requests in progress, plus one while a write is blocked.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// One request (or a blocked write) is no longer in progress.
    fn release(&self) {
        // The clock is read once per request, when the connection falls idle.
        if self.in_flight.load(Ordering::Relaxed) == 1 {
            let since = Instant::now().saturating_duration_since(self.opened);
            let ms = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
            self.idle_since_ms.store(ms, Ordering::Relaxed);
        }
        self.in_flight.fetch_sub(1, Ordering::Release);
    }

    /// The socket took none of a write: hyper holds output the client has not taken, and the
    /// connection is busy until it has.
    pub fn write_blocked(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.send_waiting();
    }

    /// The socket took a write again after [`write_blocked`](Self::write_blocked) (or the
    /// connection failed).
    pub fn write_resumed(&self) {
        self.send_taken();
        self.release();
    }

    /// A response frame waits for the client (HTTP/2: for its flow-control window).
    pub fn send_waiting(&self) {
        self.waiting_sends.fetch_add(1, Ordering::Relaxed);
    }

    /// A frame waiting for the client was taken: send progress.
    pub fn send_taken(&self) {
        self.waiting_sends.fetch_sub(1, Ordering::Relaxed);
        self.send_progress.fetch_add(1, Ordering::Relaxed);
    }

    /// A frame waiting for the client was dropped untaken (its stream was reset).
    pub fn send_dropped(&self) {
        self.waiting_sends.fetch_sub(1, Ordering::Relaxed);
    }

    /// Sends waiting on the client.
    #[cfg(test)]
    pub fn waiting_sends(&self) -> usize {
        self.waiting_sends.load(Ordering::Relaxed)
    }

    /// Where the connection's requests record that their body timed out.
    pub fn body_timeouts(&self) -> &BodyTimeouts {
        &self.body_timeouts
    }

    /// When the connection has waited too long with nothing in progress, or `None` while a
    /// request is in progress: before its first request it has `header` from its opening,
    /// after that `idle` from the end of its latest response.
    fn deadline(&self, header: Duration, idle: Duration) -> Option<Instant> {
        if self.in_flight() > 0 {
            return None;
        }
        if self.received.load(Ordering::Relaxed) == 0 {
            return Some(self.opened + header);
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        Some(self.opened + since + idle)
    }
}

/// A request in progress on its connection; dropped with its response body.
#[derive(Debug)]
pub struct InFlight {
    conn: Arc<ConnState>,
}

impl InFlight {
    /// The connection the request came on.
    pub fn conn(&self) -> &ConnState {
        &self.conn
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.release();
    }
}

/// A connection that can be asked to finish what it is doing and close.
pub trait Graceful {
    /// Finish the requests in progress, take no more, then close.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

/// How long a connection may wait on its client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For its first complete request head, from its opening (CLIENT_HEADER_TIMEOUT).
    pub header: Duration,
    /// For its next request, from the end of the previous response (CLIENT_IDLE_TIMEOUT).
    pub idle: Duration,
    /// For the client to take more of what is sent, while it takes nothing
    /// (CLIENT_SEND_TIMEOUT).
    pub send: Duration,
}

impl Timeouts {
    /// How often the watchdog looks at its connection at least: a send that starts to wait on
    /// the client wakes nobody (that would cost per frame), so a stall is seen at most this
    /// long after it began, and the connection closed at most this long after the send
    /// timeout. A quarter of the send timeout: a few wake-ups a minute per connection.
    fn look_every(&self) -> Duration {
        (self.send / 4).max(Duration::from_millis(1))
    }
}

/// Whether the client of a busy connection takes what is sent, as seen by the watchdog each
/// time it looks.
#[derive(Debug, Default)]
struct SendWatch {
    /// `send_progress` when last looked at.
    progress: u64,
    /// Since when sends have waited on the client with no progress (as first seen).
    stalled_since: Option<Instant>,
}

impl SendWatch {
    /// Looks at `state` at `now`: when the connection is to be closed for its client taking
    /// nothing of what waits for it (`timeout` after that was first seen), or `None` while
    /// nothing waits or something was taken since the last look.
    fn cut_at(&mut self, state: &ConnState, now: Instant, timeout: Duration) -> Option<Instant> {
        let progress = state.send_progress.load(Ordering::Relaxed);
        let waiting = state.waiting_sends.load(Ordering::Relaxed) > 0;
        let moved = std::mem::replace(&mut self.progress, progress) != progress;
        if !waiting {
            self.stalled_since = None;
            return None;
        }
        if moved {
            // Something was taken since the last look: count from now.
            self.stalled_since = Some(now);
        }
        let since = *self.stalled_since.get_or_insert(now);
        Some(since + timeout)
    }
}

pin_project! {
    /// Drives a connection until it ends, it has waited too long with nothing in progress or
    /// for its client to take what is sent (then it is dropped: closed), or the server stops.
    ///
    /// On stop (the shard sends the drain deadline), a connection with nothing in progress is
    /// closed at once (that includes one whose request head is still arriving); the others
    /// are asked to finish their requests and close (HTTP/1.1: no keep-alive; HTTP/2: GOAWAY),
    /// and are closed at the deadline whatever their state.
    pub struct Watched<C> {
        #[pin]
        conn: C,
        #[pin]
        timer: Sleep,
        state: Arc<ConnState>,
        timeouts: Timeouts,
        send: SendWatch,
        // `None` once draining.
        stop: Option<oneshot::Receiver<Instant>>,
    }
}

impl<C> Watched<C> {
    /// Watches `conn`, whose requests share `state`; `stop` brings the drain deadline.
    pub fn new(
        conn: C,
        state: Arc<ConnState>,
        timeouts: Timeouts,
        stop: oneshot::Receiver<Instant>,
    ) -> Self {
        // No deadline can come earlier than this one; when it comes, the real one is worked
        // out (neither the start nor the end of a response wakes this task).
        let first = state.opened
            + timeouts
                .header
                .min(timeouts.idle)
                .min(timeouts.look_every());
        Watched {
            conn,
            timer: tokio::time::sleep_until(first),
            state,
            timeouts,
            send: SendWatch::default(),
            stop: Some(stop),
        }
    }
}

/// How a watched connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended<E> {
    /// hyper finished it (the client closed, or an error).
    Served(Result<(), E>),
    /// It waited too long with nothing in progress.
    TimedOut,
    /// Its client took nothing of what was sent for the send timeout.
    SendTimedOut,
    /// The server stopped: closed at once (nothing in progress) or at the drain deadline.
    Stopped,
}

impl<C, E> Future for Watched<C>
where
    C: Future<Output = Result<(), E>> + Graceful,
{
    type Output = Ended<E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(stop) = this.stop.as_mut() {
            if let Poll::Ready(deadline) = Pin::new(stop).poll(cx) {
                *this.stop = None;
                let Ok(deadline) = deadline else {
                    return Poll::Ready(Ended::Stopped);
                };
                if this.state.in_flight() == 0 {
                    return Poll::Ready(Ended::Stopped);
                }
                this.conn.as_mut().graceful_shutdown();
                this.timer.as_mut().reset(deadline);
            }
        }
        if let Poll::Ready(result) = this.conn.poll(cx) {
            return Poll::Ready(Ended::Served(result));
        }
        loop {
            ready!(this.timer.as_mut().poll(cx));
            if this.stop.is_none() {
                return Poll::Ready(Ended::Stopped);
            }
            let now = Instant::now();
            let look_again = now + this.timeouts.look_every();
            let next = match this
                .state
                .deadline(this.timeouts.header, this.timeouts.idle)
            {
                Some(deadline) if deadline <= now => return Poll::Ready(Ended::TimedOut),
                Some(deadline) => {
                    this.send.stalled_since = None;
                    deadline.min(look_again)
                }
                // Busy: closed if its client has taken nothing of what waits for it for the
                // send timeout.
                None => match this.send.cut_at(this.state, now, this.timeouts.send) {
                    Some(cut) if cut <= now => return Poll::Ready(Ended::SendTimedOut),
                    Some(cut) => cut.min(look_again),
                    None => look_again,
                },
            };
            this.timer.as_mut().reset(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that never ends by itself and records a graceful shutdown.
    struct Pending {
        asked_to_stop: bool,
    }

    impl Future for Pending {
        type Output = Result<(), ()>;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            Poll::Pending
        }
    }

    impl Graceful for Pending {
        fn graceful_shutdown(mut self: Pin<&mut Self>) {
            self.asked_to_stop = true;
        }
    }

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
        send: Duration::from_secs(40),
    };

    fn watched() -> (Watched<Pending>, Arc<ConnState>, oneshot::Sender<Instant>) {
        let state = Arc::new(ConnState::new());
        let (tx, rx) = oneshot::channel();
        let watched = Watched::new(
            Pending {
                asked_to_stop: false,
            },
            state.clone(),
            TIMEOUTS,
            rx,
        );
        (watched, state, tx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_no_request_ends_after_the_header_timeout() {
        let (watched, _state, _stop) = watched();
        let started = Instant::now();
        assert_eq!(watched.await, Ended::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUTS.header);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_ends_one_idle_timeout_after_its_last_response() {
        let (watched, state, _stop) = watched();
        let started = Instant::now();
        let watched = tokio::spawn(watched);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let request = state.begin();
        // Busy for longer than both timeouts: not idle.
        tokio::time::sleep(Duration::from_secs(200)).await;
        assert!(!watched.is_finished());
        drop(request);
        assert_eq!(watched.await.unwrap(), Ended::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(205) + TIMEOUTS.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_timeout_shorter_than_the_header_timeout_applies_after_a_request() {
        let state = Arc::new(ConnState::new());
        let (_stop, rx) = oneshot::channel();
        let timeouts = Timeouts {
            header: Duration::from_secs(60),
            idle: Duration::from_secs(10),
            send: Duration::from_secs(40),
        };
        let pending = Pending {
            asked_to_stop: false,
        };
        let started = Instant::now();
        let watched = tokio::spawn(Watched::new(pending, state.clone(), timeouts, rx));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let request = state.begin();
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(request);
        assert_eq!(watched.await.unwrap(), Ended::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(16));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_takes_nothing_sent_is_closed_after_the_send_timeout() {
        let (watched, state, _stop) = watched();
        let watched = tokio::spawn(watched);
        let _request = state.begin();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let started = Instant::now();
        // An HTTP/2 frame the client's window never lets through.
        state.send_waiting();
        assert_eq!(watched.await.unwrap(), Ended::SendTimedOut);
        let waited = started.elapsed();
        assert!(waited >= TIMEOUTS.send, "{waited:?}");
        assert!(waited <= TIMEOUTS.send * 5 / 4, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_keeps_taking_what_is_sent_is_not_cut() {
        let (watched, state, _stop) = watched();
        let watched = tokio::spawn(watched);
        let _request = state.begin();
        state.send_waiting();
        // A slow reader: a piece taken (and the next handed over) every 30 s, under the 40 s
        // send timeout, for ten times as long.
        for _ in 0..14 {
            tokio::time::sleep(Duration::from_secs(30)).await;
            state.send_taken();
            state.send_waiting();
        }
        assert!(!watched.is_finished());
        // A response waiting on its upstream has nothing waiting on the client: no deadline.
        state.send_taken();
        tokio::time::sleep(Duration::from_secs(1000)).await;
        assert!(!watched.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_write_keeps_a_connection_busy_and_idle_counts_from_its_end() {
        let (watched, state, _stop) = watched();
        let watched = tokio::spawn(watched);
        let request = state.begin();
        // hyper drops the body once its last frame is queued; the socket takes none of it.
        state.write_blocked();
        drop(request);
        // The client reads a little now and then: longer than the idle timeout in all.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            state.write_resumed();
            state.write_blocked();
        }
        assert!(!watched.is_finished());
        state.write_resumed();
        let flushed = Instant::now();
        assert_eq!(watched.await.unwrap(), Ended::TimedOut);
        assert_eq!(flushed.elapsed(), TIMEOUTS.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_blocked_for_the_send_timeout_closes_the_connection() {
        let (watched, state, _stop) = watched();
        let watched = tokio::spawn(watched);
        drop(state.begin());
        state.write_blocked();
        let started = Instant::now();
        assert_eq!(watched.await.unwrap(), Ended::SendTimedOut);
        assert!(started.elapsed() >= TIMEOUTS.send);
    }

    #[tokio::test(start_paused = true)]
    async fn on_stop_a_connection_with_a_blocked_write_drains() {
        let (watched, state, stop) = watched();
        drop(state.begin());
        state.write_blocked();
        let started = Instant::now();
        stop.send(started + Duration::from_secs(30)).unwrap();
        let mut watched = std::pin::pin!(watched);
        assert!(poll_once(watched.as_mut()).is_pending());
        assert!(watched.as_mut().project().conn.asked_to_stop);
        assert_eq!(watched.await, Ended::Stopped);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn on_stop_an_idle_connection_closes_at_once() {
        let (watched, _state, stop) = watched();
        stop.send(Instant::now() + Duration::from_secs(30)).unwrap();
        assert_eq!(watched.await, Ended::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn on_stop_a_busy_connection_drains_until_the_deadline() {
        let (watched, state, stop) = watched();
        let _request = state.begin();
        let started = Instant::now();
        stop.send(started + Duration::from_secs(30)).unwrap();
        let mut watched = std::pin::pin!(watched);
        assert!(poll_once(watched.as_mut()).is_pending());
        assert!(watched.as_mut().project().conn.asked_to_stop);
        assert_eq!(watched.await, Ended::Stopped);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    fn poll_once<F: Future>(f: Pin<&mut F>) -> Poll<F::Output> {
        let waker = std::task::Waker::noop();
        f.poll(&mut Context::from_waker(waker))
    }
}
