//! Errors returned instead of a response: timeouts and connection failures.

use std::io;

use super::class::FailureClass;

/// Walks the error's `source()` chain looking for a timeout or an I/O error kind.
pub(crate) fn classify_error(error: &(dyn std::error::Error + 'static)) -> FailureClass {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    #[allow(unused_mut)]
    let mut connect = false;
    while let Some(err) = current {
        if err.is::<tower::timeout::error::Elapsed>() || err.is::<tokio::time::error::Elapsed>() {
            return FailureClass::Timeout;
        }
        if let Some(class) = err.downcast_ref::<FailureClass>() {
            return class.clone();
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::TimedOut => FailureClass::Timeout,
                kind => FailureClass::Transport {
                    detail: io_kind_name(kind).to_owned(),
                },
            };
        }
        #[cfg(feature = "reqwest")]
        if let Some(e) = err.downcast_ref::<reqwest::Error>() {
            if e.is_timeout() {
                return FailureClass::Timeout;
            }
            connect |= e.is_connect();
        }
        current = err.source();
    }
    match classify_display(error) {
        FailureClass::Transport { detail } if connect && detail == "other" => {
            FailureClass::Transport {
                detail: "connect failed".to_owned(),
            }
        }
        class => class,
    }
}

/// Fallback when only the message is known (tower-http's `classify_error` only gives `Display`).
pub(crate) fn classify_display(error: &dyn std::fmt::Display) -> FailureClass {
    let message = error.to_string().to_ascii_lowercase();
    if message.contains("timed out") || message.contains("timeout") || message.contains("elapsed") {
        FailureClass::Timeout
    } else if message.contains("refused") {
        FailureClass::Transport {
            detail: "connection refused".to_owned(),
        }
    } else if message.contains("reset") {
        FailureClass::Transport {
            detail: "connection reset".to_owned(),
        }
    } else {
        FailureClass::Transport {
            detail: "other".to_owned(),
        }
    }
}

fn io_kind_name(kind: io::ErrorKind) -> &'static str {
    match kind {
        io::ErrorKind::ConnectionRefused => "connection refused",
        io::ErrorKind::ConnectionReset => "connection reset",
        io::ErrorKind::ConnectionAborted => "connection aborted",
        io::ErrorKind::NotConnected => "not connected",
        io::ErrorKind::BrokenPipe => "broken pipe",
        io::ErrorKind::UnexpectedEof => "connection closed early",
        io::ErrorKind::AddrNotAvailable => "address not available",
        _ => "i/o error",
    }
}
