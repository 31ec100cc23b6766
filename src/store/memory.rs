//! [`MemoryStore`]: everything in memory, for tests and for embedding without a database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{KeyStateStore, StoreError, UsageSink};
use crate::keys::{KeyId, KeyObserver, KeySnapshot};
use crate::usage::RequestRecord;

/// Keeps records and key state in memory (bounded: the oldest records go first).
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    records: Vec<RequestRecord>,
    capacity: usize,
    dropped: u64,
    keys: HashMap<KeyId, KeySnapshot>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store keeping the last 100,000 records.
    pub fn new() -> Self {
        Self::with_capacity(100_000)
    }

    /// A store keeping the last `capacity` records.
    pub fn with_capacity(capacity: usize) -> Self {
        MemoryStore {
            inner: Arc::new(Mutex::new(Inner {
                records: Vec::new(),
                capacity: capacity.max(1),
                dropped: 0,
                keys: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The records kept, oldest first.
    pub fn records(&self) -> Vec<RequestRecord> {
        self.lock().records.clone()
    }

    /// Records pushed out by newer ones.
    pub fn evicted(&self) -> u64 {
        self.lock().dropped
    }

    /// The stored state of every key.
    pub fn key_states(&self) -> Vec<KeySnapshot> {
        self.lock().keys.values().cloned().collect()
    }
}

impl UsageSink for MemoryStore {
    fn record(&self, record: RequestRecord) {
        let mut inner = self.lock();
        if inner.records.len() >= inner.capacity {
            inner.records.remove(0);
            inner.dropped += 1;
        }
        inner.records.push(record);
    }
}

impl KeyStateStore for MemoryStore {
    fn save_key_state(&self, state: KeySnapshot) {
        self.lock().keys.insert(state.id.clone(), state);
    }

    fn forget_key(&self, id: &KeyId) {
        self.lock().keys.remove(id);
    }

    fn load_key_states(&self) -> Result<Vec<KeySnapshot>, StoreError> {
        Ok(self.key_states())
    }
}

impl KeyObserver for MemoryStore {
    fn key_changed(&self, state: KeySnapshot) {
        self.save_key_state(state);
    }

    fn key_removed(&self, id: &KeyId) {
        self.forget_key(id);
    }
}
