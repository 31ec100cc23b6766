#![allow(missing_docs)] // criterion_group! generates an undocumented function
//! The parameter filter's cost per request body: 4 KiB and 256 KiB, Gemini and OpenAI, a body
//! that needs no change (forwarded as is) and one that is rewritten (nulls dropped, values
//! coerced, re-serialized). Figures go to `docs/performance.md`.
//!
//! `cargo bench --bench filter`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gemini_balance::filter::{filter_body, DropList, DropRule, Filtered, Shape};
use serde_json::{json, Value};

/// A Gemini conversation of `turns` turns of `chars` characters each.
fn gemini_body(target: usize, dirty: bool) -> Vec<u8> {
    let mut turns = Vec::new();
    let mut i = 0;
    loop {
        let role = if i % 2 == 0 { "user" } else { "model" };
        let text = format!("Turn {i}: {}", "lorem ipsum dolor sit amet, ".repeat(14));
        let mut part = json!({"text": text});
        if dirty && i % 3 == 0 {
            part["thought"] = Value::Null;
        }
        turns.push(json!({"role": role, "parts": [part]}));
        i += 1;
        let body = gemini_wrap(&turns, dirty);
        if body.len() >= target {
            return body;
        }
    }
}

fn gemini_wrap(turns: &[Value], dirty: bool) -> Vec<u8> {
    let mut body = json!({
        "contents": turns,
        "systemInstruction": {"parts": [{"text": "You are a helpful assistant."}]},
        "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather by city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}],
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
        "generationConfig": {"temperature": 0.7, "topP": 0.95, "maxOutputTokens": 2048,
            "thinkingConfig": {"thinkingBudget": 1024}}
    });
    if dirty {
        body["generationConfig"]["temperature"] = json!("0.7");
        body["generationConfig"]["maxOutputTokens"] = json!(2048.0);
        body["generationConfig"]["stopSequences"] = Value::Null;
        body["toolConfig"] = Value::Null;
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

/// An OpenAI chat request of about `target` bytes.
fn openai_body(target: usize, dirty: bool) -> Vec<u8> {
    let mut messages = vec![json!({"role": "system", "content": "You are a helpful assistant."})];
    let mut i = 0;
    loop {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(json!({"role": role, "content": format!("Message {i}: {}", "lorem ipsum dolor sit amet, ".repeat(14))}));
        i += 1;
        let mut body = json!({"model": "gemini-2.5-flash", "messages": messages, "temperature": 0.7,
            "max_tokens": 1024, "stream": true, "stream_options": {"include_usage": true}});
        if dirty {
            body["temperature"] = json!("0.7");
            body["stop"] = json!("END");
            body["top_p"] = Value::Null;
            body["tools"] = Value::Null;
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        if bytes.len() >= target {
            return bytes;
        }
    }
}

fn bench(c: &mut Criterion) {
    let drops = DropList::new();
    let with_rules = DropList::new()
        .rule(DropRule::new(["generationConfig.thinkingConfig"]).model("gemini-2.0-*"))
        .rule(DropRule::new(["user", "frequency_penalty"]).shape(Shape::ChatCompletions));
    let mut group = c.benchmark_group("filter");
    for (size, label) in [(4 * 1024, "4KiB"), (256 * 1024, "256KiB")] {
        for (dirty, state) in [(false, "unchanged"), (true, "rewritten")] {
            let cases = [
                ("gemini", gemini_body(size, dirty), Shape::GenerateContent),
                ("openai", openai_body(size, dirty), Shape::ChatCompletions),
            ];
            for (api, body, shape) in cases {
                let expected_rewrite = dirty;
                match filter_body(&body, shape, Some("gemini-2.5-flash"), &drops) {
                    Filtered::Rewritten(_) if expected_rewrite => {}
                    Filtered::Unchanged if !expected_rewrite => {}
                    other => panic!("{api} {state}: unexpected {other:?}"),
                }
                group.throughput(Throughput::Bytes(body.len() as u64));
                let id = BenchmarkId::new(format!("{api}/{state}"), label);
                group.bench_with_input(id, &body, |b, body| {
                    b.iter(|| filter_body(black_box(body), shape, Some("gemini-2.5-flash"), &drops))
                });
            }
        }
        let body = gemini_body(size, true);
        group.bench_with_input(
            BenchmarkId::new("gemini/rewritten+drop-rules", label),
            &body,
            |b, body| {
                b.iter(|| {
                    filter_body(
                        black_box(body),
                        Shape::GenerateContent,
                        Some("gemini-2.0-flash"),
                        &with_rules,
                    )
                })
            },
        );
    }
    group.finish();

    // For scale: parsing and re-serializing alone, the floor of any JSON rewrite.
    let body = gemini_body(4 * 1024, true);
    c.bench_function("serde_json parse+serialize 4KiB (reference)", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(black_box(&body)).unwrap_or_default();
            serde_json::to_vec(&value).unwrap_or_default()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
