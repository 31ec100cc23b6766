//! [`MemoryStore`]: everything in memory, for tests and for embedding without a database.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::logs::{
    AttemptEntry, ErrorEntry, ErrorPage, ErrorQuery, LogDeletion, RequestEntry, RequestPage,
    RequestQuery, MAX_PAGE,
};
use super::stats::{
    ms_of, Counts, Filter, Granularity, RateLimitedKey, SeriesPoint, Summary, Tokens, UsageRow,
    Window,
};
use super::stats_store::{StatsStore, StoreFuture, UsageBy};
use super::{KeyStateStore, StoreError, UsageSink};
use crate::keys::{KeyId, KeyObserver, KeySnapshot};
use crate::quota::{QuotaRow, QuotaStore, QuotaUse, Window as QuotaWindow};
use crate::usage::{RequestId, RequestRecord};

/// Keeps records and key state in memory (bounded: the oldest records go first).
///
/// Its [`StatsStore`] answers from the records it keeps: the statistics cover only those
/// (deleting requests takes them out of the statistics too, unlike the SQLite store's
/// rollups), and the calendar month is UTC's.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    /// Records with their row id, oldest first.
    records: VecDeque<(i64, RequestRecord)>,
    next_row: i64,
    capacity: usize,
    dropped: u64,
    keys: HashMap<KeyId, KeySnapshot>,
    /// Error rows deleted one by one.
    deleted_errors: HashSet<i64>,
    /// Error rows before this millisecond are deleted.
    errors_from_ms: i64,
    /// Quota limits and names, by identity.
    quota_rows: std::collections::BTreeMap<String, QuotaRow>,
    /// Quota use: (identity, window, bucket) → (requests, tokens).
    quota_use: HashMap<(String, QuotaWindow, i64), (u64, u64)>,
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
                records: VecDeque::new(),
                next_row: 1,
                capacity: capacity.max(1),
                dropped: 0,
                keys: HashMap::new(),
                deleted_errors: HashSet::new(),
                errors_from_ms: i64::MIN,
                quota_rows: Default::default(),
                quota_use: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The records kept, oldest first.
    pub fn records(&self) -> Vec<RequestRecord> {
        self.lock().records.iter().map(|(_, r)| r.clone()).collect()
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
            inner.records.pop_front();
            inner.dropped += 1;
        }
        let row = inner.next_row;
        inner.next_row += 1;
        inner.records.push_back((row, record));
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

/// Error rows are numbered after their request's row: `row * 256 + attempt`.
const ATTEMPTS_PER_ROW: i64 = 256;

/// The counters one record adds: its call (when `call`) and those of `attempts`.
fn counts_of<'a>(
    record: &RequestRecord,
    call: bool,
    attempts: impl Iterator<Item = &'a crate::usage::AttemptRecord>,
) -> Counts {
    let mut c = Counts::default();
    if call {
        let t = &record.tokens;
        c.calls = 1;
        c.successes = u64::from(record.success);
        c.failures = u64::from(!record.success);
        c.tokens = Tokens {
            prompt: t.prompt,
            candidates: t.candidates,
            thoughts: t.thoughts,
            cached: t.cached,
            tool_use_prompt: t.tool_use_prompt,
            total: t.total,
        };
        c.latency_ms_sum = u64::try_from(record.latency.as_millis()).unwrap_or(u64::MAX);
    }
    for a in attempts {
        c.attempts += 1;
        c.failed_attempts += u64::from(a.failed());
        c.rate_limited_attempts += u64::from(a.class == Some("rate_limited"));
    }
    c
}

/// The value a record (or one of its attempts) counts under, with its mask.
type Keyed = (String, Option<String>);

impl Inner {
    /// Sums the records over `[from_ms, to_ms)` per value of `of` (the request's value for its
    /// call, the attempt's for each attempt).
    fn collect(
        &self,
        from_ms: i64,
        to_ms: i64,
        of: impl Fn(&RequestRecord, Option<&crate::usage::AttemptRecord>) -> Option<Keyed>,
    ) -> HashMap<String, (Option<String>, Counts)> {
        let mut out: HashMap<String, (Option<String>, Counts)> = HashMap::new();
        let inside = |t: SystemTime| (from_ms..to_ms).contains(&ms_of(t));
        for (_, r) in &self.records {
            if inside(r.at) {
                if let Some((id, mask)) = of(r, None) {
                    let entry = out.entry(id).or_insert((mask, Counts::default()));
                    entry.1.add(&counts_of(r, true, std::iter::empty()));
                }
            }
            for a in r.attempt_log.iter().filter(|a| inside(a.at)) {
                if let Some((id, mask)) = of(r, Some(a)) {
                    let entry = out.entry(id).or_insert((mask, Counts::default()));
                    entry.1.add(&counts_of(r, false, std::iter::once(a)));
                }
            }
        }
        out
    }

    fn usage(&self, by: UsageBy, window: Window) -> Vec<UsageRow> {
        let found = self.collect(window.from_ms, window.to_ms, |r, a| {
            Some(match (by, a) {
                (UsageBy::Key, None) => r.key.as_ref().map_or((String::new(), None), |k| {
                    (k.hex(), Some(k.mask().to_owned()))
                }),
                (UsageBy::Key, Some(a)) => (a.key.hex(), Some(a.key.mask().to_owned())),
                (UsageBy::Model, a) => (
                    a.and_then(|a| a.model.clone())
                        .or_else(|| r.model.clone())
                        .unwrap_or_default(),
                    None,
                ),
                (UsageBy::Client, _) => r.client.as_ref().map_or((String::new(), None), |c| {
                    (c.hex(), Some(c.mask().to_owned()))
                }),
            })
        });
        rows(found)
    }

    fn models_of_key(&self, key: &KeyId, window: Window) -> Vec<UsageRow> {
        let found = self.collect(window.from_ms, window.to_ms, |r, a| {
            let (k, model) = match a {
                None => (r.key.as_ref()?, r.model.clone()),
                Some(a) => (&a.key, a.model.clone().or_else(|| r.model.clone())),
            };
            (k == key).then(|| (model.unwrap_or_default(), None))
        });
        rows(found)
    }

    fn key_mask(&self, key: &KeyId) -> Option<String> {
        self.records.iter().rev().find_map(|(_, r)| {
            r.attempt_log
                .iter()
                .map(|a| &a.key)
                .chain(r.key.as_ref())
                .find(|k| *k == key)
                .map(|k| k.mask().to_owned())
        })
    }

    fn total(&self, from_ms: i64, to_ms: i64) -> Counts {
        self.collect(from_ms, to_ms, |_, _| Some((String::new(), None)))
            .remove("")
            .map(|(_, c)| c)
            .unwrap_or_default()
    }

    fn summary(&self, now: SystemTime) -> Summary {
        const HOUR_MS: i64 = 3_600_000;
        let now_ms = ms_of(now);
        let month_start_ms = utc_month_start_ms(now_ms);
        Summary {
            now_ms,
            last_minute: self.total(now_ms - 60_000 + 1, now_ms + 1),
            last_hour: self.total(now_ms - HOUR_MS, now_ms + 1),
            last_day: self.total(now_ms - 24 * HOUR_MS, now_ms + 1),
            this_month: self.total(month_start_ms, now_ms + 1),
            month_start_ms,
            time_zone: "UTC".to_owned(),
            writer: None,
        }
    }

    fn series(
        &self,
        granularity: Granularity,
        filter: Option<&Filter>,
        now: SystemTime,
    ) -> Vec<SeriesPoint> {
        let (step, n) = match granularity {
            Granularity::Minute => (60_000_i64, 60_i64),
            Granularity::Hour => (3_600_000, 24),
        };
        let last = ms_of(now).div_euclid(step) * step;
        let first = last - (n - 1) * step;
        // One pass over the records (this runs under the lock `record` takes), each counted in
        // its bucket.
        let mut buckets = self.collect(first, last + step, |r, a| {
            let keep = match filter {
                None => true,
                Some(Filter::Key(id)) => match a {
                    None => r.key.as_ref().is_some_and(|k| k.hex() == *id),
                    Some(a) => a.key.hex() == *id,
                },
                Some(Filter::Model(model)) => {
                    a.and_then(|a| a.model.as_ref()).or(r.model.as_ref()) == Some(model)
                }
                Some(Filter::Client(id)) => r.client.as_ref().is_some_and(|c| c.hex() == *id),
            };
            let at = ms_of(a.map_or(r.at, |a| a.at));
            keep.then(|| (((at - first) / step).to_string(), None))
        });
        (0..n)
            .map(|i| SeriesPoint {
                start_ms: first + i * step,
                counts: buckets
                    .remove(&i.to_string())
                    .map(|(_, c)| c)
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Every error row still kept, newest first.
    fn error_rows(&self) -> Vec<(ErrorEntry, &RequestRecord)> {
        let mut out = Vec::new();
        for (row, r) in self.records.iter().rev() {
            for (i, a) in r.attempt_log.iter().enumerate().rev() {
                let (Some(class), Ok(i)) = (a.class, i64::try_from(i)) else {
                    continue;
                };
                let id = row * ATTEMPTS_PER_ROW + i;
                let at_ms = ms_of(a.at);
                if i >= ATTEMPTS_PER_ROW
                    || at_ms < self.errors_from_ms
                    || self.deleted_errors.contains(&id)
                {
                    continue;
                }
                let entry = ErrorEntry {
                    id,
                    at_ms,
                    request_id: r.id,
                    key_id: a.key.hex(),
                    key_mask: a.key.mask().to_owned(),
                    model: a.model.clone().or_else(|| r.model.clone()),
                    status: a.status,
                    class: class.to_owned(),
                    message: a.error_message.clone(),
                    request_body: None,
                };
                out.push((entry, r));
            }
        }
        out.sort_by(|(a, _), (b, _)| b.at_ms.cmp(&a.at_ms).then(b.id.cmp(&a.id)));
        out
    }

    fn errors(&self, q: &ErrorQuery) -> ErrorPage {
        let search = q.search.as_deref().filter(|s| !s.is_empty());
        let matching: Vec<ErrorEntry> = self
            .error_rows()
            .into_iter()
            .map(|(e, _)| e)
            .filter(|e| {
                q.key_id.as_ref().is_none_or(|k| *k == e.key_id)
                    && q.model.as_ref().is_none_or(|m| e.model.as_ref() == Some(m))
                    && q.status.is_none_or(|s| e.status == Some(s))
                    && q.class.as_ref().is_none_or(|c| *c == e.class)
                    && q.from_ms.is_none_or(|f| e.at_ms >= f)
                    && q.to_ms.is_none_or(|t| e.at_ms < t)
                    && search.is_none_or(|s| {
                        e.message.as_deref().is_some_and(|m| {
                            m.to_ascii_lowercase().contains(&s.to_ascii_lowercase())
                        })
                    })
            })
            .collect();
        let (limit, offset) = page(q.limit, q.offset);
        ErrorPage {
            total: matching.len() as u64,
            entries: matching.into_iter().skip(offset).take(limit).collect(),
        }
    }

    fn error(&self, id: i64) -> Option<ErrorEntry> {
        self.error_rows()
            .into_iter()
            .find(|(e, _)| e.id == id)
            .map(|(mut e, r)| {
                // As the SQLite store keeps it: keys redacted, cut at 64 KiB.
                e.request_body = r
                    .request_body
                    .as_deref()
                    .map(|b| crate::store::logs::clean_body(b, 64 * 1024));
                e
            })
    }

    fn requests(&self, q: &RequestQuery) -> RequestPage {
        let (limit, offset) = page(q.limit, q.offset);
        let mut rows: Vec<(i64, &RequestRecord)> = self
            .records
            .iter()
            .map(|(row, r)| (*row, r))
            .filter(|(_, r)| {
                let at_ms = ms_of(r.at);
                q.key_id
                    .as_ref()
                    .is_none_or(|k| r.key.as_ref().is_some_and(|key| key.hex() == *k))
                    && q.model.as_ref().is_none_or(|m| r.model.as_ref() == Some(m))
                    && q.client_id
                        .as_ref()
                        .is_none_or(|c| r.client.as_ref().is_some_and(|id| id.hex() == *c))
                    && q.success.is_none_or(|s| r.success == s)
                    && q.status.is_none_or(|s| r.status == s)
                    && q.from_ms.is_none_or(|f| at_ms >= f)
                    && q.to_ms.is_none_or(|t| at_ms < t)
            })
            .collect();
        rows.sort_by(|(a_row, a), (b_row, b)| b.at.cmp(&a.at).then(b_row.cmp(a_row)));
        let mut entries: Vec<RequestEntry> = rows
            .into_iter()
            .skip(offset)
            .take(limit + 1)
            .map(|(row, r)| request_entry(row, r))
            .collect();
        let has_more = entries.len() > limit;
        entries.truncate(limit);
        RequestPage { entries, has_more }
    }

    fn attempts(&self, id: RequestId) -> Vec<AttemptEntry> {
        self.records
            .iter()
            .find(|(_, r)| r.id == id)
            .map(|(_, r)| {
                r.attempt_log
                    .iter()
                    .map(|a| AttemptEntry {
                        at_ms: ms_of(a.at),
                        key_id: a.key.hex(),
                        key_mask: a.key.mask().to_owned(),
                        model: a.model.clone().or_else(|| r.model.clone()),
                        status: a.status,
                        class: a.class.map(str::to_owned),
                        latency_ms: u64::try_from(a.latency.as_millis()).unwrap_or(u64::MAX),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn delete_errors(&mut self, which: LogDeletion) -> u64 {
        let kept: Vec<(i64, i64)> = self
            .error_rows()
            .into_iter()
            .map(|(e, _)| (e.id, e.at_ms))
            .collect();
        match which {
            LogDeletion::Ids(ids) => {
                let ids: HashSet<i64> = ids.into_iter().collect();
                let mut deleted = 0;
                for (id, _) in kept.into_iter().filter(|(id, _)| ids.contains(id)) {
                    self.deleted_errors.insert(id);
                    deleted += 1;
                }
                deleted
            }
            LogDeletion::Before(cutoff) => {
                let cutoff = ms_of(cutoff);
                self.errors_from_ms = self.errors_from_ms.max(cutoff);
                kept.iter().filter(|(_, at)| *at < cutoff).count() as u64
            }
        }
    }

    fn delete_requests(&mut self, which: LogDeletion) -> u64 {
        let before = self.records.len();
        match which {
            LogDeletion::Ids(ids) => {
                let ids: HashSet<i64> = ids.into_iter().collect();
                self.records.retain(|(row, _)| !ids.contains(row));
            }
            LogDeletion::Before(cutoff) => self.records.retain(|(_, r)| r.at >= cutoff),
        }
        (before - self.records.len()) as u64
    }
}

fn rows(found: HashMap<String, (Option<String>, Counts)>) -> Vec<UsageRow> {
    let mut rows: Vec<UsageRow> = found
        .into_iter()
        .map(|(id, (mask, counts))| UsageRow { id, mask, counts })
        .collect();
    rows.sort_by(|a, b| b.counts.calls.cmp(&a.counts.calls).then(a.id.cmp(&b.id)));
    rows
}

fn request_entry(row: i64, r: &RequestRecord) -> RequestEntry {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let t = &r.tokens;
    RequestEntry {
        id: row,
        request_id: r.id,
        at_ms: ms_of(r.at),
        protocol: r.protocol.as_str().to_owned(),
        route: r.route.clone(),
        model: r.model.clone(),
        key_id: r.key.as_ref().map(KeyId::hex),
        key_mask: r.key.as_ref().map(|k| k.mask().to_owned()),
        client_id: r.client.as_ref().map(|c| c.hex()),
        client_mask: r.client.as_ref().map(|c| c.mask().to_owned()),
        status: r.status,
        success: r.success,
        attempts: r.attempts,
        latency_ms: ms(r.latency),
        ttfb_ms: r.time_to_first_byte.map(ms),
        streamed: r.streamed,
        completion: r.completion.as_str().to_owned(),
        tokens: Tokens {
            prompt: t.prompt,
            candidates: t.candidates,
            thoughts: t.thoughts,
            cached: t.cached,
            tool_use_prompt: t.tool_use_prompt,
            total: t.total,
        },
    }
}

/// `limit` (0: 50, at most [`MAX_PAGE`]) and `offset` as indexes.
fn page(limit: u32, offset: u64) -> (usize, usize) {
    let limit = if limit == 0 { 50 } else { limit.min(MAX_PAGE) };
    (
        limit as usize,
        usize::try_from(offset).unwrap_or(usize::MAX),
    )
}

/// Midnight UTC of the 1st of the month holding `now_ms`.
fn utc_month_start_ms(now_ms: i64) -> i64 {
    jiff::Timestamp::from_millisecond(now_ms)
        .and_then(|ts| {
            ts.to_zoned_datetime(jiff::tz::TimeZone::UTC)
                .first_of_month()?
                .start_of_day()
        })
        .map_or(now_ms, |start| start.timestamp().as_millisecond())
}

/// Answers at once, from the records kept.
impl StatsStore for MemoryStore {
    fn summary(&self) -> StoreFuture<'_, Summary> {
        let summary = self.lock().summary(SystemTime::now());
        Box::pin(std::future::ready(Ok(summary)))
    }

    fn usage(&self, by: UsageBy, window: Window) -> StoreFuture<'_, Vec<UsageRow>> {
        let rows = self.lock().usage(by, window);
        Box::pin(std::future::ready(Ok(rows)))
    }

    fn models_of_key(&self, key: KeyId, window: Window) -> StoreFuture<'_, Vec<UsageRow>> {
        let rows = self.lock().models_of_key(&key, window);
        Box::pin(std::future::ready(Ok(rows)))
    }

    fn key_mask(&self, key: KeyId) -> StoreFuture<'_, Option<String>> {
        let mask = self.lock().key_mask(&key);
        Box::pin(std::future::ready(Ok(mask)))
    }

    fn top_rate_limited_keys(
        &self,
        window: Window,
        limit: u32,
    ) -> StoreFuture<'_, Vec<RateLimitedKey>> {
        let mut keys: Vec<RateLimitedKey> = self
            .lock()
            .usage(UsageBy::Key, window)
            .into_iter()
            .filter(|r| r.counts.rate_limited_attempts > 0 && !r.id.is_empty())
            .map(|r| RateLimitedKey {
                key_id: r.id,
                mask: r.mask,
                rate_limited: r.counts.rate_limited_attempts,
                attempts: r.counts.attempts,
            })
            .collect();
        keys.sort_by(|a, b| {
            b.rate_limited
                .cmp(&a.rate_limited)
                .then(a.key_id.cmp(&b.key_id))
        });
        keys.truncate(limit as usize);
        Box::pin(std::future::ready(Ok(keys)))
    }

    fn series(
        &self,
        granularity: Granularity,
        filter: Option<Filter>,
    ) -> StoreFuture<'_, Vec<SeriesPoint>> {
        let points = self
            .lock()
            .series(granularity, filter.as_ref(), SystemTime::now());
        Box::pin(std::future::ready(Ok(points)))
    }

    fn errors(&self, query: ErrorQuery) -> StoreFuture<'_, ErrorPage> {
        let page = self.lock().errors(&query);
        Box::pin(std::future::ready(Ok(page)))
    }

    fn error(&self, id: i64) -> StoreFuture<'_, Option<ErrorEntry>> {
        let entry = self.lock().error(id);
        Box::pin(std::future::ready(Ok(entry)))
    }

    fn requests(&self, query: RequestQuery) -> StoreFuture<'_, RequestPage> {
        let page = self.lock().requests(&query);
        Box::pin(std::future::ready(Ok(page)))
    }

    fn attempts(&self, request: RequestId) -> StoreFuture<'_, Vec<AttemptEntry>> {
        let attempts = self.lock().attempts(request);
        Box::pin(std::future::ready(Ok(attempts)))
    }

    fn delete_errors(&self, which: LogDeletion) -> StoreFuture<'_, u64> {
        let deleted = self.lock().delete_errors(which);
        Box::pin(std::future::ready(Ok(deleted)))
    }

    fn delete_requests(&self, which: LogDeletion) -> StoreFuture<'_, u64> {
        let deleted = self.lock().delete_requests(which);
        Box::pin(std::future::ready(Ok(deleted)))
    }
}

/// Quotas in memory: lost with the process, shared only by the clones of this store.
impl QuotaStore for MemoryStore {
    fn quota_rows(&self) -> Result<Vec<QuotaRow>, crate::BoxError> {
        Ok(self.lock().quota_rows.values().cloned().collect())
    }

    fn save_quota_row(&self, row: &QuotaRow) -> Result<(), crate::BoxError> {
        let mut inner = self.lock();
        if row.name.is_none() && row.limits.is_none() {
            inner.quota_rows.remove(&row.id);
        } else {
            inner.quota_rows.insert(row.id.clone(), row.clone());
        }
        Ok(())
    }

    fn exchange_quota_use(
        &self,
        add: &[QuotaUse],
        current: &[(QuotaWindow, i64); 3],
    ) -> Result<Vec<QuotaUse>, crate::BoxError> {
        let mut inner = self.lock();
        for u in add {
            let total = inner
                .quota_use
                .entry((u.id.clone(), u.window, u.bucket))
                .or_default();
            total.0 = total.0.saturating_add(u.requests);
            total.1 = total.1.saturating_add(u.tokens);
        }
        inner.quota_use.retain(|(_, window, bucket), _| {
            current
                .iter()
                .find(|(w, _)| w == window)
                .is_none_or(|(w, now)| *bucket >= crate::quota::oldest_kept(*w, *now))
        });
        Ok(inner
            .quota_use
            .iter()
            .filter(|((_, window, bucket), _)| current.contains(&(*window, *bucket)))
            .map(|((id, window, bucket), (requests, tokens))| QuotaUse {
                id: id.clone(),
                window: *window,
                bucket: *bucket,
                requests: *requests,
                tokens: *tokens,
            })
            .collect())
    }
}
