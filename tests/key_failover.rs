//! A rate-limited, invalid or suspended key says nothing about the request: moving to another
//! key after one must not spend the request's attempts. Over loopback against the mock Gemini of
//! `tests/support`, through both client paths:
//!
//! ```text
//! tower:      Retry ─▶ KeyRotation ─▶ ReqwestService ─▶ mock Gemini
//! middleware: ClientWithMiddleware[RetryMiddleware, KeyRotationMiddleware] ─▶ mock Gemini
//! ```
#![cfg(feature = "middleware")]

use std::time::Duration;

use bytes::Bytes;
use gemini_balance::client::{KeyRotationMiddleware, ReqwestService, RetryMiddleware};
use gemini_balance::keys::{ApiKey, KeyPool, KeyRotationLayer};
use gemini_balance::retry::{RetryLayer, ATTEMPTS_HEADER};
use http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;
use support::{permutations, prompt_body, test_key, Fault, MockGemini};
use tower::{ServiceBuilder, ServiceExt};

const FLASH: &str = "gemini-2.0-flash";

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

    fn retry_after(&self) -> Option<u64> {
        self.headers
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().parse().unwrap())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

/// `max_attempts` 3 (the proxy's `MAX_RETRIES` default), short backoffs.
fn retry() -> RetryLayer {
    RetryLayer::new()
        .max_attempts(3)
        .base_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(5))
}

/// One generateContent call with a fresh stack over `pool`, on `path`.
async fn generate(path: Path, mock: &MockGemini, pool: &KeyPool, retry: &RetryLayer) -> Answer {
    let url_path = format!("/v1beta/models/{FLASH}:generateContent");
    let http = support::client_builder().build().unwrap();
    match path {
        Path::Tower => {
            let stack = ServiceBuilder::new()
                .layer(retry.clone())
                .layer(KeyRotationLayer::new(pool.clone()))
                .service(
                    ReqwestService::new(http)
                        .base_url(&mock.base_url())
                        .unwrap(),
                );
            let req = http::Request::post(url_path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(reqwest::Body::from(prompt_body("hello")))
                .unwrap();
            let (parts, body) = stack.oneshot(req).await.unwrap().into_parts();
            Answer {
                status: parts.status,
                headers: parts.headers,
                body: body.collect().await.unwrap().to_bytes(),
            }
        }
        Path::Middleware => {
            let client = reqwest_middleware::ClientBuilder::new(http)
                .with(RetryMiddleware::from(retry.clone()))
                .with(KeyRotationMiddleware::new(pool.clone()))
                .build();
            let res = client
                .post(format!("{}{url_path}", mock.base_url()))
                .header(header::CONTENT_TYPE, "application/json")
                .body(prompt_body("hello"))
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

fn pool_of(keys: &[String]) -> KeyPool {
    KeyPool::builder().keys(keys).build().unwrap()
}

/// Keys 1–3 are broken, each its own way, as Gemini answers them; key 4 is good.
fn break_keys(mock: &MockGemini) -> [String; 3] {
    let broken = [test_key(1), test_key(2), test_key(3)];
    mock.set_fault(&broken[0], Fault::InvalidKey);
    mock.set_fault(&broken[1], Fault::rate_limited("37s"));
    mock.set_fault(&broken[2], Fault::Suspended);
    broken
}

#[tokio::test]
async fn every_key_order_is_served_while_a_good_key_exists() {
    let mock = MockGemini::start().await;
    let broken = break_keys(&mock);
    let good = test_key(4);
    let orders = permutations(&[
        broken[0].clone(),
        broken[1].clone(),
        broken[2].clone(),
        good.clone(),
    ]);
    assert_eq!(orders.len(), 24);
    for path in PATHS {
        for order in &orders {
            mock.reset_counters();
            let pool = pool_of(order);
            // Round robin: four requests start at each position of the order once.
            let mut attempts = Vec::new();
            for _ in 0..4 {
                let res = generate(path, &mock, &pool, &retry()).await;
                assert_eq!(
                    res.status,
                    StatusCode::OK,
                    "{path:?} {order:?}: {}",
                    res.text()
                );
                attempts.push(res.attempts());
            }
            for key in &broken {
                assert_eq!(mock.requests(key), 1, "{path:?} {order:?}: {key}");
            }
            assert_eq!(mock.requests(&good), 4, "{path:?} {order:?}");
            assert_eq!(attempts.iter().sum::<u32>(), 7, "{path:?} {order:?}");
        }
    }
}

#[tokio::test]
async fn with_every_key_broken_the_client_gets_the_last_upstream_answer() {
    let mock = MockGemini::start().await;
    let broken = break_keys(&mock);
    mock.set_fault(&test_key(4), Fault::InvalidKey);
    // Four broken keys, three attempts allowed: the suspended key is met last.
    let order = [
        broken[0].clone(),
        broken[1].clone(),
        test_key(4),
        broken[2].clone(),
    ];
    for path in PATHS {
        mock.reset_counters();
        let pool = pool_of(&order);
        let res = generate(path, &mock, &pool, &retry()).await;
        // Gemini's 403, not a 5xx or a "no key" of ours.
        assert_eq!(
            res.status,
            StatusCode::FORBIDDEN,
            "{path:?}: {}",
            res.text()
        );
        assert_eq!(res.attempts(), 4, "{path:?}");
        assert!(res.text().contains("CONSUMER_SUSPENDED"), "{path:?}");
        assert!(res.text().contains("has been suspended"), "{path:?}");
        let mask = ApiKey::new(&broken[2]).unwrap().id().mask().to_string();
        assert!(res.text().contains(&mask), "{path:?}: {}", res.text());
        assert!(
            !res.text().contains(&broken[2]),
            "{path:?}: the key is redacted"
        );
        // The soonest key back (the rate-limited one) is said.
        let retry_after = res.retry_after().expect("Retry-After");
        assert!((36..=37).contains(&retry_after), "{path:?}: {retry_after}");
        for key in &order {
            assert_eq!(mock.requests(key), 1, "{path:?}: {key}");
        }
    }
}

#[tokio::test]
async fn real_retries_still_stop_at_max_attempts() {
    let mock = MockGemini::start().await;
    let keys: Vec<String> = (1..=5).map(test_key).collect();
    mock.set_fault(&keys[0], Fault::InvalidKey);
    for key in &keys[1..] {
        mock.set_fault(key, Fault::ServerError);
    }
    for path in PATHS {
        mock.reset_counters();
        let pool = pool_of(&keys);
        let res = generate(path, &mock, &pool, &retry()).await;
        assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR, "{path:?}");
        // The rejected key costs nothing; the three 500s are the three attempts.
        assert_eq!(res.attempts(), 4, "{path:?}");
        let server_errors: u64 = keys.iter().map(|k| mock.status_count(k, 500)).sum();
        assert_eq!(server_errors, 3, "{path:?}");
        assert_eq!(mock.requests(&keys[4]), 0, "{path:?}");
    }
}

#[tokio::test]
async fn the_key_failover_cap_holds() {
    let mock = MockGemini::start().await;
    let keys: Vec<String> = (1..=20).map(test_key).collect();
    for key in &keys {
        mock.set_fault(key, Fault::InvalidKey);
    }
    for path in PATHS {
        mock.reset_counters();
        let pool = pool_of(&keys);
        let capped = retry().max_key_failovers(10);
        let res = generate(path, &mock, &pool, &capped).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{path:?}");
        // Ten free failovers, then key failures count: three attempts more.
        assert_eq!(res.attempts(), 13, "{path:?}");
        assert_eq!(mock.total(), 13, "{path:?}");

        // With no free failover, a key failure is an attempt like any other.
        mock.reset_counters();
        let pool = pool_of(&keys);
        let res = generate(path, &mock, &pool, &retry().max_key_failovers(0)).await;
        assert_eq!(res.attempts(), 3, "{path:?}");
        assert_eq!(mock.total(), 3, "{path:?}");
    }
}

#[tokio::test]
async fn a_bare_403_counts_so_one_request_cannot_disable_the_pool() {
    // A 403 with no reason about the key may be the request's doing: each one disables the key
    // it met, so it must not be a free failover.
    let mock = MockGemini::start().await;
    let keys: Vec<String> = (1..=20).map(test_key).collect();
    for key in &keys {
        mock.set_fault(key, Fault::PermissionDenied);
    }
    for path in PATHS {
        mock.reset_counters();
        let pool = pool_of(&keys);
        let res = generate(path, &mock, &pool, &retry()).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{path:?}");
        assert_eq!(res.attempts(), 3, "{path:?}: max_attempts bounds it");
        assert_eq!(mock.total(), 3, "{path:?}");
        let disabled = pool
            .snapshots()
            .iter()
            .filter(|k| !k.status.is_serving())
            .count();
        assert_eq!(disabled, 3, "{path:?}");
    }
}

#[tokio::test]
async fn the_429_that_discovers_a_quota_says_when_to_come_back() {
    let mock = MockGemini::start().await;
    mock.set_fault(&test_key(1), Fault::rate_limited("37s"));
    // No retry at all: the client gets the upstream's 429 itself.
    let no_retry = RetryLayer::new().max_attempts(1).max_key_failovers(0);
    for path in PATHS {
        mock.reset_counters();
        let pool = pool_of(&[test_key(1), test_key(2)]);
        let res = generate(path, &mock, &pool, &no_retry).await;
        assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{path:?}");
        assert_eq!(res.attempts(), 1, "{path:?}");
        assert!(res.text().contains("RESOURCE_EXHAUSTED"), "{path:?}");
        assert_eq!(res.retry_after(), Some(37), "{path:?}: from RetryInfo");
    }
}
