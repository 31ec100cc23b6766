//! Reading token usage out of response bodies, JSON or SSE, as they flow past.
//!
//! Gemini reports `usageMetadata`, OpenAI reports `usage`. In a JSON answer it sits at the top
//! level (or in the last element of Gemini's JSON-array stream); in an SSE stream it rides on the
//! last event that carries it. [`UsageTap`] sees each chunk once, keeps bounded memory, and never
//! holds a chunk back.

use std::fmt;
use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use memchr::memmem::FinderRev;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::record::TokenUsage;
use crate::sse::{SseDecoder, SseEvent};

/// Largest JSON body parsed whole; past it only the tail is kept (usage comes last).
const JSON_WHOLE_LIMIT: usize = 256 * 1024;
/// The tail kept of a larger JSON body.
const JSON_TAIL: usize = 16 * 1024;
/// Longest SSE event kept; longer events (huge inline images) are skipped.
const SSE_EVENT_LIMIT: usize = 1024 * 1024;

/// Token usage from a parsed JSON value: Gemini's `usageMetadata` or OpenAI's `usage`, at the
/// top level or in the last element of an array that has one.
pub fn usage_from_json(value: &Value) -> Option<TokenUsage> {
    UsageOnly::deserialize(value).ok().and_then(|found| found.0)
}

/// Gemini `usageMetadata` (`None` unless an object; a count that is not a non-negative integer
/// reads as 0).
pub fn gemini_usage(meta: &Value) -> Option<TokenUsage> {
    Counts::Gemini.deserialize(meta).ok().flatten()
}

/// [`gemini_usage`] read straight from a deserializer (a field of a typed answer), with the
/// same leniency: `None` unless an object.
#[cfg(feature = "openai")]
pub(crate) fn gemini_usage_from<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<TokenUsage>, D::Error> {
    Counts::Gemini.deserialize(deserializer)
}

/// Finds the last `"usageMetadata"` or `"usage"` object in a piece of JSON text that may not
/// parse as a whole (the tail of a large body) and reads it.
pub(crate) fn usage_from_text(text: &[u8]) -> Option<TokenUsage> {
    for (name, counts) in [
        (&b"\"usageMetadata\""[..], Counts::Gemini),
        (&b"\"usage\""[..], Counts::OpenAi),
    ] {
        let Some(at) = rfind(text, name) else {
            continue;
        };
        let rest = &text[at + name.len()..];
        let Some(open) = rest.iter().position(|&b| b == b'{') else {
            continue;
        };
        if !rest[..open]
            .iter()
            .all(|&b| b == b':' || b.is_ascii_whitespace())
        {
            continue;
        }
        let Some(len) = value_len(&rest[open..]) else {
            continue;
        };
        let mut object = serde_json::Deserializer::from_slice(&rest[open..open + len]);
        if let Ok(Some(usage)) = counts.deserialize(&mut object) {
            return Some(usage);
        }
    }
    None
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::rfind(haystack, needle)
}

/// Searchers for the needles of every response, built once (building one costs more than a
/// search through a whole event).
static USAGE_METADATA_KEY: LazyLock<FinderRev<'static>> =
    LazyLock::new(|| FinderRev::new(b"\"usageMetadata\""));
static USAGE_KEY: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(b"\"usage\""));
static SAGE: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(b"sage"));

/// The usage of a JSON object answer read without parsing all of it: the last
/// `"usageMetadata"` (else `"usage"`) key, when what follows its object only closes the
/// top-level object, is a key of that object. Usage comes last in Gemini's and OpenAI's
/// answers, so this reads a few hundred bytes of the end instead of the whole answer.
///
/// `None` when that cannot be told this way (no such key at the top level, an array, a value
/// that is not an object): the caller parses the whole answer.
fn top_level_usage(text: &[u8]) -> Option<Option<TokenUsage>> {
    if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let (at, len, counts) = if let Some(at) = USAGE_METADATA_KEY.rfind(text) {
        (at, b"\"usageMetadata\"".len(), Counts::Gemini)
    } else if memchr::memmem::find(text, b"\\u").is_none() {
        // (With `\u` escapes, a key spelled `usage\u004detadata` would be `usageMetadata`.)
        (USAGE_KEY.rfind(text)?, b"\"usage\"".len(), Counts::OpenAi)
    } else {
        return None;
    };
    // A key: the first thing of its object or after a comma (not text after an escaped quote).
    let before = text[..at].iter().rev().find(|b| !b.is_ascii_whitespace());
    if !matches!(before, Some(b'{' | b',')) {
        return None;
    }
    let rest = &text[at + len..];
    let open = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    if rest[open] != b':' {
        return None;
    }
    let open = open
        + 1
        + rest[open + 1..]
            .iter()
            .position(|b| !b.is_ascii_whitespace())?;
    if rest[open] != b'{' {
        return None;
    }
    let object = &rest[open..];
    let (usage, len) = match counts {
        Counts::Gemini => flat_gemini_usage(object)?,
        _ => {
            let len = value_len(object)?;
            let mut de = serde_json::Deserializer::from_slice(&object[..len]);
            (counts.deserialize(&mut de).ok()?, len)
        }
    };
    let after = &object[len..];
    // A `\u`-escaped key after it could be a later `usageMetadata`, which would win.
    if closes_after(after) != Some(1) || memchr::memmem::find(after, b"\\u").is_some() {
        return None;
    }
    Some(usage)
}

/// Gemini's `usageMetadata` object at the start of `text`, read in one pass when it is as
/// Gemini sends it: the counts are non-negative integers, anything else (the per-modality
/// details) is skipped. Returns the usage and the object's length; `None` for anything the
/// full reader should judge (a count that is not a plain integer, malformed text).
fn flat_gemini_usage(text: &[u8]) -> Option<(Option<TokenUsage>, usize)> {
    let mut counts = [0u64; 6];
    let mut i = 1; // past `{`
    let skip_ws = |i: &mut usize| {
        while text.get(*i).is_some_and(u8::is_ascii_whitespace) {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        match *text.get(i)? {
            b'}' => break,
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let key_end = i
            + 1
            + text[i + 1..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\')?;
        if text[key_end] != b'"' {
            return None;
        }
        let key = &text[i + 1..key_end];
        i = key_end + 1;
        skip_ws(&mut i);
        if *text.get(i)? != b':' {
            return None;
        }
        i += 1;
        skip_ws(&mut i);
        match GEMINI_COUNTS.iter().position(|name| name.as_bytes() == key) {
            Some(slot) => {
                let digits = text[i..].iter().take_while(|b| b.is_ascii_digit()).count();
                let after = *text.get(i + digits)?;
                if digits == 0 || matches!(after, b'.' | b'e' | b'E') {
                    return None;
                }
                counts[slot] = std::str::from_utf8(&text[i..i + digits])
                    .ok()?
                    .parse()
                    .ok()?;
                i += digits;
            }
            None => i += value_len(&text[i..])?,
        }
    }
    let usage = TokenUsage {
        prompt: counts[0],
        candidates: counts[1],
        thoughts: counts[2],
        cached: counts[3],
        tool_use_prompt: counts[4],
        total: counts[5],
    };
    Some((Some(usage), i + 1))
}

/// Length of the JSON value at the start of `text` (a string, an object or array with strings
/// respected, or a scalar up to the next `,` `}` `]`).
fn value_len(text: &[u8]) -> Option<usize> {
    match *text.first()? {
        b'{' | b'[' => {
            let mut depth = 0usize;
            match brackets(text, |i, open| {
                // The first byte opens, so the depth is at least 1 before any close.
                if open {
                    depth += 1;
                    return None;
                }
                depth -= 1;
                (depth == 0).then_some(i + 1)
            }) {
                Walk::Stopped(len) => Some(len),
                Walk::Ended { .. } => None,
            }
        }
        b'"' => {
            let mut escaped = false;
            for (i, &b) in text.iter().enumerate().skip(1) {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => return Some(i + 1),
                    _ => {}
                }
            }
            None
        }
        _ => text
            .iter()
            .position(|&b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
            .filter(|&len| len > 0),
    }
}

/// How many more objects or arrays `text` closes than it opens (strings respected), when it
/// ends right after its last close (trailing whitespace aside).
fn closes_after(text: &[u8]) -> Option<usize> {
    let mut depth = 0isize;
    let mut end = 0;
    let walk = brackets(text, |i, open| {
        if open {
            depth += 1;
        } else {
            depth -= 1;
            end = i + 1;
        }
        None::<()>
    });
    let in_string = matches!(walk, Walk::Ended { in_string: true });
    let trailing_ok = text[end..].iter().all(u8::is_ascii_whitespace);
    (trailing_ok && !in_string && depth < 0).then(|| depth.unsigned_abs())
}

/// How [`brackets`] ended.
enum Walk<T> {
    /// The step returned this.
    Stopped(T),
    /// The text ended (inside a string or not).
    Ended { in_string: bool },
}

/// Walks `text` outside its strings (escapes respected), calling `step(index, opens)` at each
/// `{` `[` (`opens`) and `}` `]`, until `step` returns something.
fn brackets<T>(text: &[u8], mut step: impl FnMut(usize, bool) -> Option<T>) -> Walk<T> {
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in text.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        let found = match b {
            b'"' => {
                in_string = true;
                None
            }
            b'{' | b'[' => step(i, true),
            b'}' | b']' => step(i, false),
            _ => None,
        };
        if let Some(found) = found {
            return Walk::Stopped(found);
        }
    }
    Walk::Ended { in_string }
}

/// What [`usage_from_json`] finds, read straight from JSON text (or a `Value`): only the usage
/// counts are read; everything else (candidates, their text, inline data) is skipped without
/// allocating, which is most of a response's bytes.
struct UsageOnly(Option<TokenUsage>);

impl<'de> Deserialize<'de> for UsageOnly {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UsageOnlyVisitor)
    }
}

struct UsageOnlyVisitor;

impl<'de> Visitor<'de> for UsageOnlyVisitor {
    type Value = UsageOnly;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    // Like `usage_from_json`: the last element of an array that has usage.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UsageOnly, A::Error> {
        let mut last = None;
        while let Some(UsageOnly(found)) = seq.next_element::<UsageOnly>()? {
            last = found.or(last);
        }
        Ok(UsageOnly(last))
    }

    // Like `usage_from_json`: `usageMetadata` wins over `usage`.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UsageOnly, A::Error> {
        let mut gemini: Option<Option<TokenUsage>> = None;
        let mut openai: Option<Option<TokenUsage>> = None;
        while let Some(field) = map.next_key_seed(KeyOf(&["usageMetadata", "usage"]))? {
            match field {
                Some(0) => gemini = Some(map.next_value_seed(Counts::Gemini)?),
                Some(_) => openai = Some(map.next_value_seed(Counts::OpenAi)?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(UsageOnly(match gemini {
            Some(found) => found,
            None => openai.flatten(),
        }))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<UsageOnly, E> {
        Ok(UsageOnly(None))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<UsageOnly, E> {
        Ok(UsageOnly(None))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<UsageOnly, E> {
        Ok(UsageOnly(None))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<UsageOnly, E> {
        Ok(UsageOnly(None))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<UsageOnly, E> {
        Ok(UsageOnly(None))
    }
    fn visit_unit<E: de::Error>(self) -> Result<UsageOnly, E> {
        Ok(UsageOnly(None))
    }
}

/// An object key: its position in a list of names, compared without being copied.
struct KeyOf(&'static [&'static str]);

impl<'de> DeserializeSeed<'de> for KeyOf {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyOf {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|name| *name == key))
    }
}

const GEMINI_COUNTS: &[&str] = &[
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "cachedContentTokenCount",
    "toolUsePromptTokenCount",
    "totalTokenCount",
];
const OPENAI_COUNTS: &[&str] = &[
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "completion_tokens_details",
    "prompt_tokens_details",
];

/// A usage object, Gemini's or OpenAI's (`None` unless an object; a count that is not a
/// non-negative integer is 0), or one count inside it.
#[derive(Clone, Copy)]
enum Counts {
    Gemini,
    OpenAi,
    /// The one named count of a nested object (OpenAI's `*_tokens_details`); not an object: 0.
    Detail(&'static [&'static str]),
    /// A count: a non-negative integer, else 0.
    One,
}

impl<'de> DeserializeSeed<'de> for Counts {
    type Value = Option<TokenUsage>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Counts {
    /// What a value that is not an object (or, for `One`, not a count) reads as.
    fn other(self) -> Option<TokenUsage> {
        match self {
            Counts::Gemini | Counts::OpenAi => None,
            Counts::Detail(_) | Counts::One => Some(TokenUsage::default()),
        }
    }

    /// Reads a count with this seed: the number in `total`.
    fn count<'de, A: MapAccess<'de>>(map: &mut A, seed: Counts) -> Result<u64, A::Error> {
        Ok(map.next_value_seed(seed)?.map_or(0, |found| found.total))
    }
}

impl<'de> Visitor<'de> for Counts {
    type Value = Option<TokenUsage>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a usage object")
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Ok(match self {
            Counts::One => Some(TokenUsage {
                total: n,
                ..TokenUsage::default()
            }),
            other => other.other(),
        })
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Ok(self.other()),
        }
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(self.other())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(self.other())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(self.other())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.other())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(self.other())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let names = match self {
            Counts::Gemini => GEMINI_COUNTS,
            Counts::OpenAi => OPENAI_COUNTS,
            Counts::Detail(name) => name,
            Counts::One => &[],
        };
        // The last of duplicate keys wins, as in a parsed `Value`.
        let mut counts = [0u64; 6];
        while let Some(field) = map.next_key_seed(KeyOf(names))? {
            let seed = match (self, field) {
                (Counts::OpenAi, Some(3)) => Counts::Detail(&["reasoning_tokens"]),
                (Counts::OpenAi, Some(4)) => Counts::Detail(&["cached_tokens"]),
                _ => Counts::One,
            };
            match field {
                Some(i) => counts[i] = Counts::count(&mut map, seed)?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(match self {
            Counts::Gemini => TokenUsage {
                prompt: counts[0],
                candidates: counts[1],
                thoughts: counts[2],
                cached: counts[3],
                tool_use_prompt: counts[4],
                total: counts[5],
            },
            Counts::OpenAi => {
                let reasoning = counts[3];
                TokenUsage {
                    prompt: counts[0],
                    candidates: counts[1].saturating_sub(reasoning),
                    thoughts: reasoning,
                    cached: counts[4],
                    tool_use_prompt: 0,
                    total: counts[2],
                }
            }
            Counts::Detail(_) => TokenUsage {
                total: counts[0],
                ..TokenUsage::default()
            },
            Counts::One => return Ok(self.other()),
        }))
    }
}

/// Watches a response body for token usage, chunk by chunk.
#[derive(Debug)]
pub enum UsageTap {
    /// A JSON body: kept whole up to a limit, then only its tail.
    Json {
        /// What is kept.
        buf: BytesMut,
        /// `true` once the body outgrew the whole-body limit.
        truncated: bool,
    },
    /// An SSE stream: decoded event by event; the last usage seen wins.
    Sse {
        /// The events not yet complete.
        decoder: SseDecoder,
        /// The last usage seen.
        last: Option<TokenUsage>,
        /// An error event was seen (`{"error": ...}` data, or `event: error`): the stream
        /// failed after its `200`.
        failed: bool,
    },
    /// Not a body we read (binary, HTML...).
    Ignore,
}

impl UsageTap {
    /// A tap for a response with this `content-type`.
    pub fn for_content_type(content_type: Option<&str>) -> UsageTap {
        let content_type = content_type.unwrap_or("").as_bytes();
        let has = |word: &[u8]| {
            content_type
                .windows(word.len())
                .any(|w| w.eq_ignore_ascii_case(word))
        };
        if crate::sse::is_event_stream(content_type) {
            UsageTap::Sse {
                decoder: SseDecoder::with_max_event_bytes(SSE_EVENT_LIMIT),
                last: None,
                failed: false,
            }
        } else if content_type.is_empty() || has(b"json") {
            UsageTap::Json {
                buf: BytesMut::new(),
                truncated: false,
            }
        } else {
            UsageTap::Ignore
        }
    }

    /// `true` for an SSE stream.
    pub fn is_stream(&self) -> bool {
        matches!(self, UsageTap::Sse { .. })
    }

    /// `true` when the stream carried an error event: the client got a `200` and then a
    /// failure, which is not a success whatever the status says.
    pub fn saw_error_event(&self) -> bool {
        matches!(self, UsageTap::Sse { failed: true, .. })
    }

    /// Looks at one chunk (which the caller passes on unchanged).
    pub fn observe(&mut self, chunk: &Bytes) {
        match self {
            UsageTap::Json { buf, truncated } => {
                buf.extend_from_slice(chunk);
                if buf.len() > JSON_WHOLE_LIMIT + JSON_TAIL {
                    let cut = buf.len() - JSON_TAIL;
                    let _ = buf.split_to(cut);
                    *truncated = true;
                }
            }
            UsageTap::Sse {
                decoder,
                last,
                failed,
            } => {
                decoder.push(chunk);
                drain(decoder, last, failed);
                if decoder.is_over_limit() {
                    // An event too large to be a usage event (inline media): let it go.
                    let _ = decoder.take_rest();
                }
            }
            UsageTap::Ignore => {}
        }
    }

    /// The usage found, once the body has ended (or been cut).
    pub fn finish(&mut self) -> Option<TokenUsage> {
        match self {
            UsageTap::Json { buf, truncated } => {
                if buf.is_empty() {
                    return None;
                }
                if !*truncated {
                    if let Some(found) = top_level_usage(buf) {
                        return found;
                    }
                    if let Ok(found) = serde_json::from_slice::<UsageOnly>(buf) {
                        return found.0;
                    }
                }
                usage_from_text(buf)
            }
            UsageTap::Sse {
                decoder,
                last,
                failed,
            } => {
                decoder.finish();
                drain(decoder, last, failed);
                *last
            }
            UsageTap::Ignore => None,
        }
    }
}

/// The usage in an event's data, parsed whole (or, if it does not parse, found as text).
fn usage_of_data(data: &[u8]) -> Option<TokenUsage> {
    match serde_json::from_slice::<UsageOnly>(data) {
        Ok(found) => found.0,
        Err(_) => usage_from_text(data),
    }
}

/// The value of a block that is exactly one `data:` line and the blank line ending it (the
/// optional space after the colon removed, as SSE does); `None` for any other block.
fn single_data_line(block: &[u8]) -> Option<&[u8]> {
    let rest = block.strip_prefix(b"data:")?;
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    let end = rest.iter().position(|&b| b == b'\r' || b == b'\n')?;
    let ending = |tail: &[u8]| -> Option<usize> {
        match tail {
            [b'\r', b'\n', ..] => Some(2),
            [b'\r' | b'\n', ..] => Some(1),
            _ => None,
        }
    };
    let tail = &rest[end..];
    let tail = &tail[ending(tail)?..];
    (ending(tail)? == tail.len()).then_some(&rest[..end])
}

/// `true` for an error event: an object whose first member is `error` (Gemini's and OpenAI's
/// error events), or an `event: error`. Looks at the start of the event only: its cost does not
/// grow with the event.
fn is_error_event(block: &[u8]) -> bool {
    let spaces = |bytes: &[u8]| -> usize {
        bytes
            .iter()
            .take_while(|b| **b == b' ' || **b == b'\t')
            .count()
    };
    if let Some(rest) = block.strip_prefix(b"data:") {
        // `{`, blanks, then the first member, all on the first data line.
        let rest = &rest[spaces(rest)..];
        let Some(rest) = rest.strip_prefix(b"{") else {
            return false;
        };
        let rest = &rest[spaces(rest)..];
        if !rest.starts_with(b"\r") && !rest.starts_with(b"\n") && !rest.is_empty() {
            return rest.starts_with(b"\"error\"");
        }
        // The object goes on over more lines: read the event whole.
    }
    SseEvent::parse(block).is_some_and(|event| {
        let data = event.data.as_bytes().trim_ascii_start();
        event.event.as_deref() == Some("error")
            || data
                .strip_prefix(b"{")
                .is_some_and(|rest| rest.trim_ascii_start().starts_with(b"\"error\""))
    })
}

/// Reads the usage of every complete event that mentions one, and notes error events.
fn drain(decoder: &mut SseDecoder, last: &mut Option<TokenUsage>, failed: &mut bool) {
    while let Some(block) = decoder.next_block() {
        if !*failed && is_error_event(&block) {
            *failed = true;
            continue;
        }
        // Only events that mention usage are worth parsing (a key may be spelled with `\u`
        // escapes: `usag\u0065`).
        if SAGE.rfind(&block).is_none() && memchr::memmem::find(&block, b"\\u").is_none() {
            continue;
        }
        // Gemini's events are one `data:` line of JSON: read it in place, from its end.
        let found = match single_data_line(&block) {
            Some(data) => top_level_usage(data).unwrap_or_else(|| usage_of_data(data)),
            None => match SseEvent::parse(&block) {
                Some(event) => usage_of_data(event.data.as_bytes()),
                None => continue,
            },
        };
        if found.is_some() {
            *last = found;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(tap: &mut UsageTap, body: &str, chunk: usize) -> Option<TokenUsage> {
        for piece in body.as_bytes().chunks(chunk) {
            tap.observe(&Bytes::copy_from_slice(piece));
        }
        tap.finish()
    }

    const GEMINI: &str = r#"{"candidates":[{"content":{"parts":[{"text":"hi"}]}}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":7,"thoughtsTokenCount":8,"cachedContentTokenCount":2,"toolUsePromptTokenCount":1,"totalTokenCount":20}}"#;
    const GEMINI_USAGE: TokenUsage = TokenUsage {
        prompt: 5,
        candidates: 7,
        thoughts: 8,
        cached: 2,
        tool_use_prompt: 1,
        total: 20,
    };

    /// Usage with these counts (prompt, candidates, thoughts, cached, tool-use prompt, total).
    fn counts(c: [u64; 6]) -> Option<TokenUsage> {
        Some(TokenUsage {
            prompt: c[0],
            candidates: c[1],
            thoughts: c[2],
            cached: c[3],
            tool_use_prompt: c[4],
            total: c[5],
        })
    }

    #[test]
    fn an_error_event_marks_the_stream_failed() {
        let sse = |body: &str| {
            let mut tap = UsageTap::for_content_type(Some("text/event-stream"));
            for piece in body.as_bytes().chunks(7) {
                tap.observe(&Bytes::copy_from_slice(piece));
            }
            let usage = tap.finish();
            (tap.saw_error_event(), usage)
        };
        let ok = format!("data: {GEMINI}\r\n\r\n");
        assert_eq!(sse(&ok), (false, Some(GEMINI_USAGE)));
        // "error" as text or a nested member is not an error event.
        let nested = r#"data: {"candidates":[{"content":{"parts":[{"text":"\"error\": none"}]}}],"error_rate":1}"#;
        assert!(!sse(&format!("{nested}\n\n")).0);
        assert!(!sse("data: [DONE]\n\n: keep-alive\n\ndata: {\n\"candidates\": []}\n\n").0);
        for failed in [
            format!("data: {GEMINI}\r\n\r\ndata: {{\"error\":{{\"code\":500,\"message\":\"x\"}}}}\r\n\r\n"),
            "data: { \"error\" : {\"message\":\"cut\",\"type\":\"server_error\"}}\n\n".to_owned(),
            "event: error\ndata: cut\n\n".to_owned(),
            "data: {\"error\":\n data: 1}\n\n".to_owned(),
            "data: {\ndata: \"error\": {\"code\": 500}}\n\n".to_owned(),
            ": keep-alive\ndata: {\"error\":{}}\n\n".to_owned(),
        ] {
            assert!(sse(&failed).0, "{failed:?}");
        }
        // The usage before the failure still counts.
        assert_eq!(
            sse(&format!("data: {GEMINI}\n\ndata: {{\"error\":{{}}}}\n\n")).1,
            Some(GEMINI_USAGE)
        );
    }

    #[test]
    fn odd_bodies_read_the_same_from_text_and_from_a_value() {
        for (body, expected) in [
            (GEMINI, Some(GEMINI_USAGE)),
            // The last element of an array that has usage, nested arrays included.
            (
                r#"[{"candidates":[]},{"usageMetadata":{"promptTokenCount":3,"totalTokenCount":4}},{"candidates":[{"x":[1,2.5,true,null,"s\"}"]}]}]"#,
                counts([3, 0, 0, 0, 0, 4]),
            ),
            (
                r#"[[{"usage":{"prompt_tokens":1}}],{"a":1}]"#,
                counts([1, 0, 0, 0, 0, 0]),
            ),
            // usageMetadata wins over usage, even when it is not an object.
            (
                r#"{"usage":{"prompt_tokens":10,"completion_tokens":30},"usageMetadata":{"promptTokenCount":1}}"#,
                counts([1, 0, 0, 0, 0, 0]),
            ),
            (
                r#"{"usageMetadata":"not an object","usage":{"prompt_tokens":1}}"#,
                None,
            ),
            (r#"{"usage":null,"usageMetadata":null}"#, None),
            (r#"{"usage":[1,2]}"#, None),
            // The last of duplicate keys.
            (
                r#"{"usageMetadata":{"promptTokenCount":1},"usageMetadata":{"promptTokenCount":2}}"#,
                counts([2, 0, 0, 0, 0, 0]),
            ),
            (
                r#"{"usageMetadata":{"totalTokenCount":9,"totalTokenCount":null}}"#,
                counts([0; 6]),
            ),
            // Counts that are not non-negative integers read as 0.
            (
                r#"{"usageMetadata":{"promptTokenCount":-1,"candidatesTokenCount":2.5,"thoughtsTokenCount":"3","cachedContentTokenCount":{"a":1},"toolUsePromptTokenCount":[1],"totalTokenCount":9,"promptTokensDetails":[{"modality":"TEXT","tokenCount":1}]}}"#,
                counts([0, 0, 0, 0, 0, 9]),
            ),
            // OpenAI: details that are not objects count 0; reasoning leaves the completion.
            (
                r#"{"usage":{"prompt_tokens":4,"completion_tokens":3,"completion_tokens_details":7,"prompt_tokens_details":{"cached_tokens":9,"cached_tokens":2}}}"#,
                counts([4, 3, 0, 2, 0, 0]),
            ),
            (
                r#"{"usage":{"completion_tokens":3,"completion_tokens_details":{"reasoning_tokens":5}}}"#,
                counts([0, 0, 5, 0, 0, 0]),
            ),
            (
                r#"{"candidates":[{"content":{"parts":[{"text":"no usage"}]}}]}"#,
                None,
            ),
            (r#""a string""#, None),
            ("42", None),
            ("null", None),
            ("[]", None),
            // Read from the end (the tap's shortcut): pretty-printed as Gemini sends it.
            (
                "{\n  \"candidates\": [],\n  \"usageMetadata\" :\n {\"promptTokenCount\": 6,\n    \"totalTokenCount\": 8\n  },\n  \"modelVersion\": \"m}]\\\"\"\n}\n",
                counts([6, 0, 0, 0, 0, 8]),
            ),
            // A usage key nested after the top-level one is not the answer's.
            (
                r#"{"usageMetadata":{"promptTokenCount":1},"candidates":[{"args":{"usageMetadata":{"promptTokenCount":7}}}]}"#,
                counts([1, 0, 0, 0, 0, 0]),
            ),
            (
                r#"{"usage":{"prompt_tokens":2},"choices":[{"message":{"usage":{"prompt_tokens":7}}}]}"#,
                counts([2, 0, 0, 0, 0, 0]),
            ),
            (
                r#"{"candidates":[{"args":{"usageMetadata":{"promptTokenCount":7}}}],"usage":{"prompt_tokens":3}}"#,
                counts([3, 0, 0, 0, 0, 0]),
            ),
            (
                r#"{"candidates":[{"args":{"usageMetadata":{"promptTokenCount":7}}}]}"#,
                None,
            ),
            (
                r#"{"text":"a \"usageMetadata\":{\"promptTokenCount\":7}} in a string"}"#,
                None,
            ),
            (r#"{"x\"usageMetadata":{}}"#, None),
            (r#"{"usage\u004detadata":62,"usage":{"prompt_tokens":1}}"#, None),
        ] {
            let from_text: UsageOnly = serde_json::from_str(body).unwrap();
            assert_eq!(from_text.0, expected, "{body}");
            let value: Value = serde_json::from_str(body).unwrap();
            assert_eq!(usage_from_json(&value), expected, "{body}");
            for content_type in ["application/json; charset=UTF-8", "Application/JSON"] {
                let mut tap = UsageTap::for_content_type(Some(content_type));
                assert_eq!(feed(&mut tap, body, 10_000), expected, "{body}");
            }
        }
    }

    #[test]
    fn usage_at_the_end_is_read_from_the_end() {
        assert_eq!(top_level_usage(GEMINI.as_bytes()), Some(Some(GEMINI_USAGE)));
        let pretty = "{\"candidates\": [{\"x\": \"}\"}],\n \"usageMetadata\": {\"promptTokenCount\": 2},\n \"responseId\": \"r\"\n}\n";
        assert_eq!(
            top_level_usage(pretty.as_bytes()),
            Some(counts([2, 0, 0, 0, 0, 0]))
        );
        // Left to the whole parse: nested, in an array, not an object, not JSON at the end,
        // a key that only looks like one (after an escaped quote, or spelled with escapes).
        for body in [
            r#"{"x\"usageMetadata":{}}"#,
            r#"{"usage\u004detadata":62,"usage":{"prompt_tokens":1}}"#,
            r#"{"a":{"usageMetadata":{"promptTokenCount":7}}}"#,
            r#"[{"usageMetadata":{"promptTokenCount":7}}]"#,
            r#"{"usageMetadata":null}"#,
            r#"{"usageMetadata":{"promptTokenCount":7}} trailing"#,
            r#"{"usageMetadata":{"promptTokenCount":7},"x":"open"#,
            "",
        ] {
            assert_eq!(top_level_usage(body.as_bytes()), None, "{body}");
        }
    }

    #[test]
    fn the_flat_reader_agrees_with_the_full_one() {
        for object in [
            r#"{"promptTokenCount":5,"candidatesTokenCount":7,"totalTokenCount":12}"#,
            r#"{ "promptTokenCount" : 27 ,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 27}],
                "candidatesTokenCount": 24, "thoughtsTokenCount": 3, "cachedContentTokenCount": 1,
                "toolUsePromptTokenCount": 2, "totalTokenCount": 51, "note": "a } \" ]", "x": null,
                "y": -1.5e3, "z": true }"#,
            r#"{"totalTokenCount":9,"totalTokenCount":10}"#,
            r#"{}"#,
        ] {
            let (usage, len) = flat_gemini_usage(object.as_bytes()).expect(object);
            assert_eq!(len, object.len(), "{object}");
            let mut de = serde_json::Deserializer::from_str(object);
            assert_eq!(
                usage,
                Counts::Gemini.deserialize(&mut de).unwrap(),
                "{object}"
            );
        }
        // Left to the full reader: counts that are not plain non-negative integers.
        for object in [
            r#"{"promptTokenCount":-1}"#,
            r#"{"promptTokenCount":2.5}"#,
            r#"{"promptTokenCount":1e3}"#,
            r#"{"promptTokenCount":"3"}"#,
            r#"{"promptTokenCount":null}"#,
            r#"{"promptTokenCount":99999999999999999999999}"#,
            r#"{"prompt\u0054okenCount":1}"#,
            r#"{"promptTokenCount":1"#,
            r#"{"promptTokenCount" 1}"#,
            r#"{"other": ,"promptTokenCount":1}"#,
        ] {
            assert_eq!(flat_gemini_usage(object.as_bytes()), None, "{object}");
        }
    }

    #[test]
    fn gemini_json_in_any_chunking() {
        for chunk in [1, 7, 64, 10_000] {
            let mut tap = UsageTap::for_content_type(Some("application/json; charset=UTF-8"));
            assert_eq!(
                feed(&mut tap, GEMINI, chunk),
                Some(GEMINI_USAGE),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn openai_json_splits_reasoning_out() {
        let body = r#"{"id":"x","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":30,"total_tokens":40,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":12}}}"#;
        let mut tap = UsageTap::for_content_type(Some("application/json"));
        let usage = feed(&mut tap, body, 5).unwrap();
        assert_eq!(
            (
                usage.prompt,
                usage.candidates,
                usage.thoughts,
                usage.cached,
                usage.total
            ),
            (10, 18, 12, 4, 40)
        );
    }

    #[test]
    fn large_json_keeps_only_the_tail() {
        let padding = "x".repeat(1024 * 1024);
        let body = format!(
            r#"{{"candidates":[{{"content":{{"parts":[{{"text":"{padding}"}}]}}}}],"usageMetadata":{{"promptTokenCount":5,"candidatesTokenCount":7,"totalTokenCount":12}}}}"#
        );
        let mut tap = UsageTap::for_content_type(Some("application/json"));
        let usage = feed(&mut tap, &body, 8192).unwrap();
        assert_eq!((usage.prompt, usage.candidates, usage.total), (5, 7, 12));
        match &tap {
            UsageTap::Json { buf, .. } => assert!(buf.len() <= JSON_WHOLE_LIMIT + JSON_TAIL),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gemini_json_array_stream() {
        let body = format!("[{GEMINI},\r\n{GEMINI}]");
        let mut tap = UsageTap::for_content_type(Some("application/json"));
        assert_eq!(feed(&mut tap, &body, 3), Some(GEMINI_USAGE));
    }

    #[test]
    fn sse_last_usage_wins_in_any_chunking() {
        let early =
            r#"{"candidates":[],"usageMetadata":{"promptTokenCount":5,"totalTokenCount":5}}"#;
        let body = format!("data: {early}\r\n\r\ndata: {GEMINI}\r\n\r\n");
        for chunk in [1, 3, 50, 100_000] {
            let mut tap = UsageTap::for_content_type(Some("text/event-stream"));
            assert!(tap.is_stream());
            assert_eq!(
                feed(&mut tap, &body, chunk),
                Some(GEMINI_USAGE),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn an_oversized_event_is_skipped_and_memory_stays_bounded() {
        let huge = format!(
            "data: {{\"inline\":\"{}\"}}\r\n\r\n",
            "x".repeat(3 * 1024 * 1024)
        );
        let body = format!("{huge}data: {GEMINI}\r\n\r\n");
        let mut tap = UsageTap::for_content_type(Some("text/event-stream"));
        for piece in body.as_bytes().chunks(64 * 1024) {
            tap.observe(&Bytes::copy_from_slice(piece));
            if let UsageTap::Sse { decoder, .. } = &tap {
                assert!(decoder.pending() <= SSE_EVENT_LIMIT + 64 * 1024);
            }
        }
        assert_eq!(tap.finish(), Some(GEMINI_USAGE));
    }

    #[test]
    fn a_single_data_line_is_read_in_place() {
        for (block, data) in [
            (&b"data: {\"a\":1}\n\n"[..], Some(&b"{\"a\":1}"[..])),
            (b"data:{}\r\n\r\n", Some(b"{}")),
            (b"data: x\r\r", Some(b"x")),
            (b"data: x\n\r\n", Some(b"x")),
            (b"data:  two spaces\n\n", Some(b" two spaces")),
            // Anything else goes to the full parser.
            (b"data: a\ndata: b\n\n", None),
            (b"event: x\ndata: a\n\n", None),
            (b": comment\n\n", None),
            (b"data: a\r\n", None),
            (b"data: a\r\n\r\nx", None),
        ] {
            assert_eq!(
                single_data_line(block),
                data,
                "{:?}",
                String::from_utf8_lossy(block)
            );
        }
    }

    #[test]
    fn openai_sse_with_done() {
        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\ndata: [DONE]\n\n";
        let mut tap = UsageTap::for_content_type(Some("text/event-stream; charset=utf-8"));
        let usage = feed(&mut tap, body, 10).unwrap();
        assert_eq!((usage.prompt, usage.candidates, usage.total), (3, 4, 7));
    }

    #[test]
    fn no_usage_and_odd_bodies() {
        let mut tap = UsageTap::for_content_type(Some("application/json"));
        assert_eq!(feed(&mut tap, r#"{"embedding":{"values":[1,2]}}"#, 4), None);
        let mut tap = UsageTap::for_content_type(Some("application/json"));
        assert_eq!(feed(&mut tap, r#"{"usage": "#, 4), None);
        let mut tap = UsageTap::for_content_type(Some("image/png"));
        assert_eq!(feed(&mut tap, "\u{0}\u{1}", 1), None);
        let mut tap = UsageTap::for_content_type(Some("text/event-stream"));
        assert_eq!(feed(&mut tap, "data: {\"usage\": {broken\n\n", 2), None);
    }
}
