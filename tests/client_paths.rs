//! The client side, as a program calling Gemini would build it, over loopback against the mock
//! Gemini of `tests/support`, through both client paths:
//!
//! ```text
//! tower:      Usage ─▶ Retry ─▶ KeyRotation ─▶ ReqwestService ─▶ mock Gemini
//! middleware: ClientWithMiddleware[UsageMiddleware, RetryMiddleware, KeyRotationMiddleware] ─▶ mock Gemini
//! ```
//!
//! Every fault of the mock's matrix (invalid key, 429 with RetryInfo, per-model 429, 503, 500,
//! slow) runs through each path; a last test drives both paths with one fault script and
//! checks that they make the same decisions.
#![cfg(feature = "middleware")]

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use gemini_balance::classify::FailureClass;
use gemini_balance::client::{
    ClassifiedStrategy, KeyRotationMiddleware, ReqwestService, RetryMiddleware, UsageMiddleware,
};
use gemini_balance::keys::{ApiKey, DisabledReason, KeyId, KeyPool, KeyRotationLayer, KeyStatus};
use gemini_balance::retry::{RetryLayer, ATTEMPTS_HEADER};
use gemini_balance::store::MemoryStore;
use gemini_balance::usage::{Completion, RequestRecord, UsageLayer};
use http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;
use reqwest_retry::{Retryable, RetryableStrategy};
use support::{prompt_body, test_keys, Fault, MockGemini};
use tower::{ServiceBuilder, ServiceExt};

const FLASH: &str = "gemini-2.0-flash";
const FLASH_25: &str = "gemini-2.5-flash";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Tower,
    Middleware,
}

const PATHS: [Path; 2] = [Path::Tower, Path::Middleware];

/// What the caller got back.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn attempts(&self) -> u32 {
        self.headers[ATTEMPTS_HEADER.as_str()]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A mock, a pool, a usage store and one client path in front of them.
struct Setup {
    path: Path,
    mock: MockGemini,
    pool: KeyPool,
    keys: Vec<String>,
    store: MemoryStore,
    http: reqwest::Client,
    retry: RetryLayer,
}

fn fast_retry() -> RetryLayer {
    RetryLayer::new()
        .base_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(10))
}

async fn setup(path: Path, keys: u32) -> Setup {
    setup_with(path, keys, support::client_builder().build().unwrap()).await
}

async fn setup_with(path: Path, keys: u32, http: reqwest::Client) -> Setup {
    let mock = MockGemini::start().await;
    let keys = test_keys(keys);
    let pool = KeyPool::builder().keys(&keys).build().unwrap();
    Setup {
        path,
        mock,
        pool,
        keys,
        store: MemoryStore::new(),
        http,
        retry: fast_retry(),
    }
}

impl Setup {
    /// `POST {path}` with `body`, through this setup's client path; the body is read to its end.
    async fn post(&self, path: &str, body: String) -> Answer {
        match self.path {
            Path::Tower => {
                let stack = ServiceBuilder::new()
                    .layer(UsageLayer::new(self.store.clone()))
                    .layer(self.retry.clone())
                    .layer(KeyRotationLayer::new(self.pool.clone()))
                    .service(
                        ReqwestService::new(self.http.clone())
                            .base_url(&self.mock.base_url())
                            .unwrap(),
                    );
                let req = http::Request::post(path)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(reqwest::Body::from(body))
                    .unwrap();
                let res = stack.oneshot(req).await.unwrap();
                let (parts, body) = res.into_parts();
                Answer {
                    status: parts.status,
                    headers: parts.headers,
                    body: body.collect().await.unwrap().to_bytes(),
                }
            }
            Path::Middleware => {
                let client = reqwest_middleware::ClientBuilder::new(self.http.clone())
                    .with(UsageMiddleware::new(self.store.clone()))
                    .with(RetryMiddleware::from(self.retry.clone()))
                    .with(KeyRotationMiddleware::new(self.pool.clone()))
                    .build();
                let res = client
                    .post(format!("{}{path}", self.mock.base_url()))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                Answer {
                    status: res.status(),
                    headers: res.headers().clone(),
                    body: res.bytes().await.unwrap(),
                }
            }
        }
    }

    async fn generate(&self, model: &str, prompt: &str) -> Answer {
        self.post(
            &format!("/v1beta/models/{model}:generateContent"),
            prompt_body(prompt),
        )
        .await
    }

    fn key(&self, i: usize) -> &str {
        &self.keys[i]
    }

    fn id(&self, i: usize) -> KeyId {
        ApiKey::new(&self.keys[i]).unwrap().id().clone()
    }

    fn status(&self, i: usize) -> KeyStatus {
        self.pool.snapshot(&self.id(i)).unwrap().status
    }

    fn last_record(&self) -> RequestRecord {
        self.store.records().pop().expect("a usage record")
    }
}

fn answer_text(body: &serde_json::Value) -> &str {
    body["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap()
}

#[tokio::test]
async fn an_invalid_key_is_disabled_and_another_key_serves() {
    for path in PATHS {
        let s = setup(path, 2).await;
        s.mock.set_fault(s.key(0), Fault::InvalidKey);

        let res = s.generate(FLASH, "hello").await;
        assert_eq!(res.status, StatusCode::OK, "{path:?}");
        assert_eq!(res.attempts(), 2, "{path:?}");
        assert_eq!(answer_text(&res.json()), "echo: hello");
        assert!(
            matches!(
                s.status(0),
                KeyStatus::Disabled(DisabledReason::Rejected { status: 400, .. })
            ),
            "{path:?}: {:?}",
            s.status(0)
        );
        // A disabled key is not tried again.
        assert_eq!(s.generate(FLASH, "again").await.attempts(), 1, "{path:?}");
        assert_eq!(s.mock.requests(s.key(0)), 1, "{path:?}");

        let records = s.store.records();
        assert_eq!(records.len(), 2, "{path:?}");
        let first = &records[0];
        assert!(first.success, "{path:?}");
        assert_eq!(first.attempts, 2);
        assert_eq!(first.key.as_ref(), Some(&s.id(1)));
        assert_eq!(first.attempt_log[0].class, Some("key_rejected"), "{path:?}");
        assert_eq!(first.attempt_log[0].key, s.id(0));
        assert!(first.tokens.total > 0, "{path:?}: tokens are recorded");
    }
}

#[tokio::test]
async fn a_429_with_retry_info_cools_the_key_for_the_asked_time() {
    for path in PATHS {
        let s = setup(path, 2).await;
        s.mock.set_fault(s.key(0), Fault::rate_limited("37s"));

        let before = SystemTime::now();
        let res = s.generate(FLASH, "hi").await;
        let after = SystemTime::now();
        assert_eq!(res.status, StatusCode::OK, "{path:?}");
        assert_eq!(res.attempts(), 2, "{path:?}");
        let KeyStatus::CoolingDown(cooldowns) = s.status(0) else {
            panic!("{path:?}: expected a cooldown, got {:?}", s.status(0));
        };
        assert_eq!(cooldowns.len(), 1);
        assert_eq!(cooldowns[0].model, FLASH);
        assert!(
            cooldowns[0].until >= before + Duration::from_secs(36),
            "{path:?}"
        );
        assert!(
            cooldowns[0].until <= after + Duration::from_secs(38),
            "{path:?}"
        );
        // A rate-limited key costs no failure count.
        assert_eq!(s.pool.snapshot(&s.id(0)).unwrap().consecutive_failures, 0);

        for _ in 0..3 {
            assert_eq!(s.generate(FLASH, "x").await.attempts(), 1, "{path:?}");
        }
        assert_eq!(s.mock.requests(s.key(0)), 1, "{path:?}");
        assert_eq!(
            s.last_record().attempt_log.len(),
            1,
            "{path:?}: later calls go straight to the other key"
        );
    }
}

#[tokio::test]
async fn a_per_model_429_leaves_the_key_serving_other_models() {
    for path in PATHS {
        let s = setup(path, 2).await;
        s.mock
            .set_fault(s.key(0), Fault::rate_limited_for(FLASH, "20s"));

        let res = s.generate(FLASH, "one").await;
        assert_eq!(res.status, StatusCode::OK, "{path:?}");
        assert_eq!(res.attempts(), 2, "{path:?}");
        assert_eq!(s.mock.status_count(s.key(0), 429), 1);

        for _ in 0..2 {
            let res = s.generate(FLASH_25, "other model").await;
            assert_eq!(res.status, StatusCode::OK, "{path:?}");
            assert_eq!(res.attempts(), 1, "{path:?}");
        }
        assert_eq!(s.mock.requests_for(s.key(0), FLASH_25), 1, "{path:?}");
        assert_eq!(s.mock.requests_for(s.key(0), FLASH), 1, "{path:?}");
        assert_eq!(s.last_record().model.as_deref(), Some(FLASH_25));
    }
}

#[tokio::test]
async fn a_503_is_retried_on_another_key_and_costs_the_key_nothing() {
    for path in PATHS {
        let s = setup(path, 2).await;
        s.mock.set_fault(s.key(0), Fault::Flaky503);

        let res = s.generate(FLASH, "busy?").await;
        assert_eq!(res.status, StatusCode::OK, "{path:?}");
        assert_eq!(res.attempts(), 2, "{path:?}");
        assert_eq!(s.mock.status_count(s.key(0), 503), 1);
        let key = s.pool.snapshot(&s.id(0)).unwrap();
        assert_eq!(key.status, KeyStatus::Active, "{path:?}");
        assert_eq!(
            key.consecutive_failures, 0,
            "{path:?}: overload is no key's fault"
        );
        assert_eq!(s.last_record().attempt_log[0].class, Some("overloaded"));
    }
}

#[tokio::test]
async fn a_500_counts_a_failure_and_another_key_serves() {
    for path in PATHS {
        let s = setup(path, 2).await;
        s.mock.set_fault(s.key(0), Fault::ServerError);

        let res = s.generate(FLASH, "oops").await;
        assert_eq!(res.status, StatusCode::OK, "{path:?}");
        assert_eq!(res.attempts(), 2, "{path:?}");
        let key = s.pool.snapshot(&s.id(0)).unwrap();
        assert_eq!(key.status, KeyStatus::Active);
        assert_eq!(key.consecutive_failures, 1, "{path:?}");
        assert!(matches!(
            key.last_error.unwrap().class,
            FailureClass::ServerError { .. }
        ));
    }
}

#[tokio::test]
async fn when_every_key_fails_the_caller_gets_the_upstreams_last_answer() {
    for path in PATHS {
        let s = setup(path, 2).await;
        s.mock.set_fault(s.key(0), Fault::ServerError);
        s.mock.set_fault(s.key(1), Fault::ServerError);

        let res = s.generate(FLASH, "doomed").await;
        assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR, "{path:?}");
        assert_eq!(res.json()["error"]["status"], "INTERNAL", "{path:?}");
        assert_eq!(res.attempts(), 3, "{path:?}");
        let record = s.last_record();
        assert!(!record.success);
        assert_eq!(record.status, 500);
        assert_eq!(record.attempt_log.len(), 3, "{path:?}");
    }
}

#[tokio::test]
async fn a_slow_key_times_out_and_another_key_serves() {
    for path in PATHS {
        let impatient = support::client_builder()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let s = setup_with(path, 2, impatient).await;
        s.mock
            .set_fault(s.key(0), Fault::Slow(Duration::from_secs(60)));

        let res = s.generate(FLASH, "hurry").await;
        assert_eq!(res.status, StatusCode::OK, "{path:?}");
        assert_eq!(res.attempts(), 2, "{path:?}");
        let slow = s.pool.snapshot(&s.id(0)).unwrap();
        assert_eq!(slow.consecutive_failures, 1, "{path:?}");
        assert_eq!(
            slow.last_error.unwrap().class,
            FailureClass::Timeout,
            "{path:?}"
        );
        assert_eq!(s.last_record().attempt_log[0].class, Some("timeout"));
    }
}

#[tokio::test]
async fn streamed_answers_pass_through_and_their_tokens_are_recorded() {
    for path in PATHS {
        let s = setup(path, 1).await;
        let res = s
            .post(
                &format!("/v1beta/models/{FLASH}:streamGenerateContent?alt=sse"),
                prompt_body("stream me"),
            )
            .await;
        assert_eq!(res.status, StatusCode::OK, "{path:?}");
        assert!(res.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let events = std::str::from_utf8(&res.body)
            .unwrap()
            .matches("data: ")
            .count();
        assert!(events > 1, "{path:?}: the stream arrives as events");
        let record = s.last_record();
        assert!(record.streamed, "{path:?}");
        assert_eq!(record.completion, Completion::Complete);
        assert!(record.tokens.candidates > 0, "{path:?}");
    }
}

#[tokio::test]
async fn the_callers_own_credentials_never_reach_the_upstream() {
    let s = setup(Path::Middleware, 1).await;
    let client = reqwest_middleware::ClientBuilder::new(s.http.clone())
        .with(KeyRotationMiddleware::new(s.pool.clone()))
        .build();
    let res = client
        .post(format!(
            "{}/v1beta/models/{FLASH}:generateContent?key=caller-secret&alt=json",
            s.mock.base_url()
        ))
        .header("x-goog-api-key", "caller-header-secret")
        .bearer_auth("caller-bearer-secret")
        .body(prompt_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(!s.mock.saw_credential("caller"));
    assert_eq!(s.mock.credentials_seen(), vec![s.key(0).to_owned()]);
    let seen = s.mock.last_request().unwrap();
    assert_eq!(seen.uri.query(), Some("alt=json"));
}

#[tokio::test]
async fn reqwest_retry_with_the_classified_strategy_rotates_keys() {
    let s = setup(Path::Middleware, 3).await;
    s.mock.set_fault(s.key(0), Fault::InvalidKey);
    s.mock
        .set_fault(s.key(1), Fault::rate_limited_for(FLASH, "30s"));
    let policy = reqwest_retry::policies::ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(1), Duration::from_millis(5))
        .build_with_max_retries(3);
    let client = reqwest_middleware::ClientBuilder::new(s.http.clone())
        .with(
            reqwest_retry::RetryTransientMiddleware::new_with_policy_and_strategy(
                policy,
                ClassifiedStrategy::new(),
            ),
        )
        .with(KeyRotationMiddleware::new(s.pool.clone()))
        .build();
    let res = client
        .post(format!(
            "{}/v1beta/models/{FLASH}:generateContent",
            s.mock.base_url()
        ))
        .body(prompt_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        s.mock.key_sequence(),
        [
            Some(s.key(0).to_owned()),
            Some(s.key(1).to_owned()),
            Some(s.key(2).to_owned())
        ]
    );
    assert!(matches!(s.status(0), KeyStatus::Disabled(_)));
    assert!(matches!(s.status(1), KeyStatus::CoolingDown(_)));

    // A client error is Fatal: never retried.
    let res = client
        .post(format!(
            "{}/v1beta/models/no-such-model:generateContent",
            s.mock.base_url()
        ))
        .body(prompt_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(s.mock.total(), 4);
}

#[test]
fn the_classified_strategy_judges_by_the_one_classifier() {
    let strategy = ClassifiedStrategy::new();
    let answer = |status: u16, retry_after: Option<&str>| {
        let mut res = http::Response::builder().status(status);
        if let Some(value) = retry_after {
            res = res.header(header::RETRY_AFTER, value);
        }
        Ok(reqwest::Response::from(res.body(Vec::<u8>::new()).unwrap()))
    };
    let cases = [
        (200, None, None),
        (400, None, Some(Retryable::Fatal)),
        (404, None, Some(Retryable::Fatal)),
        (401, None, Some(Retryable::Transient)),
        (429, Some("600"), Some(Retryable::Transient)),
        (500, None, Some(Retryable::Transient)),
        (503, Some("2"), Some(Retryable::Transient)),
        (503, Some("60"), Some(Retryable::Fatal)),
    ];
    for (status, retry_after, expected) in cases {
        let got = strategy.handle(&answer(status, retry_after));
        assert!(got == expected, "{status} {retry_after:?}");
    }
}

/// One key's state, without the instants (which differ between two runs).
#[derive(Debug, PartialEq, Eq)]
struct KeyState {
    status: String,
    cooling_models: Vec<String>,
    consecutive_failures: u32,
    requests: u64,
    successes: u64,
    failures: u64,
}

/// What one run of the script decided: per call, the status, the attempts and the keys the
/// upstream saw; at the end, every key's state and the usage records.
#[derive(Debug, PartialEq, Eq)]
struct Decisions {
    calls: Vec<(u16, u32, Vec<Option<String>>)>,
    keys: Vec<KeyState>,
    records: Vec<(u16, bool, u32, Vec<Option<&'static str>>)>,
}

async fn run_script(path: Path) -> Decisions {
    let s = setup(path, 4).await;
    let mut calls = Vec::new();
    let script: Vec<(Vec<(usize, Fault)>, &str)> = vec![
        (vec![(0, Fault::InvalidKey)], FLASH),
        (vec![(2, Fault::rate_limited_for(FLASH, "40s"))], FLASH),
        (vec![(3, Fault::ServerError)], FLASH),
        (vec![], FLASH_25),
        (vec![(1, Fault::Flaky503)], FLASH_25),
        (vec![], FLASH),
        (vec![(1, Fault::rate_limited("30s"))], FLASH),
        (vec![], FLASH),
        (vec![(3, Fault::Ok)], FLASH_25),
    ];
    for (faults, model) in script {
        for (key, fault) in faults {
            s.mock.set_fault(s.key(key), fault);
        }
        s.mock.reset_counters();
        let res = s.generate(model, "same script").await;
        calls.push((res.status.as_u16(), res.attempts(), s.mock.key_sequence()));
    }
    let keys = (0..4)
        .map(|i| {
            let snap = s.pool.snapshot(&s.id(i)).unwrap();
            let (status, cooling_models) = match snap.status {
                KeyStatus::Active => ("active".to_owned(), vec![]),
                KeyStatus::CoolingDown(list) => (
                    "cooling".to_owned(),
                    list.into_iter().map(|c| c.model).collect(),
                ),
                KeyStatus::Disabled(reason) => (format!("disabled: {reason}"), vec![]),
                other => (format!("{other:?}"), vec![]),
            };
            KeyState {
                status,
                cooling_models,
                consecutive_failures: snap.consecutive_failures,
                requests: snap.requests,
                successes: snap.successes,
                failures: snap.failures,
            }
        })
        .collect();
    let records = s
        .store
        .records()
        .into_iter()
        .map(|r| {
            let classes = r.attempt_log.iter().map(|a| a.class).collect();
            (r.status, r.success, r.attempts, classes)
        })
        .collect();
    Decisions {
        calls,
        keys,
        records,
    }
}

#[tokio::test]
async fn the_tower_path_and_the_middleware_path_decide_the_same() {
    let tower = run_script(Path::Tower).await;
    let middleware = run_script(Path::Middleware).await;
    // Not a tautology: the script exercises every kind of decision.
    assert!(tower.calls.iter().any(|(_, attempts, _)| *attempts >= 2));
    assert!(tower.keys.iter().any(|k| k.status.starts_with("disabled")));
    assert!(tower.keys.iter().any(|k| k.status == "cooling"));
    assert!(tower.keys.iter().any(|k| k.consecutive_failures > 0));
    assert_eq!(tower, middleware);
}

/// A refused connection is the network's fault, not the key's: both paths retry on the same key
/// (the `AttemptContext` the key layer or middleware leaves says so) and blame no key.
#[tokio::test]
async fn a_refused_connection_is_retried_on_the_same_key_on_both_paths() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let path = format!("/v1beta/models/{FLASH}:generateContent");
    let mut requests_per_path = Vec::new();
    for client_path in PATHS {
        let keys = test_keys(3);
        let pool = KeyPool::builder().keys(&keys).build().unwrap();
        let http = support::client_builder().build().unwrap();
        let failed = match client_path {
            Path::Tower => {
                let stack = ServiceBuilder::new()
                    .layer(fast_retry())
                    .layer(KeyRotationLayer::new(pool.clone()))
                    .service(ReqwestService::new(http).base_url(&closed).unwrap());
                let req = http::Request::post(path.as_str())
                    .body(reqwest::Body::from(prompt_body("hello?")))
                    .unwrap();
                stack.oneshot(req).await.is_err()
            }
            Path::Middleware => {
                let client = reqwest_middleware::ClientBuilder::new(http)
                    .with(RetryMiddleware::from(fast_retry()))
                    .with(KeyRotationMiddleware::new(pool.clone()))
                    .build();
                client
                    .post(format!("{closed}{path}"))
                    .body(prompt_body("hello?"))
                    .send()
                    .await
                    .is_err()
            }
        };
        assert!(
            failed,
            "{client_path:?}: the transport error reaches the caller"
        );
        let snapshots = pool.snapshots();
        let requests: Vec<u64> = snapshots.iter().map(|k| k.requests).collect();
        assert_eq!(
            requests,
            [3, 0, 0],
            "{client_path:?}: all attempts on the same key"
        );
        assert!(snapshots
            .iter()
            .all(|k| k.consecutive_failures == 0 && k.status == KeyStatus::Active));
        requests_per_path.push(requests);
    }
    assert_eq!(requests_per_path[0], requests_per_path[1]);
}

#[tokio::test]
async fn a_call_dropped_before_its_answer_is_recorded_on_both_paths() {
    for path in PATHS {
        let s = setup(path, 1).await;
        s.mock
            .set_fault(s.key(0), Fault::Slow(Duration::from_secs(5)));
        // The caller gives up long before the upstream answers.
        let gave_up =
            tokio::time::timeout(Duration::from_millis(200), s.generate(FLASH, "too slow")).await;
        assert!(
            gave_up.is_err(),
            "{path:?}: the call should still be running"
        );

        let records = s.store.records();
        assert_eq!(records.len(), 1, "{path:?}: one record, not none");
        let r = &records[0];
        assert_eq!(r.completion, Completion::ClientGone, "{path:?}");
        assert!(!r.success, "{path:?}");
        assert_eq!(r.model.as_deref(), Some(FLASH), "{path:?}");
    }
}

#[tokio::test]
async fn the_middleware_chain_reads_model_and_flavour_from_one_request_description() {
    use gemini_balance::api_error::ApiFlavor;
    use gemini_balance::ext::ModelName;

    let s = setup(Path::Middleware, 1).await;
    s.pool.disable(&s.id(0));
    let client = reqwest_middleware::ClientBuilder::new(s.http.clone())
        .with(UsageMiddleware::new(s.store.clone()))
        .with(RetryMiddleware::from(s.retry.clone()))
        .with(KeyRotationMiddleware::new(s.pool.clone()))
        .build();
    // A Gemini path, but the caller says the model and the API flavour in extensions: the usage
    // record and the key layer's local answer both follow them.
    let res = client
        .post(format!(
            "{}/v1beta/models/{FLASH}:generateContent",
            s.mock.base_url()
        ))
        .with_extension(ModelName::new(FLASH_25))
        .with_extension(ApiFlavor::OpenAi)
        .header(header::CONTENT_TYPE, "application/json")
        .body(prompt_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert!(
        body["error"]["type"].is_string() && body["error"].get("status").is_none(),
        "an OpenAI-format error: {body}"
    );
    let r = s.last_record();
    assert_eq!(r.model.as_deref(), Some(FLASH_25));
    assert_eq!(r.protocol, ApiFlavor::OpenAi);
    assert_eq!(s.mock.requests(s.key(0)), 0);
}
