//! `gemini-balance-proxy`: the gemini-balance layers in front of Gemini, configured like the
//! Python Gemini-Balance server (same `.env`).
//!
//! It serves the Gemini-native routes (`/v1beta`, `/gemini/v1beta`, `/v1`), the OpenAI chat,
//! embeddings and model-list routes (`/v1`, `/hf/v1`) and the pass-through to Gemini's own
//! OpenAI-compatible endpoint (`/openai/v1`) through the library's layers (usage recording in
//! SQLite, pseudo streaming, stream optimizer, parameter filter, header allowlist, retry, key
//! rotation, decoding), with CORS for browser front-ends on those routes and, when enabled, URL
//! normalisation; keeps key state across restarts, answers `GET /health`, and serves the admin
//! API (`/api`) and the web admin. `docs/proxy.md` is the whole picture; the routes Gemini-Balance
//! has and this version does not are listed there. `gemini-balance-proxy import` brings a
//! Python Gemini-Balance server's stored settings and logs over (see `import`); the first
//! start brings its settings over by itself (`import::first_start`).

#![warn(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod admin;
mod auth_limit;
mod client_addr;
mod config;
mod cors;
mod data_lock;
mod dotenv;
mod import;
mod log_files;
mod log_writer;
mod logging;
mod metrics;
mod models;
mod pipeline;
mod private_files;
mod proxy_check;
mod ready;
mod recheck;
mod request_line;
mod route;
mod secrets;
mod serve;
mod settings;
mod shared_keys;
mod state;
mod store;
mod upstream;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, Response, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Router;
use gemini_balance::api_error::{error_response, ApiFlavor};
use gemini_balance::classify::{classify_any_error, FailureClass};
use gemini_balance::ext::{Attempts, ModelName, RequestInfo};
use gemini_balance::keys::{ApiKey, KeyId, KeyPool, KeyStatus};
use gemini_balance::store::SqliteStore;
use store::SharedStore;
use tower::ServiceExt;

use crate::auth_limit::{Blocked, Surface};
use crate::config::Config;
use crate::models::ListShape;
use crate::route::Route;
use crate::secrets::SecretsFile;
use crate::state::App;
use gemini_balance::auth::TokenPlacement as Placement;

use crate::logging::STARTUP;

/// The log (stdout and files), flushed before the process ends.
static LOG: std::sync::OnceLock<logging::Logging> = std::sync::OnceLock::new();

/// The log's writer for the hand-formatted request line; unset when the log is coloured (a
/// terminal), where the line goes through tracing's formatter.
static REQUEST_LINES: std::sync::OnceLock<log_writer::LogWriter> = std::sync::OnceLock::new();

/// mimalloc instead of the system allocator: see docs/performance.md, "Proxy throughput".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `gemini-balance-proxy --help`.
const USAGE: &str = "\
Usage: gemini-balance-proxy [COMMAND]

Without a command, serves: configured like the Python Gemini-Balance server, from .env in the
working directory and the environment (docs/proxy.md).

Commands:
  import <SOURCE>   bring a Python Gemini-Balance server's stored settings (and with --logs its
                    logs) over; `gemini-balance-proxy import --help` says more
  help              this text (also -h, --help)
  version           the version (also -V, --version)
";

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect()
    {
        Ok(args) => args,
        Err(arg) => {
            eprintln!("gemini-balance-proxy: {arg:?} is not valid UTF-8\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    match args.first().map(String::as_str) {
        None => {}
        Some("import") => std::process::exit(import::main(&args[1..]).await),
        Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            return;
        }
        Some("version" | "-V" | "--version") => {
            println!("gemini-balance-proxy {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        Some(other) => {
            eprintln!("gemini-balance-proxy: unknown command {other:?}\n\n{USAGE}");
            std::process::exit(2);
        }
    }
    let result = run().await;
    if let Some(log) = LOG.get() {
        log.flush();
    }
    if let Err(err) = result {
        eprintln!("gemini-balance-proxy: {err}");
        std::process::exit(2);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // `.env` in the working directory, under the environment (which wins).
    let (vars, skipped_lines) = dotenv::load(std::env::vars().collect())?;
    let config = Config::from_vars(&vars)?;

    // The log as `.env` and the environment set it (LOG_LEVEL, LOG_FORMAT, LOG_DIR, LOG_FILE_*);
    // what was changed through the admin API applies once the database is open.
    let _ = LOG.set(logging::Logging::start(&config.settings)?);
    let log = LOG.get().ok_or("the log could not be started")?;
    if !log.colours() {
        let _ = REQUEST_LINES.set(log.writer().clone());
    }
    let set_log: state::LogSetter = Box::new(|settings: &settings::Settings| match LOG.get() {
        Some(log) => log.apply(settings),
        None => Ok(()),
    });

    if !skipped_lines.is_empty() {
        let lines: Vec<String> = skipped_lines.iter().map(ToString::to_string).collect();
        tracing::warn!(
            ".env: the statements on these lines could not be read and are skipped, as Gemini-Balance's python-dotenv skips them: {}",
            lines.join(", ")
        );
    }
    if !config.unsupported.is_empty() {
        tracing::warn!(
            "these settings are not supported by this version and are ignored: {}",
            config.unsupported.join(", ")
        );
    }
    if !config.adjusted.is_empty() {
        let adjusted: Vec<String> = config.adjusted.iter().map(ToString::to_string).collect();
        tracing::warn!(
            "these settings are outside what this proxy can use and are adjusted: {}",
            adjusted.join(", ")
        );
    }

    // The Python server's settings and keys, once, before anything of this proxy's data is
    // created (see import::first_start).
    import::at_first_start(&vars, &config).await?;

    let base = config.settings;
    let kind = store::Kind::of(&base);
    let db_path = format!("data/{}.db", base.text("SQLITE_DATABASE"));
    let secrets = SecretsFile::new(format!(
        "data/{}.secrets.json",
        base.text("SQLITE_DATABASE")
    ));
    // The log purge waits for the stored settings (they live in this database): opened
    // without it, the store gets AUTO_DELETE_* once they are read (see below), and purges then.
    let mut retention = state::retention(&base);
    retention.error_logs = None;
    retention.request_logs = None;
    // The request path never waits for the database: past this many queued records, new
    // ones are dropped and counted (docs/store.md, "The writer thread").
    let capacity = usize::try_from(base.int("SQLITE_QUEUE_CAPACITY")).unwrap_or(16_384);
    let mut _lock = None;
    let (store, database): (SharedStore, String) = if kind == store::Kind::Sqlite {
        private_files::prepare(
            std::path::Path::new("data"),
            std::path::Path::new(&db_path),
            &[secrets.path()],
        )
        .map_err(|e| format!("SQLITE_DATABASE ({db_path}): {e}"))?;
        // Held while the proxy runs: `import` does not write beside it (see data_lock).
        let lock_path = data_lock::path_of(std::path::Path::new(&db_path));
        // A file system without advisory locks (some network and overlay mounts) must not keep the
        // proxy from starting, as it did not before the lock: it then runs unguarded, and says so.
        _lock = match data_lock::DataLock::shared(&lock_path) {
            Ok(lock) => Some(lock),
            Err(data_lock::LockError::Busy) => {
                return Err(format!(
                    "an import into {db_path} is under way ({} is locked): start the proxy when it has finished",
                    lock_path.display()
                )
                .into())
            }
            Err(data_lock::LockError::Failed(e)) => {
                tracing::warn!(
                    "the data lock could not be taken ({e}): an `import` will not be kept from writing into {db_path} while this proxy runs"
                );
                None
            }
        };
        let store = SqliteStore::builder(&db_path)
            // The writer appends; 8 MiB of page cache holds the pages it touches (the library's
            // default 16 MiB would be a quarter of the proxy's memory budget).
            .cache_mib(8)
            .channel_capacity(capacity)
            .retention(retention)
            .time_zone(config.time_zone.clone())
            .open()
            .map_err(|e| format!("SQLITE_DATABASE ({db_path}): {e}"))?;
        (Arc::new(store), db_path.clone())
    } else {
        // The secrets file stays per instance, under data/ (the database never holds a secret).
        private_files::prepare_dirs(std::path::Path::new("data"), secrets.path())
            .map_err(|e| format!("data/: {e}"))?;
        let base_for_store = base.clone();
        let time_zone = config.time_zone.clone();
        // Connecting and migrating block: off the runtime's threads.
        tokio::task::spawn_blocking(move || {
            store::open_networked(kind, &base_for_store, capacity, retention, time_zone)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("DATABASE_TYPE={}: {e}", base.text("DATABASE_TYPE")))?
    };

    // On a networked store, the Python server's settings and keys at the first start (see
    // import::first_start; on SQLite they were imported before the store was opened).
    if kind != store::Kind::Sqlite {
        import::into_networked(&vars, &base, &*store, &secrets).await?;
    }

    // Settings that became secrets (CUSTOM_HEADERS) leave the database for the secrets file.
    let moved = secrets::adopt_from_database(&secrets, &*store, |name| {
        settings::find(name).is_some_and(|d| d.kind.is_secret())
    })?;
    if !moved.is_empty() {
        tracing::info!(
            settings = %moved.join(", "),
            file = %secrets.path().display(),
            "moved secret settings out of the database into the secrets file"
        );
    }

    // Changes made through the admin API win over the environment, as in Gemini-Balance:
    // secrets from the secrets file, everything else from the database.
    let mut settings = base.clone();
    for (name, raw) in secrets.load()? {
        match settings::find(&name) {
            Some(def) if def.kind.is_secret() => settings
                .apply_stored(&name, &raw)
                .map_err(|e| format!("{}: {e}", secrets.path().display()))?,
            _ => tracing::warn!(
                setting = %name,
                file = %secrets.path().display(),
                "ignoring an entry of the secrets file that is not a secret setting"
            ),
        }
    }
    // Secret settings changed through an admin API of another instance on this database,
    // sealed there (none on SQLite, or without SHARED_KEYS_SEALING_KEY).
    let setting_sealer = shared_keys::SettingSealer::from_settings(kind, &base)?;
    for stored in store.settings()? {
        if let Some(name) = stored.name.strip_prefix(shared_keys::SEALED_PREFIX) {
            let def = settings::find(name).filter(|d| shared_keys::shared_secret(d));
            let (Some(def), Some(sealer)) = (def, &setting_sealer) else {
                continue;
            };
            match sealer.open(def.name, &stored.value) {
                Some(Some(text)) => match settings.apply_stored(def.name, &text) {
                    // Kept here too, as when applied while running.
                    Ok(()) => secrets.store(def.name, Some(&text))?,
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring an invalid secret setting changed on another instance")
                    }
                },
                Some(None) => match settings.revert(def.name, &base) {
                    Ok(_) => secrets.store(def.name, None)?,
                    Err(e) => {
                        tracing::warn!(error = %e, "a secret setting forgotten on another instance")
                    }
                },
                None => tracing::warn!(
                    setting = def.name,
                    "a secret setting changed on another instance does not open with this instance's SHARED_KEYS_SEALING_KEY; ignored"
                ),
            }
            continue;
        }
        let changeable =
            settings::find(&stored.name).is_some_and(|d| d.live && !d.kind.is_secret());
        if !changeable {
            tracing::warn!(setting = %stored.name, "ignoring a stored setting that cannot be changed at runtime");
            continue;
        }
        if let Err(e) = settings.apply_stored(&stored.name, &stored.value) {
            tracing::warn!(error = %e, "ignoring an invalid stored setting (the environment's value applies)");
        }
    }
    let from_db = settings.with_source(settings::Source::Database);
    let from_secrets = settings.with_source(settings::Source::SecretsFile);
    if !from_db.is_empty() || !from_secrets.is_empty() {
        tracing::info!(
            database = %from_db.join(", "),
            secrets_file = %from_secrets.join(", "),
            "settings changed through the admin API override the environment"
        );
    }
    // LOG_* as stored or set.
    set_log(&settings)?;
    // AUTO_DELETE_* as stored or set: the first log purge runs now with them.
    store.set_retention(state::retention(&settings))?;
    if let Some(disk) = store.disk_space() {
        if let Some(warning) = store::disk_warning(&disk, state::retention(&settings).max_bytes) {
            tracing::warn!("the disk under the store is short: {warning}");
        }
    }

    let mut keys = Vec::new();
    for (i, raw) in settings.list("API_KEYS").iter().enumerate() {
        let key = ApiKey::new(raw).map_err(|e| format!("API_KEYS: entry #{}: {e}", i + 1))?;
        keys.push(key);
    }
    let pool = KeyPool::builder()
        .max_failures(u32::try_from(settings.int("MAX_FAILURES")).unwrap_or(u32::MAX))
        .build()?;
    let report = pool.add(keys);
    if !report.duplicates.is_empty() {
        tracing::warn!(
            count = report.duplicates.len(),
            "API_KEYS lists some keys more than once; duplicates ignored"
        );
    }
    // Key state (disabled keys, failure counts, cooldowns) survives restarts.
    let restored = pool.restore(&store.load_key_states()?);
    pool.set_observer(store.clone());
    // Several instances on one database: the shared key state wins over what was restored
    // (set_observer above replaces every observer: this one joins after it).
    let shared = shared_keys::start(kind, &settings, &pool).await?;
    if pool.is_empty() {
        tracing::warn!(
            "API_KEYS is empty: every API request will be answered 503 until keys are added"
        );
    }

    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| "could not install the TLS crypto provider")?;
    let app = Arc::new(
        App::new(
            pool,
            store.clone(),
            secrets,
            base,
            settings,
            set_log,
            shared.clone(),
        )?
        .sealing_settings(setting_sealer),
    );
    if let Some(shared) = &shared {
        shared_keys::follow(app.clone(), shared);
    }
    if app.live().tokens.is_empty() {
        tracing::warn!("neither ALLOWED_TOKENS nor AUTH_TOKEN is set: every API request will be refused with 401");
    }
    recheck::spawn(app.clone());
    auth_limit::spawn_sweeper(app.auth_limit.clone());
    // Client quotas: the limits, names and this period's use as stored (from every instance
    // on a shared database), then an exchange every QUOTA_SYNC_INTERVAL_SECONDS.
    let quota_store: Arc<dyn gemini_balance::quota::QuotaStore> = store.clone();
    if let Err(e) = app.quotas.sync_once(quota_store.clone()).await {
        tracing::warn!(error = %e, "client quotas could not be read from the database: none apply until they can");
    }
    let quota_sync = app.quotas.sync(
        quota_store.clone(),
        std::time::Duration::from_secs(
            u64::try_from(app.live().settings.int("QUOTA_SYNC_INTERVAL_SECONDS")).unwrap_or(5),
        ),
    );

    // The web admin (login, pages, assets); its sessions open with the live AUTH_TOKEN, and
    // the admin API accepts them.
    let token_app = app.clone();
    let web_admin = web::WebAdmin::new(
        std::time::Duration::from_secs(
            u64::try_from(app.live().settings.int("ADMIN_SESSION_EXPIRE")).unwrap_or(3600),
        ),
        Arc::new(move |token: &str| {
            let live = token_app.live();
            (!live.admin.is_empty()).then(|| live.admin.matching(token.as_bytes()).is_some())
        }),
        app.auth_limit.clone(),
    );
    let admin = admin::router(admin::AdminState::new(
        app.clone(),
        Some(web_admin.sessions.clone()),
    ));
    let router = Router::new()
        .route("/metrics", axum::routing::get(metrics::scrape))
        .fallback(handle)
        .with_state(app.clone())
        .nest("/api", admin)
        .merge(web::router(Arc::new(web_admin)));

    let addr = SocketAddr::new(config.host, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (HOST/PORT): {e}"))?;
    // At every LOG_LEVEL, as uvicorn's "Uvicorn running on ..." line is for Gemini-Balance.
    tracing::info!(
        target: STARTUP,
        address = %listener.local_addr()?,
        keys = app.pool.len(),
        restored_key_states = restored,
        database = %database,
        base_url = %app.live().settings.text("BASE_URL"),
        "gemini-balance-proxy listening"
    );
    let limits = serve::Limits::from_settings(&app.live().settings);
    tracing::debug!(?limits, "client connection limits");
    serve::serve(
        listener,
        app.clone(),
        router,
        limits,
        shutdown_signal(limits),
    )
    .await;
    // The last key changes reach the other instances (bounded: the database may be away).
    if let Some(shared) = &shared {
        if !shared.flush(std::time::Duration::from_secs(5)).await {
            tracing::warn!("some key changes could not be written to the shared database before shutdown: the other instances do not learn of them");
        }
    }
    // This instance's last quota use reaches the database (bounded, as above).
    quota_sync.abort();
    match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        app.quotas.sync_once(quota_store),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the last client quota use could not be written"),
        Err(_) => tracing::warn!("the last client quota use could not be written in 5 s"),
    }
    // Everything recorded reaches the database before the process ends.
    store.shutdown()?;
    tracing::info!("shut down");
    Ok(())
}

async fn shutdown_signal(limits: serve::Limits) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!(
        "shutdown signal received: requests in progress get up to {} s (SHUTDOWN_TIMEOUT)",
        limits.shutdown_timeout.as_secs()
    );
}

async fn handle(State(app): State<Arc<App>>, req: Request<Body>) -> Response<Body> {
    let started = Instant::now();
    let live = app.live();
    let path = req.uri().path().to_owned();
    let head_request = req.method() == axum::http::Method::HEAD;
    let flavor = route::flavor(&path);
    // The request line alone decides the route, or a 400/404/405, before the token is checked
    // (see `route`): nothing past this point sees a path that leaves its route.
    let mut openai_list = false;
    let (gemini_rest, is_openai, passthrough) = match route::route(req.method(), &path) {
        Ok(Route::Health) => return health(&app),
        Ok(Route::Ready) => return app.readiness.answer(&app.store, &app.pool).await,
        Ok(Route::Gemini { rest }) => (Some(rest.to_owned()), false, None),
        Ok(Route::OpenAi) => (None, true, None),
        // `/hf/v1/models`: the Gemini list, in OpenAI's shape whatever the token's placement.
        Ok(Route::OpenAiModels) => {
            openai_list = true;
            (Some("/models".to_owned()), false, None)
        }
        // The upstream's own OpenAI-compatible endpoint: `{BASE_URL}/openai/...`.
        Ok(Route::Passthrough { rest }) => (None, false, Some(format!("/openai{rest}"))),
        Err(refusal) => {
            tracing::debug!(route = %path, method = %req.method(), refusal = ?refusal, "request refused");
            return refusal.response(flavor, req.method(), &path);
        }
    };
    // A guessing address is refused before its token is checked (see auth_limit).
    let address = app.auth_limit.client(req.extensions(), req.headers());
    if let Err(blocked) = app.auth_limit.admit(address, Surface::Api, &path) {
        return too_many(flavor, blocked);
    }
    let Some((client, placement)) = live.tokens.accepted(&req) else {
        app.auth_limit
            .refused(address, Surface::Api, &path, "no valid client token");
        return local(
            flavor,
            StatusCode::UNAUTHORIZED,
            "missing or invalid client token: send one of ALLOWED_TOKENS as Authorization: Bearer, x-goog-api-key or ?key=",
        );
    };
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(client);
    // The layers answer in the route's format too, whatever the rest of the path looks like.
    parts.extensions.insert(flavor);
    let mut model = None;
    let mut list_shape = None;
    let body = reqwest::Body::wrap_stream(body.into_data_stream());
    if let Some(rest) = &gemini_rest {
        parts.uri = match upstream_uri(rest, &parts.uri) {
            Some(uri) => uri,
            None => {
                return local(
                    flavor,
                    StatusCode::BAD_REQUEST,
                    "the request path is not valid",
                )
            }
        };
        if parts.uri.path() == "/models" {
            // `GET /v1/models` answers in the shape of the client's API: Bearer means OpenAI.
            let openai =
                openai_list || (path.starts_with("/v1/") && placement == Placement::Bearer);
            let shape = if openai {
                ListShape::OpenAi
            } else {
                ListShape::Gemini
            };
            list_shape = Some(shape);
            // Every model on one page (Gemini's default page holds 50).
            let query = models::list_query(shape, parts.uri.query());
            parts.uri = match format!("/models?{query}").parse() {
                Ok(uri) => uri,
                Err(_) => {
                    return local(
                        flavor,
                        StatusCode::BAD_REQUEST,
                        "the request query is not valid",
                    )
                }
            };
        }
    }
    if let Some(target) = &passthrough {
        let pq = match parts.uri.query() {
            Some(q) => format!("{target}?{q}"),
            None => target.clone(),
        };
        parts.uri = match pq.parse() {
            Ok(uri) => uri,
            Err(_) => {
                return local(
                    flavor,
                    StatusCode::BAD_REQUEST,
                    "the request path is not valid",
                )
            }
        };
    }
    // OpenAI's list has no pages: the later ones are fetched here (not for HEAD, which reads
    // no list).
    let pages_of = (list_shape == Some(ListShape::OpenAi) && !head_request).then(|| parts.clone());
    let mut upstream_req = Request::from_parts(parts, body);
    // What the request is, worked out once here for every layer of the stack to read.
    let info = RequestInfo::attach(&mut upstream_req);
    if gemini_rest.is_some() {
        // The model the client asked for, for the log line (the stack's model rules resolve it).
        model = info.model_name().map(str::to_owned);
    }
    let stack = if passthrough.is_some() {
        &live.stacks.passthrough
    } else if is_openai {
        &live.stacks.openai
    } else {
        &live.stacks.gemini
    };
    let answer = match stack.clone().oneshot(upstream_req).await {
        Ok(first) => match &pages_of {
            Some(template) => Ok(models::all_pages(stack, template, first).await),
            None => Ok(first),
        },
        Err(err) => Err(err),
    };
    let response = match answer {
        Ok(res) => res,
        Err(err) => {
            let class = classify_any_error(&err);
            let status = match class {
                FailureClass::Timeout => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            };
            tracing::warn!(route = %path, class = %class, "upstream unreachable");
            local(
                flavor,
                status,
                &format!("the upstream could not be reached: {class}"),
            )
        }
    };
    if model.is_none() {
        model = response
            .extensions()
            .get::<ModelName>()
            .map(|m| m.as_str().to_owned());
    }
    let response = match list_shape {
        // An answer to HEAD has no body to rewrite or collect (a model list rewritten from
        // nothing was a 502).
        _ if head_request => response,
        Some(ListShape::OpenAi) => models::to_openai_list(response).await,
        // Non-streamed answers were made whole inside the stack (`WholeAnswerLayer`), model
        // lists rewritten by its model rules.
        Some(ListShape::Gemini) | None => response,
    };
    let key = response.extensions().get::<KeyId>().map(KeyId::mask);
    request_line::RequestLine {
        route: &path,
        model: model.as_deref().unwrap_or("-"),
        status: response.status().as_u16(),
        latency_ms: started.elapsed().as_millis() as u64,
        attempts: response.extensions().get::<Attempts>().map_or(0, |a| a.0),
        key: key.unwrap_or("-"),
    }
    .emit(REQUEST_LINES.get().filter(|_| !logging::is_json()));
    response
}

/// The upstream URI (relative to BASE_URL): the route, `%3A` decoded, the query kept.
fn upstream_uri(rest: &str, original: &Uri) -> Option<Uri> {
    let mut pq = if rest.contains('%') {
        rest.replace("%3A", ":").replace("%3a", ":")
    } else {
        rest.to_owned()
    };
    if let Some(q) = original.query() {
        pq.push('?');
        pq.push_str(q);
    }
    Uri::try_from(pq).ok()
}

/// The liveness probe: `"healthy"` as Gemini-Balance's, whatever the keys and the store (see
/// `ready` for the readiness probe). Key counts: `active` (serving some model),
/// `cooling_down` (cooling for every model) and `disabled` add up to `total`;
/// `cooling_for_some_models` counts the active keys that are cooling for one model or more (a
/// 429 for one model leaves a key serving the others). `log`: lines dropped since the start,
/// from the whole log (it could not keep up) and from the log files (the disk could not).
fn health(app: &App) -> Response<Body> {
    let snapshots = app.pool.snapshots();
    let count = |f: &dyn Fn(&KeyStatus) -> bool| snapshots.iter().filter(|s| f(&s.status)).count();
    let (dropped, file_dropped) = LOG.get().map_or((0, 0), logging::Logging::dropped);
    let body = serde_json::json!({
        "status": "healthy",
        "log": {
            "dropped_lines": dropped,
            "file_dropped_lines": file_dropped,
        },
        "keys": {
            "total": snapshots.len(),
            "active": count(&KeyStatus::is_serving),
            "cooling_down": count(&|s| matches!(s, KeyStatus::CoolingDown(_)) && !s.is_serving()),
            "disabled": count(&|s| matches!(s, KeyStatus::Disabled(_))),
            "cooling_for_some_models": count(&|s| matches!(s, KeyStatus::CoolingDown(_)) && s.is_serving()),
        }
    });
    axum::Json(body).into_response()
}

fn local(flavor: ApiFlavor, status: StatusCode, message: &str) -> Response<Body> {
    error_response(flavor, status, message).map(Body::from)
}

/// `429` with `Retry-After`, in the error format of the client's API.
fn too_many(flavor: ApiFlavor, blocked: Blocked) -> Response<Body> {
    let mut res = local(flavor, StatusCode::TOO_MANY_REQUESTS, &blocked.message());
    res.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(blocked.retry_after_secs()),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_colon_is_decoded_and_the_query_kept() {
        let uri: Uri = "/v1/models/m%3AstreamGenerateContent?alt=sse"
            .parse()
            .unwrap();
        assert_eq!(
            upstream_uri("/models/m%3AstreamGenerateContent", &uri).unwrap(),
            "/models/m:streamGenerateContent?alt=sse"
        );
    }
}
