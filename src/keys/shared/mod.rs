//! Key state shared by every instance: when one proxy disables a key, cools it for a model,
//! resets, adds or removes it, every other proxy acts on it too.
//!
//! [`SharedKeys`] sits beside a [`KeyPool`](crate::keys::KeyPool): it observes the pool's
//! lasting changes and publishes them as [`SharedEvent`]s through a [`KeyStateFeed`] (never
//! waiting), and a background task applies the events other instances published to the local
//! pool. The request path only ever reads the local pool. Counters (requests, failures in a row,
//! requests in flight) stay per instance; what is shared is what every instance must act on.
//!
//! Conflicting changes of one key are ordered by their stamp (wall-clock time, raised past
//! every stamp already seen, then the instance id): the later one wins on every instance, in
//! whatever order the events arrive. An instance never applies its own events, and changes it
//! applies are not published again.
//!
//! Transports: [`MemoryFeed`] (one process; tests), `PostgresFeed` (feature `postgres`: a
//! `key_events` table, `LISTEN/NOTIFY`), `MySqlFeed` (feature `mysql`: the same table, polled).
//! See `docs/scale-out.md`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use gemini_balance::keys::KeyPool;
//! use gemini_balance::keys::shared::{MemoryFeed, SharedKeys};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let keys = ["AIzaSyA1234567890abcdefghijklmnopqrstuv", "AIzaSyB1234567890abcdefghijklmnopqrstuv"];
//! let a = KeyPool::builder().keys(keys).build().unwrap();
//! let b = KeyPool::builder().keys(keys).build().unwrap();
//! let feed = MemoryFeed::new();
//! let _shared_a = SharedKeys::start(a.clone(), feed.clone()).await;
//! let _shared_b = SharedKeys::start(b.clone(), feed.clone()).await;
//!
//! // An operator disables the first key on A ...
//! let first = a.ids()[0].clone();
//! a.disable(&first);
//! // ... and B stops using it.
//! while b.snapshot(&first).unwrap().status.is_serving() {
//!     tokio::time::sleep(Duration::from_millis(10)).await;
//! }
//! for _ in 0..4 {
//!     assert_ne!(b.pick(None, None).unwrap().id(), &first);
//! }
//! # }
//! ```

mod event;
mod feed;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod outbox;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod sealer;
mod sync;

pub use self::event::{Change, SharedEvent, Stamp};
pub use self::feed::{FeedEntry, FeedError, KeyStateFeed, MemoryFeed};
#[cfg(feature = "mysql")]
#[cfg_attr(docsrs, doc(cfg(feature = "mysql")))]
pub use self::mysql::MySqlFeed;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use self::postgres::PostgresFeed;
#[cfg(any(feature = "postgres", feature = "mysql"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "mysql"))))]
pub use self::sealer::{ChaChaSealer, InvalidSealingKey};
pub use self::sync::{SharedKeys, SharedKeysBuilder};

/// Seals a key for the other instances and opens theirs, so that a key added on one instance
/// serves on all without ever being stored in clear. Each instance gets the sealing key from
/// its own environment.
pub trait KeySealer: Send + Sync + 'static {
    /// The secret, sealed (printable text); `None` if it cannot be sealed.
    fn seal(&self, secret: &str) -> Option<String>;
    /// The secret back; `None` if `sealed` was not sealed with this key or was altered.
    fn open(&self, sealed: &str) -> Option<String>;
}
