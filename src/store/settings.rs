//! [`SettingsStore`]: the non-secret settings a store keeps (what an admin changed at run
//! time), whatever the database.
//!
//! # Example
//!
//! ```
//! use gemini_balance::store::{Setting, SettingsStore, StoreError};
//!
//! // Code that keeps settings takes any store.
//! fn max_failures(store: &dyn SettingsStore) -> Result<Option<String>, StoreError> {
//!     Ok(store
//!         .settings()?
//!         .into_iter()
//!         .find(|s: &Setting| s.name == "MAX_FAILURES")
//!         .map(|s| s.value))
//! }
//! # let _ = max_failures;
//! ```

use serde::Serialize;

use super::StoreError;

/// One stored setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Setting {
    /// The setting's name (such as `MAX_FAILURES`).
    pub name: String,
    /// Its value, as text.
    pub value: String,
    /// When it was last set, in milliseconds since the Unix epoch.
    pub updated_ms: i64,
}

/// Settings by name, kept by a store. The methods block until the database answered: call
/// them off the request path (from async code, with `tokio::task::spawn_blocking`).
///
/// Settings are not a place for secrets: stores refuse a value that holds a Google API key.
pub trait SettingsStore: Send + Sync + 'static {
    /// Every setting, by name.
    fn settings(&self) -> Result<Vec<Setting>, StoreError>;
    /// Sets (inserts or replaces) a setting; committed when this returns.
    fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError>;
    /// Deletes a setting; `true` if it existed.
    fn delete_setting(&self, name: &str) -> Result<bool, StoreError>;
}

/// The refusal of a value holding an API key (every store checks this before writing).
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) fn refuse_secret(name: &str, value: &str) -> Result<(), StoreError> {
    if crate::redact::redact_keys(value) != value {
        return Err(StoreError::new(format!(
            "setting {name}: the value holds an API key, which the database never stores"
        )));
    }
    Ok(())
}
