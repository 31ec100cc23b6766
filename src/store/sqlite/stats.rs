//! Usage statistics on SQLite: the queries behind [`StatsStore`](crate::store::StatsStore)'s
//! figures (and `SqliteStore`'s blocking shortcuts), as functions over a `rusqlite::Connection`
//! to a store's database. They block. Crate-private: users reach them through the trait, and run
//! queries of their own with `SqliteStore::read`.
//!
//! Most answers come from the usage rollups (per-minute and per-hour counters the writer
//! maintains), so they cost the same over a million requests as over a hundred; the last-minute
//! figure comes from the raw log. Each answer reads one snapshot of the database (one read
//! transaction), so its parts agree while the writer commits.
//!
//! Windows are rounded out to whole minutes. A window starting before the oldest per-minute
//! row still kept (3 days by default) counts its first hour whole.

use std::collections::HashMap;
use std::time::SystemTime;

use super::rollup::{window_parts, Dim, SeriesPlan, WindowPart};
use super::snapshot::snapshot;
use super::sql_error;
use super::time::{hour_of, minute_of, ms_of, HOUR_MS, MINUTE_MS};
pub use crate::store::stats::{
    Counts, Filter, Granularity, RateLimitedKey, SeriesPoint, Summary, UsageRow, Window,
};
use crate::store::{StoreError, TimeZone};
use rusqlite::{params, Connection, OptionalExtension};

/// Reads 13 counter columns starting at `first` (negative or NULL values read as 0).
fn counts_of(row: &rusqlite::Row<'_>, first: usize) -> Counts {
    let n = |i: usize| -> u64 {
        row.get::<_, Option<i64>>(first + i)
            .ok()
            .flatten()
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0)
    };
    Counts::from_columns(n)
}

/// The sums of the 13 rollup counters, in `Counts::from_columns` order.
const SUMS: &str = "sum(calls), sum(successes), sum(failures), sum(prompt_tokens), \
    sum(candidates_tokens), sum(thoughts_tokens), sum(cached_tokens), \
    sum(tool_use_prompt_tokens), sum(total_tokens), sum(latency_ms), sum(attempts), \
    sum(failed_attempts), sum(rate_limited_attempts)";

/// The header figures at `now`; the calendar month is the one holding `now` in `time_zone`.
/// All windows end at `now` and come from one snapshot, so a request in the last hour is also
/// in the last day and the month.
pub(crate) fn summary(
    conn: &Connection,
    now: SystemTime,
    time_zone: &TimeZone,
) -> Result<Summary, StoreError> {
    snapshot(conn, |conn| summary_of(conn, now, time_zone))
}

fn summary_of(
    conn: &Connection,
    now: SystemTime,
    time_zone: &TimeZone,
) -> Result<Summary, StoreError> {
    let now_ms = ms_of(now);
    let month_start_ms = ms_of(time_zone.month_start(now));
    let total = |from_ms: i64| -> Result<Counts, StoreError> {
        Ok(collect(
            conn,
            Dim::All,
            Window {
                from_ms,
                to_ms: now_ms + 1,
            },
        )?
        .remove("")
        .unwrap_or_default())
    };
    Ok(Summary {
        now_ms,
        last_minute: last_minute(conn, now_ms)?,
        last_hour: total(now_ms - HOUR_MS)?,
        last_day: total(now_ms - 24 * HOUR_MS)?,
        this_month: total(month_start_ms)?,
        month_start_ms,
        time_zone: time_zone.name().to_owned(),
        writer: None,
    })
}

/// The last 60 seconds from the raw request and attempt logs.
fn last_minute(conn: &Connection, now_ms: i64) -> Result<Counts, StoreError> {
    let from = now_ms - MINUTE_MS;
    let counts = conn
        .prepare_cached(
            "SELECT count(*), sum(success != 0), sum(success = 0), sum(prompt_tokens), \
             sum(candidates_tokens), sum(thoughts_tokens), sum(cached_tokens), \
             sum(tool_use_prompt_tokens), sum(total_tokens), sum(latency_ms), 0, 0, 0, \
             sum(lone_attempt_latency_ms IS NOT NULL) \
             FROM request_log WHERE at_ms > ?1 AND at_ms <= ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![from, now_ms], |row| {
                Ok((
                    counts_of(row, 0),
                    row.get::<_, Option<i64>>(13)?.unwrap_or(0),
                ))
            })
        })
        .map_err(sql_error("counting the last minute"))?;
    // Requests served by their first attempt keep it in their own row (schema version 3).
    let (mut counts, lone_attempts) = counts;
    let (attempts, failed, limited) = conn
        .prepare_cached(
            "SELECT count(*), sum(class IS NOT NULL), sum(class = 'rate_limited') FROM attempt_log \
             WHERE at_ms > ?1 AND at_ms <= ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![from, now_ms], |row| {
                Ok((
                    row.get::<_, Option<i64>>(0)?.unwrap_or(0),
                    row.get::<_, Option<i64>>(1)?.unwrap_or(0),
                    row.get::<_, Option<i64>>(2)?.unwrap_or(0),
                ))
            })
        })
        .map_err(sql_error("counting the last minute's attempts"))?;
    counts.attempts = u64::try_from(attempts + lone_attempts).unwrap_or(0);
    counts.failed_attempts = u64::try_from(failed).unwrap_or(0);
    counts.rate_limited_attempts = u64::try_from(limited).unwrap_or(0);
    Ok(counts)
}

/// Usage per key over `window`, most calls first.
pub(crate) fn by_key(conn: &Connection, window: Window) -> Result<Vec<UsageRow>, StoreError> {
    rows(conn, Dim::Key, window)
}

/// Usage per model over `window`, most calls first.
pub(crate) fn by_model(conn: &Connection, window: Window) -> Result<Vec<UsageRow>, StoreError> {
    rows(conn, Dim::Model, window)
}

/// Usage per client token over `window`, most calls first.
pub(crate) fn by_client(conn: &Connection, window: Window) -> Result<Vec<UsageRow>, StoreError> {
    rows(conn, Dim::Client, window)
}

fn rows(conn: &Connection, dim: Dim, window: Window) -> Result<Vec<UsageRow>, StoreError> {
    snapshot(conn, |conn| rows_of(conn, dim, window))
}

fn rows_of(conn: &Connection, dim: Dim, window: Window) -> Result<Vec<UsageRow>, StoreError> {
    let mut rows: Vec<UsageRow> = collect(conn, dim, window)?
        .into_iter()
        .map(|(id, counts)| UsageRow {
            mask: None,
            id,
            counts,
        })
        .collect();
    rows.sort_by(|a, b| b.counts.calls.cmp(&a.counts.calls).then(a.id.cmp(&b.id)));
    let kind = match dim {
        Dim::Key => "key",
        Dim::Client => "client",
        _ => return Ok(rows),
    };
    for row in &mut rows {
        row.mask = mask(conn, kind, &row.id)?;
    }
    Ok(rows)
}

/// The fingerprint of a key or client id.
fn mask(conn: &Connection, kind: &str, id: &str) -> Result<Option<String>, StoreError> {
    if id.is_empty() {
        return Ok(None);
    }
    conn.prepare_cached("SELECT mask FROM fingerprint WHERE kind = ?1 AND id = ?2")
        .and_then(|mut s| s.query_row(params![kind, id], |r| r.get(0)).optional())
        .map_err(sql_error("reading a fingerprint"))
}

/// The mask (`AIza…x4Fq`) of a key id the database has seen, also after the key left the pool.
pub(crate) fn key_mask(conn: &Connection, key_id: &str) -> Result<Option<String>, StoreError> {
    mask(conn, "key", key_id)
}

/// The keys with the most rate-limited attempts over `window` (keys with none are left out).
pub(crate) fn top_rate_limited_keys(
    conn: &Connection,
    window: Window,
    limit: u32,
) -> Result<Vec<RateLimitedKey>, StoreError> {
    snapshot(conn, |conn| rate_limited_keys(conn, window, limit))
}

fn rate_limited_keys(
    conn: &Connection,
    window: Window,
    limit: u32,
) -> Result<Vec<RateLimitedKey>, StoreError> {
    let mut keys: Vec<RateLimitedKey> = collect(conn, Dim::Key, window)?
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
    for key in &mut keys {
        key.mask = mask(conn, "key", &key.key_id)?;
    }
    Ok(keys)
}

/// A time series ending with the bucket that holds `now`: 60 minutes or 24 hours, oldest
/// first, empty buckets included. `filter` restricts it to one key, model or client.
pub(crate) fn series(
    conn: &Connection,
    granularity: Granularity,
    now: SystemTime,
    filter: Option<&Filter>,
) -> Result<Vec<SeriesPoint>, StoreError> {
    let plan = SeriesPlan::new(granularity, now, filter);
    let (table, column) = (plan.table, plan.column);
    let sql = format!(
        "SELECT {column}, {SUMS} FROM {table} WHERE dim = ?1 AND {column} >= ?2 \
         AND {column} <= ?3 AND value = ?4 GROUP BY {column}"
    );
    let mut found: HashMap<i64, Counts> = HashMap::new();
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(sql_error("reading a time series"))?;
    let rows = stmt
        .query_map(
            params![plan.dim.as_str(), plan.first, plan.last, plan.value],
            |row| Ok((row.get::<_, i64>(0)?, counts_of(row, 1))),
        )
        .map_err(sql_error("reading a time series"))?;
    for row in rows {
        let (start, counts) = row.map_err(sql_error("reading a time series"))?;
        found.insert(start, counts);
    }
    Ok(plan.points(found))
}

/// Usage of one key per model over `window`, most calls first (answers the Python server's
/// "key usage details"). From the per-hour rollup: the window is rounded out to whole hours.
pub(crate) fn models_of_key(
    conn: &Connection,
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
    let sql = format!(
        "SELECT substr(value, ?4), {SUMS} FROM usage_hour WHERE dim = 'key_model' \
         AND hour_ms >= ?1 AND hour_ms < ?2 AND value >= ?3 AND value < ?5 GROUP BY value"
    );
    let mut stmt = conn
        .prepare_cached(&sql)
        .map_err(sql_error("reading a key's models"))?;
    let rows = stmt
        .query_map(
            params![from, window.to_ms, prefix, prefix.len() as i64 + 1, end],
            |row| {
                Ok(UsageRow {
                    id: row.get(0)?,
                    mask: None,
                    counts: counts_of(row, 1),
                })
            },
        )
        .map_err(sql_error("reading a key's models"))?;
    let mut out = Vec::new();
    for row in rows {
        match row {
            Ok(row) => out.push(row),
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable usage row"),
        }
    }
    out.sort_by(|a, b| b.counts.calls.cmp(&a.counts.calls).then(a.id.cmp(&b.id)));
    Ok(out)
}

/// Which rollup rows cover a window: `(table, bucket column, from, to)` parts.
fn plan(conn: &Connection, window: Window) -> Result<Vec<WindowPart>, StoreError> {
    let from = minute_of(window.from_ms);
    let to = window.to_ms;
    if to <= from {
        return Ok(Vec::new());
    }
    let oldest_minute: Option<i64> = conn
        .prepare_cached("SELECT min(minute_ms) FROM usage_minute WHERE dim = ''")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(sql_error("reading the rollup horizon"))?;
    Ok(window_parts(from, to, oldest_minute))
}

/// Sums the rollups over `window` per value of `dim`.
fn collect(
    conn: &Connection,
    dim: Dim,
    window: Window,
) -> Result<HashMap<String, Counts>, StoreError> {
    let mut out: HashMap<String, Counts> = HashMap::new();
    for (table, column, from, to) in plan(conn, window)? {
        let sql = format!(
            "SELECT value, {SUMS} FROM {table} WHERE dim = ?1 AND {column} >= ?2 \
             AND {column} < ?3 GROUP BY value"
        );
        let mut stmt = conn
            .prepare_cached(&sql)
            .map_err(sql_error("reading usage"))?;
        let rows = stmt
            .query_map(params![dim.as_str(), from, to], |row| {
                Ok((row.get::<_, String>(0)?, counts_of(row, 1)))
            })
            .map_err(sql_error("reading usage"))?;
        for row in rows {
            match row {
                Ok((value, counts)) => out.entry(value).or_default().add(&counts),
                Err(e) => tracing::warn!(error = %e, table, "skipping an unreadable usage row"),
            }
        }
    }
    Ok(out)
}
