//! [`ModelRulesLayer`] and its service: the model rules applied to each request.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{header, request::Parts, HeaderValue, Method, Request, Response, StatusCode, Uri};
use pin_project_lite::pin_project;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use tower_layer::Layer;
use tower_service::Service;

use crate::api_error::{error_response, openai_error_value, ApiFlavor};
use crate::body::ResponseBody;
use crate::buffer::{
    is_json_or_unlabelled, parse_json, set_body_length, Buffered, CollectError, CollectLimited,
};
use crate::classify::{FailureClass, Outcome};
use crate::ext::{model_from_path, ModelName};
use crate::openai::{
    default_safety_settings, splice_default_safety_settings, ChatOptions, ModelRules,
    ResolvedModel, ShowSearchLinks,
};
use crate::read_then_call::{Decide, ReadThenCall, Step};

/// Applies the model rules ([`ChatOptions`], with its [`ModelRules`]) to every request: see the
/// [module docs](super).
///
/// Cloning the layer shares its rules. The rules are fixed once built: to change them while
/// serving, build a new stack and swap it in (see the module docs).
#[derive(Clone)]
pub struct ModelRulesLayer {
    config: Arc<Config>,
    max_body_bytes: usize,
}

/// The rules, with the safety settings also as JSON text (spliced into bodies unparsed).
struct Config {
    options: ChatOptions,
    safety_json: Option<String>,
}

impl fmt::Debug for ModelRulesLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelRulesLayer")
            .field("rules", &self.config.options.rules)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl ModelRulesLayer {
    /// Applies `options`: its [`rules`](ChatOptions::rules) (suffixes, blocked models), its
    /// safety settings, thinking defaults and built-in tools. Bodies are read up to 20 MiB.
    pub fn new(options: ChatOptions) -> Self {
        let safety = options
            .safety_settings
            .as_ref()
            .filter(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()));
        let safety_json = safety.map(Value::to_string);
        ModelRulesLayer {
            config: Arc::new(Config {
                options,
                safety_json,
            }),
            max_body_bytes: crate::filter::DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Only refuses the blocked models of `rules` (and understands their suffixes): no
    /// defaults are added to any request.
    pub fn blocking(rules: ModelRules) -> Self {
        Self::new(ChatOptions {
            rules,
            ..ChatOptions::default()
        })
    }

    /// Largest body read (default 20 MiB); a larger one that must be read is refused with a
    /// `413`.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }
}

impl<S> Layer<S> for ModelRulesLayer {
    type Service = ModelRulesService<S>;

    fn layer(&self, inner: S) -> ModelRulesService<S> {
        ModelRulesService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`ModelRulesLayer`].
#[derive(Debug, Clone)]
pub struct ModelRulesService<S> {
    inner: S,
    layer: ModelRulesLayer,
}

impl<S> ModelRulesService<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// Why a request's body is read before it goes inward.
enum Plan {
    /// No model in the path: the body's `model`s are checked against the blocked models.
    CheckModels,
    /// A Gemini `generateContent` body gets its defaults.
    Defaults {
        /// The model, understood.
        model: ResolvedModel,
        /// It gets tools, a thinking config or image output
        /// ([`ChatOptions::shape_gemini_request`]), not only safety settings.
        shape: bool,
    },
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ModelRulesService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ReqBody: http_body::Body<Data = Bytes> + From<Bytes>,
    ResBody: http_body::Body<Data = Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = &self.layer.config;
        let options = &config.options;
        let rules = &options.rules;
        let blocks = !rules.filtered_models.is_empty();
        let flavor = ApiFlavor::of(&req);
        let named = req.extensions().get::<ModelName>();
        if let Some(name) = named.filter(|_| blocks) {
            if let Some(refusal) = refuse_filtered(rules, name.as_str(), flavor, true) {
                return ResponseFuture::local(refusal);
            }
        }
        let path = req.uri().path();
        if req.method() == Method::GET && is_model_list(path) && config.changes_lists() {
            return ResponseFuture {
                state: State::Listing {
                    future: inner.call(req),
                    config: self.layer.config.clone(),
                    flavor,
                },
            };
        }
        let plan = match model_from_path(path) {
            Some(raw) => {
                let model = rules.resolve(&percent_decoded(raw));
                if rules.is_filtered(&model) {
                    let refusal = refuse_filtered(rules, &model.requested, flavor, false);
                    if let Some(refusal) = refusal {
                        return ResponseFuture::local(refusal);
                    }
                }
                if req.method() != Method::POST {
                    return ResponseFuture::inner(inner.call(req));
                }
                let generates = matches!(
                    method_of(path, raw),
                    Some("generateContent" | "streamGenerateContent")
                );
                if model.upstream != model.requested {
                    // The path names the real model; nothing else changes for, say,
                    // `countTokens` of a suffix model.
                    if let Some(uri) = renamed(req.uri(), raw, &model.upstream) {
                        *req.uri_mut() = uri;
                    }
                }
                if !generates {
                    return ResponseFuture::inner(inner.call(req));
                }
                if model.search && options.show_search_link {
                    req.extensions_mut().insert(ShowSearchLinks);
                }
                let shape = options.shapes_gemini_request(&model);
                if !shape && config.safety_json.is_none() {
                    return ResponseFuture::inner(inner.call(req));
                }
                Plan::Defaults { model, shape }
            }
            // The body names the model when the path does not (OpenAI's routes, Gemini's
            // `cachedContents`). Read it unless a model is known and the body is not JSON (a
            // gRPC message with its `ModelName` set above).
            None if blocks
                && req.method() == Method::POST
                && (named.is_none() || is_json_or_unlabelled(req.headers())) =>
            {
                Plan::CheckModels
            }
            None => return ResponseFuture::inner(inner.call(req)),
        };
        let limit = self.layer.max_body_bytes;
        let ruling = Ruling {
            config: self.layer.config.clone(),
            plan,
            flavor,
            limit,
            _answer: PhantomData,
        };
        ResponseFuture {
            state: State::Body {
                call: ReadThenCall::read(req, limit, inner, ruling),
            },
        }
    }
}

/// Whether `path` asks for a model list: Gemini's `…/models`, or OpenAI's shape of it.
fn is_model_list(path: &str) -> bool {
    path.trim_end_matches('/').ends_with("/models")
}

impl Config {
    /// Whether model lists change: models to hide, or variants to add.
    fn changes_lists(&self) -> bool {
        let rules = &self.options.rules;
        !(rules.filtered_models.is_empty()
            && rules.search_models.is_empty()
            && rules.image_models.is_empty()
            && rules.thinking_models.is_empty())
    }
}

/// The most of a model list read (Gemini's longest page is a few hundred KiB).
const MAX_LIST_BYTES: usize = 8 * 1024 * 1024;

/// A model list without the blocked models and, in Gemini's shape (`models`), with the derived
/// variants after their base ([`ModelRules::expand_model_list`]); in OpenAI's shape (`data`),
/// without the blocked models. `None` for a body that is not a JSON object.
fn rewritten_list(rules: &ModelRules, bytes: &[u8]) -> Option<Bytes> {
    let mut list: Value = serde_json::from_slice(bytes).ok()?;
    if !list.is_object() {
        return None;
    }
    if list.get("models").is_some_and(Value::is_array) {
        list = rules.expand_model_list(&list);
    }
    if let Some(data) = list.get_mut("data").and_then(Value::as_array_mut) {
        data.retain(|model| {
            let id = model.get("id").and_then(Value::as_str).unwrap_or("");
            !rules.is_filtered(&rules.resolve(id))
        });
    }
    Some(Bytes::from(list.to_string()))
}

/// `502` for an upstream model list that cannot be read, in the route's format.
fn unreadable_list(flavor: ApiFlavor, why: &'static str) -> Response<Bytes> {
    local(
        error_response(flavor, StatusCode::BAD_GATEWAY, why),
        "unreadable model list",
    )
}

/// The method a Gemini path calls after its model (`generateContent` in
/// `/v1beta/models/m:generateContent`, a `%3A` for the `:` too); `raw` is the model as
/// [`model_from_path`] found it in `path`.
fn method_of<'a>(path: &'a str, raw: &str) -> Option<&'a str> {
    let end = offset_in(path, raw)? + raw.len();
    let tail = &path[end..];
    let method = match tail.strip_prefix(':') {
        Some(method) => method,
        None => tail
            .get(..3)
            .filter(|colon| colon.eq_ignore_ascii_case("%3a"))
            .map(|_| &tail[3..])?,
    };
    Some(method)
}

/// Where `part`, a slice of `whole`, starts in it.
fn offset_in(whole: &str, part: &str) -> Option<usize> {
    let offset = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (whole.get(offset..offset + part.len()) == Some(part)).then_some(offset)
}

/// `uri` with the model `raw` (a slice of its path) replaced by `model`; the query kept.
fn renamed(uri: &Uri, raw: &str, model: &str) -> Option<Uri> {
    let path = uri.path();
    let start = offset_in(path, raw)?;
    let mut pq = String::with_capacity(path.len() + model.len());
    pq.push_str(&path[..start]);
    pq.push_str(model);
    pq.push_str(&path[start + raw.len()..]);
    if let Some(query) = uri.query() {
        pq.push('?');
        pq.push_str(query);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// A `generateContent` body with what it gets by default: tools, thinking config and image
/// output when `shape`, and the default safety settings unless it has its own. A body that is
/// not JSON is left as it is (the upstream, or a parameter filter, answers it). A body that was
/// parsed goes on with its parse, for the layers below.
fn with_defaults(
    config: &Config,
    model: &ResolvedModel,
    shape: bool,
    headers: &mut http::HeaderMap,
    mut buffered: Buffered,
) -> Buffered {
    let options = &config.options;
    if !shape {
        // Safety settings only: spliced in without a parse when the body does not mention them.
        let Some(json) = &config.safety_json else {
            return buffered;
        };
        if let Some(spliced) = splice_default_safety_settings(buffered.bytes(), json) {
            return Buffered::rewritten(headers, Bytes::from(spliced), None);
        }
    }
    let parsed = match buffered.take_json() {
        Some(value) => Ok(value),
        None => parse_json(buffered.bytes()),
    };
    let Ok(mut body) = parsed else {
        return buffered;
    };
    if !body.is_object() {
        return buffered.with_json(body);
    }
    if shape {
        options.shape_gemini_request(model, &mut body);
    }
    if let (Some(safety), Some(_)) = (&options.safety_settings, &config.safety_json) {
        default_safety_settings(&mut body, safety);
    }
    let bytes = Bytes::from(body.to_string());
    Buffered::rewritten(headers, bytes, Some(body))
}

/// The rules' decision on a request body read whole.
struct Ruling<B> {
    config: Arc<Config>,
    plan: Plan,
    flavor: ApiFlavor,
    limit: usize,
    _answer: PhantomData<fn() -> B>,
}

impl<S, ReqBody, B> Decide<S, ReqBody> for Ruling<B>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    ReqBody: From<Bytes>,
{
    type Response = Response<ResponseBody<B>>;

    fn unreadable(self, error: CollectError) -> Self::Response {
        let res = match error {
            CollectError::TooLarge => too_large(self.flavor, self.limit),
            CollectError::Read => local(
                error_response(
                    self.flavor,
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                ),
                "unreadable request body",
            ),
        };
        res.map(ResponseBody::full)
    }

    fn decide(
        self,
        mut parts: Parts,
        body: Buffered,
        _: &mut S,
    ) -> Step<Request<ReqBody>, Self::Response> {
        let body = match self.plan {
            Plan::CheckModels => {
                let rules = &self.config.options.rules;
                if let Some(refusal) = check_body(rules, &parts, body.bytes(), self.flavor) {
                    return Step::Answer(refusal.map(ResponseBody::full));
                }
                body
            }
            Plan::Defaults { model, shape } => {
                with_defaults(&self.config, &model, shape, &mut parts.headers, body)
            }
        };
        Step::Forward(body.into_request(parts))
    }

    fn forwarded(response: Response<B>) -> Self::Response {
        response.map(ResponseBody::inner)
    }
}

pin_project! {
    /// The answer of [`ModelRulesService`]: the body read (when it must be), then the inner
    /// service's answer, or the refusal.
    pub struct ResponseFuture<S, ReqBody, B>
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
        Body {
            #[pin]
            call: ReadThenCall<S, ReqBody, Ruling<B>, Response<ResponseBody<B>>>,
        },
        Listing {
            #[pin]
            future: S::Future,
            config: Arc<Config>,
            flavor: ApiFlavor,
        },
        ReadingList {
            #[pin]
            collect: CollectLimited<B>,
            head: Option<http::response::Parts>,
            config: Arc<Config>,
            flavor: ApiFlavor,
        },
    }
}

impl<S, ReqBody, B> fmt::Debug for ResponseFuture<S, ReqBody, B>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, ReqBody, B> ResponseFuture<S, ReqBody, B>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
{
    fn inner(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Body {
                call: ReadThenCall::called(future),
            },
        }
    }

    fn local(response: Response<Bytes>) -> Self {
        ResponseFuture {
            state: State::Body {
                call: ReadThenCall::answered(response.map(ResponseBody::full)),
            },
        }
    }
}

impl<S, ReqBody, B> Future for ResponseFuture<S, ReqBody, B>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    ReqBody: From<Bytes> + http_body::Body<Data = Bytes>,
    B: http_body::Body<Data = Bytes>,
{
    type Output = Result<Response<ResponseBody<B>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Body { call } => return call.poll(cx),
                StateProj::Listing {
                    future,
                    config,
                    flavor,
                } => {
                    let res = ready!(future.poll(cx))?;
                    if !res.status().is_success() {
                        return Poll::Ready(Ok(res.map(ResponseBody::inner)));
                    }
                    let (head, body) = res.into_parts();
                    let (config, flavor) = (config.clone(), *flavor);
                    this.state.set(State::ReadingList {
                        collect: CollectLimited::new(body, MAX_LIST_BYTES),
                        head: Some(head),
                        config,
                        flavor,
                    });
                }
                StateProj::ReadingList {
                    collect,
                    head,
                    config,
                    flavor,
                } => {
                    let collected = ready!(collect.poll(cx));
                    let Some(mut head) = head.take() else {
                        return Poll::Pending; // polled after completion
                    };
                    let list = match collected {
                        Ok(bytes) => rewritten_list(&config.options.rules, &bytes)
                            .ok_or("the upstream model list is not JSON"),
                        Err(_) => Err("the upstream model list could not be read"),
                    };
                    let res = match list {
                        Ok(list) => {
                            set_body_length(&mut head.headers, list.len());
                            head.headers.insert(
                                header::CONTENT_TYPE,
                                HeaderValue::from_static("application/json"),
                            );
                            head.headers.remove(header::CONTENT_ENCODING);
                            Response::from_parts(head, list)
                        }
                        Err(why) => unreadable_list(*flavor, why),
                    };
                    return Poll::Ready(Ok(res.map(ResponseBody::full)));
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
    crate::buffer::counts::parse();
    match serde_json::from_slice::<BodyModels>(bytes) {
        Ok(BodyModels(models)) => models
            .iter()
            .find_map(|model| refuse_filtered(rules, model, flavor, true)),
        // The model is known otherwise (and was checked): the upstream answers the body.
        Err(_) if parts.extensions.get::<ModelName>().is_some() => None,
        // Broken JSON is answered as the parameter filter answers it: where the parser stopped.
        Err(error)
            if (error.is_syntax() || error.is_eof()) && is_json_or_unlabelled(&parts.headers) =>
        {
            Some(local(
                crate::filter::not_json(flavor, &error),
                "request body is not JSON",
            ))
        }
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
    fn the_method_follows_the_model() {
        for (path, want) in [
            ("/v1beta/models/m:generateContent", Some("generateContent")),
            (
                "/v1/models/m%3AstreamGenerateContent",
                Some("streamGenerateContent"),
            ),
            ("/v1/models/m%3acountTokens", Some("countTokens")),
            ("/v1/models/m", None),
            ("/v1/models/m/operations/x", None),
        ] {
            let raw = model_from_path(path).unwrap();
            assert_eq!(method_of(path, raw), want, "{path}");
        }
    }

    #[test]
    fn only_the_model_of_the_path_is_renamed() {
        let uri: Uri = "/v1beta/models/models-search:generateContent?alt=sse"
            .parse()
            .unwrap();
        let raw = model_from_path(uri.path()).unwrap();
        assert_eq!(
            renamed(&uri, raw, "models").unwrap(),
            "/v1beta/models/models:generateContent?alt=sse"
        );
    }

    #[test]
    fn path_models_are_decoded() {
        assert_eq!(percent_decoded("gemini%2D2.5-pro"), "gemini-2.5-pro");
        assert_eq!(percent_decoded("gemini-2.5-pro"), "gemini-2.5-pro");
        assert_eq!(percent_decoded("a%zz%4"), "a%zz%4");
        assert_eq!(percent_decoded("%ff"), "%ff");
    }
}
