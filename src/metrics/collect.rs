//! What is read when scraped, not recorded per request: the keys by state (from the pool's
//! snapshots) and the store's writer counters.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;

use super::labels::{clean, Static, OTHER_MODEL};
use crate::keys::{KeyPool, KeyStatus};
use crate::store::WriterCounters;

/// `keys{state}` and `key_cooldowns{model}`, from [`KeyPool::snapshots`] at scrape time.
pub(crate) struct KeysCollector {
    pool: KeyPool,
    max_models: usize,
}

impl KeysCollector {
    pub(crate) fn new(pool: KeyPool, max_models: usize) -> Self {
        KeysCollector { pool, max_models }
    }
}

impl fmt::Debug for KeysCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeysCollector")
            .field("keys", &self.pool.len())
            .finish()
    }
}

impl Collector for KeysCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let (mut active, mut cooling, mut disabled) = (0i64, 0i64, 0i64);
        let mut cooldowns: BTreeMap<String, i64> = BTreeMap::new();
        for snapshot in self.pool.snapshots() {
            match &snapshot.status {
                KeyStatus::Active => active += 1,
                KeyStatus::CoolingDown(models) => {
                    cooling += 1;
                    for cooldown in models {
                        let model = clean(&cooldown.model);
                        let model = if cooldowns.contains_key(&model)
                            || cooldowns.len() < self.max_models
                        {
                            model
                        } else {
                            OTHER_MODEL.to_owned()
                        };
                        *cooldowns.entry(model).or_default() += 1;
                    }
                }
                _ => disabled += 1,
            }
        }
        let states = Family::<Static, Gauge>::default();
        for (state, n) in [
            ("active", active),
            ("cooling", cooling),
            ("disabled", disabled),
        ] {
            states
                .get_or_create(&Static {
                    name: "state",
                    value: state,
                })
                .set(n);
        }
        states.encode(encoder.encode_descriptor(
            "keys",
            "Keys by state: active (serving every model), cooling (cooling down for one model or more; model \"*\" is every model), disabled",
            None,
            MetricType::Gauge,
        )?)?;
        let per_model = Family::<Vec<(&'static str, String)>, Gauge>::default();
        for (model, n) in cooldowns {
            per_model.get_or_create(&vec![("model", model)]).set(n);
        }
        per_model.encode(encoder.encode_descriptor(
            "key_cooldowns",
            "Keys cooling down for a model now (model \"*\": for every model)",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

/// `store_*`, from the store's [`WriterStats`](crate::store::stats::WriterStats) at scrape time.
pub(crate) struct StoreCollector {
    store: Arc<dyn WriterCounters>,
}

impl StoreCollector {
    pub(crate) fn new(store: Arc<dyn WriterCounters>) -> Self {
        StoreCollector { store }
    }
}

impl fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreCollector").finish_non_exhaustive()
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let stats = self.store.writer_stats();
        let gauges = [
            (
                "store_queue_depth",
                "Usage records accepted by the store and not yet committed",
                stats.queued,
            ),
            (
                "store_queue_capacity",
                "Usage records the store's queue holds before it drops new ones",
                stats.capacity,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let counters = [
            ("store_written", "Usage records committed", stats.written),
            (
                "store_dropped",
                "Usage records dropped because the store's queue was full (or the store shut down)",
                stats.dropped,
            ),
            (
                "store_lost",
                "Usage records accepted but lost because their transaction failed",
                stats.lost,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
