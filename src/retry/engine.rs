//! The retry loop's engine: everything [`Retry`](super::Retry) and the reqwest-middleware
//! retry decide and do between two attempts, in one place.
//!
//! The caller only knows how to send attempt N (it gets the [`AttemptContext`] and the
//! [`AttemptKey`] slot to put in the request) and whether the request can be sent again; the
//! engine classifies each result, counts attempts and key failovers, spends the budget, waits,
//! and shapes the answer the client gets (the [`ATTEMPTS_HEADER`], the [`Attempts`] extension, a
//! known `Retry-After`, the last upstream answer rather than a local "no key"):
//!
//! ```text
//! let mut engine = Engine::start(config);
//! loop {
//!     let (context, slot) = engine.attempt();
//!     let result = send(request_with(context, slot)).await;
//!     if let Some(done) = engine.settle(result, classify_error, can_send_again).await {
//!         return done;
//!     }
//! }
//! ```

use std::sync::Arc;
use std::time::Duration;

use http::{header, Extensions, HeaderMap, HeaderValue, StatusCode};

use super::decision::{fill_retry_after, Config, Decision, Tally};
use super::layer::ATTEMPTS_HEADER;
use crate::classify::{FailureClass, Outcome};
use crate::ext::{AttemptContext, AttemptKey, Attempts};
use crate::keys::KeyId;

/// What the engine reads and writes on an answer: an `http::Response`, or a reqwest one.
pub(crate) trait Answer {
    fn status(&self) -> StatusCode;
    fn headers(&self) -> &HeaderMap;
    fn headers_mut(&mut self) -> &mut HeaderMap;
    fn extensions(&self) -> &Extensions;
    fn extensions_mut(&mut self) -> &mut Extensions;
}

impl<B> Answer for http::Response<B> {
    fn status(&self) -> StatusCode {
        self.status()
    }
    fn headers(&self) -> &HeaderMap {
        self.headers()
    }
    fn headers_mut(&mut self) -> &mut HeaderMap {
        self.headers_mut()
    }
    fn extensions(&self) -> &Extensions {
        self.extensions()
    }
    fn extensions_mut(&mut self) -> &mut Extensions {
        self.extensions_mut()
    }
}

/// One request's retry loop state; see the [module docs](self).
pub(crate) struct Engine<R> {
    config: Arc<Config>,
    tally: Tally,
    context: AttemptContext,
    served_by: AttemptKey,
    /// The last failed upstream answer (its body already read) and its class, in case no key
    /// is left to retry with.
    previous: Option<(R, FailureClass)>,
}

impl<R: Answer> Engine<R> {
    /// A request begins: it counts towards the retry budget.
    pub(crate) fn start(config: Arc<Config>) -> Self {
        config.deposit();
        Engine {
            config,
            tally: Tally::default(),
            context: AttemptContext {
                number: 1,
                prefer: None,
                avoid: Vec::new(),
            },
            served_by: AttemptKey::default(),
            previous: None,
        }
    }

    /// What the next attempt's request carries in its extensions: which attempt it is (and
    /// what earlier ones taught), and an empty slot for the key that serves it.
    pub(crate) fn attempt(&mut self) -> (AttemptContext, AttemptKey) {
        self.served_by = AttemptKey::default();
        (self.context.clone(), self.served_by.clone())
    }

    /// Judges the result of the attempt: `Some` with what the client gets, or `None` after
    /// waiting as long as the next attempt should wait. `repeatable` is `false` when the request
    /// cannot be sent again (a streaming body): a failure then is final.
    pub(crate) async fn settle<E>(
        &mut self,
        result: Result<R, E>,
        classify_error: impl FnOnce(&E) -> FailureClass,
        repeatable: bool,
    ) -> Option<Result<R, E>> {
        let attempt = self.context.number;
        let class = match &result {
            Ok(res) => match res.extensions().get::<Outcome>() {
                Some(outcome) => outcome.failure().cloned(),
                None => self
                    .config
                    .classifier
                    .classify(res.status(), res.headers(), &[])
                    .err(),
            },
            Err(err) => Some(classify_error(err)),
        };
        let Some(class) = class else {
            return Some(finish(result, attempt));
        };
        if let FailureClass::Local { .. } = class {
            return Some(match self.previous.take() {
                // No key is left to try: the upstream's last answer says more than "no key".
                Some(upstream) => Ok(upstream_over_local(upstream, result, attempt - 1)),
                // Answered without reaching the upstream: count only the attempts that did.
                None => finish(result, attempt - 1),
            });
        }
        if !repeatable {
            return Some(finish_failed(result, attempt, &class));
        }
        // From the answer, or, after an error, from the slot the key layer filled.
        let key = result
            .as_ref()
            .ok()
            .and_then(|res| res.extensions().get::<KeyId>())
            .cloned()
            .or_else(|| self.served_by.get());
        let decision =
            self.config
                .decide(&mut self.tally, &class, key.as_ref(), &self.context.avoid);
        let wait = match decision {
            Decision::Stop => return Some(finish_failed(result, attempt, &class)),
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
        self.previous = result.ok().map(|res| (res, class.clone()));
        self.context.advance(&class, key);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        None
    }
}

impl AttemptContext {
    /// What the next attempt learns from a failed one: the same key again when the fault was on
    /// the way, otherwise any key but this one.
    pub(crate) fn advance(&mut self, class: &FailureClass, key: Option<KeyId>) {
        self.number += 1;
        match class.action().retry {
            crate::classify::RetryAdvice::SameKey => self.prefer = key,
            _ => {
                self.prefer = None;
                self.avoid.extend(key);
            }
        }
    }
}

/// A failed answer the client gets: with the `Retry-After` its class knows, if it has none.
fn finish_failed<R: Answer, E>(
    result: Result<R, E>,
    attempts: u32,
    class: &FailureClass,
) -> Result<R, E> {
    finish(
        result.map(|mut res| {
            let status = res.status();
            fill_retry_after(res.headers_mut(), status, class);
            res
        }),
        attempts,
    )
}

/// The answer with the number of upstream attempts it took.
fn finish<R: Answer, E>(result: Result<R, E>, attempts: u32) -> Result<R, E> {
    let mut res = result?;
    stamp(&mut res, attempts);
    Ok(res)
}

fn stamp<R: Answer>(res: &mut R, attempts: u32) {
    res.headers_mut()
        .insert(ATTEMPTS_HEADER, HeaderValue::from(attempts));
    res.extensions_mut().insert(Attempts(attempts));
}

/// The previous upstream failure, with the `Retry-After` of the local "no key" answer (when the
/// soonest key is back) when the upstream gave none, else the one its class knows.
fn upstream_over_local<R: Answer, E>(
    (mut upstream, class): (R, FailureClass),
    local: Result<R, E>,
    attempts: u32,
) -> R {
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
    stamp(&mut upstream, attempts);
    upstream
}
