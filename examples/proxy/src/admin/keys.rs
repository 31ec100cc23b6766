//! `/api/keys`: list, add, delete, reset and verify keys. Keys are named by id (16 hex digits)
//! and shown masked; no answer holds a key.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Response, StatusCode};
use axum::Json;
use gemini_balance::keys::{looks_like_gemini_key, mask, KeyId, KeySnapshot, KeyStatus};
use gemini_balance::store::stats::Window;
use gemini_balance::store::UsageBy;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{answer, body, fail, ok, query, stored, AdminState};
use crate::recheck;

/// At most this many probes run at once (verify).
const VERIFY_CONCURRENCY: usize = 8;

#[derive(Deserialize)]
#[serde(default)]
pub struct ListQuery {
    page: u64,
    per_page: u64,
    status: String,
    search: String,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            page: 1,
            per_page: 50,
            status: "all".to_owned(),
            search: String::new(),
        }
    }
}

pub async fn list(
    State(state): State<AdminState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Response<Body> {
    answer(list_keys(state, q).await)
}

async fn list_keys(
    state: AdminState,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response<Body>, Response<Body>> {
    let q = query(q)?;
    if !["all", "active", "cooling_down", "disabled"].contains(&q.status.as_str()) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "status: expected one of all, active, cooling_down, disabled",
        ));
    }
    if q.page == 0 || !(1..=500).contains(&q.per_page) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "page starts at 1 and per_page is from 1 to 500",
        ));
    }
    let snapshots = state.app.pool.snapshots();
    let mut counts = HashMap::from([("active", 0u64), ("cooling_down", 0), ("disabled", 0)]);
    for s in &snapshots {
        *counts.entry(status_name(&s.status)).or_default() += 1;
    }
    let search = q.search.trim();
    // A whole key finds exactly that key; other text is looked for in the masks and ids.
    let exact = (search.len() >= 16).then(|| KeyId::of(search).hex());
    let needle = search.to_ascii_lowercase();
    let matching: Vec<&KeySnapshot> = snapshots
        .iter()
        .filter(|s| q.status == "all" || status_name(&s.status) == q.status)
        .filter(|s| {
            needle.is_empty()
                || exact.as_deref() == Some(s.id.hex().as_str())
                || s.id.hex().contains(&needle)
                || s.id.mask().to_ascii_lowercase().contains(&needle)
        })
        .collect();
    let total = matching.len() as u64;
    let start = usize::try_from((q.page - 1).saturating_mul(q.per_page)).unwrap_or(usize::MAX);
    let page: Vec<&KeySnapshot> = matching
        .into_iter()
        .skip(start)
        .take(q.per_page as usize)
        .collect();
    let day = Window::last(Duration::from_secs(86_400));
    let usage = stored(state.stats.usage(UsageBy::Key, day)).await?;
    let usage: HashMap<String, _> = usage
        .into_iter()
        .map(|r| (r.id.clone(), r.counts))
        .collect();
    let items: Vec<Value> = page
        .iter()
        .map(|s| {
            let hex = s.id.hex();
            let day = usage.get(&hex);
            // Per key, what counts is every attempt made with it (a failed attempt is often
            // retried with another key, and the request then counts for that one).
            let (requests, failures, tokens) = day.map_or((0, 0, 0), |c| {
                (c.attempts, c.failed_attempts, c.tokens.total)
            });
            let successes = requests.saturating_sub(failures);
            json!({
                "id": hex,
                "mask": s.id.mask(),
                "status": status_name(&s.status),
                "disabled_reason": match &s.status {
                    KeyStatus::Disabled(reason) => Some(reason.to_string()),
                    _ => None,
                },
                "cooldowns": match &s.status {
                    KeyStatus::CoolingDown(list) => list
                        .iter()
                        .map(|c| json!({"model": c.model, "until_ms": ms(c.until)}))
                        .collect::<Vec<_>>(),
                    _ => Vec::new(),
                },
                "consecutive_failures": s.consecutive_failures,
                "in_flight": s.in_flight,
                "last_used_ms": s.last_used.map(ms),
                "last_error": s.last_error.as_ref().map(|e| json!({
                    "class": e.class.name(),
                    "description": e.class.to_string(),
                    "at_ms": ms(e.at),
                })),
                "stats_24h": {
                    "requests": requests,
                    "successes": successes,
                    "failures": failures,
                    "success_rate": if requests == 0 { Value::Null } else { json!(successes as f64 / requests as f64) },
                    "tokens": tokens,
                },
            })
        })
        .collect();
    Ok(ok(json!({
        "items": items,
        "total": total,
        "page": q.page,
        "per_page": q.per_page,
        "pages": total.div_ceil(q.per_page),
        "counts": {
            "total": snapshots.len(),
            "active": counts["active"],
            "cooling_down": counts["cooling_down"],
            "disabled": counts["disabled"],
        },
    })))
}

fn status_name(status: &KeyStatus) -> &'static str {
    match status {
        KeyStatus::Active => "active",
        KeyStatus::CoolingDown(_) => "cooling_down",
        KeyStatus::Disabled(_) => "disabled",
        _ => "unknown",
    }
}

fn ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    #[serde(default)]
    keys: Option<Vec<String>>,
    #[serde(default)]
    text: Option<String>,
}

pub async fn add(
    State(state): State<AdminState>,
    b: Result<Json<AddBody>, JsonRejection>,
) -> Response<Body> {
    answer(add_keys(state, b).await)
}

async fn add_keys(
    state: AdminState,
    b: Result<Json<AddBody>, JsonRejection>,
) -> Result<Response<Body>, Response<Body>> {
    let b = body(b)?;
    let candidates = match (b.keys, b.text) {
        (Some(keys), None) => keys,
        (None, Some(text)) => extract_keys(&text),
        _ => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                r#"send {"keys": ["AIza…", …]} or {"text": "pasted text with keys"}"#,
            ))
        }
    };
    let result = state
        .app
        .edit_keys(|keys| {
            let mut known: HashSet<KeyId> = keys.iter().map(|k| KeyId::of(k.trim())).collect();
            let (mut added, mut duplicates, mut rejected) = (Vec::new(), Vec::new(), Vec::new());
            for candidate in &candidates {
                let key = candidate.trim().trim_matches(|c| c == '"' || c == '\'');
                if !looks_like_gemini_key(key) {
                    rejected.push(json!({
                        "mask": mask(key),
                        "reason": format!(
                            "not a Gemini API key: expected AIza followed by 35 letters, digits, - or _ ({} characters given)",
                            key.chars().count()
                        ),
                    }));
                    continue;
                }
                let id = KeyId::of(key);
                let entry = json!({"id": id.hex(), "mask": id.mask()});
                if known.insert(id) {
                    keys.push(key.to_owned());
                    added.push(entry);
                } else {
                    duplicates.push(entry);
                }
            }
            json!({"added": added, "duplicates": duplicates, "rejected": rejected})
        })
        .await
        .map_err(invalid)?;
    let added = result["added"].as_array().map_or(0, Vec::len);
    tracing::info!(added, "admin: keys added");
    Ok(ok(result))
}

/// Every `AIza…` key in a pasted text; runs that start like a key but are not one are kept
/// so that they are reported as rejected.
fn extract_keys(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|word| word.starts_with("AIza"))
        .map(str::to_owned)
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    all: bool,
}

fn ids_of(selection: &Selection) -> Result<Vec<KeyId>, Response<Body>> {
    if selection.all != selection.ids.is_empty() {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            r#"send {"ids": ["<16 hex digits>", …]} or {"all": true}"#,
        ));
    }
    selection
        .ids
        .iter()
        .map(|hex| {
            KeyId::from_hex(hex, "").ok_or_else(|| {
                fail(
                    StatusCode::BAD_REQUEST,
                    format!("{hex:?} is not a key id (16 hex digits)"),
                )
            })
        })
        .collect()
}

pub async fn delete_one(State(state): State<AdminState>, Path(id): Path<String>) -> Response<Body> {
    answer(
        delete_keys(
            state,
            Selection {
                ids: vec![id],
                all: false,
            },
            true,
        )
        .await,
    )
}

pub async fn delete_many(
    State(state): State<AdminState>,
    b: Result<Json<Selection>, JsonRejection>,
) -> Response<Body> {
    match body(b) {
        Ok(selection) if selection.all => fail(
            StatusCode::BAD_REQUEST,
            "deleting every key at once is not offered: list the ids",
        ),
        Ok(selection) => answer(delete_keys(state, selection, false).await),
        Err(e) => e,
    }
}

async fn delete_keys(
    state: AdminState,
    selection: Selection,
    one: bool,
) -> Result<Response<Body>, Response<Body>> {
    let ids = ids_of(&selection)?;
    let wanted: HashSet<u64> = ids.iter().map(KeyId::digest).collect();
    let found = state
        .app
        .edit_keys(|keys| {
            let mut found = HashSet::new();
            keys.retain(|k| {
                let digest = KeyId::of(k.trim()).digest();
                let hit = wanted.contains(&digest);
                if hit {
                    found.insert(digest);
                }
                !hit
            });
            found
        })
        .await
        .map_err(invalid)?;
    let not_found: Vec<String> = ids
        .iter()
        .filter(|id| !found.contains(&id.digest()))
        .map(KeyId::hex)
        .collect();
    if one && found.is_empty() {
        return Err(fail(
            StatusCode::NOT_FOUND,
            format!("no key has the id {}", ids[0].hex()),
        ));
    }
    tracing::info!(deleted = found.len(), "admin: keys deleted");
    Ok(ok(json!({"deleted": found.len(), "not_found": not_found})))
}

pub async fn reset_one(State(state): State<AdminState>, Path(id): Path<String>) -> Response<Body> {
    let ids = match ids_of(&Selection {
        ids: vec![id],
        all: false,
    }) {
        Ok(ids) => ids,
        Err(e) => return e,
    };
    if state.app.pool.reset(&ids) == 0 {
        return fail(
            StatusCode::NOT_FOUND,
            format!("no key has the id {}", ids[0].hex()),
        );
    }
    ok(json!({"reset": 1, "not_found": []}))
}

pub async fn reset_many(
    State(state): State<AdminState>,
    b: Result<Json<Selection>, JsonRejection>,
) -> Response<Body> {
    let selection = match body(b) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let ids = match ids_of(&selection) {
        Ok(ids) => ids,
        Err(e) => return e,
    };
    let pool = &state.app.pool;
    if selection.all {
        let n = pool.reset_all();
        return ok(json!({"reset": n, "not_found": []}));
    }
    let not_found: Vec<String> = ids
        .iter()
        .filter(|id| pool.snapshot(id).is_none())
        .map(KeyId::hex)
        .collect();
    let n = pool.reset(&ids);
    ok(json!({"reset": n, "not_found": not_found}))
}

pub async fn verify_one(State(state): State<AdminState>, Path(id): Path<String>) -> Response<Body> {
    let ids = match ids_of(&Selection {
        ids: vec![id],
        all: false,
    }) {
        Ok(ids) => ids,
        Err(e) => return e,
    };
    let results = verify(&state, ids.clone()).await;
    match results.first() {
        Some(result) => ok(json!(result)),
        None => fail(
            StatusCode::NOT_FOUND,
            format!("no key has the id {}", ids[0].hex()),
        ),
    }
}

pub async fn verify_many(
    State(state): State<AdminState>,
    b: Result<Json<Selection>, JsonRejection>,
) -> Response<Body> {
    let selection = match body(b) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let ids = match ids_of(&selection) {
        Ok(_) if selection.all => state.app.pool.ids(),
        Ok(ids) => ids,
        Err(e) => return e,
    };
    let not_found: Vec<String> = ids
        .iter()
        .filter(|id| state.app.pool.snapshot(id).is_none())
        .map(KeyId::hex)
        .collect();
    let results = verify(&state, ids).await;
    let valid = results.iter().filter(|r| r.ok).count();
    tracing::info!(verified = results.len(), valid, "admin: keys verified");
    ok(json!({"results": results, "not_found": not_found}))
}

/// Probes `ids` with TEST_MODEL, at most [`VERIFY_CONCURRENCY`] at a time, in the given order.
async fn verify(state: &AdminState, ids: Vec<KeyId>) -> Vec<recheck::ProbeResult> {
    let live = state.app.live();
    let test_model: Arc<str> = live.settings.text("TEST_MODEL").into();
    let permits = Arc::new(tokio::sync::Semaphore::new(VERIFY_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, id) in ids.into_iter().enumerate() {
        let (pool, upstream, model, permits) = (
            state.app.pool.clone(),
            live.upstream.clone(),
            test_model.clone(),
            permits.clone(),
        );
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.ok();
            (i, recheck::probe(&pool, &upstream, &model, &id).await)
        });
    }
    let mut results = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, Some(result))) = done {
            results.push((i, result));
        }
    }
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

fn invalid(errors: Vec<crate::settings::Invalid>) -> Response<Body> {
    let message = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    fail(StatusCode::BAD_REQUEST, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_in_pasted_text() {
        let a = format!("AIza{}", "A".repeat(35));
        let b = format!("AIza{}", "b_-9".repeat(8) + "xyz");
        let text = format!("keys:\n{a}, \"{b}\"\n{a}\nAIzaShort and other words");
        assert_eq!(
            extract_keys(&text),
            [a.clone(), b, a, "AIzaShort".to_owned()]
        );
    }
}
