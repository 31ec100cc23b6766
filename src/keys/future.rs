//! Future types for [`KeyRotation`](super::KeyRotation).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::Response;
use pin_project_lite::pin_project;

use super::attempt::{unreadable_error_answer, Attempt, Verdict};
use crate::body::{ReadPrefix, ResponseBody};
use crate::classify::{classify_any_error, Outcome};

/// Error bodies are read whole, up to this size, so that every key quoted in them can be
/// redacted before they go on. Gemini's error bodies are a few KiB; anything past the cap is cut.
pub const MAX_ERROR_BODY: usize = 1024 * 1024;

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
                            attempt.failed(&classify_any_error(&err));
                            return Poll::Ready(Err(err));
                        }
                    };
                    let id = attempt.lease.id().clone();
                    let local = res.extensions().get::<Outcome>();
                    let verdict = attempt.judge_head(res.status(), res.headers(), local);
                    res.extensions_mut().insert(id);
                    match verdict {
                        Verdict::Local(local) => {
                            res.extensions_mut().insert(local);
                            return Poll::Ready(Ok(res.map(ResponseBody::inner)));
                        }
                        Verdict::Success(forms) => {
                            res.extensions_mut().insert(Outcome::Success);
                            return Poll::Ready(Ok(
                                res.map(|body| ResponseBody::redacting(body, forms))
                            ));
                        }
                        Verdict::Unreadable(attempt) => {
                            let (parts, _unread) = res.into_parts();
                            return Poll::Ready(Ok(unreadable_error(parts, attempt)));
                        }
                        Verdict::ReadError(attempt) => {
                            let (parts, body) = res.into_parts();
                            state.set(State::ReadingError {
                                read: ReadPrefix::new(body, MAX_ERROR_BODY),
                                parts: Some(parts),
                                attempt: Some(attempt),
                            });
                        }
                    }
                }
                StateProj::ReadingError {
                    read,
                    parts,
                    attempt,
                } => {
                    let (body, rest) = ready!(read.poll(cx));
                    let mut parts = parts.take().expect("polled after completion");
                    let attempt = attempt.take().expect("polled after completion");
                    let cut = rest.is_some();
                    let (outcome, body) =
                        attempt.error_answer(parts.status, &parts.headers, body, cut);
                    parts.extensions.insert(outcome);
                    if cut {
                        // Past the cap the rest is not read: a partly redacted body could leak.
                        tracing::debug!(
                            status = parts.status.as_u16(),
                            cap = MAX_ERROR_BODY,
                            "upstream error body truncated"
                        );
                    }
                    crate::buffer::set_body_length(&mut parts.headers, body.len());
                    return Poll::Ready(Ok(Response::from_parts(parts, ResponseBody::full(body))));
                }
            }
        }
    }
}

/// An error answer whose body is still encoded: answered with a body of ours that says so.
fn unreadable_error<B>(
    parts: http::response::Parts,
    attempt: Attempt,
) -> Response<ResponseBody<B>> {
    unreadable_error_answer(parts, attempt).map(ResponseBody::full)
}
