//! [`RetryMiddleware`], and [`ClassifiedStrategy`] with [`KeyFailoverPolicy`] for reqwest-retry:
//! classified retries for a `ClientWithMiddleware`.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Error, Middleware, Next, Result};
use reqwest_retry::{RetryDecision, RetryPolicy, Retryable, RetryableStrategy};

use super::classify_error;
use crate::classify::{Classifier, FailureClass, Outcome};
use crate::retry::{Answer, Config, Engine, RetryLayer};
use crate::usage::RequestBodyCapture;

/// The retry loop of [`RetryLayer`] as a reqwest-middleware middleware: same settings, same
/// budget, same decisions.
///
/// Put it above a [`KeyRotationMiddleware`](super::KeyRotationMiddleware): each retry then goes
/// through the pool again and gets another key when the [`FailureClass`] says so. A rate-limited
/// or rejected key is followed by another key at once without spending an attempt or the budget
/// (see [`RetryLayer::max_key_failovers`]). Unlike reqwest-retry (whose `RetryPolicy` never sees
/// the answer and counts every retry), it waits as long as a short `Retry-After` / `RetryInfo`
/// asks, and a long one ends the retries so that the caller sees the upstream's answer. When no
/// key is left to try, the caller gets the upstream's last answer. Answers carry the
/// [`ATTEMPTS_HEADER`](crate::retry::ATTEMPTS_HEADER) (every upstream attempt) and the [`Attempts`](crate::ext::Attempts) extension, and a final 429
/// or 503 carries the `Retry-After` its `RetryInfo` gives.
///
/// A request whose body is a stream cannot be replayed: it is sent once.
#[derive(Debug, Clone)]
pub struct RetryMiddleware {
    config: Arc<Config>,
}

impl Default for RetryMiddleware {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryMiddleware {
    /// The defaults of [`RetryLayer::new`].
    pub fn new() -> Self {
        Self::from(RetryLayer::new())
    }
}

/// Configure the middleware with [`RetryLayer`]'s builder; a layer and a middleware made from
/// it share the retry budget.
impl From<RetryLayer> for RetryMiddleware {
    fn from(layer: RetryLayer) -> Self {
        RetryMiddleware {
            config: layer.shared_config(),
        }
    }
}

#[async_trait::async_trait]
impl Middleware for RetryMiddleware {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        if let Some(capture) = extensions.get::<RequestBodyCapture>() {
            if let Some(body) = req.body().and_then(reqwest::Body::as_bytes) {
                capture.set(Bytes::copy_from_slice(body));
            }
        }
        let mut engine = Engine::start(self.config.clone());
        let mut template = Some(req);
        loop {
            // Keep a copy for the next attempt; a streaming body has none and is sent once.
            let Some(current) = template.take() else {
                return Err(Error::middleware(NotReplayable));
            };
            let attempt_req = match current.try_clone() {
                Some(copy) => {
                    template = Some(current);
                    copy
                }
                None => current,
            };
            let (context, served_by) = engine.attempt();
            extensions.insert(context);
            extensions.insert(served_by);
            let result = next.clone().run(attempt_req, extensions).await;
            let repeatable = template.is_some();
            if let Some(done) = engine.settle(result, classify_error, repeatable).await {
                return done;
            }
        }
    }
}

impl Answer for Response {
    fn status(&self) -> http::StatusCode {
        self.status()
    }
    fn headers(&self) -> &http::HeaderMap {
        self.headers()
    }
    fn headers_mut(&mut self) -> &mut http::HeaderMap {
        self.headers_mut()
    }
    fn extensions(&self) -> &Extensions {
        self.extensions()
    }
    fn extensions_mut(&mut self) -> &mut Extensions {
        self.extensions_mut()
    }
}

/// Only reached if the loop lost its request; kept as an error rather than a panic.
#[derive(Debug)]
struct NotReplayable;

impl std::fmt::Display for NotReplayable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request could not be replayed for a retry")
    }
}

impl std::error::Error for NotReplayable {}

/// A reqwest-retry [`RetryableStrategy`] that answers from the one [`Classifier`].
///
/// With a [`KeyRotationMiddleware`](super::KeyRotationMiddleware) below it, it reads the
/// [`Outcome`] that middleware put in the answer (judged from the error body too); otherwise it
/// classifies the status and headers. Retryable classes are `Transient`, the rest `Fatal`.
///
/// reqwest-retry's `RetryPolicy` only sees the number of past retries, never the answer, so it
/// cannot wait for a `Retry-After` / `RetryInfo`. This strategy makes a failure that asks for a
/// wait longer than [`honor_retry_after_up_to`](Self::honor_retry_after_up_to) (5 s by default)
/// `Fatal`, as [`RetryLayer`] does, unless the failure was the key's (then the next attempt uses
/// another key at once). To wait for short ones, use [`RetryMiddleware`] instead.
///
/// reqwest-retry waits its policy's backoff before every retry, a move to another key after a
/// rate-limited or rejected key included (with `ExponentialBackoff`'s defaults, up to 1 s
/// before the first retry, up to 2 s before the second, and so on). Wrap the policy in a [`KeyFailoverPolicy`] to make
/// that move at once, as [`RetryMiddleware`] does; it reads this strategy's verdict, so use the
/// two together. Such a move still spends one of the policy's `max_retries` (reqwest-retry
/// counts them itself), where [`RetryMiddleware`] makes it free: with reqwest-retry, allow as
/// many retries as the broken keys a request may meet.
///
/// ```
/// use gemini_balance::client::{ClassifiedStrategy, KeyFailoverPolicy, KeyRotationMiddleware};
/// use gemini_balance::keys::KeyPool;
/// use reqwest_retry::{policies::ExponentialBackoff, RetryTransientMiddleware};
///
/// # fn build() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = KeyPool::builder()
///     .keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv", "AIzaSyB1234567890abcdefghijklmnopqrstuv"])
///     .build()?;
/// let policy = KeyFailoverPolicy::new(ExponentialBackoff::builder().build_with_max_retries(3));
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(RetryTransientMiddleware::new_with_policy_and_strategy(
///         policy,
///         ClassifiedStrategy::new(),
///     ))
///     .with(KeyRotationMiddleware::new(pool))
///     .build();
/// # drop(client);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ClassifiedStrategy {
    classifier: Classifier,
    honor_retry_after_up_to: Duration,
}

impl Default for ClassifiedStrategy {
    fn default() -> Self {
        Self::new()
    }
}

impl ClassifiedStrategy {
    /// The default classifier; waits up to 5 s count as retryable.
    pub fn new() -> Self {
        ClassifiedStrategy {
            classifier: Classifier::new(),
            honor_retry_after_up_to: Duration::from_secs(5),
        }
    }

    /// The classifier used when no [`Outcome`] is in the answer.
    pub fn classifier(mut self, classifier: Classifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// The longest `Retry-After` still retried (longer ones are `Fatal`).
    pub fn honor_retry_after_up_to(mut self, max: Duration) -> Self {
        self.honor_retry_after_up_to = max;
        self
    }

    /// The class of an answer or error, `None` for a success.
    pub fn class(&self, res: &Result<Response>) -> Option<FailureClass> {
        match res {
            Ok(res) => match res.extensions().get::<Outcome>() {
                Some(outcome) => outcome.failure().cloned(),
                None => self
                    .classifier
                    .classify(res.status(), res.headers(), &[])
                    .err(),
            },
            Err(err) => Some(classify_error(err)),
        }
    }
}

impl RetryableStrategy for ClassifiedStrategy {
    fn handle(&self, res: &Result<Response>) -> Option<Retryable> {
        let Some(class) = self.class(res) else {
            KEY_FAILOVER.set(false);
            return None;
        };
        let too_long = !class.is_key_scoped()
            && class
                .retry_after()
                .is_some_and(|asked| asked > self.honor_retry_after_up_to);
        let retry = class.is_retryable() && !too_long;
        KEY_FAILOVER.set(retry && class.is_key_scoped());
        Some(if retry {
            Retryable::Transient
        } else {
            Retryable::Fatal
        })
    }
}

thread_local! {
    /// The latest verdict of a [`ClassifiedStrategy`] on this thread: `true` when it was a
    /// retryable failure of the key's. reqwest-retry asks its policy right after the strategy,
    /// on the same thread and without yielding in between, so [`KeyFailoverPolicy`] reads the
    /// verdict of the answer it is asked about.
    static KEY_FAILOVER: Cell<bool> = const { Cell::new(false) };
}

/// A reqwest-retry `RetryPolicy` that moves to another key at once after a rate-limited or
/// rejected key, and otherwise waits as the policy it wraps says.
///
/// reqwest-retry's policy is told how many retries happened, never what the answer was; this
/// one takes the answer's class from the [`ClassifiedStrategy`] that judged it, through a
/// thread-local that the strategy sets and this policy reads and clears. Pair the two in one
/// `RetryTransientMiddleware`: with another strategy, this policy could read a verdict a
/// `ClassifiedStrategy` of another client left on the same thread. After a failure of the key's, the retry
/// goes out at once if the wrapped policy allows one more retry at all; with a
/// [`KeyRotationMiddleware`](super::KeyRotationMiddleware) below, on another key. When every
/// key is cooling down, the key middleware answers `429` itself, which the strategy makes
/// `Fatal`: nothing is waited for. Everything else (5xx, overload, timeouts, transport errors)
/// waits the wrapped policy's backoff. See [`ClassifiedStrategy`] for the example and for what
/// stays different from [`RetryMiddleware`].
#[derive(Debug, Clone, Copy)]
pub struct KeyFailoverPolicy<P> {
    inner: P,
}

impl<P: RetryPolicy> KeyFailoverPolicy<P> {
    /// Wraps `inner`, which decides how many retries and how long to wait between the others.
    pub fn new(inner: P) -> Self {
        KeyFailoverPolicy { inner }
    }

    /// The wrapped policy.
    pub fn get_ref(&self) -> &P {
        &self.inner
    }
}

impl<P: RetryPolicy> RetryPolicy for KeyFailoverPolicy<P> {
    fn should_retry(&self, request_start_time: SystemTime, n_past_retries: u32) -> RetryDecision {
        let key_failover = KEY_FAILOVER.replace(false);
        match self.inner.should_retry(request_start_time, n_past_retries) {
            RetryDecision::Retry { .. } if key_failover => RetryDecision::Retry {
                execute_after: SystemTime::now(),
            },
            decision => decision,
        }
    }
}
