//! The reads (statistics, logs, key states, settings), admin writes and the retention task,
//! over the store's pool. Statistics come from the rollups and each answer reads one snapshot
//! (a repeatable-read transaction), as on SQLite.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use sqlx_core::any::{Any, AnyPool, AnyRow};
use sqlx_core::executor::Executor;
use sqlx_core::query::query;
use sqlx_core::row::Row;
use sqlx_core::transaction::Transaction;

use super::dialect::Engine;
use super::sql_error;
use crate::keys::KeySnapshot;
use crate::store::key_row::KeyRow;
use crate::store::logs::{
    AttemptEntry, ErrorEntry, ErrorPage, ErrorQuery, LogDeletion, RequestEntry, RequestPage,
    RequestQuery, MAX_PAGE,
};
use crate::store::rollup::{window_parts, Dim, SeriesPlan, WindowPart};
use crate::store::stats::{
    Counts, Filter, Granularity, RateLimitedKey, SeriesPoint, Summary, Tokens, UsageRow, Window,
};
use crate::store::stats_store::UsageBy;
use crate::store::time::{hour_of, minute_of, ms_of, HOUR_MS, MINUTE_MS};
use crate::store::{Retention, Setting, StoreError, TimeZone};
use crate::usage::RequestId;

type Tx = Transaction<'static, Any>;

/// An integer column (NULL, or a value out of range, as `None`).
fn int(row: &AnyRow, i: usize) -> Option<i64> {
    row.try_get::<Option<i64>, _>(i).ok().flatten()
}

/// A text column; MySQL's `TEXT` columns arrive as bytes.
fn text(row: &AnyRow, i: usize) -> Option<String> {
    match row.try_get::<Option<String>, _>(i) {
        Ok(v) => v,
        Err(_) => row
            .try_get::<Option<Vec<u8>>, _>(i)
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
    }
}

fn unsigned(v: Option<i64>) -> u64 {
    v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0)
}

fn status_of(v: Option<i64>) -> Option<u16> {
    v.and_then(|v| u16::try_from(v).ok())
}

/// 13 counters from column `first` on.
fn counts_of(row: &AnyRow, first: usize) -> Counts {
    Counts::from_columns(|i| unsigned(int(row, first + i)))
}

fn sums(engine: Engine) -> String {
    super::schema::COUNTER_COLUMNS
        .iter()
        .map(|c| engine.sum(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A read-only transaction that sees one snapshot.
async fn snapshot(pool: &AnyPool, engine: Engine) -> Result<Tx, StoreError> {
    let mut tx = pool.begin().await.map_err(sql_error("starting a read"))?;
    let set = match engine {
        Engine::Postgres => "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        // InnoDB's default is already REPEATABLE READ: the snapshot is taken at the first read.
        Engine::MySql => return Ok(tx),
    };
    (&mut *tx)
        .execute(set)
        .await
        .map_err(sql_error("starting a read"))?;
    Ok(tx)
}

/// Which rollup rows cover a window: `(table, bucket column, from, to)`.
async fn plan(tx: &mut Tx, engine: Engine, window: Window) -> Result<Vec<WindowPart>, StoreError> {
    let from = minute_of(window.from_ms);
    let to = window.to_ms;
    if to <= from {
        return Ok(Vec::new());
    }
    let oldest: Option<i64> =
        query(&engine.sql("SELECT MIN(minute_ms) FROM usage_minute WHERE dim = ''"))
            .fetch_one(&mut **tx)
            .await
            .map(|row| int(&row, 0))
            .map_err(sql_error("reading the rollup horizon"))?;
    Ok(window_parts(from, to, oldest))
}

/// Sums the rollups over `window` per value of `dim`.
async fn collect(
    tx: &mut Tx,
    engine: Engine,
    dim: Dim,
    window: Window,
) -> Result<HashMap<String, Counts>, StoreError> {
    let mut out: HashMap<String, Counts> = HashMap::new();
    for (table, column, from, to) in plan(tx, engine, window).await? {
        let sql = engine.sql(&format!(
            "SELECT value, {} FROM {table} WHERE dim = ? AND {column} >= ? AND {column} < ? \
             GROUP BY value",
            sums(engine)
        ));
        let rows = query(&sql)
            .bind(dim.as_str())
            .bind(from)
            .bind(to)
            .fetch_all(&mut **tx)
            .await
            .map_err(sql_error("reading usage"))?;
        for row in rows {
            let value = text(&row, 0).unwrap_or_default();
            out.entry(value).or_default().add(&counts_of(&row, 1));
        }
    }
    Ok(out)
}

pub(crate) async fn summary(
    pool: &AnyPool,
    engine: Engine,
    now: SystemTime,
    time_zone: &TimeZone,
) -> Result<Summary, StoreError> {
    let mut tx = snapshot(pool, engine).await?;
    let now_ms = ms_of(now);
    let month_start_ms = ms_of(time_zone.month_start(now));
    let windows = [now_ms - HOUR_MS, now_ms - 24 * HOUR_MS, month_start_ms].map(|from_ms| Window {
        from_ms,
        to_ms: now_ms + 1,
    });
    let mut figures = Vec::new();
    for window in windows {
        figures.push(
            collect(&mut tx, engine, Dim::All, window)
                .await?
                .remove("")
                .unwrap_or_default(),
        );
    }
    let last_minute = last_minute(&mut tx, engine, now_ms).await?;
    let _ = tx.commit().await;
    Ok(Summary {
        now_ms,
        last_minute,
        last_hour: figures[0],
        last_day: figures[1],
        this_month: figures[2],
        month_start_ms,
        time_zone: time_zone.name().to_owned(),
        writer: None,
    })
}

async fn last_minute(tx: &mut Tx, engine: Engine, now_ms: i64) -> Result<Counts, StoreError> {
    let from = now_ms - MINUTE_MS;
    let s = |e: &str| engine.sum(e);
    let sql = engine.sql(&format!(
        "SELECT COUNT(*), {}, {}, {}, {}, {}, {}, {}, {}, {}, 0, 0, 0, {} FROM request_log \
         WHERE at_ms > ? AND at_ms <= ?",
        s("CASE WHEN success <> 0 THEN 1 ELSE 0 END"),
        s("CASE WHEN success = 0 THEN 1 ELSE 0 END"),
        s("prompt_tokens"),
        s("candidates_tokens"),
        s("thoughts_tokens"),
        s("cached_tokens"),
        s("tool_use_prompt_tokens"),
        s("total_tokens"),
        s("latency_ms"),
        s("CASE WHEN lone_attempt_latency_ms IS NOT NULL THEN 1 ELSE 0 END"),
    ));
    let row = query(&sql)
        .bind(from)
        .bind(now_ms)
        .fetch_one(&mut **tx)
        .await
        .map_err(sql_error("counting the last minute"))?;
    let mut counts = counts_of(&row, 0);
    // Requests served by their first attempt keep it in their own row.
    let lone = unsigned(int(&row, 13));
    let sql = engine.sql(&format!(
        "SELECT COUNT(*), {}, {} FROM attempt_log WHERE at_ms > ? AND at_ms <= ?",
        s("CASE WHEN class IS NOT NULL THEN 1 ELSE 0 END"),
        s("CASE WHEN class = 'rate_limited' THEN 1 ELSE 0 END"),
    ));
    let row = query(&sql)
        .bind(from)
        .bind(now_ms)
        .fetch_one(&mut **tx)
        .await
        .map_err(sql_error("counting the last minute's attempts"))?;
    counts.attempts = unsigned(int(&row, 0)) + lone;
    counts.failed_attempts = unsigned(int(&row, 1));
    counts.rate_limited_attempts = unsigned(int(&row, 2));
    Ok(counts)
}

async fn masks(
    tx: &mut Tx,
    engine: Engine,
    kind: &str,
    ids: &[&str],
) -> Result<HashMap<String, String>, StoreError> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(500) {
        if chunk.is_empty() {
            continue;
        }
        let sql = engine.sql(&format!(
            "SELECT id, mask FROM fingerprint WHERE kind = ? AND id IN ({})",
            vec!["?"; chunk.len()].join(", ")
        ));
        let mut q = query(&sql).bind(kind.to_owned());
        for id in chunk {
            q = q.bind(id.to_string());
        }
        let rows = q
            .fetch_all(&mut **tx)
            .await
            .map_err(sql_error("reading fingerprints"))?;
        for row in rows {
            if let (Some(id), Some(mask)) = (text(&row, 0), text(&row, 1)) {
                out.insert(id, mask);
            }
        }
    }
    Ok(out)
}

pub(crate) async fn usage(
    pool: &AnyPool,
    engine: Engine,
    by: UsageBy,
    window: Window,
) -> Result<Vec<UsageRow>, StoreError> {
    let dim = match by {
        UsageBy::Key => Dim::Key,
        UsageBy::Model => Dim::Model,
        UsageBy::Client => Dim::Client,
    };
    let mut tx = snapshot(pool, engine).await?;
    let mut rows: Vec<UsageRow> = collect(&mut tx, engine, dim, window)
        .await?
        .into_iter()
        .map(|(id, counts)| UsageRow {
            id,
            mask: None,
            counts,
        })
        .collect();
    rows.sort_by(|a, b| b.counts.calls.cmp(&a.counts.calls).then(a.id.cmp(&b.id)));
    let kind = match dim {
        Dim::Key => "key",
        Dim::Client => "client",
        _ => return Ok(rows),
    };
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| !id.is_empty())
        .collect();
    let masks = masks(&mut tx, engine, kind, &ids).await?;
    for row in &mut rows {
        row.mask = masks.get(&row.id).cloned();
    }
    let _ = tx.commit().await;
    Ok(rows)
}

pub(crate) async fn key_mask(
    pool: &AnyPool,
    engine: Engine,
    key_id: &str,
) -> Result<Option<String>, StoreError> {
    let mut tx = snapshot(pool, engine).await?;
    let masks = masks(&mut tx, engine, "key", &[key_id]).await?;
    let _ = tx.commit().await;
    Ok(masks.get(key_id).cloned())
}

pub(crate) async fn top_rate_limited_keys(
    pool: &AnyPool,
    engine: Engine,
    window: Window,
    limit: u32,
) -> Result<Vec<RateLimitedKey>, StoreError> {
    let mut tx = snapshot(pool, engine).await?;
    let mut keys: Vec<RateLimitedKey> = collect(&mut tx, engine, Dim::Key, window)
        .await?
        .into_iter()
        .filter(|(id, c)| c.rate_limited_attempts > 0 && !id.is_empty())
        .map(|(key_id, c)| RateLimitedKey {
            key_id,
            mask: None,
            rate_limited: c.rate_limited_attempts,
            attempts: c.attempts,
        })
        .collect();
    keys.sort_by(|a, b| {
        b.rate_limited
            .cmp(&a.rate_limited)
            .then(a.key_id.cmp(&b.key_id))
    });
    keys.truncate(limit as usize);
    let ids: Vec<&str> = keys.iter().map(|k| k.key_id.as_str()).collect();
    let masks = masks(&mut tx, engine, "key", &ids).await?;
    for key in &mut keys {
        key.mask = masks.get(&key.key_id).cloned();
    }
    let _ = tx.commit().await;
    Ok(keys)
}

pub(crate) async fn series(
    pool: &AnyPool,
    engine: Engine,
    granularity: Granularity,
    now: SystemTime,
    filter: Option<&Filter>,
) -> Result<Vec<SeriesPoint>, StoreError> {
    let plan = SeriesPlan::new(granularity, now, filter);
    let (table, column) = (plan.table, plan.column);
    let sql = engine.sql(&format!(
        "SELECT {column}, {} FROM {table} WHERE dim = ? AND {column} >= ? AND {column} <= ? \
         AND value = ? GROUP BY {column}",
        sums(engine)
    ));
    let rows = query(&sql)
        .bind(plan.dim.as_str())
        .bind(plan.first)
        .bind(plan.last)
        .bind(plan.value.to_owned())
        .fetch_all(pool)
        .await
        .map_err(sql_error("reading a time series"))?;
    let mut found: HashMap<i64, Counts> = HashMap::new();
    for row in rows {
        if let Some(start) = int(&row, 0) {
            found.insert(start, counts_of(&row, 1));
        }
    }
    Ok(plan.points(found))
}

pub(crate) async fn models_of_key(
    pool: &AnyPool,
    engine: Engine,
    key_id: &str,
    window: Window,
) -> Result<Vec<UsageRow>, StoreError> {
    let from = hour_of(window.from_ms);
    if window.to_ms <= from {
        return Ok(Vec::new());
    }
    let prefix = format!("{key_id}/");
    // Values of this key sort between "{key_id}/" and "{key_id}0" ('0' follows '/').
    let end = format!("{key_id}0");
    let sql = engine.sql(&format!(
        "SELECT value, {} FROM usage_hour WHERE dim = 'key_model' AND hour_ms >= ? \
         AND hour_ms < ? AND value >= ? AND value < ? GROUP BY value",
        sums(engine)
    ));
    let rows = query(&sql)
        .bind(from)
        .bind(window.to_ms)
        .bind(prefix.clone())
        .bind(end)
        .fetch_all(pool)
        .await
        .map_err(sql_error("reading a key's models"))?;
    let mut out: Vec<UsageRow> = rows
        .iter()
        .filter_map(|row| {
            let value = text(row, 0)?;
            Some(UsageRow {
                id: value.strip_prefix(&prefix)?.to_owned(),
                mask: None,
                counts: counts_of(row, 1),
            })
        })
        .collect();
    out.sort_by(|a, b| b.counts.calls.cmp(&a.counts.calls).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// `%text%` for `LIKE … ESCAPE '!'`, the wildcards of `text` escaped (`!` is no escape
/// character in either engine's string literals).
fn contains_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '!') {
            out.push('!');
        }
        out.push(c);
    }
    out.push('%');
    out
}

fn page(limit: u32, offset: u64) -> (i64, i64) {
    let limit = if limit == 0 { 50 } else { limit.min(MAX_PAGE) };
    (i64::from(limit), i64::try_from(offset).unwrap_or(i64::MAX))
}

/// A filter value.
enum Arg {
    Int(i64),
    Text(String),
}

fn where_clause(clauses: &[&str]) -> String {
    if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    }
}

fn bind_all<'q>(
    mut q: sqlx_core::query::Query<'q, Any, sqlx_core::any::AnyArguments<'q>>,
    args: &[Arg],
) -> sqlx_core::query::Query<'q, Any, sqlx_core::any::AnyArguments<'q>> {
    for arg in args {
        q = match arg {
            Arg::Int(v) => q.bind(*v),
            Arg::Text(v) => q.bind(v.clone()),
        };
    }
    q
}

pub(crate) async fn errors(
    pool: &AnyPool,
    engine: Engine,
    query_: &ErrorQuery,
) -> Result<ErrorPage, StoreError> {
    let mut clauses = Vec::new();
    let mut args = Vec::new();
    if let Some(key) = &query_.key_id {
        clauses.push("key_id = ?");
        args.push(Arg::Text(key.clone()));
    }
    if let Some(model) = &query_.model {
        clauses.push("model = ?");
        args.push(Arg::Text(model.clone()));
    }
    if let Some(status) = query_.status {
        clauses.push("status = ?");
        args.push(Arg::Int(i64::from(status)));
    }
    if let Some(class) = &query_.class {
        clauses.push("class = ?");
        args.push(Arg::Text(class.clone()));
    }
    if let Some(from) = query_.from_ms {
        clauses.push("at_ms >= ?");
        args.push(Arg::Int(from));
    }
    if let Some(to) = query_.to_ms {
        clauses.push("at_ms < ?");
        args.push(Arg::Int(to));
    }
    if let Some(text) = query_.search.as_deref().filter(|t| !t.is_empty()) {
        // Case-insensitive, as on SQLite.
        clauses.push("LOWER(message) LIKE ? ESCAPE '!'");
        args.push(Arg::Text(contains_pattern(&text.to_lowercase())));
    }
    let filters = where_clause(&clauses);
    let mut tx = snapshot(pool, engine).await?;
    let count_sql = engine.sql(&format!("SELECT COUNT(*) FROM error_log {filters}"));
    let total = bind_all(query(&count_sql), &args)
        .fetch_one(&mut *tx)
        .await
        .map(|row| unsigned(int(&row, 0)))
        .map_err(sql_error("counting error log rows"))?;
    let (limit, offset) = page(query_.limit, query_.offset);
    args.push(Arg::Int(limit));
    args.push(Arg::Int(offset));
    let sql = engine.sql(&format!(
        "SELECT id, at_ms, request_id, key_id, key_mask, model, status, class, message \
         FROM error_log {filters} ORDER BY at_ms DESC, id DESC LIMIT ? OFFSET ?"
    ));
    let rows = bind_all(query(&sql), &args)
        .fetch_all(&mut *tx)
        .await
        .map_err(sql_error("reading the error log"))?;
    let _ = tx.commit().await;
    Ok(ErrorPage {
        total,
        entries: rows.iter().map(error_of).collect(),
    })
}

fn error_of(row: &AnyRow) -> ErrorEntry {
    ErrorEntry {
        id: int(row, 0).unwrap_or(0),
        at_ms: int(row, 1).unwrap_or(0),
        request_id: RequestId::from(int(row, 2).unwrap_or(0) as u64),
        key_id: text(row, 3).unwrap_or_default(),
        key_mask: text(row, 4).unwrap_or_default(),
        model: text(row, 5),
        status: status_of(int(row, 6)),
        class: text(row, 7).unwrap_or_default(),
        message: text(row, 8),
        request_body: None,
    }
}

pub(crate) async fn error(
    pool: &AnyPool,
    engine: Engine,
    id: i64,
) -> Result<Option<ErrorEntry>, StoreError> {
    let sql = engine.sql(
        "SELECT id, at_ms, request_id, key_id, key_mask, model, status, class, message, \
         request_body FROM error_log WHERE id = ?",
    );
    let row = query(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(sql_error("reading an error log row"))?;
    Ok(row.map(|row| {
        let mut entry = error_of(&row);
        entry.request_body = text(&row, 9);
        entry
    }))
}

pub(crate) async fn requests(
    pool: &AnyPool,
    engine: Engine,
    query_: &RequestQuery,
) -> Result<RequestPage, StoreError> {
    let mut clauses = Vec::new();
    let mut args = Vec::new();
    if let Some(key) = &query_.key_id {
        clauses.push("key_id = ?");
        args.push(Arg::Text(key.clone()));
    }
    if let Some(model) = &query_.model {
        clauses.push("model = ?");
        args.push(Arg::Text(model.clone()));
    }
    if let Some(client) = &query_.client_id {
        clauses.push("client_id = ?");
        args.push(Arg::Text(client.clone()));
    }
    if let Some(success) = query_.success {
        clauses.push("success = ?");
        args.push(Arg::Int(i64::from(success)));
    }
    if let Some(status) = query_.status {
        clauses.push("status = ?");
        args.push(Arg::Int(i64::from(status)));
    }
    if let Some(from) = query_.from_ms {
        clauses.push("at_ms >= ?");
        args.push(Arg::Int(from));
    }
    if let Some(to) = query_.to_ms {
        clauses.push("at_ms < ?");
        args.push(Arg::Int(to));
    }
    let filters = where_clause(&clauses);
    let (limit, offset) = page(query_.limit, query_.offset);
    args.push(Arg::Int(limit + 1));
    args.push(Arg::Int(offset));
    let sql = engine.sql(&format!(
        "SELECT id, request_id, at_ms, protocol, route, model, key_id, key_mask, client_id, \
         client_mask, status, success, attempts, latency_ms, ttfb_ms, streamed, completion, \
         prompt_tokens, candidates_tokens, thoughts_tokens, cached_tokens, \
         tool_use_prompt_tokens, total_tokens FROM request_log {filters} \
         ORDER BY at_ms DESC, id DESC LIMIT ? OFFSET ?"
    ));
    let rows = bind_all(query(&sql), &args)
        .fetch_all(pool)
        .await
        .map_err(sql_error("reading the request log"))?;
    let mut entries: Vec<RequestEntry> = rows.iter().map(request_of).collect();
    let has_more = entries.len() as i64 > limit;
    entries.truncate(limit as usize);
    Ok(RequestPage { entries, has_more })
}

fn request_of(row: &AnyRow) -> RequestEntry {
    let i = |n: usize| int(row, n);
    RequestEntry {
        id: i(0).unwrap_or(0),
        request_id: RequestId::from(i(1).unwrap_or(0) as u64),
        at_ms: i(2).unwrap_or(0),
        protocol: text(row, 3).unwrap_or_default(),
        route: text(row, 4).unwrap_or_default(),
        model: text(row, 5),
        key_id: text(row, 6),
        key_mask: text(row, 7),
        client_id: text(row, 8),
        client_mask: text(row, 9),
        status: status_of(i(10)).unwrap_or(0),
        success: i(11).unwrap_or(0) != 0,
        attempts: u32::try_from(unsigned(i(12))).unwrap_or(u32::MAX),
        latency_ms: unsigned(i(13)),
        ttfb_ms: i(14).map(|v| unsigned(Some(v))),
        streamed: i(15).unwrap_or(0) != 0,
        completion: text(row, 16).unwrap_or_default(),
        tokens: Tokens {
            prompt: unsigned(i(17)),
            candidates: unsigned(i(18)),
            thoughts: unsigned(i(19)),
            cached: unsigned(i(20)),
            tool_use_prompt: unsigned(i(21)),
            total: unsigned(i(22)),
        },
    }
}

pub(crate) async fn attempts(
    pool: &AnyPool,
    engine: Engine,
    request: RequestId,
) -> Result<Vec<AttemptEntry>, StoreError> {
    let sql = engine.sql(
        "SELECT at_ms, key_id, key_mask, model, status, class, latency_ms FROM attempt_log \
         WHERE request_id = ? ORDER BY at_ms, id",
    );
    let rows = query(&sql)
        .bind(request.get() as i64)
        .fetch_all(pool)
        .await
        .map_err(sql_error("reading attempts"))?;
    if !rows.is_empty() {
        return Ok(rows
            .iter()
            .map(|row| AttemptEntry {
                at_ms: int(row, 0).unwrap_or(0),
                key_id: text(row, 1).unwrap_or_default(),
                key_mask: text(row, 2).unwrap_or_default(),
                model: text(row, 3),
                status: status_of(int(row, 4)),
                class: text(row, 5),
                latency_ms: unsigned(int(row, 6)),
            })
            .collect());
    }
    // A request served by its first attempt keeps it in its own row; the id's upper bits are
    // its arrival millisecond, which the `at_ms` index finds.
    let sql = engine.sql(
        "SELECT at_ms, key_id, key_mask, model, status, lone_attempt_latency_ms \
         FROM request_log WHERE at_ms = ? AND request_id = ? \
         AND lone_attempt_latency_ms IS NOT NULL",
    );
    let rows = query(&sql)
        .bind(i64::try_from(request.millis()).unwrap_or(i64::MAX))
        .bind(request.get() as i64)
        .fetch_all(pool)
        .await
        .map_err(sql_error("reading attempts"))?;
    Ok(rows
        .iter()
        .map(|row| AttemptEntry {
            at_ms: int(row, 0).unwrap_or(0),
            key_id: text(row, 1).unwrap_or_default(),
            key_mask: text(row, 2).unwrap_or_default(),
            model: text(row, 3),
            status: status_of(int(row, 4)),
            class: None,
            latency_ms: unsigned(int(row, 5)),
        })
        .collect())
}

/// Runs `sqls` (each with one `?`, the id) for each id in one transaction; counts the last
/// statement's rows.
async fn delete_by_ids(
    pool: &AnyPool,
    engine: Engine,
    ids: &[i64],
    sqls: &[&str],
) -> Result<u64, StoreError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(sql_error("starting a deletion"))?;
    let mut deleted = 0;
    for (index, sql) in sqls.iter().enumerate() {
        let sql = engine.sql(sql);
        for id in ids {
            let done = query(&sql)
                .bind(*id)
                .execute(&mut *tx)
                .await
                .map_err(sql_error("deleting rows"))?;
            if index + 1 == sqls.len() {
                deleted += done.rows_affected();
            }
        }
    }
    tx.commit()
        .await
        .map_err(sql_error("committing a deletion"))?;
    Ok(deleted)
}

/// Deletes rows of `table` older than `cutoff_ms`, a few thousand per statement.
async fn delete_before(
    pool: &AnyPool,
    engine: Engine,
    table: &str,
    column: &str,
    cutoff_ms: i64,
    step: u32,
) -> Result<u64, StoreError> {
    let sql = engine.sql(&engine.delete_before(table, column));
    let mut total = 0;
    loop {
        let done = query(&sql)
            .bind(cutoff_ms)
            .bind(i64::from(step.max(1)))
            .execute(pool)
            .await
            .map_err(sql_error(format!("deleting old rows of {table}")))?;
        total += done.rows_affected();
        if done.rows_affected() < u64::from(step.max(1)) {
            return Ok(total);
        }
        tokio::task::yield_now().await;
    }
}

pub(crate) async fn delete_errors(
    pool: &AnyPool,
    engine: Engine,
    which: LogDeletion,
) -> Result<u64, StoreError> {
    match which {
        LogDeletion::Ids(ids) => {
            delete_by_ids(pool, engine, &ids, &["DELETE FROM error_log WHERE id = ?"]).await
        }
        LogDeletion::Before(cutoff) => {
            delete_before(pool, engine, "error_log", "at_ms", ms_of(cutoff), 2_000).await
        }
    }
}

pub(crate) async fn delete_requests(
    pool: &AnyPool,
    engine: Engine,
    which: LogDeletion,
) -> Result<u64, StoreError> {
    match which {
        LogDeletion::Ids(ids) => {
            delete_by_ids(
                pool,
                engine,
                &ids,
                &[
                    "DELETE FROM attempt_log WHERE request_id = \
                     (SELECT request_id FROM request_log WHERE id = ?)",
                    "DELETE FROM request_log WHERE id = ?",
                ],
            )
            .await
        }
        LogDeletion::Before(cutoff) => {
            let cutoff = ms_of(cutoff);
            let requests =
                delete_before(pool, engine, "request_log", "at_ms", cutoff, 2_000).await?;
            let attempts =
                delete_before(pool, engine, "attempt_log", "at_ms", cutoff, 2_000).await?;
            Ok(requests + attempts)
        }
    }
}

pub(crate) async fn key_states(
    pool: &AnyPool,
    engine: Engine,
) -> Result<Vec<KeySnapshot>, StoreError> {
    let sql = engine.sql(
        "SELECT key_id, key_mask, status, disabled_kind, disabled_status, disabled_detail, \
         disabled_count, consecutive_failures, cooldowns, requests, successes, failures, \
         weight, last_used_ms, last_error_class, last_error_status, last_error_detail, \
         last_error_ms FROM key_state ORDER BY key_id",
    );
    let rows = query(&sql)
        .fetch_all(pool)
        .await
        .map_err(sql_error("reading key states"))?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            KeyRow {
                key_id: text(row, 0).unwrap_or_default(),
                key_mask: text(row, 1).unwrap_or_default(),
                status: text(row, 2).unwrap_or_default(),
                disabled_kind: text(row, 3),
                disabled_status: int(row, 4),
                disabled_detail: text(row, 5),
                disabled_count: int(row, 6),
                consecutive_failures: int(row, 7).unwrap_or(0),
                cooldowns: text(row, 8).unwrap_or_default(),
                requests: int(row, 9).unwrap_or(0),
                successes: int(row, 10).unwrap_or(0),
                failures: int(row, 11).unwrap_or(0),
                weight: int(row, 12).unwrap_or(0),
                last_used_ms: int(row, 13),
                last_error_class: text(row, 14),
                last_error_status: int(row, 15),
                last_error_detail: text(row, 16),
                last_error_ms: int(row, 17),
            }
            .into_snapshot()
        })
        .collect())
}

pub(crate) async fn settings(pool: &AnyPool, engine: Engine) -> Result<Vec<Setting>, StoreError> {
    let sql = engine.sql("SELECT name, value, updated_ms FROM settings ORDER BY name");
    let rows = query(&sql)
        .fetch_all(pool)
        .await
        .map_err(sql_error("reading settings"))?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            Some(Setting {
                name: text(row, 0)?,
                value: text(row, 1)?,
                updated_ms: int(row, 2).unwrap_or(0),
            })
        })
        .collect())
}

pub(crate) async fn set_setting(
    pool: &AnyPool,
    engine: Engine,
    name: &str,
    value: &str,
) -> Result<(), StoreError> {
    let sql = engine.sql(&format!(
        "{} (name, value, updated_ms) VALUES (?, ?, ?){}",
        engine.insert_into("settings"),
        engine.on_conflict(&["name"], &[], &["value", "updated_ms"])
    ));
    query(&sql)
        .bind(name.to_owned())
        .bind(value.to_owned())
        .bind(ms_of(SystemTime::now()))
        .execute(pool)
        .await
        .map_err(sql_error(format!("saving setting {name}")))?;
    Ok(())
}

pub(crate) async fn delete_setting(
    pool: &AnyPool,
    engine: Engine,
    name: &str,
) -> Result<bool, StoreError> {
    let sql = engine.sql("DELETE FROM settings WHERE name = ?");
    let done = query(&sql)
        .bind(name.to_owned())
        .execute(pool)
        .await
        .map_err(sql_error(format!("deleting setting {name}")))?;
    Ok(done.rows_affected() > 0)
}

/// How long a writer's mark outlives its last batch.
const WRITER_MARKS: Duration = Duration::from_secs(7 * 24 * 3600);

/// Deletes old logs and rollups at startup and then every `retention.interval` (the logs at
/// local midnight with `logs_at_midnight`). Errors are logged and retried next time.
pub(crate) async fn retention_task(
    pool: AnyPool,
    engine: Engine,
    mut changes: tokio::sync::watch::Receiver<Retention>,
    time_zone: TimeZone,
) {
    let mut retention = changes.borrow_and_update().clone();
    let mut next_logs = std::time::Instant::now();
    loop {
        let now = std::time::Instant::now();
        let now_ms = ms_of(SystemTime::now());
        let cutoff =
            |d: Duration| now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let step = retention.batch_rows.max(1);
        let mut jobs: Vec<(&str, &str, i64)> = vec![
            ("usage_minute", "minute_ms", cutoff(retention.usage_minutes)),
            ("usage_hour", "hour_ms", cutoff(retention.usage_hours)),
            // The marks of writers (processes) gone for a week: no batch of theirs is retried.
            ("writer_mark", "updated_ms", cutoff(WRITER_MARKS)),
        ];
        if now >= next_logs {
            if let Some(d) = retention.error_logs {
                jobs.push(("error_log", "at_ms", cutoff(d)));
            }
            if let Some(d) = retention.request_logs {
                jobs.push(("request_log", "at_ms", cutoff(d)));
                jobs.push(("attempt_log", "at_ms", cutoff(d)));
            }
            next_logs = if retention.logs_at_midnight {
                let wall = SystemTime::now();
                now + time_zone
                    .next_midnight(wall)
                    .duration_since(wall)
                    .unwrap_or(Duration::from_secs(3600))
                    .max(Duration::from_secs(1))
            } else {
                now + retention.interval.max(Duration::from_secs(1))
            };
        }
        for (table, column, cutoff) in jobs {
            if let Err(e) = delete_before(&pool, engine, table, column, cutoff, step).await {
                tracing::warn!(error = %e, table, "retention failed; retrying at the next run");
            }
        }
        let next = (now + retention.interval.max(Duration::from_secs(1))).min(next_logs);
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                retention = changes.borrow_and_update().clone();
                next_logs = std::time::Instant::now();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(contains_pattern("50%_off!"), "%50!%!_off!!%");
        assert_eq!(page(0, 3), (50, 3));
        assert_eq!(page(5_000, 0), (1_000, 0));
    }
}
