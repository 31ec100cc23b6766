//! [`KeyRotationLayer`] and the [`KeyRotation`] service.

use std::task::{Context, Poll};

use http::{header, HeaderValue, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::attempt::Attempt;
use super::future::ResponseFuture;
use super::pool::KeyPool;
use super::status::NoKey;
use crate::api_error::{error_response, ApiFlavor};
use crate::body::ResponseBody;
#[cfg(feature = "grpc")]
use crate::classify::grpc_details::{percent_encode, status_details_bin};
use crate::classify::{Classifier, FailureClass, Outcome};
use crate::ext::{request_model, AttemptContext, Protocol, RequestInfo};

/// Where the key goes in the upstream request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KeyPlacement {
    /// `x-goog-api-key: <key>` (default; keeps keys out of URLs, which error messages echo).
    #[default]
    GoogApiKeyHeader,
    /// `Authorization: Bearer <key>`, for OpenAI-style upstreams.
    BearerToken,
    /// `?key=<key>` in the query string; only for upstreams that accept nothing else.
    QueryParameter,
}

/// Applies [`KeyRotation`]: picks a key from a [`KeyPool`] per attempt.
///
/// Cloning the layer shares its pool.
#[derive(Debug, Clone)]
pub struct KeyRotationLayer {
    pool: KeyPool,
    placement: KeyPlacement,
    classifier: Classifier,
}

impl KeyRotationLayer {
    /// Rotates the keys of `pool`, injecting them as `x-goog-api-key`.
    pub fn new(pool: KeyPool) -> Self {
        KeyRotationLayer {
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

    /// The classifier that judges upstream answers (share it with the retry layer).
    pub fn classifier(mut self, classifier: Classifier) -> Self {
        self.classifier = classifier;
        self
    }
}

impl<S> Layer<S> for KeyRotationLayer {
    type Service = KeyRotation<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyRotation {
            inner,
            pool: self.pool.clone(),
            placement: self.placement.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// Picks a key per request, injects it, strips client credentials, reports the outcome.
///
/// The request passed to the inner service carries the chosen [`KeyId`](super::KeyId) in its
/// extensions, so that the upstream service can act on the key without reading the secret
/// (for example, send each key's traffic through its own outbound proxy). Responses carry the chosen [`KeyId`](super::KeyId) and the classified [`Outcome`] in their
/// extensions. When no key is usable the service answers at once in the API's error format:
/// `429` with `Retry-After` when keys are only cooling down, `503` when none is enabled.
///
/// Each attempt runs in a `DEBUG` span named `attempt` (target `gemini_balance::keys::layer`)
/// with the fields `number` (1 for the first attempt), `key` (the fingerprint, `AIza…x4Fq`),
/// `key_id` (the [`KeyId`](super::KeyId) in hex) and `model`: the upstream call and whatever
/// it logs are inside it. The secret is never a field.
#[derive(Debug, Clone)]
pub struct KeyRotation<S> {
    inner: S,
    pool: KeyPool,
    placement: KeyPlacement,
    classifier: Classifier,
}

impl<S> KeyRotation<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, pool: KeyPool) -> Self {
        KeyRotationLayer::new(pool).layer(inner)
    }

    /// The pool.
    pub fn pool(&self) -> &KeyPool {
        &self.pool
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for KeyRotation<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: std::fmt::Display + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let info = RequestInfo::attach(&mut req);
        #[cfg(not(feature = "grpc"))]
        if info.protocol == Protocol::Grpc {
            warn_grpc_without_feature();
        }
        let model = request_model(&req).map(str::to_owned);
        let flavor = info.flavor;
        let attempt = Attempt::begin(
            &self.pool,
            model,
            req.extensions(),
            &self.classifier,
            flavor,
        );
        let attempt = match attempt {
            Ok(attempt) => attempt,
            #[cfg(feature = "grpc")]
            Err(no_key) if info.protocol == Protocol::Grpc => {
                return ResponseFuture::local(
                    grpc_no_key_response(&no_key).map(ResponseBody::full),
                );
            }
            Err(no_key) => {
                let local = no_key_response(flavor, &no_key);
                return ResponseFuture::local(local.map(ResponseBody::full));
            }
        };
        attempt.prepare(&mut req, &self.placement);
        req.extensions_mut().insert(attempt.lease.id().clone());

        // One span per attempt, naming the key by its fingerprint and id (never the secret);
        // the fields are only worked out when a subscriber wants DEBUG spans of this crate.
        let number = req
            .extensions()
            .get::<AttemptContext>()
            .map_or(1, |ctx| ctx.number);
        let span = attempt.span(number);
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let future = span.in_scope(|| inner.call(req));
        ResponseFuture::called(future, attempt, span)
    }
}

/// Says once, at the first gRPC call, that the crate was built without `grpc`: the call's
/// `grpc-status` goes unread (its failures would count as successes), so the stack is wrong for
/// it rather than slightly worse.
#[cfg(not(feature = "grpc"))]
fn warn_grpc_without_feature() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "a gRPC call reached KeyRotation, but gemini-balance was built without its `grpc` \
             feature: gRPC statuses are not read, so failed calls count as successes; enable \
             the `grpc` feature (on by default)"
        );
    });
}

/// The local answer to a gRPC call when no key is usable, in gRPC: `RESOURCE_EXHAUSTED` with a
/// `RetryInfo` when keys are only cooling down, `UNAVAILABLE` when none is enabled.
#[cfg(feature = "grpc")]
fn grpc_no_key_response(no_key: &NoKey) -> Response<bytes::Bytes> {
    let (code, status, retry_after) = match no_key {
        NoKey::CoolingDown { retry_after } => (
            8u32,
            http::StatusCode::TOO_MANY_REQUESTS,
            Some(*retry_after),
        ),
        _ => (14, http::StatusCode::SERVICE_UNAVAILABLE, None),
    };
    let message = no_key.to_string();
    let mut res = Response::new(bytes::Bytes::new());
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(&message)) {
        headers.insert("grpc-message", value);
    }
    let details = status_details_bin(
        code,
        &message,
        retry_after.map(|d| std::time::Duration::from_secs(d.as_millis().div_ceil(1000) as u64)),
    );
    if let Ok(value) = HeaderValue::from_str(&details) {
        headers.insert("grpc-status-details-bin", value);
    }
    res.extensions_mut()
        .insert(Outcome::Failure(FailureClass::Local {
            status,
            reason: "no usable API key",
        }));
    res
}

/// The local answer when no key is usable: `429` with `Retry-After` when keys are only cooling
/// down, `503` when none is enabled; [`Outcome`] `Local` in its extensions.
pub(crate) fn no_key_response(flavor: ApiFlavor, no_key: &NoKey) -> Response<bytes::Bytes> {
    let (status, retry_after) = match no_key {
        NoKey::CoolingDown { retry_after } => (
            http::StatusCode::TOO_MANY_REQUESTS,
            // Whole seconds, rounded up; cooldown ends are kept to the millisecond (rounded up).
            Some(
                (retry_after.as_millis() as u64)
                    .saturating_sub(1)
                    .div_ceil(1000)
                    .max(1),
            ),
        ),
        _ => (http::StatusCode::SERVICE_UNAVAILABLE, None),
    };
    let local = error_response(flavor, status, &no_key.to_string());
    let (mut parts, body) = local.into_parts();
    if let Some(secs) = retry_after {
        parts
            .headers
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    parts
        .extensions
        .insert(Outcome::Failure(FailureClass::Local {
            status,
            reason: "no usable API key",
        }));
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_inner_service_sees_the_chosen_key_id() {
        use tower::ServiceExt;
        const SECRET: &str = "AIzaSyA1234567890abcdefghijklmnopqrstuv";
        let pool = KeyPool::builder().keys([SECRET]).build().unwrap();
        let inner = tower::service_fn(|req: Request<String>| async move {
            let seen = req.extensions().get::<super::super::KeyId>().cloned();
            Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                bytes::Bytes::from(seen.map(|id| id.hex()).unwrap_or_default()),
            )))
        });
        let res = KeyRotation::new(inner, pool)
            .oneshot(Request::new(String::new()))
            .await
            .unwrap();
        let chosen = res
            .extensions()
            .get::<super::super::KeyId>()
            .cloned()
            .unwrap();
        assert_eq!(chosen, super::super::KeyId::of(SECRET));
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body, chosen.hex().as_bytes());
    }
}
