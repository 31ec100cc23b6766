//! [`SharedKeys`]: publishes the pool's lasting changes, applies the others', without echo.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::event::{Change, SharedEvent, Stamp};
use super::feed::{FeedEntry, KeyStateFeed};
use super::KeySealer;
use crate::fingerprint::KeyId;
use crate::keys::{ApiKey, KeyObserver, KeyPool, KeySnapshot, KeyStatus, WeakKeyPool};

/// Cooldown ends closer than this are the same cooldown (wall/monotonic conversions round).
const TOLERANCE_MS: u64 = 1000;
/// How long a hole in the sequence is re-read: an insert that took a number but had not yet
/// committed when a later one was read.
const GAP_WAIT: Duration = Duration::from_secs(10);
/// Holes larger than this are deleted events, not transactions in flight.
const MAX_GAPS: u64 = 1000;
/// Events stamped further ahead than this are ignored: a clock that far off (or a forged row)
/// would otherwise win every conflict and push this instance's clock out of range.
const FUTURE_MS: u64 = 24 * 60 * 60 * 1000;
/// Retry delays after a failed read.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

thread_local! {
    /// The [`Inner`] applying a remote change on this thread: its own observer stays quiet.
    static APPLYING: Cell<usize> = const { Cell::new(0) };
}

/// Key state shared by every instance: this instance's lasting key changes go out through a
/// [`KeyStateFeed`], the others' come in and are applied to the local [`KeyPool`].
///
/// The request path never waits on the network: it reads the local pool; a change it makes is
/// queued by the feed. A background task reads the feed (woken by a notification or a bounded
/// poll) and applies each event the others published, once, in stamp order (the later change of
/// a key wins everywhere, whatever order the events arrive in). Applied changes are not
/// published again. See `docs/scale-out.md`.
///
/// Dropping every clone of the pool stops the task.
#[derive(Clone)]
pub struct SharedKeys {
    inner: Arc<Inner>,
}

impl fmt::Debug for SharedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKeys")
            .field("origin", &format_args!("{:016x}", self.inner.origin))
            .field("applied", &self.applied())
            .finish()
    }
}

/// Options of [`SharedKeys`].
pub struct SharedKeysBuilder {
    pool: KeyPool,
    sealer: Option<Arc<dyn KeySealer>>,
    retain: Duration,
    prune_every: Duration,
}

impl fmt::Debug for SharedKeysBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKeysBuilder")
            .field("sealer", &self.sealer.is_some())
            .field("retain", &self.retain)
            .field("prune_every", &self.prune_every)
            .finish()
    }
}

impl SharedKeysBuilder {
    /// Seals added keys for the other instances and opens theirs. Without a sealer, a key added
    /// here serves only here (the others learn its id, never the secret).
    pub fn sealer(mut self, sealer: Arc<dyn KeySealer>) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// How long events are kept at least before a superseded one is deleted (default 10 min):
    /// an instance cut off for longer still ends in the same state, but may miss setting changes.
    pub fn retain(mut self, retain: Duration) -> Self {
        self.retain = retain;
        self
    }

    /// How often this instance deletes superseded events (default every minute; `Duration::ZERO`:
    /// never).
    pub fn prune_every(mut self, every: Duration) -> Self {
        self.prune_every = every;
        self
    }

    /// Catches up with the feed (the shared state wins over the local one), then keeps
    /// following it and publishing this pool's changes. If the feed cannot be read now, the
    /// pool serves from its local state and catches up when it can.
    ///
    /// Start it after restoring the pool from a local store and after
    /// [`KeyPool::set_observer`] (which replaces every observer, this one too); it joins the
    /// pool's observers with [`KeyPool::add_observer`]. Needs a Tokio runtime.
    pub async fn start<F: KeyStateFeed>(self, feed: F) -> SharedKeys {
        let feed = Arc::new(feed);
        let publisher = feed.clone();
        let flusher = feed.clone();
        let (settings, _) = broadcast::channel(64);
        let (changes, _) = broadcast::channel(256);
        let inner = Arc::new(Inner {
            pool: self.pool.downgrade(),
            origin: loop {
                let origin = fastrand::u64(..);
                if origin != 0 {
                    break origin;
                }
            },
            publish: Box::new(move |event| publisher.publish(event)),
            flush: Box::new(move || {
                let feed = flusher.clone();
                Box::pin(async move { feed.flush().await })
            }),
            sealer: self.sealer,
            state: Mutex::new(State::default()),
            settings,
            changes,
            applied: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
            warned_future: AtomicBool::new(false),
        });
        inner.seed(&self.pool);
        self.pool.add_observer(Arc::new(Publisher(inner.clone())));
        let mut reader = Reader::default();
        if let Err(e) = catch_up(&inner, &*feed, &mut reader).await {
            inner.read_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "shared key state unreachable at startup; serving from local state until it is back");
        }
        let task = follow(inner.clone(), feed, reader, self.retain, self.prune_every);
        tokio::spawn(task);
        SharedKeys { inner }
    }
}

impl SharedKeys {
    /// Options for sharing `pool`'s state; then [`start`](SharedKeysBuilder::start).
    pub fn builder(pool: KeyPool) -> SharedKeysBuilder {
        SharedKeysBuilder {
            pool,
            sealer: None,
            retain: Duration::from_secs(600),
            prune_every: Duration::from_secs(60),
        }
    }

    /// Shares `pool`'s state through `feed` with the default options.
    pub async fn start<F: KeyStateFeed>(pool: KeyPool, feed: F) -> SharedKeys {
        Self::builder(pool).start(feed).await
    }

    /// Tells the other instances that the live setting `name` changed (they re-read it).
    pub fn setting_changed(&self, name: &str) {
        let event = self.inner.local_event(Change::Setting {
            name: name.to_owned(),
        });
        (self.inner.publish)(event);
    }

    /// Every change from another instance applied here, as it is applied (for what keeps its
    /// own copy of the key list, such as a proxy's `API_KEYS` setting).
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// The names of settings other instances changed, as they arrive.
    pub fn settings(&self) -> broadcast::Receiver<String> {
        self.inner.settings.subscribe()
    }

    /// Waits until this instance's changes published so far are stored (at shutdown, so that
    /// the other instances learn of the last ones), at most `within`; `false` if some were not
    /// stored by then (the database away).
    pub async fn flush(&self, within: Duration) -> bool {
        tokio::time::timeout(within, (self.inner.flush)())
            .await
            .is_ok()
    }

    /// This instance's id in the events (random per start).
    pub fn origin(&self) -> u64 {
        self.inner.origin
    }

    /// Events from other instances applied so far.
    pub fn applied(&self) -> u64 {
        self.inner.applied.load(Ordering::Relaxed)
    }

    /// Reads of the feed that failed so far (the database unreachable).
    pub fn read_errors(&self) -> u64 {
        self.inner.read_errors.load(Ordering::Relaxed)
    }
}

struct Inner {
    pool: WeakKeyPool,
    origin: u64,
    publish: Box<dyn Fn(SharedEvent) + Send + Sync>,
    flush: Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>,
    sealer: Option<Arc<dyn KeySealer>>,
    state: Mutex<State>,
    settings: broadcast::Sender<String>,
    changes: broadcast::Sender<Change>,
    applied: AtomicU64,
    read_errors: AtomicU64,
    /// An event stamped too far ahead was logged.
    warned_future: AtomicBool,
}

#[derive(Default)]
struct State {
    /// A Lamport clock: above every stamp seen, so a change made here after seeing another
    /// one is ordered after it even when the clocks disagree.
    clock: u64,
    keys: HashMap<KeyId, View>,
}

/// What the others know of one key, as far as this instance knows.
#[derive(Default)]
struct View {
    /// In the local pool.
    present: bool,
    disabled: bool,
    /// Model → (until, stamp of the change).
    cooldowns: HashMap<String, (u64, Stamp)>,
    /// The last disable, reset, add or remove.
    status: Stamp,
    /// The last reset, add or remove (they clear cooldowns made before them).
    cleared: Stamp,
}

impl View {
    fn clear(&mut self, stamp: Stamp) {
        self.disabled = false;
        self.cooldowns.retain(|_, (_, made)| *made > stamp);
        self.status = stamp;
        self.cleared = stamp;
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ms_of(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every write under this lock leaves the maps consistent, so a poisoned lock is sound.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn id(&self) -> usize {
        self as *const Inner as usize
    }

    fn next_stamp(&self, state: &mut State) -> Stamp {
        state.clock = now_ms().max(state.clock.saturating_add(1));
        Stamp {
            at_ms: state.clock,
            origin: self.origin,
        }
    }

    fn local_event(&self, change: Change) -> SharedEvent {
        let stamp = self.next_stamp(&mut self.state());
        SharedEvent {
            origin: self.origin,
            at_ms: stamp.at_ms,
            change,
        }
    }

    /// The pool's state before any event: stamped zero, so any shared change wins over it.
    fn seed(&self, pool: &KeyPool) {
        let mut state = self.state();
        for snapshot in pool.snapshots() {
            let view = state.keys.entry(snapshot.id.clone()).or_default();
            view.present = true;
            match &snapshot.status {
                KeyStatus::Disabled(_) => view.disabled = true,
                KeyStatus::CoolingDown(list) => {
                    for c in list {
                        view.cooldowns
                            .insert(c.model.clone(), (ms_of(c.until), Stamp::default()));
                    }
                }
                _ => {}
            }
        }
    }

    /// A local change: compares the key's state now with what the others know, and publishes
    /// the difference.
    fn local_change(&self, id: &KeyId) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let mut events = Vec::new();
        {
            let mut state = self.state();
            // Read under the lock: a remote change being applied is either all in or not yet.
            let Some(current) = pool.snapshot(id) else {
                return;
            };
            let now = now_ms();
            let mut changes = Vec::new();
            let view = state.keys.entry(id.clone()).or_default();
            if !view.present {
                view.present = true;
                view.disabled = false;
                view.cooldowns.clear();
                let sealed = match (&self.sealer, pool.key(id)) {
                    (Some(sealer), Some(key)) => sealer.seal(key.expose_secret()),
                    _ => None,
                };
                changes.push(Change::Added {
                    key: id.clone(),
                    sealed,
                });
            }
            match &current.status {
                KeyStatus::Disabled(reason) => {
                    if !view.disabled {
                        view.disabled = true;
                        changes.push(Change::Disabled {
                            key: id.clone(),
                            reason: reason.clone(),
                        });
                    }
                }
                status => {
                    let list: &[crate::keys::ModelCooldown] = match status {
                        KeyStatus::CoolingDown(list) => list,
                        _ => &[],
                    };
                    view.cooldowns.retain(|_, (until, _)| *until > now);
                    let vanished = view.cooldowns.iter().any(|(model, (until, _))| {
                        *until > now + TOLERANCE_MS && !list.iter().any(|c| &c.model == model)
                    });
                    if view.disabled || vanished {
                        view.disabled = false;
                        view.cooldowns.clear();
                        changes.push(Change::Reset { key: id.clone() });
                    }
                    for c in list {
                        let until = ms_of(c.until);
                        let known = view.cooldowns.get(&c.model).map(|(u, _)| *u);
                        if known.is_none_or(|u| until > u + TOLERANCE_MS) {
                            changes.push(Change::Cooled {
                                key: id.clone(),
                                model: c.model.clone(),
                                until_ms: until,
                            });
                        }
                    }
                }
            }
            for change in changes {
                let stamp = self.next_stamp(&mut state);
                let view = state.keys.entry(id.clone()).or_default();
                match &change {
                    Change::Added { .. } | Change::Reset { .. } => {
                        view.status = stamp;
                        view.cleared = stamp;
                    }
                    Change::Disabled { .. } => view.status = stamp,
                    Change::Cooled {
                        model, until_ms, ..
                    } => {
                        view.cooldowns.insert(model.clone(), (*until_ms, stamp));
                    }
                    _ => {}
                }
                events.push(SharedEvent {
                    origin: self.origin,
                    at_ms: stamp.at_ms,
                    change,
                });
            }
        }
        for event in events {
            (self.publish)(event);
        }
    }

    fn local_removal(&self, id: &KeyId) {
        let event = {
            let mut state = self.state();
            let present = state.keys.get(id).is_some_and(|v| v.present);
            if !present {
                return;
            }
            let stamp = self.next_stamp(&mut state);
            let view = state.keys.entry(id.clone()).or_default();
            view.present = false;
            view.clear(stamp);
            view.cooldowns.clear();
            SharedEvent {
                origin: self.origin,
                at_ms: stamp.at_ms,
                change: Change::Removed { key: id.clone() },
            }
        };
        (self.publish)(event);
    }

    /// Applies the others' events, in order, to the pool.
    ///
    /// The state lock is taken per event, so a local change on the request path waits for one
    /// event at most. Added keys are gathered and added in one go (each addition rebuilds the
    /// pool's key list), before any later event about one of them and at the end; what
    /// subscribers hear waits for them, so a key announced as added is in the pool.
    fn apply_all(&self, entries: Vec<FeedEntry>) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let previous = APPLYING.with(|a| a.replace(self.id()));
        let mut adding = Adding::default();
        let horizon = now_ms().saturating_add(FUTURE_MS);
        for entry in entries {
            if entry.event.origin == self.origin {
                continue;
            }
            if entry.event.at_ms > horizon {
                if !self.warned_future.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        origin = %format_args!("{:016x}", entry.event.origin),
                        at_ms = entry.event.at_ms,
                        "a shared key event is stamped more than a day ahead (a clock far off?); such events are ignored"
                    );
                }
                continue;
            }
            let mut state = self.state();
            if entry
                .event
                .change
                .key()
                .is_some_and(|k| adding.ids.contains(k))
            {
                adding.flush(&pool, &self.changes);
            }
            state.clock = state.clock.max(entry.event.at_ms);
            let change = (self.changes.receiver_count() > 0).then(|| entry.event.change.clone());
            if self.apply(&pool, &mut state, entry.event, &mut adding) {
                self.applied.fetch_add(1, Ordering::Relaxed);
                if let Some(change) = change {
                    if adding.ids.is_empty() {
                        let _ = self.changes.send(change);
                    } else {
                        adding.heard.push(change);
                    }
                }
            }
        }
        if !adding.ids.is_empty() {
            let _state = self.state();
            adding.flush(&pool, &self.changes);
        }
        APPLYING.with(|a| a.set(previous));
    }

    /// One remote event; `true` if it changed something here.
    fn apply(
        &self,
        pool: &KeyPool,
        state: &mut State,
        event: SharedEvent,
        adding: &mut Adding,
    ) -> bool {
        let stamp = event.stamp();
        let change = event.change;
        if let Change::Setting { name } = change {
            let _ = self.settings.send(name);
            return true;
        }
        let Some(key) = change.key().cloned() else {
            return false;
        };
        let view = state.keys.entry(key.clone()).or_default();
        match change {
            Change::Disabled { reason, .. } => {
                if stamp <= view.status {
                    return false;
                }
                view.status = stamp;
                view.disabled = true;
                pool.disable_because(&key, reason);
            }
            Change::Cooled {
                model, until_ms, ..
            } => {
                if stamp <= view.cleared || until_ms <= now_ms() {
                    return false;
                }
                let slot = view.cooldowns.entry(model.clone()).or_insert((0, stamp));
                if until_ms <= slot.0 {
                    slot.1 = slot.1.max(stamp);
                    return false;
                }
                *slot = (until_ms, stamp);
                pool.cool_until(&key, &model, UNIX_EPOCH + Duration::from_millis(until_ms));
            }
            Change::Reset { .. } => {
                if stamp <= view.status {
                    return false;
                }
                view.clear(stamp);
                pool.reset(std::slice::from_ref(&key));
                // Cooldowns made after the reset (arrived before it) hold.
                for (model, (until, _)) in &view.cooldowns {
                    pool.cool_until(&key, model, UNIX_EPOCH + Duration::from_millis(*until));
                }
            }
            Change::Added { sealed, .. } => {
                if stamp <= view.status {
                    return false;
                }
                view.clear(stamp);
                view.cooldowns.clear();
                if pool.key(&key).is_some() {
                    pool.reset(std::slice::from_ref(&key));
                    view.present = true;
                } else {
                    let secret = sealed
                        .as_deref()
                        .and_then(|s| self.sealer.as_ref().and_then(|sealer| sealer.open(s)));
                    match secret.as_deref().map(ApiKey::new) {
                        Some(Ok(api_key)) if api_key.id() == &key => {
                            adding.ids.insert(key.clone());
                            adding.keys.push(api_key);
                            view.present = true;
                        }
                        _ => {
                            tracing::info!(key = %key, "a key added on another instance cannot be added here (no sealing key, or a different one)");
                            view.present = false;
                        }
                    }
                }
            }
            Change::Removed { .. } => {
                if stamp <= view.status {
                    return false;
                }
                view.clear(stamp);
                view.cooldowns.clear();
                view.present = false;
                pool.remove(std::slice::from_ref(&key));
            }
            Change::Setting { .. } => return false,
        }
        true
    }
}

/// Keys opened from `Added` events, not yet in the pool, and what subscribers hear after them.
#[derive(Default)]
struct Adding {
    ids: HashSet<KeyId>,
    keys: Vec<ApiKey>,
    heard: Vec<Change>,
}

impl Adding {
    /// Adds the keys in one go (under the state lock), then tells the subscribers.
    fn flush(&mut self, pool: &KeyPool, changes: &broadcast::Sender<Change>) {
        pool.add(std::mem::take(&mut self.keys));
        self.ids.clear();
        for change in self.heard.drain(..) {
            let _ = changes.send(change);
        }
    }
}

/// The pool's observer: turns local changes into events.
struct Publisher(Arc<Inner>);

impl Publisher {
    fn quiet(&self) -> bool {
        APPLYING.with(|a| a.get()) == self.0.id()
    }
}

impl KeyObserver for Publisher {
    fn key_changed(&self, state: KeySnapshot) {
        if !self.quiet() {
            self.0.local_change(&state.id);
        }
    }

    fn key_removed(&self, id: &KeyId) {
        if !self.quiet() {
            self.0.local_removal(id);
        }
    }
}

/// Where reading stands: the highest sequence seen, and holes below it that may still fill.
#[derive(Default)]
struct Reader {
    cursor: u64,
    gaps: BTreeMap<u64, Instant>,
    /// Caught up once: holes in what was there at the start are pruned events, not waited for.
    started: bool,
}

impl Reader {
    /// The holes still waited for, as the range `(after, last]` that covers them.
    fn gap_range(&mut self) -> Option<(u64, u64)> {
        let now = Instant::now();
        self.gaps.retain(|_, deadline| *deadline > now);
        let first = *self.gaps.keys().next()?;
        let last = *self.gaps.keys().next_back()?;
        Some((first - 1, last))
    }

    /// The entries not seen before.
    fn take(&mut self, entries: Vec<FeedEntry>) -> Vec<FeedEntry> {
        let now = Instant::now();
        self.gaps.retain(|_, deadline| *deadline > now);
        let mut fresh = Vec::with_capacity(entries.len());
        for entry in entries {
            if entry.seq > self.cursor {
                let hole = entry.seq - self.cursor - 1;
                if self.started && hole > 0 && hole <= MAX_GAPS {
                    for seq in self.cursor + 1..entry.seq {
                        self.gaps.insert(seq, now + GAP_WAIT);
                    }
                }
                self.cursor = entry.seq;
                fresh.push(entry);
            } else if self.gaps.remove(&entry.seq).is_some() {
                fresh.push(entry);
            }
        }
        fresh
    }
}

/// Reads until the feed has nothing newer, applying as it goes, then reads the holes again.
///
/// The tail is read after the cursor, so every read that returns something moves it on (a hole
/// left by pruning never makes the same batch come back), whatever batch size the transport
/// chose; the holes are read once per call, from the first to the last. Holes in what was
/// stored before the first catch-up are pruned events: they are not waited for.
async fn catch_up<F: KeyStateFeed>(
    inner: &Inner,
    feed: &F,
    reader: &mut Reader,
) -> Result<(), super::FeedError> {
    loop {
        let entries = feed.read_after(reader.cursor).await?;
        if entries.is_empty() {
            break;
        }
        let fresh = reader.take(entries);
        inner.apply_all(fresh);
    }
    reader.started = true;
    let Some((mut after, last)) = reader.gap_range() else {
        return Ok(());
    };
    while after < last {
        let mut entries = feed.read_after(after).await?;
        let Some(end) = entries.last().map(|e| e.seq) else {
            break;
        };
        // Past the last hole is the tail's, read next time.
        entries.retain(|e| e.seq <= last);
        let fresh = reader.take(entries);
        inner.apply_all(fresh);
        after = end;
    }
    Ok(())
}

async fn follow<F: KeyStateFeed>(
    inner: Arc<Inner>,
    feed: Arc<F>,
    mut reader: Reader,
    retain: Duration,
    prune_every: Duration,
) {
    let mut backoff = BACKOFF_MIN;
    let mut last_prune = Instant::now();
    let mut failing = false;
    loop {
        if inner.pool.upgrade().is_none() {
            return;
        }
        match catch_up(&inner, &*feed, &mut reader).await {
            Ok(()) => {
                if failing {
                    tracing::info!("shared key state reachable again; caught up");
                    failing = false;
                }
                backoff = BACKOFF_MIN;
            }
            Err(e) => {
                inner.read_errors.fetch_add(1, Ordering::Relaxed);
                if !failing {
                    tracing::warn!(error = %e, "shared key state unreachable; serving from local state, retrying");
                    failing = true;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        }
        if !prune_every.is_zero() && last_prune.elapsed() >= prune_every {
            last_prune = Instant::now();
            if let Err(e) = prune(&*feed, retain).await {
                tracing::debug!(error = %e, "pruning shared key events failed");
            }
        }
        feed.changed().await;
    }
}

async fn prune<F: KeyStateFeed>(feed: &F, retain: Duration) -> Result<(), super::FeedError> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let batch = feed.read_after(after).await?;
        let Some(last) = batch.last() else {
            break;
        };
        after = last.seq;
        all.extend(batch);
    }
    let doomed = prunable(&all, now_ms(), retain.as_millis() as u64);
    if !doomed.is_empty() {
        feed.delete(doomed).await?;
    }
    Ok(())
}

/// Events older than `retain_ms` that a later one makes pointless, cooldowns that ended, and
/// old setting notices.
pub(crate) fn prunable(entries: &[FeedEntry], now_ms: u64, retain_ms: u64) -> Vec<u64> {
    let mut by_key: HashMap<&KeyId, Vec<&FeedEntry>> = HashMap::new();
    let mut doomed = Vec::new();
    for entry in entries {
        // Ignored when applied: it supersedes nothing here either.
        if entry.event.at_ms > now_ms.saturating_add(FUTURE_MS) {
            continue;
        }
        let old = entry.event.at_ms.saturating_add(retain_ms) < now_ms;
        match entry.event.change.key() {
            Some(key) => by_key.entry(key).or_default().push(entry),
            // A setting notice: the settings themselves are kept elsewhere.
            None if old => doomed.push(entry.seq),
            None => {}
        }
    }
    for events in by_key.values() {
        for entry in events {
            if entry.event.at_ms.saturating_add(retain_ms) >= now_ms {
                continue;
            }
            let stamp = entry.event.stamp();
            let later_status = |other: &&&FeedEntry| {
                other.event.stamp() > stamp
                    && matches!(
                        other.event.change,
                        Change::Disabled { .. }
                            | Change::Reset { .. }
                            | Change::Added { .. }
                            | Change::Removed { .. }
                    )
            };
            let later_clear = |other: &&&FeedEntry| {
                other.event.stamp() > stamp
                    && matches!(
                        other.event.change,
                        Change::Reset { .. } | Change::Added { .. } | Change::Removed { .. }
                    )
            };
            let gone = match &entry.event.change {
                Change::Cooled {
                    model, until_ms, ..
                } => {
                    *until_ms <= now_ms
                        || events.iter().any(|o| later_clear(&o))
                        || events.iter().any(|o| {
                            o.event.stamp() > stamp
                                && matches!(&o.event.change, Change::Cooled { model: m, until_ms: u, .. } if m == model && u >= until_ms)
                        })
                }
                // The sealed key: a restarted instance needs it whatever happened to the key
                // since, until the key is removed or added again.
                Change::Added { sealed, .. } => events.iter().any(|o| {
                    o.event.stamp() > stamp
                        && match &o.event.change {
                            Change::Removed { .. } => true,
                            Change::Added { sealed: later, .. } => later.is_some() || sealed.is_none(),
                            _ => false,
                        }
                }),
                _ => events.iter().any(|o| later_status(&o)),
            };
            if gone {
                doomed.push(entry.seq);
            }
        }
    }
    doomed.sort_unstable();
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::DisabledReason;

    fn key(n: u8) -> KeyId {
        KeyId::from_parts(u64::from(n), "AIza…test")
    }

    fn entry(seq: u64, at_ms: u64, change: Change) -> FeedEntry {
        FeedEntry {
            seq,
            event: SharedEvent {
                origin: 1,
                at_ms,
                change,
            },
        }
    }

    fn cooled(n: u8, model: &str, until_ms: u64) -> Change {
        Change::Cooled {
            key: key(n),
            model: model.into(),
            until_ms,
        }
    }

    #[test]
    fn pruning_keeps_the_latest_state_of_each_key() {
        let now = 1_000_000;
        let old = now - 700_000;
        let entries = vec![
            // Key 1: disabled, then reset: only the reset matters.
            entry(
                1,
                old,
                Change::Disabled {
                    key: key(1),
                    reason: DisabledReason::Manual,
                },
            ),
            entry(2, old + 1, Change::Reset { key: key(1) }),
            // Key 2: a cooldown that ended, one that still runs, one superseded by a longer one.
            entry(3, old, cooled(2, "a", now - 1)),
            entry(4, old, cooled(2, "b", now + 50_000)),
            entry(5, old, cooled(2, "c", now + 10_000)),
            entry(6, old + 1, cooled(2, "c", now + 20_000)),
            // Key 3: disabled long ago, nothing after: kept.
            entry(
                7,
                old,
                Change::Disabled {
                    key: key(3),
                    reason: DisabledReason::Manual,
                },
            ),
            // Key 4: removed: kept (a restarted instance must not bring it back).
            entry(8, old, Change::Removed { key: key(4) }),
            // Old setting notices go; recent ones stay.
            entry(9, old, Change::Setting { name: "X".into() }),
            entry(10, now - 1, Change::Setting { name: "X".into() }),
            // Recent events stay even when superseded (a lagging instance may still read them).
            entry(11, now - 2, Change::Reset { key: key(5) }),
            entry(
                12,
                now - 1,
                Change::Disabled {
                    key: key(5),
                    reason: DisabledReason::Manual,
                },
            ),
        ];
        assert_eq!(prunable(&entries, now, 600_000), vec![1, 3, 5, 9]);
    }

    #[test]
    fn a_sealed_key_is_kept_until_removed_or_added_again() {
        let now = 1_000_000;
        let added = |seq, at, sealed: Option<&str>| {
            entry(
                seq,
                at,
                Change::Added {
                    key: key(1),
                    sealed: sealed.map(str::to_owned),
                },
            )
        };
        let disabled = entry(
            2,
            20,
            Change::Disabled {
                key: key(1),
                reason: DisabledReason::Manual,
            },
        );
        // Disabled after it was added: both stay (the secret is still needed).
        assert!(prunable(&[added(1, 10, Some("s")), disabled.clone()], now, 0).is_empty());
        // Added again with the secret: the first goes; without it, the first stays.
        assert_eq!(
            prunable(&[added(1, 10, Some("s")), added(3, 30, Some("t"))], now, 0),
            vec![1]
        );
        assert!(prunable(&[added(1, 10, Some("s")), added(3, 30, None)], now, 0).is_empty());
        // Removed: the secret goes with it.
        assert_eq!(
            prunable(
                &[
                    added(1, 10, Some("s")),
                    entry(3, 30, Change::Removed { key: key(1) })
                ],
                now,
                0
            ),
            vec![1]
        );
    }

    #[test]
    fn pruning_orders_by_stamp_not_arrival() {
        let now = 1_000_000;
        // The reset has the later stamp though it was stored first: the disable goes.
        let entries = vec![
            entry(1, 10, Change::Reset { key: key(1) }),
            entry(
                2,
                5,
                Change::Disabled {
                    key: key(1),
                    reason: DisabledReason::Manual,
                },
            ),
        ];
        assert_eq!(prunable(&entries, now, 1000), vec![2]);
    }

    fn seqs(entries: &[FeedEntry]) -> Vec<u64> {
        entries.iter().map(|e| e.seq).collect()
    }

    fn at(seq: u64) -> FeedEntry {
        entry(seq, 1, Change::Reset { key: key(1) })
    }

    #[tokio::test(start_paused = true)]
    async fn the_reader_rereads_holes_until_they_fill_or_expire() {
        let mut reader = Reader::default();
        // Startup: holes left by pruning are not waited for.
        assert_eq!(seqs(&reader.take(vec![at(3), at(7)])), vec![3, 7]);
        assert_eq!(reader.gap_range(), None);
        // Caught up (a read returned nothing): from now on a hole may be a commit in flight.
        reader.started = true;
        // 9 and 10 committed before 8: 8 is read again from then on.
        assert_eq!(seqs(&reader.take(vec![at(9), at(10)])), vec![9, 10]);
        assert_eq!(reader.gap_range(), Some((7, 8)));
        // Read again: 9 and 10 are not applied twice; 8 arrives once.
        assert_eq!(seqs(&reader.take(vec![at(8), at(9), at(10)])), vec![8]);
        assert_eq!(reader.gap_range(), None);
        // A hole that never fills (a rolled-back insert) is given up after a while.
        assert_eq!(seqs(&reader.take(vec![at(12)])), vec![12]);
        assert_eq!(reader.gap_range(), Some((10, 11)));
        tokio::time::advance(GAP_WAIT + Duration::from_millis(1)).await;
        assert!(reader.take(vec![at(12)]).is_empty());
        assert_eq!(reader.gap_range(), None);
        // A huge jump (events deleted meanwhile) is not a hole to wait for.
        assert_eq!(seqs(&reader.take(vec![at(5000)])), vec![5000]);
        assert_eq!(reader.gap_range(), None);
        assert_eq!(reader.cursor, 5000);
    }

    struct Plain;

    impl KeySealer for Plain {
        fn seal(&self, secret: &str) -> Option<String> {
            Some(secret.to_owned())
        }
        fn open(&self, sealed: &str) -> Option<String> {
            Some(sealed.to_owned())
        }
    }

    /// The pool's length each time it announced a key added from the feed.
    struct Lengths {
        pool: WeakKeyPool,
        seen: Mutex<Vec<usize>>,
    }

    impl KeyObserver for Lengths {
        fn key_changed(&self, _: KeySnapshot) {
            if let Some(pool) = self.pool.upgrade() {
                self.seen.lock().unwrap().push(pool.len());
            }
        }
        fn key_removed(&self, _: &KeyId) {}
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_added_elsewhere_join_the_pool_in_one_go() {
        use super::super::feed::MemoryFeed;
        let secrets: Vec<String> = (0..50).map(|i| format!("AIzaSy{i:033}")).collect();
        let pool = KeyPool::builder()
            .keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv"])
            .build()
            .unwrap();
        let feed = MemoryFeed::new();
        let shared = SharedKeys::builder(pool.clone())
            .sealer(Arc::new(Plain))
            .start(feed.clone())
            .await;
        let mut heard = shared.changes();
        let lengths = Arc::new(Lengths {
            pool: pool.downgrade(),
            seen: Mutex::new(Vec::new()),
        });
        pool.add_observer(lengths.clone());
        // Stored at once, so read in one batch.
        feed.set_available(false);
        for (i, secret) in secrets.iter().enumerate() {
            let key = ApiKey::new(secret.as_str()).unwrap();
            feed.publish(SharedEvent {
                origin: 9,
                at_ms: now_ms() + i as u64,
                change: Change::Added {
                    key: key.id().clone(),
                    sealed: Some(secret.clone()),
                },
            });
        }
        feed.set_available(true);
        for _ in &secrets {
            let change = tokio::time::timeout(Duration::from_secs(10), heard.recv())
                .await
                .unwrap()
                .unwrap();
            let Change::Added { key, .. } = change else {
                panic!("{change:?}")
            };
            // Announced once the key is in the pool.
            assert!(pool.key(&key).is_some());
        }
        assert_eq!(pool.len(), 51);
        // One rebuild of the key list, not one per key.
        let seen = lengths.seen.lock().unwrap().clone();
        assert_eq!(seen, vec![51; 50]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_clock_saturates_instead_of_overflowing() {
        use super::super::feed::MemoryFeed;
        let pool = KeyPool::builder()
            .keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv"])
            .build()
            .unwrap();
        let feed = MemoryFeed::new();
        let shared = SharedKeys::start(pool.clone(), feed.clone()).await;
        shared.inner.state().clock = u64::MAX;
        pool.disable(&pool.ids()[0]);
        let entries = feed.entries();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].event.at_ms, u64::MAX);
    }

    /// A log whose rows can commit out of order, read two at a time.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<FeedEntry>>>);

    impl Log {
        fn commit(&self, seq: u64, change: Change) {
            let mut rows = self.0.lock().unwrap();
            rows.push(entry(seq, now_ms(), change));
            rows.sort_by_key(|e| e.seq);
        }
    }

    impl KeyStateFeed for Log {
        fn publish(&self, _: SharedEvent) {}
        async fn read_after(&self, seq: u64) -> Result<Vec<FeedEntry>, super::super::FeedError> {
            let rows = self.0.lock().unwrap();
            Ok(rows
                .iter()
                .filter(|e| e.seq > seq)
                .take(2)
                .cloned()
                .collect())
        }
        async fn changed(&self) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        async fn delete(&self, _: Vec<u64>) -> Result<(), super::super::FeedError> {
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn late_commits_in_holes_are_applied_once() {
        let setting = |name: &str| Change::Setting { name: name.into() };
        let pool = KeyPool::builder()
            .keys([
                "AIzaSyA1234567890abcdefghijklmnopqrstuv",
                "AIzaSyB1234567890abcdefghijklmnopqrstuv",
            ])
            .build()
            .unwrap();
        let ids = pool.ids();
        let log = Log::default();
        log.commit(1, setting("a"));
        let shared = SharedKeys::start(pool.clone(), log.clone()).await;
        assert_eq!(shared.applied(), 1);
        // 2 and 6 took their numbers first but commit last.
        for seq in [3, 4, 5, 7, 8] {
            log.commit(seq, setting("b"));
        }
        let bound = std::time::Instant::now() + Duration::from_secs(5);
        while shared.applied() < 6 {
            assert!(std::time::Instant::now() < bound, "{}", shared.applied());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let disable = |n: usize| Change::Disabled {
            key: ids[n].clone(),
            reason: DisabledReason::Manual,
        };
        log.commit(6, disable(1));
        log.commit(2, disable(0));
        // Well before the holes are given up (GAP_WAIT).
        while pool.snapshot(&ids[0]).unwrap().status.is_serving()
            || pool.snapshot(&ids[1]).unwrap().status.is_serving()
        {
            assert!(std::time::Instant::now() < bound, "holes not read again");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        while shared.applied() < 8 {
            assert!(std::time::Instant::now() < bound, "{}", shared.applied());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Read again for a while: none applied twice.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(shared.applied(), 8);
    }
}
