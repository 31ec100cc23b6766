//! Behaviour over time, on tokio's paused clock: backoff, `Retry-After`, cooldowns and their
//! expiry, taking keys out and bringing them back, changing the pool while serving.
//!
//! Upstreams here are `tower::service_fn`s and `tower_test` mocks (no sockets: paused time and
//! real I/O mix badly). The clock only moves when everything waits on a timer, so
//! `Instant::now()` not moving proves that nothing waited.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gemini_balance::body::ResponseBody;
use gemini_balance::classify::{Classifier, Outcome};
use gemini_balance::ext::model_from_path;
use gemini_balance::keys::{ApiKey, DisabledReason, KeyId, KeyPool, KeyRotationLayer, KeyStatus};
use gemini_balance::retry::{RetryLayer, ATTEMPTS_HEADER};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use support::{errors, prompt_body, replies, test_key, test_keys};
use tokio::time::{advance, Instant};
use tower::util::BoxCloneSyncService;
use tower::{service_fn, Layer, ServiceExt};

type Body = Full<Bytes>;
type Upstream = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;
type Stack =
    BoxCloneSyncService<Request<Body>, Response<ResponseBody<ResponseBody<Body>>>, Infallible>;

const FLASH: &str = "gemini-2.0-flash";
const FLASH_25: &str = "gemini-2.5-flash";

/// One call the upstream received.
#[derive(Debug, Clone)]
struct Call {
    at: Instant,
    key: String,
    model: Option<String>,
}

/// Every call an upstream received, shared with the test.
#[derive(Debug, Clone, Default)]
struct Calls(Arc<Mutex<Vec<Call>>>);

impl Calls {
    /// Records a call; returns how many calls the same key made before it.
    fn record(&self, call: Call) -> usize {
        let mut calls = self.0.lock().unwrap();
        let before = calls.iter().filter(|c| c.key == call.key).count();
        calls.push(call);
        before
    }

    fn all(&self) -> Vec<Call> {
        self.0.lock().unwrap().clone()
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn by(&self, key: &str) -> usize {
        self.all().iter().filter(|c| c.key == key).count()
    }

    fn last_key(&self) -> String {
        self.all().last().unwrap().key.clone()
    }
}

/// An upstream answering each call with `answer(call, earlier calls with the same key)`.
fn upstream<F>(answer: F) -> (Calls, Upstream)
where
    F: Fn(&Call, usize) -> Response<Body> + Send + Sync + 'static,
{
    let calls = Calls::default();
    let log = calls.clone();
    let answer = Arc::new(answer);
    let service = service_fn(move |req: Request<Body>| {
        let call = Call {
            at: Instant::now(),
            key: req.headers()["x-goog-api-key"].to_str().unwrap().to_owned(),
            model: model_from_path(req.uri().path()).map(str::to_owned),
        };
        let earlier = log.record(call.clone());
        let res = answer(&call, earlier);
        async move { Ok::<_, Infallible>(res) }
    });
    (calls, BoxCloneSyncService::new(service))
}

/// A successful `generateContent` answer.
fn ok() -> Response<Body> {
    let model = replies::find_model(FLASH).unwrap();
    let mut res = Response::new(Body::from(
        replies::generate_content(model, "x").to_string(),
    ));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn with_retry_after(mut res: Response<Body>, secs: u64) -> Response<Body> {
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    res
}

/// `Retry` + `KeyRotation` around `upstream`.
fn stack(pool: &KeyPool, retry: RetryLayer, upstream: Upstream) -> Stack {
    let keys = KeyRotationLayer::new(pool.clone()).layer(upstream);
    BoxCloneSyncService::new(retry.layer(keys))
}

/// No retries, not even to another key: every failure reaches the pool and the client as it is.
fn no_retry() -> RetryLayer {
    RetryLayer::new().max_attempts(1).max_key_failovers(0)
}

fn pool(keys: u32, max_failures: u32) -> KeyPool {
    KeyPool::builder()
        .max_failures(max_failures)
        .keys(test_keys(keys))
        .build()
        .unwrap()
}

fn id(n: u32) -> KeyId {
    KeyId::of(&test_key(n))
}

fn generate(model: &str) -> Request<Body> {
    Request::post(format!("/v1beta/models/{model}:generateContent"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(prompt_body("hello")))
        .unwrap()
}

async fn send(stack: &Stack, model: &str) -> Response<ResponseBody<ResponseBody<Body>>> {
    stack.clone().oneshot(generate(model)).await.unwrap()
}

fn attempts<B>(res: &Response<B>) -> u32 {
    res.headers()[ATTEMPTS_HEADER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn retry_after<B>(res: &Response<B>) -> Option<u64> {
    res.headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

async fn json<B>(res: Response<B>) -> Value
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

fn status_of(pool: &KeyPool, n: u32) -> KeyStatus {
    pool.snapshot(&id(n)).unwrap().status
}

/// Tokio's timer wakes sleepers on millisecond ticks, so a wait may overrun by one.
const TICK: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn backoff_waits_happen_and_stay_under_the_ceilings() {
    let pool = pool(1, 0);
    let (calls, up) = upstream(|_, _| errors::internal().response());
    let retry = RetryLayer::new()
        .max_attempts(4)
        .base_delay(Duration::from_secs(1))
        .max_delay(Duration::from_secs(2))
        .without_budget();
    let stack = stack(&pool, retry, up);

    const REQUESTS: usize = 100;
    let ceilings = [1, 2, 2].map(Duration::from_secs);
    let mut gaps = vec![Vec::new(); ceilings.len()];
    for _ in 0..REQUESTS {
        let first = calls.len();
        let started = Instant::now();
        let res = send(&stack, FLASH).await;
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(attempts(&res), 4);
        let times: Vec<Instant> = calls.all()[first..].iter().map(|c| c.at).collect();
        assert_eq!(times.len(), 4);
        assert_eq!(times[0], started, "the first attempt does not wait");
        for (retry, pair) in times.windows(2).enumerate() {
            gaps[retry].push(pair[1] - pair[0]);
        }
    }
    for (retry, (gaps, ceiling)) in gaps.iter().zip(ceilings).enumerate() {
        let longest = gaps.iter().max().unwrap();
        assert!(
            *longest <= ceiling + TICK,
            "retry {}: {longest:?}",
            retry + 1
        );
        // Full jitter: uniform in [0, ceiling], so on average half the ceiling.
        let mean = gaps.iter().sum::<Duration>() / REQUESTS as u32;
        assert!(
            mean > ceiling.mul_f64(0.3) && mean < ceiling.mul_f64(0.7),
            "retry {}: mean wait {mean:?} for a ceiling of {ceiling:?}",
            retry + 1
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_503_with_a_short_retry_after_waits_that_long() {
    let pool = pool(1, 3);
    let (calls, up) = upstream(|_, earlier| match earlier {
        0 => with_retry_after(errors::overloaded().response(), 2),
        _ => ok(),
    });
    let stack = stack(&pool, RetryLayer::new(), up);

    let started = Instant::now();
    let res = send(&stack, FLASH).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(attempts(&res), 2);
    let calls = calls.all();
    let waited = calls[1].at - calls[0].at;
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    // The backoff (at most 100 ms) is below the asked wait, so the asked wait is what counts.
    assert!(waited <= Duration::from_secs(2) + TICK, "{waited:?}");
    assert_eq!(Instant::now() - started, waited);
}

#[tokio::test(start_paused = true)]
async fn a_503_with_a_long_retry_after_is_not_retried() {
    let pool = pool(2, 3);
    let (calls, up) = upstream(|_, _| with_retry_after(errors::overloaded().response(), 60));
    let stack = stack(&pool, RetryLayer::new(), up);

    let started = Instant::now();
    let res = send(&stack, FLASH).await;
    assert_eq!(Instant::now(), started, "nothing waited");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempts(&res), 1);
    assert_eq!(retry_after(&res), Some(60));
    assert_eq!(json(res).await["error"]["status"], "UNAVAILABLE");
    assert_eq!(calls.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_key_comes_back_when_its_cooldown_ends() {
    let pool = pool(2, 3);
    let a = test_key(1);
    let (calls, up) = upstream(move |call, earlier| {
        if call.key == a && earlier == 0 {
            errors::rate_limited(FLASH, "30s", false).response()
        } else {
            ok()
        }
    });
    let stack = stack(&pool, RetryLayer::new(), up);
    let (a, b) = (test_key(1), test_key(2));

    let started = Instant::now();
    let res = send(&stack, FLASH).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(attempts(&res), 2);
    assert_eq!(Instant::now(), started, "switching keys needs no wait");
    assert!(matches!(status_of(&pool, 1), KeyStatus::CoolingDown(_)));

    // For 30 s the key serves no request for this model...
    for _ in 1..30 {
        advance(Duration::from_secs(1)).await;
        assert_eq!(send(&stack, FLASH).await.status(), StatusCode::OK);
        assert_eq!(calls.last_key(), b);
    }
    advance(Duration::from_millis(999)).await;
    assert_eq!(send(&stack, FLASH).await.status(), StatusCode::OK);
    assert_eq!(calls.last_key(), b);
    assert_eq!(calls.by(&a), 1);
    // ...while it still serves other models.
    for _ in 0..2 {
        assert_eq!(send(&stack, FLASH_25).await.status(), StatusCode::OK);
    }
    assert_eq!(calls.by(&a), 2);

    // Then it is back.
    advance(Duration::from_millis(1)).await;
    assert_eq!(status_of(&pool, 1), KeyStatus::Active);
    for _ in 0..2 {
        assert_eq!(send(&stack, FLASH).await.status(), StatusCode::OK);
    }
    let served_by_a = calls
        .all()
        .iter()
        .filter(|c| c.key == a && c.model.as_deref() == Some(FLASH))
        .count();
    assert_eq!(served_by_a, 2, "the failed call and one of the last two");
}

#[tokio::test(start_paused = true)]
async fn max_failures_takes_a_key_out_and_a_probe_brings_it_back() {
    let pool = pool(2, 3);
    let (a, b) = (test_key(1), test_key(2));
    let broken = Arc::new(AtomicBool::new(true));
    let (calls, up) = {
        let (a, broken) = (a.clone(), broken.clone());
        upstream(move |call, _| {
            if call.key == a && broken.load(Ordering::SeqCst) {
                errors::internal().response()
            } else {
                ok()
            }
        })
    };
    let stack = stack(&pool, no_retry(), up.clone());

    // Round robin: a, b, a, b, a.
    let statuses = [500, 200, 500, 200, 500];
    for (i, expected) in statuses.into_iter().enumerate() {
        assert_eq!(send(&stack, FLASH).await.status().as_u16(), expected);
        if i == 0 {
            // One failure already asks for a re-check, but the key keeps serving.
            assert_eq!(pool.keys_to_probe(), [id(1)]);
            assert_eq!(status_of(&pool, 1), KeyStatus::Active);
            assert_eq!(pool.snapshot(&id(1)).unwrap().consecutive_failures, 1);
        }
    }
    assert_eq!(
        status_of(&pool, 1),
        KeyStatus::Disabled(DisabledReason::TooManyFailures { count: 3 })
    );
    assert_eq!(pool.keys_to_probe(), [id(1)]);
    for _ in 0..4 {
        assert_eq!(send(&stack, FLASH).await.status(), StatusCode::OK);
        assert_eq!(calls.last_key(), b);
    }
    assert_eq!(calls.by(&a), 3);

    // A probe: one cheap request with the key, whatever its state, reported as a probe.
    let probe = |up: Upstream| {
        let pool = pool.clone();
        async move {
            let lease = pool.probe(&id(1)).unwrap();
            let mut req = generate(FLASH);
            req.headers_mut()
                .insert("x-goog-api-key", lease.key().header_value().clone());
            let res = up.oneshot(req).await.unwrap();
            let (parts, body) = res.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let outcome: Outcome = Classifier::new()
                .classify(parts.status, &parts.headers, &body)
                .into();
            lease.report_probe(&outcome);
        }
    };
    // A failing probe leaves the key out.
    probe(up.clone()).await;
    assert!(matches!(status_of(&pool, 1), KeyStatus::Disabled(_)));

    broken.store(false, Ordering::SeqCst);
    probe(up).await;
    let snapshot = pool.snapshot(&id(1)).unwrap();
    assert_eq!(snapshot.status, KeyStatus::Active);
    assert_eq!(snapshot.consecutive_failures, 0);
    assert!(pool.keys_to_probe().is_empty());
    for _ in 0..2 {
        assert_eq!(send(&stack, FLASH).await.status(), StatusCode::OK);
    }
    assert_eq!(
        calls.by(&a),
        6,
        "3 failures, 2 probes, and back in rotation"
    );
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_consecutive_failures() {
    let pool = pool(1, 3);
    let script = [500, 500, 200, 500, 500, 500];
    let (_calls, up) = upstream(move |_, earlier| match script[earlier] {
        200 => ok(),
        _ => errors::internal().response(),
    });
    let stack = stack(&pool, no_retry(), up);

    let expected_failures = [1, 2, 0, 1, 2, 3];
    for (status, failures) in script.into_iter().zip(expected_failures) {
        assert_eq!(send(&stack, FLASH).await.status().as_u16(), status);
        assert_eq!(
            pool.snapshot(&id(1)).unwrap().consecutive_failures,
            failures
        );
        if failures < 3 {
            assert_eq!(status_of(&pool, 1), KeyStatus::Active);
        }
    }
    assert!(matches!(
        status_of(&pool, 1),
        KeyStatus::Disabled(DisabledReason::TooManyFailures { count: 3 })
    ));
}

#[tokio::test(start_paused = true)]
async fn reset_and_reset_all_bring_keys_back() {
    let pool = pool(3, 3);
    let healthy = Arc::new(AtomicBool::new(false));
    let (calls, up) = {
        let healthy = healthy.clone();
        upstream(move |call, _| {
            if healthy.load(Ordering::SeqCst) || call.key == test_key(3) {
                ok()
            } else if call.key == test_key(1) {
                errors::invalid_key().response()
            } else {
                errors::rate_limited(FLASH, "30s", false).response()
            }
        })
    };
    let stack = stack(&pool, no_retry(), up);

    // Key 1 is rejected, key 2 rate limited, key 3 disabled by hand.
    assert_eq!(send(&stack, FLASH).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        send(&stack, FLASH).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert!(pool.disable(&id(3)));
    assert!(matches!(status_of(&pool, 1), KeyStatus::Disabled(_)));
    assert!(matches!(status_of(&pool, 2), KeyStatus::CoolingDown(_)));
    assert_eq!(
        status_of(&pool, 3),
        KeyStatus::Disabled(DisabledReason::Manual)
    );
    let res = send(&stack, FLASH).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(attempts(&res), 0, "no key left: answered locally");

    assert_eq!(pool.reset(&[id(3)]), 1);
    assert_eq!(
        pool.reset(&[KeyId::of("AIzaSyNotInThePool_________________0000")]),
        0
    );
    assert_eq!(status_of(&pool, 3), KeyStatus::Active);
    assert!(matches!(status_of(&pool, 1), KeyStatus::Disabled(_)));
    assert_eq!(send(&stack, FLASH).await.status(), StatusCode::OK);
    assert_eq!(calls.last_key(), test_key(3));

    assert_eq!(pool.reset_all(), 3);
    for n in 1..=3 {
        let snapshot = pool.snapshot(&id(n)).unwrap();
        assert_eq!(snapshot.status, KeyStatus::Active);
        assert_eq!(snapshot.consecutive_failures, 0);
    }
    healthy.store(true, Ordering::SeqCst);
    let before = calls.len();
    for _ in 0..3 {
        assert_eq!(send(&stack, FLASH).await.status(), StatusCode::OK);
    }
    let mut used: Vec<String> = calls.all()[before..]
        .iter()
        .map(|c| c.key.clone())
        .collect();
    used.sort();
    assert_eq!(
        used,
        test_keys(3),
        "every key serves again, before its cooldown would end"
    );
}

#[tokio::test]
async fn removing_a_key_lets_its_in_flight_request_finish() {
    let pool = pool(2, 3);
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let service = KeyRotationLayer::new(pool.clone()).layer(mock);
    let key_of = |req: &Request<Body>| req.headers()["x-goog-api-key"].to_str().unwrap().to_owned();

    let first = tokio::spawn(service.clone().oneshot(generate(FLASH)));
    let (req, reply_first) = handle.next_request().await.unwrap();
    let used = ApiKey::new(&key_of(&req)).unwrap();
    assert_eq!(pool.snapshot(used.id()).unwrap().in_flight, 1);

    assert_eq!(pool.remove(&[used.id().clone()]), [used.id().clone()]);
    assert_eq!(pool.len(), 1);
    assert!(pool.snapshot(used.id()).is_none());

    // Meanwhile, new requests get the remaining key.
    let second = tokio::spawn(service.clone().oneshot(generate(FLASH)));
    let (req, reply_second) = handle.next_request().await.unwrap();
    assert_ne!(key_of(&req), used.expose_secret());

    reply_first.send_response(ok());
    let res = first.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.extensions().get::<KeyId>(), Some(used.id()));
    reply_second.send_response(ok());
    assert_eq!(second.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn keys_added_while_serving_are_selected() {
    let pool = pool(1, 3);
    let (calls, up) = upstream(|_, _| ok());
    let stack = stack(&pool, RetryLayer::new(), up);
    for _ in 0..2 {
        send(&stack, FLASH).await;
    }
    assert_eq!(calls.by(&test_key(1)), 2);

    let added = pool.add([ApiKey::new(&test_key(2)).unwrap()]);
    assert_eq!(added.added, [id(2)]);
    let again = pool.add([ApiKey::new(&test_key(2)).unwrap()]);
    assert_eq!(again.duplicates, [id(2)]);
    assert_eq!(pool.len(), 2);

    for _ in 0..4 {
        assert_eq!(send(&stack, FLASH).await.status(), StatusCode::OK);
    }
    assert_eq!(calls.by(&test_key(2)), 2);
    assert_eq!(calls.by(&test_key(1)), 4);
}

#[tokio::test(start_paused = true)]
async fn with_no_usable_key_the_answer_comes_at_once() {
    // Key 1 cools down for 30 s, key 2 for 10 s; key 2 serves once it is back.
    let pool = pool(2, 3);
    let (calls, up) = upstream(|call, earlier| match (call.key == test_key(1), earlier) {
        (true, _) => errors::rate_limited(FLASH, "30s", false).response(),
        (false, 0) => errors::rate_limited(FLASH, "10s", false).response(),
        (false, _) => ok(),
    });
    let stack = stack(&pool, RetryLayer::new(), up);
    let started = Instant::now();

    // Both keys tried: the client gets the upstream's last 429, with the soonest cooldown.
    let res = send(&stack, FLASH).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&res), Some(10));
    assert_eq!(attempts(&res), 2);
    assert_eq!(Instant::now(), started);

    // Later, no key is usable: our own 429 at once, Retry-After counting down.
    advance(Duration::from_secs(3)).await;
    let res = send(&stack, FLASH).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&res), Some(7));
    assert_eq!(attempts(&res), 0);
    let body = json(res).await;
    assert_eq!(body["error"]["code"], 429);
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(Instant::now(), started + Duration::from_secs(3));
    assert_eq!(calls.len(), 2);

    advance(Duration::from_secs(7)).await;
    assert_eq!(send(&stack, FLASH).await.status(), StatusCode::OK);
    assert_eq!(calls.last_key(), test_key(2));
}

#[tokio::test(start_paused = true)]
async fn with_every_key_disabled_the_answer_is_503_at_once() {
    let pool = pool(2, 3);
    let (calls, up) = upstream(|_, _| errors::invalid_key().response());
    let stack = stack(&pool, RetryLayer::new(), up);
    let started = Instant::now();

    let res = send(&stack, FLASH).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(attempts(&res), 2);

    let res = send(&stack, FLASH).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&res), None);
    assert_eq!(attempts(&res), 0);
    let body = json(res).await;
    assert_eq!(body["error"]["code"], 503);
    assert_eq!(body["error"]["status"], "UNAVAILABLE");
    assert_eq!(calls.len(), 2);
    assert_eq!(Instant::now(), started);
}
