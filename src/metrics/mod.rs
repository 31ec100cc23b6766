//! Prometheus metrics of a gateway (feature `metrics`): requests, latencies, upstream attempts,
//! keys, tokens and the store, in the text exposition format, through the official
//! `prometheus-client` crate.
//!
//! Three parts share one [`MetricsRegistry`]:
//!
//! - [`MetricsLayer`] counts and times each request: `requests_total{operation, flavor, model,
//!   status}` (what the client got), the whole request's latency, the upstream's part (the sum
//!   of its attempts' times, from the attempt log that [`KeyRotation`](crate::keys::KeyRotation)
//!   fills) and the gateway's own part (the rest: the **overhead** histogram), the time to the
//!   first byte of streamed answers, upstream attempts by failure class, retries, per-key
//!   attempts and failures (labelled by the key's id, never the key), and the streams open
//!   now. Place it **below** a [`UsageLayer`](crate::usage::UsageLayer) (it reads the attempt
//!   log the usage layer puts on the request; above one it would see an empty log) and above
//!   [`Retry`](crate::retry::Retry); without a usage layer it brings its own log.
//! - [`MetricsSink`] counts tokens by kind from the usage records on their way to the store.
//! - The registry reads the key pool (keys by state, cooldowns per model) and the store's
//!   writer (queue depth, written, dropped) only when scraped, and counts open connections
//!   for the server loop ([`MetricsRegistry::connection_opened`]).
//!
//! Serving the scrape is yours: [`MetricsRegistry::encode`] gives the text, to answer with
//! [`CONTENT_TYPE`] on a route you protect (the bundled proxy's `/metrics` needs a token or an
//! allowed address). `docs/metrics.md` lists every series.
//!
//! Recording costs atomics and a read-locked map look-up per labelled series; the model label
//! is bounded ([`MetricsRegistryBuilder::max_models`]: the first 64 distinct names, then
//! `other`), so a client inventing model names cannot grow the scrape.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use gemini_balance::keys::{KeyPool, KeyRotationLayer};
//! use gemini_balance::metrics::{MetricsLayer, MetricsRegistry, MetricsSink};
//! use gemini_balance::retry::RetryLayer;
//! use gemini_balance::store::MemoryStore;
//! use gemini_balance::usage::UsageLayer;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pool = KeyPool::builder().keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv"]).build()?;
//! let metrics = MetricsRegistry::builder().key_pool(pool.clone()).build();
//! let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
//!     let body = r#"{"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":7,"totalTokenCount":12}}"#;
//!     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
//! });
//! let service = ServiceBuilder::new()
//!     .layer(UsageLayer::new(MetricsSink::new(metrics.clone(), MemoryStore::new())))
//!     .layer(MetricsLayer::new(metrics.clone()))
//!     .layer(RetryLayer::new())
//!     .layer(KeyRotationLayer::new(pool))
//!     .service(upstream);
//!
//! let req = Request::post("/v1beta/models/gemini-2.0-flash:generateContent")
//!     .body(Full::new(Bytes::from("{}")))?;
//! service.oneshot(req).await?.into_body().collect().await?;
//!
//! // What a `GET /metrics` of yours answers (with `metrics::CONTENT_TYPE`):
//! let text = metrics.encode();
//! assert!(text.contains(r#"gemini_balance_requests_total{operation="generateContent",flavor="gemini",model="gemini-2.0-flash",status="200"} 1"#));
//! assert!(text.contains(r#"gemini_balance_tokens_total{kind="total",model="gemini-2.0-flash"} 12"#));
//! assert!(text.contains(r#"gemini_balance_keys{state="active"} 1"#));
//! # Ok(())
//! # }
//! ```

mod body;
mod collect;
pub mod future;
mod labels;
mod layer;
mod registry;
mod sink;

pub use self::body::MetricsBody;
pub use self::layer::{Metrics, MetricsLayer};
pub use self::registry::{MetricsRegistry, MetricsRegistryBuilder, OpenConnection, CONTENT_TYPE};
pub use self::sink::MetricsSink;

#[cfg(test)]
mod tests;
