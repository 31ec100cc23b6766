//! [`KeyRotationMiddleware`]: the key pool as a reqwest-middleware middleware.

use bytes::{Bytes, BytesMut};
use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next, Result};
use tracing::Instrument;

use super::{classify_error, local_response, rebuild, request_info, with_url};
use crate::classify::{Classifier, Outcome};
use crate::ext::AttemptContext;
use crate::keys::future::MAX_ERROR_BODY;
use crate::keys::{
    no_key_response, unreadable_error_answer, Attempt, KeyPlacement, KeyPool, UpstreamRequest,
    Verdict,
};

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
/// Lease, credential stripping, key placement, judging, reporting, redaction and the `DEBUG`
/// span `attempt` per attempt are the tower layer's own code (one core, shared with
/// [`KeyProbe`](crate::keys::probe::KeyProbe) too).
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
        let attempt =
            match Attempt::begin(&self.pool, model, extensions, &self.classifier, info.flavor) {
                Ok(attempt) => attempt,
                Err(no_key) => {
                    let local = no_key_response(info.flavor, &no_key);
                    return Ok(local_response(local, req.url()));
                }
            };
        attempt.prepare(&mut req, &self.placement);
        let id = attempt.lease.id().clone();
        let mut context = extensions
            .get::<AttemptContext>()
            .cloned()
            .unwrap_or(AttemptContext {
                number: 1,
                prefer: None,
                avoid: Vec::new(),
            });
        let span = attempt.span(context.number);

        let result = next.run(req, extensions).instrument(span).await;
        let mut res = match result {
            Ok(res) => res,
            Err(err) => {
                let class = classify_error(&err);
                attempt.failed(&class);
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
        let verdict = attempt.judge_head(
            res.status(),
            res.headers(),
            res.extensions().get::<Outcome>(),
        );
        res.extensions_mut().insert(id.clone());
        let (res, outcome) = match verdict {
            Verdict::Local(local) => {
                res.extensions_mut().insert(local);
                return Ok(res);
            }
            Verdict::Success(forms) => {
                res.extensions_mut().insert(Outcome::Success);
                return Ok(redacting(res, forms));
            }
            Verdict::Unreadable(attempt) => {
                // An encoding nothing here can read.
                let url = res.url().clone();
                let (parts, _unread) = http::Response::<reqwest::Body>::from(res).into_parts();
                let local = unreadable_error_answer(parts, attempt);
                let outcome = local.extensions().get::<Outcome>().cloned();
                (local_response(local, &url), outcome)
            }
            Verdict::ReadError(attempt) => {
                let status = res.status();
                let body = read_error_body(&mut res).await;
                let cut = body.len() >= MAX_ERROR_BODY;
                let (outcome, body) = attempt.error_answer(status, res.headers(), body, cut);
                let mut res = rebuild(res, body);
                res.extensions_mut().insert(outcome.clone());
                (res, Some(outcome))
            }
        };
        // For a retry above (reqwest-retry's too): another key after the key's failure, the
        // same after the network's.
        if let Some(class) = outcome.as_ref().and_then(Outcome::failure) {
            context.advance(class, Some(id));
            extensions.insert(context);
        }
        Ok(res)
    }
}

impl UpstreamRequest for Request {
    fn headers_mut(&mut self) -> &mut http::HeaderMap {
        self.headers_mut()
    }

    fn remove_key_param(&mut self) {
        let url = self.url_mut();
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

    fn append_key_param(&mut self, secret: &str) {
        self.url_mut().query_pairs_mut().append_pair("key", secret);
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
