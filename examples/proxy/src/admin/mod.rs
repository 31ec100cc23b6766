//! The admin JSON API under `/api/` (contract: `docs/admin-api.md`): keys, stats, logs, config
//! and models. Every route needs AUTH_TOKEN, or a web admin session (with its CSRF token on
//! requests that change something).

// Handlers' errors are ready answers, built on the cold path; boxing them buys nothing.
#![allow(clippy::result_large_err)]

mod config;
mod keys;
mod logs;
mod proxies;
mod quotas;
mod stats;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, Response, StatusCode};
use axum::middleware::Next;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use gemini_balance::api_error::{error_response, ApiFlavor};
use gemini_balance::store::{StatsStore, StoreError, StoreFuture};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth_limit::Surface;
use crate::state::App;

/// What a web admin session says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionVerdict {
    /// No session cookie, or an unknown or expired one.
    None,
    /// A live session; for a request that changes something, with its CSRF token.
    Valid,
    /// A live session, but a request that changes something came without its CSRF token.
    MissingCsrf,
}

/// Sessions of the web admin, as the API sees them.
pub trait AdminSessions: Send + Sync + 'static {
    /// Judges the request's session cookie (and CSRF header, for methods that change something).
    fn check(&self, headers: &HeaderMap, method: &Method) -> SessionVerdict;
}

/// The admin API's state: the proxy, the store its figures and logs come from, and the web
/// admin's sessions when it is served.
#[derive(Clone)]
pub struct AdminState {
    pub app: Arc<App>,
    /// Statistics and logs: any store (the proxy's SQLite store by default).
    pub stats: Arc<dyn StatsStore>,
    pub sessions: Option<Arc<dyn AdminSessions>>,
}

impl AdminState {
    /// The admin of `app`, its figures and logs from the proxy's store.
    pub fn new(app: Arc<App>, sessions: Option<Arc<dyn AdminSessions>>) -> AdminState {
        AdminState {
            stats: app.store.clone(),
            app,
            sessions,
        }
    }
}

/// A store answer, or the admin's 500 answer for its failure.
pub async fn stored<T>(answer: StoreFuture<'_, T>) -> Result<T, Response<Body>> {
    answer.await.map_err(store_failed)
}

/// The routes, to be nested under `/api`.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/keys", get(keys::list).post(keys::add))
        .route("/keys/delete", post(keys::delete_many))
        .route("/keys/reset", post(keys::reset_many))
        .route("/keys/verify", post(keys::verify_many))
        .route("/keys/{id}", delete(keys::delete_one))
        .route("/keys/{id}/reset", post(keys::reset_one))
        .route("/keys/{id}/verify", post(keys::verify_one))
        .route("/stats/summary", get(stats::summary))
        .route("/stats/series", get(stats::series))
        .route("/stats/keys", get(stats::by_key))
        .route("/stats/keys/{id}/models", get(stats::models_of_key))
        .route("/stats/models", get(stats::by_model))
        .route("/stats/clients", get(stats::by_client))
        .route("/stats/attention", get(stats::attention))
        .route(
            "/logs/errors",
            get(logs::errors).delete(logs::delete_errors),
        )
        .route("/logs/errors/{id}", get(logs::error))
        .route(
            "/logs/requests",
            get(logs::requests).delete(logs::delete_requests),
        )
        .route("/logs/requests/{id}", get(logs::request))
        .route("/config", get(config::get).put(config::put))
        .route("/config/{name}", delete(config::forget))
        .route("/models", get(config::models))
        .route("/proxies/check", post(proxies::check))
        .route("/quotas", get(quotas::list))
        .route("/quotas/default", put(quotas::set_default))
        .route(
            "/quotas/clients/{id}",
            put(quotas::set_client).delete(quotas::clear_client),
        )
        .fallback(|req: Request| async move {
            fail(
                StatusCode::NOT_FOUND,
                format!("no admin route {} {}", req.method(), req.uri().path()),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state)
}

/// AUTH_TOKEN (`Authorization: Bearer` or `x-goog-api-key`), or a web admin session. Runs
/// before any handler reads the body. An address that failed too often is answered `429`
/// before its credential is checked (see `auth_limit`).
async fn authorize(State(state): State<AdminState>, req: Request, next: Next) -> Response<Body> {
    let live = state.app.live();
    let limit = &state.app.auth_limit;
    let address = limit.client(req.extensions(), req.headers());
    // Nested under /api: the router has taken the prefix off.
    let route = format!("/api{}", req.uri().path());
    if let Err(blocked) = limit.admit(address, Surface::AdminApi, &route) {
        let mut res = fail(StatusCode::TOO_MANY_REQUESTS, blocked.message());
        res.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(blocked.retry_after_secs()),
        );
        return res;
    }
    if !live.admin.is_empty() && live.admin.accepted_header(req.headers()).is_some() {
        return next.run(req).await;
    }
    if let Some(sessions) = &state.sessions {
        match sessions.check(req.headers(), req.method()) {
            SessionVerdict::Valid => return next.run(req).await,
            SessionVerdict::MissingCsrf => return fail(
                StatusCode::FORBIDDEN,
                "this request changes something and needs the session's CSRF token in x-csrf-token",
            ),
            SessionVerdict::None => {}
        }
    }
    let message = if live.admin.is_empty() {
        "the admin API is disabled: set AUTH_TOKEN (or ALLOWED_TOKENS) to use it"
    } else {
        "the admin API needs AUTH_TOKEN as Authorization: Bearer or x-goog-api-key"
    };
    limit.refused(
        address,
        Surface::AdminApi,
        &route,
        "no valid AUTH_TOKEN or session",
    );
    fail(StatusCode::UNAUTHORIZED, message)
}

/// An error answer in the API's format.
pub fn fail(status: StatusCode, message: impl AsRef<str>) -> Response<Body> {
    error_response(ApiFlavor::Gemini, status, message.as_ref()).map(Body::from)
}

/// A JSON answer.
pub fn ok(value: Value) -> Response<Body> {
    axum::response::IntoResponse::into_response(Json(value))
}

/// A store failure: the store's message names the operation; no secret is in it.
pub fn store_failed(err: StoreError) -> Response<Body> {
    tracing::warn!(error = %err, "admin: store query failed");
    fail(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the database could not answer: {err}"),
    )
}

/// The query string as `T`, or a 400 naming what is wrong.
pub fn query<T: DeserializeOwned>(
    q: Result<Query<T>, QueryRejection>,
) -> Result<T, Response<Body>> {
    q.map(|Query(t)| t).map_err(|e| {
        fail(
            StatusCode::BAD_REQUEST,
            format!("query string: {}", e.body_text()),
        )
    })
}

/// The JSON body as `T`, or a 400 naming what is wrong.
pub fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, Response<Body>> {
    b.map(|Json(t)| t).map_err(|e| {
        fail(
            StatusCode::BAD_REQUEST,
            format!("request body: {}", e.body_text()),
        )
    })
}

/// Unwraps a handler result whose error is already an answer.
pub fn answer(result: Result<Response<Body>, Response<Body>>) -> Response<Body> {
    result.unwrap_or_else(|err| err)
}
