//! Quotas per client: requests per minute, tokens per minute and per day, and a monthly token
//! budget, for each identity your service knows (a client token, a user, a tenant) and a
//! default for all. [`QuotaLayer`] refuses a request over its quota with a `429` in the
//! route's API format ([`ApiFlavor`](crate::api_error::ApiFlavor)) and a `Retry-After` that
//! says when the full window frees; the inner service is not called, so no key is used.
//!
//! Requests are counted when let in; tokens when the answer's usage is known, from the
//! [`RequestRecord`](crate::usage::RequestRecord) the [`UsageLayer`](crate::usage::UsageLayer)
//! writes: give it [`Quotas::charger`] as (part of) its sink. A window's tokens can therefore
//! overshoot its limit by the answers in flight when it filled; the next request is refused.
//!
//! Windows are calendar periods in UTC ([`Window`]): fixed, not sliding, so a client can use a
//! minute's requests at its end and the next minute's at once.
//!
//! Counting is in memory ([`Quotas`]): the request path takes a lock for a few map operations
//! and never waits for a database. A [`QuotaStore`] (every store of [`store`](crate::store)
//! is one) keeps the limits, the names and the use across restarts, and shares them between
//! instances on one database: [`Quotas::sync`] sends each instance's new use and reads
//! everyone's totals and limits every interval, so an instance sees the others' use (and their
//! limit edits) at most one interval late, and a limit can be overshot by what the other
//! instances let in meanwhile.
//!
//! Put the layer outside the usage layer and the key rotation (added after them with axum's
//! `route_layer`), after whatever puts the identity into the request (for client tokens,
//! [`ClientAuthLayer`](crate::auth::ClientAuthLayer), which adds a
//! [`ClientId`](crate::usage::ClientId)).
//!
//! # Example
//!
//! ```
//! use axum::{routing::post, Router};
//! use gemini_balance::auth::{ClientAuthLayer, ClientTokens};
//! use gemini_balance::keys::KeyPool;
//! use gemini_balance::quota::{Limits, QuotaLayer, Quotas};
//! use gemini_balance::stack::GeminiStack;
//! use gemini_balance::store::{MemoryStore, UsageSink};
//! use gemini_balance::{retry::RetryLayer, usage::UsageLayer};
//!
//! # fn build() -> Result<Router, Box<dyn std::error::Error>> {
//! let pool = KeyPool::builder()
//!     .keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv"])
//!     .build()?;
//! // Every client: 60 requests a minute, a million tokens a day.
//! let quotas = Quotas::new(Limits {
//!     requests_per_minute: Some(60),
//!     tokens_per_day: Some(1_000_000),
//!     ..Limits::default()
//! });
//! let store = MemoryStore::new();
//! let app = Router::new().route(
//!     "/v1beta/models/{action}",
//!     post(|| async { "your handler" })
//!         .route_layer(
//!             GeminiStack::new()
//!                 // Tokens are charged from the usage records.
//!                 .usage(UsageLayer::new(store.clone().tee(quotas.charger())))
//!                 .retry(RetryLayer::new())
//!                 .keys(pool),
//!         )
//!         // Keyed by the client token's id, which the auth layer (outermost) adds.
//!         .route_layer(QuotaLayer::new(quotas.clone()))
//!         .route_layer(ClientAuthLayer::new(ClientTokens::new(["sk-team-a-0123456789"]))),
//! );
//! // With a store, limits and use survive restarts and are shared (needs a tokio runtime):
//! // quotas.sync(std::sync::Arc::new(store), std::time::Duration::from_secs(5));
//! # Ok(app)
//! # }
//! ```

mod charge;
mod layer;
mod limits;
mod quotas;
mod window;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

pub use self::charge::Charger;
pub use self::layer::{ByClient, Identify, Quota, QuotaLayer, ResponseFuture};
pub use self::limits::{LimitKind, Limits, Refusal};
pub use self::quotas::{QuotaStatus, Quotas, Used};
pub use self::window::Window;
use crate::BoxError;

/// The id under which a store keeps the default limits.
pub const DEFAULT_ID: &str = "*";

/// The longest name an identity can be given.
pub const MAX_NAME_CHARS: usize = 100;

/// One identity's name and own limits, as a store keeps them ([`DEFAULT_ID`]: the default
/// limits). A row with neither is no row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaRow {
    /// The identity (for client tokens, the token's id: 16 hex digits, never the token).
    pub id: String,
    /// The name an admin gave it.
    pub name: Option<String>,
    /// Its own limits; `None`: the default applies.
    pub limits: Option<Limits>,
}

/// Use of one window by one identity: what an instance adds ([`QuotaStore::exchange_quota_use`]'s
/// input) or what a store holds in all (its answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaUse {
    /// The identity.
    pub id: String,
    /// The window.
    pub window: Window,
    /// Which one ([`Window::bucket`]).
    pub bucket: i64,
    /// Requests let in.
    pub requests: u64,
    /// Tokens used.
    pub tokens: u64,
}

/// Where quotas are kept: limits and names, and the use of each window (added up over
/// instances). The methods block until the database answered: [`Quotas`] calls them from
/// `spawn_blocking`, off the request path.
pub trait QuotaStore: Send + Sync + 'static {
    /// Every stored row.
    fn quota_rows(&self) -> Result<Vec<QuotaRow>, BoxError>;
    /// Inserts or replaces `row` (a row with no name and no limits is deleted); committed
    /// when this returns. Names holding an API key are refused.
    fn save_quota_row(&self, row: &QuotaRow) -> Result<(), BoxError>;
    /// Adds `add` to the stored use (in one transaction), then answers the totals of the
    /// `current` windows, every identity's. Rows of minutes before the current one, days more
    /// than 62 days old and months more than 24 months old are deleted on the way.
    fn exchange_quota_use(
        &self,
        add: &[QuotaUse],
        current: &[(Window, i64); 3],
    ) -> Result<Vec<QuotaUse>, BoxError>;
}

impl<T: QuotaStore + ?Sized> QuotaStore for Arc<T> {
    fn quota_rows(&self) -> Result<Vec<QuotaRow>, BoxError> {
        (**self).quota_rows()
    }

    fn save_quota_row(&self, row: &QuotaRow) -> Result<(), BoxError> {
        (**self).save_quota_row(row)
    }

    fn exchange_quota_use(
        &self,
        add: &[QuotaUse],
        current: &[(Window, i64); 3],
    ) -> Result<Vec<QuotaUse>, BoxError> {
        (**self).exchange_quota_use(add, current)
    }
}

/// The oldest bucket of `window` a store keeps, when `current` is the current one.
pub fn oldest_kept(window: Window, current: i64) -> i64 {
    match window {
        // Two minutes back: an instance whose clock runs a little ahead must not delete the
        // others' current minute.
        Window::Minute => current - 2,
        Window::Day => current - 62,
        Window::Month => current - 24,
    }
}

/// Why a name cannot be kept (too long, or holding an API key: names are shown and logged).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("a name has at most {MAX_NAME_CHARS} characters"));
    }
    if crate::redact::redact_keys(name) != name {
        return Err("a name must not hold an API key".to_owned());
    }
    if name.chars().any(char::is_control) {
        return Err("a name must not hold control characters".to_owned());
    }
    Ok(())
}

impl Quotas {
    /// One exchange with `store`: sends this instance's new use, takes every instance's
    /// totals of the current windows, then every limit and name (unless one was edited here
    /// meanwhile). Use that could not be sent is sent next time.
    pub async fn sync_once(&self, store: Arc<dyn QuotaStore>) -> Result<(), BoxError> {
        let _one_at_a_time = self.inner.syncing.lock().await;
        // From now on ended windows' use is kept until an exchange takes it.
        self.inner
            .synced
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let edits = self.edits();
        let current = self.current_buckets();
        let taken = self.take_local();
        let sent = taken.clone();
        let to = store.clone();
        let answer =
            tokio::task::spawn_blocking(move || to.exchange_quota_use(&sent, &current)).await;
        let exchanged: Result<(), BoxError> = match answer {
            Ok(Ok(totals)) => {
                self.set_shared(&current, totals);
                Ok(())
            }
            Ok(Err(e)) => {
                self.give_back(taken);
                Err(e)
            }
            Err(e) => {
                self.give_back(taken);
                Err(e.into())
            }
        };
        // The limits and names are read even when the use could not be exchanged: an edit made
        // elsewhere applies here whatever becomes of the use.
        let rows = tokio::task::spawn_blocking(move || store.quota_rows()).await;
        match rows {
            Ok(Ok(rows)) => self.set_rows(rows, edits),
            Ok(Err(e)) => return exchanged.and(Err(e)),
            Err(e) => return exchanged.and(Err(e.into())),
        };
        exchanged
    }

    /// Exchanges with `store` now and then every `every`, in a spawned task (which must run in
    /// a tokio runtime), for as long as the returned handle is not aborted. Failures are
    /// logged; the use they could not send is sent with the next exchange.
    pub fn sync(&self, store: Arc<dyn QuotaStore>, every: Duration) -> tokio::task::JoinHandle<()> {
        let quotas = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(e) = quotas.sync_once(store.clone()).await {
                    tracing::warn!(error = %e, "quotas: the exchange with the store failed; trying again next interval");
                }
            }
        })
    }

    /// Keeps `row` in `store`, then applies it here (the other instances read it with their
    /// next exchange). Refuses a name [`check_name`] refuses.
    pub async fn save(&self, store: Arc<dyn QuotaStore>, row: QuotaRow) -> Result<(), BoxError> {
        if let Some(name) = &row.name {
            check_name(name)?;
        }
        let kept = row.clone();
        tokio::task::spawn_blocking(move || store.save_quota_row(&kept)).await??;
        self.apply(row);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
