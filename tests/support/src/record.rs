//! What the mock saw: counters per key, every credential, and recent requests (head and body).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use http::{HeaderMap, Method, Uri};

/// How many recent requests are kept (oldest dropped first).
pub const RECENT_LIMIT: usize = 256;

/// Counters for one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyCounts {
    /// Requests that arrived with this key.
    pub requests: u64,
    /// Answers by status code.
    pub by_status: BTreeMap<u16, u64>,
    /// Requests by model (for requests naming one).
    pub by_model: BTreeMap<String, u64>,
}

/// One request as the mock received it, and what the mock answered.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The method.
    pub method: Method,
    /// The URI as received (path and query).
    pub uri: Uri,
    /// The headers as received.
    pub headers: HeaderMap,
    /// The key the mock used (header, then `?key=`, then bearer), if any.
    pub key: Option<String>,
    /// The model named by the path, if any.
    pub model: Option<String>,
    /// Request body length in bytes.
    pub body_len: usize,
    /// The request body (bounded by the mock's body limit; recent requests only).
    pub body: bytes::Bytes,
    /// The status the mock answered.
    pub status: u16,
}

#[derive(Debug, Default)]
struct Inner {
    per_key: HashMap<String, KeyCounts>,
    unauthenticated: u64,
    total: u64,
    credentials: BTreeSet<String>,
    recent: VecDeque<RecordedRequest>,
}

/// The mock's memory, shared between its handlers and its handle.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    inner: Mutex<Inner>,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request arrived carrying these credentials; `key` is the one used.
    pub(crate) fn arrived(&self, credentials: &[String], key: Option<&str>, model: Option<&str>) {
        let mut inner = self.lock();
        inner.total += 1;
        inner.credentials.extend(credentials.iter().cloned());
        match key {
            Some(key) => {
                let counts = inner.per_key.entry(key.to_owned()).or_default();
                counts.requests += 1;
                if let Some(model) = model {
                    *counts.by_model.entry(model.to_owned()).or_default() += 1;
                }
            }
            None => inner.unauthenticated += 1,
        }
    }

    /// The mock answered a request.
    pub(crate) fn answered(&self, request: RecordedRequest) {
        let mut inner = self.lock();
        if let Some(key) = &request.key {
            let counts = inner.per_key.entry(key.clone()).or_default();
            *counts.by_status.entry(request.status).or_default() += 1;
        }
        if inner.recent.len() == RECENT_LIMIT {
            inner.recent.pop_front();
        }
        inner.recent.push_back(request);
    }

    pub(crate) fn counts(&self, key: &str) -> KeyCounts {
        self.lock().per_key.get(key).cloned().unwrap_or_default()
    }

    pub(crate) fn total(&self) -> u64 {
        self.lock().total
    }

    pub(crate) fn unauthenticated(&self) -> u64 {
        self.lock().unauthenticated
    }

    pub(crate) fn credentials(&self) -> Vec<String> {
        self.lock().credentials.iter().cloned().collect()
    }

    pub(crate) fn recent(&self) -> Vec<RecordedRequest> {
        self.lock().recent.iter().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        *self.lock() = Inner::default();
    }
}
