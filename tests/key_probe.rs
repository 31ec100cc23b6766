//! `keys::probe`: one cheap request with one key, judged by the classifier and reported to the
//! pool; and the re-check of the keys that are out. Over loopback against the mock Gemini of
//! `tests/support` (through `ReqwestService`), and on tokio's paused clock for the periodic run.
#![cfg(feature = "reqwest")]

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gemini_balance::classify::{FailureClass, Outcome};
use gemini_balance::client::ReqwestService;
use gemini_balance::keys::probe::KeyProbe;
use gemini_balance::keys::{DisabledReason, KeyId, KeyPool, KeyStatus};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use support::{errors, test_key, Fault, MockGemini};
use tower::service_fn;

const MODEL: &str = "gemini-2.0-flash";

fn pool(keys: u32) -> (KeyPool, Vec<KeyId>) {
    let pool = KeyPool::builder()
        .keys((1..=keys).map(test_key))
        .build()
        .unwrap();
    let ids = pool.ids();
    (pool, ids)
}

fn prober(pool: &KeyPool, base_url: &str) -> KeyProbe<ReqwestService, Bytes> {
    let http = support::client_builder().build().unwrap();
    let upstream = ReqwestService::new(http).base_url(base_url).unwrap();
    KeyProbe::new(pool.clone(), upstream, MODEL).request_body::<Bytes>()
}

fn status(pool: &KeyPool, id: &KeyId) -> KeyStatus {
    pool.snapshot(id).unwrap().status
}

#[tokio::test]
async fn a_key_that_answers_comes_back() {
    let mock = MockGemini::start().await;
    let (pool, ids) = pool(1);
    pool.disable(&ids[0]);
    let report = prober(&pool, &mock.base_url())
        .probe(&ids[0])
        .await
        .unwrap();
    assert_eq!(report.outcome, Outcome::Success);
    assert_eq!(report.status, Some(StatusCode::OK));
    assert_eq!(report.message, None);
    assert_eq!(status(&pool, &ids[0]), KeyStatus::Active);
    assert!(pool.keys_to_probe().is_empty());
    // One request, with the key, for the probe's model.
    assert_eq!(mock.requests_for(&test_key(1), MODEL), 1);
}

#[tokio::test]
async fn a_refused_key_is_disabled_and_stays_disabled() {
    let mock = MockGemini::start().await;
    mock.set_fault(&test_key(1), Fault::InvalidKey);
    let (pool, ids) = pool(1);
    let probe = prober(&pool, &mock.base_url());
    for _ in 0..2 {
        let report = probe.probe(&ids[0]).await.unwrap();
        assert_eq!(report.status, Some(StatusCode::BAD_REQUEST));
        assert!(
            matches!(&report.outcome, Outcome::Failure(FailureClass::KeyRejected { reason, .. }) if reason == "API_KEY_INVALID"),
            "{report:?}"
        );
        // The upstream's message, without the key.
        let message = report.message.unwrap();
        assert!(message.contains("API key not valid"), "{message}");
        assert!(!message.contains(&test_key(1)), "{message}");
        assert!(
            matches!(
                status(&pool, &ids[0]),
                KeyStatus::Disabled(DisabledReason::Rejected { status: 400, .. })
            ),
            "{:?}",
            status(&pool, &ids[0])
        );
    }
}

#[tokio::test]
async fn a_rate_limited_key_cools_down() {
    let mock = MockGemini::start().await;
    mock.set_fault(&test_key(1), Fault::rate_limited("37s"));
    let (pool, ids) = pool(1);
    let report = prober(&pool, &mock.base_url())
        .probe(&ids[0])
        .await
        .unwrap();
    assert_eq!(report.status, Some(StatusCode::TOO_MANY_REQUESTS));
    assert!(
        matches!(
            report.outcome,
            Outcome::Failure(FailureClass::RateLimited { .. })
        ),
        "{report:?}"
    );
    assert!(
        matches!(status(&pool, &ids[0]), KeyStatus::CoolingDown(_)),
        "{:?}",
        status(&pool, &ids[0])
    );
}

#[tokio::test]
async fn an_unreachable_upstream_leaves_the_key_as_it_was() {
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let (pool, ids) = pool(2);
    pool.disable(&ids[0]);
    let probe = prober(&pool, &closed);
    for id in &ids {
        let before = pool.snapshot(id).unwrap();
        let report = probe.probe(id).await.unwrap();
        assert_eq!(report.status, None);
        assert!(
            matches!(
                report.outcome,
                Outcome::Failure(FailureClass::Transport { .. } | FailureClass::Timeout)
            ),
            "{report:?}"
        );
        assert!(report.message.unwrap().contains("could not be reached"));
        let after = pool.snapshot(id).unwrap();
        assert_eq!(after.status, before.status);
        assert_eq!(after.consecutive_failures, before.consecutive_failures);
        assert_eq!(after.failures, before.failures);
    }
}

#[tokio::test]
async fn a_key_not_in_the_pool_is_not_probed() {
    let mock = MockGemini::start().await;
    let (pool, ids) = pool(1);
    let (_, other) = self::pool(9);
    let probe = prober(&pool, &mock.base_url());
    assert!(probe.probe(&other[8]).await.is_none());
    assert_eq!(mock.total(), 0);
    assert!(probe.probe(&ids[0]).await.is_some());
}

#[tokio::test]
async fn the_recheck_brings_back_a_key_that_became_valid() {
    let mock = MockGemini::start().await;
    mock.set_fault(&test_key(1), Fault::InvalidKey);
    let (pool, ids) = pool(3);
    let probe = prober(&pool, &mock.base_url());
    probe.probe(&ids[0]).await.unwrap();
    assert_eq!(pool.keys_to_probe(), [ids[0].clone()]);

    // Still refused: probed, not back; the healthy keys are not probed.
    let done = probe.recheck().await;
    assert_eq!((done.probed, done.recovered), (1, 0));
    assert_eq!(mock.requests(&test_key(2)), 0);

    // The key is fixed upstream: the next re-check brings it back.
    mock.clear_faults();
    let done = probe.recheck().await;
    assert_eq!((done.probed, done.recovered), (1, 1));
    assert_eq!(status(&pool, &ids[0]), KeyStatus::Active);
    assert!(pool.keys_to_probe().is_empty());
    assert_eq!(mock.requests(&test_key(2)) + mock.requests(&test_key(3)), 0);
}

#[tokio::test(start_paused = true)]
async fn the_periodic_recheck_runs_once_an_interval() {
    let (pool, ids) = pool(1);
    let healed = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let upstream = {
        let (healed, calls) = (healed.clone(), calls.clone());
        service_fn(move |_req: Request<Full<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let healed = healed.load(Ordering::SeqCst);
            async move {
                Ok::<_, Infallible>(if healed {
                    Response::new(Full::new(Bytes::from_static(b"{}")))
                } else {
                    errors::invalid_key().response()
                })
            }
        })
    };
    pool.disable(&ids[0]);
    let hour = Duration::from_secs(3600);
    let task = tokio::spawn(KeyProbe::new(pool.clone(), upstream, MODEL).run_every(hour));

    // Nothing before the first interval has passed.
    tokio::time::sleep(hour - Duration::from_secs(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(matches!(status(&pool, &ids[0]), KeyStatus::Disabled(_)));

    // Healed: the next run brings it back; after that there is nothing to probe.
    healed.store(true, Ordering::SeqCst);
    tokio::time::sleep(hour).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(status(&pool, &ids[0]), KeyStatus::Active);
    tokio::time::sleep(hour * 3).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    task.abort();
}

/// An upstream that repeats the key it was sent in its error (as some relays do), in Gemini's
/// JSON and as plain text long enough to be cut.
fn echoing_upstream(
    json: bool,
) -> impl tower::Service<
    Request<Bytes>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |req: Request<Bytes>| async move {
        let key = req
            .headers()
            .get("x-goog-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = if json {
            serde_json::json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                "message": format!("API key not valid: {key}. Please pass a valid API key.")}})
            .to_string()
        } else {
            // The key straddles the 512-byte cut of a plain-text message.
            format!("{}{key} rejected", "x".repeat(500))
        };
        let mut res = Response::new(Full::new(Bytes::from(body)));
        *res.status_mut() = StatusCode::BAD_REQUEST;
        Ok::<_, Infallible>(res)
    })
}

#[tokio::test]
async fn a_key_the_upstream_repeats_never_reaches_the_report() {
    for json in [true, false] {
        let (pool, ids) = pool(1);
        let probe =
            KeyProbe::new(pool.clone(), echoing_upstream(json), MODEL).request_body::<Bytes>();
        let report = probe.probe(&ids[0]).await.unwrap();
        let message = report.message.expect("the upstream's message");
        let key = test_key(1);
        assert!(!message.contains(&key), "json={json}: {message}");
        // Not even the part of the key before the cut.
        assert!(!message.contains(&key[..12]), "json={json}: {message}");
        if json {
            assert!(message.contains("API key not valid"), "{message}");
        }
    }
}
