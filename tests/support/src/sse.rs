//! The streamed answer: `text/event-stream`, one `data: {chunk}\r\n\r\n` event per frame.
//!
//! Events are sent from a task through a channel, so each one leaves the mock as its own write.
//! A [`StreamGate`] holds every stream after its first event until the test lets more through,
//! which tells a layer that passes the stream on from one that buffers it. A stream whose reader
//! goes away before its last event (the connection closed, the body dropped) is counted, held
//! or not, so a test can tell that a client's disconnect reached the upstream.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderValue};
use http_body::Frame;
use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};

/// Holds streams after their first event; each permit lets one more event through.
///
/// Made by [`MockGemini::gate_streams`](super::MockGemini::gate_streams).
#[derive(Debug, Clone)]
pub struct StreamGate {
    permits: Arc<Semaphore>,
}

impl StreamGate {
    pub(crate) fn new() -> Self {
        StreamGate {
            permits: Arc::new(Semaphore::new(0)),
        }
    }

    /// Lets `events` more events through (across all gated streams).
    pub fn release(&self, events: usize) {
        self.permits.add_permits(events);
    }

    async fn pass(&self) {
        if let Ok(permit) = self.permits.acquire().await {
            permit.forget();
        }
    }
}

/// A body fed by a channel: one frame per message.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|next| next.map(|data| Ok(Frame::data(data))))
    }
}

/// One SSE event as Gemini frames it.
pub fn sse_event(chunk: &Value) -> String {
    format!("data: {chunk}\r\n\r\n")
}

/// A `text/event-stream` response sending `chunks` as events, held by `gate` after the first;
/// `abandoned` counts the stream if its reader goes away before the last event.
pub(crate) fn sse_response(
    chunks: Vec<Value>,
    gate: Option<StreamGate>,
    abandoned: Arc<AtomicU64>,
) -> Response {
    let (tx, rx) = mpsc::channel(chunks.len().max(1));
    tokio::spawn(async move {
        for (i, chunk) in chunks.iter().enumerate() {
            if i > 0 {
                if let Some(gate) = &gate {
                    // A held stream notices its reader leaving without waiting for a permit.
                    tokio::select! {
                        _ = gate.pass() => {}
                        _ = tx.closed() => {
                            abandoned.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }
            if tx.send(Bytes::from(sse_event(chunk))).await.is_err() {
                abandoned.fetch_add(1, Ordering::Relaxed);
                return; // the client went away
            }
        }
    });
    let mut res = Response::new(Body::new(ChannelBody { rx }));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}
