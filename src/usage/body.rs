//! [`UsageBody`]: passes the response body through and finishes the record when it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::attempts::{AttemptLog, RequestBodyCapture, UpstreamUsage};
use super::extract::UsageTap;
use super::handoff::RecordHandoff;
use super::record::{Completion, RequestRecord, TokenUsage};
use super::sink::UsageSink;

/// Judges a response no `KeyRotation` classified (its status and headers only).
static CLASSIFIER: crate::classify::Classifier = crate::classify::Classifier::new();

/// Longest request body kept in a record.
const MAX_RECORDED_BODY: usize = 64 * 1024;

/// A record waiting for its response to end.
pub(crate) struct Pending {
    pub(super) record: RequestRecord,
    pub(super) bodiless: bool,
    pub(super) started: Instant,
    pub(super) log: AttemptLog,
    pub(super) capture: Option<RequestBodyCapture>,
    pub(super) upstream_usage: UpstreamUsage,
    pub(super) sink: Arc<dyn UsageSink>,
    /// An outer layer that answered the client itself has the last word on the record.
    pub(super) handoff: Option<RecordHandoff>,
    /// The classifier's verdict on the response head: the [`Outcome`](crate::classify::Outcome)
    /// `KeyRotation` left on it, else the classifier's reading of the status and headers.
    pub(super) head_ok: bool,
}

/// What the usage layer records about a request before it is sent.
pub(crate) struct Head<'a> {
    pub(crate) flavor: crate::api_error::ApiFlavor,
    pub(crate) path: &'a str,
    pub(crate) model: Option<&'a str>,
    pub(crate) client: Option<crate::usage::ClientId>,
    pub(crate) streamed: bool,
    /// The answer has no body whatever its headers say (a request with `HEAD`): it is complete
    /// once its head is out, and a server that drops the body unread loses nothing.
    pub(crate) bodiless: bool,
    /// Where to hand the finished record instead of the sink (see [`RecordHandoff`]).
    pub(crate) handoff: Option<RecordHandoff>,
}

impl Pending {
    /// Starts the record of a request; `capture` asks `Retry` for the request body.
    pub(crate) fn start(sink: Arc<dyn UsageSink>, head: Head<'_>, capture: bool) -> Pending {
        let at = std::time::SystemTime::now();
        let mut record = RequestRecord::new(crate::usage::RequestId::next(at), at);
        record.protocol = head.flavor;
        record.route = head.path.to_owned();
        record.model = head.model.map(str::to_owned);
        record.client = head.client;
        record.streamed = head.streamed;
        Pending {
            record,
            bodiless: head.bodiless,
            started: Instant::now(),
            log: AttemptLog::default(),
            capture: capture.then(RequestBodyCapture::default),
            upstream_usage: UpstreamUsage::default(),
            sink,
            handoff: head.handoff,
            head_ok: false,
        }
    }

    /// Puts the slots inner layers fill (attempt log, request body, the upstream's token
    /// count) into request extensions.
    pub(crate) fn insert_slots(&self, extensions: &mut http::Extensions) {
        extensions.insert(self.log.clone());
        extensions.insert(self.upstream_usage.clone());
        if let Some(capture) = &self.capture {
            extensions.insert(capture.clone());
        }
    }

    /// The inner service failed without a response.
    pub(crate) fn no_response(self) {
        self.finish(Completion::NoResponse, None, None, false);
    }

    /// Reads the response head and wraps the body, which finishes the record when it ends.
    pub(crate) fn track<B: Body>(mut self, res: http::Response<B>) -> http::Response<UsageBody<B>> {
        let record = &mut self.record;
        record.status = res.status().as_u16();
        record.grpc_status = crate::classify::grpc_code(res.headers());
        record.key = res.extensions().get::<crate::fingerprint::KeyId>().cloned();
        // Success is the classifier's word, not the status alone: an answer it classed as a
        // failure (a quota error under a 200, a gRPC `RESOURCE_EXHAUSTED`) is no success. The
        // head the client gets must pass too: a layer between may have answered in its place
        // (a 502 for an answer it could not convert) and kept the attempt's `Outcome`.
        self.head_ok = CLASSIFIER.is_success(res.status(), res.headers())
            && res
                .extensions()
                .get::<crate::classify::Outcome>()
                .is_none_or(crate::classify::Outcome::is_success);
        if record.model.is_none() {
            // Named in the request body, not the path (OpenAI's chat and embeddings): the inner
            // layer that read the body says which on the response.
            record.model = res
                .extensions()
                .get::<crate::ext::ModelName>()
                .map(|m| m.as_str().to_owned());
        }
        record.attempts = res
            .extensions()
            .get::<crate::ext::Attempts>()
            .map_or(self.log.len() as u32, |a| a.0);
        let tap = if crate::decode::is_encoded(res.headers()) {
            // Compressed bytes hold no readable usage (a stack without `DecodeLayer`).
            UsageTap::Ignore
        } else {
            UsageTap::for_content_type(
                res.headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok()),
            )
        };
        let streamed = tap.is_stream();
        let no_body = self.bodiless
            || res.status() == http::StatusCode::NO_CONTENT
            || res.status() == http::StatusCode::NOT_MODIFIED;
        let (parts, body) = res.into_parts();
        let mut tracker = Tracker::new(self, tap, streamed);
        if no_body {
            // Nothing follows the head: the answer is complete, whether or not the server
            // polls (or drops) the body it will not send.
            tracker.finish(Completion::Complete);
        }
        http::Response::from_parts(parts, UsageBody::tracked(body, tracker))
    }

    /// Completes the record and hands it to the sink.
    pub(super) fn finish(
        mut self,
        completion: Completion,
        first_byte: Option<Duration>,
        tokens: Option<TokenUsage>,
        streamed: bool,
    ) {
        let record = &mut self.record;
        record.latency = self.started.elapsed();
        record.time_to_first_byte = first_byte;
        // The upstream's own count when a layer left it, else what the answer showed.
        record.tokens = self.upstream_usage.get().or(tokens).unwrap_or_default();
        record.streamed |= streamed;
        record.completion = completion;
        record.success = self.head_ok
            && completion == Completion::Complete
            && record.grpc_status.is_none_or(|code| code == 0);
        record.attempt_log = self.log.take();
        if record.key.is_none() {
            // Answered before the upstream was (a pseudo stream's 200): the key that served is
            // the last attempt's.
            record.key = record.attempt_log.last().map(|a| a.key.clone());
        }
        if record.attempts == 0 {
            record.attempts = record.attempt_log.len() as u32;
        }
        // Under a handoff the outer layer may yet turn a success into a failure: keep the body.
        if !record.success || self.handoff.is_some() {
            if let Some(body) = self.capture.as_ref().and_then(RequestBodyCapture::get) {
                let kept = &body[..body.len().min(MAX_RECORDED_BODY)];
                record.request_body = Some(String::from_utf8_lossy(kept).into_owned());
            }
        }
        match self.handoff {
            Some(handoff) => handoff.deliver(self.record, self.sink, self.upstream_usage.get()),
            None => self.sink.record(self.record),
        }
    }
}

/// Follows a body to its end; writes the record when it ends or is dropped.
pub(super) struct Tracker {
    pending: Option<Pending>,
    tap: UsageTap,
    streamed: bool,
    first_byte: Option<Duration>,
}

impl Tracker {
    pub(super) fn new(pending: Pending, tap: UsageTap, streamed: bool) -> Self {
        Tracker {
            pending: Some(pending),
            tap,
            streamed,
            first_byte: None,
        }
    }

    fn data(&mut self, data: &Bytes) {
        if self.first_byte.is_none() {
            if let Some(p) = &self.pending {
                self.first_byte = Some(p.started.elapsed());
            }
        }
        self.tap.observe(data);
    }

    fn grpc_status(&mut self, code: u32) {
        if let Some(p) = &mut self.pending {
            p.record.grpc_status = Some(code);
        }
    }

    fn finish(&mut self, completion: Completion) {
        if let Some(pending) = self.pending.take() {
            // A layer below that read the upstream's count (the OpenAI conversion) has the last
            // word on the tokens: a whole JSON answer need not be read for them again.
            let known = !self.tap.is_stream() && pending.upstream_usage.get().is_some();
            let tokens = if known { None } else { self.tap.finish() };
            let completion = match completion {
                Completion::Complete if self.tap.saw_error_event() => Completion::ErrorEvent,
                other => other,
            };
            pending.finish(completion, self.first_byte, tokens, self.streamed);
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        // Dropped before the end: the client went away (or the server gave up on the body).
        self.finish(Completion::ClientGone);
    }
}

pin_project! {
    /// The response body of [`Usage`](super::Usage): the inner body, frame by frame, watched for
    /// token usage. Nothing is buffered beyond a bounded window and no frame is held back.
    pub struct UsageBody<B> {
        #[pin]
        inner: B,
        tracker: Option<Tracker>,
    }
}

impl<B> std::fmt::Debug for UsageBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageBody").finish_non_exhaustive()
    }
}

impl<B: Body> UsageBody<B> {
    pub(super) fn tracked(inner: B, mut tracker: Tracker) -> Self {
        if inner.is_end_stream() {
            // Servers do not poll a body that is already over: finish now.
            tracker.finish(Completion::Complete);
        }
        UsageBody {
            inner,
            tracker: Some(tracker),
        }
    }

    pub(super) fn untracked(inner: B) -> Self {
        UsageBody {
            inner,
            tracker: None,
        }
    }
}

impl<B> Body for UsageBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if let Some(tracker) = this.tracker.as_mut() {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        tracker.data(data);
                    }
                    // A gRPC call's status comes in the trailers.
                    if let Some(code) = frame.trailers_ref().and_then(crate::classify::grpc_code) {
                        tracker.grpc_status(code);
                    }
                    // Servers stop polling a body that says it is over (a known length is
                    // complete), so the end may never be polled: finish here.
                    if this.inner.is_end_stream() {
                        tracker.finish(Completion::Complete);
                    }
                }
                Some(Err(_)) => tracker.finish(Completion::BodyError),
                None => tracker.finish(Completion::Complete),
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
