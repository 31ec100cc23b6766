//! The key pool: shared state of every key, selection, and outcome accounting.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::api_key::{ApiKey, KeyId};
use super::daily_reset::next_daily_reset;
use crate::classify::{Cooldown, FailureClass, KeyEffect, Outcome};
use crate::ext::AttemptContext;

/// How the pool chooses among usable keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Each request takes the next usable key in order (the Python server's behaviour).
    #[default]
    RoundRobin,
    /// Keys are chosen at random in proportion to their weight ([`KeyPool::add_weighted`]).
    Weighted,
    /// The key with fewer requests in flight of two chosen at random ("power of two choices":
    /// constant time at any pool size, and nearly as good as scanning every key).
    LeastInFlight,
    /// Uniformly at random.
    Random,
}

/// Why a key is disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisabledReason {
    /// The upstream refused the key (invalid, expired, suspended, no permission).
    Rejected {
        /// The upstream status.
        status: u16,
        /// Gemini's reason, such as `API_KEY_INVALID`.
        reason: String,
    },
    /// `max_failures` consecutive counted failures.
    TooManyFailures {
        /// How many failures in a row.
        count: u32,
    },
    /// Disabled by an operator.
    Manual,
}

impl fmt::Display for DisabledReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisabledReason::Rejected { status, reason } => {
                write!(f, "rejected by upstream ({status} {reason})")
            }
            DisabledReason::TooManyFailures { count } => {
                write!(f, "{count} consecutive failures")
            }
            DisabledReason::Manual => f.write_str("disabled by an operator"),
        }
    }
}

/// A key's state as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyStatus {
    /// Serving every model.
    Active,
    /// Serving, except for the listed models until the listed times.
    CoolingDown(Vec<ModelCooldown>),
    /// Not serving until reset or a successful probe.
    Disabled(DisabledReason),
}

/// One key×model cooldown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCooldown {
    /// The model (`*` means every model).
    pub model: String,
    /// When the key serves this model again.
    pub until: SystemTime,
}

/// The last failure a key saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// The failure class.
    pub class: FailureClass,
    /// When it happened.
    pub at: SystemTime,
}

/// Everything known about one key, for listings and admin pages. Holds no secret.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct KeySnapshot {
    /// The key's id.
    pub id: KeyId,
    /// Active, cooling down, or disabled.
    pub status: KeyStatus,
    /// Counted failures in a row (reset by a success).
    pub consecutive_failures: u32,
    /// Requests sent with this key.
    pub requests: u64,
    /// Successful ones.
    pub successes: u64,
    /// Failed ones (any class).
    pub failures: u64,
    /// Requests in flight now.
    pub in_flight: u32,
    /// Selection weight.
    pub weight: u32,
    /// When the key was last chosen.
    pub last_used: Option<SystemTime>,
    /// The last failure.
    pub last_error: Option<LastError>,
}

/// Why no key could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoKey {
    /// Usable keys exist but all are cooling down for this model; the soonest is back after this.
    CoolingDown {
        /// Time until the soonest key serves this model again.
        retry_after: Duration,
    },
    /// No key is enabled (the pool is empty, or every key is disabled).
    NoneEnabled,
}

impl fmt::Display for NoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoKey::CoolingDown { retry_after } => write!(
                f,
                "every API key is rate limited for this model; the first is available again in {}s",
                retry_after.as_secs_f64().ceil() as u64
            ),
            NoKey::NoneEnabled => f.write_str("no API key is enabled"),
        }
    }
}

/// What [`KeyPool::add`] did with each key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddReport {
    /// Keys added.
    pub added: Vec<KeyId>,
    /// Keys already in the pool (or repeated in the input).
    pub duplicates: Vec<KeyId>,
}

// Key status codes held in an atomic for the lock-free fast path.
const ACTIVE: u32 = 0;
const DISABLED: u32 = 1;

struct KeyEntry {
    key: ApiKey,
    weight: u32,
    status: AtomicU32,
    /// Milliseconds (since the pool's epoch) until which *some* model is cooling; 0 = none.
    /// Lets the common path skip the mutex.
    cooling_until_ms: AtomicU64,
    consecutive_failures: AtomicU32,
    in_flight: AtomicU32,
    requests: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    last_used_ms: AtomicU64,
    removed: AtomicBool,
    slow: Mutex<SlowState>,
}

#[derive(Default)]
struct SlowState {
    cooldowns: Vec<(Arc<str>, Instant)>,
    disabled: Option<DisabledReason>,
    last_error: Option<LastError>,
}

impl KeyEntry {
    fn new(key: ApiKey, weight: u32) -> Self {
        KeyEntry {
            key,
            weight: weight.max(1),
            status: AtomicU32::new(ACTIVE),
            cooling_until_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_used_ms: AtomicU64::new(0),
            removed: AtomicBool::new(false),
            slow: Mutex::new(SlowState::default()),
        }
    }

    fn slow(&self) -> MutexGuard<'_, SlowState> {
        // A panic while holding this lock cannot leave the state inconsistent (every write is a
        // single assignment), so a poisoned lock is still usable.
        self.slow.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `None` if usable for `model` now; otherwise when it is usable again (`None` inside means
    /// never, i.e. disabled).
    fn blocked_until(&self, model: &str, now: Instant, now_ms: u64) -> Option<Option<Instant>> {
        if self.status.load(Ordering::Relaxed) != ACTIVE {
            return Some(None);
        }
        let cooling = self.cooling_until_ms.load(Ordering::Relaxed);
        if cooling == 0 || cooling <= now_ms {
            return None;
        }
        let slow = self.slow();
        slow.cooldowns
            .iter()
            .filter(|(m, until)| *until > now && (&**m == "*" || &**m == model))
            .map(|(_, until)| *until)
            .max()
            .map(Some)
    }
}

struct Keys {
    entries: Vec<Arc<KeyEntry>>,
    index: HashMap<KeyId, usize>,
    cumulative_weights: Vec<u64>,
}

impl Keys {
    fn build(entries: Vec<Arc<KeyEntry>>) -> Self {
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.key.id().clone(), i))
            .collect();
        let mut total = 0u64;
        let cumulative_weights = entries
            .iter()
            .map(|e| {
                total += u64::from(e.weight);
                total
            })
            .collect();
        Keys {
            entries,
            index,
            cumulative_weights,
        }
    }
}

struct PoolInner {
    keys: RwLock<Arc<Keys>>,
    cursor: AtomicUsize,
    strategy: Strategy,
    max_failures: AtomicU32,
    epoch: Instant,
    epoch_wall: SystemTime,
}

/// The shared state of a set of API keys. Cloning is cheap and shares the state: every
/// [`KeyRotationLayer`](super::KeyRotationLayer) built from clones of one pool sees the same
/// cooldowns and counts.
///
/// # Example
///
/// ```
/// use gemini_balance::keys::{ApiKey, KeyPool, Strategy};
/// use gemini_balance::classify::{FailureClass, Outcome, QuotaScope};
///
/// let pool = KeyPool::builder()
///     .strategy(Strategy::RoundRobin)
///     .max_failures(3)
///     .keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv", "AIzaSyB1234567890abcdefghijklmnopqrstuv"])
///     .build()
///     .unwrap();
///
/// let lease = pool.pick(Some("gemini-2.0-flash"), None).unwrap();
/// let first = lease.id().clone();
/// // A 429 cools this key down for this model only.
/// lease.report(&Outcome::Failure(FailureClass::RateLimited {
///     retry_after: None,
///     scope: QuotaScope::PerMinute,
/// }));
/// for _ in 0..4 {
///     let lease = pool.pick(Some("gemini-2.0-flash"), None).unwrap();
///     assert_ne!(lease.id(), &first);
/// }
/// ```
#[derive(Clone)]
pub struct KeyPool {
    inner: Arc<PoolInner>,
}

impl fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPool")
            .field("keys", &self.len())
            .field("strategy", &self.inner.strategy)
            .field("max_failures", &self.max_failures())
            .finish()
    }
}

/// Builds a [`KeyPool`].
#[derive(Debug, Default)]
pub struct KeyPoolBuilder {
    strategy: Strategy,
    max_failures: Option<u32>,
    keys: Vec<(String, u32)>,
}

/// The default `MAX_FAILURES`, as in the Python server.
pub const DEFAULT_MAX_FAILURES: u32 = 3;

impl KeyPoolBuilder {
    /// Selection strategy (default round-robin).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Consecutive counted failures that take a key out (default 3; 0 means never).
    pub fn max_failures(mut self, n: u32) -> Self {
        self.max_failures = Some(n);
        self
    }

    /// Adds keys with weight 1.
    pub fn keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.keys
            .extend(keys.into_iter().map(|k| (k.as_ref().to_owned(), 1)));
        self
    }

    /// Adds one key with a weight (used by [`Strategy::Weighted`]).
    pub fn weighted_key(mut self, key: impl AsRef<str>, weight: u32) -> Self {
        self.keys.push((key.as_ref().to_owned(), weight));
        self
    }

    /// Builds the pool. Fails on the first string that cannot be a key, naming its position
    /// (never the key itself). Duplicates are dropped.
    pub fn build(self) -> Result<KeyPool, super::InvalidKeyAt> {
        let pool = KeyPool::new(self.strategy);
        if let Some(n) = self.max_failures {
            pool.set_max_failures(n);
        }
        let mut parsed = Vec::with_capacity(self.keys.len());
        for (position, (raw, weight)) in self.keys.iter().enumerate() {
            let key = ApiKey::new(raw).map_err(|error| super::InvalidKeyAt { position, error })?;
            parsed.push((key, *weight));
        }
        pool.add_weighted(parsed);
        Ok(pool)
    }
}

impl KeyPool {
    /// An empty pool with the given strategy.
    pub fn new(strategy: Strategy) -> Self {
        KeyPool {
            inner: Arc::new(PoolInner {
                keys: RwLock::new(Arc::new(Keys::build(Vec::new()))),
                cursor: AtomicUsize::new(0),
                strategy,
                max_failures: AtomicU32::new(DEFAULT_MAX_FAILURES),
                epoch: Instant::now(),
                epoch_wall: SystemTime::now(),
            }),
        }
    }

    /// A builder.
    pub fn builder() -> KeyPoolBuilder {
        KeyPoolBuilder::default()
    }

    fn snapshot_keys(&self) -> Arc<Keys> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn now_ms(&self, now: Instant) -> u64 {
        // +1 so that 0 can mean "never".
        now.saturating_duration_since(self.inner.epoch).as_millis() as u64 + 1
    }

    fn wall(&self, ms: u64) -> SystemTime {
        self.inner.epoch_wall + Duration::from_millis(ms.saturating_sub(1))
    }

    fn wall_of(&self, instant: Instant) -> SystemTime {
        self.inner.epoch_wall + instant.saturating_duration_since(self.inner.epoch)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.snapshot_keys().entries.len()
    }

    /// `true` when the pool has no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The selection strategy.
    pub fn strategy(&self) -> Strategy {
        self.inner.strategy
    }

    /// Consecutive counted failures that take a key out (0 = never).
    pub fn max_failures(&self) -> u32 {
        self.inner.max_failures.load(Ordering::Relaxed)
    }

    /// Changes `max_failures` while serving.
    pub fn set_max_failures(&self, n: u32) {
        self.inner.max_failures.store(n, Ordering::Relaxed);
    }

    /// Chooses a key for a request for `model` (`None` when the model is unknown).
    ///
    /// `attempt` carries what earlier attempts of the same request learned: a key to prefer
    /// (the last failure was not the key's fault) and keys to avoid. Never waits: when no key is
    /// usable it says why at once.
    pub fn pick(
        &self,
        model: Option<&str>,
        attempt: Option<&AttemptContext>,
    ) -> Result<KeyLease, NoKey> {
        let keys = self.snapshot_keys();
        let n = keys.entries.len();
        if n == 0 {
            return Err(NoKey::NoneEnabled);
        }
        let model = model.unwrap_or("*");
        let now = Instant::now();
        let now_ms = self.now_ms(now);
        let usable = |i: usize| keys.entries[i].blocked_until(model, now, now_ms).is_none();

        if let Some(prefer) = attempt.and_then(|a| a.prefer.as_ref()) {
            if let Some(&i) = keys.index.get(prefer) {
                if usable(i) {
                    return Ok(self.lease(&keys.entries[i], now_ms));
                }
            }
        }
        let avoid = attempt.map(|a| a.avoid.as_slice()).unwrap_or(&[]);
        let avoided = |i: usize| !avoid.is_empty() && avoid.contains(keys.entries[i].key.id());

        if self.inner.strategy == Strategy::LeastInFlight && n > 1 {
            let a = fastrand::usize(..n);
            let mut b = fastrand::usize(..n - 1);
            if b >= a {
                b += 1;
            }
            let ok = |i: usize| usable(i) && !avoided(i);
            let load = |i: usize| keys.entries[i].in_flight.load(Ordering::Relaxed);
            let chosen = match (ok(a), ok(b)) {
                (true, true) if load(b) < load(a) => Some(b),
                (true, _) => Some(a),
                (false, true) => Some(b),
                (false, false) => None,
            };
            if let Some(i) = chosen {
                return Ok(self.lease(&keys.entries[i], now_ms));
            }
        }

        let start = match self.inner.strategy {
            Strategy::RoundRobin => self.inner.cursor.fetch_add(1, Ordering::Relaxed) % n,
            Strategy::Weighted => {
                let total = keys.cumulative_weights.last().copied().unwrap_or(1);
                let r = fastrand::u64(..total);
                keys.cumulative_weights.partition_point(|&w| w <= r)
            }
            Strategy::LeastInFlight | Strategy::Random => fastrand::usize(..n),
        };
        let mut fallback = None;
        for step in 0..n {
            let i = (start + step) % n;
            if !usable(i) {
                continue;
            }
            if avoided(i) {
                fallback.get_or_insert(i);
                continue;
            }
            if self.inner.strategy == Strategy::RoundRobin && step > 0 {
                // Skip past the keys we just stepped over, so they are not retried first next time.
                self.inner.cursor.fetch_add(step, Ordering::Relaxed);
            }
            return Ok(self.lease(&keys.entries[i], now_ms));
        }
        if let Some(i) = fallback {
            return Ok(self.lease(&keys.entries[i], now_ms));
        }
        // Nothing usable: say when the soonest cooling key is back, or that none is enabled.
        let soonest = keys
            .entries
            .iter()
            .filter_map(|e| e.blocked_until(model, now, now_ms).flatten())
            .min();
        Err(match soonest {
            Some(until) => NoKey::CoolingDown {
                retry_after: until.saturating_duration_since(now),
            },
            None => NoKey::NoneEnabled,
        })
    }

    fn lease(&self, entry: &Arc<KeyEntry>, now_ms: u64) -> KeyLease {
        entry.in_flight.fetch_add(1, Ordering::Relaxed);
        entry.requests.fetch_add(1, Ordering::Relaxed);
        entry.last_used_ms.store(now_ms, Ordering::Relaxed);
        KeyLease {
            entry: entry.clone(),
            pool: self.clone(),
        }
    }

    fn record(&self, entry: &KeyEntry, model: &str, outcome: &Outcome) {
        let class = match outcome {
            Outcome::Success => {
                entry.successes.fetch_add(1, Ordering::Relaxed);
                entry.consecutive_failures.store(0, Ordering::Relaxed);
                return;
            }
            Outcome::Failure(class) => class,
        };
        entry.failures.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut slow = entry.slow();
        slow.last_error = Some(LastError {
            class: class.clone(),
            at: SystemTime::now(),
        });
        match class.action().key {
            KeyEffect::CountFailure => {
                let count = entry.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                let max = self.max_failures();
                if max > 0 && count >= max {
                    disable(entry, &mut slow, DisabledReason::TooManyFailures { count });
                    tracing::warn!(key = %entry.key.id(), failures = count, "key taken out after consecutive failures");
                }
            }
            KeyEffect::CoolDown(cooldown) => {
                let until = match cooldown {
                    Cooldown::For(d) => now + d,
                    Cooldown::UntilDailyReset => {
                        let wall = SystemTime::now();
                        now + next_daily_reset(wall)
                            .duration_since(wall)
                            .unwrap_or_default()
                    }
                };
                self.cool(entry, &mut slow, model, until, now);
                tracing::debug!(key = %entry.key.id(), model, secs = until.saturating_duration_since(now).as_secs(), "key cooling down");
            }
            KeyEffect::Disable => {
                let reason = match class {
                    FailureClass::KeyRejected { status, reason } => DisabledReason::Rejected {
                        status: status.as_u16(),
                        reason: reason.clone(),
                    },
                    other => DisabledReason::Rejected {
                        status: other.status().map_or(0, |s| s.as_u16()),
                        reason: other.name().to_owned(),
                    },
                };
                disable(entry, &mut slow, reason);
                tracing::warn!(key = %entry.key.id(), class = %class, "key disabled");
            }
            _ => {}
        }
    }

    fn cool(
        &self,
        entry: &KeyEntry,
        slow: &mut SlowState,
        model: &str,
        until: Instant,
        now: Instant,
    ) {
        slow.cooldowns.retain(|(_, t)| *t > now);
        match slow.cooldowns.iter_mut().find(|(m, _)| &**m == model) {
            Some((_, t)) => *t = (*t).max(until),
            None => slow.cooldowns.push((model.into(), until)),
        }
        let latest = slow
            .cooldowns
            .iter()
            .map(|(_, t)| *t)
            .max()
            .unwrap_or(until);
        entry
            .cooling_until_ms
            .store(self.now_ms(latest), Ordering::Relaxed);
    }

    fn find(&self, id: &KeyId) -> Option<Arc<KeyEntry>> {
        let keys = self.snapshot_keys();
        keys.index.get(id).map(|&i| keys.entries[i].clone())
    }

    /// Adds keys (weight 1) while serving. In-flight requests are not disturbed.
    pub fn add<I: IntoIterator<Item = ApiKey>>(&self, keys: I) -> AddReport {
        self.add_weighted(keys.into_iter().map(|k| (k, 1)))
    }

    /// Adds keys with selection weights.
    pub fn add_weighted<I: IntoIterator<Item = (ApiKey, u32)>>(&self, keys: I) -> AddReport {
        let mut guard = self.inner.keys.write().unwrap_or_else(|e| e.into_inner());
        let mut entries = guard.entries.clone();
        let mut seen: std::collections::HashSet<KeyId> = guard.index.keys().cloned().collect();
        let mut report = AddReport::default();
        for (key, weight) in keys {
            if seen.insert(key.id().clone()) {
                report.added.push(key.id().clone());
                entries.push(Arc::new(KeyEntry::new(key, weight)));
            } else {
                report.duplicates.push(key.id().clone());
            }
        }
        if !report.added.is_empty() {
            *guard = Arc::new(Keys::build(entries));
        }
        report
    }

    /// Removes keys while serving; returns the ids that were present. Requests already using a
    /// removed key finish normally.
    pub fn remove(&self, ids: &[KeyId]) -> Vec<KeyId> {
        let mut guard = self.inner.keys.write().unwrap_or_else(|e| e.into_inner());
        let mut removed = Vec::new();
        let entries: Vec<_> = guard
            .entries
            .iter()
            .filter(|e| {
                if ids.contains(e.key.id()) {
                    e.removed.store(true, Ordering::Relaxed);
                    removed.push(e.key.id().clone());
                    false
                } else {
                    true
                }
            })
            .cloned()
            .collect();
        if !removed.is_empty() {
            *guard = Arc::new(Keys::build(entries));
        }
        removed
    }

    /// The key with this id, if present (for probes and admin tools that must use the secret).
    pub fn key(&self, id: &KeyId) -> Option<ApiKey> {
        self.find(id).map(|e| e.key.clone())
    }

    /// Every key's id, in pool order.
    pub fn ids(&self) -> Vec<KeyId> {
        self.snapshot_keys()
            .entries
            .iter()
            .map(|e| e.key.id().clone())
            .collect()
    }

    /// Brings keys back to active with no failures and no cooldowns; returns how many were found.
    pub fn reset(&self, ids: &[KeyId]) -> usize {
        ids.iter()
            .filter_map(|id| self.find(id))
            .map(|e| reset_entry(&e))
            .count()
    }

    /// Resets every key.
    pub fn reset_all(&self) -> usize {
        let keys = self.snapshot_keys();
        keys.entries.iter().for_each(|e| reset_entry(e));
        keys.entries.len()
    }

    /// Disables a key by hand; returns `false` if it is not in the pool.
    pub fn disable(&self, id: &KeyId) -> bool {
        match self.find(id) {
            Some(entry) => {
                let mut slow = entry.slow();
                disable(&entry, &mut slow, DisabledReason::Manual);
                true
            }
            None => false,
        }
    }

    /// Keys that a periodic re-check should probe: disabled keys and keys with counted
    /// failures. Probe each with a cheap request (see [`probe`](Self::probe)) and report the
    /// result with [`KeyLease::report_probe`].
    pub fn keys_to_probe(&self) -> Vec<KeyId> {
        self.snapshot_keys()
            .entries
            .iter()
            .filter(|e| {
                e.status.load(Ordering::Relaxed) != ACTIVE
                    || e.consecutive_failures.load(Ordering::Relaxed) > 0
            })
            .map(|e| e.key.id().clone())
            .collect()
    }

    /// A lease on a specific key whatever its state, for a probe or a manual verify.
    pub fn probe(&self, id: &KeyId) -> Option<KeyLease> {
        let entry = self.find(id)?;
        let now_ms = self.now_ms(Instant::now());
        Some(self.lease(&entry, now_ms))
    }

    /// The state of one key.
    pub fn snapshot(&self, id: &KeyId) -> Option<KeySnapshot> {
        self.find(id).map(|e| self.describe(&e))
    }

    /// The state of every key, in pool order.
    pub fn snapshots(&self) -> Vec<KeySnapshot> {
        self.snapshot_keys()
            .entries
            .iter()
            .map(|e| self.describe(e))
            .collect()
    }

    fn describe(&self, e: &KeyEntry) -> KeySnapshot {
        let now = Instant::now();
        let slow = e.slow();
        let status = if let Some(reason) = &slow.disabled {
            KeyStatus::Disabled(reason.clone())
        } else {
            let cooling: Vec<_> = slow
                .cooldowns
                .iter()
                .filter(|(_, t)| *t > now)
                .map(|(m, t)| ModelCooldown {
                    model: m.to_string(),
                    until: self.wall_of(*t),
                })
                .collect();
            if cooling.is_empty() {
                KeyStatus::Active
            } else {
                KeyStatus::CoolingDown(cooling)
            }
        };
        let last_used = e.last_used_ms.load(Ordering::Relaxed);
        KeySnapshot {
            id: e.key.id().clone(),
            status,
            consecutive_failures: e.consecutive_failures.load(Ordering::Relaxed),
            requests: e.requests.load(Ordering::Relaxed),
            successes: e.successes.load(Ordering::Relaxed),
            failures: e.failures.load(Ordering::Relaxed),
            in_flight: e.in_flight.load(Ordering::Relaxed),
            weight: e.weight,
            last_used: (last_used != 0).then(|| self.wall(last_used)),
            last_error: slow.last_error.clone(),
        }
    }
}

fn disable(entry: &KeyEntry, slow: &mut SlowState, reason: DisabledReason) {
    slow.disabled = Some(reason);
    entry.status.store(DISABLED, Ordering::Relaxed);
}

fn reset_entry(entry: &KeyEntry) {
    let mut slow = entry.slow();
    slow.disabled = None;
    slow.cooldowns.clear();
    entry.cooling_until_ms.store(0, Ordering::Relaxed);
    entry.consecutive_failures.store(0, Ordering::Relaxed);
    entry.status.store(ACTIVE, Ordering::Relaxed);
}

/// One request's use of one key. Report the outcome with [`report`](Self::report); dropping
/// the lease without a report (a cancelled request) only ends its in-flight count.
pub struct KeyLease {
    entry: Arc<KeyEntry>,
    pool: KeyPool,
}

impl fmt::Debug for KeyLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyLease")
            .field(self.entry.key.id())
            .finish()
    }
}

impl KeyLease {
    /// The key (to inject into the request).
    pub fn key(&self) -> &ApiKey {
        &self.entry.key
    }

    /// The key's id.
    pub fn id(&self) -> &KeyId {
        self.entry.key.id()
    }

    /// Reports the outcome of a request for an unknown model (cooldowns then apply to every model).
    pub fn report(self, outcome: &Outcome) {
        self.report_for(None, outcome);
    }

    /// Reports the outcome of a request for `model`.
    pub fn report_for(self, model: Option<&str>, outcome: &Outcome) {
        self.pool.record(&self.entry, model.unwrap_or("*"), outcome);
    }

    /// Reports a probe: success brings the key back (clears failures, cooldowns and the
    /// disabled state); failure is recorded like any other attempt.
    pub fn report_probe(self, outcome: &Outcome) {
        if outcome.is_success() {
            reset_entry(&self.entry);
        }
        self.report(outcome);
    }
}

impl Drop for KeyLease {
    fn drop(&mut self) {
        self.entry.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
