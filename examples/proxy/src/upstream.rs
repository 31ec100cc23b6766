//! The upstream service: Gemini reached directly, or through one of the outbound `PROXIES`.
//!
//! Each proxy gets its own pooled `reqwest::Client`, built once at startup, so connections to a
//! proxy are reused like direct ones. Which proxy a request takes is decided per request:
//!
//! - `PROXIES_USE_CONSISTENCY_HASH_BY_API_KEY=true`: by the key the key-rotation layer chose
//!   (its [`KeyId`] travels in the request's extensions). The digest of the key's id is
//!   SHA-256 based, so a key keeps its proxy across restarts, unlike the Python server, whose
//!   `hash()` is salted per process and moves every key on each restart.
//! - otherwise round-robin over the proxies.
//!
//! Requests without a key id (none should reach here) take the round-robin path.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{Request, Response};
use gemini_balance::client::ReqwestService;
use gemini_balance::keys::KeyId;
use tower::Service;

/// Proxy URL schemes accepted in `PROXIES`.
const SCHEMES: &[&str] = &["http", "https", "socks5", "socks5h"];

/// How a proxy is chosen for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spread {
    /// The key's stable id, modulo the number of proxies.
    ByKey,
    /// One after another.
    RoundRobin,
}

/// Sends each request through its route: the direct client, or the client of one proxy.
#[derive(Clone, Debug)]
pub struct Upstream {
    routes: Arc<[ReqwestService]>,
    spread: Spread,
    next: Arc<AtomicUsize>,
}

impl Upstream {
    /// One client from `client()` per proxy in `proxies` (none: one direct client), each sending
    /// to `base_url`. An entry that is not a proxy URL is an error naming PROXIES and its
    /// position (never its text, which may hold a password).
    pub fn build(
        client: impl Fn() -> reqwest::ClientBuilder,
        proxies: &[String],
        by_key: bool,
        base_url: &str,
    ) -> Result<Upstream, String> {
        let mut routes = Vec::with_capacity(proxies.len().max(1));
        if proxies.is_empty() {
            let built = client().build().map_err(|e| {
                format!("TIME_OUT/CUSTOM_HEADERS: the HTTP client could not be built: {e}")
            })?;
            routes.push(built);
        }
        for (i, url) in proxies.iter().enumerate() {
            let proxy = parse_proxy(url).map_err(|e| format!("PROXIES: entry #{}: {e}", i + 1))?;
            let built = client()
                .proxy(proxy)
                .build()
                .map_err(|e| format!("PROXIES: entry #{}: {e}", i + 1))?;
            routes.push(built);
        }
        let routes = routes
            .into_iter()
            .map(|c| ReqwestService::new(c).base_url(base_url))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("BASE_URL: {e}"))?;
        Ok(Upstream {
            routes: routes.into(),
            spread: if by_key {
                Spread::ByKey
            } else {
                Spread::RoundRobin
            },
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// How many routes there are (1 when there are no proxies).
    #[cfg(test)]
    fn routes(&self) -> usize {
        self.routes.len()
    }

    /// The route a request with this key id (if any) takes.
    fn pick(&self, key: Option<&KeyId>) -> usize {
        let n = self.routes.len();
        match (self.spread, key) {
            _ if n <= 1 => 0,
            (Spread::ByKey, Some(id)) => route_of(id, n),
            _ => self.next.fetch_add(1, Ordering::Relaxed) % n,
        }
    }
}

/// The proxy of a key among `n`: stable across restarts and machines.
pub fn route_of(id: &KeyId, n: usize) -> usize {
    // `n` is a count of configured proxies: it fits in u64, and the remainder fits in usize.
    (id.digest() % n as u64) as usize
}

/// A `PROXIES` entry as a reqwest proxy; the error never repeats the URL.
fn parse_proxy(url: &str) -> Result<reqwest::Proxy, String> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some(s) if SCHEMES.contains(&s) => {}
        _ => {
            return Err(format!(
                "expected a proxy URL starting with {}",
                SCHEMES
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("not a valid proxy URL ({e})"))
        .and_then(|u| match u.host_str() {
            Some(h) if !h.is_empty() => Ok(u),
            _ => Err("the proxy URL has no host".to_owned()),
        })?;
    reqwest::Proxy::all(parsed).map_err(|_| "not a usable proxy URL".to_owned())
}

impl<B> Service<Request<B>> for Upstream
where
    B: Into<reqwest::Body>,
{
    type Response = Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = <ReqwestService as Service<Request<B>>>::Future;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let route = self.pick(req.extensions().get::<KeyId>());
        let mut service = self.routes[route].clone();
        service.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(proxies: &[&str], by_key: bool) -> Result<Upstream, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let proxies: Vec<String> = proxies.iter().map(|p| (*p).to_owned()).collect();
        Upstream::build(
            reqwest::Client::builder,
            &proxies,
            by_key,
            "http://127.0.0.1:9/v1beta",
        )
    }

    #[test]
    fn accepts_http_https_and_socks_urls() {
        let up = upstream(
            &[
                "http://127.0.0.1:3128",
                "https://user:pw@proxy.example:443",
                "socks5://127.0.0.1:1080",
                "SOCKS5H://user:pw@127.0.0.1:1080",
            ],
            true,
        )
        .unwrap();
        assert_eq!(up.routes(), 4);
        assert_eq!(upstream(&[], true).unwrap().routes(), 1);
    }

    #[test]
    fn refuses_other_entries_without_repeating_them() {
        for bad in [
            "127.0.0.1:3128",
            "ftp://secret-password@host:21",
            "socks4://127.0.0.1:1080",
            "http://",
            "http://[::1",
        ] {
            let err = upstream(&["http://127.0.0.1:1", bad], true).unwrap_err();
            assert!(err.starts_with("PROXIES: entry #2: "), "{bad}: {err}");
            assert!(!err.contains("secret-password"), "{err}");
        }
    }

    #[test]
    fn a_key_keeps_its_proxy_and_keys_spread() {
        let up = upstream(&["http://127.0.0.1:1", "http://127.0.0.1:2"], true).unwrap();
        let ids: Vec<KeyId> = (0..32)
            .map(|i| KeyId::of(&format!("AIzaSyKey_{i:033}")))
            .collect();
        for id in &ids {
            let first = up.pick(Some(id));
            assert_eq!(up.pick(Some(id)), first);
            // Stable across processes: the id is a digest of the key, not a salted hash.
            let rebuilt = KeyId::from_hex(&id.hex(), id.mask()).unwrap();
            assert_eq!(up.pick(Some(&rebuilt)), first);
        }
        let on_first = ids.iter().filter(|id| up.pick(Some(id)) == 0).count();
        assert!(on_first > 0 && on_first < ids.len(), "{on_first}");
    }

    #[test]
    fn without_consistency_the_proxies_take_turns() {
        let up = upstream(&["http://127.0.0.1:1", "http://127.0.0.1:2"], false).unwrap();
        let id = KeyId::of("AIzaSyKey_000000000000000000000000000001");
        let picks: Vec<usize> = (0..4).map(|_| up.pick(Some(&id))).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
    }
}
