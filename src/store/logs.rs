//! The error log and the request log as every store pages through them: the query and result
//! types of [`StatsStore`](super::StatsStore)'s log methods.
//!
//! Pages are newest first. The query structs are `Deserialize` with every field optional, so an
//! admin API can take them from a query string.
//!
//! # Example
//!
//! ```
//! use gemini_balance::store::logs::RequestQuery;
//!
//! let query: RequestQuery = serde_json::from_str(r#"{"model": "gemini-2.0-flash", "success": false}"#)?;
//! assert_eq!(query.limit, 50);
//! assert_eq!(query.success, Some(false));
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::stats::Tokens;
use crate::usage::RequestId;

/// Most rows one page returns.
pub const MAX_PAGE: u32 = 1_000;

/// Filters and paging for [`StatsStore::errors`](super::StatsStore::errors). Every filter is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorQuery {
    /// Only this key (its id, 16 hex digits).
    pub key_id: Option<String>,
    /// Only this model.
    pub model: Option<String>,
    /// Only this upstream status.
    pub status: Option<u16>,
    /// Only this failure class (`rate_limited`, `key_rejected`, ...).
    pub class: Option<String>,
    /// Only rows at or after this time (ms since the epoch).
    pub from_ms: Option<i64>,
    /// Only rows before this time (ms since the epoch).
    pub to_ms: Option<i64>,
    /// Only rows whose message contains this text (ASCII case-insensitive).
    pub search: Option<String>,
    /// Rows per page (default 50, at most [`MAX_PAGE`]).
    pub limit: u32,
    /// Rows to skip.
    pub offset: u64,
}

impl Default for ErrorQuery {
    fn default() -> Self {
        ErrorQuery {
            key_id: None,
            model: None,
            status: None,
            class: None,
            from_ms: None,
            to_ms: None,
            search: None,
            limit: 50,
            offset: 0,
        }
    }
}

/// One failed upstream attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ErrorEntry {
    /// Row id (for [`StatsStore::error`](super::StatsStore::error) and deletion).
    pub id: i64,
    /// When the attempt started (ms since the epoch).
    pub at_ms: i64,
    /// The client request's id.
    pub request_id: RequestId,
    /// The key's id.
    pub key_id: String,
    /// The key's fingerprint.
    pub key_mask: String,
    /// The model.
    pub model: Option<String>,
    /// The upstream status; `None` for a transport error.
    pub status: Option<u16>,
    /// The failure class.
    pub class: String,
    /// The upstream's message (keys redacted, at most 2,000 bytes, cut at a character boundary).
    pub message: Option<String>,
    /// The request body, when recording bodies was enabled; only filled by
    /// [`StatsStore::error`](super::StatsStore::error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body: Option<String>,
}

/// A page of the error log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ErrorPage {
    /// Rows matching the filters, all pages together.
    pub total: u64,
    /// This page, newest first.
    pub entries: Vec<ErrorEntry>,
}

/// Filters and paging for [`StatsStore::requests`](super::StatsStore::requests). Every filter is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RequestQuery {
    /// Only requests whose final key is this one (its id).
    pub key_id: Option<String>,
    /// Only this model.
    pub model: Option<String>,
    /// Only this client token (its id).
    pub client_id: Option<String>,
    /// Only successful (`true`) or failed (`false`) requests.
    pub success: Option<bool>,
    /// Only this status (as the client got it).
    pub status: Option<u16>,
    /// Only requests at or after this time (ms since the epoch).
    pub from_ms: Option<i64>,
    /// Only requests before this time (ms since the epoch).
    pub to_ms: Option<i64>,
    /// Rows per page (default 50, at most [`MAX_PAGE`]).
    pub limit: u32,
    /// Rows to skip.
    pub offset: u64,
}

impl Default for RequestQuery {
    fn default() -> Self {
        RequestQuery {
            key_id: None,
            model: None,
            client_id: None,
            success: None,
            status: None,
            from_ms: None,
            to_ms: None,
            limit: 50,
            offset: 0,
        }
    }
}

/// One client request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RequestEntry {
    /// Row id.
    pub id: i64,
    /// The request's id.
    pub request_id: RequestId,
    /// When it arrived (ms since the epoch).
    pub at_ms: i64,
    /// `gemini` or `openai`.
    pub protocol: String,
    /// The path.
    pub route: String,
    /// The model.
    pub model: Option<String>,
    /// The final key's id.
    pub key_id: Option<String>,
    /// The final key's fingerprint.
    pub key_mask: Option<String>,
    /// The client token's id.
    pub client_id: Option<String>,
    /// The client token's fingerprint.
    pub client_mask: Option<String>,
    /// The status the client got.
    pub status: u16,
    /// A complete 2xx.
    pub success: bool,
    /// Upstream attempts.
    pub attempts: u32,
    /// Until the end of the response.
    pub latency_ms: u64,
    /// Until the first body byte.
    pub ttfb_ms: Option<u64>,
    /// An SSE response.
    pub streamed: bool,
    /// `complete`, `client_gone`, `body_error`, `no_response` or `error_event`.
    pub completion: String,
    /// Tokens.
    pub tokens: Tokens,
}

/// A page of the request log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RequestPage {
    /// This page, newest first.
    pub entries: Vec<RequestEntry>,
    /// `true` when more rows follow this page.
    pub has_more: bool,
}

/// One upstream attempt of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AttemptEntry {
    /// When it started (ms since the epoch).
    pub at_ms: i64,
    /// The key's id.
    pub key_id: String,
    /// The key's fingerprint.
    pub key_mask: String,
    /// The model.
    pub model: Option<String>,
    /// The upstream status; `None` for a transport error.
    pub status: Option<u16>,
    /// The failure class; `None` on success.
    pub class: Option<String>,
    /// Until the response head.
    pub latency_ms: u64,
}

/// Which rows of a log to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogDeletion {
    /// These rows, by row id.
    Ids(Vec<i64>),
    /// Every row older than this.
    Before(SystemTime),
}

/// Redacts keys, replaces NUL characters (PostgreSQL's text refuses them) and cuts to at most
/// `max_bytes` bytes, the ellipsis of a cut included (on a character boundary): the column
/// must take what this returns, or the database refuses the batch.
pub(crate) fn clean_body(body: &str, max_bytes: usize) -> String {
    let redacted = without_nul(crate::redact::redact_keys(body));
    if redacted.len() <= max_bytes {
        return redacted.into_owned();
    }
    let mut cut = max_bytes.saturating_sub(ELLIPSIS.len());
    while !redacted.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{ELLIPSIS}", &redacted[..cut])
}

/// What marks a cut.
const ELLIPSIS: &str = "…";

/// `text` with every NUL character replaced by U+FFFD: PostgreSQL's text types refuse NUL
/// (SQLSTATE 22021), and a model name, an upstream message or a request body can hold one.
pub(crate) fn without_nul(text: std::borrow::Cow<'_, str>) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        text
    }
}

/// Longest error message kept, in characters.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) const MAX_MESSAGE_CHARS: usize = 2_000;
/// Longest request body kept, in bytes.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// Redacts keys, replaces NUL characters and cuts to at most `max_chars` characters (and an
/// ellipsis); borrows when nothing changes (a route, nearly always).
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) fn clean_text(text: &str, max_chars: usize) -> std::borrow::Cow<'_, str> {
    let redacted = without_nul(crate::redact::redact_keys(text));
    match redacted.char_indices().nth(max_chars) {
        Some((cut, _)) => std::borrow::Cow::Owned(format!("{}…", &redacted[..cut])),
        None => redacted,
    }
}

/// The request's one attempt, when the request row can stand for it (SQLite schema version 3,
/// every SQL store: no attempt row then, a third of the writes): the first attempt succeeded, with the request's key, model and status, and the request id
/// carries the arrival millisecond (the `at_ms` index finds the row by when the attempts are read).
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub(crate) fn lone_attempt(
    r: &crate::usage::RequestRecord,
) -> Option<&crate::usage::AttemptRecord> {
    let [a] = r.attempt_log.as_slice() else {
        return None;
    };
    let id_ms = i64::try_from(r.id.millis()).ok()?;
    let stands_for = a.class.is_none()
        && a.status == Some(r.status)
        && r.key.as_ref() == Some(&a.key)
        && a.model
            .as_deref()
            .is_none_or(|m| r.model.as_deref() == Some(m))
        && id_ms == super::time::ms_of(r.at);
    stands_for.then_some(a)
}
