//! Future types for [`KeyRotation`](super::KeyRotation).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use pin_project_lite::pin_project;

use super::pool::KeyLease;
use crate::body::{ReadPrefix, ResponseBody};
use crate::classify::{Classifier, Outcome};
use crate::redact::redact_secret;

/// Error bodies are read whole, up to this size, so that every key quoted in them can be
/// redacted before they go on. Gemini's error bodies are a few KiB; anything past the cap is cut.
pub const MAX_ERROR_BODY: usize = 1024 * 1024;

pin_project! {
    /// Response future of [`KeyRotation`](super::KeyRotation).
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Local { response: Option<Response<ResponseBody<B>>> },
        Called {
            #[pin]
            future: F,
            lease: Option<KeyLease>,
            model: Option<String>,
            classifier: Classifier,
        },
        ReadingError {
            #[pin]
            read: ReadPrefix<B>,
            parts: Option<http::response::Parts>,
            lease: Option<KeyLease>,
            model: Option<String>,
            classifier: Classifier,
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
        }
    }

    pub(super) fn called(
        future: F,
        lease: KeyLease,
        model: Option<String>,
        classifier: Classifier,
    ) -> Self {
        ResponseFuture {
            state: State::Called {
                future,
                lease: Some(lease),
                model,
                classifier,
            },
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
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Local { response } => {
                    return Poll::Ready(Ok(response.take().expect("polled after completion")));
                }
                StateProj::Called {
                    future,
                    lease,
                    model,
                    classifier,
                } => {
                    let result = ready!(future.poll(cx));
                    let mut res = match result {
                        Ok(res) => res,
                        Err(err) => {
                            let class = crate::classify::classify_any_error(&err);
                            if let Some(lease) = lease.take() {
                                lease.report_for(model.as_deref(), &Outcome::Failure(class));
                            }
                            return Poll::Ready(Err(err));
                        }
                    };
                    let lease_ref = lease.as_ref().expect("lease taken once");
                    res.extensions_mut().insert(lease_ref.id().clone());
                    if classifier.is_success(res.status(), res.headers()) {
                        if let Some(lease) = lease.take() {
                            lease.report_for(model.as_deref(), &Outcome::Success);
                        }
                        res.extensions_mut().insert(Outcome::Success);
                        return Poll::Ready(Ok(res.map(ResponseBody::inner)));
                    }
                    let (parts, body) = res.into_parts();
                    let next = State::ReadingError {
                        read: ReadPrefix::new(body, MAX_ERROR_BODY),
                        parts: Some(parts),
                        lease: lease.take(),
                        model: model.take(),
                        classifier: classifier.clone(),
                    };
                    state.set(next);
                }
                StateProj::ReadingError {
                    read,
                    parts,
                    lease,
                    model,
                    classifier,
                } => {
                    let (prefix, rest) = ready!(read.poll(cx));
                    let mut parts = parts.take().expect("polled after completion");
                    let lease = lease.take().expect("lease taken once");
                    let outcome: Outcome = classifier
                        .classify(parts.status, &parts.headers, &prefix)
                        .into();
                    // Error bodies may quote the key: never let it reach the client or a log.
                    let prefix = redact(prefix, &lease);
                    lease.report_for(model.as_deref(), &outcome);
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
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(prefix.len()));
                    let body = ResponseBody::full(prefix);
                    return Poll::Ready(Ok(Response::from_parts(parts, body)));
                }
            }
        }
    }
}

fn redact(bytes: Bytes, lease: &KeyLease) -> Bytes {
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return bytes;
    };
    let key = lease.key();
    match redact_secret(text, key.expose_secret(), key.id().mask()) {
        std::borrow::Cow::Borrowed(_) => bytes,
        std::borrow::Cow::Owned(s) => Bytes::from(s),
    }
}
