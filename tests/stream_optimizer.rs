//! The stream optimizer on tokio's paused clock: which pieces go out, when, and what each one
//! carries; what passes through untouched; parameters changed while a stream runs.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gemini_balance::sse::decode_all;
use gemini_balance::stream::optimizer::{OptimizedBody, OptimizerParams, StreamOptimizerLayer};
use gemini_balance::stream::pseudo::PseudoStreamLayer;
use http::{header, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::time::{Instant, Sleep};
use tower::{service_fn, Layer, ServiceExt};

/// A body that sends each frame at its time (from when the body was made).
struct Scripted {
    start: Instant,
    frames: VecDeque<(Duration, Bytes)>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Scripted {
    fn new(frames: impl IntoIterator<Item = (u64, String)>) -> Self {
        Scripted {
            start: Instant::now(),
            frames: frames
                .into_iter()
                .map(|(ms, s)| (Duration::from_millis(ms), Bytes::from(s)))
                .collect(),
            sleep: None,
        }
    }

    fn at_once(events: &[String]) -> Self {
        Self::new(events.iter().map(|e| (0, e.clone())))
    }
}

impl Body for Scripted {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let Some((at, _)) = self.frames.front() else {
            return Poll::Ready(None);
        };
        let deadline = self.start + *at;
        if Instant::now() < deadline {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        let (_, data) = self.frames.pop_front().unwrap();
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

/// The frames of a body with their arrival times (from the first poll).
async fn timed<B: Body<Data = Bytes> + Unpin>(mut body: B) -> Vec<(Duration, Bytes)>
where
    B::Error: std::fmt::Debug,
{
    let start = Instant::now();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        out.push((start.elapsed(), frame.unwrap().into_data().unwrap()));
    }
    out
}

fn on() -> OptimizerParams {
    OptimizerParams::enabled()
}

fn gemini_event(chunk: Value) -> String {
    format!("data: {chunk}\r\n\r\n")
}

fn openai_event(chunk: Value) -> String {
    format!("data: {chunk}\n\n")
}

fn json_of(frame: &Bytes) -> Value {
    let events = decode_all(frame);
    assert_eq!(events.len(), 1, "one event per frame: {frame:?}");
    events[0].json().unwrap()
}

fn ms(micros: u64) -> Duration {
    Duration::from_micros(micros)
}

/// A delay as tokio's timer waits it: rounded up to the millisecond (its resolution).
fn as_waited(delay: Duration) -> Duration {
    Duration::from_millis(delay.as_micros().div_ceil(1000) as u64)
}

fn gemini_text(text: &str) -> Value {
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": [{"text": text}]},
            "finishReason": "STOP",
            "index": 0,
            "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}]
        }],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5},
        "modelVersion": "gemini-2.5-flash",
        "responseId": "r1"
    })
}

#[tokio::test(start_paused = true)]
async fn short_long_and_medium_texts() {
    // (text length, expected piece count, piece length, gap between pieces)
    let table = [
        (5, 5, 1, ms(24_000)),
        (10, 10, 1, ms(24_000)),
        (30, 30, 1, ms(18_539)),
        (50, 10, 5, ms(16_000)),
        (60, 12, 5, ms(16_000)),
        (52, 11, 5, ms(16_000)),
    ];
    for (len, count, piece_len, gap) in table {
        let text: String = ('a'..='z').cycle().take(len).collect();
        let body = OptimizedBody::new(Scripted::at_once(&[gemini_event(gemini_text(&text))]), on());
        let frames = timed(body).await;
        assert_eq!(frames.len(), count, "{len} chars");
        let times: Vec<Duration> = frames.iter().map(|(t, _)| *t).collect();
        let expected: Vec<Duration> = (0..count as u32).map(|i| as_waited(gap) * i).collect();
        assert_eq!(
            times, expected,
            "{len} chars: the first piece at once, then one per gap"
        );
        let chunks: Vec<Value> = frames.iter().map(|(_, f)| json_of(f)).collect();
        let pieces: Vec<&str> = chunks
            .iter()
            .map(|c| {
                c["candidates"][0]["content"]["parts"][0]["text"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(pieces.concat(), text, "{len} chars");
        assert!(pieces[..count - 1]
            .iter()
            .all(|p| p.chars().count() == piece_len));
        // Only the last piece carries the rest of the chunk.
        let (last, before) = chunks.split_last().unwrap();
        for piece in before {
            assert_eq!(
                piece,
                &json!({
                    "candidates": [{"content": {"role": "model", "parts": [{"text": piece["candidates"][0]["content"]["parts"][0]["text"]}]}, "index": 0}],
                    "modelVersion": "gemini-2.5-flash",
                    "responseId": "r1"
                })
            );
        }
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(last["usageMetadata"]["totalTokenCount"], 5);
        assert!(last["candidates"][0]["safetyRatings"].is_array());
        // Gemini framing is kept.
        assert!(frames.iter().all(|(_, f)| f.ends_with(b"\r\n\r\n")));
    }
}

#[tokio::test(start_paused = true)]
async fn thoughts_keep_their_flag_and_metadata_rides_on_the_last_piece() {
    let chunk = json!({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "Hmm", "thought": true},
                {"text": "Hi!", "thoughtSignature": "sig"},
                {"functionCall": {"name": "f", "args": {}}}
            ]},
            "finishReason": "STOP"
        }]
    });
    let body = OptimizedBody::new(Scripted::at_once(&[gemini_event(chunk)]), on());
    let chunks: Vec<Value> = timed(body).await.iter().map(|(_, f)| json_of(f)).collect();
    assert_eq!(chunks.len(), 6);
    let parts = |c: &Value| c["candidates"][0]["content"]["parts"].clone();
    assert_eq!(parts(&chunks[0]), json!([{"text": "H", "thought": true}]));
    assert_eq!(parts(&chunks[2]), json!([{"text": "m", "thought": true}]));
    assert_eq!(parts(&chunks[3]), json!([{"text": "H"}]));
    assert_eq!(
        parts(&chunks[5]),
        json!([{"text": "!", "thoughtSignature": "sig"}, {"functionCall": {"name": "f", "args": {}}}]),
        "the function call and the signature go once, on the last piece"
    );
    let calls = chunks
        .iter()
        .filter(|c| c.to_string().contains("functionCall"))
        .count();
    assert_eq!(calls, 1);
}

#[tokio::test(start_paused = true)]
async fn openai_pieces_carry_only_their_text() {
    let chunk = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{
            "index": 0,
            "delta": {"role": "assistant", "reasoning_content": "Think", "content": "Hi",
                      "tool_calls": [{"index": 0, "id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            "finish_reason": "tool_calls"
        }],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    });
    let body = OptimizedBody::new(
        Scripted::at_once(&[openai_event(chunk), "data: [DONE]\n\n".to_owned()]),
        on(),
    );
    let frames = timed(body).await;
    assert_eq!(&frames.last().unwrap().1[..], b"data: [DONE]\n\n");
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|(_, f)| json_of(f))
        .collect();
    assert_eq!(chunks.len(), 7);
    let delta = |i: usize| chunks[i]["choices"][0]["delta"].clone();
    assert_eq!(
        delta(0),
        json!({"role": "assistant", "reasoning_content": "T"})
    );
    assert_eq!(delta(4), json!({"reasoning_content": "k"}));
    assert_eq!(delta(5), json!({"content": "H"}));
    assert_eq!(delta(6)["content"], "i");
    assert_eq!(delta(6)["tool_calls"][0]["id"], "c");
    assert!(delta(6).get("reasoning_content").is_none() && delta(6).get("role").is_none());
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i == chunks.len() - 1;
        assert_eq!(chunk["id"], "chatcmpl-1");
        assert_eq!(
            chunk["choices"][0]["finish_reason"].is_null(),
            !last,
            "piece {i}"
        );
        assert_eq!(chunk.get("usage").is_some(), last, "piece {i}");
        assert_eq!(
            chunk["choices"][0]["delta"].get("tool_calls").is_some(),
            last,
            "piece {i}"
        );
    }
    // LF framing is kept.
    assert!(frames
        .iter()
        .all(|(_, f)| f.ends_with(b"\n\n") && !f.ends_with(b"\r\n\r\n")));
}

#[tokio::test(start_paused = true)]
async fn everything_else_passes_byte_for_byte() {
    let events = [
        ": keep-alive\n\n".to_owned(),
        "\r\n".to_owned(),
        gemini_event(
            json!({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}),
        ),
        gemini_event(json!({"candidates": [
            {"content": {"parts": [{"text": "two"}]}, "index": 0},
            {"content": {"parts": [{"text": "candidates"}]}, "index": 1}
        ]})),
        gemini_event(json!({"candidates": [{"content": {"parts": [{"text": "x"}]}}]})),
        gemini_event(json!({"promptFeedback": {"blockReason": "SAFETY"}})),
        "event: ping\ndata: {\"choices\":[{\"delta\":{\"content\":\"named event\"}}]}\n\n"
            .to_owned(),
        "data: not json\n\n".to_owned(),
        "data: [DONE]\n\n".to_owned(),
    ];
    let input: String = events.concat();
    let body = OptimizedBody::new(Scripted::at_once(&events), on());
    let frames = timed(body).await;
    assert!(frames.iter().all(|(t, _)| t.is_zero()), "nothing waits");
    let output: Vec<u8> = frames.iter().flat_map(|(_, f)| f.to_vec()).collect();
    assert_eq!(String::from_utf8(output).unwrap(), input);

    // An event split across frames, and one whose end is missing, are kept too.
    let split = gemini_event(gemini_text("ab"));
    let (a, b) = split.split_at(20);
    let body = OptimizedBody::new(
        Scripted::new([
            (0, a.to_owned()),
            (10, b.to_owned()),
            (0, "data: {\"cut".to_owned()),
        ]),
        on(),
    );
    let frames = timed(body).await;
    let chunks: Vec<Value> = frames[..2].iter().map(|(_, f)| json_of(f)).collect();
    assert_eq!(
        chunks[0]["candidates"][0]["content"]["parts"][0]["text"],
        "a"
    );
    assert_eq!(&frames[2].1[..], b"data: {\"cut");
}

#[tokio::test(start_paused = true)]
async fn a_real_stream_is_rechunked_without_delaying_its_first_byte() {
    // Three upstream events, 100 ms apart.
    let texts = ["Hello", " worl", "d!"];
    let script = texts.iter().enumerate().map(|(i, t)| {
        let mut chunk = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": t}]}, "index": 0}]});
        if i == 2 {
            chunk["candidates"][0]["finishReason"] = json!("STOP");
            chunk["usageMetadata"] = json!({"totalTokenCount": 9});
        }
        (100 * i as u64, gemini_event(chunk))
    });
    let frames = timed(OptimizedBody::new(Scripted::new(script), on())).await;
    assert_eq!(
        frames[0].0,
        Duration::ZERO,
        "the first byte is never delayed"
    );
    let chunks: Vec<Value> = frames.iter().map(|(_, f)| json_of(f)).collect();
    let text: String = chunks
        .iter()
        .map(|c| {
            c["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(text, "Hello world!");
    assert_eq!(chunks.len(), 12);
    let with_usage = chunks
        .iter()
        .filter(|c| c.get("usageMetadata").is_some())
        .count();
    assert_eq!(with_usage, 1);
    // "Hello" takes 4 × 24 ms; " worl" arrives at 100 ms and starts at once.
    assert_eq!(frames[4].0, ms(96_000));
    assert_eq!(frames[5].0, ms(100_000));
}

#[tokio::test(start_paused = true)]
async fn switched_off_events_pass_whole() {
    let events = [
        gemini_event(gemini_text("abc")),
        gemini_event(gemini_text("abcdef")),
    ];
    let body = OptimizedBody::new(Scripted::at_once(&events), OptimizerParams::default());
    assert_eq!(
        timed(body).await.len(),
        2,
        "switched off: events pass whole"
    );
}

#[tokio::test(start_paused = true)]
async fn the_layer_is_off_by_default_and_touches_only_event_streams() {
    let event = gemini_event(gemini_text("Hello"));
    let inner = move |content_type: &'static str| {
        let event = event.clone();
        service_fn(move |_req: Request<Full<Bytes>>| {
            let event = event.clone();
            async move {
                let mut res = Response::new(Full::new(Bytes::from(event)));
                res.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                Ok::<_, Infallible>(res)
            }
        })
    };
    let count = |res: Response<OptimizedBody<Full<Bytes>>>| async move {
        decode_all(&res.into_body().collect().await.unwrap().to_bytes()).len()
    };
    let layer = StreamOptimizerLayer::default();
    let res = layer
        .layer(inner("text/event-stream"))
        .oneshot(Request::new(Full::default()))
        .await
        .unwrap();
    assert_eq!(count(res).await, 1, "off by default");
    let layer = StreamOptimizerLayer::new(OptimizerParams::enabled());
    let res = layer
        .layer(inner("text/event-stream; charset=utf-8"))
        .oneshot(Request::new(Full::default()))
        .await
        .unwrap();
    assert_eq!(count(res).await, 5);
    let res = layer
        .layer(inner("application/json"))
        .oneshot(Request::new(Full::default()))
        .await
        .unwrap();
    assert_eq!(count(res).await, 1, "not an event stream");
}

#[tokio::test(start_paused = true)]
async fn it_smooths_pseudo_streams_too() {
    let inner = service_fn(|_req: Request<Full<Bytes>>| async {
        let answer = json!({
            "id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "stop"}]
        });
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(answer.to_string()))))
    });
    let service = StreamOptimizerLayer::new(OptimizerParams::enabled())
        .layer(PseudoStreamLayer::new().layer(inner));
    let req = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}"#,
        )))
        .unwrap();
    let res = service.oneshot(req).await.unwrap();
    let frames = timed(res.into_body()).await;
    let events: Vec<_> = frames.iter().flat_map(|(_, f)| decode_all(f)).collect();
    assert!(events.last().unwrap().is_done());
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| e.json().unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hi there");
    assert_eq!(
        chunks.len(),
        9,
        "8 one-character pieces and the finish chunk"
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test(start_paused = true)]
async fn events_over_the_limit_pass_whole() {
    let big = gemini_event(gemini_text(&"x".repeat(1200 * 1024)));
    let after = gemini_event(gemini_text("Hello"));

    // Arriving whole: the big event passes as it is, the next one is re-chunked.
    let body = OptimizedBody::new(Scripted::at_once(&[big.clone(), after.clone()]), on());
    let frames = timed(body).await;
    assert_eq!(frames.len(), 6);
    assert_eq!(frames[0].1, big.as_bytes());
    assert_eq!(
        decode_all(&frames[1].1)[0].json::<Value>().unwrap()["candidates"][0]["content"]["parts"]
            [0]["text"],
        "H"
    );

    // Arriving in pieces: once the unfinished event is over the limit, the rest passes unread.
    let pieces: Vec<String> = big
        .as_bytes()
        .chunks(64 * 1024)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .chain([after.clone()])
        .collect();
    let body = OptimizedBody::new(Scripted::at_once(&pieces), on());
    let output: Vec<u8> = timed(body)
        .await
        .iter()
        .flat_map(|(_, f)| f.to_vec())
        .collect();
    assert_eq!(output, [big, after].concat().into_bytes());
}
