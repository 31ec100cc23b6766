//! Client tokens: who may use the pool. [`ClientAuthLayer`] lets a request through only with one
//! of the tokens you allow, found wherever the SDKs put it (`Authorization: Bearer` for OpenAI
//! clients, `x-goog-api-key` or `?key=` for Gemini ones), names the client by its fingerprint
//! ([`ClientId`], which the usage records carry) and takes the token out of the request, so
//! that neither your handler nor the upstream ever sees it. Anything else gets a `401` in the
//! route's API format ([`ApiFlavor`]), and the inner service is not called: no key is used and
//! no usage record is written.
//!
//! Gemini-Balance's `ALLOWED_TOKENS` (and its `AUTH_TOKEN`, which is accepted on the API routes
//! too) are such a list. Every allowed token is compared with the one given, each comparison in time
//! that depends only on the lengths, so the time an answer takes does not tell a guesser how
//! many characters a guess got right, nor which token it was near. Limiting guesses per address is
//! left to what sits in front (the bundled proxy has its own limiter).
//!
//! Put it outside the rest of the stack: with axum, `route_layer` it after the [`GeminiStack`]
//! (the layer added last is the outermost), so the usage records know the client.
//!
//! [`GeminiStack`]: crate::stack::GeminiStack
//!
//! # Example
//!
//! ```
//! use axum::{routing::post, Router};
//! use gemini_balance::auth::{ClientAuthLayer, ClientTokens};
//! use gemini_balance::keys::KeyPool;
//! use gemini_balance::stack::GeminiStack;
//! use gemini_balance::{retry::RetryLayer, store::MemoryStore, usage::UsageLayer};
//!
//! # fn build() -> Result<Router, Box<dyn std::error::Error>> {
//! let pool = KeyPool::builder()
//!     .keys(["AIzaSyA1234567890abcdefghijklmnopqrstuv"])
//!     .build()?;
//! let tokens = ClientTokens::new(["sk-team-a-0123456789", "sk-team-b-0123456789"]);
//! let app = Router::new().route(
//!     "/v1beta/models/{action}",
//!     post(|| async { "your handler" })
//!         .route_layer(
//!             GeminiStack::new()
//!                 .usage(UsageLayer::new(MemoryStore::new()))
//!                 .retry(RetryLayer::new())
//!                 .keys(pool),
//!         )
//!         // Added last, so it runs first.
//!         .route_layer(ClientAuthLayer::new(tokens)),
//! );
//! # Ok(app)
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::api_error::{error_response, ApiFlavor};
use crate::body::ResponseBody;
use crate::fingerprint::ClientId;

/// What a refused request is told.
const REFUSAL: &str = "missing or invalid client token: send an allowed token as \
                       Authorization: Bearer, x-goog-api-key or ?key=";

/// The tokens clients may present, each with its fingerprint (computed once, not per request).
///
/// `Debug` shows only the fingerprints.
///
/// ```
/// use gemini_balance::auth::{ClientTokens, TokenPlacement};
/// use http::Request;
///
/// let tokens = ClientTokens::new(["sk-team-a-0123456789"]);
/// let req = Request::get("/v1beta/models?key=sk-team-a-0123456789").body(()).unwrap();
/// let (client, placement) = tokens.accepted(&req).unwrap();
/// assert_eq!(client.mask(), "sk-t…6789");
/// assert_eq!(placement, TokenPlacement::Google);
/// let wrong = Request::get("/v1beta/models").header("authorization", "Bearer sk-nope").body(()).unwrap();
/// assert!(tokens.accepted(&wrong).is_none());
/// ```
#[derive(Clone, Default)]
pub struct ClientTokens {
    tokens: Arc<[(Box<[u8]>, ClientId)]>,
}

impl fmt::Debug for ClientTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.tokens.iter().map(|(_, id)| id))
            .finish()
    }
}

impl ClientTokens {
    /// The allowed tokens; empty ones are skipped.
    pub fn new<I, T>(tokens: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let tokens = tokens
            .into_iter()
            .filter(|t| !t.as_ref().is_empty())
            .map(|t| {
                let t = t.as_ref();
                (t.as_bytes().into(), ClientId::of(t))
            })
            .collect();
        ClientTokens { tokens }
    }

    /// The ids of the allowed tokens (never the tokens), in the order given.
    pub fn ids(&self) -> impl Iterator<Item = &ClientId> {
        self.tokens.iter().map(|(_, id)| id)
    }

    /// `true` when no token is allowed (every request would be refused).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The id of the allowed token equal to `candidate`. Every token is compared, so the time
    /// taken does not say which one nearly matched.
    pub fn matching(&self, candidate: &[u8]) -> Option<&ClientId> {
        self.tokens.iter().fold(None, |found, (token, id)| {
            let equal = constant_time_eq(token, candidate);
            found.or(equal.then_some(id))
        })
    }

    /// The client whose allowed token the request carries (as `Authorization: Bearer`,
    /// `x-goog-api-key` or `?key=`), and where it was.
    pub fn accepted<B>(&self, req: &Request<B>) -> Option<(ClientId, TokenPlacement)> {
        let query = req.uri().query().into_iter().flat_map(|q| {
            q.split('&')
                .filter_map(|pair| pair.strip_prefix("key="))
                .map(|token| (token.as_bytes(), TokenPlacement::Google))
        });
        in_headers(req.headers())
            .chain(query)
            .find_map(|(candidate, placement)| Some((self.matching(candidate)?.clone(), placement)))
    }

    /// Like [`accepted`](Self::accepted), from the headers only: for an admin API, where a
    /// token in the URL would end up in access logs.
    pub fn accepted_header(&self, headers: &HeaderMap) -> Option<(ClientId, TokenPlacement)> {
        in_headers(headers)
            .find_map(|(candidate, placement)| Some((self.matching(candidate)?.clone(), placement)))
    }
}

/// Where a client put its token, which says whose conventions the client follows. A request
/// extension after [`ClientAuth`] let the request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenPlacement {
    /// `Authorization: Bearer` (OpenAI clients).
    Bearer,
    /// `x-goog-api-key` or `?key=` (Gemini clients).
    Google,
}

/// The tokens in `Authorization: Bearer` and `x-goog-api-key`.
fn in_headers(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], TokenPlacement)> {
    // The scheme's name is case-insensitive (RFC 9110); a bare value counts as the token, as
    // Gemini-Balance took it.
    let bearer = headers.get(header::AUTHORIZATION).map(|v| {
        let v = v.as_bytes();
        let token = match v.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &v[7..],
            _ => v,
        };
        (token, TokenPlacement::Bearer)
    });
    let goog = headers
        .get("x-goog-api-key")
        .map(|v| (v.as_bytes(), TokenPlacement::Google));
    bearer.into_iter().chain(goog)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Applies [`ClientAuth`]; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ClientAuthLayer {
    tokens: ClientTokens,
}

impl ClientAuthLayer {
    /// Lets through the requests that carry one of `tokens`.
    pub fn new(tokens: ClientTokens) -> Self {
        ClientAuthLayer { tokens }
    }
}

impl<S> Layer<S> for ClientAuthLayer {
    type Service = ClientAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientAuth {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// Lets a request through only with an allowed client token; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ClientAuth<S> {
    inner: S,
    tokens: ClientTokens,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ClientAuth<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let Some((client, placement)) = self.tokens.accepted(&req) else {
            let res = error_response(ApiFlavor::of(&req), StatusCode::UNAUTHORIZED, REFUSAL);
            return ResponseFuture {
                state: State::Refused { res: Some(res) },
            };
        };
        crate::keys::strip_client_credentials(&mut req);
        req.extensions_mut().insert(client);
        req.extensions_mut().insert(placement);
        ResponseFuture {
            state: State::Inner {
                future: self.inner.call(req),
            },
        }
    }
}

pin_project! {
    /// Response future of [`ClientAuth`]: the inner service's, or the `401` it answered itself.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] future: F },
        Refused { res: Option<Response<Bytes>> },
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future
                .poll(cx)
                .map(|res| res.map(|res| res.map(ResponseBody::inner))),
            StateProj::Refused { res } => {
                match res.take().map(|res| res.map(ResponseBody::full)) {
                    Some(res) => Poll::Ready(Ok(res)),
                    // Polled again after it was ready: an empty 401, never a panic.
                    None => {
                        let mut res = Response::new(ResponseBody::full(Bytes::new()));
                        *res.status_mut() = StatusCode::UNAUTHORIZED;
                        Poll::Ready(Ok(res))
                    }
                }
            }
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    #[test]
    fn accepts_every_placement_and_nothing_else() {
        let tokens = ClientTokens::new(["sk-1", "admin", ""]);
        let ok = [
            (
                Request::get("/x").header("authorization", "Bearer sk-1"),
                TokenPlacement::Bearer,
            ),
            (
                Request::get("/x").header("authorization", "bearer sk-1"),
                TokenPlacement::Bearer,
            ),
            (
                Request::get("/x").header("x-goog-api-key", "admin"),
                TokenPlacement::Google,
            ),
            (Request::get("/x?alt=sse&key=sk-1"), TokenPlacement::Google),
        ];
        for (req, placement) in ok {
            let req = req.body(()).unwrap();
            assert_eq!(tokens.accepted(&req).map(|(_, p)| p), Some(placement));
        }
        let bad = [
            Request::get("/x").header("authorization", "Bearer sk-2"),
            Request::get("/x?key=sk-"),
            Request::get("/x?key="),
            Request::get("/x"),
        ];
        for req in bad {
            assert!(tokens.accepted(&req.body(()).unwrap()).is_none());
        }
        // Headers only: a token in the URL is not taken there.
        let in_url = Request::get("/x?key=admin").body(()).unwrap();
        assert!(tokens.accepted_header(in_url.headers()).is_none());
        let in_header = Request::get("/x")
            .header("x-goog-api-key", "admin")
            .body(())
            .unwrap();
        let (client, placement) = tokens.accepted_header(in_header.headers()).unwrap();
        assert_eq!(
            (client, placement),
            (ClientId::of("admin"), TokenPlacement::Google)
        );
        assert_eq!(
            format!("{tokens:?}"),
            format!("[{:?}, {:?}]", ClientId::of("sk-1"), ClientId::of("admin"))
        );
    }

    #[tokio::test]
    async fn the_inner_service_gets_the_client_and_never_the_token() {
        let tokens = ClientTokens::new(["sk-client-0123456789"]);
        let inner = tower::service_fn(|req: Request<()>| async move {
            let headers = req.headers();
            assert!(headers.get(header::AUTHORIZATION).is_none());
            assert!(headers.get("x-goog-api-key").is_none());
            assert!(
                !req.uri().to_string().contains("sk-client"),
                "{}",
                req.uri()
            );
            assert_eq!(req.uri().query(), Some("alt=sse"));
            let client = req.extensions().get::<ClientId>().cloned();
            let placement = req.extensions().get::<TokenPlacement>().copied();
            assert_eq!(client, Some(ClientId::of("sk-client-0123456789")));
            Ok::<_, Infallible>(Response::new(format!("{placement:?}")))
        });
        let service = ClientAuthLayer::new(tokens).layer(inner);
        for (req, placement) in [
            (
                Request::post(
                    "/v1beta/models/m:streamGenerateContent?alt=sse&key=sk-client-0123456789",
                ),
                "Some(Google)",
            ),
            (
                Request::post("/v1beta/models/m:streamGenerateContent?alt=sse")
                    .header("authorization", "Bearer sk-client-0123456789"),
                "Some(Bearer)",
            ),
        ] {
            let res = service
                .clone()
                .oneshot(req.body(()).unwrap())
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap();
            assert_eq!(body.to_bytes(), placement);
        }
        // Refused: the inner service is not called, the answer is Gemini's or OpenAI's 401.
        let refuse = tower::service_fn(|_: Request<()>| async {
            panic!("a refused request reached the inner service");
            #[allow(unreachable_code)]
            Ok::<_, Infallible>(Response::new(String::new()))
        });
        let service =
            ClientAuthLayer::new(ClientTokens::new(["sk-client-0123456789"])).layer(refuse);
        for (path, field) in [
            ("/v1beta/models/m:generateContent", "status"),
            ("/v1/chat/completions", "type"),
        ] {
            let req = Request::post(path)
                .header("x-goog-api-key", "sk-client-012345678")
                .body(())
                .unwrap();
            let res = service.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(json["error"][field].is_string(), "{json}");
        }
    }
}
