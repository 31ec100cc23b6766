//! What the pool tells the outside world: key states, snapshots, and change notifications.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::classify::FailureClass;
use crate::fingerprint::KeyId;

/// How the pool chooses among usable keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Each request takes the next usable key in order (the Python server's behaviour).
    #[default]
    RoundRobin,
    /// Keys are chosen at random in proportion to their weight ([`KeyPool::add_weighted`](super::KeyPool::add_weighted)).
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

impl KeyStatus {
    /// `true` when the key serves some model now: it is enabled and not cooling down for every
    /// model (`*`, after a 429 on a request whose model was unknown). A key cooling down for
    /// some models still serves the others.
    pub fn is_serving(&self) -> bool {
        match self {
            KeyStatus::Active => true,
            KeyStatus::CoolingDown(cooldowns) => cooldowns.iter().all(|c| c.model != "*"),
            KeyStatus::Disabled(_) => false,
        }
    }
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
                (retry_after.as_millis() as u64)
                    .saturating_sub(1)
                    .div_ceil(1000)
                    .max(1)
            ),
            NoKey::NoneEnabled => f.write_str("no API key is enabled"),
        }
    }
}

/// What [`KeyPool::add`](super::KeyPool::add) did with each key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddReport {
    /// Keys added.
    pub added: Vec<KeyId>,
    /// Keys already in the pool (or repeated in the input).
    pub duplicates: Vec<KeyId>,
}

impl KeySnapshot {
    /// An active key with no history (for stores that rebuild snapshots from their rows).
    pub fn new(id: KeyId) -> Self {
        KeySnapshot {
            id,
            status: KeyStatus::Active,
            consecutive_failures: 0,
            requests: 0,
            successes: 0,
            failures: 0,
            in_flight: 0,
            weight: 1,
            last_used: None,
            last_error: None,
        }
    }
}

/// Told about every change of a key's state that should survive a restart: a counted failure,
/// a cooldown, a disable, a reset, a key added or removed. Stores implement it to persist key
/// state. Called on the request path: must not block.
pub trait KeyObserver: Send + Sync + 'static {
    /// The key's state after the change.
    fn key_changed(&self, state: KeySnapshot);
    /// The key was removed from the pool.
    fn key_removed(&self, id: &KeyId);
}

impl<T: KeyObserver + ?Sized> KeyObserver for Arc<T> {
    fn key_changed(&self, state: KeySnapshot) {
        (**self).key_changed(state)
    }
    fn key_removed(&self, id: &KeyId) {
        (**self).key_removed(id)
    }
}

/// Two observers as one (the same [`Tee`](crate::store::Tee) that joins two usage sinks).
impl<A: KeyObserver, B: KeyObserver> KeyObserver for crate::usage::sink::Tee<A, B> {
    fn key_changed(&self, state: KeySnapshot) {
        self.0.key_changed(state.clone());
        self.1.key_changed(state);
    }
    fn key_removed(&self, id: &KeyId) {
        self.0.key_removed(id);
        self.1.key_removed(id);
    }
}

/// Every observer of a pool, told in the order they were added.
pub(super) struct Observers(pub(super) Vec<Arc<dyn KeyObserver>>);

impl KeyObserver for Observers {
    fn key_changed(&self, state: KeySnapshot) {
        for observer in &self.0 {
            observer.key_changed(state.clone());
        }
    }
    fn key_removed(&self, id: &KeyId) {
        for observer in &self.0 {
            observer.key_removed(id);
        }
    }
}
