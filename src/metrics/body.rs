//! [`MetricsBody`], and the measurement of one request from its arrival to its body's end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Buf;
use http::{header, HeaderMap};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::labels::{KeyClassLabels, KeyHex, KeyLabels, RequestLabels, Static};
use super::registry::Inner;
use crate::api_error::ApiFlavor;
use crate::ext::ModelName;
use crate::usage::AttemptLog;

/// One request being measured; recorded once, when its body ends, fails or is dropped (or
/// when no response comes).
pub(crate) struct Measure {
    pub(crate) metrics: Arc<Inner>,
    pub(crate) flavor: ApiFlavor,
    pub(crate) operation: &'static str,
    pub(crate) model: Option<ModelName>,
    /// The client gets a stream: the request asked for one, or the answer is an event stream.
    pub(crate) stream: bool,
    pub(crate) log: AttemptLog,
    pub(crate) started: Instant,
    pub(crate) status: u16,
    pub(crate) first_byte: Option<Duration>,
    /// Counted in `open_streams` (until recorded).
    pub(crate) open_stream: bool,
    pub(crate) done: bool,
}

impl Measure {
    /// The response head is in: its status, the model an inner layer read from the body, and
    /// whether it streams.
    pub(crate) fn head<B>(mut self, res: http::Response<B>) -> http::Response<MetricsBody<B>> {
        self.status = res.status().as_u16();
        if self.model.is_none() {
            self.model = res.extensions().get::<ModelName>().cloned();
        }
        self.stream |= is_event_stream(res.headers());
        if self.stream {
            self.metrics.series.open_streams.inc();
            self.open_stream = true;
        }
        res.map(|inner| MetricsBody {
            inner,
            measure: Some(self),
        })
    }

    /// Records the request (once).
    fn record(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        let series = &self.metrics.series;
        let model = series
            .models
            .label(self.model.as_ref().map(ModelName::as_str));
        series
            .requests
            .get_or_create(&RequestLabels {
                operation: self.operation,
                flavor: self.flavor.as_str(),
                model,
                status: self.status,
            })
            .inc();
        series
            .duration
            .get(self.flavor)
            .observe(elapsed.as_secs_f64());
        let (attempts, upstream) = self.log.inspect(|log| {
            let mut upstream = Duration::ZERO;
            for attempt in log {
                upstream += attempt.latency;
                series
                    .attempts
                    .get_or_create(&Static {
                        name: "class",
                        value: attempt.class.unwrap_or("ok"),
                    })
                    .inc();
                let key = KeyHex(attempt.key.digest());
                series.key_requests.get_or_create(&KeyLabels { key }).inc();
                // An answer of the gateway's own below the key layer says nothing of the key.
                if let Some(class) = attempt.class.filter(|c| *c != "local") {
                    series
                        .key_failures
                        .get_or_create(&KeyClassLabels { key, class })
                        .inc();
                }
            }
            (log.len() as u64, upstream)
        });
        if attempts > 0 {
            series.retries.inc_by(attempts - 1);
            series
                .upstream
                .get(self.flavor)
                .observe(upstream.as_secs_f64());
            if !self.stream {
                series
                    .overhead
                    .get(self.flavor)
                    .observe(elapsed.saturating_sub(upstream).as_secs_f64());
            }
        }
        if let Some(first_byte) = self.first_byte.filter(|_| self.stream) {
            series
                .first_byte
                .get(self.flavor)
                .observe(first_byte.as_secs_f64());
        }
        if std::mem::take(&mut self.open_stream) {
            series.open_streams.dec();
        }
    }
}

impl Drop for Measure {
    fn drop(&mut self) {
        // The client went away (or no response came): what is known is recorded.
        self.record();
    }
}

/// `text/event-stream` (SSE): a streamed answer.
fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

pin_project! {
    /// Response body of [`Metrics`](super::Metrics): passes the body through and records the
    /// request when it ends (or is dropped); notes when its first byte went out.
    pub struct MetricsBody<B> {
        #[pin]
        inner: B,
        measure: Option<Measure>,
    }
}

impl<B> std::fmt::Debug for MetricsBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsBody").finish_non_exhaustive()
    }
}

impl<B> MetricsBody<B> {
    /// A body that records nothing.
    pub(crate) fn untracked(inner: B) -> Self {
        MetricsBody {
            inner,
            measure: None,
        }
    }
}

impl<B: Body> Body for MetricsBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(measure) = this.measure {
            match &frame {
                Some(Ok(frame)) => {
                    if measure.first_byte.is_none()
                        && frame.data_ref().is_some_and(|d| d.has_remaining())
                    {
                        measure.first_byte = Some(measure.started.elapsed());
                    }
                    if this.inner.is_end_stream() {
                        measure.record();
                    }
                }
                Some(Err(_)) | None => measure.record(),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
