//! What the server guarantees about client connections (docs/proxy.md), against the binary on
//! loopback with raw sockets: a connection that waits with no request in progress is closed
//! after CLIENT_HEADER_TIMEOUT (before its first request) or CLIENT_IDLE_TIMEOUT (after one),
//! and one whose client takes nothing of what is sent after CLIENT_SEND_TIMEOUT, while an answer
//! still being written (to a slow reader, over HTTP/1.1 or HTTP/2) is neither idle nor cut; a
//! request body that stalls is answered 408 after CLIENT_BODY_TIMEOUT, and one that trickles
//! below CLIENT_BODY_MIN_RATE too; HTTP/2 allows 32 streams per connection; connections past
//! MAX_CONNECTIONS get a JSON 503, logged once; SIGTERM closes idle and half-sent connections
//! at once, lets requests in progress (answers being written included) finish and cuts them at
//! SHUTDOWN_TIMEOUT; hyper's own 400, 414 and 431 carry a JSON body.

mod common;

use common::raw::{closed_after, read_response, GUARD};

use std::time::{Duration, Instant};

use common::{Proxy, TOKEN};
use serde_json::Value;
use support::{prompt_body, test_keys, MockGemini};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn env_file(base_url: &str, extra: &str) -> String {
    format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={base_url}/v1beta\nMAX_RETRIES=1\n{extra}",
        serde_json::to_string(&test_keys(1)).unwrap(),
    )
}

async fn start(extra: &str) -> (MockGemini, Proxy, tempfile::TempDir) {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock.base_url(), extra)).await;
    (mock, proxy, dir)
}

async fn connect(proxy: &Proxy) -> TcpStream {
    TcpStream::connect(proxy.url.trim_start_matches("http://"))
        .await
        .unwrap()
}

fn status(head: &str) -> u16 {
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_connection_is_closed_after_waiting_idle_for_a_request() {
    let (_mock, proxy, _dir) = start("CLIENT_HEADER_TIMEOUT=1\nCLIENT_IDLE_TIMEOUT=2\n").await;

    // No request at all: the header timeout.
    let mut silent = connect(&proxy).await;
    let waited = closed_after(&mut silent).await.expect("never closed");
    assert!(waited >= Duration::from_millis(900), "{waited:?}");

    // One request, then nothing: the idle timeout, counted from the end of the response.
    let mut kept_alive = connect(&proxy).await;
    kept_alive
        .write_all(b"GET /health HTTP/1.1\r\nhost: proxy\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut kept_alive).await;
    assert_eq!(status(&head), 200);
    let waited = closed_after(&mut kept_alive).await.expect("never closed");
    assert!(waited >= Duration::from_millis(1900), "{waited:?}");
}

#[tokio::test]
async fn a_half_sent_request_head_is_closed_after_the_header_timeout() {
    let (_mock, proxy, _dir) = start("CLIENT_HEADER_TIMEOUT=1\nCLIENT_IDLE_TIMEOUT=60\n").await;
    for partial in [
        // An HTTP/1.1 head that stops half-way.
        &b"POST /v1beta/models/gemini-2.0-flash:generateContent HTTP/1.1\r\nhost: pro"[..],
        // The start of the HTTP/2 preface: the server cannot even tell the protocol yet.
        b"PRI * HTTP/2.0\r\n",
    ] {
        let mut stream = connect(&proxy).await;
        stream.write_all(partial).await.unwrap();
        let waited = closed_after(&mut stream)
            .await
            .unwrap_or_else(|| panic!("never closed: {}", String::from_utf8_lossy(partial)));
        assert!(waited >= Duration::from_millis(900), "{waited:?}");
    }
}

#[tokio::test]
async fn a_stalled_request_body_is_answered_408_and_the_connection_closed() {
    let (mock, proxy, _dir) = start("CLIENT_BODY_TIMEOUT=1\n").await;
    for (path, gemini) in [
        ("/v1beta/models/gemini-2.0-flash:generateContent", true),
        ("/v1/chat/completions", false),
    ] {
        let mut stream = connect(&proxy).await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: proxy\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{{\"contents\": ["
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let (head, body) = read_response(&mut stream).await;
        assert!(started.elapsed() >= Duration::from_millis(900));
        assert_eq!(status(&head), 408, "{head}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        let error: Value = serde_json::from_slice(&body).unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("CLIENT_BODY_TIMEOUT"), "{error}");
        if gemini {
            assert_eq!(error["error"]["status"], "DEADLINE_EXCEEDED", "{error}");
        } else {
            assert!(
                error["error"]["type"].is_string(),
                "OpenAI's format: {error}"
            );
        }
        assert!(closed_after(&mut stream).await.is_some(), "left open");
    }
    assert_eq!(mock.total(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn connections_past_max_connections_are_refused_with_a_json_503() {
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("proxy.log");
    let proxy = Proxy::start_logging(
        dir.path(),
        &env_file(
            &mock.base_url(),
            "MAX_CONNECTIONS=3\nCLIENT_IDLE_TIMEOUT=60\nLOG_LEVEL=warn\n",
        ),
        Some(&log),
    )
    .await;

    // Fill the cap with served connections; the next ones are refused.
    let mut held = Vec::new();
    let mut refusals = Vec::new();
    for _ in 0..8 {
        let mut stream = connect(&proxy).await;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: proxy\r\n\r\n")
            .await
            .unwrap();
        let (head, body) = read_response(&mut stream).await;
        match status(&head) {
            200 => held.push(stream),
            503 => refusals.push((head, body, stream)),
            other => panic!("{other}: {head}"),
        }
    }
    assert!(held.len() <= 3, "{} connections served at once", held.len());
    assert!(refusals.len() >= 5, "{} refused", refusals.len());
    for (head, body, mut stream) in refusals {
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        let error: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error["error"]["code"], 503);
        assert_eq!(error["error"]["status"], "UNAVAILABLE");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("MAX_CONNECTIONS"),
            "{error}"
        );
        assert!(closed_after(&mut stream).await.is_some(), "left open");
    }

    // Once the held connections close, their places are free for a real request.
    drop(held);
    let client = support::client_builder().build().unwrap();
    let mut served = None;
    for _ in 0..100 {
        let res = client
            .post(format!(
                "{}/v1beta/models/gemini-2.0-flash:generateContent",
                proxy.url
            ))
            .header("x-goog-api-key", TOKEN)
            .header("content-type", "application/json")
            .body(prompt_body("hello"))
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            served = Some(res);
            break;
        }
        assert_eq!(res.status(), 503);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        served.is_some(),
        "no request got through after the cap freed up"
    );
    assert_eq!(mock.total(), 1);

    // One log line for the whole burst of refusals, not one per connection.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.lines().filter(|l| l.contains("are refused")).count();
    assert_eq!(lines, 1, "{text}");
}

#[tokio::test]
async fn sigterm_closes_idle_and_half_sent_connections_and_exits_at_once() {
    let (_mock, mut proxy, _dir) =
        start("CLIENT_HEADER_TIMEOUT=60\nCLIENT_IDLE_TIMEOUT=60\nSHUTDOWN_TIMEOUT=60\n").await;
    let mut half_sent = connect(&proxy).await;
    half_sent
        .write_all(b"GET /health HTTP/1.1\r\nhost: pro")
        .await
        .unwrap();
    let mut idle = connect(&proxy).await;
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: proxy\r\n\r\n")
        .await
        .unwrap();
    read_response(&mut idle).await;

    proxy.sigterm();
    let exit = proxy
        .exited_within(GUARD)
        .await
        .expect("still running after SIGTERM");
    assert!(exit.success(), "{exit}");
    assert!(closed_after(&mut half_sent).await.is_some());
    assert!(closed_after(&mut idle).await.is_some());
}

async fn start_stream(proxy: &Proxy) -> reqwest::Response {
    let res = support::client_builder()
        .build()
        .unwrap()
        .post(format!(
            "{}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
            proxy.url
        ))
        .header("x-goog-api-key", TOKEN)
        .header("content-type", "application/json")
        .body(prompt_body("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res
}

#[tokio::test]
async fn sigterm_lets_a_request_in_progress_finish() {
    let (mock, mut proxy, _dir) = start("SHUTDOWN_TIMEOUT=60\n").await;
    let gate = mock.gate_streams();
    let mut res = start_stream(&proxy).await;
    let first = res.chunk().await.unwrap().expect("the first event");
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));

    proxy.sigterm();
    assert!(
        proxy
            .exited_within(Duration::from_millis(500))
            .await
            .is_none(),
        "exited with a request in progress"
    );
    gate.release(100);
    let mut rest = Vec::new();
    while let Some(chunk) = res.chunk().await.expect("the stream was cut") {
        rest.extend_from_slice(&chunk);
    }
    assert!(
        String::from_utf8_lossy(&rest).contains("finishReason"),
        "the stream did not finish"
    );
    let exit = proxy
        .exited_within(GUARD)
        .await
        .expect("still running after its last request");
    assert!(exit.success(), "{exit}");
}

#[tokio::test]
async fn sigterm_cuts_requests_still_in_progress_at_the_shutdown_timeout() {
    let (mock, mut proxy, _dir) = start("SHUTDOWN_TIMEOUT=1\n").await;
    let _gate = mock.gate_streams();
    let mut res = start_stream(&proxy).await;
    res.chunk().await.unwrap().expect("the first event");

    let started = Instant::now();
    proxy.sigterm();
    let exit = proxy
        .exited_within(GUARD)
        .await
        .expect("still running after SHUTDOWN_TIMEOUT");
    assert!(exit.success(), "{exit}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    // The stream was cut, not finished.
    let mut rest = Vec::new();
    let cut = loop {
        match res.chunk().await {
            Ok(Some(chunk)) => rest.extend_from_slice(&chunk),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(cut, "ended cleanly: {}", String::from_utf8_lossy(&rest));
}

#[tokio::test]
async fn hypers_own_400_414_and_431_carry_a_json_body() {
    let (_mock, proxy, _dir) = start("").await;
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nhost: proxy\r\n\r\n",
        "a".repeat(70_000)
    );
    let many_headers = format!(
        "GET /health HTTP/1.1\r\nhost: proxy\r\n{}\r\n",
        "x-filler: 1\r\n".repeat(200)
    );
    for (request, expected) in [
        (&b"NOT HTTP AT ALL\r\n\r\n"[..], 400),
        (b"GET /health HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (long_uri.as_bytes(), 414),
        (many_headers.as_bytes(), 431),
    ] {
        let mut stream = connect(&proxy).await;
        stream.write_all(request).await.unwrap();
        let (head, body) = read_response(&mut stream).await;
        assert_eq!(status(&head), expected, "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let error: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
        assert_eq!(error["error"]["code"], expected);
        assert!(error["error"]["message"].as_str().unwrap().len() > 10);
        assert!(closed_after(&mut stream).await.is_some(), "left open");
    }

    // A good request still gets its own answer, untouched.
    let mut stream = connect(&proxy).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: proxy\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert_eq!(status(&head), 200);
    let health: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["status"], "healthy");
}

#[tokio::test]
async fn http2_connections_have_the_same_bounds() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let (mock, proxy, _dir) = start("CLIENT_IDLE_TIMEOUT=2\nCLIENT_BODY_TIMEOUT=1\n").await;
    let url = |path: &str| format!("{}{path}", proxy.url);

    // A request, then no open stream: the connection ends after the idle timeout.
    let io = TokioIo::new(connect(&proxy).await);
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let res = sender
        .send_request(
            http::Request::get(url("/health"))
                .body(Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();
    let started = Instant::now();
    tokio::time::timeout(GUARD, conn)
        .await
        .expect("the HTTP/2 connection was never closed")
        .unwrap()
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(1900));

    // A body that stalls after its first frame: 408 in the route's error format.
    let io = TokioIo::new(connect(&proxy).await);
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(bytes::Bytes::from_static(b"{\"contents\": ["))
        .await
        .unwrap();
    let body = ChannelBody(rx);
    let res = tokio::time::timeout(
        GUARD,
        sender.send_request(
            http::Request::post(url("/v1beta/models/gemini-2.0-flash:generateContent"))
                .header("x-goog-api-key", TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .unwrap(),
        ),
    )
    .await
    .expect("no answer to a stalled body")
    .unwrap();
    assert_eq!(res.status(), 408);
    let error: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(error["error"]["status"], "DEADLINE_EXCEEDED", "{error}");
    drop(tx);
    assert_eq!(mock.total(), 0);
}

/// A request body sending what its channel receives, one frame each.
struct ChannelBody(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl http_body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|next| next.map(|data| Ok(http_body::Frame::data(data))))
    }
}

/// A `generateContent` request whose answer (the mock echoes the prompt) is about `size` bytes,
/// sent whole: more than the 64 KiB HTTP/2 window of [`slow_http2`].
fn large_answer_request(
    proxy: &Proxy,
    size: usize,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    http::Request::post(format!(
        "{}/v1beta/models/gemini-2.0-flash:generateContent",
        proxy.url
    ))
    .header("x-goog-api-key", TOKEN)
    .header("content-type", "application/json")
    .body(http_body_util::Full::new(bytes::Bytes::from(prompt_body(
        &"a".repeat(size),
    ))))
    .unwrap()
}

/// An HTTP/2 client with a 64 KiB window (stream and connection) that only grows as the
/// answer is read.
async fn slow_http2(
    proxy: &Proxy,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let io = hyper_util::rt::TokioIo::new(connect(proxy).await);
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .adaptive_window(false)
            .handshake(io)
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// Reads `body` one frame every `pause` (HTTP/2 frames are at most 16 KiB): the whole body, or
/// the error that cut it.
async fn read_slowly(
    mut body: hyper::body::Incoming,
    pause: Duration,
) -> Result<Vec<u8>, hyper::Error> {
    use http_body_util::BodyExt;
    let mut all = Vec::new();
    while let Some(frame) = tokio::time::timeout(GUARD, body.frame())
        .await
        .expect("the body stalled")
    {
        if let Ok(data) = frame?.into_data() {
            all.extend_from_slice(&data);
        }
        tokio::time::sleep(pause).await;
    }
    Ok(all)
}

/// The text of a `generateContent` answer.
fn answer_text(body: &[u8]) -> String {
    let answer: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!("{e}: {} bytes, not a whole answer", body.len());
    });
    answer["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_slow_http2_reader_gets_the_whole_answer_past_the_idle_and_send_timeouts() {
    // A second with nothing in progress, or with nothing taken by the client, would end the
    // connection; the client reads on, without a pause of a second, for about 3 s.
    let (_mock, proxy, _dir) = start("CLIENT_IDLE_TIMEOUT=1\nCLIENT_SEND_TIMEOUT=1\n").await;
    let mut sender = slow_http2(&proxy).await;
    let size = 900_000;
    let res = sender
        .send_request(large_answer_request(&proxy, size))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let started = Instant::now();
    let body = read_slowly(res.into_body(), Duration::from_millis(60))
        .await
        .unwrap_or_else(|e| panic!("cut after {:?}: {e}", started.elapsed()));
    assert!(started.elapsed() > Duration::from_secs(2));
    assert_eq!(answer_text(&body).len(), "echo: ".len() + size);
}

#[tokio::test]
async fn sigterm_lets_an_answer_still_being_sent_to_a_slow_http2_reader_finish() {
    let (_mock, mut proxy, _dir) = start("SHUTDOWN_TIMEOUT=30\n").await;
    let mut sender = slow_http2(&proxy).await;
    let size = 900_000;
    let res = sender
        .send_request(large_answer_request(&proxy, size))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The answer is complete on the proxy's side: only the client's window holds it back.
    let reading = tokio::spawn(read_slowly(res.into_body(), Duration::from_millis(30)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.sigterm();
    let body = reading.await.unwrap().expect("the answer was cut");
    assert_eq!(answer_text(&body).len(), "echo: ".len() + size);
    let exit = proxy
        .exited_within(GUARD)
        .await
        .expect("still running after its last answer");
    assert!(exit.success(), "{exit}");
}

/// A connection to the proxy from a client with 536-byte TCP segments and a 4 KiB receive
/// buffer: the proxy's kernel then buffers about 150 KB for it (4 MB on loopback otherwise), so
/// that hyper is left writing the rest of a larger answer to a slow reader, its body dropped.
async fn connect_small(proxy: &Proxy) -> TcpStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr: std::net::SocketAddr = proxy.url.trim_start_matches("http://").parse().unwrap();
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_tcp_mss(536).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    TcpStream::from_std(socket.into()).unwrap()
}

/// Sends a `generateContent` request over HTTP/1.1 whose answer is about `size` bytes.
async fn ask_for_a_large_answer(stream: &mut TcpStream, size: usize) {
    let body = prompt_body(&"a".repeat(size));
    let head = format!(
        "POST /v1beta/models/gemini-2.0-flash:generateContent HTTP/1.1\r\nhost: proxy\r\nx-goog-api-key: {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
}

/// Reads one response from `stream`, 8 KiB every `pause`: its head and body, or what came
/// before the connection was cut.
async fn read_response_slowly(
    stream: &mut TcpStream,
    pause: Duration,
) -> Result<(String, Vec<u8>), String> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 8 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if whole_responses(&buf) == 1 {
                let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
                return Ok((head, buf[end + 4..].to_vec()));
            }
        }
        match tokio::time::timeout(GUARD, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            other => return Err(format!("cut after {} bytes: {other:?}", buf.len())),
        }
        tokio::time::sleep(pause).await;
    }
}

#[tokio::test]
async fn a_slow_reader_gets_the_whole_answer_past_the_idle_and_send_timeouts() {
    // A second with nothing in progress, or with nothing taken by the client, would end the
    // connection; the client reads on, never pausing for a second, for about 3 s.
    let (_mock, proxy, _dir) = start("CLIENT_IDLE_TIMEOUT=1\nCLIENT_SEND_TIMEOUT=1\n").await;
    let mut stream = connect_small(&proxy).await;
    let size = 900_000;
    ask_for_a_large_answer(&mut stream, size).await;
    let started = Instant::now();
    let (head, body) = read_response_slowly(&mut stream, Duration::from_millis(25))
        .await
        .unwrap_or_else(|cut| panic!("after {:?}: {cut}", started.elapsed()));
    assert!(started.elapsed() > Duration::from_secs(2));
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(answer_text(&body).len(), "echo: ".len() + size);
}

#[tokio::test]
async fn sigterm_lets_an_answer_still_being_written_to_a_slow_reader_finish() {
    let (_mock, mut proxy, _dir) = start("SHUTDOWN_TIMEOUT=30\n").await;
    let mut stream = connect_small(&proxy).await;
    let size = 900_000;
    ask_for_a_large_answer(&mut stream, size).await;
    // The answer is complete on the proxy's side (its body dropped by hyper): only the client
    // holds it back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.sigterm();
    let (head, body) = read_response_slowly(&mut stream, Duration::from_millis(5))
        .await
        .expect("the answer was cut");
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(answer_text(&body).len(), "echo: ".len() + size);
    let exit = proxy
        .exited_within(GUARD)
        .await
        .expect("still running after its last answer");
    assert!(exit.success(), "{exit}");
}

/// How many whole HTTP/1.1 responses (framed by `content-length`) `buf` starts with.
fn whole_responses(buf: &[u8]) -> usize {
    let mut count = 0;
    let mut at = 0;
    while let Some(end) = buf[at..].windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&buf[at..at + end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("no content-length")
            .trim()
            .parse()
            .unwrap();
        let next = at + end + 4 + length;
        if next > buf.len() {
            break;
        }
        count += 1;
        at = next;
    }
    count
}

#[tokio::test]
async fn a_slow_reader_of_pipelined_answers_gets_them_all_past_the_idle_and_send_timeouts() {
    // The reviewer's case: answers queued faster than the client reads them, hyper dropping
    // each body once queued; a second with nothing in progress, or with nothing taken by the
    // client, would end the connection.
    let (_mock, proxy, _dir) = start("CLIENT_IDLE_TIMEOUT=1\nCLIENT_SEND_TIMEOUT=1\n").await;
    // 400 answers of 13.8 KB, more than the kernel's buffers hold (4 MB on loopback).
    const REQUESTS: usize = 400;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8192).unwrap();
    let mut stream = socket
        .connect(proxy.url.trim_start_matches("http://").parse().unwrap())
        .await
        .unwrap();
    let request = b"GET /static/keys.js HTTP/1.1\r\nhost: proxy\r\n\r\n";
    stream.write_all(&request.repeat(REQUESTS)).await.unwrap();
    // About 200 KB a second for 3 s, then as fast as it can.
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while whole_responses(&buf) < REQUESTS {
        let slow = started.elapsed() < Duration::from_secs(3);
        let read = if slow { 4096 } else { chunk.len() };
        match tokio::time::timeout(GUARD, stream.read(&mut chunk[..read])).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            other => panic!(
                "cut after {:?}, {} of {REQUESTS} answers: {other:?}",
                started.elapsed(),
                whole_responses(&buf)
            ),
        }
        if slow {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// HTTP/2 frame types and flags used here.
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

/// One HTTP/2 frame.
#[derive(Debug)]
struct H2Frame {
    kind: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An HTTP/2 client written frame by frame, as a hostile client would: the preface and its
/// SETTINGS, then what the test sends; it acknowledges the server's SETTINGS and PINGs.
struct RawH2 {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawH2 {
    async fn connect(proxy: &Proxy, settings: &[(u16, u32)]) -> RawH2 {
        let mut stream = connect(proxy).await;
        let mut payload = Vec::new();
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(h2_frame(SETTINGS, 0, 0, &payload));
        stream.write_all(&hello).await.unwrap();
        RawH2 {
            stream,
            buf: Vec::new(),
        }
    }

    /// `GET path` on stream `id`, without credentials.
    async fn get(&mut self, id: u32, path: &str) {
        // HPACK: `:method: GET` and `:scheme: http` from the static table, `:path` and
        // `:authority` as literals (static names 4 and 1), not indexed.
        let mut block = vec![0x82, 0x86];
        for (name, value) in [(4u8, path), (1, "proxy")] {
            block.push(name);
            block.push(value.len() as u8);
            block.extend_from_slice(value.as_bytes());
        }
        let frame = h2_frame(HEADERS, END_STREAM | END_HEADERS, id, &block);
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The server's next frame, or `None` once it has closed the connection.
    async fn next(&mut self) -> Option<H2Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let frame: Vec<u8> = self.buf.drain(..9 + len).collect();
                    let (kind, flags) = (frame[3], frame[4]);
                    let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]);
                    let payload = frame[9..].to_vec();
                    if (kind == SETTINGS || kind == PING) && flags & ACK == 0 {
                        let ack = h2_frame(kind, ACK, 0, if kind == PING { &payload } else { &[] });
                        let _ = self.stream.write_all(&ack).await;
                    }
                    return Some(H2Frame {
                        kind,
                        stream,
                        payload,
                    });
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

#[tokio::test]
async fn an_http2_answer_the_client_never_lets_through_is_closed_after_the_send_timeout() {
    let (mock, proxy, _dir) = start("CLIENT_SEND_TIMEOUT=1\nCLIENT_IDLE_TIMEOUT=60\n").await;
    // No flow-control window for any stream: the head of the answer (a 401, no token) can
    // come, its body never; the client answers every PING, so it looks alive.
    let mut h2 = RawH2::connect(&proxy, &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
    h2.get(1, "/v1beta/models").await;
    let started = Instant::now();
    let mut head = false;
    let closed = loop {
        match tokio::time::timeout_at((started + GUARD).into(), h2.next()).await {
            Err(_) => break None,
            Ok(None) => break Some(started.elapsed()),
            Ok(Some(frame)) => {
                head |= frame.kind == HEADERS && frame.stream == 1;
                assert!(
                    frame.kind != DATA || frame.payload.is_empty(),
                    "data past a zero window"
                );
            }
        }
    };
    assert!(head, "the answer's head never came");
    let waited = closed.expect("the connection is still open");
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert_eq!(mock.total(), 0);
}

#[tokio::test]
async fn http2_clients_may_open_32_streams_per_connection() {
    let (_mock, proxy, _dir) = start("").await;
    let mut h2 = RawH2::connect(&proxy, &[]).await;
    let settings = tokio::time::timeout(GUARD, h2.next())
        .await
        .unwrap()
        .expect("closed before its SETTINGS");
    assert_eq!(settings.kind, SETTINGS);
    let max_streams = settings
        .payload
        .chunks(6)
        .find(|s| s[..2] == SETTINGS_MAX_CONCURRENT_STREAMS.to_be_bytes())
        .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
    assert_eq!(max_streams, Some(32));
}

#[tokio::test]
async fn a_request_body_trickling_below_the_minimum_rate_is_answered_408() {
    let (_mock, proxy, _dir) = start("CLIENT_BODY_TIMEOUT=1\nCLIENT_BODY_MIN_RATE=500\n").await;
    let (mut reader, mut writer) = connect(&proxy).await.into_split();
    writer
        .write_all(b"POST /login HTTP/1.1\r\nhost: proxy\r\ncontent-type: application/json\r\ncontent-length: 4000\r\n\r\n{")
        .await
        .unwrap();
    // A byte every 200 ms: never a second without data, but 5 bytes a second.
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if writer.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let (head, body) = read_response(&mut reader).await;
    let waited = started.elapsed();
    trickle.abort();
    assert_eq!(status(&head), 408, "{head}");
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let error: Value = serde_json::from_slice(&body).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("CLIENT_BODY_MIN_RATE"), "{error}");
    assert!(closed_after(&mut reader).await.is_some(), "left open");
}

#[tokio::test]
async fn a_request_body_above_the_minimum_rate_is_read_whole_however_long_it_takes() {
    let (mock, proxy, _dir) = start("CLIENT_BODY_TIMEOUT=1\nCLIENT_BODY_MIN_RATE=500\n").await;
    let body = prompt_body(&"a".repeat(1500));
    let mut stream = connect(&proxy).await;
    let head = format!(
        "POST /v1beta/models/gemini-2.0-flash:generateContent HTTP/1.1\r\nhost: proxy\r\nx-goog-api-key: {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // 300 bytes every 500 ms (600 bytes a second): about 2.5 s in all, more than
    // CLIENT_BODY_TIMEOUT, but never below the minimum rate.
    let started = Instant::now();
    for piece in body.as_bytes().chunks(300) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stream.write_all(piece).await.unwrap();
    }
    let (head, answer) = read_response(&mut stream).await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(answer_text(&answer).len(), "echo: ".len() + 1500);
    assert_eq!(mock.total(), 1);
}
