//! Client authentication: ALLOWED_TOKENS and AUTH_TOKEN, from any of the places SDKs put them.

use axum::http::{header, Request};

/// The tokens a client may present. Compared in constant time.
pub struct ClientTokens {
    tokens: Vec<Vec<u8>>,
}

impl ClientTokens {
    pub fn new(allowed: &[String], auth_token: Option<&str>) -> Self {
        let mut tokens: Vec<Vec<u8>> = allowed.iter().map(|t| t.as_bytes().to_vec()).collect();
        tokens.extend(auth_token.map(|t| t.as_bytes().to_vec()));
        tokens.retain(|t| !t.is_empty());
        ClientTokens { tokens }
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// `true` when `candidate` is one of the tokens (the web admin's login form).
    pub fn accepts_token(&self, candidate: &[u8]) -> bool {
        self.tokens.iter().fold(false, |found, token| {
            found | constant_time_eq(token, candidate)
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
    pub fn accepted<B>(&self, req: &Request<B>) -> Option<(String, Placement)> {
        presented(req)
            .find(|(candidate, _)| {
                // Check every token, so the time taken does not say which one nearly matched.
                self.tokens.iter().fold(false, |found, token| {
                    found | constant_time_eq(token, candidate)
                })
            })
            .map(|(token, placement)| (String::from_utf8_lossy(token).into_owned(), placement))
    }
}

impl ClientTokens {
    /// Like [`accepted`](Self::accepted), from headers only (`Authorization: Bearer` or
    /// `x-goog-api-key`): for the admin API, where a token in the URL would end up in logs.
    pub fn accepted_header(&self, headers: &axum::http::HeaderMap) -> Option<Placement> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .and_then(|v| v.strip_prefix(b"Bearer "))
            .map(|v| (v, Placement::Bearer));
        let goog = headers
            .get("x-goog-api-key")
            .map(|v| (v.as_bytes(), Placement::Google));
        bearer
            .into_iter()
            .chain(goog)
            .find(|(candidate, _)| {
                self.tokens.iter().fold(false, |found, token| {
                    found | constant_time_eq(token, candidate)
                })
            })
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

fn presented<B>(req: &Request<B>) -> impl Iterator<Item = (&[u8], Placement)> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .map(|v| (v.strip_prefix(b"Bearer ").unwrap_or(v), Placement::Bearer));
    let goog = req
        .headers()
        .get("x-goog-api-key")
        .map(|v| (v.as_bytes(), Placement::Google));
    let query = req.uri().query().into_iter().flat_map(|q| {
        q.split('&')
            .filter_map(|pair| pair.strip_prefix("key="))
            .map(|token| (token.as_bytes(), Placement::Google))
    });
    bearer.into_iter().chain(goog).chain(query)
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
    }
}
