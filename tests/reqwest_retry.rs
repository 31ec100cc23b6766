//! reqwest-retry with the crate's `ClassifiedStrategy`: with a `KeyFailoverPolicy`, a key's
//! failure is followed by another key at once, as `RetryMiddleware` does; other failures wait the
//! wrapped policy's backoff.
//!
//! The upstream is a last middleware answering per key (no network), and time is tokio's paused
//! clock: it moves only when something sleeps, so "at once" is "nothing slept".
#![cfg(feature = "middleware")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gemini_balance::client::{ClassifiedStrategy, KeyFailoverPolicy, KeyRotationMiddleware};
use gemini_balance::keys::KeyPool;
use http::{Extensions, StatusCode};
use reqwest_middleware::{ClientWithMiddleware, Middleware, Next};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::{Jitter, RetryPolicy, RetryTransientMiddleware};
use tokio::time::Instant;

const KEYS: [&str; 2] = [
    "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    "AIzaSyB1234567890abcdefghijklmnopqrstuv",
];

/// Answers each request by the key it carries: the first key with `first`, the other with 200.
#[derive(Clone)]
struct FakeGemini {
    first: (u16, &'static str),
    seen: Arc<Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl Middleware for FakeGemini {
    async fn handle(
        &self,
        req: reqwest::Request,
        _: &mut Extensions,
        _: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let key = req.headers()["x-goog-api-key"].to_str().unwrap().to_owned();
        let (status, body) = if key == KEYS[0] {
            self.first
        } else {
            (200, r#"{"candidates":[]}"#)
        };
        self.seen.lock().unwrap().push(key);
        let res = http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        Ok(reqwest::Response::from(res))
    }
}

const RATE_LIMITED: (u16, &str) = (
    429,
    r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#,
);
const INVALID_KEY: (u16, &str) = (
    400,
    r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#,
);
const UNAVAILABLE: (u16, &str) = (
    503,
    r#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#,
);

fn client<P>(policy: P, fake: &FakeGemini) -> ClientWithMiddleware
where
    P: RetryPolicy + Send + Sync + 'static,
{
    // reqwest without a default TLS provider, as the proxy has it (nothing here connects).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Round robin starts at the first key.
    let pool = KeyPool::builder().keys(KEYS).build().unwrap();
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(RetryTransientMiddleware::new_with_policy_and_strategy(
            policy,
            ClassifiedStrategy::new(),
        ))
        .with(KeyRotationMiddleware::new(pool))
        .with(fake.clone())
        .build()
}

/// Sends one request; the status and how long the (paused) clock moved meanwhile.
async fn send(client: &ClientWithMiddleware) -> (StatusCode, Duration) {
    let started = Instant::now();
    let res = client
        .post("http://gemini.invalid/v1beta/models/gemini-2.0-flash:generateContent")
        .header("content-type", "application/json")
        .body(r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#)
        .send()
        .await
        .unwrap();
    (res.status(), started.elapsed())
}

fn backoff() -> ExponentialBackoff {
    // reqwest-retry's defaults (1 s before the first retry, doubling) without the jitter, which
    // could draw a wait of zero.
    ExponentialBackoff::builder()
        .jitter(Jitter::None)
        .build_with_max_retries(3)
}

#[tokio::test(start_paused = true)]
async fn a_key_failure_moves_to_another_key_without_waiting() {
    for fault in [RATE_LIMITED, INVALID_KEY] {
        let fake = FakeGemini {
            first: fault,
            seen: Arc::default(),
        };
        let client = client(KeyFailoverPolicy::new(backoff()), &fake);
        let (status, waited) = send(&client).await;
        assert_eq!(status, StatusCode::OK, "{fault:?}");
        assert_eq!(*fake.seen.lock().unwrap(), KEYS, "{fault:?}");
        assert_eq!(waited, Duration::ZERO, "{fault:?}: nothing may sleep");
    }
}

#[tokio::test(start_paused = true)]
async fn the_bare_policy_waits_its_backoff_before_the_next_key() {
    // What `KeyFailoverPolicy` fixes: the same stack with the policy alone sleeps first.
    let fake = FakeGemini {
        first: RATE_LIMITED,
        seen: Arc::default(),
    };
    let client = client(backoff(), &fake);
    let (status, waited) = send(&client).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(*fake.seen.lock().unwrap(), KEYS);
    assert!(waited > Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn other_failures_still_wait_the_wrapped_backoff() {
    let fake = FakeGemini {
        first: UNAVAILABLE,
        seen: Arc::default(),
    };
    let client = client(KeyFailoverPolicy::new(backoff()), &fake);
    let (status, waited) = send(&client).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(*fake.seen.lock().unwrap(), KEYS);
    assert!(waited > Duration::ZERO, "an overloaded model is waited for");
}

#[tokio::test(start_paused = true)]
async fn a_key_failover_still_counts_against_max_retries() {
    // Every key rate limited but one, and no retry allowed: the first answer is the last.
    let fake = FakeGemini {
        first: RATE_LIMITED,
        seen: Arc::default(),
    };
    let policy = KeyFailoverPolicy::new(ExponentialBackoff::builder().build_with_max_retries(0));
    let client = client(policy, &fake);
    let (status, waited) = send(&client).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(fake.seen.lock().unwrap().len(), 1);
    assert_eq!(waited, Duration::ZERO);
}
