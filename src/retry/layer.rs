//! [`RetryLayer`] and the [`Retry`] service.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use tower::retry::budget::TpsBudget;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use super::backoff::Backoff;
use super::decision::{Config, DEFAULT_MAX_KEY_FAILOVERS};
use super::engine::Engine;
use super::future::ResponseFuture;
use super::make_body::{FromBytes, MakeBody};
use crate::api_error::{error_response, ApiFlavor};
use crate::body::ResponseBody;
use crate::buffer::{CollectError, ReadBody};
use crate::classify::{classify_any_error, Classifier, FailureClass, Outcome};
use crate::ext::Attempts;
use crate::order::{self, Misorder};
use crate::usage::RequestBodyCapture;
use crate::BoxError;

/// Response header with the number of attempts the request took, moves to another key after a
/// key's failure included (those are free: they do not count against `max_attempts`).
pub const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-gemini-balance-attempts");

/// Default limit of a buffered request body: 20 MiB (inline images make Gemini requests large).
pub const DEFAULT_MAX_BODY_BYTES: usize = 20 * 1024 * 1024;

/// Applies [`Retry`]. Cloning the layer shares its retry budget.
///
/// `M` makes each attempt's request body from the buffered bytes: [`FromBytes`] (any body with
/// `From<Bytes>`) unless [`replay_with`](Self::replay_with) says otherwise.
#[derive(Clone)]
pub struct RetryLayer<M = FromBytes> {
    config: Arc<Config>,
    make_body: M,
}

impl<M> std::fmt::Debug for RetryLayer<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
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
            make_body: FromBytes,
        }
    }
}

impl<M> RetryLayer<M> {
    /// Makes each attempt's request body with `make` from the buffered bytes (handed over as a
    /// `Full<Bytes>`), for a request body type without `From<Bytes>`. Around a tonic channel:
    /// `RetryLayer::new().replay_with(tonic::body::Body::new)`.
    pub fn replay_with<F, B>(self, make: F) -> RetryLayer<F>
    where
        F: Fn(http_body_util::Full<Bytes>) -> B,
    {
        RetryLayer {
            config: self.config,
            make_body: make,
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

impl<S, M: Clone> Layer<S> for RetryLayer<M> {
    type Service = Retry<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            config: self.config.clone(),
            make_body: self.make_body.clone(),
        }
    }
}

/// Retries failed attempts on the inner service; see the [module docs](super).
#[derive(Clone)]
pub struct Retry<S, M = FromBytes> {
    inner: S,
    config: Arc<Config>,
    make_body: M,
}

impl<S: std::fmt::Debug, M> std::fmt::Debug for Retry<S, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, M> Retry<S, M> {
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

impl<S, M, ReqBody, ResBody> Service<Request<ReqBody>> for Retry<S, M>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display + Send + 'static,
    M: MakeBody<ReqBody> + Clone + Send + 'static,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
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
        let make_body = self.make_body.clone();
        ResponseFuture::new(Box::pin(run(ready, config, make_body, req)))
    }
}

async fn run<S, M, ReqBody, ResBody>(
    ready: S,
    config: Arc<Config>,
    make_body: M,
    mut req: Request<ReqBody>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: std::fmt::Display + 'static,
    M: MakeBody<ReqBody>,
    ReqBody: http_body::Body<Data = Bytes>,
    ReqBody::Error: Into<BoxError>,
{
    // Worked out once here; every attempt's request carries a copy.
    let flavor = crate::ext::RequestInfo::attach(&mut req).flavor;
    let (mut parts, body) = req.into_parts();
    // The body a layer above read, or read here; only its bytes are kept for the attempts.
    let buffered = match ReadBody::new(&mut parts, body, config.max_body_bytes).await {
        Ok(buffered) => buffered.without_json(),
        Err(CollectError::TooLarge) => return Ok(too_large(flavor, config.max_body_bytes)),
        Err(CollectError::Read) => {
            return Ok(local(
                flavor,
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
                "unreadable request body",
            ))
        }
    };
    let bytes = buffered.bytes().clone();
    parts.extensions.insert(buffered);
    if let Some(capture) = parts.extensions.get::<RequestBodyCapture>() {
        capture.set(bytes.clone());
    }

    // Later attempts drive clones of the service (each made ready first).
    let template = ready.clone();
    let mut first = Some(ready);
    let mut engine = Engine::start(config);
    loop {
        let (context, served_by) = engine.attempt();
        let mut attempt_req =
            Request::from_parts(parts.clone(), make_body.make_body(bytes.clone()));
        attempt_req.extensions_mut().insert(context);
        attempt_req.extensions_mut().insert(served_by);
        let result = match first.take() {
            Some(mut ready) => ready.call(attempt_req).await,
            None => template.clone().oneshot(attempt_req).await,
        };
        if let Some(done) = engine.settle(result, classify_any_error, true).await {
            return done.map(|res| res.map(ResponseBody::inner));
        }
    }
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
