//! [`FilteredModelsLayer`]: requests for a model in [`ModelRules::filtered_models`] refused
//! before anything is sent inward, for stacks that pass requests on rather than convert them
//! (Gemini's own OpenAI-compatible endpoint, the native routes).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{header, request::Parts, Method, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use tower_layer::Layer;
use tower_service::Service;

use super::models::ModelRules;
use crate::api_error::{error_response, openai_error_value, ApiFlavor};
use crate::body::ResponseBody;
use crate::buffer::{declared_length, is_json_or_unlabelled, CollectError, CollectLimited};
use crate::classify::{FailureClass, Outcome};
use crate::ext::{model_from_path, ModelName};

/// Refuses requests for a model in the rules' [`filtered_models`](ModelRules::filtered_models)
/// with a `400` in the route's error format ([`ApiFlavor::of`]) naming the model, before the
/// inner service is called (no key is used).
///
/// The model of a request is looked for everywhere the upstream could read it: the
/// [`ModelName`] extension, the path (`…/models/{model}…`, a `%`-escaped name decoded as the
/// upstream decodes it) and, for a `POST` without a model in its path, every top-level
/// `"model"` of its JSON body, whatever its `Content-Type` says (a body labelled `text/plain`
/// is still JSON to an upstream that does not look at the label). Suffixed names count as
/// their base ([`ModelRules::resolve`]).
///
/// It fails closed: a `POST` body that must be read because nothing else names the model, and
/// is not a JSON object, is refused (`415` naming its `Content-Type` when it is labelled as
/// something else than JSON, else `400`), since the model it is for cannot be checked. An
/// empty body passes. With no filtered models nothing is read: the layer costs nothing.
///
/// Unlike [`OpenAiLayer`](super::OpenAiLayer), which refuses filtered models as it converts,
/// this layer leaves the request as it is: stack it where requests are passed through.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use gemini_balance::openai::{FilteredModelsLayer, ModelRules};
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
/// });
/// let rules = ModelRules { filtered_models: vec!["gemini-2.5-pro".into()], ..Default::default() };
/// let service = ServiceBuilder::new()
///     .layer(FilteredModelsLayer::new(rules))
///     .service(upstream);
///
/// // The body's model, even in a body not labelled JSON.
/// let req = Request::post("/openai/v1/chat/completions")
///     .header("content-type", "text/plain")
///     .body(Full::new(Bytes::from(r#"{"model":"gemini-2.5-pro","messages":[]}"#)))?;
/// let res = service.clone().oneshot(req).await?;
/// assert_eq!(res.status(), StatusCode::BAD_REQUEST);
///
/// // The path's model, suffixes and all.
/// let req = Request::get("/v1beta/models/gemini-2.5-pro-non-thinking").body(Full::default())?;
/// assert_eq!(service.clone().oneshot(req).await?.status(), StatusCode::BAD_REQUEST);
///
/// // Other models go on.
/// let req = Request::post("/openai/v1/chat/completions")
///     .body(Full::new(Bytes::from(r#"{"model":"gemini-2.5-flash","messages":[]}"#)))?;
/// assert_eq!(service.oneshot(req).await?.status(), StatusCode::OK);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FilteredModelsLayer {
    rules: Arc<ModelRules>,
    max_body_bytes: usize,
}

impl FilteredModelsLayer {
    /// Refuses the rules' filtered models; bodies read up to 20 MiB.
    pub fn new(rules: ModelRules) -> Self {
        FilteredModelsLayer {
            rules: Arc::new(rules),
            max_body_bytes: crate::filter::DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Largest body read for its model; a larger one is refused with a `413`.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }
}

impl<S> Layer<S> for FilteredModelsLayer {
    type Service = FilteredModels<S>;

    fn layer(&self, inner: S) -> FilteredModels<S> {
        FilteredModels {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`FilteredModelsLayer`].
#[derive(Debug, Clone)]
pub struct FilteredModels<S> {
    inner: S,
    layer: FilteredModelsLayer,
}

impl<S> FilteredModels<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for FilteredModels<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ReqBody: http_body::Body<Data = Bytes> + From<Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = FilteredModelsFuture<S, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let rules = &self.layer.rules;
        if rules.filtered_models.is_empty() {
            return FilteredModelsFuture::inner(inner.call(req));
        }
        let flavor = ApiFlavor::of(&req);
        let named = req.extensions().get::<ModelName>();
        if let Some(name) = named {
            if let Some(refusal) = refuse_filtered(rules, name.as_str(), flavor, true) {
                return FilteredModelsFuture::local(refusal);
            }
        }
        let in_path = model_from_path(req.uri().path());
        if let Some(model) = in_path {
            if let Some(refusal) = refuse_filtered(rules, &percent_decoded(model), flavor, false) {
                return FilteredModelsFuture::local(refusal);
            }
        }
        // The body names the model when the path does not (OpenAI's routes, Gemini's
        // `cachedContents`). Read it unless a model is known and the body is not JSON (a gRPC
        // message with its `ModelName` set above).
        let read_body = req.method() == Method::POST
            && in_path.is_none()
            && (named.is_none() || is_json_or_unlabelled(req.headers()));
        if !read_body {
            return FilteredModelsFuture::inner(inner.call(req));
        }
        let limit = self.layer.max_body_bytes;
        if declared_length(req.headers()).is_some_and(|len| len > limit as u64) {
            return FilteredModelsFuture::local(too_large(flavor, limit));
        }
        let (parts, body) = req.into_parts();
        FilteredModelsFuture {
            state: State::Collecting {
                collect: CollectLimited::new(body, limit),
                parts: Some(parts),
                service: Some(inner),
                rules: self.layer.rules.clone(),
                flavor,
                limit,
            },
        }
    }
}

pin_project! {
    /// The answer of [`FilteredModels`]: the body read for its model (when it must be), then
    /// the inner service's answer, or the refusal.
    pub struct FilteredModelsFuture<S, ReqBody, B>
    where
        S: Service<Request<ReqBody>, Response = Response<B>>,
    {
        #[pin]
        state: State<S, ReqBody, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, B>
    where
        S: Service<Request<ReqBody>, Response = Response<B>>,
    {
        Collecting {
            #[pin]
            collect: CollectLimited<ReqBody>,
            parts: Option<Parts>,
            service: Option<S>,
            rules: Arc<ModelRules>,
            flavor: ApiFlavor,
            limit: usize,
        },
        Inner {
            #[pin]
            future: S::Future,
        },
        Local {
            response: Option<Response<Bytes>>,
        },
    }
}

impl<S, ReqBody, B> fmt::Debug for FilteredModelsFuture<S, ReqBody, B>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilteredModelsFuture")
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, B> FilteredModelsFuture<S, ReqBody, B>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
{
    fn inner(future: S::Future) -> Self {
        FilteredModelsFuture {
            state: State::Inner { future },
        }
    }

    fn local(response: Response<Bytes>) -> Self {
        FilteredModelsFuture {
            state: State::Local {
                response: Some(response),
            },
        }
    }
}

impl<S, ReqBody, B> Future for FilteredModelsFuture<S, ReqBody, B>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    ReqBody: From<Bytes> + http_body::Body<Data = Bytes>,
{
    type Output = Result<Response<ResponseBody<B>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { future } => {
                    let res = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(res.map(ResponseBody::inner)));
                }
                StateProj::Local { response } => {
                    return match response.take() {
                        Some(res) => Poll::Ready(Ok(res.map(ResponseBody::full))),
                        None => Poll::Pending, // polled after completion
                    };
                }
                StateProj::Collecting {
                    collect,
                    parts,
                    service,
                    rules,
                    flavor,
                    limit,
                } => {
                    let collected = ready!(collect.poll(cx));
                    let (Some(parts), Some(mut service)) = (parts.take(), service.take()) else {
                        return Poll::Pending; // polled after completion
                    };
                    let bytes = match collected {
                        Ok(bytes) => bytes,
                        Err(CollectError::TooLarge) => {
                            return Poll::Ready(Ok(
                                too_large(*flavor, *limit).map(ResponseBody::full)
                            ))
                        }
                        Err(CollectError::Read) => {
                            let res = local(
                                error_response(
                                    *flavor,
                                    StatusCode::BAD_REQUEST,
                                    "the request body could not be read",
                                ),
                                "unreadable request body",
                            );
                            return Poll::Ready(Ok(res.map(ResponseBody::full)));
                        }
                    };
                    if let Some(refusal) = check_body(rules, &parts, &bytes, *flavor) {
                        return Poll::Ready(Ok(refusal.map(ResponseBody::full)));
                    }
                    let future = service.call(Request::from_parts(parts, ReqBody::from(bytes)));
                    this.state.set(State::Inner { future });
                }
            }
        }
    }
}

/// The refusal for a body that names a filtered model, or cannot be read for its model.
fn check_body(
    rules: &ModelRules,
    parts: &Parts,
    bytes: &Bytes,
    flavor: ApiFlavor,
) -> Option<Response<Bytes>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    match serde_json::from_slice::<BodyModels>(bytes) {
        Ok(BodyModels(models)) => models
            .iter()
            .find_map(|model| refuse_filtered(rules, model, flavor, true)),
        // The model is known otherwise (and was checked): the upstream answers the body.
        Err(_) if parts.extensions.get::<ModelName>().is_some() => None,
        Err(_) => Some(not_json(parts, flavor)),
    }
}

/// A `400` naming `model` when it is filtered. `in_body`: OpenAI's `param` is `model` (the body's
/// model, or the one an outer layer read from it).
fn refuse_filtered(
    rules: &ModelRules,
    model: &str,
    flavor: ApiFlavor,
    in_body: bool,
) -> Option<Response<Bytes>> {
    let resolved = rules.resolve(model);
    if !rules.is_filtered(&resolved) {
        return None;
    }
    tracing::info!(model = %resolved.requested, "request refused: filtered model");
    let message = format!(
        "the model {} is not available on this server",
        resolved.requested
    );
    let status = StatusCode::BAD_REQUEST;
    let mut res = error_response(flavor, status, &message);
    if flavor == ApiFlavor::OpenAi && in_body {
        *res.body_mut() =
            Bytes::from(openai_error_value(status, &message, Some("model")).to_string());
    }
    Some(local(res, "filtered model"))
}

/// The refusal of a body whose model cannot be read: `415` naming a label that is not JSON,
/// else `400`.
fn not_json(parts: &Parts, flavor: ApiFlavor) -> Response<Bytes> {
    let (status, message) = if is_json_or_unlabelled(&parts.headers) {
        (
            StatusCode::BAD_REQUEST,
            "the request body is not a JSON object, so the model it is for cannot be checked"
                .to_owned(),
        )
    } else {
        let label = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim())
            .filter(|v| v.len() <= 100)
            .unwrap_or("(not readable)");
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "the request body is labelled Content-Type {label} and is not JSON: send it as \
                 application/json"
            ),
        )
    };
    tracing::info!(%status, "request refused: a body whose model cannot be read");
    local(
        error_response(flavor, status, &message),
        "request body is not JSON",
    )
}

fn too_large(flavor: ApiFlavor, limit: usize) -> Response<Bytes> {
    local(
        error_response(
            flavor,
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than the limit of {limit} bytes"),
        ),
        "request body too large",
    )
}

/// Marks an answer given here, so that the layers above record why.
fn local(mut res: Response<Bytes>, reason: &'static str) -> Response<Bytes> {
    let status = res.status();
    res.extensions_mut()
        .insert(Outcome::Failure(FailureClass::Local { status, reason }));
    res
}

/// A path's model as the upstream reads it: `%XX` escapes decoded (an undecodable name is
/// taken as it is).
fn percent_decoded(model: &str) -> std::borrow::Cow<'_, str> {
    percent_encoding::percent_decode_str(model)
        .decode_utf8()
        .unwrap_or(model.into())
}

/// Every top-level `"model"` string of a JSON object, in order (duplicates included: which one
/// the upstream takes is its business, so all of them are checked). Nothing else is built.
struct BodyModels(Vec<String>);

impl<'de> serde::Deserialize<'de> for BodyModels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ModelsSeed.deserialize(deserializer)
    }
}

struct ModelsSeed;

impl<'de> DeserializeSeed<'de> for ModelsSeed {
    type Value = BodyModels;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<BodyModels, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ModelsSeed {
    type Value = BodyModels;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BodyModels, A::Error> {
        let mut models = Vec::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "model" {
                if let serde_json::Value::String(model) = map.next_value()? {
                    models.push(model);
                }
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(BodyModels(models))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_top_level_model_is_found() {
        let cases: [(&str, &[&str]); 5] = [
            (r#"{"model":"a","messages":[{"model":"inner"}]}"#, &["a"]),
            (r#"{"model":"a","model":"b"}"#, &["a", "b"]),
            // Escapes in keys and values are read as the upstream reads them.
            (
                r#"{"mod\u0065l":"gemini-2\u002e5-pro"}"#,
                &["gemini-2.5-pro"],
            ),
            (r#"{"model":7}"#, &[]),
            (r#"{}"#, &[]),
        ];
        for (body, want) in cases {
            let BodyModels(found) = serde_json::from_slice(body.as_bytes()).unwrap();
            assert_eq!(found, want, "{body}");
        }
        for body in ["[]", "model=a", r#"{"model":"a"} x"#] {
            assert!(serde_json::from_slice::<BodyModels>(body.as_bytes()).is_err());
        }
    }

    #[test]
    fn path_models_are_decoded() {
        assert_eq!(percent_decoded("gemini%2D2.5-pro"), "gemini-2.5-pro");
        assert_eq!(percent_decoded("gemini-2.5-pro"), "gemini-2.5-pro");
        assert_eq!(percent_decoded("a%zz%4"), "a%zz%4");
        assert_eq!(percent_decoded("%ff"), "%ff");
    }
}
