//! The mock's axum app, and [`MockGemini`], the handle tests hold.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use http::{header, request::Parts, HeaderValue, StatusCode};
use serde_json::Value;
use tokio::task::JoinHandle;

use super::compress::{self, Compression};
use super::errors::{self, GeminiError};
use super::fault::Fault;
use super::record::{KeyCounts, RecordedRequest, Recorder};
use super::replies::{self, ModelInfo};
use super::route::{Action, Route};
use super::sse::{sse_response, StreamGate};

/// Largest request body the mock reads (Gemini accepts 20 MB inline data).
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// A running mock Gemini on `127.0.0.1`. Dropping the handle stops it accepting connections
/// (connections already open end with the test's runtime).
#[derive(Debug)]
pub struct MockGemini {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Shared {
    faults: Mutex<HashMap<String, FaultState>>,
    recorder: Recorder,
    gate: Mutex<Option<StreamGate>>,
    compression: Mutex<Compression>,
    /// Answers sent compressed.
    compressed: std::sync::atomic::AtomicU64,
    /// Streams whose reader went away before their last event.
    abandoned_streams: Arc<std::sync::atomic::AtomicU64>,
    /// Models the lists show beyond the catalogue.
    extra_listed: std::sync::atomic::AtomicUsize,
    /// The largest page a model list gives, when set lower than Gemini's 1000.
    max_page_size: std::sync::atomic::AtomicUsize,
    /// Later pages of a model list give their own token again.
    repeat_page_tokens: std::sync::atomic::AtomicBool,
    /// Requests for a later page of a model list are refused.
    refuse_page_tokens: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct FaultState {
    fault: Fault,
    /// Calls since the fault was set (drives `Flaky503`).
    calls: u64,
}

impl MockGemini {
    /// Starts the mock on an ephemeral loopback port.
    pub async fn start() -> MockGemini {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared::default());
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("mock server");
        });
        MockGemini { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets how requests with `key` are answered, from the next request on.
    pub fn set_fault(&self, key: &str, fault: Fault) {
        let mut faults = self.shared.faults.lock().unwrap_or_else(|e| e.into_inner());
        faults.insert(key.to_owned(), FaultState { fault, calls: 0 });
    }

    /// Answers every key normally again.
    pub fn clear_faults(&self) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// How answers are compressed from the next request on (by default as Google's front ends
    /// do: gzip when the request accepts it).
    pub fn set_compression(&self, compression: Compression) {
        *self
            .shared
            .compression
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = compression;
    }

    /// Answers sent compressed so far.
    pub fn compressed_answers(&self) -> u64 {
        self.shared
            .compressed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Streams (`alt=sse`) whose reader went away before their last event: the connection was
    /// closed or the body dropped, whether the stream was held by a gate or sending.
    pub fn abandoned_streams(&self) -> u64 {
        self.shared
            .abandoned_streams
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Lists `count` more models than the catalogue from now on (ids from
    /// [`replies::extra_model_id`]), so that a list takes more than one default page of 50.
    pub fn list_extra_models(&self, count: usize) {
        self.shared
            .extra_listed
            .store(count, std::sync::atomic::Ordering::Relaxed);
    }

    /// Gives model lists in pages of at most `size` from now on (Gemini's limit is 1000; a
    /// relay may page by less).
    pub fn set_max_page_size(&self, size: usize) {
        self.shared
            .max_page_size
            .store(size, std::sync::atomic::Ordering::Relaxed);
    }

    /// From now on, a later page of a model list gives its own `nextPageToken` again, as a
    /// broken relay might (the first page's token is right).
    pub fn repeat_page_tokens(&self, on: bool) {
        self.shared
            .repeat_page_tokens
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// From now on, a request for a later page of a model list (one with a `pageToken`) is
    /// refused with a 400, as a token that expired is.
    pub fn refuse_page_tokens(&self, on: bool) {
        self.shared
            .refuse_page_tokens
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Holds every stream started from now on after its first event; see [`StreamGate`].
    pub fn gate_streams(&self) -> StreamGate {
        let gate = StreamGate::new();
        *self.shared.gate.lock().unwrap_or_else(|e| e.into_inner()) = Some(gate.clone());
        gate
    }

    /// Requests that arrived with `key`.
    pub fn requests(&self, key: &str) -> u64 {
        self.counts(key).requests
    }

    /// Requests with `key` for `model`.
    pub fn requests_for(&self, key: &str, model: &str) -> u64 {
        self.counts(key).by_model.get(model).copied().unwrap_or(0)
    }

    /// Answers with `status` to requests with `key`.
    pub fn status_count(&self, key: &str, status: u16) -> u64 {
        self.counts(key)
            .by_status
            .get(&status)
            .copied()
            .unwrap_or(0)
    }

    /// Every counter of `key`.
    pub fn counts(&self, key: &str) -> KeyCounts {
        self.shared.recorder.counts(key)
    }

    /// Requests of any kind, with or without a key.
    pub fn total(&self) -> u64 {
        self.shared.recorder.total()
    }

    /// Requests without any key.
    pub fn unauthenticated(&self) -> u64 {
        self.shared.recorder.unauthenticated()
    }

    /// Every credential seen in any place (header, query, bearer), sorted, without repeats.
    pub fn credentials_seen(&self) -> Vec<String> {
        self.shared.recorder.credentials()
    }

    /// `true` if any credential seen contains `needle`.
    pub fn saw_credential(&self, needle: &str) -> bool {
        self.credentials_seen().iter().any(|c| c.contains(needle))
    }

    /// The last answered request.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.recorder.recent().pop()
    }

    /// The most recent answered requests, oldest first (at most `RECENT_LIMIT`, 256).
    pub fn recent_requests(&self) -> Vec<RecordedRequest> {
        self.shared.recorder.recent()
    }

    /// The keys of the recent requests, oldest first.
    pub fn key_sequence(&self) -> Vec<Option<String>> {
        self.recent_requests().into_iter().map(|r| r.key).collect()
    }

    /// Forgets every counter and recorded request (faults stay).
    pub fn reset_counters(&self) {
        self.shared.recorder.clear();
    }
}

impl Drop for MockGemini {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The credentials of a request, in the order the mock prefers them: `x-goog-api-key`, then
/// `?key=`, then `Authorization: Bearer`.
fn credentials(parts: &Parts) -> Vec<String> {
    let mut found = Vec::new();
    for value in parts.headers.get_all("x-goog-api-key") {
        found.push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let query = parts.uri.query().unwrap_or("");
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("key=") {
            found.push(value.to_owned());
        }
    }
    for value in parts.headers.get_all(header::AUTHORIZATION) {
        let value = String::from_utf8_lossy(value.as_bytes());
        if let Some(token) = value.strip_prefix("Bearer ") {
            found.push(token.trim().to_owned());
        }
    }
    found
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let route = Route::parse(&parts.method, parts.uri.path());
    let credentials = credentials(&parts);
    let key = credentials.first().cloned();
    shared
        .recorder
        .arrived(&credentials, key.as_deref(), route.model());

    let body = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .unwrap_or_default();
    let mut res = respond(&shared, key.as_deref(), &route, &parts, &body).await;
    res.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("mock-gemini"));
    let status = res.status().as_u16();
    let compression = shared
        .compression
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let res = compress::apply(&compression, &parts.method, &parts.headers, res);
    if res.headers().contains_key(header::CONTENT_ENCODING) {
        shared
            .compressed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    shared.recorder.answered(RecordedRequest {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        key,
        model: route.model().map(str::to_owned),
        body_len: body.len(),
        body: body.clone(),
        status,
    });
    res
}

/// What a fault decided for one call.
enum Verdict {
    Serve,
    Fail(GeminiError),
    Answer(http::Response<Bytes>),
    Delay(std::time::Duration),
    /// Serve, but a stream ends with an error event quoting the key.
    StreamError,
    /// Serve, but break the answer off.
    BreakOff,
}

fn verdict(shared: &Shared, key: &str, route: &Route) -> Verdict {
    let mut faults = shared.faults.lock().unwrap_or_else(|e| e.into_inner());
    let Some(state) = faults.get_mut(key) else {
        return Verdict::Serve;
    };
    state.calls += 1;
    let model = route.model().unwrap_or("gemini-2.0-flash");
    match &state.fault {
        Fault::Ok => Verdict::Serve,
        Fault::InvalidKey => Verdict::Fail(errors::invalid_key()),
        Fault::Suspended => Verdict::Fail(errors::suspended(key)),
        Fault::RateLimited {
            retry_delay,
            per_day,
        } => Verdict::Fail(errors::rate_limited(model, retry_delay, *per_day)),
        Fault::RateLimitedForModel {
            model: limited,
            retry_delay,
        } if route.model() == Some(limited.as_str()) => {
            Verdict::Fail(errors::rate_limited(limited, retry_delay, false))
        }
        Fault::RateLimitedForModel { .. } => Verdict::Serve,
        Fault::Flaky503 if state.calls % 2 == 1 => Verdict::Fail(errors::overloaded()),
        Fault::Flaky503 => Verdict::Serve,
        Fault::ServerError => Verdict::Fail(errors::internal()),
        Fault::Slow(delay) => Verdict::Delay(*delay),
        Fault::PermissionDenied => Verdict::Fail(errors::permission_denied()),
        Fault::HtmlPageQuotingKey => Verdict::Answer(errors::html_page_quoting(key)),
        Fault::StreamErrorQuotingKey => Verdict::StreamError,
        Fault::BreaksOff => Verdict::BreakOff,
    }
}

async fn respond(
    shared: &Shared,
    key: Option<&str>,
    route: &Route,
    parts: &Parts,
    body: &Bytes,
) -> Response {
    let Some(key) = key else {
        return errors::unregistered_caller().response();
    };
    let mut stream_error = None;
    let mut break_off = false;
    match verdict(shared, key, route) {
        Verdict::BreakOff => break_off = true,
        Verdict::Serve => {}
        Verdict::Fail(error) => return error.response(),
        Verdict::Answer(res) => return res.map(Body::from),
        Verdict::Delay(delay) => tokio::time::sleep(delay).await,
        Verdict::StreamError => stream_error = Some(errors::stream_error_quoting(key)),
    }
    if break_off {
        let res = answer(shared, route, parts, body, None).await;
        return broken(res).await;
    }
    answer(shared, route, parts, body, stream_error).await
}

/// `res` cut off: a stream after its first frame, any other body after half of it.
async fn broken(res: Response) -> Response {
    use http_body_util::BodyExt;
    let (parts, mut body) = res.into_parts();
    let streamed = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let first: Bytes = if streamed {
        match body.frame().await {
            Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
            _ => Bytes::new(),
        }
    } else {
        let all = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        all.slice(..all.len() / 2)
    };
    let frames: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(first),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "the mock broke the answer off",
        )),
    ];
    let body = Frames {
        frames: frames.into(),
        // The head and what came before leave the mock before the connection is cut, as they
        // do when a real upstream dies mid-answer (hyper drops unsent bytes on a body error).
        pause: Some(Box::pin(tokio::time::sleep(
            std::time::Duration::from_millis(50),
        ))),
    };
    let mut out = Response::from_parts(parts, Body::new(body));
    out.headers_mut().remove(header::CONTENT_LENGTH);
    out
}

/// A body of these frames, one after another, with a pause before an error (which ends it).
struct Frames {
    frames: std::collections::VecDeque<Result<Bytes, std::io::Error>>,
    pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if self.frames.front().is_some_and(Result::is_err) {
            if let Some(pause) = self.pause.as_mut() {
                std::task::ready!(std::future::Future::poll(pause.as_mut(), cx));
                self.pause = None;
            }
        }
        std::task::Poll::Ready(
            self.frames
                .pop_front()
                .map(|r| r.map(http_body::Frame::data)),
        )
    }
}

async fn answer(
    shared: &Shared,
    route: &Route,
    parts: &Parts,
    body: &Bytes,
    stream_error: Option<Value>,
) -> Response {
    match route {
        Route::Unknown => errors::path_not_found(parts.uri.path()).response(),
        Route::ListModels { .. } => list_models(shared, parts),
        Route::OpenAiModels => json(
            StatusCode::OK,
            &replies::openai_model_list(
                shared
                    .extra_listed
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
        ),
        Route::GetModel { version, model } => match replies::find_served_model(model) {
            Some(info) => json(StatusCode::OK, &info.json()),
            None => errors::model_not_found(version, model, "get").response(),
        },
        Route::Call {
            version,
            model,
            action,
        } => match replies::find_served_model(model).filter(|m| m.supports(action.name())) {
            Some(info) => call(shared, info, action, parts, body, stream_error),
            None => errors::model_not_found(version, model, action.name()).response(),
        },
    }
}

/// `GET models`, paged as Gemini pages it (`pageSize`, `pageToken`, `nextPageToken`). The
/// query is decoded as a form is (`%XX`, and `+` for a space).
fn list_models(shared: &Shared, parts: &Parts) -> Response {
    let query = format!("http://mock/?{}", parts.uri.query().unwrap_or(""));
    let pairs: Vec<(String, String)> = reqwest::Url::parse(&query)
        .map(|url| url.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    if param("pageToken").is_some() && shared.refuse_page_tokens.load(relaxed) {
        return errors::invalid_page("page token").response();
    }
    let extra = shared
        .extra_listed
        .load(std::sync::atomic::Ordering::Relaxed);
    let max = match shared
        .max_page_size
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        0 => replies::MAX_PAGE_SIZE,
        n => n,
    };
    match replies::model_page(
        replies::listed_models(extra),
        param("pageSize"),
        param("pageToken"),
        max,
        shared.repeat_page_tokens.load(relaxed),
    ) {
        Ok(page) => json(StatusCode::OK, &page),
        Err(what) => errors::invalid_page(what).response(),
    }
}

fn call(
    shared: &Shared,
    model: &ModelInfo,
    action: &Action,
    parts: &Parts,
    body: &Bytes,
    stream_error: Option<Value>,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return errors::invalid_json().response();
    };
    let prompt = replies::prompt_text(&request);
    let function_call = replies::function_call(&request);
    if matches!(action, Action::Generate | Action::Stream) {
        if let Some(refusal) = replies::refusal(model, &request) {
            return refusal.response();
        }
    }
    match action {
        Action::Generate | Action::Stream if request.get("contents").is_none() => {
            errors::no_contents().response()
        }
        Action::Generate => {
            let mut answer = vec![match &function_call {
                Some(call) => replies::function_call_content(model, call, &prompt),
                None => replies::generate_content(model, &prompt),
            }];
            replies::with_features(model, &request, &prompt, false, &mut answer);
            json(StatusCode::OK, &answer[0])
        }
        Action::Stream => {
            // Gemini streams a function call whole, in one event.
            let mut chunks = match &function_call {
                Some(call) => vec![replies::function_call_content(model, call, &prompt)],
                None => replies::stream_chunks(model, &prompt),
            };
            replies::with_features(model, &request, &prompt, true, &mut chunks);
            if let Some(error) = stream_error {
                chunks.truncate(1);
                chunks.push(error);
            }
            let sse = parts
                .uri
                .query()
                .is_some_and(|q| q.split('&').any(|p| p == "alt=sse"));
            if sse {
                let gate = shared
                    .gate
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                sse_response(chunks, gate, shared.abandoned_streams.clone())
            } else {
                // Without `alt=sse` Gemini streams one JSON array.
                json(StatusCode::OK, &Value::Array(chunks))
            }
        }
        Action::CountTokens => json(StatusCode::OK, &replies::count_tokens_reply(&prompt)),
        Action::Embed => json(StatusCode::OK, &replies::embed_content(&request)),
        Action::BatchEmbed => json(StatusCode::OK, &replies::batch_embed_contents(&request)),
        Action::Other(name) => {
            errors::path_not_found(&format!("{}:{name}", parts.uri.path())).response()
        }
    }
}

fn json(status: StatusCode, value: &Value) -> Response {
    let mut res = Response::new(Body::from(value.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    res
}
