//! `/api/stats/…`: usage figures from the store (windows, time series, per key / model /
//! client, the keys with the most 429s). Queries run on the blocking pool, never on the
//! request threads.

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{Response, StatusCode};
use gemini_balance::keys::KeyId;
use gemini_balance::store::sqlite::stats::{self, Granularity, Window};
use serde::Deserialize;
use serde_json::json;

use super::{answer, fail, ok, query, AdminState};

pub async fn summary(State(state): State<AdminState>) -> Response<Body> {
    // The month is TIMEZONE's (the store's time zone, set at startup).
    let time_zone = state.app.store.time_zone().clone();
    // The writer's counters before the windows: every record `store.written` counts is in
    // them (records committed in between may be too), so a client can wait on it.
    let writer = state.app.store.writer_stats();
    let result = state
        .read(move |c| stats::summary(c, SystemTime::now(), &time_zone))
        .await;
    match result {
        Ok(mut s) => {
            s.writer = Some(writer);
            ok(json!({
                "windows": {
                    "1m": s.last_minute,
                    "1h": s.last_hour,
                    "24h": s.last_day,
                    "month": s.this_month,
                },
                "month_start_ms": s.month_start_ms,
                "now_ms": s.now_ms,
                "timezone": state.app.store.time_zone().name(),
                "store": s.writer,
            }))
        }
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
    match state
        .read(move |c| stats::series(c, q.granularity, SystemTime::now(), None))
        .await
    {
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

type Rows = fn(
    &gemini_balance::store::sqlite::rusqlite::Connection,
    Window,
) -> Result<Vec<stats::UsageRow>, gemini_balance::store::StoreError>;

async fn rows(
    state: AdminState,
    q: Result<Query<WindowQuery>, QueryRejection>,
    of: Rows,
) -> Result<Response<Body>, Response<Body>> {
    let q = query(q)?;
    let window = window(&q.window)?;
    let rows = state.read(move |c| of(c, window)).await?;
    Ok(ok(json!({"window": q.window, "rows": rows})))
}

pub async fn by_key(
    State(state): State<AdminState>,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Response<Body> {
    answer(rows(state, q, stats::by_key).await)
}

pub async fn by_model(
    State(state): State<AdminState>,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Response<Body> {
    answer(rows(state, q, stats::by_model).await)
}

pub async fn by_client(
    State(state): State<AdminState>,
    q: Result<Query<WindowQuery>, QueryRejection>,
) -> Response<Body> {
    answer(rows(state, q, stats::by_client).await)
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
    let hex = key.hex();
    let in_pool = state
        .app
        .pool
        .snapshot(&key)
        .map(|s| s.id.mask().to_owned());
    let (rows, stored) = state
        .read(move |c| {
            let rows = stats::models_of_key(c, &hex, window)?;
            let mask = stats::key_mask(c, &hex)?;
            Ok((rows, mask))
        })
        .await?;
    Ok(ok(json!({
        "id": key.hex(),
        "mask": in_pool.or(stored),
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
            "status: only 429 is counted per key (the rollups keep rate-limited attempts)",
        );
    }
    let limit = q.limit.clamp(1, 1000);
    match state
        .read(move |c| {
            stats::top_rate_limited_keys(c, Window::last(Duration::from_secs(86_400)), limit)
        })
        .await
    {
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
