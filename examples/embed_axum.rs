//! Your own axum app with the server-side layers around it.
//!
//! The app has its own handler for Gemini's REST routes: it receives each request with a key
//! from the pool in `x-goog-api-key` (the caller's own credentials are stripped), calls Gemini
//! with it and streams the answer back. The layers around the route pick the key, classify the
//! answer (cooling down a rate-limited key for that model, disabling an invalid one), retry on
//! another key, check the JSON body, record usage, and (with `PSEUDO_STREAM=true`) answer
//! `streamGenerateContent?alt=sse` with a pseudo stream; `/stats` shows the keys and the records.
//!
//! Two rules keep the handler right:
//!
//! - It forwards the request **the layers hand it**: the request's own `Uri` (path *and*
//!   query) and [`RequestInfo`], never axum's `Path` extractor, which axum fills while routing,
//!   before the layers run. A pseudo-streamed `streamGenerateContent?alt=sse` reaches the
//!   handler as `generateContent` (without `alt=sse`); a real stream keeps its `?alt=sse`
//!   (without it Gemini streams a JSON array, not SSE).
//! - The layers wrap the API route's `POST` handler only (`post(handler).route_layer(..)`),
//!   not the whole router (`Router::layer` also wraps the fallback) nor the whole route
//!   (`Router::route_layer` also wraps axum's `405` for other methods): a scanner's
//!   `GET /wp-login.php` or `GET` on the API path gets a plain `404` / `405` without leasing a
//!   key, counting a failure or writing a usage record.
//!
//! ```sh
//! GEMINI_API_KEYS=AIzaSy...1,AIzaSy...2 cargo run --example embed_axum
//! curl -s localhost:3000/v1beta/models/gemini-2.0-flash:generateContent \
//!   -H 'content-type: application/json' -d '{"contents":[{"parts":[{"text":"Hello"}]}]}'
//! curl -s localhost:3000/stats
//! ```
//!
//! Optional: `PORT` (default 3000), `GEMINI_BASE_URL` (default
//! `https://generativelanguage.googleapis.com`) and `PSEUDO_STREAM` (`true` to fake streams).
//!
//! `tests/embed_axum.rs` runs this app against a mock Gemini over loopback HTTP.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use gemini_balance::api_error::error_response;
use gemini_balance::classify::{FailureClass, Outcome};
use gemini_balance::ext::RequestInfo;
use gemini_balance::filter::ParamFilterLayer;
use gemini_balance::keys::KeyPool;
use gemini_balance::retry::RetryLayer;
use gemini_balance::stack::GeminiStack;
use gemini_balance::store::MemoryStore;
use gemini_balance::stream::pseudo::PseudoStreamLayer;
use gemini_balance::usage::UsageLayer;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Where the handler sends the requests.
#[derive(Clone, Debug)]
pub struct Upstream {
    http: reqwest::Client,
    base: Arc<str>,
}

impl Upstream {
    /// Gemini (or anything that answers like it) at `base`, called with `http`.
    pub fn new(http: reqwest::Client, base: &str) -> Self {
        Upstream {
            http,
            base: base.trim_end_matches('/').into(),
        }
    }
}

/// The app: Gemini's `POST /v1beta/models/{model}:{method}` behind the layers, and `/stats`.
pub fn app(pool: KeyPool, store: MemoryStore, pseudo: PseudoStreamLayer, up: Upstream) -> Router {
    // The layers in their designed order.
    let layers = GeminiStack::new()
        .pseudo_stream(pseudo)
        .usage(UsageLayer::new(store.clone()))
        .filter(ParamFilterLayer::new())
        .retry(RetryLayer::new())
        .keys(pool.clone());
    let gemini = Router::new()
        // On the `POST` handler only: requests for other paths or methods never reach them.
        .route(
            "/v1beta/models/{model_action}",
            post(call_gemini).route_layer(layers),
        )
        .with_state(up);
    let stats = Router::new()
        .route("/stats", get(show_stats))
        .with_state((pool, store));
    stats.merge(gemini)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let keys = std::env::var("GEMINI_API_KEYS")
        .map_err(|_| "set GEMINI_API_KEYS to a comma-separated list of Gemini API keys")?;
    let base = std::env::var("GEMINI_BASE_URL")
        .unwrap_or_else(|_| "https://generativelanguage.googleapis.com".to_owned());
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".to_owned());
    let pseudo = std::env::var("PSEUDO_STREAM").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let _ = rustls::crypto::ring::default_provider().install_default();

    let pool = KeyPool::builder()
        .keys(keys.split(',').map(str::trim).filter(|k| !k.is_empty()))
        .build()?;
    let router = app(
        pool,
        MemoryStore::new(),
        PseudoStreamLayer::new().enabled(pseudo),
        Upstream::new(reqwest::Client::new(), &base),
    );

    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}

/// Your handler: the key the layers chose is in `x-goog-api-key`; the request is the one the
/// layers hand on (its `Uri`, with the query), described by its [`RequestInfo`].
async fn call_gemini(
    State(up): State<Upstream>,
    Extension(info): Extension<RequestInfo>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    // Already buffered (and bounded) by `Retry`: this only takes the bytes.
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return (
            StatusCode::BAD_REQUEST,
            "the request body could not be read",
        )
            .into_response();
    };
    let Some(key) = parts.headers.get("x-goog-api-key").cloned() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no key injected").into_response();
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |pq| pq.as_str());
    let upstream = up
        .http
        .post(format!("{}{target}", up.base))
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
        // In the error format of the API the client speaks, marked as our own answer: a bare
        // 502 would read as the upstream's server error and count against the key, so an
        // outage would disable every key in turn.
        Err(_) => {
            let mut res = error_response(
                info.flavor,
                StatusCode::BAD_GATEWAY,
                &format!(
                    "{} failed: the upstream could not be reached",
                    info.operation
                ),
            )
            .map(Body::from);
            res.extensions_mut()
                .insert(Outcome::Failure(FailureClass::Local {
                    status: StatusCode::BAD_GATEWAY,
                    reason: "upstream unreachable",
                }));
            res.into_response()
        }
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
