//! A bounded fuzz run of the proxy's request paths: the real binary in front of the loopback
//! mock Gemini (answering normally: no faults), fed generated requests (mutated Gemini and
//! OpenAI bodies, odd headers and framing, odd paths, methods and query strings, on every route
//! family) through reqwest (HTTP/1.1 and HTTP/2) and raw sockets.
//!
//! Every answer must be:
//! - no 5xx unless the upstream answered a 5xx to that case (a 502/504 for a request that never
//!   reached the mock is the proxy's own failure);
//! - a 4xx in the route's error format (Gemini's `{"error":{"code","message","status"}}`,
//!   OpenAI's `{"error":{"message","type",...}}`), except hyper's own 400/414/431 for requests
//!   it cannot parse, which are in Gemini's format whatever the route (hyper answers before the
//!   route is known);
//! - free of the pool's keys and the admin token, and the upstream never sees the client token.
//!
//! After the run the process still runs, `/health` and a normal `generateContent` answer 200,
//! and its output (stdout and stderr) holds no `panicked`.
//!
//! The cases come from a seeded PRNG; the seed is printed. Settings (environment):
//! - `FUZZ_SEED`: replay a run (each case has its own generator, seeded from the run's seed and
//!   its index, so a case is the same whatever ran before it);
//! - `FUZZ_CASE`: run only this case of the seed's run;
//! - `FUZZ_CASES` (default 3000) and `FUZZ_SECONDS` (default 20, a cap on wall-clock time so CI
//!   stays fast on a slow machine): longer local runs raise both.

mod common;

#[path = "fuzz/cases.rs"]
mod cases;
#[path = "fuzz/raw.rs"]
mod raw;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gemini_balance::api_error::ApiFlavor;
use serde_json::Value;
use support::{prompt_body, test_keys, MockGemini};

use cases::{Case, Transport};
use common::{Proxy, TOKEN};
use raw::{Answer, Outcome};

/// The admin token: set, so the client token is not also the admin's, and never sent.
const ADMIN_TOKEN: &str = "sk-fuzz-admin-token-never-sent";

/// Failures listed in full; the rest are counted.
const REPORTED: usize = 15;

fn setting(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value}: expected a non-negative integer")),
    )
}

/// The generator of case `index` of the run with `seed`.
fn case_rng(seed: u64, index: u64) -> fastrand::Rng {
    fastrand::Rng::with_seed(seed ^ index.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_get_no_5xx_of_ours_no_panic_and_the_proxy_keeps_serving() {
    let seed = setting("FUZZ_SEED").unwrap_or_else(|| fastrand::u64(..));
    let only = setting("FUZZ_CASE");
    let count = setting("FUZZ_CASES").unwrap_or(3000);
    let budget = Duration::from_secs(setting("FUZZ_SECONDS").unwrap_or(20));
    // Half the seeds answer streams through the pseudo stream (FAKE_STREAM_ENABLED). The limit
    // on failed authentications is off: the cases with a wrong token would otherwise get the
    // rest of the run refused with 429 before their paths and bodies are read (the limit has
    // its own tests, in auth_limit.rs).
    let fake_stream = seed % 2 == 1;
    println!(
        "fuzz: seed {seed} (replay: FUZZ_SEED={seed}), up to {count} cases in {} s, fake streams {fake_stream}",
        budget.as_secs()
    );

    let mock = MockGemini::start().await;
    let keys = test_keys(3);
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("proxy.log");
    let env = format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nAUTH_TOKEN={ADMIN_TOKEN}\nBASE_URL={}/v1beta\n\
         MAX_RETRIES=2\nLOG_LEVEL=info\nFAKE_STREAM_ENABLED={fake_stream}\n\
         FAKE_STREAM_EMPTY_DATA_INTERVAL_SECONDS=1\nERROR_LOG_RECORD_REQUEST_BODY=true\n\
         AUTH_FAILURE_BURST=0\n",
        serde_json::to_string(&keys).unwrap(),
        mock.base_url(),
    );
    let mut proxy = Proxy::start_capturing(dir.path(), &env, &output).await;
    let authority = proxy.url.trim_start_matches("http://").to_owned();
    let ctx = cases::Ctx {
        token: TOKEN.to_owned(),
        authority: authority.clone(),
    };
    let clients = Clients::new();
    let mut secrets = keys.clone();
    secrets.push(ADMIN_TOKEN.to_owned());

    let started = Instant::now();
    let mut ran = 0u64;
    let mut failures = Vec::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let indices: Box<dyn Iterator<Item = u64>> = match only {
        Some(i) => Box::new(std::iter::once(i)),
        None => Box::new(0..count),
    };
    for index in indices {
        if started.elapsed() > budget {
            break;
        }
        let case = cases::generate(&mut case_rng(seed, index), &ctx);
        mock.reset_counters();
        let outcome = send(&clients, &proxy.url, &authority, &case).await;
        let upstream: Vec<u16> = mock.recent_requests().iter().map(|r| r.status).collect();
        let seen = match &outcome {
            Ok(Outcome::Answered(answer)) => answer.status.to_string(),
            Ok(Outcome::Closed) => "closed".to_owned(),
            Ok(Outcome::Garbled(_)) => "garbled".to_owned(),
            Err(_) => "error".to_owned(),
        };
        *statuses.entry(seen).or_default() += 1;
        let mut verdict = judge(&case, outcome, &upstream, &secrets);
        if verdict.is_ok() && mock.saw_credential(TOKEN) {
            verdict = Err("the client token reached the upstream".to_owned());
        }
        ran += 1;
        if let Err(problem) = verdict {
            failures.push(format!(
                "case {index} [{}]: {problem}\n    upstream answered: {upstream:?}\n    request: {}",
                case.family,
                describe(&case)
            ));
            if !proxy.is_running() {
                failures.push(format!("the proxy exited during case {index}"));
                break;
            }
        }
    }
    println!(
        "fuzz: {ran} cases in {:.1} s; answers: {statuses:?}",
        started.elapsed().as_secs_f64()
    );

    // Still serving, and nothing panicked on the way.
    assert!(proxy.is_running(), "the proxy exited (seed {seed})");
    let client = support::client_builder().build().unwrap();
    let health = client
        .get(format!("{}/health", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "/health after the run (seed {seed})");
    let normal = client
        .post(format!(
            "{}/v1beta/models/gemini-2.0-flash:generateContent",
            proxy.url
        ))
        .header("x-goog-api-key", TOKEN)
        .header("content-type", "application/json")
        .body(prompt_body("still there?"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        normal.status(),
        200,
        "generateContent after the run (seed {seed}): {}",
        normal.text().await.unwrap_or_default()
    );
    let log = std::fs::read_to_string(&output).unwrap_or_default();
    if let Some(at) = log.find("panicked") {
        let from = log[..at].rfind('\n').map_or(0, |i| i + 1);
        failures.insert(
            0,
            format!(
                "the proxy's output has a panic:\n{}",
                &log[from..(at + 2000).min(log.len())]
            ),
        );
    }
    proxy.stop();

    if !failures.is_empty() {
        let total = failures.len();
        let mut report = failures
            .into_iter()
            .take(REPORTED)
            .collect::<Vec<_>>()
            .join("\n");
        if total > REPORTED {
            report.push_str(&format!("\n... and {} more", total - REPORTED));
        }
        panic!("fuzz (FUZZ_SEED={seed}): {total} failures of {ran} cases\n{report}");
    }
}

/// The reqwest clients: one connection per request over HTTP/1.1 (a connection the server
/// closed is never reused), and HTTP/2 with prior knowledge.
struct Clients {
    http1: reqwest::Client,
    http2: reqwest::Client,
}

impl Clients {
    fn new() -> Clients {
        let build = |h2: bool| {
            let builder = support::client_builder()
                .timeout(raw::GUARD)
                .pool_max_idle_per_host(0);
            let builder = if h2 {
                builder.http2_prior_knowledge()
            } else {
                builder.http1_only()
            };
            builder.build().unwrap()
        };
        Clients {
            http1: build(false),
            http2: build(true),
        }
    }
}

async fn send(
    clients: &Clients,
    base: &str,
    authority: &str,
    case: &Case,
) -> Result<Outcome, String> {
    let client = match case.transport {
        Transport::Raw { complete } => return raw::send(authority, case, complete).await,
        Transport::Http1 => &clients.http1,
        Transport::Http2 => &clients.http2,
    };
    let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
    let mut request = client.request(method, format!("{base}{}", case.target));
    for (name, value) in &case.headers {
        request = request.header(name.as_str(), value.as_slice());
    }
    let response = request
        .body(case.body.clone())
        .send()
        .await
        .map_err(|e| format!("no answer: {e:?}"))?;
    let status = response.status().as_u16();
    let headers: Vec<(String, Vec<u8>)> = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("{status}, then the body broke off: {e:?}"))?
        .to_vec();
    let mut raw = Vec::new();
    for (name, value) in &headers {
        raw.extend_from_slice(name.as_bytes());
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(value);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(&body);
    Ok(Outcome::Answered(Answer {
        status,
        headers,
        body,
        raw,
    }))
}

/// What is wrong with the answer to `case`, if anything. `upstream`: the statuses the mock
/// answered for it.
fn judge(
    case: &Case,
    outcome: Result<Outcome, String>,
    upstream: &[u16],
    secrets: &[String],
) -> Result<(), String> {
    let complete = !matches!(case.transport, Transport::Raw { complete: false });
    let answer = match outcome? {
        Outcome::Answered(answer) => answer,
        Outcome::Closed if !complete => return Ok(()),
        Outcome::Closed => return Err("the connection closed without an answer".to_owned()),
        // An answer cut off when the connection closed under the unfinished request.
        Outcome::Garbled(_) if !complete => return Ok(()),
        Outcome::Garbled(what) => return Err(format!("not an HTTP answer: {what}")),
    };
    for secret in secrets {
        if contains(&answer.raw, secret.as_bytes()) {
            return Err(format!(
                "a secret ({}…) is in the answer: {}",
                &secret[..8],
                raw::lossy(&answer.raw, 400)
            ));
        }
    }
    let status = answer.status;
    let body = || raw::lossy(&answer.body, 400);
    if status >= 500 && !upstream.iter().any(|&s| s >= 500) {
        return Err(format!("{status} of ours: {}", body()));
    }
    if (400..500).contains(&status) && case.method != "HEAD" {
        error_format(case, &answer, upstream)
            .map_err(|problem| format!("{status}: {problem}: {}", body()))?;
    }
    Ok(())
}

/// A 4xx body in the route's error format.
fn error_format(case: &Case, answer: &Answer, upstream: &[u16]) -> Result<(), String> {
    // hyper answers a request it cannot parse before the proxy knows its route: the proxy's
    // connection writer gives that answer a JSON body in Gemini's format (serve/parse_errors.rs).
    let hyper_own = matches!(answer.status, 400 | 414 | 431)
        && matches!(case.transport, Transport::Raw { .. })
        && serde_json::from_slice::<Value>(&answer.body)
            .is_ok_and(|v| shape_of(&v, answer.status) == Some(ApiFlavor::Gemini));
    if hyper_own {
        return Ok(());
    }
    let path = served_path(case);
    // axum's own empty 405 (with `allow`) for a wrong method on a web admin page.
    let web_405 = answer.status == 405
        && answer.body.is_empty()
        && answer.header("allow").is_some()
        && !is_api_path(&path)
        && !path.starts_with("/api/");
    if web_405 {
        return Ok(());
    }
    let value: Value = serde_json::from_slice(&answer.body).map_err(|_| "not JSON".to_owned())?;
    let expected = expected_flavor(&path);
    let shape = shape_of(&value, answer.status);
    if shape == Some(expected) {
        return Ok(());
    }
    // Requests forwarded untouched get the upstream's own answer as it is: the `/openai/v1/*`
    // pass-through, and (until they are refused) other methods than POST on the OpenAI routes.
    let forwarded = path.starts_with("/openai/v1/") || case.method != "POST";
    let passed_on = forwarded && upstream.contains(&answer.status);
    if passed_on && shape.is_some() {
        return Ok(());
    }
    Err(format!(
        "expected {expected:?}'s error format, got {}",
        shape.map_or("neither".to_owned(), |s| format!("{s:?}'s"))
    ))
}

/// Which format `value` is in: Gemini's (`code` = the status, `message`, `status`) or
/// OpenAI's (`message`, `type`).
fn shape_of(value: &Value, status: u16) -> Option<ApiFlavor> {
    let error = value.get("error")?;
    let message = error.get("message").is_some_and(Value::is_string);
    if message
        && error.get("code").and_then(Value::as_u64) == Some(u64::from(status))
        && error.get("status").is_some_and(Value::is_string)
    {
        Some(ApiFlavor::Gemini)
    } else if message && error.get("type").is_some_and(Value::is_string) {
        Some(ApiFlavor::OpenAi)
    } else {
        None
    }
}

/// The path the server sees (absolute-form targets lose their scheme and authority).
fn served_path(case: &Case) -> String {
    let target = case.target.as_str();
    let target = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    target.split('?').next().unwrap_or("").to_owned()
}

/// The API paths: the Gemini mounts (`…/models…`), the OpenAI routes, `/openai/v1/*`.
fn is_api_path(path: &str) -> bool {
    let gemini_mount = ["/gemini/v1beta", "/v1beta", "/v1"].iter().any(|mount| {
        path.strip_prefix(mount)
            .is_some_and(|rest| rest == "/models" || rest.starts_with("/models/"))
    });
    gemini_mount || is_openai_route(path)
}

fn is_openai_route(path: &str) -> bool {
    [
        "/v1/chat/completions",
        "/hf/v1/chat/completions",
        "/v1/embeddings",
        "/hf/v1/embeddings",
    ]
    .contains(&path.trim_end_matches('/'))
        || path.starts_with("/openai/v1/")
}

/// The error format of a route family: the admin API and web admin answer Gemini's; the
/// Gemini mounts Gemini's; the OpenAI routes and `/openai/v1/*` OpenAI's; anything else as
/// its path suggests.
fn expected_flavor(path: &str) -> ApiFlavor {
    if path == "/api" || path.starts_with("/api/") {
        ApiFlavor::Gemini
    } else if is_openai_route(path) {
        ApiFlavor::OpenAi
    } else if is_api_path(path) {
        ApiFlavor::Gemini
    } else {
        ApiFlavor::of_path(path)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The request, short enough for a report.
fn describe(case: &Case) -> String {
    let headers: Vec<String> = case
        .headers
        .iter()
        .take(12)
        .map(|(n, v)| format!("{n}: {}", raw::lossy(v, 60)))
        .collect();
    format!(
        "{:?} {} {} {}\n    headers: {headers:?}{}\n    body ({} bytes): {}",
        case.transport,
        case.method,
        raw::lossy(case.target.as_bytes(), 200),
        case.version,
        if case.headers.len() > 12 {
            format!(" (+{} more)", case.headers.len() - 12)
        } else {
            String::new()
        },
        case.body.len(),
        raw::lossy(&case.body, 300),
    )
}
