//! More than one place for usage records and key changes: a closure as a sink, two sinks at
//! once, two observers of one pool (a store and, say, a metrics exporter).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use gemini_balance::keys::{KeyId, KeyObserver, KeyPool, KeySnapshot};
use gemini_balance::store::{sink_fn, MemoryStore, Tee, UsageSink};
use gemini_balance::usage::RequestRecord;

const KEY_A: &str = "AIzaSyA1234567890abcdefghijklmnopqrstuv";
const KEY_B: &str = "AIzaSyB1234567890abcdefghijklmnopqrstuv";

/// Counts what it is told.
#[derive(Default)]
struct Counter {
    changed: AtomicUsize,
    removed: Mutex<Vec<KeyId>>,
}

impl KeyObserver for Counter {
    fn key_changed(&self, _: KeySnapshot) {
        self.changed.fetch_add(1, Ordering::Relaxed);
    }
    fn key_removed(&self, id: &KeyId) {
        self.removed.lock().unwrap().push(id.clone());
    }
}

#[test]
fn every_sink_of_a_tee_gets_every_record() {
    let store = MemoryStore::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_by_closure = seen.clone();
    let closure =
        sink_fn(move |record: RequestRecord| seen_by_closure.lock().unwrap().push(record.id.get()));
    let sink = Arc::new(store.clone()).tee(closure);
    for id in 1..=3 {
        sink.record(RequestRecord::new(id, SystemTime::now()));
    }
    assert_eq!(store.records().len(), 3);
    assert_eq!(*seen.lock().unwrap(), vec![1, 2, 3]);

    // A boxed sink and nested tees work the same.
    let third = MemoryStore::new();
    let boxed: Box<dyn UsageSink> = Box::new(Tee(store.clone(), third.clone()));
    boxed.record(RequestRecord::new(4, SystemTime::now()));
    assert_eq!(store.records().len(), 4);
    assert_eq!(third.records().len(), 1);
}

#[test]
fn every_observer_of_a_pool_is_told() {
    let store = MemoryStore::new();
    let counter = Arc::new(Counter::default());
    let pool = KeyPool::builder()
        .keys([KEY_A, KEY_B])
        .observer(Arc::new(store.clone()))
        .observer(counter.clone())
        .build()
        .unwrap();
    let a = KeyId::of(KEY_A);
    assert!(pool.disable(&a));
    assert_eq!(counter.changed.load(Ordering::Relaxed), 1);
    assert!(store.key_states().iter().any(|s| s.id == a));

    // Added later: told from then on, beside the others.
    let late = Arc::new(Counter::default());
    pool.add_observer(late.clone());
    pool.remove(std::slice::from_ref(&a));
    assert_eq!(*counter.removed.lock().unwrap(), vec![a.clone()]);
    assert_eq!(*late.removed.lock().unwrap(), vec![a.clone()]);
    assert!(store.key_states().iter().all(|s| s.id != a));

    // `set_observer` replaces them all.
    let only = Arc::new(Counter::default());
    pool.set_observer(only.clone());
    let b = KeyId::of(KEY_B);
    assert!(pool.disable(&b));
    assert_eq!(only.changed.load(Ordering::Relaxed), 1);
    assert_eq!(counter.changed.load(Ordering::Relaxed), 1);
    assert_eq!(late.changed.load(Ordering::Relaxed), 0);
}

#[test]
fn a_tee_of_observers_tells_both() {
    let first = Arc::new(Counter::default());
    let second = Arc::new(Counter::default());
    let pool = KeyPool::builder()
        .keys([KEY_A])
        .observer(Arc::new(Tee(first.clone(), second.clone())))
        .build()
        .unwrap();
    assert!(pool.disable(&KeyId::of(KEY_A)));
    assert_eq!(first.changed.load(Ordering::Relaxed), 1);
    assert_eq!(second.changed.load(Ordering::Relaxed), 1);
}
