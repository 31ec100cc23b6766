//! Key probes and the periodic re-check: [`KeyProbe`] asks the upstream one cheap question
//! with one key, judges the answer with the shared [`Classifier`] and reports it to the pool.
//!
//! A key the upstream refused (a `400 API_KEY_INVALID`, a `403`) is disabled and taken out of
//! rotation for good, and keys that failed too often are taken out too. The key itself may
//! heal: a billing problem is fixed, a project is re-enabled, a network path comes back. A
//! re-check probes the keys that are out or have counted failures ([`KeyPool::keys_to_probe`])
//! and brings back each one that answers, as Gemini-Balance's `CHECK_INTERVAL_HOURS` job does.
//!
//! A probe is a `generateContent` of one word with `maxOutputTokens: 1` to the model given. Its
//! outcome is reported with [`KeyLease::report_probe`](super::KeyLease::report_probe): a
//! success clears the key's failures, cooldowns and disabled state; an upstream failure is
//! recorded like any other attempt for an unknown model (a `429` cools the key down for every
//! model, a refused key stays disabled). When the upstream cannot be reached at all, that says nothing about the
//! key: nothing is reported.
//!
//! Give the probe the upstream service the rotation layer calls (it sets the key and the
//! [`KeyId`] extension itself, so an upstream that routes per key routes the probe the same
//! way). If that upstream may answer compressed, wrap it in
//! [`DecodeLayer`](crate::decode::DecodeLayer), as the serving stack does.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use gemini_balance::keys::{probe::KeyProbe, KeyPool};
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::service_fn;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = KeyPool::builder()
//!     .keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv"])
//!     .build()?;
//! let id = pool.ids()[0].clone();
//! pool.disable(&id);
//!
//! // Stands in for Gemini: the key works again.
//! let upstream = service_fn(|req: Request<Full<Bytes>>| async move {
//!     assert_eq!(req.uri().path(), "/v1beta/models/gemini-2.5-flash:generateContent");
//!     assert!(req.headers().contains_key("x-goog-api-key"));
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("{}"))))
//! });
//! let probe = KeyProbe::new(pool.clone(), upstream, "gemini-2.5-flash");
//!
//! // One re-check: every key that is out or has failures is probed.
//! let report = probe.recheck().await;
//! assert_eq!((report.probed, report.recovered), (1, 1));
//! assert!(pool.keys_to_probe().is_empty());
//!
//! // Or one key, as an admin's "verify" button does.
//! let one = probe.probe(&id).await.expect("the key is in the pool");
//! assert_eq!(one.status, Some(StatusCode::OK));
//! assert!(one.outcome.is_success());
//!
//! // In a server: re-check every 8 hours until the task is dropped or aborted.
//! let task = tokio::spawn(probe.run_every(Duration::from_secs(8 * 3600)));
//! task.abort();
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_service::Service;

use super::attempt::{error_message, inject_key, judge};
use super::{KeyId, KeyPlacement, KeyPool};
use crate::classify::{classify_any_error, Classifier, FailureClass, Outcome};

/// The probe's request body: one word, one output token.
const PROBE_BODY: &str = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"maxOutputTokens":1}}"#;

/// The most of an error answer read (the classifier reads no more than its start).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Probes keys of a pool against an upstream service; see the [module docs](self).
///
/// `B` is the body type of the probe's request (`Full<Bytes>` unless
/// [`request_body`](Self::request_body) says otherwise). Cloning shares the pool and clones the
/// upstream service.
pub struct KeyProbe<S, B = Full<Bytes>> {
    pool: KeyPool,
    upstream: S,
    model: Arc<str>,
    prefix: Arc<str>,
    placement: KeyPlacement,
    classifier: Classifier,
    body: PhantomData<fn() -> B>,
}

impl<S: Clone, B> Clone for KeyProbe<S, B> {
    fn clone(&self) -> Self {
        KeyProbe {
            pool: self.pool.clone(),
            upstream: self.upstream.clone(),
            model: self.model.clone(),
            prefix: self.prefix.clone(),
            placement: self.placement.clone(),
            classifier: self.classifier.clone(),
            body: PhantomData,
        }
    }
}

impl<S: fmt::Debug, B> fmt::Debug for KeyProbe<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyProbe")
            .field("upstream", &self.upstream)
            .field("model", &self.model)
            .field("prefix", &self.prefix)
            .field("placement", &self.placement)
            .finish_non_exhaustive()
    }
}

/// What one probe found. Holds no secret: the upstream's message is redacted of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeReport {
    /// The key probed.
    pub id: KeyId,
    /// The classified answer: what was reported to the pool, unless the upstream could not be
    /// reached ([`FailureClass::Transport`] or [`FailureClass::Timeout`] with no `status`),
    /// which is not reported.
    pub outcome: Outcome,
    /// The upstream's status; `None` when it could not be reached.
    pub status: Option<StatusCode>,
    /// The upstream's error message (Gemini's `error.message`, else the start of the body), or
    /// why it could not be reached; `None` for a success.
    pub message: Option<String>,
    /// How long the probe took.
    pub latency: Duration,
}

/// What one re-check did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecheckReport {
    /// Keys probed.
    pub probed: usize,
    /// Keys that answered and are back in rotation.
    pub recovered: usize,
}

impl<S> KeyProbe<S> {
    /// Probes the keys of `pool` through `upstream` with requests for `model`, sent to
    /// `/v1beta/models/{model}:generateContent` with the key in `x-goog-api-key`.
    pub fn new(pool: KeyPool, upstream: S, model: impl Into<String>) -> Self {
        KeyProbe {
            pool,
            upstream,
            model: model.into().into(),
            prefix: "/v1beta".into(),
            placement: KeyPlacement::default(),
            classifier: Classifier::new(),
            body: PhantomData,
        }
    }
}

impl<S, B> KeyProbe<S, B> {
    /// Sends the probe's request with a body of type `B2`, for an upstream that takes several
    /// (a `ReqwestService` takes anything `Into<reqwest::Body>`, such as `Bytes`).
    pub fn request_body<B2>(self) -> KeyProbe<S, B2> {
        KeyProbe {
            pool: self.pool,
            upstream: self.upstream,
            model: self.model,
            prefix: self.prefix,
            placement: self.placement,
            classifier: self.classifier,
            body: PhantomData,
        }
    }

    /// The path prefix of the probe request (default `/v1beta`; `""` when the upstream's base
    /// URL carries the API version).
    pub fn gemini_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.trim_end_matches('/').into();
        self
    }

    /// Where the key goes (the rotation layer's placement for this upstream).
    pub fn placement(mut self, placement: KeyPlacement) -> Self {
        self.placement = placement;
        self
    }

    /// The classifier that judges the answers (share the serving stack's).
    pub fn classifier(mut self, classifier: Classifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// The pool probed.
    pub fn pool(&self) -> &KeyPool {
        &self.pool
    }
}

impl<S, B> KeyProbe<S, B>
where
    B: From<Bytes>,
{
    /// Probes one key, whatever its state, and reports the outcome to the pool (see the
    /// [module docs](self)). `None` when the key is not in the pool.
    pub async fn probe<ResBody>(&self, id: &KeyId) -> Option<ProbeReport>
    where
        S: Service<Request<B>, Response = Response<ResBody>> + Clone,
        S::Error: std::fmt::Display + 'static,
        ResBody: http_body::Body<Data = Bytes>,
        ResBody::Error: Into<crate::BoxError>,
    {
        let lease = self.pool.probe(id)?;
        let id = lease.id().clone();
        let report = |outcome: Outcome, status, message, latency| ProbeReport {
            id: id.clone(),
            outcome,
            status,
            message,
            latency,
        };
        let path = format!("{}/models/{}:generateContent", self.prefix, self.model);
        let Ok(uri) = path.parse::<Uri>() else {
            let why = "the probe's model cannot be used in a URL";
            let outcome = Outcome::Failure(FailureClass::Local {
                status: StatusCode::BAD_REQUEST,
                reason: why,
            });
            return Some(report(outcome, None, Some(why.to_owned()), Duration::ZERO));
        };
        let mut req = Request::new(B::from(Bytes::from_static(PROBE_BODY.as_bytes())));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri;
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        inject_key(&mut req, lease.key(), &self.placement);
        // The key's own route, for an upstream that routes per key.
        req.extensions_mut().insert(id.clone());
        let started = Instant::now();
        let answer = match self.upstream.clone().oneshot(req).await {
            Ok(res) => res,
            Err(err) => {
                let class = classify_any_error(&err);
                let message = format!("the upstream could not be reached: {class}");
                // No answer says nothing about the key: nothing is reported.
                let outcome = Outcome::Failure(class);
                return Some(report(outcome, None, Some(message), started.elapsed()));
            }
        };
        let (parts, body) = answer.into_parts();
        let limit = MAX_ERROR_BODY.min(self.classifier.body_limit().max(1));
        let bytes = http_body_util::Limited::new(body, limit)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        // Classified, and redacted whole, by bytes, before anything is cut from the message: a
        // key across the cut would otherwise keep its start.
        let (outcome, redacted) = judge(
            &self.classifier,
            lease.key(),
            parts.status,
            &parts.headers,
            bytes,
            false,
        );
        let message = (!outcome.is_success()).then(|| error_message(&redacted));
        let latency = started.elapsed();
        lease.report_probe(&outcome);
        Some(report(outcome, Some(parts.status), message, latency))
    }

    /// Probes every key that is out of rotation or has counted failures
    /// ([`KeyPool::keys_to_probe`]), one after another.
    pub async fn recheck<ResBody>(&self) -> RecheckReport
    where
        S: Service<Request<B>, Response = Response<ResBody>> + Clone,
        S::Error: std::fmt::Display + 'static,
        ResBody: http_body::Body<Data = Bytes>,
        ResBody::Error: Into<crate::BoxError>,
    {
        let mut done = RecheckReport::default();
        for id in self.pool.keys_to_probe() {
            let Some(report) = self.probe(&id).await else {
                continue; // removed meanwhile
            };
            done.probed += 1;
            if report.outcome.is_success() {
                done.recovered += 1;
                tracing::info!(key = %id, "key re-check: the key works again");
            } else {
                let class = report.outcome.failure().map_or("-", FailureClass::name);
                tracing::info!(key = %id, class, "key re-check: still failing");
            }
        }
        done
    }

    /// Runs [`recheck`](Self::recheck) every `interval` (at least one second: shorter ones are
    /// raised to it), the first one an interval from now, until the future is dropped (abort
    /// the task it was spawned on to stop it, or to start again with another interval).
    pub async fn run_every<ResBody>(self, interval: Duration)
    where
        S: Service<Request<B>, Response = Response<ResBody>> + Clone,
        S::Error: std::fmt::Display + 'static,
        ResBody: http_body::Body<Data = Bytes>,
        ResBody::Error: Into<crate::BoxError>,
    {
        // A zero interval would spin while no key needs a probe.
        let interval = interval.max(Duration::from_secs(1));
        let mut next = Instant::now();
        loop {
            next = next.checked_add(interval).unwrap_or_else(far_future);
            tokio::time::sleep_until(next).await;
            if self.pool.keys_to_probe().is_empty() {
                continue;
            }
            let done = self.recheck().await;
            tracing::info!(
                probed = done.probed,
                recovered = done.recovered,
                "key re-check done"
            );
            // The next run is an interval after this one ended.
            next = Instant::now();
        }
    }
}

/// About thirty years from now: a wait that never ends in practice.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}
