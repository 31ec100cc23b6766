//! Key probes: the periodic re-check (`CHECK_INTERVAL_HOURS`, `TEST_MODEL`) of keys that are
//! disabled or have counted failures, and the admin API's verify, with the library's
//! [`KeyProbe`]. What is left here is the settings: the interval and the model are read again
//! after every configuration change.

use std::sync::Arc;
use std::time::Duration;

use gemini_balance::decode::Decode;
use gemini_balance::keys::probe::{KeyProbe, ProbeReport};
use gemini_balance::keys::{KeyId, KeyPool};
use serde::Serialize;

use crate::state::App;
use crate::upstream::Upstream;

/// What one probe found, as the admin API shows it. Holds no secret.
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

impl From<ProbeReport> for ProbeResult {
    fn from(report: ProbeReport) -> Self {
        ProbeResult {
            id: report.id.hex(),
            mask: report.id.mask().to_owned(),
            ok: report.outcome.is_success(),
            status: report.status.map(|s| s.as_u16()),
            class: report.outcome.failure().map(|c| c.name().to_owned()),
            message: report.message,
            latency_ms: u64::try_from(report.latency.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// The probe of the pool's keys through `upstream` with `test_model`: BASE_URL carries the API
/// version; answers are decoded as the API routes' are (a relay may compress them too).
pub fn prober(
    pool: &KeyPool,
    upstream: &Upstream,
    test_model: &str,
) -> KeyProbe<Decode<Upstream>, reqwest::Body> {
    KeyProbe::new(pool.clone(), Decode::new(upstream.clone()), test_model)
        .gemini_prefix("")
        .request_body()
}

/// Probes one key with `test_model` and reports the outcome to the pool; `None` if the key is
/// not in the pool.
pub async fn probe(
    pool: &KeyPool,
    upstream: &Upstream,
    test_model: &str,
    id: &KeyId,
) -> Option<ProbeResult> {
    prober(pool, upstream, test_model)
        .probe(id)
        .await
        .map(ProbeResult::from)
}

/// Runs a re-check ([`KeyProbe::recheck`]) every CHECK_INTERVAL_HOURS (0 pauses it) until the process ends. The first
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
            if !app.pool.keys_to_probe().is_empty() {
                let test_model = live.settings.text("TEST_MODEL");
                let done = prober(&app.pool, &live.upstream, test_model)
                    .recheck()
                    .await;
                tracing::info!(
                    probed = done.probed,
                    recovered = done.recovered,
                    "key re-check done"
                );
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
