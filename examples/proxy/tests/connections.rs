//! What the server guarantees about client connections (docs/proxy.md), against the binary on
//! loopback with raw sockets: a connection that waits with no request in progress is closed
//! after CLIENT_HEADER_TIMEOUT (before its first request) or CLIENT_IDLE_TIMEOUT (after one); a
//! request body that stalls is answered 408 after CLIENT_BODY_TIMEOUT; connections past
//! MAX_CONNECTIONS get a JSON 503, logged once; SIGTERM closes idle and half-sent connections
//! at once, lets requests in progress finish and cuts them at SHUTDOWN_TIMEOUT; hyper's own
//! 400, 414 and 431 carry a JSON body.

#[path = "../../../tests/support/mod.rs"]
mod support;

mod common;

use std::time::{Duration, Instant};

use common::{Proxy, TOKEN};
use serde_json::Value;
use support::{prompt_body, test_keys, MockGemini};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longer than any wait a test expects: a connection or process still there after it has
/// not been closed.
const GUARD: Duration = Duration::from_secs(10);

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

/// How long until the server closes `stream` (reading and dropping what it sends), or `None`
/// if it is still open after [`GUARD`].
async fn closed_after(stream: &mut TcpStream) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + GUARD).into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

/// One response: its head (as text) and body, read by its `content-length`.
async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = tokio::time::timeout(GUARD, stream.read(&mut chunk))
            .await
            .expect("no response")
            .unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .expect("no content-length")
        .trim()
        .parse()
        .unwrap();
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = tokio::time::timeout(GUARD, stream.read(&mut chunk))
            .await
            .expect("the body did not come")
            .unwrap();
        assert!(n > 0, "closed in the middle of the body");
        body.extend_from_slice(&chunk[..n]);
    }
    (head, body)
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
    assert_eq!(health["status"], "ok");
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
