//! One attempt with a pool key, from lease to report: the core that the tower
//! [`KeyRotation`](super::KeyRotation), the reqwest-middleware `KeyRotationMiddleware` and the
//! [`KeyProbe`](super::probe::KeyProbe) share.
//!
//! [`Attempt::begin`] leases a key for the request's model and attempt context (and fills the
//! retry's [`AttemptKey`] slot); [`Attempt::prepare`] strips the client's credentials and
//! injects the key where the placement says; the answer is then judged with the one
//! [`Classifier`] and reported to the pool and the attempt log: [`Attempt::failed`] (no answer),
//! [`Attempt::succeeded`], [`Attempt::error_answer`] (an error body read, classified and
//! redacted), [`unreadable_error_answer`] (an error body nothing can decode).

use std::time::SystemTime;

use bytes::Bytes;
use http::{header, Extensions, HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use tokio::time::Instant;

use super::layer::KeyPlacement;
use super::pool::{KeyLease, KeyPool};
use super::status::NoKey;
use super::ApiKey;
use crate::api_error::{error_body, ApiFlavor};
use crate::classify::{Classifier, ErrorBody, FailureClass, Outcome, MAX_RETRY_AFTER};
use crate::ext::{AttemptContext, AttemptKey};
use crate::redact::SecretForms;
use crate::usage::{AttemptLog, AttemptRecord};

/// Longest upstream error message kept in an attempt record or a probe report.
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
    /// Leases a key of `pool` for `model`, given what earlier attempts taught (the
    /// [`AttemptContext`] in `extensions`), and tells the retry above which key serves (its
    /// [`AttemptKey`] slot). The attempt log of a usage layer above, if any, is kept for the
    /// report.
    pub(crate) fn begin(
        pool: &KeyPool,
        model: Option<String>,
        extensions: &Extensions,
        classifier: &Classifier,
        flavor: ApiFlavor,
    ) -> Result<Attempt, NoKey> {
        let lease = pool.pick(model.as_deref(), extensions.get::<AttemptContext>())?;
        if let Some(slot) = extensions.get::<AttemptKey>() {
            slot.set(lease.id().clone());
        }
        Ok(Attempt {
            lease,
            model,
            classifier: classifier.clone(),
            log: extensions.get::<AttemptLog>().cloned(),
            started: Instant::now(),
            at: SystemTime::now(),
            flavor,
        })
    }

    /// The request as it goes upstream: without the client's credentials, with this key.
    pub(crate) fn prepare(&self, req: &mut impl UpstreamRequest, placement: &KeyPlacement) {
        strip_client_credentials(req);
        inject_key(req, self.lease.key(), placement);
    }

    /// The attempt's `DEBUG` span, naming the key by fingerprint and id (never the secret).
    pub(crate) fn span(&self, number: u32) -> tracing::Span {
        tracing::debug_span!(
            target: "gemini_balance::keys::layer",
            "attempt",
            number,
            key = %self.lease.id(),
            key_id = %self.lease.id().hex(),
            model = self.model.as_deref().unwrap_or(""),
        )
    }

    /// Judges an answer by its head (`local`: the [`Outcome`] a layer below put on it, if any):
    /// see [`Verdict`]. A success is reported here; an error is reported once its body is read
    /// ([`error_answer`](Self::error_answer)) or found unreadable ([`unreadable_error_answer`]).
    pub(crate) fn judge_head(
        self,
        status: StatusCode,
        headers: &HeaderMap,
        local: Option<&Outcome>,
    ) -> Verdict {
        if let Some(local @ Outcome::Failure(FailureClass::Local { .. })) = local {
            // Answered below by a layer of ours (an upstream answer that could not be read):
            // not the key's doing, and not worth another attempt.
            let local = local.clone();
            self.log_only(&local, Some(status), None);
            return Verdict::Local(local);
        }
        if self.classifier.is_success(status, headers) {
            return Verdict::Success(self.succeeded(status));
        }
        if crate::decode::is_encoded(headers) {
            // Nothing decoded it: its bytes can be neither classified nor redacted, so they
            // are not passed on.
            return Verdict::Unreadable(self);
        }
        Verdict::ReadError(self)
    }

    /// No answer came (a transport error, a timeout): reported as `class`.
    pub(crate) fn failed(self, class: &FailureClass) {
        let message = Some(truncate(class.to_string()));
        self.report(&Outcome::Failure(class.clone()), None, message);
    }

    /// A successful answer: reported; the key's forms come back, to redact the body as it
    /// streams (a stream can carry an error event that quotes the key after its 200).
    pub(crate) fn succeeded(self, status: StatusCode) -> SecretForms {
        let forms = self.lease.key().secret_forms().clone();
        self.report(&Outcome::Success, Some(status), None);
        forms
    }

    /// An error answer whose body (`body`, cut at a cap when `cut`) was read: classified by
    /// status, headers and body, reported, and its body redacted of the key. The outcome and
    /// the body the client may see come back.
    pub(crate) fn error_answer(
        self,
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
        cut: bool,
    ) -> (Outcome, Bytes) {
        let (outcome, body) = judge(
            &self.classifier,
            self.lease.key(),
            status,
            headers,
            body,
            cut,
        );
        let message = self.log.as_ref().map(|_| error_message(&body));
        self.report(&outcome, Some(status), message);
        (outcome, body)
    }

    /// Records the attempt in the attempt log only, not in the pool: for an answer the layers
    /// below made themselves ([`FailureClass::Local`]), which says nothing about the key.
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

/// What an answer's head says ([`Attempt::judge_head`]).
pub(crate) enum Verdict {
    /// Answered below by a layer of ours: logged, not reported to the pool; the outcome goes on
    /// the answer, which passes as it is.
    Local(Outcome),
    /// A success, reported: [`Outcome::Success`] goes on the answer, whose body is redacted of
    /// the key (these forms) as it streams.
    Success(SecretForms),
    /// An error whose body is still encoded: answer with [`unreadable_error_answer`].
    Unreadable(Attempt),
    /// An error: read its body, up to [`MAX_ERROR_BODY`](super::future::MAX_ERROR_BODY), and
    /// hand it to [`Attempt::error_answer`].
    ReadError(Attempt),
}

/// Classifies an answer from its status, headers and body, and redacts the key from the body
/// (an end cut at a cap, `cut`, that begins a key cannot be redacted, so it goes first).
pub(crate) fn judge(
    classifier: &Classifier,
    key: &ApiKey,
    status: StatusCode,
    headers: &HeaderMap,
    mut body: Bytes,
    cut: bool,
) -> (Outcome, Bytes) {
    if cut {
        let keep = key.secret_forms().cut_partial_end(&body);
        body.truncate(keep);
    }
    let outcome: Outcome = classifier.classify(status, headers, &body).into();
    // Error bodies may quote the key: never let it reach the client or a log.
    let body = match key.secret_forms().redact(&body) {
        std::borrow::Cow::Borrowed(_) => body,
        std::borrow::Cow::Owned(redacted) => Bytes::from(redacted),
    };
    (outcome, body)
}

/// An error answer whose body is still encoded: classified by its status and headers alone,
/// reported, and answered with a body of ours that says so, under the upstream's status.
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
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    crate::buffer::set_body_length(&mut parts.headers, body.len());
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

/// A request on its way upstream, as the key core shapes it: an `http::Request`, or a reqwest
/// one.
pub(crate) trait UpstreamRequest {
    fn headers_mut(&mut self) -> &mut HeaderMap;
    /// Removes every `key=` pair from the query.
    fn remove_key_param(&mut self);
    /// Appends `key=<secret>` to the query.
    fn append_key_param(&mut self, secret: &str);
}

impl<B> UpstreamRequest for Request<B> {
    fn headers_mut(&mut self) -> &mut HeaderMap {
        self.headers_mut()
    }

    fn remove_key_param(&mut self) {
        if let Some(stripped) = without_query_param(self.uri(), "key") {
            *self.uri_mut() = stripped;
        }
    }

    fn append_key_param(&mut self, secret: &str) {
        let uri = self.uri();
        let path = uri.path();
        let query = match uri.query() {
            Some(q) if !q.is_empty() => format!("{q}&key={secret}"),
            _ => format!("key={secret}"),
        };
        let mut parts = uri.clone().into_parts();
        if let Ok(pq) = format!("{path}?{query}").parse() {
            parts.path_and_query = Some(pq);
            if let Ok(new) = Uri::from_parts(parts) {
                *self.uri_mut() = new;
            }
        }
    }
}

/// Removes every credential the client sent, so it never reaches the upstream.
pub(crate) fn strip_client_credentials(req: &mut impl UpstreamRequest) {
    let headers = req.headers_mut();
    headers.remove("x-goog-api-key");
    headers.remove(header::AUTHORIZATION);
    headers.remove("api-key");
    req.remove_key_param();
}

/// Puts `key` where `placement` says.
pub(crate) fn inject_key(req: &mut impl UpstreamRequest, key: &ApiKey, placement: &KeyPlacement) {
    match placement {
        KeyPlacement::GoogApiKeyHeader => {
            req.headers_mut()
                .insert("x-goog-api-key", key.header_value().clone());
        }
        KeyPlacement::BearerToken => {
            req.headers_mut()
                .insert(header::AUTHORIZATION, key.bearer_value().clone());
        }
        KeyPlacement::QueryParameter => req.append_key_param(key.expose_secret()),
    }
}

/// The URI without any `name=` query pairs; `None` when there were none.
fn without_query_param(uri: &Uri, name: &str) -> Option<Uri> {
    let query = uri.query()?;
    let is_named = |pair: &str| pair.split('=').next() == Some(name);
    if !query.split('&').any(is_named) {
        return None;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !is_named(p))
        .collect();
    let pq = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_only_the_key_parameter() {
        let cases = [
            ("/m?key=abc", Some("/m")),
            ("/m?alt=sse&key=abc", Some("/m?alt=sse")),
            ("/m?key=abc&alt=sse&key=def", Some("/m?alt=sse")),
            ("/m?keys=1&alt=sse", None),
            ("/m", None),
            ("http://h:1/m?key=1&x=2", Some("http://h:1/m?x=2")),
        ];
        for (input, expected) in cases {
            let uri: Uri = input.parse().unwrap();
            let out = without_query_param(&uri, "key").map(|u| u.to_string());
            assert_eq!(out.as_deref(), expected, "{input}");
        }
    }
}
