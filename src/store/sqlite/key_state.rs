//! `key_state` rows: a [`KeySnapshot`] written by the writer and read back at startup.
//!
//! The row mapping is shared with the other SQL stores (`store::key_row`).

use rusqlite::{params, Connection, Row, Transaction};

use super::sql_error;
use crate::keys::{KeyId, KeySnapshot};
use crate::store::key_row::KeyRow;
use crate::store::StoreError;

const UPSERT: &str = "INSERT INTO key_state (key_id, key_mask, status, disabled_kind, \
    disabled_status, disabled_detail, disabled_count, consecutive_failures, cooldowns, requests, \
    successes, failures, weight, last_used_ms, last_error_class, last_error_status, \
    last_error_detail, last_error_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
    ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19) ON CONFLICT (key_id) DO UPDATE SET \
    key_mask = excluded.key_mask, status = excluded.status, \
    disabled_kind = excluded.disabled_kind, disabled_status = excluded.disabled_status, \
    disabled_detail = excluded.disabled_detail, disabled_count = excluded.disabled_count, \
    consecutive_failures = excluded.consecutive_failures, cooldowns = excluded.cooldowns, \
    requests = excluded.requests, successes = excluded.successes, failures = excluded.failures, \
    weight = excluded.weight, last_used_ms = excluded.last_used_ms, \
    last_error_class = excluded.last_error_class, last_error_status = excluded.last_error_status, \
    last_error_detail = excluded.last_error_detail, last_error_ms = excluded.last_error_ms, \
    updated_ms = excluded.updated_ms";

/// Writes (replaces) the state of one key.
pub(crate) fn save(tx: &Transaction<'_>, state: &KeySnapshot, now_ms: i64) -> rusqlite::Result<()> {
    let r = KeyRow::of(state);
    tx.prepare_cached(UPSERT)?.execute(params![
        r.key_id,
        r.key_mask,
        r.status,
        r.disabled_kind,
        r.disabled_status,
        r.disabled_detail,
        r.disabled_count,
        r.consecutive_failures,
        r.cooldowns,
        r.requests,
        r.successes,
        r.failures,
        r.weight,
        r.last_used_ms,
        r.last_error_class,
        r.last_error_status,
        r.last_error_detail,
        r.last_error_ms,
        now_ms,
    ])?;
    Ok(())
}

/// Deletes the state of one key.
pub(crate) fn forget(tx: &Transaction<'_>, id: &KeyId) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM key_state WHERE key_id = ?1")?
        .execute([id.hex()])?;
    Ok(())
}

/// Every stored key state.
pub(crate) fn load(conn: &Connection) -> Result<Vec<KeySnapshot>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT key_id, key_mask, status, disabled_kind, disabled_status, disabled_detail, \
             disabled_count, consecutive_failures, cooldowns, requests, successes, failures, \
             weight, last_used_ms, last_error_class, last_error_status, last_error_detail, \
             last_error_ms FROM key_state ORDER BY key_id",
        )
        .map_err(sql_error("reading key states"))?;
    let rows = stmt
        .query_map([], |row| Ok(snapshot_of(row)))
        .map_err(sql_error("reading key states"))?;
    let mut states = Vec::new();
    for row in rows {
        match row {
            Ok(Some(state)) => states.push(state),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable key_state row"),
        }
    }
    Ok(states)
}

fn text(row: &Row<'_>, index: usize) -> Option<String> {
    row.get::<_, Option<String>>(index).ok().flatten()
}

fn int(row: &Row<'_>, index: usize) -> Option<i64> {
    row.get::<_, Option<i64>>(index).ok().flatten()
}

fn snapshot_of(row: &Row<'_>) -> Option<KeySnapshot> {
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
}
