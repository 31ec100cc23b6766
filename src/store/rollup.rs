//! The usage rollups: per-minute and per-hour counters, one row per bucket × dimension value,
//! maintained by the writer from each batch.
//!
//! Dimensions: `''` (everything, value `''`), `key` (value: the key's id hex), `model`,
//! `client` (the client token's id hex), and, in the hour table only, `key_model` (value:
//! `{key id hex}/{model}`); a missing key, model or client is the value `''`.
//! Request counters (calls, successes, failures, tokens, latency) go to the request's final
//! key; attempt counters (attempts, failed and rate-limited attempts) go to each attempt's own
//! key and model, in the minute the attempt started.
//!
//! One table per dimension rather than one table keyed by (key, model, client): with many keys
//! used round-robin, nearly every request of a minute has its own (key, model, client)
//! combination, so such a table grows as fast as the raw log and answers no faster. Per
//! dimension, a minute holds at most as many rows as there are distinct keys (models, clients)
//! used in it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::logs::without_nul;
use super::stats::{Counts, Filter, Granularity, SeriesPoint};
use super::time::{hour_of, minute_of, ms_of, HOUR_MS, MINUTE_MS};
use crate::keys::KeyId;
use crate::usage::{ClientId, RequestRecord};

/// The dimension of a rollup row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Dim {
    All,
    Key,
    Model,
    Client,
    KeyModel,
}

impl Dim {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Dim::All => "",
            Dim::Key => "key",
            Dim::Model => "model",
            Dim::Client => "client",
            Dim::KeyModel => "key_model",
        }
    }
}

/// A dimension value, borrowed from the batch (hex is made once per row, not per record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Value<'a> {
    None,
    Key(&'a KeyId),
    Client(&'a ClientId),
    Name(&'a str),
    KeyModel(Option<&'a KeyId>, Option<&'a str>),
}

impl Value<'_> {
    /// The value as stored; NUL characters (which PostgreSQL's text refuses) become U+FFFD.
    pub(crate) fn render(&self) -> String {
        match self {
            Value::None => String::new(),
            Value::Key(id) => id.hex(),
            Value::Client(id) => id.hex(),
            Value::Name(name) => without_nul(Cow::Borrowed(name)).into_owned(),
            Value::KeyModel(key, model) => format!(
                "{}/{}",
                key.map(KeyId::hex).unwrap_or_default(),
                without_nul(Cow::Borrowed(model.unwrap_or_default()))
            ),
        }
    }
}

/// The counters of one rollup row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub calls: i64,
    pub successes: i64,
    pub failures: i64,
    pub prompt: i64,
    pub candidates: i64,
    pub thoughts: i64,
    pub cached: i64,
    pub tool_use_prompt: i64,
    pub total: i64,
    pub latency_ms: i64,
    pub attempts: i64,
    pub failed_attempts: i64,
    pub rate_limited_attempts: i64,
}

impl Counters {
    pub(crate) fn add(&mut self, other: &Counters) {
        self.calls += other.calls;
        self.successes += other.successes;
        self.failures += other.failures;
        self.prompt += other.prompt;
        self.candidates += other.candidates;
        self.thoughts += other.thoughts;
        self.cached += other.cached;
        self.tool_use_prompt += other.tool_use_prompt;
        self.total += other.total;
        self.latency_ms += other.latency_ms;
        self.attempts += other.attempts;
        self.failed_attempts += other.failed_attempts;
        self.rate_limited_attempts += other.rate_limited_attempts;
    }
}

pub(crate) fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A fast, non-cryptographic hasher (FxHash's multiply-rotate) for the writer's own maps:
/// their keys are ids and names from our own records, and SipHash was a tenth of the writer's
/// time.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

/// A `HashMap` with [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;
/// A `HashSet` with [`FastHasher`].
pub(crate) type FastSet<K> = std::collections::HashSet<K, BuildHasherDefault<FastHasher>>;

/// Counters of one batch, keyed by (bucket, dimension, value).
#[derive(Debug, Default)]
pub(crate) struct Rollup<'a> {
    minutes: FastMap<(i64, Dim, Value<'a>), Counters>,
    /// The dimensions kept per hour only.
    hours: FastMap<(i64, Dim, Value<'a>), Counters>,
}

impl<'a> Rollup<'a> {
    pub(crate) fn add(&mut self, record: &'a RequestRecord) {
        let minute = minute_of(ms_of(record.at));
        let tokens = &record.tokens;
        let request = Counters {
            calls: 1,
            successes: i64::from(record.success),
            failures: i64::from(!record.success),
            prompt: clamp(tokens.prompt),
            candidates: clamp(tokens.candidates),
            thoughts: clamp(tokens.thoughts),
            cached: clamp(tokens.cached),
            tool_use_prompt: clamp(tokens.tool_use_prompt),
            total: clamp(tokens.total),
            latency_ms: clamp(record.latency.as_millis() as u64),
            ..Counters::default()
        };
        let key = record.key.as_ref().map_or(Value::None, Value::Key);
        let model = record.model.as_deref().map_or(Value::None, Value::Name);
        let client = record.client.as_ref().map_or(Value::None, Value::Client);
        self.bump(minute, key, model, client, &request);
        for attempt in &record.attempt_log {
            let counters = Counters {
                attempts: 1,
                failed_attempts: i64::from(attempt.failed()),
                rate_limited_attempts: i64::from(attempt.class == Some("rate_limited")),
                ..Counters::default()
            };
            let model = attempt.model.as_deref().map_or(model, Value::Name);
            self.bump(
                minute_of(ms_of(attempt.at)),
                Value::Key(&attempt.key),
                model,
                client,
                &counters,
            );
        }
    }

    fn bump(
        &mut self,
        minute: i64,
        key: Value<'a>,
        model: Value<'a>,
        client: Value<'a>,
        counters: &Counters,
    ) {
        for (dim, value) in [
            (Dim::All, Value::None),
            (Dim::Key, key),
            (Dim::Model, model),
            (Dim::Client, client),
        ] {
            self.minutes
                .entry((minute, dim, value))
                .or_default()
                .add(counters);
        }
        let key_model = Value::KeyModel(
            match key {
                Value::Key(k) => Some(k),
                _ => None,
            },
            match model {
                Value::Name(m) => Some(m),
                _ => None,
            },
        );
        self.hours
            .entry((hour_of(minute), Dim::KeyModel, key_model))
            .or_default()
            .add(counters);
    }

    /// The batch's rows: per minute, and per hour (the minutes summed into their hours, with
    /// the dimensions kept per hour only).
    pub(crate) fn into_rows(self) -> (RollupRows<'a>, RollupRows<'a>) {
        let mut hours = self.hours;
        for ((minute, dim, value), counters) in &self.minutes {
            hours
                .entry((hour_of(*minute), *dim, *value))
                .or_default()
                .add(counters);
        }
        (self.minutes, hours)
    }
}

/// Rollup rows by (bucket, dimension, value).
pub(crate) type RollupRows<'a> = FastMap<(i64, Dim, Value<'a>), Counters>;

/// One part of a window, read from one rollup table: `(table, bucket column, from, to)`.
pub(crate) type WindowPart = (&'static str, &'static str, i64, i64);

/// Which rollup rows cover `from..to` (`from` a whole minute), given the oldest per-minute row
/// still kept: per-minute rows at the ragged ends, per-hour rows between; when the per-minute
/// rows no longer reach back to `from`, its hour counts whole. The same for every store.
pub(crate) fn window_parts(from: i64, to: i64, oldest_minute: Option<i64>) -> Vec<WindowPart> {
    const MINUTES: (&str, &str) = ("usage_minute", "minute_ms");
    const HOURS: (&str, &str) = ("usage_hour", "hour_ms");
    let last_hour = hour_of(to);
    let mut parts = Vec::with_capacity(3);
    let part = |(t, c): (&'static str, &'static str), a: i64, b: i64| (t, c, a, b);
    if oldest_minute.is_some_and(|oldest| oldest <= from) {
        let first_hour = if from % HOUR_MS == 0 {
            from
        } else {
            hour_of(from) + HOUR_MS
        };
        if first_hour >= last_hour {
            parts.push(part(MINUTES, from, to));
        } else {
            parts.push(part(MINUTES, from, first_hour));
            parts.push(part(HOURS, first_hour, last_hour));
            parts.push(part(MINUTES, last_hour, to));
        }
    } else {
        parts.push(part(HOURS, hour_of(from), last_hour));
        parts.push(part(MINUTES, last_hour.max(hour_of(from)), to));
    }
    parts.retain(|(_, _, a, b)| a < b);
    parts
}

/// A time series ending with the bucket that holds `now` (60 minutes or 24 hours), over
/// everything or one key, model or client: the rollup rows it reads, and its points.
pub(crate) struct SeriesPlan<'a> {
    pub(crate) table: &'static str,
    pub(crate) column: &'static str,
    /// The first and the last bucket's start, in milliseconds.
    pub(crate) first: i64,
    pub(crate) last: i64,
    pub(crate) dim: Dim,
    pub(crate) value: &'a str,
    step: i64,
    buckets: i64,
}

impl<'a> SeriesPlan<'a> {
    pub(crate) fn new(
        granularity: Granularity,
        now: std::time::SystemTime,
        filter: Option<&'a Filter>,
    ) -> Self {
        let now_ms = ms_of(now);
        let (table, column, step, last, buckets) = match granularity {
            Granularity::Minute => (
                "usage_minute",
                "minute_ms",
                MINUTE_MS,
                minute_of(now_ms),
                60,
            ),
            Granularity::Hour => ("usage_hour", "hour_ms", HOUR_MS, hour_of(now_ms), 24),
        };
        let (dim, value) = match filter {
            None => (Dim::All, ""),
            Some(Filter::Key(id)) => (Dim::Key, id.as_str()),
            Some(Filter::Model(model)) => (Dim::Model, model.as_str()),
            Some(Filter::Client(id)) => (Dim::Client, id.as_str()),
        };
        SeriesPlan {
            table,
            column,
            first: last - (buckets - 1) * step,
            last,
            dim,
            value,
            step,
            buckets,
        }
    }

    /// Every bucket, oldest first, with the counts `found` per bucket start (empty ones
    /// included).
    pub(crate) fn points(&self, mut found: HashMap<i64, Counts>) -> Vec<SeriesPoint> {
        (0..self.buckets)
            .map(|i| {
                let start_ms = self.first + i * self.step;
                SeriesPoint {
                    start_ms,
                    counts: found.remove(&start_ms).unwrap_or_default(),
                }
            })
            .collect()
    }
}
