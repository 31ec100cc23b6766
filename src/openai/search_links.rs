//! Search links (`SHOW_SEARCH_LINK`): the sources of an answer grounded by Google Search,
//! appended to its text as Gemini-Balance did, for clients that only show text.
//!
//! The sources are the web entries of the candidate's `groundingMetadata.groundingChunks`. The
//! text is Gemini-Balance's, byte for byte:
//!
//! ```text
//! \n\n---\n\n**【引用来源】**\n\n\n- [title](uri)\n- [title](uri)
//! ```
//!
//! It goes into a text part of its own at the end of the candidate's content, so every client
//! that joins text parts (the SDKs' `.text`, the OpenAI conversion) shows it after the answer.
//! In a stream it comes once, in the candidate's last chunk (the one with its `finishReason`),
//! with every source seen up to then, or in one more chunk at the end when sources arrive after
//! that. A candidate without web sources gets nothing (Gemini-Balance added the heading alone).
//!
//! [`gemini_response_to_openai`](super::gemini_response_to_openai) and
//! [`OpenAiStream`](super::OpenAiStream) add them with [`ResponseOptions::search_links`]
//! (super::ResponseOptions); [`SearchLinksLayer`] adds them to Gemini-native answers of the
//! requests marked with [`ShowSearchLinks`].
//!
//! # Example
//!
//! ```
//! use serde_json::json;
//! use gemini_balance::openai::add_search_links;
//!
//! let mut answer = json!({"candidates": [{
//!     "content": {"role": "model", "parts": [{"text": "It rains."}]},
//!     "finishReason": "STOP",
//!     "groundingMetadata": {"groundingChunks": [
//!         {"web": {"uri": "https://example.com/weather", "title": "example.com"}}]}
//! }]});
//! add_search_links(&mut answer);
//! assert_eq!(
//!     answer["candidates"][0]["content"]["parts"][1]["text"],
//!     "\n\n---\n\n**【引用来源】**\n\n\n- [example.com](https://example.com/weather)"
//! );
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{header, Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use serde_json::{json, Value};
use tower_layer::Layer;
use tower_service::Service;

use crate::sse::{data_event, is_event_stream, LineEnding, SseDecoder, SseEvent};

/// The heading of the sources, as Gemini-Balance wrote it.
const HEADING: &str = "\n\n---\n\n**【引用来源】**\n\n";

/// The web sources (title, URI) of a candidate's grounding metadata, in order.
fn sources(candidate: &Value) -> impl Iterator<Item = (String, String)> + '_ {
    candidate
        .pointer("/groundingMetadata/groundingChunks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|chunk| {
            let web = chunk.get("web")?;
            let uri = web.get("uri").and_then(Value::as_str)?;
            let title = web
                .get("title")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .unwrap_or(uri);
            Some((title.to_owned(), uri.to_owned()))
        })
}

fn links_text(sources: &[(String, String)]) -> String {
    let mut text = String::from(HEADING);
    for (title, uri) in sources {
        text.push_str(&format!("\n- [{title}]({uri})"));
    }
    text
}

/// The sources text of one candidate, `None` when it has no web sources: Gemini-Balance's
/// heading, then a markdown link per web entry of `groundingMetadata.groundingChunks`
/// (the URI stands for a missing title).
pub(crate) fn search_links_text(candidate: &Value) -> Option<String> {
    let found: Vec<(String, String)> = sources(candidate).collect();
    (!found.is_empty()).then(|| links_text(&found))
}

/// Appends `text` as a part of its own to a candidate's content.
fn append_part(candidate: &mut Value, text: String) {
    let Value::Object(candidate) = candidate else {
        return;
    };
    let content = candidate
        .entry("content")
        .or_insert_with(|| json!({ "role": "model" }));
    if !content.is_object() {
        *content = json!({ "role": "model" });
    }
    let parts = &mut content["parts"];
    if !parts.is_array() {
        *parts = json!([]);
    }
    if let Value::Array(parts) = parts {
        parts.push(json!({ "text": text }));
    }
}

/// Adds the sources text to each candidate of a whole Gemini answer that
/// has web sources, as a text part of its own at the end of its content, so that every client
/// that joins text parts (the SDKs' `.text`, the OpenAI conversion) shows it after the answer.
pub fn add_search_links(answer: &mut Value) {
    let Some(candidates) = answer.get_mut("candidates").and_then(Value::as_array_mut) else {
        return;
    };
    for candidate in candidates {
        if let Some(text) = search_links_text(candidate) {
            append_part(candidate, text);
        }
    }
}

/// The sources of one candidate of a stream.
#[derive(Debug, Clone, Default)]
struct Seen {
    sources: Vec<(String, String)>,
    /// The text went out.
    shown: bool,
}

/// Adds the sources text to a Gemini stream, chunk by chunk: once per candidate, in its last
/// chunk (the one with its `finishReason`), with every source seen up to then, or in one more
/// chunk at the end ([`finish`](Self::finish)) when the sources came after it.
///
/// ```
/// use serde_json::json;
/// use gemini_balance::openai::SearchLinksStream;
///
/// let mut links = SearchLinksStream::new();
/// let mut first = json!({"candidates": [{"content": {"parts": [{"text": "It "}]}}]});
/// assert!(!links.chunk(&mut first));
/// let mut last = json!({"candidates": [{"content": {"parts": [{"text": "rains."}]},
///     "finishReason": "STOP",
///     "groundingMetadata": {"groundingChunks": [{"web": {"uri": "https://e.example", "title": "e"}}]}}]});
/// assert!(links.chunk(&mut last));
/// assert_eq!(last["candidates"][0]["content"]["parts"][1]["text"],
///            "\n\n---\n\n**【引用来源】**\n\n\n- [e](https://e.example)");
/// assert!(links.finish().is_none(), "shown once");
/// ```
#[derive(Debug, Clone, Default)]
pub struct SearchLinksStream {
    candidates: Vec<Seen>,
}

impl SearchLinksStream {
    /// A stream that has shown nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes the sources of one chunk, and adds the text to the candidates that end in it
    /// (`finishReason`). Returns whether the chunk changed.
    pub fn chunk(&mut self, chunk: &mut Value) -> bool {
        let Some(candidates) = chunk.get_mut("candidates").and_then(Value::as_array_mut) else {
            return false;
        };
        let mut changed = false;
        for (i, candidate) in candidates.iter_mut().enumerate() {
            let index = candidate
                .get("index")
                .and_then(Value::as_u64)
                .map_or(i, |n| n as usize);
            if index > 1024 {
                continue;
            }
            if self.candidates.len() <= index {
                self.candidates.resize(index + 1, Seen::default());
            }
            let seen = &mut self.candidates[index];
            for source in sources(candidate) {
                if !seen.sources.iter().any(|(_, uri)| *uri == source.1) {
                    seen.sources.push(source);
                }
            }
            let ends = candidate.get("finishReason").is_some();
            if ends && !seen.shown && !seen.sources.is_empty() {
                seen.shown = true;
                append_part(candidate, links_text(&seen.sources));
                changed = true;
            }
        }
        changed
    }

    /// One more chunk for the candidates whose sources have not been shown yet (a stream that
    /// ended without a finish reason, or sent its sources after it), `None` when all were.
    pub fn finish(&mut self) -> Option<Value> {
        let mut candidates = Vec::new();
        for (index, seen) in self.candidates.iter_mut().enumerate() {
            if !seen.shown && !seen.sources.is_empty() {
                seen.shown = true;
                let mut candidate = json!({ "index": index });
                append_part(&mut candidate, links_text(&seen.sources));
                candidates.push(candidate);
            }
        }
        (!candidates.is_empty()).then(|| json!({ "candidates": candidates }))
    }
}

/// The mark of a request whose Gemini answer gets its search links from [`SearchLinksLayer`]:
/// whoever decides that the request searched (a `-search` model) and that links are shown
/// (`SHOW_SEARCH_LINK`) puts it in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShowSearchLinks;

/// Largest whole answer read to add links to (a larger one is passed on as it is).
const MAX_WHOLE_BYTES: usize = crate::retry::DEFAULT_MAX_BODY_BYTES;

/// Adds search links to the successful Gemini-native answers of requests marked with
/// [`ShowSearchLinks`]: a JSON answer whole (up to 20 MiB, passed on unchanged beyond), an
/// `alt=sse` stream event by event (the events it does not change byte for byte), a JSON-array
/// stream (`streamGenerateContent` without `alt=sse`) whole. Other requests, failures and
/// compressed answers are untouched. The answer loses its `Content-Length`.
///
/// ```
/// use bytes::Bytes;
/// use gemini_balance::openai::{SearchLinksLayer, ShowSearchLinks};
/// use http::{Request, Response};
/// use http_body_util::{BodyExt, Full};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
///     let answer = r#"{"candidates":[{"content":{"parts":[{"text":"Yes."}]},"finishReason":"STOP",
///         "groundingMetadata":{"groundingChunks":[{"web":{"uri":"https://e.example","title":"e"}}]}}]}"#;
///     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(answer))))
/// });
/// let service = ServiceBuilder::new().layer(SearchLinksLayer::new()).service(upstream);
/// let mut req = Request::new(Full::new(Bytes::new()));
/// req.extensions_mut().insert(ShowSearchLinks);
/// let body = service.oneshot(req).await?.into_body().collect().await?.to_bytes();
/// let answer: serde_json::Value = serde_json::from_slice(&body)?;
/// assert!(answer["candidates"][0]["content"]["parts"][1]["text"]
///     .as_str().unwrap().ends_with("- [e](https://e.example)"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SearchLinksLayer {
    _private: (),
}

impl SearchLinksLayer {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for SearchLinksLayer {
    type Service = SearchLinks<S>;

    fn layer(&self, inner: S) -> SearchLinks<S> {
        SearchLinks { inner }
    }
}

/// The service of [`SearchLinksLayer`].
#[derive(Debug, Clone)]
pub struct SearchLinks<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SearchLinks<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes>,
{
    type Response = Response<SearchLinksBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let marked = req.extensions().get::<ShowSearchLinks>().is_some();
        ResponseFuture {
            inner: self.inner.call(req),
            marked,
        }
    }
}

pin_project! {
    /// The response future of [`SearchLinks`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        marked: bool,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body<Data = Bytes>,
{
    type Output = Result<Response<SearchLinksBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx))?;
        let (mut parts, body) = res.into_parts();
        let mode = if !*this.marked
            || !parts.status.is_success()
            || crate::decode::is_encoded(&parts.headers)
        {
            Mode::Pass
        } else if parts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| is_event_stream(v.as_bytes()))
        {
            Mode::Stream(Box::new(StreamMode {
                decoder: SseDecoder::new(),
                links: SearchLinksStream::new(),
                out: VecDeque::new(),
                ending: None,
                ended: false,
            }))
        } else {
            Mode::Whole {
                buf: BytesMut::new(),
                done: false,
            }
        };
        if !matches!(mode, Mode::Pass) {
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        Poll::Ready(Ok(Response::from_parts(
            parts,
            SearchLinksBody { body, mode },
        )))
    }
}

pin_project! {
    /// The response body of [`SearchLinks`].
    pub struct SearchLinksBody<B> {
        #[pin]
        body: B,
        mode: Mode,
    }
}

impl<B> std::fmt::Debug for SearchLinksBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchLinksBody").finish_non_exhaustive()
    }
}

enum Mode {
    Pass,
    Whole { buf: BytesMut, done: bool },
    Stream(Box<StreamMode>),
}

struct StreamMode {
    decoder: SseDecoder,
    links: SearchLinksStream,
    out: VecDeque<Bytes>,
    /// The line ending of the upstream's events, for the ones written here.
    ending: Option<LineEnding>,
    ended: bool,
}

impl StreamMode {
    fn drain(&mut self) {
        while let Some(block) = self.decoder.next_block() {
            let ending = *self.ending.get_or_insert(LineEnding::of_block(&block));
            let changed = SseEvent::parse(&block)
                .and_then(|event| event.json::<Value>().ok())
                .and_then(|mut value| {
                    self.links
                        .chunk(&mut value)
                        .then(|| data_event(&value.to_string(), ending))
                });
            self.out.push_back(changed.unwrap_or(block));
        }
    }

    fn end(&mut self) {
        self.decoder.finish();
        self.drain();
        let rest = self.decoder.take_rest();
        if !rest.is_empty() {
            self.out.push_back(rest);
        }
        if let Some(extra) = self.links.finish() {
            let ending = self.ending.unwrap_or(LineEnding::CrLf);
            self.out.push_back(data_event(&extra.to_string(), ending));
        }
        self.ended = true;
    }
}

/// A whole answer with its links: an object, or the JSON array of a stream without `alt=sse`.
fn whole_with_links(bytes: &[u8]) -> Option<Bytes> {
    let mut value: Value = serde_json::from_slice(bytes).ok()?;
    match &mut value {
        Value::Object(_) => add_search_links(&mut value),
        Value::Array(chunks) => {
            let mut links = SearchLinksStream::new();
            for chunk in chunks.iter_mut() {
                links.chunk(chunk);
            }
            chunks.extend(links.finish());
        }
        _ => return None,
    }
    Some(Bytes::from(value.to_string()))
}

impl<B> Body for SearchLinksBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        loop {
            match this.mode {
                Mode::Pass => return this.body.poll_frame(cx),
                Mode::Whole { buf, done } => {
                    if *done {
                        return Poll::Ready(None);
                    }
                    match ready!(this.body.as_mut().poll_frame(cx)) {
                        Some(Ok(frame)) => {
                            if let Some(data) = frame.data_ref() {
                                buf.extend_from_slice(data);
                            }
                            if buf.len() > MAX_WHOLE_BYTES {
                                // Too large to rewrite: what was read, then the rest as it is.
                                let read = std::mem::take(buf).freeze();
                                *this.mode = Mode::Pass;
                                return Poll::Ready(Some(Ok(Frame::data(read))));
                            }
                        }
                        Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                        None => {
                            *done = true;
                            let read = std::mem::take(buf).freeze();
                            let out = whole_with_links(&read).unwrap_or(read);
                            if out.is_empty() {
                                return Poll::Ready(None);
                            }
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                }
                Mode::Stream(stream) => {
                    if let Some(bytes) = stream.out.pop_front() {
                        return Poll::Ready(Some(Ok(Frame::data(bytes))));
                    }
                    if stream.ended {
                        return Poll::Ready(None);
                    }
                    match ready!(this.body.as_mut().poll_frame(cx)) {
                        Some(Ok(frame)) => {
                            if let Some(data) = frame.data_ref() {
                                stream.decoder.push(data);
                                if stream.decoder.is_over_limit() {
                                    // One event too large to hold: the rest goes on unread.
                                    stream.out.push_back(stream.decoder.take_rest());
                                    let out = std::mem::take(&mut stream.out);
                                    *this.mode = Mode::Pass;
                                    let bytes: Vec<u8> = out.into_iter().flatten().collect();
                                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(bytes)))));
                                }
                                stream.drain();
                            }
                        }
                        Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                        None => stream.end(),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.mode {
            Mode::Pass => self.body.is_end_stream(),
            Mode::Whole { done, .. } => *done,
            Mode::Stream(stream) => stream.ended && stream.out.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.mode {
            Mode::Pass => self.body.size_hint(),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grounded(uris: &[&str]) -> Value {
        json!({"groundingChunks": uris.iter().map(|u| json!({"web": {"uri": u, "title": format!("t{u}")}})).collect::<Vec<_>>()})
    }

    #[test]
    fn sources_are_shown_once_with_every_source_seen() {
        let mut links = SearchLinksStream::new();
        let mut a = json!({"candidates": [{"content": {"parts": [{"text": "a"}]}, "groundingMetadata": grounded(&["u1"])}]});
        assert!(!links.chunk(&mut a), "not before the candidate ends");
        let mut b = json!({"candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "STOP",
            "groundingMetadata": grounded(&["u1", "u2"])}]});
        assert!(links.chunk(&mut b));
        assert_eq!(
            b["candidates"][0]["content"]["parts"][1]["text"],
            format!("{HEADING}\n- [tu1](u1)\n- [tu2](u2)")
        );
        let mut late =
            json!({"candidates": [{"groundingMetadata": grounded(&["u3"])}], "usageMetadata": {}});
        assert!(!links.chunk(&mut late));
        assert!(links.finish().is_none(), "once per candidate");
    }

    #[test]
    fn sources_after_the_end_come_in_a_chunk_of_their_own() {
        let mut links = SearchLinksStream::new();
        let mut end = json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}]});
        assert!(!links.chunk(&mut end));
        let mut late = json!({"candidates": [{"index": 0, "groundingMetadata": grounded(&["u"])}]});
        assert!(!links.chunk(&mut late));
        let extra = links.finish().unwrap();
        assert_eq!(
            extra,
            json!({"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": format!("{HEADING}\n- [tu](u)")}]}}]})
        );
    }

    #[test]
    fn answers_without_web_sources_are_unchanged() {
        let original = json!({"candidates": [{"content": {"parts": [{"text": "x"}]},
            "groundingMetadata": {"groundingChunks": [{"retrievedContext": {"uri": "gs://x"}}]}}]});
        let mut answer = original.clone();
        add_search_links(&mut answer);
        assert_eq!(answer, original);
        assert!(whole_with_links(b"not json").is_none());
    }

    #[test]
    fn array_streams_get_their_links_whole() {
        let body = json!([
            {"candidates": [{"content": {"parts": [{"text": "a"}]}}]},
            {"candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "STOP", "groundingMetadata": grounded(&["u"])}]}
        ]);
        let out: Value =
            serde_json::from_slice(&whole_with_links(body.to_string().as_bytes()).unwrap())
                .unwrap();
        assert_eq!(
            out[1]["candidates"][0]["content"]["parts"][1]["text"],
            format!("{HEADING}\n- [tu](u)")
        );
        assert_eq!(out.as_array().unwrap().len(), 2);
    }

    #[test]
    fn the_sources_text_lists_web_entries_only() {
        use serde_json::json;

        let candidate = json!({"groundingMetadata": {"groundingChunks": [
            {"web": {"uri": "https://a.example/1", "title": "a.example"}},
            {"retrievedContext": {"uri": "gs://not-the-web"}}]}});
        assert_eq!(
            search_links_text(&candidate).unwrap(),
            "\n\n---\n\n**【引用来源】**\n\n\n- [a.example](https://a.example/1)"
        );
        assert!(search_links_text(&json!({"content": {}})).is_none());
    }
}
