//! [`MetricsRegistry`]: every series, recorded by the layer and the sink, encoded on a scrape.

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::collect::{KeysCollector, StoreCollector};
use super::labels::{KeyClassLabels, KeyLabels, ModelLabels, ModelNames, RequestLabels, Static};
use crate::api_error::ApiFlavor;
use crate::keys::KeyPool;
use crate::store::WriterCounters;

/// The `Content-Type` of [`MetricsRegistry::encode`]'s text: the OpenMetrics text format, which
/// Prometheus (and every agent that scrapes it) reads.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Distinct model names the series carry by default before the rest become `other`.
const DEFAULT_MAX_MODELS: usize = 64;

/// Buckets of the request, upstream and first-byte histograms (seconds): 5 ms to 5 min.
const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

/// Buckets of the overhead histogram (seconds): 50 µs to 10 s (a retry's backoff is overhead).
const OVERHEAD_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

/// The series of a gateway, shared by the [`MetricsLayer`](super::MetricsLayer)s, the
/// [`MetricsSink`](super::MetricsSink) and whatever serves the scrape. Cloning shares them.
///
/// Recording is atomics and one read-locked map look-up per labelled series; the key pool and
/// the store are read only when scraped ([`encode`](Self::encode)).
#[derive(Clone)]
pub struct MetricsRegistry {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsRegistry").finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    registry: Registry,
    pub(crate) series: Series,
}

/// Per API flavour, resolved once: recording a latency is no map look-up.
pub(crate) struct PerFlavor<M> {
    gemini: M,
    openai: M,
}

impl<M> PerFlavor<M> {
    pub(crate) fn get(&self, flavor: ApiFlavor) -> &M {
        match flavor {
            ApiFlavor::OpenAi => &self.openai,
            _ => &self.gemini,
        }
    }
}

/// What the layer and the sink record into.
pub(crate) struct Series {
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) duration: PerFlavor<Histogram>,
    pub(crate) upstream: PerFlavor<Histogram>,
    pub(crate) overhead: PerFlavor<Histogram>,
    pub(crate) first_byte: PerFlavor<Histogram>,
    pub(crate) attempts: Family<Static, Counter>,
    pub(crate) retries: Counter,
    pub(crate) key_requests: Family<KeyLabels, Counter>,
    pub(crate) key_failures: Family<KeyClassLabels, Counter>,
    pub(crate) tokens: Family<ModelLabels, Counter>,
    pub(crate) open_connections: Gauge,
    pub(crate) open_streams: Gauge,
    pub(crate) models: ModelNames,
}

/// Options of a [`MetricsRegistry`]: what it reads at scrape time, and the model cap.
#[derive(Default)]
pub struct MetricsRegistryBuilder {
    pool: Option<KeyPool>,
    store: Option<Arc<dyn WriterCounters>>,
    max_models: Option<usize>,
}

impl fmt::Debug for MetricsRegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsRegistryBuilder")
            .field("pool", &self.pool.is_some())
            .field("store", &self.store.is_some())
            .field("max_models", &self.max_models)
            .finish()
    }
}

impl MetricsRegistryBuilder {
    /// Reports the keys of `pool` by state (`keys`, `key_cooldowns`), read at each scrape.
    pub fn key_pool(mut self, pool: KeyPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Reports the store's writer (`store_queue_depth`, `store_written_total`, ...), read at
    /// each scrape.
    pub fn store(mut self, store: impl WriterCounters) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Distinct model names the series carry (64 by default); later ones are counted as
    /// `model="other"`.
    pub fn max_models(mut self, max: usize) -> Self {
        self.max_models = Some(max);
        self
    }

    /// The registry.
    pub fn build(self) -> MetricsRegistry {
        let mut registry = Registry::with_prefix("gemini_balance");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Client requests by operation, API flavour, model and the status the client got (status=\"none\": no response)",
            requests.clone(),
        );
        let duration = per_flavor(
            &mut registry,
            "request_duration_seconds",
            "Whole request: from its arrival to the end of the response body",
            latency_histogram,
        );
        let upstream = per_flavor(
            &mut registry,
            "upstream_duration_seconds",
            "The upstream's part of a request: the sum of its attempts, each until the upstream's response head",
            latency_histogram,
        );
        let overhead = per_flavor(
            &mut registry,
            "overhead_seconds",
            "The gateway's own time in a non-streamed request with upstream attempts: the whole request minus the upstream's part (retry waits included)",
            overhead_histogram,
        );
        let first_byte = per_flavor(
            &mut registry,
            "stream_first_byte_seconds",
            "Streamed answers: from the request's arrival to the first body byte sent to the client",
            latency_histogram,
        );
        let attempts = Family::<Static, Counter>::default();
        registry.register(
            "upstream_attempts",
            "Upstream attempts by outcome: class=\"ok\" or the failure class (rate_limited, overloaded, server_error, timeout, transport, key_rejected, client_error, local)",
            attempts.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "retries",
            "Upstream attempts after a request's first (retries and moves to another key)",
            retries.clone(),
        );
        let key_requests = Family::<KeyLabels, Counter>::default();
        registry.register(
            "key_requests",
            "Upstream attempts per key, labelled by the key's id (16 hex digits of its SHA-256, never the key)",
            key_requests.clone(),
        );
        let key_failures = Family::<KeyClassLabels, Counter>::default();
        registry.register(
            "key_failures",
            "Failed upstream attempts per key id and failure class",
            key_failures.clone(),
        );
        let tokens = Family::<ModelLabels, Counter>::default();
        registry.register(
            "tokens",
            "Tokens reported by the upstream, by kind (prompt, candidates, thoughts, cached, tool_use_prompt, total) and model",
            tokens.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections open now",
            open_connections.clone(),
        );
        let open_streams = Gauge::default();
        registry.register(
            "open_streams",
            "Streamed responses being sent now",
            open_streams.clone(),
        );
        let max_models = self.max_models.unwrap_or(DEFAULT_MAX_MODELS);
        if let Some(pool) = self.pool {
            registry.register_collector(Box::new(KeysCollector::new(pool, max_models)));
        }
        if let Some(store) = self.store {
            registry.register_collector(Box::new(StoreCollector::new(store)));
        }
        MetricsRegistry {
            inner: Arc::new(Inner {
                registry,
                series: Series {
                    requests,
                    duration,
                    upstream,
                    overhead,
                    first_byte,
                    attempts,
                    retries,
                    key_requests,
                    key_failures,
                    tokens,
                    open_connections,
                    open_streams,
                    models: ModelNames::new(max_models),
                },
            }),
        }
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn overhead_histogram() -> Histogram {
    Histogram::new(OVERHEAD_BUCKETS)
}

/// A histogram family labelled by `flavor`, with both flavours resolved now.
fn per_flavor(
    registry: &mut Registry,
    name: &str,
    help: &str,
    make: fn() -> Histogram,
) -> PerFlavor<Histogram> {
    let family = Family::<Static, Histogram, fn() -> Histogram>::new_with_constructor(make);
    let of = |flavor: ApiFlavor| {
        family.get_or_create_owned(&Static {
            name: "flavor",
            value: flavor.as_str(),
        })
    };
    let resolved = PerFlavor {
        gemini: of(ApiFlavor::Gemini),
        openai: of(ApiFlavor::OpenAi),
    };
    registry.register(name, help, family);
    resolved
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsRegistry {
    /// A registry of the request series only (no key pool, no store).
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Options: the key pool and store to report, the model cap.
    pub fn builder() -> MetricsRegistryBuilder {
        MetricsRegistryBuilder::default()
    }

    /// Every series in the text exposition format (serve it with [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(8 * 1024);
        // Writing into a `String` does not fail.
        let _ = encode(&mut text, &self.inner.registry);
        text
    }

    /// The underlying `prometheus-client` registry, to encode it with other registries of
    /// yours (`prometheus_client::encoding::text::encode_registry`).
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Counts a client connection as open until the returned guard is dropped
    /// (`open_connections`): for the server loop that accepts connections.
    pub fn connection_opened(&self) -> OpenConnection {
        let gauge = self.inner.series.open_connections.clone();
        gauge.inc();
        OpenConnection(gauge)
    }
}

/// An open client connection, counted in `open_connections` until dropped; see
/// [`MetricsRegistry::connection_opened`].
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
