//! Client quotas and names: `GET /api/quotas` (every client token's use of the current
//! windows against its limits, and the default), `PUT /api/quotas/default`,
//! `PUT /api/quotas/clients/{id}` (limits and/or name), `DELETE /api/quotas/clients/{id}`.
//! Clients are named by their token's id (16 hex digits), never the token. An edit is kept in
//! the database and acts here at once; the other instances on a shared database read it with
//! their next exchange (QUOTA_SYNC_INTERVAL_SECONDS).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{Response, StatusCode};
use axum::Json;
use gemini_balance::quota::{Limits, QuotaRow, QuotaStatus, DEFAULT_ID};
use serde_json::{json, Value};

use super::{answer, body, fail, ok, AdminState};

/// `GET /api/quotas`.
pub async fn list(State(state): State<AdminState>) -> Response<Body> {
    ok(report(&state))
}

fn report(state: &AdminState) -> Value {
    let app = &state.app;
    let live = app.live();
    // The allowed tokens first (with their fingerprints), then what the quotas know besides
    // (tokens removed since, named or with use this month).
    let mut clients: BTreeMap<String, (Option<String>, bool)> = BTreeMap::new();
    for id in live.tokens.ids() {
        let admin = live.admin.ids().any(|a| a == id);
        clients.insert(id.hex(), (Some(id.mask().to_owned()), admin));
    }
    for id in app.quotas.ids() {
        clients.entry(id).or_insert((None, false));
    }
    let rows: Vec<Value> = clients
        .into_iter()
        .map(|(id, (mask, admin))| {
            let allowed = mask.is_some();
            let mut row = status_json(app.quotas.status(&id));
            if let Value::Object(map) = &mut row {
                map.insert("mask".into(), json!(mask));
                map.insert("allowed".into(), json!(allowed));
                map.insert("admin_token".into(), json!(admin));
            }
            row
        })
        .collect();
    json!({
        "default": app.quotas.default_limits(),
        "sync_interval_seconds": live.settings.int("QUOTA_SYNC_INTERVAL_SECONDS"),
        "clients": rows,
    })
}

fn status_json(status: QuotaStatus) -> Value {
    serde_json::to_value(status).unwrap_or(Value::Null)
}

/// `PUT /api/quotas/default`: the limits of every client without its own (`{}`: none).
pub async fn set_default(
    State(state): State<AdminState>,
    b: Result<Json<Value>, JsonRejection>,
) -> Response<Body> {
    answer(set_default_inner(state, b).await)
}

async fn set_default_inner(
    state: AdminState,
    b: Result<Json<Value>, JsonRejection>,
) -> Result<Response<Body>, Response<Body>> {
    let limits = limits_of(body(b)?)?;
    let row = QuotaRow {
        id: DEFAULT_ID.to_owned(),
        name: None,
        limits: Some(limits).filter(|l| !l.is_unlimited()),
    };
    save(&state, row).await?;
    Ok(ok(report(&state)))
}

/// `PUT /api/quotas/clients/{id}`: `{"limits": {...} | null, "name": "..." | null}`; a field
/// left out is kept.
pub async fn set_client(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    b: Result<Json<Value>, JsonRejection>,
) -> Response<Body> {
    answer(set_client_inner(state, id, b).await)
}

async fn set_client_inner(
    state: AdminState,
    id: String,
    b: Result<Json<Value>, JsonRejection>,
) -> Result<Response<Body>, Response<Body>> {
    let id = client_id(&id)?;
    let Value::Object(mut fields) = body(b)? else {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            r#"send a JSON object, e.g. {"name": "Team A", "limits": {"requests_per_minute": 60}}"#,
        ));
    };
    let mut row = state.app.quotas.row(&id);
    if let Some(limits) = fields.remove("limits") {
        row.limits = match limits {
            Value::Null => None,
            limits => Some(limits_of(limits)?),
        };
    }
    if let Some(name) = fields.remove("name") {
        row.name = match name {
            Value::Null => None,
            Value::String(name) => Some(name.trim().to_owned()).filter(|n| !n.is_empty()),
            _ => {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "name: expected a string or null",
                ))
            }
        };
    }
    if let Some(unknown) = fields.keys().next() {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            format!("unknown field {unknown:?}: expected limits and/or name"),
        ));
    }
    save(&state, row).await?;
    Ok(ok(status_json(state.app.quotas.status(&id))))
}

/// `DELETE /api/quotas/clients/{id}`: the client's own limits and name are forgotten (the
/// default applies).
pub async fn clear_client(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Response<Body> {
    answer(clear_client_inner(state, id).await)
}

async fn clear_client_inner(
    state: AdminState,
    id: String,
) -> Result<Response<Body>, Response<Body>> {
    let id = client_id(&id)?;
    let row = QuotaRow {
        id: id.clone(),
        name: None,
        limits: None,
    };
    save(&state, row).await?;
    Ok(ok(status_json(state.app.quotas.status(&id))))
}

async fn save(state: &AdminState, row: QuotaRow) -> Result<(), Response<Body>> {
    if let Some(name) = &row.name {
        gemini_balance::quota::check_name(name)
            .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("name: {e}")))?;
        // A pasted token would be kept in the database and shown on every page: refused,
        // without repeating it.
        let live = state.app.live();
        let settings = &live.settings;
        let admin = settings.text("AUTH_TOKEN").trim().to_owned();
        let holds_a_token = settings
            .list("ALLOWED_TOKENS")
            .iter()
            .map(|t| t.trim().to_owned())
            .chain(std::iter::once(admin))
            .any(|token| token.len() >= 8 && name.contains(token.as_str()));
        if holds_a_token {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "name: it contains a client or admin token; a name is shown on every admin page and kept in the database",
            ));
        }
    }
    let store = state.app.store.clone();
    state.app.quotas.save(store, row).await.map_err(|e| {
        tracing::warn!(error = %e, "admin: a quota could not be saved");
        fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the database could not keep the quota: {e}"),
        )
    })
}

/// Limits from JSON, or a 400 naming the field.
fn limits_of(value: Value) -> Result<Limits, Response<Body>> {
    serde_json::from_value(value).map_err(|e| {
        fail(
            StatusCode::BAD_REQUEST,
            format!(
                "limits: {e} (expected an object of requests_per_minute, tokens_per_minute, \
                 tokens_per_day, tokens_per_month: whole numbers ≥ 0, or null for no limit)"
            ),
        )
    })
}

/// A client token's id: 16 hex digits (never the token itself).
fn client_id(id: &str) -> Result<String, Response<Body>> {
    if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(id.to_ascii_lowercase());
    }
    // Not repeated: a token pasted here by mistake must not come back in the answer.
    Err(fail(
        StatusCode::BAD_REQUEST,
        format!(
            "not a client id: expected the token's id (16 hex digits, as GET /api/quotas lists), got {} characters",
            id.chars().count()
        ),
    ))
}

/// Adds `name` (the client's, when it has one) to each object of `items` whose `id_field` is
/// a client id: the usage and log pages say who.
pub fn name_clients(state: &AdminState, items: &mut [Value], id_field: &str, name_field: &str) {
    let names = state.app.quotas.names();
    if names.is_empty() {
        return;
    }
    for item in items {
        if let Value::Object(map) = item {
            let name = map
                .get(id_field)
                .and_then(Value::as_str)
                .and_then(|id| names.get(id))
                .cloned();
            if let Some(name) = name {
                map.insert(name_field.to_owned(), Value::String(name));
            }
        }
    }
}
