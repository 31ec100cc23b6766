//! Every setting the admin can change while the proxy runs (`live: true` in `GET /api/config`)
//! acts at once, and wins over `.env` at the next start.
//!
//! One table, one row per live setting: the binary starts in front of the loopback mock Gemini
//! with `.env` holding the row's "before" value; the row's observation (what a client, the mock
//! upstream, a forward proxy, the admin API or the log sees) must give `before`; the value is
//! changed through `PUT /api/config`; the observation must give `after` without a restart; then
//! the proxy restarts on the same `.env` and must still give `after` (the stored value
//! overrides `.env`, as in Gemini-Balance). A live setting without a row fails
//! `every_live_setting_has_a_row`.

mod common;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::http::header;
use axum::routing::get;
use axum::Router;
use gemini_balance::keys::KeyId;
use gemini_balance::store::{SqliteStore, UsageSink};
use gemini_balance::usage::{AttemptRecord, RequestRecord};
use serde_json::{json, Value};
use support::{prompt_body, test_key, Fault, MockGemini, RecordedRequest};

use common::forward_proxy::ForwardProxy;

const TOKEN: &str = "sk-live-client-0001";
const TOKEN2: &str = "sk-live-client-0002";
const ADMIN: &str = "sk-live-admin-0001";
const ADMIN2: &str = "sk-live-admin-0002";

/// Rows run at once (each has its own proxy, mock and servers).
const AT_ONCE: usize = 4;

/// How long an observation may take to show the expected value (the store writes and purges
/// in the background).
const SETTLE: Duration = Duration::from_secs(8);

type Observed<'a> = Pin<Box<dyn Future<Output = Value> + Send + 'a>>;

/// One live setting: how to see it act.
struct Row {
    setting: &'static str,
    /// `.env` lines besides the base ones (the "before" value, and what the row needs).
    env: fn(&Ctx) -> String,
    /// Prepares the mock (faults) once.
    setup: fn(&Ctx),
    /// Runs while the proxy is stopped, before each start (rows for the log purge).
    seed: fn(&Ctx),
    /// The value sent with `PUT /api/config`.
    change: fn(&Ctx) -> Value,
    observe: for<'a> fn(&'a Ctx) -> Observed<'a>,
    before: Value,
    after: Value,
}

fn nothing(_: &Ctx) {}

fn no_env(_: &Ctx) -> String {
    String::new()
}

/// What a row's observation can use.
struct Ctx {
    mock: MockGemini,
    proxy_a: ForwardProxy,
    proxy_b: ForwardProxy,
    /// A loopback web server with `/cat.png`.
    images: String,
    dir: tempfile::TempDir,
    log: PathBuf,
    url: Mutex<String>,
    client: reqwest::Client,
}

impl Ctx {
    async fn new() -> Ctx {
        let app = Router::new().route(
            "/cat.png",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "image/png")],
                    &b"\x89PNG\r\n\x1a\n cat"[..],
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let images = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let dir = tempfile::tempdir().unwrap();
        Ctx {
            mock: MockGemini::start().await,
            proxy_a: ForwardProxy::start().await,
            proxy_b: ForwardProxy::start().await,
            images,
            log: dir.path().join("proxy.log"),
            dir,
            url: Mutex::new(String::new()),
            client: support::client_builder().build().unwrap(),
        }
    }

    fn url(&self) -> String {
        self.url.lock().unwrap().clone()
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("data").join("default_db.db")
    }
}

/// The status of `GET /metrics`, with `token` as Bearer.
async fn metrics_status(c: &Ctx, token: Option<&str>) -> Value {
    let mut req = c.client.get(format!("{}/metrics", c.url()));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    json!(req.send().await.unwrap().status().as_u16())
}

/// A client that connects from a loopback address no other observation uses, so that failed
/// authentications of one observation never count against another (or against the admin).
fn fresh_peer() -> reqwest::Client {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let address = Ipv4Addr::new(127, 0, 1 + (n / 250) as u8, 2 + (n % 250) as u8);
    support::client_builder()
        .local_address(IpAddr::V4(address))
        .build()
        .unwrap()
}

/// An address for `X-Forwarded-For` no other observation uses.
fn fresh_forwarded() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("198.51.{}.{}", n / 250, 1 + n % 250)
}

fn base_env(ctx: &Ctx) -> String {
    format!(
        "API_KEYS=[\"{}\"]\nALLOWED_TOKENS=[\"{TOKEN}\"]\nAUTH_TOKEN={ADMIN}\nBASE_URL={}/v1beta\n",
        test_key(1),
        ctx.mock.base_url()
    )
}

/// The last request the mock got, if `send` made one.
async fn upstream_of<F: Future<Output = u16>>(
    ctx: &Ctx,
    send: F,
) -> (u16, Option<RecordedRequest>) {
    let before = ctx.mock.total();
    let status = send.await;
    let seen = (ctx.mock.total() > before)
        .then(|| ctx.mock.last_request())
        .flatten();
    (status, seen)
}

async fn status_of(req: reqwest::RequestBuilder) -> u16 {
    req.send().await.unwrap().status().as_u16()
}

/// A native `generateContent` for `model` with the client token.
async fn native(ctx: &Ctx, model: &str, prompt: &str) -> (u16, Option<RecordedRequest>) {
    let req = ctx
        .client
        .post(format!(
            "{}/v1beta/models/{model}:generateContent",
            ctx.url()
        ))
        .header("x-goog-api-key", TOKEN)
        .header("content-type", "application/json")
        .body(prompt_body(prompt));
    upstream_of(ctx, status_of(req)).await
}

/// An OpenAI chat request with the client token.
async fn chat(ctx: &Ctx, body: Value) -> (u16, Option<RecordedRequest>) {
    let req = ctx
        .client
        .post(format!("{}/v1/chat/completions", ctx.url()))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string());
    upstream_of(ctx, status_of(req)).await
}

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

fn body_of(seen: &Option<RecordedRequest>) -> Value {
    seen.as_ref()
        .and_then(|r| serde_json::from_slice(&r.body).ok())
        .unwrap_or(Value::Null)
}

/// A streamed native request; returns the `data:` events and how long the stream took.
async fn stream(ctx: &Ctx, prompt: &str) -> (usize, Duration) {
    let started = Instant::now();
    let res = ctx
        .client
        .post(format!(
            "{}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            ctx.url()
        ))
        .header("x-goog-api-key", TOKEN)
        .header("content-type", "application/json")
        .body(prompt_body(prompt))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let events = text.lines().filter(|l| l.starts_with("data:")).count();
    (events, started.elapsed())
}

/// A prompt whose answer (`echo: …`, 60 characters) the mock streams as 3 events of 20.
const PROMPT_54: &str = "abcdefghij klmnopqrst uvwxyzabcd efghijklmn opqrstuvwx";

/// An admin call with AUTH_TOKEN.
async fn admin(ctx: &Ctx, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = ctx
        .client
        .request(method.parse().unwrap(), format!("{}/api{path}", ctx.url()))
        .bearer_auth(ADMIN);
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let bytes = res.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn key1_id() -> String {
    KeyId::of(&test_key(1)).hex()
}

/// The state of key 1 (`active`, `disabled`, …).
async fn key1_status(ctx: &Ctx) -> Value {
    let (status, list) = admin(ctx, "GET", "/keys", None).await;
    assert_eq!(status, 200, "{list}");
    list["items"][0]["status"].clone()
}

/// Requests of key 1 the mock got while `wait` ran.
async fn key1_requests_during(ctx: &Ctx, wait: Duration) -> u64 {
    let before = ctx.mock.requests(&test_key(1));
    tokio::time::sleep(wait).await;
    ctx.mock.requests(&test_key(1)) - before
}

/// Rows older than 5 days in the error log or the request log, as the admin API reads them.
async fn old_rows(ctx: &Ctx, log: &str) -> Value {
    let cutoff = SystemTime::now() - Duration::from_secs(5 * 86_400);
    let to_ms = cutoff
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let (status, page) = admin(
        ctx,
        "GET",
        &format!("/logs/{log}?limit=1000&to_ms={to_ms}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    json!(page["items"].as_array().map_or(0, Vec::len))
}

/// Three requests of ten days ago, each with a failed attempt (so an error log row too).
fn seed_old_rows(ctx: &Ctx) {
    std::fs::create_dir_all(ctx.db().parent().unwrap()).unwrap();
    // Opened without an error log limit: the store's own purge at open (7 days by default)
    // would race with these rows.
    let store = SqliteStore::builder(ctx.db())
        .error_log_days(None)
        .request_log_days(None)
        .open()
        .unwrap();
    let at = SystemTime::now() - Duration::from_secs(10 * 86_400);
    static NEXT_ID: AtomicU32 = AtomicU32::new(1);
    for _ in 0..3 {
        let id = u64::from(NEXT_ID.fetch_add(1, Ordering::Relaxed));
        let mut record = RequestRecord::new(id, at);
        record.model = Some("gemini-2.0-flash".to_owned());
        record.key = Some(KeyId::of(&test_key(1)));
        record.status = 200;
        record.success = true;
        for (status, class) in [(500, Some("server_error")), (200, None)] {
            record.attempt_log.push(AttemptRecord {
                at,
                key: KeyId::of(&test_key(1)),
                model: Some("gemini-2.0-flash".to_owned()),
                status: Some(status),
                class,
                latency: Duration::from_millis(5),
                error_message: class.map(|_| "internal".to_owned()),
            });
        }
        record.attempts = 2;
        store.record(record);
    }
    store.shutdown().unwrap();
}

/// The three old requests of [`seed_old_rows`], then 1,500 of a day ago, each failed once with
/// a 1 KB request body kept in the error log: over 1 MiB of log rows.
fn seed_old_rows_and_a_full_log(ctx: &Ctx) {
    seed_old_rows(ctx);
    let store = SqliteStore::builder(ctx.db())
        .error_log_days(None)
        .request_log_days(None)
        .open()
        .unwrap();
    let at = SystemTime::now() - Duration::from_secs(86_400);
    for id in 0..1_500u64 {
        let mut record = RequestRecord::new(1_000_000 + id, at);
        record.model = Some("gemini-2.0-flash".to_owned());
        record.key = Some(KeyId::of(&test_key(1)));
        record.status = 500;
        record.request_body = Some("x".repeat(1_000));
        record.attempt_log.push(AttemptRecord {
            at,
            key: KeyId::of(&test_key(1)),
            model: Some("gemini-2.0-flash".to_owned()),
            status: Some(500),
            class: Some("server_error"),
            latency: Duration::from_millis(5),
            error_message: Some("internal".to_owned()),
        });
        record.attempts = 1;
        store.record(record);
    }
    store.shutdown().unwrap();
}

/// Two wrong client tokens from one fresh address, `pause` apart; optionally each with its own
/// `X-Forwarded-For`.
async fn two_refusals(ctx: &Ctx, pause: Duration, forwarded: bool) -> Value {
    let client = fresh_peer();
    let mut statuses = Vec::new();
    for i in 0..2 {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        let mut req = client
            .post(format!(
                "{}/v1beta/models/gemini-2.0-flash:generateContent",
                ctx.url()
            ))
            .header("x-goog-api-key", "sk-wrong-token")
            .header("content-type", "application/json")
            .body(prompt_body("hi"));
        if forwarded {
            req = req.header("x-forwarded-for", fresh_forwarded());
        }
        statuses.push(status_of(req).await);
    }
    json!(statuses)
}

/// Fake-stream keep-alives an OpenAI stream carries while a slow upstream answers.
async fn keep_alives(ctx: &Ctx) -> Value {
    let mut body = hello("gemini-2.0-flash");
    body["stream"] = json!(true);
    let res = ctx
        .client
        .post(format!("{}/v1/chat/completions", ctx.url()))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let text = res.text().await.unwrap();
    json!(text.matches(": keep-alive").count() > 0)
}

/// A browser's preflight for a chat request from `https://chat.example`: the status and the
/// origin allowed.
async fn preflight(ctx: &Ctx) -> Value {
    let res = ctx
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/chat/completions", ctx.url()),
        )
        .header("origin", "https://chat.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap();
    let allowed = res
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned());
    json!([res.status().as_u16(), allowed])
}

/// Did a request line for a generateContent reach the log?
async fn request_line_logged(ctx: &Ctx) -> Value {
    let count = || {
        std::fs::read_to_string(&ctx.log)
            .unwrap_or_default()
            .matches("route=/v1beta/models/gemini-2.0-flash:generateContent")
            .count()
    };
    let before = count();
    assert_eq!(native(ctx, "gemini-2.0-flash", "log me").await.0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    json!(count() > before)
}

/// `LOG_DIR` of the log-file rows.
fn log_dir(ctx: &Ctx) -> PathBuf {
    ctx.dir.path().join("logs")
}

/// `.env` lines that write the log files in [`log_dir`].
fn log_dir_env(ctx: &Ctx) -> String {
    format!("LOG_DIR={}\n", log_dir(ctx).display())
}

/// The names of the log files, after a request was logged (and the file thread had a moment).
async fn log_file_names(ctx: &Ctx) -> Vec<String> {
    assert_eq!(native(ctx, "gemini-2.0-flash", "log me").await.0, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut names: Vec<String> = std::fs::read_dir(log_dir(ctx))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("gemini-balance-proxy."))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Today's date (UTC) as the daily log file's name has it.
fn today() -> String {
    let days = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        / 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// An empty log directory with `files` (names after the prefix) of `size` bytes each.
fn seed_log_files(ctx: &Ctx, files: &[String], size: usize) {
    let dir = log_dir(ctx);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for name in files {
        let line = "an old log line\n";
        let text = line.repeat(size / line.len() + 1);
        std::fs::write(dir.join(format!("gemini-balance-proxy.{name}")), text).unwrap();
    }
}

/// Four daily files of January 2020.
fn seed_old_log_files(ctx: &Ctx) {
    let names: Vec<String> = (1..=4).map(|d| format!("2020-01-0{d}.log")).collect();
    seed_log_files(ctx, &names, 100);
}

/// Did the last request line on stdout come as a JSON object?
async fn request_line_is_json(ctx: &Ctx) -> Value {
    assert_eq!(native(ctx, "gemini-2.0-flash", "log me").await.0, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let log = std::fs::read_to_string(&ctx.log).unwrap_or_default();
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("/v1beta/models/gemini-2.0-flash:generateContent"))
        .unwrap_or_default();
    json!(serde_json::from_str::<Value>(last).is_ok_and(|v| v["route"].is_string()))
}

/// The table.
fn rows() -> Vec<Row> {
    vec![
        Row {
            setting: "LOG_LEVEL",
            env: |_| "LOG_LEVEL=warn\n".into(),
            setup: nothing,
            seed: nothing,
            change: |_| json!("info"),
            observe: |c| Box::pin(request_line_logged(c)),
            before: json!(false),
            after: json!(true),
        },
        Row {
            setting: "LOG_FORMAT",
            env: |_| "LOG_FORMAT=text\n".into(),
            setup: nothing,
            seed: nothing,
            change: |_| json!("json"),
            observe: |c| Box::pin(request_line_is_json(c)),
            before: json!(false),
            after: json!(true),
        },
        Row {
            setting: "LOG_DIR",
            env: no_env,
            setup: nothing,
            seed: nothing,
            change: |c| json!(log_dir(c).display().to_string()),
            // A request line in a log file.
            observe: |c| {
                Box::pin(async move {
                    let names = log_file_names(c).await;
                    let logged = names.iter().any(|n| {
                        std::fs::read_to_string(log_dir(c).join(n))
                            .unwrap_or_default()
                            .contains("route=/v1beta/models/gemini-2.0-flash:generateContent")
                    });
                    json!(logged)
                })
            },
            before: json!(false),
            after: json!(true),
        },
        Row {
            setting: "LOG_FILE_ROTATION",
            env: |c| format!("{}LOG_FILE_ROTATION=daily\n", log_dir_env(c)),
            setup: nothing,
            seed: nothing,
            change: |_| json!("hourly"),
            // An hourly file (`...2026-12-08T13.log`) is being written.
            observe: |c| {
                Box::pin(async move {
                    let hourly = format!("gemini-balance-proxy.{}T", today());
                    json!(log_file_names(c)
                        .await
                        .iter()
                        .any(|n| n.starts_with(&hourly)))
                })
            },
            before: json!(false),
            after: json!(true),
        },
        Row {
            setting: "LOG_FILE_MAX_SIZE_MB",
            env: |c| format!("{}LOG_FILE_MAX_SIZE_MB=0\n", log_dir_env(c)),
            setup: nothing,
            // Today's file, 1.5 MiB already.
            seed: |c| seed_log_files(c, &[format!("{}.log", today())], 3 << 19),
            change: |_| json!(1),
            // Past 1 MiB, the next line opens today's second file.
            observe: |c| {
                Box::pin(async move {
                    let second = format!("gemini-balance-proxy.{}.1.log", today());
                    json!(log_file_names(c).await.contains(&second))
                })
            },
            before: json!(false),
            after: json!(true),
        },
        Row {
            setting: "LOG_FILE_MAX_FILES",
            env: |c| {
                format!(
                    "{}LOG_FILE_MAX_FILES=10\nLOG_FILE_MAX_AGE_DAYS=0\n",
                    log_dir_env(c)
                )
            },
            setup: nothing,
            seed: seed_old_log_files,
            change: |_| json!(2),
            // Four old files and today's, then today's and the newest old one.
            observe: |c| Box::pin(async move { json!(log_file_names(c).await.len()) }),
            before: json!(5),
            after: json!(2),
        },
        Row {
            setting: "LOG_FILE_MAX_AGE_DAYS",
            env: |c| {
                format!(
                    "{}LOG_FILE_MAX_AGE_DAYS=0\nLOG_FILE_MAX_FILES=0\n",
                    log_dir_env(c)
                )
            },
            setup: nothing,
            seed: seed_old_log_files,
            change: |_| json!(7),
            // The files of 2020 are gone, today's stays.
            observe: |c| Box::pin(async move { json!(log_file_names(c).await.len()) }),
            before: json!(5),
            after: json!(1),
        },
        Row {
            setting: "CORS_ENABLED",
            env: |_| "CORS_ENABLED=true\n".into(),
            setup: nothing,
            seed: nothing,
            change: |_| json!(false),
            observe: |c| Box::pin(preflight(c)),
            before: json!([200, "https://chat.example"]),
            after: json!([405, null]),
        },
        Row {
            setting: "CORS_ALLOWED_ORIGINS",
            env: |_| "CORS_ENABLED=true\nCORS_ALLOWED_ORIGINS=[\"https://other.example\"]\n".into(),
            setup: nothing,
            seed: nothing,
            change: |_| json!(["https://chat.example"]),
            observe: |c| Box::pin(preflight(c)),
            before: json!([200, null]),
            after: json!([200, "https://chat.example"]),
        },
        Row {
            setting: "URL_NORMALIZATION_ENABLED",
            env: |_| "URL_NORMALIZATION_ENABLED=false\n".into(),
            setup: nothing,
            seed: nothing,
            change: |_| json!(true),
            // A client that put the version twice.
            observe: |c| {
                Box::pin(async move {
                    let req = c
                        .client
                        .post(format!("{}/v1/v1/chat/completions", c.url()))
                        .bearer_auth(TOKEN)
                        .header("content-type", "application/json")
                        .body(hello("gemini-2.0-flash").to_string());
                    json!(status_of(req).await)
                })
            },
            before: json!(404),
            after: json!(200),
        },
        Row {
            setting: "SHOW_SEARCH_LINK",
            env: |_| "SHOW_SEARCH_LINK=true\nSEARCH_MODELS=[\"gemini-2.5-flash\"]\n".into(),
            setup: nothing,
            seed: nothing,
            change: |_| json!(false),
            // The answer's text, then the sources (when shown).
            observe: |c| {
                Box::pin(async move {
                    let res = c
                        .client
                        .post(format!("{}/v1/chat/completions", c.url()))
                        .bearer_auth(TOKEN)
                        .header("content-type", "application/json")
                        .body(hello("gemini-2.5-flash-search").to_string())
                        .send()
                        .await
                        .unwrap();
                    let answer: Value =
                        serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
                    let text = answer["choices"][0]["message"]["content"]
                        .as_str()
                        .unwrap_or_default();
                    json!(text.starts_with("echo: hello") && text.len() > "echo: hello".len())
                })
            },
            before: json!(true),
            after: json!(false),
        },
        Row {
            setting: "API_KEYS",
            env: no_env,
            setup: nothing,
            seed: nothing,
            change: |_| json!([test_key(2)]),
            observe: |c| {
                Box::pin(async move {
                    let (status, seen) = native(c, "gemini-2.0-flash", "which key").await;
                    json!([status, seen.and_then(|r| r.key)])
                })
            },
            before: json!([200, test_key(1)]),
            after: json!([200, test_key(2)]),
        },
        Row {
            setting: "ALLOWED_TOKENS",
            env: no_env,
            setup: nothing,
            seed: nothing,
            change: |_| json!([TOKEN2]),
            observe: |c| {
                Box::pin(async move {
                    let client = fresh_peer();
                    let mut statuses = Vec::new();
                    for token in [TOKEN, TOKEN2] {
                        let req = client
                            .post(format!(
                                "{}/v1beta/models/gemini-2.0-flash:generateContent",
                                c.url()
                            ))
                            .header("x-goog-api-key", token)
                            .header("content-type", "application/json")
                            .body(prompt_body("hi"));
                        statuses.push(status_of(req).await);
                    }
                    json!(statuses)
                })
            },
            before: json!([200, 401]),
            after: json!([401, 200]),
        },
        Row {
            setting: "AUTH_TOKEN",
            env: no_env,
            setup: nothing,
            seed: nothing,
            change: |_| json!(ADMIN2),
            observe: |c| {
                Box::pin(async move {
                    let client = fresh_peer();
                    let mut statuses = Vec::new();
                    for token in [ADMIN, ADMIN2] {
                        let req = client
                            .get(format!("{}/api/keys", c.url()))
                            .bearer_auth(token);
                        statuses.push(status_of(req).await);
                    }
                    json!(statuses)
                })
            },
            before: json!([200, 401]),
            after: json!([401, 200]),
        },
        Row {
            setting: "AUTH_FAILURE_BURST",
            env: |_| "AUTH_FAILURE_BURST=3\n".into(),
            setup: nothing,
            seed: nothing,
            change: |_| json!(1),
            observe: |c| Box::pin(two_refusals(c, Duration::ZERO, false)),
            before: json!([401, 401]),
            after: json!([401, 429]),
        },
        Row {
            setting: "AUTH_FAILURE_REFILL_SECONDS",
            env: |_| "AUTH_FAILURE_BURST=1\nAUTH_FAILURE_REFILL_SECONDS=60\n".into(),
            setup: nothing,
            seed: nothing,
            change: |_| json!(1),
            observe: |c| Box::pin(two_refusals(c, Duration::from_millis(1300), false)),
            before: json!([401, 429]),
            after: json!([401, 401]),
        },
        Row {
            setting: "TRUSTED_PROXIES",
            env: |_| "AUTH_FAILURE_BURST=1\n".into(),
            setup: nothing,
            seed: nothing,
            change: |_| json!(["127.0.0.0/8"]),
            observe: |c| Box::pin(two_refusals(c, Duration::ZERO, true)),
            // Untrusted, the two forwarded addresses are one client: the peer.
            before: json!([401, 429]),
            after: json!([401, 401]),
        },
        Row {
            setting: "METRICS_TOKEN",
            env: no_env,
            setup: nothing,
            seed: nothing,
            change: |_| json!("sk-metrics-live-token-0123456789"),
            observe: |c| Box::pin(metrics_status(c, Some("sk-metrics-live-token-0123456789"))),
            // Off (404) until a token is set.
            before: json!(404),
            after: json!(200),
        },
        Row {
            setting: "METRICS_ALLOWED_IPS",
            env: no_env,
            setup: nothing,
            seed: nothing,
            change: |_| json!(["127.0.0.0/8"]),
            observe: |c| Box::pin(metrics_status(c, None)),
            before: json!(404),
            after: json!(200),
        },
        Row {
            setting: "MAX_FAILURES",
            env: |_| "MAX_RETRIES=1\nMAX_FAILURES=3\n".into(),
            setup: |c| c.mock.set_fault(&test_key(1), Fault::ServerError),
            seed: nothing,
            change: |_| json!(1),
            observe: |c| {
                Box::pin(async move {
                    let (status, _) =
                        admin(c, "POST", &format!("/keys/{}/reset", key1_id()), None).await;
                    assert_eq!(status, 200);
                    assert_eq!(native(c, "gemini-2.0-flash", "fail").await.0, 500);
                    key1_status(c).await
                })
            },
            before: json!("active"),
            after: json!("disabled"),
        },
        Row {
            setting: "CHECK_INTERVAL_HOURS",
            env: |_| "CHECK_INTERVAL_HOURS=1\nTEST_MODEL=gemini-2.0-flash\n".into(),
            setup: |c| c.mock.set_fault(&test_key(1), Fault::InvalidKey),
            seed: nothing,
            // 1.08 s.
            change: |_| json!(0.0003),
            observe: |c| {
                Box::pin(async move {
                    // The first request disables the key; then only a re-check uses it.
                    native(c, "gemini-2.0-flash", "disable").await;
                    json!(key1_requests_during(c, Duration::from_millis(2500)).await > 0)
                })
            },
            before: json!(false),
            after: json!(true),
        },
        Row {
            setting: "TEST_MODEL",
            env: |_| "TEST_MODEL=gemini-2.0-flash\n".into(),
            setup: nothing,
            seed: nothing,
            change: |_| json!("gemini-2.5-flash"),
            observe: |c| {
                Box::pin(async move {
                    let path = format!("/keys/{}/verify", key1_id());
                    let (status, seen) =
                        upstream_of(c, async { admin(c, "POST", &path, None).await.0 }).await;
                    json!([status, seen.and_then(|r| r.model)])
                })
            },
            before: json!([200, "gemini-2.0-flash"]),
            after: json!([200, "gemini-2.5-flash"]),
        },
        Row {
            setting: "MAX_RETRIES",
            env: |_| "MAX_RETRIES=1\nMAX_FAILURES=0\n".into(),
            setup: |c| c.mock.set_fault(&test_key(1), Fault::ServerError),
            seed: nothing,
            change: |_| json!(3),
            observe: |c| {
                Box::pin(async move {
                    let before = c.mock.requests(&test_key(1));
                    let (status, _) = native(c, "gemini-2.0-flash", "retry me").await;
                    json!([status, c.mock.requests(&test_key(1)) - before])
                })
            },
            before: json!([500, 1]),
            after: json!([500, 3]),
        },
        Row {
            setting: "TIME_OUT",
            env: |_| "TIME_OUT=30\nMAX_RETRIES=1\n".into(),
            setup: |c| {
                c.mock
                    .set_fault(&test_key(1), Fault::Slow(Duration::from_millis(1500)))
            },
            seed: nothing,
            change: |_| json!(1),
            observe: |c| {
                Box::pin(async move { json!(native(c, "gemini-2.0-flash", "slow").await.0) })
            },
            before: json!(200),
            after: json!(504),
        },
        Row {
            setting: "CUSTOM_HEADERS",
            env: no_env,
            setup: nothing,
            seed: nothing,
            change: |_| json!({"x-live-check": "on"}),
            observe: |c| {
                Box::pin(async move {
                    let (_, seen) = native(c, "gemini-2.0-flash", "headers").await;
                    let seen = seen.unwrap();
                    json!(seen
                        .headers
                        .get("x-live-check")
                        .map(|v| v.to_str().unwrap().to_owned()))
                })
            },
            before: Value::Null,
            after: json!("on"),
        },
        Row {
            setting: "PROXIES",
            env: no_env,
            setup: nothing,
            seed: nothing,
            change: |c| json!([c.proxy_a.url]),
            observe: |c| {
                Box::pin(async move {
                    let before = c.proxy_a.total();
                    let (status, _) = native(c, "gemini-2.0-flash", "proxied").await;
                    json!([status, c.proxy_a.total() - before])
                })
            },
            before: json!([200, 0]),
            after: json!([200, 1]),
        },
        Row {
            setting: "PROXIES_USE_CONSISTENCY_HASH_BY_API_KEY",
            env: |c| {
                format!(
                    "PROXIES=[\"{}\",\"{}\"]\nPROXIES_USE_CONSISTENCY_HASH_BY_API_KEY=true\n",
                    c.proxy_a.url, c.proxy_b.url
                )
            },
            setup: nothing,
            seed: nothing,
            change: |_| json!(false),
            observe: |c| {
                Box::pin(async move {
                    let (a, b) = (c.proxy_a.total(), c.proxy_b.total());
                    for i in 0..4 {
                        assert_eq!(
                            native(c, "gemini-2.0-flash", &format!("spread {i}"))
                                .await
                                .0,
                            200
                        );
                    }
                    let mut through = [c.proxy_a.total() - a, c.proxy_b.total() - b];
                    through.sort_unstable();
                    json!(through)
                })
            },
            before: json!([0, 4]),
            after: json!([2, 2]),
        },
        Row {
            setting: "IMAGE_FETCH_ALLOW_PRIVATE_NETWORKS",
            env: no_env,
            setup: nothing,
            seed: nothing,
            change: |_| json!(true),
            observe: |c| {
                Box::pin(async move {
                    let body = json!({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": [
                        {"type": "text", "text": "what is it"},
                        {"type": "image_url", "image_url": {"url": format!("{}/cat.png", c.images)}},
                    ]}]});
                    json!(chat(c, body).await.0)
                })
            },
            before: json!(400),
            after: json!(200),
        },
        Row {
            setting: "SEARCH_MODELS",
            env: |_| "SEARCH_MODELS=[]\n".into(),
            setup: nothing,
            seed: nothing,
            change: |_| json!(["gemini-2.0-flash"]),
            observe: |c| {
                Box::pin(async move {
                    let (status, seen) = native(c, "gemini-2.0-flash-search", "search").await;
                    let tools = body_of(&seen)["tools"].clone();
                    json!([status, seen.and_then(|r| r.model), tools])
                })
            },
            before: json!([404, "gemini-2.0-flash-search", null]),
            after: json!([200, "gemini-2.0-flash", [{"googleSearch": {}}]]),
        },
        Row {
            setting: "IMAGE_MODELS",
            env: |_| "IMAGE_MODELS=[]\n".into(),
            setup: nothing,
            seed: nothing,
            change: |_| json!(["gemini-2.0-flash"]),
            observe: |c| {
                Box::pin(async move {
                    let (status, seen) = native(c, "gemini-2.0-flash-image", "draw").await;
                    let modalities =
                        body_of(&seen)["generationConfig"]["responseModalities"].clone();
                    json!([status, seen.and_then(|r| r.model), modalities])
                })
            },
            before: json!([404, "gemini-2.0-flash-image", null]),
            after: json!([200, "gemini-2.0-flash", ["TEXT", "IMAGE"]]),
        },
        Row {
            setting: "THINKING_MODELS",
            env: |_| "THINKING_MODELS=[]\n".into(),
            setup: nothing,
            seed: nothing,
            change: |_| json!(["gemini-2.5-flash"]),
            // `-non-thinking` works on any model (as in Gemini-Balance); the setting decides
            // which models the lists offer it for.
            observe: |c| {
                Box::pin(async move {
                    let res = c
                        .client
                        .get(format!("{}/v1beta/models", c.url()))
                        .header("x-goog-api-key", TOKEN)
                        .send()
                        .await
                        .unwrap();
                    let list: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
                    json!(list["models"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|m| m["name"] == "models/gemini-2.5-flash-non-thinking"))
                })
            },
            before: json!(false),
            after: json!(true),
        },
        Row {
            setting: "THINKING_BUDGET_MAP",
            env: no_env,
            setup: nothing,
            seed: nothing,
            change: |_| json!({"gemini-2.5-flash": 1024}),
            observe: |c| {
                Box::pin(async move {
                    let (_, seen) = chat(c, hello("gemini-2.5-flash")).await;
                    body_of(&seen)["generationConfig"]["thinkingConfig"]["thinkingBudget"].clone()
                })
            },
            before: Value::Null,
            after: json!(1024),
        },
        Row {
            setting: "FILTERED_MODELS",
            env: |_| "FILTERED_MODELS=[]\n".into(),
            setup: nothing,
            seed: nothing,
            change: |_| json!(["gemini-2.0-flash"]),
            observe: |c| {
                Box::pin(async move { json!(native(c, "gemini-2.0-flash", "filtered").await.0) })
            },
            before: json!(200),
            after: json!(400),
        },
        Row {
            setting: "SAFETY_SETTINGS",
            env: no_env,
            setup: nothing,
            seed: nothing,
            change: |_| json!([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]),
            observe: |c| {
                Box::pin(async move {
                    let (_, seen) = native(c, "gemini-2.0-flash", "safe").await;
                    json!(body_of(&seen)["safetySettings"]
                        .as_array()
                        .map_or(0, Vec::len))
                })
            },
            before: json!(5),
            after: json!(1),
        },
        Row {
            setting: "SHOW_THINKING_PROCESS",
            env: |_| "SHOW_THINKING_PROCESS=true\n".into(),
            setup: nothing,
            seed: nothing,
            change: |_| json!(false),
            observe: |c| {
                Box::pin(async move {
                    let (_, seen) = chat(c, hello("gemini-2.5-flash")).await;
                    body_of(&seen)["generationConfig"]["thinkingConfig"]["includeThoughts"].clone()
                })
            },
            before: json!(true),
            after: Value::Null,
        },
        Row {
            setting: "TOOLS_CODE_EXECUTION_ENABLED",
            env: no_env,
            setup: nothing,
            seed: nothing,
            change: |_| json!(true),
            observe: |c| {
                Box::pin(async move {
                    let (_, seen) = chat(c, hello("gemini-2.0-flash")).await;
                    body_of(&seen)["tools"].clone()
                })
            },
            before: Value::Null,
            after: json!([{"codeExecution": {}}]),
        },
        Row {
            setting: "URL_CONTEXT_ENABLED",
            env: |_| {
                "URL_CONTEXT_ENABLED=false\nURL_CONTEXT_MODELS=[\"gemini-2.0-flash\"]\n".into()
            },
            setup: nothing,
            seed: nothing,
            change: |_| json!(true),
            observe: |c| {
                Box::pin(async move {
                    let (_, seen) = chat(c, hello("gemini-2.0-flash")).await;
                    body_of(&seen)["tools"].clone()
                })
            },
            before: Value::Null,
            after: json!([{"urlContext": {}}]),
        },
        Row {
            setting: "URL_CONTEXT_MODELS",
            env: |_| "URL_CONTEXT_ENABLED=true\nURL_CONTEXT_MODELS=[]\n".into(),
            setup: nothing,
            seed: nothing,
            change: |_| json!(["gemini-2.0-flash"]),
            observe: |c| {
                Box::pin(async move {
                    let (_, seen) = chat(c, hello("gemini-2.0-flash")).await;
                    body_of(&seen)["tools"].clone()
                })
            },
            before: Value::Null,
            after: json!([{"urlContext": {}}]),
        },
        Row {
            setting: "FAKE_STREAM_ENABLED",
            env: no_env,
            setup: nothing,
            seed: nothing,
            change: |_| json!(true),
            observe: |c| {
                Box::pin(async move {
                    let (_, seen) =
                        upstream_of(c, async { stream(c, "fake").await.0 as u16 }).await;
                    let path = seen.unwrap().uri.path().to_owned();
                    json!(path.rsplit(':').next().unwrap_or_default())
                })
            },
            before: json!("streamGenerateContent"),
            after: json!("generateContent"),
        },
        Row {
            setting: "FAKE_STREAM_EMPTY_DATA_INTERVAL_SECONDS",
            env: |_| "FAKE_STREAM_ENABLED=true\nFAKE_STREAM_EMPTY_DATA_INTERVAL_SECONDS=5\n".into(),
            setup: |c| {
                c.mock
                    .set_fault(&test_key(1), Fault::Slow(Duration::from_millis(2500)))
            },
            seed: nothing,
            change: |_| json!(1),
            observe: |c| Box::pin(keep_alives(c)),
            before: json!(false),
            after: json!(true),
        },
        Row {
            setting: "STREAM_OPTIMIZER_ENABLED",
            env: no_env,
            setup: nothing,
            seed: nothing,
            change: |_| json!(true),
            // "echo: hello there": 3 events upstream; one a character re-chunked.
            observe: |c| Box::pin(async move { json!(stream(c, "hello there").await.0) }),
            before: json!(3),
            after: json!(17),
        },
        Row {
            setting: "STREAM_CHUNK_SIZE",
            env: |_| optimizer_env(0.0, 0.0, 1, 10, 5),
            setup: nothing,
            seed: nothing,
            change: |_| json!(10),
            // 3 texts of 20 characters: pieces of 5, then of 10.
            observe: |c| Box::pin(async move { json!(stream(c, PROMPT_54).await.0) }),
            before: json!(12),
            after: json!(6),
        },
        Row {
            setting: "STREAM_LONG_TEXT_THRESHOLD",
            env: |_| optimizer_env(0.0, 0.0, 1, 50, 5),
            setup: nothing,
            seed: nothing,
            change: |_| json!(10),
            // Texts of 20: one character per event while they are not long.
            observe: |c| Box::pin(async move { json!(stream(c, PROMPT_54).await.0) }),
            before: json!(60),
            after: json!(12),
        },
        Row {
            setting: "STREAM_MIN_DELAY",
            env: |_| optimizer_env(0.0, 0.5, 1, 10, 5),
            setup: nothing,
            seed: nothing,
            change: |_| json!(0.1),
            // 12 pieces of long text, 0 then 100 ms apart.
            observe: |c| Box::pin(slow_stream(c)),
            before: json!(false),
            after: json!(true),
        },
        Row {
            setting: "STREAM_MAX_DELAY",
            env: |_| optimizer_env(0.0, 0.0, 50, 100, 5),
            setup: nothing,
            seed: nothing,
            change: |_| json!(0.02),
            // 60 characters of short text, 0 then 20 ms apart.
            observe: |c| Box::pin(slow_stream(c)),
            before: json!(false),
            after: json!(true),
        },
        Row {
            setting: "STREAM_SHORT_TEXT_THRESHOLD",
            env: |_| optimizer_env(0.0, 0.02, 1, 21, 5),
            setup: nothing,
            seed: nothing,
            change: |_| json!(20),
            // Texts of 20 characters: nearly long (under 1 ms apart), then short (20 ms).
            observe: |c| Box::pin(slow_stream(c)),
            before: json!(false),
            after: json!(true),
        },
        Row {
            setting: "ERROR_LOG_RECORD_REQUEST_BODY",
            env: |_| "MAX_RETRIES=1\nMAX_FAILURES=0\nERROR_LOG_RECORD_REQUEST_BODY=false\n".into(),
            setup: |c| c.mock.set_fault(&test_key(1), Fault::ServerError),
            seed: nothing,
            change: |_| json!(true),
            observe: |c| Box::pin(error_body_kept(c)),
            before: json!(false),
            after: json!(true),
        },
        Row {
            setting: "AUTO_DELETE_ERROR_LOGS_ENABLED",
            env: |_| "AUTO_DELETE_ERROR_LOGS_ENABLED=false\nAUTO_DELETE_ERROR_LOGS_DAYS=7\n".into(),
            setup: nothing,
            seed: seed_old_rows,
            change: |_| json!(true),
            observe: |c| Box::pin(old_rows(c, "errors")),
            before: json!(3),
            after: json!(0),
        },
        Row {
            setting: "AUTO_DELETE_ERROR_LOGS_DAYS",
            env: |_| "AUTO_DELETE_ERROR_LOGS_ENABLED=true\nAUTO_DELETE_ERROR_LOGS_DAYS=30\n".into(),
            setup: nothing,
            seed: seed_old_rows,
            change: |_| json!(7),
            observe: |c| Box::pin(old_rows(c, "errors")),
            before: json!(3),
            after: json!(0),
        },
        Row {
            setting: "AUTO_DELETE_REQUEST_LOGS_ENABLED",
            env: |_| {
                "AUTO_DELETE_REQUEST_LOGS_ENABLED=false\nAUTO_DELETE_REQUEST_LOGS_DAYS=7\n".into()
            },
            setup: nothing,
            seed: seed_old_rows,
            change: |_| json!(true),
            observe: |c| Box::pin(old_rows(c, "requests")),
            before: json!(3),
            after: json!(0),
        },
        Row {
            setting: "AUTO_DELETE_REQUEST_LOGS_DAYS",
            env: |_| {
                "AUTO_DELETE_REQUEST_LOGS_ENABLED=true\nAUTO_DELETE_REQUEST_LOGS_DAYS=30\n".into()
            },
            setup: nothing,
            seed: seed_old_rows,
            change: |_| json!(7),
            observe: |c| Box::pin(old_rows(c, "requests")),
            before: json!(3),
            after: json!(0),
        },
        // A 1 MiB budget over a 2 MB log: the oldest rows go first.
        Row {
            setting: "DATABASE_MAX_SIZE_MB",
            env: |_| "DATABASE_MAX_SIZE_MB=0\n".into(),
            setup: nothing,
            seed: seed_old_rows_and_a_full_log,
            change: |_| json!(1),
            observe: |c| Box::pin(old_rows(c, "requests")),
            before: json!(3),
            after: json!(0),
        },
    ]
}

/// The stream optimizer on, delays in seconds.
fn optimizer_env(min: f64, max: f64, short: u32, long: u32, chunk: u32) -> String {
    format!(
        "STREAM_OPTIMIZER_ENABLED=true\nSTREAM_MIN_DELAY={min}\nSTREAM_MAX_DELAY={max}\n\
         STREAM_SHORT_TEXT_THRESHOLD={short}\nSTREAM_LONG_TEXT_THRESHOLD={long}\nSTREAM_CHUNK_SIZE={chunk}\n"
    )
}

/// Did the stream of [`PROMPT_54`] take 0.6 s or more (the delays add up to about a second)?
async fn slow_stream(ctx: &Ctx) -> Value {
    json!(stream(ctx, PROMPT_54).await.1 >= Duration::from_millis(600))
}

/// Does the error log keep the body of a failed request?
async fn error_body_kept(ctx: &Ctx) -> Value {
    let newest = || async {
        let (status, page) = admin(ctx, "GET", "/logs/errors?limit=1", None).await;
        assert_eq!(status, 200, "{page}");
        page["items"][0]["id"].as_i64().unwrap_or(0)
    };
    let last = newest().await;
    let marker = format!("marker-{last}");
    assert_eq!(native(ctx, "gemini-2.0-flash", &marker).await.0, 500);
    let deadline = Instant::now() + Duration::from_secs(5);
    let id = loop {
        let id = newest().await;
        if id > last {
            break id;
        }
        assert!(Instant::now() < deadline, "the error was not logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, entry) = admin(ctx, "GET", &format!("/logs/errors/{id}"), None).await;
    assert_eq!(status, 200, "{entry}");
    json!(entry["request_body"]
        .as_str()
        .is_some_and(|b| b.contains(&marker)))
}

/// Observes until `expected` shows (or [`SETTLE`] passes); returns the last observation.
async fn settle(ctx: &Ctx, row: &Row, expected: &Value) -> Value {
    let deadline = Instant::now() + SETTLE;
    loop {
        let seen = (row.observe)(ctx).await;
        if &seen == expected || Instant::now() >= deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start(ctx: &Ctx, env: &str) -> Running {
    let proxy = Running::start(ctx.dir.path(), env, &ctx.log).await;
    *ctx.url.lock().unwrap() = proxy.url.clone();
    proxy
}

/// The binary, started like `common::Proxy` but again on another port when the one it was
/// given was taken meanwhile: rows run side by side, each restarting its proxy, while their
/// clients take ephemeral ports, so the free port `common::free_port` found is sometimes gone
/// by the time the proxy binds it.
struct Running {
    child: std::process::Child,
    url: String,
}

impl Running {
    async fn start(dir: &std::path::Path, env: &str, log: &std::path::Path) -> Running {
        std::fs::write(dir.join(".env"), env).unwrap();
        let stderr_path = dir.join("stderr.txt");
        let client = support::client_builder().build().unwrap();
        for _ in 0..5 {
            let port = common::free_port();
            let stdout = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap();
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gemini-balance-proxy"))
                .current_dir(dir)
                .env("HOST", "127.0.0.1")
                .env("PORT", port.to_string())
                .stdout(stdout)
                .stderr(std::fs::File::create(&stderr_path).unwrap())
                .spawn()
                .unwrap();
            let url = format!("http://127.0.0.1:{port}");
            for _ in 0..400 {
                if let Ok(res) = client.get(format!("{url}/health")).send().await {
                    if res.status() == 200 {
                        return Running { child, url };
                    }
                }
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let _ = child.kill();
            let exit = child.wait().unwrap();
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            assert!(
                stderr.contains("Address already in use"),
                "the proxy did not start ({exit}): {stderr}"
            );
        }
        panic!("no free port for the proxy after 5 tries");
    }

    /// SIGTERM, then wait: the graceful path that flushes the store.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "the proxy exited with {exit}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the setting's value comes from, as `GET /api/config` says.
async fn source_of(ctx: &Ctx, setting: &str) -> Value {
    for token in [ADMIN, ADMIN2] {
        let res = ctx
            .client
            .get(format!("{}/api/config", ctx.url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            let config: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
            return config["settings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == setting)
                .map_or(Value::Null, |s| s["source"].clone());
        }
    }
    Value::Null
}

/// Runs one row; `Err` says what differed.
async fn run(row: &Row) -> Result<(), String> {
    let ctx = Ctx::new().await;
    (row.setup)(&ctx);
    let env = format!("{}{}", base_env(&ctx), (row.env)(&ctx));
    let name = row.setting;
    (row.seed)(&ctx);
    let proxy = start(&ctx, &env).await;
    let seen = settle(&ctx, row, &row.before).await;
    if seen != row.before {
        return Err(format!(
            "{name}: before the change: expected {}, saw {seen}",
            row.before
        ));
    }
    let change = json!({ name: (row.change)(&ctx) });
    let (status, answer) = admin(&ctx, "PUT", "/config", Some(change.clone())).await;
    if status != 200 || answer["changed"] != json!([name]) {
        return Err(format!(
            "{name}: PUT /api/config {change}: {status} {answer}"
        ));
    }
    let seen = settle(&ctx, row, &row.after).await;
    if seen != row.after {
        return Err(format!(
            "{name}: after the change, without a restart: expected {}, saw {seen}",
            row.after
        ));
    }
    proxy.stop();
    // The same .env, which still holds the old value: the stored one wins.
    (row.seed)(&ctx);
    let proxy = start(&ctx, &env).await;
    let seen = settle(&ctx, row, &row.after).await;
    if seen != row.after {
        return Err(format!(
            "{name}: after a restart on the same .env: expected {}, saw {seen}",
            row.after
        ));
    }
    let source = source_of(&ctx, name).await;
    if source != json!("database") && source != json!("secrets_file") {
        return Err(format!("{name}: after a restart the source is {source}"));
    }
    proxy.stop();
    let mut log = std::fs::read_to_string(&ctx.log).unwrap_or_default();
    for entry in std::fs::read_dir(log_dir(&ctx))
        .into_iter()
        .flatten()
        .flatten()
    {
        log.push_str(&String::from_utf8_lossy(
            &std::fs::read(entry.path()).unwrap_or_default(),
        ));
    }
    for secret in [test_key(1), test_key(2), TOKEN.to_owned(), ADMIN.to_owned()] {
        if log.contains(&secret) {
            return Err(format!("{name}: the log holds a secret"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_live_setting_acts_without_a_restart_and_is_kept() {
    let only = std::env::var("LIVE_SETTING").ok();
    let rows: Vec<Row> = rows()
        .into_iter()
        .filter(|r| only.as_deref().is_none_or(|o| o == r.setting))
        .collect();
    let rows = Arc::new(rows);
    let permits = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..rows.len() {
        let (rows, permits) = (rows.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            let started = Instant::now();
            let result = run(&rows[i]).await;
            eprintln!(
                "{}: {:?} in {:.1?}",
                rows[i].setting,
                result.is_ok(),
                started.elapsed()
            );
            result
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(panic) => failures.push(format!("a row panicked: {panic}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn every_live_setting_has_a_row() {
    let ctx = Ctx::new().await;
    let proxy = start(&ctx, &base_env(&ctx)).await;
    let (status, config) = admin(&ctx, "GET", "/config", None).await;
    assert_eq!(status, 200);
    let tested: Vec<&str> = rows().iter().map(|r| r.setting).collect();
    let live: Vec<&str> = config["settings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["live"] == true && s["supported"] == true)
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    let missing: Vec<&&str> = live.iter().filter(|n| !tested.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "live settings without a row in live_settings.rs: {missing:?}"
    );
    let not_live: Vec<&&str> = tested.iter().filter(|n| !live.contains(n)).collect();
    assert!(
        not_live.is_empty(),
        "rows for settings that are not live: {not_live:?}"
    );
    proxy.stop();
}
