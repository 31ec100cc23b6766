//! Paging through the error log and the request log, with filters.
//!
//! Like [`stats`](super::stats), plain functions over a [`rusqlite::Connection`] returning
//! `Serialize` values; newest first. The query structs are `Deserialize` with every field
//! optional, so an admin API can take them from a query string.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use gemini_balance::keys::KeyId;
//! use gemini_balance::store::sqlite::logs::{self, ErrorQuery};
//! use gemini_balance::store::{SqliteStore, UsageSink};
//! use gemini_balance::usage::{AttemptRecord, RequestRecord};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = SqliteStore::open(dir.path().join("usage.db"))?;
//! let key = KeyId::of("AIzaSyA1234567890abcdefghijklmnopqrstuv");
//! let mut record = RequestRecord::new(7, SystemTime::now());
//! record.status = 429;
//! record.attempt_log.push(AttemptRecord {
//!     at: SystemTime::now(),
//!     key: key.clone(),
//!     model: Some("gemini-2.0-flash".into()),
//!     status: Some(429),
//!     class: Some("rate_limited"),
//!     latency: Duration::from_millis(80),
//!     error_message: Some("Resource has been exhausted (e.g. check quota).".into()),
//! });
//! store.record(record);
//! store.flush()?;
//!
//! let query = ErrorQuery { key_id: Some(key.hex()), search: Some("quota".into()), ..ErrorQuery::default() };
//! let page = store.read(|conn| logs::errors(conn, &query))?;
//! assert_eq!(page.total, 1);
//! assert_eq!(page.entries[0].status, Some(429));
//! # Ok(())
//! # }
//! ```

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::snapshot::snapshot;
use super::sql_error;
use crate::store::StoreError;

/// Most rows one page returns.
pub const MAX_PAGE: u32 = 1_000;

/// Filters and paging for [`errors`]. Every filter is optional.
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
    /// Row id (for [`error`] and deletion).
    pub id: i64,
    /// When the attempt started (ms since the epoch).
    pub at_ms: i64,
    /// The client request's id, 16 hex digits.
    pub request_id: String,
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
    /// The upstream's message (keys redacted, at most 2,000 characters).
    pub message: Option<String>,
    /// The request body, when recording bodies was enabled; only filled by [`error`].
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

/// Filters and paging for [`requests`]. Every filter is optional.
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
    /// The request's id, 16 hex digits.
    pub request_id: String,
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
    pub tokens: super::stats::Tokens,
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

/// The 16-hex-digit form of a stored request id.
fn request_hex(stored: i64) -> String {
    format!("{:016x}", stored as u64)
}

fn unsigned(v: Option<i64>) -> u64 {
    v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

fn status_of(v: Option<i64>) -> Option<u16> {
    v.and_then(|v| u16::try_from(v).ok())
}

/// `LIKE` pattern matching `text` anywhere, with `\` escaping the wildcards.
fn contains_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// A page of the error log, newest first; its total and its rows come from one snapshot.
pub fn errors(conn: &Connection, query: &ErrorQuery) -> Result<ErrorPage, StoreError> {
    snapshot(conn, |conn| error_page(conn, query))
}

fn error_page(conn: &Connection, query: &ErrorQuery) -> Result<ErrorPage, StoreError> {
    let mut clauses = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    let mut filter = |clause: &str, value: Value| {
        args.push(value);
        clauses.push(clause.replace('?', &format!("?{}", args.len())));
    };
    if let Some(key) = &query.key_id {
        filter("key_id = ?", Value::Text(key.clone()));
    }
    if let Some(model) = &query.model {
        filter("model = ?", Value::Text(model.clone()));
    }
    if let Some(status) = query.status {
        filter("status = ?", Value::Integer(i64::from(status)));
    }
    if let Some(class) = &query.class {
        filter("class = ?", Value::Text(class.clone()));
    }
    if let Some(from) = query.from_ms {
        filter("at_ms >= ?", Value::Integer(from));
    }
    if let Some(to) = query.to_ms {
        filter("at_ms < ?", Value::Integer(to));
    }
    if let Some(text) = query.search.as_deref().filter(|t| !t.is_empty()) {
        filter(
            "message LIKE ? ESCAPE '\\'",
            Value::Text(contains_pattern(text)),
        );
    }
    let filters = where_clause(&clauses);
    let total: i64 = conn
        .query_row(
            &format!("SELECT count(*) FROM error_log {filters}"),
            params_from_iter(args.iter()),
            |r| r.get(0),
        )
        .map_err(sql_error("counting error log rows"))?;
    let (limit, offset) = page(query.limit, query.offset);
    args.push(Value::Integer(limit));
    args.push(Value::Integer(offset));
    let sql = format!(
        "SELECT id, at_ms, request_id, key_id, key_mask, model, status, class, message \
         FROM error_log {filters} ORDER BY at_ms DESC, id DESC LIMIT ?{} OFFSET ?{}",
        args.len() - 1,
        args.len()
    );
    let mut stmt = conn
        .prepare(&sql)
        .map_err(sql_error("reading the error log"))?;
    let rows = stmt
        .query_map(params_from_iter(args.iter()), |row| Ok(error_of(row)))
        .map_err(sql_error("reading the error log"))?;
    let entries = rows
        .filter_map(|row| match row {
            Ok(entry) => Some(entry),
            Err(e) => {
                tracing::warn!(error = %e, "skipping an unreadable error log row");
                None
            }
        })
        .collect();
    Ok(ErrorPage {
        total: unsigned(Some(total)),
        entries,
    })
}

/// One error log row with its request body (if one was recorded).
pub fn error(conn: &Connection, id: i64) -> Result<Option<ErrorEntry>, StoreError> {
    conn.query_row(
        "SELECT id, at_ms, request_id, key_id, key_mask, model, status, class, message, \
         request_body FROM error_log WHERE id = ?1",
        [id],
        |row| {
            let mut entry = error_of(row);
            entry.request_body = row.get(9).ok().flatten();
            Ok(entry)
        },
    )
    .optional()
    .map_err(sql_error("reading an error log row"))
}

fn error_of(row: &Row<'_>) -> ErrorEntry {
    ErrorEntry {
        id: row.get(0).unwrap_or(0),
        at_ms: row.get(1).unwrap_or(0),
        request_id: request_hex(row.get(2).unwrap_or(0)),
        key_id: row.get(3).unwrap_or_default(),
        key_mask: row.get(4).unwrap_or_default(),
        model: row.get(5).ok().flatten(),
        status: status_of(row.get(6).ok().flatten()),
        class: row.get(7).unwrap_or_default(),
        message: row.get(8).ok().flatten(),
        request_body: None,
    }
}

/// A page of the request log, newest first.
pub fn requests(conn: &Connection, query: &RequestQuery) -> Result<RequestPage, StoreError> {
    let mut clauses = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    let mut filter = |clause: &str, value: Value| {
        args.push(value);
        clauses.push(clause.replace('?', &format!("?{}", args.len())));
    };
    if let Some(key) = &query.key_id {
        filter("key_id = ?", Value::Text(key.clone()));
    }
    if let Some(model) = &query.model {
        filter("model = ?", Value::Text(model.clone()));
    }
    if let Some(client) = &query.client_id {
        filter("client_id = ?", Value::Text(client.clone()));
    }
    if let Some(success) = query.success {
        filter("success = ?", Value::Integer(i64::from(success)));
    }
    if let Some(status) = query.status {
        filter("status = ?", Value::Integer(i64::from(status)));
    }
    if let Some(from) = query.from_ms {
        filter("at_ms >= ?", Value::Integer(from));
    }
    if let Some(to) = query.to_ms {
        filter("at_ms < ?", Value::Integer(to));
    }
    let filters = where_clause(&clauses);
    let (limit, offset) = page(query.limit, query.offset);
    // One row more than asked tells whether another page follows.
    args.push(Value::Integer(limit + 1));
    args.push(Value::Integer(offset));
    let sql = format!(
        "SELECT id, request_id, at_ms, protocol, route, model, key_id, key_mask, client_id, \
         client_mask, status, success, attempts, latency_ms, ttfb_ms, streamed, completion, \
         prompt_tokens, candidates_tokens, thoughts_tokens, cached_tokens, \
         tool_use_prompt_tokens, total_tokens FROM request_log {filters} \
         ORDER BY at_ms DESC, id DESC LIMIT ?{} OFFSET ?{}",
        args.len() - 1,
        args.len()
    );
    let mut stmt = conn
        .prepare(&sql)
        .map_err(sql_error("reading the request log"))?;
    let rows = stmt
        .query_map(params_from_iter(args.iter()), |row| Ok(request_of(row)))
        .map_err(sql_error("reading the request log"))?;
    let mut entries: Vec<RequestEntry> = rows
        .filter_map(|row| match row {
            Ok(entry) => Some(entry),
            Err(e) => {
                tracing::warn!(error = %e, "skipping an unreadable request log row");
                None
            }
        })
        .collect();
    let has_more = entries.len() as i64 > limit;
    entries.truncate(limit as usize);
    Ok(RequestPage { entries, has_more })
}

fn request_of(row: &Row<'_>) -> RequestEntry {
    let int = |i: usize| row.get::<_, Option<i64>>(i).ok().flatten();
    RequestEntry {
        id: int(0).unwrap_or(0),
        request_id: request_hex(int(1).unwrap_or(0)),
        at_ms: int(2).unwrap_or(0),
        protocol: row.get(3).unwrap_or_default(),
        route: row.get(4).unwrap_or_default(),
        model: row.get(5).ok().flatten(),
        key_id: row.get(6).ok().flatten(),
        key_mask: row.get(7).ok().flatten(),
        client_id: row.get(8).ok().flatten(),
        client_mask: row.get(9).ok().flatten(),
        status: status_of(int(10)).unwrap_or(0),
        success: int(11).unwrap_or(0) != 0,
        attempts: u32::try_from(unsigned(int(12))).unwrap_or(u32::MAX),
        latency_ms: unsigned(int(13)),
        ttfb_ms: int(14).map(|v| unsigned(Some(v))),
        streamed: int(15).unwrap_or(0) != 0,
        completion: row.get(16).unwrap_or_default(),
        tokens: super::stats::Tokens {
            prompt: unsigned(int(17)),
            candidates: unsigned(int(18)),
            thoughts: unsigned(int(19)),
            cached: unsigned(int(20)),
            tool_use_prompt: unsigned(int(21)),
            total: unsigned(int(22)),
        },
    }
}

/// The upstream attempts of one request, in order.
pub fn attempts(conn: &Connection, request_id: u64) -> Result<Vec<AttemptEntry>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT at_ms, key_id, key_mask, model, status, class, latency_ms FROM attempt_log \
             WHERE request_id = ?1 ORDER BY at_ms, id",
        )
        .map_err(sql_error("reading attempts"))?;
    let rows = stmt
        .query_map(params![request_id as i64], |row| {
            Ok(AttemptEntry {
                at_ms: row.get(0).unwrap_or(0),
                key_id: row.get(1).unwrap_or_default(),
                key_mask: row.get(2).unwrap_or_default(),
                model: row.get(3).ok().flatten(),
                status: status_of(row.get(4).ok().flatten()),
                class: row.get(5).ok().flatten(),
                latency_ms: unsigned(row.get(6).ok().flatten()),
            })
        })
        .map_err(sql_error("reading attempts"))?;
    let attempts = rows
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql_error("reading attempts"))?;
    if !attempts.is_empty() {
        return Ok(attempts);
    }
    // A request served by its first attempt keeps it in its own row (schema version 3); the
    // id's upper bits are its arrival millisecond, which the `at_ms` index finds.
    let mut stmt = conn
        .prepare_cached(
            "SELECT at_ms, key_id, key_mask, model, status, lone_attempt_latency_ms \
             FROM request_log WHERE at_ms = ?1 AND request_id = ?2 \
             AND lone_attempt_latency_ms IS NOT NULL",
        )
        .map_err(sql_error("reading attempts"))?;
    let rows = stmt
        .query_map(
            params![(request_id >> 20) as i64, request_id as i64],
            |row| {
                Ok(AttemptEntry {
                    at_ms: row.get(0).unwrap_or(0),
                    key_id: row
                        .get::<_, Option<String>>(1)
                        .ok()
                        .flatten()
                        .unwrap_or_default(),
                    key_mask: row
                        .get::<_, Option<String>>(2)
                        .ok()
                        .flatten()
                        .unwrap_or_default(),
                    model: row.get(3).ok().flatten(),
                    status: status_of(row.get(4).ok().flatten()),
                    class: None,
                    latency_ms: unsigned(row.get(5).ok().flatten()),
                })
            },
        )
        .map_err(sql_error("reading attempts"))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(sql_error("reading attempts"))
}

fn where_clause(clauses: &[String]) -> String {
    if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    }
}

fn page(limit: u32, offset: u64) -> (i64, i64) {
    let limit = if limit == 0 { 50 } else { limit.min(MAX_PAGE) };
    (i64::from(limit), i64::try_from(offset).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(contains_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
        assert_eq!(request_hex(-1), "ffffffffffffffff");
        assert_eq!(page(0, 3), (50, 3));
        assert_eq!(page(5_000, 0), (1_000, 0));
    }
}
