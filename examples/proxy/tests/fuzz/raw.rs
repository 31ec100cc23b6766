//! Raw HTTP/1.1 over a socket: a request written byte for byte, and the answer read back and
//! taken apart (status, headers, body with its framing undone).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::cases::Case;

/// An answer as the client got it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Everything read, head included (for the secret check).
    pub raw: Vec<u8>,
}

impl Answer {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// What came back on a raw connection.
#[derive(Debug)]
pub enum Outcome {
    Answered(Answer),
    /// The server closed the connection without a byte.
    Closed,
    /// Bytes came back that are not an HTTP/1 answer.
    Garbled(String),
}

/// Longest wait for an answer. A guard against a hung run, not a measurement: the mock answers
/// at once, so a case that reaches it is a failure of the proxy.
pub const GUARD: Duration = Duration::from_secs(30);

/// The request bytes: request line, headers as given, the end of the head, the body.
pub fn request_bytes(case: &Case) -> Vec<u8> {
    let mut out = Vec::with_capacity(case.body.len() + 512);
    out.extend_from_slice(case.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(case.target.as_bytes());
    out.push(b' ');
    out.extend_from_slice(case.version.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &case.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    // One request per connection: the answer ends where the connection does.
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(&case.body);
    out
}

/// Sends `case` on a new connection to `addr` and reads until the server closes it (or
/// [`GUARD`] passes: `Err`). `complete: false` shuts the write side after the request.
pub async fn send(addr: &str, case: &Case, complete: bool) -> Result<Outcome, String> {
    let bytes = request_bytes(case);
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    // The server may answer and close before it has read everything (a 431, a 413 from the
    // declared length): a failed write is not the end, the answer may be there to read.
    let _ = stream.write_all(&bytes).await;
    if !complete {
        let _ = stream.shutdown().await;
    }
    let mut buf = Vec::new();
    let read = tokio::time::timeout(GUARD, async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                // A reset after an early answer loses nothing already read.
                Err(_) => break,
            }
        }
    })
    .await;
    if read.is_err() {
        return Err(format!(
            "no answer, and the connection still open, after {} s ({} bytes read)",
            GUARD.as_secs(),
            buf.len()
        ));
    }
    if buf.is_empty() {
        return Ok(Outcome::Closed);
    }
    Ok(parse(&buf, case.method == "HEAD"))
}

/// Takes an HTTP/1 answer apart, skipping `1xx` interim answers.
pub fn parse(buf: &[u8], head_request: bool) -> Outcome {
    let mut rest = buf;
    loop {
        let Some(end) = find(rest, b"\r\n\r\n") else {
            return Outcome::Garbled(format!("no end of head in {:?}", lossy(rest, 200)));
        };
        let head = &rest[..end];
        let after = &rest[end + 4..];
        let mut lines = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let status_line = lines.next().unwrap_or_default();
        let status = std::str::from_utf8(status_line)
            .ok()
            .and_then(|l| {
                l.strip_prefix("HTTP/1.1 ")
                    .or_else(|| l.strip_prefix("HTTP/1.0 "))
            })
            .and_then(|l| l.get(..3))
            .and_then(|code| code.parse::<u16>().ok());
        let Some(status) = status else {
            return Outcome::Garbled(format!("status line {:?}", lossy(status_line, 200)));
        };
        let mut headers = Vec::new();
        for line in lines {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return Outcome::Garbled(format!("header line {:?}", lossy(line, 200)));
            };
            let name = String::from_utf8_lossy(&line[..colon]).into_owned();
            let value = trim(&line[colon + 1..]).to_vec();
            headers.push((name, value));
        }
        if (100..200).contains(&status) {
            rest = after;
            continue;
        }
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
            raw: buf.to_vec(),
        };
        if head_request || status == 204 || status == 304 {
            return Outcome::Answered(answer);
        }
        let chunked = answer
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"));
        answer.body = if chunked {
            match dechunk(after) {
                Some(body) => body,
                None => {
                    return Outcome::Garbled(format!("bad chunked body {:?}", lossy(after, 200)))
                }
            }
        } else if let Some(len) = answer.header("content-length") {
            let len: usize = match std::str::from_utf8(len).ok().and_then(|l| l.parse().ok()) {
                Some(len) => len,
                None => return Outcome::Garbled(format!("content-length {:?}", lossy(len, 50))),
            };
            if after.len() < len {
                return Outcome::Garbled(format!("body of {} bytes, {len} announced", after.len()));
            }
            after[..len].to_vec()
        } else {
            after.to_vec()
        };
        return Outcome::Answered(answer);
    }
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// At most `max` bytes, as text, for a report.
pub fn lossy(bytes: &[u8], max: usize) -> String {
    let cut = &bytes[..bytes.len().min(max)];
    let mut text = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > max {
        text.push_str(&format!("…(+{} bytes)", bytes.len() - max));
    }
    text
}
