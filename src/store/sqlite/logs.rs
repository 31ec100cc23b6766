//! The error log and the request log on SQLite: the queries behind
//! [`StatsStore`](crate::store::StatsStore)'s log methods, as functions over a
//! `rusqlite::Connection` (as in `stats`). They block. Crate-private, as `stats`.

use super::snapshot::snapshot;
use super::sql_error;
pub use crate::store::logs::{
    AttemptEntry, ErrorEntry, ErrorPage, ErrorQuery, RequestEntry, RequestPage, RequestQuery,
    MAX_PAGE,
};
use crate::store::StoreError;
use crate::usage::RequestId;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

/// The 16-hex-digit form of a stored request id.
fn request_hex(stored: i64) -> RequestId {
    RequestId::from(stored as u64)
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
pub(crate) fn errors(conn: &Connection, query: &ErrorQuery) -> Result<ErrorPage, StoreError> {
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
pub(crate) fn error(conn: &Connection, id: i64) -> Result<Option<ErrorEntry>, StoreError> {
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
pub(crate) fn requests(conn: &Connection, query: &RequestQuery) -> Result<RequestPage, StoreError> {
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
        tokens: crate::store::stats::Tokens {
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
pub(crate) fn attempts(
    conn: &Connection,
    request_id: RequestId,
) -> Result<Vec<AttemptEntry>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT at_ms, key_id, key_mask, model, status, class, latency_ms FROM attempt_log \
             WHERE request_id = ?1 ORDER BY at_ms, id",
        )
        .map_err(sql_error("reading attempts"))?;
    let rows = stmt
        .query_map(params![request_id.get() as i64], |row| {
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
            params![request_id.millis() as i64, request_id.get() as i64],
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
        assert_eq!(request_hex(-1).to_string(), "ffffffffffffffff");
        assert_eq!(page(0, 3), (50, 3));
        assert_eq!(page(5_000, 0), (1_000, 0));
    }
}
