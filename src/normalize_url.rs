//! Common client path mistakes fixed before routing: [`NormalizeUrlLayer`] rewrites a request
//! path that is not an API route but plainly means one.
//!
//! Chat front-ends and scripts are configured with a base URL by hand, and the mistakes repeat:
//! a base URL that already ends in `/v1` gets `/v1/chat/completions` appended
//! (`/v1/v1/chat/completions`), the `/v1beta` of a Gemini path is forgotten
//! (`/models/gemini-2.5-flash:generateContent`), Google's own OpenAI base URL is copied
//! (`/v1beta/openai/chat/completions`), or no prefix at all is given (`/chat/completions`).
//! Gemini-Balance fixed these with its `URL_NORMALIZATION_ENABLED` middleware; this is the same
//! set of rules as a tower layer, in this order:
//!
//! | the path (any case) | becomes |
//! |---|---|
//! | a route already (see below) | unchanged |
//! | under a [kept](NormalizeUrlLayer::keep) prefix | unchanged |
//! | mentions `generateContent`, `v1beta/models`, or ends in `/models/{model}:{method}` | `GET`: `/v1beta/models/{model}`, or `/v1beta/models` without one; otherwise `/v1beta/models/{model}:{method}`, the model from `?model=` or the path's `/models/{model}`, the method the path's own or else `generateContent` (`streamGenerateContent` when the path says `stream` or the query `stream=true`) |
//! | contains `/openai/` | `/openai/v1/` + the operation: a `POST` mentioning `chat` or `completion` → `chat/completions`, `embedding` → `embeddings`, `image` → `images/generations`, `audio` → `audio/speech`; a `GET` mentioning `model` → `models` |
//! | contains `/v1/` | the same under `/v1/` |
//! | contains `/chat/completions` | `/v1/chat/completions` |
//!
//! The routes left alone are `/health`, `/v1beta`, `/gemini/v1beta` and `/v1` followed by
//! `/models`, `/models/{model}`, `/models/{model}:{method}` or `/models/{model}/operations/...`,
//! and `/v1`, `/hf/v1` and `/openai/v1` followed by `chat/completions`, `models`, `embeddings`,
//! `images/generations` or `audio/speech` (and `/openai/v1/models/{model}`). The query is kept
//! as sent. A path no rule fits, or whose model name is not a plain name (letters, digits, `-`,
//! `.`, `_`), is left as it is, for the router to refuse. Every rewrite lands on one of the
//! fixed API paths above, never anywhere else; [`keep`](NormalizeUrlLayer::keep) also leaves the
//! paths under a prefix (an admin API, say) as they were sent.
//!
//! ✎ Gemini-Balance rewrote `:countTokens` and `:embedContent` into `:generateContent`; here a
//! path's own method is kept. The layer never reads the body (neither did Gemini-Balance's in
//! practice: the body had not been read when it ran).
//!
//! The request gets a [`RewrittenFrom`] extension holding the URI as sent.
//!
//! # Example
//!
//! ```
//! use http::{Request, Response};
//! use gemini_balance::normalize_url::{NormalizeUrlLayer, RewrittenFrom};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), std::convert::Infallible> {
//! let routes = service_fn(|req: Request<String>| async move {
//!     let sent = req.extensions().get::<RewrittenFrom>().map(|r| r.0.to_string());
//!     Ok::<_, std::convert::Infallible>(Response::new(format!("{} {sent:?}", req.uri())))
//! });
//! let app = ServiceBuilder::new()
//!     .layer(NormalizeUrlLayer::new().keep("/api"))
//!     .service(routes);
//! let req = Request::post("/v1/v1/chat/completions?x=1").body(String::new()).unwrap();
//! let res = app.clone().oneshot(req).await?;
//! assert_eq!(res.body(), r#"/v1/chat/completions?x=1 Some("/v1/v1/chat/completions?x=1")"#);
//!
//! let req = Request::post("/api/v1/chat/completions").body(String::new()).unwrap();
//! let res = app.oneshot(req).await?;
//! assert_eq!(res.body(), "/api/v1/chat/completions None");
//! # Ok(())
//! # }
//! ```
//!
//! Around an axum `Router`, the layer goes outside it (routing must see the fixed path), and
//! the result is served through axum's `ServiceExt`:
//!
//! ```
//! use axum::{extract::Request, routing::post, Router, ServiceExt};
//! use gemini_balance::normalize_url::NormalizeUrlLayer;
//! use tower::Layer;
//!
//! # async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
//! let router = Router::new().route("/v1/chat/completions", post(|| async { "chat" }));
//! let app = NormalizeUrlLayer::new().layer(router);
//! axum::serve(listener, ServiceExt::<Request>::into_make_service(app)).await
//! # }
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use http::{Method, Request, Uri};
use tower_layer::Layer;
use tower_service::Service;

/// The URI a request was sent with, before [`NormalizeUrl`] rewrote its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewrittenFrom(pub Uri);

/// Gemini methods called on a model, as Gemini spells them.
const GEMINI_METHODS: &[&str] = &[
    "generateContent",
    "streamGenerateContent",
    "countTokens",
    "embedContent",
    "batchEmbedContents",
];

/// Where Gemini's own API is mounted.
const GEMINI_MOUNTS: &[&str] = &["/gemini/v1beta", "/v1beta", "/v1"];

/// Where OpenAI's API is mounted.
const OPENAI_MOUNTS: &[&str] = &["/v1", "/hf/v1", "/openai/v1"];

/// OpenAI's operations.
const OPENAI_OPERATIONS: &[&str] = &[
    "/chat/completions",
    "/models",
    "/embeddings",
    "/images/generations",
    "/audio/speech",
];

/// Applies [`NormalizeUrl`]. Cloning the layer shares its configuration.
#[derive(Debug, Clone, Default)]
pub struct NormalizeUrlLayer {
    keep: Arc<[String]>,
}

impl NormalizeUrlLayer {
    /// Fixes every path the rules fit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves `prefix` and every path under it (`/api` keeps `/api` and `/api/...`, not
    /// `/apis`) as sent.
    pub fn keep(mut self, prefix: impl Into<String>) -> Self {
        let mut keep = self.keep.to_vec();
        keep.push(prefix.into().trim_end_matches('/').to_owned());
        self.keep = keep.into();
        self
    }

    /// The path `method` on `uri` is rewritten to, if any (without the query, which is kept).
    pub fn rewrite(&self, method: &Method, uri: &Uri) -> Option<String> {
        let path = uri.path();
        let kept = self.keep.iter().any(|prefix| {
            path.strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        });
        if kept {
            return None;
        }
        normalized_path(method, path, uri.query())
    }
}

impl<S> Layer<S> for NormalizeUrlLayer {
    type Service = NormalizeUrl<S>;

    fn layer(&self, inner: S) -> NormalizeUrl<S> {
        NormalizeUrl {
            inner,
            layer: self.clone(),
        }
    }
}

/// Rewrites mistaken API paths; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct NormalizeUrl<S> {
    inner: S,
    layer: NormalizeUrlLayer,
}

impl<S> NormalizeUrl<S> {
    /// Wraps `inner`, fixing every path the rules fit.
    pub fn new(inner: S) -> Self {
        NormalizeUrlLayer::new().layer(inner)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for NormalizeUrl<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        if let Some(path) = self.layer.rewrite(req.method(), req.uri()) {
            let sent = req.uri().clone();
            if let Some(uri) = with_path(&sent, &path) {
                tracing::debug!(method = %req.method(), from = sent.path(), to = %path, "request path normalised");
                *req.uri_mut() = uri;
                req.extensions_mut().insert(RewrittenFrom(sent));
            }
        }
        self.inner.call(req)
    }
}

/// `uri` with `path` in place of its own, the query kept.
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let pq = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

/// The path a request for `method` on `path` (with `query`) is rewritten to, or `None` when it
/// is left as it is: the rules of the [module docs](self), without [kept](NormalizeUrlLayer::keep)
/// prefixes.
pub(crate) fn normalized_path(method: &Method, path: &str, query: Option<&str>) -> Option<String> {
    if is_route(path) {
        return None;
    }
    // The google-genai SDK sends the `:` of `model:method` as `%3A`.
    let decoded = path.replace("%3A", ":").replace("%3a", ":");
    let lower = decoded.to_ascii_lowercase();
    let read = method == Method::GET || method == Method::HEAD;
    let target = if lower.contains("generatecontent")
        || lower.contains("v1beta/models")
        || called_method(&decoded).is_some()
    {
        gemini(read, &decoded, &lower, query)
    } else if lower.contains("/openai/") {
        openai("/openai/v1", read, &lower)
    } else if lower.contains("/v1/") {
        openai("/v1", read, &lower)
    } else if lower.contains("/chat/completions") {
        Some("/v1/chat/completions".to_owned())
    } else {
        None
    };
    target.filter(|target| target != path)
}

/// A Gemini path: the model list, one model, or a method called on one.
fn gemini(read: bool, path: &str, lower: &str, query: Option<&str>) -> Option<String> {
    let model = query_param(query, "model")
        .filter(|m| is_plain_name(m))
        .or_else(|| path_model(path, lower));
    if read {
        return Some(match model {
            Some(model) => format!("/v1beta/models/{model}"),
            None => "/v1beta/models".to_owned(),
        });
    }
    let model = model?;
    let method = match called_method(path) {
        Some(method) => method,
        None if lower.contains("stream") || query_param(query, "stream") == Some("true") => {
            "streamGenerateContent"
        }
        None => "generateContent",
    };
    Some(format!("/v1beta/models/{model}:{method}"))
}

/// An OpenAI operation under `mount`, by what the path mentions.
fn openai(mount: &str, read: bool, lower: &str) -> Option<String> {
    let operation = if read {
        lower.contains("model").then_some("/models")?
    } else if lower.contains("chat") || lower.contains("completion") {
        "/chat/completions"
    } else if lower.contains("embedding") {
        "/embeddings"
    } else if lower.contains("image") {
        "/images/generations"
    } else if lower.contains("audio") {
        "/audio/speech"
    } else {
        return None;
    };
    Some(format!("{mount}{operation}"))
}

/// `true` for a path that is an API route as it is.
fn is_route(path: &str) -> bool {
    if path == "/health" {
        return true;
    }
    let gemini = GEMINI_MOUNTS.iter().any(|mount| {
        let Some(rest) = path.strip_prefix(mount) else {
            return false;
        };
        if rest == "/models" {
            return true;
        }
        let Some(model) = rest.strip_prefix("/models/") else {
            return false;
        };
        match model.split_once('/') {
            // `models/{model}/operations/{id}` (long-running operations).
            Some((name, tail)) => !name.is_empty() && tail.starts_with("operations/"),
            None => {
                let decoded = model.replace("%3A", ":").replace("%3a", ":");
                match decoded.split_once(':') {
                    Some((name, method)) => !name.is_empty() && GEMINI_METHODS.contains(&method),
                    None => !model.is_empty(),
                }
            }
        }
    });
    gemini
        || OPENAI_MOUNTS.iter().any(|mount| {
            path.strip_prefix(mount).is_some_and(|rest| {
                OPENAI_OPERATIONS.contains(&rest)
                    || (*mount == "/openai/v1"
                        && rest
                            .strip_prefix("/models/")
                            .is_some_and(|m| !m.is_empty() && !m.contains('/')))
            })
        })
}

/// The Gemini method a path ends with (`…/models/m:countTokens` → `countTokens`), in Gemini's
/// spelling whatever the case sent.
fn called_method(path: &str) -> Option<&'static str> {
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    let (_, method) = last.split_once(':')?;
    GEMINI_METHODS
        .iter()
        .find(|m| m.eq_ignore_ascii_case(method))
        .copied()
}

/// The model after `/models/` (any case) in `path`, if it is a plain name.
fn path_model<'a>(path: &'a str, lower: &str) -> Option<&'a str> {
    // `lower` is `path` with ASCII letters lowered: the same byte offsets.
    let start = lower.find("/models/")? + "/models/".len();
    let rest = &path[start..];
    let end = rest.find([':', '/']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|m| is_plain_name(m))
}

/// The value of `name` in a query string, as sent.
fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then_some(value)
    })
}

/// A model name that can go into a path as it is: letters, digits, `-`, `.` and `_`, not
/// starting with a dot.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            // OpenAI: a doubled or missing prefix.
            (
                "POST",
                "/v1/v1/chat/completions",
                Some("/v1/chat/completions"),
            ),
            (
                "POST",
                "/hf/v1/v1/chat/completions",
                Some("/v1/chat/completions"),
            ),
            ("POST", "/chat/completions", Some("/v1/chat/completions")),
            (
                "POST",
                "/api/v2/chat/completions",
                Some("/v1/chat/completions"),
            ),
            ("POST", "/V1/chat/completions", Some("/v1/chat/completions")),
            (
                "POST",
                "/v1/chat/completions/",
                Some("/v1/chat/completions"),
            ),
            ("POST", "/v1/v1/embeddings", Some("/v1/embeddings")),
            (
                "POST",
                "/x/v1/images/generations",
                Some("/v1/images/generations"),
            ),
            ("POST", "/x/v1/audio/speech", Some("/v1/audio/speech")),
            ("GET", "/v1/v1/models", Some("/v1/models")),
            ("HEAD", "/v1/v1/models", Some("/v1/models")),
            ("GET", "/v1/v1/chat/completions", None),
            ("POST", "/v1/v1/moderations", None),
            // Google's OpenAI base URL, or a doubled `/openai/v1`.
            (
                "POST",
                "/v1beta/openai/chat/completions",
                Some("/openai/v1/chat/completions"),
            ),
            (
                "POST",
                "/openai/v1/v1/embeddings",
                Some("/openai/v1/embeddings"),
            ),
            ("GET", "/v1beta/openai/models", Some("/openai/v1/models")),
            (
                "POST",
                "/openai/chat/completions",
                Some("/openai/v1/chat/completions"),
            ),
            // Gemini: a missing or doubled `/v1beta`; the path's own method kept.
            (
                "POST",
                "/models/gemini-2.5-flash:generateContent",
                Some("/v1beta/models/gemini-2.5-flash:generateContent"),
            ),
            (
                "POST",
                "/v1beta/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                Some("/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
            ),
            (
                "POST",
                "/v1/v1beta/models/gemini-2.5-flash:countTokens",
                Some("/v1beta/models/gemini-2.5-flash:countTokens"),
            ),
            (
                "POST",
                "/models/text-embedding-004%3AembedContent",
                Some("/v1beta/models/text-embedding-004:embedContent"),
            ),
            (
                "POST",
                "/models/text-embedding-004:batchembedcontents",
                Some("/v1beta/models/text-embedding-004:batchEmbedContents"),
            ),
            (
                "POST",
                "/v1beta/models/gemini-2.5-flash:generateContent/",
                Some("/v1beta/models/gemini-2.5-flash:generateContent"),
            ),
            (
                "POST",
                "/v1beta/models/gemini-2.5-flash/stream",
                Some("/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
            ),
            ("GET", "/v1/v1beta/models", Some("/v1beta/models")),
            (
                "GET",
                "/api/v1beta/models/gemini-2.5-flash",
                Some("/v1beta/models/gemini-2.5-flash"),
            ),
            // No model to be found, or one that is not a plain name: left for the router.
            ("POST", "/generateContent", None),
            ("POST", "/models/..:generateContent", None),
            ("POST", "/models/a%2Fb:generateContent", None),
            // Routes as they are.
            ("POST", "/v1/chat/completions", None),
            ("POST", "/hf/v1/chat/completions", None),
            ("POST", "/openai/v1/chat/completions", None),
            ("GET", "/openai/v1/models/gemini-2.5-flash", None),
            ("GET", "/hf/v1/models", None),
            ("GET", "/health", None),
            ("GET", "/v1beta/models", None),
            ("GET", "/gemini/v1beta/models/gemini-2.5-flash", None),
            (
                "POST",
                "/v1beta/models/gemini-2.5-flash:generateContent",
                None,
            ),
            (
                "POST",
                "/gemini/v1beta/models/gemini-2.5-flash%3AcountTokens",
                None,
            ),
            (
                "POST",
                "/v1/models/text-embedding-004:batchEmbedContents",
                None,
            ),
            (
                "GET",
                "/v1beta/models/veo-2.0-generate-001/operations/abc",
                None,
            ),
            // Nothing API-like.
            ("GET", "/", None),
            ("GET", "/keys", None),
            ("GET", "/models", None),
            ("GET", "/api/config", None),
            ("GET", "/static/app.js", None),
        ];
        for (method, path, want) in cases {
            let method: Method = method.parse().unwrap();
            assert_eq!(
                normalized_path(&method, path, None).as_deref(),
                *want,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn the_model_and_streaming_may_come_from_the_query() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            (
                "/generateContent",
                "model=gemini-2.5-flash",
                Some("/v1beta/models/gemini-2.5-flash:generateContent"),
            ),
            (
                "/v1beta/models/x/generate",
                "model=gemini-2.5-pro&stream=true",
                Some("/v1beta/models/gemini-2.5-pro:streamGenerateContent"),
            ),
            (
                "/models/gemini-2.5-flash/generatecontent",
                "alt=sse&stream=true",
                Some("/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
            ),
            // A query model that is not a plain name is not used; the path's is.
            (
                "/models/gemini-2.5-flash/generatecontent",
                "model=../x",
                Some("/v1beta/models/gemini-2.5-flash:generateContent"),
            ),
            ("/generateContent", "model=a%2Fb", None),
        ];
        for (path, query, want) in cases {
            assert_eq!(
                normalized_path(&Method::POST, path, Some(query)).as_deref(),
                *want,
                "{path}?{query}"
            );
        }
    }

    #[test]
    fn kept_prefixes_are_left_alone_and_only_they() {
        let layer = NormalizeUrlLayer::new().keep("/api/");
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(
            layer.rewrite(&Method::POST, &uri("/api/v1/chat/completions")),
            None
        );
        assert_eq!(layer.rewrite(&Method::POST, &uri("/api")), None);
        assert_eq!(
            layer
                .rewrite(&Method::POST, &uri("/apis/v1/chat/completions"))
                .as_deref(),
            Some("/v1/chat/completions")
        );
    }

    #[test]
    fn the_query_and_authority_are_kept() {
        let sent: Uri = "http://localhost:8000/v1/v1/chat/completions?key=k&alt=sse"
            .parse()
            .unwrap();
        let uri = with_path(&sent, "/v1/chat/completions").unwrap();
        assert_eq!(
            uri.to_string(),
            "http://localhost:8000/v1/chat/completions?key=k&alt=sse"
        );
    }
}
