//! `GET /health/ready`, the readiness probe: `200` when this instance can serve, that is when
//! its store takes writes and at least one key serves; `503` otherwise, with what failed.
//! `/health` stays the liveness probe (`200` while the process answers, `{"status":"healthy"}`
//! as Gemini-Balance's).
//!
//! The store check is real, and bounded: the store is asked to take a write (SQLite's write
//! lock through its writer thread; on PostgreSQL or MySQL a statement that needs write access,
//! see `check_writable` in the library) on Tokio's blocking pool, and an answer that takes
//! longer than [`LIMIT`] counts as a failure. A check that has not answered yet is waited for
//! again by the next probe rather than started anew, so a store that hangs holds one blocking
//! thread, not one per probe; and a result is reused for [`REUSE`], so that probing often
//! costs the store nothing more. Neither answer names a key or the database's address.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Response, StatusCode};
use axum::response::IntoResponse;
use gemini_balance::keys::KeyPool;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::store::SharedStore;

/// How long the store may take to show it takes writes.
pub const LIMIT: Duration = Duration::from_secs(1);
/// How long a result is given again without asking the store.
pub const REUSE: Duration = Duration::from_secs(1);

/// The readiness probe's state (one per process).
#[derive(Default)]
pub struct Readiness {
    probe: tokio::sync::Mutex<Probe>,
}

#[derive(Default)]
struct Probe {
    /// A check that did not answer within the limit, still running.
    pending: Option<JoinHandle<Result<(), String>>>,
    last: Option<(Instant, Result<(), String>)>,
}

impl Readiness {
    /// `Ok` when the store took a write within [`LIMIT`]; otherwise why not (for the client:
    /// the store's own error is logged, not answered).
    pub async fn store(&self, store: &SharedStore) -> Result<(), String> {
        let mut probe = self.probe.lock().await;
        if let Some((at, result)) = &probe.last {
            if at.elapsed() < REUSE {
                return result.clone();
            }
        }
        // The check stays in `pending` until it ends: a probe whose client goes away while
        // waiting (its future dropped) leaves it there for the next one, never a second check.
        if probe.pending.is_none() {
            let store = store.clone();
            probe.pending = Some(tokio::task::spawn_blocking(move || {
                store.check_writable().map_err(|e| e.to_string())
            }));
        }
        let outcome = match probe.pending.as_mut() {
            Some(task) => tokio::time::timeout(LIMIT, task).await,
            None => return Err("the store check could not start".to_owned()),
        };
        if outcome.is_ok() {
            probe.pending = None;
        }
        let result = match outcome {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "readiness: the store does not take writes");
                Err("the store does not take writes (the log says why)".to_owned())
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: the store check failed");
                Err("the store check failed (the log says why)".to_owned())
            }
            Err(_) => Err(format!(
                "the store did not take a write within {} s",
                LIMIT.as_secs()
            )),
        };
        probe.last = Some((Instant::now(), result.clone()));
        result
    }

    /// The probe's answer.
    pub async fn answer(&self, store: &SharedStore, pool: &KeyPool) -> Response<Body> {
        let store = self.store(store).await;
        let snapshots = pool.snapshots();
        let usable = snapshots.iter().filter(|s| s.status.is_serving()).count();
        let keys_error = if snapshots.is_empty() {
            Some("no API keys are configured")
        } else if usable == 0 {
            Some("no key is usable: every key is disabled or cooling down")
        } else {
            None
        };
        let ready = store.is_ok() && keys_error.is_none();
        let mut store_check = json!({ "ok": store.is_ok() });
        if let Err(e) = &store {
            store_check["error"] = json!(e);
        }
        let mut keys_check = json!({
            "ok": keys_error.is_none(),
            "usable": usable,
            "total": snapshots.len(),
        });
        if let Some(e) = keys_error {
            keys_check["error"] = json!(e);
        }
        let body = json!({
            "status": if ready { "ready" } else { "not_ready" },
            "checks": { "store": store_check, "keys": keys_check },
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, axum::Json(body)).into_response()
    }
}
