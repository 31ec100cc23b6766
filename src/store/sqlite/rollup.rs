//! Writes the usage rollups (accumulated by `store::rollup`) into SQLite.

use rusqlite::{params, Transaction};

pub(crate) use crate::store::rollup::*;

/// UPSERTs the batch's counters into `usage_minute` and `usage_hour`.
pub(crate) fn write(rollup: Rollup<'_>, tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let (minutes, hours) = rollup.into_rows();
    upsert(tx, UPSERT_MINUTE, &minutes)?;
    upsert(tx, UPSERT_HOUR, &hours)
}

const UPSERT_MINUTE: &str = "INSERT INTO usage_minute (dim, minute_ms, value, calls, successes, \
    failures, prompt_tokens, candidates_tokens, thoughts_tokens, cached_tokens, \
    tool_use_prompt_tokens, total_tokens, latency_ms, attempts, failed_attempts, \
    rate_limited_attempts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, \
    ?15, ?16) ON CONFLICT (dim, minute_ms, value) DO UPDATE SET calls = calls + excluded.calls, \
    successes = successes + excluded.successes, failures = failures + excluded.failures, \
    prompt_tokens = prompt_tokens + excluded.prompt_tokens, \
    candidates_tokens = candidates_tokens + excluded.candidates_tokens, \
    thoughts_tokens = thoughts_tokens + excluded.thoughts_tokens, \
    cached_tokens = cached_tokens + excluded.cached_tokens, \
    tool_use_prompt_tokens = tool_use_prompt_tokens + excluded.tool_use_prompt_tokens, \
    total_tokens = total_tokens + excluded.total_tokens, \
    latency_ms = latency_ms + excluded.latency_ms, attempts = attempts + excluded.attempts, \
    failed_attempts = failed_attempts + excluded.failed_attempts, \
    rate_limited_attempts = rate_limited_attempts + excluded.rate_limited_attempts";

const UPSERT_HOUR: &str = "INSERT INTO usage_hour (dim, hour_ms, value, calls, successes, \
    failures, prompt_tokens, candidates_tokens, thoughts_tokens, cached_tokens, \
    tool_use_prompt_tokens, total_tokens, latency_ms, attempts, failed_attempts, \
    rate_limited_attempts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, \
    ?15, ?16) ON CONFLICT (dim, hour_ms, value) DO UPDATE SET calls = calls + excluded.calls, \
    successes = successes + excluded.successes, failures = failures + excluded.failures, \
    prompt_tokens = prompt_tokens + excluded.prompt_tokens, \
    candidates_tokens = candidates_tokens + excluded.candidates_tokens, \
    thoughts_tokens = thoughts_tokens + excluded.thoughts_tokens, \
    cached_tokens = cached_tokens + excluded.cached_tokens, \
    tool_use_prompt_tokens = tool_use_prompt_tokens + excluded.tool_use_prompt_tokens, \
    total_tokens = total_tokens + excluded.total_tokens, \
    latency_ms = latency_ms + excluded.latency_ms, attempts = attempts + excluded.attempts, \
    failed_attempts = failed_attempts + excluded.failed_attempts, \
    rate_limited_attempts = rate_limited_attempts + excluded.rate_limited_attempts";

fn upsert(tx: &Transaction<'_>, sql: &str, rows: &RollupRows<'_>) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(sql)?;
    for ((bucket, dim, value), c) in rows {
        stmt.execute(params![
            dim.as_str(),
            bucket,
            value.render(),
            c.calls,
            c.successes,
            c.failures,
            c.prompt,
            c.candidates,
            c.thoughts,
            c.cached,
            c.tool_use_prompt,
            c.total,
            c.latency_ms,
            c.attempts,
            c.failed_attempts,
            c.rate_limited_attempts,
        ])?;
    }
    Ok(())
}
