//! [`OpenAiLayer`]: an OpenAI-compatible face on a Gemini stack.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use super::body::OpenAiBody;
use super::models::{ModelRules, ResolvedModel};
use super::request::{chat_request_to_gemini, embeddings_request_to_gemini, ChatOptions};
use super::response::{
    gemini_embeddings_to_openai, gemini_response_to_openai, random_id, OpenAiStream,
    ResponseOptions,
};
use super::typed::{text_answer_to_openai, text_chat_to_gemini};
use crate::api_error::{openai_error_value, ApiFlavor};
use crate::buffer::{
    parse_json, set_body_length, Buffered, CollectError, CollectLimited, ReadBody,
};
use crate::ext::{ModelName, Operation, RequestInfo};
use crate::usage::{gemini_usage, RecordHandoff, Settled, UpstreamUsage};

/// An image fetched for a chat request: its MIME type and its data in base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedImage {
    /// For example `image/png`.
    pub mime_type: String,
    /// The bytes, base64-encoded.
    pub base64: String,
}

/// The future of [`ImageFetcher::fetch`]; the error is shown to the client.
pub type FetchFuture<'a> = Pin<Box<dyn Future<Output = Result<FetchedImage, String>> + Send + 'a>>;

/// Fetches an image given by URL for a chat request (the proxy's is an HTTP client with size and
/// time limits).
pub trait ImageFetcher: Send + Sync + 'static {
    /// Fetches `url`.
    fn fetch<'a>(&'a self, url: &'a str) -> FetchFuture<'a>;
}

#[derive(Clone)]
struct Options {
    chat: ChatOptions,
    show_thinking: bool,
    /// `chat.safety_settings` serialized once, for the text chats' fast path.
    safety_json: Option<String>,
}

/// Applies [`OpenAi`]: serves `POST …/chat/completions` and `POST …/embeddings` in OpenAI's
/// format from an inner stack that speaks Gemini's REST API.
///
/// The options are fixed once the layer is built; to change them while serving, build a new
/// stack and swap it in (`docs/architecture.md`, "Changing settings while serving").
///
/// Requests are converted by [`chat_request_to_gemini`] / [`embeddings_request_to_gemini`]
/// (a chat of text messages, and an answer of text parts, through typed fast paths that give
/// the same bodies without building `serde_json::Value` trees) and
/// sent to the inner stack as `{prefix}/models/{model}:generateContent` (or
/// `:streamGenerateContent?alt=sse` for a stream, `:batchEmbedContents` for embeddings), with
/// the [`ModelName`] and [`ApiFlavor::OpenAi`] extensions set so that key cooldowns are per
/// model and local errors come out in OpenAI's format. Answers are converted back: JSON whole,
/// streams event by event (nothing buffered), Gemini errors into OpenAI's error shape with the
/// same status. A model in the rules' [`filtered_models`](ModelRules::filtered_models) is
/// refused with a `400` naming it (`param: "model"`) before anything is sent inward. Other
/// requests pass through untouched.
#[derive(Clone)]
pub struct OpenAiLayer {
    options: Arc<Options>,
    prefix: Arc<str>,
    max_body_bytes: usize,
    fetcher: Option<Arc<dyn ImageFetcher>>,
}

impl std::fmt::Debug for OpenAiLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiLayer")
            .field("prefix", &self.prefix)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl OpenAiLayer {
    /// Converts with `options`; Gemini paths start with `/v1beta`.
    pub fn new(options: ChatOptions) -> Self {
        let show_thinking = options.show_thinking;
        let safety_json = options.safety_settings.as_ref().map(Value::to_string);
        OpenAiLayer {
            options: Arc::new(Options {
                chat: options,
                show_thinking,
                safety_json,
            }),
            prefix: "/v1beta".into(),
            max_body_bytes: crate::retry::DEFAULT_MAX_BODY_BYTES,
            fetcher: None,
        }
    }

    /// The path prefix of the Gemini requests sent inward (default `/v1beta`).
    pub fn gemini_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.trim_end_matches('/').into();
        self
    }

    /// Largest request and answer body read (default 20 MiB); larger requests get a 413.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Fetches `http(s)` image URLs; without one, such images are refused with a 400.
    pub fn image_fetcher(mut self, fetcher: Arc<dyn ImageFetcher>) -> Self {
        self.fetcher = Some(fetcher);
        self
    }
}

impl<S> Layer<S> for OpenAiLayer {
    type Service = OpenAi<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OpenAi {
            inner,
            layer: self.clone(),
        }
    }
}

/// Serves OpenAI's chat and embeddings routes from a Gemini stack; see [`OpenAiLayer`].
#[derive(Clone)]
pub struct OpenAi<S> {
    inner: S,
    layer: OpenAiLayer,
}

impl<S: std::fmt::Debug> std::fmt::Debug for OpenAi<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAi")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Chat,
    Embeddings,
}

fn route<B>(req: &mut Request<B>) -> Option<Route> {
    match RequestInfo::attach(req).operation {
        Operation::ChatCompletions => Some(Route::Chat),
        Operation::Embeddings => Some(Route::Embeddings),
        _ => None,
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for OpenAi<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: http_body::Body<Data = Bytes> + From<Bytes> + Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<OpenAiBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let Some(route) = route(&mut req) else {
            return Box::pin(async move {
                let res = inner.oneshot(req).await?;
                Ok(res.map(OpenAiBody::inner))
            });
        };
        let layer = self.layer.clone();
        // A `Usage` below sees Gemini's answer; when the client gets a local error in its
        // place, this layer has the last word on the record.
        let (slot, mut handoff) =
            RecordHandoff::new(req.uri().path(), req.extensions(), Settled::AsRecorded);
        req.extensions_mut().insert(slot);
        Box::pin(async move {
            match convert(route, &layer, req).await {
                Err(local) => Ok(local),
                Ok((gemini_req, plan)) => {
                    let res = inner.oneshot(gemini_req).await?;
                    let upstream_ok = res.status().is_success();
                    let out = answer(res, plan, layer.max_body_bytes).await;
                    if upstream_ok && !out.status().is_success() {
                        handoff.settle(Settled::Replaced {
                            status: out.status(),
                        });
                    }
                    Ok(out)
                }
            }
        })
    }
}

/// How to turn the answer back.
struct Plan {
    route: Route,
    model: String,
    stream: bool,
    include_usage: bool,
    show_thinking: bool,
    /// Append the search sources (a search switched on here, with `SHOW_SEARCH_LINK`).
    search_links: bool,
    /// Where the usage layer above wants the upstream's token count (the client may not see
    /// it: an OpenAI stream carries it only when asked).
    upstream_usage: Option<UpstreamUsage>,
}

async fn convert<ReqBody, ResBody>(
    route: Route,
    layer: &OpenAiLayer,
    req: Request<ReqBody>,
) -> Result<(Request<ReqBody>, Plan), Response<OpenAiBody<ResBody>>>
where
    ReqBody: http_body::Body<Data = Bytes> + From<Bytes>,
{
    let (mut parts, body) = req.into_parts();
    let mut buffered = match ReadBody::new(&mut parts, body, layer.max_body_bytes).await {
        Ok(buffered) => buffered,
        Err(CollectError::TooLarge) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "the request body is larger than {} bytes",
                    layer.max_body_bytes
                ),
                None,
            ))
        }
        Err(CollectError::Read) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
                None,
            ))
        }
    };
    let options = layer.options.clone();
    let upstream_usage = parts.extensions.get::<UpstreamUsage>().cloned();
    // A layer above (the filter, the pseudo stream) may have parsed it already.
    let parsed = match buffered.take_json() {
        Some(json) => Ok(json),
        None => {
            // Most chats are text: converted without a `Value` tree (the general path below
            // takes any other, to the same body).
            let fast = (route == Route::Chat)
                .then(|| {
                    text_chat_to_gemini(
                        buffered.bytes(),
                        &options.chat,
                        options.safety_json.as_deref(),
                    )
                })
                .flatten();
            if let Some(chat) = fast {
                if let Some(refusal) = filtered(&options.chat.rules, &chat.model) {
                    return Err(refusal);
                }
                let plan = Plan {
                    route,
                    model: chat.model.requested.clone(),
                    stream: chat.stream,
                    include_usage: chat.include_usage,
                    show_thinking: options.show_thinking,
                    search_links: chat.search && options.chat.show_search_link,
                    upstream_usage,
                };
                let path = chat_path(&layer.prefix, &chat.model.upstream, chat.stream);
                parts.extensions.insert(ModelName::new(chat.model.upstream));
                return gemini_request(parts, path, Bytes::from(chat.body), plan);
            }
            parse_json(buffered.bytes())
        }
    };
    let json: Value = parsed.map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("the request body is not valid JSON: {e}"),
            None,
        )
    })?;
    let (path, body, plan) = match route {
        Route::Chat => {
            let mut chat = chat_request_to_gemini(&json, &options.chat)
                .map_err(|e| error(StatusCode::BAD_REQUEST, &e.message, Some(&e.param)))?;
            if let Some(refusal) = filtered(&options.chat.rules, &chat.model) {
                return Err(refusal);
            }
            for image in std::mem::take(&mut chat.remote_images) {
                let fetched = match &layer.fetcher {
                    Some(fetcher) => fetcher.fetch(&image.url).await,
                    None => Err(
                        "image URLs are not fetched here: send the image as a data: URL".to_owned(),
                    ),
                };
                let part = match (fetched, image.fallback_text) {
                    (Ok(fetched), _) => json!({ "inlineData": {
                        "mimeType": fetched.mime_type,
                        "data": fetched.base64,
                    } }),
                    // A markdown image in a message's text stays text.
                    (Err(_), Some(text)) => json!({ "text": text }),
                    (Err(e), None) if layer.fetcher.is_none() => {
                        return Err(error(StatusCode::BAD_REQUEST, &e, Some("messages")))
                    }
                    (Err(e), None) => {
                        return Err(error(
                            StatusCode::BAD_REQUEST,
                            &format!("could not fetch the image {}: {e}", image.url),
                            Some("messages"),
                        ))
                    }
                };
                if let Some(slot) = chat.body.pointer_mut(&image.pointer) {
                    *slot = part;
                }
            }
            let path = chat_path(&layer.prefix, &chat.model.upstream, chat.stream);
            let plan = Plan {
                route,
                model: chat.model.requested.clone(),
                stream: chat.stream,
                include_usage: chat.include_usage,
                show_thinking: options.show_thinking,
                search_links: chat.search && options.chat.show_search_link,
                upstream_usage,
            };
            parts.extensions.insert(ModelName::new(chat.model.upstream));
            (path, chat.body, plan)
        }
        Route::Embeddings => {
            let embeddings = embeddings_request_to_gemini(&json)
                .map_err(|e| error(StatusCode::BAD_REQUEST, &e.message, Some(&e.param)))?;
            let model = options.chat.rules.resolve(&embeddings.model);
            if let Some(refusal) = filtered(&options.chat.rules, &model) {
                return Err(refusal);
            }
            let path = format!(
                "{}/models/{}:batchEmbedContents",
                layer.prefix, embeddings.model
            );
            let plan = Plan {
                route,
                model: embeddings.model.clone(),
                stream: false,
                include_usage: false,
                show_thinking: false,
                search_links: false,
                upstream_usage,
            };
            parts.extensions.insert(ModelName::new(embeddings.model));
            (path, embeddings.body, plan)
        }
    };
    gemini_request(parts, path, Bytes::from(body.to_string()), plan)
}

fn chat_path(prefix: &str, model: &str, stream: bool) -> String {
    let method = if stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    };
    format!("{prefix}/models/{model}:{method}")
}

/// The converted request, sent inward to `path` with `body`.
#[allow(clippy::result_large_err)]
fn gemini_request<ReqBody, ResBody>(
    mut parts: http::request::Parts,
    path: String,
    body: Bytes,
    plan: Plan,
) -> Result<(Request<ReqBody>, Plan), Response<OpenAiBody<ResBody>>>
where
    ReqBody: http_body::Body<Data = Bytes> + From<Bytes>,
{
    parts.uri = path.parse().map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "the model name cannot be used in a URL",
            Some("model"),
        )
    })?;
    parts.extensions.insert(ApiFlavor::OpenAi);
    // The layers below see a Gemini call for the upstream's model, answered in OpenAI's format.
    RequestInfo::update(&mut parts, |info| info.flavor = ApiFlavor::OpenAi);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // Nothing below reads the converted body: its bytes only.
    let body = Buffered::rewritten(&mut parts.headers, body, None);
    Ok((body.into_request(parts), plan))
}

/// A `400` for a model in the rules' `filtered_models`, before any image is fetched or any key
/// is used.
fn filtered<B>(rules: &ModelRules, model: &ResolvedModel) -> Option<Response<OpenAiBody<B>>> {
    rules.is_filtered(model).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            &format!(
                "the model {} is not available on this server",
                model.requested
            ),
            Some("model"),
        )
    })
}

async fn answer<B>(res: Response<B>, plan: Plan, limit: usize) -> Response<OpenAiBody<B>>
where
    B: http_body::Body<Data = Bytes>,
{
    let (mut parts, body) = res.into_parts();
    // Outer layers (logs) learn the model the client asked for.
    parts.extensions.insert(ModelName::new(plan.model.as_str()));
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let id = format!("chatcmpl-{}", random_id(24));
    let opts = ResponseOptions {
        show_thinking: plan.show_thinking,
        search_links: plan.search_links,
    };
    if crate::decode::is_encoded(&parts.headers) {
        // Compressed bytes are not Gemini's answer (a stack without `DecodeLayer`): converting
        // them would answer an empty choice list as if the model had said nothing.
        let mut res = error(
            StatusCode::BAD_GATEWAY,
            "the upstream answer was compressed and could not be read (decode upstream answers \
             with gemini_balance::decode::DecodeLayer)",
            None,
        );
        *res.extensions_mut() = parts.extensions;
        return res;
    }
    if parts.status.is_success() && plan.stream {
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        parts
            .headers
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let converter = OpenAiStream::new(&plan.model, &id, created, opts, plan.include_usage);
        return Response::from_parts(
            parts,
            OpenAiBody::stream(body, converter, plan.upstream_usage),
        );
    }
    let bytes = match CollectLimited::new(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let mut res = error(
                StatusCode::BAD_GATEWAY,
                "the upstream answer could not be read whole",
                None,
            );
            *res.extensions_mut() = parts.extensions;
            return res;
        }
    };
    if parts.status.is_success() && plan.route == Route::Chat {
        // Most answers are text: converted without a `Value` tree (the general path below
        // takes any other, to the same output).
        if let Some((body, usage)) = text_answer_to_openai(&bytes, &plan.model, &id, created, &opts)
        {
            if let (Some(slot), Some(usage)) = (&plan.upstream_usage, usage) {
                slot.set(usage);
            }
            return json_response(parts, Bytes::from(body));
        }
    }
    let gemini: Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(_) if parts.status.is_success() => {
            // Not an answer to convert: an empty choice list would hide that.
            let mut res = error(
                StatusCode::BAD_GATEWAY,
                "the upstream's answer was not JSON",
                None,
            );
            *res.extensions_mut() = parts.extensions;
            return res;
        }
        Err(_) => Value::Null,
    };
    if let Some(slot) = &plan.upstream_usage {
        if let Some(usage) = gemini.get("usageMetadata").and_then(gemini_usage) {
            slot.set(usage);
        }
    }
    let value = if !parts.status.is_success() {
        gemini_error_to_openai(parts.status, &gemini_or_text(gemini, &bytes))
    } else {
        match plan.route {
            Route::Chat => gemini_response_to_openai(&gemini, &plan.model, &id, created, &opts),
            Route::Embeddings => gemini_embeddings_to_openai(&gemini, &plan.model),
        }
    };
    json_response(parts, Bytes::from(value.to_string()))
}

fn json_response<B>(mut parts: http::response::Parts, body: Bytes) -> Response<OpenAiBody<B>> {
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    set_body_length(&mut parts.headers, body.len());
    Response::from_parts(parts, OpenAiBody::full(body))
}

fn gemini_or_text(parsed: Value, raw: &[u8]) -> Value {
    if parsed.get("error").is_some() {
        parsed
    } else {
        json!({ "error": { "message": String::from_utf8_lossy(raw) } })
    }
}

/// A Gemini error body (`{"error":{"code","message","status"}}`) in OpenAI's error shape
/// (`{"error":{"message","type","param","code"}}`); an OpenAI-shaped body is kept as it is.
pub fn gemini_error_to_openai(status: StatusCode, gemini: &Value) -> Value {
    let error = gemini.get("error").unwrap_or(&Value::Null);
    if error.get("type").is_some() {
        return gemini.clone();
    }
    let status = error
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| StatusCode::from_u16(c as u16).ok())
        .unwrap_or(status);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("upstream error"));
    openai_error_value(status, message, None)
}

fn error<B>(status: StatusCode, message: &str, param: Option<&str>) -> Response<OpenAiBody<B>> {
    let body = Bytes::from(openai_error_value(status, message, param).to_string());
    let mut res = Response::new(OpenAiBody::full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
