//! [`PseudoStreamLayer`] and the [`PseudoStream`] service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, request::Parts, HeaderValue, Method, Request, Response, Uri};
use serde_json::Value;
use tower_layer::Layer;
use tower_service::Service;

use super::body::PseudoStreamBody;
use super::events::{KeepAlive, StreamContext};
use super::future::ResponseFuture;
use crate::api_error::ApiFlavor;
use crate::buffer::{declared_length, parse_json, Buffered};
use crate::ext::{ModelName, Operation, PseudoStreamed, RequestInfo};
use crate::order::{self, Misorder};
use crate::usage::{HandoffGuard, RecordHandoff, Settled};

/// The Python server's `FAKE_STREAM_EMPTY_DATA_INTERVAL_SECONDS` default.
pub const DEFAULT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// Shortest keep-alive interval accepted (shorter ones are raised to it).
pub const MIN_KEEP_ALIVE_INTERVAL: Duration = Duration::from_millis(100);

/// Default largest request body read on OpenAI routes to see `"stream": true`: 20 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 20 * 1024 * 1024;

/// Default largest non-streaming answer held before it is replayed: 64 MiB (answers may carry
/// generated images inline).
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

type ModelPredicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Clone)]
pub(crate) struct Config {
    on: bool,
    models: Option<ModelPredicate>,
    pub(crate) interval: Duration,
    gemini_keep_alive: KeepAlive,
    openai_keep_alive: KeepAlive,
    pub(crate) max_request_bytes: usize,
    pub(crate) max_answer_bytes: usize,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("on", &self.on)
            .field("models", &self.models.as_ref().map(|_| "<predicate>"))
            .field("interval", &self.interval)
            .field("gemini_keep_alive", &self.gemini_keep_alive)
            .field("openai_keep_alive", &self.openai_keep_alive)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_answer_bytes", &self.max_answer_bytes)
            .finish()
    }
}

impl Config {
    fn wants(&self, model: Option<&str>) -> bool {
        match &self.models {
            None => true,
            Some(predicate) => {
                model.is_some_and(|m| predicate(m.strip_prefix("models/").unwrap_or(m)))
            }
        }
    }
}

/// Applies [`PseudoStream`]. Its settings are fixed when it is built: to change them while
/// serving, build the stack again and swap it in (see `docs/architecture.md`).
#[derive(Debug, Clone)]
pub struct PseudoStreamLayer {
    config: Arc<Config>,
}

impl Default for PseudoStreamLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl PseudoStreamLayer {
    /// Fakes every streaming request: keep-alives every 5 s (an SSE comment on OpenAI routes,
    /// an empty line on Gemini routes), requests up to 20 MiB, answers up to 64 MiB.
    pub fn new() -> Self {
        PseudoStreamLayer {
            config: Arc::new(Config {
                on: true,
                models: None,
                interval: DEFAULT_KEEP_ALIVE_INTERVAL,
                gemini_keep_alive: KeepAlive::BlankLine,
                openai_keep_alive: KeepAlive::Comment,
                max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
                max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
            }),
        }
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// On (default) or off: when off, every request passes through untouched.
    pub fn enabled(mut self, on: bool) -> Self {
        self.config().on = on;
        self
    }

    /// Fakes streams only for models where `predicate(model)` is true (the model without a
    /// `models/` prefix). Requests whose model is unknown are then not faked.
    pub fn models<F>(mut self, predicate: F) -> Self
    where
        F: Fn(&str) -> bool + Send + Sync + 'static,
    {
        self.config().models = Some(Arc::new(predicate));
        self
    }

    /// Time between keep-alives (default 5 s; at least 100 ms). The first one goes out one
    /// interval after the request.
    pub fn keep_alive_interval(mut self, interval: Duration) -> Self {
        self.config().interval = interval.max(MIN_KEEP_ALIVE_INTERVAL);
        self
    }

    /// The keep-alive to write, on both protocols.
    pub fn keep_alive(mut self, keep_alive: KeepAlive) -> Self {
        let config = self.config();
        config.gemini_keep_alive = keep_alive;
        config.openai_keep_alive = keep_alive;
        self
    }

    /// The keep-alive to write on one protocol.
    pub fn keep_alive_for(mut self, flavor: ApiFlavor, keep_alive: KeepAlive) -> Self {
        match flavor {
            ApiFlavor::OpenAi => self.config().openai_keep_alive = keep_alive,
            _ => self.config().gemini_keep_alive = keep_alive,
        }
        self
    }

    /// Largest OpenAI request body read to find `"stream": true` (larger ones get a 413).
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.config().max_request_bytes = bytes;
        self
    }

    /// Largest answer held for replay; a larger one ends the stream with an error event.
    pub fn max_answer_bytes(mut self, bytes: usize) -> Self {
        self.config().max_answer_bytes = bytes;
        self
    }
}

impl<S> Layer<S> for PseudoStreamLayer {
    type Service = PseudoStream<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PseudoStream {
            inner,
            config: self.config.clone(),
        }
    }
}

/// Answers streaming requests at once with an event stream, asks the inner service for the
/// non-streaming answer, and replays it as events; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct PseudoStream<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> PseudoStream<S> {
    /// Wraps `inner` with the default configuration.
    pub fn new(inner: S) -> Self {
        PseudoStreamLayer::new().layer(inner)
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for PseudoStream<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Future: Send + 'static,
    S::Error: fmt::Display + 'static,
    ReqBody: http_body::Body<Data = Bytes> + From<Bytes>,
{
    type Response = Response<PseudoStreamBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        order::check_above_retry(
            req.extensions(),
            Misorder::PseudoStreamInsideRetry,
            Misorder::PseudoStreamInsideKeyRotation,
        );
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = &self.config;
        if !config.on || req.method() != Method::POST {
            return ResponseFuture::passthrough(inner.call(req));
        }
        let info = RequestInfo::attach(&mut req);
        match info.operation {
            Operation::StreamGenerateContent => {
                if !has_alt_sse(req.uri()) || !config.wants(info.model_name()) {
                    return ResponseFuture::passthrough(inner.call(req));
                }
                let Some(uri) = non_streaming_uri(req.uri()) else {
                    return ResponseFuture::passthrough(inner.call(req));
                };
                let mut ctx = StreamContext::new(ApiFlavor::Gemini, config.gemini_keep_alive);
                ctx.model = info.model_name().map(Into::into);
                let (mut parts, body) = req.into_parts();
                let handoff = mark_pseudo_streamed(&mut parts, |info| {
                    info.rewritten(&Method::POST, &uri);
                });
                parts.uri = uri;
                let future = inner.call(Request::from_parts(parts, body));
                ResponseFuture::ready(stream_response(future, ctx, config, handoff))
            }
            Operation::ChatCompletions => {
                let limit = config.max_request_bytes;
                if declared_length(req.headers()).is_some_and(|len| len > limit as u64) {
                    // Too large for us to look into; the layers below answer it.
                    return ResponseFuture::passthrough(inner.call(req));
                }
                ResponseFuture::reading(req, inner, self.config.clone())
            }
            _ => ResponseFuture::passthrough(inner.call(req)),
        }
    }
}

/// Marks a request this layer fakes: the [`PseudoStreamed`] extension, its [`RequestInfo`]
/// (changed by `rewrite` too), and the slot where a `Usage` below hands over its record so that
/// it says what the client saw.
fn mark_pseudo_streamed(parts: &mut Parts, rewrite: impl FnOnce(&mut RequestInfo)) -> HandoffGuard {
    // Dropped unsettled, the stream went away before its answer: the client got the `200` and
    // left (or was left) without it.
    let (slot, guard) = RecordHandoff::new(
        parts.uri.path(),
        &parts.extensions,
        Settled::ClientGone {
            status: http::StatusCode::OK,
        },
    );
    RequestInfo::update(parts, |info| {
        info.stream = true;
        info.pseudo_streamed = true;
        rewrite(info);
    });
    parts.extensions.insert(PseudoStreamed);
    parts.extensions.insert(slot);
    guard
}

/// The `200 text/event-stream` answer whose body owns `future`.
pub(crate) fn stream_response<F, B, E>(
    future: F,
    ctx: StreamContext,
    config: &Config,
    handoff: HandoffGuard,
) -> Response<PseudoStreamBody<B>>
where
    F: std::future::Future<Output = Result<Response<B>, E>> + Send + 'static,
    E: fmt::Display + 'static,
{
    let content_type = match ctx.flavor {
        ApiFlavor::OpenAi => "text/event-stream; charset=utf-8",
        _ => "text/event-stream",
    };
    let mut res = Response::new(PseudoStreamBody::sse(
        future,
        ctx,
        config.interval,
        config.max_answer_bytes,
        Some(handoff),
    ));
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

/// For an OpenAI chat body read whole: when the request should be faked, the rewritten
/// non-streaming body with the stream's context and the record's handoff; else the body as it
/// came (with its parse, when one was made, for the layers below).
pub(crate) fn openai_rewrite(
    parts: &mut Parts,
    mut body: Buffered,
    config: &Config,
) -> (Buffered, Option<(StreamContext, HandoffGuard)>) {
    let parsed = match body.take_json() {
        Some(value) => value,
        None if !contains(body.bytes(), b"\"stream\"") => return (body, None),
        None => match parse_json(body.bytes()) {
            Ok(value) => value,
            Err(_) => return (body, None),
        },
    };
    let Value::Object(mut map) = parsed else {
        return (body.with_json(parsed), None);
    };
    let model = map.get("model").and_then(Value::as_str);
    if map.get("stream") != Some(&Value::Bool(true)) || !config.wants(model) {
        return (body.with_json(Value::Object(map)), None);
    }
    let mut ctx = StreamContext::new(ApiFlavor::OpenAi, config.openai_keep_alive);
    ctx.model = model.map(Into::into);
    ctx.include_usage = map
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let model = model.map(ModelName::new);
    map.insert("stream".into(), Value::Bool(false));
    // Only allowed with `"stream": true`; OpenAI-compatible upstreams refuse it otherwise.
    map.remove("stream_options");
    let value = Value::Object(map);
    let Ok(out) = serde_json::to_vec(&value) else {
        return (body, None);
    };
    let body = Buffered::rewritten(&mut parts.headers, Bytes::from(out), Some(value));
    let handoff = mark_pseudo_streamed(parts, |info| {
        if info.model.is_none() {
            info.model = model;
        }
    });
    (body, Some((ctx, handoff)))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Where `streamGenerateContent` starts in a Gemini streaming path.
fn stream_method_at(path: &str) -> Option<usize> {
    const METHOD: &str = "streamGenerateContent";
    let start = path.rfind("/models/")?;
    let tail = &path[start..];
    let at = if let Some(rest) = tail.strip_suffix(METHOD) {
        rest.len()
    } else {
        let trimmed = tail.strip_suffix('/')?;
        trimmed.strip_suffix(METHOD)?.len()
    };
    let before = &tail[..at];
    (before.ends_with(':') || before.to_ascii_lowercase().ends_with("%3a")).then_some(start + at)
}

fn has_alt_sse(uri: &Uri) -> bool {
    uri.query()
        .is_some_and(|q| q.split('&').any(|pair| pair == "alt=sse"))
}

/// The same URI for `generateContent`, without `alt=sse`.
fn non_streaming_uri(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let at = stream_method_at(path)?;
    let mut target = String::with_capacity(path.len() + 8);
    target.push_str(&path[..at]);
    target.push_str("generateContent");
    let query: Vec<&str> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty() && *pair != "alt=sse")
        .collect();
    if !query.is_empty() {
        target.push('?');
        target.push_str(&query.join("&"));
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(target.parse().ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_paths_become_non_streaming() {
        let cases = [
            (
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                Some("/v1beta/models/gemini-2.5-flash:generateContent"),
            ),
            (
                "/v1beta/models/gemini-2.5-flash%3AstreamGenerateContent?key=k&alt=sse",
                Some("/v1beta/models/gemini-2.5-flash%3AgenerateContent?key=k"),
            ),
            (
                "http://up:1/gemini/v1beta/models/x:streamGenerateContent?alt=sse&x=1",
                Some("http://up:1/gemini/v1beta/models/x:generateContent?x=1"),
            ),
            ("/v1beta/models/x:generateContent?alt=sse", None),
            ("/v1beta/models/streamGenerateContent", None),
        ];
        for (input, expected) in cases {
            let uri: Uri = input.parse().unwrap();
            let out = non_streaming_uri(&uri).map(|u| u.to_string());
            assert_eq!(out.as_deref(), expected, "{input}");
        }
        assert!(has_alt_sse(&"/m?key=1&alt=sse".parse().unwrap()));
        assert!(!has_alt_sse(&"/m?alt=json".parse().unwrap()));
    }
}
