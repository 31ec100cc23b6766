//! CORS on the API routes, so that a chat front-end in a browser can call the proxy from its
//! own origin (CORS_ENABLED, CORS_ALLOWED_ORIGINS).
//!
//! Gemini-Balance answers every origin the way Starlette's `CORSMiddleware` does with
//! `allow_origins=["*"]` and `allow_credentials=True`: the request's `Origin` reflected,
//! credentials allowed, every method and header, a preflight answered before any
//! authentication and cached for 600 s. This does the same with tower-http's `CorsLayer`, with
//! one difference on purpose: it covers only the API routes (`/v1beta`, `/gemini/v1beta`,
//! `/v1`, `/hf/v1`, `/openai/v1`, `/health`; see [`crate::route`]). The admin API (`/api/...`)
//! and the web admin authenticate with a session cookie, which a browser sends with any
//! cross-origin request: reflecting every origin with credentials there (as Gemini-Balance did)
//! would let any web page a logged-in admin visits read the admin API. Those answer with no
//! CORS header at all, so browsers keep other origins out. The API routes take a token in a
//! header or the query, which no other page can make a browser send.
//!
//! A request without an `Origin` header (every SDK, `curl`) is served as if there were no CORS:
//! nothing is added. A preflight (`OPTIONS` with `Origin`) is answered `200` here, before the
//! route is matched or a token looked at, so it costs no key, no usage row and no failed
//! authentication. With CORS_ENABLED=false, `OPTIONS` is a `405` like any method a route lacks.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer, ExposeHeaders};

use crate::settings::Settings;

/// How long a browser may keep a preflight's answer (Gemini-Balance's `max_age`).
const MAX_AGE: Duration = Duration::from_secs(600);

/// The CORS layer of the settings, or `None` with CORS_ENABLED=false.
pub fn layer(settings: &Settings) -> Option<CorsLayer> {
    if !settings.bool("CORS_ENABLED") {
        return None;
    }
    let origins = settings.list("CORS_ALLOWED_ORIGINS");
    let allow_origin = if origins.iter().any(|o| o.trim() == "*") {
        AllowOrigin::mirror_request()
    } else {
        // Checked when the setting was read (`check_origin`); compared as browsers send them,
        // without a trailing slash, in any case.
        let origins: Arc<[String]> = origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .collect();
        AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            origins
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
        })
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_credentials(true)
            .allow_methods(AllowMethods::mirror_request())
            .allow_headers(AllowHeaders::mirror_request())
            // `*` exposes every header to a request without credentials (a page sending its
            // token in `Authorization`); `retry-after` is named for one with credentials, where
            // `*` is only a header name. tower-http refuses `*` alone next to credentials.
            .expose_headers(ExposeHeaders::list([
                HeaderName::from_static("*"),
                axum::http::header::RETRY_AFTER,
            ]))
            .max_age(MAX_AGE),
    )
}

/// A CORS_ALLOWED_ORIGINS entry: `*`, `null` (pages from `file:` and sandboxed frames), or an
/// origin as browsers send it: `scheme://host` with an optional `:port`, no path.
pub fn check_origin(entry: &str) -> Result<(), String> {
    let entry = entry.trim();
    if entry == "*" || entry == "null" {
        return Ok(());
    }
    let expected = || {
        format!(
            "origins such as https://chat.example.com or http://localhost:3000 (scheme, host and optional port, no path), \"null\" or \"*\", and {entry:?} is not one"
        )
    };
    let uri: axum::http::Uri = entry.parse().map_err(|_| expected())?;
    let path_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
    if uri.scheme().is_none() || uri.host().is_none_or(str::is_empty) || !path_ok {
        return Err(expected());
    }
    if HeaderValue::from_str(entry).is_err() {
        return Err(expected());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        for ok in [
            "*",
            "null",
            "https://chat.example.com",
            "http://localhost:3000",
            "http://127.0.0.1:8080/",
            "tauri://localhost",
            "chrome-extension://abcdefghijklmnop",
        ] {
            assert_eq!(check_origin(ok), Ok(()), "{ok}");
        }
        for bad in [
            "chat.example.com",
            "https://chat.example.com/app",
            "https://chat.example.com?x=1",
            "https://",
            "",
            "http://exa mple.com",
        ] {
            let err = check_origin(bad).unwrap_err();
            assert!(err.contains("origins such as"), "{bad}: {err}");
        }
    }
}
