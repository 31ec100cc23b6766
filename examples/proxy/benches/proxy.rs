//! Proxy throughput, latency and memory, in one run:
//!
//! ```sh
//! cargo bench -p gemini-balance-proxy --bench proxy
//! ```
//!
//! Four targets answer the same Gemini `generateContent` (and `streamGenerateContent`)
//! requests from a load generator holding N keep-alive HTTP/1.1 connections:
//!
//! - **(a) upstream**: a lean hyper server answering like Gemini (the stand-in for Gemini);
//! - **(b) pass-through**: a plain hyper proxy in front of (a), forwarding each request over a
//!   pooled hyper client: the floor for any proxy;
//! - **(b2) axum + reqwest pass-through**: the same, on the proxy's own frameworks (axum's
//!   `serve`, a reqwest client) and none of its layers: what the frameworks cost;
//! - **(c) gemini-balance-proxy**: the real binary (bench profile) in front of (a), with a
//!   `.env` of 3 keys and a client token, `LOG_LEVEL=warn`, every layer of its stack in place
//!   and usage recorded to SQLite.
//!
//! Three routes: Gemini's `generateContent`, its SSE stream, and OpenAI's `chat/completions`
//! (forwarded as it is by the pass-throughs to the upstream, which answers it as an
//! OpenAI-compatible server would; converted by the proxy to `generateContent` and back).
//!
//! Each target, the upstream and the proxies run as their own processes (this bench re-executes
//! itself for (a), (b) and (b2), chosen by `GB_PROXY_BENCH_ROLE`); the load generator is this
//! process.
//! All share the machine's cores. First 1,000 clients each open a slow stream through (b), (b2)
//! and (c) at once, and must all get every event. The proxy's resident memory is read from
//! `/proc/<pid>/status`.
//!
//! `cargo test -p gemini-balance-proxy --bench proxy` runs everything briefly (a smoke test).
//! `GB_PROXY_BENCH_SECS` sets the measured seconds per case (default 5), `GB_PROXY_BENCH_STREAMS`
//! the number of concurrent streaming clients (default 1,000), `GB_PROXY_BENCH_ENV` more `.env`
//! lines for the proxy (separated by a literal `\n`), for experiments.
//! `GB_PROXY_BENCH_SEQUENTIAL=1` also runs (b) and (c) one after the other, each for the whole
//! measured time (the plain sequential ratio beside the alternating one);
//! `GB_PROXY_BENCH_ROUTES=native,chat` only those routes (`native`, `stream`, `chat`).
//! For quicker experiments: `GB_PROXY_BENCH_ONLY=b,c` runs only those targets' request runs,
//! `GB_PROXY_BENCH_CONNECTIONS=64` only that connection count, `GB_PROXY_BENCH_STREAMS=0` no
//! streaming clients, and `GB_PROXY_BENCH_PROXY_WORKERS=N` gives the proxy N serving threads.
//!
//! (b) and (c), whose ratio is the target, are measured in alternating slices
//! (`GB_PROXY_BENCH_ROUNDS`, default 10, slices of each per case, which one goes first
//! alternating), on connections kept open: drifts of the machine's speed over a run weigh on
//! both alike. The table shows the whole run's ratio and the range of the rounds' ratios.
//! Results and method: docs/performance.md, "Proxy throughput".

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

/// Which process this is: unset for the bench itself, else `upstream` or `passthrough`.
const ROLE: &str = "GB_PROXY_BENCH_ROLE";
/// For `passthrough`: the upstream's address.
const UPSTREAM: &str = "GB_PROXY_BENCH_UPSTREAM";

const TOKEN: &str = "sk-bench-client-token";
const KEYS: u32 = 3;
const MODEL: &str = "gemini-2.0-flash";
/// The model whose streams the upstream paces (the concurrent-streams run).
const PACED_MODEL: &str = "gemini-2.5-flash";
/// Events of a paced stream, and the time between them: each stream stays open 4 s, long
/// enough for all the clients to connect while the first are still streaming.
const PACED_EVENTS: usize = 40;
const PACED_INTERVAL: Duration = Duration::from_millis(100);
/// Events of a normal stream (sent at once).
const STREAM_EVENTS: usize = 3;

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("upstream") => serve_role(upstream),
        Ok("passthrough") => {
            let upstream: SocketAddr = std::env::var(UPSTREAM)
                .expect("GB_PROXY_BENCH_UPSTREAM")
                .parse()
                .expect("an address");
            serve_role(move |req| passthrough(upstream, req))
        }
        Ok("axum-reqwest") => {
            let upstream: SocketAddr = std::env::var(UPSTREAM)
                .expect("GB_PROXY_BENCH_UPSTREAM")
                .parse()
                .expect("an address");
            axum_reqwest_role(upstream)
        }
        _ => bench(),
    }
}

/// `true` when `wanted` is empty or names `item`: a target by its letter (`(b2) ...` is `b2`)
/// or a connection count.
fn selected(wanted: &[String], item: &str) -> bool {
    let key = item
        .strip_prefix('(')
        .and_then(|rest| rest.split(')').next())
        .unwrap_or(item);
    wanted.is_empty() || wanted.iter().any(|w| w == key)
}

// ---------------------------------------------------------------------------------------------
// (a) The upstream stand-in: Gemini-shaped answers, as fast as hyper serves them.

/// A request body as a client sends it: one user turn and generation settings (~300 bytes).
fn request_body() -> Bytes {
    Bytes::from(
        serde_json::json!({
            "contents": [{"role": "user", "parts": [{"text":
                "Write one sentence about the sea, in the voice of a lighthouse keeper who has not seen a ship in a year."}]}],
            "generationConfig": {"temperature": 0.7, "maxOutputTokens": 256, "topP": 0.95}
        })
        .to_string(),
    )
}

fn answer_chunk(text: &str, last: bool) -> serde_json::Value {
    let mut chunk = serde_json::json!({
        "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}],
        "modelVersion": MODEL,
        "responseId": "bench-response-0001",
    });
    if last {
        chunk["candidates"][0]["finishReason"] = "STOP".into();
        chunk["usageMetadata"] = serde_json::json!({
            "promptTokenCount": 27, "candidatesTokenCount": 24, "totalTokenCount": 51,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 27}]
        });
    }
    chunk
}

/// An OpenAI chat request as a client sends it: the same turn and settings as [`request_body`].
fn chat_body() -> Bytes {
    Bytes::from(
        serde_json::json!({
            "model": MODEL,
            "messages": [{"role": "user", "content":
                "Write one sentence about the sea, in the voice of a lighthouse keeper who has not seen a ship in a year."}],
            "temperature": 0.7, "max_tokens": 256, "top_p": 0.95
        })
        .to_string(),
    )
}

/// The OpenAI answer of an OpenAI-compatible upstream (the pass-through's OpenAI route).
fn chat_answer() -> serde_json::Value {
    serde_json::json!({
        "id": "chatcmpl-bench0001", "object": "chat.completion", "created": 1, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 27, "completion_tokens": 24, "total_tokens": 51}
    })
}

const ANSWER: &str = "The sea keeps its own counsel now; I light the lamp each night for ships that never come, and the waves answer.";

/// A body sent as given frames, `interval` apart after the first (none: all at once).
struct Frames {
    frames: VecDeque<Bytes>,
    interval: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Frames {
    fn new(frames: Vec<Bytes>, interval: Option<Duration>) -> Self {
        Frames {
            frames: frames.into(),
            interval,
            sleep: None,
        }
    }
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(sleep) = self.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        let Some(frame) = self.frames.pop_front() else {
            return Poll::Ready(None);
        };
        self.sleep = match self.interval {
            Some(interval) if !self.frames.is_empty() => {
                Some(Box::pin(tokio::time::sleep(interval)))
            }
            _ => None,
        };
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }
}

fn sse(chunks: &[serde_json::Value]) -> Vec<Bytes> {
    chunks
        .iter()
        .map(|c| Bytes::from(format!("data: {c}\r\n\r\n")))
        .collect()
}

async fn upstream(req: Request<Incoming>) -> Result<Response<Frames>, Infallible> {
    let path = req.uri().path().to_owned();
    let has_key = req.headers().contains_key("x-goog-api-key")
        || req.headers().contains_key(header::AUTHORIZATION);
    // A real server reads the request.
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let respond = |status: StatusCode, content_type: &'static str, frames: Frames| {
        let mut res = Response::new(frames);
        *res.status_mut() = status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        Ok(res)
    };
    if !has_key || body.is_err() {
        let error = r#"{"error":{"code":403,"message":"Method doesn't allow unregistered callers","status":"PERMISSION_DENIED"}}"#;
        return respond(
            StatusCode::FORBIDDEN,
            "application/json",
            Frames::new(vec![Bytes::from_static(error.as_bytes())], None),
        );
    }
    if path.ends_with(":streamGenerateContent") {
        let (events, interval) = if path.contains(PACED_MODEL) {
            (PACED_EVENTS, Some(PACED_INTERVAL))
        } else {
            (STREAM_EVENTS, None)
        };
        let words: Vec<&str> = ANSWER.split(' ').collect();
        let per = words.len().div_ceil(events);
        let chunks: Vec<serde_json::Value> = (0..events)
            .map(|i| {
                let piece = words
                    .iter()
                    .skip(i * per)
                    .take(per)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ");
                answer_chunk(&format!("{piece} "), i + 1 == events)
            })
            .collect();
        return respond(
            StatusCode::OK,
            "text/event-stream",
            Frames::new(sse(&chunks), interval),
        );
    }
    if path.ends_with("/chat/completions") {
        // The floor of the OpenAI route: an OpenAI-compatible upstream answering the chat.
        return respond(
            StatusCode::OK,
            "application/json",
            Frames::new(vec![Bytes::from(chat_answer().to_string())], None),
        );
    }
    let answer = answer_chunk(ANSWER, true).to_string();
    respond(
        StatusCode::OK,
        "application/json; charset=UTF-8",
        Frames::new(vec![Bytes::from(answer)], None),
    )
}

// ---------------------------------------------------------------------------------------------
// (b) The plain pass-through proxy: hyper server, pooled hyper client, bodies streamed through.

type PassBody = Either<Incoming, Full<Bytes>>;

fn pass_client() -> &'static Client<HttpConnector, Incoming> {
    static CLIENT: std::sync::OnceLock<Client<HttpConnector, Incoming>> =
        std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new()).build(connector)
    })
}

async fn passthrough(
    upstream: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<PassBody>, Infallible> {
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let Ok(uri) = format!("http://{upstream}{pq}").parse() else {
        return Ok(bad_gateway());
    };
    *req.uri_mut() = uri;
    req.headers_mut().remove(header::HOST);
    match pass_client().request(req).await {
        Ok(res) => Ok(res.map(Either::Left)),
        Err(_) => Ok(bad_gateway()),
    }
}

fn bad_gateway() -> Response<PassBody> {
    let mut res = Response::new(Either::Right(Full::new(Bytes::from_static(b"bad gateway"))));
    *res.status_mut() = StatusCode::BAD_GATEWAY;
    res
}

// ---------------------------------------------------------------------------------------------
// (b2) The same pass-through on the proxy's own frameworks (axum's `serve`, a reqwest client),
// with none of its layers: what the frameworks cost, apart from what the layers do.

fn axum_reqwest_role(upstream: SocketAddr) {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()
        .expect("reqwest client");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("LISTENING {}", listener.local_addr().expect("address"));
        std::io::stdout().flush().expect("stdout");
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let client = client.clone();
            async move { forward_with_reqwest(&client, upstream, req).await }
        });
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(listener, app).await;
    });
}

async fn forward_with_reqwest(
    client: &reqwest::Client,
    upstream: SocketAddr,
    req: axum::extract::Request,
) -> Response<axum::body::Body> {
    let (parts, body) = req.into_parts();
    let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut request = client
        .request(parts.method.clone(), format!("http://{upstream}{pq}"))
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    for (name, value) in &parts.headers {
        if name != header::HOST {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(res) => {
            let (status, headers) = (res.status(), res.headers().clone());
            let mut out = Response::new(axum::body::Body::from_stream(res.bytes_stream()));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            out
        }
        Err(_) => {
            let mut out = Response::new(axum::body::Body::from("bad gateway"));
            *out.status_mut() = StatusCode::BAD_GATEWAY;
            out
        }
    }
}

/// Runs a server role: binds `127.0.0.1:0`, prints `LISTENING <addr>`, serves until stdin closes
/// (the bench ended, however it ended).
fn serve_role<F, Fut, B>(handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        println!("LISTENING {addr}");
        std::io::stdout().flush().expect("stdout");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(handler);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Processes.

struct Server {
    name: &'static str,
    child: Child,
    /// Held so the child lives; closed on drop, which ends a role process.
    _stdin: Option<ChildStdin>,
    addr: SocketAddr,
}

impl Server {
    /// This bench binary again, as `role`.
    fn role(name: &'static str, role: &str, env: &[(&str, String)]) -> Server {
        let exe = std::env::current_exe().expect("current exe");
        let mut command = Command::new(exe);
        command
            .env(ROLE, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn a role");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the address");
        let addr = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{role}: unexpected first line {line:?}"));
        let stdin = child.stdin.take();
        Server {
            name,
            child,
            _stdin: stdin,
            addr,
        }
    }

    /// The proxy binary in `dir` with `env_file` as its `.env`; waits for `/health`.
    async fn proxy(dir: &Path, env_file: &str) -> Server {
        std::fs::write(dir.join(".env"), env_file).expect("write .env");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_gemini-balance-proxy"))
            .current_dir(dir)
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .envs(
                std::env::var("GB_PROXY_BENCH_PROXY_WORKERS")
                    .ok()
                    .map(|n| ("TOKIO_WORKER_THREADS", n)),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the proxy");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut server = Server {
            name: "proxy",
            child,
            _stdin: None,
            addr,
        };
        for _ in 0..400 {
            if health(addr).await {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the proxy exited at startup: {status}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the proxy did not start");
    }

    /// `(VmRSS, VmHWM)` in KiB.
    fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait (the proxy flushes its database on the way out).
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        match self.child.wait() {
            Ok(status) if status.success() => {}
            other => eprintln!("{} exited with {other:?}", self.name),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn health(addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await
    else {
        return false;
    };
    tokio::spawn(conn);
    let req = Request::get("/health")
        .header(header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))
        .expect("request");
    matches!(sender.send_request(req).await, Ok(res) if res.status() == StatusCode::OK)
}

// ---------------------------------------------------------------------------------------------
// The load generator.

#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    path: String,
    body: Bytes,
    /// What a good answer contains: `data: ` events for a stream, else one JSON answer.
    stream_events: Option<usize>,
    /// An OpenAI chat (`/v1/chat/completions`, a `chat.completion` answer).
    chat: bool,
}

/// The routes measured.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Native,
    Stream,
    Chat,
}

#[derive(Default)]
struct Load {
    latencies_us: Vec<u32>,
    requests: u64,
    /// CPU time of the measured server process during the measured window.
    cpu: Duration,
    /// The same, by thread name.
    threads: Vec<(String, Duration)>,
    errors: u64,
    first_error: Option<String>,
}

impl Load {
    fn merge(&mut self, other: Load) {
        self.latencies_us.extend(other.latencies_us);
        self.requests += other.requests;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Adds a slice of the same target: its requests, CPU time and threads' CPU time.
    fn add_slice(&mut self, other: Load) {
        self.cpu += other.cpu;
        for (name, cpu) in &other.threads {
            match self.threads.iter_mut().find(|(n, _)| n == name) {
                Some((_, total)) => *total += *cpu,
                None => self.threads.push((name.clone(), *cpu)),
            }
        }
        self.merge(other);
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        f64::from(self.latencies_us[i])
    }
}

/// Checks an answer; `Err` says what is wrong.
fn check(target: &Target, status: StatusCode, body: &[u8]) -> Result<(), String> {
    if status != StatusCode::OK {
        return Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    let text = String::from_utf8_lossy(body);
    match target.stream_events {
        Some(events) => {
            let got = text.matches("data: ").count();
            if got != events || !text.contains("\"STOP\"") {
                return Err(format!("{got} events instead of {events}: {text}"));
            }
        }
        None if target.chat => {
            if !text.contains("\"chat.completion\"") || !text.contains("\"usage\"") {
                return Err(format!("not a chat answer: {text}"));
            }
        }
        None => {
            if !text.contains("\"candidates\"") || !text.contains("\"usageMetadata\"") {
                return Err(format!("not an answer: {text}"));
            }
        }
    }
    Ok(())
}

fn request(target: &Target) -> Request<Full<Bytes>> {
    let (name, value) = if target.chat {
        (header::AUTHORIZATION.as_str(), format!("Bearer {TOKEN}"))
    } else {
        ("x-goog-api-key", TOKEN.to_owned())
    };
    Request::post(target.path.as_str())
        .header(header::HOST, target.addr.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .header(name, value)
        .body(Full::new(target.body.clone()))
        .expect("request")
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One request on `sender`: the answer's status and whole body.
async fn exchange(sender: &mut Sender, target: &Target) -> Result<(), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let res = sender
        .send_request(request(target))
        .await
        .map_err(|e| e.to_string())?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    check(target, status, &body)
}

/// CPU time (user + system) the process `pid` has used so far.
fn cpu_time(pid: u32) -> Duration {
    stat_cpu(&format!("/proc/{pid}/stat")).1
}

/// CPU time used so far by each thread of `pid`, by thread name (the main thread as `main`).
fn thread_cpu(pid: u32) -> Vec<(String, Duration)> {
    let mut threads: Vec<(String, Duration)> = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let (name, cpu) = stat_cpu(&format!("{}/stat", task.path().display()));
        let name = if task.file_name().to_string_lossy() == pid.to_string() {
            "main".to_owned()
        } else if name == "gemini-balance-" {
            // `gemini-balance-sqlite`, cut to 15 characters by the kernel.
            "sqlite-writer".to_owned()
        } else {
            name
        };
        match threads.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += cpu,
            None => threads.push((name, cpu)),
        }
    }
    threads
}

/// The command name and the CPU time (user + system) from a `/proc/.../stat` file.
fn stat_cpu(path: &str) -> (String, Duration) {
    static TICKS_PER_SECOND: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let ticks_per_second = *TICKS_PER_SECOND.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    });
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let name = stat
        .split_once('(')
        .and_then(|(_, rest)| rest.rsplit_once(')'))
        .map_or_else(String::new, |(name, _)| name.to_owned());
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let fields: Vec<u64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default();
    let ticks = fields.get(11).unwrap_or(&0) + fields.get(12).unwrap_or(&0);
    (
        name,
        Duration::from_millis(ticks * 1000 / ticks_per_second.max(1)),
    )
}

/// `connections` keep-alive connections, each sending requests one after the other for
/// `warmup + measure`; requests started and finished inside the measured window count, and the
/// CPU time the server `pid` used in that window.
async fn load(
    target: &Target,
    connections: usize,
    warmup: Duration,
    measure: Duration,
    pid: u32,
) -> Load {
    let mut senders = (0..connections).map(|_| None).collect();
    let mut total = slice(target, &mut senders, warmup, measure, pid).await;
    total.latencies_us.sort_unstable();
    total
}

/// One slice of a run on connections kept open across slices (`None`: connect first): each
/// connection sends requests one after the other for `lead_in + measure`; requests started
/// and finished inside the measured window count, and the CPU time `pid` used in it.
async fn slice(
    target: &Target,
    senders: &mut Vec<Option<Sender>>,
    lead_in: Duration,
    measure: Duration,
    pid: u32,
) -> Load {
    let start = Instant::now() + lead_in;
    let end = start + measure;
    let mut tasks = Vec::new();
    for sender in senders.drain(..) {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut load = Load::default();
            let mut sender = sender;
            while Instant::now() < end {
                let mut s = match sender.take() {
                    Some(s) => s,
                    None => match connect(target.addr).await {
                        Ok(s) => s,
                        Err(e) => {
                            load.errors += 1;
                            load.first_error.get_or_insert(e);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    },
                };
                let began = Instant::now();
                let result = exchange(&mut s, &target).await;
                let done = Instant::now();
                let counted = began >= start && done <= end;
                match result {
                    Ok(()) => {
                        sender = Some(s);
                        if counted {
                            load.requests += 1;
                            let us = done.duration_since(began).as_micros();
                            load.latencies_us
                                .push(u32::try_from(us).unwrap_or(u32::MAX));
                        }
                    }
                    Err(e) => {
                        load.errors += 1;
                        load.first_error.get_or_insert(e);
                    }
                }
            }
            (load, sender)
        }));
    }
    tokio::time::sleep_until(start.into()).await;
    let cpu_before = cpu_time(pid);
    let threads_before = thread_cpu(pid);
    tokio::time::sleep_until(end.into()).await;
    let cpu = cpu_time(pid).saturating_sub(cpu_before);
    let threads = thread_cpu(pid)
        .into_iter()
        .map(|(name, cpu)| {
            let before = threads_before
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(Duration::ZERO, |(_, c)| *c);
            (name, cpu.saturating_sub(before))
        })
        .filter(|(_, cpu)| !cpu.is_zero())
        .collect();
    let mut total = Load {
        cpu,
        threads,
        ..Load::default()
    };
    for task in tasks {
        let (load, sender) = task.await.expect("a load task");
        total.merge(load);
        senders.push(sender);
    }
    total
}

/// (b) and (c) measured in alternating slices (`rounds` of each, `measure / rounds` long,
/// after `lead_in` each; which goes first alternates), on connections kept open: drifts of the
/// machine's speed over the run (other guests of the host, its own background work) then
/// weigh on both alike, so their ratio is steadier than from two runs one after the other.
/// Returns both totals and each round's ratio of (c) to (b).
#[allow(clippy::too_many_arguments)]
async fn paired(
    b: (&Target, u32),
    c: (&Target, u32),
    connections: usize,
    warmup: Duration,
    lead_in: Duration,
    measure: Duration,
    rounds: u32,
) -> (Load, Load, Vec<f64>) {
    let piece = measure / rounds.max(1);
    let mut senders = [
        (0..connections).map(|_| None).collect::<Vec<_>>(),
        (0..connections).map(|_| None).collect::<Vec<_>>(),
    ];
    let targets = [b, c];
    // Warm both up (connections, pools, caches); not counted.
    for (i, (target, pid)) in targets.iter().enumerate() {
        slice(target, &mut senders[i], warmup, Duration::ZERO, *pid).await;
    }
    let mut totals = [Load::default(), Load::default()];
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let mut rates = [0.0; 2];
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (target, pid) = targets[i];
            let load = slice(target, &mut senders[i], lead_in, piece, pid).await;
            rates[i] = load.requests as f64;
            totals[i].add_slice(load);
        }
        ratios.push(rates[1] / rates[0].max(1.0));
    }
    let [mut b_total, mut c_total] = totals;
    b_total.latencies_us.sort_unstable();
    c_total.latencies_us.sort_unstable();
    (b_total, c_total, ratios)
}

/// `clients` clients open a paced stream each at once and read it to the end.
struct StreamRun {
    clients: usize,
    completed: usize,
    errors: usize,
    first_error: Option<String>,
    most_open: usize,
    wall: Duration,
    peak_rss_kib: u64,
}

async fn hold_streams(target: &Target, clients: usize, watch: Option<&Server>) -> StreamRun {
    let open = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let target = target.clone();
        let (open, most) = (open.clone(), most.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(target.addr).await?;
            sender.ready().await.map_err(|e| e.to_string())?;
            let res = sender
                .send_request(request(&target))
                .await
                .map_err(|e| e.to_string())?;
            let status = res.status();
            let mut body = res.into_body();
            let mut bytes = Vec::new();
            let mut counted = false;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| e.to_string())?;
                if let Some(data) = frame.data_ref() {
                    if !counted && !data.is_empty() {
                        counted = true;
                        let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                    }
                    bytes.extend_from_slice(data);
                }
            }
            if counted {
                open.fetch_sub(1, Ordering::SeqCst);
            }
            check(&target, status, &bytes)
        }));
    }
    let mut peak_rss_kib = 0;
    let mut run = StreamRun {
        clients,
        completed: 0,
        errors: 0,
        first_error: None,
        most_open: 0,
        wall: Duration::ZERO,
        peak_rss_kib: 0,
    };
    let mut pending: VecDeque<_> = tasks.into();
    while let Some(task) = pending.pop_front() {
        if !task.is_finished() {
            if let Some(server) = watch {
                peak_rss_kib = peak_rss_kib.max(server.memory().0);
            }
            pending.push_front(task);
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        match task.await.expect("a stream task") {
            Ok(()) => run.completed += 1,
            Err(e) => {
                run.errors += 1;
                run.first_error.get_or_insert(e);
            }
        }
    }
    run.wall = started.elapsed();
    run.most_open = most.load(Ordering::SeqCst);
    run.peak_rss_kib = peak_rss_kib;
    run
}

// ---------------------------------------------------------------------------------------------
// The run.

/// One row of the results table; `measured` is the time the requests were counted in.
fn print_row(name: &str, connections: usize, result: &Load, measured: Duration, note: &str) {
    let rps = result.requests as f64 / measured.as_secs_f64();
    let cpu_us = result.cpu.as_secs_f64() * 1e6 / result.requests.max(1) as f64;
    println!(
        "| {name} | {connections} | {rps:.0}{note} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {cpu_us:.0} µs | {} |",
        result.percentile(0.50),
        result.percentile(0.90),
        result.percentile(0.99),
        result.percentile(0.999),
        result.errors
    );
    if let Some(e) = &result.first_error {
        println!("|   first error: {e} |");
    }
}

/// A route's name for `GB_PROXY_BENCH_ROUTES`.
fn route_name(route: Route) -> &'static str {
    match route {
        Route::Native => "native",
        Route::Stream => "stream",
        Route::Chat => "chat",
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench() {
    // `cargo bench` passes `--bench`; `cargo test --bench proxy` does not: a short smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let (warmup, measure, streams) = if full {
        (
            Duration::from_secs(1),
            Duration::from_secs(env_number("GB_PROXY_BENCH_SECS", 5)),
            usize::try_from(env_number("GB_PROXY_BENCH_STREAMS", 1000)).unwrap_or(1000),
        )
    } else {
        (Duration::from_millis(100), Duration::from_millis(300), 50)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(warmup, measure, streams));
}

async fn run(warmup: Duration, measure: Duration, streams: usize) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "proxy bench: {cores} cores, load average {} at start; {}s measured per case after {}s warm-up",
        loadavg(),
        measure.as_secs_f64(),
        warmup.as_secs_f64()
    );
    let upstream = Server::role("upstream", "upstream", &[]);
    let pass = Server::role(
        "pass-through",
        "passthrough",
        &[(UPSTREAM, upstream.addr.to_string())],
    );
    let frameworks = Server::role(
        "axum + reqwest pass-through",
        "axum-reqwest",
        &[(UPSTREAM, upstream.addr.to_string())],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let keys: Vec<String> = (1..=KEYS)
        .map(|n| format!("AIzaSyBench_abcdefghijklmnopqrstuvw{n:04}"))
        .collect();
    // `GB_PROXY_BENCH_ENV`: more `.env` lines for experiments (`\n`-separated), e.g.
    // `LOG_LEVEL=warn`.
    let extra = std::env::var("GB_PROXY_BENCH_ENV")
        .unwrap_or_default()
        .replace("\\n", "\n");
    // `LOG_LEVEL=warn`: no log line per request (a `GB_PROXY_BENCH_ENV` line may set another).
    let log_level = if extra.contains("LOG_LEVEL=") {
        ""
    } else {
        "LOG_LEVEL=warn\n"
    };
    let env_file = format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL=http://{}/v1beta\nCHECK_INTERVAL_HOURS=0\n{log_level}{extra}\n",
        serde_json::to_string(&keys).expect("json"),
        upstream.addr
    );
    if !extra.is_empty() {
        println!("extra .env lines: {extra:?}");
    }
    let proxy = Server::proxy(dir.path(), &env_file).await;
    let idle = proxy.memory();
    let pass_idle = pass.memory();
    let frameworks_idle = frameworks.memory();

    let body = request_body();
    let target = |addr: SocketAddr, stream: bool, model: &str| Target {
        addr,
        path: if stream {
            format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
        } else {
            format!("/v1beta/models/{model}:generateContent")
        },
        body: body.clone(),
        stream_events: stream.then_some(if model == PACED_MODEL {
            PACED_EVENTS
        } else {
            STREAM_EVENTS
        }),
        chat: false,
    };
    let chat = chat_body();
    let for_route = |addr: SocketAddr, route: Route| match route {
        Route::Native => target(addr, false, MODEL),
        Route::Stream => target(addr, true, MODEL),
        Route::Chat => Target {
            addr,
            path: "/v1/chat/completions".to_owned(),
            body: chat.clone(),
            stream_events: None,
            chat: true,
        },
    };
    let targets = [
        ("(a) upstream directly", upstream.addr, upstream.pid()),
        ("(b) plain hyper pass-through", pass.addr, pass.pid()),
        (
            "(b2) axum + reqwest pass-through",
            frameworks.addr,
            frameworks.pid(),
        ),
        ("(c) gemini-balance-proxy", proxy.addr, proxy.pid()),
    ];

    // The streaming clients first, on fresh processes: their memory is not mixed with what
    // the request runs leave behind (the SQLite queue, allocator caches).
    let mut sent_to_proxy = 0;

    println!(
        "\n{streams} concurrent streaming clients ({PACED_EVENTS} events, {} ms apart)\n",
        PACED_INTERVAL.as_millis()
    );
    println!(
        "| target | completed | errors | most open at once | wall time | peak RSS during the run |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, server) in [
        ("(b) plain hyper pass-through", &pass),
        ("(b2) axum + reqwest pass-through", &frameworks),
        ("(c) gemini-balance-proxy", &proxy),
    ] {
        if streams == 0 {
            break;
        }
        let run = hold_streams(
            &target(server.addr, true, PACED_MODEL),
            streams,
            Some(server),
        )
        .await;
        if name.starts_with("(c)") {
            sent_to_proxy += run.clients as u64;
        }
        println!(
            "| {name} | {} of {} | {} | {} | {:.2} s | {} |",
            run.completed,
            run.clients,
            run.errors,
            run.most_open,
            run.wall.as_secs_f64(),
            mib(run.peak_rss_kib)
        );
        if let Some(e) = run.first_error {
            println!("|   first error: {e} |");
        }
    }
    let (rss_after_streams, hwm_after_streams) = proxy.memory();
    let pass_after_streams = pass.memory();
    let frameworks_after_streams = frameworks.memory();
    let mut thread_notes = Vec::new();
    // Experiment knobs: a subset of the targets (by letter) and of the connection counts.
    let list = |name: &str| -> Vec<String> {
        std::env::var(name)
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let only = list("GB_PROXY_BENCH_ONLY");
    let connection_counts = list("GB_PROXY_BENCH_CONNECTIONS");
    let rounds = u32::try_from(env_number("GB_PROXY_BENCH_ROUNDS", 10)).unwrap_or(10);
    let lead_in = warmup / 5;
    let b_name = "(b) plain hyper pass-through";
    let c_name = "(c) gemini-balance-proxy";
    let sequential = env_number("GB_PROXY_BENCH_SEQUENTIAL", 0) == 1;
    for (route, title) in [
        (Route::Native, "generateContent (JSON answer, 1 frame)"),
        (
            Route::Stream,
            "streamGenerateContent?alt=sse (3 events, sent at once)",
        ),
        (
            Route::Chat,
            "OpenAI chat/completions (the floor: forwarded to an OpenAI-compatible upstream; the proxy: converted to and from generateContent)",
        ),
    ] {
        if !selected(&list("GB_PROXY_BENCH_ROUTES"), route_name(route)) {
            continue;
        }
        println!("\n{title}\n");
        println!(
            "| target | connections | requests/s | p50 | p90 | p99 | p99.9 | server CPU per request | errors |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for connections in [1, 64] {
            if !selected(&connection_counts, &connections.to_string()) {
                continue;
            }
            // (a) and (b2): one run each.
            for (name, addr, pid) in targets {
                if name == b_name || name == c_name || !selected(&only, name) {
                    continue;
                }
                let result = load(
                    &for_route(addr, route),
                    connections,
                    warmup,
                    measure,
                    pid,
                )
                .await;
                print_row(name, connections, &result, measure, "");
            }
            let (b_on, c_on) = (selected(&only, b_name), selected(&only, c_name));
            let c_result = if b_on && c_on {
                // (b) and (c) in alternating slices: their ratio is the target.
                let (b_target, c_target) = (
                    for_route(pass.addr, route),
                    for_route(proxy.addr, route),
                );
                let (b_result, c_result, ratios) = paired(
                    (&b_target, pass.pid()),
                    (&c_target, proxy.pid()),
                    connections,
                    warmup,
                    lead_in,
                    measure,
                    rounds,
                )
                .await;
                let measured = measure / rounds.max(1) * rounds.max(1);
                print_row(b_name, connections, &b_result, measured, "");
                let mut sorted = ratios.clone();
                sorted.sort_by(f64::total_cmp);
                let note = format!(
                    " ({:.0}% of (b), rounds {:.0}–{:.0}%; p50 +{:.0} µs, p99 +{:.0} µs)",
                    100.0 * c_result.requests as f64 / b_result.requests.max(1) as f64,
                    100.0 * sorted.first().copied().unwrap_or(0.0),
                    100.0 * sorted.last().copied().unwrap_or(0.0),
                    c_result.percentile(0.50) - b_result.percentile(0.50),
                    c_result.percentile(0.99) - b_result.percentile(0.99)
                );
                print_row(c_name, connections, &c_result, measured, &note);
                if sequential {
                    // The same pair one after the other, each for the whole time: the plain
                    // sequential ratio (drifts of the machine's speed fall on one side).
                    let b_seq = load(&b_target, connections, warmup, measure, pass.pid()).await;
                    let c_seq = load(&c_target, connections, warmup, measure, proxy.pid()).await;
                    print_row(
                        &format!("{b_name}, sequential"),
                        connections,
                        &b_seq,
                        measure,
                        "",
                    );
                    let note = format!(
                        " ({:.0}% of (b); p50 +{:.0} µs, p99 +{:.0} µs)",
                        100.0 * c_seq.requests as f64 / b_seq.requests.max(1) as f64,
                        c_seq.percentile(0.50) - b_seq.percentile(0.50),
                        c_seq.percentile(0.99) - b_seq.percentile(0.99)
                    );
                    print_row(
                        &format!("{c_name}, sequential"),
                        connections,
                        &c_seq,
                        measure,
                        &note,
                    );
                    sent_to_proxy += c_seq.requests + c_seq.errors;
                }
                Some(c_result)
            } else if b_on || c_on {
                let (name, server) = if b_on {
                    (b_name, &pass)
                } else {
                    (c_name, &proxy)
                };
                let result = load(
                    &for_route(server.addr, route),
                    connections,
                    warmup,
                    measure,
                    server.pid(),
                )
                .await;
                print_row(name, connections, &result, measure, "");
                c_on.then_some(result)
            } else {
                None
            };
            if let Some(result) = c_result {
                sent_to_proxy += result.requests + result.errors;
                thread_notes.push(format!(
                    "{title}, {connections} connection(s): {}",
                    result
                        .threads
                        .iter()
                        .map(|(thread, cpu)| format!(
                            "{thread} {:.0} µs",
                            cpu.as_secs_f64() * 1e6 / result.requests.max(1) as f64
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    println!("\n(c)'s CPU per request by thread (threads that used any):\n");
    for note in &thread_notes {
        println!("- {note}");
    }
    let (rss_after_load, hwm_after_load) = proxy.memory();
    let (pass_rss_after_load, pass_hwm_after_load) = pass.memory();
    println!("\nMemory (VmRSS / VmHWM from /proc/<pid>/status)\n");
    println!("| process | when | VmRSS | VmHWM (peak so far) |");
    println!("|---|---|---|---|");
    let row = |name: &str, when: &str, (rss, hwm): (u64, u64)| {
        println!("| {name} | {when} | {} | {} |", mib(rss), mib(hwm));
    };
    row("(c) gemini-balance-proxy", "idle, after start", idle);
    row(
        "(c) gemini-balance-proxy",
        "after the streaming clients",
        (rss_after_streams, hwm_after_streams),
    );
    row(
        "(c) gemini-balance-proxy",
        "after the request runs",
        (rss_after_load, hwm_after_load),
    );
    row(
        "(b) plain hyper pass-through",
        "idle, after start",
        pass_idle,
    );
    row(
        "(b) plain hyper pass-through",
        "after the streaming clients",
        pass_after_streams,
    );
    row(
        "(b) plain hyper pass-through",
        "after the request runs",
        (pass_rss_after_load, pass_hwm_after_load),
    );
    let name = "(b2) axum + reqwest pass-through";
    row(name, "idle, after start", frameworks_idle);
    row(
        name,
        "after the streaming clients",
        frameworks_after_streams,
    );
    row(name, "after the request runs", frameworks.memory());

    // Every request the proxy answered is in its database (or counted as dropped).
    proxy.stop();
    let db = dir.path().join("data/default_db.db");
    match gemini_balance::store::SqliteStore::open(&db).and_then(|store| {
        let calls = store.summary()?.last_hour.calls;
        store.shutdown()?;
        Ok(calls)
    }) {
        Ok(calls) => println!(
            "\nSQLite: {calls} requests recorded by the proxy; the load generator sent at least {sent_to_proxy} (warm-up excluded)."
        ),
        Err(e) => println!("\nSQLite: cannot read {}: {e}", db.display()),
    }
    println!("load average {} at the end", loadavg());
    drop(frameworks);
    drop(pass);
    drop(upstream);
    let _ = std::io::stdout().flush();
}
