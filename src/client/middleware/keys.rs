//! [`KeyRotationMiddleware`]: the key pool as a reqwest-middleware middleware.

use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::{header, Extensions};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next, Result};
use tokio::time::Instant;

use super::{classify_error, local_response, rebuild, request_info, with_url};
use crate::classify::{Classifier, Outcome};
use crate::ext::{AttemptContext, AttemptKey};
use crate::keys::future::{error_message, redact, truncate, Attempt, MAX_ERROR_BODY};
use crate::keys::{no_key_response, ApiKey, KeyPlacement, KeyPool};
use crate::usage::AttemptLog;

/// Picks a key from a [`KeyPool`] for each attempt, injects it, strips the caller's own
/// credentials, and reports the classified answer back to the pool: the
/// [`KeyRotation`](crate::keys::KeyRotation) layer for a `ClientWithMiddleware`.
///
/// It shares everything with the tower layer: the pool (same cooldowns, same counts), the
/// [`Classifier`], the local `429`/`503` answer when no key is usable, the redaction of keys
/// quoted in error bodies, and the attempt log of a [`UsageMiddleware`](super::UsageMiddleware).
/// Error bodies (only those) are read, at most 1 MiB, to classify and redact them; the answer
/// carries the [`KeyId`](crate::keys::KeyId) and the [`Outcome`] in its extensions.
///
/// After a failed attempt it leaves an [`AttemptContext`] in the request's extensions, so that
/// a retry middleware above (this crate's [`RetryMiddleware`](super::RetryMiddleware), or
/// reqwest-retry's) gets another key when the failure was the key's, and the same key when it
/// was the network's.
#[derive(Debug, Clone)]
pub struct KeyRotationMiddleware {
    pool: KeyPool,
    placement: KeyPlacement,
    classifier: Classifier,
}

impl KeyRotationMiddleware {
    /// Rotates the keys of `pool`, injecting them as `x-goog-api-key`.
    pub fn new(pool: KeyPool) -> Self {
        KeyRotationMiddleware {
            pool,
            placement: KeyPlacement::default(),
            classifier: Classifier::new(),
        }
    }

    /// Where to put the key in upstream requests.
    pub fn placement(mut self, placement: KeyPlacement) -> Self {
        self.placement = placement;
        self
    }

    /// The classifier that judges upstream answers.
    pub fn classifier(mut self, classifier: Classifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// The pool.
    pub fn pool(&self) -> &KeyPool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl Middleware for KeyRotationMiddleware {
    async fn handle(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response> {
        let info = request_info(&req, extensions);
        let model = info.model_name().map(str::to_owned);
        let mut context = extensions
            .get::<AttemptContext>()
            .cloned()
            .unwrap_or(AttemptContext {
                number: 1,
                prefer: None,
                avoid: Vec::new(),
            });
        let lease = match self.pool.pick(model.as_deref(), Some(&context)) {
            Ok(lease) => lease,
            Err(no_key) => {
                let local = no_key_response(info.flavor, &no_key);
                return Ok(local_response(local, req.url()));
            }
        };
        if let Some(slot) = extensions.get::<AttemptKey>() {
            slot.set(lease.id().clone());
        }
        strip_client_credentials(&mut req);
        inject_key(&mut req, lease.key(), &self.placement);
        let id = lease.id().clone();
        let attempt = Attempt {
            lease,
            model,
            classifier: self.classifier.clone(),
            log: extensions.get::<AttemptLog>().cloned(),
            started: Instant::now(),
            at: SystemTime::now(),
            flavor: info.flavor,
        };

        let mut res = match next.run(req, extensions).await {
            Ok(res) => res,
            Err(err) => {
                let class = classify_error(&err);
                attempt.report(
                    &Outcome::Failure(class.clone()),
                    None,
                    Some(truncate(class.to_string())),
                );
                context.advance(&class, Some(id));
                extensions.insert(context);
                return Err(err);
            }
        };
        if crate::decode::is_encoded(res.headers()) {
            // reqwest decodes only with its own compression features on: what it left encoded
            // is decoded here, so the classifier, the redaction and the usage tap read text.
            res = decode(res);
        }
        res.extensions_mut().insert(id.clone());
        if self.classifier.is_success(res.status(), res.headers()) {
            // A stream can carry an error event that quotes the key after its 200.
            let forms = attempt.lease.key().secret_forms().clone();
            attempt.report(&Outcome::Success, Some(res.status()), None);
            res.extensions_mut().insert(Outcome::Success);
            return Ok(redacting(res, forms));
        }

        if crate::decode::is_encoded(res.headers()) {
            // An encoding nothing here can read: its bytes can be neither classified by their
            // content nor redacted, so they are not passed on.
            let url = res.url().clone();
            let (parts, _unread) = http::Response::<reqwest::Body>::from(res).into_parts();
            let local = crate::keys::future::unreadable_error_answer(parts, attempt);
            if let Some(class) = local
                .extensions()
                .get::<Outcome>()
                .and_then(Outcome::failure)
            {
                context.advance(class, Some(id));
                extensions.insert(context);
            }
            return Ok(local_response(local, &url));
        }
        let status = res.status();
        let mut body = read_error_body(&mut res).await;
        if body.len() >= MAX_ERROR_BODY {
            // Cut at the cap: an end that begins a key cannot be redacted, so it goes.
            let keep = attempt.lease.key().secret_forms().cut_partial_end(&body);
            body.truncate(keep);
        }
        let outcome: Outcome = self
            .classifier
            .classify(status, res.headers(), &body)
            .into();
        // Error bodies may quote the key: never let it reach the caller or a log.
        let body = redact(body, &attempt.lease);
        let message = attempt.log.as_ref().map(|_| error_message(&body));
        attempt.report(&outcome, Some(status), message);
        if let Some(class) = outcome.failure() {
            context.advance(class, Some(id));
            extensions.insert(context);
        }
        let mut res = rebuild(res, body);
        res.extensions_mut().insert(outcome);
        Ok(res)
    }
}

/// The answer decoded as [`DecodeLayer`](crate::decode::DecodeLayer) would decode it.
fn decode(res: Response) -> Response {
    let url = res.url().clone();
    let decoded = crate::decode::decode_response(http::Response::<reqwest::Body>::from(res));
    let (mut parts, body) = decoded.into_parts();
    with_url(&mut parts, url);
    Response::from(http::Response::from_parts(parts, reqwest::Body::wrap(body)))
}

/// The answer with its body passed through a [`RedactBody`](crate::redact::RedactBody).
fn redacting(res: Response, forms: crate::redact::SecretForms) -> Response {
    let url = res.url().clone();
    let (mut parts, body) = http::Response::<reqwest::Body>::from(res).into_parts();
    with_url(&mut parts, url);
    let body = reqwest::Body::wrap(crate::redact::RedactBody::new(body, forms));
    Response::from(http::Response::from_parts(parts, body))
}

/// Reads an error body up to [`MAX_ERROR_BODY`]; past the cap the rest is dropped.
async fn read_error_body(res: &mut Response) -> Bytes {
    let mut buf = BytesMut::new();
    while buf.len() < MAX_ERROR_BODY {
        match res.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    buf.truncate(MAX_ERROR_BODY);
    buf.freeze()
}

/// Removes every credential the caller set, so only the pool's key reaches the upstream.
fn strip_client_credentials(req: &mut Request) {
    let headers = req.headers_mut();
    headers.remove("x-goog-api-key");
    headers.remove(header::AUTHORIZATION);
    headers.remove("api-key");
    let url = req.url_mut();
    if url.query_pairs().any(|(name, _)| name == "key") {
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(name, _)| name != "key")
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
    }
}

fn inject_key(req: &mut Request, key: &ApiKey, placement: &KeyPlacement) {
    match placement {
        KeyPlacement::GoogApiKeyHeader => {
            req.headers_mut()
                .insert("x-goog-api-key", key.header_value().clone());
        }
        KeyPlacement::BearerToken => {
            req.headers_mut()
                .insert(header::AUTHORIZATION, key.bearer_value().clone());
        }
        KeyPlacement::QueryParameter => {
            req.url_mut()
                .query_pairs_mut()
                .append_pair("key", key.expose_secret());
        }
    }
}
