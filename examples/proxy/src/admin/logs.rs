//! `/api/logs/…`: the error log and the request log (filter, detail, delete). Filters are the
//! store's query fields; the store-neutral `StatsStore` answers (the SQLite store on the
//! blocking pool).

use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Response, StatusCode};
use axum::Json;
use gemini_balance::store::logs::{ErrorQuery, LogDeletion, RequestQuery};
use gemini_balance::usage::RequestId;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{answer, body, fail, ok, query, stored, AdminState};

pub async fn errors(
    State(state): State<AdminState>,
    q: Result<Query<ErrorQuery>, QueryRejection>,
) -> Response<Body> {
    let q = match query(q) {
        Ok(q) => q,
        Err(e) => return e,
    };
    match stored(state.stats.errors(q)).await {
        Ok(page) => ok(json!({"total": page.total, "items": page.entries})),
        Err(failed) => failed,
    }
}

pub async fn error(State(state): State<AdminState>, Path(id): Path<String>) -> Response<Body> {
    let Ok(id) = id.parse::<i64>() else {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not an error log id"),
        );
    };
    match stored(state.stats.error(id)).await {
        Ok(Some(entry)) => ok(json!(entry)),
        Ok(None) => fail(StatusCode::NOT_FOUND, format!("no error log entry {id}")),
        Err(failed) => failed,
    }
}

pub async fn requests(
    State(state): State<AdminState>,
    q: Result<Query<RequestQuery>, QueryRejection>,
) -> Response<Body> {
    let q = match query(q) {
        Ok(q) => q,
        Err(e) => return e,
    };
    match stored(state.stats.requests(q)).await {
        Ok(page) => {
            // The client's name, where an admin gave it one.
            let mut items = match json!(page.entries) {
                Value::Array(items) => items,
                _ => Vec::new(),
            };
            super::quotas::name_clients(&state, &mut items, "client_id", "client_name");
            ok(json!({"has_more": page.has_more, "items": items}))
        }
        Err(failed) => failed,
    }
}

/// One request's upstream attempts, by its request id (16 hex digits).
pub async fn request(State(state): State<AdminState>, Path(id): Path<String>) -> Response<Body> {
    let Ok(request_id) = id.parse::<RequestId>() else {
        return fail(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a request id (16 hex digits)"),
        );
    };
    match stored(state.stats.attempts(request_id)).await {
        Ok(attempts) if attempts.is_empty() => fail(
            StatusCode::NOT_FOUND,
            format!("no attempts recorded for request {id}"),
        ),
        Ok(attempts) => ok(json!({"request_id": request_id, "attempts": attempts})),
        Err(failed) => failed,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteBody {
    #[serde(default)]
    ids: Option<Vec<i64>>,
    #[serde(default)]
    before_ms: Option<u64>,
}

pub async fn delete_errors(
    State(state): State<AdminState>,
    b: Result<Json<DeleteBody>, JsonRejection>,
) -> Response<Body> {
    answer(delete(state, b, true).await)
}

pub async fn delete_requests(
    State(state): State<AdminState>,
    b: Result<Json<DeleteBody>, JsonRejection>,
) -> Response<Body> {
    answer(delete(state, b, false).await)
}

async fn delete(
    state: AdminState,
    b: Result<Json<DeleteBody>, JsonRejection>,
    error_log: bool,
) -> Result<Response<Body>, Response<Body>> {
    let b = body(b)?;
    let which = match (b.ids, b.before_ms) {
        (Some(ids), None) => {
            if ids.len() > 10_000 {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "at most 10000 ids at once; use before_ms for more",
                ));
            }
            LogDeletion::Ids(ids)
        }
        (None, Some(before_ms)) => {
            LogDeletion::Before(UNIX_EPOCH + Duration::from_millis(before_ms))
        }
        _ => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                r#"send {"ids": [1, 2, …]} or {"before_ms": <milliseconds since the epoch>}"#,
            ))
        }
    };
    let deleted = if error_log {
        stored(state.stats.delete_errors(which)).await?
    } else {
        stored(state.stats.delete_requests(which)).await?
    };
    tracing::info!(
        deleted,
        log = if error_log { "error" } else { "request" },
        "admin: log entries deleted"
    );
    Ok(ok(json!({"deleted": deleted})))
}
