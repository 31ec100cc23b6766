//! `key_state` rows: a [`KeySnapshot`] written by the writer and read back at startup.
//!
//! Reading never fails on a bad row: an id that is not 16 hex digits skips the row, an unknown
//! status or class is read as "active" or "no last error", a malformed cooldown list as no
//! cooldown; each with a warning.

use rusqlite::{params, Connection, Row, Transaction};
use serde::{Deserialize, Serialize};

use super::sql_error;
use super::time::{ms_of, time_of};
use crate::classify::FailureClass;
use crate::keys::{DisabledReason, KeyId, KeySnapshot, KeyStatus, LastError, ModelCooldown};
use crate::redact::redact_keys;
use crate::store::StoreError;

/// One cooldown as kept in the `cooldowns` JSON column.
#[derive(Debug, Serialize, Deserialize)]
struct StoredCooldown {
    model: String,
    until_ms: i64,
}

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
    let (status, cooldowns) = match &state.status {
        KeyStatus::Active => ("active", Vec::new()),
        KeyStatus::CoolingDown(models) => ("cooling_down", models.clone()),
        KeyStatus::Disabled(_) => ("disabled", Vec::new()),
    };
    let (kind, d_status, d_detail, d_count) = match &state.status {
        KeyStatus::Disabled(DisabledReason::Rejected { status, reason }) => (
            Some("rejected"),
            Some(i64::from(*status)),
            Some(redact_keys(reason).into_owned()),
            None,
        ),
        KeyStatus::Disabled(DisabledReason::TooManyFailures { count }) => (
            Some("too_many_failures"),
            None,
            None,
            Some(i64::from(*count)),
        ),
        KeyStatus::Disabled(DisabledReason::Manual) => (Some("manual"), None, None, None),
        _ => (None, None, None, None),
    };
    let cooldowns: Vec<StoredCooldown> = cooldowns
        .iter()
        .map(|c| StoredCooldown {
            model: c.model.clone(),
            until_ms: ms_of(c.until),
        })
        .collect();
    let cooldowns = serde_json::to_string(&cooldowns).unwrap_or_else(|_| "[]".to_owned());
    let last_error = state.last_error.as_ref();
    tx.prepare_cached(UPSERT)?.execute(params![
        state.id.hex(),
        state.id.mask(),
        status,
        kind,
        d_status,
        d_detail,
        d_count,
        i64::from(state.consecutive_failures),
        cooldowns,
        i64::try_from(state.requests).unwrap_or(i64::MAX),
        i64::try_from(state.successes).unwrap_or(i64::MAX),
        i64::try_from(state.failures).unwrap_or(i64::MAX),
        i64::from(state.weight),
        state.last_used.map(ms_of),
        last_error.map(|e| e.class.name()),
        last_error
            .and_then(|e| e.class.status())
            .map(|s| s.as_u16()),
        last_error.map(|e| redact_keys(e.class.detail()).into_owned()),
        last_error.map(|e| ms_of(e.at)),
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

fn count(row: &Row<'_>, index: usize) -> u64 {
    row.get::<_, Option<i64>>(index)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(0)
}

fn text(row: &Row<'_>, index: usize) -> Option<String> {
    row.get::<_, Option<String>>(index).ok().flatten()
}

fn int(row: &Row<'_>, index: usize) -> Option<i64> {
    row.get::<_, Option<i64>>(index).ok().flatten()
}

fn snapshot_of(row: &Row<'_>) -> Option<KeySnapshot> {
    let hex = text(row, 0).unwrap_or_default();
    let mask = text(row, 1).unwrap_or_else(|| "…".to_owned());
    let Some(id) = KeyId::from_hex(&hex, &mask) else {
        tracing::warn!(key_id = %hex, "skipping a key_state row whose key id is not 16 hex digits");
        return None;
    };
    let mut state = KeySnapshot::new(id);
    let status = text(row, 2).unwrap_or_default();
    state.status = match status.as_str() {
        "active" => KeyStatus::Active,
        "cooling_down" => {
            let raw = text(row, 8).unwrap_or_default();
            match serde_json::from_str::<Vec<StoredCooldown>>(&raw) {
                Ok(list) => KeyStatus::CoolingDown(
                    list.into_iter()
                        .map(|c| ModelCooldown {
                            model: c.model,
                            until: time_of(c.until_ms),
                        })
                        .collect(),
                ),
                Err(e) => {
                    tracing::warn!(key = %state.id, error = %e, "ignoring a malformed cooldown list");
                    KeyStatus::Active
                }
            }
        }
        "disabled" => KeyStatus::Disabled(match text(row, 3).as_deref() {
            Some("rejected") => DisabledReason::Rejected {
                status: int(row, 4).and_then(|s| u16::try_from(s).ok()).unwrap_or(0),
                reason: text(row, 5).unwrap_or_default(),
            },
            Some("too_many_failures") => DisabledReason::TooManyFailures {
                count: int(row, 6).and_then(|c| u32::try_from(c).ok()).unwrap_or(0),
            },
            Some("manual") => DisabledReason::Manual,
            other => {
                tracing::warn!(key = %state.id, kind = ?other, "unknown disabled reason; reading it as manual");
                DisabledReason::Manual
            }
        }),
        other => {
            tracing::warn!(key = %state.id, status = other, "unknown key status; reading it as active");
            KeyStatus::Active
        }
    };
    state.consecutive_failures = u32::try_from(count(row, 7)).unwrap_or(u32::MAX);
    state.requests = count(row, 9);
    state.successes = count(row, 10);
    state.failures = count(row, 11);
    state.weight = u32::try_from(count(row, 12)).unwrap_or(1).max(1);
    state.last_used = int(row, 13).map(time_of);
    if let (Some(class), Some(at)) = (text(row, 14), int(row, 17)) {
        let status = int(row, 15).and_then(|s| u16::try_from(s).ok());
        let detail = text(row, 16).unwrap_or_default();
        match FailureClass::from_stored(&class, status, &detail) {
            Some(class) => {
                state.last_error = Some(LastError {
                    class,
                    at: time_of(at),
                })
            }
            None => {
                tracing::warn!(key = %state.id, class, "unknown failure class; dropping the last error")
            }
        }
    }
    Some(state)
}
