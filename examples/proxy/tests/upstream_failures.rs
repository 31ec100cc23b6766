//! What a client sees when the upstream fails on the direct route (no PROXIES): a silent
//! upstream is a 504 once TIME_OUT passes, a refused connection a 502, both in the route's
//! error format; a stream that stalls mid-way is cut after TIME_OUT instead of holding its
//! client forever; an answer that breaks off mid-way is a 502 (a whole one goes out with its
//! `Content-Length`); a HEAD request gets the upstream's head, not a 502.

mod common;

use std::time::Duration;

use common::{Proxy, TOKEN};

use serde_json::Value;
use support::{prompt_body, test_key, test_keys, Fault, MockGemini};

/// One key, one attempt, TIME_OUT of 1 s (the smallest allowed).
fn env_file(base_url: &str) -> String {
    format!(
        "API_KEYS={}\nALLOWED_TOKENS=[\"{TOKEN}\"]\nBASE_URL={base_url}/v1beta\nMAX_RETRIES=1\nTIME_OUT=1\n",
        serde_json::to_string(&test_keys(1)).unwrap(),
    )
}

async fn generate(proxy: &Proxy, action: &str) -> reqwest::Response {
    support::client_builder()
        .build()
        .unwrap()
        .post(format!(
            "{}/v1beta/models/gemini-2.0-flash:{action}",
            proxy.url
        ))
        .header("x-goog-api-key", TOKEN)
        .header("content-type", "application/json")
        .body(prompt_body("hello"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_silent_upstream_answers_504_after_time_out() {
    let mock = MockGemini::start().await;
    mock.set_fault(&test_key(1), Fault::Slow(Duration::from_secs(30)));
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock.base_url())).await;

    let res = generate(&proxy, "generateContent").await;
    assert_eq!(res.status(), 504);
    let error: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(error["error"]["code"], 504);
    assert_eq!(error["error"]["status"], "DEADLINE_EXCEEDED");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{error}"
    );
    // The request did reach the upstream: it is the wait that failed, not the connection.
    assert_eq!(mock.requests(&test_key(1)), 1);
}

#[tokio::test]
async fn a_refused_connection_answers_502() {
    // A loopback port nobody listens on.
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&closed)).await;

    let res = generate(&proxy, "generateContent").await;
    assert_eq!(res.status(), 502);
    let error: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(error["error"]["code"], 502);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("refused"), "{error}");
    assert!(!message.contains(&test_key(1)), "{error}");

    // The OpenAI routes answer in OpenAI's format.
    let res = support::client_builder()
        .build()
        .unwrap()
        .post(format!("{}/v1/chat/completions", proxy.url))
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"model": "gemini-2.0-flash", "messages": [{"role": "user", "content": "hi"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    let error: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert!(error["error"]["type"].is_string(), "{error}");
}

#[tokio::test]
async fn an_https_base_url_is_reached_over_tls() {
    // The mock speaks plain HTTP: a TLS client's handshake fails there, a plain client's
    // request would be served.
    let mock = MockGemini::start().await;
    let base = mock.base_url().replacen("http://", "https://", 1);
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&base)).await;

    let res = generate(&proxy, "generateContent").await;
    assert_eq!(res.status(), 502);
    let error: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(error["error"]["code"], 502);
    assert_eq!(mock.requests(&test_key(1)), 0);
}

#[tokio::test]
async fn a_stream_that_stalls_is_cut_after_time_out() {
    let mock = MockGemini::start().await;
    // Every stream stops after its first event, and no permit ever lets the rest through.
    let _gate = mock.gate_streams();
    let dir = tempfile::tempdir().unwrap();
    let env = format!(
        "{}STREAM_OPTIMIZER_ENABLED=false\n",
        env_file(&mock.base_url())
    );
    let proxy = Proxy::start(dir.path(), &env).await;

    let res = generate(&proxy, "streamGenerateContent?alt=sse").await;
    assert_eq!(res.status(), 200);
    // A guard, not a measurement: without the read timeout this would wait forever.
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        let mut res = res;
        let mut received = Vec::new();
        loop {
            match res.chunk().await {
                Ok(Some(chunk)) => received.extend_from_slice(&chunk),
                Ok(None) => return (received, false),
                Err(_) => return (received, true),
            }
        }
    })
    .await
    .expect("the stalled stream was not cut");
    let (received, failed) = read;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("data: "), "{text}");
    // The first event came through; the stream did not finish normally.
    assert!(!text.contains("\"finishReason\""), "{text}");
    assert!(failed, "the stream ended as if complete: {text}");
}

#[tokio::test]
async fn an_answer_that_breaks_off_is_a_502_and_a_whole_one_has_its_length() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An upstream that starts a chunked JSON answer and closes the connection mid-way, as a
    // dropped upstream connection does.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json; charset=UTF-8\r\n\
                      transfer-encoding: chunked\r\n\r\n10\r\n{\"candidates\":[\r\n",
                )
                .await;
            let _ = socket.shutdown().await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&format!("http://{addr}"))).await;
    let res = generate(&proxy, "generateContent").await;
    assert_eq!(res.status(), 502);
    let error: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(error["error"]["status"], "UNAVAILABLE", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("broke off"),
        "{error}"
    );

    // A whole answer goes out with its length; a stream as it comes, without one.
    let mock = MockGemini::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&mock.base_url())).await;
    let res = generate(&proxy, "generateContent").await;
    assert_eq!(res.status(), 200);
    let length = res.headers()["content-length"].to_str().unwrap().to_owned();
    let body = res.bytes().await.unwrap();
    assert_eq!(length, body.len().to_string());
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert!(answer["candidates"].is_array(), "{answer}");
    let res = generate(&proxy, "streamGenerateContent?alt=sse").await;
    assert_eq!(res.status(), 200);
    assert!(!res.headers().contains_key("content-length"));
    assert!(String::from_utf8_lossy(&res.bytes().await.unwrap()).starts_with("data: "));
}

#[tokio::test]
async fn a_head_request_gets_the_upstreams_head() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // An upstream that answers HEAD as HTTP says: the headers of the answer, no body.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = socket.read(&mut buf).await;
            let _ = socket
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json; charset=UTF-8\r\n\
                      content-length: 1234\r\n\r\n",
                )
                .await;
            let _ = socket.shutdown().await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&format!("http://{addr}"))).await;
    let client = support::client_builder().build().unwrap();
    // The model list (rewritten for GET) and a plain route.
    for path in ["/v1beta/models", "/v1beta/models/gemini-2.0-flash"] {
        let res = client
            .head(format!("{}{path}", proxy.url))
            .header("x-goog-api-key", TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn an_http_1_0_upstream_does_not_make_the_clients_connection_http_1_0() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A relay that answers in HTTP/1.0 (Python's http.server does).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = socket.read(&mut buf).await;
            let body = br#"{"candidates":[]}"#;
            let head = format!(
                "HTTP/1.0 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body).await;
            let _ = socket.shutdown().await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(dir.path(), &env_file(&format!("http://{addr}"))).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let body = support::prompt_body("hi");
    let request = format!(
        "POST /v1beta/models/gemini-2.0-flash:generateContent HTTP/1.1\r\nhost: x\r\n\
         x-goog-api-key: {TOKEN}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = stream.read(&mut answer).await.unwrap();
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
}
