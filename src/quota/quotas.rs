//! [`Quotas`]: limits by identity and what each used in the current windows, in memory.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;

use super::{LimitKind, Limits, QuotaRow, QuotaUse, Refusal, Window, DEFAULT_ID};

/// Wall time that follows tokio's clock: paused and advanced with it in tests.
#[derive(Debug, Clone, Copy)]
/// The system clock (`None`: a wall-clock step, a resumed VM, is followed at once), or a
/// start time moved on by tokio's clock (tests pause and advance it).
struct Clock {
    started: Option<(SystemTime, tokio::time::Instant)>,
}

impl Clock {
    fn now(&self) -> SystemTime {
        match self.started {
            Some((wall, mono)) => wall + mono.elapsed(),
            None => SystemTime::now(),
        }
    }
}

/// One window's count: what the store said everyone used (`shared`, this instance's flushed
/// use included) and what this instance added since it last flushed (`local`).
#[derive(Debug, Clone, Copy, Default)]
struct Count {
    bucket: i64,
    shared_requests: u64,
    shared_tokens: u64,
    local_requests: u64,
    local_tokens: u64,
}

impl Count {
    fn requests(&self) -> u64 {
        self.shared_requests.saturating_add(self.local_requests)
    }

    fn tokens(&self) -> u64 {
        self.shared_tokens.saturating_add(self.local_tokens)
    }
}

#[derive(Debug, Default)]
struct Entry {
    name: Option<String>,
    limits: Option<Limits>,
    counts: [Count; 3],
}

impl Entry {
    /// Moves every window to `buckets`; a window's unflushed use goes to `pending` first.
    fn roll(&mut self, id: &str, buckets: &[i64; 3], pending: &mut Vec<QuotaUse>) {
        for window in Window::ALL {
            if self.counts[window.index()].bucket != buckets[window.index()] {
                self.roll_one(id, window, buckets[window.index()], pending);
            }
        }
    }

    /// Moves `window` to `bucket`; its unflushed use goes to `pending` first.
    fn roll_one(&mut self, id: &str, window: Window, bucket: i64, pending: &mut Vec<QuotaUse>) {
        let count = &mut self.counts[window.index()];
        if count.local_requests > 0 || count.local_tokens > 0 {
            pending.push(QuotaUse {
                id: id.to_owned(),
                window,
                bucket: count.bucket,
                requests: count.local_requests,
                tokens: count.local_tokens,
            });
        }
        *count = Count {
            bucket,
            ..Count::default()
        };
    }

    /// Nothing of its own (no name, no limits) and no use in the windows of `buckets`: what
    /// a fresh entry would say.
    fn is_idle_at(&self, buckets: &[i64; 3]) -> bool {
        self.name.is_none()
            && self.limits.is_none()
            && Window::ALL.iter().all(|w| {
                let c = &self.counts[w.index()];
                c.bucket != buckets[w.index()] || (c.requests() == 0 && c.tokens() == 0)
            })
    }

    fn is_idle(&self) -> bool {
        self.name.is_none()
            && self.limits.is_none()
            && self
                .counts
                .iter()
                .all(|c| c.requests() == 0 && c.tokens() == 0)
    }
}

#[derive(Debug, Default)]
struct State {
    default: Limits,
    entries: HashMap<Arc<str>, Entry>,
    /// Use of windows that ended before it was flushed.
    pending: Vec<QuotaUse>,
}

impl State {
    fn entry(&mut self, id: &str) -> &mut Entry {
        self.entries.entry(Arc::from(id)).or_default()
    }
}

pub(super) struct Inner {
    clock: Clock,
    state: Mutex<State>,
    /// Bumped by every local edit of limits or names: a store read that started before one
    /// does not overwrite it.
    edits: AtomicU64,
    /// One exchange with the store at a time.
    pub(super) syncing: tokio::sync::Mutex<()>,
    /// Set by the first exchange with a store: until then nothing would ever take the use of
    /// ended windows, so it is not kept, and idle identities are forgotten now and then.
    pub(super) synced: std::sync::atomic::AtomicBool,
}

/// Without a store, identities are looked over for idle ones once this many are held.
const PRUNE_AT: usize = 4096;

/// Limits by identity (a client token's id, a user, a tenant: whatever string you key
/// [`QuotaLayer`](super::QuotaLayer) by), a default for every identity without its own, and
/// each identity's use of the current minute, day and month.
///
/// Everything is in memory: [`admit`](Self::admit) and [`charge`](Self::charge) take a lock
/// for a few map operations and never wait for I/O. A [`QuotaStore`](super::QuotaStore) keeps
/// limits, names and use across restarts and shares them between instances
/// ([`sync`](Self::sync)). Cloning shares the same state.
#[derive(Clone)]
pub struct Quotas {
    pub(super) inner: Arc<Inner>,
}

impl fmt::Debug for Quotas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("Quotas")
            .field("default", &state.default)
            .field("identities", &state.entries.len())
            .finish()
    }
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas::new(Limits::default())
    }
}

/// One identity's limits and use, as [`Quotas::status`] reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct QuotaStatus {
    /// The identity.
    pub id: String,
    /// The name an admin gave it.
    pub name: Option<String>,
    /// Its own limits; `None` when the default applies.
    pub limits: Option<Limits>,
    /// The limits that apply (its own, or the default).
    pub effective: Limits,
    /// Its use of the current windows.
    pub used: Used,
}

/// Use of the current windows (every instance's, as of the last exchange with the store, plus
/// this instance's since).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Used {
    /// Requests let in this minute.
    pub requests_minute: u64,
    /// Tokens this minute.
    pub tokens_minute: u64,
    /// Requests let in today (UTC).
    pub requests_day: u64,
    /// Tokens today (UTC).
    pub tokens_day: u64,
    /// Requests let in this month (UTC).
    pub requests_month: u64,
    /// Tokens this month (UTC).
    pub tokens_month: u64,
}

impl Quotas {
    /// Quotas with `default` for every identity (no limit: `Limits::default()`).
    pub fn new(default: Limits) -> Self {
        Quotas::with_clock(default, Clock { started: None })
    }

    /// The same, its clock starting at `now` (then following tokio's clock: tests pause and
    /// advance it).
    pub fn starting_at(default: Limits, now: SystemTime) -> Self {
        let started = Some((now, tokio::time::Instant::now()));
        Quotas::with_clock(default, Clock { started })
    }

    fn with_clock(default: Limits, clock: Clock) -> Self {
        Quotas {
            inner: Arc::new(Inner {
                clock,
                state: Mutex::new(State {
                    default,
                    ..State::default()
                }),
                edits: AtomicU64::new(0),
                syncing: tokio::sync::Mutex::new(()),
                synced: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Ended windows' use waiting for an exchange, and the identities held (tests).
    #[cfg(test)]
    pub(super) fn held(&self) -> (usize, usize) {
        let state = self.state();
        (state.pending.len(), state.entries.len())
    }

    /// The time the windows are counted in.
    pub fn now(&self) -> SystemTime {
        self.inner.clock.now()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held left counters, never a broken invariant.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn buckets(&self) -> (SystemTime, [i64; 3]) {
        let now = self.now();
        (now, Window::ALL.map(|w| w.bucket(now)))
    }

    /// Lets a request of `id` in (counting it), or says which limit is reached and when its
    /// window frees. Tokens are checked against what earlier answers used.
    pub fn admit(&self, id: &str) -> Result<(), Refusal> {
        let (now, buckets) = self.buckets();
        let mut state = self.state();
        let default = state.default;
        let synced = self.inner.synced.load(std::sync::atomic::Ordering::Relaxed);
        let State {
            entries, pending, ..
        } = &mut *state;
        // Without a store, ended windows' use goes nowhere (and nothing would ever empty
        // `pending`), and idle identities are forgotten once many are held.
        let mut unsent = Vec::new();
        let pending = if synced {
            pending
        } else {
            if entries.len() >= PRUNE_AT && !entries.contains_key(id) {
                entries.retain(|_, e| !e.is_idle_at(&buckets));
            }
            &mut unsent
        };
        // Counted even without a limit: the admin sees the use, and a limit set later counts
        // what came before it in its window.
        let entry = match entries.get_mut(id) {
            Some(entry) => entry,
            None => entries.entry(Arc::from(id)).or_default(),
        };
        entry.roll(id, &buckets, pending);
        let limits = entry.limits.unwrap_or(default);
        let [minute, day, month] = &entry.counts;
        let checks = [
            (
                LimitKind::RequestsPerMinute,
                limits.requests_per_minute,
                minute.requests(),
            ),
            (
                LimitKind::TokensPerMinute,
                limits.tokens_per_minute,
                minute.tokens(),
            ),
            (LimitKind::TokensPerDay, limits.tokens_per_day, day.tokens()),
            (
                LimitKind::TokensPerMonth,
                limits.tokens_per_month,
                month.tokens(),
            ),
        ];
        // The longest wait among the full windows: sooner, the request would be refused again.
        let refusal = checks
            .into_iter()
            .filter_map(|(kind, limit, used)| {
                let limit = limit?;
                (used >= limit).then(|| Refusal {
                    kind,
                    limit,
                    retry_after: kind.window().remaining(now),
                })
            })
            .max_by_key(|r| r.retry_after);
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        for count in &mut entry.counts {
            count.local_requests += 1;
        }
        Ok(())
    }

    /// Counts `tokens` (an answer's total) against `id`'s windows.
    pub fn charge(&self, id: &str, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let (_, buckets) = self.buckets();
        let synced = self.inner.synced.load(std::sync::atomic::Ordering::Relaxed);
        let mut state = self.state();
        let State {
            entries, pending, ..
        } = &mut *state;
        let mut unsent = Vec::new();
        let pending = if synced { pending } else { &mut unsent };
        let entry = match entries.get_mut(id) {
            Some(entry) => entry,
            None => entries.entry(Arc::from(id)).or_default(),
        };
        entry.roll(id, &buckets, pending);
        for count in &mut entry.counts {
            count.local_tokens = count.local_tokens.saturating_add(tokens);
        }
    }

    /// The limits of every identity without its own.
    pub fn default_limits(&self) -> Limits {
        self.state().default
    }

    /// Sets what the store row `row` says (limits and name of one identity, or the default
    /// when its id is [`DEFAULT_ID`]), here only: [`save`](Self::save) also keeps it.
    pub fn apply(&self, row: QuotaRow) {
        self.inner.edits.fetch_add(1, Ordering::SeqCst);
        let mut state = self.state();
        Self::apply_row(&mut state, row);
    }

    fn apply_row(state: &mut State, row: QuotaRow) {
        if row.id == DEFAULT_ID {
            state.default = row.limits.unwrap_or_default();
            return;
        }
        let entry = state.entry(&row.id);
        entry.name = row.name;
        entry.limits = row.limits;
    }

    /// The store row of `id` as it is here (its name and own limits; the default's limits for
    /// [`DEFAULT_ID`]).
    pub fn row(&self, id: &str) -> QuotaRow {
        let state = self.state();
        if id == DEFAULT_ID {
            return QuotaRow {
                id: DEFAULT_ID.to_owned(),
                name: None,
                limits: Some(state.default).filter(|l| !l.is_unlimited()),
            };
        }
        let entry = state.entries.get(id);
        QuotaRow {
            id: id.to_owned(),
            name: entry.and_then(|e| e.name.clone()),
            limits: entry.and_then(|e| e.limits),
        }
    }

    /// The name given to `id`.
    pub fn name(&self, id: &str) -> Option<String> {
        self.state().entries.get(id).and_then(|e| e.name.clone())
    }

    /// Every name given, by identity.
    pub fn names(&self) -> HashMap<String, String> {
        self.state()
            .entries
            .iter()
            .filter_map(|(id, e)| Some((id.to_string(), e.name.clone()?)))
            .collect()
    }

    /// Every identity known here (named, limited, or with use in a current window).
    pub fn ids(&self) -> Vec<String> {
        let (_, buckets) = self.buckets();
        let state = self.state();
        let mut ids: Vec<String> = state
            .entries
            .iter()
            .filter(|(_, e)| {
                e.name.is_some()
                    || e.limits.is_some()
                    || e.counts
                        .iter()
                        .zip(buckets)
                        .any(|(c, b)| c.bucket == b && (c.requests() > 0 || c.tokens() > 0))
            })
            .map(|(id, _)| id.to_string())
            .collect();
        ids.sort();
        ids
    }

    /// `id`'s limits and use of the current windows.
    pub fn status(&self, id: &str) -> QuotaStatus {
        let (_, buckets) = self.buckets();
        let state = self.state();
        let entry = state.entries.get(id);
        let current = |w: Window| {
            entry
                .map(|e| e.counts[w.index()])
                .filter(|c| c.bucket == buckets[w.index()])
                .unwrap_or_default()
        };
        let (minute, day, month) = (
            current(Window::Minute),
            current(Window::Day),
            current(Window::Month),
        );
        let limits = entry.and_then(|e| e.limits);
        QuotaStatus {
            id: id.to_owned(),
            name: entry.and_then(|e| e.name.clone()),
            limits,
            effective: limits.unwrap_or(state.default),
            used: Used {
                requests_minute: minute.requests(),
                tokens_minute: minute.tokens(),
                requests_day: day.requests(),
                tokens_day: day.tokens(),
                requests_month: month.requests(),
                tokens_month: month.tokens(),
            },
        }
    }

    /// The current window of each kind.
    pub(super) fn current_buckets(&self) -> [(Window, i64); 3] {
        let (_, buckets) = self.buckets();
        Window::ALL.map(|w| (w, buckets[w.index()]))
    }

    /// Takes this instance's unflushed use (it is then counted as shared until the store
    /// answers).
    pub(super) fn take_local(&self) -> Vec<QuotaUse> {
        let mut state = self.state();
        let mut out = std::mem::take(&mut state.pending);
        for (id, entry) in &mut state.entries {
            for window in Window::ALL {
                let count = &mut entry.counts[window.index()];
                if count.local_requests == 0 && count.local_tokens == 0 {
                    continue;
                }
                out.push(QuotaUse {
                    id: id.to_string(),
                    window,
                    bucket: count.bucket,
                    requests: count.local_requests,
                    tokens: count.local_tokens,
                });
                count.shared_requests = count.shared_requests.saturating_add(count.local_requests);
                count.shared_tokens = count.shared_tokens.saturating_add(count.local_tokens);
                count.local_requests = 0;
                count.local_tokens = 0;
            }
        }
        out
    }

    /// Gives back use that could not be flushed: it is sent again next time.
    pub(super) fn give_back(&self, taken: Vec<QuotaUse>) {
        let mut state = self.state();
        for use_ in taken {
            let count = state
                .entries
                .get_mut(use_.id.as_str())
                .map(|e| &mut e.counts[use_.window.index()])
                .filter(|c| c.bucket == use_.bucket);
            match count {
                Some(count) => {
                    count.shared_requests = count.shared_requests.saturating_sub(use_.requests);
                    count.shared_tokens = count.shared_tokens.saturating_sub(use_.tokens);
                    count.local_requests += use_.requests;
                    count.local_tokens = count.local_tokens.saturating_add(use_.tokens);
                }
                None => state.pending.push(use_),
            }
        }
    }

    /// Takes the totals the store holds for `current` windows (every instance's use, this
    /// one's flushed use included); a window with no row had no use.
    pub(super) fn set_shared(&self, current: &[(Window, i64); 3], totals: Vec<QuotaUse>) {
        let mut by_id: HashMap<String, [Option<(u64, u64)>; 3]> = HashMap::new();
        for total in totals {
            if current.contains(&(total.window, total.bucket)) {
                by_id.entry(total.id).or_default()[total.window.index()] =
                    Some((total.requests, total.tokens));
            }
        }
        let mut state = self.state();
        let State {
            entries, pending, ..
        } = &mut *state;
        for (id, entry) in entries.iter_mut() {
            let totals = by_id.remove(&**id).unwrap_or_default();
            for (window, bucket) in current {
                let count = &mut entry.counts[window.index()];
                if count.bucket > *bucket {
                    // A window that began while the store answered: its own totals come next time.
                    continue;
                }
                if count.bucket < *bucket {
                    // Not used here since its window ended: the others' use of this one counts.
                    entry.roll_one(id, *window, *bucket, pending);
                }
                let count = &mut entry.counts[window.index()];
                let (requests, tokens) = totals[window.index()].unwrap_or((0, 0));
                count.shared_requests = requests;
                count.shared_tokens = tokens;
            }
        }
        for (id, totals) in by_id {
            let entry = state.entry(&id);
            for (window, bucket) in current {
                if let Some((requests, tokens)) = totals[window.index()] {
                    entry.counts[window.index()] = Count {
                        bucket: *bucket,
                        shared_requests: requests,
                        shared_tokens: tokens,
                        ..Count::default()
                    };
                }
            }
        }
        // Identities with nothing left to say are forgotten (a library user's identities
        // may be many).
        state.entries.retain(|_, e| !e.is_idle());
    }

    /// The number of local edits so far.
    pub(super) fn edits(&self) -> u64 {
        self.inner.edits.load(Ordering::SeqCst)
    }

    /// Replaces every limit and name with the store's `rows`, unless an edit was made here
    /// since `edits_before` (the store read may predate it; the next read has it).
    pub(super) fn set_rows(&self, rows: Vec<QuotaRow>, edits_before: u64) -> bool {
        let mut state = self.state();
        if self.edits() != edits_before {
            return false;
        }
        state.default = Limits::default();
        for entry in state.entries.values_mut() {
            entry.name = None;
            entry.limits = None;
        }
        for row in rows {
            Self::apply_row(&mut state, row);
        }
        true
    }
}
