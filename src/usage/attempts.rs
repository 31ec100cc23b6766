//! Slots that inner layers fill for the usage layer: the attempt log and the request body.
//!
//! [`UsageLayer`](super::UsageLayer) puts them in the request extensions; [`Retry`] clones the
//! extensions into every attempt (the slots are shared `Arc`s), so
//! [`KeyRotation`](crate::keys::KeyRotation) can log each attempt, and `Retry` hands over the
//! body it buffered anyway.
//!
//! [`Retry`]: crate::retry::Retry

use std::fmt;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::record::AttemptRecord;

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
