//! The proxy checker: can a `PROXIES` entry (or a proxy URL not saved yet) carry requests to
//! the upstream? The admin API's `POST /api/proxies/check` answers with it.
//!
//! Gemini-Balance's admin sends `HEAD https://www.google.com` through the proxy. This one asks
//! where the proxy's traffic really goes: `GET {BASE_URL}/models?pageSize=1` through the proxy,
//! with TIME_OUT capped at 10 s, CUSTOM_HEADERS and our `User-Agent`, as an API request
//! would, but **without a key** (a proxy being tried must not see one, and a key-less request
//! spends no quota). Any answer from the upstream means the proxy works, whatever its status
//! (Gemini answers a key-less request `403`); `407` (the proxy wants credentials) and the
//! gateway statuses a proxy answers when it cannot reach the target (`502`, `503`, `504`) do
//! not. So the check needs no internet where BASE_URL is on the local network, and it tests
//! the path that matters when BASE_URL is a relay.
//!
//! As in Gemini-Balance: at most 5 checks at a time (1 to 10 on request), 10 s each, and a
//! result is reused for 10 s unless the caller asks for a fresh one. At most [`MAX_URLS`]
//! URLs not saved yet per request. A proxy's `user:password`
//! is a secret: answers and logs show the proxy as `scheme://…@host:port`, and error messages
//! are stripped of the URL and its credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gemini_balance::redact::SecretForms;
use percent_encoding::percent_decode_str;
use serde::Serialize;

use axum::http::Request;
use bytes::Bytes;
use gemini_balance::client::upstream::BuildError;
use http_body_util::Empty;
use tower::ServiceExt;

use crate::upstream::Options;

/// The longest a check may take (Gemini-Balance's `TIMEOUT_SECONDS`).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a result is reused (Gemini-Balance's `CACHE_DURATION`).
pub const CACHE_FOR: Duration = Duration::from_secs(10);
/// Checks at once by default, and at most (Gemini-Balance's `max_concurrent`, `le=10`).
pub const DEFAULT_CONCURRENCY: usize = 5;
pub const MAX_CONCURRENCY: usize = 10;
/// Proxy URLs not saved yet checked in one request at most.
pub const MAX_URLS: usize = 50;
/// Results remembered at most (expired ones are dropped first).
const CACHE_CAPACITY: usize = 256;

/// Statuses that a forward proxy answers itself when it fails: not the upstream's answer.
const PROXY_FAILURES: &[u16] = &[407, 502, 503, 504];

/// One proxy's result. Holds no credential.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// Position in PROXIES (from 1), or `None` for a URL that is not saved.
    pub entry: Option<usize>,
    /// The proxy without its credentials: `http://…@host:port`.
    pub proxy: String,
    /// The upstream answered through the proxy.
    pub ok: bool,
    /// The status that came back; `None` when nothing did.
    pub status: Option<u16>,
    /// Why the check failed.
    pub message: Option<String>,
    /// Until the answer's head (or the failure).
    pub latency_ms: u64,
    /// When the check ran (a cached result keeps its time).
    pub checked_at_ms: u64,
    /// The result is one from the last 10 s, reused.
    pub cached: bool,
}

/// Checks proxies; remembers results for [`CACHE_FOR`].
#[derive(Debug, Default)]
pub struct ProxyChecker {
    /// By proxy URL and BASE_URL (a result says nothing about another target).
    cache: Mutex<HashMap<(String, String), (Instant, CheckResult)>>,
}

impl ProxyChecker {
    /// Checks `proxies` (`(entry, url)`), at most `concurrency` at a time; results in the given
    /// order. With `use_cache`, a result from the last [`CACHE_FOR`] is answered again.
    ///
    /// Only `concurrency` checks exist at any time (each with its own client): the next one is
    /// started when one ends, so a long list waits as a list, not as tasks.
    pub async fn check_all(
        self: &Arc<Self>,
        options: &Options,
        proxies: Vec<(Option<usize>, String)>,
        use_cache: bool,
        concurrency: usize,
    ) -> Vec<CheckResult> {
        let mut results = Vec::with_capacity(proxies.len());
        let mut waiting = proxies.into_iter().enumerate();
        let mut tasks = tokio::task::JoinSet::new();
        let mut start = |tasks: &mut tokio::task::JoinSet<_>| {
            let Some((i, (entry, url))) = waiting.next() else {
                return;
            };
            let (checker, options) = (self.clone(), options.clone());
            tasks.spawn(async move { (i, checker.check(&options, entry, &url, use_cache).await) });
        };
        for _ in 0..concurrency.clamp(1, MAX_CONCURRENCY) {
            start(&mut tasks);
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok(result) = done {
                results.push(result);
            }
            start(&mut tasks);
        }
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }

    /// Checks one proxy (or answers its result from the last 10 s).
    pub async fn check(
        &self,
        options: &Options,
        entry: Option<usize>,
        url: &str,
        use_cache: bool,
    ) -> CheckResult {
        let key = (url.to_owned(), options.base_url.clone());
        if use_cache {
            if let Some(mut hit) = self.cached(&key) {
                hit.entry = entry;
                hit.cached = true;
                return hit;
            }
        }
        let mut result = run(options, url).await;
        result.entry = entry;
        tracing::info!(
            proxy = %result.proxy,
            ok = result.ok,
            status = ?result.status,
            latency_ms = result.latency_ms,
            message = result.message.as_deref().unwrap_or("-"),
            "proxy check"
        );
        self.remember(key, result.clone());
        result
    }

    fn cached(&self, key: &(String, String)) -> Option<CheckResult> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(at, _)| at.elapsed() < CACHE_FOR)
            .map(|(_, result)| result.clone())
    }

    fn remember(&self, key: (String, String), result: CheckResult) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
        if cache.len() >= CACHE_CAPACITY {
            return;
        }
        cache.insert(key, (Instant::now(), result));
    }
}

/// Sends the check request through the proxy at `url`.
async fn run(options: &Options, url: &str) -> CheckResult {
    let mut result = CheckResult {
        entry: None,
        proxy: display(url),
        ok: false,
        status: None,
        message: None,
        latency_ms: 0,
        checked_at_ms: now_ms(),
        cached: false,
    };
    let time_out = options.time_out.min(CHECK_TIMEOUT);
    let upstream = match options
        .builder()
        .connect_timeout(time_out)
        .first_byte_timeout(time_out)
        .idle_timeout(time_out)
        .proxies([url])
        .build()
    {
        Ok(upstream) => upstream,
        Err(BuildError::Proxy { reason, .. }) => {
            result.message = Some(reason);
            return result;
        }
        Err(e) => {
            result.message = Some(e.to_string());
            return result;
        }
    };
    let check = Request::get("/models?pageSize=1")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string());
    let started = Instant::now();
    let sent = match check {
        Ok(req) => match tokio::time::timeout(CHECK_TIMEOUT, upstream.oneshot(req)).await {
            Ok(sent) => sent,
            Err(_) => Err("timed out: the check took longer than 10 s".into()),
        },
        Err(e) => Err(e.into()),
    };
    result.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match sent {
        Ok(res) => {
            let status = res.status().as_u16();
            result.status = Some(status);
            result.ok = !PROXY_FAILURES.contains(&status);
            if !result.ok {
                result.message = Some(match status {
                    407 => {
                        "the proxy wants credentials (407 Proxy Authentication Required)".to_owned()
                    }
                    _ => format!(
                        "HTTP {status}: the proxy could not reach {}",
                        host_of(&options.base_url)
                    ),
                });
            }
        }
        Err(e) => {
            let class = gemini_balance::classify::classify_any_error(&e);
            let cause = redact(&causes(e.as_ref()), url);
            result.message = Some(if cause.is_empty() {
                format!("no answer through the proxy: {class}")
            } else {
                format!("no answer through the proxy: {class} ({cause})")
            });
        }
    }
    result
}

/// The error's causes below reqwest's own "error sending request for url (…)", joined.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    // A proxied route's error is reqwest's, whose own message repeats the URL.
    let e = match e.downcast_ref::<reqwest::Error>() {
        Some(e) => e as &(dyn std::error::Error + 'static),
        None => return chain(e),
    };
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    parts.join(": ")
}

/// The error's message and its causes, joined.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.join(": ")
}

/// `text` without the proxy's URL, its credentials or the password alone, in every form the
/// library's [`SecretForms`] knows (as written, percent-encoded, JSON-escaped, UTF-16), both as
/// the URL spells them and decoded.
fn redact(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &display(url));
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return out;
    };
    let user = parsed.username();
    let password = parsed.password().unwrap_or_default();
    let decoded = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    // A password of a letter or two would match ordinary words: only its whole URL form
    // (above) and `user:password` are replaced then.
    let mut secrets = vec![
        format!("{user}:{password}"),
        format!("{}:{}", decoded(user), decoded(password)),
    ];
    if password.len() >= 4 {
        secrets.push(password.to_owned());
        secrets.push(decoded(password));
    }
    for secret in secrets.iter().filter(|s| s.len() > 1) {
        let forms = SecretForms::new(secret, "…");
        out = String::from_utf8_lossy(&forms.redact(out.as_bytes())).into_owned();
    }
    out
}

/// A proxy URL as it may be shown: scheme, host and port; credentials as `…@`.
pub fn display(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => {
            let credentials = !parsed.username().is_empty() || parsed.password().is_some();
            let host = parsed.host_str().unwrap_or("");
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{}{host}{port}",
                parsed.scheme(),
                if credentials { "…@" } else { "" }
            )
        }
        Err(_) => "(not a proxy URL)".to_owned(),
    }
}

/// `host[:port]` of a URL, for messages.
fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_owned();
            Some(match u.port() {
                Some(p) => format!("{host}:{p}"),
                None => host,
            })
        })
        .unwrap_or_else(|| "the upstream".to_owned())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_are_shown_without_credentials() {
        assert_eq!(
            display("http://user:hunter2@127.0.0.1:3128"),
            "http://…@127.0.0.1:3128"
        );
        assert_eq!(
            display("socks5h://proxy.example:1080/"),
            "socks5h://proxy.example:1080"
        );
        assert_eq!(
            display("https://user@proxy.example"),
            "https://…@proxy.example"
        );
        assert_eq!(display("not a url hunter2"), "(not a proxy URL)");
    }

    #[test]
    fn messages_lose_the_url_and_its_credentials() {
        let url = "http://alice:p%40ss-word@10.0.0.1:8080";
        let text =
            format!("failed for {url}: user alice:p@ss-word, password p@ss-word, p%40ss-word");
        let clean = redact(&text, url);
        assert!(
            !clean.contains("p@ss-word") && !clean.contains("p%40ss-word"),
            "{clean}"
        );
        assert!(clean.contains("http://…@10.0.0.1:8080"), "{clean}");

        // A password with characters JSON escapes, as an error quoting a JSON body has it.
        let url = "http://alice:p%22ss%5Cw%2Ford@10.0.0.1:8080";
        let text = r#"proxy said {"auth":"alice:p\"ss\\w\/ord","pw":"p\"ss\\w/ord"}"#;
        let clean = redact(text, url);
        assert!(!clean.contains(r#"p\"ss"#), "{clean}");
        assert!(clean.contains(r#"{"auth":"…","pw":"…"}"#), "{clean}");
    }

    #[tokio::test]
    async fn only_as_many_checks_as_allowed_exist_at_once() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A proxy that takes connections and never answers: each check lasts TIME_OUT.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let options = Options {
            time_out: Duration::from_millis(200),
            headers: http::HeaderMap::new(),
            base_url: "http://127.0.0.1:9/v1beta".to_owned(),
        };
        let proxies: Vec<_> = (0..40)
            .map(|i| (None, format!("http://user{i}:pw@{addr}")))
            .collect();
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        let checker = Arc::new(ProxyChecker::default());
        let run = tokio::spawn(async move { checker.check_all(&options, proxies, false, 3).await });
        let mut most = 0;
        while !run.is_finished() {
            most = most.max(metrics.num_alive_tasks() - before);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let results = run.await.unwrap();
        assert_eq!(results.len(), 40);
        assert!(results.iter().all(|r| !r.ok));
        // The running `check_all`, three checks and their connections: not one task per proxy.
        assert!(most <= 1 + 3 * 3, "{most} tasks at once");
    }
}
