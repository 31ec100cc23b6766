//! [`RetryLayer`] and the [`Retry`] service.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower::retry::budget::TpsBudget;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use super::backoff::Backoff;
use super::decision::{fill_retry_after, Config, Decision, Tally, DEFAULT_MAX_KEY_FAILOVERS};
use super::future::ResponseFuture;
use crate::api_error::{error_response, ApiFlavor};
use crate::body::ResponseBody;
use crate::classify::{classify_any_error, Classifier, FailureClass, Outcome, RetryAdvice};
use crate::ext::{AttemptContext, AttemptKey, Attempts};
use crate::keys::KeyId;
use crate::order::{self, Misorder};
use crate::usage::RequestBodyCapture;
use crate::BoxError;

/// Response header with the number of attempts the request took, moves to another key after a
/// key's failure included (those are free: they do not count against `max_attempts`).
pub const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-gemini-balance-attempts");

/// Default limit of a buffered request body: 20 MiB (inline images make Gemini requests large).
pub const DEFAULT_MAX_BODY_BYTES: usize = 20 * 1024 * 1024;

/// Applies [`Retry`]. Cloning the layer shares its retry budget.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    config: Arc<Config>,
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryLayer {
    /// 3 attempts (the Python server's `MAX_RETRIES` default) plus up to 10 free moves to
    /// another key after a key's failure, backoff 100 ms doubling to 5 s, `Retry-After` honoured
    /// up to 5 s, bodies up to 20 MiB, and a budget allowing retries of 20% of requests on top
    /// of 10 per second.
    pub fn new() -> Self {
        RetryLayer {
            config: Arc::new(Config {
                max_attempts: 3,
                max_key_failovers: DEFAULT_MAX_KEY_FAILOVERS,
                backoff: Backoff::default(),
                honor_retry_after_up_to: Duration::from_secs(5),
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                budget: Some(Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2))),
                classifier: Classifier::new(),
            }),
        }
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// The settings, shared with the reqwest-middleware retry (same budget, same decisions).
    #[cfg(feature = "middleware")]
    pub(crate) fn shared_config(&self) -> Arc<Config> {
        self.config.clone()
    }

    /// Attempts that count, first one included (minimum 1): every attempt except one that
    /// failed because of its key (rate limited or rejected) and was followed by a free
    /// [key failover](Self::max_key_failovers). Bounds the real retries: 5xx, overload,
    /// timeouts, transport errors.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config().max_attempts = attempts.max(1);
        self
    }

    /// Free key failovers per request (default 10): after a rate-limited or rejected key, the
    /// next attempt uses another key at once and spends neither an attempt nor the retry
    /// budget, since such an answer says nothing about the request. Each key gets one such
    /// chance per request; past this number a key's failure counts like any other. 0 makes
    /// every failure count. A request makes at most `max_attempts + max_key_failovers`
    /// attempts.
    pub fn max_key_failovers(mut self, failovers: u32) -> Self {
        self.config().max_key_failovers = failovers;
        self
    }

    /// The ceiling of the first backoff wait (it doubles per retry).
    pub fn base_delay(mut self, base: Duration) -> Self {
        self.config().backoff.base = base;
        self
    }

    /// The largest backoff ceiling.
    pub fn max_delay(mut self, cap: Duration) -> Self {
        self.config().backoff.cap = cap;
        self
    }

    /// The longest `Retry-After` waited for before retrying (default 5 s). Longer ones end the
    /// retries, unless the failure was the key's (then another key is used at once).
    pub fn honor_retry_after_up_to(mut self, max: Duration) -> Self {
        self.config().honor_retry_after_up_to = max;
        self
    }

    /// Largest request body buffered for replay; larger requests get a 413.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.config().max_body_bytes = bytes;
        self
    }

    /// Use this retry budget (share one between layers to cap retries across them).
    pub fn budget(mut self, budget: Arc<TpsBudget>) -> Self {
        self.config().budget = Some(budget);
        self
    }

    /// No retry budget: every retryable failure is retried up to `max_attempts`.
    pub fn without_budget(mut self) -> Self {
        self.config().budget = None;
        self
    }

    /// The classifier deciding what is retryable (share it with the key layer).
    pub fn classifier(mut self, classifier: Classifier) -> Self {
        self.config().classifier = classifier;
        self
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            config: self.config.clone(),
        }
    }
}

/// Retries failed attempts on the inner service; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Retry<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Retry<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display + Send + 'static,
    ReqBody: http_body::Body<Data = Bytes> + From<Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        order::below_key_rotation(req.extensions(), Misorder::RetryInsideKeyRotation);
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        ResponseFuture::new(Box::pin(run(ready, config, req)))
    }
}

async fn run<S, ReqBody, ResBody>(
    ready: S,
    config: Arc<Config>,
    mut req: Request<ReqBody>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: std::fmt::Display + 'static,
    ReqBody: http_body::Body<Data = Bytes> + From<Bytes>,
    ReqBody::Error: Into<BoxError>,
{
    // Worked out once here; every attempt's request carries a copy.
    let flavor = crate::ext::RequestInfo::attach(&mut req).flavor;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > config.max_body_bytes as u64) {
        return Ok(too_large(flavor, config.max_body_bytes));
    }
    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, config.max_body_bytes).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => {
            return Ok(too_large(flavor, config.max_body_bytes))
        }
        Err(_) => {
            return Ok(local(
                flavor,
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
                "unreadable request body",
            ))
        }
    };
    if let Some(capture) = parts.extensions.get::<RequestBodyCapture>() {
        capture.set(bytes.clone());
    }
    config.deposit();

    // Later attempts drive clones of the service (each made ready first).
    let template = ready.clone();
    let mut first = Some(ready);
    // The last failed upstream answer (its body is already read) and its class, in case no
    // key is left to retry with.
    let mut previous: Option<(Response<ResBody>, FailureClass)> = None;
    let mut tally = Tally::default();
    let mut context = AttemptContext {
        number: 1,
        prefer: None,
        avoid: Vec::new(),
    };
    loop {
        let attempt = context.number;
        let mut attempt_req = Request::from_parts(parts.clone(), ReqBody::from(bytes.clone()));
        attempt_req.extensions_mut().insert(context.clone());
        let served_by = AttemptKey::default();
        attempt_req.extensions_mut().insert(served_by.clone());
        let result = match first.take() {
            Some(mut ready) => ready.call(attempt_req).await,
            None => template.clone().oneshot(attempt_req).await,
        };
        let class = match &result {
            Ok(res) => match res.extensions().get::<Outcome>() {
                Some(outcome) => outcome.failure().cloned(),
                None => config
                    .classifier
                    .classify(res.status(), res.headers(), &[])
                    .err(),
            },
            Err(err) => Some(classify_any_error(err)),
        };
        let Some(class) = class else {
            return finish(result, attempt);
        };
        if let FailureClass::Local { .. } = class {
            return match previous.take() {
                // No key is left to try: the upstream's last answer says more than "no key".
                Some(upstream) => Ok(upstream_over_local(upstream, result, attempt - 1)),
                // Answered without reaching the upstream: count only the attempts that did.
                None => finish(result, attempt - 1),
            };
        }
        // From the answer, or, after an error, from the slot the key layer filled.
        let key = result
            .as_ref()
            .ok()
            .and_then(|res| res.extensions().get::<KeyId>())
            .cloned()
            .or_else(|| served_by.get());
        let wait = match config.decide(&mut tally, &class, key.as_ref(), &context.avoid) {
            Decision::Stop => return finish_failed(result, attempt, &class),
            Decision::KeyFailover => Duration::ZERO,
            Decision::Retry(wait) => wait,
        };
        tracing::debug!(
            attempt,
            class = %class,
            key = key.as_ref().map(tracing::field::display),
            wait_ms = wait.as_millis() as u64,
            "retrying"
        );
        previous = result.ok().map(|res| (res, class.clone()));
        context.advance(&class, key);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

impl AttemptContext {
    /// What the next attempt learns from a failed one: the same key again when the fault was on
    /// the way, otherwise any key but this one.
    pub(crate) fn advance(&mut self, class: &FailureClass, key: Option<KeyId>) {
        self.number += 1;
        match class.action().retry {
            RetryAdvice::SameKey => self.prefer = key,
            _ => {
                self.prefer = None;
                self.avoid.extend(key);
            }
        }
    }
}

/// A failed answer the client gets: with the `Retry-After` its class knows, if it has none.
fn finish_failed<B, E>(
    result: Result<Response<B>, E>,
    attempts: u32,
    class: &FailureClass,
) -> Result<Response<ResponseBody<B>>, E> {
    finish(
        result.map(|mut res| {
            let status = res.status();
            fill_retry_after(res.headers_mut(), status, class);
            res
        }),
        attempts,
    )
}

fn finish<B, E>(
    result: Result<Response<B>, E>,
    attempts: u32,
) -> Result<Response<ResponseBody<B>>, E> {
    let mut res = result?;
    res.headers_mut()
        .insert(ATTEMPTS_HEADER, HeaderValue::from(attempts));
    res.extensions_mut().insert(Attempts(attempts));
    Ok(res.map(ResponseBody::inner))
}

/// The previous upstream failure, with the `Retry-After` of the local "no key" answer (when the
/// soonest key is back) when the upstream gave none, else the one its class knows.
fn upstream_over_local<B, E>(
    (mut upstream, class): (Response<B>, FailureClass),
    local: Result<Response<B>, E>,
    attempts: u32,
) -> Response<ResponseBody<B>> {
    if !upstream.headers().contains_key(header::RETRY_AFTER) {
        if let Some(value) = local
            .ok()
            .and_then(|res| res.headers().get(header::RETRY_AFTER).cloned())
        {
            upstream.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    let status = upstream.status();
    fill_retry_after(upstream.headers_mut(), status, &class);
    upstream
        .headers_mut()
        .insert(ATTEMPTS_HEADER, HeaderValue::from(attempts));
    upstream.extensions_mut().insert(Attempts(attempts));
    upstream.map(ResponseBody::inner)
}

fn too_large<B>(flavor: ApiFlavor, limit: usize) -> Response<ResponseBody<B>> {
    local(
        flavor,
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body is larger than the limit of {limit} bytes"),
        "request body too large",
    )
}

fn local<B>(
    flavor: ApiFlavor,
    status: StatusCode,
    message: &str,
    reason: &'static str,
) -> Response<ResponseBody<B>> {
    let (mut parts, body) = error_response(flavor, status, message).into_parts();
    parts
        .extensions
        .insert(Outcome::Failure(FailureClass::Local { status, reason }));
    parts.extensions.insert(Attempts(0));
    parts
        .headers
        .insert(ATTEMPTS_HEADER, HeaderValue::from(0u32));
    Response::from_parts(parts, ResponseBody::full(body))
}
