//! Admin sessions: what logging in with AUTH_TOKEN gives the browser instead of the token.
//!
//! The cookie holds only a random session id (32 bytes from the OS's CSPRNG); the token never
//! leaves the server (Gemini-Balance put AUTH_TOKEN itself in the cookie). Each session has its
//! own CSRF token, which the pages send as `x-csrf-token` with every request that changes
//! something; a cross-site page can make the browser send the cookie (if SameSite failed) but
//! cannot read the CSRF token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue, Method};

/// Name of the session cookie.
pub const COOKIE: &str = "gb_admin_session";

/// The header that carries the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Sessions kept at most; the oldest are dropped first (one browser logging in again and again
/// must not grow memory without bound).
const MAX_SESSIONS: usize = 1024;

/// What a request's session cookie amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCheck {
    /// No cookie, an unknown session, or an expired one.
    None,
    /// A live session; for `POST`/`PUT`/`DELETE`/`PATCH` the right CSRF token came with it.
    Valid,
    /// A live session, but a state-changing request without its CSRF token (answer `403`).
    MissingCsrf,
}

struct Session {
    csrf: String,
    created: Instant,
    expires: Instant,
}

/// The live admin sessions, in memory (a restart logs everyone out).
pub struct Sessions {
    ttl: Duration,
    live: Mutex<HashMap<String, Session>>,
}

/// A session just made: its id goes in the cookie, its CSRF token in the page.
#[derive(Debug)]
pub struct NewSession {
    pub id: String,
    pub csrf: String,
}

impl Sessions {
    /// Sessions that last `ttl` from login (ADMIN_SESSION_EXPIRE).
    pub fn new(ttl: Duration) -> Self {
        Sessions {
            ttl,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a session. Fails only when the OS has no randomness to give.
    pub fn create(&self) -> Result<NewSession, getrandom::Error> {
        let id = random_hex()?;
        let csrf = random_hex()?;
        let now = Instant::now();
        let mut live = self.lock();
        live.retain(|_, s| s.expires > now);
        while live.len() >= MAX_SESSIONS {
            let oldest = live
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => live.remove(&id),
                None => break,
            };
        }
        live.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                created: now,
                expires: now + self.ttl,
            },
        );
        Ok(NewSession { id, csrf })
    }

    /// Judges a request by its session cookie and, for state-changing methods, its
    /// `x-csrf-token` header. This is what the admin API calls to accept the web admin.
    pub fn check(&self, headers: &HeaderMap, method: &Method) -> SessionCheck {
        let Some(csrf) = self.csrf_for(headers) else {
            return SessionCheck::None;
        };
        if !changes_state(method) {
            return SessionCheck::Valid;
        }
        let sent = headers
            .get(CSRF_HEADER)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if constant_time_eq(sent, csrf.as_bytes()) {
            SessionCheck::Valid
        } else {
            SessionCheck::MissingCsrf
        }
    }

    /// The CSRF token of the request's live session, if it has one.
    pub fn csrf_for(&self, headers: &HeaderMap) -> Option<String> {
        let id = session_id(headers)?;
        let now = Instant::now();
        let mut live = self.lock();
        match live.get(id) {
            Some(s) if s.expires > now => Some(s.csrf.clone()),
            Some(_) => {
                live.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends the request's session (logout).
    pub fn end(&self, headers: &HeaderMap) {
        if let Some(id) = session_id(headers) {
            self.lock().remove(id);
        }
    }

    /// Ends every session: call it when AUTH_TOKEN changes.
    pub fn end_all(&self) {
        self.lock().clear();
    }

    /// Number of live sessions.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves the map consistent (every change is one call).
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Session ids are credentials: only their number is shown.
        f.debug_struct("Sessions")
            .field("ttl", &self.ttl)
            .field("live", &self.lock().len())
            .finish()
    }
}

/// The `Set-Cookie` value that hands the browser session `id`. `secure` adds `Secure` (when the
/// browser reached us over HTTPS, through a TLS-terminating proxy).
pub fn set_cookie(id: &str, ttl: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Max-Age={}; Path=/; HttpOnly; SameSite=Strict{}",
        ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that makes the browser forget its session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict")
}

/// `true` for the methods that change something and so need the CSRF token.
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The session id in the request's `Cookie` headers.
fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

/// 32 bytes from the OS's CSPRNG, as 64 hex digits.
fn random_hex() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equal byte strings, compared in a time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookie: &str, csrf: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, cookie.parse().unwrap());
        if let Some(csrf) = csrf {
            h.insert(CSRF_HEADER, csrf.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_session_needs_its_csrf_token_to_change_things() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let s = sessions.create().unwrap();
        assert_eq!(s.id.len(), 64);
        assert_ne!(s.id, s.csrf);
        let cookie = format!("theme=dark; {COOKIE}={}", s.id);
        assert_eq!(
            sessions.check(&headers(&cookie, None), &Method::GET),
            SessionCheck::Valid
        );
        assert_eq!(
            sessions.check(&headers(&cookie, None), &Method::POST),
            SessionCheck::MissingCsrf
        );
        assert_eq!(
            sessions.check(&headers(&cookie, Some(&s.id)), &Method::DELETE),
            SessionCheck::MissingCsrf
        );
        assert_eq!(
            sessions.check(&headers(&cookie, Some(&s.csrf)), &Method::PUT),
            SessionCheck::Valid
        );
        // Another session's CSRF token does not do.
        let other = sessions.create().unwrap();
        assert_eq!(
            sessions.check(&headers(&cookie, Some(&other.csrf)), &Method::POST),
            SessionCheck::MissingCsrf
        );
        sessions.end(&headers(&cookie, None));
        assert_eq!(
            sessions.check(&headers(&cookie, Some(&s.csrf)), &Method::POST),
            SessionCheck::None
        );
        assert_eq!(
            sessions.check(&headers(&format!("{COOKIE}=nope"), None), &Method::GET),
            SessionCheck::None
        );
        assert_eq!(
            sessions.check(&HeaderMap::new(), &Method::GET),
            SessionCheck::None
        );
    }

    #[test]
    fn expired_sessions_are_refused_and_forgotten() {
        let sessions = Sessions::new(Duration::ZERO);
        let s = sessions.create().unwrap();
        let h = headers(&format!("{COOKIE}={}", s.id), None);
        assert_eq!(sessions.check(&h, &Method::GET), SessionCheck::None);
        assert_eq!(sessions.len(), 0);
    }

    #[test]
    fn sessions_are_bounded_and_can_all_be_ended() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let first = sessions.create().unwrap();
        for _ in 0..MAX_SESSIONS {
            sessions.create().unwrap();
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        let h = headers(&format!("{COOKIE}={}", first.id), None);
        assert_eq!(sessions.check(&h, &Method::GET), SessionCheck::None);
        sessions.end_all();
        assert_eq!(sessions.len(), 0);
    }

    #[test]
    fn the_cookie_is_http_only_and_strict() {
        let c = set_cookie("abc", Duration::from_secs(3600), false);
        assert_eq!(
            c,
            "gb_admin_session=abc; Max-Age=3600; Path=/; HttpOnly; SameSite=Strict"
        );
        assert!(set_cookie("abc", Duration::from_secs(1), true).ends_with("; Secure"));
        assert!(clear_cookie().contains("Max-Age=0"));
    }
}
