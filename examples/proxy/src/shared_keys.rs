//! Several instances on one PostgreSQL or MySQL database act as one proxy: the library's
//! [`SharedKeys`] beside the key pool (a key disabled, cooled, reset, added or removed on one
//! instance is acted on by every instance), the live settings changed on one instance applied
//! by the others, and `API_KEYS` kept in step with the keys added and removed elsewhere
//! (docs/scale-out.md, "In the proxy"). SQLite (one instance) starts none of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gemini_balance::keys::shared::{Change, KeySealer, SharedKeys};
use gemini_balance::keys::KeyPool;
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;

use crate::settings::{Def, Settings};
use crate::state::App;
use crate::store::Kind;

/// Starts sharing `pool`'s state through the database of `kind` (after the pool was restored
/// from the store and the store set as its observer: the shared state wins over the local one).
/// `None` on SQLite.
pub async fn start(
    kind: Kind,
    settings: &Settings,
    pool: &KeyPool,
) -> Result<Option<SharedKeys>, String> {
    if kind == Kind::Sqlite {
        return Ok(None);
    }
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    {
        let (url, shown) = crate::store::database_url(kind, settings)?;
        let mut builder = SharedKeys::builder(pool.clone());
        match sealer(settings)? {
            Some(sealer) => builder = builder.sealer(sealer),
            None => tracing::warn!(
                "SHARED_KEYS_SEALING_KEY is not set: a key added through this instance's admin API serves on this instance only, and keys added on the others do not serve here (the other key changes are shared)"
            ),
        }
        // A database that went away since the store connected: the feed's own connection
        // gives up after a few seconds and the proxy does not start, as with the store.
        let feed_error = |e: gemini_balance::keys::shared::FeedError| {
            format!("{shown}: the shared key state: {e}")
        };
        let shared = match kind {
            #[cfg(feature = "postgres")]
            Kind::Postgres => {
                use std::str::FromStr;
                let mut options = sqlx::postgres::PgConnectOptions::from_str(&url)
                    .map_err(|_| format!("{shown}: not a PostgreSQL URL"))?;
                let schema = settings.text("POSTGRES_SCHEMA").trim();
                if !schema.is_empty() {
                    // Quoted as the store quotes it: the same schema whatever its case.
                    let quoted = format!("\"{}\"", schema.replace('"', "\"\""));
                    options = options.options([("search_path", quoted)]);
                }
                let feed = gemini_balance::keys::shared::PostgresFeed::connect_with(options)
                    .await
                    .map_err(feed_error)?;
                builder.start(feed).await
            }
            #[cfg(feature = "mysql")]
            Kind::MySql => {
                let feed = gemini_balance::keys::shared::MySqlFeed::connect(&url)
                    .await
                    .map_err(feed_error)?;
                builder.start(feed).await
            }
            // The store refused a DATABASE_TYPE this build has no support for.
            _ => return Ok(None),
        };
        tracing::info!(
            applied = shared.applied(),
            "key state shared with the other instances on {shown}"
        );
        Ok(Some(shared))
    }
    #[cfg(not(any(feature = "postgres", feature = "mysql")))]
    {
        let _ = (settings, pool);
        Ok(None)
    }
}

/// The prefix of the settings-table row that holds a secret setting changed through the admin
/// API, sealed for the other instances (`sealed:ALLOWED_TOKENS`). The row never holds the
/// secret in clear; an instance without the sealing key ignores it.
pub const SEALED_PREFIX: &str = "sealed:";

/// Whether a change of `def` through one instance is shared with the others, sealed: a live
/// secret setting. `API_KEYS` is not: its keys travel one by one as key changes.
pub fn shared_secret(def: &Def) -> bool {
    def.live && def.kind.is_secret() && def.name != "API_KEYS"
}

/// Seals the secret settings changed through the admin API (`ALLOWED_TOKENS`, `AUTH_TOKEN`,
/// `PROXIES`, `CUSTOM_HEADERS`, ...) for the other instances, with the sealing key of the
/// shared keys, and opens theirs. The sealed text names the setting, so a value sealed for
/// one setting (or a sealed key) is not taken for another.
#[derive(Clone)]
pub struct SettingSealer(Arc<dyn KeySealer>);

impl std::fmt::Debug for SettingSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SettingSealer(..)")
    }
}

impl SettingSealer {
    /// The sealer of SHARED_KEYS_SEALING_KEY on a shared database (`None` on SQLite, or
    /// without the sealing key: secret settings then stay per instance).
    pub fn from_settings(kind: Kind, settings: &Settings) -> Result<Option<Self>, String> {
        if kind == Kind::Sqlite {
            return Ok(None);
        }
        #[cfg(any(feature = "postgres", feature = "mysql"))]
        {
            Ok(sealer(settings)?.map(SettingSealer))
        }
        #[cfg(not(any(feature = "postgres", feature = "mysql")))]
        {
            let _ = settings;
            Ok(None)
        }
    }

    /// A sealer of its own (tests).
    #[cfg(test)]
    pub fn new(sealer: Arc<dyn KeySealer>) -> Self {
        SettingSealer(sealer)
    }

    /// The settings-table row name of `name`'s sealed value.
    pub fn row_name(name: &str) -> String {
        format!("{SEALED_PREFIX}{name}")
    }

    /// `name` set to `text` (its `.env` text form), or forgotten (`None`: back to each
    /// instance's environment), sealed.
    pub fn seal(&self, name: &str, text: Option<&str>) -> Option<String> {
        let plain = serde_json::json!({ "setting": name, "value": text }).to_string();
        self.0.seal(&plain)
    }

    /// What [`seal`](Self::seal) sealed for `name`: `Some(None)` when it was forgotten; `None`
    /// when `sealed` does not open with this sealing key or was sealed for something else.
    pub fn open(&self, name: &str, sealed: &str) -> Option<Option<String>> {
        let plain = self.0.open(sealed)?;
        let value: Value = serde_json::from_str(&plain).ok()?;
        if value.get("setting")?.as_str()? != name {
            return None;
        }
        match value.get("value")? {
            Value::Null => Some(None),
            Value::String(text) => Some(Some(text.clone())),
            _ => None,
        }
    }
}

/// The sealer of SHARED_KEYS_SEALING_KEY (checked when the settings were read), or `None`.
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn sealer(
    settings: &Settings,
) -> Result<Option<Arc<dyn gemini_balance::keys::shared::KeySealer>>, String> {
    let hex = settings.text("SHARED_KEYS_SEALING_KEY").trim();
    if hex.is_empty() {
        return Ok(None);
    }
    let sealer = gemini_balance::keys::shared::ChaChaSealer::from_hex(hex).map_err(|_| {
        "SHARED_KEYS_SEALING_KEY: expected 64 hex digits (openssl rand -hex 32)".to_owned()
    })?;
    Ok(Some(Arc::new(sealer)))
}

/// How often the shared feed's read errors are looked at: after an outage every live setting
/// is read again (the notices of a long outage may have been pruned meanwhile).
const OUTAGE_CHECK: Duration = Duration::from_secs(30);

/// The names of every setting another instance may change (secret ones apply only where the
/// sealing key opens them).
fn live_settings() -> Vec<String> {
    crate::settings::DEFS
        .iter()
        .filter(|d| (d.live && !d.kind.is_secret()) || shared_secret(d))
        .map(|d| d.name.to_owned())
        .collect()
}

/// Follows the other instances: settings they changed are re-read from the database and
/// applied here; keys they added or removed go into (or out of) `API_KEYS`, kept where this
/// instance keeps its secrets, so that a restart and the next local edit keep them. Also brings
/// `API_KEYS` in step once now, for what was applied while starting, and reads every live
/// setting again once the feed can be read after failing.
pub fn follow(app: Arc<App>, shared: &SharedKeys) {
    let watched = shared.clone();
    let outage_app = app.clone();
    // Set when settings named by another instance could not be read. Set at first: a notice sent
    // while this instance started (after it read its settings, before it listened) was missed,
    // so every live setting is read again at the first tick (at once).
    let unread = Arc::new(AtomicBool::new(true));
    let unread_names = unread.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(OUTAGE_CHECK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = watched.read_errors();
        // The catch-up at start failed: read everything again once the feed answers.
        let mut pending = last > 0;
        loop {
            ticks.tick().await;
            let errors = watched.read_errors();
            if errors != last {
                // Still failing, or failed a moment ago: look again at the next tick.
                last = errors;
                pending = true;
            } else if pending || unread.swap(false, Ordering::Relaxed) {
                pending = !outage_app
                    .apply_settings_from_elsewhere(&live_settings())
                    .await;
            }
        }
    });
    let mut settings = shared.settings();
    let settings_app = app.clone();
    tokio::spawn(async move {
        loop {
            let names = match settings.recv().await {
                Ok(name) => {
                    let mut names = vec![name];
                    // What else arrived meanwhile, in one change.
                    while let Ok(name) = settings.try_recv() {
                        names.push(name);
                    }
                    names
                }
                // Some names were missed: every live setting is re-read.
                Err(RecvError::Lagged(_)) => live_settings(),
                Err(RecvError::Closed) => return,
            };
            if !settings_app.apply_settings_from_elsewhere(&names).await {
                // Unreadable now: the watch above reads them all again later.
                unread_names.store(true, Ordering::Relaxed);
            }
        }
    });
    let mut changes = shared.changes();
    tokio::spawn(async move {
        app.adopt_pool_keys().await;
        loop {
            match changes.recv().await {
                Ok(Change::Added { .. } | Change::Removed { .. }) | Err(RecvError::Lagged(_)) => {
                    // Several changes arriving together make one edit.
                    while changes.try_recv().is_ok() {}
                    app.adopt_pool_keys().await;
                }
                Ok(_) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });
}

#[cfg(all(test, any(feature = "postgres", feature = "mysql")))]
mod tests {
    use super::*;
    use gemini_balance::keys::shared::ChaChaSealer;

    fn sealer(byte: &str) -> SettingSealer {
        SettingSealer::new(Arc::new(ChaChaSealer::from_hex(&byte.repeat(32)).unwrap()))
    }

    #[test]
    fn a_sealed_setting_opens_only_as_itself_and_under_the_same_key() {
        let one = sealer("01");
        let sealed = one.seal("ALLOWED_TOKENS", Some("[\"sk-a\"]")).unwrap();
        assert!(!sealed.contains("sk-a"));
        assert_eq!(
            one.open("ALLOWED_TOKENS", &sealed),
            Some(Some("[\"sk-a\"]".to_owned()))
        );
        // Not another setting's value, not under another sealing key.
        assert_eq!(one.open("AUTH_TOKEN", &sealed), None);
        assert_eq!(sealer("02").open("ALLOWED_TOKENS", &sealed), None);
        // Forgotten: back to each instance's environment.
        let forgotten = one.seal("PROXIES", None).unwrap();
        assert_eq!(one.open("PROXIES", &forgotten), Some(None));
        // A sealed key is not a sealed setting.
        let key = ChaChaSealer::from_hex(&"01".repeat(32))
            .unwrap()
            .seal("AIzaSyA1234567890abcdefghijklmnopqrstuv")
            .unwrap();
        assert_eq!(one.open("ALLOWED_TOKENS", &key), None);
    }

    #[test]
    fn only_live_secrets_other_than_the_keys_are_shared_sealed() {
        let find = |n: &str| crate::settings::find(n).unwrap();
        for name in ["ALLOWED_TOKENS", "AUTH_TOKEN", "PROXIES", "CUSTOM_HEADERS"] {
            assert!(shared_secret(find(name)), "{name}");
        }
        assert!(!shared_secret(find("API_KEYS")));
        assert!(!shared_secret(find("MAX_RETRIES")));
        assert!(!shared_secret(find("SHARED_KEYS_SEALING_KEY")));
    }
}
