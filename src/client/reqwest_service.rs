//! A tower service around `reqwest::Client`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::{PathAndQuery, Uri};
use http::{header, Request, Response};
use tower_service::Service;

/// `reqwest::Client` as a `Service<http::Request<B>>` answering `http::Response<reqwest::Body>`.
///
/// With a [`base_url`](Self::base_url), every request goes there: only its path and query are
/// kept, so a client cannot steer a pool key to another host with an absolute-form URI.
/// Without one, requests must carry absolute URIs. The `Host` header and hop-by-hop headers are
/// dropped, since they describe the client's connection to us, not ours to the upstream.
#[derive(Clone)]
pub struct ReqwestService {
    client: reqwest::Client,
    base: Option<Uri>,
}

impl fmt::Debug for ReqwestService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestService")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The base URL is not an absolute `http`/`https` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidBaseUrl(String);

impl fmt::Display for InvalidBaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid base URL {:?}: expected http(s)://host[:port][/path]",
            self.0
        )
    }
}

impl std::error::Error for InvalidBaseUrl {}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl ReqwestService {
    /// Wraps a client; requests must carry absolute URIs until a base URL is set.
    pub fn new(client: reqwest::Client) -> Self {
        ReqwestService { client, base: None }
    }

    /// Where relative request URIs go, e.g. `https://generativelanguage.googleapis.com`.
    /// A path in the base (`http://host/prefix`) is put before the request's path.
    pub fn base_url(mut self, base: &str) -> Result<Self, InvalidBaseUrl> {
        self.base = Some(parse_base(base)?);
        Ok(self)
    }
}

fn parse_base(base: &str) -> Result<Uri, InvalidBaseUrl> {
    let uri: Uri = base
        .trim_end_matches('/')
        .parse()
        .map_err(|_| InvalidBaseUrl(base.to_owned()))?;
    match uri.scheme_str() {
        Some("http") | Some("https") if uri.authority().is_some() => Ok(uri),
        _ => Err(InvalidBaseUrl(base.to_owned())),
    }
}

/// Where a request goes: onto `base` when there is one, else where its URI says.
fn absolute(base: Option<&Uri>, uri: &Uri) -> Uri {
    let Some(base) = base else {
        return uri.clone();
    };
    // With a base set, only the path and query of the request are used: an absolute-form
    // request (`POST http://elsewhere/...`) must never carry a pool key to another host.
    let prefix = base.path().trim_end_matches('/');
    let pq = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let mut parts = base.clone().into_parts();
    parts.path_and_query = format!("{prefix}{pq}").parse().ok();
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

impl<B> Service<Request<B>> for ReqwestService
where
    B: Into<reqwest::Body>,
{
    type Response = Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        parts.uri = absolute(self.base.as_ref(), &parts.uri);
        // The body is re-framed by the client; a stale length would corrupt a chunked request.
        if parts.headers.contains_key(header::TRANSFER_ENCODING) {
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        parts.headers.remove(header::HOST);
        for name in HOP_BY_HOP {
            parts.headers.remove(*name);
        }
        let request = reqwest::Request::try_from(Request::from_parts(parts, body));
        let client = self.client.clone();
        Box::pin(async move {
            let response = client.execute(request?).await?;
            Ok(Response::from(response))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_relative_uris_onto_the_base() {
        let base = parse_base("http://127.0.0.1:9/prefix/").unwrap();
        let joined = absolute(Some(&base), &"/v1beta/models?x=1".parse().unwrap());
        assert_eq!(
            joined.to_string(),
            "http://127.0.0.1:9/prefix/v1beta/models?x=1"
        );
        // Absolute-form requests are pinned to the base too.
        let elsewhere: Uri = "http://other/x?y=1".parse().unwrap();
        assert_eq!(
            absolute(Some(&base), &elsewhere).to_string(),
            "http://127.0.0.1:9/prefix/x?y=1"
        );
        assert_eq!(absolute(None, &elsewhere), elsewhere);
        assert!(parse_base("ftp://x").is_err());
        assert!(parse_base("/relative").is_err());
    }
}
