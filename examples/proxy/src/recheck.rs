//! Key probes: the periodic re-check (`CHECK_INTERVAL_HOURS`, `TEST_MODEL`) of keys that are
//! disabled or have counted failures, and the admin API's verify. A probe is a one-word
//! request with the key; its outcome is reported to the pool, so a key that answers comes back
//! and a key the upstream rejects is taken out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, Method, Request, Uri};
use gemini_balance::classify::{classify_any_error, Classifier, Outcome};
use gemini_balance::keys::{KeyId, KeyPool};
use serde::Serialize;
use tower::ServiceExt;

use crate::state::App;
use crate::upstream::Upstream;

const PROBE: &str = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":1}}"#;

/// What one probe found. Holds no secret (the upstream's message is redacted).
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub id: String,
    pub mask: String,
    pub ok: bool,
    /// The upstream's status; none when it could not be reached.
    pub status: Option<u16>,
    /// The failure class.
    pub class: Option<String>,
    /// The upstream's error message, or why it could not be reached.
    pub message: Option<String>,
    pub latency_ms: u64,
}

/// Probes one key with `test_model` and reports the outcome to the pool; `None` if the key is
/// not in the pool.
pub async fn probe(
    pool: &KeyPool,
    upstream: &Upstream,
    test_model: &str,
    id: &KeyId,
) -> Option<ProbeResult> {
    let lease = pool.probe(id)?;
    let id = lease.id().clone();
    let mut result = ProbeResult {
        id: id.hex(),
        mask: id.mask().to_owned(),
        ok: false,
        status: None,
        class: None,
        message: None,
        latency_ms: 0,
    };
    let Ok(uri) = format!("/models/{test_model}:generateContent").parse::<Uri>() else {
        result.message = Some("TEST_MODEL cannot be used in a URL".to_owned());
        return Some(result);
    };
    let mut req = Request::new(reqwest::Body::from(PROBE));
    *req.method_mut() = Method::POST;
    *req.uri_mut() = uri;
    let headers = req.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert("x-goog-api-key", lease.key().header_value().clone());
    // The probe takes the key's own route (its proxy, with PROXIES).
    req.extensions_mut().insert(id.clone());
    let started = Instant::now();
    // Decoded as the API routes' answers are: a relay may compress the probe's answer too.
    let probed = gemini_balance::decode::Decode::new(upstream.clone());
    let outcome: Outcome = match probed.oneshot(req).await {
        Ok(res) => {
            let (parts, body) = res.into_parts();
            // The classifier reads at most the start of an error body; read no more.
            let limited = http_body_util::Limited::new(body, 64 * 1024);
            let bytes = http_body_util::BodyExt::collect(limited)
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            result.status = Some(parts.status.as_u16());
            if !parts.status.is_success() {
                // Redacted whole, by bytes, before anything is cut from it: a key across the cut
                // would otherwise keep its start.
                let redacted = lease.key().secret_forms().redact(&bytes);
                let message = serde_json::from_slice::<serde_json::Value>(&redacted)
                    .ok()
                    .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| {
                        String::from_utf8_lossy(&redacted[..redacted.len().min(512)]).into_owned()
                    });
                result.message = Some(message);
            }
            Classifier::new()
                .classify(parts.status, &parts.headers, &bytes)
                .into()
        }
        Err(err) => {
            let class = classify_any_error(&err);
            result.message = Some(format!("the upstream could not be reached: {class}"));
            Outcome::Failure(class)
        }
    };
    result.latency_ms = started.elapsed().as_millis() as u64;
    result.ok = outcome.is_success();
    result.class = outcome.failure().map(|c| c.name().to_owned());
    lease.report_probe(&outcome);
    Some(result)
}

/// Probes every key that needs it, one after another; returns how many came back.
pub async fn recheck(pool: &KeyPool, upstream: &Upstream, test_model: &str) -> usize {
    let mut recovered = 0;
    for id in pool.keys_to_probe() {
        let Some(result) = probe(pool, upstream, test_model, &id).await else {
            continue; // removed meanwhile
        };
        if result.ok {
            recovered += 1;
            tracing::info!(key = %id, "key re-check: the key works again");
        } else {
            tracing::info!(
                key = %id,
                class = result.class.as_deref().unwrap_or("-"),
                "key re-check: still failing"
            );
        }
    }
    recovered
}

/// Runs [`recheck`] every CHECK_INTERVAL_HOURS (0 pauses it) until the process ends. The first
/// run is one interval after start, as in Gemini-Balance; each next one an interval after the
/// last. A change of the settings applies at once (the Python admin restarts its scheduler on
/// save): the wait is measured again from the last run with the new interval, so a run that
/// the shorter interval makes overdue starts now.
pub fn spawn(app: Arc<App>) {
    let mut changes = app.subscribe();
    tokio::spawn(async move {
        let mut last_run = tokio::time::Instant::now();
        loop {
            let due = next_run(last_run, app.live().settings.float("CHECK_INTERVAL_HOURS"));
            let wait = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = wait => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        return; // the proxy is gone
                    }
                    continue;
                }
            }
            last_run = tokio::time::Instant::now();
            let live = app.live();
            let due = app.pool.keys_to_probe().len();
            if due > 0 {
                let test_model = live.settings.text("TEST_MODEL");
                let recovered = recheck(&app.pool, &live.upstream, test_model).await;
                tracing::info!(probed = due, recovered, "key re-check done");
            }
        }
    });
}

/// When the run after `last` is due with an interval of `hours`; `None` when paused (0) or so
/// far away that it never comes.
fn next_run(last: tokio::time::Instant, hours: f64) -> Option<tokio::time::Instant> {
    if hours.is_nan() || hours <= 0.0 {
        return None;
    }
    let interval = Duration::try_from_secs_f64(hours * 3600.0).ok()?;
    last.checked_add(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_run_is_an_interval_after_the_last() {
        let last = tokio::time::Instant::now();
        assert_eq!(next_run(last, 0.5), Some(last + Duration::from_secs(1800)));
        assert_eq!(next_run(last, 0.0), None);
        assert_eq!(next_run(last, -1.0), None);
        assert_eq!(next_run(last, f64::NAN), None);
        assert_eq!(next_run(last, 1e300), None);
    }
}
