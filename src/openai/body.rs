//! [`OpenAiBody`]: the response body of [`OpenAi`](super::OpenAi): a converted answer, a
//! Gemini stream converted event by event, or the inner body untouched.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use serde_json::Value;

use super::response::OpenAiStream;
use crate::sse::SseDecoder;
use crate::usage::{gemini_usage, UpstreamUsage};

pin_project! {
    /// The response body of [`OpenAi`](super::OpenAi).
    pub struct OpenAiBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
        Stream { #[pin] body: B, state: Box<StreamState> },
    }
}

pub(super) struct StreamState {
    pub(super) decoder: SseDecoder,
    pub(super) converter: OpenAiStream,
    pub(super) out: VecDeque<Bytes>,
    pub(super) done: bool,
    /// Gets the upstream's token count from the events, whether or not the client sees it.
    pub(super) upstream_usage: Option<UpstreamUsage>,
}

impl<B> std::fmt::Debug for OpenAiBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiBody").finish_non_exhaustive()
    }
}

impl<B> OpenAiBody<B> {
    pub(super) fn inner(body: B) -> Self {
        OpenAiBody {
            kind: Kind::Inner { body },
        }
    }

    pub(super) fn full(data: Bytes) -> Self {
        OpenAiBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    pub(super) fn stream(
        body: B,
        converter: OpenAiStream,
        upstream_usage: Option<UpstreamUsage>,
    ) -> Self {
        OpenAiBody {
            kind: Kind::Stream {
                body,
                state: Box::new(StreamState {
                    decoder: SseDecoder::new(),
                    converter,
                    out: VecDeque::new(),
                    done: false,
                    upstream_usage,
                }),
            },
        }
    }
}

/// `data: {json}\n\n`.
pub(super) fn event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

impl StreamState {
    /// Converts every complete Gemini event decoded so far.
    fn drain(&mut self) {
        while let Some(sse) = self.decoder.next_event() {
            let Ok(value) = sse.json::<Value>() else {
                continue;
            };
            if value.get("error").is_some() {
                // Gemini sent an error mid-stream: say it in OpenAI's shape and stop.
                self.fail(super::layer::gemini_error_to_openai(
                    http::StatusCode::INTERNAL_SERVER_ERROR,
                    &value,
                ));
                return;
            }
            if let Some(slot) = &self.upstream_usage {
                if let Some(usage) = value.get("usageMetadata").and_then(gemini_usage) {
                    slot.set(usage);
                }
            }
            for chunk in self.converter.chunk(&value) {
                self.out.push_back(event(&chunk));
            }
        }
    }

    fn end(&mut self) {
        self.decoder.finish();
        self.drain();
        if self.done {
            return;
        }
        for chunk in self.converter.finish() {
            self.out.push_back(event(&chunk));
        }
        self.out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
        self.done = true;
    }

    fn fail(&mut self, error: Value) {
        self.out.push_back(event(&error));
        self.done = true;
    }
}

impl<B> Body for OpenAiBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Stream { mut body, state } => loop {
                if let Some(bytes) = state.out.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                if state.done {
                    return Poll::Ready(None);
                }
                match body.as_mut().poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            state.decoder.push(&data);
                            state.drain();
                        }
                    }
                    Poll::Ready(Some(Err(err))) => {
                        // The upstream broke off: end with an error event, never silently.
                        state.fail(serde_json::json!({"error": {
                            "message": format!("the upstream stream broke off: {err}"),
                            "type": "server_error",
                            "param": null,
                            "code": "stream_interrupted",
                        }}));
                    }
                    Poll::Ready(None) => state.end(),
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
            Kind::Stream { state, .. } => state.done && state.out.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Stream { .. } => SizeHint::default(),
        }
    }
}
