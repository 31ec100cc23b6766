//! `/api/config` (every setting: value with secrets masked, type, group, source; partial
//! changes checked, applied live and kept) and `/api/models` (the upstream's models, with the
//! derived ones).

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{Method, Request, Response, StatusCode};
use axum::Json;
use serde_json::{json, Map, Value};
use tower::ServiceExt;

use super::{body, fail, ok, AdminState};
use crate::settings::Invalid;

pub async fn get(State(state): State<AdminState>) -> Response<Body> {
    ok(json!({"settings": state.app.live().settings.describe()}))
}

pub async fn put(
    State(state): State<AdminState>,
    b: Result<Json<Value>, JsonRejection>,
) -> Response<Body> {
    let changes = match body(b) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return fail(
                StatusCode::BAD_REQUEST,
                r#"send a JSON object of settings to change, e.g. {"MAX_RETRIES": 5}"#,
            )
        }
        Err(e) => return e,
    };
    if changes.is_empty() {
        return fail(StatusCode::BAD_REQUEST, "no setting to change");
    }
    match state.app.change(&changes).await {
        Ok(changed) => ok(json!({
            "changed": changed,
            "settings": state.app.live().settings.describe(),
        })),
        Err(errors) => refused(&errors),
    }
}

pub async fn forget(State(state): State<AdminState>, Path(name): Path<String>) -> Response<Body> {
    match state.app.forget(&name).await {
        Ok(name) => ok(json!({
            "forgotten": name,
            "settings": state.app.live().settings.describe(),
        })),
        Err(errors) => refused(&errors),
    }
}

fn refused(errors: &[Invalid]) -> Response<Body> {
    let mut body: Map<String, Value> = Map::new();
    let message = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    body.insert(
        "error".to_owned(),
        json!({
            "code": 400,
            "message": format!("nothing was changed: {message}"),
            "status": "INVALID_ARGUMENT",
            "details": errors.iter().map(|e| json!({"setting": e.name, "expected": e.expected})).collect::<Vec<_>>(),
        }),
    );
    let mut res = ok(Value::Object(body));
    *res.status_mut() = StatusCode::BAD_REQUEST;
    res
}

/// The upstream's model list (fetched with a pool key, through the Gemini stack) with the
/// derived `-search` / `-image` / `-non-thinking` models and without the filtered ones.
pub async fn models(State(state): State<AdminState>) -> Response<Body> {
    let live = state.app.live();
    let mut req = Request::new(reqwest::Body::from(""));
    *req.method_mut() = Method::GET;
    *req.uri_mut() = http::Uri::from_static("/models?pageSize=1000");
    let response = match live.stacks.gemini.clone().oneshot(req).await {
        Ok(res) => res,
        Err(e) => {
            return fail(
                StatusCode::BAD_GATEWAY,
                format!(
                    "the upstream could not be reached: {}",
                    gemini_balance::classify::classify_any_error(&e)
                ),
            )
        }
    };
    // The model rules of the stack hid the filtered models and added the derived ones.
    response
}
