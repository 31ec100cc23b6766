//! Typed values that travel between layers in `http::Extensions`.
//!
//! Request extensions are set by the caller or by an outer layer and read by inner ones;
//! response extensions travel back out. None of them ever holds a secret.

use std::sync::{Arc, Mutex};

use http::Request;

use crate::fingerprint::KeyId;

pub(crate) mod flavor;
mod request_info;

pub use self::request_info::{Operation, Protocol, RequestInfo};

/// Request extension set on the requests a
/// [`PseudoStream`](crate::stream::pseudo::PseudoStream) rewrote: the inner stack sees a
/// non-streaming request, and this says the client is nonetheless getting a stream (as does
/// [`RequestInfo::pseudo_streamed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PseudoStreamed;

/// The model a request is for, when it is not in a Gemini path (`/models/{model}:…`).
///
/// Set it on OpenAI-style requests, whose model is in the JSON body, so that key cooldowns are
/// tracked per model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelName(pub Arc<str>);

impl ModelName {
    /// Wraps a model name.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        ModelName(name.into())
    }

    /// The model name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which attempt a request is, and what earlier attempts taught: set by
/// [`Retry`](crate::retry::Retry) on each attempt and read by
/// [`KeyRotation`](crate::keys::KeyRotation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptContext {
    /// 1 for the first attempt.
    pub number: u32,
    /// Use this key again if it is still usable (the last failure was not the key's).
    pub prefer: Option<KeyId>,
    /// Keys that already failed this request; avoided while another key is usable.
    pub avoid: Vec<KeyId>,
}

/// Which key an attempt used, even when it ended in an error instead of a response (whose
/// extensions would say): a shared slot [`Retry`](crate::retry::Retry) puts in each attempt's
/// request extensions and [`KeyRotation`](crate::keys::KeyRotation) fills, so that a retry after
/// a transport error can prefer the same key. Crate-private: only those two fill and read it.
#[derive(Debug, Clone, Default)]
pub(crate) struct AttemptKey(Arc<Mutex<Option<KeyId>>>);

impl AttemptKey {
    /// Records the key.
    pub(crate) fn set(&self, id: KeyId) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
    }

    /// The key, once set.
    pub(crate) fn get(&self) -> Option<KeyId> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// How many attempts the request took (response extension, also sent as the
/// [`ATTEMPTS_HEADER`](crate::retry::ATTEMPTS_HEADER) header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attempts(pub u32);

/// The model named by a Gemini REST path: `/v1beta/models/gemini-2.0-flash:generateContent` →
/// `gemini-2.0-flash`. Accepts the `:` URL-encoded as `%3A` (as the google-genai SDK sends it).
///
/// ```
/// use gemini_balance::ext::model_from_path;
/// assert_eq!(model_from_path("/v1beta/models/gemini-2.0-flash:generateContent"), Some("gemini-2.0-flash"));
/// assert_eq!(model_from_path("/v1/models/gemini-2.5-pro%3AstreamGenerateContent"), Some("gemini-2.5-pro"));
/// assert_eq!(model_from_path("/v1/chat/completions"), None);
/// ```
pub fn model_from_path(path: &str) -> Option<&str> {
    // Byte scans, not `rfind`/`find` with string patterns: this runs several times per request
    // and a pattern searcher's setup costs more than scanning a path this short.
    const MODELS: &[u8] = b"/models/";
    let bytes = path.as_bytes();
    let last = bytes.len().checked_sub(MODELS.len())?;
    let start = (0..=last).rev().find(|&i| bytes[i..].starts_with(MODELS))? + MODELS.len();
    let rest = &bytes[start..];
    // The model ends at `:` (the method), `/` or a URL-encoded `:` (`%3A`, any case).
    let end = rest
        .iter()
        .enumerate()
        .position(|(i, &b)| {
            b == b':'
                || b == b'/'
                || (b == b'%'
                    && rest
                        .get(i + 1..i + 3)
                        .is_some_and(|h| h.eq_ignore_ascii_case(b"3a")))
        })
        .unwrap_or(rest.len());
    // `start` follows an ASCII pattern and `end` is at an ASCII byte or the end: both are
    // character boundaries.
    let model = path.get(start..start + end)?;
    (!model.is_empty()).then_some(model)
}

/// The model of a request: the [`ModelName`] extension if set, else its [`RequestInfo`]'s (when
/// it has a current one), else the Gemini path.
pub(crate) fn request_model<B>(req: &Request<B>) -> Option<&str> {
    if let Some(name) = req.extensions().get::<ModelName>() {
        return Some(name.as_str());
    }
    match RequestInfo::current(req) {
        Some(info) => info.model_name(),
        None => model_from_path(req.uri().path()),
    }
}

#[cfg(test)]
mod tests {
    use super::model_from_path;

    #[test]
    fn the_model_is_the_segment_after_the_last_models() {
        let cases = [
            (
                "/v1beta/models/gemini-2.0-flash:generateContent",
                Some("gemini-2.0-flash"),
            ),
            (
                "/v1/models/gemini-2.5-pro%3astreamGenerateContent?alt=sse",
                Some("gemini-2.5-pro"),
            ),
            (
                "/v1/models/gemini-2.5-pro%3AcountTokens",
                Some("gemini-2.5-pro"),
            ),
            ("/v1beta/models/tunedModels/x", Some("tunedModels")),
            ("/models/a/models/b:generateContent", Some("b")),
            ("/v1beta/models/gemini-2.0-flash", Some("gemini-2.0-flash")),
            ("/v1beta/models/modèle-ü:generateContent", Some("modèle-ü")),
            ("/v1beta/models/m%3", Some("m%3")),
            ("/v1beta/models/%3Ax", None),
            ("/v1beta/models/", None),
            ("/v1beta/models", None),
            ("/models/", None),
            ("", None),
        ];
        for (path, model) in cases {
            assert_eq!(model_from_path(path), model, "{path}");
        }
    }
}
