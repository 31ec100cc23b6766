//! Admin sessions: what logging in with AUTH_TOKEN gives the browser instead of the token.
//!
//! The cookie holds only a random session id (32 bytes from the OS's CSPRNG); the token never
//! leaves the server (Gemini-Balance put AUTH_TOKEN itself in the cookie). Each session has its
//! own CSRF token, which the pages send as `x-csrf-token` with every request that changes
//! something; a cross-site page can make the browser send the cookie (if SameSite failed) but
//! cannot read the CSRF token.
//!
//! A session remembers the token it was opened with and is valid only while that token is still
//! the admin token: changing AUTH_TOKEN (live, through the admin API) logs every browser out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue, Method};

use crate::admin::{AdminSessions, SessionVerdict};

/// Name of the session cookie.
pub const COOKIE: &str = "gb_admin_session";

/// The header that carries the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Sessions kept at most; the oldest are dropped first (one browser logging in again and again
/// must not grow memory without bound).
const MAX_SESSIONS: usize = 1024;

/// Says whether a token is the current admin token: `None` when no admin token is set (the
/// web admin is closed), else `Some(matches)`. Compares in constant time.
pub type TokenCheck = Arc<dyn Fn(&str) -> Option<bool> + Send + Sync>;

struct Session {
    csrf: String,
    /// The token the session was opened with (held in memory only, as the settings are).
    token: String,
    created: Instant,
    expires: Instant,
}

/// The live admin sessions, in memory (a restart logs everyone out).
pub struct Sessions {
    ttl: Duration,
    admin_token: TokenCheck,
    live: Mutex<HashMap<String, Session>>,
}

/// Why a login failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginError {
    /// No admin token is set: nobody can log in.
    Closed,
    /// Not the admin token.
    WrongToken,
    /// The OS gave no randomness for the session id.
    NoRandomness,
}

/// A session just made: its id goes in the cookie, its CSRF token in the page.
#[derive(Debug)]
pub struct NewSession {
    pub id: String,
    pub csrf: String,
}

impl Sessions {
    /// Sessions that last `ttl` from login (ADMIN_SESSION_EXPIRE), opened with the token that
    /// `admin_token` accepts.
    pub fn new(ttl: Duration, admin_token: TokenCheck) -> Self {
        Sessions {
            ttl,
            admin_token,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a session for `token` if it is the admin token.
    pub fn login(&self, token: &str) -> Result<NewSession, LoginError> {
        match (self.admin_token)(token) {
            None => return Err(LoginError::Closed),
            Some(false) => return Err(LoginError::WrongToken),
            Some(true) => {}
        }
        let id = random_hex().map_err(|_| LoginError::NoRandomness)?;
        let csrf = random_hex().map_err(|_| LoginError::NoRandomness)?;
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
                token: token.to_owned(),
                created: now,
                expires: now + self.ttl,
            },
        );
        Ok(NewSession { id, csrf })
    }

    /// Judges a request by its session cookie and, for state-changing methods, its
    /// `x-csrf-token` header. This is what the admin API calls to accept the web admin.
    pub fn check(&self, headers: &HeaderMap, method: &Method) -> SessionVerdict {
        let Some(csrf) = self.csrf_for(headers) else {
            return SessionVerdict::None;
        };
        if !changes_state(method) {
            return SessionVerdict::Valid;
        }
        let sent = headers
            .get(CSRF_HEADER)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if constant_time_eq(sent, csrf.as_bytes()) {
            SessionVerdict::Valid
        } else {
            SessionVerdict::MissingCsrf
        }
    }

    /// The CSRF token of the request's live session, if it has one.
    pub fn csrf_for(&self, headers: &HeaderMap) -> Option<String> {
        let id = session_id(headers)?;
        let now = Instant::now();
        let mut live = self.lock();
        match live.get(id) {
            Some(s) if s.expires > now && (self.admin_token)(&s.token) == Some(true) => {
                Some(s.csrf.clone())
            }
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

    /// Number of sessions kept.
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

/// The admin API accepts the web admin's sessions.
impl AdminSessions for Sessions {
    fn check(&self, headers: &HeaderMap, method: &Method) -> SessionVerdict {
        Sessions::check(self, headers, method)
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

    fn sessions(ttl: Duration) -> Sessions {
        Sessions::new(ttl, Arc::new(|t: &str| Some(t == "admin")))
    }

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
        let sessions = sessions(Duration::from_secs(60));
        assert_eq!(sessions.login("nope").unwrap_err(), LoginError::WrongToken);
        let s = sessions.login("admin").unwrap();
        assert_eq!(s.id.len(), 64);
        assert_ne!(s.id, s.csrf);
        let cookie = format!("theme=dark; {COOKIE}={}", s.id);
        assert_eq!(
            sessions.check(&headers(&cookie, None), &Method::GET),
            SessionVerdict::Valid
        );
        assert_eq!(
            sessions.check(&headers(&cookie, None), &Method::POST),
            SessionVerdict::MissingCsrf
        );
        assert_eq!(
            sessions.check(&headers(&cookie, Some(&s.id)), &Method::DELETE),
            SessionVerdict::MissingCsrf
        );
        assert_eq!(
            sessions.check(&headers(&cookie, Some(&s.csrf)), &Method::PUT),
            SessionVerdict::Valid
        );
        // Another session's CSRF token does not do.
        let other = sessions.login("admin").unwrap();
        assert_eq!(
            sessions.check(&headers(&cookie, Some(&other.csrf)), &Method::POST),
            SessionVerdict::MissingCsrf
        );
        sessions.end(&headers(&cookie, None));
        assert_eq!(
            sessions.check(&headers(&cookie, Some(&s.csrf)), &Method::POST),
            SessionVerdict::None
        );
        assert_eq!(
            sessions.check(&headers(&format!("{COOKIE}=nope"), None), &Method::GET),
            SessionVerdict::None
        );
        assert_eq!(
            sessions.check(&HeaderMap::new(), &Method::GET),
            SessionVerdict::None
        );
    }

    #[test]
    fn expired_sessions_are_refused_and_forgotten() {
        let sessions = sessions(Duration::ZERO);
        let s = sessions.login("admin").unwrap();
        let h = headers(&format!("{COOKIE}={}", s.id), None);
        assert_eq!(sessions.check(&h, &Method::GET), SessionVerdict::None);
        assert_eq!(sessions.len(), 0);
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = sessions(Duration::from_secs(60));
        let first = sessions.login("admin").unwrap();
        for _ in 0..MAX_SESSIONS {
            sessions.login("admin").unwrap();
        }
        assert_eq!(sessions.len(), MAX_SESSIONS);
        let h = headers(&format!("{COOKIE}={}", first.id), None);
        assert_eq!(sessions.check(&h, &Method::GET), SessionVerdict::None);
    }

    #[test]
    fn a_new_admin_token_ends_the_sessions_of_the_old_one() {
        let current = Arc::new(Mutex::new("admin".to_owned()));
        let seen = current.clone();
        let sessions = Sessions::new(
            Duration::from_secs(60),
            Arc::new(move |t: &str| Some(*seen.lock().unwrap() == t)),
        );
        let s = sessions.login("admin").unwrap();
        let h = headers(&format!("{COOKIE}={}", s.id), None);
        assert_eq!(sessions.check(&h, &Method::GET), SessionVerdict::Valid);
        *current.lock().unwrap() = "new-admin".to_owned();
        assert_eq!(sessions.check(&h, &Method::GET), SessionVerdict::None);
        let closed = Sessions::new(Duration::from_secs(60), Arc::new(|_: &str| None));
        assert_eq!(closed.login("").unwrap_err(), LoginError::Closed);
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
