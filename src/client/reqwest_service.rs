//! A tower service around `reqwest::Client`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::Uri;
use http::{header, Request, Response};
use tower_service::Service;

use super::base_url::{BaseUrl, InvalidBaseUrl};
use super::hop_by_hop::remove_hop_by_hop;

/// `reqwest::Client` as a `Service<http::Request<B>>` answering `http::Response<reqwest::Body>`.
///
/// With a [`base_url`](Self::base_url), every request goes there: only its path and query are
/// kept, so a client cannot steer a pool key to another host with an absolute-form URI.
/// Without one, requests must carry absolute URIs. The `Host` header and hop-by-hop headers are
/// dropped, since they describe the client's connection to us, not ours to the upstream. In a
/// gateway, put [`ForwardHeadersLayer`](super::ForwardHeadersLayer) above the key layer so that
/// only the headers Gemini reads reach this service.
///
/// # Example
///
/// ```no_run
/// use bytes::Bytes;
/// use gemini_balance::{client::ReqwestService, keys::{KeyPool, KeyRotationLayer}, retry::RetryLayer};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let pool = KeyPool::builder().keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv"]).build()?;
/// let gemini = ServiceBuilder::new()
///     .layer(RetryLayer::new())
///     .layer(KeyRotationLayer::new(pool))
///     .service(ReqwestService::new(reqwest::Client::new())
///         .base_url("https://generativelanguage.googleapis.com")?);
///
/// let req = http::Request::post("/v1beta/models/gemini-2.0-flash:generateContent")
///     .header("content-type", "application/json")
///     .body(reqwest::Body::from(Bytes::from_static(br#"{"contents":[{"parts":[{"text":"hi"}]}]}"#)))?;
/// let res = gemini.oneshot(req).await?;
/// println!("{}", res.status());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ReqwestService {
    client: reqwest::Client,
    base: Option<BaseUrl>,
}

impl fmt::Debug for ReqwestService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestService")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl ReqwestService {
    /// Wraps a client; requests must carry absolute URIs until a base URL is set.
    pub fn new(client: reqwest::Client) -> Self {
        ReqwestService { client, base: None }
    }

    /// A client whose requests all go under `base`.
    #[cfg(feature = "upstream")]
    pub(crate) fn with_base(client: reqwest::Client, base: BaseUrl) -> Self {
        ReqwestService {
            client,
            base: Some(base),
        }
    }

    /// Where relative request URIs go, e.g. `https://generativelanguage.googleapis.com`.
    /// A path in the base (`http://host/prefix`) is put before the request's path.
    pub fn base_url(mut self, base: &str) -> Result<Self, InvalidBaseUrl> {
        self.base = Some(BaseUrl::parse(base)?);
        Ok(self)
    }
}

/// Where a request goes: onto `base` when there is one, else where its URI says.
fn absolute(base: Option<&BaseUrl>, uri: &Uri) -> Uri {
    let Some(base) = base else {
        return uri.clone();
    };
    // Never the request's own URI, which may name another host: if the join ever failed, the
    // bare path and query are relative, and reqwest refuses them.
    base.join(uri).unwrap_or_else(|_| {
        uri.path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()))
    })
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
        remove_hop_by_hop(&mut parts.headers);
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
    fn pins_requests_to_the_base_or_leaves_them_without_one() {
        let base = BaseUrl::parse("http://127.0.0.1:9/prefix/").unwrap();
        let elsewhere: Uri = "http://other/x?y=1".parse().unwrap();
        assert_eq!(
            absolute(Some(&base), &elsewhere).to_string(),
            "http://127.0.0.1:9/prefix/x?y=1"
        );
        assert_eq!(absolute(None, &elsewhere), elsewhere);
    }
}
