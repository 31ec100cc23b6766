//! Server-sent events: the events this crate writes, and a small incremental decoder.
//!
//! Writing: [`data_event`], [`comment`] and [`blank_line`] frame one event each, with the line
//! ending of the protocol ([`LineEnding::CrLf`] for Gemini's `alt=sse`, [`LineEnding::Lf`] for
//! OpenAI).
//!
//! Reading: [`SseDecoder`] takes bytes as they arrive (any split, `\n`, `\r\n` or `\r` line
//! endings) and hands back either whole raw event blocks ([`SseDecoder::next_block`], used to pass
//! events on byte for byte) or parsed [`SseEvent`]s ([`SseDecoder::next_event`]), following the
//! [WHATWG event-stream rules](https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
//! comments are skipped, `data` lines are joined with `\n`, one space after the colon is
//! dropped, and an event without data is not dispatched.
//!
//! # Example
//!
//! ```
//! use gemini_balance::sse::{data_event, comment, LineEnding, SseDecoder};
//!
//! let mut decoder = SseDecoder::new();
//! decoder.push(&comment("keep-alive", LineEnding::Lf));
//! let event = data_event(r#"{"text":"hi"}"#, LineEnding::CrLf);
//! let (first, second) = event.split_at(9); // events may arrive in any pieces
//! decoder.push(first);
//! assert!(decoder.next_event().is_none());
//! decoder.push(second);
//! let event = decoder.next_event().expect("a whole event");
//! assert_eq!(event.data, r#"{"text":"hi"}"#);
//! assert!(decoder.next_event().is_none());
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The media type of an event stream.
pub const CONTENT_TYPE: &str = "text/event-stream";

/// `true` when a `Content-Type` value names an event stream: `text/event-stream` in any case,
/// with or without parameters. The one test every layer that treats streams apart uses.
///
/// ```
/// use gemini_balance::sse::is_event_stream;
/// assert!(is_event_stream(b"text/event-stream"));
/// assert!(is_event_stream(b"Text/Event-Stream; charset=utf-8"));
/// assert!(!is_event_stream(b"application/json"));
/// assert!(!is_event_stream(b"text/event-streams"));
/// ```
pub fn is_event_stream(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(CONTENT_TYPE.as_bytes())
}

/// Default largest event [`SseDecoder`] holds before [`SseDecoder::is_over_limit`] says so:
/// 32 MiB (a Gemini chunk can carry a generated image inline).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 32 * 1024 * 1024;

/// How lines end in the events we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LineEnding {
    /// `\n`: OpenAI's streams.
    #[default]
    Lf,
    /// `\r\n`: Gemini's `alt=sse` streams.
    CrLf,
}

impl LineEnding {
    /// The line terminator.
    pub fn as_str(self) -> &'static str {
        match self {
            LineEnding::Lf => "\n",
            LineEnding::CrLf => "\r\n",
        }
    }

    /// The line ending of a raw event block: `CrLf` if its first line ends with `\r\n`.
    pub fn of_block(block: &[u8]) -> LineEnding {
        match block.iter().position(|b| *b == b'\r' || *b == b'\n') {
            Some(i) if block[i] == b'\r' && block.get(i + 1) == Some(&b'\n') => LineEnding::CrLf,
            _ => LineEnding::Lf,
        }
    }
}

/// One `data:` event. Text with line breaks becomes several `data:` lines, so any text survives.
pub fn data_event(data: &str, ending: LineEnding) -> Bytes {
    let eol = ending.as_str();
    let mut out = BytesMut::with_capacity(data.len() + 6 + 2 * eol.len());
    for line in split_lines(data) {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_slice(eol.as_bytes());
    }
    out.put_slice(eol.as_bytes());
    out.freeze()
}

/// A comment (`: text`), which every SSE parser skips: a keep-alive that carries no event.
pub fn comment(text: &str, ending: LineEnding) -> Bytes {
    let eol = ending.as_str();
    let mut out = BytesMut::with_capacity(text.len() + 2 + 2 * eol.len());
    for line in split_lines(text) {
        out.put_slice(b": ");
        out.put_slice(line.as_bytes());
        out.put_slice(eol.as_bytes());
    }
    out.put_slice(eol.as_bytes());
    out.freeze()
}

/// An empty line: dispatches nothing, so it is the most inert keep-alive there is.
pub fn blank_line(ending: LineEnding) -> Bytes {
    Bytes::from_static(ending.as_str().as_bytes())
}

fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\r', '\n']) {
            Some(i) => {
                let skip = if text[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&text[i + skip..]);
                Some(&text[..i])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

/// A dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field (`None` means the default type, `message`).
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The `id:` field.
    pub id: Option<String>,
    /// The `retry:` field, in milliseconds.
    pub retry: Option<u64>,
}

impl SseEvent {
    /// Parses one raw event block (as [`SseDecoder::next_block`] returns it). `None` when the
    /// block dispatches nothing (only comments, only blank lines, or no `data` field).
    pub fn parse(block: &[u8]) -> Option<SseEvent> {
        let text = String::from_utf8_lossy(block);
        let mut event = SseEvent::default();
        let mut has_data = false;
        for line in split_lines(&text) {
            if line.is_empty() {
                break;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            match field {
                "event" => event.event = Some(value.to_owned()),
                "data" => {
                    event.data.push_str(value);
                    event.data.push('\n');
                    has_data = true;
                }
                "id" if !value.contains('\0') => event.id = Some(value.to_owned()),
                "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                    event.retry = value.parse().ok();
                }
                _ => {}
            }
        }
        if !has_data {
            return None;
        }
        event.data.pop();
        Some(event)
    }

    /// `true` for OpenAI's end marker, `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }

    /// The data parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(&self.data)
    }
}

/// An incremental event-stream decoder; see the [module docs](self).
#[derive(Debug)]
pub struct SseDecoder {
    buf: BytesMut,
    /// Where the line being scanned starts.
    line_start: usize,
    /// How far the buffer has been scanned for line ends.
    scanned: usize,
    started: bool,
    /// The input has ended: a `\r` at the very end is a whole line ending.
    ended: bool,
    max_event_bytes: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SseDecoder {
    /// A decoder with the [default event limit](DEFAULT_MAX_EVENT_BYTES).
    pub fn new() -> Self {
        Self::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A decoder that reports [`is_over_limit`](Self::is_over_limit) once an unfinished event
    /// holds more than `max` bytes. The decoder itself never drops data: the caller decides
    /// (pass the rest through unparsed, or give up).
    pub fn with_max_event_bytes(max: usize) -> Self {
        SseDecoder {
            buf: BytesMut::new(),
            line_start: 0,
            scanned: 0,
            started: false,
            ended: false,
            max_event_bytes: max,
        }
    }

    /// Appends bytes as they arrived.
    pub fn push(&mut self, data: &[u8]) {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        self.buf.extend_from_slice(data);
        if !self.started {
            // A UTF-8 byte order mark may open the stream; it is not part of the first line.
            if self.buf.starts_with(BOM) {
                self.buf.advance(BOM.len());
                self.started = true;
            } else if !BOM.starts_with(&self.buf) {
                self.started = true;
            }
        }
    }

    /// The next whole event block, blank line included, exactly as it arrived. Blocks that
    /// dispatch nothing (a comment, a stray blank line) are returned too.
    pub fn next_block(&mut self) -> Option<Bytes> {
        loop {
            let rest = &self.buf[self.scanned..];
            let at = memchr::memchr2(b'\r', b'\n', rest)? + self.scanned;
            let width = if self.buf[at] == b'\r' {
                match self.buf.get(at + 1) {
                    None if self.ended => 1,
                    // A `\r` at the end of what arrived may be the first half of `\r\n`.
                    None => {
                        self.scanned = at;
                        return None;
                    }
                    Some(b'\n') => 2,
                    Some(_) => 1,
                }
            } else {
                1
            };
            let line_is_empty = at == self.line_start;
            self.scanned = at + width;
            self.line_start = self.scanned;
            if line_is_empty {
                let block = self.buf.split_to(self.scanned).freeze();
                self.scanned = 0;
                self.line_start = 0;
                return Some(block);
            }
        }
    }

    /// The next event that dispatches something.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let block = self.next_block()?;
            if let Some(event) = SseEvent::parse(&block) {
                return Some(event);
            }
        }
    }

    /// Marks the end of the input, so that a final `\r` ends its line. Call it when the stream
    /// ends, then drain [`next_block`](Self::next_block) / [`next_event`](Self::next_event).
    pub fn finish(&mut self) {
        self.ended = true;
    }

    /// Bytes held for an event that has not ended yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// `true` once the unfinished event holds more than the limit.
    pub fn is_over_limit(&self) -> bool {
        self.buf.len() > self.max_event_bytes
    }

    /// Everything held, unparsed (for passing the rest of a stream on as it is).
    pub fn take_rest(&mut self) -> Bytes {
        self.line_start = 0;
        self.scanned = 0;
        self.started = true;
        self.buf.split().freeze()
    }
}

/// Decodes a complete stream in one go (an unterminated last event is dropped, as the standard
/// says).
pub fn decode_all(stream: &[u8]) -> Vec<SseEvent> {
    let mut decoder = SseDecoder::new();
    decoder.push(stream);
    decoder.finish();
    std::iter::from_fn(|| decoder.next_event()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events_in_pieces(stream: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        for chunk in stream.chunks(piece.max(1)) {
            decoder.push(chunk);
            out.extend(std::iter::from_fn(|| decoder.next_event()));
        }
        decoder.finish();
        out.extend(std::iter::from_fn(|| decoder.next_event()));
        out
    }

    #[test]
    fn every_line_ending_and_every_split_give_the_same_events() {
        let streams: [&[u8]; 4] = [
            b": hi\n\ndata: {\"a\":1}\n\nevent: x\ndata: two\ndata: lines\n\ndata: [DONE]\n\n",
            b": hi\r\n\r\ndata: {\"a\":1}\r\n\r\nevent: x\r\ndata: two\r\ndata: lines\r\n\r\ndata: [DONE]\r\n\r\n",
            b": hi\r\rdata: {\"a\":1}\r\revent: x\rdata: two\rdata: lines\r\rdata: [DONE]\r\r",
            b"\xEF\xBB\xBF: hi\n\ndata:{\"a\":1}\n\nevent: x\ndata: two\ndata:lines\n\ndata: [DONE]\r\n\n",
        ];
        let expected = vec![
            SseEvent {
                data: "{\"a\":1}".into(),
                ..SseEvent::default()
            },
            SseEvent {
                event: Some("x".into()),
                data: "two\nlines".into(),
                ..SseEvent::default()
            },
            SseEvent {
                data: "[DONE]".into(),
                ..SseEvent::default()
            },
        ];
        for stream in streams {
            for piece in 1..stream.len() {
                assert_eq!(
                    events_in_pieces(stream, piece),
                    expected,
                    "{:?} in pieces of {piece}",
                    String::from_utf8_lossy(stream)
                );
            }
        }
    }

    #[test]
    fn blocks_come_back_byte_for_byte() {
        let stream = b"data: 1\r\n\r\n\r\n: ka\n\ndata: 2\n\npartial";
        let mut decoder = SseDecoder::new();
        decoder.push(stream);
        let blocks: Vec<Bytes> = std::iter::from_fn(|| decoder.next_block()).collect();
        assert_eq!(
            blocks,
            [
                &b"data: 1\r\n\r\n"[..],
                b"\r\n",
                b": ka\n\n",
                b"data: 2\n\n"
            ]
        );
        assert_eq!(decoder.pending(), 7);
        assert_eq!(&decoder.take_rest()[..], b"partial");
        assert_eq!(decoder.pending(), 0);
    }

    #[test]
    fn empty_data_and_fields_follow_the_standard() {
        assert_eq!(SseEvent::parse(b": only a comment\n\n"), None);
        assert_eq!(SseEvent::parse(b"event: x\n\n"), None);
        let empty = SseEvent::parse(b"data\n\n").unwrap();
        assert_eq!(empty.data, "");
        let e = SseEvent::parse(b"id: 7\nretry: 1500\ndata:  two spaces\n\n").unwrap();
        assert_eq!(e.id.as_deref(), Some("7"));
        assert_eq!(e.retry, Some(1500));
        assert_eq!(e.data, " two spaces");
        assert_eq!(
            SseEvent::parse(b"retry: soon\ndata: x\n\n").unwrap().retry,
            None
        );
    }

    #[test]
    fn writing_then_reading_round_trips() {
        for ending in [LineEnding::Lf, LineEnding::CrLf] {
            let mut bytes = comment("keep-alive", ending).to_vec();
            bytes.extend_from_slice(&blank_line(ending));
            bytes.extend_from_slice(&data_event("a\nb\r\nc", ending));
            let events = decode_all(&bytes);
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].data, "a\nb\nc");
            assert_eq!(LineEnding::of_block(&data_event("x", ending)), ending);
        }
        assert_eq!(&data_event("{}", LineEnding::CrLf)[..], b"data: {}\r\n\r\n");
        assert_eq!(
            &comment("keep-alive", LineEnding::Lf)[..],
            b": keep-alive\n\n"
        );
    }

    #[test]
    fn reports_an_event_over_the_limit() {
        let mut decoder = SseDecoder::with_max_event_bytes(8);
        decoder.push(b"data: 0123456789");
        assert!(decoder.next_block().is_none());
        assert!(decoder.is_over_limit());
    }
}
