//! Differential test of the usage reader: `UsageTap` reads token counts out of answers with
//! hand-written scanners (the end of a JSON object, a flat `usageMetadata`, one `data:` line)
//! before it falls back to serde; whatever it reads must be what `serde_json` + `usage_from_json`
//! read from the same bytes. Tens of thousands of generated answers — Gemini's and OpenAI's
//! shapes, JSON-array streams, SSE streams, keys and counts in odd places, `\u` escapes, random
//! whitespace, duplicate keys, any chunking — each compared with the reference.

use bytes::Bytes;
use gemini_balance::usage::{usage_from_json, TokenUsage, UsageTap};
use serde_json::Value;

/// A JSON document as written (keys in order, duplicates allowed), so the text can be varied in
/// ways a `serde_json::Value` cannot hold.
#[derive(Debug, Clone)]
enum Node {
    Null,
    Bool(bool),
    /// The number as written (`12`, `-3`, `3.0`, `1e2`, `18446744073709551616`).
    Number(String),
    Str(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

const COUNT_NAMES: &[&str] = &[
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "cachedContentTokenCount",
    "toolUsePromptTokenCount",
    "totalTokenCount",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
];

const TRICKY_TEXT: &[&str] = &[
    "Hello",
    "\"usageMetadata\": {\"promptTokenCount\": 99}",
    "\"usage\": {\"prompt_tokens\": 7}}",
    "} ] { [ , :",
    "back\\slash \"quoted\"",
    "ünïcødé ✓ 漢字",
    "",
    "usageMetadata",
];

struct Gen {
    rng: fastrand::Rng,
}

impl Gen {
    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.rng.usize(..items.len())]
    }

    fn number(&mut self) -> String {
        match self.rng.u8(..12) {
            0 => "0".into(),
            1 => format!("-{}", self.rng.u32(1..1000)),
            2 => format!("{}.0", self.rng.u32(..1000)),
            3 => format!("{}.5", self.rng.u32(..1000)),
            4 => "1e2".into(),
            5 => "18446744073709551615".into(),
            6 => "18446744073709551616".into(),
            _ => self.rng.u32(..100_000).to_string(),
        }
    }

    /// A token count as an upstream may write it: mostly a plain integer, sometimes not.
    fn count(&mut self) -> Node {
        match self.rng.u8(..14) {
            0 => Node::Str(self.rng.u32(..100).to_string()),
            1 => Node::Null,
            2 => Node::Bool(true),
            3 => Node::Object(vec![]),
            _ => Node::Number(self.number()),
        }
    }

    fn usage_object(&mut self) -> Node {
        let mut members = Vec::new();
        for _ in 0..self.rng.usize(..7) {
            let name = self.pick(COUNT_NAMES).to_owned();
            members.push((name, self.count()));
        }
        if self.rng.u8(..4) == 0 {
            // Gemini's per-modality details, or OpenAI's token details.
            let details = Node::Array(vec![Node::Object(vec![
                ("modality".into(), Node::Str("TEXT".into())),
                ("tokenCount".into(), Node::Number(self.number())),
            ])]);
            members.push(("promptTokensDetails".into(), details));
        }
        if self.rng.u8(..4) == 0 {
            let details = Node::Object(vec![(
                "reasoning_tokens".into(),
                Node::Number(self.number()),
            )]);
            members.push(("completion_tokens_details".into(), details));
        }
        self.rng.shuffle(&mut members);
        Node::Object(members)
    }

    /// Any value, `depth` levels deep at most.
    fn value(&mut self, depth: u32) -> Node {
        match self.rng.u8(..if depth == 0 { 4 } else { 8 }) {
            0 => Node::Null,
            1 => Node::Number(self.number()),
            2 => Node::Str(self.pick(TRICKY_TEXT).to_owned()),
            3 => Node::Bool(self.rng.bool()),
            4 | 5 => self.answer(depth - 1),
            6 => Node::Array(
                (0..self.rng.usize(..3))
                    .map(|_| self.value(depth - 1))
                    .collect(),
            ),
            _ => self.usage_object(),
        }
    }

    /// An answer-like object: candidates, maybe usage (either name, maybe both, maybe twice),
    /// in any order.
    fn answer(&mut self, depth: u32) -> Node {
        let mut members: Vec<(String, Node)> = Vec::new();
        let text = Node::Str(self.pick(TRICKY_TEXT).to_owned());
        members.push((
            "candidates".into(),
            Node::Array(vec![Node::Object(vec![(
                "content".into(),
                Node::Object(vec![(
                    "parts".into(),
                    Node::Array(vec![Node::Object(vec![("text".into(), text)])]),
                )]),
            )])]),
        ));
        for _ in 0..self.rng.usize(..3) {
            let name = if self.rng.bool() {
                "usageMetadata"
            } else {
                "usage"
            };
            let value = if self.rng.u8(..6) == 0 {
                self.value(depth)
            } else {
                self.usage_object()
            };
            members.push((name.into(), value));
        }
        if depth > 0 && self.rng.u8(..3) == 0 {
            let name = self
                .pick(&["modelVersion", "error", "choices", "usage"])
                .to_owned();
            let value = self.value(depth - 1);
            members.push((name, value));
        }
        if self.rng.u8(..3) == 0 {
            self.rng.shuffle(&mut members);
        } else {
            // Usage last, as Gemini and OpenAI send it.
            members.sort_by_key(|(k, _)| k == "usageMetadata" || k == "usage");
        }
        Node::Object(members)
    }

    /// A whole body: mostly an answer, sometimes a JSON-array stream or an odd value.
    fn body(&mut self) -> Node {
        match self.rng.u8(..10) {
            0 => Node::Array((0..self.rng.usize(1..4)).map(|_| self.answer(2)).collect()),
            1 => self.value(3),
            _ => self.answer(2),
        }
    }

    fn space(&mut self, out: &mut String) {
        if self.rng.u8(..4) == 0 {
            out.push_str(self.pick(&[" ", "\n", "\n  ", "\t", "\r\n"]));
        }
    }

    fn string(&mut self, text: &str, out: &mut String) {
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                // Any character may be written as a `\u` escape (a key included).
                c if (c as u32) < 0x10000 && self.rng.u8(..40) == 0 => {
                    out.push_str(&format!("\\u{:04X}", c as u32))
                }
                '/' if self.rng.bool() => out.push_str("\\/"),
                c => out.push(c),
            }
        }
        out.push('"');
    }

    fn write(&mut self, node: &Node, out: &mut String) {
        match node {
            Node::Null => out.push_str("null"),
            Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Node::Number(n) => out.push_str(n),
            Node::Str(s) => self.string(s, out),
            Node::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.space(out);
                    self.write(item, out);
                    self.space(out);
                }
                out.push(']');
            }
            Node::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.space(out);
                    self.string(key, out);
                    self.space(out);
                    out.push(':');
                    self.space(out);
                    self.write(value, out);
                    self.space(out);
                }
                out.push('}');
            }
        }
    }

    fn text(&mut self, node: &Node) -> String {
        let mut out = String::new();
        self.space(&mut out);
        self.write(node, &mut out);
        self.space(&mut out);
        out
    }

    /// Splits `bytes` into 1 to 4 chunks at random places (inside UTF-8 sequences too).
    fn chunks(&mut self, bytes: &[u8]) -> Vec<Bytes> {
        let mut cuts: Vec<usize> = (0..self.rng.usize(..4))
            .map(|_| self.rng.usize(..=bytes.len()))
            .collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut at = 0;
        for cut in cuts.into_iter().chain([bytes.len()]) {
            out.push(Bytes::copy_from_slice(&bytes[at..cut]));
            at = cut;
        }
        out
    }
}

fn tap(content_type: &str, chunks: &[Bytes]) -> Option<TokenUsage> {
    let mut tap = UsageTap::for_content_type(Some(content_type));
    for chunk in chunks {
        tap.observe(chunk);
    }
    tap.finish()
}

/// The reference: serde_json's `Value` (later duplicate keys win, as in a map) and
/// `usage_from_json`.
fn reference(text: &str) -> Option<TokenUsage> {
    let value: Value = serde_json::from_str(text).expect("generated JSON parses");
    usage_from_json(&value)
}

#[test]
fn json_answers_read_as_serde_json_reads_them() {
    for seed in 0..20_000u64 {
        let mut generator = Gen {
            rng: fastrand::Rng::with_seed(seed),
        };
        let node = generator.body();
        let text = generator.text(&node);
        let expected = reference(&text);
        let chunks = generator.chunks(text.as_bytes());
        assert_eq!(
            tap("application/json; charset=UTF-8", &chunks),
            expected,
            "seed {seed}: {text}"
        );
    }
}

#[test]
fn sse_streams_read_as_serde_json_reads_each_event() {
    for seed in 0..5_000u64 {
        let mut generator = Gen {
            rng: fastrand::Rng::with_seed(1_000_000 + seed),
        };
        let mut stream = String::new();
        let mut expected = None;
        for _ in 0..generator.rng.usize(1..5) {
            let mut node = generator.answer(1);
            // Not an error event (an object whose first member is `error`: the tap stops
            // reading usage there; tested in the library's unit tests).
            if let Node::Object(members) = &mut node {
                if members.first().is_some_and(|(k, _)| k == "error") {
                    members.insert(0, ("candidates".into(), Node::Null));
                }
            }
            // One event is one line of data (SSE splits events at blank lines, and a line
            // break inside JSON would start a new field).
            let text = generator.text(&node).replace(['\n', '\r'], " ");
            if let Some(found) = reference(&text) {
                expected = Some(found);
            }
            let sep = if generator.rng.bool() {
                "data: "
            } else {
                "data:"
            };
            let end = if generator.rng.bool() {
                "\n\n"
            } else {
                "\r\n\r\n"
            };
            stream.push_str(sep);
            stream.push_str(&text);
            stream.push_str(end);
        }
        let chunks = generator.chunks(stream.as_bytes());
        assert_eq!(
            tap("text/event-stream", &chunks),
            expected,
            "seed {seed}: {stream}"
        );
    }
}
