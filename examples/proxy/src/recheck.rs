//! The periodic key re-check (`CHECK_INTERVAL_HOURS`, `TEST_MODEL`): keys that are disabled or
//! have counted failures are probed with a one-word request; a key that answers comes back.

use std::time::Duration;

use axum::http::{header, HeaderValue, Method, Request, Uri};
use gemini_balance::classify::{classify_any_error, Classifier, Outcome};
use gemini_balance::keys::KeyPool;
use tower::ServiceExt;

use crate::upstream::Upstream;

const PROBE: &str = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":1}}"#;

/// Probes every key that needs it, one after another; returns how many came back.
pub async fn recheck(pool: &KeyPool, upstream: &Upstream, test_model: &str) -> usize {
    let Ok(uri) = format!("/models/{test_model}:generateContent").parse::<Uri>() else {
        tracing::warn!("TEST_MODEL cannot be used in a URL; key re-check skipped");
        return 0;
    };
    let mut recovered = 0;
    for id in pool.keys_to_probe() {
        let Some(lease) = pool.probe(&id) else {
            continue; // removed meanwhile
        };
        let mut req = Request::new(reqwest::Body::from(PROBE));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri.clone();
        let headers = req.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert("x-goog-api-key", lease.key().header_value().clone());
        // The probe takes the key's own route (its proxy, with PROXIES).
        req.extensions_mut().insert(id.clone());
        let outcome: Outcome = match upstream.clone().oneshot(req).await {
            Ok(res) => {
                let (parts, body) = res.into_parts();
                // The classifier reads at most the start of an error body; read no more.
                let limited = http_body_util::Limited::new(body, 64 * 1024);
                let bytes = http_body_util::BodyExt::collect(limited)
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                Classifier::new()
                    .classify(parts.status, &parts.headers, &bytes)
                    .into()
            }
            Err(err) => Outcome::Failure(classify_any_error(&err)),
        };
        match outcome.failure() {
            None => {
                recovered += 1;
                tracing::info!(key = %id, "key re-check: the key works again");
            }
            Some(class) => tracing::info!(key = %id, class = %class, "key re-check: still failing"),
        }
        lease.report_probe(&outcome);
    }
    recovered
}

/// Runs [`recheck`] every `interval` until the process ends (the first run one interval after
/// start, as in Gemini-Balance).
pub fn spawn(pool: KeyPool, upstream: Upstream, test_model: String, interval: Duration) {
    tokio::spawn(async move {
        let start = tokio::time::Instant::now() + interval;
        let mut ticker = tokio::time::interval_at(start, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let due = pool.keys_to_probe().len();
            if due > 0 {
                let recovered = recheck(&pool, &upstream, &test_model).await;
                tracing::info!(probed = due, recovered, "key re-check done");
            }
        }
    });
}
