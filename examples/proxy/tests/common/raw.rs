//! Reading a proxy's answers over a raw connection: for tests that speak HTTP by hand (half-sent
//! heads, pipelining, slow readers), where a client library would hide what the server did.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest a raw read waits before the test gives up on it.
pub const GUARD: Duration = Duration::from_secs(10);

/// How long the server took to close `stream` (reading and dropping whatever it sends), or
/// `None` if it was still open after [`GUARD`].
pub async fn closed_after(stream: &mut (impl AsyncRead + Unpin)) -> Option<Duration> {
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

/// One answer with a `Content-Length`: its head (through the blank line) and its body.
pub async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> (String, Vec<u8>) {
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
