//! [`ParamFilterLayer`] and the [`ParamFilter`] service.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{request::Parts, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::check::{body_model, filter_value, Checked};
use super::drop_list::{DropList, DropRule};
use super::first_pass::first_pass;
use super::future::ResponseFuture;
use super::reject::{not_json, rejection};
use super::schema::Shape;
use crate::api_error::ApiFlavor;
use crate::body::ResponseBody;
use crate::buffer::{is_json_or_unlabelled, parse_json, Buffered};
use crate::ext::{model_from_path, ModelName, RequestInfo};
use crate::order::{self, Misorder};

/// Default largest request body the filter reads: 20 MiB, like
/// [`RetryLayer`](crate::retry::RetryLayer) (inline images make Gemini requests large).
pub const DEFAULT_MAX_BODY_BYTES: usize = 20 * 1024 * 1024;

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) drops: DropList,
    pub(crate) max_body_bytes: usize,
}

/// Applies [`ParamFilter`]. Cloning the layer shares its configuration.
#[derive(Debug, Clone)]
pub struct ParamFilterLayer {
    config: Arc<Config>,
}

impl Default for ParamFilterLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ParamFilterLayer {
    /// Drops nulls, coerces and checks every guarded request; removes nothing else until
    /// [drop rules](Self::drop) say so. Bodies up to 20 MiB.
    pub fn new() -> Self {
        ParamFilterLayer {
            config: Arc::new(Config {
                drops: DropList::new(),
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            }),
        }
    }

    /// Also removes the fields of `rule` (for its models and routes).
    pub fn drop(mut self, rule: DropRule) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.drops = std::mem::take(&mut config.drops).rule(rule);
        self
    }

    /// Replaces every drop rule.
    pub fn drop_list(mut self, list: DropList) -> Self {
        Arc::make_mut(&mut self.config).drops = list;
        self
    }

    /// Largest body read; larger guarded requests get a 413 in the API's error format.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).max_body_bytes = bytes;
        self
    }
}

impl<S> Layer<S> for ParamFilterLayer {
    type Service = ParamFilter<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ParamFilter {
            inner,
            config: self.config.clone(),
        }
    }
}

/// Filters the JSON bodies of the requests it knows; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct ParamFilter<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> ParamFilter<S> {
    /// Wraps `inner` with the default configuration.
    pub fn new(inner: S) -> Self {
        ParamFilterLayer::new().layer(inner)
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ParamFilter<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ReqBody: http_body::Body<Data = Bytes> + From<Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // Below the key layer is the worse mistake (a refusal waits for a free key), so it is
        // the one reported when the filter is below both.
        if !order::below_key_rotation(req.extensions(), Misorder::FilterInsideKeyRotation) {
            order::below_retry(req.extensions(), Misorder::FilterInsideRetry);
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let info = RequestInfo::attach(&mut req);
        let shape =
            Shape::of_operation(info.operation).filter(|_| req.method() == http::Method::POST);
        let Some(shape) = shape.filter(|_| is_json_or_unlabelled(req.headers())) else {
            return ResponseFuture::inner(inner.call(req));
        };
        let flavor = info.flavor;
        ResponseFuture::reading(req, inner, self.config.clone(), shape, flavor)
    }
}

/// The body's `model` becomes the request's `ModelName` extension when it has none (for
/// per-model key cooldowns).
fn note_body_model(parts: &mut Parts, body_model: Option<&str>) {
    if let Some(name) = body_model {
        if parts.extensions.get::<ModelName>().is_none() {
            let name = ModelName::new(name);
            parts.extensions.insert(name.clone());
            RequestInfo::update(parts, |info| info.model = Some(name));
        }
    }
}

/// The model a request is for: the `ModelName` extension, else the one in the path, else the
/// body's `model`.
fn request_model<'a>(parts: &'a Parts, body_model: Option<&'a str>) -> Option<&'a str> {
    parts
        .extensions
        .get::<ModelName>()
        .map(|m| m.as_str())
        .or_else(|| model_from_path(parts.uri.path()))
        .or(body_model)
}

/// Why the filter answered a request itself: the answer, and the reason recorded with it.
pub(crate) type Refusal = (Box<Response<Bytes>>, &'static str);

/// What to do with a body read whole: forward it (filtered, with its parse when one was made),
/// or answer with this refusal.
pub(crate) fn decide(
    parts: &mut Parts,
    mut body: Buffered,
    shape: Shape,
    config: &Config,
    flavor: ApiFlavor,
) -> Result<Buffered, Refusal> {
    let parsed = match body.take_json() {
        // A layer above parsed it: the walk below costs no parse.
        Some(value) => Ok(value),
        None => {
            // Most bodies need nothing: say so without building them (see `first_pass`).
            if let Some(clean) = first_pass(body.bytes(), shape) {
                note_body_model(parts, clean.model.as_deref());
                let model = request_model(parts, clean.model.as_deref());
                if config.drops.paths_for(shape, model).next().is_none() {
                    return Ok(body);
                }
            }
            parse_json(body.bytes())
        }
    };
    let mut value = match parsed {
        Ok(value) => value,
        // Behind an OpenAI route is Gemini (converted to, or its OpenAI-compatible endpoint),
        // which would answer the syntax error in its own format: answer it here, in OpenAI's.
        Err(e) if flavor == ApiFlavor::OpenAi => {
            tracing::info!(
                route = shape.name(),
                "request refused: the body is not JSON"
            );
            return Err((Box::new(not_json(flavor, &e)), "request body is not JSON"));
        }
        // Gemini's own API answers it, in Gemini's format.
        Err(_) => return Ok(body),
    };
    let body_model = body_model(&value, shape).map(str::to_owned);
    note_body_model(parts, body_model.as_deref());
    let model = request_model(parts, body_model.as_deref()).map(str::to_owned);
    match filter_value(&mut value, shape, model.as_deref(), &config.drops) {
        // The parse stays with the body, for the layers below (the OpenAI conversion).
        Checked::Unchanged => Ok(body.with_json(value)),
        Checked::Changed => match serde_json::to_vec(&value) {
            Ok(out) => {
                tracing::debug!(
                    route = shape.name(),
                    before = body.len(),
                    after = out.len(),
                    "request body rewritten"
                );
                Ok(Buffered::rewritten(
                    &mut parts.headers,
                    Bytes::from(out),
                    Some(value),
                ))
            }
            Err(_) => Ok(body),
        },
        Checked::Invalid { violations, more } => {
            let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
            tracing::info!(
                route = shape.name(),
                ?fields,
                "request refused: invalid parameters"
            );
            Err((
                Box::new(rejection(flavor, &violations, more)),
                "invalid request parameters",
            ))
        }
    }
}
