//! A request body that fails when the client sends nothing for CLIENT_BODY_TIMEOUT between
//! frames: a client that stops half-way would otherwise hold its request (and connection)
//! forever. The request is then answered 408 (see `Answer` in the parent module).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
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

/// The client sent nothing for CLIENT_BODY_TIMEOUT while its body was being read. Travels as
/// the payload of an [`io::ErrorKind::TimedOut`] error.
#[derive(Debug)]
pub struct BodyTimedOut {
    /// CLIENT_BODY_TIMEOUT.
    pub waited: Duration,
}

impl fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the client sent no request body data for {} s (CLIENT_BODY_TIMEOUT)",
            self.waited.as_secs()
        )
    }
}

impl std::error::Error for BodyTimedOut {}

pin_project! {
    /// A request body read with a deadline on each wait for the client.
    pub struct ClientBody {
        #[pin]
        inner: Incoming,
        // Armed at the first wait; most bodies arrive with the head and never wait.
        #[pin]
        idle: Option<Sleep>,
        timeout: Duration,
        // A frame came since the timer was armed: the next wait starts a new timeout.
        progressed: bool,
        conn: Arc<ConnState>,
        seq: u64,
    }
}

impl ClientBody {
    /// The body of request `seq` of `conn`.
    pub fn new(inner: Incoming, timeout: Duration, conn: Arc<ConnState>, seq: u64) -> Self {
        ClientBody {
            inner,
            idle: None,
            timeout,
            progressed: false,
            conn,
            seq,
        }
    }
}

impl fmt::Debug for ClientBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBody")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.progressed = true;
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        // Waiting: the deadline is set when a wait starts, not at each frame.
        if *this.progressed || this.idle.is_none() {
            let deadline = Instant::now() + *this.timeout;
            match this.idle.as_mut().as_pin_mut() {
                Some(idle) => idle.reset(deadline),
                None => this.idle.set(Some(tokio::time::sleep_until(deadline))),
            }
            *this.progressed = false;
        }
        match this.idle.as_pin_mut() {
            Some(idle) => {
                ready!(idle.poll(cx));
                this.conn.body_timed_out(*this.seq);
                Poll::Ready(Some(Err(Box::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    BodyTimedOut {
                        waited: *this.timeout,
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
