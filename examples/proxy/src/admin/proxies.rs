//! `/api/proxies/check`: can the PROXIES entries (or proxy URLs not saved yet) reach the
//! upstream? See [`crate::proxy_check`] for what is sent and what counts. Proxies are named by
//! their position in PROXIES and shown without credentials.

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{Response, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{answer, body, fail, ok, AdminState};
use crate::proxy_check::{DEFAULT_CONCURRENCY, MAX_CONCURRENCY, MAX_URLS};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    /// Every PROXIES entry.
    #[serde(default)]
    all: bool,
    /// One PROXIES entry, from 1.
    #[serde(default)]
    entry: Option<usize>,
    /// Proxy URLs that are not saved (to try one before saving it), at most [`MAX_URLS`].
    #[serde(default)]
    proxies: Option<Vec<String>>,
    /// Answer a result from the last 10 s again (default `true`).
    #[serde(default)]
    use_cache: Option<bool>,
    /// Checks at once, 1 to 10 (default 5).
    #[serde(default)]
    max_concurrent: Option<usize>,
}

pub async fn check(
    State(state): State<AdminState>,
    b: Result<Json<CheckBody>, JsonRejection>,
) -> Response<Body> {
    answer(check_proxies(state, b).await)
}

async fn check_proxies(
    state: AdminState,
    b: Result<Json<CheckBody>, JsonRejection>,
) -> Result<Response<Body>, Response<Body>> {
    let b = body(b)?;
    let concurrency = b.max_concurrent.unwrap_or(DEFAULT_CONCURRENCY);
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            format!("max_concurrent: expected a whole number from 1 to {MAX_CONCURRENCY}, got {concurrency}"),
        ));
    }
    let live = state.app.live();
    let saved = live.settings.list("PROXIES");
    let targets: Vec<(Option<usize>, String)> = match (b.all, b.entry, b.proxies) {
        (true, None, None) => saved
            .into_iter()
            .enumerate()
            .map(|(i, url)| (Some(i + 1), url))
            .collect(),
        (false, Some(entry), None) => match saved.get(entry.wrapping_sub(1)) {
            Some(url) => vec![(Some(entry), url.clone())],
            None => {
                return Err(fail(
                    StatusCode::NOT_FOUND,
                    format!(
                        "PROXIES has no entry #{entry} (it has {}; entries count from 1)",
                        saved.len()
                    ),
                ))
            }
        },
        (false, None, Some(urls)) if urls.len() > MAX_URLS => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                format!(
                    "proxies: at most {MAX_URLS} URLs per check, got {}",
                    urls.len()
                ),
            ))
        }
        (false, None, Some(urls)) if !urls.is_empty() => {
            let mut targets = Vec::with_capacity(urls.len());
            for (i, url) in urls.into_iter().enumerate() {
                let url = url.trim().to_owned();
                // The message never repeats the URL, which may hold a password.
                crate::upstream::check_proxy(&url).map_err(|e| {
                    fail(
                        StatusCode::BAD_REQUEST,
                        format!("proxies: entry #{}: {e}", i + 1),
                    )
                })?;
                targets.push((None, url));
            }
            targets
        }
        _ => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                r#"send {"all": true}, {"entry": <position in PROXIES, from 1>} or {"proxies": ["http://host:port", …]}"#,
            ))
        }
    };
    let options = crate::state::upstream_options(&live.settings)
        .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let results = state
        .app
        .proxy_checker
        .check_all(&options, targets, b.use_cache.unwrap_or(true), concurrency)
        .await;
    let working = results.iter().filter(|r| r.ok).count();
    tracing::info!(checked = results.len(), working, "admin: proxies checked");
    Ok(ok(json!({
        "target": format!("{}/models", options.base_url),
        "results": results,
    })))
}
