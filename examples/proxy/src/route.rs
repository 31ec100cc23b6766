//! What an API request asks for, decided from its request line alone: the route, or the
//! refusal (`400` for a path that would leave its route, `404` for no route, `405` for a method
//! the route does not have).
//!
//! This runs first, before the client's token is checked: it reads nothing secret and no
//! state, the routes are the public Gemini and OpenAI APIs (an unknown path was already a 404
//! before the token check), and a refused request costs no token comparison, no body read, no
//! key, no upstream call and no usage row. What the upstream can be asked is therefore bounded
//! here: a path under one of the routes below, with a method the upstream has for it.
//!
//! | route | methods |
//! |---|---|
//! | `/health`, `/health/ready` | GET, HEAD |
//! | `{mount}/models`, `{mount}/models/{model}`, and below (`.../operations/{id}`) | GET, HEAD |
//! | `{mount}/models/{model}:{method}` (`%3A` for the `:` too) | POST |
//! | `/v1/chat/completions`, `/hf/v1/chat/completions`, `/v1/embeddings`, `/hf/v1/embeddings` | POST |
//! | `/hf/v1/models` | GET, HEAD |
//! | `/openai/v1/models`, `/openai/v1/models/{model}` | GET, HEAD |
//! | `/openai/v1/chat/completions`, `/openai/v1/embeddings`, `/openai/v1/images/generations` | POST |
//!
//! The Gemini mounts are `/gemini/v1beta`, `/v1beta` and `/v1`. Gemini's `models` resource has
//! no other method: everything it does is a `POST` of a `:method`, a `GET` otherwise. The
//! `/openai/v1` routes are those of Gemini's OpenAI-compatible endpoint that Gemini-Balance
//! served, with `GET /models/{model}` (the OpenAI SDK's `models.retrieve`). `/hf/v1/models` is
//! the model list in OpenAI's shape, as `GET /v1/models` gives it to an OpenAI client. A
//! browser's preflight (`OPTIONS` with `Origin`) is answered before this by the CORS layer
//! ([`crate::cors`]); any other `OPTIONS` is refused like any other method the route lacks, and
//! none is ever sent upstream.

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Response, StatusCode};
use gemini_balance::api_error::ApiFlavor;
use gemini_balance::client::{check_path, UnsafePath};

/// OpenAI-compatible routes served by the OpenAI stack.
const OPENAI_ROUTES: &[&str] = &[
    "/v1/chat/completions",
    "/hf/v1/chat/completions",
    "/v1/embeddings",
    "/hf/v1/embeddings",
];

/// The model list in OpenAI's shape under `/hf/v1` (under `/v1` it is a Gemini mount's).
const HF_MODELS: &str = "/hf/v1/models";

/// The readiness probe's path (`/health` is the liveness probe's).
const READY: &str = "/health/ready";

/// Where the Gemini-native API is mounted; the rest of the path goes after BASE_URL.
const GEMINI_MOUNTS: &[&str] = &["/gemini/v1beta", "/v1beta", "/v1"];

/// Under `/openai/v1`: the upstream's OpenAI-compatible routes that are passed through.
const PASSTHROUGH_POST: &[&str] = &["/chat/completions", "/embeddings", "/images/generations"];

/// An API route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /health`.
    Health,
    /// `GET /health/ready`.
    Ready,
    /// Gemini's own API: the path after the mount (`/models/...`, a `%3A` as sent).
    Gemini { rest: &'a str },
    /// OpenAI chat or embeddings, converted to Gemini.
    OpenAi,
    /// `/hf/v1/models`: the Gemini model list, in OpenAI's shape.
    OpenAiModels,
    /// The upstream's OpenAI-compatible endpoint: the path after `/openai/v1` (`/models`).
    Passthrough { rest: &'a str },
}

/// Why a request is refused before anything else happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The path would reach another resource than the route it matches: 400.
    Path(UnsafePath),
    /// No such route: 404.
    NotFound,
    /// The route does not have this method: 405, with the ones it has.
    Method(Methods),
}

/// The methods a route has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Methods {
    /// GET, and HEAD (the upstream's head is passed on).
    Read,
    /// POST.
    Post,
}

impl Methods {
    fn allows(self, method: &Method) -> bool {
        match self {
            Methods::Read => method == Method::GET || method == Method::HEAD,
            Methods::Post => method == Method::POST,
        }
    }

    /// The `Allow` header's value.
    fn allow(self) -> &'static str {
        match self {
            Methods::Read => "GET, HEAD",
            Methods::Post => "POST",
        }
    }
}

/// The route of `method` on `path` (without the query), or why it is refused.
pub fn route<'a>(method: &Method, path: &'a str) -> Result<Route<'a>, Refusal> {
    check_path(path).map_err(Refusal::Path)?;
    let (route, methods) = if path == "/health" {
        (Route::Health, Methods::Read)
    } else if path == READY {
        (Route::Ready, Methods::Read)
    } else if let Some(rest) = gemini_route(path) {
        (Route::Gemini { rest }, gemini_methods(rest))
    } else if OPENAI_ROUTES.contains(&path.trim_end_matches('/')) {
        (Route::OpenAi, Methods::Post)
    } else if path.trim_end_matches('/') == HF_MODELS {
        (Route::OpenAiModels, Methods::Read)
    } else if let Some(rest) = path.strip_prefix("/openai/v1") {
        let methods = passthrough_methods(rest).ok_or(Refusal::NotFound)?;
        (Route::Passthrough { rest }, methods)
    } else {
        return Err(Refusal::NotFound);
    };
    if methods.allows(method) {
        Ok(route)
    } else {
        Err(Refusal::Method(methods))
    }
}

/// Whether [`route`] decides `path` (the server sends these past the router; the rest goes to
/// the admin API, the web admin or the router's 404).
pub fn is_api_path(path: &str) -> bool {
    path == "/health"
        || path == READY
        || gemini_route(path).is_some()
        || OPENAI_ROUTES.contains(&path.trim_end_matches('/'))
        || path.trim_end_matches('/') == HF_MODELS
        || path.starts_with("/openai/v1/")
}

/// The error format of the route family `path` belongs to: a Gemini mount answers in Gemini's
/// whatever its tail looks like (`/v1/models/m:generateContent/embeddings`), the OpenAI routes
/// and `/openai/v1/*` in OpenAI's, anything else as its path suggests.
pub fn flavor(path: &str) -> ApiFlavor {
    if gemini_route(path).is_some() {
        ApiFlavor::Gemini
    } else if OPENAI_ROUTES.contains(&path.trim_end_matches('/'))
        || path.trim_end_matches('/') == HF_MODELS
        || path.starts_with("/openai/v1/")
    {
        ApiFlavor::OpenAi
    } else {
        ApiFlavor::of_path(path)
    }
}

/// The part of a Gemini-native path after its mount (`/v1beta/models` → `/models`).
fn gemini_route(path: &str) -> Option<&str> {
    GEMINI_MOUNTS.iter().find_map(|mount| {
        let rest = path.strip_prefix(mount)?;
        (rest == "/models" || rest.starts_with("/models/")).then_some(rest)
    })
}

/// `POST` for a `:method` (`models/m:generateContent`), `GET` for the rest (`models`,
/// `models/m`, `models/m/operations/id`).
fn gemini_methods(rest: &str) -> Methods {
    let last = rest.rsplit('/').next().unwrap_or(rest);
    let calls_a_method = last.contains(':')
        || last
            .as_bytes()
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"%3a"));
    if calls_a_method {
        Methods::Post
    } else {
        Methods::Read
    }
}

/// The methods of a pass-through route (`rest` is the path after `/openai/v1`), `None` for a
/// path that is not one.
fn passthrough_methods(rest: &str) -> Option<Methods> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if PASSTHROUGH_POST.contains(&rest) {
        return Some(Methods::Post);
    }
    let model = rest.strip_prefix("/models");
    match model {
        Some("") => Some(Methods::Read),
        Some(m) if m.len() > 1 && m.starts_with('/') && !m[1..].contains('/') => {
            Some(Methods::Read)
        }
        _ => None,
    }
}

impl Refusal {
    /// The answer, in the route's error format.
    pub fn response(&self, flavor: ApiFlavor, method: &Method, path: &str) -> Response<Body> {
        match self {
            Refusal::Path(why) => crate::local(flavor, StatusCode::BAD_REQUEST, &why.to_string()),
            Refusal::NotFound => crate::local(
                flavor,
                StatusCode::NOT_FOUND,
                &format!("no route for {path}"),
            ),
            Refusal::Method(methods) => {
                let mut res = crate::local(
                    flavor,
                    StatusCode::METHOD_NOT_ALLOWED,
                    &format!(
                        "{method} is not allowed on {path}: it accepts {}",
                        methods.allow()
                    ),
                );
                res.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(methods.allow()));
                res
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_familys_error_format_does_not_depend_on_its_tail() {
        for path in [
            "/v1/models/gemini-2.0-flash:generateContent/embeddings",
            "/v1beta/models/x/chat/completions",
            "/gemini/v1beta/models",
        ] {
            assert_eq!(flavor(path), ApiFlavor::Gemini, "{path}");
        }
        for path in [
            "/v1/chat/completions/",
            "/hf/v1/embeddings",
            "/openai/v1/models",
            "/v2/chat/completions",
        ] {
            assert_eq!(flavor(path), ApiFlavor::OpenAi, "{path}");
        }
    }

    #[test]
    fn routes_gemini_mounts() {
        assert_eq!(gemini_route("/v1beta/models"), Some("/models"));
        assert_eq!(
            gemini_route("/gemini/v1beta/models/m:generateContent"),
            Some("/models/m:generateContent")
        );
        assert_eq!(
            gemini_route("/v1/models/m%3AgenerateContent"),
            Some("/models/m%3AgenerateContent")
        );
        assert_eq!(gemini_route("/v1/chat/completions"), None);
        assert_eq!(gemini_route("/v1betamodels"), None);
    }

    #[test]
    fn each_route_has_its_methods() {
        let ok = [
            ("GET", "/health"),
            ("HEAD", "/health"),
            ("GET", "/health/ready"),
            ("HEAD", "/health/ready"),
            ("GET", "/v1beta/models"),
            ("HEAD", "/v1beta/models"),
            ("GET", "/v1/models/gemini-2.5-flash"),
            ("GET", "/v1beta/models/veo-2.0-generate-001/operations/abc"),
            ("POST", "/v1beta/models/gemini-2.5-flash:generateContent"),
            (
                "POST",
                "/v1/models/gemini-1.5-pro-002%3AstreamGenerateContent",
            ),
            (
                "POST",
                "/gemini/v1beta/models/text-embedding-004%3abatchEmbedContents",
            ),
            ("POST", "/v1/chat/completions"),
            ("POST", "/hf/v1/chat/completions/"),
            ("POST", "/v1/embeddings"),
            ("GET", "/hf/v1/models"),
            ("HEAD", "/hf/v1/models"),
            ("GET", "/openai/v1/models"),
            ("GET", "/openai/v1/models/gemini-2.5-flash"),
            ("POST", "/openai/v1/chat/completions"),
            ("POST", "/openai/v1/embeddings"),
            ("POST", "/openai/v1/images/generations"),
        ];
        for (method, path) in ok {
            let method: Method = method.parse().unwrap();
            assert!(route(&method, path).is_ok(), "{method} {path}");
        }
        let refused = [
            ("POST", "/health", Methods::Read),
            ("POST", "/health/ready", Methods::Read),
            ("DELETE", "/v1beta/models/gemini-2.5-flash", Methods::Read),
            ("POST", "/v1beta/models", Methods::Read),
            ("PATCH", "/v1beta/models/gemini-2.5-flash", Methods::Read),
            (
                "GET",
                "/v1beta/models/gemini-2.5-flash:generateContent",
                Methods::Post,
            ),
            (
                "HEAD",
                "/v1beta/models/gemini-2.5-flash%3AcountTokens",
                Methods::Post,
            ),
            ("OPTIONS", "/v1/chat/completions", Methods::Post),
            ("GET", "/v1/embeddings", Methods::Post),
            ("POST", "/hf/v1/models", Methods::Read),
            ("PUT", "/openai/v1/chat/completions", Methods::Post),
            ("POST", "/openai/v1/models", Methods::Read),
            (
                "DELETE",
                "/openai/v1/models/gemini-2.5-flash",
                Methods::Read,
            ),
        ];
        for (method, path, allowed) in refused {
            let method: Method = method.parse().unwrap();
            assert_eq!(
                route(&method, path),
                Err(Refusal::Method(allowed)),
                "{method} {path}"
            );
        }
        for path in [
            "/openai/v1/files",
            "/openai/v1/models/a/b",
            "/openai/v1/",
            "/v2/models",
        ] {
            assert_eq!(route(&Method::GET, path), Err(Refusal::NotFound), "{path}");
        }
    }

    #[test]
    fn the_path_is_checked_before_the_route_and_method() {
        assert_eq!(
            route(&Method::DELETE, "/v1beta/models/../tunedModels/x"),
            Err(Refusal::Path(UnsafePath::DotSegment))
        );
        assert_eq!(
            route(&Method::GET, "/nowhere/%2e%2e"),
            Err(Refusal::Path(UnsafePath::Escape("%2e".into())))
        );
    }
}
