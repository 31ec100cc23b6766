//! Your own axum app with the server-side layers around it.
//!
//! The app has its own handler for Gemini's REST routes: it receives each request with a key
//! from the pool in `x-goog-api-key` (the caller's own credentials are stripped), calls Gemini
//! with it and streams the answer back. The layers around the route pick the key, classify the
//! answer (cooling down a rate-limited key for that model, disabling an invalid one), retry on
//! another key, check the JSON body, and record usage; `/stats` shows the keys and the records.
//!
//! ```sh
//! GEMINI_API_KEYS=AIzaSy...1,AIzaSy...2 cargo run --example embed_axum
//! curl -s localhost:3000/v1beta/models/gemini-2.0-flash:generateContent \
//!   -H 'content-type: application/json' -d '{"contents":[{"parts":[{"text":"Hello"}]}]}'
//! curl -s localhost:3000/stats
//! ```
//!
//! Optional: `PORT` (default 3000) and `GEMINI_BASE_URL` (default
//! `https://generativelanguage.googleapis.com`).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gemini_balance::filter::ParamFilterLayer;
use gemini_balance::keys::{KeyPool, KeyRotationLayer};
use gemini_balance::retry::RetryLayer;
use gemini_balance::store::MemoryStore;
use gemini_balance::usage::UsageLayer;
use tower::ServiceBuilder;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
struct App {
    http: reqwest::Client,
    base: Arc<str>,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let keys = std::env::var("GEMINI_API_KEYS")
        .map_err(|_| "set GEMINI_API_KEYS to a comma-separated list of Gemini API keys")?;
    let base = std::env::var("GEMINI_BASE_URL")
        .unwrap_or_else(|_| "https://generativelanguage.googleapis.com".to_owned());
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".to_owned());
    let _ = rustls::crypto::ring::default_provider().install_default();

    let pool = KeyPool::builder()
        .keys(keys.split(',').map(str::trim).filter(|k| !k.is_empty()))
        .build()?;
    let store = MemoryStore::new();
    let app = App {
        http: reqwest::Client::new(),
        base: base.into(),
    };

    let gemini = Router::new()
        .route("/v1beta/models/{model_action}", post(call_gemini))
        .layer(
            ServiceBuilder::new()
                .layer(UsageLayer::new(store.clone()))
                .layer(ParamFilterLayer::new())
                .layer(RetryLayer::new())
                .layer(KeyRotationLayer::new(pool.clone())),
        )
        .with_state(app);
    let stats = Router::new()
        .route("/stats", get(show_stats))
        .with_state((pool, store));
    let router = stats.merge(gemini);

    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}

/// Your handler: the key the layers chose is in `x-goog-api-key`.
async fn call_gemini(
    State(app): State<App>,
    Path(model_action): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(key) = headers.get("x-goog-api-key").cloned() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no key injected").into_response();
    };
    let upstream = app
        .http
        .post(format!("{}/v1beta/models/{model_action}", app.base))
        .header("x-goog-api-key", key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    match upstream {
        // Gemini's status and body go back as they are, so the layers can judge them.
        Ok(res) => {
            let mut out = Response::builder().status(res.status());
            if let Some(content_type) = res.headers().get(header::CONTENT_TYPE) {
                out = out.header(header::CONTENT_TYPE, content_type);
            }
            out.body(Body::from_stream(res.bytes_stream()))
                .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
        }
        Err(err) => (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
    }
}

async fn show_stats(
    State((pool, store)): State<(KeyPool, MemoryStore)>,
) -> Json<serde_json::Value> {
    let keys: Vec<_> = pool
        .snapshots()
        .into_iter()
        .map(|k| {
            serde_json::json!({
                "key": k.id.to_string(),
                "status": format!("{:?}", k.status),
                "requests": k.requests,
                "failures": k.failures,
            })
        })
        .collect();
    let records = store.records();
    let tokens: u64 = records.iter().map(|r| r.tokens.total).sum();
    Json(serde_json::json!({
        "keys": keys,
        "requests": records.len(),
        "successes": records.iter().filter(|r| r.success).count(),
        "tokens": tokens,
    }))
}
