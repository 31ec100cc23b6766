//! Where finished requests' records go: the [`UsageSink`] trait and its combinators. It lives
//! here, beside the records, so that the usage layer does not depend on the stores that
//! implement it.

use std::fmt;

use super::RequestRecord;

/// Receives one record per finished client request. Must never block the caller.
///
/// Besides the stores, a closure ([`sink_fn`]), an `Arc` or `Box` of a sink, and two sinks at
/// once ([`Tee`], [`UsageSink::tee`]) are sinks:
///
/// ```
/// use std::sync::Arc;
/// use std::time::SystemTime;
/// use gemini_balance::store::{sink_fn, MemoryStore, UsageSink};
/// use gemini_balance::usage::{RequestRecord, UsageLayer};
///
/// let store = MemoryStore::new();
/// let metrics = sink_fn(|record: RequestRecord| {
///     // e.g. count tokens for a metrics exporter
///     let _ = record.tokens.total;
/// });
/// // Both get every record.
/// let sink = Arc::new(store.clone()).tee(metrics);
/// sink.record(RequestRecord::new(1, SystemTime::now()));
/// assert_eq!(store.records().len(), 1);
/// let _layer = UsageLayer::new(sink);
/// ```
pub trait UsageSink: Send + Sync + 'static {
    /// Takes a record; when the store cannot keep up it drops the record and counts the drop.
    fn record(&self, record: RequestRecord);

    /// This sink and `other`: each record goes to both (this one first).
    fn tee<B: UsageSink>(self, other: B) -> Tee<Self, B>
    where
        Self: Sized,
    {
        Tee(self, other)
    }
}

impl<T: UsageSink + ?Sized> UsageSink for std::sync::Arc<T> {
    fn record(&self, record: RequestRecord) {
        (**self).record(record)
    }
}

impl<T: UsageSink + ?Sized> UsageSink for Box<T> {
    fn record(&self, record: RequestRecord) {
        (**self).record(record)
    }
}

/// A closure as a [`UsageSink`]; see [`sink_fn`].
#[derive(Clone, Copy)]
pub struct SinkFn<F>(F);

impl<F> fmt::Debug for SinkFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SinkFn")
    }
}

/// A [`UsageSink`] that calls `f` with each record. Like every sink it runs on the request
/// path: `f` must not block (hand the record to a channel for slow work).
pub fn sink_fn<F>(f: F) -> SinkFn<F>
where
    F: Fn(RequestRecord) + Send + Sync + 'static,
{
    SinkFn(f)
}

impl<F> UsageSink for SinkFn<F>
where
    F: Fn(RequestRecord) + Send + Sync + 'static,
{
    fn record(&self, record: RequestRecord) {
        (self.0)(record)
    }
}

/// Two sinks (or two [`KeyObserver`](crate::keys::KeyObserver)s) as one: each record or key
/// change goes to the first, then to the second. Nest them for more; see [`UsageSink::tee`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Tee<A, B>(pub A, pub B);

impl<A: UsageSink, B: UsageSink> UsageSink for Tee<A, B> {
    fn record(&self, record: RequestRecord) {
        self.0.record(record.clone());
        self.1.record(record);
    }
}
