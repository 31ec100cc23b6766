//! The cap on open client connections (MAX_CONNECTIONS) and the refusal past it.
//!
//! Without a cap, connections are accepted until the process runs out of file descriptors;
//! then `accept` fails and every other file the proxy opens (upstream connections, the
//! database) fails with it, so real requests time out. With the cap, a connection past it is
//! answered at once with a short 503 in Gemini's JSON error format and closed: the client
//! learns why, and the refusal holds nothing (no task, no buffer, no timer).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use gemini_balance::api_error::{error_value, ApiFlavor};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// File descriptors kept for everything but client connections: the listener, the database
/// and its journal, the log, the runtimes' event fds, image fetches.
const RESERVED_FILES: u64 = 64;

/// Each client connection may need an upstream connection of its own (PROXIES, HTTP/1.1
/// upstreams): two files per client connection.
const FILES_PER_CONNECTION: u64 = 2;

/// The cap when the open-file limit cannot be read (as if it were 1024, the usual soft limit).
const UNKNOWN_LIMIT_DEFAULT: usize = ((1024 - RESERVED_FILES) / FILES_PER_CONNECTION) as usize;

/// The cap when there is no open-file limit.
const UNLIMITED_DEFAULT: usize = 100_000;

/// One refusal line per this long at most, however many connections are refused.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The process's open-file limit (the soft `RLIMIT_NOFILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileLimit {
    /// At most this many open files.
    Files(u64),
    /// No limit.
    Unlimited,
    /// Could not be read (not Linux, or no `/proc`).
    Unknown,
}

impl FileLimit {
    /// The limit in force, read from `/proc/self/limits` (the workspace forbids the `unsafe`
    /// a `getrlimit` call would take).
    pub fn current() -> FileLimit {
        std::fs::read_to_string("/proc/self/limits")
            .map_or(FileLimit::Unknown, |text| FileLimit::parse(&text))
    }

    fn parse(limits: &str) -> FileLimit {
        // `Max open files            1024                 524288               files`
        let Some(line) = limits.lines().find(|l| l.starts_with("Max open files")) else {
            return FileLimit::Unknown;
        };
        match line["Max open files".len()..].split_whitespace().next() {
            Some("unlimited") => FileLimit::Unlimited,
            Some(soft) => soft.parse().map_or(FileLimit::Unknown, FileLimit::Files),
            None => FileLimit::Unknown,
        }
    }

    /// The connections this limit leaves room for: MAX_CONNECTIONS's default.
    pub fn connections(self) -> usize {
        match self {
            FileLimit::Files(files) => {
                let room = files.saturating_sub(RESERVED_FILES) / FILES_PER_CONNECTION;
                usize::try_from(room).unwrap_or(usize::MAX).max(1)
            }
            FileLimit::Unlimited => UNLIMITED_DEFAULT,
            FileLimit::Unknown => UNKNOWN_LIMIT_DEFAULT,
        }
    }
}

/// The open client connections, across every serving thread.
#[derive(Debug)]
pub struct OpenConnections {
    open: AtomicUsize,
    max: usize,
}

impl OpenConnections {
    /// At most `max` open at once.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(OpenConnections {
            open: AtomicUsize::new(0),
            max,
        })
    }

    /// A place for one more connection, or `None` at the cap.
    pub fn try_open(self: &Arc<Self>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// One open connection's place under the cap; given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<OpenConnections>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Refuses connections past the cap and says so in the log, rate-limited.
#[derive(Debug)]
pub struct Refusals {
    answer: Vec<u8>,
    max: usize,
    /// Refused since the last log line.
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl Refusals {
    /// Refusals for a cap of `max`.
    pub fn new(max: usize) -> Self {
        Refusals {
            answer: refusal(max),
            max,
            unlogged: 0,
            last_logged: None,
        }
    }

    /// Answers `stream` with the 503 and closes it, without waiting for anything.
    pub fn refuse(&mut self, stream: TcpStream) {
        // What the client has already sent is read and dropped first: closing a socket with
        // unread data sends a reset, which may reach the client before it reads the answer.
        let mut sink = [0u8; 4096];
        for _ in 0..16 {
            if !matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {
                break;
            }
        }
        // A new socket's send buffer is empty: the few hundred bytes go out in one write.
        let _ = stream.try_write(&self.answer);
        if let Ok(stream) = stream.into_std() {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_INTERVAL)
        {
            tracing::warn!(
                refused = self.unlogged,
                max_connections = self.max,
                "MAX_CONNECTIONS client connections are open: new connections are refused with 503 (at most one such line per {} s)",
                REFUSAL_LOG_INTERVAL.as_secs()
            );
            self.unlogged = 0;
            self.last_logged = Some(now);
        }
    }
}

/// The whole HTTP/1.1 answer to a refused connection.
fn refusal(max: usize) -> Vec<u8> {
    let status = StatusCode::SERVICE_UNAVAILABLE;
    let body = error_value(
        ApiFlavor::Gemini,
        status,
        &format!(
            "the server has {max} client connections open, its limit (MAX_CONNECTIONS): try again shortly"
        ),
    )
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_soft_open_file_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \nMax cpu time              unlimited            unlimited            seconds   \nMax open files            1024                 524288               files     \n";
        assert_eq!(FileLimit::parse(limits), FileLimit::Files(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(FileLimit::parse(unlimited), FileLimit::Unlimited);
        assert_eq!(FileLimit::parse("nothing here"), FileLimit::Unknown);
        assert_eq!(FileLimit::Files(1024).connections(), 480);
        assert_eq!(FileLimit::Files(10).connections(), 1);
        assert_eq!(FileLimit::Unknown.connections(), 480);
        assert!(matches!(FileLimit::current(), FileLimit::Files(_)));
    }

    #[test]
    fn slots_are_counted_and_given_back() {
        let open = OpenConnections::new(2);
        let a = open.try_open().unwrap();
        let _b = open.try_open().unwrap();
        assert!(open.try_open().is_none());
        drop(a);
        assert!(open.try_open().is_some());
    }

    #[test]
    fn the_refusal_is_a_complete_json_503() {
        let answer = String::from_utf8(refusal(7)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["status"], "UNAVAILABLE");
        assert!(json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("MAX_CONNECTIONS"));
    }
}
