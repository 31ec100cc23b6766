//! One key's state: atomics for the hot path, a small mutex for the rare rest.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::api_key::ApiKey;
use super::daily_reset::next_daily_reset;
use super::status::{
    DisabledReason, KeyObserver, KeySnapshot, KeyStatus, LastError, ModelCooldown, Observers,
};
use crate::classify::{Cooldown, FailureClass, KeyEffect, Outcome};

// Key status codes held in an atomic for the lock-free fast path.
const ACTIVE: u32 = 0;
const DISABLED: u32 = 1;

/// `cooling_model` when more than one model (or every model) is cooling: look under the lock.
const MANY_MODELS: u64 = u64::MAX;

/// Pool-wide settings every entry needs, reached through the entry so that a lease never
/// touches pool-wide reference counts.
pub(super) struct Shared {
    pub(super) max_failures: AtomicU32,
    pub(super) epoch: Instant,
    pub(super) epoch_wall: SystemTime,
    pub(super) observer: RwLock<Option<Arc<Observers>>>,
}

impl Shared {
    pub(super) fn new(max_failures: u32) -> Self {
        Shared {
            max_failures: AtomicU32::new(max_failures),
            epoch: Instant::now(),
            epoch_wall: SystemTime::now(),
            observer: RwLock::new(None),
        }
    }

    /// Milliseconds since the epoch, +1 so that 0 can mean "never".
    pub(super) fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64 + 1
    }

    /// Like [`ms`](Self::ms) but rounded up, for the end of a cooldown (never ends early).
    fn ms_ceil(&self, at: Instant) -> u64 {
        let micros = at.saturating_duration_since(self.epoch).as_micros() as u64;
        micros.div_ceil(1000) + 1
    }

    fn instant_of_ms(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms.saturating_sub(1))
    }

    fn wall_of_ms(&self, ms: u64) -> SystemTime {
        self.epoch_wall + Duration::from_millis(ms.saturating_sub(1))
    }

    fn wall_of(&self, at: Instant) -> SystemTime {
        self.epoch_wall + at.saturating_duration_since(self.epoch)
    }

    /// The `Instant` of a wall-clock time (for restoring persisted cooldowns).
    fn instant_of(&self, wall: SystemTime, now: Instant) -> Instant {
        match wall.duration_since(SystemTime::now()) {
            Ok(ahead) => now + ahead,
            Err(_) => now,
        }
    }

    pub(super) fn observer(&self) -> Option<Arc<Observers>> {
        self.observer
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// FNV-1a: a cheap hash of a model name for the lock-free cooldown check.
pub(super) fn model_hash(model: &str) -> u64 {
    let hash = model.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    // Keep MANY_MODELS free.
    hash.min(MANY_MODELS - 1)
}

pub(super) struct KeyEntry {
    pub(super) key: ApiKey,
    pub(super) weight: u32,
    pub(super) shared: Arc<Shared>,
    status: AtomicU32,
    /// Milliseconds (since the epoch) until which *some* model is cooling; 0 = none.
    cooling_until_ms: AtomicU64,
    /// The hash of the one model cooling, or `MANY_MODELS`: lets most checks skip the mutex.
    cooling_model: AtomicU64,
    consecutive_failures: AtomicU32,
    pub(super) in_flight: AtomicU32,
    requests: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    last_used_ms: AtomicU64,
    slow: Mutex<SlowState>,
}

#[derive(Default)]
struct SlowState {
    cooldowns: Vec<(Arc<str>, Instant)>,
    disabled: Option<DisabledReason>,
    last_error: Option<LastError>,
}

impl KeyEntry {
    pub(super) fn new(key: ApiKey, weight: u32, shared: Arc<Shared>) -> Self {
        KeyEntry {
            key,
            weight: weight.max(1),
            shared,
            status: AtomicU32::new(ACTIVE),
            cooling_until_ms: AtomicU64::new(0),
            cooling_model: AtomicU64::new(MANY_MODELS),
            consecutive_failures: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_used_ms: AtomicU64::new(0),
            slow: Mutex::new(SlowState::default()),
        }
    }

    fn slow(&self) -> MutexGuard<'_, SlowState> {
        // Every write under this lock is a plain assignment, so a poisoned lock is still sound.
        self.slow.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn is_active(&self) -> bool {
        self.status.load(Ordering::Relaxed) == ACTIVE
    }

    pub(super) fn has_failures(&self) -> bool {
        self.consecutive_failures.load(Ordering::Relaxed) > 0
    }

    /// `None` if usable for the model now; otherwise when it is usable again (`Some(None)`:
    /// not by waiting, it is disabled).
    pub(super) fn blocked_until(
        &self,
        model: &str,
        model_hash: u64,
        now: Instant,
        now_ms: u64,
    ) -> Option<Option<Instant>> {
        if self.status.load(Ordering::Relaxed) != ACTIVE {
            return Some(None);
        }
        let cooling = self.cooling_until_ms.load(Ordering::Relaxed);
        if cooling == 0 || cooling <= now_ms {
            return None;
        }
        let cooling_model = self.cooling_model.load(Ordering::Relaxed);
        if cooling_model != MANY_MODELS {
            // Exactly one model is cooling, until `cooling`: no need for the lock.
            return (cooling_model == model_hash).then(|| Some(self.shared.instant_of_ms(cooling)));
        }
        let slow = self.slow();
        slow.cooldowns
            .iter()
            .filter(|(m, until)| *until > now && (&**m == "*" || &**m == model))
            .map(|(_, until)| *until)
            .max()
            .map(Some)
    }

    pub(super) fn leased(&self, now_ms: u64) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.last_used_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Applies one outcome; tells the observer when the change should outlive a restart.
    pub(super) fn record(&self, model: &str, outcome: &Outcome) {
        let class = match outcome {
            Outcome::Success => {
                self.successes.fetch_add(1, Ordering::Relaxed);
                if self.consecutive_failures.swap(0, Ordering::Relaxed) > 0 {
                    self.notify();
                }
                return;
            }
            Outcome::Failure(class) => class,
        };
        self.failures.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let effect = class.action().key;
        {
            let mut slow = self.slow();
            slow.last_error = Some(LastError {
                class: class.clone(),
                at: SystemTime::now(),
            });
            match effect {
                KeyEffect::CountFailure => {
                    let count = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                    let max = self.shared.max_failures.load(Ordering::Relaxed);
                    if max > 0 && count >= max && slow.disabled.is_none() {
                        self.disable_locked(&mut slow, DisabledReason::TooManyFailures { count });
                        tracing::warn!(key = %self.key.id(), failures = count, "key taken out after consecutive failures");
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
                    self.cool_locked(&mut slow, model, until, now);
                    tracing::debug!(key = %self.key.id(), model, secs = until.saturating_duration_since(now).as_secs(), "key cooling down");
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
                    self.disable_locked(&mut slow, reason);
                    tracing::warn!(key = %self.key.id(), class = %class, "key disabled");
                }
                KeyEffect::Nothing => return,
            }
        }
        self.notify();
    }

    fn cool_locked(&self, slow: &mut SlowState, model: &str, until: Instant, now: Instant) {
        slow.cooldowns.retain(|(_, t)| *t > now);
        match slow.cooldowns.iter_mut().find(|(m, _)| &**m == model) {
            Some((_, t)) => *t = (*t).max(until),
            None => slow.cooldowns.push((model.into(), until)),
        }
        self.publish_cooldowns(slow, until);
    }

    /// Mirrors the cooldown list into the atomics the hot path reads.
    fn publish_cooldowns(&self, slow: &SlowState, fallback: Instant) {
        let latest = slow
            .cooldowns
            .iter()
            .map(|(_, t)| *t)
            .max()
            .unwrap_or(fallback);
        let single = match slow.cooldowns.as_slice() {
            [(model, _)] if &**model != "*" => model_hash(model),
            _ => MANY_MODELS,
        };
        self.cooling_model.store(single, Ordering::Relaxed);
        let ms = if slow.cooldowns.is_empty() {
            0
        } else {
            self.shared.ms_ceil(latest)
        };
        self.cooling_until_ms.store(ms, Ordering::Relaxed);
    }

    fn disable_locked(&self, slow: &mut SlowState, reason: DisabledReason) {
        slow.disabled = Some(reason);
        self.status.store(DISABLED, Ordering::Relaxed);
    }

    pub(super) fn disable(&self, reason: DisabledReason) {
        self.disable_locked(&mut self.slow(), reason);
        self.notify();
    }

    /// Cools the key for `model` until a wall-clock time (already passed: nothing).
    pub(super) fn cool_until(&self, model: &str, until: SystemTime) {
        let now = Instant::now();
        let until = self.shared.instant_of(until, now);
        if until <= now {
            return;
        }
        self.cool_locked(&mut self.slow(), model, until, now);
        self.notify();
    }

    /// Back to active: no failures, no cooldowns, not disabled.
    pub(super) fn reset(&self) {
        {
            let mut slow = self.slow();
            slow.disabled = None;
            slow.cooldowns.clear();
            self.cooling_until_ms.store(0, Ordering::Relaxed);
            self.cooling_model.store(MANY_MODELS, Ordering::Relaxed);
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.status.store(ACTIVE, Ordering::Relaxed);
        }
        self.notify();
    }

    pub(super) fn notify(&self) {
        if let Some(observer) = self.shared.observer() {
            observer.key_changed(self.snapshot());
        }
    }

    pub(super) fn snapshot(&self) -> KeySnapshot {
        let now = Instant::now();
        let slow = self.slow();
        let status = if let Some(reason) = &slow.disabled {
            KeyStatus::Disabled(reason.clone())
        } else {
            let cooling: Vec<_> = slow
                .cooldowns
                .iter()
                .filter(|(_, t)| *t > now)
                .map(|(m, t)| ModelCooldown {
                    model: m.to_string(),
                    until: self.shared.wall_of(*t),
                })
                .collect();
            if cooling.is_empty() {
                KeyStatus::Active
            } else {
                KeyStatus::CoolingDown(cooling)
            }
        };
        let last_used = self.last_used_ms.load(Ordering::Relaxed);
        let mut snapshot = KeySnapshot::new(self.key.id().clone());
        snapshot.status = status;
        snapshot.consecutive_failures = self.consecutive_failures.load(Ordering::Relaxed);
        snapshot.requests = self.requests.load(Ordering::Relaxed);
        snapshot.successes = self.successes.load(Ordering::Relaxed);
        snapshot.failures = self.failures.load(Ordering::Relaxed);
        snapshot.in_flight = self.in_flight.load(Ordering::Relaxed);
        snapshot.weight = self.weight;
        snapshot.last_used = (last_used != 0).then(|| self.shared.wall_of_ms(last_used));
        snapshot.last_error = slow.last_error.clone();
        snapshot
    }

    /// Takes over a persisted state (after a restart). Live counters are not lowered.
    pub(super) fn restore(&self, state: &KeySnapshot) {
        let now = Instant::now();
        let mut slow = self.slow();
        match &state.status {
            KeyStatus::Disabled(reason) => self.disable_locked(&mut slow, reason.clone()),
            KeyStatus::CoolingDown(models) => {
                for cooldown in models {
                    let until = self.shared.instant_of(cooldown.until, now);
                    if until > now {
                        self.cool_locked(&mut slow, &cooldown.model, until, now);
                    }
                }
            }
            _ => {}
        }
        self.consecutive_failures
            .fetch_max(state.consecutive_failures, Ordering::Relaxed);
        self.requests.fetch_max(state.requests, Ordering::Relaxed);
        self.successes.fetch_max(state.successes, Ordering::Relaxed);
        self.failures.fetch_max(state.failures, Ordering::Relaxed);
        if let Some(used) = state.last_used {
            let at = match SystemTime::now().duration_since(used) {
                Ok(ago) => now.checked_sub(ago).unwrap_or(self.shared.epoch),
                Err(_) => now,
            };
            self.last_used_ms
                .fetch_max(self.shared.ms(at), Ordering::Relaxed);
        }
        if slow.last_error.is_none() {
            slow.last_error = state.last_error.clone();
        }
    }
}
