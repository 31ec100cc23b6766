//! Slots that inner layers fill for the usage layer: the attempt log, the request body and the
//! upstream's token count.
//!
//! [`UsageLayer`](super::UsageLayer) puts them in the request extensions; [`Retry`] clones the
//! extensions into every attempt (the slots are shared `Arc`s), so
//! [`KeyRotation`](crate::keys::KeyRotation) can log each attempt, `Retry` hands over the
//! body it buffered anyway, and a layer that converts the answer
//! (`openai::OpenAi`) leaves the upstream's token count it read on the way.
//!
//! [`Retry`]: crate::retry::Retry

use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::record::{AttemptRecord, TokenUsage};

/// Collects one [`AttemptRecord`] per upstream attempt of a request.
#[derive(Clone, Default)]
pub struct AttemptLog {
    attempts: Arc<Mutex<Vec<AttemptRecord>>>,
}

impl fmt::Debug for AttemptLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttemptLog")
            .field("attempts", &self.len())
            .finish()
    }
}

impl AttemptLog {
    /// Adds an attempt.
    pub fn push(&self, attempt: AttemptRecord) {
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(attempt);
    }

    /// Number of attempts logged.
    pub fn len(&self) -> usize {
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// `true` when nothing was logged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the attempts logged so far, leaving them in place (for a layer that counts them
    /// before the usage layer takes them).
    pub fn inspect<R>(&self, f: impl FnOnce(&[AttemptRecord]) -> R) -> R {
        f(&self.attempts.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Takes the attempts out.
    pub fn take(&self) -> Vec<AttemptRecord> {
        std::mem::take(&mut *self.attempts.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Asks the layer that buffers the request body ([`Retry`](crate::retry::Retry)) to leave a
/// copy here (a reference count, not a copy of the bytes).
#[derive(Clone, Default)]
pub struct RequestBodyCapture {
    body: Arc<Mutex<Option<Bytes>>>,
}

impl fmt::Debug for RequestBodyCapture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBodyCapture").finish_non_exhaustive()
    }
}

impl RequestBodyCapture {
    /// Leaves the body.
    pub fn set(&self, body: Bytes) {
        *self.body.lock().unwrap_or_else(|e| e.into_inner()) = Some(body);
    }

    /// The body, if one was left.
    pub fn get(&self) -> Option<Bytes> {
        self.body.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The token count the upstream reported, left by a layer that turns the upstream's answer into
/// one the usage layer cannot always read it from: an OpenAI stream converted from Gemini's
/// carries the usage only when the client asked for it (`stream_options.include_usage`), yet
/// the upstream reported it, and spent the tokens, either way. When one is left, the record
/// takes it over what the answer to the client shows (it is the upstream's own, with every
/// detail: cached, thought and tool-use tokens).
#[derive(Clone, Default)]
pub struct UpstreamUsage {
    usage: Arc<Mutex<Option<TokenUsage>>>,
}

impl fmt::Debug for UpstreamUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamUsage")
            .field("usage", &self.get())
            .finish()
    }
}

impl UpstreamUsage {
    /// Leaves the upstream's count; a later report replaces it (a stream's last one is the
    /// total).
    pub fn set(&self, usage: TokenUsage) {
        *self.usage.lock().unwrap_or_else(|e| e.into_inner()) = Some(usage);
    }

    /// The count left, if any.
    pub fn get(&self) -> Option<TokenUsage> {
        *self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }
}
