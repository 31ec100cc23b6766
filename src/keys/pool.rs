//! The key pool: the shared set of keys, selection, and hot changes.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::api_key::ApiKey;
use super::entry::{model_hash, KeyEntry, Shared};
use super::status::{
    AddReport, DisabledReason, KeyObserver, KeySnapshot, NoKey, Observers, Strategy,
};
use crate::classify::Outcome;
use crate::ext::AttemptContext;
use crate::fingerprint::KeyId;

/// Random probes tried before a linear scan, for the random-start strategies.
const RANDOM_PROBES: usize = 8;

struct Keys {
    entries: Vec<Arc<KeyEntry>>,
    index: HashMap<KeyId, usize>,
    cumulative_weights: Vec<u64>,
    equal_weights: bool,
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
        let equal_weights = entries.windows(2).all(|w| w[0].weight == w[1].weight);
        Keys {
            entries,
            index,
            cumulative_weights,
            equal_weights,
        }
    }
}

struct PoolInner {
    keys: ArcSwap<Keys>,
    /// Round-robin position; for the random strategies, where the last scan found a usable key.
    cursor: AtomicUsize,
    strategy: Strategy,
    shared: Arc<Shared>,
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
/// lease.report_for(Some("gemini-2.0-flash"), &Outcome::Failure(FailureClass::RateLimited {
///     retry_after: None,
///     scope: QuotaScope::PerMinute,
/// }));
/// for _ in 0..4 {
///     let lease = pool.pick(Some("gemini-2.0-flash"), None).unwrap();
///     assert_ne!(lease.id(), &first);
/// }
/// // Another model still uses it.
/// let ids: Vec<_> = (0..2).map(|_| pool.pick(Some("gemini-2.5-pro"), None).unwrap().id().clone()).collect();
/// assert!(ids.contains(&first));
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
#[derive(Default)]
pub struct KeyPoolBuilder {
    strategy: Strategy,
    max_failures: Option<u32>,
    keys: Vec<(String, u32)>,
    observers: Vec<Arc<dyn KeyObserver>>,
}

impl fmt::Debug for KeyPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPoolBuilder")
            .field("strategy", &self.strategy)
            .field("max_failures", &self.max_failures)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
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

    /// Tells `observer` about every lasting change of a key's state (see [`KeyObserver`]).
    /// Call it again to add more observers (a store and a metrics exporter, say); each is told
    /// in the order added.
    pub fn observer(mut self, observer: Arc<dyn KeyObserver>) -> Self {
        self.observers.push(observer);
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
        if !self.observers.is_empty() {
            pool.store_observers(self.observers);
        }
        Ok(pool)
    }
}

impl KeyPool {
    /// An empty pool with the given strategy.
    pub fn new(strategy: Strategy) -> Self {
        // Read the quota reset's time zone now rather than on the request that first hits a
        // daily quota (it reads files).
        let _ = super::daily_reset::pacific();
        KeyPool {
            inner: Arc::new(PoolInner {
                keys: ArcSwap::from_pointee(Keys::build(Vec::new())),
                cursor: AtomicUsize::new(0),
                strategy,
                shared: Arc::new(Shared::new(DEFAULT_MAX_FAILURES)),
            }),
        }
    }

    /// A builder.
    pub fn builder() -> KeyPoolBuilder {
        KeyPoolBuilder::default()
    }

    /// Tells `observer` about every lasting change of a key's state from now on (replacing any
    /// earlier observers).
    pub fn set_observer(&self, observer: Arc<dyn KeyObserver>) {
        self.store_observers(vec![observer]);
    }

    /// Tells `observer` too about every lasting change of a key's state from now on (after the
    /// observers already there).
    pub fn add_observer(&self, observer: Arc<dyn KeyObserver>) {
        let mut slot = self
            .inner
            .shared
            .observer
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let mut all = slot.as_ref().map(|o| o.0.clone()).unwrap_or_default();
        all.push(observer);
        *slot = Some(Arc::new(Observers(all)));
    }

    fn store_observers(&self, observers: Vec<Arc<dyn KeyObserver>>) {
        *self
            .inner
            .shared
            .observer
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Observers(observers)));
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.inner.keys.load().entries.len()
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
        self.inner.shared.max_failures.load(Ordering::Relaxed)
    }

    /// Changes `max_failures` while serving.
    pub fn set_max_failures(&self, n: u32) {
        self.inner.shared.max_failures.store(n, Ordering::Relaxed);
    }

    /// Chooses a key for a request for `model` (`None` when the model is unknown).
    ///
    /// `attempt` carries what earlier attempts of the same request learned: a key to prefer
    /// (the last failure was not the key's) and keys to avoid. Never waits: when no key is
    /// usable it says why at once.
    pub fn pick(
        &self,
        model: Option<&str>,
        attempt: Option<&AttemptContext>,
    ) -> Result<KeyLease, NoKey> {
        let keys = self.inner.keys.load();
        let n = keys.entries.len();
        if n == 0 {
            return Err(NoKey::NoneEnabled);
        }
        let model = model.unwrap_or("*");
        let hash = model_hash(model);
        let now = Instant::now();
        let now_ms = self.inner.shared.ms(now);
        let usable = |i: usize| {
            keys.entries[i]
                .blocked_until(model, hash, now, now_ms)
                .is_none()
        };

        if let Some(prefer) = attempt.and_then(|a| a.prefer.as_ref()) {
            if let Some(&i) = keys.index.get(prefer) {
                if usable(i) {
                    return Ok(lease(&keys.entries[i], now_ms));
                }
            }
        }
        let avoid = attempt.map(|a| a.avoid.as_slice()).unwrap_or(&[]);
        let avoided = |i: usize| !avoid.is_empty() && avoid.contains(keys.entries[i].key.id());
        let ok = |i: usize| usable(i) && !avoided(i);

        let random_start = |keys: &Keys| match self.inner.strategy {
            Strategy::Weighted if !keys.equal_weights => {
                let total = keys.cumulative_weights.last().copied().unwrap_or(1);
                let r = fastrand::u64(..total);
                keys.cumulative_weights.partition_point(|&w| w <= r)
            }
            _ => fastrand::usize(..n),
        };

        let start = match self.inner.strategy {
            Strategy::RoundRobin => self.inner.cursor.fetch_add(1, Ordering::Relaxed) % n,
            Strategy::LeastInFlight if n > 1 => {
                let load = |i: usize| keys.entries[i].in_flight.load(Ordering::Relaxed);
                // Power of two choices, retried a few times when the draws are unusable.
                for _ in 0..RANDOM_PROBES {
                    let a = fastrand::usize(..n);
                    let mut b = fastrand::usize(..n - 1);
                    if b >= a {
                        b += 1;
                    }
                    let chosen = match (ok(a), ok(b)) {
                        (true, true) if load(b) < load(a) => Some(b),
                        (true, _) => Some(a),
                        (false, true) => Some(b),
                        (false, false) => None,
                    };
                    if let Some(i) = chosen {
                        return Ok(lease(&keys.entries[i], now_ms));
                    }
                }
                self.inner.cursor.load(Ordering::Relaxed) % n
            }
            _ => {
                for _ in 0..RANDOM_PROBES {
                    let i = random_start(&keys);
                    if ok(i) {
                        return Ok(lease(&keys.entries[i], now_ms));
                    }
                }
                // Most keys are out: scan from where the last scan found one, so a long run of
                // cooling keys is not walked again on every pick.
                self.inner.cursor.load(Ordering::Relaxed) % n
            }
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
            if step > 0 {
                // Continue after the key chosen, so the skipped ones are not scanned again next.
                self.inner.cursor.store(i + 1, Ordering::Relaxed);
            }
            return Ok(lease(&keys.entries[i], now_ms));
        }
        if let Some(i) = fallback {
            return Ok(lease(&keys.entries[i], now_ms));
        }
        // Nothing usable: say when the soonest cooling key is back, or that none is enabled.
        let soonest = keys
            .entries
            .iter()
            .filter_map(|e| e.blocked_until(model, hash, now, now_ms).flatten())
            .min();
        Err(match soonest {
            Some(until) => NoKey::CoolingDown {
                retry_after: until.saturating_duration_since(now),
            },
            None => NoKey::NoneEnabled,
        })
    }

    fn find(&self, id: &KeyId) -> Option<Arc<KeyEntry>> {
        let keys = self.inner.keys.load();
        keys.index.get(id).map(|&i| keys.entries[i].clone())
    }

    /// Adds keys (weight 1) while serving. In-flight requests are not disturbed.
    pub fn add<I: IntoIterator<Item = ApiKey>>(&self, keys: I) -> AddReport {
        self.add_weighted(keys.into_iter().map(|k| (k, 1)))
    }

    /// Adds keys with selection weights.
    pub fn add_weighted<I: IntoIterator<Item = (ApiKey, u32)>>(&self, keys: I) -> AddReport {
        let mut report = AddReport::default();
        let mut added = Vec::new();
        let keys: Vec<_> = keys.into_iter().collect();
        self.inner.keys.rcu(|current| {
            report = AddReport::default();
            added.clear();
            let mut entries = current.entries.clone();
            let mut seen: HashSet<KeyId> = current.index.keys().cloned().collect();
            for (key, weight) in &keys {
                if seen.insert(key.id().clone()) {
                    report.added.push(key.id().clone());
                    let entry = Arc::new(KeyEntry::new(
                        key.clone(),
                        *weight,
                        self.inner.shared.clone(),
                    ));
                    added.push(entry.clone());
                    entries.push(entry);
                } else {
                    report.duplicates.push(key.id().clone());
                }
            }
            Keys::build(entries)
        });
        for entry in added {
            entry.notify();
        }
        report
    }

    /// Removes keys while serving; returns the ids that were present. Requests already using a
    /// removed key finish normally.
    pub fn remove(&self, ids: &[KeyId]) -> Vec<KeyId> {
        let wanted: HashSet<&KeyId> = ids.iter().collect();
        let mut removed = Vec::new();
        self.inner.keys.rcu(|current| {
            removed.clear();
            let entries = current
                .entries
                .iter()
                .filter(|e| {
                    let gone = wanted.contains(e.key.id());
                    if gone {
                        removed.push(e.key.id().clone());
                    }
                    !gone
                })
                .cloned()
                .collect();
            Keys::build(entries)
        });
        if let Some(observer) = self.inner.shared.observer() {
            for id in &removed {
                observer.key_removed(id);
            }
        }
        removed
    }

    /// The key with this id, if present (for probes and admin tools that must use the secret).
    pub fn key(&self, id: &KeyId) -> Option<ApiKey> {
        self.find(id).map(|e| e.key.clone())
    }

    /// Every key's id, in pool order.
    pub fn ids(&self) -> Vec<KeyId> {
        self.inner
            .keys
            .load()
            .entries
            .iter()
            .map(|e| e.key.id().clone())
            .collect()
    }

    /// Brings keys back to active with no failures and no cooldowns; returns how many were found.
    pub fn reset(&self, ids: &[KeyId]) -> usize {
        ids.iter()
            .filter_map(|id| self.find(id))
            .map(|e| e.reset())
            .count()
    }

    /// Resets every key.
    pub fn reset_all(&self) -> usize {
        let keys = self.inner.keys.load();
        keys.entries.iter().for_each(|e| e.reset());
        keys.entries.len()
    }

    /// Disables a key by hand; returns `false` if it is not in the pool.
    pub fn disable(&self, id: &KeyId) -> bool {
        match self.find(id) {
            Some(entry) => {
                entry.disable(DisabledReason::Manual);
                true
            }
            None => false,
        }
    }

    /// Disables a key for `reason` (a change learned from another instance); `false` if it is
    /// not in the pool.
    pub(crate) fn disable_because(&self, id: &KeyId, reason: DisabledReason) -> bool {
        match self.find(id) {
            Some(entry) => {
                entry.disable(reason);
                true
            }
            None => false,
        }
    }

    /// Cools a key for `model` until a wall-clock time (a change learned from another
    /// instance); `false` if it is not in the pool.
    pub(crate) fn cool_until(&self, id: &KeyId, model: &str, until: std::time::SystemTime) -> bool {
        match self.find(id) {
            Some(entry) => {
                entry.cool_until(model, until);
                true
            }
            None => false,
        }
    }

    /// A handle that does not keep the pool alive.
    pub(crate) fn downgrade(&self) -> WeakKeyPool {
        WeakKeyPool(Arc::downgrade(&self.inner))
    }

    /// Keys that a periodic re-check should probe: disabled keys and keys with counted
    /// failures. Probe each with a cheap request through a lease from [`probe`](Self::probe)
    /// and report the result with [`KeyLease::report_probe`].
    pub fn keys_to_probe(&self) -> Vec<KeyId> {
        self.inner
            .keys
            .load()
            .entries
            .iter()
            .filter(|e| !e.is_active() || e.has_failures())
            .map(|e| e.key.id().clone())
            .collect()
    }

    /// A lease on a specific key whatever its state, for a probe or a manual verify.
    pub fn probe(&self, id: &KeyId) -> Option<KeyLease> {
        let entry = self.find(id)?;
        let now_ms = self.inner.shared.ms(Instant::now());
        Some(lease(&entry, now_ms))
    }

    /// The state of one key.
    pub fn snapshot(&self, id: &KeyId) -> Option<KeySnapshot> {
        self.find(id).map(|e| e.snapshot())
    }

    /// The state of every key, in pool order.
    pub fn snapshots(&self) -> Vec<KeySnapshot> {
        self.inner
            .keys
            .load()
            .entries
            .iter()
            .map(|e| e.snapshot())
            .collect()
    }

    /// Takes over persisted states (from a [`KeyStateStore`](crate::store::KeyStateStore)) for
    /// the keys of the pool: disabled reasons, failure counts, cooldowns still running, totals.
    /// States of keys not in the pool are ignored. Returns how many keys were restored.
    pub fn restore(&self, states: &[KeySnapshot]) -> usize {
        states
            .iter()
            .filter_map(|state| self.find(&state.id).map(|e| e.restore(state)))
            .count()
    }
}

/// A [`KeyPool`] that does not keep it alive (for what the pool itself holds, such as its
/// observers).
#[derive(Clone)]
pub(crate) struct WeakKeyPool(std::sync::Weak<PoolInner>);

impl WeakKeyPool {
    /// The pool, if it is still there.
    pub(crate) fn upgrade(&self) -> Option<KeyPool> {
        self.0.upgrade().map(|inner| KeyPool { inner })
    }
}

fn lease(entry: &Arc<KeyEntry>, now_ms: u64) -> KeyLease {
    entry.leased(now_ms);
    KeyLease {
        entry: entry.clone(),
    }
}

/// One request's use of one key. Report the outcome with [`report`](Self::report); dropping
/// the lease without a report (a cancelled request) only ends its in-flight count.
pub struct KeyLease {
    entry: Arc<KeyEntry>,
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
        self.entry.record(model.unwrap_or("*"), outcome);
    }

    /// Reports a probe: success brings the key back (clears failures, cooldowns and the
    /// disabled state); failure is recorded like any other attempt.
    pub fn report_probe(self, outcome: &Outcome) {
        if outcome.is_success() {
            self.entry.reset();
        }
        self.report(outcome);
    }
}

impl Drop for KeyLease {
    fn drop(&mut self) {
        self.entry.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
