//! One client connection's lifetime: what is in progress on it, when it has waited too long
//! for a request, and how it ends on shutdown.
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

/// What the requests of one connection share with its watchdog ([`Watched`]). Everything of a
/// connection runs on one serving thread: the atomics are never contended.
#[derive(Debug)]
pub struct ConnState {
    opened: Instant,
    /// Requests whose response has not been sent in full (HTTP/2: open streams).
    in_flight: AtomicUsize,
    /// Requests received so far; also the sequence number of the latest.
    received: AtomicU64,
    /// Milliseconds after `opened` when `in_flight` last fell to 0.
    idle_since_ms: AtomicU64,
    /// The sequence number of the latest request whose body timed out (0: none).
    body_timed_out: AtomicU64,
}

impl ConnState {
    /// A connection accepted now.
    pub fn new() -> Self {
        ConnState {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            received: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            body_timed_out: AtomicU64::new(0),
        }
    }

    /// A request head arrived: counts it in progress until the returned guard is dropped (with
    /// the response body, once it is sent). Returns the request's sequence number.
    pub fn begin(self: &Arc<Self>) -> (InFlight, u64) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let seq = self.received.fetch_add(1, Ordering::Relaxed) + 1;
        (InFlight { conn: self.clone() }, seq)
    }

    /// Requests in progress.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Marks request `seq` as one whose body timed out.
    pub fn body_timed_out(&self, seq: u64) {
        self.body_timed_out.store(seq, Ordering::Relaxed);
    }

    /// Whether request `seq`'s body timed out.
    pub fn did_body_time_out(&self, seq: u64) -> bool {
        self.body_timed_out.load(Ordering::Relaxed) == seq
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
        let conn = &self.conn;
        // The clock is read once per request, when the connection falls idle.
        if conn.in_flight.load(Ordering::Relaxed) == 1 {
            let since = Instant::now().saturating_duration_since(conn.opened);
            let ms = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
            conn.idle_since_ms.store(ms, Ordering::Relaxed);
        }
        conn.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// A connection that can be asked to finish what it is doing and close.
pub trait Graceful {
    /// Finish the requests in progress, take no more, then close.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

/// How long a connection may wait with nothing in progress.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For its first complete request head, from its opening (CLIENT_HEADER_TIMEOUT).
    pub header: Duration,
    /// For its next request, from the end of the previous response (CLIENT_IDLE_TIMEOUT).
    pub idle: Duration,
}

pin_project! {
    /// Drives a connection until it ends, it has waited too long with nothing in progress
    /// (then it is dropped: closed), or the server stops.
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
        // out (the end of a response does not wake this task).
        let first = state.opened + timeouts.header.min(timeouts.idle);
        Watched {
            conn,
            timer: tokio::time::sleep_until(first),
            state,
            timeouts,
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
            let next = match this
                .state
                .deadline(this.timeouts.header, this.timeouts.idle)
            {
                Some(deadline) if deadline <= now => return Poll::Ready(Ended::TimedOut),
                Some(deadline) => deadline,
                // Busy: look again one idle period from now (the end of a response does not
                // wake this task; the deadline is worked out again when the timer fires).
                None => now + this.timeouts.idle,
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
        let (request, _) = state.begin();
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
        };
        let pending = Pending {
            asked_to_stop: false,
        };
        let started = Instant::now();
        let watched = tokio::spawn(Watched::new(pending, state.clone(), timeouts, rx));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (request, _) = state.begin();
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(request);
        assert_eq!(watched.await.unwrap(), Ended::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(16));
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
        let (_request, _) = state.begin();
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
