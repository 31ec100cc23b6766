#![allow(missing_docs)] // criterion_group! generates an undocumented function
//! What reading token usage out of an answer costs: `UsageTap` (the usage layer's reader: the
//! end of a JSON answer read in place, a flat `usageMetadata` read in one pass, one `data:` line
//! per event) against parsing the answer into a `serde_json::Value` and reading it with
//! `usage_from_json`. Gemini answers of about 1 KiB, 64 KiB of text and 1 MiB with an inline
//! image; an OpenAI answer; a Gemini SSE stream of 100 events. Figures go to
//! `docs/performance.md`.
//!
//! `cargo bench --bench usage_extract -- --warm-up-time 1 --measurement-time 3`

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gemini_balance::usage::{usage_from_json, TokenUsage, UsageTap};
use serde_json::{json, Value};

const USAGE: &str = r#"{"promptTokenCount":12,"candidatesTokenCount":340,"totalTokenCount":352,"promptTokensDetails":[{"modality":"TEXT","tokenCount":12}],"thoughtsTokenCount":0}"#;

/// A Gemini answer with `text` and `inline` base64 bytes of an image, usage and model version
/// last, as Gemini sends them.
fn gemini_answer(text: usize, inline: usize) -> Vec<u8> {
    let mut parts = vec![json!({"text": "lorem ipsum dolor sit amet, ".repeat(text / 28 + 1)})];
    if inline > 0 {
        parts.push(json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo".repeat(inline / 11 + 1)}}));
    }
    let usage: Value = serde_json::from_str(USAGE).expect("usage parses");
    serde_json::to_vec(&json!({
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": usage,
        "modelVersion": "gemini-2.5-flash",
        "responseId": "a1b2c3d4e5f6",
    }))
    .expect("serializes")
}

fn openai_answer(text: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gemini-2.5-flash",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "lorem ipsum ".repeat(text / 12 + 1)}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 340, "total_tokens": 352,
            "completion_tokens_details": {"reasoning_tokens": 0}},
    }))
    .expect("serializes")
}

/// A Gemini SSE stream: `events` events of about 200 bytes of text, each with usage.
fn gemini_sse(events: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..events {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&gemini_answer(200, 0));
        out.extend_from_slice(b"\r\n\r\n");
    }
    out
}

/// The body in 16 KiB chunks, as a connection delivers it.
fn chunks(body: &[u8]) -> Vec<Bytes> {
    body.chunks(16 * 1024).map(Bytes::copy_from_slice).collect()
}

fn tap(content_type: &str, chunks: &[Bytes]) -> Option<TokenUsage> {
    let mut tap = UsageTap::for_content_type(Some(content_type));
    for chunk in chunks {
        tap.observe(chunk);
    }
    tap.finish()
}

/// What a user without the tap would write: collect, parse, read.
fn parse_whole(chunks: &[Bytes]) -> Option<TokenUsage> {
    let body: Vec<u8> = chunks.concat();
    usage_from_json(&serde_json::from_slice::<Value>(&body).ok()?)
}

fn parse_events(chunks: &[Bytes]) -> Option<TokenUsage> {
    let body: Vec<u8> = chunks.concat();
    let mut last = None;
    for event in body.split(|&b| b == b'\n') {
        if let Some(data) = event.strip_prefix(b"data: ") {
            let data = data.strip_suffix(b"\r").unwrap_or(data);
            if let Ok(value) = serde_json::from_slice::<Value>(data) {
                last = usage_from_json(&value).or(last);
            }
        }
    }
    last
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("usage_json");
    for (name, body) in [
        ("gemini_1k", gemini_answer(700, 0)),
        ("gemini_64k", gemini_answer(64 * 1024, 0)),
        ("gemini_1m_image", gemini_answer(200, 1024 * 1024)),
        ("openai_1k", openai_answer(700)),
    ] {
        let body = chunks(&body);
        let expected = parse_whole(&body);
        assert!(expected.is_some() && tap("application/json", &body) == expected);
        group.throughput(Throughput::Bytes(body.iter().map(|c| c.len() as u64).sum()));
        group.bench_with_input(BenchmarkId::new("tap", name), &body, |b, body| {
            b.iter(|| tap("application/json", black_box(body)))
        });
        group.bench_with_input(BenchmarkId::new("serde_value", name), &body, |b, body| {
            b.iter(|| parse_whole(black_box(body)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("usage_sse");
    let body = chunks(&gemini_sse(100));
    let expected = parse_events(&body);
    assert!(expected.is_some() && tap("text/event-stream", &body) == expected);
    group.throughput(Throughput::Bytes(body.iter().map(|c| c.len() as u64).sum()));
    group.bench_with_input(
        BenchmarkId::new("tap", "gemini_100_events"),
        &body,
        |b, body| b.iter(|| tap("text/event-stream", black_box(body))),
    );
    group.bench_with_input(
        BenchmarkId::new("serde_value", "gemini_100_events"),
        &body,
        |b, body| b.iter(|| parse_events(black_box(body))),
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
