//! `PseudoStreamLayer` over time, on tokio's paused clock: when keep-alives go out, what the
//! inner stack is asked, how failures after the `200` end the stream, and that a client going
//! away cancels the upstream call.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gemini_balance::sse::{decode_all, SseEvent};
use gemini_balance::stream::pseudo::{KeepAlive, PseudoStreamLayer, PseudoStreamed};
use gemini_balance::BoxError;
use http::{header, HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{service_fn, Layer, ServiceExt};

type Body = Full<Bytes>;
type Upstream = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

const GEMINI_STREAM: &str = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse";
const CHAT: &str = "/v1/chat/completions";

/// A request the upstream received.
#[derive(Debug, Clone)]
struct Seen {
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    pseudo: bool,
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }
}

/// What the upstream does: wait, then answer (or fail).
#[derive(Clone)]
enum Answer {
    Ok(String),
    Status(StatusCode, String),
    Error(&'static str),
}

/// Sets its flag when dropped (the upstream call was cancelled or finished).
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[derive(Clone, Default)]
struct Flags {
    dropped: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
}

fn upstream(delay: Duration, answer: Answer, log: Log, flags: Flags) -> Upstream {
    BoxCloneSyncService::new(service_fn(move |req: Request<Body>| {
        let answer = answer.clone();
        let log = log.clone();
        let flags = flags.clone();
        async move {
            let guard = DropFlag(flags.dropped.clone());
            let pseudo = req.extensions().get::<PseudoStreamed>().is_some();
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            log.0.lock().unwrap().push(Seen {
                uri: parts.uri,
                headers: parts.headers,
                body,
                pseudo,
            });
            tokio::time::sleep(delay).await;
            flags.finished.store(true, Ordering::SeqCst);
            drop(guard);
            let (status, body) = match answer {
                Answer::Ok(body) => (StatusCode::OK, body),
                Answer::Status(status, body) => (status, body),
                Answer::Error(message) => return Err(BoxError::from(message)),
            };
            let mut res = Response::new(Full::new(Bytes::from(body)));
            *res.status_mut() = status;
            res.headers_mut()
                .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
            Ok::<_, BoxError>(res)
        }
    }))
}

fn gemini_answer() -> String {
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": [{"text": "Hello"}]},
            "finishReason": "STOP",
            "index": 0
        }],
        "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1, "totalTokenCount": 2}
    })
    .to_string()
}

fn chat_answer() -> String {
    json!({
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gemini-2.5-flash",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    })
    .to_string()
}

fn chat_request(stream: bool, include_usage: bool) -> String {
    let mut body = json!({
        "model": "gemini-2.5-flash",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.5,
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": include_usage});
    }
    body.to_string()
}

fn post(path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len())
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

/// Every frame of a body with the time it arrived (from `start`).
async fn timed_frames<B>(body: B, start: Instant) -> Vec<(Duration, Bytes)>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let mut body = Box::pin(body);
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            frames.push((start.elapsed(), data));
        }
    }
    frames
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[tokio::test(start_paused = true)]
async fn keep_alives_go_out_every_interval_until_the_answer() {
    // (upstream delay, interval) → keep-alive times
    let table: [(f64, f64, &[f64]); 5] = [
        (0.0, 5.0, &[]),
        (4.9, 5.0, &[]),
        (12.0, 5.0, &[5.0, 10.0]),
        (17.0, 5.0, &[5.0, 10.0, 15.0]),
        (7.0, 2.0, &[2.0, 4.0, 6.0]),
    ];
    for (delay, interval, expected) in table {
        for (path, body, keep_alive) in [
            (GEMINI_STREAM, r#"{"contents":[]}"#.to_owned(), &b"\r\n"[..]),
            (CHAT, chat_request(true, false), &b": keep-alive\n\n"[..]),
        ] {
            let answer = if path == CHAT {
                chat_answer()
            } else {
                gemini_answer()
            };
            let service = PseudoStreamLayer::new()
                .keep_alive_interval(secs(interval))
                .layer(upstream(
                    secs(delay),
                    Answer::Ok(answer),
                    Log::default(),
                    Flags::default(),
                ));
            let start = Instant::now();
            let res = service.oneshot(post(path, &body)).await.unwrap();
            assert_eq!(start.elapsed(), Duration::ZERO, "the 200 goes out at once");
            assert_eq!(res.status(), StatusCode::OK);
            let frames = timed_frames(res.into_body(), start).await;
            let (keep_alives, rest) = frames.split_at(frames.len() - 1);
            let times: Vec<Duration> = keep_alives.iter().map(|(t, _)| *t).collect();
            let expected_times: Vec<Duration> = expected.iter().map(|s| secs(*s)).collect();
            assert_eq!(
                times, expected_times,
                "{path}: delay {delay}s, interval {interval}s"
            );
            assert!(keep_alives.iter().all(|(_, b)| b == keep_alive), "{path}");
            assert_eq!(
                rest[0].0,
                secs(delay),
                "{path}: the answer goes out when it arrives"
            );
            assert!(rest[0].1.starts_with(b"data: {"), "{path}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_inner_stack_gets_the_non_streaming_request() {
    let log = Log::default();
    let service = PseudoStreamLayer::new().layer(upstream(
        Duration::ZERO,
        Answer::Ok(gemini_answer()),
        log.clone(),
        Flags::default(),
    ));
    let body = r#"{"contents":[{"parts":[{"text":"Hi"}]}]}"#;
    let path = "/v1beta/models/gemini-2.5-flash%3AstreamGenerateContent?alt=sse&key=client";
    let res = service.clone().oneshot(post(path, body)).await.unwrap();
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
    assert_eq!(res.headers()[header::CACHE_CONTROL], "no-cache");
    res.into_body().collect().await.unwrap();
    let seen = &log.all()[0];
    assert_eq!(
        seen.uri,
        "/v1beta/models/gemini-2.5-flash%3AgenerateContent?key=client"
    );
    assert_eq!(seen.body, body.as_bytes(), "the Gemini body is not touched");
    assert!(seen.pseudo);

    let res = service
        .oneshot(post(CHAT, &chat_request(true, true)))
        .await
        .unwrap();
    assert_eq!(
        res.headers()[header::CONTENT_TYPE],
        "text/event-stream; charset=utf-8"
    );
    res.into_body().collect().await.unwrap();
    let seen = &log.all()[1];
    let sent: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(
        sent,
        json!({
            "model": "gemini-2.5-flash",
            "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 0.5,
            "stream": false
        })
    );
    assert_eq!(
        seen.headers[header::CONTENT_LENGTH],
        seen.body.len().to_string()
    );
    assert!(seen.pseudo);
}

#[tokio::test(start_paused = true)]
async fn what_is_not_faked_passes_through() {
    let cases = [
        (
            "a non-streaming OpenAI request",
            CHAT.to_owned(),
            chat_request(false, false),
        ),
        (
            "a Gemini stream without alt=sse (JSON array)",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent".to_owned(),
            "{}".to_owned(),
        ),
        (
            "a non-streaming Gemini request",
            "/v1beta/models/gemini-2.5-flash:generateContent".to_owned(),
            "{}".to_owned(),
        ),
        (
            "a model the predicate excludes",
            GEMINI_STREAM.replace("2.5-flash", "2.0-flash"),
            "{}".to_owned(),
        ),
        (
            "an OpenAI model the predicate excludes",
            CHAT.to_owned(),
            chat_request(true, false).replace("2.5-flash", "2.0-flash"),
        ),
    ];
    for (case, path, body) in cases {
        let log = Log::default();
        let service = PseudoStreamLayer::new()
            .models(|model| model.starts_with("gemini-2.5"))
            .layer(upstream(
                Duration::ZERO,
                Answer::Ok("{\"upstream\":true}".into()),
                log.clone(),
                Flags::default(),
            ));
        let res = service.oneshot(post(&path, &body)).await.unwrap();
        assert!(!res.body().is_pseudo_stream(), "{case}");
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/json",
            "{case}"
        );
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"{\"upstream\":true}", "{case}");
        let seen = &log.all()[0];
        assert_eq!(seen.uri.to_string(), path, "{case}");
        assert_eq!(seen.body, body.as_bytes(), "{case}");
        assert!(!seen.pseudo, "{case}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_layer_built_off_passes_streams_through() {
    for (on, pseudo) in [(false, false), (true, true)] {
        let service = PseudoStreamLayer::new().enabled(on).layer(upstream(
            Duration::ZERO,
            Answer::Ok(gemini_answer()),
            Log::default(),
            Flags::default(),
        ));
        let res = service.oneshot(post(GEMINI_STREAM, "{}")).await.unwrap();
        assert_eq!(res.body().is_pseudo_stream(), pseudo, "enabled({on})");
    }
}

#[tokio::test(start_paused = true)]
async fn empty_chunk_keep_alives_are_chunks_without_a_finish_reason() {
    // OpenAI: the keep-alive chunks carry the id the answer's chunks carry.
    let service = PseudoStreamLayer::new()
        .keep_alive(KeepAlive::EmptyChunk)
        .layer(upstream(
            secs(11.0),
            Answer::Ok(chat_answer()),
            Log::default(),
            Flags::default(),
        ));
    let res = service
        .oneshot(post(CHAT, &chat_request(true, true)))
        .await
        .unwrap();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let events = decode_all(&bytes);
    let chunks: Vec<Value> = events
        .iter()
        .filter(|e| !e.is_done())
        .map(|e| e.json().unwrap())
        .collect();
    let (keep_alives, answer) = chunks.split_at(2);
    for chunk in keep_alives {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "gemini-2.5-flash");
        let choices = chunk["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 1, "never an empty `choices`");
        assert_eq!(choices[0]["delta"], json!({"content": ""}));
        assert!(choices[0]["finish_reason"].is_null());
    }
    let id = &keep_alives[0]["id"];
    assert!(id.as_str().unwrap().starts_with("chatcmpl-"));
    assert!(
        chunks.iter().all(|c| &c["id"] == id),
        "one id for the whole stream"
    );
    assert_eq!(answer.last().unwrap()["usage"]["total_tokens"], 2);

    // Gemini.
    let service = PseudoStreamLayer::new()
        .keep_alive(KeepAlive::EmptyChunk)
        .layer(upstream(
            secs(6.0),
            Answer::Ok(gemini_answer()),
            Log::default(),
            Flags::default(),
        ));
    let res = service.oneshot(post(GEMINI_STREAM, "{}")).await.unwrap();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let events = decode_all(&bytes);
    assert_eq!(events.len(), 2);
    let keep_alive: Value = events[0].json().unwrap();
    assert_eq!(
        keep_alive["candidates"][0]["content"]["parts"],
        json!([{"text": ""}])
    );
    assert!(keep_alive["candidates"][0].get("finishReason").is_none());
}

/// Drains a body, checking that it ends cleanly (no body error) and says so.
async fn drain_cleanly<B>(body: B) -> Vec<(Duration, Bytes)>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let start = Instant::now();
    let mut body = body;
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("no body error: failures are events");
        frames.push((start.elapsed(), frame.into_data().unwrap()));
    }
    assert!(body.is_end_stream());
    frames
}

fn only_event(bytes: &Bytes) -> SseEvent {
    let events = decode_all(bytes);
    assert_eq!(events.len(), 1, "{bytes:?}");
    events.into_iter().next().unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_gemini_failure_after_a_keep_alive_is_an_error_event() {
    let upstream_error = json!({
        "error": {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]
        }
    });
    let service = PseudoStreamLayer::new().layer(upstream(
        secs(7.0),
        Answer::Status(StatusCode::TOO_MANY_REQUESTS, upstream_error.to_string()),
        Log::default(),
        Flags::default(),
    ));
    let res = service.oneshot(post(GEMINI_STREAM, "{}")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let frames = drain_cleanly(res.into_body()).await;
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0], (secs(5.0), Bytes::from_static(b"\r\n")));
    assert_eq!(frames[1].0, secs(7.0));
    assert!(frames[1].1.ends_with(b"\r\n\r\n"));
    let event: Value = only_event(&frames[1].1).json().unwrap();
    assert_eq!(
        event, upstream_error,
        "the upstream's error object, as sent"
    );
    assert!(frames[1].1.starts_with(b"data: {\"error\":"));
}

#[tokio::test(start_paused = true)]
async fn an_openai_failure_after_a_keep_alive_is_an_error_event_without_done() {
    // The inner stack answered in Gemini's format (as Gemini itself would).
    let gemini_error = json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}});
    let service = PseudoStreamLayer::new().layer(upstream(
        secs(6.0),
        Answer::Status(StatusCode::SERVICE_UNAVAILABLE, gemini_error.to_string()),
        Log::default(),
        Flags::default(),
    ));
    let res = service
        .oneshot(post(CHAT, &chat_request(true, true)))
        .await
        .unwrap();
    let frames = drain_cleanly(res.into_body()).await;
    assert_eq!(frames.len(), 2);
    assert_eq!(&frames[0].1[..], b": keep-alive\n\n");
    let event: Value = only_event(&frames[1].1).json().unwrap();
    assert_eq!(
        event,
        json!({"error": {
            "message": "The model is overloaded.",
            "type": "server_error",
            "param": null,
            "code": "service_unavailable"
        }})
    );
    assert!(!frames[1].1.windows(6).any(|w| w == b"[DONE]"));
}

#[tokio::test(start_paused = true)]
async fn service_errors_and_bad_answers_become_error_events() {
    type Check = fn(&Value);
    let cases: [(&str, &str, Answer, Check); 5] = [
        (
            "a transport error",
            GEMINI_STREAM,
            Answer::Error("connection reset by peer"),
            |e| {
                assert_eq!(e["error"]["code"], 502);
                assert_eq!(e["error"]["status"], "UNAVAILABLE");
                assert!(e["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("the upstream request failed"));
            },
        ),
        (
            "a transport error (OpenAI)",
            CHAT,
            Answer::Error("connection reset by peer"),
            |e| {
                assert_eq!(e["error"]["type"], "server_error");
                assert!(e["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("the upstream request failed"));
            },
        ),
        (
            "a non-JSON success",
            GEMINI_STREAM,
            Answer::Ok("<html>oops</html>".into()),
            |e| {
                assert_eq!(e["error"]["code"], 502);
            },
        ),
        (
            "a success that is not a chat completion",
            CHAT,
            Answer::Ok("{\"candidates\":[]}".into()),
            |e| {
                assert!(e["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("not a chat completion"));
            },
        ),
        (
            "an error without a JSON body",
            GEMINI_STREAM,
            Answer::Status(StatusCode::BAD_GATEWAY, "bad gateway".into()),
            |e| {
                assert_eq!(
                    e["error"],
                    json!({"code": 502, "message": "the upstream answered 502 Bad Gateway", "status": "UNAVAILABLE"})
                );
            },
        ),
    ];
    for (case, path, answer, check) in cases {
        let body = if path == CHAT {
            chat_request(true, false)
        } else {
            "{}".to_owned()
        };
        let service = PseudoStreamLayer::new().layer(upstream(
            secs(1.0),
            answer,
            Log::default(),
            Flags::default(),
        ));
        let res = service.oneshot(post(path, &body)).await.unwrap();
        let frames = drain_cleanly(res.into_body()).await;
        assert_eq!(frames.len(), 1, "{case}");
        check(&only_event(&frames[0].1).json().unwrap());
    }
}

#[tokio::test(start_paused = true)]
async fn an_answer_over_the_limit_is_an_error_event() {
    let service = PseudoStreamLayer::new()
        .max_answer_bytes(64)
        .layer(upstream(
            secs(1.0),
            Answer::Ok(gemini_answer()),
            Log::default(),
            Flags::default(),
        ));
    let res = service.oneshot(post(GEMINI_STREAM, "{}")).await.unwrap();
    let frames = drain_cleanly(res.into_body()).await;
    let event: Value = only_event(&frames[0].1).json().unwrap();
    assert!(event["error"]["message"]
        .as_str()
        .unwrap()
        .contains("larger than 64 bytes"));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_goes_away_cancels_the_upstream_call() {
    for (path, body) in [
        (GEMINI_STREAM, "{}".to_owned()),
        (CHAT, chat_request(true, false)),
    ] {
        let flags = Flags::default();
        let service = PseudoStreamLayer::new().layer(upstream(
            secs(60.0),
            Answer::Ok(gemini_answer()),
            Log::default(),
            flags.clone(),
        ));
        let res = service.oneshot(post(path, &body)).await.unwrap();
        let mut body: Pin<Box<_>> = Box::pin(res.into_body());
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        assert!(
            !flags.dropped.load(Ordering::SeqCst),
            "{path}: the call is running"
        );
        drop(body); // the client disconnects
        assert!(
            flags.dropped.load(Ordering::SeqCst),
            "{path}: the call is dropped"
        );
        tokio::time::sleep(secs(120.0)).await;
        assert!(
            !flags.finished.load(Ordering::SeqCst),
            "{path}: and never finishes"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_oversized_openai_request_is_refused_in_openai_format() {
    let service = PseudoStreamLayer::new()
        .max_request_bytes(16)
        .layer(upstream(
            Duration::ZERO,
            Answer::Ok(chat_answer()),
            Log::default(),
            Flags::default(),
        ));
    // Without Content-Length the body is read and found too large.
    let body = chat_request(true, false);
    let req = Request::post(CHAT)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let res = service.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
}
