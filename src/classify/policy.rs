//! [`Classifier`] as a tower retry [`Policy`], for users of `tower::retry::Retry`.
//!
//! [`RetryLayer`](crate::retry::RetryLayer) is the full-featured retry of this crate (body
//! buffering, budget, key-aware waits); this policy is for stacks that already use tower's own.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use http::{Request, Response};
use tower::retry::Policy;

use super::{Classifier, Outcome};

/// A tower retry [`Policy`] that retries exactly what the [`Classifier`] calls retryable.
///
/// Requests are cloned for each attempt, so the request body must be `Clone` (for example
/// `Full<Bytes>` or `String`). Waits honour a short `Retry-After`.
///
/// ```
/// use gemini_balance::classify::ClassifiedPolicy;
/// use tower::retry::RetryLayer;
///
/// let layer = RetryLayer::new(ClassifiedPolicy::new(3));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct ClassifiedPolicy {
    classifier: Classifier,
    attempts_left: u32,
    max_wait: Duration,
}

impl ClassifiedPolicy {
    /// Up to `max_attempts` attempts in total (1 means no retry).
    pub fn new(max_attempts: u32) -> Self {
        ClassifiedPolicy {
            classifier: Classifier::new(),
            attempts_left: max_attempts.saturating_sub(1),
            max_wait: Duration::from_secs(5),
        }
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
        if self.attempts_left == 0 {
            return None;
        }
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
        let wait = match class.retry_after() {
            Some(d) if d > self.max_wait && !class.is_key_scoped() => return None,
            Some(d) if !class.is_key_scoped() => d,
            _ => Duration::ZERO,
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
