//! [`MetricsSink`]: tokens by kind, counted from the usage records on their way to a store.

use std::fmt;

use super::labels::ModelLabels;
use super::MetricsRegistry;
use crate::store::UsageSink;
use crate::usage::RequestRecord;

/// A [`UsageSink`] that counts each record's tokens (`tokens_total{kind, model}`), then hands
/// the record to `inner` (the store), without copying it. Like every sink it never blocks.
///
/// ```
/// use gemini_balance::metrics::{MetricsRegistry, MetricsSink};
/// use gemini_balance::store::MemoryStore;
/// use gemini_balance::usage::UsageLayer;
///
/// let metrics = MetricsRegistry::new();
/// let store = MemoryStore::new();
/// let usage = UsageLayer::new(MetricsSink::new(metrics.clone(), store.clone()));
/// # let _ = usage;
/// ```
#[derive(Clone)]
pub struct MetricsSink<S> {
    metrics: MetricsRegistry,
    inner: S,
}

impl<S> fmt::Debug for MetricsSink<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsSink").finish_non_exhaustive()
    }
}

impl<S> MetricsSink<S> {
    /// Counts into `metrics`, then passes every record to `inner`.
    pub fn new(metrics: MetricsRegistry, inner: S) -> Self {
        MetricsSink { metrics, inner }
    }
}

/// The token kinds, in the order of a model's counters.
const KINDS: [&str; 6] = [
    "prompt",
    "candidates",
    "thoughts",
    "cached",
    "tool_use_prompt",
    "total",
];

impl<S: UsageSink> UsageSink for MetricsSink<S> {
    fn record(&self, record: RequestRecord) {
        let series = &self.metrics.inner.series;
        let tokens = &record.tokens;
        if !tokens.is_empty() {
            let model = series.models.entry(record.model.as_deref());
            let counters = model.tokens.get_or_init(|| {
                KINDS.map(|kind| {
                    series.tokens.get_or_create_owned(&ModelLabels {
                        name: "kind",
                        value: kind,
                        model: model.name.clone(),
                    })
                })
            });
            let counts = [
                tokens.prompt,
                tokens.candidates,
                tokens.thoughts,
                tokens.cached,
                tokens.tool_use_prompt,
                tokens.total,
            ];
            for (counter, n) in counters.iter().zip(counts) {
                if n > 0 {
                    counter.inc_by(n);
                }
            }
        }
        self.inner.record(record);
    }
}
