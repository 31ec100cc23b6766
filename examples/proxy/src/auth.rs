//! Client authentication: ALLOWED_TOKENS and AUTH_TOKEN, from any of the places SDKs put them.

use axum::http::{header, HeaderMap, Request};
use gemini_balance::usage::ClientId;

/// The tokens a client may present, each with its fingerprint (computed once, not per
/// request). Compared in constant time.
pub struct ClientTokens {
    tokens: Vec<(Vec<u8>, ClientId)>,
}

impl ClientTokens {
    pub fn new(allowed: &[String], auth_token: Option<&str>) -> Self {
        let tokens = allowed
            .iter()
            .map(String::as_str)
            .chain(auth_token)
            .filter(|t| !t.is_empty())
            .map(|t| (t.as_bytes().to_vec(), ClientId::of(t)))
            .collect();
        ClientTokens { tokens }
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// `true` when `candidate` is one of the tokens. Every token is compared, so the time
    /// taken does not say which one nearly matched.
    pub fn accepts_token(&self, candidate: &[u8]) -> bool {
        self.matching(candidate).is_some()
    }

    /// The id of the token equal to `candidate`. Every token is compared.
    fn matching(&self, candidate: &[u8]) -> Option<&ClientId> {
        self.tokens.iter().fold(None, |found, (token, id)| {
            let equal = constant_time_eq(token, candidate);
            found.or(equal.then_some(id))
        })
    }

    /// `true` when the request carries an accepted token as `Authorization: Bearer`,
    /// `x-goog-api-key` or `?key=`.
    #[cfg(test)]
    pub fn accepts<B>(&self, req: &Request<B>) -> bool {
        self.accepted(req).is_some()
    }

    /// The accepted token the request carries (as `Authorization: Bearer`, `x-goog-api-key` or
    /// `?key=`), if any, and where it was.
    pub fn accepted<B>(&self, req: &Request<B>) -> Option<(ClientId, Placement)> {
        let query = req.uri().query().into_iter().flat_map(|q| {
            q.split('&')
                .filter_map(|pair| pair.strip_prefix("key="))
                .map(|token| (token.as_bytes(), Placement::Google))
        });
        in_headers(req.headers())
            .chain(query)
            .find_map(|(candidate, placement)| Some((self.matching(candidate)?.clone(), placement)))
    }

    /// Like [`accepted`](Self::accepted), from headers only (`Authorization: Bearer` or
    /// `x-goog-api-key`): for the admin API, where a token in the URL would end up in logs.
    pub fn accepted_header(&self, headers: &HeaderMap) -> Option<Placement> {
        in_headers(headers)
            .find(|(candidate, _)| self.accepts_token(candidate))
            .map(|(_, placement)| placement)
    }
}

/// Where a client put its token: it says which API's conventions the client follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// `Authorization: Bearer` (OpenAI clients).
    Bearer,
    /// `x-goog-api-key` or `?key=` (Gemini clients).
    Google,
}

/// The tokens in `Authorization: Bearer` and `x-goog-api-key`.
fn in_headers(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], Placement)> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .map(|v| (v.strip_prefix(b"Bearer ").unwrap_or(v), Placement::Bearer));
    let goog = headers
        .get("x-goog-api-key")
        .map(|v| (v.as_bytes(), Placement::Google));
    bearer.into_iter().chain(goog)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_placement() {
        let tokens = ClientTokens::new(&["sk-1".to_owned()], Some("admin"));
        let ok = [
            Request::get("/x").header("authorization", "Bearer sk-1"),
            Request::get("/x").header("x-goog-api-key", "admin"),
            Request::get("/x?alt=sse&key=sk-1"),
        ];
        for req in ok {
            assert!(tokens.accepts(&req.body(()).unwrap()));
        }
        let bad = [
            Request::get("/x").header("authorization", "Bearer sk-2"),
            Request::get("/x?key=sk-"),
            Request::get("/x"),
        ];
        for req in bad {
            assert!(!tokens.accepts(&req.body(()).unwrap()));
        }
        assert!(!ClientTokens::new(&[], None).accepts(&Request::get("/x?key=").body(()).unwrap()));
        // The admin API reads headers only: a token in the URL is not accepted there.
        let in_url = Request::get("/x?key=admin").body(()).unwrap();
        assert!(tokens.accepted_header(in_url.headers()).is_none());
        let in_header = Request::get("/x")
            .header("x-goog-api-key", "admin")
            .body(())
            .unwrap();
        assert_eq!(
            tokens.accepted_header(in_header.headers()),
            Some(Placement::Google)
        );
    }
}
