//! What follows a failed attempt: a free move to another key, a counted retry after a wait, or
//! the end. Shared by [`Retry`](super::Retry) and the reqwest-middleware retry, so both decide
//! the same.
//!
//! A rate-limited key, or one rejected for a reason about the key (`API_KEY_INVALID`,
//! `CONSUMER_SUSPENDED`, ...: [`FailureClass::names_the_key`]), says nothing about the request
//! and costs no time, so moving to another key after one is not a retry of the request: it
//! spends neither `max_attempts` nor the retry budget. A bare 401/403 is counted like any
//! retry, since the request itself may have caused it. It is bounded twice: by the pool (a key that
//! already failed this request is avoided, and a key-scoped failure on a key met again is
//! counted like any other) and by `max_key_failovers` per request. Everything else that is
//! retryable (5xx, overload, timeouts, transport) is a real retry: counted, waited for, paid
//! for from the budget.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, StatusCode};
use tower::retry::budget::{Budget, TpsBudget};

use super::backoff::Backoff;
use crate::classify::{Classifier, FailureClass};
use crate::keys::KeyId;

/// Default of [`RetryLayer::max_key_failovers`](super::RetryLayer::max_key_failovers).
pub const DEFAULT_MAX_KEY_FAILOVERS: u32 = 10;

/// The settings of a retry loop (a [`RetryLayer`](super::RetryLayer)'s, shared with its
/// services and with a reqwest-middleware retry made from it).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(super) max_attempts: u32,
    pub(super) max_key_failovers: u32,
    pub(super) backoff: Backoff,
    pub(super) honor_retry_after_up_to: Duration,
    pub(super) max_body_bytes: usize,
    pub(super) budget: Option<Arc<TpsBudget>>,
    pub(crate) classifier: Classifier,
}

/// What one request has spent so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Failed attempts that counted towards `max_attempts`.
    counted: u32,
    /// Free moves to another key after a key-scoped failure.
    failovers: u32,
}

/// What the loop does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Another key, at once; nothing counted, nothing withdrawn from the budget.
    KeyFailover,
    /// Another attempt after this wait (counted, paid for from the budget).
    Retry(Duration),
    /// No more attempts: the client gets this answer.
    Stop,
}

impl Config {
    /// Counts a request towards the retry budget.
    pub(crate) fn deposit(&self) {
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
    }

    /// Decides what follows a failed attempt of class `class`, served by `key` (`None` when no
    /// key layer below named it), given the keys that had already failed this request.
    pub(crate) fn decide(
        &self,
        tally: &mut Tally,
        class: &FailureClass,
        key: Option<&KeyId>,
        failed_before: &[KeyId],
    ) -> Decision {
        if !class.is_retryable() {
            return Decision::Stop;
        }
        // Another key is the cure only if a key layer chose this one and it is new to this
        // request (a key met again means no other key was usable).
        let new_key = key.is_some_and(|key| !failed_before.contains(key));
        // Free only when the answer named the key: a bare 401/403 may be the request's doing,
        // and would otherwise disable every key it meets, free of charge.
        let free = class.is_key_scoped() && class.names_the_key();
        if free && new_key && tally.failovers < self.max_key_failovers {
            tally.failovers += 1;
            return Decision::KeyFailover;
        }
        tally.counted += 1;
        if tally.counted >= self.max_attempts {
            return Decision::Stop;
        }
        let wait = match class.retry_after() {
            // Past the free failovers, a new key still needs no wait.
            _ if class.is_key_scoped() && new_key => Duration::ZERO,
            // The upstream asked for a long pause: let the client see its answer and decide.
            Some(asked) if asked > self.honor_retry_after_up_to => return Decision::Stop,
            Some(asked) => asked.max(self.backoff.delay(tally.counted)),
            None => self.backoff.delay(tally.counted),
        };
        if let Some(budget) = &self.budget {
            if !budget.withdraw() {
                tracing::debug!(class = %class, "retry budget exhausted; not retrying");
                return Decision::Stop;
            }
        }
        Decision::Retry(wait)
    }
}

/// Gives a final 429 or 503 answer of class `class` the `Retry-After` the class knows (from
/// `RetryInfo`), in whole seconds rounded up, when the upstream sent no such header.
pub(crate) fn fill_retry_after(headers: &mut HeaderMap, status: StatusCode, class: &FailureClass) {
    let delayable = matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    );
    if !delayable || headers.contains_key(header::RETRY_AFTER) {
        return;
    }
    if let Some(delay) = class.retry_after() {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from(whole_seconds_up(delay)),
        );
    }
}

/// `delay` in whole seconds, rounded up.
fn whole_seconds_up(delay: Duration) -> u64 {
    delay.as_secs() + u64::from(delay.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::QuotaScope;

    fn config(max_attempts: u32, max_key_failovers: u32) -> Config {
        Config {
            max_attempts,
            max_key_failovers,
            backoff: Backoff {
                base: Duration::from_millis(100),
                cap: Duration::from_secs(1),
            },
            honor_retry_after_up_to: Duration::from_secs(5),
            max_body_bytes: 1024,
            budget: None,
            classifier: Classifier::new(),
        }
    }

    fn key(n: u8) -> KeyId {
        KeyId::of(&format!("AIzaSy{n:033}"))
    }

    fn rate_limited() -> FailureClass {
        FailureClass::RateLimited {
            retry_after: Some(Duration::from_secs(37)),
            scope: QuotaScope::PerMinute,
        }
    }

    fn server_error() -> FailureClass {
        FailureClass::ServerError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    #[test]
    fn key_failovers_spend_no_attempt() {
        let config = config(2, 10);
        let mut tally = Tally::default();
        for n in 0..5 {
            let before: Vec<KeyId> = (0..n).map(key).collect();
            let decision = config.decide(&mut tally, &rate_limited(), Some(&key(n)), &before);
            assert_eq!(decision, Decision::KeyFailover, "key {n}");
        }
        // Real retries are still bounded by max_attempts.
        assert!(matches!(
            config.decide(&mut tally, &server_error(), Some(&key(9)), &[]),
            Decision::Retry(_)
        ));
        assert_eq!(
            config.decide(&mut tally, &server_error(), Some(&key(9)), &[]),
            Decision::Stop
        );
    }

    #[test]
    fn a_key_met_again_or_no_key_layer_makes_a_key_failure_count() {
        let config = config(2, 10);
        let mut tally = Tally::default();
        // The same key again: no other key was usable.
        assert_eq!(
            config.decide(&mut tally, &rate_limited(), Some(&key(1)), &[key(1)]),
            Decision::Stop,
            "37 s is longer than the 5 s honoured"
        );
        // No key layer below: a 429 is like a 503, waited for when short.
        let short = FailureClass::RateLimited {
            retry_after: Some(Duration::from_secs(2)),
            scope: QuotaScope::PerMinute,
        };
        let mut tally = Tally::default();
        let Decision::Retry(wait) = config.decide(&mut tally, &short, None, &[]) else {
            panic!("a short wait is honoured");
        };
        assert!(wait >= Duration::from_secs(2));
    }

    #[test]
    fn past_the_cap_a_key_failure_is_a_counted_retry_without_wait() {
        let config = config(3, 2);
        let mut tally = Tally::default();
        let decisions: Vec<Decision> = (0..6)
            .map(|n| config.decide(&mut tally, &rate_limited(), Some(&key(n)), &[]))
            .collect();
        assert_eq!(
            decisions,
            [
                Decision::KeyFailover,
                Decision::KeyFailover,
                Decision::Retry(Duration::ZERO),
                Decision::Retry(Duration::ZERO),
                Decision::Stop,
                Decision::Stop,
            ]
        );
    }

    #[test]
    fn key_failovers_withdraw_nothing_from_the_budget() {
        let mut config = config(3, 10);
        // A budget with nothing to withdraw: no real retry is allowed.
        let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 0, 0.0));
        config.budget = Some(budget);
        let mut tally = Tally::default();
        assert_eq!(
            config.decide(&mut tally, &rate_limited(), Some(&key(1)), &[]),
            Decision::KeyFailover
        );
        assert_eq!(
            config.decide(&mut tally, &server_error(), Some(&key(2)), &[]),
            Decision::Stop
        );
    }

    #[test]
    fn final_429_and_503_get_the_known_delay_rounded_up() {
        let cases = [
            (429, Some(Duration::from_millis(36_200)), None, Some("37")),
            (429, Some(Duration::from_secs(37)), None, Some("37")),
            (429, Some(Duration::from_secs(37)), Some("12"), Some("12")),
            (429, None, None, None),
            (503, Some(Duration::from_secs(60)), None, Some("60")),
            (403, Some(Duration::from_secs(60)), None, None),
        ];
        for (status, delay, sent, expected) in cases {
            let status = StatusCode::from_u16(status).unwrap();
            let class = if status == StatusCode::SERVICE_UNAVAILABLE {
                FailureClass::Overloaded { retry_after: delay }
            } else {
                FailureClass::RateLimited {
                    retry_after: delay,
                    scope: QuotaScope::PerMinute,
                }
            };
            let mut headers = HeaderMap::new();
            if let Some(sent) = sent {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static(sent));
            }
            fill_retry_after(&mut headers, status, &class);
            let got = headers
                .get(header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap());
            assert_eq!(got, expected, "{status} {delay:?} {sent:?}");
        }
    }
}
