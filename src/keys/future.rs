//! Future types for [`KeyRotation`](super::KeyRotation).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use super::pool::KeyLease;
use crate::api_error::{error_body, ApiFlavor};
use crate::body::{ReadPrefix, ResponseBody};
use crate::classify::{classify_any_error, Classifier, ErrorBody, Outcome, MAX_RETRY_AFTER};
use crate::usage::{AttemptLog, AttemptRecord};

/// Error bodies are read whole, up to this size, so that every key quoted in them can be
/// redacted before they go on. Gemini's error bodies are a few KiB; anything past the cap is cut.
pub const MAX_ERROR_BODY: usize = 1024 * 1024;

/// Longest upstream error message kept in an attempt record.
const MAX_ERROR_MESSAGE: usize = 2000;

/// One attempt in flight: the key it holds and what to report when it ends.
pub(crate) struct Attempt {
    pub(crate) lease: KeyLease,
    pub(crate) model: Option<String>,
    pub(crate) classifier: Classifier,
    pub(crate) log: Option<AttemptLog>,
    pub(crate) started: Instant,
    pub(crate) at: SystemTime,
    /// The error format of a body we write in place of one we cannot read.
    pub(crate) flavor: ApiFlavor,
}

impl Attempt {
    /// Records the attempt in the attempt log only, not in the pool: for an answer the layers
    /// below made themselves ([`FailureClass::Local`](crate::classify::FailureClass::Local)),
    /// which says nothing about the key.
    pub(crate) fn log_only(
        self,
        outcome: &Outcome,
        status: Option<StatusCode>,
        message: Option<String>,
    ) {
        self.log(outcome, status, message);
    }

    /// Adds the attempt to the attempt log, when a usage layer asked for one.
    fn log(&self, outcome: &Outcome, status: Option<StatusCode>, message: Option<String>) {
        if let Some(log) = &self.log {
            log.push(AttemptRecord {
                at: self.at,
                key: self.lease.id().clone(),
                model: self.model.clone(),
                status: status.map(|s| s.as_u16()),
                class: outcome.failure().map(|c| c.name()),
                latency: self.started.elapsed(),
                error_message: message,
            });
        }
    }

    /// Reports the outcome to the pool and, when a usage layer asked, to the attempt log.
    pub(crate) fn report(
        self,
        outcome: &Outcome,
        status: Option<StatusCode>,
        message: Option<String>,
    ) {
        self.log(outcome, status, message);
        self.lease.report_for(self.model.as_deref(), outcome);
    }
}

pin_project! {
    /// Response future of [`KeyRotation`](super::KeyRotation).
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
        // The attempt's span (`attempt`, with the key's fingerprint), entered while the inner
        // future runs.
        span: tracing::Span,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Local { response: Option<Response<ResponseBody<B>>> },
        Called {
            #[pin]
            future: F,
            attempt: Option<Attempt>,
        },
        ReadingError {
            #[pin]
            read: ReadPrefix<B>,
            parts: Option<http::response::Parts>,
            attempt: Option<Attempt>,
        },
    }
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(super) fn local(response: Response<ResponseBody<B>>) -> Self {
        ResponseFuture {
            state: State::Local {
                response: Some(response),
            },
            span: tracing::Span::none(),
        }
    }

    pub(super) fn called(future: F, attempt: Attempt, span: tracing::Span) -> Self {
        ResponseFuture {
            state: State::Called {
                future,
                attempt: Some(attempt),
            },
            span,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: std::fmt::Display + 'static,
    B: http_body::Body<Data = Bytes>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut state = this.state;
        loop {
            match state.as_mut().project() {
                StateProj::Local { response } => {
                    return Poll::Ready(Ok(response.take().expect("polled after completion")));
                }
                StateProj::Called { future, attempt } => {
                    let result = ready!(future.poll(cx));
                    let attempt = attempt.take().expect("polled after completion");
                    let mut res = match result {
                        Ok(res) => res,
                        Err(err) => {
                            let class = classify_any_error(&err);
                            let message = Some(truncate(class.to_string()));
                            attempt.report(&Outcome::Failure(class), None, message);
                            return Poll::Ready(Err(err));
                        }
                    };
                    res.extensions_mut().insert(attempt.lease.id().clone());
                    if let Some(local) = local_outcome(&res) {
                        // Answered below by a layer of ours (an upstream answer that could not
                        // be read): not the key's doing, and not worth another attempt.
                        attempt.log_only(&local, Some(res.status()), None);
                        res.extensions_mut().insert(local);
                        return Poll::Ready(Ok(res.map(ResponseBody::inner)));
                    }
                    if attempt.classifier.is_success(res.status(), res.headers()) {
                        // A stream can carry an error event that quotes the key after its 200.
                        let forms = attempt.lease.key().secret_forms().clone();
                        attempt.report(&Outcome::Success, Some(res.status()), None);
                        res.extensions_mut().insert(Outcome::Success);
                        return Poll::Ready(Ok(
                            res.map(|body| ResponseBody::redacting(body, forms))
                        ));
                    }
                    if crate::decode::is_encoded(res.headers()) {
                        // Nothing decoded it (no `DecodeLayer` below): its bytes can be neither
                        // classified nor redacted, so they are not passed on.
                        let (parts, _unread) = res.into_parts();
                        return Poll::Ready(Ok(unreadable_error(parts, attempt)));
                    }
                    let (parts, body) = res.into_parts();
                    state.set(State::ReadingError {
                        read: ReadPrefix::new(body, MAX_ERROR_BODY),
                        parts: Some(parts),
                        attempt: Some(attempt),
                    });
                }
                StateProj::ReadingError {
                    read,
                    parts,
                    attempt,
                } => {
                    let (mut body, rest) = ready!(read.poll(cx));
                    let mut parts = parts.take().expect("polled after completion");
                    let attempt = attempt.take().expect("polled after completion");
                    if rest.is_some() {
                        // Cut at the cap: an end that begins a key cannot be redacted, so it goes.
                        let keep = attempt.lease.key().secret_forms().cut_partial_end(&body);
                        body.truncate(keep);
                    }
                    let outcome: Outcome = attempt
                        .classifier
                        .classify(parts.status, &parts.headers, &body)
                        .into();
                    // Error bodies may quote the key: never let it reach the client or a log.
                    let body = redact(body, &attempt.lease);
                    let message = attempt.log.as_ref().map(|_| error_message(&body));
                    attempt.report(&outcome, Some(parts.status), message);
                    parts.extensions.insert(outcome);
                    if rest.is_some() {
                        // Past the cap the rest is dropped: a partly redacted body could leak.
                        tracing::debug!(
                            status = parts.status.as_u16(),
                            cap = MAX_ERROR_BODY,
                            "upstream error body truncated"
                        );
                    }
                    drop(rest);
                    parts.headers.remove(header::TRANSFER_ENCODING);
                    parts
                        .headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                    return Poll::Ready(Ok(Response::from_parts(parts, ResponseBody::full(body))));
                }
            }
        }
    }
}

/// The `Local` outcome an inner layer put on its own answer, if any.
fn local_outcome<B>(res: &Response<B>) -> Option<Outcome> {
    match res.extensions().get::<Outcome>() {
        Some(outcome @ Outcome::Failure(crate::classify::FailureClass::Local { .. })) => {
            Some(outcome.clone())
        }
        _ => None,
    }
}

/// An error answer whose body is still encoded: classified by its status and headers alone,
/// and answered with a body of ours that says so, under the upstream's status.
fn unreadable_error<B>(
    parts: http::response::Parts,
    attempt: Attempt,
) -> Response<ResponseBody<B>> {
    unreadable_error_answer(parts, attempt).map(ResponseBody::full)
}

/// [`unreadable_error`]'s answer, its body as bytes (for the reqwest-middleware key layer too).
pub(crate) fn unreadable_error_answer(
    mut parts: http::response::Parts,
    attempt: Attempt,
) -> Response<Bytes> {
    let outcome: Outcome = attempt
        .classifier
        .classify(parts.status, &parts.headers, &[])
        .into();
    let coding = String::from_utf8_lossy(
        parts
            .headers
            .get(header::CONTENT_ENCODING)
            .map_or(&b""[..], |v| v.as_bytes()),
    )
    .chars()
    .take(64)
    .collect::<String>();
    let message = format!(
        "the upstream's error answer (status {}) was encoded ({coding}) and could not be read; \
         decode upstream answers with gemini_balance::decode::DecodeLayer",
        parts.status.as_u16()
    );
    tracing::warn!(status = parts.status.as_u16(), content_encoding = %coding, "an encoded upstream error body was not read");
    let body = error_body(attempt.flavor, parts.status, &message);
    attempt.report(&outcome, Some(parts.status), Some(message));
    parts.extensions.insert(outcome);
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, body)
}

/// The upstream's error message: `error.message` of a JSON error, else the start of the body.
pub(crate) fn error_message(body: &[u8]) -> String {
    match ErrorBody::parse(body, MAX_RETRY_AFTER).and_then(|e| e.message) {
        Some(message) => truncate(message),
        None => truncate(String::from_utf8_lossy(body).into_owned()),
    }
}

pub(crate) fn truncate(mut text: String) -> String {
    if text.len() > MAX_ERROR_MESSAGE {
        let mut end = MAX_ERROR_MESSAGE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// The body without the lease's key (in any of its forms, whatever the body's encoding) or any
/// other Google API key.
pub(crate) fn redact(bytes: Bytes, lease: &KeyLease) -> Bytes {
    match lease.key().secret_forms().redact(&bytes) {
        std::borrow::Cow::Borrowed(_) => bytes,
        std::borrow::Cow::Owned(redacted) => Bytes::from(redacted),
    }
}
