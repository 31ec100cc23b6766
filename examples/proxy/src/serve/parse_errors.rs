//! A body for hyper's own answers to requests it cannot parse.
//!
//! When an HTTP/1.1 request line or header is malformed, the URI is too long or the head too
//! large, hyper answers by itself (400, 414, 431) with an empty body and closes the
//! connection; the request never reaches the service, and hyper offers no hook to change that
//! answer. An SDK then shows a bare status where every other error of the proxy is a JSON
//! message in Gemini's format. So the connection's writes pass through [`ClientIo`], which
//! swaps exactly that answer for the same status with a JSON body.
//!
//! What is swapped is narrow on purpose: a write made while no request is in progress on the
//! connection (so it cannot be part of an answer of the proxy's), that is one of hyper's three
//! status lines followed only by the `connection: close`, `content-length: 0` and `date`
//! fields hyper writes with it. Everything else passes untouched, with one branch per write.
//!
//! [`ClientIo`] also tells the connection when the socket takes none of a write (the client
//! reads nothing and the kernel's buffers are full) and when it takes one again: until then
//! hyper holds output for the client, so the connection is busy, not idle (hyper has dropped
//! the response body by then), and its client is one the send timeout watches.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::StatusCode;
use gemini_balance::api_error::{error_value, ApiFlavor};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::connection::ConnState;

/// The largest request head (request line and headers) read: past it hyper answers 431.
/// hyper's URI limit (65,534 bytes) fits, so a long URI is a 414.
pub const MAX_HEAD_BYTES: usize = 128 * 1024;

/// hyper's answers without a body, and what the JSON says instead.
const AUTOMATIC: [(&[u8], StatusCode, &str); 3] = [
    (
        b"HTTP/1.1 400 Bad Request\r\n",
        StatusCode::BAD_REQUEST,
        "the request is not valid HTTP/1.1: its request line or a header could not be parsed",
    ),
    (
        b"HTTP/1.1 414 URI Too Long\r\n",
        StatusCode::URI_TOO_LONG,
        "the request URI is longer than 65534 bytes",
    ),
    (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "the request head is too large: at most 100 header fields and 128 KiB with the request line",
    ),
];

/// A client connection's socket, with hyper's automatic error answers given a body and blocked
/// writes reported to the connection.
#[derive(Debug)]
pub struct ClientIo {
    inner: TokioIo<TcpStream>,
    conn: Arc<ConnState>,
    replacing: Option<Replacement>,
    /// The latest write was not taken (reported to `conn` until one is).
    blocked: bool,
}

/// An answer being written in place of hyper's.
#[derive(Debug)]
struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    /// The length of hyper's bytes it stands for (reported written once it is).
    replaces: usize,
}

impl ClientIo {
    /// The socket of the connection whose requests share `conn`.
    pub fn new(stream: TcpStream, conn: Arc<ConnState>) -> Self {
        ClientIo {
            inner: TokioIo::new(stream),
            conn,
            replacing: None,
            blocked: false,
        }
    }

    /// Reports a write the socket did not take, or took after one it did not. One branch per
    /// write; the connection is told only when that changes.
    fn note<T>(&mut self, written: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match (&written, self.blocked) {
            (Poll::Pending, false) => {
                self.blocked = true;
                self.conn.write_blocked();
            }
            (Poll::Ready(_), true) => {
                self.blocked = false;
                self.conn.write_resumed();
            }
            _ => {}
        }
        written
    }

    /// Starts replacing `buf` if it is one of hyper's automatic answers.
    fn check(&mut self, buf: &[u8]) {
        if self.replacing.is_none() && buf.starts_with(b"HTTP/1.1 4") && self.conn.in_flight() == 0
        {
            if let Some(bytes) = with_body(buf) {
                self.replacing = Some(Replacement {
                    bytes,
                    written: 0,
                    replaces: buf.len(),
                });
            }
        }
    }

    /// Writes the replacement; once it is out, reports hyper's bytes as written.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(replacement) = self.replacing.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        while replacement.written < replacement.bytes.len() {
            let rest = &replacement.bytes[replacement.written..];
            match Pin::new(&mut self.inner).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => replacement.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let replaces = replacement.replaces;
        self.replacing = None;
        Poll::Ready(Ok(replaces))
    }
}

/// hyper's automatic answer in `head` with a JSON body, or `None` if `head` is anything else.
fn with_body(head: &[u8]) -> Option<Vec<u8>> {
    let (status_line, status, message) = AUTOMATIC
        .iter()
        .find(|(line, _, _)| head.starts_with(line))?;
    let fields = head[status_line.len()..].strip_suffix(b"\r\n\r\n")?;
    let mut date: Option<&[u8]> = None;
    let mut empty = false;
    for field in fields.split(|&b| b == b'\n') {
        let field = field.strip_suffix(b"\r").unwrap_or(field);
        match field {
            b"connection: close" => {}
            b"content-length: 0" => empty = true,
            _ if field.starts_with(b"date: ") && field.len() < 64 => date = Some(field),
            _ => return None,
        }
    }
    if !empty {
        return None;
    }
    let body = error_value(ApiFlavor::Gemini, *status, message).to_string();
    let mut answer = Vec::with_capacity(status_line.len() + 128 + body.len());
    answer.extend_from_slice(status_line);
    answer.extend_from_slice(b"content-type: application/json\r\n");
    answer.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    answer.extend_from_slice(b"connection: close\r\n");
    if let Some(date) = date {
        answer.extend_from_slice(date);
        answer.extend_from_slice(b"\r\n");
    }
    answer.extend_from_slice(b"\r\n");
    answer.extend_from_slice(body.as_bytes());
    Some(answer)
}

impl Read for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl Write for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.check(buf);
        let written = if this.replacing.is_some() {
            this.poll_replacement(cx)
        } else {
            Pin::new(&mut this.inner).poll_write(cx, buf)
        };
        this.note(written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.check(first);
        }
        let written = if this.replacing.is_some() {
            this.poll_replacement(cx)
        } else {
            Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
        };
        this.note(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_hypers_own_answers_a_json_body() {
        // As hyper 1.x writes them.
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 07 Dec 2026 07:35:40 GMT\r\n\r\n";
        let answer = String::from_utf8(with_body(head).unwrap()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("content-type: application/json\r\n"));
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(head.contains("connection: close\r\n"));
        assert!(head.ends_with("date: Mon, 07 Dec 2026 07:35:40 GMT"));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], 431);
    }

    #[test]
    fn leaves_every_other_answer_alone() {
        for other in [
            // An answer of the proxy's: it has fields of its own.
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            // A body follows.
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}",
            // Not one of hyper's automatic statuses.
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            // Not the whole head.
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
        ] {
            assert!(with_body(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }
}
