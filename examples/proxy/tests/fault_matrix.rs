//! The fault matrix (issue 14, item 10): the proxy binary on loopback against the mock Gemini,
//! one test per fault, each asserting what the client gets, what the log and the database hold,
//! and that no secret (pool key, client token, AUTH_TOKEN) appears in any answer the test
//! received, in the log (stdout and stderr) or in any file under `data/`.
//!
//! | row | fault | test | keeps (issue 14) |
//! |---|---|---|---|
//! | 1 | upstream compresses: gzip negotiated; br, zstd, deflate forced | `compressing_upstream` | answers decoded (`DecodeLayer`); records with model and tokens |
//! | 2 | key quoted in UTF-8 JSON, Latin-1 HTML, an SSE error event | `upstream_quoting_the_key` | redaction by bytes, any encoding, streams too |
//! | 3 | upstream killed mid-stream, both APIs | `upstream_killed_mid_stream` | the record is what the client got (`body_error`, `error_event`) |
//! | 4 | answer truncated half-way | `truncated_answer` | a 502 in the API's format, recorded as such (`WholeAnswer`) |
//! | 5 | slowloris and idle client connections | `slowloris_and_idle_connections` | client connection deadlines |
//! | 6 | client disconnects mid-stream | `client_disconnects_mid_stream` | `client_gone`, the upstream stream dropped |
//! | 7 | SIGTERM with half-sent requests | `sigterm_with_half_sent_requests` | bounded shutdown, the store flushed |
//! | 8 | `kill -9` under load, then restart | `kill_9_under_load_then_restart` | the store's durability window (docs/store.md) |
//! | 9 | the store's queue full | `store_queue_full` | the request path never waits for the store |
//! | 10 | every key quota-cooled | `all_keys_quota_cooled` | 429 + `Retry-After`, no upstream call, `/health` |
//! | 11 | `[good, invalid, quota, suspended]` keys | `mixed_broken_keys` | free key failovers, classification, redacted error log |
//!
//! Each row has a [`Row`]: a mock upstream and the proxy, started with a `.env` that names a
//! Google key and a key of another shape (`sk-…`, which only redaction by its bytes finds, not
//! the Google pattern), the client token and AUTH_TOKEN, at `LOG_LEVEL=debug` (info for the load
//! rows) so that the log has something to leak into. Every answer the test reads goes through
//! the row, which keeps its head and body; [`Row::finish`] sweeps those, the log and every file
//! under `data/` for any 12 characters in a row of a secret. The one file skipped is
//! `data/<db>.secrets.json`, which holds the secret settings changed through the admin API by
//! design (no row changes one, so it does not even exist here).
//!
//! Timing: timeouts are set short (1-2 s) and the rows run in parallel; the only time bounds
//! asserted are generous upper ones ("closed within", "exited within", the durability window
//! plus an allowance for a loaded machine), and lower bounds that a deadline cannot undercut.

mod common;

use common::raw::{closed_after, read_response, GUARD};

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use common::Proxy;
use gemini_balance::store::logs::{ErrorEntry, ErrorQuery, RequestEntry, RequestQuery};

use gemini_balance::store::SqliteStore;
use serde_json::{json, Value};
use support::{prompt_body, test_key, Compression, Encoding, Fault, MockGemini};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client token of every row.
const CLIENT_TOKEN: &str = "sk-fault-matrix-client-3f9a1c";
/// AUTH_TOKEN of every row.
const ADMIN_TOKEN: &str = "sk-fault-matrix-admin-7d2e4b";
/// A pool key that is not shaped like Google's: only redaction by its bytes can find it.
const SK_KEY: &str = "sk-relay-pool-key-5e8c0a9b7d6f4e3a2b1c";
/// The model of every call.
const FLASH: &str = "gemini-2.0-flash";

/// One answer as the client got it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
    /// The body ended with an error (the connection was cut) instead of its end.
    cut: bool,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.text()))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// The API a call speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Gemini,
    OpenAi,
}

/// A row of the matrix: the mock, the proxy, its directory and log, and every byte the test
/// received from the proxy.
struct Row {
    mock: MockGemini,
    dir: tempfile::TempDir,
    env: String,
    proxy: Option<Proxy>,
    client: reqwest::Client,
    /// Every head and body byte received from the proxy, for the secrets sweep.
    seen: Mutex<Vec<u8>>,
    /// The pool keys of this row; with the two tokens, what must appear nowhere.
    keys: Vec<String>,
}

impl Row {
    /// The mock and the proxy with `keys`, the tokens, LOG_LEVEL=debug and `extra` settings.
    async fn start(keys: &[&str], extra: &str) -> Row {
        let mock = MockGemini::start().await;
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        // `extra` first: the first line naming a setting wins.
        let env = format!(
            "{extra}API_KEYS={}\nALLOWED_TOKENS=[\"{CLIENT_TOKEN}\"]\nAUTH_TOKEN={ADMIN_TOKEN}\n\
             BASE_URL={}/v1beta\nTEST_MODEL={FLASH}\nLOG_LEVEL=debug\n",
            serde_json::to_string(&keys).unwrap(),
            mock.base_url(),
        );
        let mut row = Row {
            mock,
            dir,
            env,
            proxy: None,
            client: support::client_builder().build().unwrap(),
            seen: Mutex::new(Vec::new()),
            keys,
        };
        row.restart().await;
        row
    }

    /// Starts the proxy (again) on the row's directory.
    async fn restart(&mut self) {
        assert!(self.proxy.is_none(), "the proxy is running");
        let proxy = Proxy::start_capturing(self.dir.path(), &self.env, &self.log()).await;
        self.proxy = Some(proxy);
    }

    fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("the proxy is not running")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.proxy().url)
    }

    /// The proxy's address, for raw connections.
    fn addr(&self) -> String {
        self.proxy().url.trim_start_matches("http://").to_owned()
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("proxy.log")
    }

    fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.log()).unwrap_or_default()).into_owned()
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("data/default_db.db")
    }

    fn keep(&self, bytes: &[u8]) {
        self.seen.lock().unwrap().extend_from_slice(bytes);
    }

    fn keep_head(&self, res: &reqwest::Response) {
        let mut head = format!("{}\n", res.status());
        for (name, value) in res.headers() {
            head.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        self.keep(head.as_bytes());
    }

    /// Sends `req` and reads the whole answer (a cut body is noted, not a failure).
    async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let res = self.open(req).await;
        self.read_rest(res).await
    }

    /// Sends `req` and returns once the head has arrived; read on with [`chunk`](Self::chunk).
    async fn open(&self, req: reqwest::RequestBuilder) -> reqwest::Response {
        let res = req.send().await.unwrap();
        self.keep_head(&res);
        res
    }

    /// The next piece of `res`'s body (`None` at its end); an error if it was cut.
    async fn chunk(&self, res: &mut reqwest::Response) -> Result<Option<Bytes>, reqwest::Error> {
        let chunk = res.chunk().await;
        if let Ok(Some(data)) = &chunk {
            self.keep(data);
        }
        chunk
    }

    async fn read_rest(&self, mut res: reqwest::Response) -> Answer {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let mut body = Vec::new();
        let cut = loop {
            match self.chunk(&mut res).await {
                Ok(Some(data)) => body.extend_from_slice(&data),
                Ok(None) => break false,
                Err(_) => break true,
            }
        };
        Answer {
            status,
            headers,
            body: body.into(),
            cut,
        }
    }

    /// A Gemini call: `generateContent`, or with `stream` `streamGenerateContent?alt=sse`.
    fn gemini_request(&self, stream: bool, prompt: &str) -> reqwest::RequestBuilder {
        let action = if stream {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        };
        self.client
            .post(self.url(&format!("/v1beta/models/{FLASH}:{action}")))
            .header("x-goog-api-key", CLIENT_TOKEN)
            .header("content-type", "application/json")
            .body(prompt_body(prompt))
    }

    /// An OpenAI chat completion, streamed or not.
    fn openai_request(&self, stream: bool, prompt: &str) -> reqwest::RequestBuilder {
        self.client
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(CLIENT_TOKEN)
            .header("content-type", "application/json")
            .body(
                json!({"model": FLASH, "stream": stream,
                       "messages": [{"role": "user", "content": prompt}]})
                .to_string(),
            )
    }

    fn request(&self, api: Api, stream: bool, prompt: &str) -> reqwest::RequestBuilder {
        match api {
            Api::Gemini => self.gemini_request(stream, prompt),
            Api::OpenAi => self.openai_request(stream, prompt),
        }
    }

    async fn call(&self, api: Api, stream: bool, prompt: &str) -> Answer {
        self.send(self.request(api, stream, prompt)).await
    }

    /// An admin API call with AUTH_TOKEN.
    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), self.url(&format!("/api{path}")))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let answer = self.send(req).await;
        let value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        (answer.status, value)
    }

    async fn health(&self) -> Value {
        self.send(self.client.get(self.url("/health"))).await.json()
    }

    /// The admin summary once the writer has nothing queued (records reach the database up
    /// to its gather time after the answer).
    async fn settled_summary(&self) -> Value {
        let started = Instant::now();
        loop {
            let (status, summary) = self.admin("GET", "/stats/summary", None).await;
            assert_eq!(status, 200, "{summary}");
            if summary["store"]["queued"] == 0 {
                return summary;
            }
            assert!(
                started.elapsed() < GUARD,
                "the writer never drained: {summary}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM and wait: the graceful stop that flushes the database. `data/` is swept for
    /// secrets before (the WAL as written; the stop truncates it) and after.
    fn stop(&mut self) {
        self.sweep_data("while running");
        self.proxy.take().expect("not running").stop();
        self.sweep_data("after a stop");
    }

    /// The request log, oldest first (read once the proxy has stopped).
    fn request_log(&self) -> Vec<RequestEntry> {
        assert!(self.proxy.is_none(), "stop the proxy first");
        let store = SqliteStore::open(self.db()).unwrap();
        let query = RequestQuery {
            limit: 1_000,
            ..RequestQuery::default()
        };
        let page = store.request_log(&query).unwrap();
        store.shutdown().unwrap();
        assert!(!page.has_more, "more rows than one page");
        let mut rows = page.entries;
        rows.reverse();
        rows
    }

    /// The error log, oldest first (read once the proxy has stopped).
    fn error_log(&self) -> Vec<ErrorEntry> {
        assert!(self.proxy.is_none(), "stop the proxy first");
        let store = SqliteStore::open(self.db()).unwrap();
        let query = ErrorQuery {
            limit: 1_000,
            ..ErrorQuery::default()
        };
        let page = store.error_log(&query).unwrap();
        store.shutdown().unwrap();
        assert!(page.total <= 1_000, "more rows than one page");
        let mut rows = page.entries;
        rows.reverse();
        rows
    }

    /// The secrets of this row: the pool keys, the client token, AUTH_TOKEN.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = self.keys.clone();
        secrets.push(CLIENT_TOKEN.to_owned());
        secrets.push(ADMIN_TOKEN.to_owned());
        secrets
    }

    /// Panics if a piece of a secret is in `bytes` (found in `place`).
    fn assert_no_secret_in(&self, place: &str, bytes: &[u8]) {
        if let Some((at, secret)) = Leaks::of(&self.secrets()).find(bytes) {
            panic!(
                "{} leaked into {place} at byte {at}: …{}…",
                gemini_balance::keys::mask(&secret),
                String::from_utf8_lossy(&bytes[at.saturating_sub(80)..at])
            );
        }
    }

    /// Every file under `data/` but the secrets file, swept for secrets (`when` says when).
    fn sweep_data(&self, when: &str) {
        let mut swept = Vec::new();
        for file in files_under(&self.dir.path().join("data")) {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".secrets.json") {
                continue; // holds secret settings changed through the admin API, by design
            }
            // A file the proxy removes as it is read (a journal) is simply not there.
            let Ok(bytes) = std::fs::read(&file) else {
                continue;
            };
            self.assert_no_secret_in(&format!("{} ({when})", file.display()), &bytes);
            swept.push(name);
        }
        assert!(
            swept.iter().any(|n| n == "default_db.db"),
            "no database swept: {swept:?}"
        );
    }

    /// Stops the proxy if it runs, then the secrets sweep: every answer received, the log
    /// (stdout and stderr), every file under `data/` but the secrets file.
    fn finish(mut self) {
        if self.proxy.is_some() {
            self.stop();
        }
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        assert!(!seen.is_empty(), "the row received nothing");
        self.assert_no_secret_in("an answer to the client", &seen);
        let log = std::fs::read(self.log()).unwrap();
        self.assert_no_secret_in("the log", &log);
        assert!(
            !String::from_utf8_lossy(&log).contains("panicked"),
            "the proxy panicked: {}",
            String::from_utf8_lossy(&log)
        );
        self.sweep_data("at the end");
    }
}

/// Characters of a secret in a row that count as a leak: a secret cut short, or with its
/// ends replaced, is found too. A fingerprint (`AIza…0001`) shows four at each end.
const LEAK_WINDOW: usize = 12;

/// Every run of [`LEAK_WINDOW`] characters of the secrets, sorted, to look for in one pass.
struct Leaks {
    pieces: Vec<(Vec<u8>, String)>,
    first_bytes: [bool; 256],
}

impl Leaks {
    fn of(secrets: &[String]) -> Leaks {
        let mut pieces = Vec::new();
        let mut first_bytes = [false; 256];
        for secret in secrets {
            assert!(
                secret.len() > 2 * LEAK_WINDOW,
                "a secret too short to test with"
            );
            for piece in secret.as_bytes().windows(LEAK_WINDOW) {
                first_bytes[piece[0] as usize] = true;
                pieces.push((piece.to_vec(), secret.clone()));
            }
        }
        pieces.sort();
        Leaks {
            pieces,
            first_bytes,
        }
    }

    /// Where the first piece of a secret is in `bytes`, and whose.
    fn find(&self, bytes: &[u8]) -> Option<(usize, String)> {
        bytes
            .windows(LEAK_WINDOW)
            .enumerate()
            .filter(|(_, w)| self.first_bytes[w[0] as usize])
            .find_map(|(at, w)| {
                let i = self.pieces.partition_point(|(p, _)| p.as_slice() < w);
                let (piece, secret) = self.pieces.get(i)?;
                (piece.as_slice() == w).then(|| (at, secret.clone()))
            })
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// `PRAGMA integrity_check` of the database at `path`.
fn integrity_check(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .unwrap()
}

fn count_rows(path: &Path, table: &str) -> u64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
        r.get::<_, i64>(0)
    })
    .unwrap() as u64
}

/// The text of a streamed answer: its events' pieces put together.
fn streamed_text(api: Api, sse: &str) -> String {
    // Every event here is one `data:` line (Gemini ends them with CRLF, OpenAI with LF).
    sse.lines()
        .filter_map(|line| line.trim().strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .map(|data| {
            let event: Value = serde_json::from_str(data).unwrap();
            let piece = match api {
                Api::Gemini => &event["candidates"][0]["content"]["parts"][0]["text"],
                Api::OpenAi => &event["choices"][0]["delta"]["content"],
            };
            piece.as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// Waits up to [`GUARD`] for `done`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < GUARD, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Row 1: an upstream (or a relay before it) that compresses its answers. Every kind of call
/// comes back decoded, without `Content-Encoding`, even to a client that accepts encodings,
/// and its tokens are counted.
#[tokio::test]
async fn compressing_upstream() {
    let google = test_key(1);
    let mut row = Row::start(&[&google, SK_KEY], "").await;
    let compressions = [
        Compression::Negotiate,
        Compression::Force(Encoding::Brotli),
        Compression::Force(Encoding::Zstd),
        Compression::Force(Encoding::Deflate),
    ];
    for compression in &compressions {
        row.mock.set_compression(compression.clone());
        let before = row.mock.compressed_answers();
        let accepting =
            |req: reqwest::RequestBuilder| req.header("accept-encoding", "gzip, br, zstd, deflate");
        let mut answers = Vec::new();
        for (api, stream) in [
            (Api::Gemini, false),
            (Api::Gemini, true),
            (Api::OpenAi, false),
            (Api::OpenAi, true),
        ] {
            let prompt = format!("{compression:?} {api:?} {stream}");
            let answer = row.send(accepting(row.request(api, stream, &prompt))).await;
            assert_eq!(
                answer.status,
                200,
                "{compression:?} {api:?}: {}",
                answer.text()
            );
            assert!(!answer.cut, "{compression:?} {api:?} {stream}");
            // Decoded: the mock's answer, the echo of the prompt, reads whole.
            let text = if stream {
                assert!(answer.text().starts_with("data: "), "{}", answer.text());
                streamed_text(api, &answer.text())
            } else {
                let json = answer.json();
                let text = match api {
                    Api::Gemini => &json["candidates"][0]["content"]["parts"][0]["text"],
                    Api::OpenAi => &json["choices"][0]["message"]["content"],
                };
                text.as_str().unwrap_or_default().to_owned()
            };
            assert_eq!(
                text,
                format!("echo: {prompt}"),
                "{compression:?} {api:?} {stream}"
            );
            if api == Api::OpenAi && stream {
                assert!(
                    answer.text().ends_with("data: [DONE]\n\n"),
                    "{}",
                    answer.text()
                );
            }
            answers.push(answer);
        }
        let list = row
            .send(accepting(
                row.client
                    .get(row.url("/v1beta/models"))
                    .header("x-goog-api-key", CLIENT_TOKEN),
            ))
            .await;
        assert_eq!(list.status, 200, "{}", list.text());
        assert!(
            list.json()["models"]
                .as_array()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            list.text()
        );
        answers.push(list);
        for answer in &answers {
            assert_eq!(answer.header("content-encoding"), None, "{compression:?}");
        }
        assert_eq!(
            row.mock.compressed_answers() - before,
            answers.len() as u64,
            "{compression:?}: every upstream answer was compressed"
        );
    }

    assert_eq!(
        row.mock.abandoned_streams(),
        0,
        "every stream was read to its end"
    );

    row.stop();
    let rows = row.request_log();
    assert_eq!(rows.len(), 5 * compressions.len(), "{rows:#?}");
    for r in &rows {
        assert_eq!((r.status, r.success), (200, true), "{r:#?}");
        assert_eq!(r.completion, "complete", "{r:#?}");
        if r.route != "/models" {
            // Every call is counted: the model, the tokens the upstream reported (also for an
            // OpenAI stream whose client did not ask for the usage chunk).
            assert_eq!(r.model.as_deref(), Some(FLASH), "{r:#?}");
            assert!(r.tokens.prompt > 0 && r.tokens.total > 0, "{r:#?}");
        }
    }
    row.finish();
}

/// Row 2: an upstream that quotes the key it was sent: in a UTF-8 JSON error (a suspended
/// key), in a Latin-1 HTML page (a relay's 500), in an error event after a stream's 200; on
/// both APIs, with a Google key and an `sk-` key in the pool. The client gets the message
/// with the key's fingerprint in its place; the error log (admin API and database) and the
/// log file hold no key.
#[tokio::test]
async fn upstream_quoting_the_key() {
    let google = test_key(1);
    let mut row = Row::start(&[&google, SK_KEY], "").await;
    let masks = [
        gemini_balance::keys::mask(&google),
        gemini_balance::keys::mask(SK_KEY),
    ];
    // In a body that is not UTF-8 a key is replaced by an ASCII stand-in of its length that
    // keeps the fingerprint's ends.
    let stand_ins = [&google, SK_KEY].map(|key| {
        format!(
            "{}{}{}",
            &key[..4],
            "*".repeat(key.len() - 8),
            &key[key.len() - 4..]
        )
    });
    let quoted = |text: &str| {
        masks
            .iter()
            .chain(&stand_ins)
            .any(|m| text.contains(m.as_str()))
    };
    for fault in [
        Fault::Suspended,
        Fault::HtmlPageQuotingKey,
        Fault::StreamErrorQuotingKey,
    ] {
        let stream = fault == Fault::StreamErrorQuotingKey;
        for api in [Api::Gemini, Api::OpenAi] {
            row.mock.set_fault(&google, fault.clone());
            row.mock.set_fault(SK_KEY, fault.clone());
            let answer = row.call(api, stream, &format!("{fault:?}")).await;
            let text = answer.text();
            let what = format!("{fault:?} {api:?}: {} {text}", answer.status);
            for key in [google.as_str(), SK_KEY] {
                assert!(!text.contains(key), "{what}");
            }
            // The upstream's message reaches the client, the key's fingerprint in its place.
            assert!(quoted(&text), "{what}");
            match fault {
                Fault::Suspended => {
                    assert_eq!(answer.status, 403, "{what}");
                    assert!(text.contains("has been suspended"), "{what}");
                    let error = &answer.json()["error"];
                    match api {
                        Api::Gemini => assert_eq!(error["status"], "PERMISSION_DENIED", "{what}"),
                        Api::OpenAi => assert!(error["type"].is_string(), "{what}"),
                    }
                }
                Fault::HtmlPageQuotingKey => {
                    assert_eq!(answer.status, 500, "{what}");
                    assert!(text.contains("upstream refused key="), "{what}");
                    if api == Api::OpenAi {
                        assert_eq!(answer.json()["error"]["type"], "server_error", "{what}");
                    }
                }
                _ => {
                    assert_eq!(answer.status, 200, "{what}");
                    assert!(text.starts_with("data: "), "{what}");
                    assert!(
                        text.contains("Internal error encountered for api_key:"),
                        "{what}"
                    );
                }
            }
            // Both keys usable again for the next call.
            let (status, reset) = row
                .admin("POST", "/keys/reset", Some(json!({"all": true})))
                .await;
            assert_eq!(status, 200, "{reset}");
        }
    }

    // The error log through the admin API, list and details: every failed attempt of both
    // keys, quoted message and all, with the fingerprint for the key.
    let (status, errors) = row.admin("GET", "/logs/errors?limit=1000", None).await;
    assert_eq!(status, 200, "{errors}");
    let items = errors["items"].as_array().unwrap();
    for entry in items {
        let id = entry["id"].as_i64().unwrap();
        let (status, detail) = row.admin("GET", &format!("/logs/errors/{id}"), None).await;
        assert_eq!(status, 200, "{detail}");
        assert!(quoted(detail["message"].as_str().unwrap()), "{detail}");
    }
    for (class, status) in [("key_rejected", 403), ("server_error", 500)] {
        for mask in &masks {
            assert!(
                items.iter().any(|e| e["class"] == class
                    && e["status"] == status
                    && e["key_mask"] == mask.as_str()),
                "no {class} {status} of {mask}: {errors:#}"
            );
        }
    }
    row.stop();
    // The same in the database.
    let logged = row.error_log();
    assert_eq!(logged.len(), items.len(), "{logged:#?}");
    assert!(
        logged
            .iter()
            .all(|e| e.message.as_deref().is_some_and(quoted)),
        "{logged:#?}"
    );
    // The request log: what each client got; a stream's error event is no success.
    let rows = row.request_log();
    let got: Vec<(u16, bool, &str)> = rows
        .iter()
        .map(|r| (r.status, r.success, r.completion.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (403, false, "complete"),
            (403, false, "complete"),
            (500, false, "complete"),
            (500, false, "complete"),
            (200, false, "error_event"),
            (200, false, "error_event"),
        ],
        "{rows:#?}"
    );
    row.finish();
}

/// Row 3: the upstream dies in the middle of a stream. A Gemini stream is cut as the
/// upstream's was; an OpenAI stream ends with an error event; neither is a success in the
/// request log.
#[tokio::test]
async fn upstream_killed_mid_stream() {
    let google = test_key(1);
    let mut row = Row::start(&[&google], "").await;
    row.mock.set_fault(&google, Fault::BreaksOff);

    let gemini = row.call(Api::Gemini, true, "die").await;
    assert_eq!(gemini.status, 200);
    assert!(gemini.text().starts_with("data: "), "{}", gemini.text());
    assert!(!gemini.text().contains("finishReason"), "{}", gemini.text());
    assert!(
        gemini.cut,
        "the client sees the stream cut: {}",
        gemini.text()
    );

    let openai = row.call(Api::OpenAi, true, "die").await;
    assert_eq!(openai.status, 200);
    let text = openai.text();
    assert!(
        !openai.cut,
        "an OpenAI stream ends with its error event: {text}"
    );
    let events: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    // What came before the cut, then the error in OpenAI's shape.
    assert!(events.len() >= 2, "{text}");
    assert_eq!(events[0]["object"], "chat.completion.chunk", "{text}");
    let last = &events[events.len() - 1]["error"];
    assert_eq!(last["type"], "server_error", "{text}");
    assert!(
        last["message"].as_str().unwrap().contains("broke off"),
        "{text}"
    );

    row.stop();
    let rows = row.request_log();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(
        (rows[0].status, rows[0].success, rows[0].completion.as_str()),
        (200, false, "body_error"),
        "{rows:#?}"
    );
    assert_eq!(
        (rows[1].status, rows[1].success, rows[1].completion.as_str()),
        (200, false, "error_event"),
        "{rows:#?}"
    );
    // The log has each request's line (its head was a 200); the break is in the database.
    let log = row.log_text();
    assert_eq!(
        log.lines().filter(|l| l.contains("status=200")).count(),
        2,
        "{log}"
    );
    row.finish();
}

/// Row 4: an answer cut half-way: the client gets a 502 in its API's format, never half a
/// JSON document, and the request log says 502.
#[tokio::test]
async fn truncated_answer() {
    let google = test_key(1);
    let mut row = Row::start(&[&google], "").await;
    row.mock.set_fault(&google, Fault::BreaksOff);

    let gemini = row.call(Api::Gemini, false, "cut").await;
    assert_eq!(gemini.status, 502, "{}", gemini.text());
    let error = gemini.json();
    assert_eq!(error["error"]["code"], 502, "{error}");
    assert_eq!(error["error"]["status"], "UNAVAILABLE", "{error}");

    let openai = row.call(Api::OpenAi, false, "cut").await;
    assert_eq!(openai.status, 502, "{}", openai.text());
    let error = openai.json();
    assert_eq!(error["error"]["type"], "server_error", "{error}");
    // Both say the upstream's answer is what failed.
    for answer in [&gemini, &openai] {
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains("upstream"), "{message}");
    }
    row.stop();
    let rows = row.request_log();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for r in &rows {
        assert_eq!((r.status, r.success), (502, false), "{r:#?}");
    }
    row.finish();
}

/// Row 5: slowloris (heads stopped half-way, heads sent a byte at a time) and idle keep-alive
/// connections are closed after CLIENT_HEADER_TIMEOUT and CLIENT_IDLE_TIMEOUT, none of them
/// reaches the upstream, and meanwhile a real request is served.
#[tokio::test]
async fn slowloris_and_idle_connections() {
    const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
    const IDLE_TIMEOUT: Duration = Duration::from_secs(1);
    let google = test_key(1);
    let row = Row::start(
        &[&google],
        &format!(
            "CLIENT_HEADER_TIMEOUT={}\nCLIENT_IDLE_TIMEOUT={}\n",
            HEADER_TIMEOUT.as_secs(),
            IDLE_TIMEOUT.as_secs()
        ),
    )
    .await;
    let opened = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let mut stream = TcpStream::connect(row.addr()).await.unwrap();
        stream
            .write_all(
                format!("POST /v1beta/models/{FLASH}:generateContent HTTP/1.1\r\nhost: pro")
                    .as_bytes(),
            )
            .await
            .unwrap();
        stalled.push(stream);
    }
    // The deadline is for the whole head: a byte now and then does not extend it.
    let mut tricklers = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let addr = row.addr();
        tricklers.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "GET /health HTTP/1.1\r\nhost: proxy\r\nx-slow: {}\r\n\r\n",
                "z".repeat(200)
            );
            trickle(&mut stream, head.as_bytes()).await
        });
    }
    let mut idle = Vec::new();
    for _ in 0..10 {
        let mut stream = TcpStream::connect(row.addr()).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: proxy\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut stream).await;
        row.keep(head.as_bytes());
        row.keep(&body);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        idle.push((stream, Instant::now()));
    }

    // A real request, while all of them are open.
    let answer = row.call(Api::Gemini, false, "meanwhile").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // A generous bound on one loopback request; the slow connections close no earlier than
    // HEADER_TIMEOUT (asserted below), so they were all still open.
    assert!(
        opened.elapsed() < HEADER_TIMEOUT,
        "the real request was not served while the slow connections were open"
    );

    for mut stream in stalled {
        let waited = closed_after(&mut stream)
            .await
            .expect("a stalled head left open");
        assert!(
            opened.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(100),
            "{waited:?}"
        );
    }
    while let Some(outcome) = tricklers.join_next().await {
        let (closed, received) = outcome.unwrap();
        row.keep(&received);
        let waited = closed.expect("a trickled head left open");
        assert!(
            waited >= HEADER_TIMEOUT - Duration::from_millis(100),
            "{waited:?}"
        );
        assert!(
            received.is_empty(),
            "a trickled head was answered: {}",
            String::from_utf8_lossy(&received)
        );
    }
    for (mut stream, answered) in idle {
        closed_after(&mut stream)
            .await
            .expect("an idle connection left open");
        assert!(answered.elapsed() >= IDLE_TIMEOUT - Duration::from_millis(100));
    }
    assert_eq!(
        row.mock.total(),
        1,
        "only the real request reached the upstream"
    );

    // Still serving once they are gone.
    let answer = row.call(Api::OpenAi, false, "after").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    row.finish();
}

/// Sends `head` a byte every 100 ms until the server closes the connection; returns how long
/// that took (`None`: the whole head went out) and what the server sent meanwhile.
async fn trickle(stream: &mut TcpStream, head: &[u8]) -> (Option<Duration>, Vec<u8>) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    for byte in head {
        if stream.write_all(&[*byte]).await.is_err() {
            return (Some(started.elapsed()), received);
        }
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (Some(started.elapsed()), received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    (None, received)
}

/// Row 6: a client that leaves in the middle of a stream: the request log says `client_gone`,
/// the upstream stream is dropped (the mock sees its reader go), the proxy serves on.
#[tokio::test]
async fn client_disconnects_mid_stream() {
    let google = test_key(1);
    let mut row = Row::start(&[&google], "").await;
    let _gate = row.mock.gate_streams();
    for (n, api) in [Api::Gemini, Api::OpenAi].into_iter().enumerate() {
        // A client of its own, so that its connection is closed with the response.
        let client = support::client_builder().build().unwrap();
        let req = match api {
            Api::Gemini => client
                .post(row.url(&format!(
                    "/v1beta/models/{FLASH}:streamGenerateContent?alt=sse"
                )))
                .header("x-goog-api-key", CLIENT_TOKEN)
                .body(prompt_body("leaving")),
            Api::OpenAi => client
                .post(row.url("/v1/chat/completions"))
                .bearer_auth(CLIENT_TOKEN)
                .body(
                    json!({"model": FLASH, "stream": true,
                           "messages": [{"role": "user", "content": "leaving"}]})
                    .to_string(),
                ),
        };
        let mut res = row
            .open(req.header("content-type", "application/json"))
            .await;
        assert_eq!(res.status(), 200);
        let first = row.chunk(&mut res).await.unwrap().expect("the first event");
        assert!(first.starts_with(b"data: "), "{first:?}");
        drop(res);
        drop(client);
        eventually(&format!("{api:?}: the upstream stream dropped"), || {
            row.mock.abandoned_streams() == n as u64 + 1
        })
        .await;
        // Still serving.
        let answer = row.call(api, false, "still there?").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    row.stop();
    let rows = row.request_log();
    let got: Vec<(u16, bool, bool, &str)> = rows
        .iter()
        .map(|r| (r.status, r.success, r.streamed, r.completion.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (200, false, true, "client_gone"),
            (200, true, false, "complete"),
            (200, false, true, "client_gone"),
            (200, true, false, "complete"),
        ],
        "{rows:#?}"
    );
    row.finish();
}

/// Row 7: SIGTERM while requests are half-sent (a head, a body): the process exits within a
/// bound (SHUTDOWN_TIMEOUT, with room to spare), closing both, and the database is intact and
/// holds every completed request, nothing else.
#[tokio::test]
async fn sigterm_with_half_sent_requests() {
    let google = test_key(1);
    let mut row = Row::start(
        &[&google, SK_KEY],
        "SHUTDOWN_TIMEOUT=2\nCLIENT_HEADER_TIMEOUT=60\nCLIENT_BODY_TIMEOUT=60\n",
    )
    .await;
    for (n, api) in [Api::Gemini, Api::OpenAi, Api::Gemini, Api::OpenAi]
        .into_iter()
        .enumerate()
    {
        let answer = row.call(api, n % 3 == 0, &format!("done {n}")).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let mut half_head = TcpStream::connect(row.addr()).await.unwrap();
    half_head
        .write_all(
            format!("POST /v1beta/models/{FLASH}:generateContent HTTP/1.1\r\nhost: pro").as_bytes(),
        )
        .await
        .unwrap();
    let mut half_body = TcpStream::connect(row.addr()).await.unwrap();
    half_body
        .write_all(
            format!(
                "POST /v1beta/models/{FLASH}:generateContent HTTP/1.1\r\nhost: proxy\r\n\
                 x-goog-api-key: {CLIENT_TOKEN}\r\ncontent-type: application/json\r\n\
                 content-length: 400\r\n\r\n{{\"contents\": [{{\"parts\": ["
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Give the proxy the time to read the heads (if it has not, the half-sent body is a
    // half-sent head too: closed at once rather than at SHUTDOWN_TIMEOUT; either way bounded).
    tokio::time::sleep(Duration::from_millis(200)).await;

    row.sweep_data("before SIGTERM");
    let mut proxy = row.proxy.take().unwrap();
    proxy.sigterm();
    let exit = proxy
        .exited_within(GUARD)
        .await
        .expect("still running after SIGTERM");
    assert!(exit.success(), "{exit}");
    drop(proxy);
    for (what, stream) in [("head", &mut half_head), ("body", &mut half_body)] {
        let mut received = Vec::new();
        let closed = tokio::time::timeout(GUARD, stream.read_to_end(&mut received)).await;
        assert!(closed.is_ok(), "the half-sent {what} was left open");
        let received = String::from_utf8_lossy(&received);
        assert!(!received.contains(" 200 "), "{what}: {received}");
        row.keep(received.as_bytes());
    }
    assert_eq!(
        row.mock.requests(&google) + row.mock.requests(SK_KEY),
        4,
        "the half-sent requests never reached the upstream"
    );

    assert_eq!(integrity_check(&row.db()), "ok");
    let rows = row.request_log();
    // The four answered requests; and, if the proxy had read its head before the signal, the
    // request whose body never came, abandoned at shutdown: `client_gone` without a status
    // (a request dropped before its answer is recorded, not lost).
    let (answered, abandoned): (Vec<_>, Vec<_>) =
        rows.iter().partition(|r| r.completion == "complete");
    assert_eq!(answered.len(), 4, "{rows:#?}");
    for r in &answered {
        assert_eq!((r.status, r.success), (200, true), "{r:#?}");
    }
    assert!(abandoned.len() <= 1, "{rows:#?}");
    for r in &abandoned {
        assert_eq!((r.status, r.success), (0, false), "{r:#?}");
        assert_eq!(r.completion, "client_gone", "{r:#?}");
    }
    let log = row.log_text();
    assert!(log.contains("shutdown signal received"), "{log}");
    assert!(log.contains("shut down"), "{log}");
    row.finish();
}

/// The durability window of docs/store.md ("Durability"): a killed process loses the records
/// not yet committed, which at normal load are those of the last gather time (50 ms by default)
/// and the few milliseconds of a batch's write.
const DURABILITY_WINDOW: Duration = Duration::from_millis(50);
/// Added to the window for a loaded 2-core test machine, where the writer thread may wait for
/// a core; well below what a durability bug loses (every record since the last checkpoint,
/// or since the start). The load runs three times as long, so most answers are checked.
const SCHEDULING_ALLOWANCE: Duration = Duration::from_millis(500);
/// How long the clients load the proxy before it is killed.
const LOAD: Duration = Duration::from_millis(1500);

/// Row 8: `kill -9` under load, then a restart on the same data: it starts and serves, the
/// database is intact (and its rollups agree with its rows), it holds no more rows than
/// requests answered, and what it lost is within the durability window of docs/store.md.
#[tokio::test]
async fn kill_9_under_load_then_restart() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let mut row = Row::start(&[&test_key(1), SK_KEY], "LOG_LEVEL=info\n").await;
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(Mutex::new(Vec::<SystemTime>::new()));
    let bodies = Arc::new(Mutex::new(Vec::<u8>::new()));
    let mut clients = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (stop, answered, bodies) = (stop.clone(), answered.clone(), bodies.clone());
        let url = row.proxy().url.clone();
        clients.spawn(async move {
            let client = support::client_builder().build().unwrap();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let req = if (worker + n).is_multiple_of(2) {
                    client
                        .post(format!("{url}/v1beta/models/{FLASH}:generateContent"))
                        .header("x-goog-api-key", CLIENT_TOKEN)
                        .body(prompt_body(&format!("load {worker} {n}")))
                } else {
                    client
                        .post(format!("{url}/v1/chat/completions"))
                        .bearer_auth(CLIENT_TOKEN)
                        .body(
                            json!({"model": FLASH,
                                   "messages": [{"role": "user", "content": format!("load {worker} {n}")}]})
                            .to_string(),
                        )
                };
                let Ok(res) = req.header("content-type", "application/json").send().await else {
                    break;
                };
                let status = res.status();
                let Ok(body) = res.bytes().await else {
                    break;
                };
                let at = SystemTime::now();
                bodies.lock().unwrap().extend_from_slice(&body);
                assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                answered.lock().unwrap().push(at);
            }
        });
    }
    tokio::time::sleep(LOAD).await;
    row.sweep_data("under load");
    let killed_at = SystemTime::now();
    row.proxy.take().unwrap().kill9();
    // What a crash leaves (the WAL with the last commits) holds no secret either.
    row.sweep_data("after kill -9");
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    row.keep(&bodies.lock().unwrap());
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() >= 10, "too little load: {}", answered.len());

    row.restart().await;
    assert_eq!(integrity_check(&row.db()), "ok");
    let rows = count_rows(&row.db(), "request_log");
    let settled_before = answered
        .iter()
        .filter(|at| **at + DURABILITY_WINDOW + SCHEDULING_ALLOWANCE < killed_at)
        .count() as u64;
    assert!(settled_before > 0, "the load did not outlast the window");
    assert!(
        rows <= answered.len() as u64,
        "more rows ({rows}) than answers ({})",
        answered.len()
    );
    assert!(
        rows >= settled_before,
        "lost records older than the durability window: {rows} rows, {settled_before} answered \
         more than {:?} before the kill",
        DURABILITY_WINDOW + SCHEDULING_ALLOWANCE
    );
    // The rollups (the statistics) agree with the raw rows: no transaction was half-written.
    let summary = row.settled_summary().await;
    assert_eq!(summary["windows"]["1h"]["calls"], rows, "{summary}");

    // The restarted proxy serves and records.
    let answer = row.call(Api::Gemini, false, "after the crash").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    row.stop();
    assert_eq!(count_rows(&row.db(), "request_log"), rows + 1);
    row.finish();
}

/// Row 9: the store's queue overflows while the database is locked: requests are answered all
/// the same (none waits for the database), the records that did not fit are dropped, counted
/// and logged once, nothing panics, and once the lock is gone the rest is written.
#[tokio::test]
async fn store_queue_full() {
    const CAPACITY: u64 = 4;
    const REQUESTS: u64 = 40;
    let mut row = Row::start(
        &[&test_key(1)],
        &format!("SQLITE_QUEUE_CAPACITY={CAPACITY}\nLOG_LEVEL=info\n"),
    )
    .await;
    // The test holds the database's write lock: the writer can commit nothing.
    let lock = rusqlite::Connection::open(row.db()).unwrap();
    lock.busy_timeout(GUARD).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();

    // A guard, not a measurement: a request path that waited for the writer would wait for
    // the lock, which is only let go after these answers.
    tokio::time::timeout(GUARD, async {
        for n in 0..REQUESTS {
            let api = if n % 2 == 0 { Api::Gemini } else { Api::OpenAi };
            let answer = row.call(api, n % 4 == 1, &format!("queue {n}")).await;
            assert_eq!(answer.status, 200, "{}", answer.text());
        }
    })
    .await
    .expect("requests waited for the database");
    let (_, summary) = row.admin("GET", "/stats/summary", None).await;
    let store = &summary["store"];
    assert_eq!(store["capacity"], CAPACITY, "{summary}");
    assert_eq!(store["written"], 0, "the lock held: {summary}");
    let dropped = store["dropped"].as_u64().unwrap();
    assert!(dropped >= REQUESTS - 2 * CAPACITY, "{summary}");

    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    let summary = row.settled_summary().await;
    let store = &summary["store"];
    let written = store["written"].as_u64().unwrap();
    assert_eq!(store["dropped"], dropped, "{summary}");
    assert_eq!(written + dropped, REQUESTS, "{summary}");
    assert!(written >= 1, "{summary}");

    let answer = row.call(Api::Gemini, false, "after").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    row.stop();
    assert_eq!(row.request_log().len() as u64, written + 1);
    let log = row.log_text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("usage store queue full"))
        .collect();
    assert_eq!(warnings.len(), 1, "logged once, not per record: {log}");
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    row.finish();
}

/// Row 10: every key cooling down after a quota error: 429 with `Retry-After` in the client's
/// API format, no upstream call while they cool, `/health` says so.
#[tokio::test]
async fn all_keys_quota_cooled() {
    let google = test_key(1);
    let mut row = Row::start(&[&google, SK_KEY], "").await;
    for key in [google.as_str(), SK_KEY] {
        row.mock.set_fault(key, Fault::rate_limited("37s"));
    }
    let retry_after = |answer: &Answer| -> u64 {
        answer
            .header("retry-after")
            .unwrap_or_else(|| panic!("no Retry-After: {answer:?}"))
            .parse()
            .unwrap()
    };
    // The request that finds every quota spent: each key is asked once.
    let first = row.call(Api::Gemini, false, "quota").await;
    assert_eq!(first.status, 429, "{}", first.text());
    assert!((36..=37).contains(&retry_after(&first)), "{first:?}");
    assert_eq!(first.json()["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(row.mock.requests(&google), 1);
    assert_eq!(row.mock.requests(SK_KEY), 1);

    // While they cool, nothing goes upstream.
    row.mock.reset_counters();
    for api in [Api::Gemini, Api::OpenAi] {
        for stream in [false, true] {
            let answer = row.call(api, stream, "still cooling").await;
            assert_eq!(answer.status, 429, "{api:?} {stream}: {}", answer.text());
            assert!((1..=37).contains(&retry_after(&answer)), "{answer:?}");
            let error = answer.json();
            match api {
                Api::Gemini => {
                    assert_eq!(error["error"]["status"], "RESOURCE_EXHAUSTED", "{error}")
                }
                Api::OpenAi => assert_eq!(error["error"]["type"], "rate_limit_error", "{error}"),
            }
        }
    }
    assert_eq!(
        row.mock.total(),
        0,
        "an upstream call while every key cools"
    );
    // The quota is Gemini's per-model one: both keys cool for this model and still serve
    // the others, which `/health` tells apart from keys out for every model.
    let health = row.health().await;
    assert_eq!(
        health["keys"],
        json!({"total": 2, "active": 2, "cooling_down": 0, "disabled": 0,
               "cooling_for_some_models": 2}),
        "{health}"
    );

    row.stop();
    let rows = row.request_log();
    assert_eq!(rows.len(), 5, "{rows:#?}");
    for r in &rows {
        assert_eq!((r.status, r.success), (429, false), "{r:#?}");
    }
    let errors = row.error_log();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    for e in &errors {
        assert_eq!(
            (e.status, e.class.as_str()),
            (Some(429), "rate_limited"),
            "{e:#?}"
        );
    }
    row.finish();
}

/// Row 11: `[good, invalid, quota, suspended]` with the default MAX_RETRIES: every request is
/// served, each broken key is asked once and then disabled or cooling as classified, and their
/// errors are in the error log without the keys.
#[tokio::test]
async fn mixed_broken_keys() {
    let (good, invalid, quota) = (test_key(1), test_key(2), test_key(3));
    let suspended = SK_KEY;
    let mut row = Row::start(&[&good, &invalid, &quota, suspended], "").await;
    row.mock.set_fault(&invalid, Fault::InvalidKey);
    row.mock.set_fault(&quota, Fault::rate_limited("37s"));
    row.mock.set_fault(suspended, Fault::Suspended);
    for n in 0..8 {
        let api = if n % 2 == 0 { Api::Gemini } else { Api::OpenAi };
        let answer = row.call(api, n % 3 == 2, &format!("mixed {n}")).await;
        assert_eq!(answer.status, 200, "{api:?}: {}", answer.text());
    }
    for key in [invalid.as_str(), quota.as_str(), suspended] {
        assert_eq!(
            row.mock.requests(key),
            1,
            "{}",
            gemini_balance::keys::mask(key)
        );
    }
    assert_eq!(row.mock.requests(&good), 8);
    let health = row.health().await;
    assert_eq!(
        health["keys"],
        json!({"total": 4, "active": 2, "cooling_down": 0, "disabled": 2,
               "cooling_for_some_models": 1}),
        "{health}"
    );
    // Each broken key as its error says: invalid and suspended out, the quota one cooling
    // for this model until its retryDelay.
    let (_, keys) = row.admin("GET", "/keys", None).await;
    let key = |mask: String| -> Value {
        keys["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["mask"] == mask.as_str())
            .unwrap_or_else(|| panic!("no key {mask}: {keys:#}"))
            .clone()
    };
    let mask = gemini_balance::keys::mask;
    assert_eq!(key(mask(&good))["status"], "active", "{keys:#}");
    let k = key(mask(&invalid));
    assert_eq!(k["status"], "disabled", "{k}");
    assert!(
        k["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("API_KEY_INVALID"),
        "{k}"
    );
    let k = key(mask(suspended));
    assert_eq!(k["status"], "disabled", "{k}");
    assert!(
        k["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("CONSUMER_SUSPENDED"),
        "{k}"
    );
    let k = key(mask(&quota));
    assert_eq!(k["cooldowns"][0]["model"], FLASH, "{k}");
    assert_eq!(k["last_error"]["class"], "rate_limited", "{k}");

    // One error per broken key, classified, the suspended key's quoted message with its
    // fingerprint.
    let (_, errors) = row.admin("GET", "/logs/errors", None).await;
    let mut listed: Vec<(String, String, u64)> = errors["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["key_mask"].as_str().unwrap().to_owned(),
                e["class"].as_str().unwrap().to_owned(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect();
    listed.sort();
    let mut expected = vec![
        (mask(&invalid), "key_rejected".to_owned(), 400),
        (mask(&quota), "rate_limited".to_owned(), 429),
        (mask(suspended), "key_rejected".to_owned(), 403),
    ];
    expected.sort();
    assert_eq!(listed, expected, "{errors:#}");
    row.stop();
    let logged = row.error_log();
    assert_eq!(logged.len(), 3, "{logged:#?}");
    let suspension = logged.iter().find(|e| e.status == Some(403)).unwrap();
    assert_eq!(
        suspension.message.as_deref(),
        Some(
            format!(
                "Permission denied: Consumer 'api_key:{}' has been suspended.",
                mask(suspended)
            )
            .as_str()
        ),
        "{suspension:#?}"
    );
    let rows = row.request_log();
    assert_eq!(rows.len(), 8, "{rows:#?}");
    assert!(
        rows.iter().all(|r| r.success && r.status == 200),
        "{rows:#?}"
    );
    row.finish();
}
