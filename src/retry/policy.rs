//! [`Classifier`] as a tower retry [`Policy`], for users of `tower::retry::Retry`.
//!
//! [`RetryLayer`](crate::retry::RetryLayer) is the full-featured retry of this crate (body
//! buffering, budget, key-aware waits); this policy is for stacks that already use tower's own.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use http::{Request, Response};
use tower::retry::Policy;

use super::DEFAULT_MAX_KEY_FAILOVERS;
use crate::classify::{Classifier, Outcome};
use crate::fingerprint::KeyId;

/// A tower retry [`Policy`] that retries exactly what the [`Classifier`] calls retryable.
///
/// Requests are cloned for each attempt, so the request body must be `Clone` (for example
/// `Full<Bytes>` or `String`). Waits honour a short `Retry-After`.
///
/// As in [`RetryLayer`](crate::retry::RetryLayer), an answer that blames the key a
/// [`KeyRotation`](crate::keys::KeyRotation) below chose (rate limited, rejected) is followed by
/// an attempt on another key at once that does not count towards `max_attempts`: once per key
/// and request, at most [`max_key_failovers`](Self::max_key_failovers) times.
///
/// ```
/// use gemini_balance::retry::ClassifiedPolicy;
/// use tower::retry::RetryLayer;
///
/// let layer = RetryLayer::new(ClassifiedPolicy::new(3));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct ClassifiedPolicy {
    classifier: Classifier,
    attempts_left: u32,
    key_failovers_left: u32,
    /// Keys that failed this request (the policy is cloned per request).
    failed_keys: Vec<KeyId>,
    max_wait: Duration,
}

impl ClassifiedPolicy {
    /// Up to `max_attempts` attempts that count (1 means no real retry); moves past a broken
    /// key are not counted (see [`max_key_failovers`](Self::max_key_failovers)).
    pub fn new(max_attempts: u32) -> Self {
        ClassifiedPolicy {
            classifier: Classifier::new(),
            attempts_left: max_attempts.saturating_sub(1),
            key_failovers_left: DEFAULT_MAX_KEY_FAILOVERS,
            failed_keys: Vec::new(),
            max_wait: Duration::from_secs(5),
        }
    }

    /// Free moves to another key after a key's failure, per request (default 10; 0 makes them
    /// count as retries).
    pub fn max_key_failovers(mut self, failovers: u32) -> Self {
        self.key_failovers_left = failovers;
        self
    }

    /// Use this classifier instead of the default one.
    pub fn with_classifier(mut self, classifier: Classifier) -> Self {
        self.classifier = classifier;
        self
    }
}

impl<B, ResB, E> Policy<Request<B>, Response<ResB>, E> for ClassifiedPolicy
where
    B: Clone,
    E: std::error::Error + 'static,
{
    type Future = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn retry(
        &mut self,
        _req: &mut Request<B>,
        result: &mut Result<Response<ResB>, E>,
    ) -> Option<Self::Future> {
        let class = match result {
            Ok(res) => match res.extensions().get::<Outcome>() {
                Some(outcome) => outcome.failure()?.clone(),
                None => self
                    .classifier
                    .classify(res.status(), res.headers(), &[])
                    .err()?,
            },
            Err(err) => self.classifier.classify_error(err),
        };
        if !class.is_retryable() {
            return None;
        }
        let key = result
            .as_ref()
            .ok()
            .and_then(|res| res.extensions().get::<KeyId>());
        let new_key = key.is_some_and(|key| !self.failed_keys.contains(key));
        self.failed_keys.extend(key.filter(|_| new_key).cloned());
        if class.is_key_scoped() && new_key && self.key_failovers_left > 0 {
            self.key_failovers_left -= 1;
            return Some(Box::pin(std::future::ready(())));
        }
        if self.attempts_left == 0 {
            return None;
        }
        let wait = match class.retry_after() {
            _ if class.is_key_scoped() && new_key => Duration::ZERO,
            Some(d) if d > self.max_wait => return None,
            Some(d) => d,
            None => Duration::ZERO,
        };
        self.attempts_left -= 1;
        Some(Box::pin(tokio::time::sleep(wait)))
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        let mut clone = Request::new(req.body().clone());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.version_mut() = req.version();
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}
