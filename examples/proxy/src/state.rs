//! The proxy's state: what lives as long as the process (key pool, store) and what a
//! configuration change replaces (settings and everything built from them).
//!
//! A change builds a complete new [`Live`] beside the old one and swaps it in; a request holds
//! the `Live` it started with until it ends, so nothing is ever half-applied.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::store::{SharedStore, Store};
use arc_swap::ArcSwap;
use gemini_balance::keys::shared::SharedKeys;
use gemini_balance::keys::{ApiKey, KeyId, KeyPool};
use gemini_balance::metrics::MetricsRegistry;
use gemini_balance::normalize_url::NormalizeUrlLayer;
use gemini_balance::openai::images::UrlFetcher;
use gemini_balance::quota::Quotas;
use gemini_balance::store::sqlite::Retention;
use serde_json::{Map, Value};

use crate::auth_limit::{self, AuthLimit};
use crate::client_addr::TrustedProxies;
use crate::pipeline::{self, Stacks};
use crate::proxy_check::ProxyChecker;
use crate::secrets::SecretsFile;
use crate::settings::{self, Invalid, Settings};
use crate::shared_keys::{shared_secret, SettingSealer};
use crate::upstream::{self, Upstream};
use gemini_balance::auth::ClientTokens;

/// How long applying settings changed elsewhere waits for the database (holding the change lock).
const SETTINGS_READ_LIMIT: Duration = Duration::from_secs(5);

/// Settings whose change needs new upstream clients.
const CLIENT_SETTINGS: &[&str] = &[
    "TIME_OUT",
    "CUSTOM_HEADERS",
    "BASE_URL",
    "PROXIES",
    "PROXIES_USE_CONSISTENCY_HASH_BY_API_KEY",
];

/// Settings the store's log purge reads (see [`retention`]).
const RETENTION_SETTINGS: &[&str] = &[
    "AUTO_DELETE_ERROR_LOGS_ENABLED",
    "AUTO_DELETE_ERROR_LOGS_DAYS",
    "AUTO_DELETE_REQUEST_LOGS_ENABLED",
    "AUTO_DELETE_REQUEST_LOGS_DAYS",
    "DATABASE_MAX_SIZE_MB",
];

/// Everything built from the settings.
pub struct Live {
    pub settings: Settings,
    pub tokens: ClientTokens,
    /// AUTH_TOKEN: the admin API's credential.
    pub admin: ClientTokens,
    pub stacks: Stacks,
    pub upstream: Upstream,
    /// CORS on the API routes (CORS_ENABLED, CORS_ALLOWED_ORIGINS); see [`crate::cors`].
    pub cors: Option<tower_http::cors::CorsLayer>,
    /// URL_NORMALIZATION_ENABLED: client path mistakes fixed before routing, never on the
    /// admin API.
    pub normalize_url: Option<NormalizeUrlLayer>,
    /// Who may read `/metrics` (METRICS_TOKEN, METRICS_ALLOWED_IPS); `None`: nobody, and the
    /// requests are not measured.
    pub metrics: Option<crate::metrics::Access>,
}

/// Applies the log settings ([`LOG_SETTINGS`]) to the running log.
pub type LogSetter = Box<dyn Fn(&Settings) -> Result<(), String> + Send + Sync>;

/// Settings of the running log (see [`crate::logging`]).
const LOG_SETTINGS: &[&str] = &[
    "LOG_LEVEL",
    "LOG_FORMAT",
    "LOG_DIR",
    "LOG_FILE_ROTATION",
    "LOG_FILE_MAX_SIZE_MB",
    "LOG_FILE_MAX_FILES",
    "LOG_FILE_MAX_AGE_DAYS",
];

/// The proxy.
pub struct App {
    pub pool: KeyPool,
    pub store: SharedStore,
    /// Client quotas: counted here, kept in and shared through the store (see `main`).
    pub quotas: Quotas,
    /// The Prometheus series (`/metrics`): the process's, kept across configuration changes.
    pub metrics: MetricsRegistry,
    pub secrets: SecretsFile,
    /// Failed authentications per client address, on every surface (AUTH_FAILURE_*).
    pub auth_limit: Arc<AuthLimit>,
    /// Checks PROXIES entries for the admin API (and remembers results for 10 s).
    pub proxy_checker: Arc<ProxyChecker>,
    /// `GET /health/ready`'s store check.
    pub readiness: crate::ready::Readiness,
    /// The key state shared with the other instances on the same database (`None` on SQLite):
    /// told of every live setting changed here.
    pub shared: Option<SharedKeys>,
    /// Seals the secret settings changed here for the other instances, and opens theirs
    /// (`None` on SQLite or without SHARED_KEYS_SEALING_KEY: secret settings stay per instance).
    sealer: Option<SettingSealer>,
    /// The settings from the environment and `.env` alone: what a forgotten change reverts to.
    base: Settings,
    live: ArcSwap<Live>,
    /// One configuration change at a time (each is read, modify, write).
    changes: tokio::sync::Mutex<()>,
    /// Told after every change, so that background jobs (the key re-check) re-read their
    /// settings at once instead of at their next run.
    changed: tokio::sync::watch::Sender<()>,
    set_log: LogSetter,
}

impl App {
    pub fn new(
        pool: KeyPool,
        store: SharedStore,
        secrets: SecretsFile,
        base: Settings,
        settings: Settings,
        set_log: LogSetter,
        shared: Option<SharedKeys>,
    ) -> Result<App, String> {
        let quotas = Quotas::default();
        let metrics = MetricsRegistry::builder()
            .key_pool(pool.clone())
            .store(store.clone())
            .build();
        let live = Live::build(settings, &pool, &store, &quotas, &metrics, None)?;
        let auth_limit = Arc::new(AuthLimit::new(auth_policy(&live.settings)));
        Ok(App {
            pool,
            store,
            quotas,
            metrics,
            secrets,
            auth_limit,
            proxy_checker: Arc::default(),
            readiness: Default::default(),
            shared,
            sealer: None,
            base,
            live: ArcSwap::from_pointee(live),
            changes: tokio::sync::Mutex::new(()),
            changed: tokio::sync::watch::Sender::new(()),
            set_log,
        })
    }

    /// Marks changed (and wakes) after each configuration change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// The current settings and what is built from them.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Applies a partial change (`{"NAME": value}`): every value is checked first, and if one
    /// is invalid nothing changes. Then the change takes effect at once and is kept (database,
    /// or the secrets file for secrets). Returns the names changed.
    pub async fn change(
        &self,
        changes: &Map<String, Value>,
    ) -> Result<Vec<&'static str>, Vec<Invalid>> {
        let _one_at_a_time = self.changes.lock().await;
        let current = self.live();
        let mut next = current.settings.clone();
        let mut invalid = Vec::new();
        let mut names = Vec::new();
        for (name, value) in changes {
            match next.set(name, value) {
                Ok(_) => names.extend(settings::find(name).map(|d| d.name)),
                Err(e) => invalid.push(e),
            }
        }
        if !invalid.is_empty() {
            return Err(invalid);
        }
        self.commit(&current, next, &names, Keep::Yes).await?;
        Ok(names)
    }

    /// Forgets the kept change of one setting: the environment's value (or the default) applies again.
    pub async fn forget(&self, name: &str) -> Result<&'static str, Vec<Invalid>> {
        let _one_at_a_time = self.changes.lock().await;
        let current = self.live();
        let mut next = current.settings.clone();
        next.revert(name, &self.base).map_err(|e| vec![e])?;
        let def = settings::find(name).map(|d| d.name).unwrap_or("");
        self.commit(&current, next, &[def], Keep::Yes).await?;
        Ok(def)
    }

    /// Edits the key list (API_KEYS) under the change lock, then applies and keeps it.
    pub async fn edit_keys<T>(
        &self,
        edit: impl FnOnce(&mut Vec<String>) -> T,
    ) -> Result<T, Vec<Invalid>> {
        let _one_at_a_time = self.changes.lock().await;
        let current = self.live();
        let mut keys = current.settings.list("API_KEYS");
        let out = edit(&mut keys);
        let mut next = current.settings.clone();
        next.set("API_KEYS", &Value::from(keys))
            .map_err(|e| vec![e])?;
        self.commit(&current, next, &["API_KEYS"], Keep::Yes)
            .await?;
        Ok(out)
    }

    /// Shares the secret settings changed here with the other instances, sealed by `sealer`,
    /// and applies theirs (see [`SettingSealer`]).
    pub fn sealing_settings(mut self, sealer: Option<SettingSealer>) -> Self {
        self.sealer = sealer;
        self
    }

    /// Applies the live settings another instance changed (`names`): re-read from the shared
    /// database's settings table (a setting no longer there reverts to this instance's
    /// environment), applied here without being kept or announced again. Invalid or unknown
    /// values are logged and left out. `false` if the settings could not be read.
    pub async fn apply_settings_from_elsewhere(&self, names: &[String]) -> bool {
        let _one_at_a_time = self.changes.lock().await;
        let store = self.store.clone();
        // Bounded: the change lock is held meanwhile, and every admin edit here waits for it; a
        // database that stops answering must not hold them all. Read again later when late.
        let read = tokio::task::spawn_blocking(move || store.settings());
        let stored = match tokio::time::timeout(SETTINGS_READ_LIMIT, read).await {
            Ok(Ok(Ok(stored))) => stored,
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "settings changed on another instance could not be read; read again once the database is back");
                return false;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "settings changed on another instance could not be read");
                return false;
            }
            Err(_) => {
                tracing::warn!(
                    "settings changed on another instance: the database did not answer within {} s; read again later",
                    SETTINGS_READ_LIMIT.as_secs()
                );
                return false;
            }
        };
        let current = self.live();
        let mut next = current.settings.clone();
        let mut changed = Vec::new();
        // Secret settings as opened from their sealed rows: kept in this instance's secrets
        // file once applied (`None`: forgotten there too).
        let mut secrets: Vec<(&'static str, Option<String>)> = Vec::new();
        for name in names {
            let Some(def) = settings::find(name).filter(|d| d.live) else {
                continue;
            };
            if changed.contains(&def.name) {
                continue;
            }
            let applied = if def.kind.is_secret() {
                let Some(sealer) = self.sealer.as_ref().filter(|_| shared_secret(def)) else {
                    continue;
                };
                let row_name = SettingSealer::row_name(def.name);
                // No sealed row: never changed through an admin API; the local value stays.
                let Some(row) = stored.iter().find(|s| s.name == row_name) else {
                    continue;
                };
                match sealer.open(def.name, &row.value) {
                    Some(Some(text)) => {
                        let applied = next.apply_stored(def.name, &text);
                        secrets.push((def.name, Some(text)));
                        applied
                    }
                    Some(None) => {
                        secrets.push((def.name, None));
                        next.revert(def.name, &self.base).map(drop)
                    }
                    None => {
                        tracing::warn!(setting = def.name, "a secret setting changed on another instance does not open with this instance's SHARED_KEYS_SEALING_KEY; ignored");
                        continue;
                    }
                }
            } else {
                match stored.iter().find(|s| s.name == def.name) {
                    Some(row) => next.apply_stored(def.name, &row.value),
                    None => next.revert(def.name, &self.base).map(drop),
                }
            };
            if let Err(e) = applied {
                tracing::warn!(error = %e, "a setting changed on another instance is not valid here; ignored");
                continue;
            }
            if next.value(def.name) != current.settings.value(def.name)
                || next.source(def.name) != current.settings.source(def.name)
            {
                changed.push(def.name);
            }
        }
        if changed.is_empty() {
            return true;
        }
        if let Err(invalid) = self.commit(&current, next, &changed, Keep::No).await {
            let names: Vec<&str> = invalid.iter().map(|i| i.name.as_str()).collect();
            tracing::warn!(settings = %names.join(", "), "settings changed on another instance cannot be applied here");
            return true;
        }
        // Secrets applied here are kept where this instance keeps its secrets, as a change made
        // here would be: a restart while the database is away starts with them.
        secrets.retain(|(name, _)| changed.contains(name));
        if !secrets.is_empty() {
            let file = self.secrets.clone();
            let kept = tokio::task::spawn_blocking(move || {
                secrets
                    .iter()
                    .try_for_each(|(name, text)| file.store(name, text.as_deref()))
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
            if let Err(e) = kept {
                tracing::warn!(error = %e, "secret settings changed on another instance are applied but could not be kept in this instance's secrets file");
            }
        }
        true
    }

    /// Brings `API_KEYS` in step with the pool after other instances added or removed keys
    /// (applied to the pool by [`SharedKeys`]): keys no longer in the pool leave the list, keys
    /// new in the pool join it, and the list is kept where this instance keeps its secrets, so
    /// that a restart, and the next edit made here, keep them.
    pub async fn adopt_pool_keys(&self) {
        let _one_at_a_time = self.changes.lock().await;
        let current = self.live();
        let listed = current.settings.list("API_KEYS");
        let in_pool: HashSet<KeyId> = self.pool.ids().into_iter().collect();
        let mut keys: Vec<String> = listed
            .iter()
            .filter(|raw| ApiKey::new(raw).is_ok_and(|k| in_pool.contains(k.id())))
            .cloned()
            .collect();
        let known: HashSet<KeyId> = keys
            .iter()
            .filter_map(|raw| ApiKey::new(raw).ok().map(|k| k.id().clone()))
            .collect();
        for id in self.pool.ids() {
            if !known.contains(&id) {
                if let Some(key) = self.pool.key(&id) {
                    keys.push(key.expose_secret().to_owned());
                }
            }
        }
        if keys == listed {
            return;
        }
        let mut next = current.settings.clone();
        let result = next
            .set("API_KEYS", &Value::from(keys))
            .map_err(|e| vec![e]);
        let result = match result {
            Ok(_) => self.commit(&current, next, &["API_KEYS"], Keep::Yes).await,
            Err(e) => Err(e),
        };
        if let Err(invalid) = result {
            let why: Vec<&str> = invalid.iter().map(|i| i.expected.as_str()).collect();
            tracing::warn!(reason = %why.join("; "), "API_KEYS could not follow the keys added or removed on another instance");
        }
    }

    async fn commit(
        &self,
        current: &Live,
        next: Settings,
        names: &[&'static str],
        keep_it: Keep,
    ) -> Result<(), Vec<Invalid>> {
        let invalid = |name: &str, expected: String| {
            vec![Invalid {
                name: name.to_owned(),
                expected,
            }]
        };
        // Side effects that can fail are checked before anything is applied.
        let new_keys = if names.contains(&"API_KEYS") {
            let mut keys = Vec::new();
            for (i, raw) in next.list("API_KEYS").iter().enumerate() {
                match ApiKey::new(raw) {
                    Ok(key) => keys.push(key),
                    Err(e) => {
                        return Err(invalid(
                            "API_KEYS",
                            format!("valid API keys (entry #{} is not: {e})", i + 1),
                        ))
                    }
                }
            }
            Some(keys)
        } else {
            None
        };
        let reuse =
            (!names.iter().any(|n| CLIENT_SETTINGS.contains(n))).then_some(&current.upstream);
        let live = Live::build(
            next,
            &self.pool,
            &self.store,
            &self.quotas,
            &self.metrics,
            reuse,
        )
        .map_err(|e| {
            let name = CLIENT_SETTINGS
                .iter()
                .find(|n| e.starts_with(**n))
                .copied()
                .unwrap_or("settings");
            // The message names the setting already ("PROXIES: entry #1: ..."): said once.
            let why = e
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(": "))
                .unwrap_or(&e);
            invalid(name, format!("a value the proxy can use ({why})"))
        })?;
        // A new LOG_DIR must be a directory the log can be written in.
        if names.contains(&"LOG_DIR") {
            let dir = live.settings.text("LOG_DIR").trim().to_owned();
            if !dir.is_empty() {
                let made = tokio::task::spawn_blocking(move || {
                    crate::log_files::prepare_dir(std::path::Path::new(&dir))
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
                made.map_err(|e| {
                    invalid("LOG_DIR", format!("a directory that can be created ({e})"))
                })?;
            }
        }
        // Keep the change, then apply it (a change read from the database is kept there).
        let kept_names = if keep_it == Keep::Yes { names } else { &[] };
        for name in kept_names {
            let def = settings::find(name).map(|d| (d.name, d.kind.is_secret()));
            let Some((name, secret)) = def else { continue };
            let from_base = live.settings.source(name) == self.base.source(name)
                && live.settings.value(name) == self.base.value(name);
            let text = (!from_base).then(|| settings::to_text(live.settings.value(name)));
            let (secrets, store) = (self.secrets.clone(), self.store.clone());
            // A secret for the other instances: sealed into the settings table beside it.
            let sealed = match (&self.sealer, &self.shared) {
                (Some(sealer), Some(_)) if settings::find(name).is_some_and(shared_secret) => {
                    let sealed = sealer.seal(name, text.as_deref()).ok_or_else(|| {
                        invalid(
                            name,
                            "a value that can be sealed for the other instances".into(),
                        )
                    })?;
                    Some((SettingSealer::row_name(name), sealed))
                }
                _ => None,
            };
            let kept = tokio::task::spawn_blocking(move || {
                // The sealed row first: if the database refuses it, nothing has changed (a
                // secrets file ahead of the row would be overridden by the older row at the
                // next start).
                if let Some((row, sealed)) = sealed {
                    store.set_setting(&row, &sealed).map_err(|e| {
                        format!("not sealed for the other instances (the database: {e}); nothing changed")
                    })?;
                }
                keep(&secrets, &*store, name, secret, text.as_deref())
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
            kept.map_err(|e| invalid(name, format!("a value that can be kept ({e})")))?;
        }
        if let Some(keys) = new_keys {
            // The keys that left the list: a key in the pool but not in the list (added on
            // another instance a moment ago, not yet in API_KEYS) stays.
            let wanted: HashSet<KeyId> = keys.iter().map(|k| k.id().clone()).collect();
            let gone: Vec<KeyId> = current
                .settings
                .list("API_KEYS")
                .iter()
                .filter_map(|raw| ApiKey::new(raw).ok())
                .map(|k| k.id().clone())
                .filter(|id| !wanted.contains(id))
                .collect();
            // The keys that joined the list. Not every key listed: one listed in `current` but
            // gone from the pool meanwhile (removed on another instance while this edit waited
            // for its keep) would come back here, and be published as added again everywhere.
            let listed: HashSet<KeyId> = current
                .settings
                .list("API_KEYS")
                .iter()
                .filter_map(|raw| ApiKey::new(raw).ok())
                .map(|k| k.id().clone())
                .collect();
            let added: Vec<ApiKey> = keys
                .into_iter()
                .filter(|k| !listed.contains(k.id()))
                .collect();
            self.pool.remove(&gone);
            self.pool.add(added);
        }
        self.pool
            .set_max_failures(u32::try_from(live.settings.int("MAX_FAILURES")).unwrap_or(u32::MAX));
        if names.iter().any(|n| LOG_SETTINGS.contains(n)) {
            // Checked above and by `Settings::set`, so this should not refuse them.
            if let Err(e) = (self.set_log)(&live.settings) {
                tracing::warn!(error = %e, "the log settings could not be applied to the running log");
            }
        }
        if names.iter().any(|n| RETENTION_SETTINGS.contains(n)) {
            let (store, retention) = (self.store.clone(), retention(&live.settings));
            let sent = tokio::task::spawn_blocking(move || store.set_retention(retention)).await;
            if let Err(e) = sent
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
            {
                tracing::warn!(error = %e, "the new log retention could not be given to the store");
            }
        }
        self.auth_limit.set_policy(auth_policy(&live.settings));
        self.live.store(Arc::new(live));
        self.changed.send_replace(());
        if keep_it == Keep::Yes {
            // The other instances re-read these from the database (secrets sealed).
            if let Some(shared) = &self.shared {
                for name in names {
                    let Some(def) = settings::find(name).filter(|d| d.live) else {
                        continue;
                    };
                    if !def.kind.is_secret() || (shared_secret(def) && self.sealer.is_some()) {
                        shared.setting_changed(name);
                    } else if shared_secret(def) {
                        tracing::warn!(setting = def.name, "a secret setting changed here stays on this instance: without SHARED_KEYS_SEALING_KEY the other instances do not learn of it");
                    }
                }
            }
            tracing::info!(settings = %names.join(", "), "configuration changed");
        } else {
            tracing::info!(settings = %names.join(", "), "configuration changed on another instance; applied");
        }
        Ok(())
    }
}

/// Whether [`App::commit`] keeps a change (and tells the other instances of it), or only
/// applies it (read from the shared database, where another instance kept it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    Yes,
    No,
}

/// Keeps the change of one setting where the proxy reads it at start: a secret in the secrets
/// file, anything else in the store's settings table (the database never holds a secret).
/// `None` forgets a kept change (the environment's value applies again). Blocks.
pub fn keep(
    secrets: &SecretsFile,
    store: &dyn Store,
    name: &str,
    secret: bool,
    text: Option<&str>,
) -> Result<(), String> {
    match (secret, text) {
        (true, text) => secrets.store(name, text),
        (false, Some(text)) => store.set_setting(name, text).map_err(|e| e.to_string()),
        (false, None) => store
            .delete_setting(name)
            .map(drop)
            .map_err(|e| e.to_string()),
    }
}

impl Live {
    /// Builds everything from `settings`; `upstream` is reused when given (its settings are unchanged).
    pub fn build(
        settings: Settings,
        pool: &KeyPool,
        store: &SharedStore,
        quotas: &Quotas,
        metrics: &MetricsRegistry,
        upstream: Option<&Upstream>,
    ) -> Result<Live, String> {
        let access = crate::metrics::Access::of(&settings);
        let upstream = match upstream {
            Some(u) => u.clone(),
            None => build_upstream(&settings)?,
        };
        let parts = pipeline::Parts {
            pool: pool.clone(),
            store: store.clone(),
            quotas: quotas.clone(),
            upstream: upstream.clone(),
            // Requests are measured only while someone may read the measures.
            metrics: access.as_ref().map(|_| metrics.clone()),
            images: Arc::new(
                UrlFetcher::builder()
                    .allow_private_networks(settings.bool("IMAGE_FETCH_ALLOW_PRIVATE_NETWORKS"))
                    .user_agent(axum::http::HeaderValue::from_static(upstream::USER_AGENT))
                    .build()
                    .map_err(|e| format!("the image fetcher could not be built: {e}"))?,
            ),
        };
        let stacks = pipeline::build(&settings, &parts);
        let auth_token = Some(settings.text("AUTH_TOKEN")).filter(|t| !t.is_empty());
        Ok(Live {
            cors: crate::cors::layer(&settings),
            normalize_url: settings
                .bool("URL_NORMALIZATION_ENABLED")
                .then(|| NormalizeUrlLayer::new().keep("/api")),
            tokens: ClientTokens::new(
                settings
                    .list("ALLOWED_TOKENS")
                    .iter()
                    .map(String::as_str)
                    .chain(auth_token),
            ),
            admin: ClientTokens::new(auth_token),
            metrics: access,
            stacks,
            upstream,
            settings,
        })
    }
}

/// The failed-authentication limit of the settings (AUTH_FAILURE_*, TRUSTED_PROXIES).
pub fn auth_policy(settings: &Settings) -> auth_limit::Policy {
    auth_limit::Policy {
        burst: u32::try_from(settings.int("AUTH_FAILURE_BURST")).unwrap_or(u32::MAX),
        refill: Duration::from_secs(settings.int("AUTH_FAILURE_REFILL_SECONDS").unsigned_abs()),
        // Checked when the setting was read (settings::value_rules).
        trusted: TrustedProxies::parse(&settings.list("TRUSTED_PROXIES")).unwrap_or_default(),
    }
}

/// How long logs are kept (AUTO_DELETE_*): purged at midnight in TIMEZONE, as in
/// Gemini-Balance, and whenever these settings change.
pub fn retention(settings: &Settings) -> Retention {
    let days = |enabled: &str, days: &str| {
        settings.bool(enabled).then(|| {
            let days = u64::try_from(settings.int(days)).unwrap_or(0);
            Duration::from_secs(days.saturating_mul(86_400))
        })
    };
    let mut retention = Retention::default();
    retention.logs_at_midnight = true;
    retention.error_logs = days(
        "AUTO_DELETE_ERROR_LOGS_ENABLED",
        "AUTO_DELETE_ERROR_LOGS_DAYS",
    );
    retention.request_logs = days(
        "AUTO_DELETE_REQUEST_LOGS_ENABLED",
        "AUTO_DELETE_REQUEST_LOGS_DAYS",
    );
    let max_mb = u64::try_from(settings.int("DATABASE_MAX_SIZE_MB")).unwrap_or(0);
    retention.max_bytes = (max_mb > 0).then(|| max_mb.saturating_mul(1024 * 1024));
    retention
}

/// The upstream routes: pooled keep-alive connections (HTTP/2 where offered), TIME_OUT,
/// CUSTOM_HEADERS and our `User-Agent` (unless CUSTOM_HEADERS sets one), pinned to BASE_URL;
/// direct, or one per PROXIES entry (see [`Upstream`]).
pub fn build_upstream(settings: &Settings) -> Result<Upstream, String> {
    upstream::build(
        &upstream_options(settings)?,
        &settings.list("PROXIES"),
        settings.bool("PROXIES_USE_CONSISTENCY_HASH_BY_API_KEY"),
    )
}

/// What every upstream route is built with: TIME_OUT, CUSTOM_HEADERS and our `User-Agent`
/// (unless CUSTOM_HEADERS sets one), BASE_URL.
pub fn upstream_options(settings: &Settings) -> Result<upstream::Options, String> {
    let mut headers = custom_headers(settings.value("CUSTOM_HEADERS"))?;
    if !headers.contains_key(axum::http::header::USER_AGENT) {
        headers.insert(
            axum::http::header::USER_AGENT,
            axum::http::HeaderValue::from_static(upstream::USER_AGENT),
        );
    }
    Ok(upstream::Options {
        time_out: Duration::from_secs(settings.int("TIME_OUT").unsigned_abs()),
        headers,
        base_url: settings.text("BASE_URL").trim_end_matches('/').to_owned(),
    })
}

/// `CUSTOM_HEADERS` (a JSON object) as headers sent with every upstream request.
fn custom_headers(value: &Value) -> Result<axum::http::header::HeaderMap, String> {
    let mut headers = axum::http::header::HeaderMap::new();
    for (name, value) in value.as_object().into_iter().flatten() {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let name = axum::http::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("CUSTOM_HEADERS: {name:?} is not a header name"))?;
        let value = axum::http::header::HeaderValue::from_str(&text).map_err(|_| {
            format!("CUSTOM_HEADERS: the value of {name} is not a valid header value")
        })?;
        headers.insert(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_budget_reaches_the_store_and_changes_live() {
        let vars = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let (none, _) = Settings::from_vars(&vars(&[])).unwrap();
        assert_eq!(retention(&none).max_bytes, None);
        let (set, _) = Settings::from_vars(&vars(&[("DATABASE_MAX_SIZE_MB", "64")])).unwrap();
        assert_eq!(retention(&set).max_bytes, Some(64 * 1024 * 1024));
        // A change through the admin API gives the store its new retention.
        assert!(RETENTION_SETTINGS.contains(&"DATABASE_MAX_SIZE_MB"));
    }
}
