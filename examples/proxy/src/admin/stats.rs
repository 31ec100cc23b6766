//! `/api/stats/…`: usage figures from the store (windows, time series, per key / model /
//! client, the keys with the most rate-limited attempts), through the store-neutral
//! `StatsStore` (the SQLite store runs its queries on the blocking pool, never on the request
//! threads).

use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{Response, StatusCode};
use gemini_balance::keys::KeyId;
use gemini_balance::store::stats::{Granularity, Window};
use gemini_balance::store::UsageBy;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{answer, fail, ok, query, stored, AdminState};

pub async fn summary(State(state): State<AdminState>) -> Response<Body> {
    // The month is the store's time zone's (TIMEZONE, set at startup). A store that writes in
    // the background takes its counters before the windows: every record `store.written`
    // counts is in them (records committed in between may be too), so a client can wait on it.
    // Several instances on one database: how this one follows the others.
    let shared = state.app.shared.as_ref().map(|shared| {
        json!({
            "applied": shared.applied(),
            "read_errors": shared.read_errors(),
        })
    });
    // The local database's size and the space beside it (SQLite; `null` otherwise).
    let store = state.app.store.clone();
    let max_bytes = crate::state::retention(&state.app.live().settings).max_bytes;
    let disk = tokio::task::spawn_blocking(move || store.disk_space())
        .await
        .ok()
        .flatten()
        .map(|disk| {
            json!({
                "database_bytes": disk.database_bytes,
                "free_bytes": disk.free_bytes,
                "max_bytes": max_bytes,
                "warning": crate::store::disk_warning(&disk, max_bytes),
            })
        });
    match stored(state.stats.summary()).await {
        Ok(s) => ok(json!({
            "windows": {
                "1m": s.last_minute,
                "1h": s.last_hour,
                "24h": s.last_day,
                "month": s.this_month,
            },
            "month_start_ms": s.month_start_ms,
            "now_ms": s.now_ms,
            "timezone": s.time_zone,
            "store": s.writer,
            "shared": shared,
            "disk": disk,
        })),
        Err(failed) => failed,
    }
}

#[derive(Deserialize)]
pub struct SeriesQuery {
    granularity: Granularity,
}

pub async fn series(
    State(state): State<AdminState>,
    q: Result<Query<SeriesQuery>, QueryRejection>,
) -> Response<Body> {
    let q = match query(q) {
        Ok(q) => q,
        Err(e) => return e,
    };
    match stored(state.stats.series(q.granularity, None)).await {
        Ok(points) => ok(json!({"points": points})),
        Err(failed) => failed,
    }
}

#[derive(Deserialize)]
pub struct WindowQuery {
    #[serde(default = "day")]
    window: String,
}

fn day() -> String {
    "24h".to_owned()
}

fn window(name: &str) -> Result<Window, Response<Body>> {
    let span = match name {
        "1h" => 3_600,
        "24h" => 86_400,
        "7d" => 7 * 86_400,
        "30d" => 30 * 86_400,
        _ => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "window: expected one of 1h, 24h, 7d, 30d",
            ))
        }
    };
    Ok(Window::last(Duration::from_secs(span)))
}

async fn rows(
    state: AdminState,
    q: Result<Query<WindowQuery>, QueryRejection>,
    by: UsageBy,
) -> Result<Response<Body>, Response<Body>> {
    let q = query(q)?;
    let window = window(&q.window)?;
    let rows = stored(state.stats.usage(by, window)).await?;
    let mut rows = match json!(rows) {
        Value::Array(rows) => rows,
        _ => Vec::new(),
    };
    if by == UsageBy::Client {
        // The client's name, where an admin gave it one.
        super::quotas::name_clients(&state, &mut rows, "id", "name");
    }
    Ok(ok(json!({"window": q.window, "rows": rows})))
}

pub async fn by_key(
    State(state): State<AdminState>,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Response<Body> {
    answer(rows(state, q, UsageBy::Key).await)
}

pub async fn by_model(
    State(state): State<AdminState>,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Response<Body> {
    answer(rows(state, q, UsageBy::Model).await)
}

pub async fn by_client(
    State(state): State<AdminState>,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Response<Body> {
    answer(rows(state, q, UsageBy::Client).await)
}

/// One key's usage per model (the Python admin's "key usage details"): `GET
/// /api/stats/keys/{id}/models?window=24h`. The key is named by its id; a deleted key's history
/// is still answered (its mask from the database), an id never seen has no rows.
pub async fn models_of_key(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Response<Body> {
    answer(key_models(state, id, q).await)
}

async fn key_models(
    state: AdminState,
    id: String,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Response<Body>, Response<Body>> {
    let Some(key) = KeyId::from_hex(&id, "") else {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            // Not repeated: a key pasted here by mistake must not come back in the answer.
            format!(
                "not a key id: expected 16 hex digits, got {} characters",
                id.chars().count()
            ),
        ));
    };
    let q = query(q)?;
    let window = window(&q.window)?;
    let in_pool = state
        .app
        .pool
        .snapshot(&key)
        .map(|s| s.id.mask().to_owned());
    let rows = stored(state.stats.models_of_key(key.clone(), window)).await?;
    let mask = match in_pool {
        Some(mask) => Some(mask),
        None => stored(state.stats.key_mask(key.clone())).await?,
    };
    Ok(ok(json!({
        "id": key.hex(),
        "mask": mask,
        "window": q.window,
        "rows": rows,
    })))
}

#[derive(Deserialize)]
#[serde(default)]
pub struct AttentionQuery {
    limit: u32,
    status: u16,
}

impl Default for AttentionQuery {
    fn default() -> Self {
        AttentionQuery {
            limit: 20,
            status: 429,
        }
    }
}

pub async fn attention(
    State(state): State<AdminState>,
    q: Result<Query<AttentionQuery>, QueryRejection>,
) -> Response<Body> {
    let q = match query(q) {
        Ok(q) => q,
        Err(e) => return e,
    };
    if q.status != 429 {
        return fail(
            StatusCode::BAD_REQUEST,
            "status: only 429 is counted per key (the store keeps rate-limited attempts)",
        );
    }
    let limit = q.limit.clamp(1, 1000);
    let day = Window::last(Duration::from_secs(86_400));
    match stored(state.stats.top_rate_limited_keys(day, limit)).await {
        Ok(rows) => ok(json!({
            "rows": rows.into_iter().map(|r| json!({
                "id": r.key_id,
                "mask": r.mask,
                "count": r.rate_limited,
                "attempts": r.attempts,
            })).collect::<Vec<_>>()
        })),
        Err(failed) => failed,
    }
}
