//! Typed values that travel between layers in `http::Extensions`.
//!
//! Request extensions are set by the caller or by an outer layer and read by inner ones;
//! response extensions travel back out. None of them ever holds a secret.

use std::sync::{Arc, Mutex};

use http::Request;

use crate::keys::KeyId;

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
/// a transport error can prefer the same key.
#[derive(Debug, Clone, Default)]
pub struct AttemptKey(Arc<Mutex<Option<KeyId>>>);

impl AttemptKey {
    /// Records the key.
    pub fn set(&self, id: KeyId) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
    }

    /// The key, once set.
    pub fn get(&self) -> Option<KeyId> {
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
    let start = path.rfind("/models/")? + "/models/".len();
    let rest = &path[start..];
    let mut end = rest.find([':', '/']).unwrap_or(rest.len());
    if let Some(encoded) = find_ascii_case_insensitive(rest, "%3a") {
        end = end.min(encoded);
    }
    let model = &rest[..end];
    (!model.is_empty()).then_some(model)
}

/// The model of a request: the [`ModelName`] extension if set, else the Gemini path.
pub fn request_model<B>(req: &Request<B>) -> Option<&str> {
    match req.extensions().get::<ModelName>() {
        Some(name) => Some(name.as_str()),
        None => model_from_path(req.uri().path()),
    }
}

fn find_ascii_case_insensitive(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}
