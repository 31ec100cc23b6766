//! What a gateway sends upstream of the client's headers: an allowlist, not a denylist.
//!
//! A gateway in front of Gemini receives whatever its clients' browsers, SDKs and reverse proxies
//! put on a request: session cookies (the admin's among them), `Proxy-Authorization`, CSRF
//! tokens, `X-Forwarded-For` and `Forwarded` with the client's address, a `User-Agent`, headers
//! no one has heard of. None of it is Google's business, and a denylist always misses the next
//! one. [`ForwardHeadersLayer`] removes every request header that is not on a
//! [`HeaderAllowlist`], once, before the key layer adds the pool key and the decode layer
//! `Accept-Encoding`; the HTTP client then adds its own (`Host`, framing, a `User-Agent`, default
//! headers such as the proxy's `CUSTOM_HEADERS`).
//!
//! The default list, [`HeaderAllowlist::GEMINI`], holds what the Gemini API reads and what its SDKs
//! send that changes the answer:
//!
//! | header | why it goes upstream |
//! |---|---|
//! | `content-type` | the body's format |
//! | `content-length` | the body's length, kept exact by every layer that rewrites a body |
//! | `accept` | the format the client reads |
//! | `x-goog-api-client` | the SDK and language (`google-genai-sdk/1.x gl-python/3.x`), a system parameter Google reads |
//! | `x-server-timeout` | the deadline for the answer that the google-genai SDK gives Google (seconds) |
//! | `x-goog-fieldmask` | the system parameter that filters the answer's fields (`$fields`) |
//!
//! Dropped, with the reason:
//!
//! - credentials (`Authorization`, `x-goog-api-key`, `api-key`): the key layer strips the
//!   client's and sets the pool key below this layer;
//! - `x-goog-user-project`: charges the request to the client's Google Cloud project; an API key
//!   cannot, so Google answers `403 PERMISSION_DENIED` and the pool key would take the blame;
//! - `x-http-method-override`: would turn a `POST` into another method at Google's front end;
//! - `x-goog-fieldmask`: filters the answer's fields, and a mask without `usageMetadata` would
//!   hide the request's tokens from the usage record;
//! - the query parameters Google reads as system parameters (`$userProject`, `$httpMethod`,
//!   `access_token`, `oauth_token`, `$ct`, `$fields`, `fields`, `quotaUser`, `prettyPrint`...):
//!   the same headers by another name; only `alt`, `pageSize` and `pageToken` go on;
//! - `Cookie`, `Proxy-Authorization`, CSRF tokens, `X-Forwarded-*`, `Forwarded`, `X-Real-IP`,
//!   `Via`: the client's session, credentials and address, which stay with this hop;
//! - `User-Agent`: the client's software and platform; the gateway's client sends its own;
//! - `Accept-Encoding`: [`DecodeLayer`](crate::decode::DecodeLayer) asks for what it can decode;
//! - the OpenAI SDK's telemetry (`x-stainless-*`), `openai-organization`, `openai-project`,
//!   `openai-beta`: Gemini's OpenAI-compatible endpoint reads none of them;
//! - hop-by-hop headers and anything else not on the list.
//!
//! The Files API's resumable uploads need their own headers
//! ([`HeaderAllowlist::RESUMABLE_UPLOAD`], added with
//! [`with_resumable_upload`](HeaderAllowlist::with_resumable_upload)) on the routes that
//! upload; a gRPC gateway adds `grpc-timeout` and `grpc-encoding`; anything else with
//! [`allow`](HeaderAllowlist::allow).
//!
//! # Example
//!
//! ```
//! use gemini_balance::client::{ForwardHeadersLayer, HeaderAllowlist};
//! use http::{HeaderName, Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let upstream = service_fn(|req: Request<()>| async move {
//!     let names: Vec<String> = req.headers().keys().map(|n| n.to_string()).collect();
//!     Ok::<_, std::convert::Infallible>(Response::new(names))
//! });
//! let gateway = ServiceBuilder::new()
//!     .layer(ForwardHeadersLayer::new(
//!         HeaderAllowlist::gemini().allow(HeaderName::from_static("x-tenant")),
//!     ))
//!     .service(upstream);
//! let req = Request::post("/v1beta/models/gemini-2.5-flash:generateContent")
//!     .header("content-type", "application/json")
//!     .header("x-goog-api-client", "google-genai-sdk/1.20.0 gl-python/3.12.3")
//!     .header("x-tenant", "blue")
//!     .header("cookie", "session=admin")
//!     .header("x-forwarded-for", "203.0.113.7")
//!     .header("user-agent", "curl/8.5.0")
//!     .body(())?;
//! let sent = gateway.oneshot(req).await?.into_body();
//! assert_eq!(sent, ["content-type", "x-goog-api-client", "x-tenant"]);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, Entry, HeaderMap, HeaderName};
use http::Request;
use tower_layer::Layer;
use tower_service::Service;

use crate::order::{self, Misorder};

/// The request headers a gateway sends upstream; every other one is removed.
#[derive(Clone, PartialEq, Eq)]
pub struct HeaderAllowlist {
    names: Arc<[HeaderName]>,
    query: Arc<[&'static str]>,
}

impl HeaderAllowlist {
    /// What the Gemini API reads and its SDKs send that changes the answer; the
    /// [module docs](self) give the reason for each.
    pub const GEMINI: [HeaderName; 5] = [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::ACCEPT,
        HeaderName::from_static("x-goog-api-client"),
        HeaderName::from_static("x-server-timeout"),
    ];

    /// The query parameters the Gemini API reads and its SDKs send: `alt` (`alt=sse` for
    /// streams) and the paging of lists (`pageSize`, `pageToken`). Every other parameter is
    /// removed: Google reads some as the headers this list drops (`$userProject`,
    /// `$httpMethod`, `access_token`, `$ct`, `$fields`/`fields`), and a key in `key=` is the
    /// key layer's to set.
    pub const GEMINI_QUERY: [&'static str; 3] = ["alt", "pageSize", "pageToken"];

    /// The request headers of the Files API's resumable upload protocol, as the google-genai
    /// SDK sends them: the protocol, the command (`start`, `upload`, `finalize`), the offset of a
    /// chunk, the length and type of the whole file, and its name.
    pub const RESUMABLE_UPLOAD: [HeaderName; 6] = [
        HeaderName::from_static("x-goog-upload-protocol"),
        HeaderName::from_static("x-goog-upload-command"),
        HeaderName::from_static("x-goog-upload-offset"),
        HeaderName::from_static("x-goog-upload-header-content-length"),
        HeaderName::from_static("x-goog-upload-header-content-type"),
        HeaderName::from_static("x-goog-upload-file-name"),
    ];

    /// The Gemini list, [`GEMINI`](Self::GEMINI).
    pub fn gemini() -> Self {
        HeaderAllowlist {
            names: Arc::new(Self::GEMINI),
            query: Arc::new(Self::GEMINI_QUERY),
        }
    }

    /// No header at all: build a list of your own with [`allow`](Self::allow).
    pub fn none() -> Self {
        HeaderAllowlist {
            names: Arc::from([]),
            query: Arc::from([]),
        }
    }

    /// `name` is sent upstream too.
    pub fn allow(self, name: HeaderName) -> Self {
        self.allow_all([name])
    }

    /// Every one of `names` is sent upstream too.
    pub fn allow_all(self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        let mut all = self.names.to_vec();
        for name in names {
            if !all.contains(&name) {
                all.push(name);
            }
        }
        HeaderAllowlist {
            names: all.into(),
            query: self.query,
        }
    }

    /// The query parameter `name` is sent upstream too (matched as written, not decoded).
    pub fn allow_query(self, name: &'static str) -> Self {
        let mut all = self.query.to_vec();
        if !all.contains(&name) {
            all.push(name);
        }
        HeaderAllowlist {
            names: self.names,
            query: all.into(),
        }
    }

    /// Whether the query parameter `name` (as written) is sent upstream.
    pub fn allows_query(&self, name: &str) -> bool {
        self.query.contains(&name)
    }

    /// The query of `uri` without the parameters not on the list (`None` when nothing is
    /// removed). A parameter is kept only when its name is written exactly as listed: an
    /// escaped spelling (`%61lt`) is removed, never decoded into a listed one.
    pub fn retain_query(&self, uri: &http::Uri) -> Option<http::Uri> {
        let query = uri.query()?;
        fn name(pair: &str) -> &str {
            pair.split('=').next().unwrap_or("")
        }
        let pairs = query.split('&').filter(|pair| !pair.is_empty());
        if pairs.clone().all(|pair| self.allows_query(name(pair))) && !query.contains("&&") {
            return None;
        }
        let kept: Vec<&str> = pairs.filter(|pair| self.allows_query(name(pair))).collect();
        let path = uri.path();
        let pq = if kept.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", kept.join("&"))
        };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = Some(pq.parse().ok()?);
        http::Uri::from_parts(parts).ok()
    }

    /// The resumable upload headers ([`RESUMABLE_UPLOAD`](Self::RESUMABLE_UPLOAD)) are sent
    /// upstream too: for the routes of the Files API that upload.
    pub fn with_resumable_upload(self) -> Self {
        self.allow_all(Self::RESUMABLE_UPLOAD.iter().cloned())
    }

    /// Whether `name` is sent upstream.
    pub fn allows(&self, name: &HeaderName) -> bool {
        self.names.contains(name)
    }

    /// The names sent upstream.
    pub fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.names.iter()
    }

    /// Removes from `headers` every header not on the list (all values of a name on it stay).
    pub fn retain(&self, headers: &mut HeaderMap) {
        // Most requests from an SDK carry a few headers not on the list; one that carries none
        // is left as it is, without building a new map.
        if headers.keys().all(|name| self.allows(name)) {
            return;
        }
        let mut kept = HeaderMap::with_capacity(self.names.len());
        for name in self.names.iter() {
            if let Entry::Occupied(entry) = headers.entry(name) {
                let (name, values) = entry.remove_entry_mult();
                for value in values {
                    kept.append(name.clone(), value);
                }
            }
        }
        *headers = kept;
    }
}

impl Default for HeaderAllowlist {
    fn default() -> Self {
        Self::gemini()
    }
}

impl fmt::Debug for HeaderAllowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderAllowlist")
            .field("names", &self.names)
            .field("query", &self.query)
            .finish()
    }
}

/// Applies [`ForwardHeaders`]: only the headers of a [`HeaderAllowlist`] go on. See the
/// [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct ForwardHeadersLayer {
    allowlist: HeaderAllowlist,
}

impl ForwardHeadersLayer {
    /// Sends on only the headers of `allowlist`.
    pub fn new(allowlist: HeaderAllowlist) -> Self {
        ForwardHeadersLayer { allowlist }
    }
}

impl<S> Layer<S> for ForwardHeadersLayer {
    type Service = ForwardHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ForwardHeaders {
            inner,
            allowlist: self.allowlist.clone(),
        }
    }
}

/// Removes every request header not on its [`HeaderAllowlist`], then calls the inner service.
#[derive(Debug, Clone)]
pub struct ForwardHeaders<S> {
    inner: S,
    allowlist: HeaderAllowlist,
}

impl<S> ForwardHeaders<S> {
    /// Wraps `inner`, sending on only the headers of `allowlist`.
    pub fn new(inner: S, allowlist: HeaderAllowlist) -> Self {
        ForwardHeaders { inner, allowlist }
    }

    /// The list in use.
    pub fn allowlist(&self) -> &HeaderAllowlist {
        &self.allowlist
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for ForwardHeaders<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        order::below_key_rotation(req.extensions(), Misorder::ForwardHeadersInsideKeyRotation);
        self.allowlist.retain(req.headers_mut());
        if let Some(uri) = self.allowlist.retain_query(req.uri()) {
            *req.uri_mut() = uri;
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                http::HeaderValue::from_static(value),
            );
        }
        map
    }

    #[test]
    fn keeps_what_gemini_reads_and_drops_the_rest() {
        let mut sent = headers(&[
            ("content-type", "application/json"),
            ("content-length", "42"),
            ("accept", "*/*"),
            (
                "x-goog-api-client",
                "google-genai-sdk/1.20.0 gl-python/3.12.3",
            ),
            ("x-server-timeout", "60"),
            ("x-goog-fieldmask", "candidates"),
            ("cookie", "gb_admin_session=0123"),
            ("cookie", "other=1"),
            ("proxy-authorization", "Basic dXNlcjpwdw=="),
            ("x-csrf-token", "abc"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-host", "gateway.example"),
            ("forwarded", "for=203.0.113.7"),
            ("x-real-ip", "203.0.113.7"),
            ("via", "1.1 edge"),
            ("user-agent", "curl/8.5.0"),
            ("authorization", "Bearer sk-client"),
            ("x-goog-api-key", "sk-client"),
            ("api-key", "sk-client"),
            ("x-goog-user-project", "client-project"),
            ("x-http-method-override", "DELETE"),
            ("accept-encoding", "br"),
            ("x-stainless-os", "Linux"),
            ("openai-organization", "org-1"),
            ("x-goog-upload-command", "start"),
            ("x-evil", "1"),
        ]);
        HeaderAllowlist::gemini().retain(&mut sent);
        let mut names: Vec<&str> = sent.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept",
                "content-length",
                "content-type",
                "x-goog-api-client",
                "x-server-timeout"
            ]
        );
        assert_eq!(sent["x-server-timeout"], "60");
    }

    #[test]
    fn every_value_of_a_kept_name_stays() {
        let mut sent = headers(&[("accept", "application/json"), ("accept", "text/plain")]);
        sent.append("x-drop", http::HeaderValue::from_static("1"));
        HeaderAllowlist::gemini().retain(&mut sent);
        let values: Vec<_> = sent.get_all("accept").iter().collect();
        assert_eq!(values, ["application/json", "text/plain"]);
        assert_eq!(sent.len(), 2);
    }

    #[test]
    fn names_can_be_added_and_uploads_opted_into() {
        let list = HeaderAllowlist::gemini()
            .allow(HeaderName::from_static("x-tenant"))
            .allow(HeaderName::from_static("x-tenant"));
        assert_eq!(list.names().count(), HeaderAllowlist::GEMINI.len() + 1);
        assert!(list.allows(&HeaderName::from_static("x-tenant")));
        assert!(!list.allows(&HeaderName::from_static("x-goog-upload-command")));
        let uploads = list.with_resumable_upload();
        for name in &HeaderAllowlist::RESUMABLE_UPLOAD {
            assert!(uploads.allows(name), "{name}");
        }
        let mut sent = headers(&[("content-type", "application/json"), ("x-tenant", "a")]);
        HeaderAllowlist::none().retain(&mut sent);
        assert!(sent.is_empty());
    }

    #[test]
    fn only_the_query_parameters_gemini_reads_go_on() {
        let list = HeaderAllowlist::gemini();
        let cases = [
            ("/m:streamGenerateContent?alt=sse", None),
            ("/models?pageSize=5&pageToken=x", None),
            ("/m", None),
            (
                "/m:generateContent?%24userProject=p&access_token=ya29&alt=sse&%24httpMethod=DELETE&%24ct=text/plain",
                Some("/m:generateContent?alt=sse"),
            ),
            ("/m?$fields=candidates&fields=x&quotaUser=q", Some("/m")),
            ("/m?%61lt=sse&alt=json", Some("/m?alt=json")),
            ("/m?alt=sse&&pageSize=1", Some("/m?alt=sse&pageSize=1")),
        ];
        for (uri, expected) in cases {
            let uri: http::Uri = uri.parse().unwrap();
            let got = list.retain_query(&uri).map(|u| u.to_string());
            assert_eq!(got.as_deref(), expected, "{uri}");
        }
        let wider = HeaderAllowlist::gemini().allow_query("upload_id");
        let uri: http::Uri = "/upload?upload_id=1&x=2".parse().unwrap();
        assert_eq!(
            wider.retain_query(&uri).unwrap().to_string(),
            "/upload?upload_id=1"
        );
    }
}
